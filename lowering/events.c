/*
 * events.c - which tasks each task waits for, as events.
 *
 * The tasks, in the order tile.c made them, are a sequential program whose
 * meaning is the model. A task must wait for the last task that wrote any
 * byte it reads (RAW), and a task writing bytes must wait for their last
 * writer (WAW) and for every task that read them since (WAR: the arena
 * reuses bytes). These are computed exactly, per byte range, by sweeping
 * the tasks over the arena and the state cut into elementary segments (the
 * distinct access boundaries): a consumer waits only for the producer tiles
 * it reads.
 *
 * A task waits for one event, so its producers form one set; producers
 * that are ancestors of other members are dropped (the o_proj tile that
 * reads the residual written by the previous layer need not wait for it:
 * it waits for attention, which came after). Ancestry is a set per event
 * (ancset.c: shared parts, not a bit per task). Consumers with equal producer sets share an event. Tasks no data
 * dependence orders wait for the inputs task; the tasks nothing waits for
 * signal the step event (lag 1), which the inputs task of the next step
 * waits for, so that steps never overlap.
 *
 * With --tp, a task that reads every rank's bytes (an allreduce, the
 * argmax reduce over all ranks) waits for an event with flag ALL_RANKS:
 * its producers on every rank signal it on every rank. Its producers are
 * found as for any task, on this rank's accesses: every rank runs the
 * same tasks, so the tasks writing these bytes here write them there.
 *
 * Last, the tasks are grouped by the event they wait for (stably), which
 * keeps a topological order because events are numbered in order of first
 * use, and gives each event a contiguous range of waiting tasks.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>


typedef struct {
    mpk_low *L;
    uint32_t n;            /* tasks */
    mpk_sweep *sw;
    mpk_sigcache *sigs;    /* item list -> event */
    uint32_t *stamp;       /* per task: in the raw set being built if == gen */
    uint32_t gen;
    mpk_ivec raw;
    mpk_ivec pool;             /* reduced item task lists: count, tasks */
    uint32_t *inset;       /* per task: member of the reduced set of task t + 1 */
    mpk_ivec deps;
    /* events */
    int *prod;             /* producer lists, concatenated (unordered) */
    int nprod;
    size_t capprod;
    int *prod_off, *prod_n;
    uint64_t *prod_hash;
    mpk_anc *A;            /* the ancestor sets (ancset.c) */
    mpk_aset *anc;         /* per event: ancestors of its waiting tasks */
    uint32_t *hash_slots;  /* event + 1 */
    uint32_t hash_cap;
} ev;

static bool is_anc(const ev *E, uint32_t e, int task) { return mpk_anc_has(E->A, E->anc[e], (uint64_t)task); }

/* An order-independent hash of a set of tasks, so sets need no sorting. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_set(const int *v, int n)
{
    uint64_t h = (uint64_t)n * 0x100000001b3ull;
    for (int i = 0; i < n; i++)
        h += mix((uint64_t)(uint32_t)v[i]);
    return h;
}

/* A new event with producers prod[0..n); first_task is its first waiter,
 * above every ancestor. */
static uint32_t new_event(ev *E, uint32_t lag, const int *prod, int n, int first_task, uint64_t h)
{
    mpk_low *L = E->L;
    uint32_t id = L->nevents++;
    if (L->nevents > L->capevents) {
        L->capevents = L->capevents ? L->capevents * 2 : 256;
        L->events = mpk_realloc(L->events, sizeof *L->events * L->capevents);
        E->prod_off = mpk_realloc(E->prod_off, sizeof *E->prod_off * L->capevents);
        E->prod_n = mpk_realloc(E->prod_n, sizeof *E->prod_n * L->capevents);
        E->prod_hash = mpk_realloc(E->prod_hash, sizeof *E->prod_hash * L->capevents);
        E->anc = mpk_realloc(E->anc, sizeof *E->anc * L->capevents);
    }
    L->events[id] = (mpkb_event){.triggers = (uint32_t)n, .lag = lag};
    E->prod = mpk_grow(E->prod, &E->capprod, (size_t)(E->nprod + n), sizeof *E->prod);
    if (n)
        memcpy(E->prod + E->nprod, prod, sizeof *prod * (size_t)n);
    E->prod_off[id] = E->nprod;
    E->prod_n[id] = n;
    E->prod_hash[id] = h;
    E->nprod += n;
    (void)first_task; /* the producers, and so their ancestors, lie below it */
    mpk_aset a = 0;
    /* each distinct event the producers wait for is merged once */
    uint32_t done[16];
    int ndone = 0;
    for (int i = 0; i < n && !lag; i++) {
        int p = prod[i];
        a = mpk_anc_add(E->A, a, (uint64_t)p, id);
        uint32_t pe = L->tasks[p].dep;
        bool seen = false;
        for (int k = 0; k < ndone && !seen; k++)
            seen = done[k] == pe;
        if (seen)
            continue;
        if (ndone < 16)
            done[ndone++] = pe;
        a = mpk_anc_union(E->A, a, E->anc[pe], id);
    }
    E->anc[id] = a;
    return id;
}

