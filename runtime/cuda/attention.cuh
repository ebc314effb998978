/*
 * attention.cuh - ATTENTION: attention of one kv head over one chunk of
 * the KV cache (man 5 mpk-blob) for each row of the step (one when
 * decoding, the chunk's tokens in a prompt chunk): the q heads of the
 * group and the new k (each rmsnormed and roped where the task says), the
 * new k and v of every row appended at its position by the chunk that
 * holds it, then per row (causal: up to its own position) an online
 * softmax over groups of ABLK positions whose bf16 K and V rows are copied
 * in with cp.async; one chunk writes the output itself (MPKB_F_DIRECT),
 * several write partials for ATTN_MERGE.
 */
#ifndef MPK_CUDA_ATTENTION_CUH
#define MPK_CUDA_ATTENTION_CUH

#include "common.cuh"

#define ABLK 64   /* positions per block of the online softmax */
#define AOUT 4    /* outputs per thread, so group heads x D <= NT * AOUT */
#define AMAXD 256 /* the head dim the kernel supports */

/* Shared memory: q of the group's heads (per x D floats), the new k (D),
 * scores (per x ABLK), running max, sum and rescale (per each); then,
 * 16-byte aligned, the K and V rows of one block (ABLK x D bf16 each). */
__host__ __device__ __forceinline__ uint32_t at_floats(uint32_t per, uint32_t D)
{
    return per * D + D + per * ABLK + 3 * per;
}

__host__ __device__ inline uint32_t smem_attention(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    const mpkb_tensor *q = &T[t->attention.q];
    uint32_t D = q->dims[2], per = q->dims[1] / T[t->attention.cache].dims[1];
    if (D > AMAXD || per * D > NT * AOUT) {
#ifndef __CUDA_ARCH__
        snprintf(why, n, "attention with head dim %u and %u query heads per kv head is beyond the GPU kernel "
                 "(head dim <= %d, heads x dim <= %d)", D, per, AMAXD, NT * AOUT);
#else
        (void)why, (void)n;
#endif
        return UINT32_MAX;
    }
    return 4 * at_floats(per, D) + 16 + 2 * 2 * ABLK * D;
}

/* rmsnorm (optional) and rope (optional) of one D-vector in shared memory,
 * by one warp. */
__device__ void warp_norm_rope(const kparams &P, float *v, uint32_t D, uint32_t gamma, float eps, uint32_t table,
                               int32_t pos)
{
    uint32_t lane = threadIdx.x & 31;
    if (gamma != MPKB_NONE) {
        float ss = 0;
        for (uint32_t i = lane; i < D; i += 32)
            ss += v[i] * v[i];
        float r = 1.0f / sqrtf(warp_sum(ss) / (float)D + eps);
        tview g = view(P, gamma);
        for (uint32_t i = lane; i < D; i += 32)
            v[i] = ldv(g, i) * (v[i] * r);
        __syncwarp();
    }
    if (table != MPKB_NONE) {
        uint32_t h = D / 2;
        tview f = view(P, table);
        for (uint32_t i = lane; i < h; i += 32) {
            float ang = (float)pos * ldv(f, i);
            float c = cosf(ang), s = sinf(ang), a = v[i], b = v[i + h];
            v[i] = a * c - b * s;
            v[i + h] = b * c + a * s;
        }
        __syncwarp();
    }
}

/* The attention of row r (position pos) of q's group heads over chunk c,
 * the chunk's K and V already in the cache: an online softmax over groups
 * of ABLK positions up to pos, then the row's output or partials. With
 * q_ready, q (normed, roped) and the running max and sum are in place
 * already; the first group of positions of the chunk's first block has
 * its first pre rows of K and V in kbuf and vbuf already (attention_pre),
 * and row newrow too (-1: none; the row appended, attention_one). */
