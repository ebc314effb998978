/*
 * make-ops.c - op-by-op test cases for the executors, in the spirit of
 * ggml's test-backend-ops: for every task kind of include/mpk/taskops.def,
 * small complete blobs that run that kind on its own, with random weights,
 * and the answer worked out here, in double, from mpk-blob(5).
 *
 *   make-ops DIR            write every case into DIR, and DIR/cases
 *   make-ops --check DIR CASE GOT.f32 [OTHER.f32]
 *                           compare an mpk-run --dump-logits file with the
 *                           case's expected rows (and with OTHER's, for
 *                           GPU against CPU); exit 0 when within tolerance
 *
 * Each case is one graph: an INPUTS task, whatever feeds the op under test
 * (an EMBED of a random table by the step's token, or a weight used as an
 * operand directly), the op, whose result lands in meta.logits (directly
 * or through a view of the same bytes), then ARGMAX_PART tiles and an
 * ARGMAX_REDUCE into meta.next_output. The tasks come in stages: every task
 * of stage k waits for event k and signals event k + 1; the last stage
 * signals event 0, the step event (lag 1), which INPUTS, stage 0, waits
 * for. The queues deal the tasks out round-robin. For DIR/CASE it writes
 *
 *   CASE.mpkb         the blob (mpkb_write)
 *   CASE.safetensors  its weights: bf16, f16 and f32, from a fixed seed
 *   CASE.prompt       the token ids, comma-separated: one step each
 *   CASE.expect       float32, one row of meta.vocab values per step: the
 *                     reference, rounded where the op stores its result
 *   CASE.tol          float32, the same shape: how far each element may be
 *                     from CASE.expect (below)
 *   CASE.next         the tokens the last step may choose (one, unless the
 *                     top logits are within rounding of each other)
 *
 * and DIR/cases lists "CASE VOCAB STEPS GPU" per line, GPU being "gpu" or
 * "cpu-only" (allreduce and ALL_RANKS, which the one-GPU executor refuses).
 *
 * Tolerances. The inputs of the op under test are exact (weights, and
 * embeddings, which only convert). For each output element the reference
 * computes the exact value v of the spec's fp32 formula and a bound d on
 * how far any fp32 evaluation of it may be (a few units of fp32 rounding u
 * = 2^-24 per operation, and for a sum of K terms K u times the sum of
 * their magnitudes, which holds for any order of summation). The executor
 * stores some fp32 value within v +- d, rounded to the output's dtype, so
 * its result lies between rnd(v - d) and rnd(v + d); CASE.tol is the larger
 * distance of those from rnd(v). For bf16 and f16 outputs that is 0 where
 * the rounding is decided and one unit in the last place where v lies
 * within d of a rounding boundary; for f32 it is about d. So a missing or
 * misplaced rounding fails, and only what the format leaves to the
 * executor (the order of fp32 sums, libm's last bits) is allowed.
 */
#include "mpk/blob.h"
#include "mpk/util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U (1.0 / 16777216.0) /* fp32 unit roundoff, 2^-24 */

#define MAX_TENSORS 128
#define MAX_TASKS 512
#define MAX_EVENTS 32
#define MAX_STRINGS 16384
#define MAX_CONSTS 4096
#define MAX_WEIGHTS 16
#define MAX_STEPS 4
#define MAX_VOCAB 1024

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "make-ops: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (!p)
        mpk_out_of_memory();
    return p;
}

/* ---- numbers: the format's dtypes and rnd_T ------------------------------ */

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* to bf16: nearest, ties to even; a NaN stays a (quiet) NaN */
static uint16_t to_bf16(float f)
{
    uint32_t u = f_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* to IEEE binary16: nearest, ties to even, overflow to infinity */
static uint16_t to_f16(float f)
{
    uint32_t u = f_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* 65520 and up: past halfway to 2^16 */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) /* below 2^-14: a multiple of 2^-24, exactly */
        return (uint16_t)(sign | (uint32_t)nearbyint((double)bits_f(a) * 16777216.0));
    uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13)), rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

static float from_bf16(uint16_t h) { return bits_f((uint32_t)h << 16); }

static float from_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0)
        return (sign ? -1.0f : 1.0f) * (float)m * (1.0f / 16777216.0f);
    if (e == 31)
        return bits_f(sign | 0x7f800000u | (m << 13));
    return bits_f(sign | ((e - 15 + 127) << 23) | (m << 13));
}

/* rnd_T of an fp32 value: the value a store to dtype dt keeps */
static double rnd(int dt, double v)
{
    float f = (float)v;
    switch (dt) {
    case MPKB_BF16: return from_bf16(to_bf16(f));
    case MPKB_F16: return from_f16(to_f16(f));
    default: return f;
    }
}

/* ---- random numbers: a fixed seed per case ------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi) */
static double urand(double lo, double hi) { return lo + (hi - lo) * (double)(rng_next() >> 11) / 9007199254740992.0; }

/* ---- the blob under construction ----------------------------------------- */

typedef struct {
    uint32_t tensor;      /* the loaded tensor */
    int dtype, ndim;
    uint32_t dims[MPKB_MAX_DIMS]; /* the checkpoint's (whole) shape */
    double *val;          /* its values, exactly representable in dtype */
} weight;

typedef struct {
    const char *name;
    int vocab, steps, tp;
    bool gpu;             /* false: the one-GPU executor refuses it */
    int prompt[MAX_STEPS];
    mpkb_meta meta;
    char strings[MAX_STRINGS];
    uint32_t nstrings;
    mpkb_tensor tensors[MAX_TENSORS];
    uint32_t ntensors;
    mpkb_task tasks[MAX_TASKS];
    uint32_t ntasks;
    mpkb_event events[MAX_EVENTS];
    uint32_t nevents;
    int task_stage[MAX_TASKS];
    uint16_t stage_flags[MAX_EVENTS];
    uint8_t consts[MAX_CONSTS];
    uint32_t nconsts;
    uint64_t arena, state;
    weight w[MAX_WEIGHTS];
    int nw;
    /* the reference: per step, exact value and bound of each logit */
    double v[MAX_STEPS][MAX_VOCAB], d[MAX_STEPS][MAX_VOCAB];
    int out_dtype;        /* of what the logits hold */
    /* the argmax of the last step: its source values, bounds and tiles */
    double am_v[MAX_VOCAB], am_d[MAX_VOCAB];
    int am_lo[MAX_VOCAB], am_hi[MAX_VOCAB], am_ntiles;
    bool am_stored;       /* true: argmax_part of the stored logits */
} G;

static uint32_t str(G *g, const char *s)
{
    size_t n = strlen(s) + 1;
    if (g->nstrings == 0)
        g->nstrings = 1; /* offset 0: the empty string */
    if (g->nstrings + n + 1 > MAX_STRINGS)
        die("%s: strings full", g->name);
    uint32_t at = g->nstrings;
    memcpy(g->strings + at, s, n);
    g->nstrings += (uint32_t)n;
    return at;
}

static uint64_t numel(int ndim, const uint32_t *dims)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    return n;
}

static uint32_t tensor(G *g, const char *name, int dtype, int space, int ndim, const uint32_t *dims, uint64_t offset)
{
    if (g->ntensors == MAX_TENSORS)
        die("%s: too many tensors", g->name);
    mpkb_tensor *t = &g->tensors[g->ntensors];
    memset(t, 0, sizeof *t);
    t->name = str(g, name);
    t->dtype = (uint8_t)dtype;
    t->space = (uint8_t)space;
    t->ndim = (uint8_t)ndim;
    memcpy(t->dims, dims, sizeof *dims * (size_t)ndim);
    t->base = MPKB_NONE;
    t->offset = offset;
    t->nbytes = numel(ndim, dims) * mpkb_dtype_size((uint32_t)dtype);
    return g->ntensors++;
}

#define DIMS(...) ((const uint32_t[]){__VA_ARGS__}), (int)(sizeof((const uint32_t[]){__VA_ARGS__}) / sizeof(uint32_t))

/* A new arena tensor on a 256-byte boundary. */
static uint32_t arena_(G *g, const char *name, int dtype, const uint32_t *dims, int ndim)
{
    uint64_t at = (g->arena + 255) / 256 * 256;
    uint32_t t = tensor(g, name, dtype, MPKB_SPACE_ARENA, ndim, dims, at);
    g->arena = at + g->tensors[t].nbytes;
    return t;
}
#define arena(g, name, dtype, ...) arena_(g, name, dtype, DIMS(__VA_ARGS__))

/* Another tensor over the bytes of tensor of, at byte offset off into it. */
static uint32_t view_(G *g, uint32_t of, const char *name, int dtype, uint64_t off, const uint32_t *dims, int ndim)
{
    const mpkb_tensor *b = &g->tensors[of];
    uint32_t t = tensor(g, name, dtype, b->space, ndim, dims, b->offset + off);
    g->tensors[t].base = b->base;
    if (off + g->tensors[t].nbytes > b->nbytes && b->space != MPKB_SPACE_WEIGHT)
        die("%s: view %s runs past %s", g->name, name, g->strings + b->name);
    return t;
}
#define view(g, of, name, dtype, off, ...) view_(g, of, name, dtype, off, DIMS(__VA_ARGS__))

