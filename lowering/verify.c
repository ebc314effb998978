/*
 * verify.c - proves that the events order every pair of conflicting
 * accesses, on the blob-form task graph alone.
 *
 * The task table order is taken as the meaning of the program. Sweeping the
 * tasks in that order over the arena and the state (cut at every access
 * boundary), each access is checked against the nearest conflicting ones:
 * a read against the last write of each byte (RAW), a write against the
 * last write (WAW) and every read since (WAR). Ordering the nearest ones is
 * enough: the rest follow by transitivity. "A is ordered before B" means A
 * is an ancestor of B through events; ancestors are a bitset per event,
 * which is exact because a task waits for exactly one event.
 *
 * Steps are separated by the step event: every task that signals no other
 * event must signal it, and it must have lag 1. Then every task of a step is
 * an ancestor of the next step's first task, and only conflicts within a
 * step need checking.
 *
 * Tensor parallelism: every rank runs the same tasks, so one rank's graph
 * stands for all, plus what crosses ranks. A task that reads every rank's
 * bytes (mpk_remote_read) must be ordered after each writer of those bytes
 * on every other rank too: through an ALL_RANKS event, whose producers on
 * every rank signal every rank. Such "global" ancestors are a second
 * set per event. Across steps, the writer of the next step must come
 * after the reader on every rank: some path from the reader to the end of
 * its step, or from the start of the next step to the writer, crosses an
 * ALL_RANKS event. Also checked: event producer counts, contiguous
 * waiter ranges, and producers waiting for lower-numbered events (which
 * makes the event graph acyclic).
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const mpkb_blob *tg;
    FILE *out;
    int bad, max_report;
    mpk_anc *A;             /* the sets (ancset.c) */
    mpk_aset *anc;          /* per event: tasks ordered before it */
    mpk_aset *ganc;         /* per event: tasks ordered before it on every rank */
} vf;

static void report(vf *V, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(vf *V, const char *fmt, ...)
{
    if (V->bad++ >= V->max_report)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(V->out, "mpk: verifier: ");
    vfprintf(V->out, fmt, ap);
    fputc('\n', V->out);
    va_end(ap);
}

static bool structure(vf *V)
{
    const mpkb_blob *tg = V->tg;
    uint32_t *count = mpk_calloc(tg->nevents + 1, sizeof *count);
    uint32_t expect = 0;
    int before = V->bad;
    for (uint32_t e = 0; e < tg->nevents; e++) {
        if (tg->events[e].first_task != expect)
            report(V, "event %u: its waiting tasks start at %u, not right after event %u's (%u)", e,
                   tg->events[e].first_task, e ? e - 1 : 0, expect);
        expect = tg->events[e].first_task + tg->events[e].ntasks;
        if (tg->events[e].lag != (e == tg->meta->step_event))
            report(V, "event %u: lag %u, but only the step event (%u) has lag 1", e,
                   tg->events[e].lag, tg->meta->step_event);
        if ((tg->events[e].flags & ~MPKB_EV_ALL_RANKS) ||
            (tg->events[e].flags && e == tg->meta->step_event))
            report(V, "event %u: flags %#x (only ALL_RANKS, and not on the step event)", e,
                   tg->events[e].flags);
    }
    if (expect != tg->ntasks)
        report(V, "the events' waiting tasks cover %u tasks of %u", expect, tg->ntasks);
    char b1[256], b2[256];
    for (uint32_t t = 0; t < tg->ntasks && V->bad == before; t++) {
        const mpkb_task *x = &tg->tasks[t];
        if (x->dep >= tg->nevents || t < tg->events[x->dep].first_task ||
            t >= tg->events[x->dep].first_task + tg->events[x->dep].ntasks) {
            report(V, "%s waits for event %u but is not in its range of tasks",
                   mpk_task_desc(tg, t, b1, sizeof b1), x->dep);
            continue;
        }
        bool step = false, other = false;
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = x->trig_first + k < tg->ntriggers ? tg->triggers[x->trig_first + k] : MPKB_NONE;
            if (e >= tg->nevents) {
                report(V, "%s signals event %u, which does not exist", mpk_task_desc(tg, t, b1, sizeof b1), e);
                continue;
            }
            count[e]++;
            step |= e == tg->meta->step_event;
            other |= e != tg->meta->step_event;
            if (e != tg->meta->step_event && x->dep >= e)
                report(V, "%s waits for event %u and signals event %u: producers must wait for "
                          "earlier events (else the events can form a cycle)",
                       mpk_task_desc(tg, t, b1, sizeof b1), x->dep, e);
        }
        if (!step && !other)
            report(V, "%s signals nothing, so the step would end without it (it must signal "
                      "the step event %u)", mpk_task_desc(tg, t, b1, sizeof b1), tg->meta->step_event);
    }
    for (uint32_t e = 0; e < tg->nevents && V->bad == before; e++)
        if (count[e] != tg->events[e].triggers) {
            uint32_t first = tg->events[e].first_task;
            report(V, "event %u (waited for by %s%s) expects %u producers but %u tasks signal it", e,
                   tg->events[e].ntasks ? mpk_task_desc(tg, first, b2, sizeof b2) : "no task",
                   tg->events[e].ntasks > 1 ? " and others" : "", tg->events[e].triggers, count[e]);
        }
    free(count);
    return V->bad == before;
}

