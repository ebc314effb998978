/*
 * import.c - `mpk import`: a Hugging Face config.json to a .mpk model.
 *
 *   read     the JSON (with jansson), then every key the model needs, each
 *            checked for its type and range; the features that the stdlib
 *            blocks do not implement (biases, other activations, sliding
 *            windows, rope types other than llama3, quantized checkpoints)
 *            are refused by name rather than silently dropped
 *   emit     the model, in the style of examples/NAME.mpk, into memory
 *   write    to standard output, or to OUT by mpk_write_file (mpk/util.h:
 *            atomic for a regular file, in place for a device or FIFO)
 *
 * Given a checkpoint directory instead of a config.json, import also reads
 * what is beside the config: generation_config.json (its EOS ids join
 * config.json's), the safetensors headers (every weight must be bf16:
 * an f16 or f32 checkpoint is refused here, naming a tensor, rather than
 * at run time), and the tokenizer files (a tokenizer or chat template that
 * mpk-run cannot use is a warning: ids still work).
 *
 * Nothing is written before the whole config has been read, so a bad config
 * never leaves a half-written model behind. Only the first problem is
 * reported: a config.json is machine-written, so one mistake is the norm,
 * and the later keys are often read in the light of the earlier ones.
 *
 * The supported architectures share everything but the decoder block (Qwen3
 * adds per-head q/k norms and has no rope scaling), so one model struct and
 * one emitter serve both.
 */
#include "driver/import.h"
#include "frontend/frontend.h" /* MPK_MAX_EOS: what the compiler accepts */
#include "mpk/blob.h" /* a blob's limits */
#include "mpk/util.h"
#include "text/text.h"

#include <errno.h>
#include <jansson.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_CONFIG = 16 << 20, /* bytes; a real config.json has about 1 KiB */
    MAX_DIM = MPKB_MAX_DIM, /* any one size or id (a blob's limit) */
    /* The compiler expands a model to at most 262144 ops and 2000000
     * steps, about 10000 layers of these blocks; the largest released
     * models have about 130. */
    MAX_LAYERS = 4096,
    DEFAULT_SEQ = 4096,    /* KV cache length, unless the model allows less */
};
#define MAX_NUMEL MPKB_MAX_NUMEL /* elements of one tensor, as in mpk(5) */

typedef enum { ARCH_LLAMA, ARCH_QWEN3, ARCH_COUNT } arch_kind;

static const struct {
    const char *name;       /* in "architectures" */
    const char *model_type; /* the fallback when "architectures" is absent */
    const char *std_file;
    const char *block;
    const char *rope_types; /* the supported ones, for messages */
} archs[ARCH_COUNT] = {
    [ARCH_LLAMA] = {"LlamaForCausalLM", "llama", "std/llama.mpk", "llama_block", "default, llama3"},
    [ARCH_QWEN3] = {"Qwen3ForCausalLM", "qwen3", "std/qwen3.mpk", "qwen3_block", "default"},
};

/* What the model needs, read and checked. */
typedef struct {
    arch_kind arch;
    bool from_model_type;
    int64_t hidden, layers, inter, vocab, heads, kv_heads, head_dim, max_pos;
    bool head_dim_given;
    double eps, theta;
    const char *rope_source; /* "rope_scaling" or "rope_parameters" when llama3 */
    double rope_factor, rope_low_freq, rope_high_freq;
    int64_t rope_orig_max;
    bool tied;
    bool eos_list; /* eos_token_id was a list (kept a list) */
    int neos;
    int64_t eos[MPK_MAX_EOS];
    int neos_config; /* of which config.json's; the rest generation_config.json's */
} model;

typedef struct {
    const char *path; /* the config as named to the user: messages start with it */
    FILE *err;
} reader;

/* ---- messages --------------------------------------------------------- */

__attribute__((format(printf, 2, 3)))
static bool bad(const reader *r, const char *fmt, ...)
{
    va_list ap;
    fprintf(r->err, "%s: ", r->path);
    va_start(ap, fmt);
    vfprintf(r->err, fmt, ap);
    va_end(ap);
    fputc('\n', r->err);
    return false;
}

/* The shortest text that reads back as f and that mpk reads as a float:
 * "1e-06", "0.0001", "500000.0". Fixed point up to 1e16, so that a rope
 * theta reads as configs write it rather than as %g's "5e+05"; exponents
 * below 1e-4, as %g does, so that an eps reads "1e-06". */
