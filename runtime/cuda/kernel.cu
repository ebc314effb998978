/*
 * kernel.cu - the GPU executor's persistent kernel: one launch runs a blob
 * for every decode step of a generation, prompt and continuation.
 *
 * One CTA of NT threads per SM, launched cooperatively so every CTA is
 * resident and spin-waits cannot deadlock. Each CTA is a worker:
 *
 *   dynamic  tasks are handed out in (step, task index) order from one
 *            global ticket counter: a worker takes the next ticket, starts
 *            pulling the task's weights into L2, waits for the task's
 *            event, runs it and signals its triggers. Tickets are taken in
 *            a topological order, so the oldest unfinished ticket can
 *            always run: no deadlock however the tickets fall.
 *   static   worker w runs the blob's placed queues w, w + G, ... merged in
 *            task order (G = CTAs), step after step, waiting on each
 *            task's event itself.
 *
 * Events are monotonic counters in global memory: in step s event e has
 * fired once count[e] >= (s + 1 - lag) * triggers. A producer publishes
 * with __syncthreads + a gpu-scope release add per trigger, from the lanes
 * of warp 0 at once (red.release.gpu; a __threadfence + atomicAdd cost
 * 0.03-0.16 ms a token on the 0.6B shape, bench/NOTES.md); a consumer's
 * thread 0 spins with ld.acquire.gpu and releases its CTA with
 * __syncthreads. While it spins, warp 1 pulls the task's descriptors into
 * L1 (and with MPK_GPU_L2_AHEAD a later task's weights toward L2) and, for
 * a decode attention task, warps 2 on copy in the K and V rows of earlier
 * steps (attention.cuh). Everything a
 * task reads that another task wrote (arena, state) is loaded with
 * ld.global.cg, so no SM can read a stale L1 line;
 * weights and constants, never written, go through the read-only path.
 *
 * Numerics are the CPU executor's (man 5 mpk-blob): fp32 arithmetic,
 * values rounded to a tensor's dtype only where a task stores them.
 * Summation orders differ from the CPU's, so results agree to rounding.
 *
 * Steps end on the device: the ARGMAX_REDUCE task writes the greedy token,
 * streams it (and a %globaltimer stamp) to mapped pinned host memory and,
 * at an end-of-sequence id or the last token asked for, sets the last step
 * to run; the INPUTS task of the next step feeds it back. Every wait is
 * bounded by a watchdog that reports the stalled step, task and event
 * instead of hanging.
 *
 * The task kinds live in NAME.cuh (see common.cuh for their contract) and
 * are dispatched from mpk/taskops.def; the host side is host.cu. The
 * kernel is one translation unit: this file includes the op files.
 */
#include <stdio.h>

extern "C" {
#include "runtime.h" /* mpk_schedule */
}
#include "argmax.cuh"
#include "attention.cuh"
#include "common.cuh"
#include "elementwise.cuh"
#include "matvec.cuh"
#include "merge.cuh"

/* Run task t with the op of its kind: one case per row of the table. */
__device__ bool run_task(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    switch ((mpkb_op)t->op) {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) \
    case MPKB_OP_##ID: return op_##name(P, t, step, task, sm);
#include "mpk/taskops.def"
#undef MPKB_TASKOP
    case MPKB_NOPS: break;
    }
    return false; /* the reader admits no other kind */
}

enum { WAIT_OK = 0, WAIT_EXIT = 1 };

/* Thread 0 spins until event e of graph G has fired for G's step ls (or
 * the run stops); gs is the global step, for the stop and for messages.
 * The CTA learns the outcome through s_res. */
