/*
 * mpk.c - the compiler's command line.
 *
 *   mpk check FILE.mpk...              parse and check, each file on its own
 *   mpk build FILE.mpk -o FILE.mpkb    compile to a blob
 *   mpk build --emit=graph FILE.mpk    print the typed, expanded op graph
 *   mpk dump FILE.mpkb [--dot]         print a blob
 *   mpk import config.json [-o F.mpk]  a Hugging Face config as a model
 *   mpk import DIR [-o F.mpk]          ... from a checkpoint directory
 *   mpk tokenize TOK [FILE]            text to ids (driver/tokenize.c)
 *   mpk detokenize TOK [FILE]          ids to text
 *   mpk run [-D..] DIR [mpk-run opts]  import, build into a cache, run (driver/run.c)
 *
 * The pipeline reads top to bottom in compile(): load (parse + imports),
 * sema (names, params, expansion, shapes), then the requested output: the
 * graph, or lowering (lowering/lower.c runs its passes and the verifier)
 * and the blob.
 * Exit status: 0 success, 1 errors in the model (or a bad blob or config),
 * 2 usage errors.
 */
#include "frontend/frontend.h"
#include "lowering/lowering.h"
#include "runtime/runtime.h"
#include "driver/import.h"
#include "driver/tokenize.h"
#include "driver/run.h"
#include "mpk/util.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_MODEL = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: mpk check [options] FILE.mpk...   (FILE '-' is standard input)\n"
    "       mpk build [options] FILE.mpk [-o FILE.mpkb]\n"
    "       mpk build --emit=graph [options] FILE.mpk\n"
    "       mpk dump [--dot] [-o FILE] FILE.mpkb\n"
    "       mpk import [-o FILE.mpk] config.json|DIR\n"
    "       mpk tokenize [--raw] [--stats] TOKENIZER [FILE]\n"
    "       mpk tokenize --chat [--render] [--chat-format F] TOKENIZER CONV.json\n"
    "       mpk detokenize [--skip-special] TOKENIZER [FILE]\n"
    "       mpk run [-D NAME=VALUE]... [--workers=N] [--tp=N] [--chunk=C] DIR [mpk-run options]\n"
    "       mpk --help | --version\n"
    "\n"
    "commands:\n"
    "  check            check models: syntax, names, params, shapes\n"
    "  build            compile a model into a blob (default output: the\n"
    "                   input's name with .mpkb, in the current directory)\n"
    "  dump             print a blob: header, tensors, tasks, events, queues\n"
    "  import           write a model for a Hugging Face config.json\n"
    "                   (LlamaForCausalLM, Qwen3ForCausalLM), or for a checkpoint\n"
    "                   directory (also generation_config.json, weight dtypes,\n"
    "                   tokenizer files)\n"
    "  tokenize         text (FILE or standard input) to token ids with a\n"
    "                   tokenizer.json or the checkpoint directory holding it;\n"
    "                   --raw: without the tokens the tokenizer adds (BOS);\n"
    "                   --chat: a JSON conversation in the chat format\n"
    "                   (--render: print the text)\n"
    "  detokenize       token ids to the text they stand for\n"
    "  run              import a checkpoint directory, build it into the cache\n"
    "                   ($XDG_CACHE_HOME/mpk or ~/.cache/mpk, keyed by a hash of\n"
    "                   the inputs) unless built already, and run mpk-run on it\n"
    "                   with --weights DIR and the options after DIR\n"
    "\n"
    "options:\n"
    "  -D NAME=VALUE    override param NAME (repeatable)\n"
    "  -I DIR           add DIR to the import search path (repeatable)\n"
    "  -o FILE          write the output to FILE ('-': standard output)\n"
    "  --workers=N      (build) place tasks for N workers (default: the model's\n"
    "                   schedule, else 132, the SMs of an H100)\n"
    "  --tp=N           (build) shard the model over N GPUs (tensor parallelism,\n"
    "                   1 to 64; default 1): one blob that every rank runs\n"
    "  --chunk=C        (build) also compile the model at n = C, a chunk graph\n"
    "                   that feeds prompts C tokens a step (2 to 1024; mpk run:\n"
    "                   default 64, 0 for none)\n"
    "  --split-k=P      (build) split the contraction of a matvec of several rows\n"
    "                   (a chunk graph's) into P parts (1 to 64, fewer where K\n"
    "                   has fewer slabs of 32) whose sums part_sum tasks add;\n"
    "                   'auto': as many as the tile cost model picks (default 1:\n"
    "                   no split)\n"
    "  --stats          (build) print tasks, events, bytes and bytes per token\n"
    "  --dump=PASS      (build) print the graph after PASS (see below)\n"
    "  --emit=graph     (build) print the expanded, typed op graph instead\n"
    "  --dot            (dump) write the task graph for graphviz\n"
    "  --max-errors=N   stop after N errors (default 20; 0: no limit)\n"
    "  -w               do not print warnings\n"
    "  -Werror          treat warnings as errors\n"
    "  --time           print the time each phase took on standard error\n"
    "  -h, --help       print this help\n"
    "  --version        print the version\n"
    "\n"
    "Imports are searched in the importing file's directory, then -I, then\n"
    "MPK_PATH (colon-separated), then the installed stdlib. See mpk(1), mpk(5).\n"
    "\n"
    "build's passes, in order (--dump=PASS, --time):\n";

