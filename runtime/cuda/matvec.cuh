/*
 * matvec.cuh - MATVEC: out[m, lo:hi] = x[m, :] . w[lo:hi, :]^T (man 5
 * mpk-blob), with the rmsnorm or silu-mul prologue, the residual and
 * argmax-partials epilogues. The bf16 rows are read 16 bytes a lane: the
 * first rows that fit in shared memory are staged with cp.async while the
 * task waits for its event (matvec_stage), the rest streamed past L1 and
 * pulled toward L2 ahead of use.
 */
#ifndef MPK_CUDA_MATVEC_CUH
#define MPK_CUDA_MATVEC_CUH

#include "common.cuh"

#define PREFETCH_MAX (256u << 10) /* bytes of a task's weights pulled into L2 while it waits */

/* x[m, :] after the prologue, fp32, into xs (all threads). */
__device__ void matvec_input(const kparams &P, const mpkb_task *t, uint32_t m, uint32_t K, float *xs)
{
    const mpkb_tensor *X = &P.tensors[t->matvec.x];
    const uint8_t *xp = P.tp[t->matvec.x];
    uint32_t xd = X->dtype;
    if (t->flags & MPKB_F_PRO_RMSNORM) {
        float ss = 0;
        for (uint32_t k = threadIdx.x; k < K; k += NT) {
            float v = ldx(xd, xp, (uint64_t)m * K + k);
            xs[k] = v;
            ss += v * v;
        }
        float r = 1.0f / sqrtf(block_sum(ss) / (float)K + t->matvec.eps);
        tview g = view(P, t->matvec.pro);
        for (uint32_t k = threadIdx.x; k < K; k += NT)
            xs[k] = ldv(g, k) * (xs[k] * r);
    } else if (t->flags & MPKB_F_PRO_SILU_MUL) {
        tview b = view(P, t->matvec.pro);
        for (uint32_t k = threadIdx.x; k < K; k += NT) {
            float v = ldx(xd, xp, (uint64_t)m * K + k);
            xs[k] = v / (1.0f + expf(-v)) * ldv(b, (uint64_t)m * K + k);
        }
    } else {
        for (uint32_t k = threadIdx.x; k < K; k += NT)
            xs[k] = ldx(xd, xp, (uint64_t)m * K + k);
    }
    __syncthreads();
}

/* Where a matvec keeps things in shared memory: xs (K floats, padded to
 * kpad), red (NW floats), then as many whole weight rows as fit (bf16 fast
 * path only). smem_matvec is the part before the rows. */
__host__ __device__ __forceinline__ uint32_t mv_kpad(uint32_t K) { return (K + 3) & ~3u; }

__host__ __device__ inline uint32_t smem_matvec(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)why, (void)n;
    return 4u * (mv_kpad(T[t->matvec.x].dims[1]) + NW);
}

struct mv_plan {
    uint32_t kpad, staged; /* floats of xs; weight rows staged */
};

__device__ __forceinline__ bool mv_fast(const kparams &P, const mpkb_task *t)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    return W->dtype == MPKB_BF16 && W->dims[1] % 8 == 0 && ((uintptr_t)P.tp[t->matvec.w] & 15) == 0;
}

__device__ __forceinline__ mv_plan mv_plan_of(const kparams &P, const mpkb_task *t)
{
    mv_plan p;
    uint32_t K = P.tensors[t->matvec.x].dims[1];
    p.kpad = mv_kpad(K);
    p.staged = 0;
    if (mv_fast(P, t)) {
        uint64_t used = smem_matvec(P.tensors, t, NULL, 0), room = P.smem > used ? (P.smem - used) & ~(uint64_t)15 : 0;
        uint64_t rows = room / (2ull * K), want = (uint64_t)(t->matvec.hi - t->matvec.lo);
        p.staged = (uint32_t)(rows < want ? rows : want);
    }
    return p;
}

__device__ __forceinline__ const uint4 *mv_stage_buf(float *sm, mv_plan p)
{
    return (const uint4 *)(sm + p.kpad + NW);
}

/* Issue the copies of the staged rows (and pull the rest toward L2); the
 * CTA waits for them with cp_async_wait_all + __syncthreads. */
__device__ void matvec_stage(const kparams &P, const mpkb_task *t, float *sm)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    uint64_t row = (uint64_t)W->dims[1] * dsize(W->dtype);
    const uint8_t *w = P.tp[t->matvec.w] + row * (uint64_t)t->matvec.lo;
    uint64_t all = row * (uint64_t)(t->matvec.hi - t->matvec.lo), done = 0;
    mv_plan p = mv_plan_of(P, t);
    if (p.staged) {
        uint4 *buf = (uint4 *)mv_stage_buf(sm, p);
        done = row * p.staged;
        for (uint64_t i = threadIdx.x; i < done / 16; i += NT)
            cp_async16(buf + i, w + 16 * i);
        asm volatile("cp.async.commit_group;" ::: "memory");
    }
    uint64_t end = all - done > PREFETCH_MAX ? done + PREFETCH_MAX : all;
    for (uint64_t o = done + (uint64_t)threadIdx.x * 128; o < end; o += NT * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(w + o));
}