__device__ void attend_row(const kparams &P, const mpkb_task *t, uint32_t r, int32_t pos, float *sm, bool last,
                           bool q_ready = false, uint32_t pre = 0, int32_t newrow = -1)
{
    const mpkb_tensor *Q = &P.tensors[t->attention.q], *CA = &P.tensors[t->attention.cache];
    uint32_t H = Q->dims[1], D = Q->dims[2], G = CA->dims[1], S = CA->dims[2];
    uint32_t g = (uint32_t)t->attention.kv_head, c = (uint32_t)t->attention.chunk;
    uint32_t B = (uint32_t)t->attention.block, nch = (uint32_t)t->attention.chunks;
    uint32_t per = H / G, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint32_t PB = (uint32_t)(((uint64_t)S + (uint64_t)B * nch - 1) / ((uint64_t)B * nch)); /* blocks per chunk */
    uint8_t *cp = P.tp[t->attention.cache];
    uint32_t cd = CA->dtype;
    float *qs = sm, *sc = qs + per * D + D, *mrun = sc + per * ABLK, *lrun = mrun + per, *alpha = lrun + per;
    unsigned short *kbuf = (unsigned short *)(((uintptr_t)(sm + at_floats(per, D)) + 15) & ~(uintptr_t)15);
    unsigned short *vbuf = kbuf + ABLK * D;
    bool stage = cd == MPKB_BF16 && D % 8 == 0;
    uint64_t kbase = ((uint64_t)0 * G + g) * S * D, vbase = ((uint64_t)1 * G + g) * S * D;
    uint32_t head0 = r * H + g * per; /* the row's first head of the group, in q and out */
    for (uint32_t h = q_ready ? per : warp; h < per; h += NW) {
        float *q = qs + h * D;
        for (uint32_t i = lane; i < D; i += 32)
            q[i] = ldx(Q->dtype, P.tp[t->attention.q], (uint64_t)(head0 + h) * D + i);
        __syncwarp();
        warp_norm_rope(P, q, D, t->attention.q_norm, t->attention.q_eps, t->attention.q_rope, pos);
        if (lane == 0)
            mrun[h] = -INFINITY, lrun[h] = 0;
    }
    __syncthreads(); /* q ready */
    float acc[AOUT];
#pragma unroll
    for (int u = 0; u < AOUT; u++)
        acc[u] = 0;
    uint32_t nout = per * D, E = D / 32;
    /* bf16 rows of 32 x 2, 4 or 8 elements: lane l holds elements l E .. l E + E - 1 */
    bool vec = cd == MPKB_BF16 && D % 32 == 0 && (E == 2 || E == 4 || E == 8);
    bool any = false;
    for (uint32_t kk = 0; kk < PB; kk++) {
        uint64_t jlo = (uint64_t)(c + (uint64_t)kk * nch) * B;
        if (jlo > (uint64_t)pos)
            break;
        uint64_t jhi = jlo + B < (uint64_t)pos + 1 ? jlo + B : (uint64_t)pos + 1;
        uint64_t rbase = ((uint64_t)c * PB + kk) * B; /* the cache row of jlo */
        any = true;
        for (uint64_t j0 = jlo; j0 < jhi; j0 += ABLK) {
            uint32_t nb = jhi - j0 < ABLK ? (uint32_t)(jhi - j0) : ABLK;
            uint64_t r0 = rbase + (j0 - jlo);
            if (stage) {
                uint32_t pieces = D / 8; /* 16 bytes each */
                bool first = kk == 0 && j0 == jlo;
                uint32_t skip = first ? (pre < nb ? pre : nb) : 0; /* rows already there */
                for (uint32_t i = threadIdx.x + skip * pieces; i < nb * pieces; i += NT) {
                    uint32_t r = i / pieces, q16 = i % pieces;
                    if (first && (int32_t)r == newrow)
                        continue;
                    cp_async16(kbuf + r * D + q16 * 8, cp + 2 * (kbase + (r0 + r) * D) + 16 * q16);
                    cp_async16(vbuf + r * D + q16 * 8, cp + 2 * (vbase + (r0 + r) * D) + 16 * q16);
                }
                cp_async_wait_all();
                __syncthreads();
            }
            /* scores: warp w takes positions j0 + w, j0 + w + NW, ... */
            for (uint32_t jj = warp; jj < ABLK; jj += NW) {
                uint64_t j = j0 + jj;
                if (j >= jhi) {
                    for (uint32_t h = lane; h < per; h += 32)
                        sc[h * ABLK + jj] = -INFINITY;
                    continue;
                }
                float k[AMAXD / 32];
                if (stage) { /* every bf16 row with D % 8 == 0 (so every vec row) is in kbuf */
#pragma unroll
                    for (int e = 0; e < AMAXD / 32; e++) {
                        uint32_t i = vec ? lane * E + e : lane + 32 * e;
                        k[e] = (vec ? (uint32_t)e < E : i < D) ? __uint_as_float((uint32_t)kbuf[jj * D + i] << 16) : 0.0f;
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < AMAXD / 32; e++)
                        k[e] = lane + 32 * e < D ? ldx(cd, cp, kbase + (rbase + (j - jlo)) * D + lane + 32 * e) : 0.0f;
                }
                for (uint32_t h = 0; h < per; h++) {
                    const float *q = qs + h * D;
                    float d = 0;
#pragma unroll
                    for (int e = 0; e < AMAXD / 32; e++) {
                        uint32_t i = vec ? lane * E + e : lane + 32 * e;
                        if ((vec && (uint32_t)e < E) || (!vec && i < D))
                            d += q[i] * k[e];
                    }
                    d = warp_sum(d);
                    if (lane == 0)
                        sc[h * ABLK + jj] = d * t->attention.scale;
                }
            }
            __syncthreads();
            /* the running max and sum of each head; scores become weights */
            for (uint32_t h = warp; h < per; h += NW) {
                float *s = sc + h * ABLK;
                float mx = warp_max(fmaxf(s[lane], s[lane + 32]));
                float mnew = fmaxf(mrun[h], mx);
                float p0 = s[lane] == -INFINITY ? 0.0f : expf(s[lane] - mnew);
                float p1 = s[lane + 32] == -INFINITY ? 0.0f : expf(s[lane + 32] - mnew);
                float sum = warp_sum(p0 + p1);
                __syncwarp();
                s[lane] = p0, s[lane + 32] = p1;
                if (lane == 0) {
                    float a = mrun[h] == -INFINITY ? 0.0f : expf(mrun[h] - mnew);
                    alpha[h] = a;
                    lrun[h] = lrun[h] * a + sum;
                    mrun[h] = mnew;
                }
            }
            __syncthreads();
#pragma unroll
            for (int u = 0; u < AOUT; u++) {
                uint32_t o = threadIdx.x + NT * u;
                if (o < nout) {
                    uint32_t h = o / D, d = o % D;
                    const float *p = sc + h * ABLK;
                    const uint8_t *vp = cp;
                    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    uint32_t jj = 0;
                    if (stage)
                        for (; jj < nb; jj++)
                            a0 += p[jj] * __uint_as_float((uint32_t)vbuf[jj * D + d] << 16);
                    for (; jj + 4 <= nb; jj += 4) {
                        float v0 = ldx(cd, vp, vbase + (r0 + jj) * D + d), v1 = ldx(cd, vp, vbase + (r0 + jj + 1) * D + d);
                        float v2 = ldx(cd, vp, vbase + (r0 + jj + 2) * D + d), v3 = ldx(cd, vp, vbase + (r0 + jj + 3) * D + d);
                        a0 += p[jj] * v0, a1 += p[jj + 1] * v1, a2 += p[jj + 2] * v2, a3 += p[jj + 3] * v3;
                    }
                    for (; jj < nb; jj++)
                        a0 += p[jj] * ldx(cd, vp, vbase + (r0 + jj) * D + d);
                    acc[u] = acc[u] * alpha[h] + ((a0 + a1) + (a2 + a3));
                }
            }
            __syncthreads();
        }
    }
    uint8_t *op = P.tp[t->attention.out];
    uint32_t od = P.tensors[t->attention.out].dtype;
#pragma unroll
    for (int u = 0; u < AOUT; u++) {
        uint32_t o = threadIdx.x + NT * u;
        if (o < nout) {
            uint32_t h = o / D, d = o % D, head = head0 + h;
            if (t->flags & MPKB_F_DIRECT) {
                stx(od, op, (uint64_t)head * D + d, acc[u] / lrun[h]);
            } else {
                float *pp = (float *)op + ((uint64_t)head * nch + c) * (D + 2);
                __stcg(pp + d, acc[u]);
                if (d == 0) {
                    __stcg(pp + D, any ? mrun[h] : -INFINITY);
                    __stcg(pp + D + 1, lrun[h]);
                }
            }
        }
    }
    if (!last)
        __syncthreads(); /* sm is the next row's */
}

