/*
 * value.c - dtypes, compile-time values, and the op table from ops.def.
 */
#include "frontend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int size;
} dtypes[MPK_DT_COUNT] = {
    [MPK_DT_BF16] = {"bf16", 2},
    [MPK_DT_F16] = {"f16", 2},
    [MPK_DT_F32] = {"f32", 4},
    [MPK_DT_I32] = {"i32", 4},
};

const char *mpk_dtype_name(mpk_dtype t)
{
    MPK_ASSERT(t < MPK_DT_COUNT);
    return dtypes[t].name;
}

int mpk_dtype_size(mpk_dtype t)
{
    MPK_ASSERT(t < MPK_DT_COUNT);
    return dtypes[t].size;
}

bool mpk_dtype_parse(const char *s, mpk_dtype *out)
{
    for (int i = 0; i < MPK_DT_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (mpk_dtype)i;
            return true;
        }
    return false;
}

static const struct {
    const char *name;
    const char *operands;
    int nout;
    const char *attrs;
} op_src[MPK_OP_COUNT] = {
#define MPK_OP(e, name, operands, nout, attrs) [MPK_OP_##e] = {name, operands, nout, attrs},
#include "ops.def"
#undef MPK_OP
};

static mpk_op_info op_info[MPK_OP_COUNT];
static bool op_ready;

/* Parses the attribute strings of ops.def once. The strings are part of the
 * program, so a malformed one is an internal error. */
static void op_init(void)
{
    if (op_ready)
        return;
    for (int o = 0; o < MPK_OP_COUNT; o++) {
        mpk_op_info *info = &op_info[o];
        info->name = op_src[o].name;
        info->nout = op_src[o].nout;
        static char names[MPK_OP_COUNT][64];
        MPK_ASSERT(strlen(op_src[o].operands) < sizeof names[o]);
        strcpy(names[o], op_src[o].operands);
        for (char *save, *tok = strtok_r(names[o], " ", &save); tok;
             tok = strtok_r(NULL, " ", &save)) {
            MPK_ASSERT(info->nin < MPK_MAX_IN);
            info->operands[info->nin++] = tok;
        }
        static char buf[MPK_OP_COUNT][256];
        MPK_ASSERT(strlen(op_src[o].attrs) < sizeof buf[o]);
        strcpy(buf[o], op_src[o].attrs);
        for (char *save, *tok = strtok_r(buf[o], " ", &save); tok;
             tok = strtok_r(NULL, " ", &save)) {
            MPK_ASSERT(info->nattrs < MPK_MAX_ATTRS);
            mpk_attr_spec *a = &info->attrs[info->nattrs++];
            char *colon = strchr(tok, ':');
            MPK_ASSERT(colon);
            *colon = 0;
            a->name = tok;
            char k = colon[1];
            a->kind = k == 'i' ? MPK_A_INT : k == 'f' ? MPK_A_FLOAT
                    : k == 's' ? MPK_A_STRING : MPK_A_LIST;
            MPK_ASSERT(strchr("ifsl", k));
            a->required = colon[2] != '=';
            a->dflt = a->required ? NULL : colon + 3;
        }
    }
    op_ready = true;
}

const mpk_op_info *mpk_op_get(mpk_op op)
{
    op_init();
    MPK_ASSERT(op < MPK_OP_COUNT);
    return &op_info[op];
}

int mpk_op_attr(mpk_op op, const char *name)
{
    const mpk_op_info *info = mpk_op_get(op);
    for (int k = 0; k < info->nattrs; k++)
        if (strcmp(info->attrs[k].name, name) == 0)
            return k;
    mpk_internal_error(__FILE__, __LINE__, "an op without the attribute asked for");
}

bool mpk_op_lookup(const char *name, mpk_op *out)
{
    for (int o = 0; o < MPK_OP_COUNT; o++)
        if (strcmp(op_src[o].name, name) == 0) {
            *out = (mpk_op)o;
            return true;
        }
    return false;
}

