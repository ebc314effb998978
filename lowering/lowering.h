/*
 * lowering.h - the public header of mpk's lowering layer: from the typed op
 * graph (frontend.h) to the task graph of a blob (mpk/blob.h).
 *
 * The passes run in this order, each in its own file, and the pipeline in
 * lower.c is the one place that orders them:
 *
 *   shard.c    (--tp N) which part of each tensor every rank holds, and
 *              where partial sums are reduced over the ranks
 *   fuse.c     ops into fused kernel ops (rmsnorm and silu*mul prologues,
 *              residual and argmax epilogues, qk-norm + rope + KV append
 *              into attention); unfusable ops stay as they are
 *   tile.c     kernel ops into tasks (matvec row tiles, attention per kv
 *              head and KV chunk + merge, argmax partial + reduce)
 *   memory.c   tensors into memory spaces; one activation arena with
 *              liveness-based reuse
 *   events.c   what each task reads and writes (access.c), hence which
 *              producer tasks it waits for; events shared by equal
 *              producer sets; the tasks grouped by the event they wait for
 *   place.c    tasks onto per-worker queues by a list-scheduling model of
 *              bytes moved, each queue in the global topological order
 *   verify.c   proves the events order every conflicting pair of accesses
 *   emit.c     writes the blob
 *
 * All of it works on one mpk_low, whose arrays are already in the blob's
 * record formats, so the verifier and the dumps read exactly what is
 * written.
 */
#ifndef MPK_LOWERING_H
#define MPK_LOWERING_H

#include "frontend.h"
#include "mpk/blob.h"

typedef struct {
    int64_t workers;      /* target worker count (0: the model's, else 132) */
    int64_t tp;           /* tensor-parallel ranks (0 or 1: one GPU) */
    const char *dump;     /* pass after which to print the graph, or NULL */
    FILE *dump_out;
    int64_t rows;         /* tokens per step: 1 (decode; 0 reads as 1), or the chunk */
    int64_t split_k;      /* parts of K a matvec of M > 1 rows may take (mpk build
                           * --split-k): 0 or 1 none, N at most N, MPK_SPLIT_AUTO */
} mpk_lower_opts;

/* --split-k auto: up to this many parts, as the cost model (tile.c) picks. */
#define MPK_SPLIT_AUTO (-1)
#define MPK_SPLIT_MAX 64

/* The largest chunk (mpk build --chunk): tokens of one prompt step. */
#define MPK_MAX_CHUNK 1024

#define MPK_DEFAULT_WORKERS 132

/* A kernel op: one or more graph ops that become one family of tasks
 * (tile.c makes each kind's tasks; the names are for --dump=fuse). */
#define MPK_KOPS(X) X(EMBED, embed) X(MATVEC, matvec) X(ATTENTION, attention) X(ARGMAX, argmax) \
    X(RMSNORM, rmsnorm) X(ROPE, rope) X(ADD, add) X(MUL, mul) X(SILU, silu) X(COPY, copy)       \
    X(ALLREDUCE, allreduce)
typedef enum {
#define MPK_KOP_ENUM_(ID, name) K_##ID,
    MPK_KOPS(MPK_KOP_ENUM_)
#undef MPK_KOP_ENUM_
} mpk_kop_kind;
#define MPK_KOP_ONE_(ID, name) +1
enum { K_COUNT = 0 MPK_KOPS(MPK_KOP_ONE_) };
#undef MPK_KOP_ONE_
const char *mpk_kop_name(mpk_kop_kind k);

typedef struct {
    mpk_kop_kind kind;
    const mpk_node *node;   /* the graph op it stands for (the anchor) */
    int pos;                /* index of the last absorbed graph op */
    uint16_t flags;         /* MPKB_F_* */
    int t[MPKB_NT];         /* ltensor indices, -1: none, in the slots of its tasks'
                             * kind: t[MPKB_SLOT(matvec, pro)] */
    int argmax_out;         /* argmax (or a matvec's argmax epilogue): the token */
    int64_t hint_tile, hint_kv_chunk;
    float f[MPKB_NF];
    int copy_outer, copy_src_stride, copy_len, copy_src_off; /* K_COPY */
    const char *label;
    int layer;
    bool all_ranks;         /* argmax (or its epilogue) over every rank's logits */
} mpk_kop;

/* A tensor as the lowering sees it: a graph tensor or one it made
 * (partials, rope tables). Views resolve to a root and an element offset. */
