/*
 * diag.c - source files and GNU-style diagnostics.
 *
 *   file:line:col: error: message
 *   <the source line>
 *   <caret ^ under the start of the span, ~ under the rest>
 *
 * Locations are byte offsets; the line-start table of each file turns them
 * into line and column only here. The same message at the same place is
 * printed once (a block expanded 36 times has one error, not 36), errors stop
 * being printed after max_errors, and notes follow their error only if it
 * was printed. File 0 is the command line: its messages have no source line.
 */
#include "frontend.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

void mpk_internal_error(const char *file, int line, const char *what)
{
    fprintf(stderr, "mpk: internal error at %s:%d: %s\n"
                    "mpk: this is a bug in mpk; please report it with the input\n",
            file, line, what);
    abort();
}

void mpk_diag_init(mpk_diag *d, mpk_arena *a, FILE *out)
{
    memset(d, 0, sizeof *d);
    d->arena = a;
    d->out = out;
    d->max_errors = 20;
    mpk_diag_add_source(d, "<command-line>", "<command-line>", "", 0);
}

uint32_t mpk_diag_add_source(mpk_diag *d, const char *name, const char *path,
                             const char *text, size_t len)
{
    mpk_source *s = mpk_arena_alloc(d->arena, sizeof *s);
    s->name = mpk_arena_strdup(d->arena, name);
    s->path = mpk_arena_strdup(d->arena, path);
    s->text = text;
    s->len = (uint32_t)len;
    uint32_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    s->lines = mpk_arena_alloc(d->arena, sizeof(uint32_t) * n);
    s->lines[0] = 0;
    s->nlines = 1;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n')
            s->lines[s->nlines++] = (uint32_t)i + 1;
    mpk_vec_push(d->arena, &d->files, s);
    return (uint32_t)d->files.n - 1;
}

mpk_source *mpk_diag_source(mpk_diag *d, uint32_t file)
{
    MPK_ASSERT((int)file < d->files.n);
    return d->files.items[file];
}

