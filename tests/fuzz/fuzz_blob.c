/*
 * fuzz_blob.c - the blob reader (blob/read.c) and the CPU executor
 * (runtime/cpu/) under a fuzzer.
 *
 * mpkb_parse promises that a blob it accepts is safe to execute: every
 * index, offset and count in range, every step finishing. So each input is
 * copied into a buffer of exactly its size (8-byte aligned, as mpkb_parse
 * needs; ASan sees a read past its end) and parsed with messages thrown
 * away; when the reader accepts it, the harness then does what consumers do
 * with a valid blob, without checks of its own:
 *   - walks every tensor, task, event, trigger and queue entry, following
 *     each index it holds, and calls mpkb_str on every name and label;
 *   - asserts the guarantees the executors rely on (bytes inside their
 *     space, operands present, event ranges a partition of the tasks, one
 *     step running every task once, in any ready order and in the queues'
 *     static order), aborting with a message when the reader was wrong;
 *   - if the blob is small (arena + state and weights under 16 MiB each, a
 *     step's estimated work bounded), runs the CPU executor on zeroed
 *     weights: one step with token 0 and, as mpk-run would when max_seq
 *     allows, a second with the token it chose.
 *
 * The blob's CRCs make random mutations stop at a checksum. With
 * -DMPK_FUZZ_FIX_CRC the fuzzer target first rewrites file_size, every
 * section CRC, the table CRC and the header CRC of its copy of the input
 * (best effort: only what lies inside the input), so the deeper checks are
 * reached; the corpus keeps the unfixed input, which replays the same way.
 *
 * Built with clang -fsanitize=fuzzer this is a libFuzzer target. Built with
 * -DMPK_FUZZ_MAIN it replays the files of the directories (or the files) it
 * is given, each both as it is and CRC-fixed, so the corpus keeps being
 * checked without clang. Either way a crash, a sanitizer report, an
 * assertion below or a slow input is the bug.
 */
#include "runtime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SMALL_BYTES (16ull << 20)  /* arena + state, and weights, to execute */
#define MAX_WORK (1ull << 24)      /* estimated element operations per step */

static FILE *sink;
static volatile uint64_t touched; /* keeps the walks from being optimised away */

static void must(bool cond, const char *what, uint32_t i)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz_blob: the reader accepted a blob that breaks its promise: %s (%u)\n", what, i);
    abort();
}

/* ---- CRC fix-up -------------------------------------------------------- */

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Make file_size and the CRCs of a (mutated) blob agree with its bytes, as
 * far as its header and table can be followed inside the buffer. */
static void fix_crcs(uint8_t *d, size_t size)
{
    if (size < sizeof(mpkb_header))
        return;
    mpkb_header h;
    memcpy(&h, d, sizeof h);
    h.file_size = size;
    uint64_t off = h.table_offset;
    if (off <= size && off % 8 == 0) {
        uint64_t n = h.nsections, room = (size - off) / sizeof(mpkb_section);
        if (n > room)
            n = room;
        for (uint64_t i = 0; i < n; i++) {
            uint8_t *s = d + off + i * sizeof(mpkb_section);
            uint64_t so = rd64(s + offsetof(mpkb_section, offset));
            uint64_t sz = rd64(s + offsetof(mpkb_section, size));
            if (so <= size && sz <= size - so)
                wr32(s + offsetof(mpkb_section, crc), mpkb_crc(d + so, sz));
        }
        if (n == h.nsections)
            h.table_crc = mpkb_crc(d + off, n * sizeof(mpkb_section));
    }
    h.header_crc = 0;
    h.header_crc = mpkb_crc(&h, sizeof h);
    memcpy(d, &h, sizeof h);
}

/* ---- what a consumer does with a valid blob ---------------------------- */

static const mpkb_tensor *tensor_at(const mpkb_blob *b, uint32_t i)
{
    must(i < b->ntensors, "tensor index out of range", i);
    const mpkb_tensor *t = &b->tensors[i];
    touched += t->nbytes + t->dims[0] + strlen(mpkb_str(b, t->name));
    return t;
}

