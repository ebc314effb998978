/*
 * fuse.c - graph ops into kernel ops.
 *
 * Decode at batch 1 is bound by the bytes read, so fusion aims at reading
 * every weight once and keeping small activations out of memory round trips:
 *
 *   rmsnorm -> matmul          the norm becomes the prologue of every matmul
 *                              that reads it (each tile reads all of x anyway,
 *                              with n > 1 rows too: every row's statistics
 *                              come from the pass over x the tile makes)
 *   mul(silu(a), b) -> matmul  silu*mul becomes the down projection's prologue
 *                              (with n > 1 rows too: each tile redoes it
 *                              over all n rows, but reads a and b in place
 *                              of the f32 product, the same bytes, and two
 *                              stages a layer are saved)
 *   matmul -> add(., r)        the residual add becomes the epilogue
 *   matmul -> argmax           argmax partials in the epilogue (on the fp32
 *                              accumulator), then one reduce task
 *   rmsnorm -> rope -> attention
 *                              per-head norm, rope and the KV append run in
 *                              the attention tasks
 *
 * A pattern applies only when the intermediate has no other reader. Ops no
 * pattern takes stay kernel ops of their own, so every valid model lowers.
 * Views (reshape, index, contiguous slices and splits, and allreduce on one
 * GPU) become aliases: a root tensor and an element offset; a view that is
 * not contiguous becomes a copy.
 *
 * With --tp, shard.c first cuts every tensor to one rank's part; a row
 * parallel matmul then writes an f32 partial sum, and an allreduce kernel
 * op adds up every rank's, taking the residual add as its epilogue.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mpk_low *L;
    const mpk_graph *g;
    int *user_start, *users; /* CSR: nodes reading each tensor */
    bool *absorbed;          /* per node */
    int *node_index;         /* node id -> position */
} fuser;

static mpk_node *node_at(const mpk_graph *g, int i) { return g->nodes.items[i]; }

static void build_users(fuser *F)
{
    const mpk_graph *g = F->g;
    int nt = g->tensors.n, nn = g->nodes.n;
    F->user_start = mpk_calloc((size_t)nt + 1, sizeof *F->user_start);
    int total = 0;
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < node_at(g, i)->nin; k++)
            F->user_start[node_at(g, i)->in[k]->id + 1]++, total++;
    for (int t = 0; t < nt; t++)
        F->user_start[t + 1] += F->user_start[t];
    F->users = mpk_malloc(sizeof *F->users * (size_t)(total + 1));
    int *fill = mpk_calloc((size_t)nt + 1, sizeof *fill);
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < node_at(g, i)->nin; k++) {
            int t = node_at(g, i)->in[k]->id;
            F->users[F->user_start[t] + fill[t]++] = i;
        }
    free(fill);
    F->absorbed = mpk_calloc((size_t)nn + 1, 1);
    int maxid = 0;
    for (int i = 0; i < nn; i++)
        if (node_at(g, i)->id > maxid)
            maxid = node_at(g, i)->id;
    F->node_index = mpk_calloc((size_t)maxid + 1, sizeof *F->node_index);
    for (int i = 0; i < nn; i++)
        F->node_index[node_at(g, i)->id] = i;
}

static int nusers(fuser *F, const mpk_tensor *t)
{
    return F->user_start[t->id + 1] - F->user_start[t->id];
}

/* The op producing t, if t is an activation that is read only once (by
 * the op being fused) and is not a graph output. */
static mpk_node *sole_producer(fuser *F, const mpk_tensor *t, mpk_op op)
{
    if (t->kind != MPK_T_ACT || !t->producer || t->producer->op != op)
        return NULL;
    if (t->uses != 1 || nusers(F, t) != 1)
        return NULL;
    return t->producer;
}

static int pos_of(fuser *F, const mpk_node *n) { return F->node_index[n->id]; }

/* Operand i of n as an ltensor: with --tp a weight may be a split copy. */
static int opnd(fuser *F, const mpk_node *n, int i)
{
    return F->L->in_lt ? F->L->in_lt[pos_of(F, n) * MPK_MAX_IN + i] : n->in[i]->id;
}

