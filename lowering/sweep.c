/*
 * sweep.c - the nearest conflicting accesses of every task, in task order.
 *
 * Both the event builder and the verifier walk the tasks in order over the
 * arena and the state, cut into elementary segments at every access
 * boundary, and ask for each task: which earlier tasks last wrote a byte I
 * read or write (RAW, WAW), and which read a byte I write since it was last
 * written (WAR)? Ordering those is necessary and, by transitivity,
 * sufficient.
 *
 * Decode graphs read the same range over and over (a hundred matvec tiles
 * read all of x), so readers are kept in groups: a read of exactly the
 * segments of an existing group, with no write to any of them since the
 * group began, joins it in O(1) and reuses the writers the group found.
 * The answer for a task is a short list of items: "the writers of group
 * g" (RAW), "the readers of group g" (WAR), or one task (WAW, when nobody
 * read the bytes since their last write; when somebody did, waiting for
 * the readers implies waiting for the writer, since they waited for it).
 * Consumers with equal item lists need equal events, which is what makes
 * the event builder and the verifier fast: the hundred tiles above have
 * one item list.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>


typedef struct {
    int s0, s1;           /* segments [s0, s1) of one space */
    uint8_t space;
    bool partial;         /* a write hit some of its segments */
    uint32_t stamp;       /* last task that checked its readers + 1 */
    mpk_ivec tasks;           /* readers */
    mpk_ivec writers;         /* distinct last writers of its segments at its start */
} group;

typedef struct {
    uint64_t *bounds;
    int nb;
    int *writer;          /* per segment, -1: none */
    mpk_ivec *groups;         /* per segment: reader groups since the last write */
} space_map;

struct mpk_sweep {
    const mpkb_blob *tg;
    mpk_access *acc;
    int *seg;             /* per access: first and end segment */
    int *acc_start;
    space_map map[2];
    group *groups;
    int ngroups;
    size_t capgroups;
    uint32_t *stamp;      /* per task: last task that listed it + 1 */
    mpk_ivec out;             /* the current task's items */
    mpk_ivec why;             /* index of the access of the current task for each */
};

/* LSD radix sort of 64-bit keys, 16 bits a pass. */
static void radix_sort(uint64_t *a, int n)
{
    uint64_t *tmp = mpk_malloc(sizeof *tmp * (size_t)(n + 1));
    int *count = mpk_malloc(sizeof *count * 65537);
    if (!tmp || !count)
        mpk_out_of_memory();
    uint64_t any = 0;
    for (int i = 0; i < n; i++)
        any |= a[i];
    for (int shift = 0; shift < 64; shift += 16) {
        if (!((any >> shift) & 0xffff))
            continue;
        memset(count, 0, sizeof *count * 65537);
        for (int i = 0; i < n; i++)
            count[((a[i] >> shift) & 0xffff) + 1]++;
        for (int i = 0; i < 65536; i++)
            count[i + 1] += count[i];
        for (int i = 0; i < n; i++)
            tmp[count[(a[i] >> shift) & 0xffff]++] = a[i];
        memcpy(a, tmp, sizeof *a * (size_t)n);
    }
    free(tmp);
    free(count);
}

