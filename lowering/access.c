/*
 * access.c - the bytes each task reads and writes, from its op and operands
 * alone (never from how the lowering made it), so that the verifier checks
 * the task graph that is written, not the one the compiler meant.
 *
 * Only the arena and the state are tracked: weights and constants are
 * read-only, and a task writing them is reported as malformed. Ranges are
 * exact for what the executors touch: a matvec tile writes its columns of
 * each output row, an attention task reads its group's heads and reads and
 * writes its chunk of its kv head's keys and values.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const mpkb_blob *tg;
    mpk_access **out;
    int *cap, n;
    bool bad;
} acc;

static void add(acc *A, uint32_t tensor, bool write, uint64_t elem_lo, uint64_t elem_hi)
{
    if (tensor == MPKB_NONE || A->bad)
        return;
    if (tensor >= A->tg->ntensors) {
        A->bad = true;
        return;
    }
    const mpkb_tensor *t = &A->tg->tensors[tensor];
    if (t->space == MPKB_SPACE_WEIGHT || t->space == MPKB_SPACE_CONST) {
        if (write)
            A->bad = true;
        return;
    }
    uint64_t es = mpkb_dtype_size(t->dtype);
    if (elem_hi * es > t->nbytes || elem_lo > elem_hi) {
        A->bad = true;
        return;
    }
    if (elem_lo == elem_hi)
        return;
    size_t cap = (size_t)*A->cap;
    *A->out = mpk_grow(*A->out, &cap, (size_t)A->n + 1, sizeof **A->out);
    *A->cap = (int)cap;
    (*A->out)[A->n++] = (mpk_access){t->space, write, t->offset + elem_lo * es, t->offset + elem_hi * es};
}

static uint64_t numel(const mpkb_blob *tg, uint32_t t)
{
    if (t == MPKB_NONE || t >= tg->ntensors)
        return 0;
    uint64_t n = 1;
    for (int i = 0; i < tg->tensors[t].ndim; i++)
        n *= tg->tensors[t].dims[i];
    return n;
}

static void whole(acc *A, uint32_t t, bool write) { add(A, t, write, 0, numel(A->tg, t)); }

static uint32_t dim(const mpkb_blob *tg, uint32_t t, int d)
{
    if (t == MPKB_NONE || t >= tg->ntensors || d >= tg->tensors[t].ndim)
        return 0;
    return tg->tensors[t].dims[d];
}

/* An immediate as an unsigned bound (a negative one reads as 0: the
 * reader refuses such tasks, the verifier only must not crash on them). */
static uint64_t lo_of(int32_t v) { return v < 0 ? 0 : (uint64_t)v; }

/* Rows m = 0..M-1 of a [M, N] tensor, columns [lo, hi). */
static void cols(acc *A, uint32_t t, bool write, uint64_t m, uint64_t n, uint64_t lo, uint64_t hi)
{
    for (uint64_t r = 0; r < m; r++)
        add(A, t, write, r * n + lo, r * n + hi);
}

/* ---- each kind's accesses (named in taskops.def) ---------------------------- */

static void access_inputs(acc *A, const mpkb_task *t)
{
    whole(A, t->inputs.token, true);
    whole(A, t->inputs.pos, true);
}

static void access_embed(acc *A, const mpkb_task *t)
{
    const mpkb_blob *tg = A->tg;
    whole(A, t->embed.ids, false);
    cols(A, t->embed.out, true, dim(tg, t->embed.out, 0), dim(tg, t->embed.out, 1), lo_of(t->embed.lo), lo_of(t->embed.hi));
}

static void access_matvec(acc *A, const mpkb_task *t)
{
    uint64_t m = dim(A->tg, t->matvec.x, 0), n = dim(A->tg, t->matvec.w, 0);
    uint64_t lo = lo_of(t->matvec.lo), hi = lo_of(t->matvec.hi);
    whole(A, t->matvec.x, false);
    whole(A, t->matvec.pro, false);
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        cols(A, t->matvec.residual, false, m, n, lo, hi);
    cols(A, t->matvec.out, true, m, n, lo, hi);
    if (t->flags & MPKB_F_EPI_ARGMAX)
        add(A, t->matvec.partials, true, lo_of(t->matvec.tile) * 2, lo_of(t->matvec.tile) * 2 + 2);
}

/* Its part of K of every row of x; its rows of its part's partials. */
static void access_matvec_part(acc *A, const mpkb_task *t)
{
    uint64_t m = dim(A->tg, t->matvec_part.x, 0), k = dim(A->tg, t->matvec_part.x, 1);
    uint64_t n = dim(A->tg, t->matvec_part.w, 0), parts = lo_of(t->matvec_part.parts), p = lo_of(t->matvec_part.part);
    cols(A, t->matvec_part.x, false, m, k, mpkb_kcut(k, parts, p), mpkb_kcut(k, parts, p + 1));
    for (uint64_t r = 0; r < m; r++)
        add(A, t->matvec_part.partials, true, (p * m + r) * n + lo_of(t->matvec_part.lo),
            (p * m + r) * n + lo_of(t->matvec_part.hi));
}

