/*
 * tile.c - kernel ops into tasks.
 *
 * Tile sizes aim at every worker streaming the same number of bytes: a
 * matvec of N rows is cut into tiles of T rows, T a multiple of 8, chosen to
 * minimise (waves of tiles over the workers) x (bytes per tile + a fixed
 * per-task cost); matvecs of one input and prologue (q, k, v; gate, up)
 * share one T chosen for their rows together, so they fill waves as one. Attention runs one task per kv head and chunk of the KV
 * cache, kv_heads x chunks near the worker count, with a merge task per kv
 * head when there is more than one chunk. By default a chunk owns every
 * n-th block of 64, 32 or 16 positions, so that the positions in use
 * at any context length spread over all chunks (man 5 mpk-blob: the cache
 * keeps a chunk's blocks together); where blocks cannot divide the cache
 * evenly, chunks are contiguous. A `with tile =` or `with kv_chunk =`
 * (contiguous chunk length) hint, or the model's schedule, overrides the
 * choice. Tasks reference ltensors here; memory.c maps them
 * to blob tensors.
 *
 * With --tp, an allreduce is cut into the row tiles of the matvec that
 * writes its partial sums, so each of its tasks waits only for that tile
 * on every rank; an argmax over every rank's logits ends in a reduce task
 * (flag ALL_RANKS) that reads all ranks' partials.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Per-task overhead, in bytes of streaming at one SM's share of HBM
 * bandwidth (about 1.5 us on an H100: fetch, wait, signal). */
#define TASK_COST_BYTES 32768

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int64_t pick_rows(int64_t n, int64_t k, int64_t workers, int esize, int64_t hint)
{
    if (hint > 0)
        return hint < n ? hint : n;
    if (n <= 8)
        return n;
    int64_t best = 8, best_cost = -1;
    int64_t limit = n < 16384 ? n : 16384;
    for (int64_t t = 8; t <= limit + 7; t += 8) {
        int64_t tt = t < n ? t : n;
        int64_t waves = cdiv(cdiv(n, tt), workers);
        int64_t cost = waves * (tt * k * esize + k * esize + TASK_COST_BYTES);
        if (best_cost < 0 || cost <= best_cost)
            best = tt, best_cost = cost;
        if (tt == n)
            break;
    }
    return best;
}

static void set_t(mpkb_task *t, int slot, int lt) { t->t[slot] = lt < 0 ? MPKB_NONE : (uint32_t)lt; }

/* Whether a range of n elements or rows fits a task's int32 bounds
 * (reported if not). */
static bool range_fits(mpk_low *L, const mpk_kop *k, int64_t n)
{
    if (n <= (int64_t)MPKB_MAX_DIM)
        return true;
    mpk_error(L->diag, k->node ? k->node->loc : (mpk_loc){0, 0, 0},
              "%s works on %lld elements, more than a task's range can hold (%u, 2^31 - 1)",
              k->label ? k->label : mpk_kop_name(k->kind), (long long)n, MPKB_MAX_DIM);
    return false;
}

/* Whether k's n more tasks fit the blob's limit (reported if not): checked
 * before they are made, so a vocabulary of 2^31 rows in tiles of 64 is an
 * error, not 33 million tasks and gigabytes. */
static bool room(mpk_low *L, const mpk_kop *k, int64_t n)
{
    if (n <= (int64_t)MPKB_MAX_TASKS - (int64_t)L->ntasks)
        return true;
    mpk_error(L->diag, k->node ? k->node->loc : (mpk_loc){0, 0, 0},
              "the model needs more than %u tasks, the limit of a blob: %s makes %lld after %u others "
              "(fewer layers, larger tiles or fewer workers need fewer)",
              MPKB_MAX_TASKS, k->label ? k->label : mpk_kop_name(k->kind), (long long)n, L->ntasks);
    return false;
}

/* The kernel op's operands, already in its tasks' slots. */
static void copy_operands(mpkb_task *t, const mpk_kop *k)
{
    for (int i = 0; i < MPKB_NT; i++)
        set_t(t, i, k->t[i]);
}