/* ---- several rows (a chunk step) ----------------------------------------
 * The one-row path above goes through a row's heads with the whole CTA;
 * for R rows that is R times its latency. Here each warp takes (row, head)
 * items of its own, AI at a time, and goes through the chunk's positions
 * up to the items' positions with an online softmax in registers: lane l
 * holds elements l * E .. l * E + E of q, of each K and V row, and of the
 * accumulators (D = 32 E, bf16 cache). rmsnorm and rope of q and k run in
 * registers too: the rope partner of element i < D / 2 is i + D / 2, held
 * by lane l ^ 16. The items of all warps make a pass; the pass's K and V
 * rows are copied into kbuf and vbuf (cp.async, the whole CTA) ABLK
 * positions at a time, so that a position costs the warps shared-memory
 * reads, not two dependent L2 round trips each (113 us a task at 64 rows,
 * one round trip after another). */
#define AI(E) ((E) >= 4 ? 2 : 4) /* items per warp at a time */

/* What a chunk step's attention needs of kparams, passed by value: a
 * __noinline__ function given kparams by reference makes the kernel keep a
 * copy of all of it on its stack. */
typedef struct {
    const mpkb_tensor *T;
    uint8_t *const *tp;
} katt;

__device__ __forceinline__ tview kview(const katt &K, uint32_t ti)
{
    const mpkb_tensor *t = &K.T[ti];
    tview v = {K.tp[ti], t->dtype, t->space == MPKB_SPACE_WEIGHT || t->space == MPKB_SPACE_CONST};
    return v;
}

