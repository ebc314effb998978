/*
 * sample.cuh - sampling on the device: the token of a step drawn as
 * mpk/sample.h specifies (temperature, top-k, top-p, min-p, the Gumbel-max
 * draw keyed by seed, position and token), by the worker that runs the
 * step's ARGMAX_REDUCE, over the logits tensor in full.
 *
 * The thresholds come from radix selection over the keys' bits, a byte at
 * a time from the top, with histograms in shared memory: t_k counts (the
 * top_k-th largest key exactly), t_p sums exp(x - m) in double (the key at
 * which the mass from the top reaches top_p x Z; the sums in another order
 * than the CPU's sorted one, so a boundary within a double rounding of the
 * target can fall the other way). At most 9 passes over the vocabulary:
 * the max, 4 for t_k, 1 for Z and 4 for t_p when those filters are on,
 * then the draw.
 */
#ifndef MPK_CUDA_SAMPLE_CUH
#define MPK_CUDA_SAMPLE_CUH

#include "common.cuh"

#define SHIST 8 /* histogram copies, a pair of warps each, to spread the atomics */

/* What the sampler needs of shared memory: SHIST histograms of 256 counts
 * and 256 double masses, the scan's results (16 bytes) and NW doubles for
 * a block sum. */
__host__ __device__ __forceinline__ uint32_t smem_sample(void) { return SHIST * 256 * (8 + 4) + 16 + 8 * NW; }

/* Keys as unsigned integers in the same order (larger key, larger u). */
__device__ __forceinline__ uint32_t key_bits(float x)
{
    uint32_t b = __float_as_uint(x);
    return b ^ ((b >> 31) ? 0xffffffffu : 0x80000000u);
}

__device__ __forceinline__ float bits_key(uint32_t u) { return __uint_as_float(u ^ ((u >> 31) ? 0x80000000u : 0xffffffffu)); }

__device__ __forceinline__ float sample_key(const kparams &P, const uint8_t *lg, uint32_t i)
{
    return ldx(P.logits_dtype, lg, i) / P.sampler.temperature;
}

__device__ double block_sum_double(double v, double *part)
{
    __syncthreads();
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0;
    for (int w = 0; w < NW; w++)
        s += part[w];
    return s;
}

/* One radix pass: among the finite keys >= lo whose bits match prefix under
 * mask, the count (and with MASS the mass exp(x - m)) per value of the byte
 * at shift; the copies summed into copy 0 in a fixed order. */
template <bool MASS>
__device__ void sample_hist(const kparams &P, const uint8_t *lg, float lo, float m, uint32_t prefix, uint32_t mask, int shift,
                            uint32_t *cnt, double *mass)
{
    for (uint32_t i = threadIdx.x; i < SHIST * 256; i += NT) {
        cnt[i] = 0;
        if (MASS)
            mass[i] = 0;
    }
    __syncthreads();
    uint32_t h = (threadIdx.x >> 5) % SHIST;
    for (uint32_t i = threadIdx.x; i < P.vocab; i += NT) {
        float x = sample_key(P, lg, i);
        uint32_t u = key_bits(x);
        bool in = isfinite(x) && x >= lo && (u & mask) == prefix;
        uint32_t d = (u >> shift) & 255;
        if (MASS) {
            if (in)
                atomicAdd(&mass[h * 256 + d], exp((double)(x - m)));
        }
        /* most keys share a few bytes at the top: one add per byte value
         * and warp, not one per lane */
        uint32_t act = __ballot_sync(__activemask(), in);
        if (in) {
            uint32_t same = __match_any_sync(act, d);
            if ((threadIdx.x & 31) == (uint32_t)(__ffs(same) - 1))
                atomicAdd(&cnt[h * 256 + d], (uint32_t)__popc(same));
        }
    }
    __syncthreads();
    for (uint32_t d = threadIdx.x; d < 256; d += NT)
        for (uint32_t c = 1; c < SHIST; c++) {
            cnt[d] += cnt[c * 256 + d];
            if (MASS)
                mass[d] += mass[c * 256 + d];
        }
    __syncthreads();
}

/* The k-th largest finite key (with multiplicity), k <= the finite count. */
__device__ float sample_kth(const kparams &P, const uint8_t *lg, uint32_t k, uint32_t *cnt, double *mass, uint32_t *res)
{
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        sample_hist<false>(P, lg, -INFINITY, 0.0f, prefix, mask, shift, cnt, mass);
        if (threadIdx.x == 0) {
            uint32_t cum = 0, d = 0;
            for (int b = 255; b >= 0; b--) {
                if (cum + cnt[b] >= k) {
                    d = (uint32_t)b;
                    break;
                }
                cum += cnt[b];
            }
            res[0] = d, res[1] = k - cum;
        }
        __syncthreads();
        prefix |= res[0] << shift, mask |= 255u << shift, k = res[1];
        __syncthreads();
    }
    return bits_key(prefix);
}