static uint32_t state_(G *g, const char *name, int dtype, const uint32_t *dims, int ndim)
{
    uint64_t at = (g->state + 255) / 256 * 256;
    uint32_t t = tensor(g, name, dtype, MPKB_SPACE_STATE, ndim, dims, at);
    g->state = at + g->tensors[t].nbytes;
    return t;
}
#define state(g, name, dtype, ...) state_(g, name, dtype, DIMS(__VA_ARGS__))

/* A loaded weight, random in [lo, hi) and rounded to its dtype; with
 * split = d + 1, each of the g->tp ranks loads part of dim d. */
static weight *weight_(G *g, const char *name, int dtype, double lo, double hi, int split, const uint32_t *dims,
                       int ndim)
{
    if (g->nw == MAX_WEIGHTS)
        die("%s: too many weights", g->name);
    uint32_t part[MPKB_MAX_DIMS];
    memcpy(part, dims, sizeof *dims * (size_t)ndim);
    if (split)
        part[split - 1] /= (uint32_t)g->tp;
    uint32_t t = tensor(g, name, dtype, MPKB_SPACE_WEIGHT, ndim, part, 0);
    g->tensors[t].base = t;
    g->tensors[t].split = (uint8_t)split;
    weight *w = &g->w[g->nw++];
    w->tensor = t;
    w->dtype = dtype;
    w->ndim = ndim;
    memcpy(w->dims, dims, sizeof *dims * (size_t)ndim);
    uint64_t n = numel(ndim, dims);
    w->val = xcalloc(n, sizeof *w->val);
    for (uint64_t i = 0; i < n; i++)
        w->val[i] = rnd(dtype, urand(lo, hi));
    return w;
}
#define weight(g, name, dtype, lo, hi, ...) weight_(g, name, dtype, lo, hi, 0, DIMS(__VA_ARGS__))

/* f32 values in CONSTS, at a multiple of 64 bytes. */
static uint32_t consts(G *g, const char *name, const float *v, uint32_t n)
{
    uint32_t at = (g->nconsts + 63) / 64 * 64;
    if (at + 4 * n > MAX_CONSTS)
        die("%s: consts full", g->name);
    memcpy(g->consts + at, v, 4 * (size_t)n);
    g->nconsts = at + 4 * n;
    return tensor(g, name, MPKB_F32, MPKB_SPACE_CONST, 1, (const uint32_t[]){n}, at);
}

/* Tasks from here on wait for a new event, which every task of the stage
 * before signals. */
static void stage(G *g, uint16_t flags)
{
    if (g->nevents == MAX_EVENTS)
        die("%s: too many stages", g->name);
    g->stage_flags[g->nevents++] = flags;
}

static mpkb_task *task(G *g, int op, const char *label)
{
    if (g->ntasks == MAX_TASKS)
        die("%s: too many tasks", g->name);
    mpkb_task *t = &g->tasks[g->ntasks];
    memset(t, 0, sizeof *t);
    t->op = (uint16_t)op;
    t->label = str(g, label);
    t->layer = -1;
    for (int k = 0; k < MPKB_NT; k++)
        t->t[k] = MPKB_NONE;
    g->task_stage[g->ntasks++] = (int)g->nevents - 1;
    return t;
}

static void start(G *g, const char *name, int tp, int steps)
{
    memset(g, 0, sizeof *g);
    g->name = name;
    g->tp = tp;
    g->steps = steps;
    g->gpu = tp == 1;
    g->out_dtype = MPKB_F32;
    g->am_stored = true;
    /* A bound on the steps, as a blob without attention may declare one;
     * attention sets its cache's. (MPKB_NONE, which mpk build writes when
     * nothing bounds the context, is case embed-bf16-f32's.) */
    g->meta.max_seq = 16;
    rng_state = mpk_fnv1a(MPK_FNV_INIT, name, strlen(name));
    str(g, "");
}

/* The INPUTS task (stage 0) and the token and position tensors. */
static void inputs(G *g, bool with_pos, int ntok)
{
    stage(g, 0);
    g->meta.token_input = arena(g, "token", MPKB_I32, 1);
    g->meta.pos_input = with_pos ? arena(g, "pos", MPKB_I32, 1) : MPKB_NONE;
    mpkb_task *t = task(g, MPKB_OP_INPUTS, "inputs");
    t->inputs.token = g->meta.token_input;
    t->inputs.pos = g->meta.pos_input;
    for (int s = 0; s < g->steps; s++)
        g->prompt[s] = (int)(rng_next() % (uint64_t)ntok);
}

/* EMBED by the token of a random [V, H] table into a new [1, H] tensor of
 * dtype out, tile columns per task; row gets the table's values. */
static uint32_t embed(G *g, const char *name, weight *tab, int out, uint32_t tile)
{
    uint32_t H = g->tensors[tab->tensor].dims[1];
    uint32_t o = arena(g, name, out, 1, H);
    for (uint32_t lo = 0; lo < H; lo += tile) {
        mpkb_task *t = task(g, MPKB_OP_EMBED, name);
        t->embed.table = tab->tensor;
        t->embed.ids = g->meta.token_input;
        t->embed.out = o;
        t->embed.lo = (int32_t)lo;
        t->embed.hi = (int32_t)(lo + tile < H ? lo + tile : H);
    }
    return o;
}

/* what embed stores for the token: rnd_out(table[id, :]) */
static void embed_row(const weight *tab, int id, int out, double *row)
{
    uint32_t H = tab->dims[1];
    for (uint32_t c = 0; c < H; c++)
        row[c] = rnd(out, tab->val[(size_t)id * H + c]);
}

/* The logits tensor (meta.logits) and the argmax over it: argmax_part tiles
 * of width tile (stage after), then argmax_reduce (the last stage). With
 * partials != NONE (a matvec's EPI_ARGMAX wrote them), only the reduce. */
static void finish(G *g, uint32_t logits, uint32_t tile, uint32_t partials, uint32_t ntiles)
{
    g->meta.logits = logits;
    g->vocab = (int)(mpkb_numel(&g->tensors[logits]) * (uint64_t)g->tp);
    if (g->vocab > MAX_VOCAB)
        die("%s: vocab %d", g->name, g->vocab);
    uint32_t cols = (uint32_t)mpkb_numel(&g->tensors[logits]);
    if (partials == MPKB_NONE) {
        ntiles = (cols + tile - 1) / tile;
        uint32_t x = g->tensors[logits].ndim == 2 && g->tensors[logits].dims[0] == 1
                         ? logits
                         : view(g, logits, "logits as a row", g->tensors[logits].dtype, 0, 1, cols);
        partials = arena(g, "argmax partials", MPKB_F32, ntiles, 2);
        stage(g, 0);
        g->am_ntiles = 0;
        for (uint32_t k = 0; k < ntiles; k++) {
            mpkb_task *t = task(g, MPKB_OP_ARGMAX_PART, "argmax part");
            t->argmax_part.x = x;
            t->argmax_part.partials = partials;
            t->argmax_part.lo = (int32_t)(k * tile);
            t->argmax_part.hi = (int32_t)((k + 1) * tile < cols ? (k + 1) * tile : cols);
            t->argmax_part.tile = (int32_t)k;
            for (int r = 0; r < g->tp; r++) {
                g->am_lo[g->am_ntiles] = (int)(r * cols + k * tile);
                g->am_hi[g->am_ntiles++] = r * (int)cols + t->argmax_part.hi;
            }
        }
    }
    g->meta.next_output = arena(g, "next", MPKB_I32, 1);
    stage(g, g->tp > 1 ? MPKB_EV_ALL_RANKS : 0);
    mpkb_task *t = task(g, MPKB_OP_ARGMAX_REDUCE, "argmax");
    t->argmax_reduce.partials = partials;
    t->argmax_reduce.out = g->meta.next_output;
    if (g->tp > 1) {
        t->flags = MPKB_F_ALL_RANKS;
        t->argmax_reduce.cols_per_rank = (int32_t)cols;
    }
    (void)ntiles;
}