/* With --tp, whether t is split along its last dim (logits over the vocabulary). */
static bool split_last(fuser *F, const mpk_tensor *t)
{
    return F->L->lay && F->L->lay[t->id] == t->ndim - 1;
}

/* "model.layers.12.mlp.down_proj.weight" -> layer 12. */
static int layer_of(const char *name)
{
    const char *p = name ? strstr(name, "layers.") : NULL;
    if (!p)
        return -1;
    p += 7;
    if (*p < '0' || *p > '9')
        return -1;
    long v = strtol(p, NULL, 10);
    return v > 1000000 ? -1 : (int)v;
}

static const char *strip_weight(mpk_low *L, const char *name)
{
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, ".weight") == 0)
        return mpk_arena_strndup(L->arena, name, n - 7);
    return name;
}

static void set_label(mpk_low *L, mpk_kop *k, const char *what)
{
    const mpk_node *n = k->node;
    for (int i = 0; i < n->nin; i++)
        if (n->in[i]->kind == MPK_T_WEIGHT && n->in[i]->ndim == 2) {
            k->label = strip_weight(L, n->in[i]->name);
            k->layer = layer_of(n->in[i]->name);
            return;
        }
    k->label = mpk_arena_printf(L->arena, "%s %%%d", what, n->out[0]->id);
}

/* The inverse frequencies of rope (mpk_rope_inv_freq), as a CONST tensor. */
static int rope_table(mpk_low *L, const mpk_node *n, int64_t head_dim)
{
    int64_t half = head_dim / 2;
    float *f = mpk_arena_alloc(L->arena, sizeof *f * (size_t)half);
    double theta = MPK_ATTR(n, "theta")->f;
    bool llama3 = strcmp(MPK_ATTR(n, "scaling")->s, "llama3") == 0;
    for (int64_t i = 0; i < half; i++)
        f[i] = mpk_rope_inv_freq(n->attrs, i, head_dim); /* sema checked each is finite */
    int id = mpk_lt_new(L, MPK_DT_F32, 1, &half, MPKB_SPACE_CONST,
                        mpk_arena_printf(L->arena, "rope_inv_freq(theta=%g%s)", theta,
                                         llama3 ? ", llama3" : ""));
    L->lt[id].cdata = f;
    return id;
}

static mpk_kop *new_kop(fuser *F, mpk_kop_kind kind, const mpk_node *n, const char *what)
{
    mpk_kop *k = mpk_kop_new(F->L, kind, n);
    k->pos = pos_of(F, n);
    k->hint_tile = n->hint_tile ? n->hint_tile : F->g->tile;
    k->hint_kv_chunk = n->hint_kv_chunk ? n->hint_kv_chunk : F->g->kv_chunk;
    set_label(F->L, k, what);
    return k;
}

/* The residual add that is the only reader of out becomes k's epilogue:
 * the other addend goes to operand slot r, the add's result to slot o. */
static bool absorb_residual(fuser *F, const mpk_tensor *out, mpk_kop *k, int r, int o)
{
    if (out->uses != 1 || nusers(F, out) != 1)
        return false;
    mpk_node *a = node_at(F->g, F->users[F->user_start[out->id]]);
    if (a->op != MPK_OP_ADD || a->in[0] == a->in[1])
        return false;
    k->flags |= MPKB_F_EPI_RESIDUAL;
    k->t[r] = (a->in[0] == out ? a->in[1] : a->in[0])->id;
    k->t[o] = a->out[0]->id;
    k->pos = pos_of(F, a);
    F->absorbed[pos_of(F, a)] = true;
    return true;
}

