/*
 * memory.c - where every tensor lives, and the blob's tensor table.
 *
 * Weights are loaded by name, each into its own buffer; state (the KV
 * cache) is laid out end to end; rope tables go to the CONSTS section.
 * Activations share one arena: a tensor is live from the first task that
 * touches it to the last (in task order), and a tensor may take the bytes
 * of one whose last task comes strictly before its first. Inputs, outputs
 * and the logits stay live the whole step, since the runtime reads and
 * writes them between steps. Placement is first fit in order of first use.
 * Every arena tensor starts on a 256-byte boundary (16-byte vector loads
 * and bulk copies on the GPU need 16; 256 keeps tiles in separate sectors).
 *
 * Sharing bytes orders tasks: the event builder (events.c) makes the
 * first writer of the new tensor wait for the last reader of the old one.
 * That costs nothing where the data flow already orders them, and a stage
 * where it does not: the up projection of a chunk graph, placed over the
 * gate projection's output, waited for the silu that reads it, a stage
 * after the gate projection it runs beside. So a dead tensor's bytes are
 * taken only by a tensor whose first task follows its last reader in the
 * data flow (flow_before); a dead block is remembered so for the next
 * PEND_MAX placements, then forgotten, its bytes free for any tensor (an
 * order that costs time, never correctness: the events follow the bytes).
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 256

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

typedef struct {
    uint64_t off, end;
    int last;
    int pend; /* tensors placed since it died */
} block;

#define PEND_MAX 64
#define FLOW_SPAN 4096 /* groups apart past which two tasks count as ordered */

/* The order the data flow imposes, coarsely: tasks in runs ("groups") of
 * one kind and label writing the same roots (the tiles of one op); group
 * b follows group a where a task of b reads or writes a root (arena or
 * state) that a task of a writes. */
typedef struct {
    int *grp;             /* per task */
    int ng;
    int *first, *pred;    /* group g's predecessors: pred[first[g] .. first[g + 1]) */
    int *seen, epoch, *stack;
} flow;

static int root_of(const mpk_low *L, uint32_t v)
{
    if (v == MPKB_NONE)
        return -1;
    int r = L->lt[v].root;
    int sp = L->lt[r].space;
    return sp == MPKB_SPACE_ARENA || sp == MPKB_SPACE_STATE ? r : -1;
}

/* Whether tasks a and b (a task that may write, in the same group) write
 * the same roots. */
static bool same_writes(const mpk_low *L, const mpkb_task *a, const mpkb_task *b)
{
    if (a->op != b->op || a->label != b->label)
        return false;
    for (int k = 0; k < MPKB_NT; k++)
        if (mpkb_operand_writes(a->op, k) && root_of(L, a->t[k]) != root_of(L, b->t[k]))
            return false;
    return true;
}

