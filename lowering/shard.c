/*
 * shard.c - tensor parallelism (mpk build --tp N): which part of every
 * tensor each of N ranks holds, Megatron-style, decided on the typed graph
 * before fusion.
 *
 * A tensor is either replicated (every rank holds all of it) or split
 * along one dim into N equal, contiguous parts (rank r holds part r). The
 * rules follow the data, in graph order:
 *
 *   matmul(x, w)    x replicated: column parallel, w split along its rows
 *                   (dim 0), the result split along its last dim (q, k, v,
 *                   gate, up, the LM head); x split along its last dim:
 *                   row parallel, w split along its columns (dim 1), each
 *                   rank's result a partial sum that an allreduce adds up
 *                   (o_proj, down); the result is replicated
 *   reshape         keeps a split where the parts stay contiguous blocks:
 *                   [1, heads * d] split along dim 1 is [1, heads, d] split
 *                   along the heads
 *   attention       q, k, v split along the heads: the cache splits along
 *                   its kv heads, each rank attends with its own heads
 *   rmsnorm, rope   per vector: fine on parts of other dims
 *   add, mul, silu  elementwise: operands alike
 *   argmax          of logits split along the vocabulary: each rank's
 *                   partials, then every rank reduces all ranks' partials
 *   embed           the table is replicated (one row is read per token)
 *
 * Anything else (a norm over a split dim, mixing a split and a replicated
 * operand, a split that does not divide evenly) is an error naming the op
 * and the tensor: the model cannot be sharded that way. The result is, per
 * graph tensor, its layout (L->lay), the matmuls whose result is reduced
 * (L->reduce), the ltensor each node's weight operands use (L->in_lt: a
 * weight used both whole and split, as a tied embedding is, gets a second
 * ltensor), and the ltensors' dims cut to one rank's part.
 */
#include "lowering.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define UNDET (-2) /* weights and state until a use decides */
#define REPL (-1)

typedef struct {
    mpk_low *L;
    const mpk_graph *g;
    int tp;
    int *lay;         /* per graph tensor */
    int (*wlt)[3];    /* per graph tensor (weights): ltensor for R, S(0), S(1), or -1 */
    bool ok;
} sharder;

static mpk_node *node_at(const mpk_graph *g, int i) { return g->nodes.items[i]; }

static const char *what(sharder *S, const mpk_tensor *t)
{
    if (t->kind == MPK_T_WEIGHT || t->kind == MPK_T_STATE || t->kind == MPK_T_INPUT)
        return mpk_arena_printf(S->L->arena, "'%s'", t->name);
    if (t->producer)
        return mpk_arena_printf(S->L->arena, "the result of %s", mpk_op_get(t->producer->op)->name);
    return "a tensor";
}

/* "bf16[1, 96]": the whole (unsharded) type, as messages write it. */
static const char *type_of(sharder *S, const mpk_tensor *t)
{
    mpk_value v = {.kind = MPK_V_TENSOR, .t = (mpk_tensor *)t};
    return mpk_value_str(S->L->arena, &v);
}

static const char *lay_name(sharder *S, int l)
{
    return l == REPL ? "replicated" : l == UNDET ? "undecided"
                                                : mpk_arena_printf(S->L->arena, "split along dim %d", l);
}

static void fail(sharder *S, const mpk_node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(sharder *S, const mpk_node *n, const char *fmt, ...)
{
    if (!S->ok)
        return; /* the first problem is the one to fix */
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mpk_error(S->L->diag, n->loc, "--tp %d: cannot shard %s: %s", S->tp, mpk_op_get(n->op)->name, msg);
    S->ok = false;
}

/* Split t along d: its part must be a whole 1/tp of the dim. */
static bool divides(sharder *S, const mpk_node *n, const mpk_tensor *t, int d)
{
    if (d >= 0 && (d >= t->ndim || t->dims[d] % S->tp != 0)) {
        fail(S, n, "%s would be split along dim %d (size %lld) into %d equal parts, which it "
                   "does not divide into", what(S, t), d, d < t->ndim ? (long long)t->dims[d] : 0LL, S->tp);
        return false;
    }
    return true;
}

/* Where a split along dim d of `from` lands after a reshape to `to`: the
 * dim of `to` whose parts are the same contiguous blocks, or UNDET. */
static int reshape_dim(const int64_t *from, int nfrom, const int64_t *to, int nto, int d, int tp)
{
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; i++)
        outer *= from[i];
    for (int i = d + 1; i < nfrom; i++)
        inner *= from[i];
    int64_t size = from[d] * inner, o = 1;
    for (int e = 0; e < nto; e++) {
        int64_t in = 1;
        for (int i = e + 1; i < nto; i++)
            in *= to[i];
        if (o == outer && to[e] * in == size && to[e] % tp == 0)
            return e;
        o *= to[e];
    }
    return UNDET;
}

