/*
 * host.cu - the GPU executor's host side: put a blob and its weights on the
 * GPU (checking first what the kernel cannot run), launch the persistent
 * kernel of kernel.cu once per generation, stream the tokens it writes to
 * mapped memory as they arrive, and turn what it reports into messages.
 */
#include <cuda_runtime.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern "C" {
#include "mpk/util.h"
#include "runtime.h"
}
#include "shared.h"

#define TRACE_CAP (4u << 20) /* trace records at most */

struct mpk_gpu {
    const mpkb_blob *b;
    FILE *err;
    mpk_gpu_opts o;
    int sms;
    size_t smem;
    uint32_t ring_off, ring_slot; /* kparams' */
    float temperature;            /* this launch's sampler's, for messages */
    uint8_t *weights, *arena, *state, *consts;
    uint8_t **tp;
    mpkb_tensor *tensors;
    struct {                      /* [0] the decode graph, [1] the chunk graph */
        const mpkb_blob *b;       /* NULL: none */
        mpkb_task *tasks;
        kcopy *copies;
        mpkb_event *events;
        uint32_t *triggers, *cta_tasks, *cta_first;
        unsigned *count;
    } g[2];
    uint32_t nchunk;              /* this launch's chunk steps, for messages */
    dev_ctl *ctl;
    uint8_t **hptr;               /* host copy of tp */
    double load_ms;
    uint64_t weight_bytes;
};

static bool ck(cudaError_t e, const char *call, const char *file, int line, FILE *err)
{
    if (e == cudaSuccess)
        return true;
    fprintf(err, "mpk-run: error: CUDA: %s (%s) in %s at %s:%d\n", cudaGetErrorString(e), cudaGetErrorName(e), call,
            file, line);
    return false;
}
#define CK(call) ck((call), #call, __FILE__, __LINE__, G->err)

static void progress(const mpk_gpu *G, uint64_t done, uint64_t total, double t0, bool last)
{
    if (!G->o.progress || total == 0)
        return;
    double s = (mpk_now_ms() - t0) / 1e3;
    int w = (int)(30 * done / total);
    fprintf(G->err, "\rmpk-run: weights [%.*s%*s] %5.1f%% %.2f/%.2f GB %.2f GB/s", w,
            "##############################", 30 - w, "", 100.0 * (double)done / (double)total, (double)done / 1e9,
            (double)total / 1e9, s > 0 ? (double)done / 1e9 / s : 0.0);
    if (last)
        fputc('\n', G->err);
    fflush(G->err);
}

/* Copy every loaded weight through two pinned staging buffers. */
static bool load_weights(mpk_gpu *G, const void *const *weights, const uint64_t *woff)
{
    const mpkb_blob *b = G->b;
    const size_t CH = 64u << 20;
    void *stage[2] = {NULL, NULL};
    cudaEvent_t done[2] = {NULL, NULL};
    bool ok = false;
    double t0 = mpk_now_ms(), shown = 0;
    uint64_t copied = 0;
    int k = 0;
    if (!CK(cudaHostAlloc(&stage[0], CH, cudaHostAllocDefault)) || !CK(cudaHostAlloc(&stage[1], CH, cudaHostAllocDefault)) ||
        !CK(cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming)) ||
        !CK(cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming)))
        goto out;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space != MPKB_SPACE_WEIGHT || t->base != i)
            continue;
        for (uint64_t off = 0; off < t->nbytes; off += CH, k ^= 1) {
            size_t n = t->nbytes - off < CH ? (size_t)(t->nbytes - off) : CH;
            if (!CK(cudaEventSynchronize(done[k])))
                goto out;
            memcpy(stage[k], (const uint8_t *)weights[i] + off, n);
            if (!CK(cudaMemcpyAsync(G->weights + woff[i] + off, stage[k], n, cudaMemcpyHostToDevice, 0)) ||
                !CK(cudaEventRecord(done[k], 0)))
                goto out;
            copied += n;
            if (mpk_now_ms() - shown > 100) {
                progress(G, copied, G->weight_bytes, t0, false);
                shown = mpk_now_ms();
            }
        }
    }
    if (!CK(cudaDeviceSynchronize()))
        goto out;
    progress(G, copied, G->weight_bytes, t0, true);
    ok = true;
