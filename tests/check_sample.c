/*
 * check_sample.c - the sampler (mpk/sample.h, runtime/cpu/sample.c):
 *
 *   - greedy settings (temperature 0, top_k 1) give the argmax;
 *   - over 20,000 draws (the counter 0..19999) from fixed logits the
 *     frequencies match softmax(logits / T) restricted by top-k, top-p and
 *     min-p, by a chi-square test at significance 0.001 (critical values
 *     tabulated by degrees of freedom), for several settings; a token
 *     outside the kept set is never drawn;
 *   - the same seed gives the same tokens, other seeds other tokens;
 *   - the generator's values, pinned, for the GPU's implementation to match.
 *
 * The expected kept set is computed here independently of sample.c, from
 * the definitions (a token is in the top k when fewer than k keys are
 * larger; in the top p when the mass of the larger keys is below p), on
 * logits chosen so that no setting has a token near a boundary.
 */
#include "runtime/runtime.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check_mpk.h"

enum { DRAWS = 20000, MAXV = 1024 };

/* mpk_sample's scratch for the small vocabularies of these tests */
static float scratch[4096];

/* The chi-square distribution's upper 0.001 points, df 1..40 (NIST/SEMATECH
 * e-Handbook, table 1.3.6.7.4; Abramowitz & Stegun 26.8). */
static const double chi2_999[41] = {
    0,      10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
    31.264, 32.909, 34.528, 36.123, 37.697, 39.252, 40.790, 42.312, 43.820, 45.315,
    46.797, 48.268, 49.728, 51.179, 52.620, 54.052, 55.476, 56.892, 58.301, 59.703,
    61.098, 62.487, 63.870, 65.247, 66.619, 67.985, 69.347, 70.703, 72.055, 73.402,
};

/* Above 40 degrees of freedom, the Wilson-Hilferty approximation (within
 * 0.1% there): df (1 - 2/(9 df) + z sqrt(2/(9 df)))^3, z = 3.0902 the
 * normal's upper 0.001 point. */
static double chi2_critical(int df)
{
    if (df <= 40)
        return chi2_999[df];
    double a = 2.0 / (9.0 * df);
    return df * pow(1 - a + 3.0902 * sqrt(a), 3);
}

/* softmax(logits / T) over the kept set, by the definitions; kept[i] says
 * whether i may be drawn. */
static bool check_margins = true; /* off for test_random */

static void expected(const float *l, int n, const mpk_sampler *s, double *p, bool *kept)
{
    double x[MAXV], m = -INFINITY;
    for (int i = 0; i < n; i++) {
        x[i] = (double)(l[i] / s->temperature);
        kept[i] = isfinite(x[i]);
        if (kept[i] && x[i] > m)
            m = x[i];
    }
    bool ink[MAXV];
    for (int i = 0; i < n; i++) {
        int larger = 0;
        for (int j = 0; j < n; j++)
            larger += kept[j] && x[j] > x[i];
        ink[i] = kept[i] && (s->top_k == 0 || larger < s->top_k);
    }
    double z = 0;
    for (int i = 0; i < n; i++)
        z += ink[i] ? exp(x[i] - m) : 0;
    bool keep[MAXV];
    for (int i = 0; i < n; i++) {
        double above = 0;
        for (int j = 0; j < n; j++)
            above += ink[j] && x[j] > x[i] ? exp(x[j] - m) : 0;
        keep[i] = ink[i] && (s->top_p >= 1 || above < s->top_p * z) &&
                  (s->min_p == 0 || exp(x[i] - m) >= s->min_p);
        /* the test's settings keep clear of every boundary */
        ck_assert_msg(!check_margins || !ink[i] || s->top_p >= 1 || fabs(above / z - s->top_p) > 1e-3,
                      "token %d: mass above it %.6f, too near top_p %g", i, above / z, (double)s->top_p);
        ck_assert_msg(!check_margins || !kept[i] || s->min_p == 0 || fabs(exp(x[i] - m) - s->min_p) > 1e-3,
                      "token %d: %.6f of the top probability, too near min_p %g", i, exp(x[i] - m),
                      (double)s->min_p);
    }
    double zs = 0;
    for (int i = 0; i < n; i++)
        zs += keep[i] ? exp(x[i] - m) : 0;
    for (int i = 0; i < n; i++) {
        kept[i] = keep[i];
        p[i] = keep[i] ? exp(x[i] - m) / zs : 0;
    }
}

