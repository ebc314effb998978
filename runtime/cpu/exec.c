/*
 * exec.c - the CPU reference executor: runs a blob task by task. What each
 * task computes is in ops.c (op_NAME per kind); this file is the machine
 * around it: ranks, events, the order tasks run in, the step's results.
 *
 * Each step runs its tasks one at a time in a random order (seeded) among
 * those whose event has fired, so any order the GPU might take can be
 * taken here too: a missing dependency shows up as a wrong answer under
 * some seed. The arena starts filled with NaNs, so reading bytes nobody
 * wrote is loud. Numerics follow man 5 mpk-blob (cpu.h, "elements").
 *
 * A blob for tp ranks runs as tp ranks in one process, each with its own
 * arena, state, weights and event counters, their ready tasks interleaved
 * in one random order: an allreduce reads the other ranks' arenas, and an
 * event with flag ALL_RANKS counts the signals of every rank.
 *
 * The next token is the blob's own argmax (greedy), or with a sampler
 * drawn from the step's logits, every rank's part in rank order, by
 * mpk_sample (sample.c).
 *
 * A blob with a chunk graph runs a prompt (mpk_cpu_prefill) in chunk
 * steps of C rows: the graph's own event counters and step count, the
 * same arena and state. A last piece of v < C tokens fills rows v..C-1
 * with copies of row v-1 (its token at its position): they compute and
 * store exactly what row v-1 does, so the padding changes nothing, and
 * the last row is always the prompt's last token.
 *
 * mpk_bind_weights, at the end, binds a blob's weight tensors to a
 * checkpoint (runtime/weights.c) for one rank, copying out its part of a
 * split weight.
 */
#include "runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

struct mpk_cpu {
    const mpkb_blob *b;
    cpu_rank *ranks;            /* meta.tp of them */
    uint32_t nranks;
    uint64_t step, cstep;       /* decode and chunk steps run */
    uint64_t pos;               /* positions in the cache so far */
    int32_t *rows_tok, *rows_pos; /* a step's inputs, [max(1, chunk)] */
    uint64_t rng;
    FILE *err;
    /* every task's scratch, sized for the blob's largest (cpu_ctx): */
    float *scratch;             /* [2 * (max dim + 2)] */
    float *scores;              /* [max cache positions + 1] */
    uint64_t *rows;             /* [max cache positions + 1] */
    uint32_t *ready;            /* the step's ready list, ntasks * nranks long */
    float *all;                 /* sampling: the step's logits, [vocab] */
    void *sample_scratch;       /* sampling: mpk_sample_scratch(vocab) bytes */
};

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Signals one firing of event e needs: its producers, on every rank for
 * an ALL_RANKS event. */
static uint64_t per_step(const mpk_cpu *M, const mpkb_event *ev)
{
    return (uint64_t)ev->triggers * ((ev->flags & MPKB_EV_ALL_RANKS) ? M->nranks : 1);
}

/* One step of graph b (the decode graph, or the chunk graph with chunk
 * set) with M->rows_tok/rows_pos as its inputs: tasks in a random order
 * among the ready ones of every rank (seed 0: in the order they became
 * ready); ready[] holds rank * ntasks + task. */
static bool step(mpk_cpu *M, bool chunk, bool random_order, uint32_t *ready)
{
    const mpkb_blob *b = chunk ? M->b->chunk : M->b;
    uint64_t sn = chunk ? M->cstep : M->step;
#define COUNT_(r) (chunk ? M->ranks[r].ccount : M->ranks[r].count)
    uint32_t n = 0, ran = 0;
    for (uint32_t r = 0; r < M->nranks; r++)
        for (uint32_t e = 0; e < b->nevents; e++) {
            const mpkb_event *ev = &b->events[e];
            uint64_t c = COUNT_(r)[e], need = per_step(M, ev);
            if (c >= (sn + 1 - ev->lag) * need && (ev->lag || c == sn * need || need == 0))
                for (uint32_t t = ev->first_task; t < ev->first_task + ev->ntasks; t++)
                    ready[n++] = r * b->ntasks + t;
        }
    cpu_ctx ctx = {.b = b, .ranks = M->ranks, .nranks = M->nranks, .tokens = M->rows_tok,
                   .positions = M->rows_pos, .nrows = chunk ? b->meta->chunk : 1, .err = M->err,
                   .scratch = M->scratch, .scores = M->scores, .rows = M->rows};
    uint32_t head = 0;
    while (head < n) {
        uint32_t pick = head;
        if (random_order)
            pick = head + (uint32_t)(next_rand(&M->rng) % (n - head));
        uint32_t rt = ready[pick];
        ready[pick] = ready[head];
        ready[head++] = rt;
        uint32_t r = rt / b->ntasks;
        const mpkb_task *x = &b->tasks[rt % b->ntasks];
        ctx.rank = &M->ranks[r];
        if (!mpk_cpu_run_task(&ctx, x))
            return false;
        ran++;
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = b->triggers[x->trig_first + k];
            const mpkb_event *ev = &b->events[e];
            bool all = ev->flags & MPKB_EV_ALL_RANKS;
            for (uint32_t q = all ? 0 : r; q < (all ? M->nranks : r + 1); q++)
                if (++COUNT_(q)[e] == (sn + 1) * per_step(M, ev) && !ev->lag)
                    for (uint32_t c = ev->first_task; c < ev->first_task + ev->ntasks; c++)
                        ready[n++] = q * b->ntasks + c;
        }
    }
