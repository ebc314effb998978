/*
 * safetensors.c - one safetensors file: map it, check its header.
 *
 * A safetensors file is
 *
 *   u64 N, little-endian    the length of the header
 *   N bytes of JSON         {"NAME": {"dtype": "BF16", "shape": [2048],
 *                                     "data_offsets": [BEGIN, END]}, ...,
 *                            "__metadata__": {"key": "value", ...}}
 *                           (the writer may pad it with trailing spaces)
 *   the data area           tensor bytes; BEGIN and END count from its start
 *
 * Checkpoints come from anywhere, so every file is hostile until checked:
 * lengths, offsets and sizes are checked with overflow-safe arithmetic
 * before anything is read, and names quoted in messages are escaped so
 * that a newline in a tensor name cannot forge a line. Every entry of every
 * file loaded is checked, requested or not (a corrupt entry means a corrupt
 * file); only a dtype safetensors does not know is left alone, since a
 * newer writer may have added it: binding (weights.c) reports it if the
 * model asks for that tensor.
 *
 * Files are mapped read-only, not read (weights.c unmaps them in
 * mpk_weights_close). The sharded index, deciding which files to open and
 * binding requests to entries are weights.c's; what the two files share is
 * in safetensors.h.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every dtype safetensors defines, with its element size in bits (F4 and
 * F6 are packed), and the mpk dtype it is, if any. The first four are in
 * mpkb_dtype order, so dtypes[dt].name is mpk dtype dt's name. */
static const struct {
    const char *name;
    unsigned bits;
    int mpk;
} dtypes[] = {
    {"BF16", 16, MPKB_BF16}, {"F16", 16, MPKB_F16}, {"F32", 32, MPKB_F32},
    {"I32", 32, MPKB_I32},   {"BOOL", 8, -1},       {"U8", 8, -1},
    {"I8", 8, -1},           {"F8_E5M2", 8, -1},    {"F8_E4M3", 8, -1},
    {"F8_E8M0", 8, -1},      {"I16", 16, -1},       {"U16", 16, -1},
    {"U32", 32, -1},         {"F64", 64, -1},       {"I64", 64, -1},
    {"U64", 64, -1},         {"C64", 64, -1},       {"F4", 4, -1},
    {"F6_E2M3", 6, -1},      {"F6_E3M2", 6, -1},
};
_Static_assert(MPKB_NDTYPES == 4, "the dtype table lists mpk's dtypes first");

const char *st_dtype_name(uint32_t dt)
{
    return dtypes[dt].name;
}

/* ---- messages ------------------------------------------------------------ */

/* Control characters come out as \xNN, and at most MAX bytes of S. */
static void put_clean(FILE *f, const char *s, size_t max)
{
    size_t i = 0;
    for (; s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    if (s[i])
        fputs("...", f);
}

/* "FILE: [tensor 'NAME': ]message". The message is formatted first and then
 * cleaned as a whole, since its arguments quote the file too (dtype
 * strings, jansson's "near '...'"). */
__attribute__((format(printf, 4, 5)))
void st_problem(loader *L, const char *file, const char *tensor, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg)
        strcpy(msg + sizeof msg - 4, "...");
    va_end(ap);
    put_clean(L->err, file, 4096);
    fputs(": ", L->err);
    if (tensor) {
        fputs("tensor '", L->err);
        put_clean(L->err, tensor, QUOTE_MAX);
        fputs("': ", L->err);
    }
    put_clean(L->err, msg, sizeof msg);
    fputc('\n', L->err);
    L->errors++;
}

/* Duplicate keys are legal JSON, but with two entries for a tensor which
 * one a reader takes is arbitrary, so they are refused (jansson's text
 * names the key). */
void st_json_problem(loader *L, const char *file, const char *what, const json_error_t *je)
{
    st_problem(L, file, NULL, "%s %s: %s (at byte %d of it)", what,
               json_error_code(je) == json_error_duplicate_key ? "names something twice"
                                                               : "is not valid JSON",
               je->text, je->position);
}

/* ---- files --------------------------------------------------------------- */

char *st_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    bool slash = n && dir[n - 1] == '/';
    char *p = malloc(n + strlen(name) + 2);
    if (p)
        sprintf(p, "%s%s%s", dir, slash ? "" : "/", name);
    return p;
}

/* Maps PATH read-only (an empty file: map NULL). O_NONBLOCK keeps a FIFO
 * planted where a shard should be from hanging the open; only regular files
 * are accepted after it. */