/* Line index (0-based) of a byte offset. */
static uint32_t line_of(const mpk_source *s, uint32_t off)
{
    uint32_t lo = 0, hi = s->nlines;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->lines[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

void mpk_diag_linecol(mpk_diag *d, mpk_loc loc, uint32_t *line, uint32_t *col)
{
    mpk_source *s = mpk_diag_source(d, loc.file);
    uint32_t off = loc.start > s->len ? s->len : loc.start;
    uint32_t l = line_of(s, off);
    uint32_t c = 1;
    /* Columns count characters, not UTF-8 continuation bytes. */
    for (uint32_t i = s->lines[l]; i < off; i++)
        c += ((unsigned char)s->text[i] & 0xC0) != 0x80;
    *line = l + 1;
    *col = c;
}

static void print_source_line(mpk_diag *d, mpk_loc loc)
{
    mpk_source *s = mpk_diag_source(d, loc.file);
    uint32_t off = loc.start > s->len ? s->len : loc.start;
    uint32_t l = line_of(s, off);
    uint32_t b = s->lines[l], e = b;
    while (e < s->len && s->text[e] != '\n' && s->text[e] != '\r')
        e++;
    FILE *o = d->out;
    for (uint32_t i = b; i < e; i++) {
        unsigned char ch = (unsigned char)s->text[i];
        fputc(ch == '\t' || ch >= 0x20 ? ch : '?', o);
    }
    fputc('\n', o);
    for (uint32_t i = b; i < off; i++) {
        unsigned char ch = (unsigned char)s->text[i];
        if (ch == '\t')
            fputc('\t', o);
        else if ((ch & 0xC0) != 0x80)
            fputc(' ', o);
    }
    fputc('^', o);
    uint32_t end = loc.end < e ? loc.end : e;
    for (uint32_t i = off + 1; i < end; i++)
        if (((unsigned char)s->text[i] & 0xC0) != 0x80)
            fputc('~', o);
    fputc('\n', o);
}

/* Returns true the first time a hash is seen. */
static bool first_time(mpk_diag *d, uint64_t h)
{
    if (h == 0)
        h = 1;
    if (d->nseen * 2 >= d->capseen) {
        size_t cap = d->capseen ? d->capseen * 2 : 64;
        uint64_t *t = calloc(cap, sizeof *t);
        if (!t)
            return true;
        for (size_t i = 0; i < d->capseen; i++) {
            uint64_t v = d->seen[i];
            if (!v)
                continue;
            size_t j = v & (cap - 1);
            while (t[j])
                j = (j + 1) & (cap - 1);
            t[j] = v;
        }
        free(d->seen);
        d->seen = t;
        d->capseen = cap;
    }
    size_t j = h & (d->capseen - 1);
    while (d->seen[j]) {
        if (d->seen[j] == h)
            return false;
        j = (j + 1) & (d->capseen - 1);
    }
    d->seen[j] = h;
    d->nseen++;
    return true;
}

bool mpk_vreport(mpk_diag *d, mpk_severity sev, mpk_loc loc, const char *fmt,
                 va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    bool werror = false;
    if (sev == MPK_WARNING) {
        /* Like a compiler's system headers: what is imported is not the
         * user's to fix, so its warnings are not shown. */
        if (d->no_warnings || (d->main_file && loc.file != 0 && loc.file != d->main_file)) {
            d->last_shown = false;
            return false;
        }
        if (d->werror) {
            sev = MPK_ERROR;
            werror = true;
        }
    }
    if (sev == MPK_NOTE) {
        if (!d->last_shown)
            return false;
    } else {
        if (sev == MPK_ERROR)
            d->errors++;
        else
            d->warnings++;
        uint64_t h = mpk_fnv1a(MPK_FNV_INIT, &sev, sizeof sev);
        h = mpk_fnv1a(h, &loc.file, sizeof loc.file);
        h = mpk_fnv1a(h, &loc.start, sizeof loc.start);
        h = mpk_fnv1a(h, msg, strlen(msg));
        d->last_shown = false;
        /* Duplicates are not printed, but they are work: a model that
         * repeats one error endlessly is stopped too. */
        if (sev == MPK_ERROR && d->errors > MPK_MAX_ERRORS_SEEN && !d->stopped) {
            fprintf(d->out, "mpk: over %d errors, stopping now\n", MPK_MAX_ERRORS_SEEN);
            d->stopped = true;
        }
        if (d->stopped || !first_time(d, h))
            return false;
        if (sev == MPK_ERROR && d->max_errors > 0 &&
            d->shown_errors >= d->max_errors) {
            fprintf(d->out, "mpk: too many errors, stopping now [--max-errors=%d]\n",
                    d->max_errors);
            d->stopped = true;
            return false;
        }
        if (sev == MPK_ERROR)
            d->shown_errors++;
        d->last_shown = true;
    }
    static const char *const names[] = {"error", "warning", "note"};
    if (loc.file == 0) {
        d->last_loc = loc;
        fprintf(d->out, "mpk: %s: %s%s\n", names[sev], msg, werror ? " [-Werror]" : "");
        return true;
    }
    uint32_t line, col;
    mpk_diag_linecol(d, loc, &line, &col);
    fprintf(d->out, "%s:%u:%u: %s: %s%s\n", mpk_diag_source(d, loc.file)->name,
            line, col, names[sev], msg, werror ? " [-Werror]" : "");
    bool same = sev == MPK_NOTE && loc.file == d->last_loc.file &&
                loc.start == d->last_loc.start && loc.end == d->last_loc.end;
    if (!same)
        print_source_line(d, loc);
    d->last_loc = loc;
    return true;
}

bool mpk_error(mpk_diag *d, mpk_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool r = mpk_vreport(d, MPK_ERROR, loc, fmt, ap);
    va_end(ap);
    return r;
}

bool mpk_warning(mpk_diag *d, mpk_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool r = mpk_vreport(d, MPK_WARNING, loc, fmt, ap);
    va_end(ap);
    return r;
}

void mpk_note(mpk_diag *d, mpk_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mpk_vreport(d, MPK_NOTE, loc, fmt, ap);
    va_end(ap);
}

void mpk_note_imports(mpk_diag *d, uint32_t file)
{
    /* An import chain cannot loop (each file is loaded once), but bound the
     * walk anyway. */
    for (int guard = 0; guard < 256 && file != 0; guard++) {
        mpk_source *s = mpk_diag_source(d, file);
        if (!s->has_importer)
            break;
        mpk_note(d, s->importer, "'%s' imported from here", s->name);
        file = s->importer.file;
    }
}

bool mpk_diag_failed(const mpk_diag *d)
{
    return d->errors > 0;
}