/* The usage text, then the lowering's passes from their table. */
static void usage(FILE *out)
{
    fputs(usage_text, out);
    for (int i = 0; i < mpk_npasses; i++)
        fprintf(out, "  %-8s %s%s\n", mpk_passes[i].name, mpk_passes[i].what,
                mpk_passes[i].verify ? "; the verifier runs after it" : "");
}

#define usage_error(...) mpk_usage_error("mpk", "mpk", __VA_ARGS__)

/* The directory the binary runs from, for finding the stdlib. */
static char *exe_dir(void)
{
    static char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash)
        return NULL;
    *slash = 0;
    return buf;
}

/* The -I and -D lists (at most one entry per argument), freed at exit so
 * that every early return, usage errors included, is leak-free. */
static const char **incs, **defs;

static void free_lists(void)
{
    free(incs);
    free(defs);
}

typedef struct {
    int max_errors;
    bool quiet, werror, timing, build, stats;
    const char *out_path, *emit, *dump;
    int64_t workers, tp;
    int64_t chunk;          /* build: also the chunk graph, n = chunk (0: none) */
    int64_t split_k;        /* build: mpk_lower_opts.split_k (0: the default, none) */
} job;

/* "dir/qwen3-8b.mpk" -> "qwen3-8b.mpkb" (in the current directory). */
static char *default_blob_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".mpk") == 0)
        n -= 4;
    char *out = malloc(n + 6);
    if (out)
        sprintf(out, "%.*s.mpkb", (int)n, base);
    return out;
}

static int write_graph(const mpk_graph *g, const char *out_path)
{
    mpk_out o;
    if (!mpk_out_open(&o, out_path ? out_path : "-", NULL, 0, stderr))
        return EXIT_USAGE;
    mpk_graph_print(o.f, g);
    return mpk_out_close(&o, true, stderr) ? 0 : EXIT_USAGE;
}

/* Whether out is one of the files the compilation read (the model and its
 * imports): writing it would destroy the input (reported). */
static bool out_is_input(const mpk_ctx *c, const char *out)
{
    const mpk_vec *f = &c->diag.files;
    const char **in = calloc((size_t)f->n + 1, sizeof *in);
    if (!in)
        mpk_out_of_memory();
    for (int i = 1; i < f->n; i++)
        in[i - 1] = ((const mpk_source *)f->items[i])->path;
    bool same = mpk_out_is_input(out, in, f->n - 1, stderr);
    free(in);
    return same;
}

