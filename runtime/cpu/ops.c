/*
 * ops.c - what each task kind computes, on the CPU: op_NAME for every row
 * MPKB_TASKOP(ID, NAME, ...) of mpk/taskops.def, the reference the GPU
 * executor is tested against. mpk-blob(5) specifies each kind; this file
 * is that text as code, one function per kind, in the table's order.
 *
 * The invariants every op keeps:
 *   - Operands and immediates are read only through the kind's named view
 *     (t->matvec.x, t->attention.scale), never by slot number.
 *   - Shapes, ranges and spaces were checked by the reader (blob/read.c,
 *     check_NAME), so an op only checks what depends on runtime values:
 *     the token id and the position.
 *   - Values stay fp32 from their load (ld) to their store (st), which is
 *     the only rounding point; ops that share a computation (rmsnorm, rope)
 *     share the function, so they round alike.
 *   - An op writes only its own part of its outputs (its range, its tile,
 *     its KV chunk), so tasks of one event may run in any order.
 *   - No op allocates: the executor sized c->scratch, c->scores and c->rows
 *     for the largest task of the blob.
 *
 * The table at the bottom is expanded from taskops.def, so a row without
 * its op_NAME here is an undeclared identifier: it does not compile.
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* ---- shared pieces ---------------------------------------------------------- */

static float silu(float v) { return v / (1.0f + expf(-v)); }

/* v[0..n) = elements first.. of tensor ti, as fp32. */
static void load_row(const cpu_ctx *c, uint32_t ti, uint64_t first, uint64_t n, float *v)
{
    const uint8_t *p = ptr(c, ti);
    uint32_t d = dt(c, ti);
    for (uint64_t i = 0; i < n; i++)
        v[i] = ld(d, p, first + i);
}

/* Elements first.. of tensor ti = v[0..n), rounded to its dtype. */
static void store_row(const cpu_ctx *c, uint32_t ti, uint64_t first, uint64_t n, const float *v)
{
    uint8_t *p = ptr(c, ti);
    uint32_t d = dt(c, ti);
    for (uint64_t i = 0; i < n; i++)
        st(d, p, first + i, v[i]);
}

/* rmsnorm with weight gamma (optional) and rope with inverse frequencies
 * table at position pos (optional) of one d-vector, in place, in fp32. */
static void norm_rope(const cpu_ctx *c, float *v, uint64_t d, uint32_t gamma, float eps, uint32_t table,
                      int32_t pos)
{
    if (gamma != MPKB_NONE) {
        float ss = 0;
        for (uint64_t i = 0; i < d; i++)
            ss += v[i] * v[i];
        float r = 1.0f / sqrtf(ss / (float)d + eps);
        const uint8_t *gp = ptr(c, gamma);
        uint32_t gd = dt(c, gamma);
        for (uint64_t i = 0; i < d; i++)
            v[i] = ld(gd, gp, i) * (v[i] * r);
    }
    if (table != MPKB_NONE) {
        const uint8_t *f = ptr(c, table);
        uint64_t h = d / 2;
        for (uint64_t i = 0; i < h; i++) {
            float ang = (float)pos * ld(MPKB_F32, f, i);
            float cs = cosf(ang), sn = sinf(ang), a = v[i], b = v[i + h];
            v[i] = a * cs - b * sn;
            v[i + h] = b * cs + a * sn;
        }
    }
}

/* Argmax partials are f32 [tiles, 2]: the best value, then its column's
 * bits as an i32. */
static void put_partial(uint8_t *partials, int32_t tile, float best, int32_t at)
{
    st(MPKB_F32, partials, (uint64_t)tile * 2, best);
    st_i32(partials + 8 * (uint64_t)tile + 4, at);
}

/* ---- the ops, in taskops.def's order --------------------------------------- */