typedef struct {
    mpk_dtype dtype;
    int ndim;
    int64_t dims[MPKB_MAX_DIMS];
    int space;              /* mpkb_space */
    int root;               /* ltensor holding the bytes (itself for roots) */
    int64_t elem_off;       /* elements into the root */
    const char *name;
    bool pinned;            /* lives the whole step (inputs, outputs, logits) */
    bool used;              /* referenced by a task */
    int first, last;        /* tasks touching it (roots in the arena) */
    uint64_t offset;        /* bytes into its space (roots: planned) */
    const void *cdata;      /* CONST: the bytes */
    int blob;               /* index in the blob's tensor table, or -1 */
    int split;              /* WEIGHT, --tp: loaded split along this dim, or -1 */
    int64_t tile_rows;      /* written by a matvec: its rows per tile (allreduce tiles) */
} mpk_ltensor;

typedef struct mpk_low {
    mpk_arena *arena;
    mpk_diag *diag;
    const mpk_graph *g;
    mpk_lower_opts opt;
    int64_t workers;
    int tp;                 /* ranks (1: one GPU) */
    /* shard.c, tp > 1 only (else NULL): per graph tensor, -1 replicated or
     * the dim it is split along; per node position, whether a matmul's
     * result is a partial sum to reduce; per node position x MPK_MAX_IN +
     * operand, the ltensor of that operand (weights used split) */
    int *lay;
    bool *reduce;
    int *in_lt;

    mpk_ltensor *lt;        /* graph tensors first (same ids), then made ones */
    int nlt;
    size_t caplt;
    mpk_kop *kops;
    int nkops;
    size_t capkops;

    /* the blob, built up pass by pass */
    mpkb_meta meta;
    char *strings;
    uint32_t nstrings;
    size_t capstrings;
    uint32_t *str_slots;    /* intern table: string offset + 1, 0 = empty */
    uint32_t str_cap, str_n;
    mpkb_tensor *tensors;
    uint32_t ntensors;
    size_t captensors;
    mpkb_task *tasks;
    uint32_t ntasks;
    size_t captasks;
    mpkb_event *events;
    uint32_t nevents;
    size_t capevents;
    uint32_t *triggers;
    uint32_t ntriggers;
    size_t captriggers;
    mpkb_queue *queues;
    uint32_t *qtasks;
    uint8_t *consts;
    uint64_t nconsts;
    size_t capconsts;

    int token_lt, pos_lt, next_lt, logits_lt; /* ltensors, -1: none */
    uint64_t weight_read, act_bytes, kv_bytes_per_pos; /* --stats */
    double *pass_ms;        /* per pass of mpk_passes, then the verifier */
} mpk_low;

/* The pipeline: returns NULL after reporting errors in diag. */
mpk_low *mpk_lower(const mpk_graph *g, const mpk_lower_opts *opt, mpk_diag *d);
/* Write the blob to a file (by mpk_write_file: atomically for a regular
 * file, in place for a device or FIFO, through a symbolic link) or, path "-",
 * to standard output: the decode graph L and, if Lc is not NULL, the chunk
 * graph Lc, lowered from the same model with n = the chunk (mpk build
 * --chunk). Reports and returns false on failure. */
bool mpk_emit(mpk_low *L, mpk_low *Lc, const char *path);
/* The blob as one malloc'd buffer (for tests). */
void *mpk_emit_buffer(mpk_low *L, mpk_low *Lc, size_t *size);
void mpk_low_free(mpk_low *L);
void mpk_low_stats(const mpk_low *L, FILE *out);
/* "shard 0.01, fuse 0.40, ... verify 18.3 ms": each pass's time (--time). */
void mpk_low_times(const mpk_low *L, FILE *out);

/* The pipeline as data: mpk_lower runs mpk_passes[0 .. mpk_npasses) in
 * order, the verifier after each that asks for it; mpk build's --dump and
 * --time take their names from here. */
typedef struct {
    const char *name;
    bool (*run)(mpk_low *L);
    bool verify;            /* run the verifier after this pass */
    const char *what;       /* one line for --help */
} mpk_pass;
extern const mpk_pass mpk_passes[];
extern const int mpk_npasses;
/* The index of the pass called name, or -1. */
int mpk_pass_index(const char *name);

/* The passes. */
bool mpk_shard(mpk_low *L);
bool mpk_fuse(mpk_low *L);
bool mpk_tile(mpk_low *L);
bool mpk_plan_memory(mpk_low *L);
bool mpk_make_events(mpk_low *L);
bool mpk_place(mpk_low *L);

/* The verifier, on a blob's arrays (so it also runs on a read blob).
 * Reports each problem on out, naming the tasks; returns the number found. */
int mpk_verify(const mpkb_blob *tg, FILE *out, int max_report);
mpkb_blob mpk_low_view(const mpk_low *L);

/* access.c: the bytes of the arena and the state a task reads and writes,
 * derived from its op and operands alone. */
typedef struct {
    uint8_t space;          /* MPKB_SPACE_ARENA or MPKB_SPACE_STATE */
    bool write;
    uint64_t lo, hi;        /* byte range [lo, hi) */
} mpk_access;
/* Appends to *out (grown with realloc); returns the count, or -1 if an
 * operand is not what the op needs. */
