/*
 * mpk/blob.h - the compiled model (.mpkb): the one contract between the
 * compiler (lowering/), the CPU reference executor and the GPU runtime
 * (runtime/). man 5 mpk-blob specifies the same format for people.
 *
 * A blob is a task graph for ONE decode step; the runtime repeats it for
 * every step (a prompt token or a generated one). Everything is
 * little-endian with fixed widths; structs here are the exact on-disk
 * records (the _Static_asserts pin their sizes).
 *
 * File layout
 *   mpkb_header      at offset 0 (64 bytes)
 *   mpkb_section[n]  the section table, at header.table_offset
 *   sections         each at an offset that is a multiple of MPKB_ALIGN,
 *                    each covered by a CRC-32 (zlib's crc32) in the table
 *
 * Sections (one of each kind, all required, in any order)
 *   META      one mpkb_meta: model facts and where things are
 *   STRINGS   NUL-terminated UTF-8 strings; others refer to them by byte
 *             offset; the section starts with an empty string (offset 0)
 *   TENSORS   mpkb_tensor[]: every buffer a task touches
 *   TASKS     mpkb_task[]: in a topological order, grouped by the event
 *             they wait for (see EVENTS)
 *   EVENTS    mpkb_event[]
 *   TRIGGERS  uint32_t[]: event indices; task t signals
 *             TRIGGERS[t.trig_first .. t.trig_first + t.trig_count)
 *   QUEUES    mpkb_queue[meta.workers]: each worker's placed tasks
 *   QTASKS    uint32_t[]: task indices; queue q runs
 *             QTASKS[q.first .. q.first + q.count) in that order
 *   CONSTS    raw bytes of MPKB_SPACE_CONST tensors (rope frequencies)
 *
 * Memory spaces. A tensor lives in one of:
 *   ARENA   activations, inputs and outputs: one buffer of meta.arena_size
 *           bytes; tensors overlap where their lifetimes do not
 *   STATE   persistent across steps (the KV cache): meta.state_size bytes,
 *           zeroed before the first step
 *   WEIGHT  a checkpoint tensor loaded by name; a tensor with base == its
 *           own index is loaded, others are views at offset into base
 *   CONST   bytes of the CONSTS section at offset
 *
 * Events. An event is a counter that only grows. It has `triggers`
 * producers (tasks listing it among their triggers); each signals it once
 * per step. In step s (0-based) an event has fired once its counter
 * reaches (s + 1 - lag) * triggers. A task waits for its `dep` event to
 * fire, runs, then signals each of its trigger events. Event
 * meta.step_event has lag 1: its producers are the last tasks of a step
 * and the first task of the next step waits for it, so steps do not
 * overlap. The tasks waiting for event e are TASKS[e.first_task ..
 * e.first_task + e.ntasks), so an event activates a contiguous range.
 * Every task has a dep; the event graph is acyclic within a step.
 *
 * Tensor parallelism. A blob built for meta.tp > 1 ranks (mpk build --tp)
 * is the task graph of every rank: all ranks run the same tasks on their
 * own arena, state and weights; a weight with split = d + 1 is part r of
 * meta.tp equal parts along dim d of the checkpoint tensor on rank r (dims
 * are the part's). Two ops read another rank's arena: ALLREDUCE and an
 * ARGMAX_REDUCE with flag ALL_RANKS read the same tensor on every rank.
 * The events they wait for have flag MPKB_EV_ALL_RANKS: each producer, on
 * every rank, signals that event on every rank, so it fires at (s + 1 -
 * lag) * triggers * tp. Everything else is per rank.
 *
 * Numerics. A value is rounded to its tensor's dtype (bf16: to nearest
 * even) when a task stores it, and only then: everything a task computes
 * in between (a prologue's input, a normed and roped q) stays fp32. The
 * compiler keeps the residual stream and the logits in f32 tensors.
 */
#ifndef MPK_BLOB_H
#define MPK_BLOB_H

#include <stdint.h>

#define MPKB_MAGIC "MPKB\r\n\x1a\n" /* 8 bytes: catches text-mode damage */
#define MPKB_VERSION 2u
#define MPKB_ALIGN 64u
#define MPKB_NONE 0xffffffffu
#define MPKB_MAX_DIMS 6
#define MPKB_MAX_EOS 8
#define MPKB_NT 10 /* tensor operands per task */
#define MPKB_NI 4  /* integer immediates per task */
#define MPKB_NF 4  /* float immediates per task */
#define MPKB_MAX_TP 64 /* ranks of a tensor-parallel blob */

