/*
 * mpk/blob.h - the compiled model (.mpkb): the one contract between the
 * compiler (lowering/), the CPU reference executor and the GPU runtime
 * (runtime/). man 5 mpk-blob specifies the same format for people.
 *
 * A blob is a task graph for ONE decode step; the runtime repeats it for
 * every step (a prompt token or a generated one). A blob built with a
 * chunk (mpk build --chunk C) holds a second task graph over the same
 * tensors, weights, state and arena: the chunk graph, whose step feeds C
 * prompt tokens at once (rows of [C, ...] activations); the runtime runs a
 * prompt in chunk steps, then decodes with the first graph. Everything is
 * little-endian with fixed widths; structs here are the exact on-disk
 * records (the _Static_asserts pin their sizes).
 *
 * File layout
 *   mpkb_header      at offset 0 (64 bytes)
 *   mpkb_section[n]  the section table, at header.table_offset
 *   sections         each at an offset that is a multiple of MPKB_ALIGN,
 *                    each covered by a CRC-32 (zlib's crc32) in the table
 *
 * Sections (one of each kind, in any order; the first nine required, the
 * six C* ones, the chunk graph, present together iff META.chunk > 0)
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
 *   CMETA, CTASKS, CEVENTS, CTRIGGERS, CQUEUES, CQTASKS
 *             the chunk graph's META, TASKS, ... in the same formats; its
 *             tasks name tensors of the one TENSORS table
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

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#ifndef __cplusplus
#include <stdbool.h>
#endif

/* Helpers below are also device code in the CUDA executor. */
#ifdef __CUDACC__
#define MPKB_HD __host__ __device__
#else
#define MPKB_HD
#endif

#define MPKB_MAGIC "MPKB\r\n\x1a\n" /* 8 bytes: catches text-mode damage */
#define MPKB_VERSION 3u  /* a blob with a chunk graph */
#define MPKB_VERSION_DECODE 2u /* a blob without: written so, as before chunks */
#define MPKB_ALIGN 64u
#define MPKB_NONE 0xffffffffu
#define MPKB_MAX_DIMS 6
#define MPKB_MAX_EOS 8
#define MPKB_NT 10 /* tensor operands per task */
#define MPKB_NI 4  /* integer immediates per task */
#define MPKB_NF 4  /* float immediates per task */
#define MPKB_MAX_TP 64 /* ranks of a tensor-parallel blob */
/* The limits of a blob: the reader refuses a blob beyond them, and the
 * compiler checks them where they come from (a tensor's type, a tiling,
 * the memory plan) with the numbers in the message; mpk(5) lists them. */
#define MPKB_MAX_DIM 2147483647u          /* one dimension (tiles are int32) */
#define MPKB_MAX_NUMEL (1ull << 40)       /* elements of one tensor */
#define MPKB_MAX_ARENA (1ull << 40)       /* bytes of activations */
#define MPKB_MAX_STATE (1ull << 42)       /* bytes of state (KV caches) */
#define MPKB_MAX_TASKS (1u << 21)         /* tasks of one step (2097152) */
#define MPKB_MAX_FILE (1ull << 32)        /* bytes of the blob file */

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
    MPKB_SEC_CONSTS, MPKB_SEC_CMETA, MPKB_SEC_CTASKS, MPKB_SEC_CEVENTS, MPKB_SEC_CTRIGGERS,
    MPKB_SEC_CQUEUES, MPKB_SEC_CQTASKS, MPKB_SEC_COUNT_PLUS_ONE
};
#define MPKB_NSECTIONS (MPKB_SEC_COUNT_PLUS_ONE - 1)
#define MPKB_NBASE_SECTIONS MPKB_SEC_CONSTS /* without a chunk graph */

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
    uint32_t token_input;   /* tensor: i32[n], the tokens of this step (n = 1, or the chunk) */
    uint32_t pos_input;     /* tensor: i32[n], their positions, or NONE */
    uint32_t next_output;   /* tensor: i32[1], the greedy next token */
    uint32_t logits;        /* tensor: [1, vocab] (the last row's), read for --dump-logits */
    uint32_t step_event;    /* the event that ends a step (lag 1) */
    uint32_t neos;          /* end-of-sequence ids in eos[] */
    int32_t eos[MPKB_MAX_EOS];
    uint64_t arena_size;    /* bytes */
    uint64_t state_size;    /* bytes */
    uint64_t weight_size;   /* bytes of loaded weights */
    uint64_t bytes_per_step;/* bytes the tasks read and write in one step */
    uint32_t tp;            /* ranks (1: one GPU); see "Tensor parallelism" */
    uint32_t chunk;         /* rows of a chunk step: 0 in a blob without a chunk graph */
    uint32_t reserved[6];   /* zero */
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
 * Task kinds: the rows of mpk/taskops.def, in order; each kind's operand
 * slots, immediates and reader checks are there, and what it computes is
 * in mpk-blob(5). A task's t[] are tensor operands (MPKB_NONE: absent),
 * i[] and f[] immediates; a task of kind K also reads them by name through
 * its view t->K (t->matvec.w is t->t[1], t->matvec.lo is t->i[0]).
 */
