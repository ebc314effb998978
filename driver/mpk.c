/*
 * mpk.c - the compiler's command line.
 *
 *   mpk check FILE.mpk...              parse and check, each file on its own
 *   mpk build --emit=graph FILE.mpk    print the typed, expanded op graph
 *
 * The pipeline reads top to bottom in compile(): load (parse + imports),
 * sema (names, params, expansion, shapes), then the requested output.
 * Exit status: 0 success, 1 errors in the model, 2 usage errors.
 */
#include "frontend/frontend.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_MODEL = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: mpk check [options] FILE.mpk...   (FILE '-' is standard input)\n"
    "       mpk build --emit=graph [options] FILE.mpk\n"
    "       mpk --help | --version\n"
    "\n"
    "commands:\n"
    "  check            check models: syntax, names, params, shapes\n"
    "  build            compile a model; --emit=graph prints the typed op graph\n"
    "                   (writing a blob comes with the lowering passes)\n"
    "\n"
    "options:\n"
    "  -D NAME=VALUE    override param NAME (repeatable)\n"
    "  -I DIR           add DIR to the import search path (repeatable)\n"
    "  -o FILE          write the output to FILE instead of standard output\n"
    "  --emit=graph     (build) print the expanded, typed op graph\n"
    "  --max-errors=N   stop after N errors (default 20; 0: no limit)\n"
    "  -w               do not print warnings\n"
    "  -Werror          treat warnings as errors\n"
    "  --time           print the time each phase took on standard error\n"
    "  -h, --help       print this help\n"
    "  --version        print the version\n"
    "\n"
    "Imports are searched in the importing file's directory, then -I, then\n"
    "MPK_PATH (colon-separated), then the installed stdlib. See mpk(1), mpk(5).\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "mpk: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'mpk --help' for more information.\n");
    return EXIT_USAGE;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

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

/* One compilation: load, check, and for build print the graph. */
static int compile(const char *path, const mpk_options *opt, int max_errors, bool quiet,
                   bool werror, bool timing, bool build, const char *out_path)
{
    double t0 = now_ms();
    mpk_ctx *c = mpk_ctx_new(opt, stderr);
    c->diag.max_errors = max_errors;
    c->diag.no_warnings = quiet;
    c->diag.werror = werror;
    if (!mpk_load_file(c, path)) {
        /* The input file itself could not be read: a usage error. */
        mpk_ctx_free(c);
        return EXIT_USAGE;
    }
    double t1 = now_ms();
    mpk_graph *g = NULL;
    if (!c->diag.stopped)
        g = mpk_sema(c);
    double t2 = now_ms();
    int status = mpk_diag_failed(&c->diag) ? EXIT_MODEL : 0;
    if (status == 0 && build) {
        if (!g) {
            mpk_error(&c->diag, (mpk_loc){0, 0, 0}, "%s: no graph to build", path);
            status = EXIT_MODEL;
        } else {
            FILE *out = out_path ? fopen(out_path, "w") : stdout;
            if (!out) {
                fprintf(stderr, "mpk: error: cannot write '%s': %s\n", out_path, strerror(errno));
                status = EXIT_USAGE;
            } else {
                mpk_graph_print(out, g);
                if ((out_path ? fclose(out) : fflush(out)) != 0) {
                    fprintf(stderr, "mpk: error: writing '%s' failed\n", out_path ? out_path : "<stdout>");
                    status = EXIT_USAGE;
                }
            }
        }
    }
    double t3 = now_ms();
    if (timing)
        fprintf(stderr, "mpk: time: %s: parse %.2f ms, sema %.2f ms, output %.2f ms, total %.2f ms\n",
                path, t1 - t0, t2 - t1, t3 - t2, t3 - t0);
    mpk_ctx_free(c);
    return status;
}

int main(int argc, char **argv)
{
    enum { OPT_EMIT = 256, OPT_MAX_ERRORS, OPT_TIME, OPT_VERSION, OPT_WERROR };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"emit", required_argument, NULL, OPT_EMIT},
        {"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
        {"time", no_argument, NULL, OPT_TIME},
        {"Werror", no_argument, NULL, OPT_WERROR},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("mpk %s\n", MPK_VERSION);
        return 0;
    }
    bool build = strcmp(cmd, "build") == 0;
    if (!build && strcmp(cmd, "check") != 0)
        return usage_error("unknown command '%s' (the commands are check and build)", cmd);

    incs = calloc((size_t)argc, sizeof *incs);
    defs = calloc((size_t)argc, sizeof *defs);
    if (!incs || !defs)
        return 3;
    atexit(free_lists);
    mpk_options opt = {.include_dirs = incs, .defines = defs, .exe_dir = exe_dir()};
    const char *out_path = NULL, *emit = NULL;
    long max_errors = 20;
    bool quiet = false, werror = false, timing = false;
    /* Old-style "-Werror" would read as -W with an argument; map it first. */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "-Werror") == 0)
            argv[i] = "--Werror";
    optind = 2;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":hD:I:o:w", longopts, NULL)) != -1;) {
        switch (c) {
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_VERSION: printf("mpk %s\n", MPK_VERSION); return 0;
        case 'D': defs[opt.ndefines++] = optarg; break;
        case 'I': incs[opt.ninclude++] = optarg; break;
        case 'o': out_path = optarg; break;
        case 'w': quiet = true; break;
        case OPT_WERROR: werror = true; break;
        case OPT_TIME: timing = true; break;
        case OPT_EMIT: emit = optarg; break;
        case OPT_MAX_ERRORS: {
            char *end;
            errno = 0;
            max_errors = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || max_errors < 0 || max_errors > INT_MAX)
                return usage_error("--max-errors needs a number, not '%s'", optarg);
            break;
        }
        case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s: no input file", cmd);
    if (build && optind + 1 < argc)
        return usage_error("build takes one input file; '%s' is one too many", argv[optind + 1]);
    if (out_path && !build)
        return usage_error("%s", "-o goes with 'mpk build'");
    if (emit && !build)
        return usage_error("--emit=%s goes with 'mpk build'", emit);
    if (build && !emit)
        return usage_error("%s", "writing a blob is not implemented yet; use 'mpk build --emit=graph'");
    if (emit && strcmp(emit, "graph") != 0)
        return usage_error("unknown --emit kind '%s' (the kind is graph)", emit);

    /* Each file is a separate compilation; the worst status wins. */
    int status = 0;
    for (int i = optind; i < argc; i++) {
        int s = compile(argv[i], &opt, (int)max_errors, quiet, werror, timing, build, out_path);
        if (s > status)
            status = s;
    }
    return status;
}