/* Matvecs of the same input and prologue (q, k and v; gate and up) wait
 * for the same event and run side by side: their tiles are chosen as one
 * pool, so that together they fill whole waves of the workers. */
static bool siblings(const mpk_low *L, const mpk_kop *a, const mpk_kop *b)
{
    enum { X = MPKB_SLOT(matvec, x), W = MPKB_SLOT(matvec, w), PRO = MPKB_SLOT(matvec, pro) };
    const mpk_ltensor *wa = &L->lt[a->t[W]], *wb = &L->lt[b->t[W]];
    return b->kind == K_MATVEC && a->t[X] == b->t[X] && a->flags == b->flags && a->t[PRO] == b->t[PRO] &&
           wa->dims[1] == wb->dims[1] && wa->dtype == wb->dtype && b->hint_tile <= 0;
}

static void argmax_reduce(mpk_low *L, const mpk_kop *k, int partials, int64_t cols)
{
    mpkb_task *t = mpk_task_new(L, MPKB_OP_ARGMAX_REDUCE, k);
    set_t(t, MPKB_SLOT(argmax_reduce, partials), partials);
    set_t(t, MPKB_SLOT(argmax_reduce, out), k->argmax_out);
    if (k->all_ranks) {
        t->flags |= MPKB_F_ALL_RANKS;
        t->argmax_reduce.cols_per_rank = (int32_t)cols;
    }
}

/* The rows of k and its siblings (itself included), which share a tile
 * size; same_x links the matvecs of one input, from head[x]. */
static int64_t sibling_rows(const mpk_low *L, const mpk_kop *k, const int *head, const int *same_x)
{
    int64_t pool = 0;
    if (k->hint_tile <= 0)
        for (int j = head[k->t[MPKB_SLOT(matvec, x)]]; j >= 0; j = same_x[j])
            if (siblings(L, k, &L->kops[j]))
                pool += L->lt[L->kops[j].t[MPKB_SLOT(matvec, w)]].dims[0];
    return pool;
}

/* A matvec of M > 1 rows of x (a chunk graph's) with --split-k: R weight
 * rows x part of K a task, into f32 partials [parts, M, N] that part_sum
 * tasks add (with the residual) into out. Each task reads its part of all
 * M rows of x, which at M = 64 outweighs its weight rows, so the cost of
 * a task counts x (once per pass of MV_RB = 64 weight rows on the GPU,
 * matvec.cuh) as well as w; splitting K cuts both, at the price of the
 * sums, a stage more: their bytes over the workers and two task costs.
 * --split-k N takes N parts (fewer where K has fewer slabs of 32), auto
 * the cheapest count. Returns the parts (1: no split) and, split, sets *rows;
 * pool: the rows of the matvec and its siblings, which share the tiling. */
static int64_t split_parts(mpk_low *L, const mpk_kop *k, int64_t pool, int64_t *rows)
{
    const mpk_ltensor *x = &L->lt[k->t[MPKB_SLOT(matvec, x)]], *w = &L->lt[k->t[MPKB_SLOT(matvec, w)]];
    const mpk_ltensor *o = &L->lt[k->t[MPKB_SLOT(matvec, out)]];
    int64_t want = L->opt.split_k, m = x->dims[0], kk = w->dims[1], n = w->dims[0];
    if ((want >= 0 && want <= 1) || m <= 1 || kk % 32 || k->hint_tile > 0 || L->tp > 1 ||
        (k->flags & (MPKB_F_PRO_RMSNORM | MPKB_F_PRO_SILU_MUL | MPKB_F_EPI_ARGMAX)))
        return 1;
    int64_t most = want < 0 ? MPK_SPLIT_MAX : want; /* auto: the best of 1 to MPK_SPLIT_MAX; N: N */
    if (most > kk / 32)
        most = kk / 32;
    int64_t least = want < 0 ? 1 : most;
    int64_t xe = mpk_dtype_size(x->dtype), we = mpk_dtype_size(w->dtype), oe = mpk_dtype_size(o->dtype);
    int64_t res = (k->flags & MPKB_F_EPI_RESIDUAL) ? oe : 0, all = pool > n ? pool : n;
    int64_t best_p = 1, best_r = 8, best_cost = -1;
    for (int64_t p = least; p <= most; p++) {
        int64_t ks = kk / p;
        int64_t sums = p > 1 ? cdiv(m * all * (4 * p + res + oe), L->workers) + 2 * TASK_COST_BYTES : 0;
        for (int64_t r = 8; r < all + 8; r += 8) {
            int64_t rr = r < all ? r : all;
            int64_t waves = cdiv(cdiv(all, rr) * p, L->workers);
            int64_t task = cdiv(m, 64) * rr * ks * we + cdiv(rr, 64) * m * ks * xe + TASK_COST_BYTES;
            int64_t cost = waves * task + sums;
            if (best_cost < 0 || cost < best_cost)
                best_p = p, best_r = rr, best_cost = cost;
            if (rr == all)
                break;
        }
    }
    if (best_p > 1) /* unsplit, the matvec keeps pick_rows' tiling */
        *rows = best_r < n ? best_r : n;
    return best_p;
}

