/*
 * parse.c - loading model files: reading, scanning, parsing, imports.
 *
 * A file's imports are loaded before its own items are appended, so
 * ctx->items lists every file's declarations with dependencies first. Each
 * file is loaded once, keyed by its real path, which also makes import
 * cycles harmless. Only regular files are read (an import of /dev/zero
 * must not hang the compiler), and only up to MAX_FILE bytes.
 */
#include "frontend.h"
#include "parser.h"
#include "lexer.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MPK_DATADIR
#define MPK_DATADIR "/usr/local/share/mpk"
#endif

enum { MAX_FILE = 16 << 20 };

mpk_ctx *mpk_ctx_new(const mpk_options *opt, FILE *diag_out)
{
    mpk_arena *a = mpk_arena_new();
    mpk_ctx *c = mpk_arena_alloc(a, sizeof *c);
    c->arena = a;
    if (opt)
        c->opt = *opt;
    mpk_diag_init(&c->diag, a, diag_out ? diag_out : stderr);
    c->budget = MPK_MAX_STEPS;
    return c;
}

void mpk_ctx_free(mpk_ctx *c)
{
    if (!c)
        return;
    free(c->diag.seen);
    mpk_arena_free(c->arena);
}

/* Reads a regular file into the arena. On failure returns NULL with a
 * reason in *why. */
static char *read_file(mpk_ctx *c, const char *path, size_t *len, const char **why)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *why = strerror(errno);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        *why = strerror(errno);
        fclose(f);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        *why = S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file";
        fclose(f);
        return NULL;
    }
    if (st.st_size > MAX_FILE) {
        *why = "file is larger than 16 MiB";
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = mpk_arena_alloc(c->arena, n + 1);
    size_t got = fread(buf, 1, n, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        *why = "read error";
        return NULL;
    }
    buf[got] = 0;
    *len = got;
    return buf;
}

static bool is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static uint32_t find_loaded(mpk_ctx *c, const char *real)
{
    for (int i = 1; i < c->diag.files.n; i++)
        if (strcmp(((mpk_source *)c->diag.files.items[i])->path, real) == 0)
            return (uint32_t)i;
    return 0;
}

static void parse_source(mpk_ctx *c, uint32_t file);

/* How an imported file is named in messages: its real path, relative to
 * the working directory when it lies below it ("stdlib/std/nn.mpk", not
 * "/usr/src/mpk/bin/../stdlib/std/nn.mpk"). */
static const char *display_name(mpk_ctx *c, const char *real)
{
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return real;
    size_t n = strlen(cwd);
    if (strcmp(real, cwd) == 0)
        return ".";
    if (n > 1 && strncmp(real, cwd, n) == 0 && real[n] == '/')
        return mpk_arena_strdup(c->arena, real + n + 1);
    return mpk_arena_strdup(c->arena, real);
}

/* Loads and parses one file. importer is NULL for a root file, which keeps
 * the name it was given. */
static bool load(mpk_ctx *c, const char *name, const char *path, const mpk_loc *importer)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        snprintf(real, sizeof real, "%s", path);
    if (importer)
        name = display_name(c, real);
    if (find_loaded(c, real))
        return true;
    size_t len = 0;
    const char *why = NULL;
    char *text = read_file(c, path, &len, &why);
    if (!text) {
        c->import_failed |= importer != NULL;
        mpk_loc at = importer ? *importer : (mpk_loc){0, 0, 0};
        mpk_error(&c->diag, at, "cannot read '%s': %s", path, why);
        return false;
    }
    if (len > UINT32_MAX / 2) {
        mpk_error(&c->diag, (mpk_loc){0, 0, 0}, "'%s' is too large", path);
        return false;
    }
    uint32_t file = mpk_diag_add_source(&c->diag, name, real, text, len);
    if (importer) {
        mpk_source *s = mpk_diag_source(&c->diag, file);
        s->has_importer = true;
        s->importer = *importer;
    } else if (c->diag.main_file == 0) {
        c->diag.main_file = file;
    }
    parse_source(c, file);
    return true;
}

/* Standard input, read to the end (it need not be a regular file). */
static bool load_stdin(mpk_ctx *c)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0;) {
        n += got;
        if (n == cap) {
            if (cap >= MAX_FILE) {
                free(buf);
                mpk_error(&c->diag, (mpk_loc){0, 0, 0}, "standard input is larger than 16 MiB");
                return false;
            }
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    if (!buf || ferror(stdin)) {
        free(buf);
        mpk_error(&c->diag, (mpk_loc){0, 0, 0}, "cannot read standard input");
        return false;
    }
    bool ok = mpk_load_buffer(c, "<stdin>", buf, n);
    free(buf);
    return ok;
}

bool mpk_load_file(mpk_ctx *c, const char *path)
{
    if (strcmp(path, "-") == 0)
        return load_stdin(c);
    return load(c, path, path, NULL);
}

bool mpk_load_buffer(mpk_ctx *c, const char *name, const char *text, size_t len)
{
    if (len > UINT32_MAX / 2)
        return false;
    char *copy = mpk_arena_strndup(c->arena, text, len);
    uint32_t file = mpk_diag_add_source(&c->diag, name, name, copy, len);
    if (c->diag.main_file == 0)
        c->diag.main_file = file;
    parse_source(c, file);
    return true;
}

static char *join(mpk_ctx *c, const char *dir, const char *rel)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return mpk_arena_printf(c->arena, "%.*s/%s", (int)n, dir, rel);
}