/* DRAWS draws at counters 0..DRAWS-1; the chi-square statistic against
 * expected(), over the kept tokens; nothing outside them drawn. Returns
 * the number of kept tokens. */
static int chi_square(const float *l, int n, const mpk_sampler *s, const char *what)
{
    double p[MAXV];
    bool kept[MAXV];
    long count[MAXV] = {0};
    expected(l, n, s, p, kept);
    void *mem = malloc(mpk_sample_scratch((uint32_t)n));
    ck_assert_ptr_nonnull(mem);
    for (uint32_t c = 0; c < DRAWS; c++) {
        int32_t t = mpk_sample(l, (uint32_t)n, s, c, mem);
        ck_assert_msg(t >= 0 && t < n, "%s: token %d", what, t);
        count[t]++;
    }
    free(mem);
    double chi = 0;
    int cells = 0;
    for (int i = 0; i < n; i++) {
        if (!kept[i]) {
            ck_assert_msg(count[i] == 0, "%s: token %d is outside the kept set, drawn %ld times", what, i, count[i]);
            continue;
        }
        double e = p[i] * DRAWS;
        ck_assert_msg(e >= 5, "%s: token %d expects %.1f draws: a bad test (too few for chi-square)", what, i, e);
        chi += (count[i] - e) * (count[i] - e) / e;
        cells++;
    }
    int df = cells - 1;
    if (df == 0) {
        ck_assert_int_eq(chi, 0);
        return cells;
    }
    ck_assert_msg(chi < chi2_critical(df), "%s: chi-square %.2f with %d degrees of freedom exceeds %.3f (p = 0.001)",
                  what, chi, df, chi2_critical(df));
    return cells;
}

static const float L12[12] = {2.0f, 1.5f, 1.2f, 1.0f, 0.5f, 0.3f, 0.0f, -0.5f, -1.0f, -2.0f, NAN, -INFINITY};

START_TEST(test_greedy)
{
    float l[12];
    memcpy(l, L12, sizeof l);
    l[0] = 1.0f, l[3] = 2.5f, l[7] = 2.5f; /* tie: the lowest index */
    mpk_sampler t0 = {.temperature = 0, .top_p = 1}, k1 = {.temperature = 1.5f, .top_k = 1, .top_p = 0.5f};
    ck_assert(mpk_sampler_greedy(NULL) && mpk_sampler_greedy(&t0) && mpk_sampler_greedy(&k1));
    for (uint32_t c = 0; c < 100; c++) {
        t0.seed = k1.seed = c;
        ck_assert_int_eq(mpk_sample(l, 12, &t0, c, scratch), 3);
        ck_assert_int_eq(mpk_sample(l, 12, &k1, c, scratch), 3);
    }
    mpk_sampler t1 = {.temperature = 1, .top_p = 1};
    ck_assert(!mpk_sampler_greedy(&t1));
    ck_assert_uint_le(mpk_sample_scratch(12), sizeof scratch);
}
END_TEST

START_TEST(test_no_finite)
{
    float l[4] = {NAN, -INFINITY, INFINITY, NAN};
    mpk_sampler s = {.temperature = 1, .top_p = 1};
    ck_assert_int_eq(mpk_sample(l, 4, &s, 0, scratch), -1);
    s.temperature = 0;
    ck_assert_int_eq(mpk_sample(l, 4, &s, 0, scratch), -1);
    /* a division that overflows is not finite either */
    float big[2] = {3e38f, 1e38f};
    s.temperature = 1e-3f;
    ck_assert_int_eq(mpk_sample(big, 2, &s, 0, scratch), -1);
    /* an infinite logit is never drawn */
    float inf[3] = {INFINITY, 1, 2};
    s.temperature = 1;
    for (uint32_t c = 0; c < 1000; c++)
        ck_assert_int_ne(mpk_sample(inf, 3, &s, c, scratch), 0);
}
END_TEST

