/*
 * ancset.c - sets of tasks that share their parts: the ancestor sets of the
 * event builder (events.c) and of the verifier (verify.c).
 *
 * An event's ancestors are nearly all the tasks before it, so a bitset per
 * event costs events x tasks bits: 0.8 GB for Qwen3-8B at 1000 layers, and
 * 14 GB at 4096. But an event's set is mostly the union of its producers'
 * events' sets plus a few tasks near it, so sets here are persistent radix
 * trees over the task index, 64 children a node, with leaves of 4096 bits;
 * a union takes the other set's subtrees by reference wherever it lacks
 * one, and a subtree that is all ones is the one shared FULL node. A set
 * then costs the few nodes where it differs from those it was made from.
 *
 * Nodes are immutable once shared. Each node records the owner (a set
 * being built, named by the caller) that made it; an operation for owner o
 * changes only o's nodes in place and copies any other on its path. So a
 * set may be read while others are built from it, provided its owner
 * builds no more once it is read: the event builder makes each set whole
 * at once, and the verifier finishes an event's set before any task that
 * waits for it is reached.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

enum { FAN = 64, LEAF_BITS = 4096, EMPTY = 0, FULL = 1 };

typedef struct {
    uint64_t w[FAN];
} leaf;

typedef struct {
    uint32_t kid[FAN];
} inner;

struct mpk_anc {
    int depth;                  /* levels of inner nodes above the leaves */
    leaf *leaves;               /* 0 and 1: the empty and the full leaf */
    uint32_t *leaf_owner;
    size_t nleaves, capleaves, capleaf_owner;
    inner *inners;              /* 0 and 1: the empty and the full node */
    uint32_t *inner_owner;
    size_t ninners, capinners, capinner_owner;
};

mpk_anc *mpk_anc_new(uint64_t ntasks)
{
    mpk_anc *A = mpk_calloc(1, sizeof *A);
    if (!A)
        mpk_out_of_memory();
    for (uint64_t span = LEAF_BITS; span < ntasks; span *= FAN)
        A->depth++;
    A->leaves = mpk_grow(NULL, &A->capleaves, 2, sizeof *A->leaves);
    A->leaf_owner = mpk_grow(NULL, &A->capleaf_owner, 2, sizeof *A->leaf_owner);
    A->inners = mpk_grow(NULL, &A->capinners, 2, sizeof *A->inners);
    A->inner_owner = mpk_grow(NULL, &A->capinner_owner, 2, sizeof *A->inner_owner);
    memset(&A->leaves[EMPTY], 0, sizeof(leaf));
    memset(&A->leaves[FULL], 0xff, sizeof(leaf));
    memset(&A->inners[EMPTY], 0, sizeof(inner));
    for (int i = 0; i < FAN; i++)
        A->inners[FULL].kid[i] = FULL;
    A->leaf_owner[0] = A->leaf_owner[1] = A->inner_owner[0] = A->inner_owner[1] = UINT32_MAX;
    A->nleaves = A->ninners = 2;
    return A;
}

void mpk_anc_free(mpk_anc *A)
{
    if (!A)
        return;
    free(A->leaves);
    free(A->leaf_owner);
    free(A->inners);
    free(A->inner_owner);
    free(A);
}

/* A node of level that owner may change: n itself if it is owner's, else a
 * copy (of the empty node for EMPTY). Never called with FULL. */
static uint32_t own(mpk_anc *A, int level, uint32_t n, uint32_t owner)
{
    if (level == 0) {
        if (n != EMPTY && A->leaf_owner[n] == owner)
            return n;
        A->leaves = mpk_grow(A->leaves, &A->capleaves, A->nleaves + 1, sizeof *A->leaves);
        A->leaf_owner = mpk_grow(A->leaf_owner, &A->capleaf_owner, A->nleaves + 1, sizeof *A->leaf_owner);
        A->leaves[A->nleaves] = A->leaves[n];
        A->leaf_owner[A->nleaves] = owner;
        return (uint32_t)A->nleaves++;
    }
    if (n != EMPTY && A->inner_owner[n] == owner)
        return n;
    A->inners = mpk_grow(A->inners, &A->capinners, A->ninners + 1, sizeof *A->inners);
    A->inner_owner = mpk_grow(A->inner_owner, &A->capinner_owner, A->ninners + 1, sizeof *A->inner_owner);
    A->inners[A->ninners] = A->inners[n];
    A->inner_owner[A->ninners] = owner;
    return (uint32_t)A->ninners++;
}