out:
    for (int j = 0; j < 2; j++) {
        if (done[j])
            cudaEventDestroy(done[j]);
        if (stage[j])
            cudaFreeHost(stage[j]);
    }
    return ok;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* What the kernel cannot run, found before anything is allocated: each
 * task's shared memory need comes from its kind's smem_NAME (kernel.cu). */
static bool check_limits(mpk_gpu *G, const cudaDeviceProp *p)
{
    const mpkb_blob *b = G->b;
    size_t need = 0;
    char why[256];
    if (b->meta->tp > 1) { /* mpk-run says so first; this guards other callers */
        fprintf(G->err, "mpk-run: error: the blob is built for %u GPUs; the GPU executor runs one\n", b->meta->tp);
        return false;
    }
    for (const mpkb_blob *gb = b; gb; gb = gb == b ? b->chunk : NULL)
        for (uint32_t i = 0; i < gb->ntasks; i++) {
            size_t s = 0;
            if (!mpk_kernel_task_smem(gb, i, &s, why, sizeof why)) {
                fprintf(G->err, "mpk-run: error: %stask %u (%s): %s\n", gb == b ? "" : "chunk graph: ", i,
                        mpkb_str(b, gb->tasks[i].label), why);
                return false;
            }
            need = s > need ? s : need;
        }
    if (b->chunk && b->tensors[b->chunk->meta->logits].dtype != b->tensors[b->meta->logits].dtype) {
        fprintf(G->err, "mpk-run: error: the chunk graph's logits are %s, the decode graph's %s\n",
                mpkb_dtype_name(b->tensors[b->chunk->meta->logits].dtype),
                mpkb_dtype_name(b->tensors[b->meta->logits].dtype));
        return false;
    }
    need = (need + 255) & ~(size_t)255;
    cudaFuncAttributes fa;
    if (!CK(cudaFuncGetAttributes(&fa, mpk_kernel_entry())))
        return false;
    size_t room = p->sharedMemPerBlockOptin > fa.sharedSizeBytes ? p->sharedMemPerBlockOptin - fa.sharedSizeBytes : 0;
    if (need > room) {
        fprintf(G->err, "mpk-run: error: the model needs %zu bytes of shared memory per worker; %s has %zu\n", need,
                p->name, room);
        return false;
    }
    G->smem = room & ~(size_t)255;
    /* the rest is the weight ring: two slots where the kernel copies a
     * worker's next weights ahead (sm_90's bulk copies), else one */
    G->ring_off = (uint32_t)need;
    G->ring_slot = (uint32_t)(((G->smem - need) / (p->major == 9 ? 2 : 1)) & ~(size_t)255);
    return true;
}

/* The weight ring's copy of each task of gb (kcopy, shared.h): for a
 * matvec with bf16 rows of a multiple of 8 elements on a 16-byte aligned
 * tensor (the kernel's mv_fast), its first rows that fit in a slot, then
 * up to PREFETCH_MAX more bytes toward L2 (matvec.cuh); nothing for the
 * rest. Needs G->tp's host copy and the ring's slot size. */
static bool ring_copies(mpk_gpu *G, const mpkb_blob *gb, kcopy **out)
{
    kcopy *c = (kcopy *)calloc(gb->ntasks + 1, sizeof *c);
    if (!c) {
        fprintf(G->err, "mpk-run: error: out of memory\n");
        return false;
    }
    for (uint32_t i = 0; i < gb->ntasks; i++) {
        const mpkb_task *t = &gb->tasks[i];
        if (t->op != MPKB_OP_MATVEC)
            continue;
        const mpkb_tensor *W = &gb->tensors[t->matvec.w];
        const uint8_t *w = G->hptr[t->matvec.w];
        uint64_t K = W->dims[1], row = 2 * K, R = (uint64_t)(t->matvec.hi - t->matvec.lo);
        if (W->dtype != MPKB_BF16 || K % 8 != 0 || ((uintptr_t)w & 15) != 0)
            continue;
        uint64_t rows = G->ring_slot / row < R ? G->ring_slot / row : R;
        c[i].src = w + row * (uint64_t)t->matvec.lo;
        c[i].rows = (uint32_t)rows, c[i].bytes = (uint32_t)(rows * row);
        uint64_t rest = row * (R - rows);
        c[i].rest = (uint32_t)(rest > PREFETCH_MAX ? PREFETCH_MAX : rest);
    }
    bool ok = CK(cudaMalloc((void **)out, sizeof *c * (gb->ntasks + 1))) &&
              CK(cudaMemcpy(*out, c, sizeof *c * gb->ntasks, cudaMemcpyHostToDevice));
    free(c);
    return ok;
}

