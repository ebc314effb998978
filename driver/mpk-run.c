/*
 * mpk-run.c - load a blob and a checkpoint, and decode.
 *
 *   mpk-run MODEL.mpkb --weights PATH --prompt-ids 1,2,3 -n N [--cpu]
 *   mpk-run MODEL.mpkb --weights DIR --prompt TEXT | -f FILE | --chat
 *
 * Everything that can be checked is checked before the first step: the
 * blob (runtime/blob.c), every weight by name, dtype and shape
 * (runtime/weights.c), the prompt ids against the vocabulary and the
 * length against the KV cache. Then the prompt is fed one token per step
 * and the continuation printed on one line of standard output as it
 * is generated, ending early at an end-of-sequence id of the model. The
 * GPU executor (runtime/cuda) runs the whole generation in one kernel launch and
 * streams the tokens back; --cpu runs the reference executor (cpu.c)
 * step by step instead. A text prompt (--prompt, -f) is encoded with the
 * checkpoint's tokenizer.json (text/) and the continuation written as
 * UTF-8 text as it arrives; --chat holds a conversation on the terminal in
 * the checkpoint's chat format. generation_config.json's EOS ids end a
 * generation too. The next token is the greedy argmax, or drawn by the
 * sampler of mpk/sample.h (--temperature, --top-k, --top-p, --min-p,
 * --seed; defaults from generation_config.json's do_sample and its
 * fields, as transformers reads them; on both executors). A blob
 * built with mpk build --tp N runs as N ranks, each with its part of every
 * split weight (--cpu only, so far).
 * Exit status: 0 success, 1 a problem with the blob, the weights or the
 * run, 2 usage errors.
 */
#include "runtime/runtime.h"
#include "mpk/util.h"
#include "text/text.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MPK_VERSION
#define MPK_VERSION "0.1.0"
#endif

enum { EXIT_RUN = 1, EXIT_USAGE = 2, MAX_STOP = 8, MAX_PROMPT_FILE = 64 << 20 };

static const char usage_text[] =
    "usage: mpk-run MODEL.mpkb --weights PATH --prompt-ids ID,ID,... [-n N] [options]\n"
    "       mpk-run MODEL.mpkb --weights DIR (--prompt TEXT | -f FILE) [-n N] [options]\n"
    "       mpk-run MODEL.mpkb --weights DIR --chat [options]\n"
    "\n"
    "Decode: feed the prompt, then print the N generated token ids on one line\n"
    "of standard output (fewer if the model emits an end-of-sequence id), or for\n"
    "a text prompt the generated text as it arrives. Greedy, unless the sampling\n"
    "options or the checkpoint's generation_config.json say to sample. Runs on\n"
    "the GPU, the whole generation in one kernel launch, unless --cpu.\n"
    "\n"
    "options:\n"
    "  --weights PATH     a .safetensors file, or a directory holding\n"
    "                     model.safetensors or model.safetensors.index.json\n"
    "  --prompt-ids LIST  comma-separated token ids (at least one)\n"
    "  --prompt TEXT      a text prompt, encoded with the checkpoint's tokenizer\n"
    "  -f FILE            the text prompt in FILE ('-': standard input)\n"
    "  --ids              with a text prompt: print the generated ids, not text\n"
    "  --stop STRING      end the generation before STRING (repeatable, 8 at most)\n"
    "  --chat             a conversation on the terminal, one line per user turn,\n"
    "                     in the checkpoint's chat format (tokenizer_config.json)\n"
    "  --chat-format F    chatml or llama3, whatever the chat template says\n"
    "  --tokenizer PATH   tokenizer.json, or its directory (default: beside the\n"
    "                     weights)\n"
    "  -n N               tokens to generate (default: generation_config.json's\n"
    "                     max_new_tokens, cut to fit the KV cache, else 16;\n"
    "                     16 per turn with --chat)\n"
    "  --cpu              run on the CPU reference executor instead of the GPU\n"
    "  --schedule KIND    GPU: static (each worker runs the queue the compiler\n"
    "                     placed), dynamic (tasks handed out in order as workers\n"
    "                     free up) or auto (the default: static when the blob was\n"
    "                     placed for as many workers as the GPU has SMs, else\n"
    "                     dynamic)\n"
    "  --watchdog MS      GPU: a wait longer than MS milliseconds is a stall:\n"
    "                     report it and stop (default 10000)\n"
    "  --trace FILE       GPU: write each task's start and end per SM as Chrome\n"
    "                     trace JSON (chrome://tracing, ui.perfetto.dev)\n"
    "  --temperature T    sample at temperature T >= 0; 0 is greedy (default:\n"
    "                     generation_config.json's if do_sample, else 0)\n"
    "  --top-k K          sample from the K most likely tokens; 0: all\n"
    "  --top-p P          ... from the fewest whose probability adds up to P,\n"
    "                     0 < P <= 1; 1: all\n"
    "  --min-p P          ... from those at least P times as likely as the most\n"
    "                     likely, 0 <= P < 1; 0: all\n"
    "  --seed S           the sampling seed (default 0): the same seed, model and\n"
    "                     prompt give the same tokens\n"
    "  --order-seed S     CPU: order of tasks: 0 in order of readiness, else a\n"
    "                     random order seeded with S (default 1)\n"
    "  --no-chunk         feed the prompt one token per step even when the blob\n"
    "                     has a chunk graph (mpk build --chunk)\n"
    "  --dump-logits FILE write the logits of every step as float32 (steps x vocab;\n"
    "                     a chunked prompt has those of its last token only)\n"
    "  --stats            print load time, time to first token and per-token\n"
    "                     latency on standard error\n"
    "  -h, --help         print this help\n"
    "  --version          print the version\n"
    "\n"
    "See mpk-run(1).\n";

