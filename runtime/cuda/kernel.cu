/*
 * gpu.cu - the GPU executor: one persistent kernel runs a blob for every
 * decode step of a generation, prompt and continuation, in one launch.
 *
 * One CTA of NT threads per SM, launched cooperatively so every CTA is
 * resident and spin-waits cannot deadlock. Each CTA is a worker:
 *
 *   dynamic  tasks are handed out in (step, task index) order from one
 *            global ticket counter: a worker takes the next ticket, starts
 *            pulling the task's weights into L2, waits for the task's
 *            event, runs it and signals its triggers. Tickets are taken in
 *            a topological order, so the oldest unfinished ticket can
 *            always run: no deadlock however the tickets fall.
 *   static   worker w runs the blob's placed queues w, w + G, ... merged in
 *            task order (G = CTAs), step after step, waiting on each
 *            task's event itself.
 *
 * Events are monotonic counters in global memory: in step s event e has
 * fired once count[e] >= (s + 1 - lag) * triggers. A producer publishes
 * with __syncthreads + a gpu-scope release fence + atomic add; a consumer's
 * thread 0 spins with ld.acquire.gpu and releases its CTA with
 * __syncthreads. Everything a task reads that another task wrote (arena,
 * state) is loaded with ld.global.cg, so no SM can read a stale L1 line;
 * weights and constants, never written, go through the read-only path.
 *
 * Numerics are the CPU executor's (man 5 mpk-blob): fp32 arithmetic,
 * values rounded to a tensor's dtype only where a task stores them.
 * Summation orders differ from the CPU's, so results agree to rounding.
 *
 * Steps end on the device: the ARGMAX_REDUCE task writes the greedy token,
 * streams it (and a %globaltimer stamp) to mapped pinned host memory and,
 * at an end-of-sequence id or the last token asked for, sets the last step
 * to run; the INPUTS task of the next step feeds it back. Every wait is
 * bounded by a watchdog that reports the stalled step, task and event
 * instead of hanging.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern "C" {
#include "runtime.h"
}

#define NT 512           /* threads per worker CTA */
#define NW (NT / 32)     /* warps */
#define ABLK 64          /* attention: positions per block of the online softmax */
#define AOUT 4           /* attention: outputs per thread, so group heads x D <= NT * AOUT */
#define AMAXD 256        /* attention: head dim the kernel supports */
#define PREFETCH_MAX (256u << 10) /* bytes of a task's weights pulled into L2 while it waits */
#define TRACE_CAP (4u << 20)      /* trace records at most */

/* ---- what the kernel shares with the host ---------------------------------- */

enum { ERR_NONE = 0, ERR_STALL, ERR_TOKEN, ERR_POS, ERR_LOGITS };

/* Mapped pinned host memory: the device writes, the host polls. */
typedef struct {
    volatile int32_t made;        /* tokens generated so far */
    volatile int32_t steps;       /* steps finished */
    volatile int32_t error;       /* ERR_* of the first error */
    int32_t err_step, err_task, err_event, err_value;
    uint32_t err_count, err_expected;
    uint64_t err_waited_ns;
} host_status;

typedef struct {
    unsigned long long ticket;    /* dynamic: next (step, task) to hand out */
    int32_t stop_step;            /* the last step to run */
    int32_t abort;                /* a worker found an error: all stop */
    int32_t error_claimed;
} dev_ctl;

typedef struct {
    uint64_t start, end;
    uint32_t task, step, sm, pad;
} trace_rec;

typedef struct {
    const mpkb_task *tasks;
    const mpkb_event *events;
    const mpkb_tensor *tensors;
    const uint32_t *triggers;
    uint8_t *const *tp;           /* device pointer of every tensor */
    unsigned *count;              /* event counters */
    const uint32_t *cta_tasks;    /* static: each CTA's merged queue */
    const uint32_t *cta_first;    /* static: CTA c runs cta_tasks[cta_first[c] .. cta_first[c + 1]) */
    const int32_t *prompt;
    uint8_t *next_out, *logits;
    uint32_t logits_dtype;
    float *dump;                  /* [steps][vocab] or NULL */
    dev_ctl *ctl;
    host_status *hs;              /* mapped */
    int32_t *htokens;             /* mapped: the generated ids */
    uint64_t *htimes;             /* mapped: %globaltimer when each was made */
    trace_rec *trace;
    unsigned *trace_n;
    uint32_t trace_cap;
    uint32_t ntasks, np, ntok, max_steps, vocab, neos;
    int32_t eos[MPKB_MAX_EOS];
    int32_t schedule;             /* mpk_schedule */
    int32_t stall_task;           /* test only: never signalled; -1 none */
    uint64_t watchdog_ns;
    uint64_t smem;                /* dynamic shared memory bytes */
} kparams;

/* ---- device helpers ----------------------------------------------------------- */

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ uint64_t gtimer(void)
{
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ uint32_t smid(void)
{
    uint32_t s;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
    return s;
}

__device__ __forceinline__ uint4 ld_stream(const uint4 *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ void cp_async16(void *smem, const void *g)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(a), "l"(g) : "memory");
}

__device__ __forceinline__ void cp_async_wait_all(void)
{
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
}

__device__ __forceinline__ uint32_t dsize(uint32_t dt) { return dt == MPKB_BF16 || dt == MPKB_F16 ? 2 : 4; }

__device__ __forceinline__ float bf16lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

/* An element of a tensor other tasks write (arena, state): through L2. */
__device__ __forceinline__ float ldx(uint32_t dt, const uint8_t *p, uint64_t i)
{
    switch (dt) {
    case MPKB_BF16: return __uint_as_float((uint32_t)__ldcg((const unsigned short *)p + i) << 16);
    case MPKB_F16: return __half2float(__ushort_as_half(__ldcg((const unsigned short *)p + i)));
    case MPKB_F32: return __ldcg((const float *)p + i);
    default: return (float)__ldcg((const int *)p + i);
    }
}

/* An element of a tensor nothing writes (weights, constants). */
__device__ __forceinline__ float ldw(uint32_t dt, const uint8_t *p, uint64_t i)
{
    switch (dt) {
    case MPKB_BF16: return __uint_as_float((uint32_t)__ldg((const unsigned short *)p + i) << 16);
    case MPKB_F16: return __half2float(__ushort_as_half(__ldg((const unsigned short *)p + i)));
    case MPKB_F32: return __ldg((const float *)p + i);
    default: return (float)__ldg((const int *)p + i);
    }
}

/* A tensor to load from, looked up once: weights and constants never
 * change during a launch and take the read-only path. */
typedef struct {
    const uint8_t *p;
    uint32_t dtype;
    bool ro;
} tview;

__device__ __forceinline__ tview view(const kparams &P, uint32_t ti)
{
    const mpkb_tensor *t = &P.tensors[ti];
    tview v = {P.tp[ti], t->dtype, t->space == MPKB_SPACE_WEIGHT || t->space == MPKB_SPACE_CONST};
    return v;
}

__device__ __forceinline__ float ldv(tview v, uint64_t i)
{
    return v.ro ? ldw(v.dtype, v.p, i) : ldx(v.dtype, v.p, i);
}

__device__ __forceinline__ float lds(const kparams &P, uint32_t ti, uint64_t i) { return ldv(view(P, ti), i); }

