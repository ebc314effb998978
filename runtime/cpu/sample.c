/*
 * sample.c - sampling on the CPU: mpk/sample.h's semantics, done the plain
 * way (a sort of the finite keys when top-k or top-p needs one). The GPU
 * executor computes the same thing in parallel.
 */
#include "runtime.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float key;
    uint32_t index;
} keyed;

size_t mpk_sample_scratch(uint32_t vocab) { return sizeof(keyed) * ((size_t)vocab + 1); }

/* Descending by key, then ascending by index (only the keys matter). */
static int by_key_desc(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? 1 : -1;
    return (x->index > y->index) - (x->index < y->index);
}

int32_t mpk_sample(const float *logits, uint32_t vocab, const mpk_sampler *s, uint32_t counter, void *scratch)
{
    if (mpk_sampler_greedy(s)) { /* the argmax of the finite logits */
        int32_t best = -1;
        for (uint32_t i = 0; i < vocab; i++)
            if (isfinite(logits[i]) && (best < 0 || logits[i] > logits[best]))
                best = (int32_t)i;
        return best;
    }
    keyed *k = scratch;
    uint32_t n = 0;
    float m = -INFINITY;
    for (uint32_t i = 0; i < vocab; i++) {
        float x = logits[i] / s->temperature;
        if (!isfinite(x))
            continue;
        m = x > m ? x : m;
        k[n++] = (keyed){x, i};
    }
    if (n == 0)
        return -1;
    float t = -INFINITY;
    bool top_k = s->top_k > 0 && (uint32_t)s->top_k < n, top_p = s->top_p < 1.0f;
    if (top_k || top_p) {
        qsort(k, n, sizeof *k, by_key_desc);
        uint32_t nk = n;
        if (top_k) {
            t = k[s->top_k - 1].key;
            nk = (uint32_t)s->top_k;
            while (nk < n && k[nk].key >= t) /* ties at the boundary are kept */
                nk++;
        }
        if (top_p) {
            double z = 0, c = 0;
            for (uint32_t j = 0; j < nk; j++)
                z += exp((double)(k[j].key - m));
            double want = (double)s->top_p * z;
            uint32_t j = 0;
            for (; j + 1 < nk; j++) {
                c += exp((double)(k[j].key - m));
                if (c >= want)
                    break;
            }
            t = k[j].key > t ? k[j].key : t;
        }
        n = 0; /* back to index order for the draw */
        for (uint32_t i = 0; i < vocab; i++) {
            float x = logits[i] / s->temperature;
            if (isfinite(x))
                k[n++] = (keyed){x, i};
        }
    }
    if (s->min_p > 0.0f) {
        float tm = m + logf(s->min_p);
        t = tm > t ? tm : t;
    }
    int32_t best = -1;
    float best_v = -INFINITY;
    for (uint32_t j = 0; j < n; j++) {
        if (k[j].key < t)
            continue;
        float v = k[j].key + mpk_rng_gumbel(mpk_rng_bits(s->seed, counter, k[j].index));
        if (best < 0 || v > best_v)
            best = (int32_t)k[j].index, best_v = v;
    }
    return best;
}
