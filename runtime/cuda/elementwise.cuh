/*
 * elementwise.cuh - the small task kinds (man 5 mpk-blob): INPUTS, EMBED,
 * RMSNORM, ROPE, ADD, MUL, SILU, COPY and PART_SUM (the sums of a split
 * matvec's parts), each over its [lo, hi) range with the CTA's threads
 * striding it; and ALLREDUCE, which the one-GPU executor
 * refuses before the launch. Imported models fuse most of these into
 * matvec and attention; the op-by-op test (tests/ops) runs each alone.
 */
#ifndef MPK_CUDA_ELEMENTWISE_CUH
#define MPK_CUDA_ELEMENTWISE_CUH

#include "common.cuh"

SMEM_NONE(inputs)
SMEM_NONE(embed)
SMEM_NONE(rmsnorm)
SMEM_NONE(rope)
SMEM_NONE(add)
SMEM_NONE(mul)
SMEM_NONE(silu)
SMEM_NONE(copy)
SMEM_NONE(part_sum)

/* The step's tokens and positions. A chunk step (global step gs <
 * nchunk): rows r of prompt positions gs * chunk + r, the rows past the
 * prompt's end repeating its last token at its position (they compute what
 * that row does, so nothing changes). A decode step: the prompt's token at
 * its position while the prompt lasts (a prompt fed a token a step), else
 * the token the step before made (after chunk steps, the chunk graph's). */
__device__ bool op_inputs(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)task, (void)sm;
    int32_t *tok = (int32_t *)P.tp[t->inputs.token];
    int32_t *pos = t->inputs.pos != MPKB_NONE ? (int32_t *)P.tp[t->inputs.pos] : NULL;
    if (step < P.nchunk) {
        for (uint32_t r = threadIdx.x; r < P.chunk; r += NT) {
            uint32_t p = step * P.chunk + r;
            p = p < P.np ? p : P.np - 1;
            __stcg(tok + r, P.prompt[p]);
            if (pos)
                __stcg(pos + r, (int32_t)p);
        }
    } else if (threadIdx.x == 0) {
        uint32_t p = gs_last_pos(P, step);
        const kgraph &G = P.gr[step == P.nchunk && P.nchunk ? 1 : 0]; /* who made the token */
        __stcg(tok, p < P.np ? P.prompt[p] : __ldcg((const int32_t *)G.next_out));
        if (pos)
            __stcg(pos, (int32_t)p);
    }
    return true;
}

__device__ bool op_embed(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)sm;
    const mpkb_tensor *tab = &P.tensors[t->embed.table];
    uint32_t rows = P.tensors[t->embed.ids].dims[0];
    uint64_t Hd = tab->dims[1];
    for (uint32_t r = 0; r < rows; r++) { /* each row of the step */
        int32_t id = __ldcg((const int32_t *)P.tp[t->embed.ids] + r);
        if (id < 0 || (uint32_t)id >= tab->dims[0]) {
            if (threadIdx.x == 0)
                raise_error(P, ERR_TOKEN, (int32_t)step, (int32_t)task, -1, id, tab->dims[0], 0, 0);
            return false;
        }
        tview src = view(P, t->embed.table);
        uint32_t od = P.tensors[t->embed.out].dtype;
        for (uint64_t c = (uint64_t)t->embed.lo + threadIdx.x; c < (uint64_t)t->embed.hi; c += NT)
            stx(od, P.tp[t->embed.out], r * Hd + c, ldv(src, (uint64_t)id * Hd + c));
    }
    return true;
}

__device__ bool op_rmsnorm(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    uint64_t d = P.tensors[t->rmsnorm.gamma].dims[0];
    tview x = view(P, t->rmsnorm.x), g = view(P, t->rmsnorm.gamma);
    uint32_t od = P.tensors[t->rmsnorm.out].dtype;
    for (uint64_t r = (uint64_t)t->rmsnorm.lo; r < (uint64_t)t->rmsnorm.hi; r++) {
        float ss = 0;
        for (uint64_t i = threadIdx.x; i < d; i += NT) {
            float v = ldv(x, r * d + i);
            ss += v * v;
        }
        float s = 1.0f / sqrtf(block_sum(ss) / (float)d + t->rmsnorm.eps);
        for (uint64_t i = threadIdx.x; i < d; i += NT)
            stx(od, P.tp[t->rmsnorm.out], r * d + i, ldv(g, i) * (ldv(x, r * d + i) * s));
        __syncthreads(); /* out may overlap x of the next row */
    }
    return true;
}

/* Head vectors [lo, hi) of x [n, H, D] (vector v in row v / H): the
 * rotate-half rope at its row's position. */