/* The event whose producers are exactly the set prod[0..n), whose members
 * are marked in E->inset with mark. */
static uint32_t event_for(ev *E, const int *prod, int n, int first_task, uint32_t mark)
{
    mpk_low *L = E->L;
    if ((L->nevents + 1) * 2 >= E->hash_cap) {
        uint32_t ncap = E->hash_cap ? E->hash_cap * 2 : 1024;
        uint32_t *ns = mpk_calloc(ncap, sizeof *ns);
        if (!ns)
            mpk_out_of_memory();
        for (uint32_t i = 0; i < E->hash_cap; i++) {
            uint32_t e = E->hash_slots[i];
            if (!e)
                continue;
            uint32_t j = (uint32_t)E->prod_hash[e - 1] & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = e;
        }
        free(E->hash_slots);
        E->hash_slots = ns;
        E->hash_cap = ncap;
    }
    uint64_t h = hash_set(prod, n);
    uint32_t j = (uint32_t)h & (E->hash_cap - 1);
    for (; E->hash_slots[j]; j = (j + 1) & (E->hash_cap - 1)) {
        uint32_t e = E->hash_slots[j] - 1;
        if (E->prod_hash[e] != h || E->prod_n[e] != n)
            continue;
        bool same = true;
        for (int i = 0; i < n && same; i++)
            same = E->inset[E->prod[E->prod_off[e] + i]] == mark;
        if (same)
            return e;
    }
    uint32_t e = new_event(E, 0, prod, n, first_task, h);
    E->hash_slots[j] = e + 1;
    return e;
}

/* The producer set of task t, reduced, as an event. */
static uint32_t dep_of(ev *E, int t, const int *d0, int n)
{
    mpk_low *L = E->L;
    uint32_t mark = (uint32_t)t + 1;
    if (n == 0) {
        static const int inputs = 0;
        E->inset[0] = mark;
        return event_for(E, &inputs, 1, t, mark);
    }
    /* A producer that is an ancestor of another producer is implied. The
     * ancestors of a producer are those of the event it waits for. */
    uint32_t evs[32];
    int nev = 0;
    for (int i = 0; i < n && nev < 32; i++) {
        uint32_t pe = L->tasks[d0[i]].dep;
        int k = 0;
        while (k < nev && evs[k] != pe)
            k++;
        if (k == nev)
            evs[nev++] = pe;
    }
    E->deps.n = 0;
    for (int i = 0; i < n; i++) {
        bool implied = false;
        for (int k = 0; k < nev && !implied; k++)
            implied = is_anc(E, evs[k], d0[i]);
        if (!implied) {
            mpk_ivec_push(&E->deps, d0[i]);
            E->inset[d0[i]] = mark;
        }
    }
    return event_for(E, E->deps.v, E->deps.n, t, mark);
}

/* A group item's tasks without those implied by others among them,
 * computed once per item (reduce(A u B) = reduce(reduce(A) u reduce(B))). */
static void reduced_item(ev *E, int item, const int **out, int *n)
{
    int64_t at = mpk_sigcache_get(E->sigs, &item, 1, 1);
    if (at < 0) {
        const int *v;
        int k;
        mpk_sweep_item_tasks(E->sw, item, &v, &k);
        uint32_t evs[32];
        int nev = 0;
        for (int i = 0; i < k && nev < 32; i++) {
            uint32_t pe = E->L->tasks[v[i]].dep;
            int j = 0;
            while (j < nev && evs[j] != pe)
                j++;
            if (j == nev)
                evs[nev++] = pe;
        }
        at = E->pool.n;
        mpk_ivec_push(&E->pool, 0);
        for (int i = 0; i < k; i++) {
            bool implied = false;
            for (int j = 0; j < nev && !implied; j++)
                implied = is_anc(E, evs[j], v[i]);
            if (!implied)
                mpk_ivec_push(&E->pool, v[i]);
        }
        E->pool.v[at] = E->pool.n - (int)at - 1;
        mpk_sigcache_put(E->sigs, &item, 1, 1, at);
    }
    *out = E->pool.v + at + 1;
    *n = E->pool.v[at];
}