static void fmt_float(char *buf, size_t n, double f)
{
    if (!isfinite(f)) { /* never read from JSON; for completeness */
        snprintf(buf, n, "%s", isnan(f) ? "nan" : "inf");
        return;
    }
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(buf, n, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    snprintf(buf, n, "%.*e", prec - 1, f);
    int e10 = atoi(strchr(buf, 'e') + 1);
    if (e10 < -4 || e10 >= 16)
        return;
    snprintf(buf, n, "%.*f", prec - 1 - e10 > 0 ? prec - 1 - e10 : 0, f);
    if (strtod(buf, NULL) != f) /* cannot happen: both round at one digit */
        snprintf(buf, n, "%.*e", prec - 1, f);
    else if (!strchr(buf, '.') && strlen(buf) + 2 < n)
        strcat(buf, ".0");
}

/* v as JSON for a message, shortened: a config's values are the user's. */
static const char *show(const json_t *v, char *buf, size_t n)
{
    if (json_is_real(v)) {
        fmt_float(buf, n, json_real_value(v));
        return buf;
    }
    return mpk_text_show(v, buf, n);
}

#define SHOW(v) show((v), (char[48]){0}, 48)

/* ---- typed keys ------------------------------------------------------- */

/* Keys are named in messages as they are written, "rope_scaling.factor"
 * for a nested one; the lookup uses the last component. */
static const char *leaf(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* "where.key", for the keys of a nested object that is one of two. */
static const char *sub(char buf[64], const char *where, const char *key)
{
    snprintf(buf, 64, "%s.%s", where, key);
    return buf;
}

/* The value of a key, or NULL when it is absent or null: configs write null
 * for "not set". */
static json_t *member(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, leaf(name));
    return json_is_null(v) ? NULL : v;
}

/* An integer in 1..max. dflt < 0: the key is required. */
static bool get_int(const reader *r, json_t *obj, const char *name, int64_t dflt, int64_t max, int64_t *out)
{
    json_t *v = json_object_get(obj, leaf(name));
    if (!v && dflt < 0)
        return bad(r, "\"%s\" is missing", name);
    if (!v || (json_is_null(v) && dflt >= 0)) {
        *out = dflt;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return bad(r, "\"%s\" must be a positive integer, not %s", name, SHOW(v));
    if (json_integer_value(v) > max)
        return bad(r, "\"%s\" must be at most %lld, not %lld", name, (long long)max,
                   (long long)json_integer_value(v));
    *out = json_integer_value(v);
    return true;
}

/* A positive, finite number; integers are numbers too ("rope_theta":
 * 1000000). dflt < 0: the key is required. */
static bool get_float(const reader *r, json_t *obj, const char *name, double dflt, double *out)
{
    json_t *v = json_object_get(obj, leaf(name));
    if (!v && dflt < 0)
        return bad(r, "\"%s\" is missing", name);
    if (!v || (json_is_null(v) && dflt >= 0)) {
        *out = dflt;
        return true;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || !(json_number_value(v) > 0))
        return bad(r, "\"%s\" must be a positive number, not %s", name, SHOW(v));
    /* The compiler keeps these in f32 (rms_norm_eps 1e39 is inf there,
     * rope_theta 1e-300 is 0): within f32's normal range, or refused. */
    if (json_number_value(v) > FLT_MAX || json_number_value(v) < FLT_MIN)
        return bad(r, "\"%s\" must be a positive number within the range of f32 (%g to %g), not %s", name,
                   (double)FLT_MIN, (double)FLT_MAX, SHOW(v));
    *out = json_number_value(v);
    return true;
}

static bool get_bool(const reader *r, json_t *obj, const char *name, bool dflt, bool *out)
{
    json_t *v = member(obj, name);
    if (v && !json_is_boolean(v))
        return bad(r, "\"%s\" must be true or false, not %s", name, SHOW(v));
    *out = v ? json_is_true(v) : dflt;
    return true;
}

/* A string, or NULL when the key is absent or null. */
static bool get_string(const reader *r, json_t *obj, const char *name, json_t **out)
{
    json_t *v = member(obj, name);
    if (v && !json_is_string(v))
        return bad(r, "\"%s\" must be a string, not %s", name, SHOW(v));
    *out = v;
    return true;
}

/* A boolean switch for a feature the stdlib blocks do not implement. */
static bool refuse_true(const reader *r, json_t *root, const char *name, const char *what)
{
    bool on = false;
    if (!get_bool(r, root, name, false, &on))
        return false;
    return !on || bad(r, "\"%s\" is true: %s are not supported", name, what);
}

/* ---- the model -------------------------------------------------------- */

/* "architectures" names the model class; a config without it (some
 * hand-written ones) is known by its "model_type". */
static bool read_arch(const reader *r, json_t *root, model *m)
{
    json_t *a = member(root, "architectures"), *t;
    if (a) {
        t = json_array_get(a, 0);
        if (!json_is_array(a) || json_array_size(a) != 1 || !json_is_string(t))
            return bad(r, "\"architectures\" must be a list of one architecture name, not %s", SHOW(a));
        for (int i = 0; i < ARCH_COUNT; i++)
            if (strcmp(json_string_value(t), archs[i].name) == 0) {
                m->arch = (arch_kind)i;
                return true;
            }
        return bad(r, "architecture %s is not supported (supported: %s, %s)", SHOW(t), archs[0].name,
                   archs[1].name);
    }
    if (!get_string(r, root, "model_type", &t))
        return false;
    if (!t)
        return bad(r, "neither \"architectures\" nor \"model_type\" is given");
    m->from_model_type = true;
    for (int i = 0; i < ARCH_COUNT; i++)
        if (strcmp(json_string_value(t), archs[i].model_type) == 0) {
            m->arch = (arch_kind)i;
            return true;
        }
    return bad(r, "model_type %s is not supported (supported: %s, %s)", SHOW(t), archs[0].model_type,
               archs[1].model_type);
}

/* Features of these architectures that the stdlib blocks do not implement.
 * A quantized checkpoint's weights (int4, fp8) have other dtypes and
 * shapes. */
static bool read_features(const reader *r, json_t *root, const model *m)
{
    json_t *act, *types;
    if (member(root, "quantization_config"))
        return bad(r, "\"quantization_config\" is given: quantized checkpoints are not supported");
    if (!get_string(r, root, "hidden_act", &act))
        return false;
    if (act && strcmp(json_string_value(act), "silu") != 0)
        return bad(r, "\"hidden_act\" %s is not supported (supported: \"silu\")", SHOW(act));
    if (!refuse_true(r, root, "attention_bias", "attention biases") ||
        !refuse_true(r, root, "mlp_bias", "MLP biases"))
        return false;
    if (m->arch != ARCH_QWEN3)
        return true;
    /* Qwen3 switches sliding windows on with use_sliding_window; newer
     * configs also spell the attention of each layer out in layer_types. */
    if (!refuse_true(r, root, "use_sliding_window", "sliding windows"))
        return false;
    types = member(root, "layer_types");
    if (types && !json_is_array(types))
        return bad(r, "\"layer_types\" must be a list, not %s", SHOW(types));
    for (size_t i = 0; types && i < json_array_size(types); i++) {
        json_t *t = json_array_get(types, i);
        if (!json_is_string(t) || strcmp(json_string_value(t), "full_attention") != 0)
            return bad(r, "\"layer_types\" has %s: only \"full_attention\" layers are supported", SHOW(t));
    }
    return true;
}

/* Sizes. head_dim is hidden / heads unless given (Qwen3 gives one that is
 * not); the attention needs whole groups of query heads per KV head, rope
 * an even head_dim. */
static bool read_sizes(const reader *r, json_t *root, model *m)
{
    if (!get_int(r, root, "hidden_size", -1, MAX_DIM, &m->hidden) ||
        !get_int(r, root, "num_hidden_layers", -1, MAX_LAYERS, &m->layers) ||
        !get_int(r, root, "intermediate_size", -1, MAX_DIM, &m->inter) ||
        !get_int(r, root, "vocab_size", -1, MAX_DIM, &m->vocab) ||
        !get_int(r, root, "num_attention_heads", -1, MAX_DIM, &m->heads) ||
        !get_int(r, root, "num_key_value_heads", m->heads, MAX_DIM, &m->kv_heads) ||
        !get_int(r, root, "max_position_embeddings", -1, MAX_DIM, &m->max_pos))
        return false;
    m->head_dim_given = member(root, "head_dim") != NULL;
    if (m->head_dim_given) {
        if (!get_int(r, root, "head_dim", -1, MAX_DIM, &m->head_dim))
            return false;
    } else if (m->hidden % m->heads != 0) {
        return bad(r, "\"hidden_size\" (%lld) is not a multiple of \"num_attention_heads\" (%lld), "
                      "and no \"head_dim\" is given",
                   (long long)m->hidden, (long long)m->heads);
    } else {
        m->head_dim = m->hidden / m->heads;
    }
    if (m->head_dim % 2 != 0)
        return bad(r, "the head dimension %lld (%s) is odd: rotary embeddings need an even one",
                   (long long)m->head_dim,
                   m->head_dim_given ? "\"head_dim\"" : "\"hidden_size\" / \"num_attention_heads\"");
    if (m->heads % m->kv_heads != 0)
        return bad(r, "\"num_attention_heads\" (%lld) is not a multiple of \"num_key_value_heads\" (%lld)",
                   (long long)m->heads, (long long)m->kv_heads);
    return true;
}

/* Every tensor must fit mpk's limit. Doubles are exact below 2^53, so the
 * comparison is exact wherever it matters. */
static bool check_numel(const reader *r, const model *m)
{
    double seq = (double)(m->max_pos < DEFAULT_SEQ ? m->max_pos : DEFAULT_SEQ);
    const struct {
        const char *what;
        double n;
    } t[] = {
        {"the embedding table (vocab_size x hidden_size)", (double)m->vocab * (double)m->hidden},
        {"q_proj (num_attention_heads x head_dim x hidden_size)",
         (double)m->heads * (double)m->head_dim * (double)m->hidden},
        {"the MLP weights (intermediate_size x hidden_size)", (double)m->inter * (double)m->hidden},
        {"the KV cache", (double)m->layers * 2 * (double)m->kv_heads * seq * (double)m->head_dim},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].n > (double)MAX_NUMEL)
            return bad(r, "%s would have %.0f elements, more than 2^40 (%llu)", t[i].what, t[i].n,
                       (unsigned long long)MAX_NUMEL);
    return true;
}

/* The llama3 frequency scaling: all four keys are required, as in
 * transformers. */
static bool read_llama3(const reader *r, json_t *s, const char *where, model *m)
{
    char n1[64], n2[64], f1[32], f2[32];
    if (!get_float(r, s, sub(n1, where, "factor"), -1, &m->rope_factor) ||
        !get_float(r, s, sub(n1, where, "low_freq_factor"), -1, &m->rope_low_freq) ||
        !get_float(r, s, sub(n1, where, "high_freq_factor"), -1, &m->rope_high_freq) ||
        !get_int(r, s, sub(n1, where, "original_max_position_embeddings"), -1, MAX_DIM, &m->rope_orig_max))
        return false;
    if (!(m->rope_high_freq > m->rope_low_freq)) {
        fmt_float(f1, sizeof f1, m->rope_high_freq);
        fmt_float(f2, sizeof f2, m->rope_low_freq);
        return bad(r, "\"%s\" (%s) must exceed \"%s\" (%s)", sub(n1, where, "high_freq_factor"), f1,
                   sub(n2, where, "low_freq_factor"), f2);
    }
    m->rope_source = where;
    return true;
}

/* Rope, in either form: the older top-level "rope_theta" and "rope_scaling"
 * (null when unscaled), or the newer "rope_parameters", which holds the
 * theta and the scaling together (and wins when both are given). A scaling
 * names its type in "rope_type", or in the older "type" (as transformers
 * reads it); "default" is no scaling. */
static bool read_rope(const reader *r, json_t *root, model *m)
{
    char name[64];
    m->rope_factor = 1.0, m->rope_low_freq = 1.0, m->rope_high_freq = 4.0, m->rope_orig_max = 8192;
    if (!get_float(r, root, "rope_theta", 10000.0, &m->theta))
        return false;
    const char *where = "rope_parameters";
    json_t *s = member(root, where), *type;
    bool params = s != NULL;
    if (!s) {
        where = "rope_scaling";
        s = member(root, where);
    }
    if (!s)
        return true;
    if (!json_is_object(s))
        return bad(r, "\"%s\" must be an object, not %s", where, SHOW(s));
    json_t *old = params ? member(root, "rope_scaling") : NULL, *old_type = NULL;
    if (json_is_object(old)) {
        old_type = member(old, "rope_type") ? member(old, "rope_type") : member(old, "type");
        if (!json_is_string(old_type) || strcmp(json_string_value(old_type), "default") != 0)
            fprintf(r->err, "%s: warning: \"rope_scaling\" (%s) is ignored: \"rope_parameters\" is given, and "
                            "wins\n", r->path, old_type ? SHOW(old_type) : "no type");
    } else if (old) {
        fprintf(r->err, "%s: warning: \"rope_scaling\" %s is ignored: \"rope_parameters\" is given, and wins\n",
                r->path, SHOW(old));
    }
    if (params) {
        /* Models with several attention kinds key rope_parameters by
         * layer type; these two have one. */
        const char *key;
        json_t *v;
        json_object_foreach(s, key, v) {
            if (json_is_object(v)) {
                json_t *k = json_string(key); /* shown as JSON: it is the user's */
                bad(r, "\"%s\" has an object under %s: per-layer-type rope parameters are not supported",
                    where, SHOW(k));
                json_decref(k);
                return false;
            }
        }
        if (!get_float(r, s, sub(name, where, "rope_theta"), m->theta, &m->theta))
            return false;
    }
    const char *type_key = member(s, "rope_type") ? "rope_type" : "type";
    if (!get_string(r, s, sub(name, where, type_key), &type))
        return false;
    if (!type)
        return bad(r, "\"%s\" gives no \"rope_type\"", where);
    if (strcmp(json_string_value(type), "default") == 0)
        return true;
    if (strcmp(json_string_value(type), "llama3") == 0 && m->arch == ARCH_LLAMA)
        return read_llama3(r, s, where, m);
    return bad(r, "rope type %s (\"%s\") is not supported for %s (supported: %s)", SHOW(type),
               sub(name, where, type_key), archs[m->arch].name, archs[m->arch].rope_types);
}

/* eos_token_id: a token id, a list of them, or null. Each must be a token
 * of the vocabulary, or generation could never stop on it. */
static bool read_eos(const reader *r, json_t *root, model *m)
{
    json_t *v = member(root, "eos_token_id");
    if (!v)
        return true;
    m->eos_list = json_is_array(v);
    size_t n = m->eos_list ? json_array_size(v) : 1;
    if (!json_is_integer(v) && !(m->eos_list && n <= MPK_MAX_EOS))
        return bad(r, "\"eos_token_id\" must be a token id or a list of at most %d token ids, not %s", MPK_MAX_EOS,
                   SHOW(v));
    for (size_t i = 0; i < n; i++) {
        json_t *id = m->eos_list ? json_array_get(v, i) : v;
        if (!json_is_integer(id) || json_integer_value(id) < 0)
            return bad(r, "\"eos_token_id\" must be a token id or a list of at most %d token ids, not %s",
                       MPK_MAX_EOS, SHOW(v));
        if (json_integer_value(id) >= m->vocab)
            return bad(r, "\"eos_token_id\" %lld is not a token id: \"vocab_size\" is %lld",
                       (long long)json_integer_value(id), (long long)m->vocab);
        m->eos[m->neos++] = json_integer_value(id);
    }
    return true;
}

static bool read_model(const reader *r, json_t *root, model *m)
{
    if (!json_is_object(root))
        return bad(r, "the top level must be an object, not %s", SHOW(root));
    /* tie_word_embeddings: both LlamaConfig and Qwen3Config default to
     * false (PretrainedConfig's default, true, is overridden). */
    return read_arch(r, root, m) && read_features(r, root, m) && read_sizes(r, root, m) &&
           check_numel(r, m) && get_float(r, root, "rms_norm_eps", -1, &m->eps) &&
           get_bool(r, root, "tie_word_embeddings", false, &m->tied) && read_rope(r, root, m) &&
           read_eos(r, root, m);
}

/* ---- the model text --------------------------------------------------- */

/* A name for a comment: a control character would end the comment. */
static void put_sanitized(FILE *o, const char *s)
{
    for (; *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, o);
}

static void emit_header(FILE *o, const reader *r, const model *m)
{
    fprintf(o, "# %s", archs[m->arch].name);
    if (m->from_model_type)
        fprintf(o, " (model_type \"%s\")", archs[m->arch].model_type);
    fprintf(o, ": greedy decode of one token.\n# Generated by `mpk import` from ");
    if (strcmp(r->path, "<stdin>") == 0)
        fprintf(o, "standard input");
    else
        put_sanitized(o, r->path);
    fprintf(o, ".\nimport \"%s\"\n\n", archs[m->arch].std_file);
}

static void emit_params(FILE *o, const model *m)
{
    char f1[32], f2[32];
    fprintf(o, "param hidden = %lld, layers = %lld, inter = %lld, vocab = %lld\n", (long long)m->hidden,
            (long long)m->layers, (long long)m->inter, (long long)m->vocab);
    fprintf(o, "param heads = %lld, kv_heads = %lld, head_dim = %lld%s\n", (long long)m->heads,
            (long long)m->kv_heads, (long long)m->head_dim,
            m->head_dim * m->heads != m->hidden ? "   # head_dim is not hidden / heads here" : "");
    fmt_float(f1, sizeof f1, m->eps);
    fprintf(o, "param eps = %s\n", f1);
    fmt_float(f1, sizeof f1, m->theta);
    fprintf(o, "param theta = %s\n", f1);
    if (m->arch == ARCH_LLAMA) {
        /* std/llama.mpk reads all five, scaled or not. */
        if (m->rope_source)
            fprintf(o, "# %s {\"rope_type\": \"llama3\", ...}: stretches the low rotary\n"
                       "# frequencies for long contexts.\n", m->rope_source);
        else
            fprintf(o, "# No rope scaling; std/llama.mpk reads these all the same.\n");
        fmt_float(f1, sizeof f1, m->rope_factor);
        fprintf(o, "param rope_scaling = \"%s\", rope_factor = %s\n", m->rope_source ? "llama3" : "none", f1);
        fmt_float(f1, sizeof f1, m->rope_low_freq);
        fmt_float(f2, sizeof f2, m->rope_high_freq);
        fprintf(o, "param rope_low_freq = %s, rope_high_freq = %s, rope_orig_max = %lld\n", f1, f2,
                (long long)m->rope_orig_max);
    }
    if (m->max_pos > DEFAULT_SEQ)
        fprintf(o, "# KV cache length. The model allows %lld positions; override with -D max_seq=N.\n"
                   "param max_seq = %d\n", (long long)m->max_pos, DEFAULT_SEQ);
    else
        fprintf(o, "# KV cache length: all the positions the model allows; override with -D max_seq=N.\n"
                   "param max_seq = %lld\n", (long long)m->max_pos);
    if (m->neos) {
        if (m->neos > m->neos_config)
            fprintf(o, "# End-of-sequence token ids: config.json's eos_token_id and generation_config.json's.\n"
                       "param eos = %s", m->eos_list ? "[" : "");
        else
            fprintf(o, "# End-of-sequence token ids (eos_token_id): generation stops at them.\nparam eos = %s",
                    m->eos_list ? "[" : "");
        for (int i = 0; i < m->neos; i++)
            fprintf(o, "%s%lld", i ? ", " : "", (long long)m->eos[i]);
        fprintf(o, "%s\n", m->eos_list ? "]" : "");
    }
}

static void emit_decls(FILE *o, const model *m)
{
    fprintf(o, "\nweight embed_tokens : bf16[vocab, hidden] = \"model.embed_tokens.weight\"\n"
               "weight norm : bf16[hidden] = \"model.norm.weight\"\n");
    if (!m->tied)
        fprintf(o, "# Untied: the LM head has its own weight.\n"
                   "weight lm_head : bf16[vocab, hidden] = \"lm_head.weight\"\n");
    fprintf(o, "\nstate kv : bf16[layers, 2, kv_heads, max_seq, head_dim]\n"
               "\n# Tokens per step: 1 when decoding; mpk build --chunk C also compiles the\n"
               "# graph at n = C for the prompt, C tokens a step.\n"
               "param n = 1\ninput token : i32[n]\ninput pos : i32[n]\n");
}

static void emit_graph(FILE *o, const model *m)
{
    fprintf(o, "\ngraph decode {\n"
               "    x = embed(embed_tokens, token)\n"
               "    for l in 0..layers {\n"
               "        x = %s(x, l, pos)\n"
               "    }\n"
               "    # The next token comes from the last row only.\n"
               "    x = rmsnorm(slice(x, 0, n - 1, n), norm, eps)\n", archs[m->arch].block);
    if (m->tied)
        fprintf(o, "    # tie_word_embeddings: the LM head is the embedding table.\n"
                   "    logits = matmul(x, embed_tokens)\n");
    else
        fprintf(o, "    logits = matmul(x, lm_head)\n");
    fprintf(o, "    output next = argmax(logits)\n}\n");
}

/* ---- files ------------------------------------------------------------ */

/* The config, whole, into a NUL-terminated buffer. */
static int read_config(const reader *r, const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        bad(r, "cannot read: %s", strerror(errno));
        return MPK_IMPORT_IO;
    }
    char *buf = malloc(MAX_CONFIG + 1);
    size_t n = buf ? fread(buf, 1, MAX_CONFIG + 1, f) : 0;
    int rc = MPK_IMPORT_OK, e = errno;
    if (!buf) {
        bad(r, "out of memory");
        rc = MPK_IMPORT_IO;
    } else if (ferror(f)) {
        bad(r, "cannot read: %s", strerror(e));
        rc = MPK_IMPORT_IO;
    } else if (n > MAX_CONFIG) {
        bad(r, "larger than %d MiB: not a config.json", MAX_CONFIG >> 20);
        rc = MPK_IMPORT_BAD_CONFIG;
    }
    if (f != stdin)
        fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return MPK_IMPORT_OK;
}