/* The parts of a split matvec (split_parts), then its sums: pieces of out
 * sized so that the sums of it and its siblings fill about one wave. */
static void tile_split(mpk_low *L, mpk_kop *k, int64_t pool, int64_t rows, int64_t parts)
{
    const mpk_ltensor *x = &L->lt[k->t[MPKB_SLOT(matvec, x)]], *w = &L->lt[k->t[MPKB_SLOT(matvec, w)]];
    int64_t m = x->dims[0], n = w->dims[0], tiles = cdiv(n, rows), all = pool > n ? pool : n;
    int64_t piece = cdiv(m * all, L->workers), out_n = m * n;
    if (piece < 256)
        piece = 256;
    if (piece > out_n)
        piece = out_n;
    if (!range_fits(L, k, out_n) || !room(L, k, tiles * parts + cdiv(out_n, piece)))
        return;
    L->lt[k->t[MPKB_SLOT(matvec, out)]].tile_rows = rows;
    int64_t dims[3] = {parts, m, n};
    int partials = mpk_lt_new(L, MPK_DT_F32, 3, dims, MPKB_SPACE_ARENA,
                              mpk_arena_printf(L->arena, "k parts of %s", k->label));
    for (int64_t p = 0; p < parts; p++)
        for (int64_t i = 0; i < tiles; i++) {
            mpkb_task *t = mpk_task_new(L, MPKB_OP_MATVEC_PART, k);
            set_t(t, MPKB_SLOT(matvec_part, x), k->t[MPKB_SLOT(matvec, x)]);
            set_t(t, MPKB_SLOT(matvec_part, w), k->t[MPKB_SLOT(matvec, w)]);
            set_t(t, MPKB_SLOT(matvec_part, partials), partials);
            t->matvec_part.lo = (int32_t)(i * rows);
            t->matvec_part.hi = (int32_t)(i + 1 == tiles ? n : (i + 1) * rows);
            t->matvec_part.part = (int32_t)p;
            t->matvec_part.parts = (int32_t)parts;
        }
    for (int64_t b = 0; b < out_n; b += piece) {
        mpkb_task *t = mpk_task_new(L, MPKB_OP_PART_SUM, k);
        t->flags = k->flags & MPKB_F_EPI_RESIDUAL;
        set_t(t, MPKB_SLOT(part_sum, partials), partials);
        set_t(t, MPKB_SLOT(part_sum, residual), t->flags ? k->t[MPKB_SLOT(matvec, residual)] : -1);
        set_t(t, MPKB_SLOT(part_sum, out), k->t[MPKB_SLOT(matvec, out)]);
        t->part_sum.lo = (int32_t)b;
        t->part_sum.hi = (int32_t)(b + piece < out_n ? b + piece : out_n);
    }
}