START_TEST(test_distribution)
{
    static const struct {
        float t;
        int32_t k;
        float p, minp;
        int kept; /* the kept set's size, as a check on the test's settings */
    } cases[] = {
        {1.0f, 0, 1.0f, 0.0f, 10},    /* plain softmax over the finite logits */
        {0.7f, 0, 1.0f, 0.0f, 10},    /* temperature below 1 */
        {2.5f, 0, 1.0f, 0.0f, 10},    /* and above */
        {0.7f, 5, 1.0f, 0.0f, 5},     /* top-k */
        {1.3f, 0, 0.8f, 0.0f, 6},     /* top-p */
        {1.0f, 0, 1.0f, 0.2f, 5},     /* min-p: exp(x - m) >= 0.2 */
        {0.9f, 6, 0.9f, 0.05f, 5},    /* all three: top-p binds */
        {1.0f, 8, 1.0f, 0.12f, 7},    /* min-p binds before top-k */
        {1.0f, 3, 0.99f, 0.0f, 3},    /* top-k binds before top-p */
        {1.0f, 20, 1.0f, 0.0f, 10},   /* top-k above the vocabulary: off */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mpk_sampler s = {.temperature = cases[i].t, .top_k = cases[i].k, .top_p = cases[i].p,
                         .min_p = cases[i].minp, .seed = 1234 + i};
        char what[96];
        snprintf(what, sizeof what, "T=%g top_k=%d top_p=%g min_p=%g", (double)s.temperature, s.top_k,
                 (double)s.top_p, (double)s.min_p);
        ck_assert_int_eq(chi_square(L12, 12, &s, what), cases[i].kept);
    }
}
END_TEST

/* Ties at a top-k or top-p boundary are kept, all of them. */
START_TEST(test_ties)
{
    const float l[8] = {1.0f, 0.0f, 1.0f, 2.0f, 1.0f, -1.0f, 0.0f, -3.0f};
    mpk_sampler s = {.temperature = 1, .top_k = 2, .top_p = 1, .seed = 7};
    ck_assert_int_eq(chi_square(l, 8, &s, "top_k=2 with three tied second keys"), 4);
    s.top_k = 0, s.top_p = 0.5f; /* 2.0 alone holds 0.37 of the mass: the 1.0s are needed */
    ck_assert_int_eq(chi_square(l, 8, &s, "top_p=0.5 reaching into three tied keys"), 4);
}
END_TEST

/* A bigger vocabulary of pseudo-random logits, cut down to a few dozen. */
START_TEST(test_big_vocab)
{
    float l[1000];
    uint64_t r = 99;
    for (int i = 0; i < 1000; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(r >> 40) / (double)(1ull << 24) * 8.0 - 4.0);
    }
    mpk_sampler s = {.temperature = 0.8f, .top_k = 30, .top_p = 1, .seed = 5};
    ck_assert_int_eq(chi_square(l, 1000, &s, "vocab 1000, top_k=30"), 30);
    s = (mpk_sampler){.temperature = 0.5f, .top_k = 0, .top_p = 0.6f, .seed = 6};
    int n = chi_square(l, 1000, &s, "vocab 1000, top_p=0.6");
    ck_assert_int_gt(n, 3);
    s = (mpk_sampler){.temperature = 0.6f, .top_k = 0, .top_p = 1, .min_p = 0.1f, .seed = 8};
    n = chi_square(l, 1000, &s, "vocab 1000, min_p=0.1");
    ck_assert_int_gt(n, 3);
}
END_TEST

START_TEST(test_seeds)
{
    float l[64];
    for (int i = 0; i < 64; i++)
        l[i] = (float)((i * 37) % 64) / 32.0f;
    ck_assert_uint_le(mpk_sample_scratch(64), sizeof scratch);
    mpk_sampler a = {.temperature = 1, .top_p = 1, .seed = 1}, b = a, c = a;
    c.seed = 2;
    int same_seed = 0, other_seed = 0, other_counter = 0;
    for (uint32_t k = 0; k < 200; k++) {
        int32_t x = mpk_sample(l, 64, &a, k, scratch);
        same_seed += x == mpk_sample(l, 64, &b, k, scratch);
        other_seed += x == mpk_sample(l, 64, &c, k, scratch);
        other_counter += x == mpk_sample(l, 64, &a, k + 1000, scratch);
    }
    ck_assert_int_eq(same_seed, 200);
    ck_assert_int_lt(other_seed, 40);    /* about 200 / 40 agree by chance */
    ck_assert_int_lt(other_counter, 40);
}
END_TEST