#undef COUNT_
    if (ran != b->ntasks * M->nranks) {
        fprintf(M->err, "mpk-run: %sstep %llu stalled: %u of %u tasks never became ready\n", chunk ? "chunk " : "",
                (unsigned long long)sn, b->ntasks * M->nranks - ran, b->ntasks * M->nranks);
        return false;
    }
    if (chunk)
        M->cstep++;
    else
        M->step++;
    return true;
}

mpk_cpu *mpk_cpu_new(const mpkb_blob *b, const void *const *const *weights, uint64_t seed, FILE *err)
{
    mpk_cpu *M = calloc(1, sizeof *M);
    if (!M)
        return NULL;
    M->b = b;
    M->err = err;
    M->nranks = b->meta->tp;
    M->ranks = calloc(M->nranks, sizeof *M->ranks);
    if (!M->ranks) {
        free(M);
        return NULL;
    }
    M->rng = seed;
    uint64_t maxk = 16, maxs = 16;
    for (uint32_t i = 0; i < b->ntensors; i++)
        for (int d = 0; d < b->tensors[i].ndim; d++)
            maxk = b->tensors[i].dims[d] > maxk ? b->tensors[i].dims[d] : maxk;
    for (uint32_t i = 0; i < b->ntensors; i++) /* a chunk holds at most the whole cache */
        if (b->tensors[i].space == MPKB_SPACE_STATE && b->tensors[i].ndim == 4 && b->tensors[i].dims[2] > maxs)
            maxs = b->tensors[i].dims[2];
    uint32_t nt = b->ntasks, rows = b->chunk ? b->meta->chunk : 1;
    if (b->chunk && b->chunk->ntasks > nt)
        nt = b->chunk->ntasks;
    bool ok = true;
    for (uint32_t r = 0; r < M->nranks; r++) {
        cpu_rank *R = &M->ranks[r];
        R->weights = weights[r];
        R->arena = malloc(b->meta->arena_size ? b->meta->arena_size : 1);
        R->state = calloc(1, b->meta->state_size ? b->meta->state_size : 1);
        R->count = calloc(b->nevents, sizeof *R->count);
        R->ccount = b->chunk ? calloc(b->chunk->nevents, sizeof *R->ccount) : NULL;
        ok &= R->arena && R->state && R->count && (!b->chunk || R->ccount);
        if (R->arena) /* NaN in every float dtype */
            memset(R->arena, 0xff, b->meta->arena_size);
    }
    M->scratch = malloc(sizeof(float) * 2 * (maxk + 2));
    M->scores = malloc(sizeof(float) * (maxs + 1));
    M->rows = malloc(sizeof(uint64_t) * (maxs + 1));
    M->ready = malloc(sizeof *M->ready * ((size_t)nt * M->nranks + 1));
    M->rows_tok = malloc(sizeof *M->rows_tok * rows);
    M->rows_pos = malloc(sizeof *M->rows_pos * rows);
    if (!ok || !M->scratch || !M->scores || !M->rows || !M->ready || !M->rows_tok || !M->rows_pos) {
        fprintf(err, "mpk-run: out of memory for the arena (%llu bytes) and state (%llu bytes)\n",
                (unsigned long long)b->meta->arena_size, (unsigned long long)b->meta->state_size);
        mpk_cpu_free(M);
        return NULL;
    }
    return M;
}

