/*
 * lower.c - the lowering pipeline and the helpers its passes share.
 *
 * mpk_passes is the pipeline: mpk_lower mirrors the graph's tensors, then
 * runs the passes in order; after a pass that asks for it the verifier
 * runs, and the graph is printed if --dump names that pass. A failing check after a pass
 * is a compiler bug: it is reported as an error naming the tasks involved
 * and the build fails rather than writing a wrong blob.
 */
#include "lowering.h"

#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

int64_t mpk_lt_numel(const mpk_ltensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->dims[i];
    return n;
}

int mpk_lt_new(mpk_low *L, mpk_dtype dt, int ndim, const int64_t *dims, int space, const char *name)
{
    L->lt = mpk_grow(L->lt, &L->caplt, (size_t)L->nlt + 1, sizeof *L->lt);
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
static uint64_t hash_str(const char *s) { return mpk_fnv1a(MPK_FNV_INIT, s, strlen(s)); }

uint32_t mpk_str_intern(mpk_low *L, const char *s)
{
    if (L->str_n * 2 >= L->str_cap) {
        uint32_t ncap = L->str_cap ? L->str_cap * 2 : 1024;
        uint32_t *ns = mpk_calloc(ncap, sizeof *ns);
        if (!ns)
            mpk_out_of_memory();
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
    L->strings = mpk_grow(L->strings, &L->capstrings, (size_t)off + len, 1);
    memcpy(L->strings + off, s, len);
    L->nstrings += (uint32_t)len;
    L->str_slots[j] = off + 1;
    L->str_n++;
    return off;
}

mpk_kop *mpk_kop_new(mpk_low *L, mpk_kop_kind kind, const mpk_node *n)
{
    L->kops = mpk_grow(L->kops, &L->capkops, (size_t)L->nkops + 1, sizeof *L->kops);
    mpk_kop *k = &L->kops[L->nkops++];
    memset(k, 0, sizeof *k);
    k->kind = kind;
    k->node = n;
    for (int i = 0; i < MPKB_NT; i++)
        k->t[i] = -1;
    k->argmax_out = -1;
    k->layer = -1;
    return k;
}

mpkb_task *mpk_task_new(mpk_low *L, uint16_t op, const mpk_kop *k)
{
    L->tasks = mpk_grow(L->tasks, &L->captasks, (size_t)L->ntasks + 1, sizeof *L->tasks);
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

mpkb_blob mpk_low_view(const mpk_low *L)
{
    return (mpkb_blob){
        .meta = &L->meta, .strings = L->strings, .strings_size = L->nstrings,
        .tensors = L->tensors, .ntensors = L->ntensors,
        .tasks = L->tasks, .ntasks = L->ntasks,
        .events = L->events, .nevents = L->nevents,
        .triggers = L->triggers, .ntriggers = L->ntriggers,
        .queues = L->queues, .nqueues = L->queues ? L->meta.workers : 0,
        .qtasks = L->qtasks, .nqtasks = L->qtasks ? L->ntasks : 0,
        .consts = L->consts, .consts_size = L->nconsts,
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
    free(L->pass_ms);
    free(L);
}

/* A check after a pass failed: a compiler bug, reported as such. */
static bool verified(mpk_low *L, const char *after)
{
    mpkb_blob tg = mpk_low_view(L);
    int bad = mpk_verify(&tg, stderr, 10);
    if (bad)
        mpk_error(L->diag, (mpk_loc){0, 0, 0},
                  "internal compiler error: the task graph after the %s pass fails %d "
                  "verifier check%s (above); please report this with the model", after, bad,
                  bad == 1 ? "" : "s");
    return bad == 0;
}

/* Placement moves no event, so the events are verified once, after events. */
const mpk_pass mpk_passes[] = {
    {"shard", mpk_shard, false, "(--tp) which part of each tensor every rank holds"},
    {"fuse", mpk_fuse, false, "graph ops into kernel ops (prologues, epilogues)"},
    {"tile", mpk_tile, false, "kernel ops into tasks"},
    {"memory", mpk_plan_memory, false, "tensors into the arena, the state, weights, consts"},
    {"events", mpk_make_events, true, "the events that order conflicting accesses"},
    {"place", mpk_place, false, "tasks onto per-worker queues"},
};
const int mpk_npasses = sizeof mpk_passes / sizeof *mpk_passes;

int mpk_pass_index(const char *name)
{
    for (int i = 0; i < mpk_npasses; i++)
        if (strcmp(mpk_passes[i].name, name) == 0)
            return i;
    return -1;
}

/* The lowering's tensors start as the graph's, with the same ids. */
static bool mirror_tensors(mpk_low *L)
{
    const mpk_graph *g = L->g;
    for (int i = 0; i < g->tensors.n; i++) {
        const mpk_tensor *t = g->tensors.items[i];
        MPK_ASSERT(t->id == i);
        int space = t->kind == MPK_T_WEIGHT  ? MPKB_SPACE_WEIGHT
                    : t->kind == MPK_T_STATE ? MPKB_SPACE_STATE
                                             : MPKB_SPACE_ARENA;
        int64_t dims[MPKB_MAX_DIMS] = {0};
        if (t->ndim > MPKB_MAX_DIMS) {
            mpk_error(L->diag, t->loc, "tensors have at most %d dimensions in a blob, this one %d",
                      MPKB_MAX_DIMS, t->ndim);
            return false;
        }
        memcpy(dims, t->dims, sizeof(int64_t) * (size_t)t->ndim);
        int id = mpk_lt_new(L, t->dtype, t->ndim, dims, space,
                            t->name ? t->name : mpk_arena_printf(L->arena, "%%%d", t->id));
        L->lt[id].pinned = t->kind == MPK_T_INPUT;
    }
    return true;
}

/* What the blob's metadata says beyond the passes: its name, the context
 * the KV caches hold, the model's end-of-sequence ids, each a token of
 * the vocabulary (or generation could never stop on it). */
static bool finish_meta(mpk_low *L)
{
    mpkb_meta *m = &L->meta;
    m->name = mpk_str_intern(L, L->g->name ? L->g->name : "");
    m->max_seq = 0;
    for (uint32_t t = 0; t < L->ntasks; t++)
        if (L->tasks[t].op == MPKB_OP_ATTENTION) {
            uint32_t s = L->tensors[L->tasks[t].attention.cache].dims[2];
            m->max_seq = m->max_seq == 0 || s < m->max_seq ? s : m->max_seq;
        }
    if (m->max_seq == 0)
        m->max_seq = UINT32_MAX; /* nothing bounds the context */
    m->neos = 0;
    for (int i = 0; i < L->g->params.n; i++) { /* sema checked the form of eos */
        const mpk_param_value *p = L->g->params.items[i];
        if (strcmp(p->name, "eos") != 0)
            continue;
        if (p->value.kind == MPK_V_INT)
            m->eos[m->neos++] = (int32_t)p->value.i;
        for (int k = 0; p->value.kind == MPK_V_LIST && k < p->value.n && k < MPKB_MAX_EOS; k++)
            m->eos[m->neos++] = (int32_t)p->value.items[k].i;
    }
    for (uint32_t i = 0; i < m->neos; i++)
        if ((uint32_t)m->eos[i] >= m->vocab) {
            mpk_error(L->diag, (mpk_loc){0, 0, 0},
                      "param 'eos': %d is not a token id: the vocabulary (the logits' columns) is %u, "
                      "ids 0 to %u", m->eos[i], m->vocab, m->vocab - 1);
            return false;
        }
    return true;
}

mpk_low *mpk_lower(const mpk_graph *g, const mpk_lower_opts *opt, mpk_diag *d)
{
    MPK_ASSERT(!opt->dump || mpk_pass_index(opt->dump) >= 0); /* the driver checks the name */
    mpk_low *L = mpk_calloc(1, sizeof *L);
    if (!L)
        mpk_out_of_memory();
    L->arena = d->arena;
    L->diag = d;
    L->g = g;
    L->opt = *opt;
    L->workers = opt->workers ? opt->workers : g->workers ? g->workers : MPK_DEFAULT_WORKERS;
    L->tp = opt->tp > 1 ? (int)opt->tp : 1;
    L->meta.tp = (uint32_t)L->tp;
    L->token_lt = L->pos_lt = L->next_lt = L->logits_lt = -1;
    L->pass_ms = mpk_calloc((size_t)mpk_npasses + 1, sizeof *L->pass_ms);
    if (!L->pass_ms)
        mpk_out_of_memory();
    mpk_str_intern(L, ""); /* offset 0 is the empty string */
    if (!mirror_tensors(L)) {
        mpk_low_free(L);
        return NULL;
    }
    for (int i = 0; i < mpk_npasses; i++) {
        const mpk_pass *p = &mpk_passes[i];
        double t0 = mpk_now_ms();
        bool ok = p->run(L);
        L->pass_ms[i] = mpk_now_ms() - t0;
        if (!ok || mpk_diag_failed(d)) {
            mpk_low_free(L);
            return NULL;
        }
        if (opt->dump && strcmp(opt->dump, p->name) == 0)
            mpk_dump_pass(L, p->name, opt->dump_out ? opt->dump_out : stdout);
        t0 = mpk_now_ms();
        ok = !p->verify || verified(L, p->name);
        L->pass_ms[mpk_npasses] += mpk_now_ms() - t0;
        if (!ok) {
            mpk_low_free(L);
            return NULL;
        }
    }
    if (!finish_meta(L)) {
        mpk_low_free(L);
        return NULL;
    }
    return L;
}

void mpk_low_times(const mpk_low *L, FILE *out)
{
    for (int i = 0; i < mpk_npasses; i++)
        fprintf(out, "%s%s %.2f", i ? ", " : "", mpk_passes[i].name, L->pass_ms[i]);
    fprintf(out, ", verify %.2f ms", L->pass_ms[mpk_npasses]);
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
