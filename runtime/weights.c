/*
 * weights.c - safetensors checkpoints: map the files, bind the blob's weights.
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
 * and a sharded checkpoint is a directory of such files plus
 * model.safetensors.index.json, {"metadata": {...}, "weight_map": {"NAME":
 * "SHARD FILE NAME", ...}}. PATH may name a file, the index itself, or a
 * directory; a directory's model.safetensors wins over its index.
 *
 * Checkpoints come from anywhere, so every file is hostile until checked:
 * lengths, offsets and sizes are checked with overflow-safe arithmetic
 * before anything is read, shard names must be plain file names in the
 * index's directory, and names quoted in messages are escaped so that a
 * newline in a tensor name cannot forge a line. Every entry of every file
 * opened is checked, requested or not (a corrupt entry means a corrupt
 * file); only a dtype safetensors does not know is left alone unless the
 * model asks for that tensor, since a newer writer may have added it.
 *
 * Every problem is reported, one "FILE: problem" or "FILE: tensor 'NAME':
 * problem" line each, before failing, so one run shows all that is wrong
 * with a checkpoint against a model.
 *
 * Out of memory for what a checkpoint's size decides (a rank's part of a
 * weight, a path) is reported like any problem; the small arrays of files
 * and buffers grow through mpk_grow, which exits on out of memory as
 * everywhere in mpk.
 *
 * Files are mapped read-only, not read, and stay mapped until
 * mpk_weights_close; only the shards holding requested tensors are opened,
 * each once. Two things callers must know:
 *   - req.data is where data_offsets put it: safetensors promises no
 *     alignment (a header of odd length is legal), so a consumer must
 *     memcpy or use unaligned loads, or copy the tensor to aligned memory.
 *   - a file truncated by someone else while mapped makes the next access
 *     to the lost pages raise SIGBUS; no check at open time can prevent that.
 */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpk/util.h"

/* A real header is a few MB (tens of thousands of tensors); anything larger
 * is garbage, and parsing it would cost gigabytes of JSON nodes. */
#define HEADER_MAX (100u << 20)
#define HEADER_MAX_TEXT "100 MiB"
#define NONE ((size_t)-1)
/* Hostile names can be long; messages quote this many bytes of them. */
#define QUOTE_MAX 200

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

typedef struct {
    char *path;            /* as messages name it: DIR/SHARD, or PATH */
    char *shard;           /* the index's name for it; NULL without an index */
    const uint8_t *map;    /* the whole file */
    size_t size;
    json_t *header;        /* the header object; NULL once bound */
    bool ok;               /* the header parsed; its entries are checked */
    const uint8_t *data;   /* the data area */
    uint64_t data_size;
} st_file;

struct mpk_weights {
    st_file *files;
    size_t nfiles, cap;
    uint64_t bytes;
    void **owned;           /* mpk_weights_alloc's buffers */
    size_t nowned, owned_cap;
};

typedef struct {
    FILE *err;
    unsigned long errors;
    mpk_weights *w;
} loader;

/* One header entry, read and checked. */
typedef struct {
    const char *dtype;     /* as the file spells it */
    unsigned bits;         /* element bits; 0: a dtype safetensors lacks */
    const json_t *shape;
    uint64_t begin, end, nbytes;
} st_entry;

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
static void problem(loader *L, const char *file, const char *tensor, const char *fmt, ...)
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
static void json_problem(loader *L, const char *file, const char *what, const json_error_t *je)
{
    problem(L, file, NULL, "%s %s: %s (at byte %d of it)", what,
            json_error_code(je) == json_error_duplicate_key ? "names something twice"
                                                            : "is not valid JSON",
            je->text, je->position);
}

/* "[3, 4]", at most 8 dimensions and then "...". */
static const char *dims_str(char *buf, size_t cap, const uint64_t *d, size_t shown, size_t ndim)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < shown && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%llu", i ? ", " : "",
                                (unsigned long long)d[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "%s]", shown < ndim ? ", ..." : "");
    return buf;
}

