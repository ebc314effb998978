/*
 * blob.c - reading a blob and proving it safe to execute.
 *
 * Everything in a blob is checked before an executor sees it: the header,
 * the section table and every section's CRC; every string, tensor, event
 * and queue index; every tensor's bytes inside its space; every task's
 * operands present, of the dtype and shape its op needs and with its tile
 * coordinates inside them; the event graph acyclic within a step and every
 * event's producer count right, so that a step always finishes; and the
 * queues a permutation of the tasks that a static schedule can run without
 * deadlock. A hostile blob gets one message naming the first problem.
 *
 * Whether the events order every conflicting access is the compiler's
 * verifier's business (lowering/verify.c); this file only guarantees that
 * executing the blob stays in bounds and terminates.
 */
#include "mpk/blob.h"

#include <limits.h>

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "blobs are read in place: little-endian hosts only");


typedef struct {
    const char *name;
    FILE *err;
} ctx;

static bool fail(ctx *C, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(ctx *C, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(C->err, "%s: ", C->name);
    vfprintf(C->err, fmt, ap);
    fputc('\n', C->err);
    va_end(ap);
    return false;
}

const char *mpkb_str(const mpkb_blob *b, uint32_t off)
{
    return off < b->strings_size ? b->strings + off : "?";
}

static const struct {
    uint32_t kind, esize;
    const char *name;
} kinds[MPKB_NSECTIONS] = {
    {MPKB_SEC_META, sizeof(mpkb_meta), "META"},
    {MPKB_SEC_STRINGS, 1, "STRINGS"},
    {MPKB_SEC_TENSORS, sizeof(mpkb_tensor), "TENSORS"},
    {MPKB_SEC_TASKS, sizeof(mpkb_task), "TASKS"},
    {MPKB_SEC_EVENTS, sizeof(mpkb_event), "EVENTS"},
    {MPKB_SEC_TRIGGERS, sizeof(uint32_t), "TRIGGERS"},
    {MPKB_SEC_QUEUES, sizeof(mpkb_queue), "QUEUES"},
    {MPKB_SEC_QTASKS, sizeof(uint32_t), "QTASKS"},
    {MPKB_SEC_CONSTS, 1, "CONSTS"},
    {MPKB_SEC_CMETA, sizeof(mpkb_meta), "CMETA"},
    {MPKB_SEC_CTASKS, sizeof(mpkb_task), "CTASKS"},
    {MPKB_SEC_CEVENTS, sizeof(mpkb_event), "CEVENTS"},
    {MPKB_SEC_CTRIGGERS, sizeof(uint32_t), "CTRIGGERS"},
    {MPKB_SEC_CQUEUES, sizeof(mpkb_queue), "CQUEUES"},
    {MPKB_SEC_CQTASKS, sizeof(uint32_t), "CQTASKS"},
};

static bool sections(ctx *C, mpkb_blob *b)
{
    const uint8_t *d = b->data;
    if (b->size < sizeof(mpkb_header))
        return fail(C, "%zu bytes is too short for a blob (the header alone is %zu)", b->size,
                    sizeof(mpkb_header));
    mpkb_header h;
    memcpy(&h, d, sizeof h);
    if (memcmp(h.magic, MPKB_MAGIC, 8) != 0) {
        if (memcmp(h.magic, "MPKB", 4) == 0)
            return fail(C, "damaged magic bytes (was the file transferred in text mode?)");
        return fail(C, "not an mpk blob (bad magic bytes)");
    }
    uint32_t want = h.header_crc;
    h.header_crc = 0;
    if (mpkb_crc(&h, sizeof h) != want)
        return fail(C, "header checksum mismatch (the file is damaged)");
    if (h.version != MPKB_VERSION && h.version != MPKB_VERSION_DECODE)
        return fail(C, "blob format version %u; this mpk reads versions %u and %u (rebuild the model)",
                    h.version, MPKB_VERSION_DECODE, MPKB_VERSION);
    if (h.header_size != sizeof h || h.file_size != b->size)
        return fail(C, "the header says %llu bytes but the file has %zu (truncated?)",
                    (unsigned long long)h.file_size, b->size);
    if (h.nsections != (h.version == MPKB_VERSION ? MPKB_NSECTIONS : MPKB_NBASE_SECTIONS) || h.table_offset % 8 ||
        h.table_offset > b->size || b->size - h.table_offset < (uint64_t)h.nsections * sizeof(mpkb_section))
        return fail(C, "bad section table (%u sections at offset %llu)", h.nsections,
                    (unsigned long long)h.table_offset);
    const mpkb_section *tab = (const mpkb_section *)(d + h.table_offset);
    if (mpkb_crc(tab, sizeof *tab * h.nsections) != h.table_crc)
        return fail(C, "section table checksum mismatch (the file is damaged)");
    const void *where[MPKB_NSECTIONS] = {0};
    uint32_t count[MPKB_NSECTIONS] = {0};
    uint64_t size[MPKB_NSECTIONS] = {0};
    for (uint32_t i = 0; i < h.nsections; i++) {
        const mpkb_section *s = &tab[i];
        if (s->kind < 1 || s->kind > MPKB_NSECTIONS)
            return fail(C, "section %u has unknown kind %u", i, s->kind);
        int k = (int)s->kind - 1;
        if (where[k])
            return fail(C, "two %s sections", kinds[k].name);
        if (s->entry_size != kinds[k].esize || (uint64_t)s->count * s->entry_size != s->size)
            return fail(C, "%s section: %u entries of %u bytes do not make %llu bytes (want entries of %u)",
                        kinds[k].name, s->count, s->entry_size, (unsigned long long)s->size, kinds[k].esize);
        if (s->offset % MPKB_ALIGN || s->offset > b->size || b->size - s->offset < s->size)
            return fail(C, "%s section at %llu (+%llu) is misaligned or runs past the end of the file",
                        kinds[k].name, (unsigned long long)s->offset, (unsigned long long)s->size);
        if (mpkb_crc(d + s->offset, s->size) != s->crc)
            return fail(C, "%s section checksum mismatch (the file is damaged)", kinds[k].name);
        where[k] = d + s->offset;
        count[k] = s->count;
        size[k] = s->size;
    }
    for (uint32_t k = 0; k < h.nsections; k++) /* distinct kinds, as many as sections: the first ones */
        if (!where[k])
            return fail(C, "no %s section", kinds[k].name);
    if (count[0] != 1)
        return fail(C, "META section must hold one record");
    bool has_chunk = h.nsections == MPKB_NSECTIONS;
    if (has_chunk != (((const mpkb_meta *)where[0])->chunk > 0))
        return fail(C, "META says chunk %u but the file has %s chunk graph sections",
                    ((const mpkb_meta *)where[0])->chunk, has_chunk ? "the" : "no");
    if (has_chunk) {
        if (count[9] != 1)
            return fail(C, "CMETA section must hold one record");
        mpkb_blob *c = calloc(1, sizeof *c);
        if (!c)
            return fail(C, "out of memory");
        c->meta = where[9];
        c->tasks = where[10], c->ntasks = count[10];
        c->events = where[11], c->nevents = count[11];
        c->triggers = where[12], c->ntriggers = count[12];
        c->queues = where[13], c->nqueues = count[13];
        c->qtasks = where[14], c->nqtasks = count[14];
        b->chunk = c;
    }
    b->hdr = (const mpkb_header *)d;
    b->meta = where[0];
    b->strings = where[1], b->strings_size = count[1];
    b->tensors = where[2], b->ntensors = count[2];
    b->tasks = where[3], b->ntasks = count[3];
    b->events = where[4], b->nevents = count[4];
    b->triggers = where[5], b->ntriggers = count[5];
    b->queues = where[6], b->nqueues = count[6];
    b->qtasks = where[7], b->nqtasks = count[7];
    b->consts = where[8], b->consts_size = size[8];
    if (b->chunk) {
        mpkb_blob *c = (mpkb_blob *)b->chunk;
        c->strings = b->strings, c->strings_size = b->strings_size;
        c->tensors = b->tensors, c->ntensors = b->ntensors;
        c->consts = b->consts, c->consts_size = b->consts_size;
        c->data = b->data, c->size = b->size, c->hdr = (const mpkb_header *)d;
    }
    if (!b->strings_size || b->strings[0] || b->strings[b->strings_size - 1])
        return fail(C, "STRINGS section must start and end with a NUL byte");
    return true;
}

static bool tensors(ctx *C, mpkb_blob *b)
{
    const mpkb_meta *m = b->meta;
    if (m->arena_size > MPKB_MAX_ARENA || m->state_size > MPKB_MAX_STATE)
        return fail(C, "absurd arena (%llu) or state (%llu) size", (unsigned long long)m->arena_size,
                    (unsigned long long)m->state_size);
    uint64_t arena_end = 0, state_end = 0;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space == MPKB_SPACE_ARENA && t->offset + t->nbytes > arena_end && t->offset <= m->arena_size)
            arena_end = t->offset + t->nbytes;
        if (t->space == MPKB_SPACE_STATE && t->offset + t->nbytes > state_end && t->offset <= m->state_size)
            state_end = t->offset + t->nbytes;
        if (t->name >= b->strings_size)
            return fail(C, "tensor %u: name offset %u outside STRINGS", i, t->name);
        if (t->dtype >= MPKB_NDTYPES || t->space >= MPKB_NSPACES || t->ndim < 1 || t->ndim > MPKB_MAX_DIMS)
            return fail(C, "tensor %u (%s): bad dtype %u, space %u or rank %u", i, mpkb_str(b, t->name),
                        t->dtype, t->space, t->ndim);
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->dims[d] == 0 || t->dims[d] > MPKB_MAX_DIM ||
                __builtin_mul_overflow(n, (uint64_t)t->dims[d], &n) || n > MPKB_MAX_NUMEL)
                return fail(C, "tensor %u (%s): bad shape: dimension %d is %u (1 to %u), or the elements "
                               "exceed 2^40", i, mpkb_str(b, t->name), d, t->dims[d], MPKB_MAX_DIM);
        }
        uint64_t es = mpkb_dtype_size(t->dtype);
        if (n * es != t->nbytes)
            return fail(C, "tensor %u (%s): %llu bytes recorded, its shape needs %llu", i,
                        mpkb_str(b, t->name), (unsigned long long)t->nbytes, (unsigned long long)(n * es));
        if (t->offset % es)
            return fail(C, "tensor %u (%s): offset %llu not aligned to its dtype", i, mpkb_str(b, t->name),
                        (unsigned long long)t->offset);
        uint64_t limit = t->space == MPKB_SPACE_ARENA   ? m->arena_size
                         : t->space == MPKB_SPACE_STATE ? m->state_size
                         : t->space == MPKB_SPACE_CONST ? b->consts_size
                                                        : UINT64_MAX;
        if (t->space == MPKB_SPACE_WEIGHT) {
            if (t->base >= b->ntensors || b->tensors[t->base].space != MPKB_SPACE_WEIGHT ||
                b->tensors[t->base].base != t->base || b->tensors[t->base].offset != 0)
                return fail(C, "tensor %u (%s): base %u is not a loaded weight", i, mpkb_str(b, t->name), t->base);
            limit = b->tensors[t->base].nbytes;
            if (t->base != i && t->dtype != b->tensors[t->base].dtype)
                return fail(C, "tensor %u (%s): a view of another dtype", i, mpkb_str(b, t->name));
        }
        if (t->split && (t->space != MPKB_SPACE_WEIGHT || t->base != i || t->split > t->ndim || m->tp < 2 ||
                         (uint64_t)t->dims[t->split - 1] * m->tp > UINT32_MAX))
            return fail(C, "tensor %u (%s): split along dim %u of %u ranks, but only a loaded weight of a "
                           "blob for 2 or more ranks can be split",
                        i, mpkb_str(b, t->name), t->split - 1u, m->tp);
        if (t->offset > limit || limit - t->offset < t->nbytes)
            return fail(C, "tensor %u (%s): bytes %llu..%llu lie outside its %s space (%llu bytes)", i,
                        mpkb_str(b, t->name), (unsigned long long)t->offset,
                        (unsigned long long)(t->offset + t->nbytes), mpkb_space_name(t->space),
                        (unsigned long long)limit);
    }
    /* sizes beyond what the tensors use would only make executors allocate */
    if (m->arena_size > arena_end + 4096 || m->state_size > state_end + 4096)
        return fail(C, "arena (%llu bytes) or state (%llu bytes) is larger than its tensors need",
                    (unsigned long long)m->arena_size, (unsigned long long)m->state_size);
    return true;
}