static void fuse_matmul(fuser *F, const mpk_node *n)
{
    mpk_kop *k = new_kop(F, K_MATVEC, n, "matmul");
    const mpk_tensor *x = n->in[0], *out = n->out[0];
    k->t[MPKB_SLOT(matvec, x)] = x->id;
    k->t[MPKB_SLOT(matvec, w)] = opnd(F, n, 1);
    k->t[MPKB_SLOT(matvec, out)] = out->id;
    bool reduce = F->L->reduce && F->L->reduce[pos_of(F, n)];

    /* Prologue: a norm every reader of which is a matmul taking it as x. */
    mpk_node *p = x->kind == MPK_T_ACT ? x->producer : NULL;
    bool all_matmul = p && p->op == MPK_OP_RMSNORM && x->uses == nusers(F, x);
    for (int u = F->user_start[x->id]; all_matmul && u < F->user_start[x->id + 1]; u++) {
        const mpk_node *un = node_at(F->g, F->users[u]);
        all_matmul = un->op == MPK_OP_MATMUL && un->in[0] == x && un->in[1] != x;
    }
    mpk_node *mul;
    if (all_matmul) {
        /* In a chunk step too (n > 1 rows): every task of every matmul
         * reading the norm sums the squares of all n rows again, but it
         * reads those rows anyway (x, every row, all of K), on the GPU
         * in the same pass (matvec.cuh), and a stage a norm is gone. */
        k->flags |= MPKB_F_PRO_RMSNORM;
        k->t[MPKB_SLOT(matvec, x)] = p->in[0]->id;
        k->t[MPKB_SLOT(matvec, pro)] = p->in[1]->id;
        k->f[0] = (float)MPK_ATTR(p, "eps")->f;
        F->absorbed[pos_of(F, p)] = true;
    } else if ((mul = sole_producer(F, x, MPK_OP_MUL))) {
        for (int side = 0; side < 2; side++) {
            mpk_node *s = sole_producer(F, mul->in[side], MPK_OP_SILU);
            if (!s || mul->in[0] == mul->in[1])
                continue;
            /* In a chunk step too (n > 1 rows): each of the matvec's
             * tasks computes silu(a) * b over all n rows again, but it
             * reads a and b (16-bit) in place of the product (f32),
             * the same bytes, and two stages a layer (silu, then mul)
             * are gone. */
            k->flags |= MPKB_F_PRO_SILU_MUL;
            k->t[MPKB_SLOT(matvec, x)] = s->in[0]->id;
            k->t[MPKB_SLOT(matvec, pro)] = mul->in[1 - side]->id;
            F->absorbed[pos_of(F, mul)] = F->absorbed[pos_of(F, s)] = true;
            break;
        }
    }

    if (reduce) {
        /* row parallel: an f32 partial sum, which the other ranks read, then
         * an allreduce, taking the residual add that is the only reader */
        mpk_low *L = F->L;
        int64_t dims[MPKB_MAX_DIMS]; /* copied: mpk_lt_new may move L->lt */
        memcpy(dims, L->lt[out->id].dims, sizeof dims);
        int part = mpk_lt_new(L, MPK_DT_F32, L->lt[out->id].ndim, dims, MPKB_SPACE_ARENA,
                              mpk_arena_printf(L->arena, "partial sum of %s", k->label));
        L->lt[part].pinned = true;
        k->t[MPKB_SLOT(matvec, out)] = part;
        int ki = (int)(k - L->kops);
        mpk_kop *r = new_kop(F, K_ALLREDUCE, n, "allreduce");
        k = &L->kops[ki];
        r->label = k->label;
        r->layer = k->layer;
        r->t[MPKB_SLOT(allreduce, partial)] = part;
        r->t[MPKB_SLOT(allreduce, out)] = out->id;
        absorb_residual(F, out, r, MPKB_SLOT(allreduce, residual), MPKB_SLOT(allreduce, out));
        return;
    }
    /* Epilogue: the residual add that is the only reader, or argmax. */
    if (absorb_residual(F, out, k, MPKB_SLOT(matvec, residual), MPKB_SLOT(matvec, out)) || x->dims[0] != 1)
        return;
    for (int u = F->user_start[out->id]; u < F->user_start[out->id + 1]; u++) {
        const mpk_node *a = node_at(F->g, F->users[u]);
        if (a->op == MPK_OP_ARGMAX && !F->absorbed[pos_of(F, a)]) {
            k->flags |= MPKB_F_EPI_ARGMAX;
            k->argmax_out = a->out[0]->id; /* the partials come in tile */
            k->all_ranks = split_last(F, out);
            F->absorbed[pos_of(F, a)] = true;
            break;
        }
    }
}