static int seg_of(const space_map *m, uint64_t v)
{
    int lo = 0, hi = m->nb;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (m->bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

mpk_sweep *mpk_sweep_new(const mpkb_blob *tg, int *bad_task)
{
    mpk_sweep *S = mpk_calloc(1, sizeof *S);
    if (!S)
        mpk_out_of_memory();
    S->tg = tg;
    S->acc_start = mpk_malloc(sizeof *S->acc_start * (tg->ntasks + 1));
    int total = 0;
    size_t cap = 0;
    *bad_task = -1;
    mpk_access *buf = NULL;
    int bufcap = 0;
    for (uint32_t t = 0; t < tg->ntasks; t++) {
        S->acc_start[t] = total;
        int k = mpk_task_accesses(tg, &tg->tasks[t], &buf, &bufcap);
        if (k < 0) {
            if (*bad_task < 0)
                *bad_task = (int)t;
            k = 0;
        }
        S->acc = mpk_grow(S->acc, &cap, (size_t)(total + k), sizeof *S->acc);
        if (k)
            memcpy(S->acc + total, buf, sizeof *buf * (size_t)k);
        total += k;
        free(buf); /* mpk_task_accesses appends from 0 only into a fresh buffer */
        buf = NULL;
        bufcap = 0;
    }
    S->acc_start[tg->ntasks] = total;
    for (int s = 0; s < 2; s++) {
        space_map *m = &S->map[s];
        m->bounds = mpk_malloc(sizeof *m->bounds * (size_t)(2 * total + 1));
        for (int i = 0; i < total; i++)
            if ((S->acc[i].space == MPKB_SPACE_STATE) == s) {
                m->bounds[m->nb++] = S->acc[i].lo;
                m->bounds[m->nb++] = S->acc[i].hi;
            }
        radix_sort(m->bounds, m->nb);
        int u = 0;
        for (int i = 0; i < m->nb; i++)
            if (!u || m->bounds[u - 1] != m->bounds[i])
                m->bounds[u++] = m->bounds[i];
        m->nb = u;
        m->writer = mpk_malloc(sizeof *m->writer * (size_t)(u + 1));
        for (int i = 0; i <= u; i++)
            m->writer[i] = -1;
        m->groups = mpk_calloc((size_t)u + 1, sizeof *m->groups);
    }
    S->seg = mpk_malloc(sizeof *S->seg * (size_t)(2 * total + 1));
    for (int i = 0; i < total; i++) {
        const space_map *m = &S->map[S->acc[i].space == MPKB_SPACE_STATE];
        S->seg[2 * i] = seg_of(m, S->acc[i].lo);
        S->seg[2 * i + 1] = seg_of(m, S->acc[i].hi);
    }
    S->stamp = mpk_calloc(tg->ntasks + 1, sizeof *S->stamp);
    return S;
}

static void item(mpk_sweep *S, int it, int acc)
{
    for (int i = 0; i < S->out.n; i++)
        if (S->out.v[i] == it)
            return;
    mpk_ivec_push(&S->out, it);
    mpk_ivec_push(&S->why, acc);
}

static void conflict(mpk_sweep *S, int task, uint32_t self, int acc)
{
    if (task < 0 || (uint32_t)task == self || S->stamp[task] == self + 1)
        return;
    S->stamp[task] = self + 1;
    item(S, MPK_ITEM_TASK(task), acc);
}

static int new_group(mpk_sweep *S, uint8_t space, int s0, int s1)
{
    S->groups = mpk_grow(S->groups, &S->capgroups, (size_t)S->ngroups + 1, sizeof *S->groups);
    group *g = &S->groups[S->ngroups];
    memset(g, 0, sizeof *g);
    g->space = space, g->s0 = s0, g->s1 = s1;
    return S->ngroups++;
}

int mpk_sweep_next(mpk_sweep *S, uint32_t t, const int **items, const int **why)
{
    S->out.n = S->why.n = 0;
    int a0 = S->acc_start[t], a1 = S->acc_start[t + 1];
    for (int a = a0; a < a1; a++) {
        const mpk_access *x = &S->acc[a];
        int sp = x->space == MPKB_SPACE_STATE;
        space_map *m = &S->map[sp];
        int s0 = S->seg[2 * a], s1 = S->seg[2 * a + 1];
        if (s0 >= s1)
            continue;
        if (!x->write) {
            mpk_ivec *gl = &m->groups[s0];
            group *g = gl->n ? &S->groups[gl->v[gl->n - 1]] : NULL;
            int gi = gl->n ? gl->v[gl->n - 1] : -1;
            if (!g || g->partial || g->s0 != s0 || g->s1 != s1) {
                gi = new_group(S, (uint8_t)sp, s0, s1);
                g = &S->groups[gi];
                for (int s = s0; s < s1; s++) {
                    mpk_ivec_push(&m->groups[s], gi);
                    int w = m->writer[s];
                    bool dup = w < 0 || w == (int)t;
                    for (int k = g->writers.n - 1; k >= 0 && !dup; k--)
                        dup = g->writers.v[k] == w;
                    if (!dup)
                        mpk_ivec_push(&g->writers, w);
                }
            }
            if (g->writers.n == 1)
                conflict(S, g->writers.v[0], t, a); /* a group of one is that task */
            else if (g->writers.n)
                item(S, MPK_ITEM_WRITERS(gi), a);
            if (!g->tasks.n || g->tasks.v[g->tasks.n - 1] != (int)t)
                mpk_ivec_push(&g->tasks, (int)t);
            continue;
        }
        for (int s = s0; s < s1; s++) {
            mpk_ivec *gl = &m->groups[s];
            bool readers = false;
            for (int k = 0; k < gl->n; k++) {
                group *g = &S->groups[gl->v[k]];
                bool other = g->tasks.n > 1 || (g->tasks.n == 1 && g->tasks.v[0] != (int)t);
                readers |= other;
                if (other && g->stamp != t + 1) {
                    g->stamp = t + 1;
                    if (g->tasks.n == 1)
                        conflict(S, g->tasks.v[0], t, a);
                    else
                        item(S, MPK_ITEM_READERS(gl->v[k]), a);
                }
            }
            if (!readers)
                conflict(S, m->writer[s], t, a);
        }
    }
    /* then this task's writes become the last ones */
    for (int a = a0; a < a1; a++) {
        const mpk_access *x = &S->acc[a];
        if (!x->write)
            continue;
        space_map *m = &S->map[x->space == MPKB_SPACE_STATE];
        for (int s = S->seg[2 * a], s1 = S->seg[2 * a + 1]; s < s1; s++) {
            m->writer[s] = (int)t;
            mpk_ivec *gl = &m->groups[s];
            for (int k = 0; k < gl->n; k++)
                S->groups[gl->v[k]].partial = true;
            gl->n = 0;
        }
    }
    *items = S->out.v;
    *why = S->why.v;
    return S->out.n;
}

void mpk_sweep_item_tasks(const mpk_sweep *S, int it, const int **tasks, int *n)
{
    if (MPK_ITEM_KIND(it) == MPK_ITEM_KIND_TASK) {
        static int one[1];
        /* callers copy before the next call */
        one[0] = MPK_ITEM_ID(it);
        *tasks = one;
        *n = 1;
        return;
    }
    const group *g = &S->groups[MPK_ITEM_ID(it)];
    const mpk_ivec *v = MPK_ITEM_KIND(it) == MPK_ITEM_KIND_WRITERS ? &g->writers : &g->tasks;
    *tasks = v->v;
    *n = v->n;
}

const mpk_access *mpk_sweep_access(const mpk_sweep *S, int i) { return &S->acc[i]; }

void mpk_sweep_free(mpk_sweep *S)
{
    if (!S)
        return;
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i <= S->map[s].nb; i++)
            free(S->map[s].groups[i].v);
        free(S->map[s].groups);
        free(S->map[s].writer);
        free(S->map[s].bounds);
    }
    for (int g = 0; g < S->ngroups; g++) {
        free(S->groups[g].tasks.v);
        free(S->groups[g].writers.v);
    }
    free(S->groups);
    free(S->acc);
    free(S->seg);
    free(S->acc_start);
    free(S->stamp);
    free(S->out.v);
    free(S->why.v);
    free(S);
}