/* ---- tasks: each kind's operands ----------------------------------------- */

typedef struct {
    ctx *C;
    const mpkb_blob *b;
    uint32_t task;
    bool ok;
} tcheck;

/* Slot kinds of taskops.def, as bits. */
enum {
    SK_USED = 1, SK_OPT = 2, SK_WRITE = 4, SK_FLOAT = 8, SK_F32 = 16, SK_I32 = 32,
    SK_NONE = 0,
    SK_IN_F = SK_USED | SK_FLOAT, SK_IN_F_OPT = SK_IN_F | SK_OPT,
    SK_IN_F32 = SK_USED | SK_F32, SK_IN_F32_OPT = SK_IN_F32 | SK_OPT,
    SK_IN_I32 = SK_USED | SK_I32, SK_IN_ANY = SK_USED,
    SK_OUT_F = SK_IN_F | SK_WRITE, SK_INOUT_F = SK_OUT_F,
    SK_OUT_F32 = SK_IN_F32 | SK_WRITE, SK_OUT_F32_OPT = SK_OUT_F32 | SK_OPT,
    SK_OUT_I32 = SK_IN_I32 | SK_WRITE, SK_OUT_I32_OPT = SK_OUT_I32 | SK_OPT,
    SK_OUT_ANY = SK_USED | SK_WRITE,
};