extern "C" mpk_gpu *mpk_gpu_new(const mpkb_blob *b, const void *const *weights, const mpk_gpu_opts *o, FILE *err)
{
    mpk_gpu *G = (mpk_gpu *)calloc(1, sizeof *G);
    uint64_t *woff = (uint64_t *)calloc(b->ntensors + 1, sizeof *woff);
    uint32_t *cfirst = NULL, *ctasks = NULL;
    int n = 0, dev = 0, blocks = 0, coop = 0;
    cudaDeviceProp p;
    double t0 = mpk_now_ms();
    if (!G || !woff) {
        fprintf(err, "mpk-run: error: out of memory\n");
        free(G), free(woff);
        return NULL;
    }
    G->b = b, G->err = err, G->o = *o;
    cudaError_t e = cudaGetDeviceCount(&n);
    int driver = 0;
    if (e != cudaSuccess && (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0)) {
        /* no driver at all: CUDA calls that "driver version is insufficient" */
        fprintf(err, "mpk-run: error: no CUDA GPU here (no NVIDIA driver is loaded); run with --cpu for the CPU "
                     "reference executor\n");
        goto fail;
    }
    if (e != cudaSuccess || n == 0) {
        fprintf(err, "mpk-run: error: no CUDA GPU here (%s); run with --cpu for the CPU reference executor\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
        goto fail;
    }
    if (!CK(cudaGetDevice(&dev)) || !CK(cudaGetDeviceProperties(&p, dev)) ||
        !CK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev)))
        goto fail;
    if (p.major < 8 || !coop) {
        fprintf(err, "mpk-run: error: %s (compute capability %d.%d) cannot run mpk: it needs 8.0 or newer with "
                     "cooperative launch\n",
                p.name, p.major, p.minor);
        goto fail;
    }
    G->sms = p.multiProcessorCount;
    if (!check_limits(G, &p))
        goto fail;
    if (G->o.schedule == MPK_SCHED_AUTO) /* the placement fits this GPU: static (bench/RESULTS.md) */
        G->o.schedule = b->nqueues == (uint32_t)G->sms && (!b->chunk || b->chunk->nqueues == (uint32_t)G->sms)
                            ? MPK_SCHED_STATIC
                            : MPK_SCHED_DYNAMIC;
    /* weights: one buffer, each loaded tensor 256-byte aligned */
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        if (t->space == MPKB_SPACE_WEIGHT && t->base == i) {
            woff[i] = G->weight_bytes;
            G->weight_bytes += (t->nbytes + 255) & ~(uint64_t)255;
        }
    }
    if (!CK(cudaMalloc((void **)&G->weights, G->weight_bytes ? G->weight_bytes : 256)) ||
        !CK(cudaMalloc((void **)&G->arena, b->meta->arena_size ? b->meta->arena_size : 256)) ||
        !CK(cudaMalloc((void **)&G->state, b->meta->state_size ? b->meta->state_size : 256)) ||
        !CK(cudaMalloc((void **)&G->consts, b->consts_size ? b->consts_size : 256)) ||
        !CK(cudaMemcpy(G->consts, b->consts, b->consts_size, cudaMemcpyHostToDevice)))
        goto fail;
    G->hptr = (uint8_t **)calloc(b->ntensors + 1, sizeof *G->hptr);
    if (!G->hptr)
        goto fail;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = &b->tensors[i];
        uint8_t *q = NULL;
        switch (t->space) {
        case MPKB_SPACE_ARENA: q = G->arena + t->offset; break;
        case MPKB_SPACE_STATE: q = G->state + t->offset; break;
        case MPKB_SPACE_CONST: q = G->consts + t->offset; break;
        default: q = G->weights + woff[t->base] + t->offset;
        }
        if ((uintptr_t)q % mpkb_dtype_size(t->dtype)) {
            fprintf(err, "mpk-run: error: tensor %u (%s) lies at an offset not aligned to its %s elements\n", i,
                    mpkb_str(b, t->name), mpkb_dtype_name(t->dtype));
            goto fail;
        }
        G->hptr[i] = q;
    }
    if (!CK(cudaMalloc((void **)&G->tp, sizeof *G->tp * (b->ntensors + 1))) ||
        !CK(cudaMalloc((void **)&G->tensors, sizeof *G->tensors * (b->ntensors + 1))) ||
        !CK(cudaMalloc((void **)&G->ctl, sizeof *G->ctl)) ||
        !CK(cudaMemcpy(G->tp, G->hptr, sizeof *G->tp * b->ntensors, cudaMemcpyHostToDevice)) ||
        !CK(cudaMemcpy(G->tensors, b->tensors, sizeof *G->tensors * b->ntensors, cudaMemcpyHostToDevice)))
        goto fail;
    G->g[0].b = b, G->g[1].b = b->chunk;
    for (int gi = 0; gi < 2 && G->g[gi].b; gi++) {
        const mpkb_blob *gb = G->g[gi].b;
        /* static schedule: CTA c runs queues c, c + G, ... merged in task order */
        free(cfirst), free(ctasks);
        cfirst = (uint32_t *)calloc((size_t)G->sms + 1, sizeof *cfirst);
        ctasks = (uint32_t *)calloc((size_t)gb->ntasks + 1, sizeof *ctasks);
        if (!cfirst || !ctasks)
            goto fail;
        for (int c = 0, k = 0; c < G->sms; c++) {
            cfirst[c] = (uint32_t)k;
            for (uint32_t q = (uint32_t)c; q < gb->nqueues; q += (uint32_t)G->sms)
                for (uint32_t j = 0; j < gb->queues[q].count; j++)
                    ctasks[k++] = gb->qtasks[gb->queues[q].first + j];
            qsort(ctasks + cfirst[c], (size_t)k - cfirst[c], sizeof *ctasks, cmp_u32);
            cfirst[c + 1] = (uint32_t)k;
        }
        if (!ring_copies(G, gb, &G->g[gi].copies) ||
            !CK(cudaMalloc((void **)&G->g[gi].tasks, sizeof *G->g[gi].tasks * (gb->ntasks + 1))) ||
            !CK(cudaMalloc((void **)&G->g[gi].events, sizeof *G->g[gi].events * (gb->nevents + 1))) ||
            !CK(cudaMalloc((void **)&G->g[gi].triggers, sizeof *G->g[gi].triggers * (gb->ntriggers + 1))) ||
            !CK(cudaMalloc((void **)&G->g[gi].cta_tasks, sizeof *G->g[gi].cta_tasks * (gb->ntasks + 1))) ||
            !CK(cudaMalloc((void **)&G->g[gi].cta_first, sizeof *G->g[gi].cta_first * ((size_t)G->sms + 1))) ||
            !CK(cudaMalloc((void **)&G->g[gi].count, sizeof *G->g[gi].count * (gb->nevents + 1))) ||
            !CK(cudaMemcpy(G->g[gi].tasks, gb->tasks, sizeof *gb->tasks * gb->ntasks, cudaMemcpyHostToDevice)) ||
            !CK(cudaMemcpy(G->g[gi].events, gb->events, sizeof *gb->events * gb->nevents, cudaMemcpyHostToDevice)) ||
            !CK(cudaMemcpy(G->g[gi].triggers, gb->triggers, sizeof *gb->triggers * gb->ntriggers,
                           cudaMemcpyHostToDevice)) ||
            !CK(cudaMemcpy(G->g[gi].cta_tasks, ctasks, sizeof *ctasks * gb->ntasks, cudaMemcpyHostToDevice)) ||
            !CK(cudaMemcpy(G->g[gi].cta_first, cfirst, sizeof *cfirst * ((size_t)G->sms + 1), cudaMemcpyHostToDevice)))
            goto fail;
    }
    if (!CK(cudaFuncSetAttribute(mpk_kernel_entry(), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)G->smem)) ||
        !CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, mpk_kernel_entry(), MPK_NT, G->smem)))
        goto fail;
    if (blocks < 1) {
        fprintf(err, "mpk-run: error: one worker of %d threads with %zu bytes of shared memory does not fit on "
                     "an SM of %s\n",
                MPK_NT, G->smem, p.name);
        goto fail;
    }
    if (!load_weights(G, weights, woff))
        goto fail;
    G->load_ms = mpk_now_ms() - t0;
    free(woff), free(cfirst), free(ctasks);
    return G;