__device__ int wait_event(const kparams &P, const kgraph &G, uint32_t e, uint32_t ls, uint32_t step, uint32_t task)
{
    __shared__ int s_res;
    if (threadIdx.x == 0) {
        const mpkb_event *ev = &G.events[e];
        unsigned target = (unsigned)((ls + 1 - ev->lag) * ev->triggers);
        int res = WAIT_OK;
        uint64_t t0 = 0;
        for (uint32_t spins = 0;; spins++) {
            unsigned v = ld_acquire(&G.count[e]);
            if (v >= target)
                break;
            if ((spins & 31) == 31) {
                if (*(volatile int32_t *)&P.ctl->abort || (int32_t)step > *(volatile int32_t *)&P.ctl->stop_step) {
                    res = WAIT_EXIT;
                    break;
                }
                uint64_t now = gtimer();
                if (!t0) {
                    t0 = now;
                } else if (now - t0 > P.watchdog_ns) {
                    raise_error(P, ERR_STALL, (int32_t)step, (int32_t)task, (int32_t)e, 0, v, target, now - t0);
                    res = WAIT_EXIT;
                    break;
                }
            }
        }
        /* a step past the last one never runs (the stop was published
         * before the event we waited for fired) */
        if (res == WAIT_OK && (int32_t)step > *(volatile int32_t *)&P.ctl->stop_step)
            res = WAIT_EXIT;
        s_res = res;
    }
    __syncthreads();
    return s_res;
}

__device__ void signal_triggers(const kparams &P, const kgraph &G, const mpkb_task *t, uint32_t task)
{
    __syncthreads(); /* the task's stores are done */
    if (threadIdx.x < 32 && (int32_t)task != P.stall_task) {
        /* release adds, a lane per trigger: the CTA's stores (ordered by
         * the barrier) before each count. One after another from thread 0
         * they cost about 0.7 us each: a chunk graph's tile that feeds 20
         * consumers' events spent 17 us signalling (bench/NOTES.md) */
        for (uint32_t k = threadIdx.x; k < t->trig_count; k += 32)
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(&G.count[G.triggers[t->trig_first + k]])
                         : "memory");
    }
}

/* Warp 1 (lane l), while thread 0 waits for t's event: pull into L1 what
 * the op's first instructions load one after another (its operands'
 * tensor descriptors and device pointers) and its trigger list, so that
 * once the event fires that chain hits L1 instead of going to L2 a round
 * trip a link. Data is left alone: pulling in the small weights too (norm
 * gammas) made tasks slower, by the time it holds warp 1 when the event
 * has already fired (bench/NOTES.md, 2026-12-03). A prefetch is only a
 * hint; the loads after the wait are what the op reads. */
__device__ void task_prefetch(const kparams &P, const kgraph &G, const mpkb_task *t, uint32_t l)
{
    if (l == 31 && t->trig_count) {
        prefetch_l1(&G.triggers[t->trig_first]);
        return;
    }
    uint32_t ti = l < MPKB_NT ? t->t[l] : MPKB_NONE;
    if (ti == MPKB_NONE)
        return;
    prefetch_l1(&P.tensors[ti]);
    prefetch_l1((const uint8_t *)(&P.tensors[ti] + 1) - 1);
    prefetch_l1(&P.tp[ti]);
}

/* The dynamic schedule's ticket n: its global step and task. */
__device__ __forceinline__ void ticket_task(const kparams &P, unsigned long long n, uint32_t *step, uint32_t *task)
{
    unsigned long long c = (unsigned long long)P.nchunk * P.gr[1].ntasks;
    if (n < c) {
        *step = (uint32_t)(n / P.gr[1].ntasks), *task = (uint32_t)(n % P.gr[1].ntasks);
    } else {
        n -= c;
        unsigned long long s = n / P.gr[0].ntasks + P.nchunk;
        *step = s > 0xffffffffull ? 0xffffffffu : (uint32_t)s, *task = (uint32_t)(n % P.gr[0].ntasks);
    }
}

#if MPK_RING
/* Thread 0: copy the weights of (task, step) into the next ring slot;
 * the slot, or -1 when the task has none to copy. */
__device__ int32_t ring_put(const kparams &P, float *sm, uint32_t task, uint32_t step)
{
    uint32_t s = s_ring.next;
    if (!matvec_issue(&P.gr[gs_graph(P, step)].copies[task], sm, P, s))
        return -1;
    s_ring.parity[s] = s_ring.uses[s] & 1;
    s_ring.uses[s]++;
    s_ring.task[s] = (int32_t)task, s_ring.step[s] = step;
    s_ring.next = s ^ 1;
    return (int32_t)s;
}

/* Thread 0: the slot that holds (task, step)'s weights, copied ahead by
 * the task before, or copied now. */
__device__ int32_t ring_take(const kparams &P, float *sm, uint32_t task, uint32_t step)
{
    for (uint32_t s = 0; s < 2; s++)
        if (s_ring.task[s] == (int32_t)task && s_ring.step[s] == step)
            return (int32_t)s;
    return ring_put(P, sm, task, step);
}
#endif

