/*
 * mpk-run.c - load a blob and a checkpoint, and decode.
 *
 *   mpk-run MODEL.mpkb --weights PATH --prompt-ids 1,2,3 -n N [--cpu]
 *
 * Everything that can be checked is checked before the first step: the
 * blob (runtime/blob.c), every weight by name, dtype and shape
 * (runtime/weights.c), the prompt ids against the vocabulary and the
 * length against the KV cache. Then the prompt is fed one token per step
 * and the greedy continuation printed on one line of standard output as it
 * is generated, ending early at an end-of-sequence id of the model. The
 * GPU executor (gpu.cu) runs the whole generation in one kernel launch and
 * streams the tokens back; --cpu runs the reference executor (cpu.c)
 * step by step instead. A blob built with mpk build --tp N runs as N
 * ranks, each with its part of every split weight (--cpu only, so far).
 * Exit status: 0 success, 1 a problem with the blob, the weights or the
 * run, 2 usage errors.
 */
#include "runtime/runtime.h"
#include "mpk/util.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef MPK_VERSION
#define MPK_VERSION "0.1.0"
#endif

enum { EXIT_RUN = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: mpk-run MODEL.mpkb --weights PATH --prompt-ids ID,ID,... [-n N] [options]\n"
    "\n"
    "Decode greedily: feed the prompt, then print the N generated token ids on\n"
    "one line of standard output (fewer if the model emits an end-of-sequence id).\n"
    "Runs on the GPU, the whole generation in one kernel launch, unless --cpu.\n"
    "\n"
    "options:\n"
    "  --weights PATH     a .safetensors file, or a directory holding\n"
    "                     model.safetensors or model.safetensors.index.json\n"
    "  --prompt-ids LIST  comma-separated token ids (at least one)\n"
    "  -n N               tokens to generate (default 16)\n"
    "  --cpu              run on the CPU reference executor instead of the GPU\n"
    "  --schedule KIND    GPU: dynamic (tasks handed out in order as workers\n"
    "                     free up; the default) or static (each worker runs the\n"
    "                     queue the compiler placed)\n"
    "  --watchdog MS      GPU: a wait longer than MS milliseconds is a stall:\n"
    "                     report it and stop (default 10000)\n"
    "  --trace FILE       GPU: write each task's start and end per SM as Chrome\n"
    "                     trace JSON (chrome://tracing, ui.perfetto.dev)\n"
    "  --seed S           CPU: order of tasks: 0 in order of readiness, else a\n"
    "                     random order seeded with S (default 1)\n"
    "  --dump-logits FILE write the logits of every step as float32 (steps x vocab)\n"
    "  --stats            print load time, time to first token and per-token\n"
    "                     latency on standard error\n"
    "  -h, --help         print this help\n"
    "  --version          print the version\n"
    "\n"
    "See mpk-run(1).\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "mpk-run: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'mpk-run --help' for more information.\n");
    return EXIT_USAGE;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v > max)
        return false;
    *out = v;
    return true;
}

/* "1,2,3" -> ids; false on anything else. */
static int32_t *parse_ids(const char *s, int *n)
{
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    char *copy = strdup(s);
    if (!ids || !copy) {
        free(ids), free(copy);
        return NULL;
    }
    *n = 0;
    bool ok = *copy != 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && ok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        ok = parse_u64(tok, INT32_MAX, &v);
        ids[(*n)++] = (int32_t)v;
    }
    ok = ok && *n == cap;
    free(copy);
    if (!ok) {
        free(ids);
        return NULL;
    }
    return ids;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    const char *blob, *weights, *prompt, *logits, *trace;
    uint64_t n, seed, watchdog;
    int64_t stall;
    int schedule;
    bool cpu, stats, gpu_opt;
} options;

static void print_token(void *ctx, int32_t tok)
{
    int *made = ctx;
    printf("%s%d", *made ? " " : "", tok);
    fflush(stdout);
    ++*made;
}