static void tile_matvec(mpk_low *L, mpk_kop *k, int64_t pool)
{
    const mpk_ltensor *w = &L->lt[k->t[MPKB_SLOT(matvec, w)]];
    int64_t n = w->dims[0], kk = w->dims[1], rows = 0;
    int64_t parts = split_parts(L, k, pool, &rows);
    if (parts > 1) {
        tile_split(L, k, pool, rows, parts);
        return;
    }
    rows = pick_rows(pool > n ? pool : n, kk, L->workers, mpk_dtype_size(w->dtype), k->hint_tile);
    if (rows > n)
        rows = n;
    int64_t tiles = cdiv(n, rows);
    if (!room(L, k, tiles + 1))
        return;
    L->lt[k->t[MPKB_SLOT(matvec, out)]].tile_rows = rows;
    int partials = -1;
    if (k->flags & MPKB_F_EPI_ARGMAX) {
        int64_t dims[2] = {tiles, 2};
        partials = mpk_lt_new(L, MPK_DT_F32, 2, dims, MPKB_SPACE_ARENA,
                              mpk_arena_printf(L->arena, "argmax partials of %s", k->label));
        L->lt[partials].pinned = k->all_ranks; /* the other ranks read them */
    }
    for (int64_t i = 0; i < tiles; i++) {
        mpkb_task *t = mpk_task_new(L, MPKB_OP_MATVEC, k);
        t->flags = k->flags;
        copy_operands(t, k);
        set_t(t, MPKB_SLOT(matvec, partials), partials);
        t->matvec.lo = (int32_t)(i * rows);
        t->matvec.hi = (int32_t)(i + 1 == tiles ? n : (i + 1) * rows);
        t->matvec.tile = (int32_t)i;
        t->matvec.eps = k->f[0];
    }
    if (partials >= 0)
        argmax_reduce(L, k, partials, n);
}

static void tile_argmax(mpk_low *L, mpk_kop *k)
{
    const mpk_ltensor *x = &L->lt[k->t[MPKB_SLOT(argmax_part, x)]];
    int64_t n = x->dims[1], cols = n < 8192 ? n : 8192, tiles = cdiv(n, cols);
    if (!room(L, k, tiles + 1))
        return;
    int64_t dims[2] = {tiles, 2};
    int partials = mpk_lt_new(L, MPK_DT_F32, 2, dims, MPKB_SPACE_ARENA,
                              mpk_arena_printf(L->arena, "argmax partials of %s", k->label));
    L->lt[partials].pinned = k->all_ranks;
    for (int64_t i = 0; i < tiles; i++) {
        mpkb_task *t = mpk_task_new(L, MPKB_OP_ARGMAX_PART, k);
        copy_operands(t, k);
        set_t(t, MPKB_SLOT(argmax_part, partials), partials);
        t->argmax_part.lo = (int32_t)(i * cols);
        t->argmax_part.hi = (int32_t)(i + 1 == tiles ? n : (i + 1) * cols);
        t->argmax_part.tile = (int32_t)i;
    }
    argmax_reduce(L, k, partials, n);
}

/* The allreduce of a row-parallel matvec's partial sums, in its tiles. */
static void tile_allreduce(mpk_low *L, mpk_kop *k)
{
    const mpk_ltensor *p = &L->lt[k->t[MPKB_SLOT(allreduce, partial)]];
    int64_t n = mpk_lt_numel(p), rows = p->tile_rows > 0 ? p->tile_rows : n;
    if (!range_fits(L, k, n) || !room(L, k, cdiv(n, rows)))
        return;
    for (int64_t b = 0; b < n; b += rows) {
        mpkb_task *t = mpk_task_new(L, MPKB_OP_ALLREDUCE, k);
        t->flags = k->flags;
        copy_operands(t, k);
        t->allreduce.lo = (int32_t)b;
        t->allreduce.hi = (int32_t)(b + rows < n ? b + rows : n);
    }
}