/* Nothing may land in shared memory after the CTA is gone: thread 0 waits
 * for the ring's copies in flight, every thread for its cp.async. */
__device__ void ring_drain(void)
{
#if MPK_RING
    if (threadIdx.x == 0)
        for (uint32_t s = 0; s < 2; s++)
            if (s_ring.task[s] >= 0)
                while (!mbar_done(&s_ring.bar[s], s_ring.parity[s]))
                    ;
#endif
    cp_async_wait_all();
}

/* Run one task in full: find or copy its weights, wait, execute, signal.
 * Once the wait is over thread 0 knows the worker's next task (in the
 * dynamic schedule it takes the next ticket then, so that round trip
 * overlaps the task); once the task has signalled it starts copying that
 * task's weights into the other ring slot, so they stream in while the
 * worker waits for the next event. (Issued before the compute instead,
 * the copy overlapped more but its issue, a chain of descriptor loads,
 * delayed every task by about 1 us: bench/NOTES.md, 2026-12-03.)
 * step is the global step (shared.h); next_task/next_step: the static
 * schedule's next task (-1: none); ticket: the dynamic schedule's. The
 * first decode step after chunk steps also waits for the last chunk step
 * to end (its INPUTS, the one task that waits for the step event, reads
 * the chunk graph's token). false: stop. */
__device__ bool one_task(const kparams &P, uint32_t task, uint32_t step, float *sm, unsigned long long *ticket,
                         int32_t next_task, uint32_t next_step, int32_t ahead_task)
{
    uint32_t gi = gs_graph(P, step), ls = gs_local(P, step);
    const kgraph &G = P.gr[gi];
    const mpkb_task *t = &G.tasks[task];
    __shared__ uint64_t s_arrive, s_start, s_ran; /* the trace's times: not held in registers across the op */
    if (P.trace && threadIdx.x == 0)
        s_arrive = gtimer();
    if (threadIdx.x >= 64 && t->op == MPKB_OP_ATTENTION)
        attention_pre(P, t, step, task, sm); /* warps 2 on: K and V before the wait */
    if (P.prefetch && threadIdx.x >> 5 == 1) {
        task_prefetch(P, G, t, threadIdx.x & 31);
#if MPK_RING
        if (threadIdx.x == 32 && next_task >= 0 && next_step < P.max_steps) /* for ring_put, after this task */
            prefetch_l1(&P.gr[gs_graph(P, next_step)].copies[next_task]);
        if (threadIdx.x == 33 && ahead_task >= 0) { /* MPK_GPU_L2_AHEAD: a later task's weights toward L2 */
            const kcopy *c = &G.copies[ahead_task];
            uint32_t n = c->bytes + c->rest;
            if (n)
                bulk_prefetch_l2(c->src, n);
        }
#endif
    }
#if MPK_RING
    if (threadIdx.x == 0) { /* the CTA reads it after wait_event's barrier */
        int32_t s = ring_take(P, sm, task, step);
        s_ring.cur = s;
        s_ring.cur_parity = s >= 0 ? s_ring.parity[s] : 0;
    }
#else
    if (t->op == MPKB_OP_MATVEC)
        matvec_stage(P, t, sm);
#endif
    if ((P.nchunk && step == P.nchunk && t->dep == G.step_event &&
         wait_event(P, P.gr[1], P.gr[1].step_event, P.nchunk, step, task) != WAIT_OK) ||
        wait_event(P, G, t->dep, ls, step, task) != WAIT_OK) {
        ring_drain();
        return false;
    }
    if (threadIdx.x == 0) {
        if (ticket) {
            unsigned long long n = atomicAdd(&P.ctl->ticket, 1ull);
            *ticket = n;
#if MPK_RING
            uint32_t nt, ns;
            ticket_task(P, n, &ns, &nt);
            next_task = (int32_t)nt, next_step = ns;
            if (P.prefetch && ns < P.max_steps)
                prefetch_l1(&P.gr[gs_graph(P, ns)].copies[nt]);
#endif
        }
    }
    if (P.trace && threadIdx.x == 0)
        s_start = gtimer(), s_mark = 0;
    if (!run_task(P, t, step, task, sm)) {
        ring_drain();
        return false;
    }
    if (P.trace && threadIdx.x == 0)
        s_ran = gtimer();
    signal_triggers(P, G, t, task); /* its barrier: the CTA is done with the slot */
#if MPK_RING
    if (threadIdx.x == 0) {
        if (s_ring.cur >= 0)
            s_ring.task[s_ring.cur] = -1;
        if (next_task >= 0 && next_step < P.max_steps)
            ring_put(P, sm, (uint32_t)next_task, next_step);
    }
#else
    (void)next_task, (void)next_step; /* one slot: each task stages its own */
#endif
    if (P.trace && threadIdx.x == 0) {
        uint64_t end = gtimer(); /* before the record's own atomic, which is not the task's */
        unsigned k = atomicAdd(P.trace_n, 1u) % P.trace_cap; /* a ring: the latest records stay */
        trace_rec *r = &P.trace[k];
        r->arrive = s_arrive, r->start = s_start, r->mark = s_mark, r->ran = s_ran, r->end = end;
        r->task = task, r->step = ls, r->sm = smid(), r->graph = gi;
    }
    return true;
}