static bool op_inputs(const cpu_ctx *c, const mpkb_task *t)
{
    for (uint32_t r = 0; r < c->nrows; r++) {
        st_i32(ptr(c, t->inputs.token) + 4 * r, c->tokens[r]);
        if (t->inputs.pos != MPKB_NONE)
            st_i32(ptr(c, t->inputs.pos) + 4 * r, c->positions[r]);
    }
    return true;
}

/* Row r's position (an i32[n] tensor), checked against the cache's S. */
static bool position(const cpu_ctx *c, uint32_t pos_t, uint64_t r, uint64_t S, int32_t *pos)
{
    *pos = ld_i32(ptr(c, pos_t) + 4 * r);
    if (*pos < 0 || (uint64_t)*pos >= S) {
        fprintf(c->err, "mpk-run: position %d is outside the KV cache (%llu positions)\n", *pos,
                (unsigned long long)S);
        return false;
    }
    return true;
}

static bool op_embed(const cpu_ctx *c, const mpkb_task *t)
{
    const mpkb_tensor *tab = tn(c, t->embed.table);
    uint64_t rows = tn(c, t->embed.ids)->dims[0], H = tab->dims[1];
    const uint8_t *tp = ptr(c, t->embed.table);
    uint8_t *op = ptr(c, t->embed.out);
    uint32_t od = dt(c, t->embed.out);
    for (uint64_t r = 0; r < rows; r++) {
        int32_t id = ld_i32(ptr(c, t->embed.ids) + 4 * r);
        if (id < 0 || (uint64_t)id >= tab->dims[0]) {
            fprintf(c->err, "mpk-run: token id %d is outside the vocabulary (0..%u)\n", id, tab->dims[0] - 1);
            return false;
        }
        for (uint64_t i = (uint64_t)t->embed.lo; i < (uint64_t)t->embed.hi; i++)
            st(od, op, r * H + i, ld(tab->dtype, tp, (uint64_t)id * H + i));
    }
    return true;
}

/* out[m, lo..hi) = in[m] . w[lo..hi), for each of x's rows m, where in is
 * x (or its prologue: rmsnorm with pro as gamma, or silu(x) * pro), plus
 * residual; with EPI_ARGMAX also the argmax of the unsummed rows. */
