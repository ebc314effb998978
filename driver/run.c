/*
 * run.c - `mpk run`: a checkpoint directory to generated text in one
 * command.
 *
 *   mpk run [-D NAME=VALUE]... [--workers=N] [--tp=N] [--chunk=C] DIR [mpk-run options]
 *
 *   import  DIR as `mpk import DIR` does, into a temporary file of the cache
 *   load    and check it (the stdlib's blocks with it)
 *   key     a hash of everything the blob depends on: this mpk binary, the
 *           text of every source file loaded (the imported model, the
 *           stdlib files), -D, --workers, --tp and --chunk
 *   build   into CACHE/KEY.mpkb, unless it is there already, with a chunk
 *           graph of --chunk rows (default MPK_RUN_CHUNK; 0: none) for
 *           the prompt
 *   exec    mpk-run CACHE/KEY.mpkb --weights DIR and the options after DIR
 *
 * CACHE is $XDG_CACHE_HOME/mpk, else $HOME/.cache/mpk. The weights are not
 * part of the key: a blob holds none (mpk-run binds them), so one blob
 * serves every checkpoint of a shape. mpk-run is the one beside this mpk,
 * else the first on the PATH.
 */
#include "driver/run.h"
#include "driver/import.h"
#include "frontend/frontend.h"
#include "lowering/lowering.h"
#include "mpk/util.h"
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MPK_VERSION
#define MPK_VERSION "0.1.0"
#endif

enum { EXIT_MODEL = 1, EXIT_USAGE = 2, MAX_DEFINES = 256 };

#define usage_error(...) mpk_usage_error("mpk run", "mpk", __VA_ARGS__)

__attribute__((format(printf, 1, 2)))
static char *dup_printf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

/* FNV-1a, 64 bits (mpk_fnv1a): a cache key, not a defence against anyone. */
static void fnv(uint64_t *h, const void *p, size_t n) { *h = mpk_fnv1a(*h, p, n); }

static void fnv_str(uint64_t *h, const char *s)
{
    fnv(h, s, strlen(s) + 1); /* the NUL keeps "ab","c" apart from "a","bc" */
}

/* The running mpk's bytes, so a rebuilt compiler never reuses a blob. */
static bool hash_exe(uint64_t *h)
{
    FILE *f = fopen("/proc/self/exe", "rb");
    if (!f)
        return false;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fnv(h, buf, n);
    bool ok = !ferror(f);
    fclose(f);
    return ok;
}

/* mkdir -p for the cache; its parents may not exist yet. */
static bool make_dirs(char *path)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p)
            continue;
        char c = *p;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "mpk run: error: cannot create the cache directory '%s': %s\n", path, strerror(errno));
            *p = c;
            return false;
        }
        *p = c;
        if (!c)
            return true;
    }
}

static char *cache_dir(void)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *dir = NULL;
    if (xdg && xdg[0] == '/')
        dir = dup_printf("%s/mpk", xdg);
    else if (home && home[0])
        dir = dup_printf("%s/.cache/mpk", home);
    else
        fprintf(stderr, "mpk run: error: no cache directory: set XDG_CACHE_HOME or HOME\n");
    if (dir && !make_dirs(dir)) {
        free(dir);
        dir = NULL;
    }
    return dir;
}

/* mpk-run beside this mpk, else by the PATH. */
static char *mpk_run_path(const char *exe_dir)
{
    if (exe_dir) {
        char *p = dup_printf("%s/mpk-run", exe_dir);
        if (p && access(p, X_OK) == 0)
            return p;
        free(p);
    }
    return strdup("mpk-run");
}

const char *mpk_chunk_unfit(const mpk_graph *g)
{
    for (int i = 0; i < g->params.n; i++) {
        const mpk_param_value *p = g->params.items[i];
        if (strcmp(p->name, "n") == 0)
            return p->value.kind == MPK_V_INT && p->value.i == 1 ? NULL : "sets n to another value";
    }
    return "has none";
}

