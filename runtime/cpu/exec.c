/*
 * cpu.c - the CPU reference executor: runs a blob task by task.
 *
 * Each step runs its tasks one at a time in a random order (seeded) among
 * those whose event has fired, so any order the GPU might take can be
 * taken here too: a missing dependency shows up as a wrong answer under
 * some seed. The arena starts filled with NaNs, so reading bytes nobody
 * wrote is loud. Numerics follow man 5 mpk-blob: values are rounded to a
 * tensor's dtype (bf16: to nearest even) only when a task stores them;
 * everything a task computes in between stays fp32, as on the GPU.
 *
 * Weight data comes straight from the mapped safetensors files and may be
 * unaligned, so every element is loaded through memcpy.
 *
 * A blob for tp ranks runs as tp ranks in one process, each with its own
 * arena, state, weights and event counters, their ready tasks interleaved
 * in one random order: an allreduce reads the other ranks' arenas, and an
 * event with flag ALL_RANKS counts the signals of every rank.
 */
#include "runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- elements ------------------------------------------------------------ */

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* IEEE half precision, by hand: not every C compiler has _Float16. */
static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f)
        u = sign | 0x7f800000u | (m << 13); /* inf, nan */
    else if (e)
        u = sign | ((e + 112) << 23) | (m << 13);
    else if (!m)
        u = sign;
    else { /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400))
            m <<= 1, e--;
        u = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00; /* nan */
    if (a >= 0x477ff000u)
        return sign | 0x7c00; /* overflow (and values rounding up to it) */
    if (a < 0x38800000u) {   /* subnormal or zero: round at the right bit */
        if (a < 0x33000000u)
            return sign;
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000, shift = 126 - e;
        uint32_t half = m >> shift, rest = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        half += rest > mid || (rest == mid && (half & 1));
        return sign | (uint16_t)half;
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1) - (112u << 23);
    return sign | (uint16_t)(r >> 13);
}

static float ld(uint32_t dt, const uint8_t *p, uint64_t i)
{
    switch (dt) {
    case MPKB_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return bf16_to_f32(h);
    }
    case MPKB_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return f16_to_f32(h);
    }
    case MPKB_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    default: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return (float)v;
    }
    }
}

static void st(uint32_t dt, uint8_t *p, uint64_t i, float v)
{
    switch (dt) {
    case MPKB_BF16: {
        uint16_t h = f32_to_bf16(v);
        memcpy(p + 2 * i, &h, 2);
        break;
    }
    case MPKB_F16: {
        uint16_t h = f32_to_f16(v);
        memcpy(p + 2 * i, &h, 2);
        break;
    }
    case MPKB_F32: memcpy(p + 4 * i, &v, 4); break;
    default: {
        int32_t x = (int32_t)v;
        memcpy(p + 4 * i, &x, 4);
    }
    }
}

static int32_t ld_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void st_i32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); }

/* ---- the machine ---------------------------------------------------------- */

typedef struct {
    const void *const *weights; /* per tensor: loaded bytes (base tensors) */
    uint8_t *arena, *state;
    uint64_t *count;            /* event counters, monotonic */
} rank_mem;

struct mpk_cpu {
    const mpkb_blob *b;
    rank_mem *ranks;            /* meta.tp of them */
    const rank_mem *cur;        /* the rank running a task */
    uint32_t nranks;
    uint64_t step;
    int32_t token;
    uint64_t rng;
    FILE *err;
    float *scratch;             /* K floats for a matvec input */
    uint32_t *ready;            /* the step's ready list, ntasks long */
    float *scores;              /* attention: a score per position of a chunk */
    uint64_t *rows;             /* attention: the cache row of each */
};