#define usage_error(...) mpk_usage_error("mpk-run", "mpk-run", __VA_ARGS__)

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

/* A float option's value, finite. */
static bool parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || !isfinite((float)v))
        return false;
    *out = (float)v;
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    const char *blob, *weights, *prompt, *logits, *trace;
    const char *text, *text_file, *tokenizer, *chat_format;
    const char *stop[MAX_STOP];
    int nstop;
    uint64_t n, order_seed, watchdog;
    bool no_chunk;          /* the prompt one token per step, chunk graph or not */
    mpk_sampler samp;   /* the flags', then (run) with generation_config.json's defaults */
    bool set_temperature, set_top_k, set_top_p, set_min_p, set_n;
    bool n_from_config; /* -n is generation_config.json's max_new_tokens: cut to fit the cache */
    int64_t stall;
    int schedule;
    bool cpu, stats, gpu_opt, ids, chat;
} options;

/* Where the generated tokens go: ids on one line, or (with a tokenizer)
 * text as it arrives. made counts every token the model made. */
typedef struct {
    mpk_tok *T;
    mpk_textout to;
    int32_t eos[MPKB_MAX_EOS + MPK_GEN_MAX_EOS + 1];
    int neos;
    int made;
    bool done;   /* an EOS id or a stop string: the rest is not shown */
    bool failed; /* writing standard output failed */
    mpk_ids got; /* text mode: the ids shown (a chat turn's reply) */
} sink;

static void add_eos(sink *k, int32_t id)
{
    for (int i = 0; i < k->neos; i++)
        if (k->eos[i] == id)
            return;
    if (id >= 0 && k->neos < (int)(sizeof k->eos / sizeof k->eos[0]))
        k->eos[k->neos++] = id;
}

static bool is_eos(const sink *k, int32_t id)
{
    for (int i = 0; i < k->neos; i++)
        if (k->eos[i] == id)
            return true;
    return false;
}

/* One generated token; false once the generation is over for the user. */
static bool sink_token(sink *k, int32_t tok)
{
    if (k->done)
        return false;
    k->made++;
    if (!k->T) {
        printf("%s%d", k->made > 1 ? " " : "", tok);
        fflush(stdout);
        k->done = is_eos(k, tok);
        return !k->done;
    }
    size_t len;
    const char *p = mpk_tok_piece(k->T, tok, &len, NULL);
    if (is_eos(k, tok) || !p) { /* an id the tokenizer lacks ends the text */
        k->done = true;
        return false;
    }
    if (!mpk_ids_push(&k->got, tok) || !mpk_textout_put(&k->to, p, len, stdout))
        k->failed = k->done = true;
    k->done |= k->to.stopped;
    return !k->done;
}

/* The end of one generation's output: the ids' newline, or what text is
 * held; a terminal gets a newline after text that lacks one. Flushed, so
 * that --stats on standard error starts on a line of its own. */
static bool sink_end(sink *k, bool newline)
{
    if (!k->T) {
        if (newline)
            printf("\n");
    } else if (!mpk_textout_flush(&k->to, stdout)) {
        k->failed = true;
    } else if (isatty(1) && k->to.last != '\n' && k->to.last >= 0) {
        printf("\n");
    }
    if (fflush(stdout) != 0 || k->failed) {
        fprintf(stderr, "mpk-run: error: writing the output failed\n");
        return false;
    }
    return true;
}

static void print_token(void *ctx, int32_t tok)
{
    sink_token(ctx, tok);
}

/* --stats after text that did not end a line, where both streams go to
 * the same place: start on a line of its own. */
