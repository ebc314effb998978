/*
 * mpk/sample.h - the one specification of sampling, for the CPU executor
 * (runtime/cpu/sample.c) and the GPU's: the same settings, the same random
 * numbers, the same kept set, so a seed gives the same tokens on both.
 * C and CUDA device code: static inline functions, integer math and logf.
 *
 * SETTINGS (mpk_sampler)
 *   temperature  >= 0, finite. 0 is greedy: the blob's own argmax, the
 *                tokens of an mpk-run without sampling, bit for bit.
 *   top_k        >= 0; 0 is off. 1 is greedy too (whatever the rest).
 *   top_p        in (0, 1]; 1 is off.
 *   min_p        in [0, 1); 0 is off.
 *   seed         any; the same seed, logits and positions give the same
 *                tokens.
 *
 * SEMANTICS (sampling: temperature > 0 and top_k != 1), over the logits
 * l_0 .. l_{V-1} of one step, all ranks' parts in rank order:
 *
 *   keys     x_i = l_i / temperature, a float division. A token whose key
 *            is not finite (a NaN or infinite logit, or a division that
 *            overflows) is never chosen; F is the set of the others. No
 *            finite key is an error of the step, as for greedy.
 *   m        = max over F of x_i.
 *   t_k      the top_k-th largest key of F (counted with multiplicity;
 *            every token tied with it is kept); -inf when top_k is 0 or
 *            top_k >= |F|.
 *   K        = { i in F : x_i >= t_k }, the top-k-kept tokens.
 *   t_p      with weights w_i = exp((double)(x_i - m)) (the subtraction
 *            in float, exp and sums in double), the tokens of K sorted by
 *            key descending, Z = the sum of w over K in that order: the key
 *            of the first token at which the running sum (in the same
 *            order, that token included) is >= top_p * Z; -inf when top_p
 *            is 1. Tokens tied with it are kept.
 *   t_min    = m + logf(min_p) (float); -inf when min_p is 0.
 *   S        = { i in F : x_i >= max(t_k, t_p, t_min) }; never empty: the
 *            top token is in it.
 *   token    = the i in S with the largest x_i + mpk_rng_gumbel(mpk_rng_bits(
 *            seed, counter, i)) (a float sum), ties to the lowest index.
 *
 * That is transformers' order (temperature, top_k, top_p, min_p; its
 * min_tokens_to_keep 1), drawn with the Gumbel-max trick: argmax of
 * key + Gumbel noise is a draw from softmax(x) over S, and each token's
 * noise depends on (seed, counter, token) alone, never on the order the
 * tokens are visited: a GPU can compute it in parallel, and the CPU and
 * GPU agree up to a one-ulp difference of logf, exp or a double sum in
 * another order (a near-tie, as for greedy; build the device code without
 * --use_fast_math, whose __logf and approximate division would widen it).
 * With one seed a stricter filter changes a step's token only where the
 * looser one's fell outside it.
 *
 * counter is the position of the step's input token in the sequence
 * (0 for the first prompt token): the same on both executors, whatever
 * the task order, and one step's draws are independent of another's.
 *
 * Pinned values of mpk_rng_bits, for another implementation to check
 * against (tests/check_sample.c): (seed 0, counter 0, index 0) 0xf9f8d4a1,
 * (0, 0, 1) 0x2e4bbc3d, (0, 1, 0) 0x0632b2dc, (1, 0, 0) 0x5f7c1f46,
 * (0xdeadbeefcafef00d, 4095, 151935) 0x0775588c. tests/sample_replay checks
 * an executor's tokens against mpk_sample on the logits it dumped.
 */
#ifndef MPK_SAMPLE_H
#define MPK_SAMPLE_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MPK_HD __host__ __device__
#else
#define MPK_HD
#endif

typedef struct {
    float temperature;  /* 0: greedy */
    int32_t top_k;      /* 0: off; 1: greedy */
    float top_p;        /* 1: off */
    float min_p;        /* 0: off */
    uint64_t seed;
} mpk_sampler;

/* Greedy: no sampler, temperature 0, or top_k 1. */
MPK_HD static inline int mpk_sampler_greedy(const mpk_sampler *s)
{
    return !s || s->temperature == 0.0f || s->top_k == 1;
}

/* One round of splitmix64's finalizer (Steele, Lea, Flood 2014): a
 * bijection of 64-bit words that mixes every input bit into every output
 * bit. */
MPK_HD static inline uint64_t mpk_rng_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 32 random bits for token index at position counter under seed: the key
 * (the mixed seed) xor the message (counter, index), mixed twice more. For
 * one seed distinct (counter, index) pairs give distinct 64-bit words
 * before the top 32 bits are taken. */
MPK_HD static inline uint32_t mpk_rng_bits(uint64_t seed, uint32_t counter, uint32_t index)
{
    uint64_t key = mpk_rng_mix(seed ^ 0x6a09e667f3bcc909ull);
    uint64_t z = mpk_rng_mix(key ^ (((uint64_t)counter << 32) | index));
    return (uint32_t)(mpk_rng_mix(z ^ key) >> 32);
}

/* A standard Gumbel variate from 32 random bits: u = (2 * (bits >> 9) +
 * 1) * 2^-24, a float in (0, 1) made exactly (the odd multiples of 2^-24,
 * 23 bits of the draw: with 24 bits the + 0.5 would round to 1 at the top),
 * then g = -logf(-logf(u)), in [-2.8, 16.7]. */
MPK_HD static inline float mpk_rng_gumbel(uint32_t bits)
{
    float u = (float)(((bits >> 9) << 1) | 1u) * 5.9604644775390625e-8f; /* 2^-24 */
    return -logf(-logf(u));
}

#endif