static void tile_attention(mpk_low *L, mpk_kop *k)
{
    const mpk_ltensor *q = &L->lt[k->t[MPKB_SLOT(attention, q)]], *cache = &L->lt[k->t[MPKB_SLOT(attention, cache)]];
    int64_t heads = q->dims[1], d = q->dims[2], g = cache->dims[1], s = cache->dims[2];
    int64_t chunk = k->hint_kv_chunk, nch = 0;
    if (chunk <= 0) {
        /* one chunk per worker over the kv heads, each owning every nch-th
         * block of positions: any context, short or long, spreads over all
         * chunks. Blocks must divide the cache evenly; else contiguous. */
        int64_t want = L->workers / g > 1 ? L->workers / g : 1;
        /* the largest block with 8 or more per chunk, else the smallest
         * with 2 or more */
        for (int64_t b = 64; b >= 16 && !nch && want > 1; b /= 2)
            if (s % (b * want) == 0 && s / (b * want) >= 8)
                chunk = b, nch = want;
        for (int64_t b = 16; b <= 64 && !nch && want > 1; b *= 2)
            if (s % (b * want) == 0 && s / (b * want) >= 2)
                chunk = b, nch = want;
        if (!nch)
            chunk = cdiv(cdiv(s, want), 64) * 64;
    }
    if (chunk > s)
        chunk = s;
    if (!nch)
        nch = cdiv(s, chunk);
    if (!room(L, k, g * nch + (nch > 1 ? g : 0)))
        return;
    int partials = -1;
    if (nch > 1) {
        int64_t dims[3] = {q->dims[0] * heads, nch, d + 2}; /* [n * H, chunks, D + 2] */
        partials = mpk_lt_new(L, MPK_DT_F32, 3, dims, MPKB_SPACE_ARENA,
                              mpk_arena_printf(L->arena, "attention partials of %s", k->label));
    }
    for (int64_t h = 0; h < g; h++)
        for (int64_t c = 0; c < nch; c++) {
            mpkb_task *t = mpk_task_new(L, MPKB_OP_ATTENTION, k);
            copy_operands(t, k);
            if (nch == 1)
                t->flags |= MPKB_F_DIRECT;
            else
                set_t(t, MPKB_SLOT(attention, out), partials);
            t->attention.kv_head = (int32_t)h;
            t->attention.chunk = (int32_t)c;
            t->attention.block = (int32_t)chunk;
            t->attention.chunks = (int32_t)nch;
            t->attention.scale = k->f[0];
            t->attention.q_eps = k->f[1];
            t->attention.k_eps = k->f[2];
        }
    if (nch == 1)
        return;
    for (int64_t h = 0; h < g; h++) {
        mpkb_task *t = mpk_task_new(L, MPKB_OP_ATTN_MERGE, k);
        set_t(t, MPKB_SLOT(attn_merge, partials), partials);
        set_t(t, MPKB_SLOT(attn_merge, out), k->t[MPKB_SLOT(attention, out)]);
        t->attn_merge.kv_head = (int32_t)h;
        t->attn_merge.chunks = (int32_t)nch;
        t->attn_merge.group = (int32_t)(heads / g);
    }
}

/* Elementwise and per-vector ops: a few even pieces (they are small).
 * Each of these kinds has its range [lo, hi) at i0, i1, and rmsnorm its
 * eps at f0. */
#define RANGE_AT_I01_(K) (offsetof(mpkb_task, K.lo) == offsetof(mpkb_task, i[0]) && \
                          offsetof(mpkb_task, K.hi) == offsetof(mpkb_task, i[1]))
_Static_assert(RANGE_AT_I01_(rmsnorm) && RANGE_AT_I01_(rope) && RANGE_AT_I01_(add) && RANGE_AT_I01_(mul) &&
                   RANGE_AT_I01_(silu) && offsetof(mpkb_task, rmsnorm.eps) == offsetof(mpkb_task, f[0]),
               "tile_range's kinds keep their range at i0, i1");