/* ---- a checkpoint directory ------------------------------------------ */

static int mpk_import_config(const char *config_path, const char *dir, const char *out_path, FILE *err);

enum { MAX_ST_HEADER = 100 << 20 };

/* The dtypes of one safetensors file's tensors: all must be BF16. */
static int check_safetensors(const char *path, FILE *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(err, "%s: cannot read: %s\n", path, strerror(errno));
        return MPK_IMPORT_IO;
    }
    unsigned char h8[8];
    uint64_t n = 0;
    bool ok = fread(h8, 1, 8, f) == 8;
    for (int i = 7; ok && i >= 0; i--)
        n = n << 8 | h8[i];
    char *hdr = ok && n > 0 && n <= MAX_ST_HEADER ? malloc(n + 1) : NULL;
    ok = hdr && fread(hdr, 1, n, f) == n;
    fclose(f);
    json_t *root = ok ? json_loadb(hdr, n, 0, NULL) : NULL;
    free(hdr);
    if (!json_is_object(root)) {
        json_decref(root);
        fprintf(err, "%s: not a safetensors file (no JSON header of a sane length)\n", path);
        return MPK_IMPORT_BAD_CONFIG;
    }
    const char *name;
    json_t *t;
    int rc = MPK_IMPORT_OK;
    json_object_foreach(root, name, t) {
        json_t *d = json_object_get(t, "dtype");
        if (strcmp(name, "__metadata__") == 0 || !json_is_string(d) || strcmp(json_string_value(d), "BF16") == 0)
            continue;
        const char *dt = json_string_value(d);
        bool float16 = strcmp(dt, "F16") == 0 || strcmp(dt, "F32") == 0;
        fprintf(err, "%s: tensor '%s' is %s: mpk runs bf16 checkpoints%s\n", path, name, dt,
                float16 ? "; convert this one to bf16 first (in transformers: "
                          "model.to(torch.bfloat16).save_pretrained(DIR))" : "");
        rc = MPK_IMPORT_BAD_CONFIG;
        break;
    }
    json_decref(root);
    return rc;
}