static void flow_build(const mpk_low *L, flow *F)
{
    uint32_t n = L->ntasks;
    F->grp = mpk_malloc(sizeof *F->grp * (n + 1));
    F->first = mpk_malloc(sizeof *F->first * (n + 2));
    /* per root: the groups that write it, as a linked list */
    int *head = mpk_malloc(sizeof *head * (size_t)(L->nlt + 1));
    int *wnext = NULL, *wgrp = NULL;
    size_t nw = 0, capw = 0, capw2 = 0, np = 0, capp = 0;
    F->pred = NULL;
    for (int i = 0; i < L->nlt; i++)
        head[i] = -1;
    int *mark = mpk_malloc(sizeof *mark * (n + 1)); /* group g added as a predecessor of mark[g] */
    F->ng = 0;
    uint32_t g0 = 0; /* the current group's first task */
    for (uint32_t ti = 0; ti <= n; ti++) {
        bool end = ti == n || (ti > 0 && !same_writes(L, &L->tasks[ti - 1], &L->tasks[ti]));
        if (ti > 0 && end) {
            /* group F->ng = tasks g0 .. ti - 1: its predecessors, then it is a writer */
            int g = F->ng++;
            F->first[g] = (int)np;
            mark[g] = -1;
            for (uint32_t u = g0; u < ti; u++)
                for (int k = 0; k < MPKB_NT; k++) {
                    int r = root_of(L, L->tasks[u].t[k]);
                    for (int w = r >= 0 ? head[r] : -1; w >= 0; w = wnext[w])
                        if (mark[wgrp[w]] != g) {
                            mark[wgrp[w]] = g;
                            F->pred = mpk_grow(F->pred, &capp, np + 1, sizeof *F->pred);
                            F->pred[np++] = wgrp[w];
                        }
                }
            for (uint32_t u = g0; u < ti; u++) {
                F->grp[u] = g;
                if (u > g0)
                    continue; /* the group's tasks write the same roots */
                for (int k = 0; k < MPKB_NT; k++) {
                    int r = mpkb_operand_writes(L->tasks[u].op, k) ? root_of(L, L->tasks[u].t[k]) : -1;
                    if (r < 0 || (head[r] >= 0 && wgrp[head[r]] == g))
                        continue;
                    wnext = mpk_grow(wnext, &capw, nw + 1, sizeof *wnext);
                    wgrp = mpk_grow(wgrp, &capw2, nw + 1, sizeof *wgrp);
                    wnext[nw] = head[r], wgrp[nw] = g, head[r] = (int)nw++;
                }
            }
            g0 = ti;
        }
    }
    F->first[F->ng] = (int)np;
    F->seen = mark; /* reused: epochs from here on */
    for (int g = 0; g < F->ng; g++)
        F->seen[g] = 0;
    F->epoch = 0;
    F->stack = mpk_malloc(sizeof *F->stack * (size_t)(F->ng + 1));
    free(head), free(wnext), free(wgrp);
}

static void flow_free(flow *F) { free(F->grp), free(F->first), free(F->pred), free(F->seen), free(F->stack); }

/* Mark the groups that come before task b's in the data flow, back to
 * group gmin: those reached from b's through predecessors. */
static void flow_mark(flow *F, int b, int gmin)
{
    int gb = F->grp[b], sp = 0, e = ++F->epoch;
    F->stack[sp++] = gb;
    while (sp > 0) {
        int g = F->stack[--sp];
        for (int i = F->first[g]; i < F->first[g + 1]; i++) {
            int p = F->pred[i];
            if (p >= gmin && F->seen[p] != e) {
                F->seen[p] = e;
                F->stack[sp++] = p;
            }
        }
    }
}

/* After flow_mark(F, b, gmin), with a's group >= gmin or more than
 * FLOW_SPAN groups before b's: whether task a comes before task b in the
 * data flow. Tasks of one group are not ordered; groups more than
 * FLOW_SPAN apart are taken as ordered. */
static bool flow_before(const flow *F, int a, int b)
{
    int ga = F->grp[a], gb = F->grp[b];
    return ga < gb && (gb - ga > FLOW_SPAN || F->seen[ga] == F->epoch);
}

static int cmp_first(const void *a, const void *b, void *ctx)
{
    const mpk_ltensor *lt = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    if (lt[x].first != lt[y].first)
        return lt[x].first < lt[y].first ? -1 : 1;
    return x < y ? -1 : x > y;
}

static uint64_t lt_bytes(const mpk_ltensor *t)
{
    return (uint64_t)mpk_lt_numel(t) * (uint64_t)mpk_dtype_size(t->dtype);
}