/* ---- files --------------------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    bool slash = n && dir[n - 1] == '/';
    char *p = malloc(n + strlen(name) + 2);
    if (p)
        sprintf(p, "%s%s%s", dir, slash ? "" : "/", name);
    return p;
}

/* Whether PATH exists; an unreadable one counts, so that opening it
 * reports why rather than it silently not being there. */
static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 || errno != ENOENT;
}

/* Maps PATH read-only (an empty file: map NULL). O_NONBLOCK keeps a FIFO
 * planted where a shard should be from hanging the open; only regular files
 * are accepted after it. */
static bool map_file(loader *L, const char *path, const uint8_t **map, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        problem(L, path, NULL, "cannot open: %s", strerror(errno));
        return false;
    }
    struct stat st;
    bool ok = false;
    if (fstat(fd, &st) != 0) {
        problem(L, path, NULL, "cannot stat: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        problem(L, path, NULL, "not a regular file");
    } else if ((off_t)(size_t)st.st_size != st.st_size) {
        problem(L, path, NULL, "too large to map");
    } else if (st.st_size == 0) {
        *map = NULL, *size = 0, ok = true;
    } else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            problem(L, path, NULL, "cannot map: %s", strerror(errno));
        else
            *map = p, *size = (size_t)st.st_size, ok = true;
    }
    close(fd);
    return ok;
}