/* A weight operand with layout l: its ltensor (a second one when the same
 * checkpoint tensor is also used with another layout). */
static int weight_lt(sharder *S, const mpk_node *n, const mpk_tensor *w, int l)
{
    mpk_low *L = S->L;
    if (l >= 2) {
        fail(S, n, "%s would be split along dim %d", what(S, w), l);
        return w->id;
    }
    if (l >= 0 && !divides(S, n, w, l))
        return w->id;
    int *slot = &S->wlt[w->id][l + 1];
    if (*slot >= 0)
        return *slot;
    bool first = true;
    for (int i = 0; i < 3; i++)
        first &= S->wlt[w->id][i] < 0;
    int id = w->id;
    if (!first) {
        int64_t dims[MPKB_MAX_DIMS] = {0};
        memcpy(dims, w->dims, sizeof(int64_t) * (size_t)w->ndim);
        id = mpk_lt_new(L, w->dtype, w->ndim, dims, MPKB_SPACE_WEIGHT, w->name);
    }
    L->lt[id].split = l;
    *slot = id;
    if (first)
        S->lay[w->id] = l;
    return id;
}

/* Operand t of n must have layout want; weights and state (and views of
 * them) take it on their first use. */
static void require(sharder *S, const mpk_node *n, const mpk_tensor *t, int want)
{
    if (S->lay[t->id] == want)
        return;
    if (S->lay[t->id] != UNDET) {
        fail(S, n, "it needs %s %s, which is %s", what(S, t), lay_name(S, want), lay_name(S, S->lay[t->id]));
        return;
    }
    if (!divides(S, n, t, want))
        return;
    if (t->kind == MPK_T_VIEW && t->producer) {
        const mpk_node *v = t->producer;
        const mpk_tensor *x = v->in[0];
        int up = want;
        if (want >= 0 && v->op == MPK_OP_INDEX)
            up = want + 1;
        else if (want >= 0 && v->op == MPK_OP_RESHAPE)
            up = reshape_dim(t->dims, t->ndim, x->dims, x->ndim, want, S->tp);
        else if (want >= 0 && (v->op == MPK_OP_SLICE || v->op == MPK_OP_SPLIT)) {
            int d = (int)MPK_ATTR(v, "dim")->i;
            up = d < 0 ? d + x->ndim : d;
            up = up == want ? UNDET : want;
        }
        if (up == UNDET) {
            fail(S, n, "%s would be split along dim %d, which %s of %s cannot give", what(S, t), want,
                 mpk_op_get(v->op)->name, what(S, x));
            return;
        }
        require(S, v, x, up);
    } else if (t->kind == MPK_T_WEIGHT && want < 2) { /* first use, through a view */
        S->L->lt[t->id].split = want;
        S->wlt[t->id][want + 1] = t->id;
    } else if (t->kind != MPK_T_STATE) {
        fail(S, n, "it needs %s %s", what(S, t), lay_name(S, want));
        return;
    }
    S->lay[t->id] = want;
}

/* A plain operand: weights get their own ltensor, others the layout. */
static void operand(sharder *S, const mpk_node *n, int pos, int i, int want)
{
    const mpk_tensor *t = n->in[i];
    if (t->kind == MPK_T_WEIGHT)
        S->L->in_lt[pos * MPK_MAX_IN + i] = weight_lt(S, n, t, want);
    else
        require(S, n, t, want);
}

static int lay_of(sharder *S, const mpk_tensor *t) { return S->lay[t->id]; }