typedef enum {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) MPKB_OP_##ID,
#include "mpk/taskops.def"
#undef MPKB_TASKOP
    MPKB_NOPS
} mpkb_op;

enum {
    MPKB_F_PRO_RMSNORM = 1u << 0,  /* matvec: t4 gamma [K], f0 eps: normed input */
    MPKB_F_PRO_SILU_MUL = 1u << 1, /* matvec: t4 b [M, K]: input silu(x) * b */
    MPKB_F_EPI_RESIDUAL = 1u << 2, /* matvec, allreduce, part_sum: out = acc + residual */
    MPKB_F_EPI_ARGMAX = 1u << 3,   /* matvec: argmax partials of its rows */
    MPKB_F_DIRECT = 1u << 4,       /* attention: one chunk, writes out itself */
    MPKB_F_ALL_RANKS = 1u << 5,    /* argmax_reduce: every rank's partials */
    MPKB_F_ALL = (1u << 6) - 1
};

/* The fields of one kind's view: operand slots, then immediates. */
#define MPKB_VIEW_T_(a, b, c, d, e, f, g, h, i, j) uint32_t a, b, c, d, e, f, g, h, i, j;
#define MPKB_VIEW_I_(a, b, c, d) int32_t a, b, c, d;
#define MPKB_VIEW_F_(a, b, c, d) float a, b, c, d;

typedef struct {
    uint16_t op;            /* mpkb_op */
    uint16_t flags;         /* MPKB_F_* */
    uint32_t label;         /* string: what it computes, for messages */
    int32_t layer;          /* decoder layer, or -1 */
    uint32_t dep;           /* the event waited for */
    uint32_t trig_first;    /* its triggers in TRIGGERS */
    uint32_t trig_count;
    union {
        struct {
            uint32_t t[MPKB_NT];
            int32_t i[MPKB_NI];
            float f[MPKB_NF];
        };
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) \
        struct { MPKB_VIEW_T_ opnds MPKB_VIEW_I_ ints MPKB_VIEW_F_ floats } name;
#include "mpk/taskops.def"
#undef MPKB_TASKOP
    };
} mpkb_task;

/* The slot index of operand NAME of kind K: MPKB_SLOT(matvec, pro) == 4. */
#define MPKB_SLOT(K, NAME) \
    ((int)((offsetof(mpkb_task, K.NAME) - offsetof(mpkb_task, t)) / sizeof(uint32_t)))

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

/* Kinds 14 and 15 (matvec_part, part_sum) came after version 3 without a
 * new version: a reader that predates them refuses their tasks as unknown
 * ops, and a blob without them is what it was. */
MPKB_STATIC_ASSERT(MPKB_NOPS == 16, "taskops.def changed: update MPKB_NOPS here and the format's version");

static inline MPKB_HD uint32_t mpkb_dtype_size(uint32_t dt)
{
    return dt == MPKB_BF16 || dt == MPKB_F16 ? 2 : dt == MPKB_F32 || dt == MPKB_I32 ? 4 : 0;
}

static inline MPKB_HD uint64_t mpkb_numel(const mpkb_tensor *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim && i < MPKB_MAX_DIMS; i++)
        n *= t->dims[i];
    return n;
}