static uint64_t plan_arena(mpk_low *L)
{
    int n = 0;
    int *order = mpk_malloc(sizeof *order * (size_t)(L->nlt + 1));
    for (int i = 0; i < L->nlt; i++) {
        mpk_ltensor *t = &L->lt[i];
        if (t->root == i && t->used && t->space == MPKB_SPACE_ARENA) {
            if (t->pinned)
                t->first = 0, t->last = (int)L->ntasks;
            order[n++] = i;
        }
    }
    qsort_r(order, (size_t)n, sizeof *order, cmp_first, L->lt);
    /* all: the blocks still remembered, sorted by offset (they may
     * overlap: a dead block's bytes can be taken while it is remembered);
     * use: those the tensor being placed must not overlap */
    block *all = mpk_malloc(sizeof *all * (size_t)(n + 1)), *use = mpk_malloc(sizeof *use * (size_t)(n + 1));
    int nall = 0;
    uint64_t top = 0;
    flow F;
    flow_build(L, &F);
    for (int k = 0; k < n; k++) {
        mpk_ltensor *t = &L->lt[order[k]];
        /* a block is in use while its tensor is live, and while it is dead
         * but its last reader does not come before this tensor's first
         * task in the flow; a block dead for PEND_MAX placements is
         * forgotten (the header comment) */
        int j = 0, nuse = 0, gmin = F.grp[t->first];
        for (int i = 0; i < nall; i++)
            if (all[i].last < t->first && all[i].pend < PEND_MAX && F.grp[all[i].last] < gmin &&
                F.grp[t->first] - F.grp[all[i].last] <= FLOW_SPAN)
                gmin = F.grp[all[i].last];
        flow_mark(&F, t->first, gmin);
        for (int i = 0; i < nall; i++) {
            block b = all[i];
            if (b.last < t->first) {
                if (b.pend >= PEND_MAX)
                    continue;
                b.pend++;
                if (!flow_before(&F, b.last, t->first))
                    use[nuse++] = b;
            } else {
                use[nuse++] = b;
            }
            all[j++] = b;
        }
        nall = j;
        /* use is sorted by offset: take the first gap that fits */
        uint64_t size = align_up(lt_bytes(t), ARENA_ALIGN), at = 0;
        for (int i = 0; i < nuse; i++) {
            if (use[i].off >= at + size)
                break;
            at = use[i].end > at ? use[i].end : at;
        }
        int ins = 0;
        while (ins < nall && all[ins].off <= at)
            ins++;
        memmove(&all[ins + 1], &all[ins], sizeof *all * (size_t)(nall - ins));
        all[ins] = (block){at, at + size, t->last, 0};
        nall++;
        t->offset = at;
        if (at + size > top)
            top = at + size;
    }
    flow_free(&F);
    free(all);
    free(use);
    free(order);
    return top;
}

static uint32_t blob_tensor(mpk_low *L, int id);

static uint32_t make_blob_tensor(mpk_low *L, int id)
{
    mpk_ltensor *t = &L->lt[id];
    const mpk_ltensor *r = &L->lt[t->root];
    uint32_t base = MPKB_NONE;
    if (t->space == MPKB_SPACE_WEIGHT)
        base = t->root == id ? L->ntensors : blob_tensor(L, t->root);
    L->tensors = mpk_grow(L->tensors, &L->captensors, (size_t)L->ntensors + 1, sizeof *L->tensors);
    uint32_t bi = L->ntensors++;
    mpkb_tensor *b = &L->tensors[bi];
    memset(b, 0, sizeof *b);
    b->name = mpk_str_intern(L, t->name ? t->name : "");
    b->dtype = (uint8_t)t->dtype;
    b->space = (uint8_t)t->space;
    b->ndim = (uint8_t)t->ndim;
    b->split = (uint8_t)(t->space == MPKB_SPACE_WEIGHT && t->split >= 0 ? t->split + 1 : 0);
    for (int i = 0; i < t->ndim; i++)
        b->dims[i] = (uint32_t)t->dims[i];
    b->base = base;
    uint64_t esize = (uint64_t)mpk_dtype_size(t->dtype);
    b->offset = (t->space == MPKB_SPACE_WEIGHT ? 0 : r->offset) + (uint64_t)t->elem_off * esize;
    b->nbytes = lt_bytes(t);
    t->blob = (int)bi;
    return bi;
}

static uint32_t blob_tensor(mpk_low *L, int id)
{
    return L->lt[id].blob >= 0 ? (uint32_t)L->lt[id].blob : make_blob_tensor(L, id);
}