/* Ancestors of the tasks waiting for each event: its producers and theirs.
 * With global (a blob with tasks that read other ranks), also the global
 * ancestors: through an ALL_RANKS event a producer and all before it (on
 * its rank, so on every rank); through any event what was global before
 * the producer. */
static void ancestors(vf *V, bool global)
{
    const mpkb_blob *tg = V->tg;
    V->A = mpk_anc_new(tg->ntasks);
    V->anc = mpk_calloc(tg->nevents + 1, sizeof *V->anc);
    V->ganc = global ? mpk_calloc(tg->nevents + 1, sizeof *V->ganc) : NULL;
    if (!V->anc || (global && !V->ganc))
        mpk_out_of_memory();
    /* producers of e lie below e's first waiter (checked: they wait for an
     * earlier event, and ranges are in event order), so e's sets are whole
     * before any task waiting for e is reached; owners: 2e + 1 and 2e + 2 */
    /* producers of an event mostly share the event they wait for: merge
     * its ancestors once per run of equal ones */
    uint32_t *merged = mpk_malloc(sizeof *merged * (tg->nevents + 1));
    if (!merged)
        mpk_out_of_memory();
    for (uint32_t e = 0; e < tg->nevents; e++)
        merged[e] = MPKB_NONE;
    for (uint32_t p = 0; p < tg->ntasks; p++) {
        const mpkb_task *x = &tg->tasks[p];
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = tg->triggers[x->trig_first + k];
            if (tg->events[e].lag)
                continue;
            uint32_t own = 2 * e + 1, gown = 2 * e + 2;
            bool all = tg->events[e].flags & MPKB_EV_ALL_RANKS;
            V->anc[e] = mpk_anc_add(V->A, V->anc[e], p, own);
            if (global && all)
                V->ganc[e] = mpk_anc_add(V->A, V->ganc[e], p, gown);
            if (merged[e] == x->dep)
                continue;
            merged[e] = x->dep;
            V->anc[e] = mpk_anc_union(V->A, V->anc[e], V->anc[x->dep], own);
            if (global) {
                V->ganc[e] = mpk_anc_union(V->A, V->ganc[e], V->ganc[x->dep], gown);
                if (all)
                    V->ganc[e] = mpk_anc_union(V->A, V->ganc[e], V->anc[x->dep], gown);
            }
        }
    }
    free(merged);
}

static bool ordered(const vf *V, uint32_t a, uint32_t b)
{
    return mpk_anc_has(V->A, V->anc[V->tg->tasks[b].dep], a);
}

/* The tensor a byte of a space belongs to, for messages. */
static const char *tensor_at(const mpkb_blob *tg, const mpkb_task *t, const mpk_access *a)
{
    for (int k = 0; k < MPKB_NT; k++) {
        uint32_t v = t->t[k];
        if (v == MPKB_NONE || v >= tg->ntensors || tg->tensors[v].space != a->space)
            continue;
        const mpkb_tensor *x = &tg->tensors[v];
        if (x->offset <= a->lo && a->hi <= x->offset + x->nbytes)
            return tg->strings + x->name;
    }
    return "?";
}

static void sweep(vf *V)
{
    const mpkb_blob *tg = V->tg;
    char b1[256], b2[256];
    int bad;
    mpk_sweep *S = mpk_sweep_new(tg, &bad);
    mpk_sigcache *ok = mpk_sigcache_new(); /* (group item, dep) known to be ordered */
    if (bad >= 0)
        report(V, "%s has operands that do not fit its op", mpk_task_desc(tg, (uint32_t)bad, b1, sizeof b1));
    for (uint32_t t = 0; t < tg->ntasks; t++) {
        const int *items, *why;
        int n = mpk_sweep_next(S, t, &items, &why);
        for (int i = 0; i < n; i++) {
            /* a group known to be ordered before this event needs no look */
            bool group = MPK_ITEM_KIND(items[i]) != MPK_ITEM_KIND_TASK;
            if (group && mpk_sigcache_get(ok, &items[i], 1, tg->tasks[t].dep) >= 0)
                continue;
            bool all = true;
            const int *before;
            int k;
            mpk_sweep_item_tasks(S, items[i], &before, &k);
            for (int j = 0; j < k; j++) {
                if ((uint32_t)before[j] == t || ordered(V, (uint32_t)before[j], t))
                    continue;
                all = false;
                const mpk_access *x = mpk_sweep_access(S, why[i]);
                report(V, "%s %s %s bytes %llu..%llu (%s) after %s touched them, but does not wait for it",
                       mpk_task_desc(tg, t, b1, sizeof b1), x->write ? "writes" : "reads",
                       mpkb_space_name(x->space), (unsigned long long)x->lo, (unsigned long long)x->hi,
                       tensor_at(tg, &tg->tasks[t], x), mpk_task_desc(tg, (uint32_t)before[j], b2, sizeof b2));
            }
            if (group && all)
                mpk_sigcache_put(ok, &items[i], 1, tg->tasks[t].dep, 1);
        }
    }
    mpk_sigcache_free(ok);
    mpk_sweep_free(S);
}