__device__ bool op_rope(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    uint64_t lo = (uint64_t)t->rope.lo, hi = (uint64_t)t->rope.hi;
    uint64_t d = P.tensors[t->rope.x].dims[2], half = d / 2, H = P.tensors[t->rope.x].dims[1];
    const int32_t *posv = (const int32_t *)P.tp[t->rope.pos];
    tview x = view(P, t->rope.x), f = view(P, t->rope.inv_freq);
    uint32_t od = P.tensors[t->rope.out].dtype;
    for (uint64_t k = threadIdx.x; k < (hi - lo) * half; k += NT) {
        uint64_t h = lo + k / half, i = k % half;
        int32_t pos = __ldcg(posv + h / H);
        float ang = (float)pos * ldv(f, i);
        float c = cosf(ang), s = sinf(ang);
        float a = ldv(x, h * d + i), b = ldv(x, h * d + i + half);
        stx(od, P.tp[t->rope.out], h * d + i, a * c - b * s);
        stx(od, P.tp[t->rope.out], h * d + i + half, b * c + a * s);
    }
    return true;
}

/* out[i] = f(a[i], b[i]) over [lo, hi): ADD and MUL have the same view. */
template <bool ADD>
__device__ void binary(const kparams &P, const mpkb_task *t)
{
    tview a = view(P, t->add.a), b = view(P, t->add.b);
    uint32_t od = P.tensors[t->add.out].dtype;
    for (uint64_t i = (uint64_t)t->add.lo + threadIdx.x; i < (uint64_t)t->add.hi; i += NT) {
        float x = ldv(a, i), y = ldv(b, i);
        stx(od, P.tp[t->add.out], i, ADD ? x + y : x * y);
    }
}

__device__ bool op_add(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    binary<true>(P, t);
    return true;
}

__device__ bool op_mul(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    binary<false>(P, t);
    return true;
}

__device__ bool op_silu(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    tview x = view(P, t->silu.x);
    uint32_t od = P.tensors[t->silu.out].dtype;
    for (uint64_t i = (uint64_t)t->silu.lo + threadIdx.x; i < (uint64_t)t->silu.hi; i += NT) {
        float v = ldv(x, i);
        stx(od, P.tp[t->silu.out], i, v / (1.0f + expf(-v)));
    }
    return true;
}

/* rows x len elements from src (from src_off, src_stride apart) to dst,
 * packed; bytes moved as they are. */
__device__ bool op_copy(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    uint32_t es = dsize(P.tensors[t->copy.src].dtype);
    uint64_t rows = (uint64_t)t->copy.rows, w = (uint64_t)t->copy.len;
    const uint8_t *src = P.tp[t->copy.src];
    uint8_t *dst = P.tp[t->copy.dst];
    for (uint64_t k = threadIdx.x; k < rows * w; k += NT) {
        uint64_t r = k / w, e = k % w, from = (uint64_t)t->copy.src_off + r * (uint64_t)t->copy.src_stride + e;
        if (es == 2)
            __stcg((unsigned short *)dst + r * w + e, __ldcg((const unsigned short *)src + from));
        else
            __stcg((unsigned *)dst + r * w + e, __ldcg((const unsigned *)src + from));
    }
    return true;
}

/* out[i] = the parts' partials at i, summed in part order, + residual[i]
 * (the CPU executor's order, so equal partials give equal bits). */
__device__ bool op_part_sum(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    const mpkb_tensor *O = &P.tensors[t->part_sum.out];
    uint64_t n = mpkb_numel(O), parts = P.tensors[t->part_sum.partials].dims[0];
    const float *pp = (const float *)P.tp[t->part_sum.partials];
    const uint8_t *rp = (t->flags & MPKB_F_EPI_RESIDUAL) ? P.tp[t->part_sum.residual] : NULL;
    uint32_t rd = rp ? P.tensors[t->part_sum.residual].dtype : 0;
    for (uint64_t i = (uint64_t)t->part_sum.lo + threadIdx.x; i < (uint64_t)t->part_sum.hi; i += NT) {
        float sum = 0;
        for (uint64_t q = 0; q < parts; q++)
            sum += __ldcg(pp + q * n + i);
        if (rp)
            sum = ldx(rd, rp, i) + sum;
        stx(O->dtype, P.tp[t->part_sum.out], i, sum);
    }
    return true;
}

__host__ __device__ inline uint32_t smem_allreduce(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)T, (void)t;
#ifndef __CUDA_ARCH__
    snprintf(why, n, "allreduce across ranks is beyond the one-GPU executor");
#else
    (void)why, (void)n;
#endif
    return UINT32_MAX;
}

/* Never launched (smem_allreduce refuses it); a blob that got here anyway
 * stops with an error instead of running a wrong step. */
__device__ bool op_allreduce(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)t, (void)sm;
    if (threadIdx.x == 0)
        raise_error(P, ERR_UNSUPPORTED, (int32_t)step, (int32_t)task, -1, 0, 0, 0, 0);
    return false;
}

#endif