/* Attention's KV layout (mpk-blob(5), ATTENTION): positions fall in blocks
 * of B; chunk c of n owns blocks c, c + n, c + 2n, ... and the cache keeps
 * a chunk's blocks together, P = mpkb_kv_blocks of them per chunk (P = 1:
 * contiguous chunks). Position j lives at cache row mpkb_kv_row. */
static inline MPKB_HD uint64_t mpkb_kv_blocks(uint64_t S, uint64_t B, uint64_t n)
{
    return (S + B * n - 1) / (B * n);
}

/* MATVEC_PART: where part p of `parts` of a contraction of K elements
 * (K a multiple of 32) starts: whole slabs of 32, as even as they go;
 * part p is [mpkb_kcut(K, parts, p), mpkb_kcut(K, parts, p + 1)). */
static inline MPKB_HD uint64_t mpkb_kcut(uint64_t K, uint64_t parts, uint64_t p)
{
    return p >= parts ? K : K / 32 * p / parts * 32;
}

static inline MPKB_HD uint64_t mpkb_kv_row(uint64_t j, uint64_t B, uint64_t n, uint64_t P)
{
    uint64_t b = j / B;
    return ((b % n) * P + b / n) * B + j % B;
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

/* ---- the blob in memory: blob/read.c and blob/write.c ------------------- */

/*
 * A blob as arrays: what mpk build writes, what the reader hands to the
 * executors and to mpk dump, what the verifier checks. The compiler's view
 * of its own arrays (queues NULL before placement) and a read blob's view
 * of the file are the same type.
 */
typedef struct mpkb_blob {
    const mpkb_meta *meta;
    const char *strings;
    uint32_t strings_size;
    const mpkb_tensor *tensors;
    uint32_t ntensors;
    const mpkb_task *tasks;
    uint32_t ntasks;
    const mpkb_event *events;
    uint32_t nevents;
    const uint32_t *triggers;
    uint32_t ntriggers;
    const mpkb_queue *queues;   /* meta->workers of them; NULL before placement */
    uint32_t nqueues;
    const uint32_t *qtasks;
    uint32_t nqtasks;
    const uint8_t *consts;
    uint64_t consts_size;
    /* the chunk graph (meta->chunk > 0), else NULL: a view with its own
     * meta, tasks, events, triggers and queues, and this blob's strings,
     * tensors and consts (its chunk is NULL) */
    const struct mpkb_blob *chunk;
    /* a read blob only: the file */
    const uint8_t *data;
    size_t size;
    const mpkb_header *hdr;
    void *owned;                /* the buffer, when mpkb_open read it */
} mpkb_blob;

#ifdef __cplusplus
extern "C" {
#endif

/* blob/read.c. Read PATH and validate it: every index, offset and count,
 * every task's operands, the event graph and the queues. On failure,
 * reports "PATH: problem" on err and returns false (b is then empty); on
 * success executors may use everything without checks. */
bool mpkb_open(mpkb_blob *b, const char *path, FILE *err);
/* Validate a buffer in memory (kept, not copied; 8-byte aligned). */
bool mpkb_parse(mpkb_blob *b, const void *data, size_t size, const char *name, FILE *err);
void mpkb_close(mpkb_blob *b);
/* A string of the blob ("?" if the offset is outside STRINGS). */
const char *mpkb_str(const mpkb_blob *b, uint32_t off);

/* blob/write.c. The file for view b: header, section table, sections, in
 * one malloc'd buffer of *size bytes (NULL when out of memory). */
void *mpkb_write(const mpkb_blob *b, size_t *size);
/* The format's checksum: zlib's crc32 of n bytes. */
uint32_t mpkb_crc(const void *p, size_t n);

/* blob/taskops.c: the table's names. */
const char *mpkb_op_name(uint32_t op);
/* Name of operand slot k of kind op, NULL for an unused slot. */
const char *mpkb_operand_name(uint32_t op, int k);
/* Whether kind op writes operand slot k (an OUT or INOUT slot). */
bool mpkb_operand_writes(uint32_t op, int k);
/* Name of integer immediate k (0..MPKB_NI-1) or, with is_float, float k. */
const char *mpkb_imm_name(uint32_t op, int k, bool is_float);
/* Names of the flags in mask, space-separated, into buf. */
const char *mpkb_flag_names(uint32_t mask, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