/* One compilation: load, check, and for build the graph or the blob. */
static int compile(const char *path, const mpk_options *opt, const job *j)
{
    double t0 = mpk_now_ms();
    mpk_ctx *c = mpk_ctx_new(opt, stderr);
    c->diag.max_errors = j->max_errors;
    c->diag.no_warnings = j->quiet;
    c->diag.werror = j->werror;
    if (!mpk_load_file(c, path)) {
        /* The input file itself could not be read: a usage error. */
        mpk_ctx_free(c);
        return EXIT_USAGE;
    }
    double t1 = mpk_now_ms();
    char *dflt = j->build && !j->emit && !j->out_path ? default_blob_name(strcmp(path, "-") ? path : "stdin.mpk")
                                                       : NULL;
    const char *out = j->out_path ? j->out_path : dflt;
    if (j->build && out && out_is_input(c, out)) {
        free(dflt);
        mpk_ctx_free(c);
        return EXIT_USAGE;
    }
    mpk_graph *g = NULL;
    if (!c->diag.stopped)
        g = mpk_sema(c);
    double t2 = mpk_now_ms(), t3 = t2;
    int status = mpk_diag_failed(&c->diag) ? EXIT_MODEL : 0;
    if (status == 0 && j->build && !g) {
        mpk_error(&c->diag, (mpk_loc){0, 0, 0}, "%s: no graph to build", path);
        status = EXIT_MODEL;
    } else if (status == 0 && j->build && j->emit) {
        status = write_graph(g, j->out_path);
    } else if (status == 0 && j->build) {
        mpk_lower_opts lo = {.workers = j->workers, .tp = j->tp, .dump = j->dump, .dump_out = stdout, .rows = 1,
                             .split_k = j->split_k};
        mpk_low *L = mpk_lower(g, &lo, &c->diag), *Lc = NULL;
        mpk_ctx *cc = NULL;
        if (L && !mpk_diag_failed(&c->diag) && j->chunk) {
            const char *why = mpk_chunk_unfit(g);
            if (why) {
                mpk_error(&c->diag, (mpk_loc){0, 0, 0},
                          "%s: --chunk needs a token-count param 'n' of default 1 (input token : i32[n], "
                          "activations [n, hidden]; mpk import writes models so), but the model %s", path, why);
            } else {
                mpk_lower_opts lc = lo;
                lc.rows = j->chunk;
                Lc = mpk_lower_chunk(path, opt, &lc, j->max_errors, j->werror, &cc);
                if (!Lc)
                    status = EXIT_MODEL;
            }
        }
        t3 = mpk_now_ms();
        if (!L || mpk_diag_failed(&c->diag) || status)
            status = EXIT_MODEL;
        else if (!mpk_emit(L, Lc, out))
            status = EXIT_USAGE;
        else if (j->stats) {
            mpk_low_stats(L, stderr);
            if (Lc) { /* the same lines, each marked as the chunk graph's */
                char *buf = NULL;
                size_t len = 0;
                FILE *m = open_memstream(&buf, &len);
                if (m) {
                    mpk_low_stats(Lc, m);
                    fclose(m);
                    for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
                        nl = strchr(line, '\n');
                        fprintf(stderr, "chunk graph (n = %lld): %.*s\n", (long long)j->chunk,
                                (int)(nl ? nl - line : (ptrdiff_t)strlen(line)), line);
                    }
                }
                free(buf);
            }
        }
        mpk_low_free(Lc);
        if (cc)
            mpk_ctx_free(cc);
        if (L && j->timing) {
            fprintf(stderr, "mpk: time: %s: passes: ", path);
            mpk_low_times(L, stderr);
            fputc('\n', stderr);
        }
        mpk_low_free(L);
    }
    free(dflt);
    double t4 = mpk_now_ms();
    if (j->timing) {
        fprintf(stderr, "mpk: time: %s: parse %.2f ms, sema %.2f ms", path, t1 - t0, t2 - t1);
        if (j->build && !j->emit)
            fprintf(stderr, ", lower %.2f ms, write %.2f ms", t3 - t2, t4 - t3);
        else
            fprintf(stderr, ", output %.2f ms", t4 - t2);
        fprintf(stderr, ", total %.2f ms\n", t4 - t0);
    }
    mpk_ctx_free(c);
    return status;
}

