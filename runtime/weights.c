/*
 * weights.c - safetensors checkpoints: map the files, bind the blob's weights.
 *
 * A checkpoint is one safetensors file (safetensors.c maps each file and
 * checks its header) or a sharded one: a directory of such files plus
 * model.safetensors.index.json, {"metadata": {...}, "weight_map": {"NAME":
 * "SHARD FILE NAME", ...}}. PATH may name a file, the index itself, or a
 * directory; a directory's model.safetensors wins over its index.
 *
 * The index is as hostile as the files: its size is limited and its shard
 * names must be plain file names in the index's directory. Requests are
 * bound to header entries of the dtype and shape the model asks for; a
 * dtype safetensors does not know is reported only here, when the model
 * asks for that tensor.
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
#include "safetensors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "mpk/util.h"

#define NONE ((size_t)-1)

struct mpk_weights {
    st_file *files;
    size_t nfiles, cap;
    uint64_t bytes;
    void **owned;           /* mpk_weights_alloc's buffers */
    size_t nowned, owned_cap;
};

/* ---- messages ------------------------------------------------------------ */

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

/* Whether PATH exists; an unreadable one counts, so that opening it
 * reports why rather than it silently not being there. */
static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 || errno != ENOENT;
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
    f->path = shard ? st_join(path, shard) : strdup(path);
    f->shard = shard ? strdup(shard) : NULL;
    if (!f->path || (shard && !f->shard)) {
        free(f->path);
        free(f->shard);
        goto oom;
    }
    return w->nfiles++;
oom:
    st_problem(L, path, NULL, "out of memory");
    return NONE;
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
            st_problem(L, index, name, "its shard in \"weight_map\" is not a string");
        return false;
    }
    if (!plain_name(json_string_value(v))) {
        if (report)
            st_problem(L, index, name,
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
    if (!st_map_file(L, index, &map, &size))
        return NULL;
    json_t *root = NULL;
    json_error_t je;
    if (size == 0)
        st_problem(L, index, NULL,
                   "an empty file, not an index (a JSON object with \"weight_map\")");
    else if (size > HEADER_MAX)
        st_problem(L, index, NULL, "%zu bytes, over the limit of " HEADER_MAX_TEXT " for an index",
                   size);
    else if (!(root = json_loadb((const char *)map, size, JSON_REJECT_DUPLICATES, &je)))
        st_json_problem(L, index, "the index", &je);
    if (map)
        munmap((void *)map, size);
    if (root && !json_is_object(root)) {
        st_problem(L, index, NULL, "the index is not a JSON object");
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
        st_problem(L, index, NULL, "\"metadata\" is not an object");
    if (!json_is_object(map)) {
        st_problem(L, index, NULL,
                   map ? "\"weight_map\" is not an object" : "has no \"weight_map\"");
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
            st_problem(L, index, reqs[i].name, "missing");
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
        st_problem(L, path, NULL, "cannot open: %s", strerror(errno));
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
    } else if (!(single = st_join(path, "model.safetensors")) || !exists(single)) {
        free(single), single = NULL;
        index = st_join(path, "model.safetensors.index.json");
        dir = strdup(path);
        if (index && dir && !exists(index)) {
            st_problem(L, path, NULL, "neither model.safetensors nor "
                                      "model.safetensors.index.json is in this directory");
            goto done;
        }
    }
    if (!single && !(index && dir)) {
        st_problem(L, path, NULL, "out of memory");
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
        st_problem(L, path, NULL, "request %zu names no tensor", i);
    else if (r->dtype >= MPKB_NDTYPES)
        st_problem(L, path, r->name, "the model asks for dtype %u, which mpk does not have",
                   r->dtype);
    else if (r->ndim > MPKB_MAX_DIMS)
        st_problem(L, path, r->name, "the model asks for %u dimensions (at most %d)", r->ndim,
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
    st_problem(L, f->path, r->name, "has shape %s, the model needs %s",
               dims_str(a, sizeof a, have, shown, n),
               dims_str(b, sizeof b, r->dims, r->ndim, r->ndim));
}

static void bind_request(loader *L, const st_file *f, mpk_weight_req *r)
{
    json_t *v = strcmp(r->name, "__metadata__") ? json_object_get(f->header, r->name) : NULL;
    if (!v) {
        st_problem(L, f->path, r->name,
                   f->shard ? "missing (the index places it in this shard)" : "missing");
        return;
    }
    st_entry e;
    if (!st_read_entry(L, f, r->name, v, &e, false))
        return; /* reported when the file was loaded */
    bool ok = true;
    const char *want = st_dtype_name(r->dtype);
    if (!e.bits)
        ok = false, st_problem(L, f->path, r->name, "has dtype '%.*s', which safetensors does not "
                               "define; the model needs %s", QUOTE_MAX, e.dtype, want);
    else if (strcmp(e.dtype, want) != 0)
        ok = false, st_problem(L, f->path, r->name, "has dtype %s, the model needs %s", e.dtype,
                               want);
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
        st_problem(&L, path, NULL, "out of memory");
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
        st_load_file(&L, &w->files[i]);
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