mpk_low *mpk_lower_chunk(const char *path, const mpk_options *opt, const mpk_lower_opts *lo, int max_errors,
                         bool werror, mpk_ctx **cc)
{
    const char **defs2 = calloc((size_t)opt->ndefines + 2, sizeof *defs2);
    char def[48];
    if (!defs2)
        mpk_out_of_memory();
    memcpy(defs2, opt->defines, sizeof *defs2 * (size_t)opt->ndefines);
    snprintf(def, sizeof def, "n=%lld", (long long)lo->rows);
    defs2[opt->ndefines] = def;
    mpk_options o2 = *opt;
    o2.defines = defs2;
    o2.ndefines = opt->ndefines + 1;
    mpk_ctx *c = mpk_ctx_new(&o2, stderr);
    *cc = c;
    c->diag.max_errors = max_errors;
    c->diag.no_warnings = true; /* the decode graph's compilation said them */
    c->diag.werror = werror;
    mpk_low *L = NULL;
    if (mpk_load_file(c, path)) {
        mpk_graph *g = c->diag.stopped ? NULL : mpk_sema(c);
        if (g && !mpk_diag_failed(&c->diag))
            L = mpk_lower(g, lo, &c->diag);
    }
    if (!L || mpk_diag_failed(&c->diag)) {
        fprintf(stderr, "mpk: %s: the chunk graph (--chunk %lld, n = %lld) did not build\n", path,
                (long long)lo->rows, (long long)lo->rows);
        mpk_low_free(L);
        L = NULL;
    }
    free(defs2);
    return L;
}

/* Load and check the imported model; build it into blob unless there
 * (with a chunk graph of chunk rows, 0: none). */
static int build(const char *src, const char *dir, const mpk_options *opt, int64_t workers, int64_t tp,
                 int64_t chunk, char **blob)
{
    mpk_ctx *c = mpk_ctx_new(opt, stderr);
    int status = EXIT_MODEL;
    if (!mpk_load_file(c, src)) {
        mpk_ctx_free(c);
        return EXIT_USAGE;
    }
    mpk_graph *g = c->diag.stopped ? NULL : mpk_sema(c);
    if (!g || mpk_diag_failed(&c->diag)) {
        mpk_ctx_free(c);
        return EXIT_MODEL;
    }
    uint64_t h = MPK_FNV_INIT;
    fnv_str(&h, "mpk " MPK_VERSION);
    if (!hash_exe(&h)) {
        fprintf(stderr, "mpk run: error: cannot read /proc/self/exe for the cache key: %s\n", strerror(errno));
        mpk_ctx_free(c);
        return EXIT_MODEL;
    }
    for (int i = 0; i < c->diag.files.n; i++) {
        const mpk_source *s = c->diag.files.items[i];
        fnv(&h, &s->len, sizeof s->len);
        fnv(&h, s->text, s->len);
    }
    for (int i = 0; i < opt->ndefines; i++)
        fnv_str(&h, opt->defines[i]);
    fnv(&h, &workers, sizeof workers);
    fnv(&h, &tp, sizeof tp);
    if (chunk && mpk_chunk_unfit(g))
        chunk = 0; /* a model that cannot have one: built as it is */
    fnv(&h, &chunk, sizeof chunk);
    *blob = dup_printf("%s/%016llx.mpkb", dir, (unsigned long long)h);
    if (!*blob) {
        mpk_ctx_free(c);
        return EXIT_MODEL;
    }
    if (access(*blob, R_OK) == 0) {
        mpk_ctx_free(c);
        return 0;
    }
    mpk_lower_opts lo = {.workers = workers, .tp = tp, .dump_out = stdout, .rows = 1};
    mpk_low *L = mpk_lower(g, &lo, &c->diag), *Lc = NULL;
    mpk_ctx *cc = NULL;
    if (L && !mpk_diag_failed(&c->diag) && chunk) {
        mpk_lower_opts lc = lo;
        lc.rows = chunk;
        Lc = mpk_lower_chunk(src, opt, &lc, 20, false, &cc);
    }
    if (L && !mpk_diag_failed(&c->diag) && (!chunk || Lc))
        status = mpk_emit(L, Lc, *blob) ? 0 : EXIT_USAGE;
    mpk_low_free(Lc);
    if (cc)
        mpk_ctx_free(cc);
    mpk_low_free(L);
    mpk_ctx_free(c);
    return status;
}