static void node(sharder *S, const mpk_node *n, int pos)
{
    mpk_low *L = S->L;
    const mpk_tensor *x = n->in[0], *y = n->nout ? n->out[0] : NULL;
    int lx = n->nin ? lay_of(S, x) : REPL, out = REPL;
    /* an undecided first operand (state, or a weight read as data) is whole,
     * except where the op decides itself */
    if (lx == UNDET && n->op != MPK_OP_EMBED && n->op != MPK_OP_ADD && n->op != MPK_OP_MUL &&
        n->op != MPK_OP_ATTENTION) {
        require(S, n, x, REPL);
        lx = REPL;
    }
    switch (n->op) {
    case MPK_OP_EMBED:
        operand(S, n, pos, 0, REPL);
        operand(S, n, pos, 1, REPL);
        break;
    case MPK_OP_RMSNORM:
        if (lx == x->ndim - 1)
            fail(S, n, "the norm is over dim %d, along which %s is split", lx, what(S, x));
        operand(S, n, pos, 1, REPL);
        out = lx;
        break;
    case MPK_OP_MATMUL:
        if (lx == REPL) { /* column parallel */
            operand(S, n, pos, 1, 0);
            out = y->ndim - 1;
        } else if (lx == x->ndim - 1) { /* row parallel, then an allreduce */
            operand(S, n, pos, 1, 1);
            L->reduce[pos] = true;
        } else
            fail(S, n, "%s is split along dim %d, not along the dim it contracts", what(S, x), lx);
        break;
    case MPK_OP_ADD:
    case MPK_OP_MUL: {
        /* activations decide; weights and state follow them */
        bool fixed[2];
        for (int i = 0; i < 2; i++)
            fixed[i] = n->in[i]->kind != MPK_T_WEIGHT && lay_of(S, n->in[i]) != UNDET;
        out = fixed[0] ? lay_of(S, n->in[0]) : fixed[1] ? lay_of(S, n->in[1]) : REPL;
        for (int i = 0; i < 2; i++)
            if (!fixed[i])
                operand(S, n, pos, i, out);
            else if (lay_of(S, n->in[i]) != out)
                fail(S, n, "%s is %s but %s is %s", what(S, n->in[0]), lay_name(S, lay_of(S, n->in[0])),
                     what(S, n->in[1]), lay_name(S, lay_of(S, n->in[1])));
        break;
    }
    case MPK_OP_SILU:
        out = lx;
        break;
    case MPK_OP_ROPE:
        if (lx != REPL && lx != 1)
            fail(S, n, "%s is split along dim %d; rope works on whole heads (dim 1)", what(S, x), lx);
        operand(S, n, pos, 1, REPL);
        out = lx;
        break;
    case MPK_OP_ATTENTION: {
        int lq = lx == UNDET ? REPL : lx;
        if (lq != REPL && lq != 1) {
            fail(S, n, "q is split along dim %d; attention splits along the heads (dim 1)", lq);
            break;
        }
        for (int i = 1; i < 3; i++)
            if (lay_of(S, n->in[i]) != lq)
                operand(S, n, pos, i, lq);
        require(S, n, n->in[3], lq); /* the cache [2, kv_heads, max_seq, d] */
        operand(S, n, pos, 4, REPL);
        out = lq;
        break;
    }
    case MPK_OP_ARGMAX:
        if (lx != REPL && lx != x->ndim - 1)
            fail(S, n, "%s is split along dim %d, not along the dim argmax reduces", what(S, x), lx);
        break;
    case MPK_OP_RESHAPE:
        out = lx;
        if (lx >= 0)
            out = reshape_dim(x->dims, x->ndim, y->dims, y->ndim, lx, S->tp);
        if (out == UNDET && lx != UNDET)
            fail(S, n, "%s %s is split along dim %d into %d parts, but no dim of %s splits into the same "
                       "%d blocks (e.g. heads not divisible by %d)",
                 what(S, x), type_of(S, x), lx, S->tp, type_of(S, y), S->tp, S->tp);
        break;
    case MPK_OP_INDEX:
        out = lx >= 0 ? lx - 1 : lx;
        if (lx == 0)
            fail(S, n, "it indexes dim 0 of %s, which is split along it", what(S, x));
        break;
    case MPK_OP_SLICE:
    case MPK_OP_SPLIT: {
        int d = (int)MPK_ATTR(n, "dim")->i;
        d = d < 0 ? d + x->ndim : d;
        if (lx == d)
            fail(S, n, "it cuts dim %d of %s, which is split along it", d, what(S, x));
        for (int o = 0; o < n->nout; o++)
            S->lay[n->out[o]->id] = lx;
        return;
    }
    case MPK_OP_ALLREDUCE:
        fail(S, n, "the model already has allreduce ops; --tp shards a model written for one GPU");
        break;
    case MPK_OP_COUNT: MPK_ASSERT(0);
    }
    _Static_assert(MPK_OP_COUNT == 14, "ops.def changed: shard the new op here");
    for (int o = 0; o < n->nout; o++)
        S->lay[n->out[o]->id] = out;
}

