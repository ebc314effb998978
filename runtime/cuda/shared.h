/*
 * shared.h - what the GPU executor's files share: the kernel's parameters,
 * the records it leaves for the host, and the three entry points from the
 * kernel's translation unit (kernel.cu) into the host side (host.cu,
 * trace.c). Plain C, so trace.c compiles with the C compiler.
 *
 * The files of runtime/cuda:
 *   shared.h         this
 *   common.cuh       device helpers: loads and stores by dtype, reductions,
 *                    cp.async, raising an error
 *   NAME.cuh         the task kinds: op_NAME runs one task on a worker,
 *                    smem_NAME says what it needs of one (matvec.cuh,
 *                    attention.cuh, merge.cuh, argmax.cuh, elementwise.cuh)
 *   sample.cuh       sampling (mpk/sample.h), for argmax.cuh
 *   kernel.cu        the persistent kernel: schedules, events, dispatch
 *   host.cu          the host side: load, launch, stream tokens, errors
 *   trace.c          --trace: the Chrome trace JSON
 */
#ifndef MPK_CUDA_SHARED_H
#define MPK_CUDA_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mpk/blob.h"
#include "mpk/sample.h"

#define MPK_NT 512 /* threads per worker CTA */

enum { ERR_NONE = 0, ERR_STALL, ERR_TOKEN, ERR_POS, ERR_LOGITS, ERR_UNSUPPORTED };

/* Mapped pinned host memory: the device writes, the host polls. */
typedef struct {
    volatile int32_t made;        /* tokens generated so far */
    volatile int32_t steps;       /* steps finished */
    volatile int32_t error;       /* ERR_* of the first error */
    int32_t err_step, err_task, err_event, err_value;
    uint32_t err_count, err_expected;
    uint64_t err_waited_ns;
} host_status;

typedef struct {
    unsigned long long ticket;    /* dynamic: next (step, task) to hand out */
    int32_t stop_step;            /* the last step to run */
    int32_t abort;                /* a worker found an error: all stop */
    int32_t error_claimed;
} dev_ctl;

/* One task run: arrive, the worker reached it (before its wait); start,
 * its event seen; mark, a point inside the op (matvec: its input and
 * weights in place; 0: the op has none); ran, the op returned; end, its
 * triggers signalled. */
typedef struct {
    uint64_t arrive, start, mark, ran, end;
    uint32_t task, step, sm, graph; /* step: the graph's own; graph 1: the chunk graph */
} trace_rec;

#define PREFETCH_MAX (256u << 10) /* bytes of a task's weights past its slot pulled into L2 while it waits */

/* What the weight ring copies for a task (kernel.cu, ring_put), decoded
 * on the host so that issuing the copy is one load: bytes from src into
 * a slot (rows weight rows; 0: nothing to copy), then the next rest bytes
 * pulled toward L2. */
typedef struct {
    const uint8_t *src;
    uint32_t bytes, rows, rest, pad;
    uint64_t pad2;
} kcopy;

/* One task graph of the blob: the decode graph, or the chunk graph. */
typedef struct {
    const mpkb_task *tasks;
    const kcopy *copies;          /* per task: what the ring copies for it (sm_90) */
    const mpkb_event *events;
    const uint32_t *triggers;
    unsigned *count;              /* event counters */
    const uint32_t *cta_tasks;    /* static: each CTA's merged queue */
    const uint32_t *cta_first;    /* static: CTA c runs cta_tasks[cta_first[c] .. cta_first[c + 1]) */
    uint8_t *next_out, *logits;
    uint32_t ntasks, step_event;
} kgraph;

/* A launch runs nchunk chunk steps (the prompt, chunk tokens a step; 0 when
 * the blob has no chunk graph or the prompt goes a token a step), then the
 * decode steps: global step gs is chunk step gs of gr[1] while gs < nchunk,
 * else decode step gs - nchunk of gr[0]. */
typedef struct {
    kgraph gr[2];                 /* [0] decode, [1] chunk */
    uint32_t nchunk, chunk;
    const mpkb_tensor *tensors;   /* the one table both graphs use */
    uint8_t *const *tp;           /* device pointer of every tensor */
    const int32_t *prompt;
    uint32_t logits_dtype;        /* both graphs' logits (the host checks they agree) */
    float *dump;                  /* [steps][vocab] or NULL */
    dev_ctl *ctl;
    host_status *hs;              /* mapped */
    int32_t *htokens;             /* mapped: the generated ids */
    uint64_t *htimes;             /* mapped: %globaltimer when each was made */
    trace_rec *trace;
    unsigned *trace_n;
    uint32_t trace_cap;
    uint32_t np, ntok, max_steps, vocab, neos; /* max_steps: global steps */
    uint32_t dump_first;          /* the global step whose logits are dump[0] */
    int32_t eos[MPKB_MAX_EOS];
    int32_t schedule;             /* mpk_schedule */
    int32_t stall_task;           /* test only: never signalled; -1 none */
    uint64_t watchdog_ns;
    uint64_t smem;                /* dynamic shared memory bytes */
    uint32_t ring_off;            /* the weight ring: after the bytes every task needs */
    uint32_t ring_slot;           /* bytes per slot (two slots; one below sm_90) */
    int32_t sampling;             /* draw the tokens with sampler (sample.cuh), not greedily */
    int32_t prefetch;             /* pull a task's descriptors into L1 while it waits (kernel.cu) */
    int32_t l2_ahead;             /* static: pull the weights of the task this many ahead toward L2 (0: none) */
    mpk_sampler sampler;
} kparams;

#ifdef __cplusplus
extern "C" {
#endif

/* The kernel, for cudaLaunchCooperativeKernel and the cudaFunc* calls:
 * __global__ void mpk_kernel(kparams). */
const void *mpk_kernel_entry(void);

/* The dynamic shared memory task `task` of b needs on a worker (bytes), from
 * its kind's smem_NAME; false, with the reason in why, if the kernel cannot
 * run it at all. */
bool mpk_kernel_task_smem(const mpkb_blob *b, uint32_t task, size_t *bytes, char *why, size_t n);

/* Write n task records as a Chrome / Perfetto trace to path (one track per
 * SM of sms); reports to err and returns false when it cannot. */
bool mpk_write_trace(const mpkb_blob *b, const trace_rec *r, unsigned n, int sms, const char *path, FILE *err);

#ifdef __cplusplus
}
#endif

#endif