/* Dot of bf16 weight chunks [c0, c1) of 8 elements with xs, lane-strided. */
template <bool SMEM>
__device__ __forceinline__ float dot_bf16(const uint4 *w, const float *xs, uint32_t c0, uint32_t c1, uint32_t lane)
{
#define LDW(p) (SMEM ? *(p) : ld_stream(p))
    float a0 = 0, a1 = 0;
    uint32_t c = c0 + lane;
    for (; c + 96 < c1; c += 128) {
        uint4 u[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            u[j] = LDW(w + c + 32 * j);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float4 *x = (const float4 *)(xs + 8 * (c + 32 * j));
            float4 p = x[0], q = x[1];
            a0 += bf16lo(u[j].x) * p.x + bf16hi(u[j].x) * p.y + bf16lo(u[j].y) * p.z + bf16hi(u[j].y) * p.w;
            a1 += bf16lo(u[j].z) * q.x + bf16hi(u[j].z) * q.y + bf16lo(u[j].w) * q.z + bf16hi(u[j].w) * q.w;
        }
    }
    for (; c < c1; c += 32) {
        uint4 u = LDW(w + c);
        const float4 *x = (const float4 *)(xs + 8 * c);
        float4 p = x[0], q = x[1];
        a0 += bf16lo(u.x) * p.x + bf16hi(u.x) * p.y + bf16lo(u.y) * p.z + bf16hi(u.y) * p.w;
        a1 += bf16lo(u.z) * q.x + bf16hi(u.z) * q.y + bf16lo(u.w) * q.z + bf16hi(u.w) * q.w;
    }
#undef LDW
    return a0 + a1;
}

/* The epilogue of one finished row: residual, store, argmax candidate. */
__device__ __forceinline__ void matvec_row_done(const kparams &P, const mpkb_task *t, uint64_t m, uint64_t N,
                                                uint32_t r, float acc, float &best, int32_t &best_at)
{
    if (better(acc, (int32_t)r, best, best_at))
        best = acc, best_at = (int32_t)r;
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        acc += ldx(P.tensors[t->matvec.residual].dtype, P.tp[t->matvec.residual], m * N + r);
    stx(P.tensors[t->matvec.out].dtype, P.tp[t->matvec.out], m * N + r, acc);
}

__device__ bool op_matvec(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task;
    const mpkb_tensor *X = &P.tensors[t->matvec.x], *W = &P.tensors[t->matvec.w];
    uint32_t M = X->dims[0], K = X->dims[1], N = W->dims[0];
    uint32_t i0 = (uint32_t)t->matvec.lo, R = (uint32_t)(t->matvec.hi - t->matvec.lo);
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint8_t *wp = P.tp[t->matvec.w];
    mv_plan plan = mv_plan_of(P, t);
    float *xs = sm, *red = sm + plan.kpad;
    const uint4 *staged = mv_stage_buf(sm, plan);
    bool fast = mv_fast(P, t);
    uint32_t chunks = fast ? K / 8 : K;
    /* rows fewer than warps: split each row's K among S warps */
    uint32_t S = 1;
    while (R * S * 2 <= NW && chunks / (S * 2) >= 32)
        S *= 2;
    for (uint32_t m = 0; m < M; m++) {
        matvec_input(P, t, m, K, xs);
        if (m == 0 && plan.staged) {
            cp_async_wait_all();
            __syncthreads();
        }
        float best = -INFINITY;
        int32_t best_at = t->matvec.lo;
        for (uint32_t item = warp; item < R * S; item += NW) {
            uint32_t r = i0 + item / S, s = item % S;
            uint32_t c0 = (uint32_t)((uint64_t)chunks * s / S), c1 = (uint32_t)((uint64_t)chunks * (s + 1) / S);
            float acc;
            if (fast && r - i0 < plan.staged) {
                acc = dot_bf16<true>(staged + (uint64_t)(r - i0) * (K / 8), xs, c0, c1, lane);
            } else if (fast) {
                acc = dot_bf16<false>((const uint4 *)(wp + (uint64_t)r * K * 2), xs, c0, c1, lane);
            } else {
                acc = 0;
                for (uint32_t k = c0 + lane; k < c1; k += 32)
                    acc += ldw(W->dtype, wp, (uint64_t)r * K + k) * xs[k];
            }
            acc = warp_sum(acc);
            if (S == 1) {
                if (lane == 0)
                    matvec_row_done(P, t, m, N, r, acc, best, best_at);
            } else if (lane == 0) {
                red[item] = acc;
            }
        }
        if (S > 1) {
            __syncthreads();
            if (threadIdx.x < R) {
                float acc = 0;
                for (uint32_t s = 0; s < S; s++)
                    acc += red[threadIdx.x * S + s];
                matvec_row_done(P, t, m, N, i0 + threadIdx.x, acc, best, best_at);
            }
        }
        if (t->flags & MPKB_F_EPI_ARGMAX) {
            block_argmax(best, best_at);
            if (threadIdx.x == 0) {
                float *pp = (float *)P.tp[t->matvec.partials];
                __stcg(pp + 2 * t->matvec.tile, best);
                __stcg((int32_t *)pp + 2 * t->matvec.tile + 1, best_at);
            }
        }
        __syncthreads(); /* xs and red are reused by the next row */
    }
    return true;
}

#endif