bool mpk_shard(mpk_low *L)
{
    if (L->tp == 1)
        return true;
    const mpk_graph *g = L->g;
    int nt = g->tensors.n, nn = g->nodes.n;
    sharder S = {.L = L, .g = g, .tp = L->tp, .ok = true};
    S.lay = mpk_arena_alloc(L->arena, sizeof *S.lay * (size_t)(nt + 1));
    S.wlt = mpk_arena_alloc(L->arena, sizeof *S.wlt * (size_t)(nt + 1));
    L->reduce = mpk_arena_alloc(L->arena, sizeof *L->reduce * (size_t)(nn + 1));
    L->in_lt = mpk_arena_alloc(L->arena, sizeof *L->in_lt * (size_t)(nn + 1) * MPK_MAX_IN);
    memset(L->reduce, 0, sizeof *L->reduce * (size_t)(nn + 1));
    for (int i = 0; i < nt; i++) {
        const mpk_tensor *t = g->tensors.items[i];
        bool undecided = t->kind == MPK_T_WEIGHT || t->kind == MPK_T_STATE ||
                         (t->kind == MPK_T_VIEW && t->producer && S.lay[t->producer->in[0]->id] == UNDET);
        S.lay[i] = undecided ? UNDET : REPL; /* views come after what they view */
        S.wlt[i][0] = S.wlt[i][1] = S.wlt[i][2] = -1;
    }
    for (int p = 0; p < nn; p++)
        for (int i = 0; i < MPK_MAX_IN; i++)
            L->in_lt[p * MPK_MAX_IN + i] = i < node_at(g, p)->nin ? node_at(g, p)->in[i]->id : -1;
    for (int p = 0; p < nn && S.ok; p++) {
        const mpk_node *n = node_at(g, p);
        /* a view of an undecided tensor stays undecided until a use */
        if ((n->op == MPK_OP_INDEX || n->op == MPK_OP_RESHAPE || n->op == MPK_OP_SLICE ||
             n->op == MPK_OP_SPLIT) && S.lay[n->in[0]->id] == UNDET) {
            for (int o = 0; o < n->nout; o++)
                S.lay[n->out[o]->id] = UNDET;
            continue;
        }
        node(&S, n, p);
    }
    for (int i = 0; i < g->outputs.n && S.ok; i++) {
        const mpk_output *o = g->outputs.items[i];
        if (S.lay[o->t->id] >= 0) {
            mpk_error(L->diag, o->loc, "--tp %d: output '%s' would be split over the ranks; outputs "
                                       "must be whole on every rank", L->tp, o->name);
            S.ok = false;
        }
    }
    if (!S.ok)
        return false;
    /* each rank's part: cut the split dim. A weight's ltensor (a graph
     * weight or its split copy) knows its split; anything else its layout. */
    for (int i = 0; i < L->nlt; i++) {
        int l = L->lt[i].space == MPKB_SPACE_WEIGHT ? L->lt[i].split : i < nt ? S.lay[i] : REPL;
        if (l >= 0 && l < L->lt[i].ndim)
            L->lt[i].dims[l] /= L->tp;
    }
    L->lay = S.lay;
    return true;
}
