/*
 * runtime.h - the public header of mpk's runtime layer.
 *
 *   weights.c  safetensors checkpoints: find the files (a sharded index),
 *              bind the blob's weights; safetensors.c maps and checks one file
 *   cpu/       the CPU reference executor: exec.c (ranks, events, the step
 *              loop, binding weights), ops.c (op_NAME per task kind),
 *              sample.c (sampling, mpk/sample.h), cpu.h
 *   cuda/      the GPU executor: one persistent CUDA kernel per generation
 *              (its files: cuda/shared.h; gpu_none.c stands in where mpk-run
 *              is built without CUDA)
 *
 * The runtime includes the blob format (include/mpk/blob.h) and nothing of
 * the compiler. Every function that reads a file reports problems as
 * "FILE: what" lines on the given stream and returns failure; nothing here
 * exits or aborts on bad input.
 */
#ifndef MPK_RUNTIME_H
#define MPK_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mpk/blob.h"
#include "mpk/sample.h"

/* ---- weights.c ------------------------------------------------------------ */

/* One tensor a model needs. name, dtype, ndim and dims are inputs; data is
 * set by mpk_weights_open to the tensor's bytes in the mapped file. */
typedef struct {
    const char *name;
    uint32_t dtype;                 /* mpkb_dtype */
    uint32_t ndim;
    uint64_t dims[MPKB_MAX_DIMS];
    const void *data;               /* out */
    uint64_t nbytes;                /* out: numel * dtype size */
} mpk_weight_req;

typedef struct mpk_weights mpk_weights;

/* PATH is a .safetensors file, or a directory holding model.safetensors or a
 * sharded model.safetensors.index.json. Maps the files (read-only) and binds
 * every request: the tensor must exist, with the same dtype and shape, and
 * lie inside its file. Every problem is reported, by tensor name, before it
 * returns NULL; on success all requests have data set. */
mpk_weights *mpk_weights_open(const char *path, mpk_weight_req *reqs, size_t nreqs, FILE *err);
/* A buffer of n bytes that lives until mpk_weights_close (a rank's part
 * of a split weight); NULL when out of memory. */
void *mpk_weights_alloc(mpk_weights *w, size_t n);
/* Total bytes mapped for the requested tensors. */
uint64_t mpk_weights_bytes(const mpk_weights *w);
/* The path of the i-th file w has open (the index, if any, is not one), or
 * NULL past the last: what an output must not overwrite. */
const char *mpk_weights_file(const mpk_weights *w, size_t i);
void mpk_weights_close(mpk_weights *w);

/* ---- cpu/sample.c ---------------------------------------------------------- */

/* The bytes of scratch mpk_sample needs for a vocabulary of vocab. */
size_t mpk_sample_scratch(uint32_t vocab);
/* The token that sampler s draws from these logits at position counter (the
 * step's input token's), as mpk/sample.h specifies; with a greedy s the
 * argmax of the finite logits (ties to the lowest index). -1 when no logit
 * (key) is finite. scratch: mpk_sample_scratch(vocab) bytes, aligned for a
 * float. */
int32_t mpk_sample(const float *logits, uint32_t vocab, const mpk_sampler *s, uint32_t counter, void *scratch);

/* ---- cpu/exec.c ------------------------------------------------------------- */

typedef struct mpk_cpu mpk_cpu;

/* An executor for blob b, running its meta.tp ranks; weights[r][i] holds
 * rank r's bytes of every loaded weight tensor i (base == i), as bound by
 * mpk_bind_weights. seed 0 runs the ready tasks in the order they became
 * ready; any other seed in a random order (over all ranks' tasks). */
mpk_cpu *mpk_cpu_new(const mpkb_blob *b, const void *const *const *weights, uint64_t seed, FILE *err);
/* One decode step with this token (its position is the count of positions
 * so far: prompt tokens and decode steps).
 * Sets *next to the next token: the blob's greedy argmax when s is NULL or
 * greedy (mpk_sampler_greedy), else drawn by mpk_sample from all ranks'
 * logits with the step's position as the counter. If logits is not NULL,
 * copies meta.vocab logits there as fp32 (every rank's part, in rank
 * order). Reports and returns false on a runtime error (a token or position
 * out of range, a stall, no finite logit). */
