/*
 * mpk/util.h - the few helpers every layer uses: a clock, a hash, growable
 * arrays, output files. util/util.c; it depends on nothing but libc.
 */
#ifndef MPK_UTIL_H
#define MPK_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

/* A command-line usage error: "WHO: error: MESSAGE" and "Try 'HELP --help'
 * for more information." on stderr; returns 2, the exit status of a usage
 * error. */
#ifndef __cplusplus
__attribute__((format(printf, 3, 4)))
#endif
int mpk_usage_error(const char *who, const char *help, const char *fmt, ...);

/* malloc and calloc that exit through mpk_out_of_memory instead of
 * failing (n == 0 allocates one byte). */
void *mpk_malloc(size_t n);
void *mpk_calloc(size_t n, size_t size);
/* realloc that exits through mpk_out_of_memory instead of failing. */
void *mpk_realloc(void *p, size_t n);
/* The array p of elements of elem bytes, *cap of them, grown (doubling)
 * to hold at least need; the old elements are kept. Out of memory exits
 * through mpk_out_of_memory. */
void *mpk_grow(void *p, size_t *cap, size_t need, size_t elem);
/* mpk_grow that fails instead of exiting: NULL when memory runs out, p and
 * *cap then as they were (for the readers of untrusted files, text/, which
 * report it). */
void *mpk_try_grow(void *p, size_t *cap, size_t need, size_t elem);
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

/* An output file of a command (mpk build -o, mpk dump -o, mpk import -o,
 * mpk-run --dump-logits), written so that no other file is harmed:
 *   - "-" is the standard output;
 *   - a symbolic link is followed, and its target written (created, when
 *     the link dangles), never the link replaced;
 *   - a device or a FIFO (/dev/null, /dev/stdout, a pipe) is written in
 *     place: it cannot be renamed over, and must not be replaced;
 *   - a regular file, or a new one, is written to a temporary file beside
 *     it, renamed over it only by a successful mpk_out_close, so it holds
 *     the old contents or the new ones, never a part; a file replaced keeps
 *     its mode (and, where allowed, its owner); a new one gets 0666 less
 *     the umask;
 *   - an output that is the same file (st_dev and st_ino) as one of the
 *     command's inputs is refused before anything is written.
 * Failures are reported on err as "PROGRAM: error: ..." lines naming the
 * file and the reason. */
typedef struct {
    FILE *f;            /* write here */
    const char *path;   /* as given, for messages */
    char *target;       /* the file written: path with its links resolved */
    char *tmp;          /* the temporary file, or NULL (in place, stdout) */
} mpk_out;

/* inputs[0..ninputs) are paths the command reads ("-" and NULL entries are
 * skipped). False after a message (nothing is written or created). */
bool mpk_out_open(mpk_out *o, const char *path, const char *const *inputs, int ninputs, FILE *err);
/* Whether path is the same file as one of inputs (reported on err). */
bool mpk_out_is_input(const char *path, const char *const *inputs, int ninputs, FILE *err);
/* Ends the output. commit: flush, sync and rename into place; false after
 * a message when any write failed (the old file is then left as it was).
 * !commit: the temporary file is removed (an in-place output keeps what
 * was written). */
bool mpk_out_close(mpk_out *o, bool commit, FILE *err);
/* n bytes at buf as the whole of path, through mpk_out. */
bool mpk_write_file(const char *path, const void *buf, size_t n, const char *const *inputs, int ninputs,
                    FILE *err);

#ifdef __cplusplus
}
#endif
#endif