int mpk_task_accesses(const mpkb_blob *tg, const mpkb_task *t, mpk_access **out, int *cap);
/* The arena bytes task t reads on every rank (ALLREDUCE, ARGMAX_REDUCE
 * with ALL_RANKS): true and [lo, hi), else false. */
bool mpk_remote_read(const mpkb_blob *tg, const mpkb_task *t, uint64_t *lo, uint64_t *hi);
/* sweep.c: the tasks in order, each with what its accesses conflict with
 * among earlier tasks (nearest only), as items: one task, the writers of a
 * reader group, or the readers of one. Call mpk_sweep_next for t = 0, 1,
 * ... in order; *items and *why (per item, the index of the access of t,
 * for mpk_sweep_access) stay valid until the next call. An item's tasks
 * never change once it has been returned. bad_task is set to the first
 * task whose operands do not fit its op, or -1. */
#define MPK_ITEM_KIND_TASK 0
#define MPK_ITEM_KIND_WRITERS 1
#define MPK_ITEM_KIND_READERS 2
#define MPK_ITEM_TASK(i) ((i) * 4 + MPK_ITEM_KIND_TASK)
#define MPK_ITEM_WRITERS(g) ((g) * 4 + MPK_ITEM_KIND_WRITERS)
#define MPK_ITEM_READERS(g) ((g) * 4 + MPK_ITEM_KIND_READERS)
#define MPK_ITEM_KIND(it) ((it) & 3)
#define MPK_ITEM_ID(it) ((it) >> 2)
typedef struct mpk_sweep mpk_sweep;
mpk_sweep *mpk_sweep_new(const mpkb_blob *tg, int *bad_task);
int mpk_sweep_next(mpk_sweep *S, uint32_t t, const int **items, const int **why);
void mpk_sweep_item_tasks(const mpk_sweep *S, int item, const int **tasks, int *n);
const mpk_access *mpk_sweep_access(const mpk_sweep *S, int i);
void mpk_sweep_free(mpk_sweep *S);

/* A cache from item lists (as sets) to a value, shared by the event builder
 * and the verifier (sweep.c). */
typedef struct mpk_sigcache mpk_sigcache;
mpk_sigcache *mpk_sigcache_new(void);
/* The value stored for this item set and key, or -1. */
int64_t mpk_sigcache_get(mpk_sigcache *C, const int *items, int n, int64_t key);
void mpk_sigcache_put(mpk_sigcache *C, const int *items, int n, int64_t key, int64_t value);
void mpk_sigcache_free(mpk_sigcache *C);

/* ancset.c: sets of tasks (the ancestors of events) as persistent radix
 * trees that share their unchanged parts, so that a set costs what it
 * adds to those it was made from, not a bit per task. A set is a handle,
 * EMPTY (0) to start; add and union return the new handle and change in
 * place only the nodes made for owner (any number but UINT32_MAX), copying
 * others. A set must not be changed once another has been made from it. */
typedef struct mpk_anc mpk_anc;
typedef uint32_t mpk_aset;
mpk_anc *mpk_anc_new(uint64_t ntasks);
void mpk_anc_free(mpk_anc *A);
mpk_aset mpk_anc_add(mpk_anc *A, mpk_aset s, uint64_t task, uint32_t owner);
mpk_aset mpk_anc_union(mpk_anc *A, mpk_aset s, mpk_aset other, uint32_t owner);
bool mpk_anc_has(const mpk_anc *A, mpk_aset s, uint64_t task);
size_t mpk_anc_bytes(const mpk_anc *A);

/* "label [tile]" of a task, for messages. */
const char *mpk_task_desc(const mpkb_blob *tg, uint32_t task, char *buf, size_t n);

/* Printing (dump.c): after a pass (--dump=PASS), and a whole blob (mpk
 * dump): header facts, tensors, tasks with their events, queues; or the
 * task graph for graphviz. */
void mpk_dump_pass(const mpk_low *L, const char *pass, FILE *out);
void mpk_print_taskgraph(const mpkb_blob *tg, FILE *out);
void mpk_print_dot(const mpkb_blob *tg, FILE *out);

/* Helpers shared by the passes (lower.c). */
int mpk_lt_new(mpk_low *L, mpk_dtype dt, int ndim, const int64_t *dims, int space, const char *name);
uint32_t mpk_str_intern(mpk_low *L, const char *s);
int64_t mpk_lt_numel(const mpk_ltensor *t);
mpk_kop *mpk_kop_new(mpk_low *L, mpk_kop_kind kind, const mpk_node *n);
mpkb_task *mpk_task_new(mpk_low *L, uint16_t op, const mpk_kop *k);

#endif
