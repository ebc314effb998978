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
#include "lowering/lowering.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const mpk_taskgraph *tg;
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
    if (A->n >= *A->cap) {
        *A->cap = *A->cap ? *A->cap * 2 : 32;
        *A->out = realloc(*A->out, sizeof **A->out * (size_t)*A->cap);
        if (!*A->out)
            mpk_internal_error(__FILE__, __LINE__, "out of memory");
    }
    (*A->out)[A->n++] = (mpk_access){t->space, write, t->offset + elem_lo * es, t->offset + elem_hi * es};
}

static uint64_t numel(const mpk_taskgraph *tg, uint32_t t)
{
    if (t == MPKB_NONE || t >= tg->ntensors)
        return 0;
    uint64_t n = 1;
    for (int i = 0; i < tg->tensors[t].ndim; i++)
        n *= tg->tensors[t].dims[i];
    return n;
}

static void whole(acc *A, uint32_t t, bool write) { add(A, t, write, 0, numel(A->tg, t)); }

static uint32_t dim(const mpk_taskgraph *tg, uint32_t t, int d)
{
    if (t == MPKB_NONE || t >= tg->ntensors || d >= tg->tensors[t].ndim)
        return 0;
    return tg->tensors[t].dims[d];
}

/* Rows m = 0..M-1 of a [M, N] tensor, columns [lo, hi). */
static void cols(acc *A, uint32_t t, bool write, uint64_t m, uint64_t n, uint64_t lo, uint64_t hi)
{
    for (uint64_t r = 0; r < m; r++)
        add(A, t, write, r * n + lo, r * n + hi);
}

int mpk_task_accesses(const mpk_taskgraph *tg, const mpkb_task *t, mpk_access **out, int *cap)
{
    acc A = {.tg = tg, .out = out, .cap = cap};
    const uint32_t *o = t->t;
    uint64_t lo = t->i[0] < 0 ? 0 : (uint64_t)t->i[0], hi = t->i[1] < 0 ? 0 : (uint64_t)t->i[1];
    switch (t->op) {
    case MPKB_OP_INPUTS:
        whole(&A, o[0], true);
        whole(&A, o[1], true);
        break;
    case MPKB_OP_EMBED:
        whole(&A, o[1], false);
        cols(&A, o[2], true, dim(tg, o[2], 0), dim(tg, o[2], 1), lo, hi);
        break;
    case MPKB_OP_MATVEC: {
        uint64_t m = dim(tg, o[0], 0), n = dim(tg, o[1], 0);
        whole(&A, o[0], false);
        whole(&A, o[4], false);
        if (t->flags & MPKB_F_EPI_RESIDUAL)
            cols(&A, o[3], false, m, n, lo, hi);
        cols(&A, o[2], true, m, n, lo, hi);
        if (t->flags & MPKB_F_EPI_ARGMAX)
            add(&A, o[5], true, (uint64_t)t->i[2] * 2, (uint64_t)t->i[2] * 2 + 2);
        break;
    }
    case MPKB_OP_ATTENTION: {
        uint64_t heads = dim(tg, o[0], 1), d = dim(tg, o[0], 2), g = dim(tg, o[3], 1);
        uint64_t s = dim(tg, o[3], 2), kh = (uint64_t)t->i[0];
        uint64_t c = (uint64_t)t->i[1], len = (uint64_t)t->i[2], nch = (uint64_t)t->i[3];
        uint64_t per = g ? heads / g : 0;
        add(&A, o[0], false, kh * per * d, (kh + 1) * per * d);
        add(&A, o[1], false, kh * d, (kh + 1) * d);
        add(&A, o[2], false, kh * d, (kh + 1) * d);
        whole(&A, o[4], false);
        whole(&A, o[5], false);
        whole(&A, o[6], false);
        uint64_t per_chunk = len * mpkb_kv_blocks(s, len, nch ? nch : 1); /* its rows are contiguous */
        uint64_t r0 = c * per_chunk, r1 = (c + 1) * per_chunk < s ? (c + 1) * per_chunk : s;
        for (int kv = 0; kv < 2; kv++) {
            uint64_t base = ((uint64_t)kv * g + kh) * s * d;
            add(&A, o[3], false, base + r0 * d, base + r1 * d);
            add(&A, o[3], true, base + r0 * d, base + r1 * d);
        }
        if (t->flags & MPKB_F_DIRECT)
            add(&A, o[7], true, kh * per * d, (kh + 1) * per * d);
        else
            for (uint64_t h = kh * per; h < (kh + 1) * per; h++)
                add(&A, o[7], true, (h * nch + c) * (d + 2), (h * nch + c + 1) * (d + 2));
        break;
    }
    case MPKB_OP_ATTN_MERGE: {
        uint64_t d = dim(tg, o[1], 2), kh = (uint64_t)t->i[0], nch = (uint64_t)t->i[1];
        uint64_t per = t->i[2] < 0 ? 0 : (uint64_t)t->i[2];
        add(&A, o[0], false, kh * per * nch * (d + 2), (kh + 1) * per * nch * (d + 2));
        add(&A, o[1], true, kh * per * d, (kh + 1) * per * d);
        break;
    }
    case MPKB_OP_ARGMAX_PART:
        add(&A, o[0], false, lo, hi);
        add(&A, o[1], true, (uint64_t)t->i[2] * 2, (uint64_t)t->i[2] * 2 + 2);
        break;
    case MPKB_OP_ARGMAX_REDUCE:
        whole(&A, o[0], false);
        whole(&A, o[1], true);
        break;
    case MPKB_OP_RMSNORM: {
        uint64_t d = dim(tg, o[1], 0);
        add(&A, o[0], false, lo * d, hi * d);
        whole(&A, o[1], false);
        add(&A, o[2], true, lo * d, hi * d);
        break;
    }
    case MPKB_OP_ROPE: {
        uint64_t d = dim(tg, o[0], 2);
        add(&A, o[0], false, lo * d, hi * d);
        whole(&A, o[1], false);
        add(&A, o[3], true, lo * d, hi * d);
        break;
    }
    case MPKB_OP_ADD:
    case MPKB_OP_MUL:
        add(&A, o[0], false, lo, hi);
        add(&A, o[1], false, lo, hi);
        add(&A, o[2], true, lo, hi);
        break;
    case MPKB_OP_SILU:
        add(&A, o[0], false, lo, hi);
        add(&A, o[2], true, lo, hi);
        break;
    case MPKB_OP_COPY: {
        uint64_t rows = (uint64_t)t->i[0], stride = (uint64_t)t->i[1], len = (uint64_t)t->i[2];
        uint64_t off = (uint64_t)t->i[3];
        for (uint64_t r = 0; r < rows; r++)
            add(&A, o[0], false, off + r * stride, off + r * stride + len);
        add(&A, o[1], true, 0, rows * len);
        break;
    }
    case MPKB_OP_ALLREDUCE: /* this rank's partial; mpk_remote_read gives the rest */
        add(&A, o[0], false, lo, hi);
        if (t->flags & MPKB_F_EPI_RESIDUAL)
            add(&A, o[1], false, lo, hi);
        add(&A, o[2], true, lo, hi);
        break;
    default:
        A.bad = true;
    }
    return A.bad ? -1 : A.n;
}