__device__ __forceinline__ void stx(uint32_t dt, uint8_t *p, uint64_t i, float v)
{
    switch (dt) {
    case MPKB_BF16: __stcg((unsigned short *)p + i, __bfloat16_as_ushort(__float2bfloat16_rn(v))); break;
    case MPKB_F16: __stcg((unsigned short *)p + i, __half_as_ushort(__float2half_rn(v))); break;
    case MPKB_F32: __stcg((float *)p + i, v); break;
    default: __stcg((int *)p + i, (int)v);
    }
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the CTA; every thread gets the total. */
__device__ float block_sum(float v)
{
    __shared__ float part[NW];
    __syncthreads();
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0;
    for (int w = 0; w < NW; w++)
        s += part[w];
    return s;
}

/* (value, column) better for argmax: larger, then lower column; NaN never. */
__device__ __forceinline__ bool better(float v, int32_t c, float bv, int32_t bc)
{
    return v > bv || (v == bv && c < bc);
}

/* Argmax over the CTA; thread 0 gets the winner. */
__device__ void block_argmax(float &v, int32_t &c)
{
    __shared__ float pv[NW];
    __shared__ int32_t pc[NW];
    for (int o = 16; o; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int32_t oc = __shfl_xor_sync(0xffffffffu, c, o);
        if (better(ov, oc, v, c))
            v = ov, c = oc;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        pv[threadIdx.x >> 5] = v, pc[threadIdx.x >> 5] = c;
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < NW; w++)
            if (better(pv[w], pc[w], v, c))
                v = pv[w], c = pc[w];
}

/* Record the first error for the host and stop every worker. */
__device__ void raise_error(const kparams &P, int kind, int32_t step, int32_t task, int32_t event, int32_t value,
                            uint32_t count, uint32_t expected, uint64_t waited)
{
    if (atomicCAS(&P.ctl->error_claimed, 0, 1) == 0) {
        host_status *h = P.hs;
        h->err_step = step, h->err_task = task, h->err_event = event, h->err_value = value;
        h->err_count = count, h->err_expected = expected, h->err_waited_ns = waited;
        __threadfence_system();
        h->error = kind;
        __threadfence_system();
    }
    atomicExch(&P.ctl->abort, 1);
}

/* ---- the task kinds --------------------------------------------------------- */

/* x[m, :] after the prologue, fp32, into xs (all threads). */
__device__ void matvec_input(const kparams &P, const mpkb_task *t, uint32_t m, uint32_t K, float *xs)
{
    const mpkb_tensor *X = &P.tensors[t->t[0]];
    const uint8_t *xp = P.tp[t->t[0]];
    uint32_t xd = X->dtype;
    if (t->flags & MPKB_F_PRO_RMSNORM) {
        float ss = 0;
        for (uint32_t k = threadIdx.x; k < K; k += NT) {
            float v = ldx(xd, xp, (uint64_t)m * K + k);
            xs[k] = v;
            ss += v * v;
        }
        float r = 1.0f / sqrtf(block_sum(ss) / (float)K + t->f[0]);
        tview g = view(P, t->t[4]);
        for (uint32_t k = threadIdx.x; k < K; k += NT)
            xs[k] = ldv(g, k) * (xs[k] * r);
    } else if (t->flags & MPKB_F_PRO_SILU_MUL) {
        tview b = view(P, t->t[4]);
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

/* Where a matvec keeps things in shared memory: xs (K floats), red (NW
 * floats), then as many whole weight rows as fit (bf16 fast path only). */
struct mv_plan {
    uint32_t kpad, staged; /* floats of xs; weight rows staged */
};

__device__ __forceinline__ bool mv_fast(const kparams &P, const mpkb_task *t)
{
    const mpkb_tensor *W = &P.tensors[t->t[1]];
    return W->dtype == MPKB_BF16 && W->dims[1] % 8 == 0 && ((uintptr_t)P.tp[t->t[1]] & 15) == 0;
}

__device__ __forceinline__ mv_plan mv_plan_of(const kparams &P, const mpkb_task *t)
{
    mv_plan p;
    uint32_t K = P.tensors[t->t[0]].dims[1];
    p.kpad = (K + 3) & ~3u;
    p.staged = 0;
    if (mv_fast(P, t)) {
        uint64_t used = 4ull * (p.kpad + NW), room = P.smem > used ? (P.smem - used) & ~(uint64_t)15 : 0;
        uint64_t rows = room / (2ull * K), want = (uint64_t)(t->i[1] - t->i[0]);
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
__device__ void stage_weights(const kparams &P, const mpkb_task *t, float *sm)
{
    if (t->op != MPKB_OP_MATVEC)
        return;
    const mpkb_tensor *W = &P.tensors[t->t[1]];
    uint64_t row = (uint64_t)W->dims[1] * dsize(W->dtype);
    const uint8_t *w = P.tp[t->t[1]] + row * (uint64_t)t->i[0];
    uint64_t all = row * (uint64_t)(t->i[1] - t->i[0]), done = 0;
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
        acc += ldx(P.tensors[t->t[3]].dtype, P.tp[t->t[3]], m * N + r);
    stx(P.tensors[t->t[2]].dtype, P.tp[t->t[2]], m * N + r, acc);
}

__device__ void matvec(const kparams &P, const mpkb_task *t, float *sm)
{
    const mpkb_tensor *X = &P.tensors[t->t[0]], *W = &P.tensors[t->t[1]];
    uint32_t M = X->dims[0], K = X->dims[1], N = W->dims[0];
    uint32_t i0 = (uint32_t)t->i[0], R = (uint32_t)(t->i[1] - t->i[0]);
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint8_t *wp = P.tp[t->t[1]];
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
        int32_t best_at = t->i[0];
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
                float *pp = (float *)P.tp[t->t[5]];
                __stcg(pp + 2 * t->i[2], best);
                __stcg((int32_t *)pp + 2 * t->i[2] + 1, best_at);
            }
        }
        __syncthreads(); /* xs and red are reused by the next row */
    }
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

/* Decode attention for kv head g over one chunk's positions (blocks c,
 * c + n, ... of B positions, stored together in the cache; see man 5
 * mpk-blob), with an online softmax over groups of ABLK positions. */
__device__ bool attention(const kparams &P, const mpkb_task *t, float *sm, uint32_t step, uint32_t task)
{
    const mpkb_tensor *Q = &P.tensors[t->t[0]], *CA = &P.tensors[t->t[3]];
    uint32_t H = Q->dims[1], D = Q->dims[2], G = CA->dims[1], S = CA->dims[2];
    uint32_t g = (uint32_t)t->i[0], c = (uint32_t)t->i[1], B = (uint32_t)t->i[2], nch = (uint32_t)t->i[3];
    uint32_t per = H / G, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint32_t PB = (uint32_t)(((uint64_t)S + (uint64_t)B * nch - 1) / ((uint64_t)B * nch)); /* blocks per chunk */
    int32_t pos = __ldcg((const int32_t *)P.tp[t->t[4]]);
    if (pos < 0 || (uint32_t)pos >= S) {
        if (threadIdx.x == 0)
            raise_error(P, ERR_POS, (int32_t)step, (int32_t)task, -1, pos, S, 0, 0);
        return false;
    }
    uint8_t *cp = P.tp[t->t[3]];
    uint32_t cd = CA->dtype;
    float *qs = sm, *kv = qs + per * D, *sc = kv + D, *mrun = sc + per * ABLK, *lrun = mrun + per,
          *alpha = lrun + per;
    /* bf16 K and V rows of a group of positions, copied in with one round of
     * cp.async instead of one dependent load per position */
    unsigned short *kbuf = (unsigned short *)(((uintptr_t)(alpha + per) + 15) & ~(uintptr_t)15);
    unsigned short *vbuf = kbuf + ABLK * D;
    bool stage = cd == MPKB_BF16 && D % 8 == 0;
    uint64_t kbase = ((uint64_t)0 * G + g) * S * D, vbase = ((uint64_t)1 * G + g) * S * D;
    uint32_t pb = (uint32_t)pos / B;
    if (pb % nch == c && warp == 0) { /* append k (normed, roped) and v at pos's row */
        uint64_t row = ((uint64_t)(pb % nch) * PB + pb / nch) * B + (uint32_t)pos % B;
        for (uint32_t i = lane; i < D; i += 32)
            kv[i] = ldx(P.tensors[t->t[1]].dtype, P.tp[t->t[1]], (uint64_t)g * D + i);
        __syncwarp();
        warp_norm_rope(P, kv, D, t->t[6], t->f[2], t->t[9], pos);
        for (uint32_t i = lane; i < D; i += 32) {
            stx(cd, cp, kbase + row * D + i, kv[i]);
            stx(cd, cp, vbase + row * D + i, ldx(P.tensors[t->t[2]].dtype, P.tp[t->t[2]], (uint64_t)g * D + i));
        }
    }
    for (uint32_t h = warp; h < per; h += NW) {
        float *q = qs + h * D;
        for (uint32_t i = lane; i < D; i += 32)
            q[i] = ldx(Q->dtype, P.tp[t->t[0]], (uint64_t)(g * per + h) * D + i);
        __syncwarp();
        warp_norm_rope(P, q, D, t->t[5], t->f[1], t->t[8], pos);
        if (lane == 0)
            mrun[h] = -INFINITY, lrun[h] = 0;
    }
    __syncthreads(); /* q ready, the appended row visible to the CTA */
    float acc[AOUT];
#pragma unroll
    for (int u = 0; u < AOUT; u++)
        acc[u] = 0;
    uint32_t nout = per * D, E = D / 32;
    /* bf16 rows of 32 x 2, 4 or 8 elements: each lane loads its run at once */
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
                for (uint32_t i = threadIdx.x; i < nb * pieces; i += NT) {
                    uint32_t r = i / pieces, q16 = i % pieces;
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
                const uint8_t *krow = cp + 2 * (kbase + (rbase + (j - jlo)) * D);
                float k[AMAXD / 32];
                if (stage) {
#pragma unroll
                    for (int e = 0; e < AMAXD / 32; e++) {
                        uint32_t i = vec ? lane * E + e : lane + 32 * e;
                        k[e] = (vec ? (uint32_t)e < E : i < D) ? __uint_as_float((uint32_t)kbuf[jj * D + i] << 16) : 0.0f;
                    }
                } else if (vec) {
                    const unsigned short *kr = (const unsigned short *)krow + lane * E;
                    uint32_t u[4] = {0, 0, 0, 0};
                    if (E == 2) {
                        u[0] = __ldcg((const unsigned *)kr);
                    } else if (E == 4) {
                        uint2 x = __ldcg((const uint2 *)kr);
                        u[0] = x.x, u[1] = x.y;
                    } else {
                        uint4 x = __ldcg((const uint4 *)kr);
                        u[0] = x.x, u[1] = x.y, u[2] = x.z, u[3] = x.w;
                    }
#pragma unroll
                    for (int e = 0; e < AMAXD / 32; e += 2) {
                        k[e] = bf16lo(u[e / 2]);
                        k[e + 1] = bf16hi(u[e / 2]);
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
                        sc[h * ABLK + jj] = d * t->f[0];
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
    uint8_t *op = P.tp[t->t[7]];
    uint32_t od = P.tensors[t->t[7]].dtype;
#pragma unroll
    for (int u = 0; u < AOUT; u++) {
        uint32_t o = threadIdx.x + NT * u;
        if (o < nout) {
            uint32_t h = o / D, d = o % D, head = g * per + h;
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
    return true;
}

/* Combine a kv head's chunks: each head's chunk weights e^(m_c - M) and
 * its total once, in shared memory (not again for every output element),
 * then every output element. */
__device__ void attn_merge(const kparams &P, const mpkb_task *t, float *sm)
{
    const mpkb_tensor *O = &P.tensors[t->t[1]];
    uint32_t D = O->dims[2], nch = (uint32_t)t->i[1], per = (uint32_t)t->i[2], g = (uint32_t)t->i[0];
    const float *pp = (const float *)P.tp[t->t[0]];
    float *wgt = sm, *sum = sm + per * nch; /* [per][nch], [per] */
    for (uint32_t i = threadIdx.x; i < per; i += NT) {
        const float *ph = pp + (uint64_t)(g * per + i) * nch * (D + 2);
        float mx = -INFINITY, l = 0;
        for (uint32_t c = 0; c < nch; c++)
            mx = fmaxf(mx, __ldcg(ph + (uint64_t)c * (D + 2) + D));
        for (uint32_t c = 0; c < nch; c++) {
            float m = __ldcg(ph + (uint64_t)c * (D + 2) + D);
            wgt[i * nch + c] = m == -INFINITY ? -1.0f : expf(m - mx); /* -1: an empty chunk */
            if (m != -INFINITY)
                l += __ldcg(ph + (uint64_t)c * (D + 2) + D + 1) * wgt[i * nch + c];
        }
        sum[i] = l;
    }
    __syncthreads();
    for (uint32_t o = threadIdx.x; o < per * D; o += NT) {
        uint32_t i = o / D, d = o % D;
        const float *ph = pp + (uint64_t)(g * per + i) * nch * (D + 2);
        float a = 0;
        for (uint32_t c = 0; c < nch; c++)
            if (wgt[i * nch + c] >= 0.0f)
                a += __ldcg(ph + (uint64_t)c * (D + 2) + d) * wgt[i * nch + c];
        stx(O->dtype, P.tp[t->t[1]], (uint64_t)(g * per + i) * D + d, a / sum[i]);
    }
}

/* The greedy token of a step: argmax over the partials, then the step's
 * end: stream the token, decide whether another step runs. */
__device__ bool argmax_reduce(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task)
{
    __shared__ int32_t s_tok;
    __shared__ bool s_bad;
    if (threadIdx.x == 0) {
        const float *pp = (const float *)P.tp[t->t[0]];
        uint64_t tiles = P.tensors[t->t[0]].nbytes / 8;
        float best = -INFINITY;
        int32_t at = -1;
        for (uint64_t i = 0; i < tiles; i++) {
            float v = __ldcg(pp + 2 * i);
            int32_t c = __ldcg((const int32_t *)pp + 2 * i + 1);
            if (v > best || (v == best && at >= 0 && c < at) || (at < 0 && v == best))
                best = v, at = c;
        }
        at = at < 0 ? 0 : at;
        /* NaNs never win, so best is -inf when no logit is finite, +inf
         * when the chosen one is infinite: both are errors (count 1: +inf) */
        s_bad = !(best > -INFINITY && best < INFINITY);
        if (s_bad)
            raise_error(P, ERR_LOGITS, (int32_t)step, (int32_t)task, -1, at, best == INFINITY, 0, 0);
        __stcg((int32_t *)P.tp[t->argmax_reduce.out], at);
        s_tok = at;
    }
    __syncthreads();
    if (s_bad)
        return false;
    if (P.dump)
        for (uint32_t i = threadIdx.x; i < P.vocab; i += NT)
            P.dump[(uint64_t)step * P.vocab + i] = ldx(P.logits_dtype, P.logits, i);
    if (threadIdx.x == 0 && P.tp[t->t[1]] == P.next_out) {
        int32_t tok = s_tok;
        bool last = step + 1 >= P.max_steps;
        if (step + 1 >= P.np) {
            uint32_t k = step + 1 - P.np;
            P.htokens[k] = tok;
            P.htimes[k] = gtimer();
            bool eos = false;
            for (uint32_t e = 0; e < P.neos; e++)
                eos |= tok == P.eos[e];
            last |= eos || k + 1 >= P.ntok;
            __threadfence_system();
            P.hs->made = (int32_t)(k + 1);
        }
        if (last)
            atomicMin(&P.ctl->stop_step, (int32_t)step);
        P.hs->steps = (int32_t)(step + 1);
        __threadfence_system();
    }
    return true;
}

__device__ bool run_task(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    uint64_t lo = (uint64_t)t->i[0], hi = (uint64_t)t->i[1];
    switch (t->op) {
    case MPKB_OP_INPUTS:
        if (threadIdx.x == 0) {
            int32_t tok = step < P.np ? P.prompt[step] : __ldcg((const int32_t *)P.next_out);
            __stcg((int32_t *)P.tp[t->t[0]], tok);
            if (t->t[1] != MPKB_NONE)
                __stcg((int32_t *)P.tp[t->t[1]], (int32_t)step);
        }
        return true;
    case MPKB_OP_EMBED: {
        const mpkb_tensor *tab = &P.tensors[t->t[0]];
        int32_t id = __ldcg((const int32_t *)P.tp[t->t[1]]);
        if (id < 0 || (uint32_t)id >= tab->dims[0]) {
            if (threadIdx.x == 0)
                raise_error(P, ERR_TOKEN, (int32_t)step, (int32_t)task, -1, id, tab->dims[0], 0, 0);
            return false;
        }
        for (uint64_t c = lo + threadIdx.x; c < hi; c += NT)
            stx(P.tensors[t->t[2]].dtype, P.tp[t->t[2]], c, lds(P, t->t[0], (uint64_t)id * tab->dims[1] + c));
        return true;
    }
    case MPKB_OP_MATVEC: matvec(P, t, sm); return true;
    case MPKB_OP_ATTENTION: return attention(P, t, sm, step, task);
    case MPKB_OP_ATTN_MERGE: attn_merge(P, t, sm); return true;
    case MPKB_OP_ARGMAX_PART: {
        float best = -INFINITY;
        int32_t at = t->i[0];
        for (uint64_t c = lo + threadIdx.x; c < hi; c += NT) {
            float v = lds(P, t->t[0], c);
            if (better(v, (int32_t)c, best, at))
                best = v, at = (int32_t)c;
        }
        block_argmax(best, at);
        if (threadIdx.x == 0) {
            float *pp = (float *)P.tp[t->t[1]];
            __stcg(pp + 2 * t->i[2], best);
            __stcg((int32_t *)pp + 2 * t->i[2] + 1, at);
        }
        return true;
    }
    case MPKB_OP_ARGMAX_REDUCE: return argmax_reduce(P, t, step, task);
    case MPKB_OP_RMSNORM: {
        uint64_t d = P.tensors[t->t[1]].dims[0];
        for (uint64_t r = lo; r < hi; r++) {
            float ss = 0;
            for (uint64_t i = threadIdx.x; i < d; i += NT) {
                float v = lds(P, t->t[0], r * d + i);
                ss += v * v;
            }
            float s = 1.0f / sqrtf(block_sum(ss) / (float)d + t->f[0]);
            for (uint64_t i = threadIdx.x; i < d; i += NT)
                stx(P.tensors[t->t[2]].dtype, P.tp[t->t[2]], r * d + i,
                    lds(P, t->t[1], i) * (lds(P, t->t[0], r * d + i) * s));
            __syncthreads(); /* out may overlap x of the next row */
        }
        return true;
    }
    case MPKB_OP_ROPE: {
        uint64_t d = P.tensors[t->t[0]].dims[2], half = d / 2;
        int32_t pos = __ldcg((const int32_t *)P.tp[t->t[1]]);
        for (uint64_t k = threadIdx.x; k < (hi - lo) * half; k += NT) {
            uint64_t h = lo + k / half, i = k % half;
            float ang = (float)pos * lds(P, t->t[2], i);
            float c = cosf(ang), s = sinf(ang);
            float a = lds(P, t->t[0], h * d + i), b = lds(P, t->t[0], h * d + i + half);
            uint32_t od = P.tensors[t->t[3]].dtype;
            stx(od, P.tp[t->t[3]], h * d + i, a * c - b * s);
            stx(od, P.tp[t->t[3]], h * d + i + half, b * c + a * s);
        }
        return true;
    }
    case MPKB_OP_ADD:
    case MPKB_OP_MUL:
        for (uint64_t i = lo + threadIdx.x; i < hi; i += NT) {
            float a = lds(P, t->t[0], i), b = lds(P, t->t[1], i);
            stx(P.tensors[t->t[2]].dtype, P.tp[t->t[2]], i, t->op == MPKB_OP_ADD ? a + b : a * b);
        }
        return true;
    case MPKB_OP_SILU:
        for (uint64_t i = lo + threadIdx.x; i < hi; i += NT) {
            float v = lds(P, t->t[0], i);
            stx(P.tensors[t->t[2]].dtype, P.tp[t->t[2]], i, v / (1.0f + expf(-v)));
        }
        return true;
    case MPKB_OP_COPY: {
        uint32_t es = dsize(P.tensors[t->t[0]].dtype);
        uint64_t rows = (uint64_t)t->i[0], w = (uint64_t)t->i[2];
        const uint8_t *src = P.tp[t->t[0]];
        uint8_t *dst = P.tp[t->t[1]];
        for (uint64_t k = threadIdx.x; k < rows * w; k += NT) {
            uint64_t r = k / w, e = k % w, from = (uint64_t)t->i[3] + r * (uint64_t)t->i[1] + e;
            if (es == 2)
                __stcg((unsigned short *)dst + r * w + e, __ldcg((const unsigned short *)src + from));
            else
                __stcg((unsigned *)dst + r * w + e, __ldcg((const unsigned *)src + from));
        }
        return true;
    }
    }
    return false;
}

enum { WAIT_OK = 0, WAIT_EXIT = 1 };

/* Thread 0 spins until event e has fired for step s (or the run stops);
 * the CTA learns the outcome through s_res. */
__device__ int wait_event(const kparams &P, uint32_t e, uint32_t step, uint32_t task)
{
    __shared__ int s_res;
    if (threadIdx.x == 0) {
        const mpkb_event *ev = &P.events[e];
        unsigned target = (unsigned)((step + 1 - ev->lag) * ev->triggers);
        int res = WAIT_OK;
        uint64_t t0 = 0;
        for (uint32_t spins = 0;; spins++) {
            unsigned v = ld_acquire(&P.count[e]);
            if (v >= target)
                break;
            if ((spins & 31) == 31) {
                if (*(volatile int32_t *)&P.ctl->abort || (int32_t)step > *(volatile int32_t *)&P.ctl->stop_step) {
                    res = WAIT_EXIT;
                    break;
                }
                uint64_t now = gtimer();
                if (!t0) {
                    t0 = now;
                } else if (now - t0 > P.watchdog_ns) {
                    raise_error(P, ERR_STALL, (int32_t)step, (int32_t)task, (int32_t)e, 0, v, target, now - t0);
                    res = WAIT_EXIT;
                    break;
                }
            }
        }
        /* a step past the last one never runs (the stop was published
         * before the event we waited for fired) */
        if (res == WAIT_OK && (int32_t)step > *(volatile int32_t *)&P.ctl->stop_step)
            res = WAIT_EXIT;
        s_res = res;
    }
    __syncthreads();
    return s_res;
}

__device__ void signal_triggers(const kparams &P, const mpkb_task *t, uint32_t task)
{
    __syncthreads(); /* the task's stores are done */
    if (threadIdx.x == 0 && (int32_t)task != P.stall_task) {
        __threadfence();
        for (uint32_t k = 0; k < t->trig_count; k++)
            atomicAdd(&P.count[P.triggers[t->trig_first + k]], 1u);
    }
}

/* Run one task in full: stage its weights, wait, execute, signal. In the
 * dynamic schedule thread 0 takes the next ticket once the wait is over,
 * so that round trip overlaps the task. false: stop. */
__device__ bool one_task(const kparams &P, uint32_t task, uint32_t step, float *sm, unsigned long long *next)
{
    const mpkb_task *t = &P.tasks[task];
    stage_weights(P, t, sm);
    if (wait_event(P, t->dep, step, task) != WAIT_OK) {
        cp_async_wait_all(); /* nothing may land in shared memory after the CTA is gone */
        return false;
    }
    if (next && threadIdx.x == 0)
        *next = atomicAdd(&P.ctl->ticket, 1ull);
    uint64_t t0 = P.trace ? gtimer() : 0;
    if (!run_task(P, t, step, task, sm)) {
        cp_async_wait_all();
        return false;
    }
    signal_triggers(P, t, task);
    if (P.trace && threadIdx.x == 0) {
        unsigned k = atomicAdd(P.trace_n, 1u) % P.trace_cap; /* a ring: the latest records stay */
        {
            trace_rec *r = &P.trace[k];
            r->start = t0, r->end = gtimer(), r->task = task, r->step = step, r->sm = smid(), r->pad = 0;
        }
    }
    return true;
}

extern "C" __global__ void __launch_bounds__(NT, 1) mpk_kernel(kparams P)
{
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    if (P.schedule == MPK_SCHED_STATIC) {
        uint32_t a = P.cta_first[blockIdx.x], b = P.cta_first[blockIdx.x + 1];
        for (uint32_t step = 0; step < P.max_steps; step++)
            for (uint32_t k = a; k < b; k++)
                if (!one_task(P, P.cta_tasks[k], step, sm, NULL))
                    return;
        return;
    }
    __shared__ unsigned long long s_ticket;
    if (threadIdx.x == 0)
        s_ticket = atomicAdd(&P.ctl->ticket, 1ull);
    __syncthreads();
    for (;;) {
        unsigned long long ticket = s_ticket;
        uint32_t step = (uint32_t)(ticket / P.ntasks), task = (uint32_t)(ticket % P.ntasks);
        if (step >= P.max_steps)
            return;
        if (!one_task(P, task, step, sm, &s_ticket))
            return;
        __syncthreads(); /* s_ticket is the next one */
    }
}

/* ---- the host side -------------------------------------------------------------- */

struct mpk_gpu {
    const mpkb_blob *b;
    FILE *err;
    mpk_gpu_opts o;
    int sms;
    size_t smem;
    uint8_t *weights, *arena, *state, *consts;
    uint8_t **tp;
    mpkb_task *tasks;
    mpkb_event *events;
    mpkb_tensor *tensors;
    uint32_t *triggers, *cta_tasks, *cta_first;
    unsigned *count;
    dev_ctl *ctl;
    uint8_t **hptr;               /* host copy of tp */
    double load_ms;
    uint64_t weight_bytes;
};

static bool ck(cudaError_t e, const char *call, const char *file, int line, FILE *err)
{
    if (e == cudaSuccess)
        return true;
    fprintf(err, "mpk-run: error: CUDA: %s (%s) in %s at %s:%d\n", cudaGetErrorString(e), cudaGetErrorName(e), call,
            file, line);
    return false;
}
#define CK(call) ck((call), #call, __FILE__, __LINE__, G->err)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void progress(const mpk_gpu *G, uint64_t done, uint64_t total, double t0, bool last)
{
    if (!G->o.progress || total == 0)
        return;
    double s = (now_ms() - t0) / 1e3;
    int w = (int)(30 * done / total);
    fprintf(G->err, "\rmpk-run: weights [%.*s%*s] %5.1f%% %.2f/%.2f GB %.2f GB/s", w,
            "##############################", 30 - w, "", 100.0 * (double)done / (double)total, (double)done / 1e9,
            (double)total / 1e9, s > 0 ? (double)done / 1e9 / s : 0.0);
    if (last)
        fputc('\n', G->err);
    fflush(G->err);
}

/* Copy every loaded weight through two pinned staging buffers. */
static bool load_weights(mpk_gpu *G, const void *const *weights, const uint64_t *woff)
{
    const mpkb_blob *b = G->b;
    const size_t CH = 64u << 20;
    void *stage[2] = {NULL, NULL};
    cudaEvent_t done[2] = {NULL, NULL};
    bool ok = false;
    double t0 = now_ms(), shown = 0;
    uint64_t copied = 0;
    int k = 0;
    if (!CK(cudaHostAlloc(&stage[0], CH, cudaHostAllocDefault)) || !CK(cudaHostAlloc(&stage[1], CH, cudaHostAllocDefault)) ||
        !CK(cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming)) ||
        !CK(cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming)))
        goto out;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space != MPKB_SPACE_WEIGHT || t->base != i)
            continue;
        for (uint64_t off = 0; off < t->nbytes; off += CH, k ^= 1) {
            size_t n = t->nbytes - off < CH ? (size_t)(t->nbytes - off) : CH;
            if (!CK(cudaEventSynchronize(done[k])))
                goto out;
            memcpy(stage[k], (const uint8_t *)weights[i] + off, n);
            if (!CK(cudaMemcpyAsync(G->weights + woff[i] + off, stage[k], n, cudaMemcpyHostToDevice, 0)) ||
                !CK(cudaEventRecord(done[k], 0)))
                goto out;
            copied += n;
            if (now_ms() - shown > 100) {
                progress(G, copied, G->weight_bytes, t0, false);
                shown = now_ms();
            }
        }
    }
    if (!CK(cudaDeviceSynchronize()))
        goto out;
    progress(G, copied, G->weight_bytes, t0, true);
    ok = true;
out:
    for (int j = 0; j < 2; j++) {
        if (done[j])
            cudaEventDestroy(done[j]);
        if (stage[j])
            cudaFreeHost(stage[j]);
    }
    return ok;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* What the kernel cannot run, found before anything is allocated. */
static bool check_limits(mpk_gpu *G, const cudaDeviceProp *p)
{
    const mpkb_blob *b = G->b;
    size_t need = 0;
    if (b->meta->tp > 1) { /* mpk-run says so first; this guards other callers */
        fprintf(G->err, "mpk-run: error: the blob is built for %u GPUs; the GPU executor runs one\n", b->meta->tp);
        return false;
    }
    for (uint32_t i = 0; i < b->ntasks; i++) {
        const mpkb_task *t = &b->tasks[i];
        size_t s = 0;
        if (t->op == MPKB_OP_ALLREDUCE || (t->flags & MPKB_F_ALL_RANKS)) {
            fprintf(G->err, "mpk-run: error: task %u (%s): %s across ranks is beyond the one-GPU executor\n", i,
                    mpkb_str(b, t->label), mpkb_op_name(t->op));
            return false;
        }
        if (t->op == MPKB_OP_MATVEC) {
            s = (((size_t)b->tensors[t->t[0]].dims[1] + 3) & ~(size_t)3) * 4 + 4 * (size_t)NW * 2;
        } else if (t->op == MPKB_OP_ATTENTION) {
            const mpkb_tensor *q = &b->tensors[t->t[0]];
            size_t H = q->dims[1], D = q->dims[2], per = H / b->tensors[t->t[3]].dims[1];
            if (D > AMAXD || per * D > (size_t)NT * AOUT) {
                fprintf(G->err, "mpk-run: error: task %u (%s): attention with head dim %zu and %zu query heads per "
                                "kv head is beyond the GPU kernel (head dim <= %d, heads x dim <= %d)\n",
                        i, mpkb_str(b, t->label), D, per, AMAXD, NT * AOUT);
                return false;
            }
            s = 4 * (per * D + D + per * ABLK + 3 * per) + 16 + 2 * 2 * ABLK * D;
        } else if (t->op == MPKB_OP_ATTN_MERGE) {
            s = 4 * ((size_t)t->i[2] * t->i[1] + t->i[2]);
        }
        need = s > need ? s : need;
    }
    need = (need + 255) & ~(size_t)255;
    cudaFuncAttributes fa;
    if (!CK(cudaFuncGetAttributes(&fa, mpk_kernel)))
        return false;
    size_t room = p->sharedMemPerBlockOptin > fa.sharedSizeBytes ? p->sharedMemPerBlockOptin - fa.sharedSizeBytes : 0;
    if (need > room) {
        fprintf(G->err, "mpk-run: error: the model needs %zu bytes of shared memory per worker; %s has %zu\n", need,
                p->name, room);
        return false;
    }
    G->smem = room & ~(size_t)255; /* the rest stages weights */
    return true;
}

extern "C" mpk_gpu *mpk_gpu_new(const mpkb_blob *b, const void *const *weights, const mpk_gpu_opts *o, FILE *err)
{
    mpk_gpu *G = (mpk_gpu *)calloc(1, sizeof *G);
    uint64_t *woff = (uint64_t *)calloc(b->ntensors + 1, sizeof *woff);
    uint32_t *cfirst = NULL, *ctasks = NULL;
    int n = 0, dev = 0, blocks = 0, coop = 0;
    cudaDeviceProp p;
    double t0 = now_ms();
    if (!G || !woff) {
        fprintf(err, "mpk-run: error: out of memory\n");
        free(G), free(woff);
        return NULL;
    }
    G->b = b, G->err = err, G->o = *o;
    cudaError_t e = cudaGetDeviceCount(&n);
    int driver = 0;
    if (e != cudaSuccess && (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0)) {
        /* no driver at all: CUDA calls that "driver version is insufficient" */
        fprintf(err, "mpk-run: error: no CUDA GPU here (no NVIDIA driver is loaded); run with --cpu for the CPU "
                     "reference executor\n");
        goto fail;
    }
    if (e != cudaSuccess || n == 0) {
        fprintf(err, "mpk-run: error: no CUDA GPU here (%s); run with --cpu for the CPU reference executor\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
        goto fail;
    }
    if (!CK(cudaGetDevice(&dev)) || !CK(cudaGetDeviceProperties(&p, dev)) ||
        !CK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev)))
        goto fail;
    if (p.major < 8 || !coop) {
        fprintf(err, "mpk-run: error: %s (compute capability %d.%d) cannot run mpk: it needs 8.0 or newer with "
                     "cooperative launch\n",
                p.name, p.major, p.minor);
        goto fail;
    }
    G->sms = p.multiProcessorCount;
    if (!check_limits(G, &p))
        goto fail;
    /* weights: one buffer, each loaded tensor 256-byte aligned */
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space == MPKB_SPACE_WEIGHT && t->base == i) {
            woff[i] = G->weight_bytes;
            G->weight_bytes += (t->nbytes + 255) & ~(uint64_t)255;
        }
    }
    if (!CK(cudaMalloc((void **)&G->weights, G->weight_bytes ? G->weight_bytes : 256)) ||
        !CK(cudaMalloc((void **)&G->arena, b->meta->arena_size ? b->meta->arena_size : 256)) ||
        !CK(cudaMalloc((void **)&G->state, b->meta->state_size ? b->meta->state_size : 256)) ||
        !CK(cudaMalloc((void **)&G->consts, b->consts_size ? b->consts_size : 256)) ||
        !CK(cudaMemcpy(G->consts, b->consts, b->consts_size, cudaMemcpyHostToDevice)))
        goto fail;
    G->hptr = (uint8_t **)calloc(b->ntensors + 1, sizeof *G->hptr);
    if (!G->hptr)
        goto fail;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        uint8_t *q = NULL;
        switch (t->space) {
        case MPKB_SPACE_ARENA: q = G->arena + t->offset; break;
        case MPKB_SPACE_STATE: q = G->state + t->offset; break;
        case MPKB_SPACE_CONST: q = G->consts + t->offset; break;
        default: q = G->weights + woff[t->base] + t->offset;
        }
        if ((uintptr_t)q % mpkb_dtype_size(t->dtype)) {
            fprintf(err, "mpk-run: error: tensor %u (%s) lies at an offset not aligned to its %s elements\n", i,
                    mpkb_str(b, t->name), mpkb_dtype_name(t->dtype));
            goto fail;
        }
        G->hptr[i] = q;
    }
    /* static schedule: CTA c runs queues c, c + G, ... merged in task order */
    cfirst = (uint32_t *)calloc((size_t)G->sms + 1, sizeof *cfirst);
    ctasks = (uint32_t *)calloc((size_t)b->ntasks + 1, sizeof *ctasks);
    if (!cfirst || !ctasks)
        goto fail;
    for (int c = 0, k = 0; c < G->sms; c++) {
        cfirst[c] = (uint32_t)k;
        for (uint32_t q = (uint32_t)c; q < b->nqueues; q += (uint32_t)G->sms)
            for (uint32_t j = 0; j < b->queues[q].count; j++)
                ctasks[k++] = b->qtasks[b->queues[q].first + j];
        qsort(ctasks + cfirst[c], (size_t)k - cfirst[c], sizeof *ctasks, cmp_u32);
        cfirst[c + 1] = (uint32_t)k;
    }
    if (!CK(cudaMalloc((void **)&G->tp, sizeof *G->tp * (b->ntensors + 1))) ||
        !CK(cudaMalloc((void **)&G->tasks, sizeof *G->tasks * (b->ntasks + 1))) ||
        !CK(cudaMalloc((void **)&G->events, sizeof *G->events * (b->nevents + 1))) ||
        !CK(cudaMalloc((void **)&G->tensors, sizeof *G->tensors * (b->ntensors + 1))) ||
        !CK(cudaMalloc((void **)&G->triggers, sizeof *G->triggers * (b->ntriggers + 1))) ||
        !CK(cudaMalloc((void **)&G->cta_tasks, sizeof *G->cta_tasks * (b->ntasks + 1))) ||
        !CK(cudaMalloc((void **)&G->cta_first, sizeof *G->cta_first * ((size_t)G->sms + 1))) ||
        !CK(cudaMalloc((void **)&G->count, sizeof *G->count * (b->nevents + 1))) ||
        !CK(cudaMalloc((void **)&G->ctl, sizeof *G->ctl)) ||
        !CK(cudaMemcpy(G->tp, G->hptr, sizeof *G->tp * b->ntensors, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->tasks, b->tasks, sizeof *G->tasks * b->ntasks, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->events, b->events, sizeof *G->events * b->nevents, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->tensors, b->tensors, sizeof *G->tensors * b->ntensors, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->triggers, b->triggers, sizeof *G->triggers * b->ntriggers, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->cta_tasks, ctasks, sizeof *ctasks * b->ntasks, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->cta_first, cfirst, sizeof *cfirst * ((size_t)G->sms + 1), cudaMemcpyHostToDevice)))
        goto fail;
    if (!CK(cudaFuncSetAttribute(mpk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)G->smem)) ||
        !CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, mpk_kernel, NT, G->smem)))
        goto fail;
    if (blocks < 1) {
        fprintf(err, "mpk-run: error: one worker of %d threads with %zu bytes of shared memory does not fit on "
                     "an SM of %s\n",
                NT, G->smem, p.name);
        goto fail;
    }
    if (!load_weights(G, weights, woff))
        goto fail;
    G->load_ms = now_ms() - t0;
    free(woff), free(cfirst), free(ctasks);
    return G;