static void tile_range(mpk_low *L, mpk_kop *k, uint16_t op, int64_t n, int64_t min_piece)
{
    int64_t piece = cdiv(n, L->workers);
    if (piece < min_piece)
        piece = min_piece;
    if (k->hint_tile > 0)
        piece = k->hint_tile;
    if (piece > n)
        piece = n;
    if (!range_fits(L, k, n) || !room(L, k, cdiv(n, piece)))
        return;
    for (int64_t b = 0; b < n; b += piece) {
        mpkb_task *t = mpk_task_new(L, op, k);
        copy_operands(t, k);
        t->i[0] = (int32_t)b;
        t->i[1] = (int32_t)(b + piece < n ? b + piece : n);
        t->f[0] = k->f[0];
    }
}

bool mpk_tile(mpk_low *L)
{
    mpkb_task *in = mpk_task_new(L, MPKB_OP_INPUTS, NULL);
    in->label = mpk_str_intern(L, "inputs");
    set_t(in, MPKB_SLOT(inputs, token), L->token_lt);
    set_t(in, MPKB_SLOT(inputs, pos), L->pos_lt);
    /* matvecs by input, for finding siblings in linear time */
    int *head = mpk_malloc(sizeof *head * ((size_t)L->nlt + 1)), *same_x = mpk_malloc(sizeof *same_x * ((size_t)L->nkops + 1));
    if (!head || !same_x)
        mpk_out_of_memory();
    for (int i = 0; i < L->nlt; i++)
        head[i] = -1;
    for (int i = L->nkops - 1; i >= 0; i--)
        if (L->kops[i].kind == K_MATVEC) {
            int x = L->kops[i].t[MPKB_SLOT(matvec, x)];
            same_x[i] = head[x];
            head[x] = i;
        }
    for (int i = 0; i < L->nkops && !mpk_diag_failed(L->diag); i++) {
        mpk_kop *k = &L->kops[i];
        switch (k->kind) {
        case K_EMBED: {
            if (!room(L, k, 1))
                break;
            mpkb_task *t = mpk_task_new(L, MPKB_OP_EMBED, k);
            copy_operands(t, k);
            t->embed.hi = (int32_t)L->lt[k->t[MPKB_SLOT(embed, table)]].dims[1];
            break;
        }
        case K_MATVEC: tile_matvec(L, k, sibling_rows(L, k, head, same_x)); break;
        case K_ATTENTION: tile_attention(L, k); break;
        case K_ARGMAX: tile_argmax(L, k); break;
        case K_ALLREDUCE: tile_allreduce(L, k); break;
        case K_RMSNORM: {
            const mpk_ltensor *x = &L->lt[k->t[MPKB_SLOT(rmsnorm, x)]];
            tile_range(L, k, MPKB_OP_RMSNORM, mpk_lt_numel(x) / x->dims[x->ndim - 1], 1);
            break;
        }
        case K_ROPE: { /* the n x H head vectors */
            const mpk_ltensor *x = &L->lt[k->t[MPKB_SLOT(rope, x)]];
            tile_range(L, k, MPKB_OP_ROPE, x->dims[0] * x->dims[1], 1);
            break;
        }
        case K_ADD: tile_range(L, k, MPKB_OP_ADD, mpk_lt_numel(&L->lt[k->t[MPKB_SLOT(add, a)]]), 2048); break;
        case K_MUL: tile_range(L, k, MPKB_OP_MUL, mpk_lt_numel(&L->lt[k->t[MPKB_SLOT(mul, a)]]), 2048); break;
        case K_SILU: tile_range(L, k, MPKB_OP_SILU, mpk_lt_numel(&L->lt[k->t[MPKB_SLOT(silu, x)]]), 2048); break;
        case K_COPY: {
            if (!room(L, k, 1))
                break;
            mpkb_task *t = mpk_task_new(L, MPKB_OP_COPY, k);
            copy_operands(t, k);
            t->copy.rows = k->copy_outer;
            t->copy.src_stride = k->copy_src_stride;
            t->copy.len = k->copy_len;
            t->copy.src_off = k->copy_src_off;
            break;
        }
        }
    }
    free(head);
    free(same_x);
    return !mpk_diag_failed(L->diag);
}
