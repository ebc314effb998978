/*
 * merge.cuh - ATTN_MERGE: a kv head's split-KV partials (each chunk's
 * unnormalised output, running max and sum; man 5 mpk-blob) combined into
 * the attention output.
 */
#ifndef MPK_CUDA_MERGE_CUH
#define MPK_CUDA_MERGE_CUH

#include "common.cuh"

/* Each head's chunk weights [group][chunks], then each head's total. */
__host__ __device__ inline uint32_t smem_attn_merge(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)T, (void)why, (void)n;
    return 4u * ((uint32_t)t->attn_merge.group * (uint32_t)t->attn_merge.chunks + (uint32_t)t->attn_merge.group);
}

/* Combine a kv head's chunks: each head's chunk weights e^(m_c - M) and
 * its total once, in shared memory (not again for every output element),
 * then every output element. */
__device__ bool op_attn_merge(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task;
    const mpkb_tensor *O = &P.tensors[t->attn_merge.out];
    uint32_t D = O->dims[2], nch = (uint32_t)t->attn_merge.chunks, per = (uint32_t)t->attn_merge.group;
    uint32_t g = (uint32_t)t->attn_merge.kv_head;
    const float *pp = (const float *)P.tp[t->attn_merge.partials];
    float *wgt = sm, *sum = sm + per * nch; /* [per][nch], [per] */
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, H = O->dims[1];
    for (uint32_t r = 0; r < O->dims[0]; r++) { /* each row of the step */
        uint32_t h0 = r * H + g * per; /* the row's first head of the group */
        if (r > 0)
            __syncthreads(); /* wgt and sum are this row's */
        /* a warp per head, a lane per chunk: the chunks' loads go out together
         * instead of one after another */
        for (uint32_t i = warp; i < per; i += NW) {
            const float *ph = pp + (uint64_t)(h0 + i) * nch * (D + 2);
            float mx = -INFINITY, l = 0;
            for (uint32_t c = lane; c < nch; c += 32)
                mx = fmaxf(mx, __ldcg(ph + (uint64_t)c * (D + 2) + D));
            mx = warp_max(mx);
            for (uint32_t c = lane; c < nch; c += 32) {
                float m = __ldcg(ph + (uint64_t)c * (D + 2) + D);
                float w = m == -INFINITY ? -1.0f : expf(m - mx); /* -1: an empty chunk */
                wgt[i * nch + c] = w;
                if (m != -INFINITY)
                    l += __ldcg(ph + (uint64_t)c * (D + 2) + D + 1) * w;
            }
            l = warp_sum(l);
            if (lane == 0)
                sum[i] = l;
        }
        __syncthreads();
        for (uint32_t o = threadIdx.x; o < per * D; o += NT) {
            uint32_t i = o / D, d = o % D;
            const float *ph = pp + (uint64_t)(h0 + i) * nch * (D + 2);
            float a = 0;
#pragma unroll 4
            for (uint32_t c = 0; c < nch; c++)
                if (wgt[i * nch + c] >= 0.0f)
                    a += __ldcg(ph + (uint64_t)c * (D + 2) + d) * wgt[i * nch + c];
            stx(O->dtype, P.tp[t->attn_merge.out], (uint64_t)(h0 + i) * D + d, a / sum[i]);
        }
    }
    return true;
}

#endif