__device__ void ring_init(void)
{
    if (threadIdx.x == 0) {
#if MPK_RING
        mbar_init(&s_ring.bar[0]);
        mbar_init(&s_ring.bar[1]);
#endif
        for (int s = 0; s < 2; s++)
            s_ring.task[s] = -1, s_ring.step[s] = 0, s_ring.uses[s] = 0, s_ring.parity[s] = 0;
        s_ring.next = 0, s_ring.cur = -1, s_ring.cur_parity = 0;
        s_pre.task = -1;
    }
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(NT, 1) mpk_kernel(kparams P)
{
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    ring_init();
    if (P.schedule == MPK_SCHED_STATIC) {
        for (uint32_t step = 0; step < P.max_steps; step++) {
            const kgraph &G = P.gr[gs_graph(P, step)];
            uint32_t a = G.cta_first[blockIdx.x], b = G.cta_first[blockIdx.x + 1];
            for (uint32_t k = a; k < b; k++) {
                int32_t nt = -1, at = P.l2_ahead && k + P.l2_ahead < b ? (int32_t)G.cta_tasks[k + P.l2_ahead] : -1;
                uint32_t ns = step;
                if (k + 1 < b) {
                    nt = (int32_t)G.cta_tasks[k + 1];
                } else if (step + 1 < P.max_steps) { /* the next step's first, maybe of the other graph */
                    const kgraph &N = P.gr[gs_graph(P, step + 1)];
                    uint32_t na = N.cta_first[blockIdx.x];
                    if (na < N.cta_first[blockIdx.x + 1])
                        nt = (int32_t)N.cta_tasks[na], ns = step + 1;
                }
                if (!one_task(P, G.cta_tasks[k], step, sm, NULL, nt, ns, at))
                    return;
            }
        }
        ring_drain();
        return;
    }
    __shared__ unsigned long long s_ticket;
    if (threadIdx.x == 0)
        s_ticket = atomicAdd(&P.ctl->ticket, 1ull);
    __syncthreads();
    for (;;) {
        uint32_t step, task;
        ticket_task(P, s_ticket, &step, &task);
        if (step >= P.max_steps) {
            ring_drain();
            return;
        }
        if (!one_task(P, task, step, sm, &s_ticket, -1, 0, -1))
            return;
        __syncthreads(); /* s_ticket is the next one */
    }
}

extern "C" const void *mpk_kernel_entry(void) { return (const void *)mpk_kernel; }

extern "C" bool mpk_kernel_task_smem(const mpkb_blob *b, uint32_t task, size_t *bytes, char *why, size_t n)
{
    const mpkb_task *t = &b->tasks[task];
    uint32_t s = UINT32_MAX;
    snprintf(why, n, "task kind %u is unknown to the GPU kernel", t->op);
    switch ((mpkb_op)t->op) {
#define MPKB_TASKOP(ID, name, flags, opnds, kinds, ints, floats) \
    case MPKB_OP_##ID: s = smem_##name(b->tensors, t, why, n); break;
#include "mpk/taskops.def"
#undef MPKB_TASKOP
    case MPKB_NOPS: break;
    }
    *bytes = s;
    return s != UINT32_MAX;
}