static uint8_t *ptr(mpk_cpu *M, uint32_t ti)
{
    const mpkb_tensor *t = &M->b->tensors[ti];
    switch (t->space) {
    case MPKB_SPACE_ARENA: return M->cur->arena + t->offset;
    case MPKB_SPACE_STATE: return M->cur->state + t->offset;
    case MPKB_SPACE_CONST: return (uint8_t *)M->b->consts + t->offset;
    default: return (uint8_t *)M->cur->weights[t->base] + t->offset;
    }
}

static uint32_t dt(mpk_cpu *M, uint32_t ti) { return M->b->tensors[ti].dtype; }
static const mpkb_tensor *tn(mpk_cpu *M, uint32_t ti) { return &M->b->tensors[ti]; }

static float silu(float v) { return v / (1.0f + expf(-v)); }

static void matvec(mpk_cpu *M, const mpkb_task *t)
{
    const mpkb_tensor *x = tn(M, t->t[0]), *w = tn(M, t->t[1]);
    uint64_t m_rows = x->dims[0], k = x->dims[1], n = w->dims[0];
    const uint8_t *xp = ptr(M, t->t[0]), *wp = ptr(M, t->t[1]);
    uint8_t *op = ptr(M, t->t[2]);
    uint32_t xd = x->dtype, wd = w->dtype, od = dt(M, t->t[2]);
    float *in = M->scratch;
    for (uint64_t m = 0; m < m_rows; m++) {
        if (t->flags & MPKB_F_PRO_RMSNORM) {
            float ss = 0;
            for (uint64_t i = 0; i < k; i++) {
                float v = ld(xd, xp, m * k + i);
                ss += v * v;
            }
            float r = 1.0f / sqrtf(ss / (float)k + t->f[0]);
            const uint8_t *gp = ptr(M, t->t[4]);
            uint32_t gd = dt(M, t->t[4]);
            for (uint64_t i = 0; i < k; i++)
                in[i] = ld(gd, gp, i) * (ld(xd, xp, m * k + i) * r);
        } else if (t->flags & MPKB_F_PRO_SILU_MUL) {
            const uint8_t *bp = ptr(M, t->t[4]);
            uint32_t bd = dt(M, t->t[4]);
            for (uint64_t i = 0; i < k; i++)
                in[i] = silu(ld(xd, xp, m * k + i)) * ld(bd, bp, m * k + i);
        } else {
            for (uint64_t i = 0; i < k; i++)
                in[i] = ld(xd, xp, m * k + i);
        }
        float best = -INFINITY;
        int32_t best_at = t->i[0];
        for (uint64_t r = (uint64_t)t->i[0]; r < (uint64_t)t->i[1]; r++) {
            float acc = 0;
            if (wd == MPKB_BF16) {
                const uint8_t *row = wp + 2 * r * k;
                for (uint64_t i = 0; i < k; i++) {
                    uint16_t h;
                    memcpy(&h, row + 2 * i, 2);
                    acc += in[i] * bf16_to_f32(h);
                }
            } else {
                for (uint64_t i = 0; i < k; i++)
                    acc += in[i] * ld(wd, wp, r * k + i);
            }
            if (acc > best) /* NaN never wins; the first maximum does */
                best = acc, best_at = (int32_t)r;
            if (t->flags & MPKB_F_EPI_RESIDUAL)
                acc += ld(dt(M, t->t[3]), ptr(M, t->t[3]), m * n + r);
            st(od, op, m * n + r, acc);
        }
        if (t->flags & MPKB_F_EPI_ARGMAX) {
            uint8_t *pp = ptr(M, t->t[5]);
            st(MPKB_F32, pp, (uint64_t)t->i[2] * 2, best);
            st_i32(pp + 8 * (uint64_t)t->i[2] + 4, best_at);
        }
    }
}