/* The whole generation in one launch on the GPU. */
static int run_gpu(const options *o, const mpkb_blob *b, const void *const *table, const int32_t *prompt, int np,
                   double t0, FILE *lf)
{
    const mpkb_meta *m = b->meta;
    mpk_gpu_opts go = {.schedule = o->schedule, .watchdog_ms = (uint32_t)o->watchdog, .trace = o->trace,
                       .test_stall = (int32_t)o->stall, .progress = isatty(2) != 0};
    uint64_t steps = (uint64_t)np + o->n - 1;
    float *logits = NULL;
    int status = EXIT_RUN, made = 0;
    mpk_gpu_stats st;
    if (o->stall >= (int64_t)b->ntasks) {
        fprintf(stderr, "mpk-run: error: --test-stall %lld: the blob has tasks 0..%u\n", (long long)o->stall,
                b->ntasks - 1);
        return EXIT_USAGE;
    }
    mpk_gpu *G = mpk_gpu_new(b, table, &go, stderr);
    if (!G)
        return EXIT_RUN;
    if (lf && !(logits = malloc(sizeof *logits * steps * m->vocab))) {
        fprintf(stderr, "mpk-run: error: out of memory for %llu steps of logits\n", (unsigned long long)steps);
        goto out;
    }
    uint64_t wbytes;
    double load = mpk_gpu_load_ms(G, &wbytes);
    if (o->stats)
        fprintf(stderr, "mpk-run: loaded %s (%u tasks) and %.1f MiB of weights in %.1f ms (%.2f GB/s), %.1f ms in all\n",
                o->blob, b->ntasks, (double)wbytes / 1048576.0, load, load > 0 ? (double)wbytes / 1e6 / load : 0.0,
                now_ms() - t0);
    bool ok = mpk_gpu_generate(G, prompt, (uint32_t)np, (uint32_t)o->n, logits, print_token, &made, &st);
    if (ok || made)
        printf("\n");
    fflush(stdout);
    if (!ok)
        goto out;
    if (lf && fwrite(logits, sizeof *logits * m->vocab, st.steps, lf) != st.steps) {
        fprintf(stderr, "mpk-run: error: writing '%s' failed\n", o->logits);
        goto out;
    }
    if (o->stats) {
        fprintf(stderr, "mpk-run: gpu: %u steps (%s schedule, %d workers), time to first token %.2f ms, ",
                st.steps, o->schedule == MPK_SCHED_STATIC ? "static" : "dynamic", st.sms, st.ttft_ms);
        if (st.made > 1)
            fprintf(stderr, "median per token %.3f ms, %.1f tokens/s\n", st.per_token_ms, 1e3 / st.per_token_ms);
        else
            fprintf(stderr, "one token: no per-token latency\n");
        if (o->trace)
            fprintf(stderr, "mpk-run: trace: %u task records in %s\n", st.trace_events, o->trace);
    }
    status = 0;
out:
    free(logits);
    mpk_gpu_free(G);
    return status;
}

