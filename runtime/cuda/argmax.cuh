/*
 * argmax.cuh - ARGMAX_PART and ARGMAX_REDUCE: the greedy token of a step
 * (man 5 mpk-blob). The partials are (value, column) pairs, one per tile;
 * the reduce also ends the step on the device: it streams the token to the
 * host and decides whether another step runs. With a sampler the token is
 * drawn from the logits instead (sample.cuh).
 */
#ifndef MPK_CUDA_ARGMAX_CUH
#define MPK_CUDA_ARGMAX_CUH

#include "common.cuh"
#include "sample.cuh"

SMEM_NONE(argmax_part)

__device__ bool op_argmax_part(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task, (void)sm;
    float best = -INFINITY;
    int32_t at = t->argmax_part.lo;
    for (uint64_t c = (uint64_t)t->argmax_part.lo + threadIdx.x; c < (uint64_t)t->argmax_part.hi; c += NT) {
        float v = lds(P, t->argmax_part.x, c);
        if (better(v, (int32_t)c, best, at))
            best = v, at = (int32_t)c;
    }
    block_argmax(best, at);
    if (threadIdx.x == 0) {
        float *pp = (float *)P.tp[t->argmax_part.partials];
        __stcg(pp + 2 * t->argmax_part.tile, best);
        __stcg((int32_t *)pp + 2 * t->argmax_part.tile + 1, at);
    }
    return true;
}

/* One GPU: the host refuses MPKB_F_ALL_RANKS before the launch. Shared
 * memory: the sampler's, whether this run samples or not. */
__host__ __device__ inline uint32_t smem_argmax_reduce(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)T;
    if (t->flags & MPKB_F_ALL_RANKS) {
#ifndef __CUDA_ARCH__
        snprintf(why, n, "argmax_reduce across ranks is beyond the one-GPU executor");
#else
        (void)why, (void)n;
#endif
        return UINT32_MAX;
    }
    return smem_sample();
}

/* The greedy token of a step: argmax over the partials, then the step's
 * end: stream the token, decide whether another step runs. */
__device__ bool op_argmax_reduce(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    __shared__ int32_t s_tok;
    __shared__ bool s_bad;
    const kgraph &G = P.gr[gs_graph(P, step)];
    uint32_t at_pos = gs_last_pos(P, step); /* the row the logits are of */
    bool made = at_pos + 1 >= P.np;        /* a generated token, not a prompt step's */
    if (P.sampling && made) {
        /* the draw replaces the greedy token; its counter is the position
         * of the row the logits are of. A prompt step's token is never
         * used, so it is not drawn (the argmax below checks its logits) */
        int32_t why = 0, tok = sample_token(P, G.logits, at_pos, sm, &why);
        if (threadIdx.x == 0) {
            s_bad = tok < 0;
            if (s_bad)
                raise_error(P, ERR_LOGITS, (int32_t)step, (int32_t)task, -1, 0, (uint32_t)why, 0, 0);
            else
                __stcg((int32_t *)P.tp[t->argmax_reduce.out], tok);
            s_tok = tok;
        }
    } else if (threadIdx.x == 0) {
        const float *pp = (const float *)P.tp[t->argmax_reduce.partials];
        uint64_t tiles = P.tensors[t->argmax_reduce.partials].nbytes / 8;
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
    if (P.dump && step >= P.dump_first)
        for (uint32_t i = threadIdx.x; i < P.vocab; i += NT)
            P.dump[(uint64_t)(step - P.dump_first) * P.vocab + i] = ldx(P.logits_dtype, G.logits, i);
    if (threadIdx.x == 0 && P.tp[t->argmax_reduce.out] == G.next_out) {
        int32_t tok = s_tok;
        bool last = step + 1 >= P.max_steps;
        if (made) {
            uint32_t k = at_pos + 1 - P.np;
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

#endif