static bool op_matvec(const cpu_ctx *c, const mpkb_task *t)
{
    const mpkb_tensor *x = tn(c, t->matvec.x), *w = tn(c, t->matvec.w);
    uint64_t m_rows = x->dims[0], k = x->dims[1], n = w->dims[0];
    const uint8_t *xp = ptr(c, t->matvec.x), *wp = ptr(c, t->matvec.w);
    uint8_t *op = ptr(c, t->matvec.out);
    uint32_t xd = x->dtype, wd = w->dtype, od = dt(c, t->matvec.out);
    float *in = c->scratch;
    for (uint64_t m = 0; m < m_rows; m++) {
        if (t->flags & MPKB_F_PRO_RMSNORM) {
            load_row(c, t->matvec.x, m * k, k, in);
            norm_rope(c, in, k, t->matvec.pro, t->matvec.eps, MPKB_NONE, 0);
        } else if (t->flags & MPKB_F_PRO_SILU_MUL) {
            const uint8_t *bp = ptr(c, t->matvec.pro);
            uint32_t bd = dt(c, t->matvec.pro);
            for (uint64_t i = 0; i < k; i++)
                in[i] = silu(ld(xd, xp, m * k + i)) * ld(bd, bp, m * k + i);
        } else {
            load_row(c, t->matvec.x, m * k, k, in);
        }
        float best = -INFINITY;
        int32_t best_at = t->matvec.lo;
        for (uint64_t r = (uint64_t)t->matvec.lo; r < (uint64_t)t->matvec.hi; r++) {
            float acc = 0;
            if (wd == MPKB_BF16) { /* the common case, without ld's switch */
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
                acc += ld(dt(c, t->matvec.residual), ptr(c, t->matvec.residual), m * n + r);
            st(od, op, m * n + r, acc);
        }
        if (t->flags & MPKB_F_EPI_ARGMAX)
            put_partial(ptr(c, t->matvec.partials), t->matvec.tile, best, best_at);
    }
    return true;
}

/* KV head kv_head's query heads over chunk `chunk` of `chunks` of the
 * cache, for each of the step's n rows: first every row whose position
 * falls in the chunk appends its k and v there (k normed and roped), then
 * each row's heads' q (normed and roped) attend to the chunk's positions
 * up to the row's (causal: a row sees the prompt up to itself). DIRECT:
 * one chunk, the result goes to out; else out gets the chunk's
 * unnormalised sum, max and denominator per row and head for attn_merge. */
static bool op_attention(const cpu_ctx *c, const mpkb_task *t)
{
    const mpkb_tensor *q = tn(c, t->attention.q), *cache = tn(c, t->attention.cache);
    uint64_t R = q->dims[0], H = q->dims[1], D = q->dims[2], G = cache->dims[1], S = cache->dims[2];
    uint64_t g = (uint64_t)t->attention.kv_head, ch = (uint64_t)t->attention.chunk;
    uint64_t B = (uint64_t)t->attention.block, nch = (uint64_t)t->attention.chunks;
    uint64_t per = H / G, P = mpkb_kv_blocks(S, B, nch);
    uint8_t *cp = ptr(c, t->attention.cache);
    uint32_t cd = cache->dtype;
    float *v = c->scratch;
    uint64_t kb = (0 * G + g) * S, vb = (1 * G + g) * S; /* rows of head g's planes */
    for (uint64_t r = 0; r < R; r++) {
        int32_t pos;
        if (!position(c, t->attention.pos, r, S, &pos))
            return false;
        if (((uint64_t)pos / B) % nch != ch)
            continue;
        /* append row r's k and v at pos's cache row */
        uint64_t row = mpkb_kv_row((uint64_t)pos, B, nch, P);
        load_row(c, t->attention.k, (r * G + g) * D, D, v);
        norm_rope(c, v, D, t->attention.k_norm, t->attention.k_eps, t->attention.k_rope, pos);
        const uint8_t *vp = ptr(c, t->attention.v);
        uint32_t vd = dt(c, t->attention.v);
        for (uint64_t i = 0; i < D; i++) {
            st(cd, cp, (kb + row) * D + i, v[i]);
            st(cd, cp, (vb + row) * D + i, ld(vd, vp, (r * G + g) * D + i));
        }
    }
    uint8_t *op = ptr(c, t->attention.out);
    uint32_t od = dt(c, t->attention.out);
    float *acc = v + D, *s = c->scores;
    for (uint64_t r = 0; r < R; r++) {
        int32_t pos;
        (void)position(c, t->attention.pos, r, S, &pos); /* checked above */
        /* the chunk's positions up to pos, as cache rows, in order */
        uint64_t n = 0, *rows = c->rows;
        for (uint64_t b = ch; b * B <= (uint64_t)pos; b += nch)
            for (uint64_t j = b * B; j < (b + 1) * B && j <= (uint64_t)pos; j++)
                rows[n++] = mpkb_kv_row(j, B, nch, P);
        for (uint64_t h = r * H + g * per; h < r * H + (g + 1) * per; h++) {
            load_row(c, t->attention.q, h * D, D, v);
            norm_rope(c, v, D, t->attention.q_norm, t->attention.q_eps, t->attention.q_rope, pos);
            float mx = -INFINITY, sum = 0;
            for (uint64_t j = 0; j < n; j++) {
                float dot = 0;
                for (uint64_t i = 0; i < D; i++)
                    dot += v[i] * ld(cd, cp, (kb + rows[j]) * D + i);
                s[j] = dot * t->attention.scale;
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
            } else { /* partials f32 [n * H, chunks, D + 2] */
                uint64_t base = (h * nch + ch) * (D + 2);
                for (uint64_t i = 0; i < D; i++)
                    st(MPKB_F32, op, base + i, acc[i]);
                st(MPKB_F32, op, base + D, n ? mx : -INFINITY);
                st(MPKB_F32, op, base + D + 1, sum);
            }
        }
    }
    return true;
}

/* The chunks' partials of kv head kv_head's `group` query heads, rescaled
 * to the largest maximum and normalised; an empty chunk (max -inf) adds
 * nothing. */
static bool op_attn_merge(const cpu_ctx *c, const mpkb_task *t)
{
    const mpkb_tensor *o = tn(c, t->attn_merge.out);
    uint64_t D = o->dims[2], nch = (uint64_t)t->attn_merge.chunks, per = (uint64_t)t->attn_merge.group;
    uint64_t g = (uint64_t)t->attn_merge.kv_head, R = o->dims[0], H = o->dims[1];
    const uint8_t *pp = ptr(c, t->attn_merge.partials);
    uint8_t *op = ptr(c, t->attn_merge.out);
    for (uint64_t hr = 0; hr < R * per; hr++) { /* row hr / per, head g * per + hr % per */
        uint64_t h = hr / per * H + g * per + hr % per;
        float mx = -INFINITY, sum = 0;
        for (uint64_t ch = 0; ch < nch; ch++) {
            float m = ld(MPKB_F32, pp, (h * nch + ch) * (D + 2) + D);
            mx = m > mx ? m : mx;
        }
        for (uint64_t ch = 0; ch < nch; ch++) {
            uint64_t b = (h * nch + ch) * (D + 2);
            float m = ld(MPKB_F32, pp, b + D);
            sum += m == -INFINITY ? 0 : ld(MPKB_F32, pp, b + D + 1) * expf(m - mx);
        }
        for (uint64_t i = 0; i < D; i++) {
            float a = 0;
            for (uint64_t ch = 0; ch < nch; ch++) {
                uint64_t b = (h * nch + ch) * (D + 2);
                float m = ld(MPKB_F32, pp, b + D);
                if (m != -INFINITY)
                    a += ld(MPKB_F32, pp, b + i) * expf(m - mx);
            }
            st(o->dtype, op, h * D + i, a / sum);
        }
    }
    return true;
}

static bool op_argmax_part(const cpu_ctx *c, const mpkb_task *t)
{
    const uint8_t *xp = ptr(c, t->argmax_part.x);
    uint32_t xd = dt(c, t->argmax_part.x);
    float best = -INFINITY;
    int32_t at = t->argmax_part.lo;
    for (uint64_t i = (uint64_t)t->argmax_part.lo; i < (uint64_t)t->argmax_part.hi; i++) {
        float v = ld(xd, xp, i);
        if (v > best)
            best = v, at = (int32_t)i;
    }
    put_partial(ptr(c, t->argmax_part.partials), t->argmax_part.tile, best, at);
    return true;
}

/* The first column of the largest value over all tiles (of every rank,
 * with ALL_RANKS: rank q's columns start at q * cols_per_rank); 0 when
 * every value is NaN. */
static bool op_argmax_reduce(const cpu_ctx *c, const mpkb_task *t)
{
    uint64_t tiles = mpkb_numel(tn(c, t->argmax_reduce.partials)) / 2;
    uint32_t nr = (t->flags & MPKB_F_ALL_RANKS) ? c->nranks : 1;
    float best = -INFINITY;
    int32_t at = -1;
    for (uint32_t q = 0; q < nr; q++) {
        const uint8_t *pp = ptr_on(c, nr > 1 ? &c->ranks[q] : c->rank, t->argmax_reduce.partials);
        int32_t base = nr > 1 ? (int32_t)q * t->argmax_reduce.cols_per_rank : 0;
        for (uint64_t i = 0; i < tiles; i++) {
            float v = ld(MPKB_F32, pp, 2 * i);
            int32_t col = ld_i32(pp + 8 * i + 4) + base;
            if (v > best || (v == best && at >= 0 && col < at) || (at < 0 && v == best))
                best = v, at = col;
        }
    }
    st_i32(ptr(c, t->argmax_reduce.out), at < 0 ? 0 : at);
    return true;
}

/* Rows lo..hi of x, each normed over its last dimension. */
static bool op_rmsnorm(const cpu_ctx *c, const mpkb_task *t)
{
    uint64_t d = tn(c, t->rmsnorm.gamma)->dims[0];
    for (uint64_t r = (uint64_t)t->rmsnorm.lo; r < (uint64_t)t->rmsnorm.hi; r++) {
        load_row(c, t->rmsnorm.x, r * d, d, c->scratch);
        norm_rope(c, c->scratch, d, t->rmsnorm.gamma, t->rmsnorm.eps, MPKB_NONE, 0);
        store_row(c, t->rmsnorm.out, r * d, d, c->scratch);
    }
    return true;
}

/* Head vectors lo..hi of x [n, H, D] (row h / H), rotated by their row's
 * position. */
static bool op_rope(const cpu_ctx *c, const mpkb_task *t)
{
    uint64_t d = tn(c, t->rope.x)->dims[2], H = tn(c, t->rope.x)->dims[1];
    for (uint64_t h = (uint64_t)t->rope.lo; h < (uint64_t)t->rope.hi; h++) {
        int32_t pos = ld_i32(ptr(c, t->rope.pos) + 4 * (h / H));
        load_row(c, t->rope.x, h * d, d, c->scratch);
        norm_rope(c, c->scratch, d, MPKB_NONE, 0, t->rope.inv_freq, pos);
        store_row(c, t->rope.out, h * d, d, c->scratch);
    }
    return true;
}

static bool op_add(const cpu_ctx *c, const mpkb_task *t)
{
    const uint8_t *ap = ptr(c, t->add.a), *bp = ptr(c, t->add.b);
    uint8_t *op = ptr(c, t->add.out);
    uint32_t ad = dt(c, t->add.a), bd = dt(c, t->add.b), od = dt(c, t->add.out);
    for (uint64_t i = (uint64_t)t->add.lo; i < (uint64_t)t->add.hi; i++)
        st(od, op, i, ld(ad, ap, i) + ld(bd, bp, i));
    return true;
}

static bool op_mul(const cpu_ctx *c, const mpkb_task *t)
{
    const uint8_t *ap = ptr(c, t->mul.a), *bp = ptr(c, t->mul.b);
    uint8_t *op = ptr(c, t->mul.out);
    uint32_t ad = dt(c, t->mul.a), bd = dt(c, t->mul.b), od = dt(c, t->mul.out);
    for (uint64_t i = (uint64_t)t->mul.lo; i < (uint64_t)t->mul.hi; i++)
        st(od, op, i, ld(ad, ap, i) * ld(bd, bp, i));
    return true;
}

static bool op_silu(const cpu_ctx *c, const mpkb_task *t)
{
    const uint8_t *xp = ptr(c, t->silu.x);
    uint8_t *op = ptr(c, t->silu.out);
    uint32_t xd = dt(c, t->silu.x), od = dt(c, t->silu.out);
    for (uint64_t i = (uint64_t)t->silu.lo; i < (uint64_t)t->silu.hi; i++)
        st(od, op, i, silu(ld(xd, xp, i)));
    return true;
}

/* rows runs of len elements, bytes as they are: dst's row r from src at
 * src_off + r * src_stride. */
static bool op_copy(const cpu_ctx *c, const mpkb_task *t)
{
    uint64_t es = mpkb_dtype_size(dt(c, t->copy.src));
    uint8_t *dst = ptr(c, t->copy.dst);
    const uint8_t *src = ptr(c, t->copy.src);
    for (int64_t r = 0; r < t->copy.rows; r++)
        memmove(dst + (uint64_t)(r * t->copy.len) * es, /* a hostile blob may overlap them */
                src + (uint64_t)(t->copy.src_off + r * t->copy.src_stride) * es, (uint64_t)t->copy.len * es);
    return true;
}

/* out[lo..hi) = the sum of every rank's partial (in rank order, so every
 * rank gets the same bits), plus residual. */
static bool op_allreduce(const cpu_ctx *c, const mpkb_task *t)
{
    const uint8_t *rp = NULL;
    uint32_t rd = 0;
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        rp = ptr(c, t->allreduce.residual), rd = dt(c, t->allreduce.residual);
    uint8_t *op = ptr(c, t->allreduce.out);
    uint32_t od = dt(c, t->allreduce.out);
    for (uint64_t i = (uint64_t)t->allreduce.lo; i < (uint64_t)t->allreduce.hi; i++) {
        float sum = 0;
        for (uint32_t q = 0; q < c->nranks; q++)
            sum += ld(MPKB_F32, ptr_on(c, &c->ranks[q], t->allreduce.partial), i);
        if (rp)
            sum = ld(rd, rp, i) + sum;
        st(od, op, i, sum);
    }
    return true;
}

/* partials[part, m, r] = x[m, k0..k1) . w[r, k0..k1) for rows r of lo..hi,
 * [k0, k1) the task's part of K (mpkb_kcut); no prologue, no epilogue:
 * part_sum adds the parts. */
static bool op_matvec_part(const cpu_ctx *c, const mpkb_task *t)
{
    const mpkb_tensor *x = tn(c, t->matvec_part.x), *w = tn(c, t->matvec_part.w);
    uint64_t m_rows = x->dims[0], k = x->dims[1], n = w->dims[0], p = (uint64_t)t->matvec_part.part;
    uint64_t k0 = mpkb_kcut(k, (uint64_t)t->matvec_part.parts, p), k1 = mpkb_kcut(k, (uint64_t)t->matvec_part.parts, p + 1);
    const uint8_t *wp = ptr(c, t->matvec_part.w);
    uint8_t *pp = ptr(c, t->matvec_part.partials);
    uint32_t wd = w->dtype;
    float *in = c->scratch;
    for (uint64_t m = 0; m < m_rows; m++) {
        load_row(c, t->matvec_part.x, m * k + k0, k1 - k0, in);
        for (uint64_t r = (uint64_t)t->matvec_part.lo; r < (uint64_t)t->matvec_part.hi; r++) {
            float acc = 0;
            for (uint64_t i = k0; i < k1; i++)
                acc += in[i - k0] * ld(wd, wp, r * k + i);
            st(MPKB_F32, pp, (p * m_rows + m) * n + r, acc);
        }
    }
    return true;
}

/* out[lo..hi) = the sum of the parts' partials, in part order, plus
 * residual (rounded once, at the store). */
static bool op_part_sum(const cpu_ctx *c, const mpkb_task *t)
{
    const uint8_t *pp = ptr(c, t->part_sum.partials), *rp = NULL;
    uint32_t rd = 0;
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        rp = ptr(c, t->part_sum.residual), rd = dt(c, t->part_sum.residual);
    uint8_t *op = ptr(c, t->part_sum.out);
    uint32_t od = dt(c, t->part_sum.out);
    uint64_t n = mpkb_numel(tn(c, t->part_sum.out)), parts = tn(c, t->part_sum.partials)->dims[0];
    for (uint64_t i = (uint64_t)t->part_sum.lo; i < (uint64_t)t->part_sum.hi; i++) {
        float sum = 0;
        for (uint64_t q = 0; q < parts; q++)
            sum += ld(MPKB_F32, pp, q * n + i);
        if (rp)
            sum = ld(rd, rp, i) + sum;
        st(od, op, i, sum);
    }
    return true;
}

/* ---- dispatch ------------------------------------------------------------- */

typedef bool (*cpu_op)(const cpu_ctx *c, const mpkb_task *t);

static const cpu_op ops[MPKB_NOPS] = {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) [MPKB_OP_##ID] = op_##name,
#include "mpk/taskops.def"
#undef MPKB_TASKOP
};

bool mpk_cpu_run_task(const cpu_ctx *c, const mpkb_task *t)
{
    return t->op < MPKB_NOPS && ops[t->op](c, t);
}