static int run(const options *o)
{
    double t0 = now_ms();
    int status = EXIT_RUN;
    mpkb_blob b;
    mpk_weights *w[MPKB_MAX_TP] = {NULL};
    const void **table[MPKB_MAX_TP] = {NULL};
    mpk_cpu *M = NULL;
    mpk_out lo = {0};
    FILE *lf = NULL;
    const char **inputs = NULL;
    float *logits = NULL;
    int np = 0;
    int32_t *prompt = parse_ids(o->prompt, &np);
    double *times = NULL;
    if (!prompt)
        return usage_error("--prompt-ids needs comma-separated token ids, not '%s'", o->prompt);
    if (!mpkb_open(&b, o->blob, stderr)) {
        free(prompt);
        return EXIT_RUN;
    }
    const mpkb_meta *m = b.meta;
    for (int i = 0; i < np; i++)
        if ((uint32_t)prompt[i] >= m->vocab) {
            fprintf(stderr, "mpk-run: error: prompt id %d is outside the model's vocabulary (0..%u)\n",
                    prompt[i], m->vocab - 1);
            goto out;
        }
    if ((uint64_t)np + o->n - 1 > m->max_seq) {
        fprintf(stderr, "mpk-run: error: %d prompt tokens and %llu generated need %llu positions; "
                        "the model's KV cache holds %u (rebuild with -D max_seq=N)\n",
                np, (unsigned long long)o->n, (unsigned long long)(np + o->n - 1), m->max_seq);
        goto out;
    }
    if (!o->cpu && m->tp > 1) {
        fprintf(stderr, "mpk-run: error: %s is built for %u GPUs (mpk build --tp %u); this mpk-run runs "
                        "tensor-parallel blobs on the CPU executor only: run with --cpu\n",
                o->blob, m->tp, m->tp);
        goto out;
    }
    uint64_t wbytes = 0;
    for (uint32_t r = 0; r < m->tp; r++) {
        table[r] = mpk_bind_weights(&b, o->weights, r, &w[r], stderr);
        if (!table[r])
            goto out;
        wbytes += mpk_weights_bytes(w[r]);
    }
    if (o->logits) {
        /* never over the blob or a checkpoint file (mapped: truncating one
         * would kill this run with SIGBUS) */
        int nin = 1;
        while (mpk_weights_file(w[0], (size_t)nin - 1))
            nin++;
        inputs = calloc((size_t)nin, sizeof *inputs);
        if (!inputs)
            mpk_out_of_memory();
        inputs[0] = o->blob;
        for (int i = 1; i < nin; i++)
            inputs[i] = mpk_weights_file(w[0], (size_t)i - 1);
        if (!mpk_out_open(&lo, o->logits, inputs, nin, stderr)) {
            status = EXIT_USAGE;
            goto out;
        }
        lf = lo.f;
    }
    if (!o->cpu) {
        status = run_gpu(o, &b, table[0], prompt, np, t0, lf);
        goto out;
    }
    M = mpk_cpu_new(&b, (const void *const *const *)table, o->seed, stderr);
    if (!M)
        goto out;
    if (o->logits) {
        logits = malloc(sizeof *logits * m->vocab);
        if (!logits) {
            fprintf(stderr, "mpk-run: error: out of memory for the logits\n");
            goto out;
        }
    }
    times = calloc(o->n + (uint64_t)np + 1, sizeof *times);
    if (!times) {
        fprintf(stderr, "mpk-run: error: out of memory for the times of %llu steps\n",
                (unsigned long long)(o->n + (uint64_t)np));
        goto out;
    }
    double t1 = now_ms();
    if (o->stats)
        fprintf(stderr, "mpk-run: loaded %s (%u tasks%s) and %.1f MiB of weights in %.1f ms\n", o->blob,
                b.ntasks, m->tp > 1 ? " per rank, tensor parallel" : "", (double)wbytes / 1048576.0, t1 - t0);
    int32_t token = prompt[0], next = 0;
    uint64_t made = 0;
    double ttft = 0;
    for (uint64_t s = 0; made < o->n; s++) {
        double ts = now_ms();
        if (!mpk_cpu_step(M, token, o->seed != 0, &next, logits))
            goto out;
        if (lf && fwrite(logits, sizeof *logits, m->vocab, lf) != m->vocab) {
            fprintf(stderr, "mpk-run: error: writing '%s' failed: %s\n", o->logits, strerror(errno));
            lf = NULL;
            mpk_out_close(&lo, false, stderr);
            goto out;
        }
        times[s] = now_ms() - ts;
        if (s + 1 < (uint64_t)np) {
            token = prompt[s + 1];
            continue;
        }
        if (made == 0)
            ttft = now_ms() - t1;
        printf("%s%d", made ? " " : "", next);
        fflush(stdout);
        made++;
        token = next;
        bool eos = false;
        for (uint32_t k = 0; k < m->neos; k++)
            eos |= next == m->eos[k];
        if (eos)
            break;
    }
    printf("\n");
    if (o->stats) {
        uint64_t steps = (uint64_t)np + made - 1;
        qsort(times, steps, sizeof *times, cmp_double);
        fprintf(stderr, "mpk-run: cpu: %llu steps, time to first token %.1f ms, median step %.2f ms\n",
                (unsigned long long)steps, ttft, times[steps / 2]);
    }
    status = 0;
out:
    /* The rows of the steps run are kept, a failed run's too (they show
     * where it went wrong); a failed write keeps the old file. */
    if (lf && !mpk_out_close(&lo, true, stderr) && status == 0)
        status = EXIT_RUN;
    free(inputs);
    free(logits);
    free(times);
    mpk_cpu_free(M);
    for (int r = 0; r < MPKB_MAX_TP; r++) {
        free(table[r]);
        mpk_weights_close(w[r]);
    }
    mpkb_close(&b);
    free(prompt);
    return status;
}