typedef struct {
    uint8_t magic[8];       /* MPKB_MAGIC */
    uint32_t version;       /* MPKB_VERSION */
    uint32_t header_size;   /* sizeof(mpkb_header) */
    uint64_t file_size;     /* the whole blob */
    uint64_t table_offset;  /* the section table */
    uint32_t nsections;
    uint32_t table_crc;     /* crc32 of the section table */
    uint32_t header_crc;    /* crc32 of this header with header_crc = 0 */
    uint32_t reserved[5];   /* zero */
} mpkb_header;

enum mpkb_section_kind {
    MPKB_SEC_META = 1, MPKB_SEC_STRINGS, MPKB_SEC_TENSORS, MPKB_SEC_TASKS,
    MPKB_SEC_EVENTS, MPKB_SEC_TRIGGERS, MPKB_SEC_QUEUES, MPKB_SEC_QTASKS,
    MPKB_SEC_CONSTS, MPKB_SEC_COUNT_PLUS_ONE
};
#define MPKB_NSECTIONS (MPKB_SEC_COUNT_PLUS_ONE - 1)

typedef struct {
    uint32_t kind;          /* mpkb_section_kind */
    uint32_t crc;           /* crc32 of the section's bytes */
    uint64_t offset;        /* from the start of the file; MPKB_ALIGN-aligned */
    uint64_t size;          /* bytes = count * entry_size (entry_size 1: bytes) */
    uint32_t count;
    uint32_t entry_size;
} mpkb_section;

typedef struct {
    uint32_t name;          /* string: the model's graph name */
    uint32_t workers;       /* worker count the placement assumed */
    uint32_t vocab;         /* the model's vocabulary: tp x the logits' columns */
    uint32_t max_seq;       /* positions the state holds: prompt + generated */
    uint32_t token_input;   /* tensor: i32[1], the token of this step */
    uint32_t pos_input;     /* tensor: i32[1], the position (= step), or NONE */
    uint32_t next_output;   /* tensor: i32[1], the greedy next token */
    uint32_t logits;        /* tensor: [1, vocab], read for --dump-logits */
    uint32_t step_event;    /* the event that ends a step (lag 1) */
    uint32_t neos;          /* end-of-sequence ids in eos[] */
    int32_t eos[MPKB_MAX_EOS];
    uint64_t arena_size;    /* bytes */
    uint64_t state_size;    /* bytes */
    uint64_t weight_size;   /* bytes of loaded weights */
    uint64_t bytes_per_step;/* bytes the tasks read and write in one step */
    uint32_t tp;            /* ranks (1: one GPU); see "Tensor parallelism" */
    uint32_t reserved[7];   /* zero */
} mpkb_meta;

typedef enum {
    MPKB_BF16 = 0, MPKB_F16 = 1, MPKB_F32 = 2, MPKB_I32 = 3, MPKB_NDTYPES
} mpkb_dtype;

typedef enum {
    MPKB_SPACE_ARENA = 0, MPKB_SPACE_STATE = 1, MPKB_SPACE_WEIGHT = 2,
    MPKB_SPACE_CONST = 3, MPKB_NSPACES
} mpkb_space;

typedef struct {
    uint32_t name;          /* string: checkpoint name (weights), else a label */
    uint8_t dtype;          /* mpkb_dtype */
    uint8_t space;          /* mpkb_space */
    uint8_t ndim;           /* 1..MPKB_MAX_DIMS */
    uint8_t split;          /* WEIGHT: 0, or d + 1: part rank of tp along dim d */
    uint32_t dims[MPKB_MAX_DIMS];
    uint32_t base;          /* WEIGHT: the loaded tensor it lies in; else NONE */
    uint32_t reserved1;
    uint64_t offset;        /* bytes into its space (into base for WEIGHT) */
    uint64_t nbytes;        /* numel * dtype size */
} mpkb_tensor;