/* Every weight file of the checkpoint: model.safetensors, or the shards
 * that model.safetensors.index.json names. */
static int check_weights(const char *dir, FILE *err)
{
    char *single = mpk_text_sibling(dir, "model.safetensors");
    char *index = mpk_text_sibling(dir, "model.safetensors.index.json");
    int rc = MPK_IMPORT_OK;
    if (!single || !index) {
        rc = MPK_IMPORT_IO;
    } else if (mpk_text_exists(single)) {
        rc = check_safetensors(single, err);
    } else if (mpk_text_exists(index)) {
        size_t n;
        char *text = mpk_text_slurp(index, MAX_CONFIG, &n, err);
        json_t *root = text ? json_loadb(text, n, 0, NULL) : NULL, *map = json_object_get(root, "weight_map"), *v;
        free(text);
        if (!text) {
            rc = MPK_IMPORT_IO;
        } else if (!json_is_object(map)) {
            fprintf(err, "%s: no \"weight_map\" object\n", index);
            rc = MPK_IMPORT_BAD_CONFIG;
        }
        const char *key;
        json_t *seen = json_object();
        json_object_foreach(map, key, v) {
            if (rc || !seen)
                break;
            const char *shard = json_string_value(v);
            if (!shard || strchr(shard, '/')) {
                fprintf(err, "%s: \"weight_map\" names no file in this directory for '%s'\n", index, key);
                rc = MPK_IMPORT_BAD_CONFIG;
            } else if (!json_object_get(seen, shard)) {
                json_object_set_new(seen, shard, json_true());
                char *p = mpk_text_sibling(dir, shard);
                rc = p ? check_safetensors(p, err) : MPK_IMPORT_IO;
                free(p);
            }
        }
        json_decref(seen);
        json_decref(root);
    } else {
        fprintf(err, "%s: neither model.safetensors nor model.safetensors.index.json is in this directory\n", dir);
        rc = MPK_IMPORT_IO;
    }
    free(single), free(index);
    return rc;
}