/* rmsnorm (optional) and rope (optional) of one D-vector, in fp32. */
static void norm_rope(mpk_cpu *M, float *v, uint64_t d, uint32_t gamma, float eps, uint32_t table, int32_t pos)
{
    if (gamma != MPKB_NONE) {
        float ss = 0;
        for (uint64_t i = 0; i < d; i++)
            ss += v[i] * v[i];
        float r = 1.0f / sqrtf(ss / (float)d + eps);
        for (uint64_t i = 0; i < d; i++)
            v[i] = ld(dt(M, gamma), ptr(M, gamma), i) * (v[i] * r);
    }
    if (table != MPKB_NONE) {
        const uint8_t *f = ptr(M, table);
        uint64_t h = d / 2;
        for (uint64_t i = 0; i < h; i++) {
            float ang = (float)pos * ld(MPKB_F32, f, i);
            float c = cosf(ang), s = sinf(ang), a = v[i], b = v[i + h];
            v[i] = a * c - b * s;
            v[i + h] = b * c + a * s;
        }
    }
}

static bool attention(mpk_cpu *M, const mpkb_task *t)
{
    const mpkb_tensor *q = tn(M, t->t[0]), *cache = tn(M, t->t[3]);
    uint64_t H = q->dims[1], D = q->dims[2], G = cache->dims[1], S = cache->dims[2];
    uint64_t g = (uint64_t)t->i[0], c = (uint64_t)t->i[1], B = (uint64_t)t->i[2], nch = (uint64_t)t->i[3];
    uint64_t per = H / G, P = mpkb_kv_blocks(S, B, nch);
    int32_t pos = ld_i32(ptr(M, t->t[4]));
    if (pos < 0 || (uint64_t)pos >= S) {
        fprintf(M->err, "mpk-run: position %d is outside the KV cache (%llu positions)\n", pos,
                (unsigned long long)S);
        return false;
    }
    uint8_t *cp = ptr(M, t->t[3]);
    uint32_t cd = cache->dtype;
    float *v = M->scratch;
    uint64_t kb = (0 * G + g) * S, vb = (1 * G + g) * S; /* rows of head g's planes */
    if (((uint64_t)pos / B) % nch == c) {
        /* append k and v at pos's row */
        uint64_t row = mpkb_kv_row((uint64_t)pos, B, nch, P);
        for (uint64_t i = 0; i < D; i++)
            v[i] = ld(dt(M, t->t[1]), ptr(M, t->t[1]), g * D + i);
        norm_rope(M, v, D, t->t[6], t->f[2], t->t[9], pos);
        for (uint64_t i = 0; i < D; i++) {
            st(cd, cp, (kb + row) * D + i, v[i]);
            st(cd, cp, (vb + row) * D + i, ld(dt(M, t->t[2]), ptr(M, t->t[2]), g * D + i));
        }
    }
    /* the chunk's positions up to pos, as cache rows, in order */
    uint64_t n = 0, *rows = M->rows;
    for (uint64_t b = c; b * B <= (uint64_t)pos; b += nch)
        for (uint64_t j = b * B; j < (b + 1) * B && j <= (uint64_t)pos; j++)
            rows[n++] = mpkb_kv_row(j, B, nch, P);
    uint8_t *op = ptr(M, t->t[7]);
    uint32_t od = dt(M, t->t[7]);
    float *acc = v + D, *s = M->scores;
    for (uint64_t h = g * per; h < (g + 1) * per; h++) {
        for (uint64_t i = 0; i < D; i++)
            v[i] = ld(q->dtype, ptr(M, t->t[0]), h * D + i);
        norm_rope(M, v, D, t->t[5], t->f[1], t->t[8], pos);
        float mx = -INFINITY, sum = 0;
        for (uint64_t j = 0; j < n; j++) {
            float dot = 0;
            for (uint64_t i = 0; i < D; i++)
                dot += v[i] * ld(cd, cp, (kb + rows[j]) * D + i);
            s[j] = dot * t->f[0];
            if (s[j] > mx)
                mx = s[j];
        }
        for (uint64_t i = 0; i < D; i++)
            acc[i] = 0;
        for (uint64_t j = 0; j < n; j++) {
            float p = expf(s[j] - mx);
            sum += p;
            for (uint64_t i = 0; i < D; i++)
                acc[i] += p * ld(cd, cp, (vb + rows[j]) * D + i);
        }
        if (t->flags & MPKB_F_DIRECT) {
            for (uint64_t i = 0; i < D; i++)
                st(od, op, h * D + i, acc[i] / sum);
        } else {
            uint64_t base = (h * nch + c) * (D + 2);
            for (uint64_t i = 0; i < D; i++)
                st(MPKB_F32, op, base + i, acc[i]);
            st(MPKB_F32, op, base + D, n ? mx : -INFINITY);
            st(MPKB_F32, op, base + D + 1, sum);
        }
    }
    return true;
}