/*
 * Task ops. t[] are tensor operands (MPKB_NONE: absent), i[] and f[]
 * immediates; "rows" of a matrix [M, N] are its N output columns, the rows
 * of the [N, K] weight. bf16(v) is rounding to the destination's dtype.
 *
 * INPUTS        t0 token input, t1 pos input (or NONE). Writes the step's
 *               token (prompt or last generated) and pos = step.
 * EMBED         t0 table [V, H], t1 ids i32[1], t2 out [1, H];
 *               i0..i1 column range. out = table[ids[0]] (an id outside
 *               0..V-1 is a runtime error).
 * MATVEC        t0 x [M, K], t1 w [N, K], t2 out [M, N]; i0..i1 row range
 *               of w (columns of out); flags:
 *                 PRO_RMSNORM  t4 gamma [K], f0 eps: the input is
 *                              gamma[k] * (x[k] / sqrt(mean(x^2) + eps))
 *                 PRO_SILU_MUL t4 b [M, K]: the input is silu(x) * b
 *                 EPI_RESIDUAL t3 r [M, N]: out = bf16(acc + r)
 *                 EPI_ARGMAX   t5 partials f32 [tiles, 2], i2 tile: writes
 *                              (max acc, its column as int32 bits) over the
 *                              row range; ties take the lowest column
 *               acc = sum_k input[k] * w[n, k] in fp32; out = bf16(acc).
 * ATTENTION     decode attention for one kv head and one chunk of
 *               positions: t0 q [1, H, D], t1 k [1, G, D], t2 v [1, G, D],
 *               t3 cache [2, G, S, D], t4 pos i32[1], t5 q gamma [D] or
 *               NONE (f1 eps), t6 k gamma [D] or NONE (f2 eps), t8 q rope
 *               inv_freq f32 [D/2] or NONE, t9 k rope inv_freq or NONE;
 *               i0 kv head g, i1 chunk c, i2 block length B, i3 chunks
 *               n; f0 scale. Positions fall in blocks of B; chunk c owns
 *               blocks c, c + n, c + 2n, ... (with P = ceil(S / (B n))
 *               blocks per chunk: either P = 1, contiguous chunks, or
 *               S = B n P exactly). The cache stores a chunk's blocks
 *               together: position j lives at row mpkb_kv_row(j) =
 *               ((b mod n) P + b / n) B + j mod B, b = j / B, so chunk c's
 *               rows are [c P B, (c + 1) P B). q and k are normed and
 *               roped in fp32 (HF's rotate_half pairs i and i + D/2,
 *               angle = pos * inv_freq in fp32). The task whose chunk
 *               owns pos writes k and v at pos's row (rounded there);
 *               then for the H/G query heads of group g it attends over
 *               its positions up to pos. flags DIRECT (one chunk): t7 is
 *               out [1, H, D] = bf16(softmax . v); else t7 is partials f32
 *               [H, chunks, D + 2] = (acc[D], max, sum) per head and chunk,
 *               an empty chunk writing (0, -inf, 0).
 * ATTN_MERGE    t0 partials, t1 out [1, H, D]; i0 kv head g, i1 chunks,
 *               i2 query heads per kv head: combines the chunks of group
 *               g's heads, out = bf16(sum_c e^(max_c - M) acc_c / sum_c
 *               e^(max_c - M) sum_c) with M the largest max.
 * ARGMAX_PART   t0 x [1, N], t1 partials; i0..i1 columns, i2 tile.
 * ARGMAX_REDUCE t0 partials f32 [tiles, 2], t1 out i32[1]: the column of
 *               the largest value, the lowest on ties; NaNs never win.
 *               flags ALL_RANKS: the partials of every rank, rank q's
 *               columns counting from q * i0 (i0: columns per rank).
 * ALLREDUCE     t0 partial f32 [M, N], t2 out [M, N]; i0..i1 element
 *               range: out = bf16(p_0 + p_1 + ... + p_(tp-1)), p_q being t0
 *               on rank q, summed in rank order in fp32; flags
 *               EPI_RESIDUAL: t1 r [M, N], out = bf16(r + that sum).
 * RMSNORM       t0 x, t1 gamma [D], t2 out; i0..i1 range of D-vectors; f0 eps.
 * ROPE          t0 x [1, H, D], t1 pos, t2 inv_freq, t3 out; i0..i1 heads.
 * ADD, MUL      t0 a, t1 b, t2 out; i0..i1 element range.
 * SILU          t0 x, t2 out; i0..i1 element range.
 * COPY          t0 src, t1 dst: for r in 0..i0, dst[r*i2 .. +i2] =
 *               src[i3 + r*i1 .. +i2] (elements), a strided view made dense.
 */
typedef enum {
    MPKB_OP_INPUTS = 0, MPKB_OP_EMBED, MPKB_OP_MATVEC, MPKB_OP_ATTENTION,
    MPKB_OP_ATTN_MERGE, MPKB_OP_ARGMAX_PART, MPKB_OP_ARGMAX_REDUCE,
    MPKB_OP_RMSNORM, MPKB_OP_ROPE, MPKB_OP_ADD, MPKB_OP_MUL, MPKB_OP_SILU,
    MPKB_OP_COPY, MPKB_OP_ALLREDUCE, MPKB_NOPS
} mpkb_op;

