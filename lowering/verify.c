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
 * step need checking. Also checked: event producer counts, contiguous
 * waiter ranges, and producers waiting for lower-numbered events (which
 * makes the event graph acyclic).
 */
#include "lowering/lowering.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const mpk_taskgraph *tg;
    FILE *out;
    int bad, max_report;
    uint64_t **anc;
    size_t *words;
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
    const mpk_taskgraph *tg = V->tg;
    uint32_t *count = calloc(tg->nevents + 1, sizeof *count);
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

/* Ancestors of the tasks waiting for each event: its producers and theirs. */
static void ancestors(vf *V)
{
    const mpk_taskgraph *tg = V->tg;
    V->anc = calloc(tg->nevents + 1, sizeof *V->anc);
    V->words = calloc(tg->nevents + 1, sizeof *V->words);
    for (uint32_t e = 0; e < tg->nevents; e++) {
        V->words[e] = tg->events[e].lag ? 0 : ((size_t)tg->events[e].first_task + 63) / 64;
        V->anc[e] = calloc(V->words[e] + 1, sizeof **V->anc);
    }
    /* producers of e lie below e's first waiter (checked: they wait for an
     * earlier event, and ranges are in event order) */
    /* producers of an event mostly share the event they wait for: merge
     * its ancestors once per run of equal ones */
    uint32_t *merged = malloc(sizeof *merged * (tg->nevents + 1));
    for (uint32_t e = 0; e < tg->nevents; e++)
        merged[e] = MPKB_NONE;
    for (uint32_t p = 0; p < tg->ntasks; p++) {
        const mpkb_task *x = &tg->tasks[p];
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = tg->triggers[x->trig_first + k];
            if (tg->events[e].lag)
                continue;
            uint64_t *a = V->anc[e];
            a[p >> 6] |= 1ull << (p & 63);
            if (merged[e] == x->dep)
                continue;
            merged[e] = x->dep;
            size_t n = V->words[x->dep] < V->words[e] ? V->words[x->dep] : V->words[e];
            for (size_t w = 0; w < n; w++)
                a[w] |= V->anc[x->dep][w];
        }
    }
    free(merged);
}

static bool ordered(const vf *V, uint32_t a, uint32_t b)
{
    uint32_t e = V->tg->tasks[b].dep;
    return (size_t)a < V->words[e] * 64 && ((V->anc[e][a >> 6] >> (a & 63)) & 1);
}

/* The tensor a byte of a space belongs to, for messages. */
static const char *tensor_at(const mpk_taskgraph *tg, const mpkb_task *t, const mpk_access *a)
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
    const mpk_taskgraph *tg = V->tg;
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

int mpk_verify(const mpk_taskgraph *tg, FILE *out, int max_report)
{
    vf V = {.tg = tg, .out = out, .max_report = max_report};
    if (tg->meta->step_event >= tg->nevents) {
        report(&V, "the step event %u does not exist", tg->meta->step_event);
        return V.bad;
    }
    if (!structure(&V))
        return V.bad;
    ancestors(&V);
    sweep(&V);
    for (uint32_t e = 0; e < tg->nevents; e++)
        free(V.anc[e]);
    free(V.anc);
    free(V.words);
    if (V.bad > max_report)
        fprintf(out, "mpk: verifier: ... and %d more problems\n", V.bad - max_report);
    return V.bad;
}
