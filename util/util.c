/*
 * util.c - the helpers of mpk/util.h.
 */
#include "mpk/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double mpk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

uint64_t mpk_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

void mpk_out_of_memory(void)
{
    fflush(stdout);
    fprintf(stderr, "%s: error: out of memory\n", program_invocation_short_name);
    exit(1);
}

void *mpk_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        mpk_out_of_memory();
    return p;
}

void *mpk_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            mpk_out_of_memory();
        n *= 2;
    }
    p = realloc(p, n * elem);
    if (!p)
        mpk_out_of_memory();
    *cap = n;
    return p;
}