/* Events, triggers and queues from the stages; the file's bytes. */
static void *assemble(G *g, int workers, size_t *size, uint32_t **trig_out, uint32_t **qt_out, mpkb_queue **q_out)
{
    uint32_t nst = g->nevents;
    uint32_t *trig = xcalloc(g->ntasks, sizeof *trig);
    for (uint32_t i = 0; i < nst; i++)
        g->events[i] = (mpkb_event){.first_task = MPKB_NONE, .flags = g->stage_flags[i]};
    for (uint32_t i = 0; i < g->ntasks; i++) {
        int s = g->task_stage[i];
        uint32_t next = (uint32_t)(s + 1) % nst;
        mpkb_event *e = &g->events[s];
        if (e->first_task == MPKB_NONE)
            e->first_task = i;
        e->ntasks++;
        g->events[next].triggers++;
        g->tasks[i].dep = (uint32_t)s;
        g->tasks[i].trig_first = i;
        g->tasks[i].trig_count = 1;
        trig[i] = next;
    }
    g->events[0].lag = 1;
    mpkb_queue *q = xcalloc((size_t)workers, sizeof *q);
    uint32_t *qt = xcalloc(g->ntasks, sizeof *qt);
    uint32_t k = 0;
    for (int w = 0; w < workers; w++) {
        q[w].first = k;
        for (uint32_t i = (uint32_t)w; i < g->ntasks; i += (uint32_t)workers)
            qt[k++] = i;
        q[w].count = k - q[w].first;
    }
    mpkb_meta *m = &g->meta;
    m->name = str(g, g->name);
    m->workers = (uint32_t)workers;
    m->vocab = (uint32_t)g->vocab;
    m->step_event = 0;
    m->arena_size = g->arena;
    m->state_size = g->state;
    m->tp = (uint32_t)g->tp;
    uint64_t wbytes = 0;
    for (int i = 0; i < g->nw; i++)
        wbytes += g->tensors[g->w[i].tensor].nbytes;
    m->weight_size = wbytes;
    m->bytes_per_step = wbytes + g->arena;
    g->strings[g->nstrings++] = 0; /* ends with a NUL */
    mpkb_blob b = {.meta = m, .strings = g->strings, .strings_size = g->nstrings, .tensors = g->tensors,
                   .ntensors = g->ntensors, .tasks = g->tasks, .ntasks = g->ntasks, .events = g->events,
                   .nevents = nst, .triggers = trig, .ntriggers = g->ntasks, .queues = q,
                   .nqueues = (uint32_t)workers, .qtasks = qt, .nqtasks = g->ntasks, .consts = g->consts,
                   .consts_size = g->nconsts};
    *trig_out = trig, *qt_out = qt, *q_out = q;
    return mpkb_write(&b, size);
}

/* ---- writing a case ------------------------------------------------------ */

static FILE *open_out(const char *dir, const char *name, const char *ext)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    return f;
}

static void close_out(FILE *f, const char *what)
{
    if (ferror(f) | (fclose(f) != 0))
        die("writing %s failed", what);
}

static void write_safetensors(const G *g, const char *dir)
{
    static const char *const st_dtype[] = {"BF16", "F16", "F32"};
    size_t cap = 4096, n = 0;
    char *hdr = xcalloc(cap, 1);
    uint64_t off = 0;
    n += (size_t)snprintf(hdr + n, cap - n, "{");
    for (int i = 0; i < g->nw; i++) {
        const weight *w = &g->w[i];
        uint64_t bytes = numel(w->ndim, w->dims) * mpkb_dtype_size((uint32_t)w->dtype);
        n += (size_t)snprintf(hdr + n, cap - n, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                              g->strings + g->tensors[w->tensor].name, st_dtype[w->dtype]);
        for (int d = 0; d < w->ndim; d++)
            n += (size_t)snprintf(hdr + n, cap - n, "%s%u", d ? "," : "", w->dims[d]);
        n += (size_t)snprintf(hdr + n, cap - n, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                              (unsigned long long)(off + bytes));
        off += bytes;
        if (n + 512 > cap)
            die("%s: safetensors header too long", g->name);
    }
    n += (size_t)snprintf(hdr + n, cap - n, "}");
    while (n % 8)
        hdr[n++] = ' ';
    FILE *f = open_out(dir, g->name, ".safetensors");
    uint64_t len = n;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(len >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, n, f);
    for (int i = 0; i < g->nw; i++) {
        const weight *w = &g->w[i];
        uint64_t m = numel(w->ndim, w->dims);
        for (uint64_t k = 0; k < m; k++) {
            float x = (float)w->val[k];
            uint16_t h = w->dtype == MPKB_BF16 ? to_bf16(x) : to_f16(x);
            uint32_t u = f_bits(x);
            if (w->dtype == MPKB_F32)
                fwrite(&u, 4, 1, f);
            else
                fwrite(&h, 2, 1, f);
        }
    }
    close_out(f, "safetensors");
    free(hdr);
}

/* The reference argmax of the last step by the spec's tile rule, and the
 * other columns that rounding could make win. */
static void write_next(const G *g, const char *dir, const float *ex, const float *tl)
{
    int V = g->vocab;
    double v[MAX_VOCAB], lo[MAX_VOCAB], hi[MAX_VOCAB];
    for (int c = 0; c < V; c++) {
        v[c] = g->am_stored ? ex[c] : g->am_v[c];
        double d = g->am_stored ? tl[c] : g->am_d[c];
        lo[c] = v[c] - d, hi[c] = v[c] + d;
    }
    double best = -INFINITY;
    int at = 0;
    for (int k = 0; k < g->am_ntiles; k++) {
        double tb = -INFINITY;
        int ta = g->am_lo[k];
        for (int c = g->am_lo[k]; c < g->am_hi[k]; c++)
            if (v[c] > tb)
                tb = v[c], ta = c;
        if (tb > best || (tb == best && ta < at) || k == 0)
            best = tb, at = ta;
    }
    FILE *f = open_out(dir, g->name, ".next");
    fprintf(f, "%d", at);
    for (int c = 0; c < V; c++)
        if (c != at && !isnan(v[c]) && (hi[c] > lo[at] || (hi[c] == lo[at] && c < at && hi[c] != v[c])))
            fprintf(f, " %d", c);
    fprintf(f, "\n");
    close_out(f, "next");
}

static void emit(G *g, const char *dir, int workers, FILE *list)
{
    size_t size;
    uint32_t *trig, *qt;
    mpkb_queue *q;
    void *bytes = assemble(g, workers, &size, &trig, &qt, &q);
    if (!bytes)
        mpk_out_of_memory();
    mpkb_blob check;
    void *copy = xcalloc(size, 1); /* mpkb_parse wants 8-byte alignment: calloc gives it */
    memcpy(copy, bytes, size);
    if (!mpkb_parse(&check, copy, size, g->name, stderr))
        die("%s: the reader refuses the blob", g->name);
    FILE *f = open_out(dir, g->name, ".mpkb");
    fwrite(bytes, 1, size, f);
    close_out(f, "blob");
    free(copy), free(bytes), free(trig), free(qt), free(q);
    write_safetensors(g, dir);

    f = open_out(dir, g->name, ".prompt");
    for (int s = 0; s < g->steps; s++)
        fprintf(f, "%s%d", s ? "," : "", g->prompt[s]);
    fprintf(f, "\n");
    close_out(f, "prompt");

    FILE *fe = open_out(dir, g->name, ".expect"), *ft = open_out(dir, g->name, ".tol");
    float ex[MAX_VOCAB], tl[MAX_VOCAB];
    for (int s = 0; s < g->steps; s++) {
        for (int c = 0; c < g->vocab; c++) {
            double v = g->v[s][c], d = g->d[s][c], e = rnd(g->out_dtype, v);
            double t = 0;
            if (isfinite(v) && d > 0)
                t = fmax(fabs(rnd(g->out_dtype, v + d) - e), fabs(rnd(g->out_dtype, v - d) - e));
            ex[c] = (float)e;
            tl[c] = (float)t;
        }
        fwrite(ex, sizeof *ex, (size_t)g->vocab, fe);
        fwrite(tl, sizeof *tl, (size_t)g->vocab, ft);
    }
    close_out(fe, "expect");
    close_out(ft, "tol");
    write_next(g, dir, ex, tl);
    fprintf(list, "%s %d %d %s\n", g->name, g->vocab, g->steps, g->gpu ? "gpu" : "cpu-only");
    for (int i = 0; i < g->nw; i++)
        free(g->w[i].val);
}

/* ---- the cases ----------------------------------------------------------- */

/* embed: a table of dtype tdt into logits of dtype odt. Exact: tolerance 0. */
static void case_embed(G *g, const char *dir, FILE *list, const char *name, int tdt, int odt, uint32_t V,
                       uint32_t H, uint32_t tile, double scale, int workers)
{
    start(g, name, 1, 3);
    if (tdt == MPKB_BF16)
        g->meta.max_seq = MPKB_NONE; /* unbounded, as mpk build writes it */
    inputs(g, false, (int)V);
    stage(g, 0);
    weight *tab = weight(g, "embed.weight", tdt, -scale, scale, V, H);
    /* a few tiny values: f16 subnormals, bf16 and f16 rounding of them */
    for (uint32_t i = 0; i < V * H; i += 7)
        tab->val[i] = rnd(tdt, tab->val[i] * 1e-6);
    uint32_t lg = embed(g, "logits", tab, odt, tile);
    finish(g, lg, 48, MPKB_NONE, 0);
    g->out_dtype = odt;
    for (int s = 0; s < g->steps; s++)
        embed_row(tab, g->prompt[s], odt, g->v[s]);
    emit(g, dir, workers, list);
}

enum { PRO_NONE, PRO_NORM, PRO_SILU };

