/*
 * trace.c - mpk-run --trace: the GPU's task records as a Chrome / Perfetto
 * trace (the JSON trace event format): one complete event per task run,
 * named by the task's label, its kind as the category, on its SM's track.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cuda/shared.h"

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* The weight bytes a task streams (matvec, embed; 0 for the rest), for
 * tools/trace-report.py's GB/s. */
static uint64_t weight_bytes(const mpkb_blob *b, const mpkb_task *t)
{
    switch ((mpkb_op)t->op) {
    case MPKB_OP_MATVEC: {
        const mpkb_tensor *w = &b->tensors[t->matvec.w];
        return (uint64_t)(t->matvec.hi - t->matvec.lo) * w->dims[1] * mpkb_dtype_size(w->dtype);
    }
    case MPKB_OP_EMBED:
        return (uint64_t)(t->embed.hi - t->embed.lo) * mpkb_dtype_size(b->tensors[t->embed.table].dtype);
    default: return 0;
    }
}

/* Microseconds from a to b, 0 when b is before a (or unset). */
static double us(uint64_t b, uint64_t a) { return b > a && a ? (double)(b - a) / 1e3 : 0.0; }

/* One track per SM, times in microseconds from the first task's start;
 * args.bytes: weight_bytes, where not 0; args.wait, run, sig (and in, for
 * an op with a mark): the phases of the task in microseconds. */
bool mpk_write_trace(const mpkb_blob *b, const trace_rec *r, unsigned n, int sms, const char *path, FILE *err)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(err, "mpk-run: error: cannot write '%s': %s\n", path, strerror(errno));
        return false;
    }
    uint64_t t0 = UINT64_MAX;
    for (unsigned i = 0; i < n; i++)
        t0 = r[i].start < t0 ? r[i].start : t0;
    fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    for (unsigned i = 0; i < n; i++) {
        const mpkb_blob *gb = r[i].graph && b->chunk ? b->chunk : b; /* the record's graph */
        const mpkb_task *t = &gb->tasks[r[i].task < gb->ntasks ? r[i].task : 0];
        fprintf(f, "{\"name\":");
        json_str(f, mpkb_str(b, t->label));
        fprintf(f, ",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":0,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,"
                   "\"args\":{\"task\":%u,\"step\":%u,%s\"layer\":%d,\"i\":[%d,%d,%d,%d]",
                mpkb_op_name(t->op), r[i].sm, (double)(r[i].start - t0) / 1e3, (double)(r[i].end - r[i].start) / 1e3,
                r[i].task, r[i].step, gb != b ? "\"graph\":\"chunk\"," : "", t->layer, t->i[0], t->i[1], t->i[2],
                t->i[3]);
        /* the phases (shared.h): waited for its event, ran (the op's
         * mark into it, where it has one), signalled */
        fprintf(f, ",\"wait\":%.3f,\"run\":%.3f,\"sig\":%.3f", us(r[i].start, r[i].arrive),
                us(r[i].ran, r[i].start), us(r[i].end, r[i].ran));
        if (r[i].mark)
            fprintf(f, ",\"in\":%.3f", us(r[i].mark, r[i].start));
        uint64_t wb = weight_bytes(b, t);
        if (wb)
            fprintf(f, ",\"bytes\":%llu", (unsigned long long)wb);
        fprintf(f, "}},\n");
    }
    for (int s = 0; s < sms; s++)
        fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"args\":{\"name\":\"SM %d\"}}%s\n", s,
                s, s + 1 < sms ? "," : "");
    fprintf(f, "]}\n");
    if (fclose(f) != 0) {
        fprintf(err, "mpk-run: error: writing '%s' failed\n", path);
        return false;
    }
    return true;
}