/* v (a lane's E elements of a D-vector at position pos): rmsnorm with
 * gamma (or none) and eps, then rope with the inverse frequencies table
 * (or none), as warp_norm_rope does in shared memory. */
template <int E>
__device__ __forceinline__ void lane_norm_rope(const katt &K, float (&v)[E], uint32_t gamma, float eps,
                                               uint32_t table, int32_t pos)
{
    uint32_t lane = threadIdx.x & 31, D = 32 * E;
    if (gamma != MPKB_NONE) {
        float ss = 0;
#pragma unroll
        for (int e = 0; e < E; e++)
            ss += v[e] * v[e];
        float r = 1.0f / sqrtf(warp_sum(ss) / (float)D + eps);
        tview g = kview(K, gamma);
#pragma unroll
        for (int e = 0; e < E; e++)
            v[e] = ldv(g, lane * E + e) * (v[e] * r);
    }
    if (table != MPKB_NONE) {
        tview f = kview(K, table);
        bool lo = lane < 16;
#pragma unroll
        for (int e = 0; e < E; e++) {
            float other = __shfl_xor_sync(0xffffffffu, v[e], 16);
            uint32_t i = lane * E + e, k = lo ? i : i - D / 2;
            float ang = (float)pos * ldv(f, k);
            float c = cosf(ang), sn = sinf(ang);
            v[e] = lo ? v[e] * c - other * sn : v[e] * c + other * sn;
        }
    }
}

/* A lane's E elements of row `row` of a staged block (kbuf or vbuf). */
template <int E>
__device__ __forceinline__ void lane_srow(const unsigned short *buf, uint32_t row, float (&k)[E])
{
    const unsigned short *kr = buf + row * (32 * E) + (threadIdx.x & 31) * E;
    uint32_t u[4] = {0, 0, 0, 0};
    if (E == 2) {
        u[0] = *(const unsigned *)kr;
    } else if (E == 4) {
        uint2 x = *(const uint2 *)kr;
        u[0] = x.x, u[1] = x.y;
    } else {
        uint4 x = *(const uint4 *)kr;
        u[0] = x.x, u[1] = x.y, u[2] = x.z, u[3] = x.w;
    }
#pragma unroll
    for (int e = 0; e < E; e += 2) {
        k[e] = bf16lo(u[e / 2]);
        k[e + 1] = bf16hi(u[e / 2]);
    }
}

