/*
 * json.c - what the text readers share: whole files with a size limit,
 * growable id arrays, and values and messages for their errors. The JSON itself is parsed with jansson by each reader.
 */
#include "text.h"

#include "mpk/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool mpk_ids_push(mpk_ids *a, int32_t id)
{
    int32_t *v = mpk_try_grow(a->v, &a->cap, a->n + 1, sizeof *v);
    if (!v)
        return false;
    a->v = v;
    a->v[a->n++] = id;
    return true;
}

void mpk_ids_free(mpk_ids *a)
{
    free(a->v);
    *a = (mpk_ids){0};
}

bool mpk_text_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

bool mpk_text_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *mpk_text_sibling(const char *path, const char *name)
{
    size_t dir;
    const char *slash = strrchr(path, '/');
    if (mpk_text_is_dir(path))
        dir = strlen(path);
    else
        dir = slash ? (size_t)(slash - path) : 0;
    char *out = malloc(dir + strlen(name) + 3);
    if (!out)
        return NULL;
    if (dir == 0 && !(slash == path))
        sprintf(out, "%s", name);
    else
        sprintf(out, "%.*s/%s", (int)dir, path, name);
    return out;
}

char *mpk_text_slurp(const char *path, size_t max, size_t *len, FILE *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(err, "%s: cannot read: %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(err, "%s: cannot read: %s\n", path, strerror(EISDIR));
        fclose(f);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || ferror(f))
            break;
        if (cap > max)
            break;
        char *b = realloc(buf, 2 * cap + 1);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b, cap *= 2;
    }
    int e = errno;
    bool bad = !buf || ferror(f) || n > max;
    if (!buf)
        fprintf(err, "%s: out of memory\n", path);
    else if (ferror(f))
        fprintf(err, "%s: cannot read: %s\n", path, strerror(e));
    else if (n > max)
        fprintf(err, "%s: larger than %zu MiB: not a file of this kind\n", path, max >> 20);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

const char *mpk_text_show(const json_t *v, char *buf, size_t n)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!s)
        snprintf(buf, n, "(a value)");
    else if (strlen(s) < n)
        snprintf(buf, n, "%s", s);
    else
        snprintf(buf, n, "%.*s...", (int)n - 4, s);
    free(s);
    return buf;
}

bool mpk_text_bad(const char *name, FILE *err, const char *fmt, ...)
{
    va_list ap;
    fprintf(err, "%s: ", name);
    va_start(ap, fmt);
    vfprintf(err, fmt, ap);
    va_end(ap);
    fputc('\n', err);
    return false;
}