static void merge(mpk_cpu *M, const mpkb_task *t)
{
    const mpkb_tensor *o = tn(M, t->t[1]);
    uint64_t D = o->dims[2], nch = (uint64_t)t->i[1], per = (uint64_t)t->i[2], g = (uint64_t)t->i[0];
    const uint8_t *pp = ptr(M, t->t[0]);
    uint8_t *op = ptr(M, t->t[1]);
    for (uint64_t h = g * per; h < (g + 1) * per; h++) {
        float mx = -INFINITY, sum = 0;
        for (uint64_t c = 0; c < nch; c++) {
            float m = ld(MPKB_F32, pp, (h * nch + c) * (D + 2) + D);
            mx = m > mx ? m : mx;
        }
        for (uint64_t c = 0; c < nch; c++) {
            uint64_t b = (h * nch + c) * (D + 2);
            float m = ld(MPKB_F32, pp, b + D);
            sum += m == -INFINITY ? 0 : ld(MPKB_F32, pp, b + D + 1) * expf(m - mx);
        }
        for (uint64_t i = 0; i < D; i++) {
            float a = 0;
            for (uint64_t c = 0; c < nch; c++) {
                uint64_t b = (h * nch + c) * (D + 2);
                float m = ld(MPKB_F32, pp, b + D);
                if (m != -INFINITY)
                    a += ld(MPKB_F32, pp, b + i) * expf(m - mx);
            }
            st(o->dtype, op, h * D + i, a / sum);
        }
    }
}