static bool parse_count(const char *s, long max, int64_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

int mpk_run_cmd(int argc, char **argv, const char *exe_dir)
{
    enum { OPT_WORKERS = 256, OPT_TP, OPT_CHUNK };
    static const struct option longopts[] = {
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"tp", required_argument, NULL, OPT_TP},
        {"chunk", required_argument, NULL, OPT_CHUNK},
        {NULL, 0, NULL, 0},
    };
    const char *defs[MAX_DEFINES];
    mpk_options opt = {.defines = defs, .exe_dir = exe_dir};
    int64_t workers = 0, tp = 0, chunk = MPK_RUN_CHUNK;
    optind = 1;
    opterr = 0;
    /* "+": the options end at DIR; what follows is mpk-run's. */
    for (int c; (c = getopt_long(argc, argv, "+:D:", longopts, NULL)) != -1;) {
        switch (c) {
        case 'D':
            if (opt.ndefines == MAX_DEFINES)
                return usage_error("at most 256 -D options, not more ('%s')", optarg);
            defs[opt.ndefines++] = optarg;
            break;
        case OPT_WORKERS:
            if (!parse_count(optarg, 65536, &workers))
                return usage_error("--workers needs a number from 1 to 65536, not '%s'", optarg);
            break;
        case OPT_TP:
            if (!parse_count(optarg, 64, &tp))
                return usage_error("--tp needs a number of GPUs from 1 to 64, not '%s'", optarg);
            break;
        case OPT_CHUNK:
            if (strcmp(optarg, "0") == 0)
                chunk = 0;
            else if (!parse_count(optarg, MPK_MAX_CHUNK, &chunk) || chunk < 2)
                return usage_error("--chunk needs 0 (a prompt token a step) or a number of prompt tokens per "
                                   "step from 2 to %d, not '%s'", MPK_MAX_CHUNK, optarg);
            break;
        case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default: return usage_error("unknown option '%s' (mpk-run's options go after DIR)", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no checkpoint directory given");
    const char *ckpt = argv[optind];
    struct stat st;
    if (stat(ckpt, &st) != 0 || !S_ISDIR(st.st_mode))
        return usage_error("'%s' is not a checkpoint directory (config.json, the weights, tokenizer.json)", ckpt);
    char *dir = cache_dir(), *src = NULL, *blob = NULL, *run = NULL;
    if (!dir)
        return EXIT_MODEL;
    int status = EXIT_MODEL;
    src = dup_printf("%s/import-%ld.mpk", dir, (long)getpid());
    if (src && (status = mpk_import(ckpt, src, stderr)) == 0) {
        status = build(src, dir, &opt, workers, tp, chunk, &blob);
    }
    if (src)
        unlink(src);
    bool weights = false;
    for (int i = optind + 1; i < argc; i++)
        weights |= strcmp(argv[i], "--weights") == 0 || strncmp(argv[i], "--weights=", 10) == 0;
    char **args = status == 0 ? calloc((size_t)argc + 4, sizeof *args) : NULL;
    if (status == 0 && args && (run = mpk_run_path(exe_dir))) {
        int n = 0;
        args[n++] = run;
        args[n++] = blob;
        if (!weights)
            args[n++] = "--weights", args[n++] = (char *)ckpt;
        for (int i = optind + 1; i < argc; i++)
            args[n++] = argv[i];
        args[n] = NULL;
        fflush(NULL);
        execvp(run, args);
        fprintf(stderr, "mpk run: error: cannot run '%s': %s\n", run, strerror(errno));
        status = EXIT_MODEL;
    } else if (status == 0) {
        fprintf(stderr, "mpk run: error: out of memory\n");
        status = EXIT_MODEL;
    }
    free(args);
    free(run);
    free(blob);
    free(src);
    free(dir);
    return status;
}