/* Peel rope, then rmsnorm, off an attention operand. */
static int peel(fuser *F, const mpk_node *att, const mpk_tensor **x, int *gamma, float *eps)
{
    int table = -1;
    mpk_node *r = sole_producer(F, *x, MPK_OP_ROPE);
    if (r && r->in[1] == att->in[4]) {
        table = rope_table(F->L, r, r->in[0]->dims[2]);
        F->absorbed[pos_of(F, r)] = true;
        *x = r->in[0];
    }
    mpk_node *nrm = sole_producer(F, *x, MPK_OP_RMSNORM);
    if (nrm && nrm->in[1]->dims[0] == (*x)->dims[2]) {
        *gamma = nrm->in[1]->id;
        *eps = (float)MPK_ATTR(nrm, "eps")->f;
        F->absorbed[pos_of(F, nrm)] = true;
        *x = nrm->in[0];
    }
    return table;
}

static bool fuse_attention(fuser *F, const mpk_node *n)
{
    mpk_low *L = F->L;
    mpk_kop *k = new_kop(F, K_ATTENTION, n, "attention");
    const mpk_tensor *q = n->in[0], *kk = n->in[1];
#define A_(name) k->t[MPKB_SLOT(attention, name)]
    _Static_assert(offsetof(mpkb_task, attention.q_eps) == offsetof(mpkb_task, f[1]) &&
                       offsetof(mpkb_task, attention.k_eps) == offsetof(mpkb_task, f[2]),
                   "kop f[] follows the attention task's floats");
    int tq = peel(F, n, &q, &A_(q_norm), &k->f[1]);
    int tk = peel(F, n, &kk, &A_(k_norm), &k->f[2]);
    A_(q) = q->id;
    A_(k) = kk->id;
    A_(v) = n->in[2]->id;
    A_(cache) = n->in[3]->id;
    A_(pos) = n->in[4]->id;
    A_(out) = n->out[0]->id;
    A_(q_rope) = tq;
    A_(k_rope) = tk;
#undef A_
    k->f[0] = (float)MPK_ATTR(n, "scale")->f;
    /* The cache is kv[l]: its index is the layer. */
    const mpk_tensor *c = n->in[3];
    if (c->kind == MPK_T_VIEW && c->producer && c->producer->op == MPK_OP_INDEX)
        k->layer = (int)MPK_ATTR(c->producer, "i")->i;
    if (k->layer >= 0)
        k->label = mpk_arena_printf(L->arena, "model.layers.%d.self_attn", k->layer);
    return true;
}