template <int E>
__device__ __noinline__ void attention_rows(katt P, const mpkb_task *t, float *sm)
{
    __shared__ int32_t s_top[2]; /* the last position any item of a pass attends to, by pass parity */
    const int A = AI(E);
    const mpkb_tensor *Q = &P.T[t->attention.q], *CA = &P.T[t->attention.cache];
    uint32_t R = Q->dims[0], H = Q->dims[1], D = 32 * E, G = CA->dims[1], S = CA->dims[2];
    uint32_t g = (uint32_t)t->attention.kv_head, c = (uint32_t)t->attention.chunk;
    uint32_t B = (uint32_t)t->attention.block, nch = (uint32_t)t->attention.chunks;
    uint32_t per = H / G, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint32_t PB = (uint32_t)(((uint64_t)S + (uint64_t)B * nch - 1) / ((uint64_t)B * nch)); /* blocks per chunk */
    const int32_t *posv = (const int32_t *)P.tp[t->attention.pos];
    uint8_t *cp = P.tp[t->attention.cache];
    uint64_t kbase = ((uint64_t)0 * G + g) * S * D, vbase = ((uint64_t)1 * G + g) * S * D;
    const mpkb_tensor *KT = &P.T[t->attention.k], *VT = &P.T[t->attention.v];
    /* appends: a warp per row whose position lies in the chunk */
    for (uint32_t r = warp; r < R; r += NW) {
        int32_t pos = __ldcg(posv + r);
        uint32_t pb = (uint32_t)pos / B;
        if (pb % nch != c)
            continue;
        uint64_t row = ((uint64_t)(pb % nch) * PB + pb / nch) * B + (uint32_t)pos % B;
        uint64_t at = ((uint64_t)r * G + g) * D + lane * E;
        float k[E];
#pragma unroll
        for (int e = 0; e < E; e++)
            k[e] = ldx(KT->dtype, P.tp[t->attention.k], at + e);
        lane_norm_rope<E>(P, k, t->attention.k_norm, t->attention.k_eps, t->attention.k_rope, pos);
#pragma unroll
        for (int e = 0; e < E; e++) {
            stx(MPKB_BF16, cp, kbase + row * D + lane * E + e, k[e]);
            stx(MPKB_BF16, cp, vbase + row * D + lane * E + e, ldx(VT->dtype, P.tp[t->attention.v], at + e));
        }
    }
    __syncthreads(); /* the appended rows visible to the CTA */
    uint8_t *op = P.tp[t->attention.out];
    uint32_t od = P.T[t->attention.out].dtype;
    unsigned short *kbuf = (unsigned short *)(((uintptr_t)(sm + at_floats(per, D)) + 15) & ~(uintptr_t)15);
    unsigned short *vbuf = kbuf + ABLK * D;
    uint32_t NI = R * per; /* item i: row i / per, head g * per + i % per */
    for (uint32_t p0 = 0; p0 < NI; p0 += NW * A) {
        uint32_t i0 = p0 + warp * A;
        float q[A][E], acc[A][E], m[A], l[A];
        int32_t pos[A];
        int32_t top = -1;
        uint32_t par = (p0 / (NW * A)) & 1;
        if (threadIdx.x == 0)
            s_top[par] = -1; /* last read two passes ago, before this pass's barriers */
#pragma unroll
        for (int a = 0; a < A; a++) {
            uint32_t i = i0 + a;
            pos[a] = -1, m[a] = -INFINITY, l[a] = 0;
#pragma unroll
            for (int e = 0; e < E; e++)
                acc[a][e] = 0, q[a][e] = 0;
            if (i >= NI)
                continue;
            uint32_t r = i / per, head = r * H + g * per + i % per;
            pos[a] = __ldcg(posv + r);
#pragma unroll
            for (int e = 0; e < E; e++)
                q[a][e] = ldx(Q->dtype, P.tp[t->attention.q], (uint64_t)head * D + lane * E + e);
            lane_norm_rope<E>(P, q[a], t->attention.q_norm, t->attention.q_eps, t->attention.q_rope, pos[a]);
            top = pos[a] > top ? pos[a] : top;
        }
        __syncthreads(); /* s_top reset; the last pass is done with kbuf */
        if (lane == 0)
            atomicMax(&s_top[par], top);
        __syncthreads();
        int32_t all = s_top[par];
        bool staged = false;
        for (uint32_t kk = 0; kk < PB; kk++) {
            uint64_t jlo = (uint64_t)(c + (uint64_t)kk * nch) * B;
            if ((int64_t)jlo > (int64_t)all)
                break;
            uint64_t jhi = jlo + B < (uint64_t)all + 1 ? jlo + B : (uint64_t)all + 1;
            uint64_t rbase = ((uint64_t)c * PB + kk) * B; /* the cache row of jlo */
            for (uint64_t j0 = jlo; j0 < jhi; j0 += ABLK) {
                uint32_t nb = jhi - j0 < ABLK ? (uint32_t)(jhi - j0) : ABLK, pieces = D / 8; /* 16 bytes each */
                uint64_t r0 = rbase + (j0 - jlo);
                if (staged)
                    __syncthreads(); /* the warps are done with the block before */
                staged = true;
                for (uint32_t x = threadIdx.x; x < nb * pieces; x += NT) {
                    uint32_t rr = x / pieces, q16 = x % pieces;
                    cp_async16(kbuf + rr * D + q16 * 8, cp + 2 * (kbase + (r0 + rr) * D) + 16 * q16);
                    cp_async16(vbuf + rr * D + q16 * 8, cp + 2 * (vbase + (r0 + rr) * D) + 16 * q16);
                }
                cp_async_wait_all();
                __syncthreads();
                for (uint32_t jj = 0; jj < nb && (int64_t)(j0 + jj) <= (int64_t)top; jj++) {
                    uint64_t j = j0 + jj;
                    float kr[E], vr[E];
                    lane_srow<E>(kbuf, jj, kr);
                    lane_srow<E>(vbuf, jj, vr);
#pragma unroll
                    for (int a = 0; a < A; a++) {
                        if ((int64_t)j > (int64_t)pos[a]) /* causal; pos -1: no item */
                            continue;
                        float d = 0;
#pragma unroll
                        for (int e = 0; e < E; e++)
                            d += q[a][e] * kr[e];
                        float sc = warp_sum(d) * t->attention.scale;
                        float mn = fmaxf(m[a], sc);
                        float corr = m[a] == -INFINITY ? 0.0f : expf(m[a] - mn), p = expf(sc - mn);
                        l[a] = l[a] * corr + p;
#pragma unroll
                        for (int e = 0; e < E; e++)
                            acc[a][e] = acc[a][e] * corr + p * vr[e];
                        m[a] = mn;
                    }
                }
            }
        }
#pragma unroll
        for (int a = 0; a < A; a++) {
            uint32_t i = i0 + a;
            if (i >= NI)
                continue;
            uint32_t r = i / per, head = r * H + g * per + i % per;
            if (t->flags & MPKB_F_DIRECT) {
#pragma unroll
                for (int e = 0; e < E; e++)
                    stx(od, op, (uint64_t)head * D + lane * E + e, acc[a][e] / l[a]);
            } else {
                float *pp = (float *)op + ((uint64_t)head * nch + c) * (D + 2);
#pragma unroll
                for (int e = 0; e < E; e++)
                    __stcg(pp + lane * E + e, acc[a][e]);
                if (lane == 0) {
                    __stcg(pp + D, m[a]); /* -inf for an empty chunk */
                    __stcg(pp + D + 1, l[a]);
                }
            }
        }
    }
}