bool mpk_cpu_step(mpk_cpu *M, int32_t token, bool random_order, const mpk_sampler *s, int32_t *next,
                  float *logits);
/* The n > 0 prompt tokens from the current position on: in chunk steps of
 * the blob's chunk graph when it has one (ceil(n / chunk) steps), else a
 * decode step each. *next and logits as for mpk_cpu_step, from the last
 * token's logits (the only ones a chunk step computes). */
bool mpk_cpu_prefill(mpk_cpu *M, const int32_t *tokens, uint32_t n, bool random_order, const mpk_sampler *s,
                     int32_t *next, float *logits);
void mpk_cpu_free(mpk_cpu *M);

/* Bind a blob's weights to a checkpoint for rank `rank` of meta.tp: the
 * table for mpk_cpu_new (NULL on failure, reported). A split weight is
 * checked against the whole checkpoint tensor and its part copied out.
 * Free the table with free() and w with mpk_weights_close. */
const void **mpk_bind_weights(const mpkb_blob *b, const char *path, uint32_t rank, mpk_weights **w,
                              FILE *err);

/* ---- cuda/host.cu ------------------------------------------------------------- */

/* AUTO: static when every graph was placed for as many workers as the GPU
 * has SMs (the placement is then the GPU's), else dynamic. */
typedef enum { MPK_SCHED_DYNAMIC = 0, MPK_SCHED_STATIC = 1, MPK_SCHED_AUTO = 2 } mpk_schedule;

typedef struct {
    int32_t schedule;       /* mpk_schedule; mpk_gpu_new resolves AUTO */
    uint32_t watchdog_ms;   /* a wait longer than this is a stall: report and stop */
    const char *trace;      /* write a Chrome trace JSON here, or NULL */
    int32_t test_stall;     /* test only: this task never signals (-1: none) */
    bool progress;          /* a progress bar on err while loading weights */
    bool no_chunk;          /* the prompt a token a step even when the blob has a chunk graph */
} mpk_gpu_opts;

typedef struct {
    double ttft_ms;         /* launch to the first generated token on the host */
    double per_token_ms;    /* median gap between generated tokens (device clock) */
    double mean_token_ms;   /* their mean */
    double p99_token_ms;    /* their 99th percentile */
    double wall_ms;         /* the launch, start to end */
    uint32_t steps, made;   /* steps run (chunk steps too), tokens generated */
    uint32_t chunk_steps;   /* the prompt's chunk steps (0: a token a step) */
    uint32_t logit_rows;    /* rows written to mpk_gpu_generate's logits */
    int sms;                /* worker CTAs */
    int32_t schedule;       /* the schedule that ran (AUTO resolved) */
    uint32_t trace_events;
} mpk_gpu_stats;

typedef struct mpk_gpu mpk_gpu;
typedef void (*mpk_token_fn)(void *ctx, int32_t token);

/* Put blob b and its weights (as for mpk_cpu_new) on the GPU. Reports and
 * returns NULL when there is no usable GPU, the blob needs what the kernel
 * cannot do, or a CUDA call fails. */
mpk_gpu *mpk_gpu_new(const mpkb_blob *b, const void *const *weights, const mpk_gpu_opts *o, FILE *err);
/* Milliseconds mpk_gpu_new took (mostly the weights), and their bytes. */
double mpk_gpu_load_ms(const mpk_gpu *G, uint64_t *bytes);
/* One launch: the np prompt tokens (in chunk steps when the blob has a
 * chunk graph and o->no_chunk is not set), then up to ntok ones (fewer at
 * an end-of-sequence id) chosen by sampler s (NULL or greedy: the argmax;
 * see mpk/sample.h), each passed to on_token as it arrives. logits, if not
 * NULL, receives st->logit_rows x vocab floats, at most (np + ntok - 1):
 * the logits of every step run, the prompt's a row a position, or, in
 * chunk steps, only of its last position. The blob's max_seq must hold
 * np + ntok - 1 positions. */
bool mpk_gpu_generate(mpk_gpu *G, const int32_t *prompt, uint32_t np, uint32_t ntok, const mpk_sampler *s,
                      float *logits, mpk_token_fn on_token, void *ctx, mpk_gpu_stats *st);
void mpk_gpu_free(mpk_gpu *G);

#endif
