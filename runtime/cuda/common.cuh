/*
 * common.cuh - device helpers every task kind uses: loads and stores by
 * dtype (through L2 for what other tasks write, the read-only path for
 * weights and constants), warp and CTA reductions, cp.async, the timer,
 * and raising an error for the host. Included by kernel.cu only: the
 * kernel is one translation unit.
 */
#ifndef MPK_CUDA_COMMON_CUH
#define MPK_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>

#include "shared.h"

#define NT MPK_NT        /* threads per worker CTA */
#define NW (NT / 32)     /* warps */

/*
 * A task kind NAME (a row of mpk/taskops.def) is two functions, in NAME.cuh
 * or the file of its family; kernel.cu dispatches to them from the table,
 * so a row without them does not compile:
 *
 *   __device__ bool op_NAME(const kparams &P, const mpkb_task *t,
 *                           uint32_t step, uint32_t task, float *sm)
 *       runs task t of step `step` with the worker's NT threads; sm is the
 *       dynamic shared memory, P.smem bytes. Reads the task through its
 *       view t->NAME. false after raise_error: the run stops.
 *
 *   __host__ __device__ uint32_t smem_NAME(const mpkb_tensor *T,
 *                           const mpkb_task *t, char *why, size_t n)
 *       the bytes of sm the task needs at least: the host refuses a blob
 *       that needs more than the GPU has before anything is allocated, and
 *       the kernel lays sm out with the same function. UINT32_MAX, with
 *       the reason in why (on the host), if the kernel cannot run it.
 */
#define SMEM_NONE(name)                                                                                           \
    __host__ __device__ inline uint32_t smem_##name(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n) \
    {                                                                                                             \
        (void)T, (void)t, (void)why, (void)n;                                                                     \
        return 0;                                                                                                 \
    }

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

/* ---- the weight ring (sm_90: bulk copies completing on mbarriers) ------------
 *
 * Once a task has signalled, thread 0 of its worker copies the weights of
 * the worker's next task into the other of two slots of shared memory, so
 * they stream in while the worker waits for that task's event; the task
 * that reads a slot waits on the slot's mbarrier. Below sm_90 the task
 * stages its own weights before its wait (cp.async, one slot). */
typedef struct {
    uint64_t bar[2];     /* the mbarriers of the slots */
    uint32_t parity[2];  /* the phase parity the slot's current copy completes */
    uint32_t uses[2];    /* copies issued into each slot */
    int32_t task[2];     /* the task whose weights the slot holds (or -1) */
    uint32_t rows[2];    /* its weight rows there */
    uint32_t step[2];
    uint32_t next;       /* the slot the next copy goes to */
    int32_t cur;         /* the current task's slot, or -1 */
    uint32_t cur_parity;
} ring_state;

__shared__ ring_state s_ring;

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

#if __CUDA_ARCH__ >= 900
#define MPK_RING 1
__device__ __forceinline__ void mbar_init(uint64_t *bar)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ bool mbar_done(uint64_t *bar, uint32_t parity)
{
    uint32_t ok;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                 : "=r"(ok)
                 : "r"(smem_addr(bar)), "r"(parity)
                 : "memory");
    return ok != 0;
}

/* bytes (a multiple of 16, < 2^20) from global src to shared dst, both
 * 16-byte aligned, completing on bar; by one thread. */
__device__ __forceinline__ void bulk_load(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); /* after the slot's last generic reads */
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
    for (uint32_t o = 0; o < bytes; o += 32768) {
        uint32_t n = bytes - o < 32768 ? bytes - o : 32768;
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         smem_addr((uint8_t *)dst + o)),
                     "l"((const uint8_t *)src + o), "r"(n), "r"(smem_addr(bar))
                     : "memory");
    }
}

__device__ __forceinline__ void bulk_prefetch_l2(const void *src, uint64_t bytes)
{
    for (uint64_t o = 0; o < bytes; o += 1u << 20) {
        uint32_t n = bytes - o < (1u << 20) ? (uint32_t)(bytes - o) : 1u << 20;
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((const uint8_t *)src + o), "r"(n & ~15u)
                     : "memory");
    }
}
#else
#define MPK_RING 0
#endif

/* The trace's mark (trace_rec): thread 0 stamps the point of an op that
 * splits its time in the trace; one_task clears it before the op. */
__shared__ uint64_t s_mark;

__device__ __forceinline__ void trace_mark(const kparams &P)
{
    if (P.trace && threadIdx.x == 0)
        s_mark = gtimer();
}

__device__ __forceinline__ void prefetch_l1(const void *p)
{
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
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

/* Global step gs of a launch (shared.h): its graph (1: the chunk graph),
 * its step in that graph, and the position of its last row. */
__device__ __forceinline__ uint32_t gs_graph(const kparams &P, uint32_t gs) { return gs < P.nchunk ? 1u : 0u; }
__device__ __forceinline__ uint32_t gs_local(const kparams &P, uint32_t gs) { return gs < P.nchunk ? gs : gs - P.nchunk; }
__device__ __forceinline__ uint32_t gs_last_pos(const kparams &P, uint32_t gs)
{
    if (gs < P.nchunk) {
        uint32_t end = (gs + 1) * P.chunk;
        return (end < P.np ? end : P.np) - 1;
    }
    return (P.nchunk ? P.np : 0) + gs - P.nchunk;
}

#endif