/* ---- one row (a decode step): K and V staged before the wait ------------
 *
 * The cache rows a decode step's attention reads, but for the row it
 * appends, were written by earlier steps. attention_pre copies the first
 * group of them into the task's kbuf and vbuf while thread 0 still waits
 * for the task's event, once the step event says the steps before have
 * ended (their appends are done and visible); the row's position is
 * taken from the step (gs_last_pos) and checked against the pos tensor
 * after the wait, where a mismatch copies again. Then the q heads (a warp
 * each) and the append (the last warp, which also puts the appended row
 * into kbuf and vbuf rounded as the cache holds it) run side by side, and
 * attend_row starts on rows that are all in shared memory. */
typedef struct {
    int32_t task, pos; /* what was staged for: task (or -1) at position pos */
    uint32_t step, rows;
} att_pre;
__shared__ att_pre s_pre;

/* Where attend_row keeps K and V of a group (the layout of smem_attention). */
__device__ __forceinline__ unsigned short *att_kbuf(float *sm, uint32_t per, uint32_t D)
{
    return (unsigned short *)(((uintptr_t)(sm + at_floats(per, D)) + 15) & ~(uintptr_t)15);
}

/* Can task t take the one-row path (and attention_pre)? */
__device__ __forceinline__ bool att_one(const mpkb_tensor *Q, const mpkb_tensor *CA, const uint8_t *cp)
{
    uint32_t D = Q->dims[2], per = Q->dims[1] / CA->dims[1];
    return Q->dims[0] == 1 && CA->dtype == MPKB_BF16 && D % 8 == 0 && per < NW && ((uintptr_t)cp & 15) == 0;
}

/* Threads 64.. (warps 2 on), before t's wait: stage the first group of
 * the chunk's cache rows before the step's position. Each warp reads the
 * step event itself and copies its share of the rows only if the steps
 * before have ended; s_pre_ok says which did, and the rows count as
 * staged only if all did (so that nothing but the wait's barrier orders
 * these shared stores before their reads). */