fail:
    free(woff), free(cfirst), free(ctasks);
    mpk_gpu_free(G);
    return NULL;
}

extern "C" void mpk_gpu_free(mpk_gpu *G)
{
    if (!G)
        return;
    void *bufs[] = {G->weights, G->arena, G->state, G->consts, G->tp, G->tasks, G->events, G->tensors,
                    G->triggers, G->cta_tasks, G->cta_first, G->count, G->ctl};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        cudaFree(bufs[i]); /* NULL is a no-op */
    free(G->hptr);
    free(G);
    cudaDeviceReset(); /* a complete leak report under compute-sanitizer */
}

extern "C" double mpk_gpu_load_ms(const mpk_gpu *G, uint64_t *bytes)
{
    *bytes = G->weight_bytes;
    return G->load_ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Chrome / Perfetto trace: one track per SM, times in microseconds from the
 * first task's start. */
static bool write_trace(mpk_gpu *G, const trace_rec *r, unsigned n, const char *path)
{
    const mpkb_blob *b = G->b;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(G->err, "mpk-run: error: cannot write '%s': %s\n", path, strerror(errno));
        return false;
    }
    uint64_t t0 = UINT64_MAX;
    for (unsigned i = 0; i < n; i++)
        t0 = r[i].start < t0 ? r[i].start : t0;
    fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    for (unsigned i = 0; i < n; i++) {
        const mpkb_task *t = &b->tasks[r[i].task];
        fprintf(f, "{\"name\":");
        json_str(f, mpkb_str(b, t->label));
        fprintf(f, ",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":0,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,"
                   "\"args\":{\"task\":%u,\"step\":%u,\"layer\":%d,\"i\":[%d,%d,%d,%d]}},\n",
                mpkb_op_name(t->op), r[i].sm, (double)(r[i].start - t0) / 1e3, (double)(r[i].end - r[i].start) / 1e3,
                r[i].task, r[i].step, t->layer, t->i[0], t->i[1], t->i[2], t->i[3]);
    }
    for (int s = 0; s < G->sms; s++)
        fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"args\":{\"name\":\"SM %d\"}}%s\n", s,
                s, s + 1 < G->sms ? "," : "");
    fprintf(f, "]}\n");
    if (fclose(f) != 0) {
        fprintf(G->err, "mpk-run: error: writing '%s' failed\n", path);
        return false;
    }
    return true;
}

