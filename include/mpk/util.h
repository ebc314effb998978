/*
 * mpk/util.h - the few helpers every layer uses: a clock, a hash, growable
 * arrays. util/util.c; it depends on nothing but libc.
 */
#ifndef MPK_UTIL_H
#define MPK_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Milliseconds on the monotonic clock. */
double mpk_now_ms(void);

/* FNV-1a over n bytes, continuing from h (start with MPK_FNV_INIT). */
#define MPK_FNV_INIT 0xcbf29ce484222325ull
uint64_t mpk_fnv1a(uint64_t h, const void *p, size_t n);

/* Report "PROGRAM: error: out of memory" and exit with status 1. */
#ifdef __cplusplus
[[noreturn]] void mpk_out_of_memory(void);
#else
_Noreturn void mpk_out_of_memory(void);
#endif

/* realloc that exits through mpk_out_of_memory instead of failing. */
void *mpk_realloc(void *p, size_t n);
/* The array p of elements of elem bytes, *cap of them, grown (doubling)
 * to hold at least need; the old elements are kept. Out of memory exits
 * through mpk_out_of_memory. */
void *mpk_grow(void *p, size_t *cap, size_t need, size_t elem);
/* A growable array of ints (n an int: they index tasks and events). */
typedef struct {
    int *v;
    int n;
    size_t cap;
} mpk_ivec;
static inline void mpk_ivec_push(mpk_ivec *a, int x)
{
    a->v = (int *)mpk_grow(a->v, &a->cap, (size_t)a->n + 1, sizeof *a->v);
    a->v[a->n++] = x;
}

#ifdef __cplusplus
}
#endif
#endif