/* The import search path, in order; see mpk(1). */
static void search_dirs(mpk_ctx *c, uint32_t from, mpk_vec *dirs)
{
    mpk_arena *a = c->arena;
    const char *importer = mpk_diag_source(&c->diag, from)->path;
    const char *slash = strrchr(importer, '/');
    mpk_vec_push(a, dirs, slash ? mpk_arena_strndup(a, importer, (size_t)(slash - importer) + (slash == importer))
                                : (char *)".");
    for (int i = 0; i < c->opt.ninclude; i++)
        mpk_vec_push(a, dirs, (void *)c->opt.include_dirs[i]);
    const char *env = c->opt.no_env ? NULL : getenv("MPK_PATH");
    while (env && *env) {
        const char *colon = strchr(env, ':');
        size_t n = colon ? (size_t)(colon - env) : strlen(env);
        if (n)
            mpk_vec_push(a, dirs, mpk_arena_strndup(a, env, n));
        env = colon ? colon + 1 : NULL;
    }
    if (c->opt.exe_dir) {
        mpk_vec_push(a, dirs, join(c, c->opt.exe_dir, "../share/mpk"));
        mpk_vec_push(a, dirs, join(c, c->opt.exe_dir, "../stdlib"));
    }
    mpk_vec_push(a, dirs, (void *)MPK_DATADIR);
}

static void do_import(mpk_ctx *c, mpk_stmt *imp)
{
    const char *rel = imp->name;
    if (!*rel) {
        mpk_error(&c->diag, imp->name_loc, "empty import path");
        return;
    }
    if (rel[0] == '/') {
        if (!is_regular(rel)) {
            c->import_failed = true;
            mpk_error(&c->diag, imp->name_loc, "cannot import '%s': not a readable file", rel);
            mpk_note_imports(&c->diag, imp->file);
            return;
        }
        load(c, rel, rel, &imp->name_loc);
        return;
    }
    mpk_vec dirs = {0};
    search_dirs(c, imp->file, &dirs);
    for (int i = 0; i < dirs.n; i++) {
        char *p = join(c, dirs.items[i], rel);
        if (is_regular(p)) {
            load(c, p, p, &imp->name_loc);
            return;
        }
    }
    c->import_failed = true;
    if (!mpk_error(&c->diag, imp->name_loc, "cannot find '%s'", rel))
        return;
    /* Name the directories that exist, each once, as display names. */
    char *list = "";
    mpk_vec seen = {0};
    for (int i = 0; i < dirs.n; i++) {
        char real[PATH_MAX];
        if (!realpath(dirs.items[i], real))
            continue;
        const char *name = display_name(c, real);
        bool dup = false;
        for (int j = 0; j < seen.n; j++)
            dup |= strcmp(seen.items[j], name) == 0;
        if (dup)
            continue;
        mpk_vec_push(c->arena, &seen, (void *)name);
        list = mpk_arena_printf(c->arena, "%s%s%s", list, *list ? ", " : "", name);
    }
    mpk_note(&c->diag, imp->name_loc, "searched %s (add a directory with -I or MPK_PATH)",
             *list ? list : "no existing directory");
    mpk_note_imports(&c->diag, imp->file);
}

static void parse_source(mpk_ctx *c, uint32_t file)
{
    mpk_source *src = mpk_diag_source(&c->diag, file);
    mpk_lexer lx = {.ctx = c, .file = file};
    mpk_parse_state P = {.ctx = c, .lex = &lx, .file = file};
    yyscan_t scanner;
    if (yylex_init_extra(&lx, &scanner) != 0)
        mpk_internal_error(__FILE__, __LINE__, "cannot start the scanner");
    yy_scan_bytes(src->text, (int)src->len, scanner);
    /* A result of 2 (nesting too deep for the parser's stack) has been
     * reported through yyerror like any syntax error. */
    yyparse(scanner, &P);
    yylex_destroy(scanner);
    /* Imports first, so that dependencies precede their users. */
    for (mpk_stmt *s = P.head; s && !c->diag.stopped; s = s->next)
        if (s->kind == MPK_S_IMPORT)
            do_import(c, s);
    if (P.head) {
        if (c->items_tail)
            c->items_tail->next = P.head;
        else
            c->items = P.head;
        c->items_tail = P.tail;
    }
}

/* For the lexer's tests: the token codes of a buffer, up to max. */
int mpk_lex_tokens(mpk_ctx *c, const char *text, size_t len, int *out, int max)
{
    uint32_t file = mpk_diag_add_source(&c->diag, "<lex>", "<lex>",
                                        mpk_arena_strndup(c->arena, text, len), len);
    mpk_lexer lx = {.ctx = c, .file = file};
    yyscan_t scanner;
    if (yylex_init_extra(&lx, &scanner) != 0)
        return -1;
    yy_scan_bytes(mpk_diag_source(&c->diag, file)->text, (int)len, scanner);
    int n = 0;
    YYSTYPE v;
    YYLTYPE l;
    for (int t; (t = yylex(&v, &l, scanner)) != 0 && n < max;)
        out[n++] = t;
    yylex_destroy(scanner);
    return n;
}