static bool leaf_full(const leaf *l)
{
    for (int i = 0; i < FAN; i++)
        if (l->w[i] != ~0ull)
            return false;
    return true;
}

static bool inner_full(const inner *x)
{
    for (int i = 0; i < FAN; i++)
        if (x->kid[i] != FULL)
            return false;
    return true;
}

/* Bits of the task index below level: a leaf's 12, then 6 a level. */
static int shift_of(int level) { return 12 + 6 * (level - 1); }

static uint32_t add(mpk_anc *A, int level, uint32_t n, uint64_t task, uint32_t owner)
{
    if (n == FULL)
        return FULL;
    n = own(A, level, n, owner);
    if (level == 0) {
        uint64_t *w = &A->leaves[n].w[(task >> 6) & (FAN - 1)];
        *w |= 1ull << (task & 63);
        return *w == ~0ull && leaf_full(&A->leaves[n]) ? FULL : n;
    }
    int i = (int)((task >> shift_of(level)) & (FAN - 1));
    uint32_t kid = add(A, level - 1, A->inners[n].kid[i], task, owner);
    A->inners[n].kid[i] = kid;
    return kid == FULL && inner_full(&A->inners[n]) ? FULL : n;
}

mpk_aset mpk_anc_add(mpk_anc *A, mpk_aset s, uint64_t task, uint32_t owner)
{
    return add(A, A->depth, s, task, owner);
}

/* a | b, changing owner's nodes of a in place; b's nodes are taken whole
 * where a has nothing, or where a's are a subset of them. */
static uint32_t unite(mpk_anc *A, int level, uint32_t a, uint32_t b, uint32_t owner)
{
    if (b == EMPTY || a == b || a == FULL)
        return a;
    if (b == FULL || a == EMPTY)
        return b;
    if (level == 0) {
        const leaf *x = &A->leaves[a], *y = &A->leaves[b];
        bool a_in_b = true, b_in_a = true, full = true;
        for (int i = 0; i < FAN; i++) {
            uint64_t u = x->w[i] | y->w[i];
            a_in_b &= u == y->w[i];
            b_in_a &= u == x->w[i];
            full &= u == ~0ull;
        }
        if (full)
            return FULL;
        if (b_in_a)
            return a;
        if (a_in_b)
            return b;
        a = own(A, 0, a, owner);
        for (int i = 0; i < FAN; i++)
            A->leaves[a].w[i] |= A->leaves[b].w[i];
        return a;
    }
    bool same_as_b = true;
    for (int i = 0; i < FAN; i++) {
        uint32_t ka = A->inners[a].kid[i], kb = A->inners[b].kid[i];
        uint32_t k = unite(A, level - 1, ka, kb, owner);
        if (k != ka) {
            a = own(A, level, a, owner);
            A->inners[a].kid[i] = k;
        }
        same_as_b &= k == kb;
    }
    if (inner_full(&A->inners[a]))
        return FULL;
    return same_as_b ? b : a;
}

mpk_aset mpk_anc_union(mpk_anc *A, mpk_aset s, mpk_aset other, uint32_t owner)
{
    return unite(A, A->depth, s, other, owner);
}

bool mpk_anc_has(const mpk_anc *A, mpk_aset s, uint64_t task)
{
    uint32_t n = s;
    for (int level = A->depth; level > 0 && n > FULL; level--)
        n = A->inners[n].kid[(task >> shift_of(level)) & (FAN - 1)];
    if (n <= FULL)
        return n == FULL;
    return (A->leaves[n].w[(task >> 6) & (FAN - 1)] >> (task & 63)) & 1;
}

size_t mpk_anc_bytes(const mpk_anc *A)
{
    return A->nleaves * (sizeof(leaf) + 4) + A->ninners * (sizeof(inner) + 4);
}
