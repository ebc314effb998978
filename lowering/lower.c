/*
 * lower.c - the lowering pipeline and the helpers its passes share.
 *
 * mpk_lower runs the passes in order; after each it runs the checks that
 * pass's output must meet (the verifier after events and placement), and
 * prints the graph if --dump names that pass. A failing check after a pass
 * is a compiler bug: it is reported as an error naming the tasks involved
 * and the build fails rather than writing a wrong blob.
 */
#include "lowering/lowering.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *grow(void *p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    uint32_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    p = realloc(p, (size_t)n * elem);
    if (!p)
        mpk_internal_error(__FILE__, __LINE__, "out of memory");
    *cap = n;
    return p;
}

int64_t mpk_lt_numel(const mpk_ltensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->dims[i];
    return n;
}

int mpk_lt_new(mpk_low *L, mpk_dtype dt, int ndim, const int64_t *dims, int space, const char *name)
{
    uint32_t cap = (uint32_t)L->caplt;
    L->lt = grow(L->lt, &cap, (uint32_t)L->nlt + 1, sizeof *L->lt);
    L->caplt = (int)cap;
    int id = L->nlt++;
    mpk_ltensor *t = &L->lt[id];
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim && i < MPKB_MAX_DIMS; i++)
        t->dims[i] = dims[i];
    t->space = space;
    t->root = id;
    t->name = name;
    t->first = -1;
    t->last = -1;
    t->blob = -1;
    t->split = -1;
    return id;
}

/* Strings are interned through an open-addressing table so that the
 * thousands of task labels of a big model cost one copy each. */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

uint32_t mpk_str_intern(mpk_low *L, const char *s)
{
    if (L->str_n * 2 >= L->str_cap) {
        uint32_t ncap = L->str_cap ? L->str_cap * 2 : 1024;
        uint32_t *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            mpk_internal_error(__FILE__, __LINE__, "out of memory");
        for (uint32_t i = 0; i < L->str_cap; i++) {
            if (!L->str_slots[i])
                continue;
            uint32_t j = (uint32_t)hash_str(L->strings + L->str_slots[i] - 1) & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = L->str_slots[i];
        }
        free(L->str_slots);
        L->str_slots = ns;
        L->str_cap = ncap;
    }
    uint32_t j = (uint32_t)hash_str(s) & (L->str_cap - 1);
    for (; L->str_slots[j]; j = (j + 1) & (L->str_cap - 1))
        if (strcmp(L->strings + L->str_slots[j] - 1, s) == 0)
            return L->str_slots[j] - 1;
    size_t len = strlen(s) + 1;
    uint32_t off = L->nstrings;
    L->strings = grow(L->strings, &L->capstrings, off + (uint32_t)len, 1);
    memcpy(L->strings + off, s, len);
    L->nstrings += (uint32_t)len;
    L->str_slots[j] = off + 1;
    L->str_n++;
    return off;
}

mpk_kop *mpk_kop_new(mpk_low *L, mpk_kop_kind kind, const mpk_node *n)
{
    uint32_t cap = (uint32_t)L->capkops;
    L->kops = grow(L->kops, &cap, (uint32_t)L->nkops + 1, sizeof *L->kops);
    L->capkops = (int)cap;
    mpk_kop *k = &L->kops[L->nkops++];
    memset(k, 0, sizeof *k);
    k->kind = kind;
    k->node = n;
    for (int i = 0; i < MPKB_NT; i++)
        k->t[i] = -1;
    k->layer = -1;
    return k;
}

mpkb_task *mpk_task_new(mpk_low *L, uint16_t op, const mpk_kop *k)
{
    L->tasks = grow(L->tasks, &L->captasks, L->ntasks + 1, sizeof *L->tasks);
    mpkb_task *t = &L->tasks[L->ntasks++];
    memset(t, 0, sizeof *t);
    t->op = op;
    t->dep = MPKB_NONE;
    t->layer = k ? k->layer : -1;
    t->label = k && k->label ? mpk_str_intern(L, k->label) : 0;
    for (int i = 0; i < MPKB_NT; i++)
        t->t[i] = MPKB_NONE;
    return t;
}

mpk_taskgraph mpk_low_taskgraph(const mpk_low *L)
{
    return (mpk_taskgraph){
        .meta = &L->meta, .strings = L->strings,
        .tensors = L->tensors, .ntensors = L->ntensors,
        .tasks = L->tasks, .ntasks = L->ntasks,
        .events = L->events, .nevents = L->nevents,
        .triggers = L->triggers, .ntriggers = L->ntriggers,
        .queues = L->queues, .qtasks = L->qtasks,
    };
}