static void report_error(mpk_gpu *G, const host_status *h, const unsigned *counts)
{
    const mpkb_blob *b = G->b;
    FILE *err = G->err;
    const mpkb_task *t = h->err_task >= 0 && (uint32_t)h->err_task < b->ntasks ? &b->tasks[h->err_task] : NULL;
    char what[512] = "";
    if (t)
        snprintf(what, sizeof what, "task %d (%s %s, layer %d, i=%d,%d,%d,%d)", h->err_task, mpkb_op_name(t->op),
                 mpkb_str(b, t->label), t->layer, t->i[0], t->i[1], t->i[2], t->i[3]);
    switch (h->error) {
    case ERR_STALL:
        fprintf(err,
                "mpk-run: error: stall: in step %d, %s waited %.0f ms for event %d (count %u of %u expected); "
                "giving up (--watchdog %u ms)\n",
                h->err_step, what, (double)h->err_waited_ns / 1e6, h->err_event, h->err_count, h->err_expected,
                G->o.watchdog_ms);
        /* the root: the first event short in the earliest step that stalled,
         * with the producers that did not signal it */
        if (counts)
            for (uint32_t step = 0; step <= (uint32_t)h->err_step; step++)
                for (uint32_t e = 0; e < b->nevents; e++) {
                    const mpkb_event *ev = &b->events[e];
                    uint64_t want = ((uint64_t)step + 1 - ev->lag) * ev->triggers;
                    if (ev->lag || counts[e] >= want)
                        continue;
                    fprintf(err, "mpk-run: note: the first event short is event %u in step %u: %llu of %u signals "
                                 "arrived; its producers:",
                            e, step, (unsigned long long)(counts[e] - (uint64_t)step * ev->triggers), ev->triggers);
                    for (uint32_t i = 0, shown = 0; i < b->ntasks && shown < 8; i++)
                        for (uint32_t k = 0; k < b->tasks[i].trig_count; k++)
                            if (b->triggers[b->tasks[i].trig_first + k] == e) {
                                fprintf(err, " task %u (%s %s)", i, mpkb_op_name(b->tasks[i].op),
                                        mpkb_str(b, b->tasks[i].label));
                                shown++;
                            }
                    fputc('\n', err);
                    step = (uint32_t)h->err_step, e = b->nevents; /* done */
                }
        break;
    case ERR_TOKEN:
        fprintf(err, "mpk-run: error: in step %d, %s: token id %d is outside the vocabulary (0..%u)\n", h->err_step,
                what, h->err_value, h->err_count - 1);
        break;
    case ERR_LOGITS:
        if (h->err_count)
            fprintf(err, "mpk-run: error: step %d: the logit of the chosen token %d is not finite (inf)\n",
                    h->err_step, h->err_value);
        else
            fprintf(err, "mpk-run: error: step %d: the logits have no finite value\n", h->err_step);
        break;
    case ERR_POS:
        fprintf(err, "mpk-run: error: in step %d, %s: position %d is outside the KV cache (%u positions)\n",
                h->err_step, what, h->err_value, h->err_count);
        break;
    }
}