static void stats_line(const sink *k)
{
    struct stat a, b;
    if (k->T && k->to.last != '\n' && k->to.last >= 0 && fstat(1, &a) == 0 && fstat(2, &b) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        fputc('\n', stderr);
}

/* --stats: what picks the tokens. */
static void print_sampler(const mpk_sampler *s)
{
    if (mpk_sampler_greedy(s))
        fprintf(stderr, "mpk-run: greedy decoding\n");
    else
        fprintf(stderr, "mpk-run: sampling: temperature %g, top-k %d, top-p %g, min-p %g, seed %llu\n",
                (double)s->temperature, s->top_k, (double)s->top_p, (double)s->min_p,
                (unsigned long long)s->seed);
}

/* The whole generation in one launch on the GPU. */
static int run_gpu(const options *o, const mpkb_blob *b, const void *const *table, const int32_t *prompt, int np,
                   double t0, FILE *lf, sink *k, bool *lf_failed)
{
    const mpkb_meta *m = b->meta;
    mpk_gpu_opts go = {.schedule = o->schedule, .watchdog_ms = (uint32_t)o->watchdog, .trace = o->trace,
                       .test_stall = (int32_t)o->stall, .progress = isatty(2) != 0, .no_chunk = o->no_chunk};
    uint64_t steps = (uint64_t)np + o->n - 1;
    float *logits = NULL;
    int status = EXIT_RUN;
    mpk_gpu_stats st = {0};
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
        print_sampler(&o->samp);
    if (o->stats)
        fprintf(stderr, "mpk-run: loaded %s (%u tasks) and %.1f MiB of weights in %.1f ms (%.2f GB/s), %.1f ms in all\n",
                o->blob, b->ntasks, (double)wbytes / 1048576.0, load, load > 0 ? (double)wbytes / 1e6 / load : 0.0,
                mpk_now_ms() - t0);
    bool ok = mpk_gpu_generate(G, prompt, (uint32_t)np, (uint32_t)o->n, &o->samp, logits, print_token, k, &st);
    if (!sink_end(k, ok || k->made) || !ok)
        goto out;
    if (lf && fwrite(logits, sizeof *logits * m->vocab, st.logit_rows, lf) != st.logit_rows) {
        fprintf(stderr, "mpk-run: error: writing '%s' failed: %s\n", o->logits, strerror(errno));
        *lf_failed = true;
        goto out;
    }
    if (o->stats) {
        stats_line(k);
        char chunks[64] = "";
        if (st.chunk_steps)
            snprintf(chunks, sizeof chunks, " in %u chunk steps of %u", st.chunk_steps, b->meta->chunk);
        fprintf(stderr, "mpk-run: gpu: %u steps (%s schedule, %d workers), time to first token %.2f ms "
                        "(a %d-token prompt%s, %.0f tokens/s), ",
                st.steps, st.schedule == MPK_SCHED_STATIC ? "static" : "dynamic", st.sms, st.ttft_ms, np, chunks,
                st.ttft_ms > 0 ? np * 1e3 / st.ttft_ms : 0.0);
        if (st.made > 1) {
            fprintf(stderr, "mean per token %.3f ms, median per token %.3f ms, p99 per token %.3f ms, "
                            "%.1f tokens/s (from the mean)\n",
                    st.mean_token_ms, st.per_token_ms, st.p99_token_ms, 1e3 / st.mean_token_ms);
        } else {
            fprintf(stderr, "one token: no per-token latency\n");
        }
        if (o->trace)
            fprintf(stderr, "mpk-run: trace: %u task records in %s\n", st.trace_events, o->trace);
    }
    status = 0;
out:
    free(logits);
    mpk_gpu_free(G);
    return status;
}

/* The CPU executor and what it has been fed: a chat's next turn feeds
 * only what its rendering adds to the conversation so far. */
typedef struct {
    const options *o;
    const mpkb_blob *b;
    const void *const *const *table;
    mpk_cpu *M;
    mpk_ids fed;
    double *times; /* per step, for --stats */
    size_t ntimes, captimes;
    double t1, ttft;
    FILE *lf;
    bool *lf_failed;        /* set when a write to lf fails */
    float *logits;
} cpu_run;

static bool cpu_step(cpu_run *c, int32_t tok, int32_t *next)
{
    const mpkb_meta *m = c->b->meta;
    if (c->fed.n >= m->max_seq) {
        fprintf(stderr, "mpk-run: error: the conversation fills the model's KV cache (%u positions; rebuild "
                        "with -D max_seq=N)\n", m->max_seq);
        return false;
    }
    double ts = mpk_now_ms();
    if (!mpk_cpu_step(c->M, tok, c->o->order_seed != 0, &c->o->samp, next, c->logits))
        return false;
    if (c->lf && fwrite(c->logits, sizeof *c->logits, m->vocab, c->lf) != m->vocab) {
        fprintf(stderr, "mpk-run: error: writing '%s' failed: %s\n", c->o->logits, strerror(errno));
        *c->lf_failed = true;
        return false;
    }
    c->times = mpk_grow(c->times, &c->captimes, c->ntimes + 1, sizeof *c->times);
    c->times[c->ntimes++] = mpk_now_ms() - ts;
    if (!mpk_ids_push(&c->fed, tok))
        mpk_out_of_memory();
    return true;
}

/* The prompt tokens toks[0..n) at once: in chunk steps (mpk_cpu_prefill);
 * --dump-logits gets the last token's logits, the only ones computed. */
static bool cpu_prefill(cpu_run *c, const int32_t *toks, size_t n, int32_t *next)
{
    const mpkb_meta *m = c->b->meta;
    if (c->fed.n + n > m->max_seq) {
        fprintf(stderr, "mpk-run: error: the conversation fills the model's KV cache (%u positions; rebuild "
                        "with -D max_seq=N)\n", m->max_seq);
        return false;
    }
    if (!mpk_cpu_prefill(c->M, toks, (uint32_t)n, c->o->order_seed != 0, &c->o->samp, next, c->logits))
        return false;
    if (c->lf && fwrite(c->logits, sizeof *c->logits, m->vocab, c->lf) != m->vocab) {
        fprintf(stderr, "mpk-run: error: writing '%s' failed: %s\n", c->o->logits, strerror(errno));
        *c->lf_failed = true;
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (!mpk_ids_push(&c->fed, toks[i]))
            mpk_out_of_memory();
    return true;
}

/* Feeds toks[0..nt) after what was fed before (or from a fresh executor
 * when they do not continue it), then generates up to -n tokens into k. */
static bool cpu_generate(cpu_run *c, const int32_t *toks, size_t nt, sink *k)
{
    size_t same = 0;
    while (same < c->fed.n && same < nt && c->fed.v[same] == toks[same])
        same++;
    if (!c->M || same < c->fed.n || same == nt) {
        mpk_cpu_free(c->M);
        c->fed.n = 0, same = 0;
        if (!(c->M = mpk_cpu_new(c->b, c->table, c->o->order_seed, stderr)))
            return false;
    }
    int32_t next = 0;
    if (c->b->chunk && !c->o->no_chunk) {
        if (!cpu_prefill(c, toks + same, nt - same, &next))
            return false;
    } else {
        for (size_t i = same; i < nt; i++)
            if (!cpu_step(c, toks[i], &next))
                return false;
    }
    for (uint64_t made = 0; made < c->o->n; made++) {
        if (made == 0 && c->ttft == 0)
            c->ttft = mpk_now_ms() - c->t1;
        if (!sink_token(k, next) || made + 1 == c->o->n)
            break;
        if (!cpu_step(c, next, &next))
            return false;
    }
    return true;
}

/* The tokenizer for text: --tokenizer, else tokenizer.json beside the
 * weights. */
static mpk_tok *open_tokenizer(const options *o)
{
    if (o->tokenizer)
        return mpk_tok_open(o->tokenizer, stderr);
    char *path = mpk_text_sibling(o->weights, "tokenizer.json");
    mpk_tok *T = path ? mpk_tok_open(path, stderr) : NULL;
    if (T == NULL && path && !mpk_text_exists(path))
        fprintf(stderr, "mpk-run: error: a text prompt needs the checkpoint's tokenizer: give --tokenizer PATH\n");
    free(path);
    return T;
}

/* generation_config.json beside the weights, when there is one: its EOS
 * ids end a generation too, and its sampling fields are the defaults of
 * the flags not given, and its max_new_tokens the default of -n (not for
 * --chat, whose turns keep 16). As
 * transformers: do_sample false (or absent) is
 * greedy, whatever else the file says; do_sample true samples with its
 * temperature (default 1), top_k (default 50), top_p (default 1) and min_p
 * (default none). A sampling flag overrides its field. */
static bool read_genconfig(options *o, sink *k)
{
    char *path = mpk_text_sibling(o->weights, "generation_config.json");
    mpk_genconfig g;
    mpk_genconfig_init(&g);
    bool ok = path != NULL;
    if (ok && mpk_text_exists(path) && (ok = mpk_genconfig_read(path, &g, stderr)))
        for (int i = 0; i < g.neos; i++)
            add_eos(k, g.eos[i]);
    free(path);
    mpk_sampler d = {.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0};
    if (ok && g.do_sample == 1) {
        d.temperature = g.temperature >= 0 ? (float)g.temperature : 1.0f;
        d.top_k = g.top_k >= 0 ? (int32_t)g.top_k : 50;
        d.top_p = g.top_p >= 0 ? (float)g.top_p : 1.0f;
        d.min_p = g.min_p >= 0 ? (float)g.min_p : 0.0f;
    }
    if (ok && !o->set_n && !o->chat && g.max_new_tokens > 0) { /* transformers' default length too */
        o->n = g.max_new_tokens < (1 << 30) ? (uint64_t)g.max_new_tokens : 1u << 30;
        o->n_from_config = true;
    }
    if (!o->set_temperature)
        o->samp.temperature = d.temperature;
    if (!o->set_top_k)
        o->samp.top_k = d.top_k;
    if (!o->set_top_p)
        o->samp.top_p = d.top_p;
    if (!o->set_min_p)
        o->samp.min_p = d.min_p;
    return ok;
}

/* The prompt's ids: --prompt-ids, or the text of --prompt or -f encoded as
 * HF's encode does (with the tokenizer's BOS). */
static bool prompt_ids(const options *o, const sink *k, mpk_ids *ids)
{
    if (o->prompt) {
        int np = 0;
        int32_t *p = parse_ids(o->prompt, &np);
        if (!p) {
            usage_error("--prompt-ids needs comma-separated token ids, not '%s'", o->prompt);
            return false;
        }
        ids->v = p, ids->n = ids->cap = (size_t)np;
        return true;
    }
    size_t n = o->text ? strlen(o->text) : 0;
    char *text = o->text_file ? mpk_text_slurp(strcmp(o->text_file, "-") ? o->text_file : "/dev/stdin",
                                               MAX_PROMPT_FILE, &n, stderr)
                              : NULL;
    if (o->text_file && !text)
        return false;
    bool ok = mpk_tok_encode(k->T, text ? text : o->text, n, true, ids);
    free(text);
    if (!ok)
        fprintf(stderr, "mpk-run: error: out of memory encoding the prompt\n");
    else if (ids->n == 0)
        fprintf(stderr, "mpk-run: error: the prompt is empty: it encodes to no tokens\n");
    return ok && ids->n > 0;
}

static bool check_ids(const mpkb_meta *m, const int32_t *v, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if ((uint32_t)v[i] >= m->vocab) {
            fprintf(stderr, "mpk-run: error: %s id %d is outside the model's vocabulary (0..%u)%s\n", what, v[i],
                    m->vocab - 1, strcmp(what, "prompt") ? ": the tokenizer does not belong to this model" : "");
            return false;
        }
    return true;
}

/* --chat: read a user turn per line, render the conversation, generate
 * the reply. On the GPU each turn runs the whole conversation again in one
 * launch; on the CPU only what the turn adds is fed. */
static int run_chat(const options *o, const mpkb_blob *b, const void *const *const *table, sink *k)
{
    char *cfg = o->tokenizer ? mpk_text_sibling(o->tokenizer, "tokenizer_config.json")
                             : mpk_text_sibling(o->weights, "tokenizer_config.json");
    mpk_chat_format f;
    if (!cfg || !mpk_chat_format_read(cfg, o->chat_format, &f, stderr)) {
        free(cfg);
        return EXIT_RUN;
    }
    free(cfg);
    int32_t eot = mpk_tok_find(k->T, mpk_chat_end_of_turn(&f));
    add_eos(k, eot);
    cpu_run c = {.o = o, .b = b, .table = table, .t1 = mpk_now_ms()};
    mpk_gpu *G = NULL;
    if (!o->cpu) {
        mpk_gpu_opts go = {.schedule = o->schedule, .watchdog_ms = (uint32_t)o->watchdog, .progress = isatty(2) != 0,
                           .test_stall = -1};
        if (!(G = mpk_gpu_new(b, table[0], &go, stderr))) {
            mpk_chat_format_free(&f);
            return EXIT_RUN;
        }
    }
    mpk_chat_msg *msgs = NULL;
    size_t nmsg = 0;
    int status = EXIT_RUN;
    char *line = NULL;
    size_t cap = 0;
    bool tty = isatty(0);
    for (;;) {
        if (tty)
            fprintf(stderr, "> ");
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0) {
            status = 0;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        mpk_chat_msg *nm = realloc(msgs, (nmsg + 2) * sizeof *msgs);
        char *user = strdup(line);
        if (!nm || !user) {
            free(user);
            msgs = nm ? nm : msgs;
            fprintf(stderr, "mpk-run: error: out of memory\n");
            break;
        }
        msgs = nm;
        msgs[nmsg++] = (mpk_chat_msg){"user", user};
        size_t tn;
        char *text = mpk_chat_render(&f, msgs, nmsg, true, &tn);
        mpk_ids ids = {0};
        bool ok = text && mpk_tok_encode(k->T, text, tn, false, &ids);
        free(text);
        if (!ok) {
            fprintf(stderr, "mpk-run: error: out of memory\n");
            mpk_ids_free(&ids);
            break;
        }
        ok = check_ids(b->meta, ids.v, ids.n, "the tokenizer's");
        if (ok && ids.n + o->n - 1 > b->meta->max_seq) {
            fprintf(stderr, "mpk-run: error: the conversation (%zu tokens) and %llu more do not fit the model's "
                            "KV cache of %u positions (rebuild with -D max_seq=N)\n", ids.n,
                    (unsigned long long)o->n, b->meta->max_seq);
            ok = false;
        }
        k->done = false, k->made = 0, k->got.n = 0, k->to.stopped = false, k->to.n = 0;
        mpk_gpu_stats st;
        if (ok && G)
            ok = mpk_gpu_generate(G, ids.v, (uint32_t)ids.n, (uint32_t)o->n, &o->samp, NULL, print_token, k, &st);
        else if (ok)
            ok = cpu_generate(&c, ids.v, ids.n, k);
        mpk_ids_free(&ids);
        if (!ok || !mpk_textout_flush(&k->to, stdout) || printf("\n") < 0 || fflush(stdout) != 0)
            break;
        /* The reply as the model wrote it, for the next turn's rendering. */
        size_t rn = 0;
        for (size_t i = 0; i < k->got.n; i++) {
            size_t pl;
            mpk_tok_piece(k->T, k->got.v[i], &pl, NULL);
            rn += pl;
        }
        char *reply = malloc(rn + 1);
        if (!reply) {
            fprintf(stderr, "mpk-run: error: out of memory\n");
            break;
        }
        rn = 0;
        for (size_t i = 0; i < k->got.n; i++) {
            size_t pl;
            const char *p = mpk_tok_piece(k->T, k->got.v[i], &pl, NULL);
            memcpy(reply + rn, p, pl), rn += pl;
        }
        reply[rn] = 0;
        for (int i = 0; i < o->nstop; i++) { /* the reply ends where the output did */
            char *hit = strstr(reply, o->stop[i]);
            if (hit)
                *hit = 0;
        }
        msgs[nmsg++] = (mpk_chat_msg){"assistant", reply};
    }
    for (size_t i = 0; i < nmsg; i++)
        free((char *)msgs[i].content);
    free(msgs);
    free(line);
    mpk_gpu_free(G);
    mpk_cpu_free(c.M);
    mpk_ids_free(&c.fed);
    free(c.times);
    mpk_chat_format_free(&f);
    return status;
}

static int run(options *o)
{
    double t0 = mpk_now_ms();
    int status = EXIT_RUN;
    mpkb_blob b;
    mpk_weights *w[MPKB_MAX_TP] = {NULL};
    const void **table[MPKB_MAX_TP] = {NULL};
    mpk_out lo = {0};
    FILE *lf = NULL;
    bool lf_failed = false;
    const char **inputs = NULL;
    sink k = {.to = {.stop = o->stop, .nstop = (size_t)o->nstop, .last = -1}};
    mpk_ids prompt = {0};
    cpu_run c = {.o = o, .lf_failed = &lf_failed};
    size_t bl = strlen(o->blob);
    if (bl > 4 && strcmp(o->blob + bl - 4, ".mpk") == 0) {
        fprintf(stderr, "mpk-run: error: %s is a model source, not a blob: build it first with 'mpk build %s' "
                        "and run the .mpkb\n", o->blob, o->blob);
        return EXIT_USAGE;
    }
    if ((o->text || o->text_file || o->chat) && !(k.T = open_tokenizer(o)))
        return EXIT_RUN;
    bool gc = read_genconfig(o, &k);
    if (!gc || (!o->chat && !prompt_ids(o, &k, &prompt))) {
        mpk_tok_free(k.T);
        mpk_ids_free(&prompt);
        return gc && o->prompt ? EXIT_USAGE : EXIT_RUN;
    }
    if (!mpkb_open(&b, o->blob, stderr)) {
        mpk_tok_free(k.T);
        mpk_ids_free(&prompt);
        return EXIT_RUN;
    }
    const mpkb_meta *m = b.meta;
    for (uint32_t i = 0; i < m->neos; i++)
        add_eos(&k, m->eos[i]);
    int np = (int)prompt.n;
    if (!check_ids(m, prompt.v, prompt.n, o->prompt ? "prompt" : "the tokenizer's"))
        goto out;
    if (o->n_from_config && (uint64_t)np + o->n - 1 > m->max_seq && (uint64_t)np <= m->max_seq)
        o->n = m->max_seq - (uint64_t)np + 1; /* as transformers stops at the model's length */
    if (!o->chat && (uint64_t)np + o->n - 1 > m->max_seq) {
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
    if (o->ids)
        mpk_tok_free(k.T), k.T = NULL;
    uint64_t wbytes = 0;
    for (uint32_t r = 0; r < m->tp; r++) {
        table[r] = mpk_bind_weights(&b, o->weights, r, &w[r], stderr);
        if (!table[r])
            goto out;
        wbytes += mpk_weights_bytes(w[r]);
    }
    if (o->chat) {
        status = run_chat(o, &b, (const void *const *const *)table, &k);
        goto out;
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
        status = run_gpu(o, &b, table[0], prompt.v, np, t0, lf, &k, &lf_failed);
        goto out;
    }
    c.b = &b, c.table = (const void *const *const *)table, c.lf = lf;
    c.M = mpk_cpu_new(&b, c.table, o->order_seed, stderr);
    if (!c.M)
        goto out;
    if (o->logits && !(c.logits = malloc(sizeof *c.logits * m->vocab))) {
        fprintf(stderr, "mpk-run: error: out of memory for the logits\n");
        goto out;
    }
    c.t1 = mpk_now_ms();
    if (o->stats)
        print_sampler(&o->samp);
    if (o->stats)
        fprintf(stderr, "mpk-run: loaded %s (%u tasks%s) and %.1f MiB of weights in %.1f ms\n", o->blob,
                b.ntasks, m->tp > 1 ? " per rank, tensor parallel" : "", (double)wbytes / 1048576.0, c.t1 - t0);
    bool ok = cpu_generate(&c, prompt.v, prompt.n, &k);
    if (!sink_end(&k, true) || !ok)
        goto out;
    char chunks[64] = "";
    if (b.chunk && !o->no_chunk)
        snprintf(chunks, sizeof chunks, " in %u chunk steps of %u", (unsigned)((np + m->chunk - 1) / m->chunk),
                 m->chunk);
    if (o->stats && c.ntimes == 0) {
        stats_line(&k);
        fprintf(stderr, "mpk-run: cpu: time to first token %.1f ms (a %d-token prompt%s, %.0f tokens/s), no "
                        "steps after it\n",
                c.ttft, np, chunks, c.ttft > 0 ? np * 1e3 / c.ttft : 0.0);
    } else if (o->stats) {
        double sum = 0;
        for (size_t i = 0; i < c.ntimes; i++)
            sum += c.times[i];
        double mean = sum / (double)c.ntimes;
        qsort(c.times, c.ntimes, sizeof *c.times, cmp_double);
        size_t p99 = (size_t)ceil(0.99 * (double)c.ntimes) - 1;
        stats_line(&k);
        fprintf(stderr, "mpk-run: cpu: %zu steps, time to first token %.1f ms (a %d-token prompt%s, %.0f tokens/s), "
                        "mean step %.2f ms, median step %.2f ms, p99 step %.2f ms, %.1f steps/s (from the mean)\n",
                c.ntimes, c.ttft, np, chunks, c.ttft > 0 ? np * 1e3 / c.ttft : 0.0, mean, c.times[c.ntimes / 2],
                c.times[p99], mean > 0 ? 1e3 / mean : 0.0);
    }
    status = 0;
out:
    /* The rows of the steps run are kept, a failed run's too (they show
     * where it went wrong); a failed write keeps the old file. */
    if (lf && !mpk_out_close(&lo, !lf_failed, stderr) && status == 0)
        status = EXIT_RUN;
    free(inputs);
    free(c.logits);
    free(c.times);
    mpk_ids_free(&c.fed);
    mpk_cpu_free(c.M);
    for (int r = 0; r < MPKB_MAX_TP; r++) {
        free(table[r]);
        mpk_weights_close(w[r]);
    }
    mpkb_close(&b);
    mpk_ids_free(&prompt);
    mpk_ids_free(&k.got);
    mpk_textout_free(&k.to);
    mpk_tok_free(k.T);
    return status;
}

int main(int argc, char **argv)
{
    enum {
        OPT_WEIGHTS = 256, OPT_CPU, OPT_PROMPT, OPT_SEED, OPT_LOGITS, OPT_STATS, OPT_VERSION, OPT_SCHEDULE,
        OPT_WATCHDOG, OPT_TRACE, OPT_STALL, OPT_TEXT, OPT_IDS, OPT_STOP, OPT_CHAT, OPT_CHAT_FORMAT, OPT_TOKENIZER,
        OPT_ORDER_SEED, OPT_TEMPERATURE, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_NO_CHUNK
    };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"weights", required_argument, NULL, OPT_WEIGHTS},
        {"cpu", no_argument, NULL, OPT_CPU},
        {"prompt-ids", required_argument, NULL, OPT_PROMPT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"order-seed", required_argument, NULL, OPT_ORDER_SEED},
        {"no-chunk", no_argument, NULL, OPT_NO_CHUNK},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"min-p", required_argument, NULL, OPT_MIN_P},
        {"dump-logits", required_argument, NULL, OPT_LOGITS},
        {"stats", no_argument, NULL, OPT_STATS},
        {"schedule", required_argument, NULL, OPT_SCHEDULE},
        {"watchdog", required_argument, NULL, OPT_WATCHDOG},
        {"trace", required_argument, NULL, OPT_TRACE},
        {"test-stall", required_argument, NULL, OPT_STALL},
        {"prompt", required_argument, NULL, OPT_TEXT},
        {"ids", no_argument, NULL, OPT_IDS},
        {"stop", required_argument, NULL, OPT_STOP},
        {"chat", no_argument, NULL, OPT_CHAT},
        {"chat-format", required_argument, NULL, OPT_CHAT_FORMAT},
        {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
        {NULL, 0, NULL, 0},
    };
    options o = {.n = 16, .order_seed = 1, .samp = {.top_p = 1}, .watchdog = 10000, .stall = -1, .schedule = MPK_SCHED_AUTO};
    const char *gpu_only = NULL;
    uint64_t v;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":hn:f:", longopts, NULL)) != -1;) {
        switch (c) {
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_VERSION: printf("mpk-run %s\n", MPK_VERSION); return 0;
        case OPT_WEIGHTS: o.weights = optarg; break;
        case OPT_CPU: o.cpu = true; break;
        case OPT_PROMPT: o.prompt = optarg; break;
        case OPT_TEXT: o.text = optarg; break;
        case 'f': o.text_file = optarg; break;
        case OPT_IDS: o.ids = true; break;
        case OPT_CHAT: o.chat = true; break;
        case OPT_CHAT_FORMAT: o.chat_format = optarg; break;
        case OPT_TOKENIZER: o.tokenizer = optarg; break;
        case OPT_STOP:
            if (o.nstop == MAX_STOP)
                return usage_error("at most 8 --stop strings, not more ('%s')", optarg);
            if (!*optarg)
                return usage_error("%s--stop needs a non-empty string", "");
            o.stop[o.nstop++] = optarg;
            break;
        case OPT_LOGITS: o.logits = optarg; break;
        case OPT_STATS: o.stats = true; break;
        case OPT_SCHEDULE:
            if (!strcmp(optarg, "static"))
                o.schedule = MPK_SCHED_STATIC;
            else if (!strcmp(optarg, "dynamic"))
                o.schedule = MPK_SCHED_DYNAMIC;
            else if (!strcmp(optarg, "auto"))
                o.schedule = MPK_SCHED_AUTO;
            else
                return usage_error("--schedule is static, dynamic or auto, not '%s'", optarg);
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
            o.set_n = true;
            break;
        case OPT_SEED:
            if (!parse_u64(optarg, UINT64_MAX, &o.samp.seed))
                return usage_error("--seed needs a non-negative integer, not '%s'", optarg);
            break;
        case OPT_NO_CHUNK: o.no_chunk = true; break;
        case OPT_ORDER_SEED:
            if (!parse_u64(optarg, UINT64_MAX, &o.order_seed))
                return usage_error("--order-seed needs a non-negative integer, not '%s'", optarg);
            break;
        case OPT_TEMPERATURE:
            if (!parse_float(optarg, &o.samp.temperature) || o.samp.temperature < 0)
                return usage_error("--temperature needs a finite number >= 0 (0: greedy), not '%s'", optarg);
            o.set_temperature = true;
            break;
        case OPT_TOP_K:
            if (!parse_u64(optarg, INT32_MAX, &v))
                return usage_error("--top-k needs a number of tokens >= 0 (0: all), not '%s'", optarg);
            o.samp.top_k = (int32_t)v;
            o.set_top_k = true;
            break;
        case OPT_TOP_P:
            if (!parse_float(optarg, &o.samp.top_p) || !(o.samp.top_p > 0 && o.samp.top_p <= 1))
                return usage_error("--top-p needs a probability in (0, 1] (1: all), not '%s'", optarg);
            o.set_top_p = true;
            break;
        case OPT_MIN_P:
            if (!parse_float(optarg, &o.samp.min_p) || !(o.samp.min_p >= 0 && o.samp.min_p < 1))
                return usage_error("--min-p needs a probability in [0, 1) (0: all), not '%s'", optarg);
            o.set_min_p = true;
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
    int prompts = (o.prompt != NULL) + (o.text != NULL) + (o.text_file != NULL) + o.chat;
    if (prompts == 0)
        return usage_error("%s", "a prompt is required: --prompt-ids, --prompt, -f or --chat");
    if (prompts > 1)
        return usage_error("%s", "one prompt at a time: --prompt-ids, --prompt, -f or --chat");
    if (o.ids && !o.text && !o.text_file)
        return usage_error("%s", "--ids goes with a text prompt (--prompt or -f)");
    if (o.nstop && (o.prompt || o.ids))
        return usage_error("%s", "--stop works on text: it goes with --prompt, -f or --chat, without --ids");
    if (o.chat_format && !o.chat)
        return usage_error("%s", "--chat-format goes with --chat");
    if (o.tokenizer && o.prompt)
        return usage_error("%s", "--tokenizer goes with a text prompt (--prompt, -f or --chat)");
    if (o.chat && (o.logits || o.stats || o.trace || o.stall >= 0))
        return usage_error("%s", "--chat takes no --dump-logits, --stats, --trace or --test-stall");
    if (o.cpu && gpu_only)
        return usage_error("%s is for the GPU executor; it means nothing with --cpu", gpu_only);
    return run(&o);
}
