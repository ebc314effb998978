/*
 * util.c - the helpers of mpk/util.h.
 */
#include "mpk/util.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

int mpk_usage_error(const char *who, const char *help, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", who);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", help);
    va_end(ap);
    return 2;
}

void *mpk_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        mpk_out_of_memory();
    return p;
}

void *mpk_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        mpk_out_of_memory();
    return p;
}

void *mpk_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        mpk_out_of_memory();
    return p;
}

void *mpk_try_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap && p)
        return p;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return NULL;
        n *= 2;
    }
    void *q = realloc(p, n * elem);
    if (!q)
        return NULL;
    *cap = n;
    return q;
}

void *mpk_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    p = mpk_try_grow(p, cap, need, elem);
    if (!p)
        mpk_out_of_memory();
    return p;
}

/* ---- output files ------------------------------------------------------ */

static bool out_fail(FILE *err, const char *path, int e)
{
    fflush(stdout);
    if (strcmp(path, "-") == 0)
        fprintf(err, "%s: error: cannot write to standard output: %s\n", program_invocation_short_name,
                strerror(e));
    else
        fprintf(err, "%s: error: cannot write '%s': %s\n", program_invocation_short_name, path, strerror(e));
    return false;
}

/* path with its symbolic links followed as far as they lead: the file that
 * a write through path reaches (which need not exist). NULL and errno on
 * failure (ELOOP: a cycle, or too many links). */
static char *resolve_links(const char *path)
{
    char *p = strdup(path), buf[PATH_MAX];
    for (int hops = 0; p; hops++) {
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISLNK(st.st_mode))
            return p;
        ssize_t n = hops < 40 ? readlink(p, buf, sizeof buf - 1) : (errno = ELOOP, -1);
        if (n < 0) {
            int e = errno;
            free(p);
            errno = e;
            return NULL;
        }
        buf[n] = 0;
        /* a relative link is relative to the directory holding it */
        const char *slash = strrchr(p, '/');
        size_t dir = buf[0] == '/' || !slash ? 0 : (size_t)(slash - p) + 1;
        char *next = malloc(dir + (size_t)n + 1);
        if (next) {
            memcpy(next, p, dir);
            memcpy(next + dir, buf, (size_t)n + 1);
        }
        free(p);
        p = next;
    }
    errno = ENOMEM;
    return NULL;
}

bool mpk_out_is_input(const char *path, const char *const *inputs, int ninputs, FILE *err)
{
    struct stat out, in;
    if (strcmp(path, "-") == 0 || stat(path, &out) != 0 || !S_ISREG(out.st_mode))
        return false;
    for (int i = 0; i < ninputs; i++) {
        if (!inputs[i] || strcmp(inputs[i], "-") == 0 || stat(inputs[i], &in) != 0)
            continue;
        if (in.st_dev == out.st_dev && in.st_ino == out.st_ino) {
            fflush(stdout);
            if (strcmp(inputs[i], path) == 0)
                fprintf(err, "%s: error: cannot write '%s': it is an input of this command\n",
                        program_invocation_short_name, path);
            else
                fprintf(err, "%s: error: cannot write '%s': it is the input '%s' (the same file)\n",
                        program_invocation_short_name, path, inputs[i]);
            return true;
        }
    }
    return false;
}

bool mpk_out_open(mpk_out *o, const char *path, const char *const *inputs, int ninputs, FILE *err)
{
    memset(o, 0, sizeof *o);
    o->path = path;
    if (strcmp(path, "-") == 0) {
        o->f = stdout;
        return true;
    }
    if (mpk_out_is_input(path, inputs, ninputs, err))
        return false;
    o->target = resolve_links(path);
    if (!o->target)
        return out_fail(err, path, errno);
    struct stat st;
    bool exists = stat(o->target, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        mpk_out_close(o, false, err);
        return out_fail(err, path, EISDIR);
    }
    if (exists && !S_ISREG(st.st_mode)) {
        /* a device or a FIFO: written in place */
        o->f = fopen(o->target, "w");
        if (!o->f) {
            int e = errno;
            mpk_out_close(o, false, err);
            return out_fail(err, path, e);
        }
        return true;
    }
    mode_t mask = umask(0);
    umask(mask);
    mode_t mode = exists ? st.st_mode & 07777 : 0666 & ~mask;
    /* DIR/.BASE.XXXXXX, BASE shortened to keep the name within NAME_MAX */
    const char *slash = strrchr(o->target, '/');
    const char *base = slash ? slash + 1 : o->target;
    int dir = (int)(base - o->target), blen = (int)strlen(base);
    if (blen > NAME_MAX - 8)
        blen = NAME_MAX - 8;
    size_t size = (size_t)dir + (size_t)blen + 16;
    o->tmp = malloc(size);
    if (!o->tmp) {
        mpk_out_close(o, false, err);
        return out_fail(err, path, ENOMEM);
    }
    snprintf(o->tmp, size, "%.*s.%.*s.XXXXXX", dir, o->target, blen, base);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        int e = errno;
        free(o->tmp), o->tmp = NULL;
        mpk_out_close(o, false, err);
        return out_fail(err, path, e);
    }
    if (exists && fchown(fd, st.st_uid, st.st_gid) != 0) {
        /* not allowed to give it the old owner: it stays ours */
    }
    int e = fchmod(fd, mode) != 0 ? errno : 0;
    if (!e && !(o->f = fdopen(fd, "wb")))
        e = errno;
    if (e) {
        close(fd);
        mpk_out_close(o, false, err);
        return out_fail(err, path, e);
    }
    return true;
}

bool mpk_out_close(mpk_out *o, bool commit, FILE *err)
{
    int e = 0;
    if (o->f) {
        if (fflush(o->f) != 0)
            e = errno;
        else if (o->tmp && commit && fsync(fileno(o->f)) != 0)
            e = errno;
        if (!e && ferror(o->f))
            e = EIO; /* an earlier write failed */
        if (o->f != stdout && fclose(o->f) != 0 && !e)
            e = errno;
    }
    if (o->tmp) {
        if (commit && o->f && !e && rename(o->tmp, o->target) != 0)
            e = errno;
        if (!commit || e || !o->f)
            unlink(o->tmp);
    }
    bool ok = !(commit && o->f && e);
    if (!ok)
        out_fail(err, o->path, e);
    free(o->tmp);
    free(o->target);
    memset(o, 0, sizeof *o);
    return ok;
}

bool mpk_write_file(const char *path, const void *buf, size_t n, const char *const *inputs, int ninputs,
                    FILE *err)
{
    mpk_out o;
    if (!mpk_out_open(&o, path, inputs, ninputs, err))
        return false;
    if (n)
        fwrite(buf, 1, n, o.f); /* a short write is caught by ferror in close */
    return mpk_out_close(&o, true, err);
}