/* The raw producer set of task t: its items' (reduced) tasks, once each. */
static void expand(ev *E, const int *items, int n)
{
    E->raw.n = 0;
    E->gen++; /* a fresh mark: one task may be expanded twice */
    for (int i = 0; i < n; i++) {
        const int *v;
        int k;
        if (MPK_ITEM_KIND(items[i]) == MPK_ITEM_KIND_TASK) {
            int x = MPK_ITEM_ID(items[i]);
            v = &x;
            k = 1;
            if (E->stamp[x] != E->gen) {
                E->stamp[x] = E->gen;
                mpk_ivec_push(&E->raw, x);
            }
            continue;
        }
        reduced_item(E, items[i], &v, &k);
        for (int j = 0; j < k; j++)
            if (E->stamp[v[j]] != E->gen) {
                E->stamp[v[j]] = E->gen;
                mpk_ivec_push(&E->raw, v[j]);
            }
    }
}

static void sweep(ev *E)
{
    mpk_low *L = E->L;
    L->tasks[0].dep = 0; /* the inputs task waits for the step event */
    int groups[64];
    for (uint32_t t = 0; t < E->n; t++) {
        const int *items, *why;
        int n = mpk_sweep_next(E->sw, t, &items, &why);
        if (t == 0)
            continue;
        /* Fast path: the event the group items need, when every single
         * task among the items is already implied by it. */
        int ng = 0;
        for (int i = 0; i < n && ng < 64; i++)
            if (MPK_ITEM_KIND(items[i]) != MPK_ITEM_KIND_TASK)
                groups[ng++] = items[i];
        int64_t e = -1;
        if (ng == n || n <= 64) {
            int64_t eg = ng ? mpk_sigcache_get(E->sigs, groups, ng, 0) : -1;
            if (ng && eg < 0) {
                expand(E, groups, ng);
                eg = dep_of(E, (int)t, E->raw.v, E->raw.n);
                mpk_sigcache_put(E->sigs, groups, ng, 0, eg);
            }
            bool implied = eg >= 0;
            for (int i = 0; i < n && implied; i++)
                if (MPK_ITEM_KIND(items[i]) == MPK_ITEM_KIND_TASK)
                    implied = is_anc(E, (uint32_t)eg, MPK_ITEM_ID(items[i]));
            if (implied)
                e = eg;
        }
        if (e < 0) {
            e = mpk_sigcache_get(E->sigs, items, n, 0);
            if (e < 0) {
                expand(E, items, n);
                e = dep_of(E, (int)t, E->raw.v, E->raw.n);
                mpk_sigcache_put(E->sigs, items, n, 0, e);
            }
        }
        L->tasks[t].dep = (uint32_t)e;
    }
}

/* Triggers: each producer signals the events it is a producer of; tasks
 * nothing waits for signal the step event. */
static void make_triggers(ev *E)
{
    mpk_low *L = E->L;
    /* An event nobody waits for (made while trying a cheaper set) is
     * dropped: events are renumbered densely, in the same order. */
    uint32_t *waiters = mpk_calloc(L->nevents + 1, sizeof *waiters), kept = 1;
    for (uint32_t t = 0; t < E->n; t++)
        waiters[L->tasks[t].dep]++;
    uint32_t *renum = mpk_malloc(sizeof *renum * (L->nevents + 1));
    renum[0] = 0;
    for (uint32_t e = 1; e < L->nevents; e++) {
        renum[e] = waiters[e] ? kept : MPKB_NONE;
        if (waiters[e]) {
            L->events[kept] = L->events[e];
            E->prod_off[kept] = E->prod_off[e];
            E->prod_n[kept] = E->prod_n[e];
            kept++;
        }
    }
    for (uint32_t t = 0; t < E->n; t++)
        L->tasks[t].dep = renum[L->tasks[t].dep];
    L->nevents = kept;
    free(waiters);
    free(renum);
    uint32_t *count = mpk_calloc(E->n + 1, sizeof *count);
    for (uint32_t e = 1; e < L->nevents; e++)
        for (int i = 0; i < E->prod_n[e]; i++)
            count[E->prod[E->prod_off[e] + i]]++;
    uint32_t sinks = 0;
    for (uint32_t t = 0; t < E->n; t++)
        if (!count[t])
            count[t] = 1, sinks++;
    L->events[0].triggers = sinks;
    uint32_t total = 0;
    for (uint32_t t = 0; t < E->n; t++) {
        L->tasks[t].trig_first = total;
        L->tasks[t].trig_count = 0;
        total += count[t];
    }
    L->triggers = mpk_realloc(L->triggers, sizeof *L->triggers * (total + 1));
    L->ntriggers = total;
    for (uint32_t e = 1; e < L->nevents; e++)
        for (int i = 0; i < E->prod_n[e]; i++) {
            mpkb_task *p = &L->tasks[E->prod[E->prod_off[e] + i]];
            L->triggers[p->trig_first + p->trig_count++] = e;
        }
    for (uint32_t t = 0; t < E->n; t++)
        if (L->tasks[t].trig_count == 0)
            L->triggers[L->tasks[t].trig_first] = 0, L->tasks[t].trig_count = 1;
    free(count);
}