/* ---- the signature cache --------------------------------------------------- */

typedef struct {
    uint64_t hash;
    int64_t key, value;
    int off, n;
} sig;

struct mpk_sigcache {
    sig *slots;           /* open addressing; n == -1: empty */
    uint32_t cap, used;
    mpk_ivec items;           /* item lists, concatenated */
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t sig_hash(const int *items, int n, int64_t key)
{
    uint64_t h = mix64((uint64_t)key) ^ (uint64_t)n;
    for (int i = 0; i < n; i++)
        h += mix64((uint64_t)(uint32_t)items[i] + 0x1234567ull);
    return h;
}

static bool same_set(const int *a, const int *b, int n)
{
    for (int i = 0; i < n; i++) {
        bool found = false;
        for (int j = 0; j < n && !found; j++)
            found = a[i] == b[j];
        if (!found)
            return false;
    }
    return true;
}

mpk_sigcache *mpk_sigcache_new(void)
{
    mpk_sigcache *C = mpk_calloc(1, sizeof *C);
    if (!C)
        mpk_out_of_memory();
    return C;
}

static sig *find(mpk_sigcache *C, const int *items, int n, int64_t key, uint64_t h)
{
    if (!C->cap)
        return NULL;
    for (uint32_t j = (uint32_t)h & (C->cap - 1);; j = (j + 1) & (C->cap - 1)) {
        sig *s = &C->slots[j];
        if (s->n < 0)
            return s;
        if (s->hash == h && s->key == key && s->n == n && same_set(C->items.v + s->off, items, n))
            return s;
    }
}

int64_t mpk_sigcache_get(mpk_sigcache *C, const int *items, int n, int64_t key)
{
    sig *s = find(C, items, n, key, sig_hash(items, n, key));
    return s && s->n >= 0 ? s->value : -1;
}

void mpk_sigcache_put(mpk_sigcache *C, const int *items, int n, int64_t key, int64_t value)
{
    if ((C->used + 1) * 2 >= C->cap) {
        uint32_t ncap = C->cap ? C->cap * 2 : 1024;
        sig *old = C->slots;
        uint32_t ocap = C->cap;
        C->slots = mpk_malloc(sizeof *C->slots * ncap);
        if (!C->slots)
            mpk_out_of_memory();
        for (uint32_t i = 0; i < ncap; i++)
            C->slots[i].n = -1;
        C->cap = ncap;
        for (uint32_t i = 0; i < ocap; i++)
            if (old[i].n >= 0)
                *find(C, C->items.v + old[i].off, old[i].n, old[i].key, old[i].hash) = old[i];
        free(old);
    }
    uint64_t h = sig_hash(items, n, key);
    sig *s = find(C, items, n, key, h);
    if (s->n < 0) {
        s->off = C->items.n;
        for (int i = 0; i < n; i++)
            mpk_ivec_push(&C->items, items[i]);
        s->n = n;
        s->hash = h;
        s->key = key;
        C->used++;
    }
    s->value = value;
}

void mpk_sigcache_free(mpk_sigcache *C)
{
    if (!C)
        return;
    free(C->slots);
    free(C->items.v);
    free(C);
}
