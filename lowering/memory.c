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
} block;

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
    block *live = mpk_malloc(sizeof *live * (size_t)(n + 1));
    int nlive = 0;
    uint64_t top = 0;
    for (int k = 0; k < n; k++) {
        mpk_ltensor *t = &L->lt[order[k]];
        /* drop blocks whose last reader ran before this tensor's first writer */
        int j = 0;
        for (int i = 0; i < nlive; i++)
            if (live[i].last >= t->first)
                live[j++] = live[i];
        nlive = j;
        /* live is sorted by offset: take the first gap that fits */
        uint64_t size = align_up(lt_bytes(t), ARENA_ALIGN), at = 0;
        int ins = 0;
        for (; ins < nlive; ins++) {
            if (live[ins].off >= at + size)
                break;
            at = live[ins].end > at ? live[ins].end : at;
        }
        memmove(&live[ins + 1], &live[ins], sizeof *live * (size_t)(nlive - ins));
        live[ins] = (block){at, at + size, t->last};
        nlive++;
        t->offset = at;
        if (at + size > top)
            top = at + size;
    }
    free(live);
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