#define KINDS10_(a, b, c, d, e, f, g, h, i, j) \
    {SK_##a, SK_##b, SK_##c, SK_##d, SK_##e, SK_##f, SK_##g, SK_##h, SK_##i, SK_##j}
static const struct {
    uint16_t flags;
    uint8_t slot[MPKB_NT];
} kinds_of[MPKB_NOPS] = {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) [MPKB_OP_##ID] = {flags, KINDS10_ kinds},
#include "mpk/taskops.def"
#undef MPKB_TASKOP
};

static bool want(tcheck *T, bool cond, const char *what)
{
    if (!cond && T->ok)
        T->ok = fail(T->C, "task %u (%s %s): %s", T->task, mpkb_op_name(T->b->tasks[T->task].op),
                     mpkb_str(T->b, T->b->tasks[T->task].label), what);
    return cond;
}

static bool is_float(const mpkb_tensor *t) { return t && t->dtype != MPKB_I32; }
static bool writable(const mpkb_tensor *t) { return t && (t->space == MPKB_SPACE_ARENA || t->space == MPKB_SPACE_STATE); }
/* i32[n]: the step's tokens or positions, one per row (n = 1 in a decode step) */
static bool is_i32_1(const mpkb_tensor *t) { return t && t->dtype == MPKB_I32 && mpkb_numel(t) == 1; }
static bool is_i32_vec(const mpkb_tensor *t) { return t && t->dtype == MPKB_I32 && t->ndim == 1; }
static uint64_t last_dim(const mpkb_tensor *t) { return t->dims[t->ndim - 1]; }
static bool range_ok(int32_t lo, int32_t hi, uint64_t n) { return lo >= 0 && lo < hi && (uint64_t)hi <= n; }

/* Operand k of the task, NULL if absent (its slot kind allowed that). */
static const mpkb_tensor *opnd(tcheck *T, const mpkb_task *t, int k)
{
    return t->t[k] == MPKB_NONE ? NULL : &T->b->tensors[t->t[k]];
}

/* What the table says of every slot: present or absent, dtype, writable. */
static void check_slots(tcheck *T, const mpkb_task *t)
{
    const uint8_t *kind = kinds_of[t->op].slot;
    char what[160];
    for (int k = 0; k < MPKB_NT && T->ok; k++) {
        const mpkb_tensor *x = opnd(T, t, k);
        const char *name = mpkb_operand_name(t->op, k);
        if (!(kind[k] & SK_USED)) {
            snprintf(what, sizeof what, "operand slot %d is unused by this kind but holds tensor %u", k, t->t[k]);
            want(T, !x, what);
            continue;
        }
        if (!x) {
            snprintf(what, sizeof what, "operand %s is missing", name);
            want(T, kind[k] & SK_OPT, what);
            continue;
        }
        snprintf(what, sizeof what, "operand %s must be %s%s", name,
                 kind[k] & SK_F32 ? "f32" : kind[k] & SK_I32 ? "i32[n]" : kind[k] & SK_FLOAT ? "a float tensor" : "a tensor",
                 kind[k] & SK_WRITE ? " in the arena or the state" : "");
        want(T, (!(kind[k] & SK_FLOAT) || is_float(x)) && (!(kind[k] & SK_F32) || x->dtype == MPKB_F32) &&
                    (!(kind[k] & SK_I32) || is_i32_vec(x)) && (!(kind[k] & SK_WRITE) || writable(x)),
             what);
    }
    if (T->ok && (t->flags & ~kinds_of[t->op].flags)) {
        char names[96];
        snprintf(what, sizeof what, "flags %s are not for this kind", mpkb_flag_names(t->flags & ~kinds_of[t->op].flags, names, sizeof names));
        want(T, false, what);
    }
}

/* ---- each kind's shapes and immediates (slots are checked by then) ------- */

static void check_inputs(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *pos = opnd(T, t, MPKB_SLOT(inputs, pos));
    const mpkb_tensor *tok = opnd(T, t, MPKB_SLOT(inputs, token));
    if (want(T, tok->space == MPKB_SPACE_ARENA && (!pos || pos->space == MPKB_SPACE_ARENA),
             "token and pos must be in the arena"))
        want(T, !pos || pos->dims[0] == tok->dims[0], "token and pos must have one element per row");
}

static void check_embed(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *tab = opnd(T, t, MPKB_SLOT(embed, table)), *o = opnd(T, t, MPKB_SLOT(embed, out));
    const mpkb_tensor *ids = opnd(T, t, MPKB_SLOT(embed, ids));
    want(T, tab->ndim == 2 && mpkb_numel(o) == (uint64_t)ids->dims[0] * tab->dims[1] &&
                range_ok(t->embed.lo, t->embed.hi, tab->dims[1]),
         "table [V, H], ids i32[n], out [n, H] and the column range do not agree");
}

static void check_matvec(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *x = opnd(T, t, MPKB_SLOT(matvec, x)), *w = opnd(T, t, MPKB_SLOT(matvec, w));
    const mpkb_tensor *o = opnd(T, t, MPKB_SLOT(matvec, out)), *r = opnd(T, t, MPKB_SLOT(matvec, residual));
    const mpkb_tensor *p = opnd(T, t, MPKB_SLOT(matvec, pro)), *a = opnd(T, t, MPKB_SLOT(matvec, partials));
    if (!want(T, x->ndim == 2 && w->ndim == 2 && o->ndim == 2, "x, w and out must be matrices") ||
        !want(T, x->dims[1] == w->dims[1] && o->dims[0] == x->dims[0] && o->dims[1] == w->dims[0],
              "shapes x [M, K], w [N, K], out [M, N] do not agree") ||
        !want(T, range_ok(t->matvec.lo, t->matvec.hi, w->dims[0]), "row range outside w") ||
        !want(T, !r == !(t->flags & MPKB_F_EPI_RESIDUAL), "a residual operand goes with the residual flag") ||
        !want(T, !r || mpkb_numel(r) == mpkb_numel(o), "residual must match out") ||
        !want(T, !p == !(t->flags & (MPKB_F_PRO_RMSNORM | MPKB_F_PRO_SILU_MUL)), "a prologue operand goes with a prologue flag") ||
        !want(T, !((t->flags & MPKB_F_PRO_RMSNORM) && (t->flags & MPKB_F_PRO_SILU_MUL)), "two prologues") ||
        !want(T, !a == !(t->flags & MPKB_F_EPI_ARGMAX), "argmax partials go with the argmax flag"))
        return;
    if (t->flags & MPKB_F_PRO_RMSNORM)
        want(T, mpkb_numel(p) == x->dims[1], "norm weight must be [K]");
    if (t->flags & MPKB_F_PRO_SILU_MUL)
        want(T, mpkb_numel(p) == mpkb_numel(x), "silu*mul operand must match x");
    if (t->flags & MPKB_F_EPI_ARGMAX)
        want(T, x->dims[0] == 1 && t->matvec.tile >= 0 && (uint64_t)t->matvec.tile * 2 + 2 <= mpkb_numel(a),
             "argmax partials must have room for this tile, and M must be 1");
}

/* x [M, K], w [N, K], partials f32 [parts, M, N]; rows lo..hi of w; part
 * `part` of K, in whole slabs of 32 (mpkb_kcut). */
static void check_matvec_part(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *x = opnd(T, t, MPKB_SLOT(matvec_part, x)), *w = opnd(T, t, MPKB_SLOT(matvec_part, w));
    const mpkb_tensor *p = opnd(T, t, MPKB_SLOT(matvec_part, partials));
    if (!want(T, x->ndim == 2 && w->ndim == 2 && p->ndim == 3, "x and w must be matrices, partials of rank 3") ||
        !want(T, x->dims[1] == w->dims[1] && p->dims[1] == x->dims[0] && p->dims[2] == w->dims[0],
              "shapes x [M, K], w [N, K], partials [parts, M, N] do not agree") ||
        !want(T, range_ok(t->matvec_part.lo, t->matvec_part.hi, w->dims[0]), "row range outside w"))
        return;
    want(T, x->dims[1] % 32 == 0 && t->matvec_part.parts >= 2 && (uint64_t)t->matvec_part.parts == p->dims[0] &&
                (uint64_t)t->matvec_part.parts <= x->dims[1] / 32 && t->matvec_part.part >= 0 &&
                t->matvec_part.part < t->matvec_part.parts,
         "parts must be partials' first dim, from 2 to K / 32 (K a multiple of 32), and part one of them");
}

/* partials f32 [P, ...] of P x out's elements; a range of out */
static void check_part_sum(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *p = opnd(T, t, MPKB_SLOT(part_sum, partials)), *o = opnd(T, t, MPKB_SLOT(part_sum, out));
    const mpkb_tensor *r = opnd(T, t, MPKB_SLOT(part_sum, residual));
    want(T, !r == !(t->flags & MPKB_F_EPI_RESIDUAL) && (!r || mpkb_numel(r) == mpkb_numel(o)) && p->ndim >= 2 &&
                p->dims[0] >= 1 && mpkb_numel(p) == (uint64_t)p->dims[0] * mpkb_numel(o) &&
                range_ok(t->part_sum.lo, t->part_sum.hi, mpkb_numel(o)),
         "partials [P, ...] must hold P x out's elements, a residual (with its flag) match out, and the range lie "
         "inside out");
}

static void check_attention(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *q = opnd(T, t, MPKB_SLOT(attention, q)), *k = opnd(T, t, MPKB_SLOT(attention, k));
    const mpkb_tensor *v = opnd(T, t, MPKB_SLOT(attention, v)), *c = opnd(T, t, MPKB_SLOT(attention, cache));
    const mpkb_tensor *o = opnd(T, t, MPKB_SLOT(attention, out));
    const mpkb_tensor *qn = opnd(T, t, MPKB_SLOT(attention, q_norm)), *kn = opnd(T, t, MPKB_SLOT(attention, k_norm));
    const mpkb_tensor *qr = opnd(T, t, MPKB_SLOT(attention, q_rope)), *kr = opnd(T, t, MPKB_SLOT(attention, k_rope));
    if (!want(T, q->ndim == 3 && k->ndim == 3 && v->ndim == 3 && c->ndim == 4, "q, k, v need rank 3, cache 4"))
        return;
    uint64_t R = q->dims[0], H = q->dims[1], D = q->dims[2], G = c->dims[1], S = c->dims[2];
    uint64_t B = (uint64_t)t->attention.block, n = (uint64_t)t->attention.chunks;
    const mpkb_tensor *pos = opnd(T, t, MPKB_SLOT(attention, pos));
    if (!want(T, k->dims[0] == R && v->dims[0] == R && pos->dims[0] == R, "q, k, v and pos must have the same rows") ||
        !want(T, k->dims[1] == G && v->dims[1] == G && k->dims[2] == D && v->dims[2] == D &&
                     c->dims[0] == 2 && c->dims[3] == D && G && H % G == 0,
              "q [n, H, D], k and v [n, G, D], cache [2, G, S, D] do not agree") ||
        !want(T, !qn || mpkb_numel(qn) == D, "q norm weight must be [D]") ||
        !want(T, !kn || mpkb_numel(kn) == D, "k norm weight must be [D]") ||
        !want(T, !qr || mpkb_numel(qr) * 2 == D, "q rope table must be f32[D/2]") ||
        !want(T, !kr || mpkb_numel(kr) * 2 == D, "k rope table must be f32[D/2]") ||
        !want(T, t->attention.kv_head >= 0 && (uint64_t)t->attention.kv_head < G && t->attention.block > 0 &&
                     B <= S && t->attention.chunks > 0 && t->attention.chunk >= 0 &&
                     t->attention.chunk < t->attention.chunks,
              "kv head or chunk out of range") ||
        !want(T, B * n >= S ? B * (n - 1) < S : S % (B * n) == 0,
              "chunks do not tile the cache (contiguous chunks, or blocks that divide it evenly)"))
        return;
    if (t->flags & MPKB_F_DIRECT)
        want(T, n == 1 && mpkb_numel(o) == R * H * D, "direct out must be [n, H, D]");
    else
        want(T, o->dtype == MPKB_F32 && o->ndim == 3 && o->dims[0] == R * H && o->dims[1] == n && o->dims[2] == D + 2,
             "partials must be f32 [n * H, chunks, D + 2]");
}

static void check_attn_merge(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *a = opnd(T, t, MPKB_SLOT(attn_merge, partials)), *o = opnd(T, t, MPKB_SLOT(attn_merge, out));
    if (want(T, a->ndim == 3 && o->ndim == 3, "partials f32 [n * H, chunks, D + 2] and out [n, H, D] expected"))
        want(T, a->dims[0] == (uint64_t)o->dims[0] * o->dims[1] && a->dims[2] == (uint64_t)o->dims[2] + 2 && t->attn_merge.chunks > 0 &&
                    a->dims[1] == (uint64_t)t->attn_merge.chunks && t->attn_merge.group > 0 &&
                    t->attn_merge.kv_head >= 0 &&
                    ((uint64_t)t->attn_merge.kv_head + 1) * (uint64_t)t->attn_merge.group <= o->dims[1],
             "merge group outside the partials");
}

static void check_argmax_part(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *x = opnd(T, t, MPKB_SLOT(argmax_part, x)), *a = opnd(T, t, MPKB_SLOT(argmax_part, partials));
    want(T, x->ndim == 2 && x->dims[0] == 1 && range_ok(t->argmax_part.lo, t->argmax_part.hi, x->dims[1]) &&
                t->argmax_part.tile >= 0 && (uint64_t)t->argmax_part.tile * 2 + 2 <= mpkb_numel(a),
         "x [1, N], column range and partials do not agree");
}

static void check_argmax_reduce(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *a = opnd(T, t, MPKB_SLOT(argmax_reduce, partials));
    const mpkb_tensor *o = opnd(T, t, MPKB_SLOT(argmax_reduce, out));
    if (want(T, mpkb_numel(a) % 2 == 0 && mpkb_numel(o) == 1, "partials f32 [tiles, 2] and out i32[1] expected") &&
        (t->flags & MPKB_F_ALL_RANKS))
        want(T, a->space == MPKB_SPACE_ARENA && t->argmax_reduce.cols_per_rank > 0 &&
                    (uint64_t)t->argmax_reduce.cols_per_rank * T->b->meta->tp <= INT32_MAX,
             "partials of every rank must be in the arena, with columns per rank > 0");
}

static void check_allreduce(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *a = opnd(T, t, MPKB_SLOT(allreduce, partial)), *o = opnd(T, t, MPKB_SLOT(allreduce, out));
    const mpkb_tensor *r = opnd(T, t, MPKB_SLOT(allreduce, residual));
    want(T, a->space == MPKB_SPACE_ARENA && mpkb_numel(a) == mpkb_numel(o) && !r == !(t->flags & MPKB_F_EPI_RESIDUAL) &&
                (!r || mpkb_numel(r) == mpkb_numel(o)) && range_ok(t->allreduce.lo, t->allreduce.hi, mpkb_numel(o)),
         "partial f32 in the arena, residual, out and the range do not agree");
}

static void check_rmsnorm(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *x = opnd(T, t, MPKB_SLOT(rmsnorm, x)), *g = opnd(T, t, MPKB_SLOT(rmsnorm, gamma));
    const mpkb_tensor *o = opnd(T, t, MPKB_SLOT(rmsnorm, out));
    want(T, g->ndim == 1 && last_dim(x) == g->dims[0] && mpkb_numel(o) == mpkb_numel(x) &&
                range_ok(t->rmsnorm.lo, t->rmsnorm.hi, mpkb_numel(x) / g->dims[0]),
         "x, weight [D], out and the vector range do not agree");
}

static void check_rope(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *x = opnd(T, t, MPKB_SLOT(rope, x)), *f = opnd(T, t, MPKB_SLOT(rope, inv_freq));
    const mpkb_tensor *o = opnd(T, t, MPKB_SLOT(rope, out));
    const mpkb_tensor *pos = opnd(T, t, MPKB_SLOT(rope, pos));
    want(T, x->ndim == 3 && pos->dims[0] == x->dims[0] && mpkb_numel(f) * 2 == x->dims[2] &&
                mpkb_numel(o) == mpkb_numel(x) && range_ok(t->rope.lo, t->rope.hi, (uint64_t)x->dims[0] * x->dims[1]),
         "x [n, H, D], pos i32[n], inv_freq f32[D/2], out and the head range do not agree");
}

/* add, mul, silu: operands of out's size and a range inside it */
static void check_elementwise(tcheck *T, const mpkb_task *t, const mpkb_tensor *a, const mpkb_tensor *b,
                              const mpkb_tensor *o, int32_t lo, int32_t hi)
{
    want(T, mpkb_numel(a) == mpkb_numel(o) && (!b || mpkb_numel(b) == mpkb_numel(o)) && range_ok(lo, hi, mpkb_numel(o)),
         "operands and range do not agree");
    (void)t;
}

static void check_add(tcheck *T, const mpkb_task *t)
{
    check_elementwise(T, t, opnd(T, t, MPKB_SLOT(add, a)), opnd(T, t, MPKB_SLOT(add, b)),
                      opnd(T, t, MPKB_SLOT(add, out)), t->add.lo, t->add.hi);
}

static void check_mul(tcheck *T, const mpkb_task *t)
{
    check_elementwise(T, t, opnd(T, t, MPKB_SLOT(mul, a)), opnd(T, t, MPKB_SLOT(mul, b)),
                      opnd(T, t, MPKB_SLOT(mul, out)), t->mul.lo, t->mul.hi);
}

static void check_silu(tcheck *T, const mpkb_task *t)
{
    check_elementwise(T, t, opnd(T, t, MPKB_SLOT(silu, x)), NULL, opnd(T, t, MPKB_SLOT(silu, out)), t->silu.lo,
                      t->silu.hi);
}

static void check_copy(tcheck *T, const mpkb_task *t)
{
    const mpkb_tensor *a = opnd(T, t, MPKB_SLOT(copy, src)), *o = opnd(T, t, MPKB_SLOT(copy, dst));
    int64_t rows = t->copy.rows, stride = t->copy.src_stride, len = t->copy.len, off = t->copy.src_off;
    want(T, a->dtype == o->dtype && rows > 0 && len > 0 && stride >= len && off >= 0 &&
                (uint64_t)(off + (rows - 1) * stride + len) <= mpkb_numel(a) && (uint64_t)(rows * len) == mpkb_numel(o),
         "strided copy outside its tensors");
}

static void (*const check_kind[MPKB_NOPS])(tcheck *, const mpkb_task *) = {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) [MPKB_OP_##ID] = check_##name,
#include "mpk/taskops.def"
#undef MPKB_TASKOP
};

static void check_task(ctx *C, const mpkb_blob *b, uint32_t i, bool *ok)
{
    const mpkb_task *t = &b->tasks[i];
    tcheck T = {C, b, i, true};
    if (t->op >= MPKB_NOPS || t->label >= b->strings_size) {
        *ok = fail(C, "task %u: unknown op %u or bad label", i, t->op);
        return;
    }
    for (int k = 0; k < MPKB_NT; k++)
        if (t->t[k] != MPKB_NONE && t->t[k] >= b->ntensors) {
            *ok = fail(C, "task %u: operand %d is tensor %u of %u", i, k, t->t[k], b->ntensors);
            return;
        }
    check_slots(&T, t);
    if (T.ok)
        check_kind[t->op](&T, t);
    if (T.ok && t->dep >= b->nevents)
        T.ok = fail(C, "task %u waits for event %u of %u", i, t->dep, b->nevents);
    if (T.ok && (t->trig_first > b->ntriggers || b->ntriggers - t->trig_first < t->trig_count))
        T.ok = fail(C, "task %u: triggers %u+%u outside TRIGGERS", i, t->trig_first, t->trig_count);
    if (!T.ok)
        *ok = false;
}

/* Events and queues: a step terminates, statically and dynamically. */
static bool graph(ctx *C, const mpkb_blob *b)
{
    const mpkb_meta *m = b->meta;
    bool ok = true;
    uint32_t *count = calloc(b->nevents + 1, sizeof *count);
    uint32_t *done_by = calloc(b->nevents + 1, sizeof *done_by);
    uint32_t *stack = malloc(sizeof *stack * (b->ntasks + 1));
    uint8_t *seen = calloc(b->ntasks + 1, 1);
    uint32_t *pos = malloc(sizeof *pos * ((size_t)b->nqueues + 1)); /* per queue */
    if (!count || !done_by || !stack || !seen || !pos) {
        ok = fail(C, "out of memory checking the task graph");
        goto out;
    }
    if (m->step_event >= b->nevents || b->events[m->step_event].lag != 1) {
        ok = fail(C, "the step event %u is missing or does not have lag 1", m->step_event);
        goto out;
    }
    uint64_t covered = 0;
    for (uint32_t e = 0; e < b->nevents; e++) {
        const mpkb_event *ev = &b->events[e];
        if (ev->lag > 1 || (ev->lag == 1 && e != m->step_event) || ev->first_task > b->ntasks ||
            b->ntasks - ev->first_task < ev->ntasks) {
            ok = fail(C, "event %u: bad lag %u or task range %u+%u", e, ev->lag, ev->first_task, ev->ntasks);
            goto out;
        }
        if ((ev->flags & ~MPKB_EV_ALL_RANKS) || (ev->flags && e == m->step_event) ||
            ((uint64_t)ev->triggers * m->tp > UINT32_MAX)) {
            ok = fail(C, "event %u: bad flags %#x", e, ev->flags);
            goto out;
        }
        covered += ev->ntasks;
    }
    for (uint32_t t = 0; t < b->ntasks; t++) {
        const mpkb_task *x = &b->tasks[t];
        const mpkb_event *ev = &b->events[x->dep];
        if (t < ev->first_task || t >= ev->first_task + ev->ntasks) {
            ok = fail(C, "task %u waits for event %u but lies outside its task range", t, x->dep);
            goto out;
        }
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = b->triggers[x->trig_first + k];
            if (e >= b->nevents) {
                ok = fail(C, "task %u signals event %u of %u", t, e, b->nevents);
                goto out;
            }
            if (done_by[e] == t + 1) { /* done_by: last task that signalled e, + 1 */
                ok = fail(C, "task %u signals event %u twice", t, e);
                goto out;
            }
            done_by[e] = t + 1;
            count[e]++;
        }
    }
    if (covered != b->ntasks) {
        ok = fail(C, "the events' task ranges overlap");
        goto out;
    }
    for (uint32_t e = 0; e < b->nevents; e++)
        if (count[e] != b->events[e].triggers) {
            ok = fail(C, "event %u expects %u producers but %u tasks signal it", e, b->events[e].triggers, count[e]);
            goto out;
        }
    /* Dynamic order (Kahn): the step event has fired at a step's start. */
    memset(done_by, 0, sizeof *done_by * b->nevents);
    uint32_t sp = 0, ran = 0;
    const mpkb_event *se = &b->events[m->step_event];
    for (uint32_t t = se->first_task; t < se->first_task + se->ntasks; t++)
        stack[sp++] = t;
    for (uint32_t e = 0; e < b->nevents; e++)
        if (!b->events[e].lag && b->events[e].triggers == 0)
            for (uint32_t t = b->events[e].first_task; t < b->events[e].first_task + b->events[e].ntasks; t++)
                stack[sp++] = t;
    while (sp) {
        uint32_t t = stack[--sp];
        ran++;
        const mpkb_task *x = &b->tasks[t];
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = b->triggers[x->trig_first + k];
            if (b->events[e].lag || ++done_by[e] != b->events[e].triggers)
                continue;
            for (uint32_t c = b->events[e].first_task; c < b->events[e].first_task + b->events[e].ntasks; c++)
                stack[sp++] = c;
        }
    }
    if (ran != b->ntasks) {
        ok = fail(C, "%u of %u tasks can never run: the events form a cycle or wait for nothing that fires",
                  b->ntasks - ran, b->ntasks);
        goto out;
    }
    /* Static order: queues partition the tasks, and running each queue in
     * order, a worker blocked on an event until it fires, finishes. */
    if (b->nqueues != m->workers || m->workers == 0 || b->nqtasks != b->ntasks) {
        ok = fail(C, "%u queues for %u workers, holding %u of %u tasks", b->nqueues, m->workers, b->nqtasks,
                  b->ntasks);
        goto out;
    }
    for (uint32_t q = 0; q < b->nqueues; q++) {
        const mpkb_queue *Q = &b->queues[q];
        if (Q->first > b->nqtasks || b->nqtasks - Q->first < Q->count) {
            ok = fail(C, "queue %u: range %u+%u outside QTASKS", q, Q->first, Q->count);
            goto out;
        }
        for (uint32_t k = 0; k < Q->count; k++) {
            uint32_t t = b->qtasks[Q->first + k];
            if (t >= b->ntasks || seen[t]) {
                ok = fail(C, "queue %u: task %u is out of range or queued twice", q, t);
                goto out;
            }
            seen[t] = 1;
        }
    }
    /* simulate: pos[q] is the next task of queue q. A queue whose head
     * waits for an unfired event is parked on that event's list and
     * revisited only when it fires: linear in tasks + queues. */
    memset(done_by, 0, sizeof *done_by * b->nevents);
    uint32_t *park = malloc(sizeof *park * ((size_t)b->nevents + 1)); /* first parked queue + 1 */
    uint32_t *next = malloc(sizeof *next * ((size_t)b->nqueues + 1));
    uint32_t *work = malloc(sizeof *work * ((size_t)b->nqueues + 1));
    uint32_t finished = 0, nw = 0;
    if (!park || !next || !work) {
        free(park), free(next), free(work);
        ok = fail(C, "out of memory checking the queues");
        goto out;
    }
    memset(park, 0, sizeof *park * b->nevents);
    for (uint32_t q = 0; q < b->nqueues; q++)
        pos[q] = 0, work[nw++] = q;
    while (nw) {
        uint32_t q = work[--nw];
        const mpkb_queue *Q = &b->queues[q];
        while (pos[q] < Q->count) {
            const mpkb_task *x = &b->tasks[b->qtasks[Q->first + pos[q]]];
            const mpkb_event *ev = &b->events[x->dep];
            if (!ev->lag && done_by[x->dep] < ev->triggers) {
                next[q] = park[x->dep];
                park[x->dep] = q + 1;
                break;
            }
            for (uint32_t k = 0; k < x->trig_count; k++) {
                uint32_t e = b->triggers[x->trig_first + k];
                if (++done_by[e] == b->events[e].triggers && !b->events[e].lag)
                    for (uint32_t w = park[e]; w; w = next[w - 1])
                        work[nw++] = w - 1;
                if (done_by[e] == b->events[e].triggers)
                    park[e] = 0;
            }
            pos[q]++;
            finished++;
        }
    }
    free(park);
    free(next);
    free(work);
    if (finished != b->ntasks)
        ok = fail(C, "the queues deadlock: run in order, %u of %u tasks never start", b->ntasks - finished,
                  b->ntasks);
