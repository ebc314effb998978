/*
 * arena.c - one bump allocator per compilation.
 *
 * The AST, the values and the graph all live until the compilation ends, so
 * nothing is freed singly: chunks are chained and released together. An
 * allocation failure is fatal (there is nothing sensible to continue with).
 */
#include "frontend.h"

#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
} chunk;

struct mpk_arena {
    chunk *head;
};

enum { CHUNK_SIZE = 256 * 1024 };

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "mpk: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    return p;
}

mpk_arena *mpk_arena_new(void)
{
    mpk_arena *a = xmalloc(sizeof *a);
    a->head = NULL;
    return a;
}

void mpk_arena_free(mpk_arena *a)
{
    if (!a)
        return;
    for (chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

void *mpk_arena_alloc(mpk_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    chunk *c = a->head;
    if (!c || c->size - c->used < size) {
        size_t cap = size > CHUNK_SIZE / 4 ? size : CHUNK_SIZE;
        c = xmalloc(sizeof *c + cap);
        c->size = cap;
        c->used = 0;
        /* A big one-off block goes behind the current chunk so that the
         * current chunk's free space is not wasted. */
        if (cap != CHUNK_SIZE && a->head) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *mpk_arena_strndup(mpk_arena *a, const char *s, size_t n)
{
    char *p = mpk_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *mpk_arena_strdup(mpk_arena *a, const char *s)
{
    return mpk_arena_strndup(a, s, strlen(s));
}

char *mpk_arena_printf(mpk_arena *a, const char *fmt, ...)
{
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    MPK_ASSERT(n >= 0);
    char *p = mpk_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, aq);
    va_end(aq);
    return p;
}

void mpk_vec_push(mpk_arena *a, mpk_vec *v, void *item)
{
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        void **items = mpk_arena_alloc(a, sizeof(void *) * (size_t)cap);
        if (v->n)
            memcpy(items, v->items, sizeof(void *) * (size_t)v->n);
        v->items = items;
        v->cap = cap;
    }
    v->items[v->n++] = item;
}