/* The file named SHARD (NULL: the single file PATH), added once. */
static size_t add_file(loader *L, const char *path, const char *shard)
{
    mpk_weights *w = L->w;
    for (size_t i = 0; shard && i < w->nfiles; i++)
        if (strcmp(w->files[i].shard, shard) == 0)
            return i;
    w->files = mpk_grow(w->files, &w->cap, w->nfiles + 1, sizeof *w->files);
    st_file *f = &w->files[w->nfiles];
    memset(f, 0, sizeof *f);
    f->path = shard ? join(path, shard) : strdup(path);
    f->shard = shard ? strdup(shard) : NULL;
    if (!f->path || (shard && !f->shard)) {
        free(f->path);
        free(f->shard);
        goto oom;
    }
    return w->nfiles++;
oom:
    problem(L, path, NULL, "out of memory");
    return NONE;
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
            problem(L, f->path, name, shape ? "\"shape\" is not an array" : "has no \"shape\"");
        return false;
    }
    uint64_t d;
    for (size_t i = 0; i < json_array_size(shape); i++)
        if (!get_u64(json_array_get(shape, i), &d)) {
            if (report)
                problem(L, f->path, name, "\"shape\" dimension %zu is not a non-negative integer",
                        i);
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
            problem(L, f->path, name,
                    off ? "\"data_offsets\" is not [begin, end] of non-negative integers"
                        : "has no \"data_offsets\"");
        return false;
    }
    unsigned long long b = e->begin, end = e->end;
    if (b > end) {
        if (report)
            problem(L, f->path, name, "data_offsets [%llu, %llu] begin after they end", b, end);
        return false;
    }
    if (end > f->data_size) {
        if (report)
            problem(L, f->path, name,
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
            problem(L, f->path, name, "shape is too large (its byte count overflows)");
        return false;
    }
    uint64_t bits = numel * e->bits;
    e->nbytes = bits / 8;
    if (bits % 8) {
        if (report)
            problem(L, f->path, name, "%llu %s elements are not a whole number of bytes",
                    (unsigned long long)numel, e->dtype);
        return false;
    }
    if (e->end - e->begin != e->nbytes) {
        if (report)
            problem(L, f->path, name,
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
static bool read_entry(loader *L, const st_file *f, const char *name, const json_t *v,
                       st_entry *e, bool report)
{
    memset(e, 0, sizeof *e);
    if (!json_is_object(v)) {
        if (report)
            problem(L, f->path, name, "is not a JSON object");
        return false;
    }
    const json_t *dt = json_object_get(v, "dtype");
    bool ok = json_is_string(dt);
    if (!ok && report)
        problem(L, f->path, name, dt ? "\"dtype\" is not a string" : "has no \"dtype\"");
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
        problem(L, f->path, NULL, "\"__metadata__\" is not an object");
        return;
    }
    json_object_foreach((json_t *)m, key, v)
        if (!json_is_string(v))
            problem(L, f->path, NULL, "\"__metadata__\" value '%.*s' is not a string",
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
            problem(L, f->path, sp[i].name, "data_offsets [%llu, %llu] overlap another tensor's bytes (up to %llu)",
                    (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end, (unsigned long long)at);
        else if (sp[i].begin > at)
            problem(L, f->path, sp[i].name, "data_offsets [%llu, %llu] leave bytes %llu..%llu of the data area "
                    "to no tensor", (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                    (unsigned long long)at, (unsigned long long)sp[i].begin);
        if (sp[i].end > at)
            at = sp[i].end;
    }
    if (at < f->data_size)
        problem(L, f->path, NULL, "%llu bytes after the tensors' data (the data area has %llu, the tensors "
                "end at %llu)", (unsigned long long)(f->data_size - at), (unsigned long long)f->data_size,
                (unsigned long long)at);
}

/* Maps F, parses its header and checks every entry. */
static void load_file(loader *L, st_file *f)
{
    if (!map_file(L, f->path, &f->map, &f->size))
        return;
    if (f->size < 8) {
        problem(L, f->path, NULL,
                "%zu bytes, too short for a safetensors file (8 bytes of header length first)",
                f->size);
        return;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->map[i];
    if (n > f->size - 8) {
        problem(L, f->path, NULL, "header length %llu exceeds the file size %zu (truncated file?)",
                (unsigned long long)n, f->size);
        return;
    }
    if (n > HEADER_MAX) {
        problem(L, f->path, NULL, "header length %llu exceeds the limit of " HEADER_MAX_TEXT
                " (not a safetensors file?)", (unsigned long long)n);
        return;
    }
    /* Trailing spaces pass, other trailing bytes (NUL padding included)
     * do not. */
    json_error_t je;
    f->header = json_loadb((const char *)f->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!f->header) {
        json_problem(L, f->path, "the header", &je);
        return;
    }
    if (!json_is_object(f->header)) {
        problem(L, f->path, NULL, "the header is not a JSON object");
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
            bool ok = read_entry(L, f, name, v, &e, true);
            if (ok && sp)
                sp[nsp++] = (span){e.begin, e.end, name};
            all &= ok;
        }
    if (!sp)
        problem(L, f->path, NULL, "out of memory");
    else if (all) /* after a bad entry, where the others lie says little */
        check_layout(L, f, sp, nsp);
    free(sp);
}

/* ---- the index ----------------------------------------------------------- */

/* A shard must be a file of the index's directory: no path, no "." or "..". */
static bool plain_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static bool check_shard(loader *L, const char *index, const char *name, const json_t *v,
                        bool report)
{
    if (!json_is_string(v)) {
        if (report)
            problem(L, index, name, "its shard in \"weight_map\" is not a string");
        return false;
    }
    if (!plain_name(json_string_value(v))) {
        if (report)
            problem(L, index, name,
                    "shard '%.*s' is not a file name in the index's directory (hostile index?)",
                    QUOTE_MAX, json_string_value(v));
        return false;
    }
    return true;
}

static json_t *load_index(loader *L, const char *index)
{
    const uint8_t *map = NULL;
    size_t size = 0;
    if (!map_file(L, index, &map, &size))
        return NULL;
    json_t *root = NULL;
    json_error_t je;
    if (size == 0)
        problem(L, index, NULL, "an empty file, not an index (a JSON object with \"weight_map\")");
    else if (size > HEADER_MAX)
        problem(L, index, NULL, "%zu bytes, over the limit of " HEADER_MAX_TEXT " for an index",
                size);
    else if (!(root = json_loadb((const char *)map, size, JSON_REJECT_DUPLICATES, &je)))
        json_problem(L, index, "the index", &je);
    if (map)
        munmap((void *)map, size);
    if (root && !json_is_object(root)) {
        problem(L, index, NULL, "the index is not a JSON object");
        json_decref(root), root = NULL;
    }
    return root;
}

/* Reads INDEX (in DIR) and points each request at its shard. */
static void locate_sharded(loader *L, const char *index, const char *dir, mpk_weight_req *reqs,
                           size_t nreqs, size_t *where)
{
    json_t *root = load_index(L, index);
    if (!root)
        return;
    const json_t *meta = json_object_get(root, "metadata");
    json_t *map = json_object_get(root, "weight_map");
    if (meta && !json_is_object(meta))
        problem(L, index, NULL, "\"metadata\" is not an object");
    if (!json_is_object(map)) {
        problem(L, index, NULL, map ? "\"weight_map\" is not an object" : "has no \"weight_map\"");
        json_decref(root);
        return;
    }
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v)
        check_shard(L, index, name, v, true);
    for (size_t i = 0; i < nreqs; i++) {
        if (!reqs[i].name)
            continue;
        v = json_object_get(map, reqs[i].name);
        if (!v)
            problem(L, index, reqs[i].name, "missing");
        else if (check_shard(L, index, reqs[i].name, v, false))
            where[i] = add_file(L, dir, json_string_value(v));
    }
    json_decref(root);
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    return strndup(path, n);
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* Decides which file holds each request: where[i] indexes w->files. */
static void locate(loader *L, const char *path, mpk_weight_req *reqs, size_t nreqs,
                   size_t *where)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        problem(L, path, NULL, "cannot open: %s", strerror(errno));
        return;
    }
    char *single = NULL, *index = NULL, *dir = NULL;
    if (!S_ISDIR(st.st_mode)) {
        if (ends_with(path, ".index.json")) {
            index = strdup(path);
            dir = dir_of(path);
        } else {
            single = strdup(path);
        }
    } else if (!(single = join(path, "model.safetensors")) || !exists(single)) {
        free(single), single = NULL;
        index = join(path, "model.safetensors.index.json");
        dir = strdup(path);
        if (index && dir && !exists(index)) {
            problem(L, path, NULL, "neither model.safetensors nor "
                                   "model.safetensors.index.json is in this directory");
            goto done;
        }
    }
    if (!single && !(index && dir)) {
        problem(L, path, NULL, "out of memory");
    } else if (single) {
        /* Opened even with nothing requested: the path must be a checkpoint. */
        size_t f = add_file(L, single, NULL);
        for (size_t i = 0; i < nreqs; i++)
            where[i] = reqs[i].name ? f : NONE;
    } else {
        locate_sharded(L, index, dir, reqs, nreqs, where);
    }
done:
    free(single);
    free(index);
    free(dir);
}

/* ---- binding ------------------------------------------------------------- */

/* Requests are the compiler's, not the checkpoint's: a bad one is a bug in
 * the blob, still reported rather than trusted. */
static bool check_request(loader *L, const char *path, size_t i, const mpk_weight_req *r)
{
    if (!r->name)
        problem(L, path, NULL, "request %zu names no tensor", i);
    else if (r->dtype >= MPKB_NDTYPES)
        problem(L, path, r->name, "the model asks for dtype %u, which mpk does not have", r->dtype);
    else if (r->ndim > MPKB_MAX_DIMS)
        problem(L, path, r->name, "the model asks for %u dimensions (at most %d)", r->ndim,
                MPKB_MAX_DIMS);
    else
        return true;
    return false;
}

static bool same_shape(const json_t *shape, const mpk_weight_req *r)
{
    if (json_array_size(shape) != r->ndim)
        return false;
    for (uint32_t i = 0; i < r->ndim; i++)
        if ((uint64_t)json_integer_value(json_array_get(shape, i)) != r->dims[i])
            return false;
    return true;
}

static void shape_problem(loader *L, const st_file *f, const mpk_weight_req *r,
                          const json_t *shape)
{
    uint64_t have[8];
    size_t n = json_array_size(shape), shown = n < 8 ? n : 8;
    for (size_t i = 0; i < shown; i++)
        have[i] = (uint64_t)json_integer_value(json_array_get(shape, i));
    char a[256], b[256];
    problem(L, f->path, r->name, "has shape %s, the model needs %s",
            dims_str(a, sizeof a, have, shown, n), dims_str(b, sizeof b, r->dims, r->ndim, r->ndim));
}

static void bind_request(loader *L, const st_file *f, mpk_weight_req *r)
{
    json_t *v = strcmp(r->name, "__metadata__") ? json_object_get(f->header, r->name) : NULL;
    if (!v) {
        problem(L, f->path, r->name,
                f->shard ? "missing (the index places it in this shard)" : "missing");
        return;
    }
    st_entry e;
    if (!read_entry(L, f, r->name, v, &e, false))
        return; /* reported when the file was loaded */
    bool ok = true;
    const char *want = dtypes[r->dtype].name;
    if (!e.bits)
        ok = false, problem(L, f->path, r->name, "has dtype '%.*s', which safetensors does not "
                            "define; the model needs %s", QUOTE_MAX, e.dtype, want);
    else if (strcmp(e.dtype, want) != 0)
        ok = false, problem(L, f->path, r->name, "has dtype %s, the model needs %s", e.dtype, want);
    if (!same_shape(e.shape, r))
        ok = false, shape_problem(L, f, r, e.shape);
    if (ok) {
        r->data = f->data + e.begin;
        r->nbytes = e.nbytes;
        L->w->bytes += e.nbytes;
    }
}

mpk_weights *mpk_weights_open(const char *path, mpk_weight_req *reqs, size_t nreqs, FILE *err)
{
    loader L = {.err = err, .w = calloc(1, sizeof(mpk_weights))};
    size_t *where = malloc((nreqs ? nreqs : 1) * sizeof *where);
    if (!L.w || !where) {
        problem(&L, path, NULL, "out of memory");
        free(L.w);
        free(where);
        return NULL;
    }
    for (size_t i = 0; i < nreqs; i++) {
        reqs[i].data = NULL;
        reqs[i].nbytes = 0;
        where[i] = NONE;
    }
    locate(&L, path, reqs, nreqs, where);
    mpk_weights *w = L.w;
    for (size_t i = 0; i < w->nfiles; i++)
        load_file(&L, &w->files[i]);
    for (size_t i = 0; i < nreqs; i++)
        if (check_request(&L, path, i, &reqs[i]) && where[i] != NONE && w->files[where[i]].ok)
            bind_request(&L, &w->files[where[i]], &reqs[i]);
    free(where);
    /* The parsed headers can be megabytes; nothing needs them any more. */
    for (size_t i = 0; i < w->nfiles; i++)
        json_decref(w->files[i].header), w->files[i].header = NULL;
    if (L.errors) {
        for (size_t i = 0; i < nreqs; i++)
            reqs[i].data = NULL, reqs[i].nbytes = 0;
        mpk_weights_close(w);
        return NULL;
    }
    return w;
}

uint64_t mpk_weights_bytes(const mpk_weights *w)
{
    return w ? w->bytes : 0;
}

const char *mpk_weights_file(const mpk_weights *w, size_t i)
{
    return w && i < w->nfiles ? w->files[i].path : NULL;
}

void *mpk_weights_alloc(mpk_weights *w, size_t n)
{
    w->owned = mpk_grow(w->owned, &w->owned_cap, w->nowned + 1, sizeof *w->owned);
    void *p = malloc(n ? n : 1);
    if (p)
        w->owned[w->nowned++] = p;
    return p;
}

void mpk_weights_close(mpk_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nowned; i++)
        free(w->owned[i]);
    free(w->owned);
    for (size_t i = 0; i < w->nfiles; i++) {
        st_file *f = &w->files[i];
        if (f->map)
            munmap((void *)f->map, f->size);
        json_decref(f->header);
        free(f->path);
        free(f->shard);
    }
    free(w->files);
    free(w);
}