out:
    free(count);
    free(done_by);
    free(stack);
    free(seen);
    free(pos);
    return ok;
}

/* One task graph: its metadata, every task, its events and queues. */
static bool validate_graph(ctx *C, const mpkb_blob *b)
{
    const mpkb_meta *m = b->meta;
    if (m->name >= b->strings_size)
        return fail(C, "model name outside STRINGS");
    if (m->tp < 1 || m->tp > MPKB_MAX_TP)
        return fail(C, "metadata: %u ranks (1 to %d)", m->tp, MPKB_MAX_TP);
    const mpkb_tensor *tok = m->token_input < b->ntensors ? &b->tensors[m->token_input] : NULL;
    const mpkb_tensor *nxt = m->next_output < b->ntensors ? &b->tensors[m->next_output] : NULL;
    const mpkb_tensor *lg = m->logits < b->ntensors ? &b->tensors[m->logits] : NULL;
    if (!tok || !is_i32_vec(tok) || tok->space != MPKB_SPACE_ARENA || !nxt || !is_i32_1(nxt) ||
        nxt->space != MPKB_SPACE_ARENA || !lg || !is_float(lg) || lg->space != MPKB_SPACE_ARENA ||
        mpkb_numel(lg) * m->tp != m->vocab || m->vocab == 0)
        return fail(C, "metadata: token, next-token and logits tensors missing or of the wrong kind");
    if (m->pos_input != MPKB_NONE &&
        (m->pos_input >= b->ntensors || !is_i32_vec(&b->tensors[m->pos_input]) ||
         b->tensors[m->pos_input].dims[0] != tok->dims[0] ||
         b->tensors[m->pos_input].space != MPKB_SPACE_ARENA))
        return fail(C, "metadata: the position tensor is of the wrong kind");
    if (m->neos > MPKB_MAX_EOS || m->max_seq == 0)
        return fail(C, "metadata: %u eos ids (at most %d), max_seq %u", m->neos, MPKB_MAX_EOS, m->max_seq);
    for (uint32_t i = 0; i < m->neos; i++)
        if (m->eos[i] < 0 || (uint32_t)m->eos[i] >= m->vocab)
            return fail(C, "metadata: eos id %d outside the vocabulary (%u)", m->eos[i], m->vocab);
    if (b->ntasks == 0 || b->nevents == 0)
        return fail(C, "no tasks");
    if (b->ntasks > MPKB_MAX_TASKS || b->nevents > b->ntasks + 1)
        return fail(C, "%u tasks and %u events: at most %u tasks, and an event more than tasks", b->ntasks,
                    b->nevents, MPKB_MAX_TASKS);
    bool ok = true;
    for (uint32_t i = 0; i < b->ntasks && ok; i++)
        check_task(C, b, i, &ok);
    return ok && graph(C, b);
}