typedef struct {
    const char *name;
    int pro;
    bool residual, argmax;
    uint32_t M, K, N, tile;
    int xdt, wdt, odt;    /* x, w (and gamma or b, residual), out */
    bool b_weight;        /* PRO_SILU_MUL's b a weight, not an embedding */
    int workers;
} mv_case;

/*
 * matvec: x [M, K] (an embedding viewed as M rows), w [N, K], out [M, N]
 * = the logits. Error bound per output: the K products and their sum, any
 * order, (K + 1) u times the sum of |in_k w_nk|, plus the prologue's
 * relative error in each in_k (rmsnorm: the sum of squares, the root, two
 * products: (K/2 + 8) u; silu_mul: exp, a division, a product: 16 u), plus
 * one rounding for the residual's addition.
 */
static void case_matvec(G *g, const char *dir, FILE *list, const mv_case *c)
{
    uint32_t M = c->M, K = c->K, N = c->N;
    start(g, c->name, 1, 3);
    inputs(g, false, 11);
    stage(g, 0);
    weight *xt = weight(g, "x.weight", MPKB_BF16, -2, 2, 11, M * K);
    uint32_t xe = embed(g, "x", xt, c->xdt, 64);
    weight *bt = NULL, *gam = NULL, *rt = NULL;
    uint32_t be = MPKB_NONE, re = MPKB_NONE;
    if (c->pro == PRO_SILU && !c->b_weight) {
        bt = weight(g, "b.weight", c->wdt, -1.5, 1.5, 11, M * K);
        be = embed(g, "b", bt, c->xdt, 100);
    }
    if (c->residual) {
        rt = weight(g, "r.weight", MPKB_BF16, -4, 4, 11, M * N);
        re = embed(g, "residual", rt, MPKB_F32, 128);
    }
    stage(g, 0);
    uint32_t x = view(g, xe, "x rows", c->xdt, 0, M, K);
    weight *w = weight(g, "w.weight", c->wdt, -1, 1, N, K);
    uint32_t pro = MPKB_NONE;
    if (c->pro == PRO_NORM) {
        gam = weight(g, "gamma.weight", c->wdt, 0.5, 1.5, K);
        pro = gam->tensor;
    } else if (c->pro == PRO_SILU) {
        if (c->b_weight) {
            bt = weight(g, "b.weight", c->wdt, -1.5, 1.5, M, K);
            pro = bt->tensor;
        } else {
            pro = view(g, be, "b rows", c->xdt, 0, M, K);
        }
    }
    uint32_t r = c->residual ? view(g, re, "residual rows", MPKB_F32, 0, M, N) : MPKB_NONE;
    uint32_t out = arena(g, "logits", c->odt, M, N);
    uint32_t ntiles = (N + c->tile - 1) / c->tile;
    uint32_t parts = c->argmax ? arena(g, "argmax partials", MPKB_F32, ntiles, 2) : MPKB_NONE;
    for (uint32_t k = 0; k < ntiles; k++) {
        mpkb_task *t = task(g, MPKB_OP_MATVEC, "w");
        t->matvec.x = x;
        t->matvec.w = w->tensor;
        t->matvec.out = out;
        t->matvec.residual = r;
        t->matvec.pro = pro;
        t->matvec.partials = parts;
        t->matvec.lo = (int32_t)(k * c->tile);
        t->matvec.hi = (int32_t)((k + 1) * c->tile < N ? (k + 1) * c->tile : N);
        t->matvec.tile = c->argmax ? (int32_t)k : 0;
        t->flags = (uint16_t)((c->pro == PRO_NORM ? MPKB_F_PRO_RMSNORM : 0) | (c->pro == PRO_SILU ? MPKB_F_PRO_SILU_MUL : 0) |
                              (c->residual ? MPKB_F_EPI_RESIDUAL : 0) | (c->argmax ? MPKB_F_EPI_ARGMAX : 0));
        if (c->pro == PRO_NORM)
            t->matvec.eps = 1e-5f;
        if (c->argmax) {
            g->am_lo[k] = (int)(k * c->tile);
            g->am_hi[k] = t->matvec.hi;
        }
    }
    if (c->argmax) {
        g->am_ntiles = (int)ntiles;
        g->am_stored = false;
    }
    finish(g, out, 40, parts, ntiles);
    g->out_dtype = c->odt;

    double *xr = xcalloc((size_t)M * K, sizeof *xr), *br = xcalloc((size_t)M * K, sizeof *br);
    double *rr = xcalloc((size_t)M * N, sizeof *rr), *in = xcalloc(K, sizeof *in);
    for (int s = 0; s < g->steps; s++) {
        int id = g->prompt[s];
        embed_row(xt, id, c->xdt, xr);
        if (bt && c->b_weight)
            memcpy(br, bt->val, sizeof *br * M * K);
        else if (bt)
            embed_row(bt, id, c->xdt, br);
        if (rt)
            embed_row(rt, id, MPKB_F32, rr);
        for (uint32_t m = 0; m < M; m++) {
            double e_in = 0;
            const double *xm = xr + (size_t)m * K;
            if (c->pro == PRO_NORM) {
                double ss = 0;
                for (uint32_t k = 0; k < K; k++)
                    ss += xm[k] * xm[k];
                double rs = 1.0 / sqrt(ss / K + (double)1e-5f);
                for (uint32_t k = 0; k < K; k++)
                    in[k] = gam->val[k] * (xm[k] * rs);
                e_in = (K / 2.0 + 8) * U;
            } else if (c->pro == PRO_SILU) {
                for (uint32_t k = 0; k < K; k++)
                    in[k] = xm[k] / (1 + exp(-xm[k])) * br[(size_t)m * K + k];
                e_in = 16 * U;
            } else {
                memcpy(in, xm, sizeof *in * K);
            }
            for (uint32_t n = 0; n < N; n++) {
                double acc = 0, mag = 0;
                for (uint32_t k = 0; k < K; k++) {
                    acc += in[k] * w->val[(size_t)n * K + k];
                    mag += fabs(in[k] * w->val[(size_t)n * K + k]);
                }
                double d = ((K + 1) * U + e_in) * mag;
                if (c->argmax && s == g->steps - 1)
                    g->am_v[n] = acc, g->am_d[n] = d;
                if (c->residual)
                    acc += rr[(size_t)m * N + n], d += U * fabs(acc);
                g->v[s][m * N + n] = acc;
                g->d[s][m * N + n] = d;
            }
        }
    }
    free(xr), free(br), free(rr), free(in);
    emit(g, dir, c->workers, list);
}

/*
 * A split matvec: matvec_part tasks, `parts` per tile of w's rows, write
 * f32 partials [parts, M, N]; part_sum tasks (pieces of `piece`) add them
 * and the residual into out [M, N] = the logits. Bound: the matvec's,
 * (K + 1) u, plus the parts' sum, parts u, of the sum of |x_k w_nk|; and
 * the residual's rounding.
 */
static void case_split(G *g, const char *dir, FILE *list, const char *name, uint32_t M, uint32_t K, uint32_t N,
                       uint32_t tile, uint32_t parts, bool residual, int xdt, int wdt, int odt, uint32_t piece,
                       int workers)
{
    start(g, name, 1, 3);
    inputs(g, false, 11);
    stage(g, 0);
    weight *xt = weight(g, "x.weight", MPKB_BF16, -2, 2, 11, M * K);
    uint32_t xe = embed(g, "x", xt, xdt, 64);
    weight *rt = NULL;
    uint32_t re = MPKB_NONE;
    if (residual) {
        rt = weight(g, "r.weight", MPKB_BF16, -4, 4, 11, M * N);
        re = embed(g, "residual", rt, MPKB_F32, 128);
    }
    stage(g, 0);
    uint32_t x = view(g, xe, "x rows", xdt, 0, M, K);
    weight *w = weight(g, "w.weight", wdt, -1, 1, N, K);
    uint32_t pt = arena(g, "k parts", MPKB_F32, parts, M, N);
    for (uint32_t lo = 0; lo < N; lo += tile)
        for (uint32_t p = 0; p < parts; p++) {
            mpkb_task *t = task(g, MPKB_OP_MATVEC_PART, "w");
            t->matvec_part.x = x;
            t->matvec_part.w = w->tensor;
            t->matvec_part.partials = pt;
            t->matvec_part.lo = (int32_t)lo;
            t->matvec_part.hi = (int32_t)(lo + tile < N ? lo + tile : N);
            t->matvec_part.part = (int32_t)p;
            t->matvec_part.parts = (int32_t)parts;
        }
    stage(g, 0);
    uint32_t r = residual ? view(g, re, "residual rows", MPKB_F32, 0, M, N) : MPKB_NONE;
    uint32_t out = arena(g, "logits", odt, M, N);
    for (uint32_t lo = 0; lo < M * N; lo += piece) {
        mpkb_task *t = task(g, MPKB_OP_PART_SUM, "sum");
        t->part_sum.partials = pt;
        t->part_sum.residual = r;
        t->part_sum.out = out;
        t->part_sum.lo = (int32_t)lo;
        t->part_sum.hi = (int32_t)(lo + piece < M * N ? lo + piece : M * N);
        t->flags = residual ? MPKB_F_EPI_RESIDUAL : 0;
    }
    finish(g, out, 40, MPKB_NONE, 0);
    g->out_dtype = odt;

    double *xr = xcalloc((size_t)M * K, sizeof *xr), *rr = xcalloc((size_t)M * N, sizeof *rr);
    for (int s = 0; s < g->steps; s++) {
        embed_row(xt, g->prompt[s], xdt, xr);
        if (rt)
            embed_row(rt, g->prompt[s], MPKB_F32, rr);
        for (uint32_t m = 0; m < M; m++)
            for (uint32_t n = 0; n < N; n++) {
                double acc = 0, mag = 0;
                for (uint32_t k = 0; k < K; k++) {
                    acc += xr[(size_t)m * K + k] * w->val[(size_t)n * K + k];
                    mag += fabs(xr[(size_t)m * K + k] * w->val[(size_t)n * K + k]);
                }
                double d = (K + 1 + parts) * U * mag;
                if (residual)
                    acc += rr[(size_t)m * N + n], d += U * fabs(acc);
                g->v[s][m * N + n] = acc;
                g->d[s][m * N + n] = d;
            }
    }
    free(xr), free(rr);
    emit(g, dir, workers, list);
}