static bool run_task(mpk_cpu *M, const mpkb_task *t)
{
    uint64_t lo = (uint64_t)t->i[0], hi = (uint64_t)t->i[1];
    switch (t->op) {
    case MPKB_OP_INPUTS:
        st_i32(ptr(M, t->t[0]), M->token);
        if (t->t[1] != MPKB_NONE)
            st_i32(ptr(M, t->t[1]), (int32_t)M->step);
        return true;
    case MPKB_OP_EMBED: {
        const mpkb_tensor *tab = tn(M, t->t[0]);
        int32_t id = ld_i32(ptr(M, t->t[1]));
        if (id < 0 || (uint64_t)id >= tab->dims[0]) {
            fprintf(M->err, "mpk-run: token id %d is outside the vocabulary (0..%u)\n", id, tab->dims[0] - 1);
            return false;
        }
        for (uint64_t c = lo; c < hi; c++)
            st(dt(M, t->t[2]), ptr(M, t->t[2]), c,
               ld(tab->dtype, ptr(M, t->t[0]), (uint64_t)id * tab->dims[1] + c));
        return true;
    }
    case MPKB_OP_MATVEC: matvec(M, t); return true;
    case MPKB_OP_ATTENTION: return attention(M, t);
    case MPKB_OP_ATTN_MERGE: merge(M, t); return true;
    case MPKB_OP_ARGMAX_PART: {
        float best = -INFINITY;
        int32_t at = t->i[0];
        for (uint64_t c = lo; c < hi; c++) {
            float v = ld(dt(M, t->t[0]), ptr(M, t->t[0]), c);
            if (v > best)
                best = v, at = (int32_t)c;
        }
        uint8_t *pp = ptr(M, t->t[1]);
        st(MPKB_F32, pp, (uint64_t)t->i[2] * 2, best);
        st_i32(pp + 8 * (uint64_t)t->i[2] + 4, at);
        return true;
    }
    case MPKB_OP_ARGMAX_REDUCE: {
        uint64_t tiles = mpkb_numel(tn(M, t->t[0])) / 2;
        uint32_t nr = (t->flags & MPKB_F_ALL_RANKS) ? M->nranks : 1;
        float best = -INFINITY;
        int32_t at = -1;
        for (uint32_t q = 0; q < nr; q++) {
            const uint8_t *pp = nr > 1 ? M->ranks[q].arena + tn(M, t->t[0])->offset : ptr(M, t->t[0]);
            int32_t base = nr > 1 ? (int32_t)q * t->i[0] : 0;
            for (uint64_t i = 0; i < tiles; i++) {
                float v = ld(MPKB_F32, pp, 2 * i);
                int32_t c = ld_i32(pp + 8 * i + 4) + base;
                if (v > best || (v == best && at >= 0 && c < at) || (at < 0 && v == best))
                    best = v, at = c;
            }
        }
        st_i32(ptr(M, t->t[1]), at < 0 ? 0 : at);
        return true;
    }
    case MPKB_OP_ALLREDUCE: {
        const mpkb_tensor *p = tn(M, t->t[0]);
        for (uint64_t i = lo; i < hi; i++) {
            float sum = 0;
            for (uint32_t q = 0; q < M->nranks; q++)
                sum += ld(MPKB_F32, M->ranks[q].arena + p->offset, i);
            if (t->flags & MPKB_F_EPI_RESIDUAL)
                sum = ld(dt(M, t->t[1]), ptr(M, t->t[1]), i) + sum;
            st(dt(M, t->t[2]), ptr(M, t->t[2]), i, sum);
        }
        return true;
    }
    case MPKB_OP_RMSNORM: {
        uint64_t d = tn(M, t->t[1])->dims[0];
        uint32_t xd = dt(M, t->t[0]);
        for (uint64_t r = lo; r < hi; r++) {
            float ss = 0;
            for (uint64_t i = 0; i < d; i++) {
                float v = ld(xd, ptr(M, t->t[0]), r * d + i);
                ss += v * v;
            }
            float s = 1.0f / sqrtf(ss / (float)d + t->f[0]);
            for (uint64_t i = 0; i < d; i++)
                st(dt(M, t->t[2]), ptr(M, t->t[2]), r * d + i,
                   ld(dt(M, t->t[1]), ptr(M, t->t[1]), i) * (ld(xd, ptr(M, t->t[0]), r * d + i) * s));
        }
        return true;
    }
    case MPKB_OP_ROPE: {
        uint64_t d = tn(M, t->t[0])->dims[2];
        int32_t pos = ld_i32(ptr(M, t->t[1]));
        for (uint64_t h = lo; h < hi; h++) {
            for (uint64_t i = 0; i < d; i++)
                M->scratch[i] = ld(dt(M, t->t[0]), ptr(M, t->t[0]), h * d + i);
            norm_rope(M, M->scratch, d, MPKB_NONE, 0, t->t[2], pos);
            for (uint64_t i = 0; i < d; i++)
                st(dt(M, t->t[3]), ptr(M, t->t[3]), h * d + i, M->scratch[i]);
        }
        return true;
    }
    case MPKB_OP_ADD:
    case MPKB_OP_MUL:
        for (uint64_t i = lo; i < hi; i++) {
            float a = ld(dt(M, t->t[0]), ptr(M, t->t[0]), i), c = ld(dt(M, t->t[1]), ptr(M, t->t[1]), i);
            st(dt(M, t->t[2]), ptr(M, t->t[2]), i, t->op == MPKB_OP_ADD ? a + c : a * c);
        }
        return true;
    case MPKB_OP_SILU:
        for (uint64_t i = lo; i < hi; i++)
            st(dt(M, t->t[2]), ptr(M, t->t[2]), i, silu(ld(dt(M, t->t[0]), ptr(M, t->t[0]), i)));
        return true;
    case MPKB_OP_COPY: {
        uint32_t d = dt(M, t->t[0]);
        uint64_t es = mpkb_dtype_size(d);
        for (int64_t r = 0; r < t->i[0]; r++)
            memmove(ptr(M, t->t[1]) + (uint64_t)(r * t->i[2]) * es, /* a hostile blob may overlap them */
                   ptr(M, t->t[0]) + (uint64_t)(t->i[3] + r * t->i[1]) * es, (uint64_t)t->i[2] * es);
        return true;
    }
    }
    return false;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Signals one firing of event e needs: its producers, on every rank for
 * an ALL_RANKS event. */
static uint64_t per_step(const mpk_cpu *M, const mpkb_event *ev)
{
    return (uint64_t)ev->triggers * ((ev->flags & MPKB_EV_ALL_RANKS) ? M->nranks : 1);
}

/* One step: tasks in a random order among the ready ones of every rank
 * (seed 0: in the order they became ready); ready[] holds rank * ntasks +
 * task. */
static bool step(mpk_cpu *M, bool random_order, uint32_t *ready)
{
    const mpkb_blob *b = M->b;
    uint32_t n = 0, ran = 0;
    for (uint32_t r = 0; r < M->nranks; r++)
        for (uint32_t e = 0; e < b->nevents; e++) {
            const mpkb_event *ev = &b->events[e];
            uint64_t c = M->ranks[r].count[e], need = per_step(M, ev);
            if (c >= (M->step + 1 - ev->lag) * need && (ev->lag || c == M->step * need || need == 0))
                for (uint32_t t = ev->first_task; t < ev->first_task + ev->ntasks; t++)
                    ready[n++] = r * b->ntasks + t;
        }
    uint32_t head = 0;
    while (head < n) {
        uint32_t pick = head;
        if (random_order)
            pick = head + (uint32_t)(next_rand(&M->rng) % (n - head));
        uint32_t rt = ready[pick];
        ready[pick] = ready[head];
        ready[head++] = rt;
        uint32_t r = rt / b->ntasks;
        const mpkb_task *x = &b->tasks[rt % b->ntasks];
        M->cur = &M->ranks[r];
        if (!run_task(M, x))
            return false;
        ran++;
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = b->triggers[x->trig_first + k];
            const mpkb_event *ev = &b->events[e];
            bool all = ev->flags & MPKB_EV_ALL_RANKS;
            for (uint32_t q = all ? 0 : r; q < (all ? M->nranks : r + 1); q++)
                if (++M->ranks[q].count[e] == (M->step + 1) * per_step(M, ev) && !ev->lag)
                    for (uint32_t c = ev->first_task; c < ev->first_task + ev->ntasks; c++)
                        ready[n++] = q * b->ntasks + c;
        }
    }
    if (ran != b->ntasks * M->nranks) {
        fprintf(M->err, "mpk-run: step %llu stalled: %u of %u tasks never became ready\n",
                (unsigned long long)M->step, b->ntasks * M->nranks - ran, b->ntasks * M->nranks);
        return false;
    }
    return true;
}