static void walk_tensors(const mpkb_blob *b)
{
    const mpkb_meta *m = b->meta;
    for (uint32_t i = 0; i < b->ntensors; i++) {
        const mpkb_tensor *t = tensor_at(b, i);
        must(t->ndim >= 1 && t->ndim <= MPKB_MAX_DIMS && t->dtype < MPKB_NDTYPES && t->space < MPKB_NSPACES,
             "tensor rank, dtype or space", i);
        for (int d = 0; d < t->ndim; d++)
            touched += t->dims[d];
        must(mpkb_numel(t) * mpkb_dtype_size(t->dtype) == t->nbytes, "tensor nbytes", i);
        uint64_t limit;
        switch (t->space) {
        case MPKB_SPACE_ARENA: limit = m->arena_size; break;
        case MPKB_SPACE_STATE: limit = m->state_size; break;
        case MPKB_SPACE_CONST: limit = b->consts_size; break;
        default: {
            const mpkb_tensor *base = tensor_at(b, t->base);
            must(base->space == MPKB_SPACE_WEIGHT && base->base == t->base && base->offset == 0,
                 "weight base is a loaded weight", i);
            limit = base->nbytes;
        }
        }
        must(t->offset <= limit && limit - t->offset >= t->nbytes, "tensor bytes inside its space", i);
        if (t->space == MPKB_SPACE_CONST)
            touched += b->consts[t->offset] + b->consts[t->offset + t->nbytes - 1];
    }
}

/* The operand slots an op reads (man 5 mpk-blob): bit k for t[k]; *opt
 * gets the ones that may be MPKB_NONE. */
static unsigned used_slots(const mpkb_task *t, unsigned *opt)
{
    *opt = 0;
    switch (t->op) {
    case MPKB_OP_INPUTS: *opt = 2; return 3;
    case MPKB_OP_EMBED: return 7;
    case MPKB_OP_MATVEC:
        return 7 | (t->flags & MPKB_F_EPI_RESIDUAL ? 8 : 0) |
               (t->flags & (MPKB_F_PRO_RMSNORM | MPKB_F_PRO_SILU_MUL) ? 16 : 0) |
               (t->flags & MPKB_F_EPI_ARGMAX ? 32 : 0);
    case MPKB_OP_ATTENTION: *opt = 0x360; return 0x3ff;
    case MPKB_OP_ATTN_MERGE:
    case MPKB_OP_ARGMAX_PART:
    case MPKB_OP_ARGMAX_REDUCE:
    case MPKB_OP_COPY: return 3;
    case MPKB_OP_RMSNORM:
    case MPKB_OP_ADD:
    case MPKB_OP_MUL: return 7;
    case MPKB_OP_ROPE: return 15;
    case MPKB_OP_SILU: return 5;
    default: return 0;
    }
}

static void walk_tasks(const mpkb_blob *b)
{
    for (uint32_t i = 0; i < b->ntasks; i++) {
        const mpkb_task *t = &b->tasks[i];
        must(t->op < MPKB_NOPS, "task op", i);
        touched += strlen(mpkb_str(b, t->label)) + strlen(mpkb_op_name(t->op));
        unsigned opt, used = used_slots(t, &opt);
        /* The reader leaves the slots an op does not use unchecked: mpk dump
         * only prints their numbers. */
        for (int k = 0; k < MPKB_NT; k++)
            if (used & (1u << k) && (t->t[k] != MPKB_NONE || !(opt & (1u << k))))
                tensor_at(b, t->t[k]);
            else
                touched += t->t[k];
        must(t->dep < b->nevents, "task dep", i);
        touched += b->events[t->dep].triggers;
        must(t->trig_first <= b->ntriggers && b->ntriggers - t->trig_first >= t->trig_count, "task triggers", i);
        for (uint32_t k = 0; k < t->trig_count; k++) {
            uint32_t e = b->triggers[t->trig_first + k];
            must(e < b->nevents, "trigger event", i);
            touched += b->events[e].ntasks;
        }
    }
}

/* The event ranges partition the tasks, each task inside its dep's range. */
static void walk_events(const mpkb_blob *b, uint8_t *mark)
{
    memset(mark, 0, b->ntasks);
    for (uint32_t e = 0; e < b->nevents; e++) {
        const mpkb_event *ev = &b->events[e];
        must(ev->first_task <= b->ntasks && b->ntasks - ev->first_task >= ev->ntasks, "event task range", e);
        must(ev->lag <= 1, "event lag", e);
        for (uint32_t t = ev->first_task; t < ev->first_task + ev->ntasks; t++) {
            must(!mark[t], "event ranges overlap", t);
            must(b->tasks[t].dep == e, "task outside its event's range", t);
            mark[t] = 1;
        }
    }
    for (uint32_t t = 0; t < b->ntasks; t++)
        must(mark[t], "task in no event's range", t);
}