typedef struct {
    const char *name;
    uint32_t H, G, D, S, B, n;
    bool q_norm, k_norm, q_rope, k_rope;
    int qdt, cdt, odt;    /* q, k, v; the cache; out */
    int workers;
} at_case;

/* inverse frequencies theta^(-2i/D), as mpk stores them */
static void inv_freq(float *f, uint32_t D, double theta)
{
    for (uint32_t i = 0; i < D / 2; i++)
        f[i] = (float)pow(theta, -2.0 * i / D);
}

/* norm then rope of one head in double, and a bound on each element's
 * error in fp32: the norm's (D/2 + 8) u relative; rope's angle, cos and sin
 * (libm's last bits) and two products, 8 u and the angle's u p f. */
static void qk_prep(const double *x, uint32_t D, const weight *nw, double eps, const float *rope, int pos,
                    double *out, double *err)
{
    double e = 0;
    for (uint32_t i = 0; i < D; i++)
        out[i] = x[i];
    if (nw) {
        double ss = 0;
        for (uint32_t i = 0; i < D; i++)
            ss += x[i] * x[i];
        double r = 1.0 / sqrt(ss / D + eps);
        for (uint32_t i = 0; i < D; i++)
            out[i] = nw->val[i] * (x[i] * r);
        e = (D / 2.0 + 8) * U;
    }
    for (uint32_t i = 0; i < D; i++)
        err[i] = e * fabs(out[i]);
    if (rope) {
        for (uint32_t i = 0; i < D / 2; i++) {
            double a = out[i], b = out[i + D / 2], ang = (double)(float)pos * rope[i];
            double bound = (fabs(a) + fabs(b)) * (e + (8 + ang) * U);
            out[i] = a * cos(ang) - b * sin(ang);
            out[i + D / 2] = b * cos(ang) + a * sin(ang);
            err[i] = err[i + D / 2] = bound;
        }
    }
}

/*
 * attention (DIRECT, or split into chunks with attn_merge): q, k, v views of
 * one embedding [(H + 2G) D], a cache [2, G, S, D] in the state, out [1, H,
 * D] = the logits. The reference keeps its own cache in double, rounded as
 * the executor's (rnd_cache), and the elements whose rounding the fp32
 * error of norm and rope can flip (none, mostly). Bound per output: the
 * scores' error (each qq's, each ambiguous cache key's, D + 2 roundings of
 * the dot product, the max subtraction) moves the output by at most twice
 * that times max |v|; the weighted sum and the normalizer add (J + 8) u of
 * sum p_j |v_j|; the merge of chunks another (n + 16) u.
 */
static void case_attention(G *g, const char *dir, FILE *list, const at_case *c)
{
    uint32_t H = c->H, Gk = c->G, D = c->D, S = c->S, B = c->B, n = c->n, per = H / Gk;
    bool direct = n == 1;
    start(g, c->name, 1, 4);
    inputs(g, true, 13);
    stage(g, 0);
    /* the table in q's dtype: an f32 v rounds when it goes into a bf16 cache */
    weight *qkv_t = weight(g, "qkv.weight", c->qdt, -2, 2, 13, (H + 2 * Gk) * D);
    uint32_t qkv = embed(g, "qkv", qkv_t, c->qdt, 96);
    uint32_t es = mpkb_dtype_size((uint32_t)c->qdt);
    uint32_t q = view(g, qkv, "q", c->qdt, 0, 1, H, D);
    uint32_t k = view(g, qkv, "k", c->qdt, (uint64_t)H * D * es, 1, Gk, D);
    uint32_t v = view(g, qkv, "v", c->qdt, (uint64_t)(H + Gk) * D * es, 1, Gk, D);
    uint32_t cache = state(g, "kv cache", c->cdt, 2, Gk, S, D);
    g->meta.max_seq = S;
    weight *qn = c->q_norm ? weight(g, "q_norm.weight", MPKB_BF16, 0.5, 1.5, D) : NULL;
    weight *kn = c->k_norm ? weight(g, "k_norm.weight", MPKB_F16, 0.5, 1.5, D) : NULL;
    float fq[128], fk[128];
    inv_freq(fq, D, 10000.0);
    inv_freq(fk, D, 500.0); /* unlike q's, so that swapped tables show */
    uint32_t qr = c->q_rope ? consts(g, "q rope", fq, D / 2) : MPKB_NONE;
    uint32_t kr = c->k_rope ? consts(g, "k rope", fk, D / 2) : MPKB_NONE;
    uint32_t out = arena(g, "attention out", c->odt, 1, H, D);
    uint32_t parts = direct ? MPKB_NONE : arena(g, "attention partials", MPKB_F32, H, n, D + 2);
    float scale = (float)(1.0 / sqrt((double)D));
    stage(g, 0);
    for (uint32_t gk = 0; gk < Gk; gk++)
        for (uint32_t ch = 0; ch < n; ch++) {
            mpkb_task *t = task(g, MPKB_OP_ATTENTION, "attention");
            t->attention.q = q, t->attention.k = k, t->attention.v = v;
            t->attention.cache = cache;
            t->attention.pos = g->meta.pos_input;
            t->attention.q_norm = qn ? qn->tensor : MPKB_NONE;
            t->attention.k_norm = kn ? kn->tensor : MPKB_NONE;
            t->attention.q_rope = qr, t->attention.k_rope = kr;
            t->attention.out = direct ? out : parts;
            t->attention.kv_head = (int32_t)gk;
            t->attention.chunk = (int32_t)ch;
            t->attention.block = (int32_t)B;
            t->attention.chunks = (int32_t)n;
            t->attention.scale = scale;
            t->attention.q_eps = 1e-6f;
            t->attention.k_eps = 1e-5f;
            t->flags = direct ? MPKB_F_DIRECT : 0;
        }
    if (!direct) {
        stage(g, 0);
        for (uint32_t gk = 0; gk < Gk; gk++) {
            mpkb_task *t = task(g, MPKB_OP_ATTN_MERGE, "attn merge");
            t->attn_merge.partials = parts;
            t->attn_merge.out = out;
            t->attn_merge.kv_head = (int32_t)gk;
            t->attn_merge.chunks = (int32_t)n;
            t->attn_merge.group = (int32_t)per;
        }
    }
    uint32_t lg = view(g, out, "logits", c->odt, 0, 1, H * D);
    finish(g, lg, 64, MPKB_NONE, 0);
    g->out_dtype = c->odt;

    /* the reference's cache: values and, for keys, how far a flipped
     * rounding could move them */
    double *ck = xcalloc((size_t)Gk * S * D, sizeof *ck), *cku = xcalloc((size_t)Gk * S * D, sizeof *cku);
    double *cv = xcalloc((size_t)Gk * S * D, sizeof *cv);
    double row[2048], qq[256], qe[256], kk[256], ke[256], sc[64], se[64];
    for (int s = 0; s < g->steps; s++) {
        int p = s;
        embed_row(qkv_t, g->prompt[s], c->qdt, row);
        for (uint32_t gk = 0; gk < Gk; gk++) {
            qk_prep(row + (H + gk) * D, D, kn, (double)1e-5f, c->k_rope ? fk : NULL, p, kk, ke);
            for (uint32_t i = 0; i < D; i++) {
                size_t at = ((size_t)gk * S + (size_t)p) * D + i;
                ck[at] = rnd(c->cdt, kk[i]);
                cku[at] = fmax(fabs(rnd(c->cdt, kk[i] + ke[i]) - ck[at]), fabs(rnd(c->cdt, kk[i] - ke[i]) - ck[at]));
                cv[at] = rnd(c->cdt, row[(H + Gk + gk) * D + i]);
            }
        }
        for (uint32_t h = 0; h < H; h++) {
            uint32_t gk = h / per;
            qk_prep(row + h * D, D, qn, (double)1e-6f, c->q_rope ? fq : NULL, p, qq, qe);
            double m = -INFINITY, smax = 0;
            for (int j = 0; j <= p; j++) {
                const double *key = ck + ((size_t)gk * S + (size_t)j) * D, *ku = cku + ((size_t)gk * S + (size_t)j) * D;
                double dot = 0, mag = 0, err = 0;
                for (uint32_t i = 0; i < D; i++) {
                    dot += qq[i] * key[i];
                    mag += fabs(qq[i] * key[i]);
                    err += qe[i] * fabs(key[i]) + fabs(qq[i]) * ku[i];
                }
                sc[j] = dot * scale;
                se[j] = (err + (D + 2) * U * mag) * scale;
                m = fmax(m, sc[j]);
            }
            double l = 0, emax = 0;
            for (int j = 0; j <= p; j++) {
                smax = fmax(smax, fabs(sc[j] - m));
                emax = fmax(emax, se[j]);
            }
            emax += U * smax;
            for (int j = 0; j <= p; j++)
                l += exp(sc[j] - m);
            for (uint32_t i = 0; i < D; i++) {
                double a = 0, pv = 0, vmax = 0;
                for (int j = 0; j <= p; j++) {
                    double vj = cv[((size_t)gk * S + (size_t)j) * D + i], pj = exp(sc[j] - m) / l;
                    a += pj * vj;
                    pv += pj * fabs(vj);
                    vmax = fmax(vmax, fabs(vj));
                }
                g->v[s][h * D + i] = a;
                g->d[s][h * D + i] = 2 * emax * vmax + (p + 9 + (direct ? 0 : n + 16)) * U * pv;
            }
        }
    }
    free(ck), free(cku), free(cv);
    emit(g, dir, c->workers, list);
}