mpk_cpu *mpk_cpu_new(const mpkb_blob *b, const void *const *const *weights, uint64_t seed, FILE *err)
{
    mpk_cpu *M = calloc(1, sizeof *M);
    if (!M)
        return NULL;
    M->b = b;
    M->err = err;
    M->nranks = b->meta->tp;
    M->ranks = calloc(M->nranks, sizeof *M->ranks);
    if (!M->ranks) {
        free(M);
        return NULL;
    }
    M->rng = seed;
    uint64_t maxk = 16, maxs = 16;
    for (uint32_t i = 0; i < b->ntensors; i++)
        for (int d = 0; d < b->tensors[i].ndim; d++)
            maxk = b->tensors[i].dims[d] > maxk ? b->tensors[i].dims[d] : maxk;
    for (uint32_t i = 0; i < b->ntasks; i++) /* a chunk holds at most the whole cache */
        if (b->tasks[i].op == MPKB_OP_ATTENTION && b->tensors[b->tasks[i].t[3]].dims[2] > maxs)
            maxs = b->tensors[b->tasks[i].t[3]].dims[2];
    bool ok = true;
    for (uint32_t r = 0; r < M->nranks; r++) {
        rank_mem *R = &M->ranks[r];
        R->weights = weights[r];
        R->arena = malloc(b->meta->arena_size ? b->meta->arena_size : 1);
        R->state = calloc(1, b->meta->state_size ? b->meta->state_size : 1);
        R->count = calloc(b->nevents, sizeof *R->count);
        ok &= R->arena && R->state && R->count;
        if (R->arena) /* NaN in every float dtype */
            memset(R->arena, 0xff, b->meta->arena_size);
    }
    M->scratch = malloc(sizeof(float) * 2 * (maxk + 2));
    M->scores = malloc(sizeof(float) * (maxs + 1));
    M->rows = malloc(sizeof(uint64_t) * (maxs + 1));
    M->ready = malloc(sizeof *M->ready * ((size_t)b->ntasks * M->nranks + 1));
    if (!ok || !M->scratch || !M->scores || !M->rows || !M->ready) {
        fprintf(err, "mpk-run: out of memory for the arena (%llu bytes) and state (%llu bytes)\n",
                (unsigned long long)b->meta->arena_size, (unsigned long long)b->meta->state_size);
        mpk_cpu_free(M);
        return NULL;
    }
    return M;
}