float mpk_rope_inv_freq(const mpk_value *attrs, int64_t i, int64_t head_dim)
{
#define ROPE_ATTR_(name) (&attrs[mpk_op_attr(MPK_OP_ROPE, name)])
    double theta = ROPE_ATTR_("theta")->f;
    float inv = (float)(1.0 / pow(theta, (double)(float)(2 * i) / (double)head_dim));
    if (strcmp(ROPE_ATTR_("scaling")->s, "llama3") != 0)
        return inv;
    double factor = ROPE_ATTR_("factor")->f, lo = ROPE_ATTR_("low_freq_factor")->f;
    double hi = ROPE_ATTR_("high_freq_factor")->f, orig = (double)ROPE_ATTR_("original_max")->i;
#undef ROPE_ATTR_
    double wavelen = 2 * M_PI / inv, low_wl = orig / lo, high_wl = orig / hi;
    double v = wavelen > low_wl ? inv / factor : inv;
    if (!(wavelen < high_wl) && !(wavelen > low_wl)) {
        double smooth = (orig / wavelen - lo) / (hi - lo);
        v = (1 - smooth) * v / factor + smooth * v;
    }
    return (float)v;
}

const char *mpk_value_kind_name(mpk_value_kind k)
{
    switch (k) {
    case MPK_V_NONE: return "nothing";
    case MPK_V_INT: return "an int";
    case MPK_V_FLOAT: return "a float";
    case MPK_V_STRING: return "a string";
    case MPK_V_LIST: return "a list";
    case MPK_V_TENSOR: return "a tensor";
    case MPK_V_TUPLE: return "several values";
    }
    return "?";
}

/* Shortest text that reads back as the same double. */
static void fmt_float(char *buf, size_t n, double f)
{
    if (isnan(f) || isinf(f)) {
        snprintf(buf, n, "%s", isnan(f) ? "nan" : f > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    if (!strpbrk(buf, ".eE"))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

char *mpk_value_str(mpk_arena *a, const mpk_value *v)
{
    char buf[64];
    switch (v->kind) {
    case MPK_V_NONE: return "none";
    case MPK_V_INT: return mpk_arena_printf(a, "%lld", (long long)v->i);
    case MPK_V_FLOAT:
        fmt_float(buf, sizeof buf, v->f);
        return mpk_arena_strdup(a, buf);
    case MPK_V_STRING: {
        /* Escape as the lexer reads it back. */
        size_t n = strlen(v->s);
        char *out = mpk_arena_alloc(a, 2 * n + 3), *p = out;
        *p++ = '"';
        for (const char *s = v->s; *s; s++) {
            if (*s == '"' || *s == '\\')
                *p++ = '\\', *p++ = *s;
            else if (*s == '\n')
                *p++ = '\\', *p++ = 'n';
            else if (*s == '\t')
                *p++ = '\\', *p++ = 't';
            else
                *p++ = *s;
        }
        *p++ = '"';
        return out;
    }
    case MPK_V_LIST:
    case MPK_V_TUPLE: {
        char *s = v->kind == MPK_V_LIST ? "[" : "(";
        for (int i = 0; i < v->n; i++)
            s = mpk_arena_printf(a, "%s%s%s", s, i ? ", " : "", mpk_value_str(a, &v->items[i]));
        return mpk_arena_printf(a, "%s%s", s, v->kind == MPK_V_LIST ? "]" : ")");
    }
    case MPK_V_TENSOR: {
        const mpk_tensor *t = v->t;
        char *s = mpk_arena_printf(a, "%s[", mpk_dtype_name(t->dtype));
        for (int i = 0; i < t->ndim; i++)
            s = mpk_arena_printf(a, "%s%s%lld", s, i ? ", " : "", (long long)t->dims[i]);
        return mpk_arena_printf(a, "%s]", s);
    }
    }
    return "?";
}

int64_t mpk_tensor_numel(const mpk_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->dims[i];
    return n;
}