/* One step, the way an executor schedules it: a task is ready when its
 * event has fired; every task must become ready exactly once. */
static void walk_step(const mpkb_blob *b, uint32_t *count, uint32_t *ready, uint8_t *mark)
{
    memset(count, 0, sizeof *count * b->nevents);
    memset(mark, 0, b->ntasks);
    uint32_t n = 0;
    for (uint32_t e = 0; e < b->nevents; e++) {
        const mpkb_event *ev = &b->events[e];
        if (ev->lag || ev->triggers == 0)
            for (uint32_t t = ev->first_task; t < ev->first_task + ev->ntasks; t++) {
                must(n < b->ntasks && !mark[t], "a task ready twice", t);
                mark[t] = 1, ready[n++] = t;
            }
    }
    for (uint32_t head = 0; head < n; head++) {
        const mpkb_task *x = &b->tasks[ready[head]];
        for (uint32_t k = 0; k < x->trig_count; k++) {
            uint32_t e = b->triggers[x->trig_first + k];
            const mpkb_event *ev = &b->events[e];
            must(count[e] < ev->triggers, "an event signalled more than its producer count", e);
            if (++count[e] == ev->triggers && !ev->lag)
                for (uint32_t t = ev->first_task; t < ev->first_task + ev->ntasks; t++) {
                    must(n < b->ntasks && !mark[t], "a task ready twice", t);
                    mark[t] = 1, ready[n++] = t;
                }
        }
    }
    must(n == b->ntasks, "a step does not run every task", n);
    for (uint32_t e = 0; e < b->nevents; e++)
        must(count[e] == b->events[e].triggers, "an event signalled fewer times than its producer count", e);
}

/* The queues: a permutation of the tasks that workers running them in order,
 * each blocked on its head task's event, finish. */
static void walk_queues(const mpkb_blob *b, uint32_t *count, uint32_t *pos, uint8_t *mark)
{
    const mpkb_meta *m = b->meta;
    must(b->nqueues == m->workers && m->workers > 0, "queue count is the worker count", b->nqueues);
    memset(mark, 0, b->ntasks);
    uint64_t total = 0;
    for (uint32_t q = 0; q < b->nqueues; q++) {
        const mpkb_queue *Q = &b->queues[q];
        must(Q->first <= b->nqtasks && b->nqtasks - Q->first >= Q->count, "queue range", q);
        for (uint32_t k = 0; k < Q->count; k++) {
            uint32_t t = b->qtasks[Q->first + k];
            must(t < b->ntasks && !mark[t], "queued task out of range or twice", t);
            mark[t] = 1;
            touched += b->tasks[t].op;
        }
        total += Q->count;
        pos[q] = 0;
    }
    must(total == b->ntasks, "the queues hold every task", (uint32_t)total);
    memset(count, 0, sizeof *count * b->nevents);
    uint64_t done = 0;
    for (bool progress = true; progress;) {
        progress = false;
        for (uint32_t q = 0; q < b->nqueues; q++) {
            const mpkb_queue *Q = &b->queues[q];
            for (; pos[q] < Q->count; pos[q]++, done++, progress = true) {
                const mpkb_task *x = &b->tasks[b->qtasks[Q->first + pos[q]]];
                const mpkb_event *ev = &b->events[x->dep];
                if (!ev->lag && count[x->dep] < ev->triggers)
                    break;
                for (uint32_t k = 0; k < x->trig_count; k++)
                    count[b->triggers[x->trig_first + k]]++;
            }
        }
    }
    must(done == b->ntasks, "the queues deadlock", (uint32_t)done);
}

