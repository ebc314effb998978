/*
 * merge.cuh - ATTN_MERGE: a kv head's split-KV partials (each chunk's
 * unnormalised output, running max and sum; man 5 mpk-blob) combined into
 * the attention output, for each row of the step.
 *
 * The items are (row, head of the group) pairs, a warp each, so that a
 * chunk step's rows run side by side (one after another they took 176 us
 * a task at 64 rows). A lane per chunk reads the chunks' maxima and sums
 * and writes the chunk weights e^(m_c - M) into the warp's own row of
 * shared memory; then a lane per output element (d = lane + 32 e) sums
 * over the chunks in order, MERGE_U chunks' loads issued before their
 * products, each load a warp's 128 contiguous bytes.
 */
#ifndef MPK_CUDA_MERGE_CUH
#define MPK_CUDA_MERGE_CUH

#include "common.cuh"

#define MERGE_U 8 /* chunks whose loads are in flight together */
#define MERGE_E 4 /* output elements per lane in one pass over the chunks */

/* Each warp's chunk weights, [NW][chunks]. */
__host__ __device__ inline uint32_t smem_attn_merge(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)T, (void)why, (void)n;
    return 4u * NW * (uint32_t)t->attn_merge.chunks;
}

__device__ bool op_attn_merge(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task;
    const mpkb_tensor *O = &P.tensors[t->attn_merge.out];
    uint32_t D = O->dims[2], nch = (uint32_t)t->attn_merge.chunks, per = (uint32_t)t->attn_merge.group;
    uint32_t g = (uint32_t)t->attn_merge.kv_head, H = O->dims[1], NI = O->dims[0] * per;
    const float *pp = (const float *)P.tp[t->attn_merge.partials];
    uint8_t *op = P.tp[t->attn_merge.out];
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, od = O->dtype;
    float *wgt = sm + warp * nch; /* -1: an empty chunk */
    for (uint32_t i = warp; i < NI; i += NW) {
        uint32_t r = i / per, head = r * H + g * per + i % per;
        const float *ph = pp + (uint64_t)head * nch * (D + 2);
        float mx = -INFINITY, l = 0;
        for (uint32_t c = lane; c < nch; c += 32)
            mx = fmaxf(mx, __ldcg(ph + (uint64_t)c * (D + 2) + D));
        mx = warp_max(mx);
        for (uint32_t c = lane; c < nch; c += 32) {
            float m = __ldcg(ph + (uint64_t)c * (D + 2) + D), s = __ldcg(ph + (uint64_t)c * (D + 2) + D + 1);
            float w = m == -INFINITY ? -1.0f : expf(m - mx);
            wgt[c] = w;
            if (m != -INFINITY)
                l += s * w;
        }
        l = warp_sum(l);
        __syncwarp(); /* wgt, written by lanes, read by all */
        for (uint32_t d0 = lane; d0 < D; d0 += 32 * MERGE_E) { /* elements d0 + 32 e */
            float acc[MERGE_E];
#pragma unroll
            for (int e = 0; e < MERGE_E; e++)
                acc[e] = 0;
            for (uint32_t c0 = 0; c0 < nch; c0 += MERGE_U) {
                float v[MERGE_U][MERGE_E];
#pragma unroll
                for (int u = 0; u < MERGE_U; u++)
#pragma unroll
                    for (int e = 0; e < MERGE_E; e++) {
                        uint32_t c = c0 + u, d = d0 + 32 * e;
                        v[u][e] = c < nch && d < D ? __ldcg(ph + (uint64_t)c * (D + 2) + d) : 0.0f;
                    }
#pragma unroll
                for (int u = 0; u < MERGE_U; u++) {
                    float w = c0 + u < nch ? wgt[c0 + u] : -1.0f;
                    if (w >= 0.0f)
#pragma unroll
                        for (int e = 0; e < MERGE_E; e++)
                            acc[e] += v[u][e] * w;
                }
            }
#pragma unroll
            for (int e = 0; e < MERGE_E; e++)
                if (d0 + 32 * e < D)
                    stx(od, op, (uint64_t)head * D + d0 + 32 * e, acc[e] / l);
        }
        __syncwarp(); /* wgt is the next item's */
    }
    return true;
}

#endif