fail:
    free(woff), free(cfirst), free(ctasks);
    mpk_gpu_free(G);
    return NULL;
}

extern "C" void mpk_gpu_free(mpk_gpu *G)
{
    if (!G)
        return;
    void *bufs[] = {G->weights, G->arena, G->state, G->consts, G->tp, G->tensors, G->ctl};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        cudaFree(bufs[i]); /* NULL is a no-op */
    for (int gi = 0; gi < 2; gi++) {
        void *gbufs[] = {G->g[gi].tasks, G->g[gi].copies, G->g[gi].events, G->g[gi].triggers, G->g[gi].cta_tasks,
                         G->g[gi].cta_first, G->g[gi].count};
        for (size_t i = 0; i < sizeof gbufs / sizeof *gbufs; i++)
            cudaFree(gbufs[i]);
    }
    free(G->hptr);
    free(G);
    cudaDeviceReset(); /* a complete leak report under compute-sanitizer */
}

extern "C" double mpk_gpu_load_ms(const mpk_gpu *G, uint64_t *bytes)
{
    *bytes = G->weight_bytes;
    return G->load_ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report_error(mpk_gpu *G, const host_status *h, const unsigned *counts)
{
    /* the graph of the step that failed, and its step */
    bool chunk = h->err_step >= 0 && (uint32_t)h->err_step < G->nchunk;
    const mpkb_blob *b = chunk ? G->b->chunk : G->b;
    int32_t err_step = chunk || h->err_step < 0 ? h->err_step : h->err_step - (int32_t)G->nchunk;
    FILE *err = G->err;
    const mpkb_task *t = h->err_task >= 0 && (uint32_t)h->err_task < b->ntasks ? &b->tasks[h->err_task] : NULL;
    char what[512] = "";
    if (t)
        snprintf(what, sizeof what, "task %d (%s %s, layer %d, i=%d,%d,%d,%d)", h->err_task, mpkb_op_name(t->op),
                 mpkb_str(b, t->label), t->layer, t->i[0], t->i[1], t->i[2], t->i[3]);
    switch (h->error) {
    case ERR_STALL:
        fprintf(err,
                "mpk-run: error: stall: in step %d, %s waited %.0f ms for event %d (count %u of %u expected); "
                "giving up (--watchdog %u ms)\n",
                h->err_step, what, (double)h->err_waited_ns / 1e6, h->err_event, h->err_count, h->err_expected,
                G->o.watchdog_ms);
        /* the root: the first event short in the earliest step that stalled,
         * with the producers that did not signal it */
        if (counts)
            for (uint32_t step = 0; step <= (uint32_t)err_step; step++)
                for (uint32_t e = 0; e < b->nevents; e++) {
                    const mpkb_event *ev = &b->events[e];
                    uint64_t want = ((uint64_t)step + 1 - ev->lag) * ev->triggers;
                    if (ev->lag || counts[e] >= want)
                        continue;
                    fprintf(err, "mpk-run: note: the first event short is event %u in %sstep %u: %llu of %u signals "
                                 "arrived; its producers:",
                            e, chunk ? "chunk " : "", step, (unsigned long long)(counts[e] - (uint64_t)step * ev->triggers),
                            ev->triggers);
                    for (uint32_t i = 0, shown = 0; i < b->ntasks && shown < 8; i++)
                        for (uint32_t k = 0; k < b->tasks[i].trig_count; k++)
                            if (b->triggers[b->tasks[i].trig_first + k] == e) {
                                fprintf(err, " task %u (%s %s)", i, mpkb_op_name(b->tasks[i].op),
                                        mpkb_str(b, b->tasks[i].label));
                                shown++;
                            }
                    fputc('\n', err);
                    step = (uint32_t)err_step, e = b->nevents; /* done */
                }
        break;
    case ERR_TOKEN:
        fprintf(err, "mpk-run: error: in step %d, %s: token id %d is outside the vocabulary (0..%u)\n", h->err_step,
                what, h->err_value, h->err_count - 1);
        break;
    case ERR_LOGITS:
        if (h->err_count == 2)
            fprintf(err, "mpk-run: error: step %d: no logit divided by the temperature %g is finite\n", h->err_step,
                    (double)G->temperature);
        else if (h->err_count)
            fprintf(err, "mpk-run: error: step %d: the logit of the chosen token %d is not finite (inf)\n",
                    h->err_step, h->err_value);
        else
            fprintf(err, "mpk-run: error: step %d: the logits have no finite value\n", h->err_step);
        break;
    case ERR_UNSUPPORTED:
        fprintf(err, "mpk-run: error: in step %d, %s: a task kind the one-GPU kernel does not run\n", h->err_step,
                what);
        break;
    case ERR_POS:
        fprintf(err, "mpk-run: error: in step %d, %s: position %d is outside the KV cache (%u positions)\n",
                h->err_step, what, h->err_value, h->err_count);
        break;
    }
}

extern "C" bool mpk_gpu_generate(mpk_gpu *G, const int32_t *prompt, uint32_t np, uint32_t ntok,
                                 const mpk_sampler *smp, float *logits, mpk_token_fn on_token, void *ctx,
                                 mpk_gpu_stats *st)
{
    const mpkb_blob *b = G->b, *cb = G->o.no_chunk ? NULL : b->chunk;
    const mpkb_meta *m = b->meta;
    /* the prompt in chunk steps when the blob has a chunk graph: the last
     * makes the first token, so ntok - 1 decode steps follow */
    uint32_t nchunk = cb ? (np + cb->meta->chunk - 1) / cb->meta->chunk : 0;
    uint32_t max_steps = cb ? nchunk + ntok - 1 : np + ntok - 1;
    uint32_t dump_first = nchunk ? nchunk - 1 : 0, dump_rows = max_steps - dump_first;
    G->nchunk = nchunk;
    bool ok = false;
    host_status *hs = NULL;
    int32_t *htok = NULL;
    uint64_t *htime = NULL;
    int32_t *dprompt = NULL;
    float *dump = NULL;
    trace_rec *trace = NULL, *htrace = NULL;
    unsigned *trace_n = NULL, ntrace = 0, *hcount = NULL;
    cudaStream_t stream = NULL;
    kparams P;
    dev_ctl c0;
    memset(&P, 0, sizeof P);
    memset(&c0, 0, sizeof c0);
    memset(st, 0, sizeof *st);
    /* every counter must hold its last step's target in 32 bits (checked
     * for the steps this launch runs: a blob with no KV cache has no bound
     * of its own) */
    for (int gi = 0; gi < (cb ? 2 : 1); gi++) {
        const mpkb_blob *gb = gi ? cb : b;
        uint32_t steps = gi ? nchunk : max_steps - nchunk;
        for (uint32_t i = 0; i < gb->nevents; i++)
            if ((uint64_t)gb->events[i].triggers * ((uint64_t)steps + 1) > 0xffffffffull) {
                fprintf(G->err, "mpk-run: error: %sevent %u: %u triggers over %u steps overflow its counter\n",
                        gi ? "chunk graph: " : "", i, gb->events[i].triggers, steps);
                return false;
            }
    }
    if (!CK(cudaHostAlloc((void **)&hs, sizeof *hs, cudaHostAllocMapped)) ||
        !CK(cudaHostAlloc((void **)&htok, sizeof *htok * ntok, cudaHostAllocMapped)) ||
        !CK(cudaHostAlloc((void **)&htime, sizeof *htime * ntok, cudaHostAllocMapped)) ||
        !CK(cudaMalloc((void **)&dprompt, sizeof *dprompt * np)) ||
        !CK(cudaMemcpy(dprompt, prompt, sizeof *dprompt * np, cudaMemcpyHostToDevice)) ||
        !CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)))
        goto out;
    memset(hs, 0, sizeof *hs);
    if (logits && !CK(cudaMalloc((void **)&dump, sizeof *dump * (uint64_t)dump_rows * m->vocab)))
        goto out;
    if (G->o.trace) {
        uint64_t cap = (uint64_t)b->ntasks * (max_steps - nchunk) + (cb ? (uint64_t)cb->ntasks * nchunk : 0);
        cap = cap < TRACE_CAP ? cap : TRACE_CAP;
        P.trace_cap = (uint32_t)cap;
        if (!CK(cudaMalloc((void **)&trace, sizeof *trace * cap)) || !CK(cudaMalloc((void **)&trace_n, sizeof *trace_n)) ||
            !CK(cudaMemset(trace_n, 0, sizeof *trace_n)))
            goto out;
    }
    c0.stop_step = (int32_t)max_steps - 1;
    /* a fresh run: counters, state, poisoned arena (NaN in every float dtype) */
    if (!CK(cudaMemset(G->g[0].count, 0, sizeof *G->g[0].count * b->nevents)) ||
        (b->chunk && !CK(cudaMemset(G->g[1].count, 0, sizeof *G->g[1].count * b->chunk->nevents))) ||
        !CK(cudaMemset(G->state, 0, m->state_size)) || !CK(cudaMemset(G->arena, 0xff, m->arena_size)) ||
        !CK(cudaMemcpy(G->ctl, &c0, sizeof c0, cudaMemcpyHostToDevice)))
        goto out;
    for (int gi = 0; gi < 2 && G->g[gi].b; gi++) {
        const mpkb_blob *gb = G->g[gi].b;
        kgraph *k = &P.gr[gi];
        k->tasks = G->g[gi].tasks, k->copies = G->g[gi].copies;
        k->events = G->g[gi].events, k->triggers = G->g[gi].triggers;
        k->count = G->g[gi].count, k->cta_tasks = G->g[gi].cta_tasks, k->cta_first = G->g[gi].cta_first;
        k->next_out = G->hptr[gb->meta->next_output];
        k->logits = G->hptr[gb->meta->logits];
        k->ntasks = gb->ntasks, k->step_event = gb->meta->step_event;
    }
    P.nchunk = nchunk, P.chunk = cb ? cb->meta->chunk : 0, P.dump_first = dump_first;
    P.tensors = G->tensors, P.tp = G->tp, P.prompt = dprompt;
    P.logits_dtype = b->tensors[m->logits].dtype;
    P.dump = dump, P.ctl = G->ctl;
    if (!CK(cudaHostGetDevicePointer((void **)&P.hs, hs, 0)) ||
        !CK(cudaHostGetDevicePointer((void **)&P.htokens, htok, 0)) ||
        !CK(cudaHostGetDevicePointer((void **)&P.htimes, htime, 0)))
        goto out;
    P.trace = trace, P.trace_n = trace_n;
    P.np = np, P.ntok = ntok, P.max_steps = max_steps, P.vocab = m->vocab;
    P.neos = m->neos;
    memcpy(P.eos, m->eos, sizeof P.eos);
    P.schedule = G->o.schedule, P.stall_task = G->o.test_stall;
    P.watchdog_ns = (uint64_t)G->o.watchdog_ms * 1000000ull;
    P.smem = G->smem;
    P.ring_off = G->ring_off, P.ring_slot = G->ring_slot;
    P.sampling = !mpk_sampler_greedy(smp);
    {   /* MPK_GPU_PREFETCH=0 turns the descriptor prefetch off (mpk-run(1)) */
        const char *e = getenv("MPK_GPU_PREFETCH");
        P.prefetch = !(e && strcmp(e, "0") == 0);
        /* MPK_GPU_L2_AHEAD=N: the static schedule's workers pull the weights
         * of their task N ahead toward L2 (mpk-run(1)); 0 or unset: none */
        e = getenv("MPK_GPU_L2_AHEAD");
        P.l2_ahead = e && *e >= '1' && *e <= '8' && !e[1] ? *e - '0' : 0;
    }
    if (P.sampling)
        P.sampler = *smp;
    G->temperature = P.sampling ? smp->temperature : 0.0f;
    {
        void *args[] = {&P};
        double t0 = mpk_now_ms(), last_change = t0, first = -1;
        int32_t shown = 0, last_steps = -1;
        if (!CK(cudaLaunchCooperativeKernel(mpk_kernel_entry(), dim3((unsigned)G->sms), dim3(MPK_NT), args, G->smem,
                                            stream)))
            goto out;
        /* stream the tokens while the kernel runs */
        for (;;) {
            cudaError_t q = cudaStreamQuery(stream);
            int32_t made = hs->made;
            for (; shown < made; shown++) {
                if (first < 0)
                    first = mpk_now_ms() - t0;
                on_token(ctx, ((volatile int32_t *)htok)[shown]);
            }
            if (q == cudaSuccess)
                break;
            if (q != cudaErrorNotReady) {
                ck(q, "the kernel (cudaStreamQuery)", __FILE__, __LINE__, G->err);
                goto out;
            }
            if (hs->steps != last_steps || hs->error) {
                last_steps = hs->steps;
                last_change = mpk_now_ms();
            } else if (mpk_now_ms() - last_change > 2.0 * G->o.watchdog_ms + 10000) {
                fprintf(G->err, "mpk-run: error: the kernel made no progress for %.0f s and did not stop; giving "
                                "up at step %d\n",
                        (mpk_now_ms() - last_change) / 1e3, last_steps);
                /* freeing memory would wait for the kernel: leave, and let
                 * the driver tear the context down */
                fflush(NULL);
                _exit(1);
            }
            usleep(20);
        }
        st->ttft_ms = first;
        st->wall_ms = mpk_now_ms() - t0;
        if (!CK(cudaGetLastError()))
            goto out;
        int32_t made = hs->made;
        for (; shown < made; shown++)
            on_token(ctx, htok[shown]);
        st->made = (uint32_t)made;
        st->steps = (uint32_t)hs->steps;
        st->sms = G->sms;
        st->schedule = G->o.schedule;
        if (made > 1) {
            double *d = (double *)malloc(sizeof *d * (size_t)made);
            if (d) {
                for (int32_t i = 1; i < made; i++)
                    d[i - 1] = (double)(htime[i] - htime[i - 1]) / 1e6;
                double sum = 0;
                for (int32_t i = 0; i + 1 < made; i++)
                    sum += d[i];
                qsort(d, (size_t)made - 1, sizeof *d, cmp_double);
                st->per_token_ms = d[(made - 1) / 2];
                st->mean_token_ms = sum / (made - 1);
                /* nearest rank: the smallest gap at or above 99% of them */
                size_t r = (size_t)ceil(0.99 * (double)(made - 1));
                st->p99_token_ms = d[r > 0 ? r - 1 : 0];
                free(d);
            }
        }
    }
    if (hs->error) {
        int gi = hs->err_step >= 0 && (uint32_t)hs->err_step < nchunk; /* the graph of the step that failed */
        const mpkb_blob *gb = gi ? cb : b;
        hcount = (unsigned *)malloc(sizeof *hcount * (gb->nevents + 1));
        if (hcount && !CK(cudaMemcpy(hcount, G->g[gi].count, sizeof *hcount * gb->nevents, cudaMemcpyDeviceToHost)))
            goto out;
        report_error(G, hs, hcount);
        goto out;
    }
    st->logit_rows = st->steps > dump_first ? st->steps - dump_first : 0;
    st->chunk_steps = nchunk;
    if (logits && !CK(cudaMemcpy(logits, dump, sizeof *dump * (uint64_t)st->logit_rows * m->vocab, cudaMemcpyDeviceToHost)))
        goto out;
    if (G->o.trace) {
        if (!CK(cudaMemcpy(&ntrace, trace_n, sizeof ntrace, cudaMemcpyDeviceToHost)))
            goto out;
        if (ntrace > P.trace_cap)
            fprintf(G->err, "mpk-run: trace: kept the last %u of %u task records\n", P.trace_cap, ntrace);
        ntrace = ntrace < P.trace_cap ? ntrace : P.trace_cap;
        htrace = (trace_rec *)malloc(sizeof *htrace * (ntrace + 1));
        if (!htrace || !CK(cudaMemcpy(htrace, trace, sizeof *htrace * ntrace, cudaMemcpyDeviceToHost)) ||
            !mpk_write_trace(b, htrace, ntrace, G->sms, G->o.trace, G->err))
            goto out;
        st->trace_events = ntrace;
    }
    ok = true;
out:
    if (stream)
        cudaStreamDestroy(stream);
    cudaFreeHost(hs); /* both take NULL */
    cudaFreeHost(htok);
    cudaFreeHost(htime);
    cudaFree(dprompt);
    cudaFree(dump);
    cudaFree(trace);
    cudaFree(trace_n);
    free(htrace);
    free(hcount);
    return ok;
}