bool st_map_file(loader *L, const char *path, const uint8_t **map, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        st_problem(L, path, NULL, "cannot open: %s", strerror(errno));
        return false;
    }
    struct stat st;
    bool ok = false;
    if (fstat(fd, &st) != 0) {
        st_problem(L, path, NULL, "cannot stat: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        st_problem(L, path, NULL, "not a regular file");
    } else if ((off_t)(size_t)st.st_size != st.st_size) {
        st_problem(L, path, NULL, "too large to map");
    } else if (st.st_size == 0) {
        *map = NULL, *size = 0, ok = true;
    } else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            st_problem(L, path, NULL, "cannot map: %s", strerror(errno));
        else
            *map = p, *size = (size_t)st.st_size, ok = true;
    }
    close(fd);
    return ok;
}

/* ---- headers ------------------------------------------------------------- */

/* A JSON integer in 0..INT64_MAX (jansson rejects larger ones). */
static bool get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static unsigned dtype_bits(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return dtypes[i].bits;
    return 0;
}

/* The shape's element count; false on overflow. A zero dimension makes it
 * 0 whatever overflowed before it. */
static bool shape_numel(const json_t *shape, uint64_t *numel)
{
    uint64_t n = 1, d = 0;
    bool over = false, zero = false;
    for (size_t i = 0; i < json_array_size(shape); i++) {
        get_u64(json_array_get(shape, i), &d);
        zero |= d == 0;
        if (d && n > UINT64_MAX / d)
            over = true;
        else
            n *= d;
    }
    *numel = zero ? 0 : n;
    return zero || !over;
}

static bool check_shape(loader *L, const st_file *f, const char *name, const json_t *shape,
                        bool report)
{
    if (!json_is_array(shape)) {
        if (report)
            st_problem(L, f->path, name, shape ? "\"shape\" is not an array" : "has no \"shape\"");
        return false;
    }
    uint64_t d;
    for (size_t i = 0; i < json_array_size(shape); i++)
        if (!get_u64(json_array_get(shape, i), &d)) {
            if (report)
                st_problem(L, f->path, name,
                           "\"shape\" dimension %zu is not a non-negative integer", i);
            return false;
        }
    return true;
}

static bool check_offsets(loader *L, const st_file *f, const char *name, const json_t *off,
                          st_entry *e, bool report)
{
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !get_u64(json_array_get(off, 0), &e->begin) || !get_u64(json_array_get(off, 1), &e->end)) {
        if (report)
            st_problem(L, f->path, name,
                       off ? "\"data_offsets\" is not [begin, end] of non-negative integers"
                           : "has no \"data_offsets\"");
        return false;
    }
    unsigned long long b = e->begin, end = e->end;
    if (b > end) {
        if (report)
            st_problem(L, f->path, name, "data_offsets [%llu, %llu] begin after they end", b, end);
        return false;
    }
    if (end > f->data_size) {
        if (report)
            st_problem(L, f->path, name,
                       "data_offsets [%llu, %llu] end past the data area of %llu bytes "
                       "(truncated file?)", b, end, (unsigned long long)f->data_size);
        return false;
    }
    return true;
}

/* The entry's byte count from dtype and shape must be the span its offsets
 * give: a smaller span would let a consumer read the next tensor. */
static bool check_size(loader *L, const st_file *f, const char *name, st_entry *e, bool report)
{
    uint64_t numel;
    if (!shape_numel(e->shape, &numel) || (numel && e->bits > UINT64_MAX / numel)) {
        if (report)
            st_problem(L, f->path, name, "shape is too large (its byte count overflows)");
        return false;
    }
    uint64_t bits = numel * e->bits;
    e->nbytes = bits / 8;
    if (bits % 8) {
        if (report)
            st_problem(L, f->path, name, "%llu %s elements are not a whole number of bytes",
                       (unsigned long long)numel, e->dtype);
        return false;
    }
    if (e->end - e->begin != e->nbytes) {
        if (report)
            st_problem(L, f->path, name,
                       "data_offsets [%llu, %llu] hold %llu bytes, but %llu %s elements need %llu",
                       (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin), (unsigned long long)numel,
                       e->dtype, (unsigned long long)e->nbytes);
        return false;
    }
    return true;
}

/* Reads the header entry NAME: V into E. With REPORT its problems are
 * reported (when the file is loaded); binding reads it again quietly. */