/* Its range of out, of the residual and of every part's partials. */
static void access_part_sum(acc *A, const mpkb_task *t)
{
    uint64_t lo = lo_of(t->part_sum.lo), hi = lo_of(t->part_sum.hi), n = numel(A->tg, t->part_sum.out);
    uint64_t parts = dim(A->tg, t->part_sum.partials, 0);
    for (uint64_t p = 0; p < parts; p++)
        add(A, t->part_sum.partials, false, p * n + lo, p * n + hi);
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        add(A, t->part_sum.residual, false, lo, hi);
    add(A, t->part_sum.out, true, lo, hi);
}

/* For each of the step's n rows: its group's heads of q, k and v of its kv
 * head; its chunk's rows of the cache (contiguous: mpk-blob(5)), read and
 * written; its output (or its chunk's partials) of each row. */
static void access_attention(acc *A, const mpkb_task *t)
{
    const mpkb_blob *tg = A->tg;
    uint64_t n = dim(tg, t->attention.q, 0), heads = dim(tg, t->attention.q, 1), d = dim(tg, t->attention.q, 2);
    uint64_t g = dim(tg, t->attention.cache, 1);
    uint64_t s = dim(tg, t->attention.cache, 2), kh = lo_of(t->attention.kv_head);
    uint64_t c = lo_of(t->attention.chunk), len = lo_of(t->attention.block), nch = lo_of(t->attention.chunks);
    uint64_t per = g ? heads / g : 0;
    for (uint64_t r = 0; r < n; r++) {
        add(A, t->attention.q, false, (r * heads + kh * per) * d, (r * heads + (kh + 1) * per) * d);
        add(A, t->attention.k, false, (r * g + kh) * d, (r * g + kh + 1) * d);
        add(A, t->attention.v, false, (r * g + kh) * d, (r * g + kh + 1) * d);
    }
    whole(A, t->attention.pos, false);
    whole(A, t->attention.q_norm, false);
    whole(A, t->attention.k_norm, false);
    uint64_t per_chunk = len * mpkb_kv_blocks(s, len ? len : 1, nch ? nch : 1);
    uint64_t r0 = c * per_chunk, r1 = (c + 1) * per_chunk < s ? (c + 1) * per_chunk : s;
    for (int kv = 0; kv < 2; kv++) {
        uint64_t base = ((uint64_t)kv * g + kh) * s * d;
        add(A, t->attention.cache, false, base + r0 * d, base + r1 * d);
        add(A, t->attention.cache, true, base + r0 * d, base + r1 * d);
    }
    for (uint64_t r = 0; r < n; r++)
        if (t->flags & MPKB_F_DIRECT)
            add(A, t->attention.out, true, (r * heads + kh * per) * d, (r * heads + (kh + 1) * per) * d);
        else
            for (uint64_t h = r * heads + kh * per; h < r * heads + (kh + 1) * per; h++)
                add(A, t->attention.out, true, (h * nch + c) * (d + 2), (h * nch + c + 1) * (d + 2));
}

/* Per row: its kv head's query heads' partials, all chunks, and output. */
static void access_attn_merge(acc *A, const mpkb_task *t)
{
    uint64_t n = dim(A->tg, t->attn_merge.out, 0), heads = dim(A->tg, t->attn_merge.out, 1);
    uint64_t d = dim(A->tg, t->attn_merge.out, 2), kh = lo_of(t->attn_merge.kv_head);
    uint64_t nch = lo_of(t->attn_merge.chunks), per = lo_of(t->attn_merge.group);
    for (uint64_t r = 0; r < n; r++) {
        uint64_t h0 = r * heads + kh * per, h1 = r * heads + (kh + 1) * per;
        add(A, t->attn_merge.partials, false, h0 * nch * (d + 2), h1 * nch * (d + 2));
        add(A, t->attn_merge.out, true, h0 * d, h1 * d);
    }
}

static void access_argmax_part(acc *A, const mpkb_task *t)
{
    add(A, t->argmax_part.x, false, lo_of(t->argmax_part.lo), lo_of(t->argmax_part.hi));
    add(A, t->argmax_part.partials, true, lo_of(t->argmax_part.tile) * 2, lo_of(t->argmax_part.tile) * 2 + 2);
}

static void access_argmax_reduce(acc *A, const mpkb_task *t)
{
    whole(A, t->argmax_reduce.partials, false);
    whole(A, t->argmax_reduce.out, true);
}

static void access_rmsnorm(acc *A, const mpkb_task *t)
{
    uint64_t d = dim(A->tg, t->rmsnorm.gamma, 0), lo = lo_of(t->rmsnorm.lo), hi = lo_of(t->rmsnorm.hi);
    add(A, t->rmsnorm.x, false, lo * d, hi * d);
    whole(A, t->rmsnorm.gamma, false);
    add(A, t->rmsnorm.out, true, lo * d, hi * d);
}