/* argmax_part and argmax_reduce on crafted rows: ties within a tile and
 * across tiles (the lowest column wins), NaNs (never win), a tile of NaNs
 * and one of -inf, a row of NaNs (0). The prompt's last token picks the row. */
static void case_argmax(G *g, const char *dir, FILE *list, const char *name, int last_row)
{
    uint32_t V = 150;
    start(g, name, 1, 3);
    inputs(g, false, 4);
    g->prompt[g->steps - 1] = last_row;
    stage(g, 0);
    weight *tab = weight(g, "rows.weight", MPKB_F32, -1, 1, 4, V);
    double *r0 = tab->val, *r1 = r0 + V, *r2 = r1 + V, *r3 = r2 + V;
    r0[45] = r0[70] = r0[120] = 3.0;                    /* across tiles of 40 */
    r1[5] = r1[100] = NAN, r1[90] = r1[91] = 2.5;        /* within a tile */
    r1[0] = r1[149] = -INFINITY;
    for (uint32_t c = 0; c < 40; c++)
        r2[c] = NAN, r2[40 + c] = -INFINITY;
    r2[131] = r2[140] = 1.5;
    for (uint32_t c = 0; c < V; c++)
        r3[c] = NAN;
    r3[77] = -1.0; /* NaN never wins; a row of no finite value is an error (tests/run-cli.sh) */
    uint32_t lg = embed(g, "logits", tab, MPKB_F32, 64);
    finish(g, lg, 40, MPKB_NONE, 0);
    for (int s = 0; s < g->steps; s++)
        embed_row(tab, g->prompt[s], MPKB_F32, g->v[s]);
    emit(g, dir, 2, list);
}

/* rmsnorm of R vectors of D: (D/2 + 8) u relative, as in matvec's prologue */
static void case_rmsnorm(G *g, const char *dir, FILE *list, const char *name, uint32_t R, uint32_t D, int xdt,
                         int gdt, int odt, uint32_t per_task)
{
    start(g, name, 1, 3);
    inputs(g, false, 9);
    stage(g, 0);
    weight *xt = weight(g, "x.weight", MPKB_BF16, -3, 3, 9, R * D);
    uint32_t xe = embed(g, "x", xt, xdt, 80);
    stage(g, 0);
    uint32_t x = view(g, xe, "x vectors", xdt, 0, R, D);
    weight *gam = weight(g, "gamma.weight", gdt, 0.25, 2, D);
    uint32_t out = arena(g, "normed", odt, R, D);
    for (uint32_t lo = 0; lo < R; lo += per_task) {
        mpkb_task *t = task(g, MPKB_OP_RMSNORM, "rmsnorm");
        t->rmsnorm.x = x, t->rmsnorm.gamma = gam->tensor, t->rmsnorm.out = out;
        t->rmsnorm.lo = (int32_t)lo;
        t->rmsnorm.hi = (int32_t)(lo + per_task < R ? lo + per_task : R);
        t->rmsnorm.eps = 1e-5f;
    }
    uint32_t lg = view(g, out, "logits", odt, 0, 1, R * D);
    finish(g, lg, 64, MPKB_NONE, 0);
    g->out_dtype = odt;
    double xr[1024];
    for (int s = 0; s < g->steps; s++) {
        embed_row(xt, g->prompt[s], xdt, xr);
        for (uint32_t r = 0; r < R; r++) {
            double ss = 0;
            for (uint32_t i = 0; i < D; i++)
                ss += xr[r * D + i] * xr[r * D + i];
            double rs = 1.0 / sqrt(ss / D + (double)1e-5f);
            for (uint32_t i = 0; i < D; i++) {
                double o = gam->val[i] * (xr[r * D + i] * rs);
                g->v[s][r * D + i] = o;
                g->d[s][r * D + i] = (D / 2.0 + 8) * U * fabs(o);
            }
        }
    }
    emit(g, dir, 2, list);
}

/* rope of H heads of D at the step's position; bound as in qk_prep */
static void case_rope(G *g, const char *dir, FILE *list, const char *name, uint32_t H, uint32_t D, int xdt, int odt,
                      uint32_t per_task)
{
    start(g, name, 1, 4);
    inputs(g, true, 10);
    stage(g, 0);
    weight *xt = weight(g, "x.weight", MPKB_BF16, -2, 2, 10, H * D);
    uint32_t xe = embed(g, "x", xt, xdt, 128);
    stage(g, 0);
    uint32_t x = view(g, xe, "x heads", xdt, 0, 1, H, D);
    float f[128];
    inv_freq(f, D, 10000.0);
    f[1] = 1.75f; /* one fast frequency: larger angles */
    uint32_t ft = consts(g, "inv freq", f, D / 2);
    uint32_t out = arena(g, "roped", odt, 1, H, D);
    for (uint32_t lo = 0; lo < H; lo += per_task) {
        mpkb_task *t = task(g, MPKB_OP_ROPE, "rope");
        t->rope.x = x, t->rope.pos = g->meta.pos_input, t->rope.inv_freq = ft, t->rope.out = out;
        t->rope.lo = (int32_t)lo;
        t->rope.hi = (int32_t)(lo + per_task < H ? lo + per_task : H);
    }
    uint32_t lg = view(g, out, "logits", odt, 0, 1, H * D);
    finish(g, lg, 64, MPKB_NONE, 0);
    g->out_dtype = odt;
    double xr[1024], o[256], e[256];
    for (int s = 0; s < g->steps; s++) {
        embed_row(xt, g->prompt[s], xdt, xr);
        for (uint32_t h = 0; h < H; h++) {
            qk_prep(xr + h * D, D, NULL, 0, f, s, o, e);
            for (uint32_t i = 0; i < D; i++)
                g->v[s][h * D + i] = o[i], g->d[s][h * D + i] = e[i] + 2 * U * fabs(o[i]);
        }
    }
    emit(g, dir, 3, list);
}

/* add, mul (one rounding: u |result|), silu (exp, a division: 16 u |result|);
 * b_weight: b is a weight operand itself, not an embedding */
static void case_eltwise(G *g, const char *dir, FILE *list, const char *name, int op, uint32_t N, int adt, int bdt,
                         int odt, bool b_weight, uint32_t tile)
{
    start(g, name, 1, 3);
    inputs(g, false, 12);
    stage(g, 0);
    weight *at = weight(g, "a.weight", MPKB_BF16, op == MPKB_OP_SILU ? -10 : -3, op == MPKB_OP_SILU ? 10 : 3, 12, N);
    uint32_t a = embed(g, "a", at, adt, 64);
    weight *bt = NULL;
    uint32_t b = MPKB_NONE;
    if (op != MPKB_OP_SILU) {
        if (b_weight) {
            bt = weight(g, "b.weight", bdt, -3, 3, 1, N);
            b = bt->tensor;
        } else {
            bt = weight(g, "b.weight", MPKB_F32, -3, 3, 12, N);
            b = embed(g, "b", bt, bdt, 64);
        }
    }
    stage(g, 0);
    uint32_t out = arena(g, "logits", odt, 1, N);
    for (uint32_t lo = 0; lo < N; lo += tile) {
        mpkb_task *t = task(g, op, name);
        t->t[0] = a;
        t->t[1] = b;
        t->t[2] = out;
        t->i[0] = (int32_t)lo;
        t->i[1] = (int32_t)(lo + tile < N ? lo + tile : N);
    }
    finish(g, out, 50, MPKB_NONE, 0);
    g->out_dtype = odt;
    double ar[1024], br[1024];
    for (int s = 0; s < g->steps; s++) {
        embed_row(at, g->prompt[s], adt, ar);
        if (bt && b_weight)
            memcpy(br, bt->val, sizeof *br * N);
        else if (bt)
            embed_row(bt, g->prompt[s], bdt, br);
        for (uint32_t i = 0; i < N; i++) {
            double o = op == MPKB_OP_ADD ? ar[i] + br[i] : op == MPKB_OP_MUL ? ar[i] * br[i] : ar[i] / (1 + exp(-ar[i]));
            g->v[s][i] = o;
            g->d[s][i] = (op == MPKB_OP_SILU ? 16 : 1) * U * fabs(o);
        }
    }
    emit(g, dir, 2, list);
}