__shared__ uint32_t s_pre_ok[NW];
__device__ void attention_pre(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    const uint32_t n = NT - 64, me = threadIdx.x - 64, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const mpkb_tensor *Q = &P.tensors[t->attention.q], *CA = &P.tensors[t->attention.cache];
    const uint8_t *cp = P.tp[t->attention.cache];
    uint32_t gi = gs_graph(P, step), ls = gs_local(P, step);
    if (me == 0)
        s_pre.task = -1;
    if (gi != 0 || ls == 0 || !att_one(Q, CA, cp))
        return;
    uint32_t D = Q->dims[2], G = CA->dims[1], S = CA->dims[2], per = Q->dims[1] / G;
    uint32_t g = (uint32_t)t->attention.kv_head, c = (uint32_t)t->attention.chunk;
    uint32_t B = (uint32_t)t->attention.block, nch = (uint32_t)t->attention.chunks;
    uint32_t PB = (uint32_t)(((uint64_t)S + (uint64_t)B * nch - 1) / ((uint64_t)B * nch));
    uint32_t pos = gs_last_pos(P, step);
    uint64_t jlo = (uint64_t)c * B;
    uint32_t rows = pos > jlo ? (uint32_t)((pos - jlo < B ? pos - jlo : B)) : 0;
    rows = rows < ABLK ? rows : ABLK;
    if (!rows || pos >= S)
        return;
    uint32_t ok = 0;
    if (lane == 0) {
        const kgraph &K = P.gr[0];
        const mpkb_event *ev = &K.events[K.step_event];
        ok = ld_acquire(&K.count[K.step_event]) >= (ls + 1 - ev->lag) * ev->triggers;
    }
    ok = __shfl_sync(0xffffffffu, ok, 0);
    if (lane == 0)
        s_pre_ok[warp] = ok;
    if (me == 0)
        s_pre.task = (int32_t)task, s_pre.step = step, s_pre.pos = (int32_t)pos, s_pre.rows = rows;
    if (!ok)
        return;
    unsigned short *kbuf = att_kbuf(sm, per, D), *vbuf = kbuf + ABLK * D;
    uint64_t kbase = (uint64_t)g * S * D, vbase = ((uint64_t)G + g) * S * D, r0 = (uint64_t)c * PB * B;
    uint32_t pieces = D / 8;
    for (uint32_t i = me; i < rows * pieces; i += n) {
        uint32_t r = i / pieces, q16 = i % pieces;
        cp_async16(kbuf + r * D + q16 * 8, cp + 2 * (kbase + (r0 + r) * D) + 16 * q16);
        cp_async16(vbuf + r * D + q16 * 8, cp + 2 * (vbase + (r0 + r) * D) + 16 * q16);
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

/* The one-row path after the wait (the comment above). */
__device__ void attention_one(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, int32_t pos,
                              float *sm)
{
    const mpkb_tensor *Q = &P.tensors[t->attention.q], *CA = &P.tensors[t->attention.cache];
    uint32_t H = Q->dims[1], D = Q->dims[2], G = CA->dims[1], S = CA->dims[2], per = H / G;
    uint32_t g = (uint32_t)t->attention.kv_head, c = (uint32_t)t->attention.chunk;
    uint32_t B = (uint32_t)t->attention.block, nch = (uint32_t)t->attention.chunks;
    uint32_t PB = (uint32_t)(((uint64_t)S + (uint64_t)B * nch - 1) / ((uint64_t)B * nch));
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint8_t *cp = P.tp[t->attention.cache];
    bool mine = s_pre.task == (int32_t)task && s_pre.step == step, all = true;
    for (uint32_t w = 2; w < NW; w++)
        all = all && s_pre_ok[w];
    uint32_t pre = mine && all && s_pre.pos == pos ? s_pre.rows : 0;
    if (mine && !pre)
        cp_async_wait_all(); /* staged for another position: done before those rows are written again */
    uint32_t pb = (uint32_t)pos / B;
    /* the appended row is in the first group of the first block: it goes to kbuf and vbuf as well */
    int32_t newrow = pb == c && (uint32_t)pos - c * B < ABLK ? (int32_t)((uint32_t)pos - c * B) : -1;
    float *qs = sm, *kv = sm + per * D, *mrun = qs + per * D + D + per * ABLK, *lrun = mrun + per;
    unsigned short *kbuf = att_kbuf(sm, per, D), *vbuf = kbuf + ABLK * D;
    if (warp < per) { /* q head `warp` */
        float *q = qs + warp * D;
        for (uint32_t i = lane; i < D; i += 32)
            q[i] = ldx(Q->dtype, P.tp[t->attention.q], (uint64_t)(g * per + warp) * D + i);
        __syncwarp();
        warp_norm_rope(P, q, D, t->attention.q_norm, t->attention.q_eps, t->attention.q_rope, pos);
        if (lane == 0)
            mrun[warp] = -INFINITY, lrun[warp] = 0;
    } else if (warp == NW - 1 && pb % nch == c) { /* the append */
        uint64_t row = ((uint64_t)(pb % nch) * PB + pb / nch) * B + (uint32_t)pos % B, at = (uint64_t)g * D;
        uint64_t kbase = (uint64_t)g * S * D, vbase = ((uint64_t)G + g) * S * D;
        const mpkb_tensor *KT = &P.tensors[t->attention.k], *VT = &P.tensors[t->attention.v];
        float vv[AMAXD / 32];
#pragma unroll
        for (int e = 0; e < AMAXD / 32; e++) { /* v's load overlaps k's */
            uint32_t i = lane + 32 * e;
            vv[e] = i < D ? ldx(VT->dtype, P.tp[t->attention.v], at + i) : 0.0f;
        }
        for (uint32_t i = lane; i < D; i += 32)
            kv[i] = ldx(KT->dtype, P.tp[t->attention.k], at + i);
        __syncwarp();
        warp_norm_rope(P, kv, D, t->attention.k_norm, t->attention.k_eps, t->attention.k_rope, pos);
#pragma unroll
        for (int e = 0; e < AMAXD / 32; e++) {
            uint32_t i = lane + 32 * e;
            if (i < D) {
                unsigned short kb = __bfloat16_as_ushort(__float2bfloat16_rn(kv[i]));
                unsigned short vb = __bfloat16_as_ushort(__float2bfloat16_rn(vv[e]));
                __stcg((unsigned short *)cp + kbase + row * D + i, kb);
                __stcg((unsigned short *)cp + vbase + row * D + i, vb);
                if (newrow >= 0)
                    kbuf[(uint32_t)newrow * D + i] = kb, vbuf[(uint32_t)newrow * D + i] = vb;
            }
        }
    }
    __syncthreads(); /* q, the appended row (in the cache and in kbuf) */
    attend_row(P, t, 0, pos, sm, true, true, pre, newrow);
}

/* Attention for kv head g over one chunk's positions (blocks c, c + n, ...
 * of B positions, stored together in the cache; see man 5 mpk-blob), for
 * each of the step's rows: first every row whose position lies in the
 * chunk appends its k (normed, roped) and v, then each row attends up to
 * its own position. */
__device__ bool op_attention(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    const mpkb_tensor *Q = &P.tensors[t->attention.q], *CA = &P.tensors[t->attention.cache];
    uint32_t R = Q->dims[0], H = Q->dims[1], D = Q->dims[2], G = CA->dims[1], S = CA->dims[2];
    uint32_t g = (uint32_t)t->attention.kv_head, c = (uint32_t)t->attention.chunk;
    uint32_t B = (uint32_t)t->attention.block, nch = (uint32_t)t->attention.chunks;
    uint32_t per = H / G, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint32_t PB = (uint32_t)(((uint64_t)S + (uint64_t)B * nch - 1) / ((uint64_t)B * nch)); /* blocks per chunk */
    const int32_t *posv = (const int32_t *)P.tp[t->attention.pos];
    /* every row's position in the cache: one row (a decode step) read by
     * every thread; several rows a thread per row, not one after another
     * (64 rows' loads in a row took ~24 us), and the first bad one found
     * again for the message */
    bool bad = false;
    for (uint32_t r = R == 1 ? 0 : threadIdx.x; r < R; r += R == 1 ? 1 : NT) {
        int32_t pos = __ldcg(posv + r);
        bad |= pos < 0 || (uint32_t)pos >= S;
    }
    if (R == 1 ? bad : __syncthreads_or(bad)) {
        if (threadIdx.x == 0)
            for (uint32_t r = 0; r < R; r++) {
                int32_t pos = __ldcg(posv + r);
                if (pos < 0 || (uint32_t)pos >= S) {
                    raise_error(P, ERR_POS, (int32_t)step, (int32_t)task, -1, pos, S, 0, 0);
                    break;
                }
            }
        return false;
    }
    uint8_t *cp = P.tp[t->attention.cache];
    uint32_t cd = CA->dtype;
    if (R > 1 && cd == MPKB_BF16 && (D == 64 || D == 128 || D == 256) && ((uintptr_t)cp & 15) == 0) {
        katt K = {P.tensors, P.tp};
        if (D == 64)
            attention_rows<2>(K, t, sm);
        else if (D == 128)
            attention_rows<4>(K, t, sm);
        else
            attention_rows<8>(K, t, sm);
        return true;
    }
    if (att_one(Q, CA, cp)) {
        attention_one(P, t, step, task, __ldcg(posv), sm);
        return true;
    }
    float *kv = sm + per * D;
    uint64_t kbase = ((uint64_t)0 * G + g) * S * D, vbase = ((uint64_t)1 * G + g) * S * D;
    if (warp == 0)
        for (uint32_t r = 0; r < R; r++) { /* append row r's k (normed, roped) and v at its row */
            int32_t pos = __ldcg(posv + r);
            uint32_t pb = (uint32_t)pos / B;
            if (pb % nch != c)
                continue;
            uint64_t row = ((uint64_t)(pb % nch) * PB + pb / nch) * B + (uint32_t)pos % B;
            uint64_t at = ((uint64_t)r * G + g) * D;
            for (uint32_t i = lane; i < D; i += 32)
                kv[i] = ldx(P.tensors[t->attention.k].dtype, P.tp[t->attention.k], at + i);
            __syncwarp();
            warp_norm_rope(P, kv, D, t->attention.k_norm, t->attention.k_eps, t->attention.k_rope, pos);
            for (uint32_t i = lane; i < D; i += 32) {
                stx(cd, cp, kbase + row * D + i, kv[i]);
                stx(cd, cp, vbase + row * D + i, ldx(P.tensors[t->attention.v].dtype, P.tp[t->attention.v], at + i));
            }
            __syncwarp();
        }
    __syncthreads(); /* the appended rows visible to the CTA */
    for (uint32_t r = 0; r < R; r++)
        attend_row(P, t, r, __ldcg(posv + r), sm, r + 1 == R);
    return true;
}

#endif