int main(int argc, char **argv)
{
    enum {
        OPT_WEIGHTS = 256, OPT_CPU, OPT_PROMPT, OPT_SEED, OPT_LOGITS, OPT_STATS, OPT_VERSION, OPT_SCHEDULE,
        OPT_WATCHDOG, OPT_TRACE, OPT_STALL
    };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"weights", required_argument, NULL, OPT_WEIGHTS},
        {"cpu", no_argument, NULL, OPT_CPU},
        {"prompt-ids", required_argument, NULL, OPT_PROMPT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"dump-logits", required_argument, NULL, OPT_LOGITS},
        {"stats", no_argument, NULL, OPT_STATS},
        {"schedule", required_argument, NULL, OPT_SCHEDULE},
        {"watchdog", required_argument, NULL, OPT_WATCHDOG},
        {"trace", required_argument, NULL, OPT_TRACE},
        {"test-stall", required_argument, NULL, OPT_STALL},
        {NULL, 0, NULL, 0},
    };
    options o = {.n = 16, .seed = 1, .watchdog = 10000, .stall = -1, .schedule = MPK_SCHED_DYNAMIC};
    const char *gpu_only = NULL;
    uint64_t v;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":hn:", longopts, NULL)) != -1;) {
        switch (c) {
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_VERSION: printf("mpk-run %s\n", MPK_VERSION); return 0;
        case OPT_WEIGHTS: o.weights = optarg; break;
        case OPT_CPU: o.cpu = true; break;
        case OPT_PROMPT: o.prompt = optarg; break;
        case OPT_LOGITS: o.logits = optarg; break;
        case OPT_STATS: o.stats = true; break;
        case OPT_SCHEDULE:
            if (!strcmp(optarg, "static"))
                o.schedule = MPK_SCHED_STATIC;
            else if (!strcmp(optarg, "dynamic"))
                o.schedule = MPK_SCHED_DYNAMIC;
            else
                return usage_error("--schedule is static or dynamic, not '%s'", optarg);
            gpu_only = "--schedule";
            break;
        case OPT_WATCHDOG:
            if (!parse_u64(optarg, 3600000, &o.watchdog) || o.watchdog == 0)
                return usage_error("--watchdog needs milliseconds from 1 to 3600000, not '%s'", optarg);
            gpu_only = "--watchdog";
            break;
        case OPT_TRACE: o.trace = optarg; gpu_only = "--trace"; break;
        case OPT_STALL:
            if (!parse_u64(optarg, INT32_MAX, &v))
                return usage_error("--test-stall needs a task index, not '%s'", optarg);
            o.stall = (int64_t)v;
            gpu_only = "--test-stall";
            break;
        case 'n':
            if (!parse_u64(optarg, 1u << 30, &o.n) || o.n == 0)
                return usage_error("-n needs a positive number of tokens, not '%s'", optarg);
            break;
        case OPT_SEED:
            if (!parse_u64(optarg, UINT64_MAX, &o.seed))
                return usage_error("--seed needs a non-negative integer, not '%s'", optarg);
            break;
        case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no blob given");
    if (optind + 1 < argc)
        return usage_error("one blob at a time; '%s' is one too many", argv[optind + 1]);
    o.blob = argv[optind];
    if (!o.weights)
        return usage_error("%s", "--weights PATH is required");
    if (!o.prompt)
        return usage_error("%s", "--prompt-ids is required");
    if (o.cpu && gpu_only)
        return usage_error("%s is for the GPU executor; it means nothing with --cpu", gpu_only);
    return run(&o);
}