/* copy: strided rows of an embedding, and of a weight, into views of the
 * logits; exact, tolerance 0 */
static void case_copy(G *g, const char *dir, FILE *list)
{
    start(g, "copy", 1, 3);
    inputs(g, false, 8);
    stage(g, 0);
    weight *st = weight(g, "src.weight", MPKB_BF16, -2, 2, 8, 150);
    uint32_t src = embed(g, "src", st, MPKB_F32, 150);
    weight *cw = weight(g, "c.weight", MPKB_F32, -5, 5, 3, 10);
    stage(g, 0);
    uint32_t lg = arena(g, "logits", MPKB_F32, 1, 100);
    uint32_t d0 = view(g, lg, "logits 0..68", MPKB_F32, 0, 4, 17);
    uint32_t d1 = view(g, lg, "logits 68..88", MPKB_F32, 68 * 4, 1, 20);
    uint32_t d2 = view(g, lg, "logits 88..100", MPKB_F32, 88 * 4, 12);
    static const struct { int32_t rows, stride, len, off; } cp[3] = {{4, 30, 17, 3}, {1, 20, 20, 125}, {2, 10, 6, 4}};
    const uint32_t from[3] = {src, src, cw->tensor}, to[3] = {d0, d1, d2};
    for (int k = 0; k < 3; k++) {
        mpkb_task *t = task(g, MPKB_OP_COPY, "copy");
        t->copy.src = from[k], t->copy.dst = to[k];
        t->copy.rows = cp[k].rows, t->copy.src_stride = cp[k].stride, t->copy.len = cp[k].len;
        t->copy.src_off = cp[k].off;
    }
    finish(g, lg, 32, MPKB_NONE, 0);
    double sr[150];
    for (int s = 0; s < g->steps; s++) {
        embed_row(st, g->prompt[s], MPKB_F32, sr);
        int at = 0;
        for (int k = 0; k < 3; k++)
            for (int r = 0; r < cp[k].rows; r++)
                for (int e = 0; e < cp[k].len; e++) {
                    int i = cp[k].off + r * cp[k].stride + e;
                    g->v[s][at++] = k < 2 ? sr[i] : cw->val[i];
                }
    }
    emit(g, dir, 2, list);
}

/*
 * allreduce: at tp = 1 the sum over ranks is the rank's own partial; one
 * task with the residual epilogue and one without. At tp = 2 (CPU only:
 * the GPU executor runs one GPU) the partials come from a table split by
 * columns, so rank r's partial is columns r H .. (r + 1) H; the residual
 * from another split table, so the ranks' logits differ, and the argmax
 * reduces every rank's partials (ALL_RANKS). Bound: tp - 1 additions of
 * the partials and one of the residual, u each.
 */
static void case_allreduce(G *g, const char *dir, FILE *list, const char *name, int tp, uint32_t H, int odt)
{
    start(g, name, tp, 3);
    g->gpu = false; /* the one-GPU executor runs no allreduce, even at tp = 1 */
    inputs(g, false, 11);
    stage(g, 0);
    weight *pt = weight_(g, "p.weight", MPKB_BF16, -3, 3, tp > 1 ? 2 : 0, DIMS(11, H * (uint32_t)tp));
    weight *rt = weight_(g, "r.weight", MPKB_F16, -1, 1, tp > 1 ? 2 : 0, DIMS(11, H * (uint32_t)tp));
    uint32_t p = embed(g, "partial", pt, MPKB_F32, 64);
    uint32_t r = embed(g, "residual", rt, MPKB_BF16, 64);
    stage(g, tp > 1 ? MPKB_EV_ALL_RANKS : 0);
    uint32_t out = arena(g, "logits", odt, 1, H);
    uint32_t split = tp > 1 ? H : H / 2 + 3;
    for (int k = 0; k < 2; k++) {
        mpkb_task *t = task(g, MPKB_OP_ALLREDUCE, "allreduce");
        t->allreduce.partial = p, t->allreduce.out = out;
        t->allreduce.lo = k ? (int32_t)split : 0;
        t->allreduce.hi = k ? (int32_t)H : (int32_t)split;
        if (k == 0) {
            t->flags = MPKB_F_EPI_RESIDUAL;
            t->allreduce.residual = r;
        }
        if (tp > 1) { /* one task of the whole range, with the residual */
            t->allreduce.hi = (int32_t)H;
            break;
        }
    }
    finish(g, out, 32, MPKB_NONE, 0);
    g->out_dtype = odt;
    uint32_t W = H * (uint32_t)tp;
    for (int s = 0; s < g->steps; s++) {
        const double *pr = pt->val + (size_t)g->prompt[s] * W, *rr = rt->val + (size_t)g->prompt[s] * W;
        for (int rank = 0; rank < tp; rank++)
            for (uint32_t i = 0; i < H; i++) {
                double sum = 0, mag = 0;
                for (int q = 0; q < tp; q++)
                    sum += pr[(uint32_t)q * H + i], mag += fabs(pr[(uint32_t)q * H + i]);
                bool res = tp > 1 || i < split;
                double o = sum + (res ? rnd(MPKB_BF16, rr[(uint32_t)rank * H + i]) : 0);
                g->v[s][(uint32_t)rank * H + i] = o;
                g->d[s][(uint32_t)rank * H + i] = (tp - 1) * U * mag + (res ? U * fabs(o) : 0);
            }
    }
    emit(g, dir, 3, list);
}