bool st_read_entry(loader *L, const st_file *f, const char *name, const json_t *v,
                       st_entry *e, bool report)
{
    memset(e, 0, sizeof *e);
    if (!json_is_object(v)) {
        if (report)
            st_problem(L, f->path, name, "is not a JSON object");
        return false;
    }
    const json_t *dt = json_object_get(v, "dtype");
    bool ok = json_is_string(dt);
    if (!ok && report)
        st_problem(L, f->path, name, dt ? "\"dtype\" is not a string" : "has no \"dtype\"");
    if (ok) {
        e->dtype = json_string_value(dt);
        e->bits = dtype_bits(e->dtype);
    }
    e->shape = json_object_get(v, "shape");
    ok &= check_shape(L, f, name, e->shape, report);
    ok &= check_offsets(L, f, name, json_object_get(v, "data_offsets"), e, report);
    /* An unknown dtype's size is unknown; binding reports it if needed. */
    return ok && (!e->bits || check_size(L, f, name, e, report));
}

static void check_metadata(loader *L, const st_file *f)
{
    const json_t *m = json_object_get(f->header, "__metadata__");
    const char *key;
    const json_t *v;
    if (!m)
        return;
    if (!json_is_object(m)) {
        st_problem(L, f->path, NULL, "\"__metadata__\" is not an object");
        return;
    }
    json_object_foreach((json_t *)m, key, v)
        if (!json_is_string(v))
            st_problem(L, f->path, NULL, "\"__metadata__\" value '%.*s' is not a string",
                       QUOTE_MAX, key);
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin != y->begin ? (x->begin > y->begin) - (x->begin < y->begin)
                                : (x->end > y->end) - (x->end < y->end);
}

/* As the safetensors library requires: the entries' bytes tile the data
 * area, with no overlap (two tensors sharing bytes), no gap and nothing
 * after the last. */
static void check_layout(loader *L, const st_file *f, span *sp, size_t n)
{
    qsort(sp, n, sizeof *sp, cmp_span);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (sp[i].begin < at)
            st_problem(L, f->path, sp[i].name,
                       "data_offsets [%llu, %llu] overlap another tensor's bytes (up to %llu)",
                       (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                       (unsigned long long)at);
        else if (sp[i].begin > at)
            st_problem(L, f->path, sp[i].name,
                       "data_offsets [%llu, %llu] leave bytes %llu..%llu of the data area "
                       "to no tensor", (unsigned long long)sp[i].begin,
                       (unsigned long long)sp[i].end, (unsigned long long)at,
                       (unsigned long long)sp[i].begin);
        if (sp[i].end > at)
            at = sp[i].end;
    }
    if (at < f->data_size)
        st_problem(L, f->path, NULL,
                   "%llu bytes after the tensors' data (the data area has %llu, the tensors "
                   "end at %llu)", (unsigned long long)(f->data_size - at),
                   (unsigned long long)f->data_size, (unsigned long long)at);
}

/* Maps F, parses its header and checks every entry. */
void st_load_file(loader *L, st_file *f)
{
    if (!st_map_file(L, f->path, &f->map, &f->size))
        return;
    if (f->size < 8) {
        st_problem(L, f->path, NULL,
                   "%zu bytes, too short for a safetensors file (8 bytes of header length first)",
                   f->size);
        return;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->map[i];
    if (n > f->size - 8) {
        st_problem(L, f->path, NULL,
                   "header length %llu exceeds the file size %zu (truncated file?)",
                   (unsigned long long)n, f->size);
        return;
    }
    if (n > HEADER_MAX) {
        st_problem(L, f->path, NULL, "header length %llu exceeds the limit of " HEADER_MAX_TEXT
                   " (not a safetensors file?)", (unsigned long long)n);
        return;
    }
    /* Trailing spaces pass, other trailing bytes (NUL padding included)
     * do not. */
    json_error_t je;
    f->header = json_loadb((const char *)f->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!f->header) {
        st_json_problem(L, f->path, "the header", &je);
        return;
    }
    if (!json_is_object(f->header)) {
        st_problem(L, f->path, NULL, "the header is not a JSON object");
        return;
    }
    f->data = f->map + 8 + n;
    f->data_size = f->size - 8 - n;
    f->ok = true;
    check_metadata(L, f);
    const char *name;
    json_t *v;
    st_entry e;
    span *sp = calloc(json_object_size(f->header) + 1, sizeof *sp);
    size_t nsp = 0;
    bool all = true;
    json_object_foreach(f->header, name, v)
        if (strcmp(name, "__metadata__") != 0) {
            bool ok = st_read_entry(L, f, name, v, &e, true);
            if (ok && sp)
                sp[nsp++] = (span){e.begin, e.end, name};
            all &= ok;
        }
    if (!sp)
        st_problem(L, f->path, NULL, "out of memory");
    else if (all) /* after a bad entry, where the others lie says little */
        check_layout(L, f, sp, nsp);
    free(sp);
}
