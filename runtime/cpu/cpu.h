/*
 * cpu.h - what the CPU reference executor's two files share: exec.c (the
 * machine: ranks, events, the step loop) and ops.c (op_NAME for every row
 * of mpk/taskops.def).
 *
 *   elements   the one place that converts between a dtype's bytes and
 *              fp32: bf16 (round to nearest even, NaN kept quiet), f16 (by
 *              hand: not every C compiler has _Float16), f32, i32
 *   cpu_rank   one rank's memory: weights, arena, state, event counters
 *   cpu_ctx    what a task sees while it runs: the blob, its rank (and
 *              every rank, for the ops that read them), the step's inputs,
 *              scratch buffers
 *
 * Elements are loaded and stored through memcpy, never through a cast
 * pointer: weight data comes straight from the mapped safetensors files
 * and may be unaligned. A value is rounded only by st() (man 5 mpk-blob,
 * "Numerics"), so an op keeps everything it computes in fp32 until it
 * stores it.
 */
#ifndef MPK_RUNTIME_CPU_H
#define MPK_RUNTIME_CPU_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mpk/blob.h"

/* ---- elements ------------------------------------------------------------ */

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f)
        u = sign | 0x7f800000u | (m << 13); /* inf, nan */
    else if (e)
        u = sign | ((e + 112) << 23) | (m << 13);
    else if (!m)
        u = sign;
    else { /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400))
            m <<= 1, e--;
        u = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00; /* nan */
    if (a >= 0x477ff000u)
        return sign | 0x7c00; /* overflow (and values rounding up to it) */
    if (a < 0x38800000u) {   /* subnormal or zero: round at the right bit */
        if (a < 0x33000000u)
            return sign;
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000, shift = 126 - e;
        uint32_t half = m >> shift, rest = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        half += rest > mid || (rest == mid && (half & 1));
        return sign | (uint16_t)half;
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1) - (112u << 23);
    return sign | (uint16_t)(r >> 13);
}

/* Element i of an array of dtype dt at p, as fp32. */
static inline float ld(uint32_t dt, const uint8_t *p, uint64_t i)
{
    switch (dt) {
    case MPKB_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return bf16_to_f32(h);
    }
    case MPKB_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return f16_to_f32(h);
    }
    case MPKB_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    default: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return (float)v;
    }
    }
}

/* Store v as element i, rounded to dtype dt: the only rounding point. */
static inline void st(uint32_t dt, uint8_t *p, uint64_t i, float v)
{
    switch (dt) {
    case MPKB_BF16: {
        uint16_t h = f32_to_bf16(v);
        memcpy(p + 2 * i, &h, 2);
        break;
    }
    case MPKB_F16: {
        uint16_t h = f32_to_f16(v);
        memcpy(p + 2 * i, &h, 2);
        break;
    }
    case MPKB_F32: memcpy(p + 4 * i, &v, 4); break;
    default: {
        int32_t x = (int32_t)v;
        memcpy(p + 4 * i, &x, 4);
    }
    }
}

static inline int32_t ld_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void st_i32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); }

/* ---- the machine, as a task sees it -------------------------------------- */

typedef struct {
    const void *const *weights; /* per tensor: loaded bytes (base tensors) */
    uint8_t *arena;             /* meta.arena_size bytes, NaN before written */
    uint8_t *state;             /* meta.state_size bytes, zeroed at start */
    uint64_t *count;            /* [nevents] event counters, monotonic */
    uint64_t *ccount;           /* the chunk graph's, or NULL */
} cpu_rank;

typedef struct {
    const mpkb_blob *b;
    const cpu_rank *rank;       /* the rank running the task */
    const cpu_rank *ranks;      /* all nranks (meta.tp): allreduce, argmax_reduce */
    uint32_t nranks;
    const int32_t *tokens;      /* this step's input tokens, one per row */
    const int32_t *positions;   /* and their positions */
    uint32_t nrows;             /* 1 in a decode step, the chunk in a chunk step */
    FILE *err;                  /* runtime errors, one line each */
    /* Scratch, sized by mpk_cpu_new from the blob so no op allocates: */
    float *scratch;             /* [2 * (max dim + 2)]: a matvec input row,
                                   attention's q or k and its accumulator */
    float *scores;              /* [max cache positions + 1]: attention scores */
    uint64_t *rows;             /* [max cache positions + 1]: their cache rows */
} cpu_ctx;

static inline const mpkb_tensor *tn(const cpu_ctx *c, uint32_t ti) { return &c->b->tensors[ti]; }
static inline uint32_t dt(const cpu_ctx *c, uint32_t ti) { return c->b->tensors[ti].dtype; }

/* Tensor ti's bytes on rank R. The reader has checked that they lie in
 * their space, so no op checks again. */
static inline uint8_t *ptr_on(const cpu_ctx *c, const cpu_rank *R, uint32_t ti)
{
    const mpkb_tensor *t = &c->b->tensors[ti];
    switch (t->space) {
    case MPKB_SPACE_ARENA: return R->arena + t->offset;
    case MPKB_SPACE_STATE: return R->state + t->offset;
    case MPKB_SPACE_CONST: return (uint8_t *)c->b->consts + t->offset;
    default: return (uint8_t *)R->weights[t->base] + t->offset;
    }
}

/* Tensor ti's bytes on the running rank. */
static inline uint8_t *ptr(const cpu_ctx *c, uint32_t ti) { return ptr_on(c, c->rank, ti); }

/* ---- ops.c ------------------------------------------------------------------ */

/* Run task t (of any kind) on c->rank. Reports a runtime error (a token or
 * position out of range) on c->err and returns false. */
bool mpk_cpu_run_task(const cpu_ctx *c, const mpkb_task *t);

#endif