/* Views: alias when the bytes are contiguous, else a copy task. */
static void view(fuser *F, const mpk_node *n)
{
    mpk_low *L = F->L;
    const mpk_tensor *x = n->in[0];
    const mpk_ltensor *lx0 = &L->lt[x->id]; /* one rank's part, with --tp */
    int64_t inner = 1, outer = 1;
    int d = 0;
    for (int o = 0; o < n->nout; o++) {
        const mpk_tensor *y = n->out[o];
        int64_t off = 0;
        bool contiguous = true;
        switch (n->op) {
        case MPK_OP_RESHAPE:
        case MPK_OP_ALLREDUCE: /* one GPU: the sum over one rank */
            break;
        case MPK_OP_INDEX:
            off = MPK_ATTR(n, "i")->i * (mpk_lt_numel(lx0) / lx0->dims[0]);
            break;
        case MPK_OP_SLICE:
        case MPK_OP_SPLIT: {
            d = (int)MPK_ATTR(n, "dim")->i;
            if (d < 0)
                d += x->ndim;
            inner = outer = 1;
            for (int i = 0; i < d; i++)
                outer *= lx0->dims[i];
            for (int i = d + 1; i < x->ndim; i++)
                inner *= lx0->dims[i];
            int64_t start = 0;
            if (n->op == MPK_OP_SLICE)
                start = MPK_ATTR(n, "start")->i;
            else
                for (int i = 0; i < o; i++)
                    start += MPK_ATTR(n, "sizes")->items[i].i;
            off = start * inner;
            contiguous = outer == 1;
            if (!contiguous) {
                mpk_kop *k = new_kop(F, K_COPY, n, n->op == MPK_OP_SLICE ? "slice" : "split");
                k->t[MPKB_SLOT(copy, src)] = x->id;
                k->t[MPKB_SLOT(copy, dst)] = y->id;
                k->copy_outer = (int)outer;
                k->copy_src_stride = (int)(lx0->dims[d] * inner);
                k->copy_len = (int)(L->lt[y->id].dims[d] * inner);
                k->copy_src_off = (int)off;
                L->lt[y->id].space = MPKB_SPACE_ARENA;
                continue;
            }
            break;
        }
        default:
            MPK_ASSERT(0);
        }
        mpk_ltensor *ly = &L->lt[y->id], *lx = &L->lt[x->id];
        ly->root = lx->root;
        ly->elem_off = lx->elem_off + off;
        ly->space = lx->space;
    }
}

static void simple(fuser *F, const mpk_node *n, mpk_kop_kind kind, const char *what)
{
    mpk_kop *k = new_kop(F, kind, n, what);
    switch (kind) {
    case K_EMBED:
        k->t[MPKB_SLOT(embed, table)] = opnd(F, n, 0), k->t[MPKB_SLOT(embed, ids)] = opnd(F, n, 1);
        k->t[MPKB_SLOT(embed, out)] = n->out[0]->id;
        break;
    case K_ADD:
    case K_MUL:
        _Static_assert(MPKB_SLOT(add, a) == MPKB_SLOT(mul, a) && MPKB_SLOT(add, b) == MPKB_SLOT(mul, b) &&
                           MPKB_SLOT(add, out) == MPKB_SLOT(mul, out), "add and mul share slots");
        k->t[MPKB_SLOT(add, a)] = opnd(F, n, 0), k->t[MPKB_SLOT(add, b)] = opnd(F, n, 1);
        k->t[MPKB_SLOT(add, out)] = n->out[0]->id;
        break;
    case K_RMSNORM:
        k->t[MPKB_SLOT(rmsnorm, x)] = n->in[0]->id, k->t[MPKB_SLOT(rmsnorm, gamma)] = n->in[1]->id;
        k->t[MPKB_SLOT(rmsnorm, out)] = n->out[0]->id;
        k->f[0] = (float)MPK_ATTR(n, "eps")->f;
        break;
    case K_ROPE:
        k->t[MPKB_SLOT(rope, x)] = n->in[0]->id, k->t[MPKB_SLOT(rope, pos)] = n->in[1]->id;
        k->t[MPKB_SLOT(rope, out)] = n->out[0]->id;
        k->t[MPKB_SLOT(rope, inv_freq)] = rope_table(F->L, n, n->in[0]->dims[2]);
        break;
    case K_SILU:
        k->t[MPKB_SLOT(silu, x)] = n->in[0]->id, k->t[MPKB_SLOT(silu, out)] = n->out[0]->id;
        break;
    case K_ARGMAX:
        k->t[MPKB_SLOT(argmax_part, x)] = n->in[0]->id, k->argmax_out = n->out[0]->id;
        k->all_ranks = split_last(F, n->in[0]);
        break;
    default:
        MPK_ASSERT(0);
    }
}

static int64_t numel_of(const mpk_tensor *t) { return mpk_tensor_numel(t); }