extern "C" bool mpk_gpu_generate(mpk_gpu *G, const int32_t *prompt, uint32_t np, uint32_t ntok,
                                 const mpk_sampler *smp, float *logits, mpk_token_fn on_token, void *ctx,
                                 mpk_gpu_stats *st)
{
    if (!mpk_sampler_greedy(smp)) {
        fprintf(G->err, "mpk-run: error: sampling on the GPU is not built yet: run with --cpu, or "
                        "--temperature 0 for greedy decoding\n");
        return false;
    }
    const mpkb_blob *b = G->b;
    const mpkb_meta *m = b->meta;
    uint32_t max_steps = np + ntok - 1;
    bool ok = false;
    host_status *hs = NULL;
    int32_t *htok = NULL;
    uint64_t *htime = NULL;
    int32_t *dprompt = NULL;
    float *dump = NULL;
    trace_rec *trace = NULL, *htrace = NULL;
    unsigned *trace_n = NULL, ntrace = 0, *hcount = NULL;
    cudaStream_t stream = NULL;
    kparams P;
    dev_ctl c0;
    memset(&P, 0, sizeof P);
    memset(&c0, 0, sizeof c0);
    memset(st, 0, sizeof *st);
    /* every counter must hold its last step's target in 32 bits (checked
     * for the steps this launch runs: a blob with no KV cache has no bound
     * of its own) */
    for (uint32_t i = 0; i < b->nevents; i++)
        if ((uint64_t)b->events[i].triggers * ((uint64_t)max_steps + 1) > 0xffffffffull) {
            fprintf(G->err, "mpk-run: error: event %u: %u triggers over %u steps overflow its counter\n", i,
                    b->events[i].triggers, max_steps);
            return false;
        }
    if (!CK(cudaHostAlloc((void **)&hs, sizeof *hs, cudaHostAllocMapped)) ||
        !CK(cudaHostAlloc((void **)&htok, sizeof *htok * ntok, cudaHostAllocMapped)) ||
        !CK(cudaHostAlloc((void **)&htime, sizeof *htime * ntok, cudaHostAllocMapped)) ||
        !CK(cudaMalloc((void **)&dprompt, sizeof *dprompt * np)) ||
        !CK(cudaMemcpy(dprompt, prompt, sizeof *dprompt * np, cudaMemcpyHostToDevice)) ||
        !CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)))
        goto out;
    memset(hs, 0, sizeof *hs);
    if (logits && !CK(cudaMalloc((void **)&dump, sizeof *dump * (uint64_t)max_steps * m->vocab)))
        goto out;
    if (G->o.trace) {
        uint64_t cap = (uint64_t)b->ntasks * max_steps;
        cap = cap < TRACE_CAP ? cap : TRACE_CAP;
        P.trace_cap = (uint32_t)cap;
        if (!CK(cudaMalloc((void **)&trace, sizeof *trace * cap)) || !CK(cudaMalloc((void **)&trace_n, sizeof *trace_n)) ||
            !CK(cudaMemset(trace_n, 0, sizeof *trace_n)))
            goto out;
    }
    c0.stop_step = (int32_t)max_steps - 1;
    /* a fresh run: counters, state, poisoned arena (NaN in every float dtype) */
    if (!CK(cudaMemset(G->count, 0, sizeof *G->count * b->nevents)) ||
        !CK(cudaMemset(G->state, 0, m->state_size)) || !CK(cudaMemset(G->arena, 0xff, m->arena_size)) ||
        !CK(cudaMemcpy(G->ctl, &c0, sizeof c0, cudaMemcpyHostToDevice)))
        goto out;
    P.tasks = G->tasks, P.events = G->events, P.tensors = G->tensors, P.triggers = G->triggers, P.tp = G->tp;
    P.count = G->count, P.cta_tasks = G->cta_tasks, P.cta_first = G->cta_first, P.prompt = dprompt;
    P.next_out = G->hptr[m->next_output];
    P.logits = G->hptr[m->logits];
    P.logits_dtype = b->tensors[m->logits].dtype;
    P.dump = dump, P.ctl = G->ctl;
    if (!CK(cudaHostGetDevicePointer((void **)&P.hs, hs, 0)) ||
        !CK(cudaHostGetDevicePointer((void **)&P.htokens, htok, 0)) ||
        !CK(cudaHostGetDevicePointer((void **)&P.htimes, htime, 0)))
        goto out;
    P.trace = trace, P.trace_n = trace_n;
    P.ntasks = b->ntasks, P.np = np, P.ntok = ntok, P.max_steps = max_steps, P.vocab = m->vocab;
    P.neos = m->neos;
    memcpy(P.eos, m->eos, sizeof P.eos);
    P.schedule = G->o.schedule, P.stall_task = G->o.test_stall;
    P.watchdog_ns = (uint64_t)G->o.watchdog_ms * 1000000ull;
    P.smem = G->smem;
    {
        void *args[] = {&P};
        double t0 = now_ms(), last_change = t0, first = -1;
        int32_t shown = 0, last_steps = -1;
        if (!CK(cudaLaunchCooperativeKernel((const void *)mpk_kernel, dim3((unsigned)G->sms), dim3(NT), args, G->smem,
                                            stream)))
            goto out;
        /* stream the tokens while the kernel runs */
        for (;;) {
            cudaError_t q = cudaStreamQuery(stream);
            int32_t made = hs->made;
            for (; shown < made; shown++) {
                if (first < 0)
                    first = now_ms() - t0;
                on_token(ctx, ((volatile int32_t *)htok)[shown]);
            }
            if (q == cudaSuccess)
                break;
            if (q != cudaErrorNotReady) {
                ck(q, "the kernel (cudaStreamQuery)", __FILE__, __LINE__, G->err);
                goto out;
            }
            if (hs->steps != last_steps || hs->error) {
                last_steps = hs->steps;
                last_change = now_ms();
            } else if (now_ms() - last_change > 2.0 * G->o.watchdog_ms + 10000) {
                fprintf(G->err, "mpk-run: error: the kernel made no progress for %.0f s and did not stop; giving "
                                "up at step %d\n",
                        (now_ms() - last_change) / 1e3, last_steps);
                /* freeing memory would wait for the kernel: leave, and let
                 * the driver tear the context down */
                fflush(NULL);
                _exit(1);
            }
            usleep(20);
        }
        st->ttft_ms = first;
        st->wall_ms = now_ms() - t0;
        if (!CK(cudaGetLastError()))
            goto out;
        int32_t made = hs->made;
        for (; shown < made; shown++)
            on_token(ctx, htok[shown]);
        st->made = (uint32_t)made;
        st->steps = (uint32_t)hs->steps;
        st->sms = G->sms;
        if (made > 1) {
            double *d = (double *)malloc(sizeof *d * (size_t)made);
            if (d) {
                for (int32_t i = 1; i < made; i++)
                    d[i - 1] = (double)(htime[i] - htime[i - 1]) / 1e6;
                qsort(d, (size_t)made - 1, sizeof *d, cmp_double);
                st->per_token_ms = d[(made - 1) / 2];
                free(d);
            }
        }
    }
    if (hs->error) {
        hcount = (unsigned *)malloc(sizeof *hcount * (b->nevents + 1));
        if (hcount && !CK(cudaMemcpy(hcount, G->count, sizeof *hcount * b->nevents, cudaMemcpyDeviceToHost)))
            goto out;
        report_error(G, hs, hcount);
        goto out;
    }
    if (logits && !CK(cudaMemcpy(logits, dump, sizeof *dump * (uint64_t)st->steps * m->vocab, cudaMemcpyDeviceToHost)))
        goto out;
    if (G->o.trace) {
        if (!CK(cudaMemcpy(&ntrace, trace_n, sizeof ntrace, cudaMemcpyDeviceToHost)))
            goto out;
        if (ntrace > P.trace_cap)
            fprintf(G->err, "mpk-run: trace: kept the last %u of %u task records\n", P.trace_cap, ntrace);
        ntrace = ntrace < P.trace_cap ? ntrace : P.trace_cap;
        htrace = (trace_rec *)malloc(sizeof *htrace * (ntrace + 1));
        if (!htrace || !CK(cudaMemcpy(htrace, trace, sizeof *htrace * ntrace, cudaMemcpyDeviceToHost)) ||
            !write_trace(G, htrace, ntrace, G->o.trace))
            goto out;
        st->trace_events = ntrace;
    }
    ok = true;
out:
    if (stream)
        cudaStreamDestroy(stream);
    cudaFreeHost(hs); /* both take NULL */
    cudaFreeHost(htok);
    cudaFreeHost(htime);
    cudaFree(dprompt);
    cudaFree(dump);
    cudaFree(trace);
    cudaFree(trace_n);
    free(htrace);
    free(hcount);
    return ok;
}