void mpk_low_free(mpk_low *L)
{
    if (!L)
        return;
    free(L->lt);
    free(L->kops);
    free(L->strings);
    free(L->tensors);
    free(L->tasks);
    free(L->events);
    free(L->triggers);
    free(L->queues);
    free(L->qtasks);
    free(L->consts);
    free(L->str_slots);
    free(L);
}

/* A check after a pass failed: a compiler bug, reported as such. */
static bool verified(mpk_low *L, const char *after)
{
    mpk_taskgraph tg = mpk_low_taskgraph(L);
    int bad = mpk_verify(&tg, stderr, 10);
    if (bad)
        mpk_error(L->diag, (mpk_loc){0, 0, 0},
                  "internal compiler error: the task graph after the %s pass fails %d "
                  "verifier check%s (above); please report this with the model", after, bad,
                  bad == 1 ? "" : "s");
    return bad == 0;
}

static const char *const pass_names[] = {"fuse", "tile", "memory", "events", "place", NULL};

mpk_low *mpk_lower(const mpk_graph *g, const mpk_lower_opts *opt, mpk_diag *d)
{
    if (opt->dump) {
        bool known = false;
        for (int i = 0; pass_names[i]; i++)
            known |= strcmp(opt->dump, pass_names[i]) == 0;
        MPK_ASSERT(known); /* the driver checks the name */
    }
    mpk_low *L = calloc(1, sizeof *L);
    if (!L)
        return NULL;
    L->arena = d->arena;
    L->diag = d;
    L->g = g;
    L->opt = *opt;
    L->workers = opt->workers ? opt->workers : g->workers ? g->workers : MPK_DEFAULT_WORKERS;
    L->tp = opt->tp > 1 ? (int)opt->tp : 1;
    L->meta.tp = (uint32_t)L->tp;
    L->token_lt = L->pos_lt = L->next_lt = L->logits_lt = -1;
    mpk_str_intern(L, ""); /* offset 0 is the empty string */

    static bool (*const passes[])(mpk_low *) = {mpk_fuse, mpk_tile, mpk_plan_memory,
                                                mpk_make_events, mpk_place};
    for (int i = 0; pass_names[i]; i++) {
        double t0 = now_ms();
        bool ok = passes[i](L);
        L->pass_ms[i] = now_ms() - t0;
        if (!ok || mpk_diag_failed(d)) {
            mpk_low_free(L);
            return NULL;
        }
        if (opt->dump && strcmp(opt->dump, pass_names[i]) == 0)
            mpk_dump_pass(L, pass_names[i], opt->dump_out ? opt->dump_out : stdout);
        /* placement moves no event, so the events are verified once */
        t0 = now_ms();
        ok = i != 3 || verified(L, pass_names[i]);
        L->pass_ms[5] += now_ms() - t0;
        if (!ok) {
            mpk_low_free(L);
            return NULL;
        }
    }
    return L;
}

void mpk_low_stats(const mpk_low *L, FILE *out)
{
    uint64_t tr = 0;
    for (uint32_t i = 0; i < L->nevents; i++)
        tr += L->events[i].triggers;
    if (L->tp > 1)
        fprintf(out, "ranks            %d (tensor parallel: the figures below are one rank's)\n", L->tp);
    fprintf(out, "tasks            %u\n", L->ntasks);
    fprintf(out, "events           %u (%llu signals per step)\n", L->nevents, (unsigned long long)tr);
    fprintf(out, "tensors          %u\n", L->ntensors);
    fprintf(out, "workers          %u (placement target)\n", L->meta.workers);
    fprintf(out, "weights          %llu bytes (%.2f MiB)\n", (unsigned long long)L->meta.weight_size,
            (double)L->meta.weight_size / 1048576.0);
    fprintf(out, "state            %llu bytes (%.2f MiB)\n", (unsigned long long)L->meta.state_size,
            (double)L->meta.state_size / 1048576.0);
    fprintf(out, "activations      %llu bytes arena\n", (unsigned long long)L->meta.arena_size);
    fprintf(out, "bytes per token  %llu (%.2f MiB): weights %llu, activations %llu, "
                 "plus %llu of KV cache per position of context\n",
            (unsigned long long)L->meta.bytes_per_step, (double)L->meta.bytes_per_step / 1048576.0,
            (unsigned long long)L->weight_read, (unsigned long long)L->act_bytes,
            (unsigned long long)L->kv_bytes_per_pos);
}