void mpk_cpu_free(mpk_cpu *M)
{
    if (!M)
        return;
    for (uint32_t r = 0; r < M->nranks; r++) {
        free(M->ranks[r].arena);
        free(M->ranks[r].state);
        free(M->ranks[r].count);
    }
    free(M->ranks);
    free(M->scratch);
    free(M->scores);
    free(M->rows);
    free(M->ready);
    free(M);
}

/* A step whose logits have no finite value, or whose chosen token's logit
 * is not finite (a NaN or inf in a weight, an overflow), picked its token
 * from garbage: an error naming the step, not a silent answer. The GPU
 * executor prints the same line. */
static bool logits_finite(const mpk_cpu *M, int32_t next)
{
    const mpkb_blob *b = M->b;
    const mpkb_tensor *lg = &b->tensors[b->meta->logits];
    uint64_t cols = mpkb_numel(lg);
    bool any = false;
    for (uint32_t r = 0; r < M->nranks && !any; r++)
        for (uint64_t i = 0; i < cols && !any; i++)
            any = isfinite(ld(lg->dtype, M->ranks[r].arena + lg->offset, i));
    if (next < 0 || (uint64_t)next >= cols * M->nranks) {
        fprintf(M->err, "mpk-run: error: step %llu: the chosen token %d is outside the logits (0..%llu)\n",
                (unsigned long long)M->step, next, (unsigned long long)(cols * M->nranks - 1));
        return false;
    }
    float chosen = ld(lg->dtype, M->ranks[(uint64_t)next / cols].arena + lg->offset, (uint64_t)next % cols);
    if (!any)
        fprintf(M->err, "mpk-run: error: step %llu: the logits have no finite value\n",
                (unsigned long long)M->step);
    else if (!isfinite(chosen))
        fprintf(M->err, "mpk-run: error: step %llu: the logit of the chosen token %d is not finite (%s)\n",
                (unsigned long long)M->step, next, isnan(chosen) ? "nan" : chosen > 0 ? "inf" : "-inf");
    return any && isfinite(chosen);
}

