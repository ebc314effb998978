/*
 * sample.c - sampling on the CPU: mpk/sample.h's semantics, done the plain
 * way: top-k's threshold from a min-heap of the k largest keys (O(V log k),
 * about 0.5 ms for Qwen3's vocabulary at top-k 20), top-p's from a sort of
 * the top-k-kept keys (all of them without top-k: about 30 ms at 152k), then
 * one pass of Gumbel noise over the candidates. The GPU executor computes
 * the same thing in parallel.
 */
#include "runtime.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float key;
    uint32_t index;
} keyed;

size_t mpk_sample_scratch(uint32_t vocab) { return (sizeof(keyed) + sizeof(float)) * ((size_t)vocab + 1); }

/* Descending by key, then ascending by index (only the keys matter). */
static int by_key_desc(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? 1 : -1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Sift h[i] down in the min-heap h[0..n). */
static void sift_down(float *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (r < n && h[r] < h[m])
            m = r;
        if (m == i)
            return;
        float t = h[i];
        h[i] = h[m], h[m] = t;
        i = m;
    }
}

/* The k-th largest of the n keys (0 < k < n), with a min-heap of the k
 * largest: O(n log k). */
static float kth_largest(const keyed *x, uint32_t n, uint32_t k, float *h)
{
    for (uint32_t i = 0; i < k; i++)
        h[i] = x[i].key;
    for (uint32_t i = k / 2; i-- > 0;)
        sift_down(h, k, i);
    for (uint32_t i = k; i < n; i++)
        if (x[i].key > h[0]) {
            h[0] = x[i].key;
            sift_down(h, k, 0);
        }
    return h[0];
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
    float *heap = (float *)(k + vocab + 1);
    uint32_t n = 0; /* F: the finite keys, in index order */
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
    if (s->top_k > 0 && (uint32_t)s->top_k < n) { /* K: the keys >= t_k, ties kept */
        t = kth_largest(k, n, (uint32_t)s->top_k, heap);
        uint32_t nk = 0;
        for (uint32_t j = 0; j < n; j++)
            if (k[j].key >= t)
                k[nk++] = k[j];
        n = nk;
    }
    if (s->top_p < 1.0f) { /* over K sorted by key, descending */
        qsort(k, n, sizeof *k, by_key_desc);
        double z = 0, c = 0;
        for (uint32_t j = 0; j < n; j++)
            z += exp((double)(k[j].key - m));
        double want = (double)s->top_p * z;
        uint32_t j = 0;
        for (; j + 1 < n; j++) {
            c += exp((double)(k[j].key - m));
            if (c >= want)
                break;
        }
        t = k[j].key > t ? k[j].key : t;
    }
    if (s->min_p > 0.0f) {
        float tm = m + logf(s->min_p);
        t = tm > t ? tm : t;
    }
    /* S = the keys of K >= t; K may be in key order now, so ties go to the
     * lowest index explicitly */
    int32_t best = -1;
    float best_v = -INFINITY;
    for (uint32_t j = 0; j < n; j++) {
        if (k[j].key < t)
            continue;
        float v = k[j].key + mpk_rng_gumbel(mpk_rng_bits(s->seed, counter, k[j].index));
        if (best < 0 || v > best_v || (v == best_v && (int32_t)k[j].index < best))
            best = (int32_t)k[j].index, best_v = v;
    }
    return best;
}