/* generation_config.json's EOS ids, after config.json's. */
static int read_generation(const reader *r, const char *dir, model *m)
{
    char *path = mpk_text_sibling(dir, "generation_config.json");
    mpk_genconfig g;
    int rc = MPK_IMPORT_OK;
    m->neos_config = m->neos;
    if (!path)
        return MPK_IMPORT_IO;
    if (mpk_text_exists(path) && !mpk_genconfig_read(path, &g, r->err))
        rc = MPK_IMPORT_BAD_CONFIG;
    for (int i = 0; rc == MPK_IMPORT_OK && mpk_text_exists(path) && i < g.neos; i++) {
        bool dup = false;
        for (int k = 0; k < m->neos; k++)
            dup |= m->eos[k] == g.eos[i];
        if (dup)
            continue;
        if (g.eos[i] >= m->vocab) {
            fprintf(r->err, "%s: \"eos_token_id\" %d is not a token id: \"vocab_size\" is %lld\n", path, g.eos[i],
                    (long long)m->vocab);
            rc = MPK_IMPORT_BAD_CONFIG;
        } else if (m->neos == MPK_MAX_EOS) {
            fprintf(r->err, "%s: with config.json's, more than %d end-of-sequence ids\n", path, MPK_MAX_EOS);
            rc = MPK_IMPORT_BAD_CONFIG;
        } else {
            m->eos[m->neos++] = g.eos[i];
            m->eos_list |= m->neos > 1;
        }
    }
    free(path);
    return rc;
}