void mpk_cpu_free(mpk_cpu *M)
{
    if (!M)
        return;
    for (uint32_t r = 0; r < M->nranks; r++) {
        free(M->ranks[r].arena);
        free(M->ranks[r].state);
        free(M->ranks[r].count);
        free(M->ranks[r].ccount);
    }
    free(M->rows_tok);
    free(M->rows_pos);
    free(M->ranks);
    free(M->scratch);
    free(M->scores);
    free(M->rows);
    free(M->ready);
    free(M->all);
    free(M->sample_scratch);
    free(M);
}

/* A step whose logits have no finite value, or whose chosen token's logit
 * is not finite (a NaN or inf in a weight, an overflow), picked its token
 * from garbage: an error naming the step (its last row's position), not a
 * silent answer. The GPU executor prints the same line. g: the graph that
 * ran (the logits tensor is its own). */
static bool logits_finite(const mpk_cpu *M, const mpkb_blob *g, uint64_t at, int32_t next)
{
    const mpkb_tensor *lg = &g->tensors[g->meta->logits];
    uint64_t cols = mpkb_numel(lg);
    bool any = false;
    for (uint32_t r = 0; r < M->nranks && !any; r++)
        for (uint64_t i = 0; i < cols && !any; i++)
            any = isfinite(ld(lg->dtype, M->ranks[r].arena + lg->offset, i));
    if (next < 0 || (uint64_t)next >= cols * M->nranks) {
        fprintf(M->err, "mpk-run: error: step %llu: the chosen token %d is outside the logits (0..%llu)\n",
                (unsigned long long)at, next, (unsigned long long)(cols * M->nranks - 1));
        return false;
    }
    float chosen = ld(lg->dtype, M->ranks[(uint64_t)next / cols].arena + lg->offset, (uint64_t)next % cols);
    if (!any)
        fprintf(M->err, "mpk-run: error: step %llu: the logits have no finite value\n", (unsigned long long)at);
    else if (!isfinite(chosen))
        fprintf(M->err, "mpk-run: error: step %llu: the logit of the chosen token %d is not finite (%s)\n",
                (unsigned long long)at, next, isnan(chosen) ? "nan" : chosen > 0 ? "inf" : "-inf");
    return any && isfinite(chosen);
}

/* Every rank's logits, in rank order, into dst (cols * nranks floats). */
static void gather_logits(const mpk_cpu *M, const mpkb_blob *g, float *dst)
{
    const mpkb_tensor *lg = &g->tensors[g->meta->logits];
    uint64_t cols = mpkb_numel(lg);
    for (uint32_t r = 0; r < M->nranks; r++)
        for (uint64_t i = 0; i < cols; i++)
            dst[r * cols + i] = ld(lg->dtype, M->ranks[r].arena + lg->offset, i);
}

/* The step's token drawn by sampler s, the position at its counter. */
static bool sample_next(mpk_cpu *M, const mpkb_blob *g, uint64_t at, const mpk_sampler *s, int32_t *next)
{
    uint64_t vocab = mpkb_numel(&g->tensors[g->meta->logits]) * M->nranks;
    if (!M->all) {
        M->all = malloc(sizeof *M->all * vocab);
        M->sample_scratch = malloc(mpk_sample_scratch((uint32_t)vocab));
        if (!M->all || !M->sample_scratch) {
            fprintf(M->err, "mpk-run: error: out of memory for sampling\n");
            return false;
        }
    }
    gather_logits(M, g, M->all);
    *next = mpk_sample(M->all, (uint32_t)vocab, s, (uint32_t)at, M->sample_scratch);
    if (*next >= 0)
        return true;
    bool any = false;
    for (uint64_t i = 0; i < vocab && !any; i++)
        any = isfinite(M->all[i]);
    if (any)
        fprintf(M->err, "mpk-run: error: step %llu: no logit divided by the temperature %g is finite\n",
                (unsigned long long)at, (double)s->temperature);
    else
        fprintf(M->err, "mpk-run: error: step %llu: the logits have no finite value\n", (unsigned long long)at);
    return false;
}

/* After a step of graph g whose last row is position at: the next token
 * (the blob's argmax, or drawn by s) and the logits. */
static bool finish(mpk_cpu *M, const mpkb_blob *g, uint64_t at, const mpk_sampler *s, int32_t *next, float *logits)
{
    if (!mpk_sampler_greedy(s)) {
        if (!sample_next(M, g, at, s, next) || !logits_finite(M, g, at, *next))
            return false;
        if (logits)
            memcpy(logits, M->all, sizeof *logits * mpkb_numel(&g->tensors[g->meta->logits]) * M->nranks);
        return true;
    }
    uint64_t off = g->tensors[g->meta->next_output].offset;
    *next = ld_i32(M->ranks[0].arena + off);
    for (uint32_t r = 1; r < M->nranks; r++)
        if (ld_i32(M->ranks[r].arena + off) != *next) { /* every rank reduces the same partials */
            fprintf(M->err, "mpk-run: step %llu: rank %u picked token %d, rank 0 token %d\n",
                    (unsigned long long)at, r, ld_i32(M->ranks[r].arena + off), *next);
            return false;
        }
    if (!logits_finite(M, g, at, *next))
        return false;
    if (logits)
        gather_logits(M, g, logits);
    return true;
}