bool mpk_remote_read(const mpk_taskgraph *tg, const mpkb_task *t, uint64_t *lo, uint64_t *hi)
{
    const mpkb_tensor *x = t->t[0] < tg->ntensors ? &tg->tensors[t->t[0]] : NULL;
    if (!x || x->space != MPKB_SPACE_ARENA)
        return false;
    uint64_t es = mpkb_dtype_size(x->dtype);
    if (t->op == MPKB_OP_ALLREDUCE && t->i[0] >= 0 && t->i[1] >= t->i[0]) {
        *lo = x->offset + (uint64_t)t->i[0] * es;
        *hi = x->offset + (uint64_t)t->i[1] * es;
        return true;
    }
    if (t->op == MPKB_OP_ARGMAX_REDUCE && (t->flags & MPKB_F_ALL_RANKS)) {
        *lo = x->offset;
        *hi = x->offset + x->nbytes;
        return true;
    }
    return false;
}

const char *mpk_task_desc(const mpk_taskgraph *tg, uint32_t task, char *buf, size_t n)
{
    const mpkb_task *t = &tg->tasks[task];
    const char *label = tg->strings + t->label;
    switch (t->op) {
    case MPKB_OP_MATVEC:
        snprintf(buf, n, "task %u (matvec %s rows %d..%d)", task, label, t->i[0], t->i[1]);
        break;
    case MPKB_OP_ATTENTION:
        snprintf(buf, n, "task %u (attention %s kv head %d chunk %d)", task, label, t->i[0], t->i[1]);
        break;
    case MPKB_OP_ATTN_MERGE:
        snprintf(buf, n, "task %u (attention merge %s kv head %d)", task, label, t->i[0]);
        break;
    default:
        snprintf(buf, n, "task %u (%s %s %d..%d)", task, mpkb_op_name(t->op), label, t->i[0], t->i[1]);
    }
    return buf;
}