static bool validate(ctx *C, mpkb_blob *b)
{
    if (!sections(C, b) || !tensors(C, b))
        return false;
    const mpkb_meta *m = b->meta;
    if (!validate_graph(C, b))
        return false;
    if (b->tensors[m->token_input].dims[0] != 1)
        return fail(C, "metadata: the decode graph's token must be i32[1], not i32[%u]",
                    b->tensors[m->token_input].dims[0]);
    const mpkb_blob *c = b->chunk;
    if (!c)
        return true;
    /* the chunk graph shares the tensors, so it must agree with META on
     * everything they and the executors size */
    const mpkb_meta *cm = c->meta;
    if (cm->chunk != m->chunk || cm->workers != m->workers || cm->vocab != m->vocab || cm->max_seq != m->max_seq ||
        cm->arena_size != m->arena_size || cm->state_size != m->state_size || cm->weight_size != m->weight_size ||
        cm->tp != m->tp || cm->neos != m->neos || memcmp(cm->eos, m->eos, sizeof m->eos) != 0)
        return fail(C, "the chunk graph's metadata (CMETA) disagrees with META");
    ctx CC = {C->name, C->err};
    char name[512];
    snprintf(name, sizeof name, "%s: chunk graph", C->name);
    CC.name = name;
    if (!validate_graph(&CC, c))
        return false;
    if (c->tensors[cm->token_input].dims[0] != m->chunk)
        return fail(&CC, "metadata: the token must be i32[%u] (the chunk), not i32[%u]", m->chunk,
                    c->tensors[cm->token_input].dims[0]);
    return true;
}