/* mpk dump: read and validate a blob, print it. */
static int dump_blob(const char *path, const char *out_path, bool dot)
{
    mpkb_blob b;
    if (!mpkb_open(&b, path, stderr))
        return EXIT_MODEL;
    mpk_out o;
    const char *in[1] = {path};
    if (!mpk_out_open(&o, out_path ? out_path : "-", in, 1, stderr)) {
        mpkb_close(&b);
        return EXIT_USAGE;
    }
    FILE *out = o.f;
    if (dot)
        mpk_print_dot(&b, out);
    else {
        fprintf(out, "blob %s: version %u, %zu bytes, %u tensors, %u tasks, %u events, %u queues\n", path,
                b.hdr->version, b.size, b.ntensors, b.ntasks, b.nevents, b.nqueues);
        mpk_print_taskgraph(&b, out);
        if (b.chunk) { /* the same for the chunk graph, over the same tensors */
            fprintf(out, "\nchunk graph (mpk build --chunk %u): %u tasks, %u events, %u queues\n", b.meta->chunk,
                    b.chunk->ntasks, b.chunk->nevents, b.chunk->nqueues);
            mpk_print_taskgraph(b.chunk, out);
        }
    }
    int status = mpk_out_close(&o, true, stderr) ? 0 : EXIT_USAGE;
    mpkb_close(&b);
    return status;
}