bool mpk_cpu_step(mpk_cpu *M, int32_t token, bool random_order, int32_t *next, float *logits)
{
    const mpkb_blob *b = M->b;
    M->token = token;
    if (!step(M, random_order, M->ready))
        return false;
    uint64_t at = b->tensors[b->meta->next_output].offset;
    *next = ld_i32(M->ranks[0].arena + at);
    for (uint32_t r = 1; r < M->nranks; r++)
        if (ld_i32(M->ranks[r].arena + at) != *next) { /* every rank reduces the same partials */
            fprintf(M->err, "mpk-run: step %llu: rank %u picked token %d, rank 0 token %d\n",
                    (unsigned long long)M->step, r, ld_i32(M->ranks[r].arena + at), *next);
            return false;
        }
    if (!logits_finite(M, *next))
        return false;
    if (logits) {
        const mpkb_tensor *lg = &b->tensors[b->meta->logits];
        uint64_t cols = mpkb_numel(lg);
        for (uint32_t r = 0; r < M->nranks; r++)
            for (uint64_t i = 0; i < cols; i++)
                logits[r * cols + i] = ld(lg->dtype, M->ranks[r].arena + lg->offset, i);
    }
    M->step++;
    return true;
}

/* Rank r's part of a split weight: part r of tp along dim d of the
 * checkpoint tensor at src, into a buffer the weights own. */
static const void *part_of(mpk_weights *w, const mpkb_tensor *t, const void *src, uint32_t rank, uint32_t tp)
{
    int d = t->split - 1;
    uint64_t outer = 1, inner = mpkb_dtype_size(t->dtype);
    for (int i = 0; i < d; i++)
        outer *= t->dims[i];
    for (int i = d + 1; i < t->ndim; i++)
        inner *= t->dims[i];
    uint64_t len = t->dims[d] * inner; /* bytes of one part per outer index */
    uint8_t *dst = mpk_weights_alloc(w, t->nbytes);
    if (!dst)
        return NULL;
    for (uint64_t o = 0; o < outer; o++)
        memcpy(dst + o * len, (const uint8_t *)src + (o * tp + rank) * len, len);
    return dst;
}

const void **mpk_bind_weights(const mpkb_blob *b, const char *path, uint32_t rank, mpk_weights **w, FILE *err)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->ntensors; i++)
        n += b->tensors[i].space == MPKB_SPACE_WEIGHT && b->tensors[i].base == i;
    mpk_weight_req *req = calloc(n + 1, sizeof *req);
    uint32_t *which = calloc(n + 1, sizeof *which);
    const void **table = calloc(b->ntensors + 1, sizeof *table);
    if (!req || !which || !table) {
        free(req), free(which), free(table);
        return NULL;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space != MPKB_SPACE_WEIGHT || t->base != i)
            continue;
        req[k].name = mpkb_str(b, t->name);
        req[k].dtype = t->dtype;
        req[k].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            req[k].dims[d] = t->dims[d];
        if (t->split) /* the checkpoint holds the whole tensor */
            req[k].dims[t->split - 1] *= b->meta->tp;
        which[k++] = i;
    }
    *w = mpk_weights_open(path, req, n, err);
    for (uint32_t j = 0; *w && j < n; j++) {
        const mpkb_tensor *t = &b->tensors[which[j]];
        table[which[j]] = t->split ? part_of(*w, t, req[j].data, rank, b->meta->tp) : req[j].data;
        if (!table[which[j]]) {
            fprintf(err, "mpk-run: out of memory for rank %u's part of %s\n", rank, req[j].name);
            mpk_weights_close(*w);
            *w = NULL;
        }
    }
    free(req);
    free(which);
    if (!*w) {
        free(table);
        return NULL;
    }
    return table;
}