static void make_all(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/cases", dir);
    FILE *list = fopen(path, "w");
    if (!list)
        die("%s: %s", path, strerror(errno));
    G *g = xcalloc(1, sizeof *g);

    case_embed(g, dir, list, "embed-bf16-f32", MPKB_BF16, MPKB_F32, 13, 200, 64, 2, 3);
    case_embed(g, dir, list, "embed-f16-bf16", MPKB_F16, MPKB_BF16, 9, 150, 150, 100, 1);
    case_embed(g, dir, list, "embed-f32-f16", MPKB_F32, MPKB_F16, 7, 96, 40, 3, 2);

    /* every legal flag combination: a prologue (none, rmsnorm, silu_mul),
     * the residual epilogue or not, the argmax epilogue or not */
    static const mv_case mv[] = {
        {"matvec", PRO_NONE, false, false, 2, 200, 131, 32, MPKB_F32, MPKB_BF16, MPKB_F32, false, 3},
        {"matvec-residual", PRO_NONE, true, false, 1, 256, 100, 64, MPKB_BF16, MPKB_F16, MPKB_BF16, false, 2},
        {"matvec-argmax", PRO_NONE, false, true, 1, 72, 97, 16, MPKB_F16, MPKB_F32, MPKB_F32, false, 4},
        {"matvec-residual-argmax", PRO_NONE, true, true, 1, 128, 144, 48, MPKB_F32, MPKB_BF16, MPKB_F32, false, 3},
        {"matvec-rmsnorm", PRO_NORM, false, false, 1, 256, 160, 64, MPKB_F32, MPKB_BF16, MPKB_F32, false, 2},
        {"matvec-rmsnorm-residual", PRO_NORM, true, false, 2, 96, 75, 25, MPKB_BF16, MPKB_BF16, MPKB_F32, false, 3},
        {"matvec-rmsnorm-argmax", PRO_NORM, false, true, 1, 200, 128, 32, MPKB_F32, MPKB_F16, MPKB_BF16, false, 5},
        {"matvec-rmsnorm-residual-argmax", PRO_NORM, true, true, 1, 64, 90, 30, MPKB_BF16, MPKB_BF16, MPKB_F32, false, 2},
        {"matvec-silu_mul", PRO_SILU, false, false, 2, 192, 100, 40, MPKB_BF16, MPKB_F32, MPKB_F16, false, 3},
        {"matvec-silu_mul-residual", PRO_SILU, true, false, 1, 144, 64, 64, MPKB_F32, MPKB_BF16, MPKB_F32, true, 1},
        {"matvec-silu_mul-argmax", PRO_SILU, false, true, 1, 160, 120, 24, MPKB_BF16, MPKB_BF16, MPKB_F32, true, 4},
        {"matvec-silu_mul-residual-argmax", PRO_SILU, true, true, 1, 100, 70, 32, MPKB_F16, MPKB_F16, MPKB_F32, false, 2},
        /* a chunk graph's down projection: M > 1, bf16 x, b and w, K in slabs of
         * 32: on tensor cores (mv_tc) with the prologue; M in a whole and in a
         * partial tile of 16 */
        {"matvec-silu_mul-tc", PRO_SILU, true, false, 16, 256, 64, 16, MPKB_BF16, MPKB_BF16, MPKB_F32, false, 3},
        {"matvec-silu_mul-tc-rows", PRO_SILU, false, false, 21, 128, 48, 24, MPKB_BF16, MPKB_BF16, MPKB_BF16, false, 2},
        /* a chunk graph's q/k/v or gate/up: the rmsnorm prologue on tensor cores, f32 and bf16 x */
        {"matvec-rmsnorm-tc", PRO_NORM, false, false, 16, 256, 64, 32, MPKB_F32, MPKB_BF16, MPKB_F32, false, 3},
        {"matvec-rmsnorm-tc-rows", PRO_NORM, true, false, 19, 160, 48, 16, MPKB_BF16, MPKB_BF16, MPKB_F32, false, 2},
    };
    for (size_t i = 0; i < sizeof mv / sizeof *mv; i++)
        case_matvec(g, dir, list, &mv[i]);

    /* 8 slabs of K in 3 parts (2, 3, 3 slabs): tensor cores (bf16 w, M > 1), the ring's
     * slots or the slab; f16 w: the warp-per-output path; M = 1 */
    case_split(g, dir, list, "matvec_part-bf16", 12, 256, 80, 32, 3, true, MPKB_BF16, MPKB_BF16, MPKB_F32, 100, 3);
    case_split(g, dir, list, "matvec_part-f32x", 5, 192, 96, 40, 2, false, MPKB_F32, MPKB_BF16, MPKB_BF16, 77, 2);
    case_split(g, dir, list, "matvec_part-f16w", 3, 128, 64, 64, 4, true, MPKB_BF16, MPKB_F16, MPKB_F32, 64, 2);
    case_split(g, dir, list, "matvec_part-m1", 1, 320, 200, 48, 5, true, MPKB_F32, MPKB_BF16, MPKB_F32, 50, 4);

    static const at_case at[] = {
        {"attention-direct", 4, 2, 64, 8, 8, 1, false, false, false, false, MPKB_BF16, MPKB_BF16, MPKB_BF16, 3},
        {"attention-direct-norm-rope", 6, 3, 40, 6, 6, 1, true, true, true, true, MPKB_F32, MPKB_F16, MPKB_F32, 2},
        /* P = 2 blocks in the one chunk */
        {"attention-direct-knorm-qrope", 2, 1, 96, 6, 3, 1, false, true, true, false, MPKB_BF16, MPKB_BF16, MPKB_F32, 1},
        /* S = B n P with P = 2: each chunk's blocks interleave; chunk 2 stays empty */
        {"attention-split", 6, 2, 48, 12, 2, 3, false, false, false, false, MPKB_BF16, MPKB_BF16, MPKB_F32, 3},
        /* P = 1, contiguous chunks, the last one short */
        {"attention-split-norm-rope", 4, 1, 64, 7, 2, 4, true, true, true, true, MPKB_F16, MPKB_BF16, MPKB_BF16, 4},
        {"attention-split-qnorm-krope", 8, 4, 32, 9, 1, 9, true, false, false, true, MPKB_F32, MPKB_BF16, MPKB_F32, 5},
    };
    for (size_t i = 0; i < sizeof at / sizeof *at; i++)
        case_attention(g, dir, list, &at[i]);

    case_argmax(g, dir, list, "argmax-ties", 0);
    case_argmax(g, dir, list, "argmax-nan", 1);
    case_argmax(g, dir, list, "argmax-nan-tiles", 2);
    case_argmax(g, dir, list, "argmax-one-finite", 3);

    case_rmsnorm(g, dir, list, "rmsnorm", 4, 50, MPKB_F32, MPKB_F16, MPKB_BF16, 3);
    case_rmsnorm(g, dir, list, "rmsnorm-wide", 1, 256, MPKB_BF16, MPKB_BF16, MPKB_F32, 1);
    case_rope(g, dir, list, "rope", 5, 36, MPKB_BF16, MPKB_F32, 2);
    case_rope(g, dir, list, "rope-f16", 3, 64, MPKB_F32, MPKB_F16, 3);
    case_eltwise(g, dir, list, "add", MPKB_OP_ADD, 173, MPKB_BF16, MPKB_F16, MPKB_F32, true, 64);
    case_eltwise(g, dir, list, "mul", MPKB_OP_MUL, 190, MPKB_F32, MPKB_BF16, MPKB_BF16, false, 100);
    case_eltwise(g, dir, list, "silu", MPKB_OP_SILU, 130, MPKB_BF16, 0, MPKB_F32, false, 64);
    case_eltwise(g, dir, list, "silu-f16", MPKB_OP_SILU, 77, MPKB_F32, 0, MPKB_F16, false, 77);
    case_copy(g, dir, list);
    case_allreduce(g, dir, list, "allreduce", 1, 120, MPKB_BF16);
    case_allreduce(g, dir, list, "allreduce-tp2", 2, 70, MPKB_F32);
    free(g);
    if (fclose(list) != 0)
        die("writing %s failed", path);
}

/* ---- --check ------------------------------------------------------------- */

static float *read_f32(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    size_t cap = 1 << 12, k = 0;
    float *v = xcalloc(cap, sizeof *v);
    for (;;) {
        if (k == cap)
            v = mpk_grow(v, &cap, k + 1, sizeof *v);
        size_t got = fread(v + k, sizeof *v, cap - k, f);
        k += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *n = k;
    return v;
}

/* the steps of a case, from DIR/CASE.prompt */
static int steps_of(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.prompt", dir, name);
    FILE *f = fopen(path, "r");
    int n = 1, ch;
    while (f && (ch = fgetc(f)) != EOF)
        n += ch == ',';
    if (f)
        fclose(f);
    return n;
}

/* within tol of want, NaN for NaN and an infinity for the same one */
static bool close_to(float got, float want, float tol)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got))
        return got == want;
    return fabsf(got - want) <= tol;
}

static int check(const char *dir, const char *name, const char *got_path, const char *other_path)
{
    char path[4096];
    size_t ne, nt, ng, no = 0;
    snprintf(path, sizeof path, "%s/%s.expect", dir, name);
    float *ex = read_f32(path, &ne);
    snprintf(path, sizeof path, "%s/%s.tol", dir, name);
    float *tl = read_f32(path, &nt);
    float *got = read_f32(got_path, &ng), *oth = other_path ? read_f32(other_path, &no) : NULL;
    if (nt != ne || ng != ne || (oth && no != ne)) {
        printf("%zu values dumped, %zu expected%s", ng, ne, oth ? " (or the two runs differ in length)" : "");
        return 1;
    }
    /* worst absolute error, its tolerance, the worst error / tolerance
     * (errors where the tolerance is 0 count as infinite), rel L2 */
    double worst = 0, worst_tol = 0, num = 0, den = 0, odiff = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < ne; i++) {
        if (!close_to(got[i], ex[i], tl[i])) {
            if (!bad++)
                first_bad = i;
        }
        if (isfinite(ex[i]) && isfinite(got[i])) {
            double e = fabs((double)got[i] - ex[i]);
            if (e > worst)
                worst = e, worst_tol = tl[i];
            num += e * e, den += (double)ex[i] * ex[i];
        }
        /* both runs lie within tol of the reference: within 2 tol of each other */
        if (oth && !close_to(got[i], oth[i], 2 * tl[i])) {
            if (!bad++)
                first_bad = i;
        }
        if (oth && isfinite(got[i]) && isfinite(oth[i]))
            odiff = fmax(odiff, fabs((double)got[i] - oth[i]));
    }
    printf("max abs err %.3g (tol there %.3g), rel L2 %.3g", worst, worst_tol, den > 0 ? sqrt(num / den) : sqrt(num));
    if (oth)
        printf(", max |run - other run| %.3g", odiff);
    if (bad) {
        size_t i = first_bad;
        printf("; %zu values off, first at value %zu (step %zu): got %.9g, want %.9g +- %.3g", bad, i,
               i / (ne / (size_t)steps_of(dir, name)), (double)got[i], (double)ex[i], (double)tl[i]);
        if (oth)
            printf(", the other run %.9g", (double)oth[i]);
    }
    free(ex), free(tl), free(got), free(oth);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && argv[1][0] != '-') {
        make_all(argv[1]);
        return 0;
    }
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "--check") == 0) {
        int rc = check(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
        printf("\n");
        return rc;
    }
    fprintf(stderr, "usage: make-ops DIR\n       make-ops --check DIR CASE GOT.f32 [OTHER.f32]\n");
    return 2;
}
