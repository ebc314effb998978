/*
 * genconfig.c - generation_config.json: the defaults a checkpoint asks
 * for: EOS ids (used with config.json's) and the sampling fields, which
 * mpk-run makes its sampler's defaults. Unknown keys are ignored, as
 * transformers does; a known key of the wrong type or range is refused.
 */
#include "text.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_GENCONFIG = 1 << 20 };


void mpk_genconfig_init(mpk_genconfig *g)
{
    *g = (mpk_genconfig){.bos = -1, .do_sample = -1, .temperature = -1, .top_p = -1, .min_p = -1, .top_k = -1,
                         .max_new_tokens = -1};
}

static json_t *get(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static bool read_id(const char *name, FILE *err, const char *key, json_t *v, int32_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return mpk_text_bad(name, err, "\"%s\" must be a token id or a list of at most %d token ids", key, MPK_GEN_MAX_EOS);
    *out = (int32_t)json_integer_value(v);
    return true;
}

/* A number in [lo, hi] (hi_open: below hi), or absent. */
static bool read_num(const char *name, FILE *err, json_t *root, const char *key, double lo, double hi,
                     double *out)
{
    json_t *v = get(root, key);
    if (!v)
        return true;
    double x = json_number_value(v);
    if (!json_is_number(v) || !isfinite(x) || x < lo || x > hi)
        return mpk_text_bad(name, err, "\"%s\" must be a number from %g to %g", key, lo, hi);
    *out = x;
    return true;
}

static bool read_count(const char *name, FILE *err, json_t *root, const char *key, int64_t lo, int64_t *out)
{
    json_t *v = get(root, key);
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > INT32_MAX)
        return mpk_text_bad(name, err, "\"%s\" must be an integer from %lld to %d", key, (long long)lo, INT32_MAX);
    *out = json_integer_value(v);
    return true;
}

bool mpk_genconfig_parse(const char *name, const char *json, size_t len, mpk_genconfig *g, FILE *err)
{
    mpk_genconfig_init(g);
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) {
        fprintf(err, "%s:%d:%d: invalid JSON: %s\n", name, je.line, je.column, je.text);
        return false;
    }
    bool ok = json_is_object(root) || mpk_text_bad(name, err, "the top level must be an object");
    json_t *v, *x;
    size_t i;
    if (ok && (v = get(root, "eos_token_id"))) {
        if (json_is_array(v) && json_array_size(v) <= MPK_GEN_MAX_EOS) {
            json_array_foreach(v, i, x) {
                if (!(ok = read_id(name, err, "eos_token_id", x, &g->eos[g->neos])))
                    break;
                bool dup = false;
                for (int k = 0; k < g->neos; k++)
                    dup |= g->eos[k] == g->eos[g->neos];
                g->neos += !dup;
            }
        } else {
            ok = read_id(name, err, "eos_token_id", v, &g->eos[0]);
            g->neos = ok;
        }
    }
    if (ok && (v = get(root, "bos_token_id")))
        ok = read_id(name, err, "bos_token_id", v, &g->bos);
    if (ok && (v = get(root, "do_sample"))) {
        ok = json_is_boolean(v) || mpk_text_bad(name, err, "\"do_sample\" must be true or false");
        g->do_sample = json_is_true(v);
    }
    ok = ok && read_num(name, err, root, "temperature", 0, 1e6, &g->temperature) &&
         read_num(name, err, root, "top_p", 0, 1, &g->top_p) && read_num(name, err, root, "min_p", 0, 1, &g->min_p) &&
         read_count(name, err, root, "top_k", 0, &g->top_k) &&
         read_count(name, err, root, "max_new_tokens", 1, &g->max_new_tokens);
    if (ok && json_is_null(json_object_get(root, "top_k"))) /* transformers: None is off, like 0 */
        g->top_k = 0;
    json_decref(root);
    return ok;
}

bool mpk_genconfig_read(const char *path, mpk_genconfig *g, FILE *err)
{
    size_t n;
    mpk_genconfig_init(g);
    char *buf = mpk_text_slurp(path, MAX_GENCONFIG, &n, err);
    if (!buf)
        return false;
    bool ok = mpk_genconfig_parse(path, buf, n, g, err);
    free(buf);
    return ok;
}