/* The tokenizer files: what mpk-run will need for text. A problem is a
 * warning, since a model runs on ids without them. */
static void check_tokenizer(const char *dir, FILE *err)
{
    char *tj = mpk_text_sibling(dir, "tokenizer.json"), *tc = mpk_text_sibling(dir, "tokenizer_config.json");
    if (tj && !mpk_text_exists(tj)) {
        fprintf(err, "mpk import: warning: %s: no tokenizer.json: mpk-run will take --prompt-ids only\n", dir);
    } else if (tj) {
        mpk_tok *T = mpk_tok_load(tj, err);
        if (!T)
            fprintf(err, "mpk import: warning: the tokenizer above is not usable: mpk-run will take "
                         "--prompt-ids only\n");
        mpk_tok_free(T);
    }
    mpk_chat_format f;
    if (tc && mpk_text_exists(tc)) {
        if (mpk_chat_format_read(tc, NULL, &f, err))
            mpk_chat_format_free(&f);
        else
            fprintf(err, "mpk import: warning: mpk-run --chat will need --chat-format\n");
    }
    free(tj), free(tc);
}

int mpk_import(const char *config_path, const char *out_path, FILE *err)
{
    const char *dir = NULL;
    char *dir_config = NULL;
    if (strcmp(config_path, "-") != 0 && mpk_text_is_dir(config_path)) {
        dir = config_path;
        if (!(dir_config = mpk_text_sibling(dir, "config.json"))) {
            fprintf(err, "%s: out of memory\n", dir);
            return MPK_IMPORT_IO;
        }
        config_path = dir_config;
    }
    int rc = mpk_import_config(config_path, dir, out_path, err);
    free(dir_config);
    return rc;
}