/* The key at which the mass of the keys >= lo, from the top, reaches
 * target. */
__device__ float sample_top_p(const kparams &P, const uint8_t *lg, float lo, float m, double target, uint32_t *cnt, double *mass,
                              uint32_t *res)
{
    uint32_t prefix = 0, mask = 0;
    double above = 0; /* the mass of the keys above the prefix's range */
    for (int shift = 24; shift >= 0; shift -= 8) {
        sample_hist<true>(P, lg, lo, m, prefix, mask, shift, cnt, mass);
        if (threadIdx.x == 0) {
            int d = -1, last = -1;
            for (int b = 255; b >= 0; b--) {
                if (!cnt[b])
                    continue;
                last = b;
                if (above + mass[b] >= target) {
                    d = b;
                    break;
                }
                above += mass[b];
            }
            if (d < 0) /* rounding: the target lies past the last key; take it */
                d = last, above -= last >= 0 ? mass[last] : 0;
            res[0] = d < 0 ? 0 : (uint32_t)d;
        }
        __syncthreads();
        prefix |= res[0] << shift, mask |= 255u << shift;
        __syncthreads();
    }
    return bits_key(prefix);
}

/* The step's token, in thread 0 (all threads call it); -1 when no key is
 * finite, with *why 2 when some logit is (the temperature overflowed the
 * division), else 0. */
__device__ int32_t sample_token(const kparams &P, const uint8_t *lg, uint32_t counter, float *sm, int32_t *why)
{
    const mpk_sampler *S = &P.sampler;
    double *mass = (double *)sm;
    uint32_t *cnt = (uint32_t *)(mass + SHIST * 256), *res = cnt + SHIST * 256;
    double *part = (double *)(res + 4); /* NW doubles: 8-aligned, as res + 4 is 16 bytes in */
    float m = -INFINITY, nf = 0, nl = 0;
    for (uint32_t i = threadIdx.x; i < P.vocab; i += NT) {
        float l = ldx(P.logits_dtype, lg, i), x = l / S->temperature;
        if (isfinite(x))
            m = fmaxf(m, x), nf += 1;
        nl += isfinite(l) ? 1 : 0;
    }
    /* the block's max through the same reduction as its sums */
    __shared__ float s_max[NW];
    m = warp_max(m);
    if ((threadIdx.x & 31) == 0)
        s_max[threadIdx.x >> 5] = m;
    __syncthreads();
    for (int w = 0; w < NW; w++)
        m = fmaxf(m, s_max[w]);
    nf = block_sum(nf);
    nl = block_sum(nl);
    if (nf == 0) {
        *why = nl > 0 ? 2 : 0;
        return -1;
    }
    float tk = -INFINITY, tp = -INFINITY, tmin = -INFINITY;
    if (S->top_k > 0 && (float)S->top_k < nf)
        tk = sample_kth(P, lg, (uint32_t)S->top_k, cnt, mass, res);
    if (S->top_p < 1.0f) {
        double z = 0;
        for (uint32_t i = threadIdx.x; i < P.vocab; i += NT) {
            float x = sample_key(P, lg, i);
            if (isfinite(x) && x >= tk)
                z += exp((double)(x - m));
        }
        z = block_sum_double(z, part);
        tp = sample_top_p(P, lg, tk, m, (double)S->top_p * z, cnt, mass, res);
    }
    if (S->min_p > 0.0f)
        tmin = m + logf(S->min_p);
    float thr = fmaxf(tk, fmaxf(tp, tmin));
    /* A Gumbel variate lies in [-2.9, 16.7]: the top key's score is at least
     * m - 2.9, so a key below m - 20 can never win, and its draw is
     * skipped. */
    thr = fmaxf(thr, m - 20.0f);
    float best = -INFINITY;
    int32_t at = -1;
    for (uint32_t i = threadIdx.x; i < P.vocab; i += NT) {
        float x = sample_key(P, lg, i);
        if (isfinite(x) && x >= thr) {
            float v = x + mpk_rng_gumbel(mpk_rng_bits(S->seed, counter, i));
            if (at < 0 || better(v, (int32_t)i, best, at))
                best = v, at = (int32_t)i;
        }
    }
    if (at < 0)
        at = INT32_MAX, best = -INFINITY; /* loses to any candidate */
    block_argmax(best, at);
    return at;
}

#endif