/* Inputs, outputs and the logits: what the runtime reads and writes. */
static bool find_io(fuser *F)
{
    mpk_low *L = F->L;
    const mpk_graph *g = F->g;
    for (int i = 0; i < L->nkops; i++) {
        mpk_kop *k = &L->kops[i];
        if (k->kind == K_EMBED)
            L->token_lt = L->token_lt < 0 ? k->t[MPKB_SLOT(embed, ids)] : L->token_lt;
        if ((k->kind == K_ATTENTION || k->kind == K_ROPE) && L->pos_lt < 0)
            L->pos_lt = k->t[k->kind == K_ATTENTION ? MPKB_SLOT(attention, pos) : MPKB_SLOT(rope, pos)];
    }
    for (int i = 0; i < g->outputs.n && L->next_lt < 0; i++) {
        const mpk_output *o = g->outputs.items[i];
        if (o->t->producer && o->t->producer->op == MPK_OP_ARGMAX) {
            L->next_lt = o->t->id;
            L->logits_lt = o->t->producer->in[0]->id;
        }
    }
    bool ok = true;
    int64_t rows = L->opt.rows > 0 ? L->opt.rows : 1;
    if (L->next_lt < 0) {
        mpk_error(L->diag, (mpk_loc){0, 0, 0},
                  "graph '%s' has no output computed by argmax: mpk-run decodes greedily and "
                  "needs the next token as an output", g->name);
        ok = false;
    }
    for (int i = 0; i < g->tensors.n; i++) {
        const mpk_tensor *t = g->tensors.items[i];
        if (t->kind != MPK_T_INPUT)
            continue;
        if (t->id != L->token_lt && t->id != L->pos_lt) {
            mpk_error(L->diag, t->loc, "input '%s' is neither the token (the ids of embed) nor "
                                       "the position (the pos of rope or attention), which are "
                                       "the inputs mpk-run provides", t->name);
            ok = false;
        } else if (t->dtype != MPK_DT_I32 || t->ndim != 1 || t->dims[0] != rows) {
            if (rows == 1)
                mpk_error(L->diag, t->loc, "input '%s' must be i32[1] in the decode graph, one token per "
                                           "step (with n = 1: a prompt chunk of C tokens is built by "
                                           "mpk build --chunk C)", t->name);
            else
                mpk_error(L->diag, t->loc, "input '%s' must be i32[%lld] in the chunk graph (n = %lld)",
                          t->name, (long long)rows, (long long)rows);
            ok = false;
        }
    }
    if (L->token_lt < 0 && ok) {
        mpk_error(L->diag, (mpk_loc){0, 0, 0}, "graph '%s' has no embed of an input token", g->name);
        ok = false;
    }
    if (ok && (numel_of(g->tensors.items[L->logits_lt]) !=
               ((const mpk_tensor *)g->tensors.items[L->logits_lt])->dims[1])) {
        mpk_error(L->diag, ((const mpk_tensor *)g->tensors.items[L->next_lt])->loc,
                  "the argmax of the next token must be over one row of logits [1, vocab]");
        ok = false;
    }
    return ok;
}

/* The residual stream (embed, residual epilogues, adds) and the logits are
 * stored in fp32: a few KB a layer, and it halves the error against an
 * fp32 reference, since every layer adds a small update to a large vector
 * whose bf16 rounding would otherwise accumulate. Views follow their root. */
static void promote(fuser *F)
{
    mpk_low *L = F->L;
    bool *p = mpk_calloc((size_t)L->nlt + 1, 1);
    for (int i = 0; i < L->nkops; i++) {
        const mpk_kop *k = &L->kops[i];
        _Static_assert(MPKB_SLOT(embed, out) == 2 && MPKB_SLOT(add, out) == 2 && MPKB_SLOT(matvec, out) == 2 &&
                           MPKB_SLOT(allreduce, out) == 2, "the residual stream's writers write slot 2");
        if (k->kind == K_EMBED || k->kind == K_ADD ||
            ((k->kind == K_MATVEC || k->kind == K_ALLREDUCE) && (k->flags & MPKB_F_EPI_RESIDUAL)))
            p[L->lt[k->t[MPKB_SLOT(matvec, out)]].root] = true;
    }
    p[L->lt[L->logits_lt].root] = true;
    for (int i = 0; i < L->nlt; i++)
        if (p[L->lt[i].root] && L->lt[i].dtype != MPK_DT_I32)
            L->lt[i].dtype = MPK_DT_F32;
    /* a copy makes a dense tensor of its source's dtype */
    for (int i = 0; i < L->nkops; i++)
        if (L->kops[i].kind == K_COPY)
            L->lt[L->kops[i].t[MPKB_SLOT(copy, dst)]].dtype = L->lt[L->kops[i].t[MPKB_SLOT(copy, src)]].dtype;
    free(p);
}