static int mpk_import_config(const char *config_path, const char *dir, const char *out_path, FILE *err)
{
    reader r = {.path = strcmp(config_path, "-") == 0 ? "<stdin>" : config_path, .err = err};
    char *buf;
    size_t len;
    int rc = read_config(&r, config_path, &buf, &len);
    if (rc)
        return rc;
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!root) {
        fprintf(err, "%s:%d:%d: invalid JSON: %s\n", r.path, je.line, je.column, je.text);
        return MPK_IMPORT_BAD_CONFIG;
    }
    model m = {0};
    bool ok = read_model(&r, root, &m);
    json_decref(root);
    if (!ok)
        return MPK_IMPORT_BAD_CONFIG;
    m.neos_config = m.neos;
    if (dir && ((rc = read_generation(&r, dir, &m)) || (rc = check_weights(dir, err))))
        return rc;
    if (dir)
        check_tokenizer(dir, err);

    char *text = NULL;
    size_t n = 0;
    FILE *o = open_memstream(&text, &n);
    if (!o) {
        bad(&r, "out of memory");
        return MPK_IMPORT_IO;
    }
    emit_header(o, &r, &m);
    emit_params(o, &m);
    emit_decls(o, &m);
    emit_graph(o, &m);
    if (fclose(o) != 0) {
        free(text);
        bad(&r, "out of memory");
        return MPK_IMPORT_IO;
    }
    const char *in[1] = {config_path};
    rc = mpk_write_file(out_path ? out_path : "-", text, n, in, 1, err) ? MPK_IMPORT_OK : MPK_IMPORT_IO;
    free(text);
    return rc;
}