/* Group tasks by the event they wait for; events number in order of first
 * use, so this order is still topological. */
static void group_tasks(ev *E)
{
    mpk_low *L = E->L;
    uint32_t *start = mpk_calloc(L->nevents + 1, sizeof *start);
    for (uint32_t t = 0; t < E->n; t++)
        start[L->tasks[t].dep + 1]++;
    for (uint32_t e = 0; e < L->nevents; e++) {
        L->events[e].first_task = start[e];
        L->events[e].ntasks = start[e + 1];
        start[e + 1] += start[e];
    }
    mpkb_task *sorted = mpk_malloc(sizeof *sorted * (E->n + 1));
    uint32_t *trig = mpk_malloc(sizeof *trig * (L->ntriggers + 1));
    uint32_t nt = 0;
    for (uint32_t t = 0; t < E->n; t++) {
        mpkb_task *x = &L->tasks[t];
        uint32_t at = start[x->dep]++;
        sorted[at] = *x;
    }
    for (uint32_t t = 0; t < E->n; t++) {
        mpkb_task *x = &sorted[t];
        memcpy(trig + nt, L->triggers + x->trig_first, sizeof *trig * x->trig_count);
        x->trig_first = nt;
        nt += x->trig_count;
    }
    free(L->tasks);
    free(L->triggers);
    L->tasks = sorted;
    L->captasks = E->n + 1;
    L->triggers = trig;
    free(start);
}

/* Bytes moved per step, for --stats and the placement model. */
static void count_bytes(ev *E)
{
    mpk_low *L = E->L;
    uint64_t wr = 0, kv = 0;
    bool *seen = mpk_calloc(L->ntensors + 1, 1);
    for (uint32_t t = 0; t < E->n; t++) {
        const mpkb_task *x = &L->tasks[t];
        if (x->op == MPKB_OP_MATVEC) {
            const mpkb_tensor *w = &L->tensors[x->matvec.w];
            wr += (uint64_t)(x->matvec.hi - x->matvec.lo) * w->dims[1] * mpkb_dtype_size(w->dtype);
        } else if (x->op == MPKB_OP_EMBED) {
            const mpkb_tensor *w = &L->tensors[x->embed.table];
            wr += (uint64_t)(x->embed.hi - x->embed.lo) * mpkb_dtype_size(w->dtype);
        } else if (x->op == MPKB_OP_ATTENTION && x->attention.chunk == 0) {
            const mpkb_tensor *q = &L->tensors[x->attention.q];
            kv += 2ull * q->dims[2] * mpkb_dtype_size(q->dtype);
        }
        for (int k = 0; k < MPKB_NT; k++) {
            uint32_t v = x->t[k];
            if (v == MPKB_NONE || seen[v] || L->tensors[v].space != MPKB_SPACE_WEIGHT)
                continue;
            seen[v] = true;
            if (!(x->op == MPKB_OP_MATVEC && k == MPKB_SLOT(matvec, w)) &&
                !(x->op == MPKB_OP_EMBED && k == MPKB_SLOT(embed, table)))
                wr += L->tensors[v].nbytes;
        }
    }
    free(seen);
    L->weight_read = wr;
    L->kv_bytes_per_pos = kv;
    L->meta.bytes_per_step = wr + L->act_bytes;
}

bool mpk_make_events(mpk_low *L)
{
    ev E = {.L = L, .n = L->ntasks};
    mpkb_blob tg = mpk_low_view(L);
    int bad;
    E.sw = mpk_sweep_new(&tg, &bad);
    MPK_ASSERT(bad < 0); /* the lowering made a task whose operands do not fit */
    E.inset = mpk_calloc(E.n + 1, sizeof *E.inset);
    E.stamp = mpk_calloc(E.n + 1, sizeof *E.stamp);
    E.sigs = mpk_sigcache_new();
    E.A = mpk_anc_new(E.n);
    new_event(&E, 1, NULL, 0, 0, 0); /* event 0: the step event */
    L->meta.step_event = 0;
    sweep(&E);
    mpk_sweep_free(E.sw);
    for (uint32_t t = 0; t < E.n; t++) {
        uint64_t lo, hi;
        if (mpk_remote_read(&tg, &L->tasks[t], &lo, &hi))
            L->events[L->tasks[t].dep].flags |= MPKB_EV_ALL_RANKS;
    }
    mpk_anc_free(E.A);
    count_bytes(&E);
    make_triggers(&E);
    group_tasks(&E);
    free(E.anc);
    free(E.inset);
    free(E.stamp);
    free(E.raw.v);
    free(E.pool.v);
    mpk_sigcache_free(E.sigs);
    free(E.deps.v);
    free(E.prod);
    free(E.prod_off);
    free(E.prod_n);
    free(E.prod_hash);
    free(E.hash_slots);
    return true;
}