/* Random vocabularies, logits (ties, NaN, infinities among them) and
 * settings: the token is always in the kept set, and -1 exactly when no
 * key is finite. (Deterministic: the cases come from a fixed LCG.) */
START_TEST(test_random)
{
    static const float pool[] = {0.0f, 1.0f, -1.0f, 2.5f, 2.5f, -7.0f, NAN, INFINITY, -INFINITY};
    float l[MAXV];
    double p[MAXV];
    bool kept[MAXV];
    uint64_t r = 2026;
#define NEXT() (r = r * 6364136223846793005ull + 1442695040888963407ull, (uint32_t)(r >> 33))
    check_margins = false;
    for (int c = 0; c < 2000; c++) {
        int n = 1 + (int)(NEXT() % 300);
        bool pooled = NEXT() % 2;
        for (int i = 0; i < n; i++)
            l[i] = pooled ? pool[NEXT() % 9] : (float)((double)NEXT() / 4294967296.0 * 40.0 - 20.0);
        mpk_sampler s = {.temperature = (float)(0.05 + (NEXT() % 400) / 100.0),
                         .top_k = NEXT() % 3 ? (int32_t)(NEXT() % (uint32_t)(n + 2)) : 0,
                         .top_p = NEXT() % 2 ? (float)(0.01 + (NEXT() % 99) / 100.0) : 1.0f,
                         .min_p = NEXT() % 2 ? (float)((NEXT() % 99) / 100.0) : 0.0f,
                         .seed = NEXT()};
        if (s.top_k == 1)
            s.top_k = 2;
        bool any = false;
        for (int i = 0; i < n; i++)
            any |= isfinite(l[i] / s.temperature);
        int32_t t = mpk_sample(l, (uint32_t)n, &s, (uint32_t)c, scratch);
        if (!any) {
            ck_assert_int_eq(t, -1);
            continue;
        }
        expected(l, n, &s, p, kept);
        ck_assert_msg(t >= 0 && t < n && kept[t], "case %d: token %d of %d is not kept (T=%g k=%d p=%g min_p=%g)", c,
                      t, n, (double)s.temperature, s.top_k, (double)s.top_p, (double)s.min_p);
    }
    check_margins = true;
#undef NEXT
}
END_TEST

/* Pinned values: an implementation of mpk/sample.h elsewhere (the GPU's)
 * must give these bits. */
START_TEST(test_rng_pinned)
{
    ck_assert_uint_eq(mpk_rng_bits(0, 0, 0), 0xf9f8d4a1u);
    ck_assert_uint_eq(mpk_rng_bits(0, 0, 1), 0x2e4bbc3du);
    ck_assert_uint_eq(mpk_rng_bits(0, 1, 0), 0x0632b2dcu);
    ck_assert_uint_eq(mpk_rng_bits(1, 0, 0), 0x5f7c1f46u);
    ck_assert_uint_eq(mpk_rng_bits(0xdeadbeefcafef00dull, 4095, 151935), 0x0775588cu);
    /* u is never 0 or 1: the noise is finite at both ends */
    ck_assert(isfinite(mpk_rng_gumbel(0)) && isfinite(mpk_rng_gumbel(0xffffffffu)));
    ck_assert(mpk_rng_gumbel(0) < -2.7f && mpk_rng_gumbel(0xffffffffu) > 16.0f);
    /* the draws are uniform enough: the top bit set half the time */
    int ones = 0;
    for (uint32_t i = 0; i < 10000; i++)
        ones += mpk_rng_bits(3, i / 100, i % 100) >> 31;
    ck_assert_int_gt(ones, 4800);
    ck_assert_int_lt(ones, 5200);
}
END_TEST

Suite *make_sample_suite(void)
{
    Suite *s = suite_create("sample");
    TCase *tc = tcase_create("sample");
    tcase_set_timeout(tc, 60); /* 20,000 draws a setting, a sort each for top-k and top-p */
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_no_finite);
    tcase_add_test(tc, test_distribution);
    tcase_add_test(tc, test_ties);
    tcase_add_test(tc, test_big_vocab);
    tcase_add_test(tc, test_seeds);
    tcase_add_test(tc, test_random);
    tcase_add_test(tc, test_rng_pinned);
    suite_add_tcase(s, tc);
    return s;
}
