/*
 * taskops.c - the names in mpk/taskops.def, for messages and mpk dump, and
 * which slots a kind writes, for the arena planner.
 */
#include "mpk/blob.h"

#include <stdio.h>
#include <string.h>

#define STR10_(a, b, c, d, e, f, g, h, i, j) {#a, #b, #c, #d, #e, #f, #g, #h, #i, #j}
#define STR4_(a, b, c, d) {#a, #b, #c, #d}

static const struct {
    const char *name;
    const char *t[MPKB_NT];
    const char *i[MPKB_NI];
    const char *f[MPKB_NF];
    const char *k[MPKB_NT]; /* the slots' kinds, as named in the table */
} ops[MPKB_NOPS] = {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) \
    [MPKB_OP_##ID] = {#name, STR10_ opnds, STR4_ ints, STR4_ floats, STR10_ kinds},
#include "mpk/taskops.def"
#undef MPKB_TASKOP
};

const char *mpkb_op_name(uint32_t op) { return op < MPKB_NOPS ? ops[op].name : "?"; }

static const char *used(const char *s) { return s[0] == '_' ? NULL : s; }

const char *mpkb_operand_name(uint32_t op, int k)
{
    return op < MPKB_NOPS && k >= 0 && k < MPKB_NT ? used(ops[op].t[k]) : NULL;
}

bool mpkb_operand_writes(uint32_t op, int k)
{
    if (op >= MPKB_NOPS || k < 0 || k >= MPKB_NT)
        return false;
    const char *s = ops[op].k[k]; /* OUT_..., INOUT_... */
    return strncmp(s, "OUT", 3) == 0 || strncmp(s, "INOUT", 5) == 0;
}

const char *mpkb_imm_name(uint32_t op, int k, bool is_float)
{
    if (op >= MPKB_NOPS || k < 0 || k >= (is_float ? MPKB_NF : MPKB_NI))
        return NULL;
    return used(is_float ? ops[op].f[k] : ops[op].i[k]);
}

const char *mpkb_flag_names(uint32_t mask, char *buf, size_t n)
{
    static const char *const names[] = {"rmsnorm", "silu_mul", "residual", "argmax", "direct", "all_ranks"};
    _Static_assert(sizeof names / sizeof *names == 6 && MPKB_F_ALL == (1u << 6) - 1, "a flag without a name");
    size_t at = 0;
    buf[0] = 0;
    for (int b = 0; b < 6; b++)
        if (mask & (1u << b) && at + strlen(names[b]) + 2 <= n)
            at += (size_t)snprintf(buf + at, n - at, "%s%s", at ? " " : "", names[b]);
    return buf;
}