static bool ganc_has(const vf *V, uint32_t e, uint32_t task) { return mpk_anc_has(V->A, V->ganc[e], task); }

typedef struct {
    uint64_t lo, hi;
    uint32_t task;
} wr;

static int cmp_wr(const void *a, const void *b)
{
    const wr *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Every task that reads other ranks' bytes against every writer of them
 * (needs the global ancestors). */
static void cross_rank(vf *V)
{
    const mpkb_blob *tg = V->tg;
    uint64_t lo, hi;
    /* the arena writes, by start */
    mpk_access *acc = NULL;
    int cap = 0;
    wr *w = NULL;
    size_t nw = 0, capw = 0;
    mpk_aset to_end = 0; /* globally before some sink (owner UINT32_MAX - 1) */
    for (uint32_t t = 0; t < tg->ntasks; t++) {
        int n = mpk_task_accesses(tg, &tg->tasks[t], &acc, &cap);
        for (int i = 0; i < n; i++) {
            if (!acc[i].write || acc[i].space != MPKB_SPACE_ARENA)
                continue;
            w = mpk_grow(w, &capw, nw + 1, sizeof *w);
            w[nw++] = (wr){acc[i].lo, acc[i].hi, t};
        }
        const mpkb_task *x = &tg->tasks[t];
        for (uint32_t k = 0; k < x->trig_count; k++)
            if (tg->triggers[x->trig_first + k] == tg->meta->step_event)
                to_end = mpk_anc_union(V->A, to_end, V->ganc[x->dep], UINT32_MAX - 1);
    }
    qsort(w, nw, sizeof *w, cmp_wr);
    char b1[256], b2[256];
    for (uint32_t t = 0; t < tg->ntasks; t++) {
        if (!mpk_remote_read(tg, &tg->tasks[t], &lo, &hi))
            continue;
        for (size_t i = 0; i < nw && w[i].lo < hi; i++) {
            if (w[i].hi <= lo || w[i].task == t)
                continue;
            uint32_t q = w[i].task;
            bool before = q < t ? ganc_has(V, tg->tasks[t].dep, q) : ganc_has(V, tg->tasks[q].dep, t);
            if (!before)
                report(V, "%s reads arena bytes %llu..%llu on every rank, which %s writes, but the "
                          "two are not ordered on different ranks (no ALL_RANKS event between them)",
                       mpk_task_desc(tg, t, b1, sizeof b1), (unsigned long long)lo,
                       (unsigned long long)hi, mpk_task_desc(tg, q, b2, sizeof b2));
            else if (!mpk_anc_has(V->A, to_end, t) && !ganc_has(V, tg->tasks[q].dep, 0))
                report(V, "%s reads arena bytes %llu..%llu on every rank, which %s of the next step "
                          "may overwrite on another rank first (no ALL_RANKS event orders them "
                          "across the step)",
                       mpk_task_desc(tg, t, b1, sizeof b1), (unsigned long long)lo,
                       (unsigned long long)hi, mpk_task_desc(tg, q, b2, sizeof b2));
        }
    }
    free(acc);
    free(w);
}

int mpk_verify(const mpkb_blob *tg, FILE *out, int max_report)
{
    vf V = {.tg = tg, .out = out, .max_report = max_report};
    if (tg->meta->step_event >= tg->nevents) {
        report(&V, "the step event %u does not exist", tg->meta->step_event);
        return V.bad;
    }
    if (!structure(&V))
        return V.bad;
    bool global = false;
    uint64_t lo, hi;
    for (uint32_t t = 0; t < tg->ntasks && !global; t++)
        global = mpk_remote_read(tg, &tg->tasks[t], &lo, &hi);
    ancestors(&V, global);
    sweep(&V);
    if (global)
        cross_rank(&V);
    mpk_anc_free(V.A);
    free(V.anc);
    free(V.ganc);
    if (V.bad > max_report)
        fprintf(out, "mpk: verifier: ... and %d more problems\n", V.bad - max_report);
    return V.bad;
}