enum {
    MPKB_F_PRO_RMSNORM = 1u << 0,
    MPKB_F_PRO_SILU_MUL = 1u << 1,
    MPKB_F_EPI_RESIDUAL = 1u << 2,
    MPKB_F_EPI_ARGMAX = 1u << 3,
    MPKB_F_DIRECT = 1u << 4,
    MPKB_F_ALL_RANKS = 1u << 5,
};

typedef struct {
    uint16_t op;            /* mpkb_op */
    uint16_t flags;         /* MPKB_F_* */
    uint32_t label;         /* string: what it computes, for messages */
    int32_t layer;          /* decoder layer, or -1 */
    uint32_t dep;           /* the event waited for */
    uint32_t trig_first;    /* its triggers in TRIGGERS */
    uint32_t trig_count;
    uint32_t t[MPKB_NT];
    int32_t i[MPKB_NI];
    float f[MPKB_NF];
} mpkb_task;

typedef struct {
    uint32_t triggers;      /* producers, each signalling once per step */
    uint16_t lag;           /* 0, or 1 for meta.step_event */
    uint16_t flags;         /* MPKB_EV_* */
    uint32_t first_task;    /* the tasks waiting for it */
    uint32_t ntasks;
} mpkb_event;

enum { MPKB_EV_ALL_RANKS = 1u << 0 };

typedef struct {
    uint32_t first;         /* into QTASKS */
    uint32_t count;
} mpkb_queue;

/* C11 spells it _Static_assert; the CUDA executor includes this as C++. */
#ifdef __cplusplus
#define MPKB_STATIC_ASSERT static_assert
#else
#define MPKB_STATIC_ASSERT _Static_assert
#endif
MPKB_STATIC_ASSERT(sizeof(mpkb_header) == 64, "mpkb_header is 64 bytes");
MPKB_STATIC_ASSERT(sizeof(mpkb_section) == 32, "mpkb_section is 32 bytes");
MPKB_STATIC_ASSERT(sizeof(mpkb_meta) == 136, "mpkb_meta is 136 bytes");
MPKB_STATIC_ASSERT(sizeof(mpkb_tensor) == 56, "mpkb_tensor is 56 bytes");
MPKB_STATIC_ASSERT(sizeof(mpkb_task) == 96, "mpkb_task is 96 bytes");
MPKB_STATIC_ASSERT(sizeof(mpkb_event) == 16, "mpkb_event is 16 bytes");
MPKB_STATIC_ASSERT(sizeof(mpkb_queue) == 8, "mpkb_queue is 8 bytes");

static inline uint32_t mpkb_dtype_size(uint32_t dt)
{
    return dt == MPKB_BF16 || dt == MPKB_F16 ? 2 : dt == MPKB_F32 || dt == MPKB_I32 ? 4 : 0;
}

/* Attention's KV layout (see ATTENTION): blocks per chunk, and the cache
 * row of position j for block length B, n chunks and P blocks per chunk. */
static inline uint64_t mpkb_kv_blocks(uint64_t S, uint64_t B, uint64_t n)
{
    return (S + B * n - 1) / (B * n);
}

static inline uint64_t mpkb_kv_row(uint64_t j, uint64_t B, uint64_t n, uint64_t P)
{
    uint64_t b = j / B;
    return ((b % n) * P + b / n) * B + j % B;
}

static inline const char *mpkb_op_name(uint32_t op)
{
    static const char *const names[MPKB_NOPS] = {
        "inputs", "embed", "matvec", "attention", "attn_merge", "argmax_part",
        "argmax_reduce", "rmsnorm", "rope", "add", "mul", "silu", "copy", "allreduce"};
    return op < MPKB_NOPS ? names[op] : "?";
}

static inline const char *mpkb_dtype_name(uint32_t dt)
{
    static const char *const names[MPKB_NDTYPES] = {"bf16", "f16", "f32", "i32"};
    return dt < MPKB_NDTYPES ? names[dt] : "?";
}

static inline const char *mpkb_space_name(uint32_t s)
{
    static const char *const names[MPKB_NSPACES] = {"arena", "state", "weight", "const"};
    return s < MPKB_NSPACES ? names[s] : "?";
}

#endif