int main(int argc, char **argv)
{
    enum { OPT_EMIT = 256, OPT_MAX_ERRORS, OPT_TIME, OPT_VERSION, OPT_WERROR, OPT_WORKERS, OPT_STATS,
           OPT_DUMP, OPT_DOT, OPT_TP, OPT_CHUNK, OPT_SPLIT_K };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"emit", required_argument, NULL, OPT_EMIT},
        {"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
        {"time", no_argument, NULL, OPT_TIME},
        {"Werror", no_argument, NULL, OPT_WERROR},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"stats", no_argument, NULL, OPT_STATS},
        {"dump", required_argument, NULL, OPT_DUMP},
        {"dot", no_argument, NULL, OPT_DOT},
        {"tp", required_argument, NULL, OPT_TP},
        {"chunk", required_argument, NULL, OPT_CHUNK},
        {"split-k", required_argument, NULL, OPT_SPLIT_K},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("mpk %s\n", MPK_VERSION);
        return 0;
    }
    if (strcmp(cmd, "tokenize") == 0)
        return mpk_tokenize_cmd(argc - 1, argv + 1);
    if (strcmp(cmd, "detokenize") == 0)
        return mpk_detokenize_cmd(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return mpk_run_cmd(argc - 1, argv + 1, exe_dir());
    bool build = strcmp(cmd, "build") == 0, dump = strcmp(cmd, "dump") == 0;
    bool import = strcmp(cmd, "import") == 0, check = strcmp(cmd, "check") == 0;
    if (!build && !check && !dump && !import)
        return usage_error("unknown command '%s' (the commands are check, build, dump, import, run, tokenize "
                           "and detokenize)", cmd);

    incs = calloc((size_t)argc, sizeof *incs);
    defs = calloc((size_t)argc, sizeof *defs);
    if (!incs || !defs)
        return 3;
    atexit(free_lists);
    mpk_options opt = {.include_dirs = incs, .defines = defs, .exe_dir = exe_dir()};
    job j = {.max_errors = 20, .build = build};
    bool dot = false, model_opts = false;
    /* Old-style "-Werror" would read as -W with an argument; map it first. */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "-Werror") == 0)
            argv[i] = "--Werror";
    optind = 2;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":hD:I:o:w", longopts, NULL)) != -1;) {
        switch (c) {
        case 'h': usage(stdout); return 0;
        case OPT_VERSION: printf("mpk %s\n", MPK_VERSION); return 0;
        case 'D': defs[opt.ndefines++] = optarg, model_opts = true; break;
        case 'I': incs[opt.ninclude++] = optarg, model_opts = true; break;
        case 'o': j.out_path = optarg; break;
        case 'w': j.quiet = true, model_opts = true; break;
        case OPT_WERROR: j.werror = true, model_opts = true; break;
        case OPT_TIME: j.timing = true, model_opts = true; break;
        case OPT_EMIT: j.emit = optarg; break;
        case OPT_STATS: j.stats = true; break;
        case OPT_DOT: dot = true; break;
        case OPT_DUMP:
            if (mpk_pass_index(optarg) < 0)
                return usage_error("unknown pass '%s' (mpk --help lists the passes)", optarg);
            j.dump = optarg;
            break;
        case OPT_WORKERS: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || v < 1 || v > 65536)
                return usage_error("--workers needs a number from 1 to 65536, not '%s'", optarg);
            j.workers = v;
            break;
        }
        case OPT_TP: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || v < 1 || v > MPKB_MAX_TP)
                return usage_error("--tp needs a number of GPUs from 1 to 64, not '%s'", optarg);
            j.tp = v;
            break;
        }
        case OPT_CHUNK: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || v < 2 || v > MPK_MAX_CHUNK)
                return usage_error("--chunk needs a number of prompt tokens per step from 2 to %d, not '%s'",
                                   MPK_MAX_CHUNK, optarg);
            j.chunk = v;
            break;
        }
        case OPT_SPLIT_K: {
            char *end = NULL;
            errno = 0;
            bool is_auto = strcmp(optarg, "auto") == 0;
            long v = is_auto ? MPK_SPLIT_AUTO : strtol(optarg, &end, 10);
            if (!is_auto && (!*optarg || *end || errno || v < 1 || v > MPK_SPLIT_MAX))
                return usage_error("--split-k needs 'auto' or a number of parts from 1 to %d, not '%s'", MPK_SPLIT_MAX,
                                   optarg);
            j.split_k = v;
            break;
        }
        case OPT_MAX_ERRORS: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || v < 0 || v > INT_MAX)
                return usage_error("--max-errors needs a number, not '%s'", optarg);
            j.max_errors = (int)v;
            model_opts = true;
            break;
        }
        case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s: no input file", cmd);
    if ((build || dump || import) && optind + 1 < argc)
        return usage_error("one input file at a time; '%s' is one too many", argv[optind + 1]);
    if (j.out_path && check)
        return usage_error("%s", "-o goes with build, dump and import");
    if (j.emit && !build)
        return usage_error("--emit=%s goes with 'mpk build'", j.emit);
    if (j.emit && strcmp(j.emit, "graph") != 0)
        return usage_error("unknown --emit kind '%s' (the kind is graph; without --emit, build writes "
                           "a blob)", j.emit);
    if ((j.stats || j.dump || j.workers || j.tp || j.chunk || j.split_k) && (!build || j.emit))
        return usage_error("%s", "--stats, --dump, --workers, --tp, --chunk and --split-k go with 'mpk build' of a "
                                 "blob");
    for (int i = 0; j.chunk && i < opt.ndefines; i++)
        if (strncmp(defs[i], "n=", 2) == 0)
            return usage_error("-D %s and --chunk %lld both set n: --chunk compiles the model at n = 1 and "
                               "n = %lld", defs[i], (long long)j.chunk, (long long)j.chunk);
    if (dot && !dump)
        return usage_error("%s", "--dot goes with 'mpk dump'");
    if ((dump || import) && model_opts)
        return usage_error("%s takes no model options (-D, -I, -w, -Werror, --time, --max-errors)", cmd);
    if (dump)
        return dump_blob(argv[optind], j.out_path, dot);
    if (import)
        return mpk_import(argv[optind], j.out_path, stderr);

    /* Each file is a separate compilation; the worst status wins. */
    int status = 0;
    for (int i = optind; i < argc; i++) {
        int s = compile(argv[i], &opt, &j);
        if (s > status)
            status = s;
    }
    return status;
}
