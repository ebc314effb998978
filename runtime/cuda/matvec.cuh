/*
 * matvec.cuh - MATVEC: out[m, lo:hi] = x[m, :] . w[lo:hi, :]^T (man 5
 * mpk-blob), with the rmsnorm or silu-mul prologue, the residual and
 * argmax-partials epilogues. The bf16 rows are read 16 bytes a lane: the
 * first rows that fit in a slot of the weight ring (common.cuh) are copied
 * into shared memory ahead of the task, after the worker's previous task on
 * sm_90 (matvec_issue: bulk copies on the slot's mbarrier) or by the task
 * itself before its wait below that (matvec_stage: cp.async); the rest are
 * streamed past L1 and pulled toward L2 ahead of use.
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
 * kpad) and red (NW floats), smem_matvec's bytes; its first weight rows (the
 * bf16 fast path only) as many as fit in a slot of the weight ring
 * (common.cuh), which lies after what every task kind needs. */
__host__ __device__ __forceinline__ uint32_t mv_kpad(uint32_t K) { return (K + 3) & ~3u; }

__host__ __device__ inline uint32_t smem_matvec(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)why, (void)n;
    return 4u * (mv_kpad(T[t->matvec.x].dims[1]) + NW);
}

__device__ __forceinline__ bool mv_fast(const kparams &P, const mpkb_task *t)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    return W->dtype == MPKB_BF16 && W->dims[1] % 8 == 0 && ((uintptr_t)P.tp[t->matvec.w] & 15) == 0;
}

/* The weight rows of t that go into a ring slot. */
__device__ __forceinline__ uint32_t mv_staged(const kparams &P, const mpkb_task *t)
{
    if (!mv_fast(P, t))
        return 0;
    uint64_t rows = P.ring_slot / (2ull * P.tensors[t->matvec.w].dims[1]);
    uint64_t want = (uint64_t)(t->matvec.hi - t->matvec.lo);
    return (uint32_t)(rows < want ? rows : want);
}

__device__ __forceinline__ uint4 *ring_buf(const kparams &P, float *sm, uint32_t slot)
{
    return (uint4 *)((uint8_t *)sm + P.ring_off + (uint64_t)slot * P.ring_slot);
}

#if MPK_RING
/* Thread 0: the copy of t's staged rows into ring slot `slot`, completing
 * on the slot's mbarrier, and the rest of its rows (up to PREFETCH_MAX)
 * pulled toward L2. false: nothing to copy. */
__device__ bool matvec_issue(const kparams &P, const mpkb_task *t, float *sm, uint32_t slot)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    uint64_t row = (uint64_t)W->dims[1] * dsize(W->dtype);
    const uint8_t *w = P.tp[t->matvec.w] + row * (uint64_t)t->matvec.lo;
    uint64_t all = row * (uint64_t)(t->matvec.hi - t->matvec.lo), done = row * mv_staged(P, t);
    if (done)
        bulk_load(ring_buf(P, sm, slot), w, (uint32_t)done, &s_ring.bar[slot]);
    uint64_t rest = all - done > PREFETCH_MAX ? PREFETCH_MAX : all - done;
    if (rest >= 16 && ((uintptr_t)(w + done) & 15) == 0)
        bulk_prefetch_l2(w + done, rest);
    return done != 0;
}
#else
/* Below sm_90: all threads copy the staged rows into slot 0 with cp.async
 * (and pull the rest toward L2) before the task's wait; the task waits for
 * them with cp_async_wait_all + __syncthreads. */
__device__ void matvec_stage(const kparams &P, const mpkb_task *t, float *sm)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    uint64_t row = (uint64_t)W->dims[1] * dsize(W->dtype);
    const uint8_t *w = P.tp[t->matvec.w] + row * (uint64_t)t->matvec.lo;
    uint64_t all = row * (uint64_t)(t->matvec.hi - t->matvec.lo), done = row * mv_staged(P, t);
    if (done) {
        uint4 *buf = ring_buf(P, sm, 0);
        for (uint64_t i = threadIdx.x; i < done / 16; i += NT)
            cp_async16(buf + i, w + 16 * i);
        asm volatile("cp.async.commit_group;" ::: "memory");
    }
    uint64_t end = all - done > PREFETCH_MAX ? done + PREFETCH_MAX : all;
    for (uint64_t o = done + (uint64_t)threadIdx.x * 128; o < end; o += NT * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(w + o));
}
#endif

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
    float *xs = sm, *red = sm + mv_kpad(K);
#if MPK_RING
    int32_t slot = s_ring.cur; /* -1: nothing was copied for this task */
    uint32_t nstaged = slot >= 0 ? mv_staged(P, t) : 0;
    const uint4 *staged = ring_buf(P, sm, slot >= 0 ? (uint32_t)slot : 0);
#else
    uint32_t nstaged = mv_staged(P, t);
    const uint4 *staged = ring_buf(P, sm, 0);
#endif
    bool fast = mv_fast(P, t);
    uint32_t chunks = fast ? K / 8 : K;
    /* rows fewer than warps: split each row's K among S warps */
    uint32_t S = 1;
    while (R * S * 2 <= NW && chunks / (S * 2) >= 32)
        S *= 2;
    for (uint32_t m = 0; m < M; m++) {
        matvec_input(P, t, m, K, xs);
        if (m == 0 && nstaged) {
#if MPK_RING
            while (!mbar_done(&s_ring.bar[slot], s_ring.cur_parity))
                ;
#else
            cp_async_wait_all();
            __syncthreads();
#endif
        }
        float best = -INFINITY;
        int32_t best_at = t->matvec.lo;
        for (uint32_t item = warp; item < R * S; item += NW) {
            uint32_t r = i0 + item / S, s = item % S;
            uint32_t c0 = (uint32_t)((uint64_t)chunks * s / S), c1 = (uint32_t)((uint64_t)chunks * (s + 1) / S);
            float acc;
            if (fast && r - i0 < nstaged) {
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