bool mpk_fuse(mpk_low *L)
{
    const mpk_graph *g = L->g;
    fuser F = {.L = L, .g = g};
    build_users(&F);
    /* Phase 1: matmuls and attention take what they can fuse, wherever it
     * sits in the graph (a norm comes before its matmuls). */
    bool ok = true;
    for (int i = 0; i < g->nodes.n && ok; i++) {
        const mpk_node *n = node_at(g, i);
        if (n->op == MPK_OP_MATMUL)
            fuse_matmul(&F, n);
        else if (n->op == MPK_OP_ATTENTION)
            ok = fuse_attention(&F, n);
    }
    /* Phase 2: every other op not absorbed is a kernel op of its own. */
    for (int i = 0; i < g->nodes.n && ok; i++) {
        const mpk_node *n = node_at(g, i);
        if (F.absorbed[i])
            continue;
        switch (n->op) {
        case MPK_OP_MATMUL:
        case MPK_OP_ATTENTION: break;
        case MPK_OP_EMBED:
            simple(&F, n, K_EMBED, "embed");
            break;
        case MPK_OP_RMSNORM: simple(&F, n, K_RMSNORM, "rmsnorm"); break;
        case MPK_OP_ROPE: simple(&F, n, K_ROPE, "rope"); break;
        case MPK_OP_ADD: simple(&F, n, K_ADD, "add"); break;
        case MPK_OP_MUL: simple(&F, n, K_MUL, "mul"); break;
        case MPK_OP_SILU: simple(&F, n, K_SILU, "silu"); break;
        case MPK_OP_ARGMAX:
            if (n->in[0]->dims[0] != 1) {
                mpk_error(L->diag, n->loc, "argmax over %lld rows cannot be lowered: the next token is the "
                                          "argmax of one row of logits (slice the last row, "
                                          "slice(x, 0, n - 1, n), before the LM head)",
                          (long long)n->in[0]->dims[0]);
                ok = false;
            } else
                simple(&F, n, K_ARGMAX, "argmax");
            break;
        case MPK_OP_RESHAPE:
        case MPK_OP_SLICE:
        case MPK_OP_SPLIT:
        case MPK_OP_INDEX:
        case MPK_OP_ALLREDUCE: view(&F, n); break;
        case MPK_OP_COUNT: MPK_ASSERT(0);
        }
    }
    _Static_assert(MPK_OP_COUNT == 14, "ops.def changed: lower the new op here");
    /* Kernel ops run in the order of their last absorbed graph op; sort
     * stably (insertion: kops are nearly in order already). */
    for (int i = 1; i < L->nkops; i++) {
        mpk_kop k = L->kops[i];
        int j = i;
        for (; j > 0 && L->kops[j - 1].pos > k.pos; j--)
            L->kops[j] = L->kops[j - 1];
        L->kops[j] = k;
    }
    if (ok)
        ok = find_io(&F);
    if (ok)
        promote(&F);
    if (ok) {
        for (int i = 0; i < g->outputs.n; i++)
            L->lt[L->lt[((const mpk_output *)g->outputs.items[i])->t->id].root].pinned = true;
        L->lt[L->lt[L->logits_lt].root].pinned = true;
    }
    free(F.user_start);
    free(F.users);
    free(F.absorbed);
    free(F.node_index);
    return ok;
}
