/*
 * place.c - tasks onto per-worker queues.
 *
 * List scheduling on a model of the GPU: a task costs the bytes it moves
 * (weights, activations) at one worker's share of the memory bandwidth,
 * plus a fixed overhead; it can start once its event's producers have
 * finished and its worker is free. Tasks are taken in the blob's
 * (topological) order and each goes to the worker where it would start
 * first, ties to the worker that has moved the fewest bytes. Since every
 * queue receives its tasks in that one global order, a worker that
 * spin-waits on its next task's event waits only for tasks earlier in the
 * order, which makes the static schedule deadlock-free when all workers
 * are co-resident.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

#define OVERHEAD_BYTES 32768.0

static double task_bytes(const mpk_low *L, const mpkb_task *t)
{
    mpkb_blob tg = mpk_low_view(L);
    mpk_access *a = NULL;
    int cap = 0, n = mpk_task_accesses(&tg, t, &a, &cap);
    double b = 0;
    for (int i = 0; i < n; i++)
        b += (double)(a[i].hi - a[i].lo);
    free(a);
    if (t->op == MPKB_OP_MATVEC) {
        const mpkb_tensor *w = &L->tensors[t->matvec.w];
        b += (double)(t->matvec.hi - t->matvec.lo) * w->dims[1] * mpkb_dtype_size(w->dtype);
    }
    return b + OVERHEAD_BYTES;
}

bool mpk_place(mpk_low *L)
{
    uint32_t W = (uint32_t)L->workers, n = L->ntasks;
    L->meta.workers = W;
    double *finish = mpk_calloc(n + 1, sizeof *finish), *free_at = mpk_calloc(W, sizeof *free_at);
    double *moved = mpk_calloc(W, sizeof *moved), *ready = mpk_calloc(L->nevents + 1, sizeof *ready);
    uint32_t *owner = mpk_malloc(sizeof *owner * (n + 1)), *count = mpk_calloc(W + 1, sizeof *count);
    for (uint32_t t = 0; t < n; t++) {
        const mpkb_task *x = &L->tasks[t];
        double start_min = ready[x->dep];
        uint32_t best = 0;
        double best_start = 0;
        for (uint32_t w = 0; w < W; w++) {
            double s = free_at[w] > start_min ? free_at[w] : start_min;
            if (w == 0 || s < best_start || (s == best_start && moved[w] < moved[best]))
                best = w, best_start = s;
        }
        double cost = task_bytes(L, x);
        finish[t] = best_start + cost;
        free_at[best] = finish[t];
        moved[best] += cost;
        owner[t] = best;
        count[best]++;
        /* an event is ready when its last producer finishes */
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = L->triggers[x->trig_first + k];
            if (!L->events[e].lag && finish[t] > ready[e])
                ready[e] = finish[t];
        }
    }
    L->queues = mpk_calloc(W, sizeof *L->queues);
    L->qtasks = mpk_malloc(sizeof *L->qtasks * (n + 1));
    uint32_t at = 0;
    for (uint32_t w = 0; w < W; w++) {
        L->queues[w].first = at;
        at += count[w];
    }
    for (uint32_t t = 0; t < n; t++) {
        mpkb_queue *q = &L->queues[owner[t]];
        L->qtasks[q->first + q->count++] = t;
    }
    free(finish);
    free(free_at);
    free(moved);
    free(ready);
    free(owner);
    free(count);
    return true;
}