bool mpk_plan_memory(mpk_low *L)
{
    /* liveness, on roots, in task order */
    for (uint32_t ti = 0; ti < L->ntasks; ti++)
        for (int k = 0; k < MPKB_NT; k++) {
            uint32_t v = L->tasks[ti].t[k];
            if (v == MPKB_NONE)
                continue;
            mpk_ltensor *t = &L->lt[v], *r = &L->lt[t->root];
            t->used = r->used = true;
            if (r->first < 0)
                r->first = (int)ti;
            r->last = (int)ti;
        }
    for (int i = 0; i < L->nlt; i++) {
        mpk_ltensor *t = &L->lt[i];
        if (t->used && t->ndim > MPKB_MAX_DIMS) {
            mpk_error(L->diag, (mpk_loc){0, 0, 0}, "tensor '%s' has more than %d dimensions",
                      t->name, MPKB_MAX_DIMS);
            return false;
        }
        for (int d = 0; d < t->ndim; d++)
            if (t->used && t->dims[d] > MPKB_MAX_DIM) {
                mpk_error(L->diag, (mpk_loc){0, 0, 0}, "tensor '%s' has a dimension of %lld, over %u",
                          t->name, (long long)t->dims[d], MPKB_MAX_DIM);
                return false;
            }
    }
    uint64_t state = 0;
    for (int i = 0; i < L->nlt; i++) {
        mpk_ltensor *t = &L->lt[i];
        if (t->root != i || !t->used)
            continue;
        if (t->space == MPKB_SPACE_STATE) {
            t->offset = state;
            state = align_up(state + lt_bytes(t), ARENA_ALIGN);
        } else if (t->space == MPKB_SPACE_CONST) {
            uint64_t at = align_up(L->nconsts, 64), n = lt_bytes(t);
            L->consts = mpk_grow(L->consts, &L->capconsts, at + n, 1);
            memset(L->consts + L->nconsts, 0, at - L->nconsts);
            memcpy(L->consts + at, t->cdata, n);
            L->nconsts = at + n;
            t->offset = at;
        } else if (t->space == MPKB_SPACE_WEIGHT) {
            L->meta.weight_size += lt_bytes(t);
        }
    }
    L->meta.arena_size = plan_arena(L);
    /* activations move once in and once out per step; re-reads of small
     * vectors by many tiles hit the cache and are not counted */
    for (int i = 0; i < L->nlt; i++)
        if (L->lt[i].root == i && L->lt[i].used && L->lt[i].space == MPKB_SPACE_ARENA)
            L->act_bytes += 2 * lt_bytes(&L->lt[i]);
    L->meta.state_size = state;
    if (L->meta.arena_size > MPKB_MAX_ARENA || state > MPKB_MAX_STATE) {
        mpk_error(L->diag, (mpk_loc){0, 0, 0},
                  "the model needs %llu bytes of activations and %llu of state (KV caches); a blob holds "
                  "at most %llu (2^40) and %llu (2^42)", (unsigned long long)L->meta.arena_size,
                  (unsigned long long)state, (unsigned long long)MPKB_MAX_ARENA,
                  (unsigned long long)MPKB_MAX_STATE);
        return false;
    }
    /* the blob's tensors: roots first where views need them */
    for (uint32_t ti = 0; ti < L->ntasks; ti++)
        for (int k = 0; k < MPKB_NT; k++)
            if (L->tasks[ti].t[k] != MPKB_NONE)
                L->tasks[ti].t[k] = blob_tensor(L, (int)L->tasks[ti].t[k]);
    L->meta.token_input = blob_tensor(L, L->token_lt);
    L->meta.pos_input = L->pos_lt >= 0 ? blob_tensor(L, L->pos_lt) : MPKB_NONE;
    L->meta.next_output = blob_tensor(L, L->next_lt);
    L->meta.logits = blob_tensor(L, L->logits_lt);
    L->meta.vocab = (uint32_t)(L->lt[L->logits_lt].dims[1] * (L->lay && L->lay[L->logits_lt] == 1 ? L->tp : 1));
    return true;
}