static void access_rope(acc *A, const mpkb_task *t)
{
    uint64_t d = dim(A->tg, t->rope.x, 2), lo = lo_of(t->rope.lo), hi = lo_of(t->rope.hi);
    add(A, t->rope.x, false, lo * d, hi * d);
    whole(A, t->rope.pos, false);
    add(A, t->rope.out, true, lo * d, hi * d);
}

static void access_add(acc *A, const mpkb_task *t)
{
    add(A, t->add.a, false, lo_of(t->add.lo), lo_of(t->add.hi));
    add(A, t->add.b, false, lo_of(t->add.lo), lo_of(t->add.hi));
    add(A, t->add.out, true, lo_of(t->add.lo), lo_of(t->add.hi));
}

static void access_mul(acc *A, const mpkb_task *t)
{
    add(A, t->mul.a, false, lo_of(t->mul.lo), lo_of(t->mul.hi));
    add(A, t->mul.b, false, lo_of(t->mul.lo), lo_of(t->mul.hi));
    add(A, t->mul.out, true, lo_of(t->mul.lo), lo_of(t->mul.hi));
}

static void access_silu(acc *A, const mpkb_task *t)
{
    add(A, t->silu.x, false, lo_of(t->silu.lo), lo_of(t->silu.hi));
    add(A, t->silu.out, true, lo_of(t->silu.lo), lo_of(t->silu.hi));
}

static void access_copy(acc *A, const mpkb_task *t)
{
    uint64_t rows = lo_of(t->copy.rows), stride = lo_of(t->copy.src_stride), len = lo_of(t->copy.len);
    uint64_t off = lo_of(t->copy.src_off);
    for (uint64_t r = 0; r < rows; r++)
        add(A, t->copy.src, false, off + r * stride, off + r * stride + len);
    add(A, t->copy.dst, true, 0, rows * len);
}

/* This rank's partial; mpk_remote_read gives the other ranks' reads. */
static void access_allreduce(acc *A, const mpkb_task *t)
{
    add(A, t->allreduce.partial, false, lo_of(t->allreduce.lo), lo_of(t->allreduce.hi));
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        add(A, t->allreduce.residual, false, lo_of(t->allreduce.lo), lo_of(t->allreduce.hi));
    add(A, t->allreduce.out, true, lo_of(t->allreduce.lo), lo_of(t->allreduce.hi));
}

static void (*const access_kind[MPKB_NOPS])(acc *, const mpkb_task *) = {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) [MPKB_OP_##ID] = access_##name,
#include "mpk/taskops.def"
#undef MPKB_TASKOP
};

int mpk_task_accesses(const mpkb_blob *tg, const mpkb_task *t, mpk_access **out, int *cap)
{
    acc A = {.tg = tg, .out = out, .cap = cap};
    if (t->op < MPKB_NOPS)
        access_kind[t->op](&A, t);
    else
        A.bad = true;
    return A.bad ? -1 : A.n;
}

bool mpk_remote_read(const mpkb_blob *tg, const mpkb_task *t, uint64_t *lo, uint64_t *hi)
{
    /* slot 0 of both kinds: allreduce's partial, argmax_reduce's partials */
    _Static_assert(MPKB_SLOT(allreduce, partial) == 0 && MPKB_SLOT(argmax_reduce, partials) == 0, "slot 0");
    const mpkb_tensor *x = t->t[0] < tg->ntensors ? &tg->tensors[t->t[0]] : NULL;
    if (!x || x->space != MPKB_SPACE_ARENA)
        return false;
    uint64_t es = mpkb_dtype_size(x->dtype);
    if (t->op == MPKB_OP_ALLREDUCE && t->allreduce.lo >= 0 && t->allreduce.hi >= t->allreduce.lo) {
        *lo = x->offset + (uint64_t)t->allreduce.lo * es;
        *hi = x->offset + (uint64_t)t->allreduce.hi * es;
        return true;
    }
    if (t->op == MPKB_OP_ARGMAX_REDUCE && (t->flags & MPKB_F_ALL_RANKS)) {
        *lo = x->offset;
        *hi = x->offset + x->nbytes;
        return true;
    }
    return false;
}

const char *mpk_task_desc(const mpkb_blob *tg, uint32_t task, char *buf, size_t n)
{
    const mpkb_task *t = &tg->tasks[task];
    const char *label = tg->strings + t->label;
    switch (t->op) {
    case MPKB_OP_MATVEC:
        snprintf(buf, n, "task %u (matvec %s rows %d..%d)", task, label, t->matvec.lo, t->matvec.hi);
        break;
    case MPKB_OP_ATTENTION:
        snprintf(buf, n, "task %u (attention %s kv head %d chunk %d)", task, label, t->attention.kv_head,
                 t->attention.chunk);
        break;
    case MPKB_OP_ATTN_MERGE:
        snprintf(buf, n, "task %u (attention merge %s kv head %d)", task, label, t->attn_merge.kv_head);
        break;
    default:
        snprintf(buf, n, "task %u (%s %s %d..%d)", task, mpkb_op_name(t->op), label, t->i[0], t->i[1]);
    }
    return buf;
}