/* rows: the tokens of a step of this graph (1, or the chunk) */
static void walk_meta(const mpkb_blob *b, uint32_t rows)
{
    const mpkb_meta *m = b->meta;
    touched += strlen(mpkb_str(b, m->name)) + b->hdr->version;
    const mpkb_tensor *tok = tensor_at(b, m->token_input), *nxt = tensor_at(b, m->next_output);
    const mpkb_tensor *lg = tensor_at(b, m->logits);
    must(tok->dtype == MPKB_I32 && tok->space == MPKB_SPACE_ARENA && mpkb_numel(tok) == rows, "token input", rows);
    must(nxt->dtype == MPKB_I32 && nxt->space == MPKB_SPACE_ARENA && mpkb_numel(nxt) == 1, "next output", 0);
    must(lg->dtype != MPKB_I32 && lg->space == MPKB_SPACE_ARENA && mpkb_numel(lg) == m->vocab && m->vocab,
         "logits", m->vocab);
    if (m->pos_input != MPKB_NONE)
        must(tensor_at(b, m->pos_input)->dtype == MPKB_I32 && mpkb_numel(tensor_at(b, m->pos_input)) == rows,
             "pos input", rows);
    must(m->step_event < b->nevents && b->events[m->step_event].lag == 1, "step event", m->step_event);
    must(m->neos <= MPKB_MAX_EOS && m->max_seq > 0, "eos count and max_seq", m->neos);
    for (uint32_t i = 0; i < m->neos; i++)
        must(m->eos[i] >= 0 && (uint32_t)m->eos[i] < m->vocab, "eos id", i);
    must(b->ntasks > 0 && b->nevents > 0 && b->nqtasks == b->ntasks, "task and event counts", b->ntasks);
}

/* ---- the executor -------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

/* Element operations of one step on the CPU executor, roughly. */
static uint64_t step_work(const mpkb_blob *b)
{
    uint64_t w = 0;
    for (uint32_t i = 0; i < b->ntasks; i++) {
        const mpkb_task *t = &b->tasks[i];
        uint64_t lo = (uint64_t)(int64_t)t->i[0], hi = (uint64_t)(int64_t)t->i[1];
        uint64_t span = hi > lo ? hi - lo : 0, c = 1;
        switch (t->op) {
        case MPKB_OP_MATVEC: {
            const mpkb_tensor *x = &b->tensors[t->t[0]];
            c = sat_mul(x->dims[0], sat_mul(x->dims[1], span + 2));
            break;
        }
        case MPKB_OP_ATTENTION: {
            const mpkb_tensor *q = &b->tensors[t->t[0]], *cache = &b->tensors[t->t[3]];
            uint64_t per = q->dims[1] / cache->dims[1], D = q->dims[2], S = cache->dims[2];
            uint64_t len = (uint64_t)t->i[2] < S ? (uint64_t)t->i[2] : S; /* the positions it visits */
            c = sat_mul(q->dims[0], sat_mul(sat_add(per, 1), sat_mul(D, sat_mul(len + 2, 2)))); /* per row */
            break;
        }
        case MPKB_OP_ATTN_MERGE:
            c = sat_mul((uint64_t)t->i[2], sat_mul(mpkb_numel(&b->tensors[t->t[0]]) / b->tensors[t->t[0]].dims[0], 3));
            break;
        case MPKB_OP_RMSNORM: c = sat_mul(span, 2 * (uint64_t)b->tensors[t->t[1]].dims[0]); break;
        case MPKB_OP_ROPE: c = sat_mul(span, 3 * (uint64_t)b->tensors[t->t[0]].dims[2]); break;
        case MPKB_OP_ARGMAX_REDUCE: c = mpkb_numel(&b->tensors[t->t[0]]); break;
        case MPKB_OP_COPY: c = sat_mul((uint64_t)t->i[0], (uint64_t)t->i[2] + 1); break;
        case MPKB_OP_EMBED: c = sat_mul(span, b->tensors[t->t[1]].dims[0]); break; /* per row */
        case MPKB_OP_ARGMAX_PART:
        case MPKB_OP_ADD:
        case MPKB_OP_MUL:
        case MPKB_OP_SILU: c = span; break;
        default: break;
        }
        w = sat_add(w, sat_add(c, 1));
    }
    return w;
}