bool mpk_cpu_step(mpk_cpu *M, int32_t token, bool random_order, const mpk_sampler *s, int32_t *next,
                  float *logits)
{
    uint64_t at = M->pos;
    M->rows_tok[0] = token;
    M->rows_pos[0] = (int32_t)at;
    if (!step(M, false, random_order, M->ready))
        return false;
    M->pos++;
    return finish(M, M->b, at, s, next, logits);
}

bool mpk_cpu_prefill(mpk_cpu *M, const int32_t *tokens, uint32_t n, bool random_order, const mpk_sampler *s,
                     int32_t *next, float *logits)
{
    const mpkb_blob *c = M->b->chunk;
    if (!c) {
        for (uint32_t i = 0; i < n; i++)
            if (!mpk_cpu_step(M, tokens[i], random_order, s, next, i + 1 == n ? logits : NULL))
                return false;
        return true;
    }
    uint32_t C = c->meta->chunk;
    for (uint32_t i = 0; i < n; i += C) {
        uint32_t v = n - i < C ? n - i : C;
        for (uint32_t r = 0; r < C; r++) { /* rows past v: row v - 1 again */
            uint32_t k = r < v ? r : v - 1;
            M->rows_tok[r] = tokens[i + k];
            M->rows_pos[r] = (int32_t)(M->pos + k);
        }
        if (!step(M, true, random_order, M->ready))
            return false;
        M->pos += v;
        if (i + v == n)
            return finish(M, c, M->pos - 1, s, next, logits);
    }
    return true;
}

/* Rank r's part of a split weight: part r of tp along dim d of the
 * checkpoint tensor at src, into a buffer the weights own. */
static const void *part_of(mpk_weights *w, const mpkb_tensor *t, const void *src, uint32_t rank, uint32_t tp)
{
    int d = t->split - 1;
    uint64_t outer = 1, inner = mpkb_dtype_size(t->dtype);
    for (int i = 0; i < d; i++)
        outer *= t->dims[i];
    for (int i = d + 1; i < t->ndim; i++)
        inner *= t->dims[i];
    uint64_t len = t->dims[d] * inner; /* bytes of one part per outer index */
    uint8_t *dst = mpk_weights_alloc(w, t->nbytes);
    if (!dst)
        return NULL;
    for (uint64_t o = 0; o < outer; o++)
        memcpy(dst + o * len, (const uint8_t *)src + (o * tp + rank) * len, len);
    return dst;
}

const void **mpk_bind_weights(const mpkb_blob *b, const char *path, uint32_t rank, mpk_weights **w, FILE *err)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->ntensors; i++)
        n += b->tensors[i].space == MPKB_SPACE_WEIGHT && b->tensors[i].base == i;
    mpk_weight_req *req = calloc(n + 1, sizeof *req);
    uint32_t *which = calloc(n + 1, sizeof *which);
    const void **table = calloc(b->ntensors + 1, sizeof *table);
    if (!req || !which || !table) {
        free(req), free(which), free(table);
        return NULL;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space != MPKB_SPACE_WEIGHT || t->base != i)
            continue;
        req[k].name = mpkb_str(b, t->name);
        req[k].dtype = t->dtype;
        req[k].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            req[k].dims[d] = t->dims[d];
        if (t->split) /* the checkpoint holds the whole tensor */
            req[k].dims[t->split - 1] *= b->meta->tp;
        which[k++] = i;
    }
    *w = mpk_weights_open(path, req, n, err);
    for (uint32_t j = 0; *w && j < n; j++) {
        const mpkb_tensor *t = &b->tensors[which[j]];
        table[which[j]] = t->split ? part_of(*w, t, req[j].data, rank, b->meta->tp) : req[j].data;
        if (!table[which[j]]) {
            fprintf(err, "mpk-run: out of memory for rank %u's part of %s\n", rank, req[j].name);
            mpk_weights_close(*w);
            *w = NULL;
        }
    }
    free(req);
    free(which);
    if (!*w) {
        free(table);
        return NULL;
    }
    return table;
}