bool mpkb_parse(mpkb_blob *b, const void *data, size_t size, const char *name, FILE *err)
{
    memset(b, 0, sizeof *b);
    b->data = data;
    b->size = size;
    ctx C = {name, err};
    if (((uintptr_t)data & 7) != 0)
        return fail(&C, "internal: blob buffer not 8-byte aligned");
    if (!validate(&C, b)) {
        free((void *)b->chunk);
        memset(b, 0, sizeof *b);
        return false;
    }
    return true;
}

bool mpkb_open(mpkb_blob *b, const char *path, FILE *err)
{
    memset(b, 0, sizeof *b);
    ctx C = {path, err};
    /* O_NONBLOCK: a FIFO named as the blob must not hang the open; only a
     * regular file is read after it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fail(&C, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(&C, "not a regular file");
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return fail(&C, "cannot open: %s", strerror(errno));
    }
    if ((uint64_t)st.st_size > MPKB_MAX_FILE) {
        fclose(f);
        return fail(&C, "%lld bytes is too large for a blob", (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    void *buf = malloc(n ? n : 1);
    if (!buf || fread(buf, 1, n, f) != n) {
        free(buf);
        fclose(f);
        return fail(&C, "cannot read: %s", errno ? strerror(errno) : "short read");
    }
    fclose(f);
    if (!mpkb_parse(b, buf, n, path, err)) {
        free(buf);
        return false;
    }
    b->owned = buf;
    return true;
}

void mpkb_close(mpkb_blob *b)
{
    free((void *)b->chunk);
    free(b->owned);
    memset(b, 0, sizeof *b);
}