static void execute(const mpkb_blob *b)
{
    const mpkb_meta *m = b->meta;
    if ((m->arena_size + m->state_size) * m->tp >= SMALL_BYTES || step_work(b) * m->tp > MAX_WORK ||
        (b->chunk && step_work(b->chunk) * m->tp > MAX_WORK))
        return;
    uint64_t wbytes = 0;
    for (uint32_t i = 0; i < b->ntensors; i++)
        if (b->tensors[i].space == MPKB_SPACE_WEIGHT && b->tensors[i].base == i)
            wbytes = sat_add(wbytes, b->tensors[i].nbytes);
    if (wbytes >= SMALL_BYTES)
        return;
    const void **table = calloc(b->ntensors + 1, sizeof *table);
    float *logits = malloc(sizeof *logits * m->vocab);
    bool ok = table && logits;
    for (uint32_t i = 0; ok && i < b->ntensors; i++)
        if (b->tensors[i].space == MPKB_SPACE_WEIGHT && b->tensors[i].base == i)
            ok = (table[i] = calloc(1, b->tensors[i].nbytes)) != NULL;
    const void *const *tables[MPKB_MAX_TP];
    for (uint32_t r = 0; r < m->tp && r < MPKB_MAX_TP; r++) /* every rank: the same (zero) weights */
        tables[r] = table;
    mpk_cpu *M = ok ? mpk_cpu_new(b, tables, 1, sink) : NULL;
    int32_t next = 0, prompt[3] = {0, 0, 0};
    if (M && b->chunk && m->max_seq >= 4 && mpk_cpu_prefill(M, prompt, 3, true, NULL, &next, logits)) {
        touched += (uint64_t)next + (logits[m->vocab - 1] == 0);
        if (mpk_cpu_step(M, next, true, NULL, &next, NULL))
            touched += (uint64_t)next;
    } else if (M && !b->chunk && mpk_cpu_step(M, 0, true, NULL, &next, logits)) {
        touched += (uint64_t)next + (logits[m->vocab - 1] == 0);
        if (m->max_seq >= 2 && mpk_cpu_step(M, next, true, NULL, &next, NULL))
            touched += (uint64_t)next;
    }
    mpk_cpu_free(M);
    for (uint32_t i = 0; table && i < b->ntensors; i++)
        free((void *)table[i]);
    free(table);
    free(logits);
}

static void consume_graph(const mpkb_blob *b)
{
    walk_tensors(b);
    walk_tasks(b);
    uint32_t *count = malloc(sizeof *count * b->nevents);
    uint32_t *ready = malloc(sizeof *ready * b->ntasks);
    uint32_t *pos = malloc(sizeof *pos * b->nqueues);
    uint8_t *mark = malloc(b->ntasks);
    if (!count || !ready || !pos || !mark)
        abort();
    walk_events(b, mark);
    walk_step(b, count, ready, mark);
    walk_queues(b, count, pos, mark);
    free(count);
    free(ready);
    free(pos);
    free(mark);
}

static void consume(const mpkb_blob *b)
{
    walk_meta(b, 1);
    consume_graph(b);
    if (b->chunk) {
        walk_meta(b->chunk, b->meta->chunk);
        consume_graph(b->chunk);
    }
    execute(b);
}

/* Parse a copy of the input of exactly its size, CRC-fixed if asked. */
static void check_blob(const uint8_t *data, size_t size, bool fix)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    memcpy(buf, data, size);
    if (fix)
        fix_crcs(buf, size);
    mpkb_blob b;
    if (mpkb_parse(&b, buf, size, "fuzz.mpkb", sink)) {
        consume(&b);
        mpkb_close(&b); /* the chunk graph's view; the buffer is ours */
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sink)
        sink = fopen("/dev/null", "w");
    if (!sink)
        abort();
#if defined(MPK_FUZZ_FIX_CRC)
    check_blob(data, size, true);
#elif defined(MPK_FUZZ_MAIN)
    check_blob(data, size, false);
    check_blob(data, size, true);
#else
    check_blob(data, size, false);
#endif
    return 0;
}

#ifdef MPK_FUZZ_MAIN
#include "replay.h"

/* Reading and one step must stay fast. */
const char fuzz_replay_name[] = "blob fuzz smoke";
static int naccepted;

const char *fuzz_replay_counts(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, " (%d valid as they are), each raw and CRC-fixed", naccepted);
    return buf;
}

/* data is malloc'd, so 8-byte aligned as mpkb_parse needs. */
void fuzz_replay_one(const char *path, const uint8_t *data, size_t size)
{
    if (!sink)
        sink = fopen("/dev/null", "w");
    mpkb_blob b;
    if (mpkb_parse(&b, data, size, path, sink)) {
        naccepted++;
        mpkb_close(&b);
    }
    LLVMFuzzerTestOneInput(data, size);
}
#endif
