/*
 * sema.c - from the AST to a typed, fully expanded op graph.
 *
 * 1. collect   every file's top-level names into one global scope
 *              (duplicates are errors), static checks of each block
 * 2. params    -D overrides, then evaluation (lazily, so order is free;
 *              a param defined in terms of itself is an error)
 * 3. globals   inputs, states and top-level weights become tensors
 * 4. expand    the graph body is interpreted: for loops are unrolled,
 *              block calls inlined, each primitive op is shape-checked and
 *              appended as a node; weights declared inside blocks are
 *              created per expansion from their name templates
 * 5. warn      unused names, shadowed globals
 *
 * A value that failed to evaluate is MPK_V_NONE; every consumer passes it
 * on silently, so one mistake gives one error, not a cascade. Errors inside
 * a block are followed by notes naming the chain of expansions (and loop
 * iterations) that led there. A step budget bounds the work a hostile model
 * can ask for.
 */
#include "frontend.h"
#include "mpk/blob.h"

#include <errno.h>
#include <limits.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_DEPTH = 64,           /* nested block expansions */
    MAX_LOOP = 1 << 20,       /* iterations of one for loop */
    MAX_NODES = 1 << 18,      /* Qwen3-8B has 832; this is 300 times that */
};
#define MAX_NUMEL ((int64_t)MPKB_MAX_NUMEL) /* a blob's limits: mpk/blob.h */

/* ---- a string-keyed hash map in the arena ---------------------------- */

typedef struct {
    const char **keys;
    void **vals;
    size_t n, cap;
} smap;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static void *smap_get(const smap *m, const char *k)
{
    if (!m->cap)
        return NULL;
    for (size_t i = str_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return NULL;
        if (strcmp(m->keys[i], k) == 0)
            return m->vals[i];
    }
}

static void smap_put(mpk_arena *a, smap *m, const char *k, void *v)
{
    if ((m->n + 1) * 2 > m->cap) {
        smap old = *m;
        m->cap = old.cap ? old.cap * 2 : 16;
        m->keys = mpk_arena_alloc(a, sizeof(char *) * m->cap);
        m->vals = mpk_arena_alloc(a, sizeof(void *) * m->cap);
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i])
                smap_put(a, m, old.keys[i], old.vals[i]);
    }
    size_t i = str_hash(k) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], k) != 0)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = k;
    m->vals[i] = v;
}

/* ---- scopes ------------------------------------------------------------ */

typedef enum { SYM_PARAM, SYM_WEIGHT, SYM_STATE, SYM_INPUT, SYM_BLOCK, SYM_GRAPH } sym_kind;

static const char *const sym_kind_name[] = {"param", "weight", "state", "input", "block", "graph"};
static const char *const sym_kind_a[] = {"a param", "a weight", "a state", "an input", "a block", "a graph"};

typedef struct {
    const char *name;
    sym_kind kind;
    mpk_stmt *decl;
    mpk_value value;          /* PARAM value; WEIGHT/STATE/INPUT tensor */
    int eval;                 /* PARAM: 0 not yet, 1 in progress, 2 done */
    bool used;
    const char *override;     /* PARAM: the -D text */
} sym;

typedef struct binding {
    const char *name;
    mpk_value v;
    mpk_loc loc;
    bool used;
    bool is_param;            /* a block parameter */
    bool is_loopvar;
    struct binding *next;     /* all bindings of the scope, for warnings */
    bool dead;                /* a finished loop's variable */
} binding;

typedef struct {
    smap vars;                /* name -> binding */
    binding *all;
    const char *block;        /* NULL in the graph */
} scope;

/* The expansion stack, for notes. */
typedef struct frame {
    struct frame *up;
    const char *block;        /* block call, or NULL for a loop iteration */
    mpk_loc loc;              /* call site, or the for statement */
    const char *var;          /* loop variable */
    int64_t iter;
} frame;

typedef struct {
    mpk_ctx *c;
    mpk_diag *d;
    mpk_arena *a;
    smap globals;             /* name -> sym */
    mpk_vec syms;             /* sym *, in declaration order */
    smap weights;             /* HF name -> mpk_tensor */
    mpk_graph *g;
    frame *fr;
    int depth;
    bool out_of_budget;
    bool pending;             /* an expansion chain waits to be printed */
    frame pending_frames[MAX_DEPTH * 2];
    int npending;
    uint32_t pending_file;
} sema;

static const mpk_value NONE = {.kind = MPK_V_NONE};

/* ---- diagnostics with the expansion chain ---------------------------- */

/* The chain of expansions is printed after the notes that a caller adds to
 * its error (where the operand was declared, ...), so serr() only records
 * it; the next report, or the end of sema, prints it. */
static void flush_chain(sema *S)
{
    if (!S->pending)
        return;
    S->pending = false;
    for (int i = 0; i < S->npending; i++) {
        frame *f = &S->pending_frames[i];
        if (f->block)
            mpk_note(S->d, f->loc, "in expansion of block '%s'", f->block);
        else
            mpk_note(S->d, f->loc, "in iteration %s = %lld", f->var, (long long)f->iter);
    }
    mpk_note_imports(S->d, S->pending_file);
}

static void record_chain(sema *S, uint32_t file)
{
    S->pending = true;
    S->npending = 0;
    for (frame *f = S->fr; f && S->npending < MAX_DEPTH * 2; f = f->up)
        S->pending_frames[S->npending++] = *f;
    /* Then how the file with the error was reached, import by import. */
    S->pending_file = file;
}

static bool sreport(sema *S, mpk_severity sev, mpk_loc loc, const char *fmt, va_list ap)
{
    flush_chain(S);
    bool shown = mpk_vreport(S->d, sev, loc, fmt, ap);
    if (shown)
        record_chain(S, loc.file);
    return shown;
}

static bool serr(sema *S, mpk_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool serr(sema *S, mpk_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool shown = sreport(S, MPK_ERROR, loc, fmt, ap);
    va_end(ap);
    return shown;
}

static bool swarn(sema *S, mpk_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool swarn(sema *S, mpk_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool shown = sreport(S, MPK_WARNING, loc, fmt, ap);
    va_end(ap);
    return shown;
}

static const char *vstr(sema *S, const mpk_value *v)
{
    return mpk_value_str(S->a, v);
}

static const char *tstr(sema *S, const mpk_tensor *t)
{
    mpk_value v = {.kind = MPK_V_TENSOR, .t = (mpk_tensor *)t};
    return mpk_value_str(S->a, &v);
}

/* Where a tensor came from, as a note after an error about it. */
static void note_tensor(sema *S, const char *what, const mpk_tensor *t)
{
    switch (t->kind) {
    case MPK_T_WEIGHT:
        mpk_note(S->d, t->loc, "%s is weight '%s', declared here as %s", what, t->name, tstr(S, t));
        break;
    case MPK_T_STATE:
    case MPK_T_INPUT:
        mpk_note(S->d, t->loc, "%s is %s '%s', declared here as %s", what,
                 t->kind == MPK_T_STATE ? "state" : "input", t->name, tstr(S, t));
        break;
    case MPK_T_VIEW: {
        /* kv[l] is best explained by kv's declaration. */
        const mpk_tensor *base = t;
        while (base->kind == MPK_T_VIEW && base->producer && base->producer->nin > 0)
            base = base->producer->in[0];
        if (base->kind != MPK_T_ACT && base->kind != MPK_T_VIEW) {
            mpk_note(S->d, t->loc, "%s is %s, a view made here", what, tstr(S, t));
            mpk_note(S->d, base->loc, "of %s '%s', declared here as %s",
                     base->kind == MPK_T_WEIGHT ? "weight" : base->kind == MPK_T_STATE ? "state" : "input",
                     base->name, tstr(S, base));
            break;
        }
    }
    /* fall through */
    default:
        mpk_note(S->d, t->loc, "%s is %s, computed here", what, tstr(S, t));
    }
}

/* ---- did you mean ------------------------------------------------------ */

static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    int row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            prev = cur;
        }
    }
    return row[lb];
}

static void consider(const char *name, const char *cand, const char **best, int *bestd)
{
    if (!cand || strcmp(name, cand) == 0)
        return;
    int dist = edit_distance(name, cand);
    if (dist < *bestd) {
        *bestd = dist;
        *best = cand;
    }
}

/* A close name among the values (callable: among blocks and ops). */
static const char *suggest(sema *S, const scope *sc, const char *name, bool callable)
{
    const char *best = NULL;
    int bestd = (int)strlen(name) / 3 + 1;
    if (bestd > 3)
        bestd = 3;
    bestd++;
    if (sc && !callable)
        for (binding *b = sc->all; b; b = b->next)
            if (!b->dead)
                consider(name, b->name, &best, &bestd);
    for (int i = 0; i < S->syms.n; i++) {
        sym *y = S->syms.items[i];
        if ((y->kind == SYM_BLOCK) == callable && y->kind != SYM_GRAPH)
            consider(name, y->name, &best, &bestd);
    }
    if (callable)
        for (int o = 0; o < MPK_OP_COUNT; o++)
            consider(name, mpk_op_get((mpk_op)o)->name, &best, &bestd);
    return best;
}

/* ---- graph construction ---------------------------------------------- */

static mpk_tensor *new_tensor(sema *S, mpk_tensor_kind kind, mpk_dtype dt, int ndim,
                              const int64_t *dims, const char *name, mpk_loc loc)
{
    mpk_tensor *t = mpk_arena_alloc(S->a, sizeof *t);
    t->id = S->g->tensors.n;
    t->kind = kind;
    t->dtype = dt;
    t->ndim = ndim;
    memcpy(t->dims, dims, sizeof(int64_t) * (size_t)ndim);
    t->name = name;
    t->loc = loc;
    mpk_vec_push(S->a, &S->g->tensors, t);
    return t;
}

static mpk_value tensor_value(mpk_tensor *t)
{
    return (mpk_value){.kind = MPK_V_TENSOR, .t = t};
}

static bool spend(sema *S, mpk_loc loc)
{
    if (S->out_of_budget)
        return false;
    if (--S->c->budget < 0 || S->g->nodes.n >= MAX_NODES) {
        S->out_of_budget = true;
        serr(S, loc, "the model expands to too many operations (the limits are %d ops "
                     "and %d expansion steps)", MAX_NODES, MPK_MAX_STEPS);
        return false;
    }
    return true;
}

/* ---- constant evaluation --------------------------------------------- */

static mpk_value eval(sema *S, scope *sc, mpk_expr *e);

static mpk_value mk_int(int64_t i) { return (mpk_value){.kind = MPK_V_INT, .i = i}; }
static mpk_value mk_float(double f) { return (mpk_value){.kind = MPK_V_FLOAT, .f = f}; }

static bool is_const(const mpk_value *v)
{
    return v->kind == MPK_V_INT || v->kind == MPK_V_FLOAT || v->kind == MPK_V_STRING ||
           v->kind == MPK_V_LIST;
}

static mpk_value eval_binary(sema *S, mpk_expr *e, mpk_value l, mpk_value r)
{
    if (l.kind == MPK_V_NONE || r.kind == MPK_V_NONE)
        return NONE;
    int op = e->op;
    if (l.kind == MPK_V_TENSOR || r.kind == MPK_V_TENSOR) {
        static const char *const fn[128] = {['+'] = "add(a, b)", ['*'] = "mul(a, b)"};
        if (fn[op])
            serr(S, e->loc, "'%c' works on constants; for tensors use %s", op, fn[op]);
        else
            serr(S, e->loc, "'%c' works on constants, not on tensors", op);
        return NONE;
    }
    if (l.kind == MPK_V_STRING && r.kind == MPK_V_STRING && op == '+')
        return (mpk_value){.kind = MPK_V_STRING,
                           .s = mpk_arena_printf(S->a, "%s%s", l.s, r.s)};
    bool lnum = l.kind == MPK_V_INT || l.kind == MPK_V_FLOAT;
    bool rnum = r.kind == MPK_V_INT || r.kind == MPK_V_FLOAT;
    if (!lnum || !rnum) {
        mpk_expr *bad = !lnum ? e->lhs : e->rhs;
        serr(S, bad->loc, "operand of '%c' is %s; expected a number", op,
             mpk_value_kind_name(!lnum ? l.kind : r.kind));
        return NONE;
    }
    if (l.kind == MPK_V_INT && r.kind == MPK_V_INT) {
        int64_t a = l.i, b = r.i, out = 0;
        bool ovf = false;
        switch (op) {
        case '+': ovf = __builtin_add_overflow(a, b, &out); break;
        case '-': ovf = __builtin_sub_overflow(a, b, &out); break;
        case '*': ovf = __builtin_mul_overflow(a, b, &out); break;
        case '/':
        case '%':
            if (b == 0) {
                serr(S, e->rhs->loc, "division by zero");
                return NONE;
            }
            if (a == INT64_MIN && b == -1)
                ovf = true;
            else
                out = op == '/' ? a / b : a % b;
            break;
        }
        if (ovf) {
            serr(S, e->loc, "integer overflow in '%c' (%lld %c %lld)", op, (long long)a, op,
                 (long long)b);
            return NONE;
        }
        return mk_int(out);
    }
    double a = l.kind == MPK_V_INT ? (double)l.i : l.f;
    double b = r.kind == MPK_V_INT ? (double)r.i : r.f, out = 0;
    switch (op) {
    case '+': out = a + b; break;
    case '-': out = a - b; break;
    case '*': out = a * b; break;
    case '/':
    case '%':
        if (b == 0) {
            serr(S, e->rhs->loc, "division by zero");
            return NONE;
        }
        out = op == '/' ? a / b : fmod(a, b);
        break;
    default:
        MPK_ASSERT(0);
    }
    if (!isfinite(out)) {
        serr(S, e->loc, "floating-point overflow in '%c'", op);
        return NONE;
    }
    return mk_float(out);
}

/* ---- parameters ------------------------------------------------------- */

/* One number of a -D value, in the language's own syntax (no hex, no
 * "inf"), with a sign: an int, else a float; *why says what is wrong with
 * a number out of range. Anything else: NONE. */
static mpk_value parse_number(const char *text, const char **why)
{
    bool numeric = *text && strspn(text, "0123456789.eE+-") == strlen(text) && strchr("0123456789+-.", text[0]);
    if (!numeric)
        return NONE;
    char *end;
    errno = 0;
    long long iv = strtoll(text, &end, 10);
    if (!*end && errno == 0)
        return mk_int(iv);
    if (!*end) {
        *why = "the integer is out of range (a 64-bit int, at most 9223372036854775807)";
        return NONE;
    }
    errno = 0;
    double fv = strtod(text, &end);
    if (*end)
        return NONE;
    if (errno == ERANGE || !isfinite(fv)) {
        *why = "the number is out of range for a float (a 64-bit double)";
        return NONE;
    }
    return mk_float(fv);
}

/* The value of -D NAME=TEXT: TEXT itself for a string param; else a
 * number, or a list of numbers as the language writes one ("[1, 2]"). */
static mpk_value parse_override(sema *S, const char *text, bool string, const char **why)
{
    if (string)
        return (mpk_value){.kind = MPK_V_STRING, .s = text};
    size_t len = strlen(text);
    if (len < 2 || text[0] != '[' || text[len - 1] != ']') {
        mpk_value v = parse_number(text, why);
        return v.kind != MPK_V_NONE || *why ? v : (mpk_value){.kind = MPK_V_STRING, .s = text};
    }
    int n = 0;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    mpk_value l = {.kind = MPK_V_LIST, .n = 0};
    l.items = mpk_arena_alloc(S->a, sizeof(mpk_value) * (size_t)(n + 2));
    char *copy = mpk_arena_strndup(S->a, text + 1, len - 2), *save = NULL;
    bool empty = strspn(copy, " ") == strlen(copy);
    for (char *tok = strtok_r(copy, ",", &save); tok && !empty; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        for (size_t k = strlen(tok); k > 0 && tok[k - 1] == ' '; k--)
            tok[k - 1] = 0;
        mpk_value v = parse_number(tok, why);
        if (*why)
            return NONE;
        if (v.kind == MPK_V_NONE) {
            *why = "a list given with -D holds numbers, as in [1, 2]";
            return NONE;
        }
        l.items[l.n++] = v;
    }
    if (!empty && l.n != n + 1) {
        *why = "a list given with -D holds numbers, as in [1, 2]";
        return NONE;
    }
    return l;
}

static mpk_value eval_param(sema *S, sym *y)
{
    if (y->eval == 2)
        return y->value;
    if (y->eval == 1) {
        serr(S, y->decl->name_loc, "param '%s' is defined in terms of itself", y->name);
        y->value = NONE;
        y->eval = 2;
        return NONE;
    }
    y->eval = 1;
    /* Params are evaluated in the global scope, whatever asked for them. */
    frame *saved = S->fr;
    S->fr = NULL;
    mpk_value v = eval(S, NULL, y->decl->value);
    S->fr = saved;
    if (v.kind == MPK_V_TENSOR || v.kind == MPK_V_TUPLE) {
        serr(S, y->decl->value->loc, "param '%s' must be a constant, but this is %s",
             y->name, mpk_value_kind_name(v.kind));
        v = NONE;
    }
    if (y->override && v.kind != MPK_V_NONE) {
        const char *text = y->override, *why = NULL;
        mpk_value ov = parse_override(S, text, v.kind == MPK_V_STRING, &why);
        if (v.kind == MPK_V_FLOAT && ov.kind == MPK_V_INT)
            ov = mk_float((double)ov.i);
        /* eos, which the compiler reads, is a token id or a list of them */
        bool eos_form = strcmp(y->name, "eos") == 0 && (v.kind == MPK_V_INT || v.kind == MPK_V_LIST) &&
                        (ov.kind == MPK_V_INT || ov.kind == MPK_V_LIST);
        if (why || (ov.kind != v.kind && !eos_form)) {
            flush_chain(S);
            if (why)
                mpk_error(S->d, (mpk_loc){0, 0, 0}, "-D %s=%s: %s", y->name, text, why);
            else
                mpk_error(S->d, (mpk_loc){0, 0, 0}, "-D %s=%s: param '%s' is %s, not %s", y->name,
                          text, y->name, mpk_value_kind_name(v.kind), mpk_value_kind_name(ov.kind));
            mpk_note(S->d, y->decl->name_loc, "'%s' declared here", y->name);
        } else {
            v = ov;
        }
    }
    y->value = v;
    y->eval = 2;
    return v;
}

/* ---- name lookup ------------------------------------------------------ */

static binding *lookup_local(scope *sc, const char *name)
{
    if (!sc)
        return NULL;
    binding *b = smap_get(&sc->vars, name);
    return b && !b->dead ? b : NULL;
}

static mpk_value lookup(sema *S, scope *sc, const char *name, mpk_loc loc)
{
    binding *b = lookup_local(sc, name);
    if (b) {
        b->used = true;
        return b->v;
    }
    sym *y = smap_get(&S->globals, name);
    if (y) {
        y->used = true;
        switch (y->kind) {
        case SYM_PARAM:
            return eval_param(S, y);
        case SYM_WEIGHT:
        case SYM_STATE:
        case SYM_INPUT:
            return y->value;
        case SYM_BLOCK:
            if (serr(S, loc, "'%s' is a block; call it as %s(...)", name, name))
                mpk_note(S->d, y->decl->name_loc, "'%s' defined here", name);
            return NONE;
        case SYM_GRAPH:
            serr(S, loc, "'%s' is a graph, not a value", name);
            return NONE;
        }
    }
    mpk_op op;
    if (mpk_op_lookup(name, &op)) {
        serr(S, loc, "'%s' is an op; call it as %s(...)", name, name);
        return NONE;
    }
    const char *hint = suggest(S, sc, name, false);
    if (hint)
        serr(S, loc, "'%s' is not defined; did you mean '%s'?", name, hint);
    else
        serr(S, loc, "'%s' is not defined", name);
    return NONE;
}

/* ---- weight name templates -------------------------------------------- */

/* The span of "{name}" inside the template as written, for the caret; the
 * whole string if escapes make it hard to find. */
static mpk_loc placeholder_loc(sema *S, mpk_loc str, const char *name)
{
    mpk_source *src = mpk_diag_source(S->d, str.file);
    char want[128];
    int n = snprintf(want, sizeof want, "{%s}", name);
    if (n <= 0 || (size_t)n >= sizeof want || str.end > src->len)
        return str;
    const char *b = src->text + str.start, *e = src->text + str.end;
    const char *hit = memmem(b, (size_t)(e - b), want, (size_t)n);
    if (!hit)
        return str;
    return (mpk_loc){str.file, (uint32_t)(hit - src->text), (uint32_t)(hit - src->text + n)};
}

static const char *fill_template(sema *S, scope *sc, const char *tmpl, mpk_loc loc)
{
    size_t cap = strlen(tmpl) + 64, n = 0;
    char *out = mpk_arena_alloc(S->a, cap);
    for (const char *p = tmpl; *p;) {
        const char *piece = p;
        size_t len = 1;
        char tmp[32];
        if (p[0] == '{' && p[1] == '{') {
            len = 1, p += 2;
        } else if (p[0] == '}' && p[1] == '}') {
            len = 1, p += 2;
        } else if (p[0] == '}') {
            serr(S, loc, "unmatched '}' in weight name (write '}}' for a brace)");
            return NULL;
        } else if (p[0] == '{') {
            const char *close = strchr(p, '}');
            if (!close) {
                serr(S, loc, "unclosed '{' in weight name (write '{{' for a brace)");
                return NULL;
            }
            char *name = mpk_arena_strndup(S->a, p + 1, (size_t)(close - p - 1));
            p = close + 1;
            mpk_loc at = placeholder_loc(S, loc, name);
            bool ident = name[0] && !(name[0] >= '0' && name[0] <= '9');
            for (char *q = name; *q; q++)
                ident &= (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                         (*q >= '0' && *q <= '9') || *q == '_';
            if (!ident) {
                serr(S, at, "'{%s}' in weight name is not a name", name);
                return NULL;
            }
            sym *y = lookup_local(sc, name) ? NULL : smap_get(&S->globals, name);
            if (y && (y->kind == SYM_BLOCK || y->kind == SYM_GRAPH)) {
                serr(S, at, "'{%s}' in weight name is %s; only ints and strings fit in a name",
                     name, sym_kind_a[y->kind]);
                return NULL;
            }
            mpk_value v = lookup(S, sc, name, at);
            if (v.kind == MPK_V_NONE)
                return NULL;
            if (v.kind == MPK_V_INT) {
                snprintf(tmp, sizeof tmp, "%lld", (long long)v.i);
                piece = tmp;
                len = strlen(tmp);
            } else if (v.kind == MPK_V_STRING) {
                piece = v.s;
                len = strlen(v.s);
            } else {
                serr(S, at, "'{%s}' in weight name is %s; only ints and strings fit in a name",
                     name, mpk_value_kind_name(v.kind));
                return NULL;
            }
        } else {
            p++;
        }
        if (n + len + 1 > cap) {
            size_t ncap = (n + len + 1) * 2;
            char *bigger = mpk_arena_alloc(S->a, ncap);
            memcpy(bigger, out, n);
            out = bigger;
            cap = ncap;
        }
        memcpy(out + n, piece, len);
        n += len;
    }
    out[n] = 0;
    if (n == 0) {
        serr(S, loc, "empty weight name");
        return NULL;
    }
    return out;
}

/* ---- types ------------------------------------------------------------- */

static bool eval_type(sema *S, scope *sc, const mpk_type_ast *ty, mpk_dtype *dt, int64_t *dims,
                      int *ndim)
{
    bool ok = true;
    if (!mpk_dtype_parse(ty->dtype, dt)) {
        if (serr(S, ty->dtype_loc, "unknown dtype '%s'", ty->dtype))
            mpk_note(S->d, ty->dtype_loc, "the dtypes are bf16, f16, f32 and i32");
        ok = false;
    }
    int n = 0;
    int64_t numel = 1;
    for (mpk_expr *e = ty->dims; e; e = e->next) {
        if (n == MPK_MAX_DIMS) {
            serr(S, e->loc, "too many dimensions (the limit is %d)", MPK_MAX_DIMS);
            return false;
        }
        mpk_value v = eval(S, sc, e);
        if (v.kind == MPK_V_NONE) {
            ok = false;
            continue;
        }
        if (v.kind != MPK_V_INT) {
            serr(S, e->loc, "a dimension must be an int, not %s", mpk_value_kind_name(v.kind));
            ok = false;
            continue;
        }
        if (v.i <= 0) {
            serr(S, e->loc, "a dimension must be positive, but this is %lld", (long long)v.i);
            ok = false;
            continue;
        }
        if (v.i > (int64_t)MPKB_MAX_DIM) {
            serr(S, e->loc, "a dimension is at most %u (2^31 - 1), but this is %lld", MPKB_MAX_DIM,
                 (long long)v.i);
            return false;
        }
        dims[n++] = v.i;
        if (__builtin_mul_overflow(numel, v.i, &numel) || numel > MAX_NUMEL) {
            char buf[160];
            int at = 0;
            double all = 1;
            for (int i = 0; i < n; i++) {
                all *= (double)dims[i];
                at += snprintf(buf + at, sizeof buf - (size_t)at, "%s%lld", i ? ", " : "", (long long)dims[i]);
            }
            serr(S, e->loc, "tensor is too large: [%s%s] is %.0f elements, and a tensor has at most 2^40 "
                            "(%lld)", buf, e->next ? ", ..." : "", all, (long long)MAX_NUMEL);
            return false;
        }
    }
    *ndim = n;
    return ok;
}

static bool same_shape(const mpk_tensor *a, const mpk_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

/* A weight by HF name: declaring the same name twice gives the same tensor
 * (tied embeddings), provided dtype and shape agree. */
static mpk_value declare_weight(sema *S, scope *sc, mpk_stmt *s)
{
    mpk_dtype dt;
    int64_t dims[MPK_MAX_DIMS];
    int ndim = 0;
    bool ok = eval_type(S, sc, &s->type, &dt, dims, &ndim);
    const char *name = fill_template(S, sc, s->tmpl, s->tmpl_loc);
    if (!ok || !name)
        return NONE;
    mpk_tensor *old = smap_get(&S->weights, name);
    if (old) {
        mpk_tensor probe = {.dtype = dt, .ndim = ndim};
        memcpy(probe.dims, dims, sizeof dims);
        if (old->dtype != dt || !same_shape(old, &probe)) {
            if (serr(S, s->type.dtype_loc, "weight '%s' declared as %s here but as %s before",
                     name, tstr(S, &probe), tstr(S, old)))
                mpk_note(S->d, old->loc, "'%s' first declared here", name);
            return NONE;
        }
        return tensor_value(old);
    }
    mpk_tensor *t = new_tensor(S, MPK_T_WEIGHT, dt, ndim, dims, name, s->name_loc);
    smap_put(S->a, &S->weights, name, t);
    return tensor_value(t);
}

/* ---- ops ---------------------------------------------------------------- */

static bool is_float(mpk_dtype t)
{
    return t == MPK_DT_BF16 || t == MPK_DT_F16 || t == MPK_DT_F32;
}

typedef struct {
    sema *S;
    mpk_expr *call;
    mpk_op op;
    const mpk_op_info *info;
    mpk_tensor *in[MPK_MAX_IN];
    mpk_loc in_loc[MPK_MAX_IN];
    mpk_value attr[MPK_MAX_ATTRS];
    mpk_loc attr_loc[MPK_MAX_ATTRS];
    bool given[MPK_MAX_ATTRS];
} opcall;

/* Error about operand i, with a note saying where it came from. */
static void operr(opcall *o, int i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void operr(opcall *o, int i, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bool sugar = o->op == MPK_OP_INDEX; /* t[i] has no op to name */
    if (serr(o->S, o->in_loc[i], "%s%s%s", sugar ? "" : o->info->name, sugar ? "" : ": ", msg))
        note_tensor(o->S, "the operand", o->in[i]);
}

static void attrerr(opcall *o, int k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void attrerr(opcall *o, int k, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bool sugar = o->op == MPK_OP_INDEX;
    serr(o->S, o->given[k] ? o->attr_loc[k] : o->call->loc, "%s%s%s", sugar ? "" : o->info->name,
         sugar ? "" : ": ", msg);
}

static bool want_float(opcall *o, int i)
{
    if (is_float(o->in[i]->dtype))
        return true;
    operr(o, i, "expected a floating-point tensor, not %s", tstr(o->S, o->in[i]));
    return false;
}

static bool want_ndim(opcall *o, int i, int ndim, const char *shape)
{
    if (o->in[i]->ndim == ndim)
        return true;
    operr(o, i, "expected a tensor of shape %s, not %s", shape, tstr(o->S, o->in[i]));
    return false;
}

static bool want_dtype_of(opcall *o, int i, int j)
{
    if (o->in[i]->dtype == o->in[j]->dtype)
        return true;
    operr(o, i, "dtype %s differs from %s of the first operand",
          mpk_dtype_name(o->in[i]->dtype), mpk_dtype_name(o->in[j]->dtype));
    return false;
}

static bool want_pos(opcall *o, int i, int64_t n)
{
    mpk_tensor *p = o->in[i];
    if (p->dtype == MPK_DT_I32 && p->ndim == 1 && p->dims[0] == n)
        return true;
    operr(o, i, "positions must be i32[%lld] (one per token), not %s", (long long)n,
          tstr(o->S, p));
    return false;
}

/* Dimension d of operand i must equal dimension dj of operand j. */
static bool want_dim(opcall *o, int i, int d, int j, int dj, const char *what)
{
    int64_t have = o->in[i]->dims[d], want = o->in[j]->dims[dj];
    if (have == want)
        return true;
    operr(o, i, "%s of %s is %lld, but %lld in %s", what, o->info->operands[i], (long long)have,
          (long long)want, o->info->operands[j]);
    return false;
}

/* A float attribute goes into the blob as an f32 (eps, theta, scale): it
 * must be one, neither 0 nor inf there (eps = 1e39 would make every
 * rmsnorm 0, and so every logit). */
static bool attr_positive(opcall *o, int k)
{
    mpk_value *v = &o->attr[k];
    if (v->kind == MPK_V_INT && v->i > 0)
        return true;
    if (v->kind == MPK_V_FLOAT && v->f > 0 && v->f <= FLT_MAX && (float)v->f > 0)
        return true;
    if (v->kind == MPK_V_FLOAT && v->f > 0)
        attrerr(o, k, "'%s' must be a positive number that f32 can hold (%g to %g), not %s",
                o->info->attrs[k].name, (double)FLT_TRUE_MIN, (double)FLT_MAX, vstr(o->S, v));
    else
        attrerr(o, k, "'%s' must be positive, not %s", o->info->attrs[k].name, vstr(o->S, v));
    return false;
}

/* Every inverse frequency of rope must be finite and positive in f32:
 * theta = 1e-300 overflows them, and every logit becomes NaN. */
static bool rope_finite(opcall *o, int64_t head_dim)
{
    for (int64_t i = 0; i < head_dim / 2; i++) {
        float f = mpk_rope_inv_freq(o->attr, i, head_dim);
        if (!isfinite(f) || !(f > 0)) {
            attrerr(o, 0, "theta = %s%s gives rotary frequencies that f32 cannot hold (frequency %lld of "
                          "%lld is %g)", vstr(o->S, &o->attr[0]),
                    strcmp(o->attr[1].s, "llama3") == 0 ? " with this llama3 scaling" : "", (long long)i,
                    (long long)(head_dim / 2), (double)f);
            return false;
        }
    }
    return true;
}

/* Normalises a possibly negative dimension index; false if out of range. */
static bool norm_dim(opcall *o, int k, int ndim, int *out)
{
    int64_t d = o->attr[k].i;
    if (d < 0)
        d += ndim;
    if (d < 0 || d >= ndim) {
        attrerr(o, k, "dimension %lld is out of range for a tensor of %d dimensions",
                (long long)o->attr[k].i, ndim);
        return false;
    }
    *out = (int)d;
    return true;
}

/* Result shapes. Returns the number of results written to out, 0 on error. */
static int infer(opcall *o, mpk_dtype *dt, int64_t dims[][MPK_MAX_DIMS], int *ndim, int max_out)
{
    sema *S = o->S;
    mpk_tensor **in = o->in;
    mpk_tensor *x = in[0];
    *dt = x->dtype;
    ndim[0] = x->ndim;
    memcpy(dims[0], x->dims, sizeof x->dims);
    switch (o->op) {
    case MPK_OP_EMBED:
        if (!want_float(o, 0) || !want_ndim(o, 0, 2, "[vocab, hidden]"))
            return 0;
        if (in[1]->dtype != MPK_DT_I32 || in[1]->ndim != 1) {
            operr(o, 1, "token ids must be i32[n], not %s", tstr(S, in[1]));
            return 0;
        }
        ndim[0] = 2;
        dims[0][0] = in[1]->dims[0];
        dims[0][1] = x->dims[1];
        return 1;
    case MPK_OP_RMSNORM:
        if (!want_float(o, 0) || !want_dtype_of(o, 1, 0))
            return 0;
        if (in[1]->ndim != 1 || in[1]->dims[0] != x->dims[x->ndim - 1]) {
            operr(o, 1, "the weight must be %s[%lld] to match the last dimension of %s, not %s",
                  mpk_dtype_name(x->dtype), (long long)x->dims[x->ndim - 1], tstr(S, x),
                  tstr(S, in[1]));
            return 0;
        }
        return attr_positive(o, 0);
    case MPK_OP_MATMUL:
        if (!want_float(o, 0) || !want_ndim(o, 0, 2, "[n, in]") || !want_ndim(o, 1, 2, "[out, in]") ||
            !want_dtype_of(o, 1, 0))
            return 0;
        if (in[1]->dims[1] != x->dims[1]) {
            operr(o, 1, "the weight %s does not fit the input %s: a weight is [out, in], so "
                        "its last dimension must be %lld",
                  tstr(S, in[1]), tstr(S, x), (long long)x->dims[1]);
            return 0;
        }
        dims[0][1] = in[1]->dims[0];
        return 1;
    case MPK_OP_ADD:
    case MPK_OP_MUL:
        if (!want_float(o, 0) || !want_dtype_of(o, 1, 0))
            return 0;
        if (!same_shape(x, in[1])) {
            operr(o, 1, "shapes differ: %s and %s", tstr(S, x), tstr(S, in[1]));
            return 0;
        }
        return 1;
    case MPK_OP_SILU:
        return want_float(o, 0);
    case MPK_OP_ROPE: {
        if (!want_float(o, 0) || !want_ndim(o, 0, 3, "[n, heads, head_dim]") ||
            !want_pos(o, 1, x->dims[0]))
            return 0;
        if (x->dims[2] % 2) {
            operr(o, 0, "head_dim must be even for rotary embedding, not %lld", (long long)x->dims[2]);
            return 0;
        }
        if (!attr_positive(o, 0))
            return 0;
        const char *sc = o->attr[1].s;
        if (strcmp(sc, "none") == 0)
            return rope_finite(o, x->dims[2]);
        if (strcmp(sc, "llama3") != 0) {
            attrerr(o, 1, "unknown scaling \"%s\" (expected \"none\" or \"llama3\")", sc);
            return 0;
        }
        if (!attr_positive(o, 2) || !attr_positive(o, 3) || !attr_positive(o, 4) ||
            !attr_positive(o, 5))
            return 0;
        if (o->attr[4].f <= o->attr[3].f) {
            attrerr(o, 4, "high_freq_factor (%g) must exceed low_freq_factor (%g)", o->attr[4].f,
                    o->attr[3].f);
            return 0;
        }
        return rope_finite(o, x->dims[2]);
    }
    case MPK_OP_ATTENTION: {
        if (!want_float(o, 0) || !want_ndim(o, 0, 3, "[n, heads, head_dim]") ||
            !want_ndim(o, 1, 3, "[n, kv_heads, head_dim]") ||
            !want_ndim(o, 2, 3, "[n, kv_heads, head_dim]") ||
            !want_ndim(o, 3, 4, "[2, kv_heads, max_seq, head_dim]"))
            return 0;
        for (int i = 1; i < 4; i++)
            if (!want_dtype_of(o, i, 0))
                return 0;
        int64_t n = x->dims[0], kvh = in[1]->dims[1], hd = x->dims[2];
        if (!want_dim(o, 1, 0, 0, 0, "the token count") || !want_dim(o, 2, 0, 0, 0, "the token count") ||
            !want_dim(o, 1, 2, 0, 2, "head_dim") || !want_dim(o, 2, 1, 1, 1, "kv_heads") ||
            !want_dim(o, 2, 2, 0, 2, "head_dim") || !want_dim(o, 3, 1, 1, 1, "kv_heads") ||
            !want_dim(o, 3, 3, 0, 2, "head_dim"))
            return 0;
        if (in[3]->dims[0] != 2) {
            operr(o, 3, "the cache's first dimension holds keys and values, so it must be 2, not %lld",
                  (long long)in[3]->dims[0]);
            return 0;
        }
        if (x->dims[1] % kvh) {
            operr(o, 0, "%lld query heads cannot be grouped over %lld kv heads", (long long)x->dims[1],
                  (long long)kvh);
            return 0;
        }
        if (!want_pos(o, 4, n))
            return 0;
        if (!o->given[0])
            o->attr[0] = mk_float(1.0 / sqrt((double)hd));
        else if (!attr_positive(o, 0))
            return 0;
        return 1;
    }
    case MPK_OP_ARGMAX:
        if (!want_float(o, 0) || !want_ndim(o, 0, 2, "[n, vocab]"))
            return 0;
        *dt = MPK_DT_I32;
        ndim[0] = 1;
        return 1;
    case MPK_OP_RESHAPE: {
        mpk_value *l = &o->attr[0];
        if (l->n < 1 || l->n > MPK_MAX_DIMS) {
            attrerr(o, 0, "a shape has 1 to %d dimensions, not %d", MPK_MAX_DIMS, l->n);
            return 0;
        }
        int64_t known = 1;
        int infer_at = -1;
        for (int i = 0; i < l->n; i++) {
            int64_t d = l->items[i].i;
            if (d == -1 && infer_at < 0) {
                infer_at = i;
                continue;
            }
            if (d <= 0) {
                attrerr(o, 0, "dimension %d of the new shape is %lld; dimensions are positive "
                              "(one may be -1 to infer it)", i, (long long)d);
                return 0;
            }
            if (__builtin_mul_overflow(known, d, &known) || known > MAX_NUMEL) {
                attrerr(o, 0, "the new shape is too large (more than 2^40 elements)");
                return 0;
            }
            dims[0][i] = d;
        }
        int64_t numel = mpk_tensor_numel(x);
        if (infer_at >= 0) {
            if (numel % known) {
                attrerr(o, 0, "cannot reshape %s (%lld elements) to %s", tstr(S, x),
                        (long long)numel, vstr(S, l));
                return 0;
            }
            dims[0][infer_at] = numel / known;
            known = numel;
        }
        if (known != numel) {
            attrerr(o, 0, "cannot reshape %s (%lld elements) to %s (%lld elements)", tstr(S, x),
                    (long long)numel, vstr(S, l), (long long)known);
            return 0;
        }
        ndim[0] = l->n;
        return 1;
    }
    case MPK_OP_SLICE: {
        int d;
        if (!norm_dim(o, 0, x->ndim, &d))
            return 0;
        int64_t b = o->attr[1].i, e = o->attr[2].i;
        if (b < 0 || e > x->dims[d] || b >= e) {
            attrerr(o, 1, "slice %lld..%lld of dimension %d (size %lld) is empty or out of range",
                    (long long)b, (long long)e, d, (long long)x->dims[d]);
            return 0;
        }
        dims[0][d] = e - b;
        return 1;
    }
    case MPK_OP_SPLIT: {
        int d;
        if (!norm_dim(o, 0, x->ndim, &d))
            return 0;
        mpk_value *l = &o->attr[1];
        if (l->n < 1 || l->n > max_out) {
            attrerr(o, 1, "split into 1 to %d parts, not %d", max_out, l->n);
            return 0;
        }
        int64_t sum = 0;
        for (int i = 0; i < l->n; i++) {
            int64_t sz = l->items[i].i;
            if (sz <= 0 || __builtin_add_overflow(sum, sz, &sum)) {
                attrerr(o, 1, "split sizes must be positive, but part %d is %lld", i, (long long)sz);
                return 0;
            }
            ndim[i] = x->ndim;
            memcpy(dims[i], x->dims, sizeof x->dims);
            dims[i][d] = sz;
        }
        if (sum != x->dims[d]) {
            attrerr(o, 1, "split sizes %s add up to %lld, but dimension %d of %s is %lld",
                    vstr(S, l), (long long)sum, d, tstr(S, x), (long long)x->dims[d]);
            return 0;
        }
        return l->n;
    }
    case MPK_OP_INDEX: {
        if (x->ndim < 2) {
            operr(o, 0, "cannot index %s: it has one dimension", tstr(S, x));
            return 0;
        }
        int64_t i = o->attr[0].i;
        if (i < 0 || i >= x->dims[0]) {
            attrerr(o, 0, "index %lld is out of range for %s (0 to %lld)", (long long)i,
                    tstr(S, x), (long long)x->dims[0] - 1);
            return 0;
        }
        ndim[0] = x->ndim - 1;
        memmove(dims[0], dims[0] + 1, sizeof(int64_t) * (size_t)ndim[0]);
        return 1;
    }
    case MPK_OP_ALLREDUCE:
        if (!want_float(o, 0))
            return 0;
        if (strcmp(o->attr[0].s, "sum") != 0) {
            attrerr(o, 0, "unknown reduction \"%s\" (expected \"sum\")", o->attr[0].s);
            return 0;
        }
        return 1;
    case MPK_OP_COUNT:
        break;
    }
    MPK_ASSERT(0);
    return 0;
}

/* Converts an attribute value to its declared kind. */
static bool coerce_attr(sema *S, const mpk_attr_spec *spec, mpk_value *v, mpk_loc loc,
                        const char *op)
{
    switch (spec->kind) {
    case MPK_A_INT:
        if (v->kind == MPK_V_INT)
            return true;
        break;
    case MPK_A_FLOAT:
        if (v->kind == MPK_V_INT)
            *v = mk_float((double)v->i);
        if (v->kind == MPK_V_FLOAT)
            return true;
        break;
    case MPK_A_STRING:
        if (v->kind == MPK_V_STRING)
            return true;
        break;
    case MPK_A_LIST:
        if (v->kind == MPK_V_LIST) {
            for (int i = 0; i < v->n; i++)
                if (v->items[i].kind != MPK_V_INT) {
                    serr(S, loc, "%s: '%s' must be a list of ints, but item %d is %s", op,
                         spec->name, i, mpk_value_kind_name(v->items[i].kind));
                    return false;
                }
            return true;
        }
        break;
    }
    static const char *const kinds[] = {"an int", "a float", "a string", "a list of ints"};
    serr(S, loc, "%s: '%s' must be %s, not %s", op, spec->name, kinds[spec->kind],
         mpk_value_kind_name(v->kind));
    return false;
}

static mpk_value default_attr(sema *S, const mpk_attr_spec *spec)
{
    switch (spec->kind) {
    case MPK_A_INT: return mk_int(strtoll(spec->dflt, NULL, 10));
    case MPK_A_FLOAT: return mk_float(strtod(spec->dflt, NULL));
    case MPK_A_STRING: return (mpk_value){.kind = MPK_V_STRING, .s = spec->dflt};
    case MPK_A_LIST: break;
    }
    (void)S;
    MPK_ASSERT(0);
    return NONE;
}

static bool apply_hints(sema *S, scope *sc, mpk_node *n, mpk_arg *hints)
{
    bool ok = true;
    for (mpk_arg *h = hints; h; h = h->next) {
        mpk_value v = eval(S, sc, h->value);
        if (v.kind == MPK_V_NONE) {
            ok = false;
            continue;
        }
        int64_t *slot = NULL;
        if (strcmp(h->name, "tile") == 0 && n->op == MPK_OP_MATMUL)
            slot = &n->hint_tile;
        else if (strcmp(h->name, "kv_chunk") == 0 && n->op == MPK_OP_ATTENTION)
            slot = &n->hint_kv_chunk;
        if (!slot) {
            if (serr(S, h->name_loc, "no schedule hint '%s' for %s", h->name, mpk_op_get(n->op)->name))
                mpk_note(S->d, h->name_loc, "the hints are 'tile' (matmul) and 'kv_chunk' (attention)");
            ok = false;
            continue;
        }
        if (v.kind != MPK_V_INT || v.i <= 0) {
            serr(S, h->value->loc, "hint '%s' must be a positive int, not %s", h->name, vstr(S, &v));
            ok = false;
            continue;
        }
        if (*slot) {
            serr(S, h->name_loc, "hint '%s' given twice", h->name);
            ok = false;
            continue;
        }
        *slot = v.i;
    }
    return ok;
}

/* Appends the node of a checked op call, with its results. */
static mpk_node *add_node(sema *S, const opcall *o, mpk_loc loc, mpk_dtype dt,
                          int64_t dims[][MPK_MAX_DIMS], const int *ndim, int nout)
{
    mpk_op op = o->op;
    mpk_node *n = mpk_arena_alloc(S->a, sizeof *n);
    n->id = S->g->nodes.n;
    n->op = op;
    n->loc = loc;
    n->nin = o->info->nin;
    for (int i = 0; i < n->nin; i++) {
        n->in[i] = o->in[i];
        o->in[i]->uses++;
    }
    memcpy(n->attrs, o->attr, sizeof o->attr);
    bool view = op == MPK_OP_RESHAPE || op == MPK_OP_SLICE || op == MPK_OP_SPLIT || op == MPK_OP_INDEX;
    n->nout = nout;
    n->out = mpk_arena_alloc(S->a, sizeof(mpk_tensor *) * (size_t)nout);
    for (int i = 0; i < nout; i++) {
        n->out[i] = new_tensor(S, view ? MPK_T_VIEW : MPK_T_ACT, dt, ndim[i], dims[i], NULL, loc);
        n->out[i]->producer = n;
    }
    mpk_vec_push(S->a, &S->g->nodes, n);
    return n;
}

/* The value of a node: its result, or a tuple of its results. */
static mpk_value node_value(sema *S, const mpk_node *n)
{
    if (n->nout == 1)
        return tensor_value(n->out[0]);
    mpk_value tup = {.kind = MPK_V_TUPLE, .n = n->nout};
    tup.items = mpk_arena_alloc(S->a, sizeof(mpk_value) * (size_t)n->nout);
    for (int i = 0; i < n->nout; i++)
        tup.items[i] = tensor_value(n->out[i]);
    return tup;
}

static mpk_value apply_op(sema *S, scope *sc, mpk_expr *call, mpk_op op, mpk_arg *hints)
{
    opcall o = {.S = S, .call = call, .op = op, .info = mpk_op_get(op)};
    const mpk_op_info *info = o.info;
    bool ok = true;
    int npos = 0, nin = 0;
    for (mpk_arg *a = call->args; a; a = a->next) {
        mpk_value v = eval(S, sc, a->value);
        if (v.kind == MPK_V_NONE)
            ok = false;
        if (!a->name) {
            if (npos < info->nin) {
                if (v.kind != MPK_V_TENSOR && v.kind != MPK_V_NONE) {
                    serr(S, a->value->loc, "%s: operand %d must be a tensor, not %s", info->name,
                         npos + 1, mpk_value_kind_name(v.kind));
                    ok = false;
                } else if (v.kind == MPK_V_TENSOR) {
                    o.in[npos] = v.t;
                    o.in_loc[npos] = a->value->loc;
                    nin++;
                }
                npos++;
                continue;
            }
            int k = npos - info->nin;
            if (k >= info->nattrs) {
                if (info->nattrs)
                    serr(S, a->value->loc, "%s takes %d operand%s and %d attribute%s; this is one too many",
                         info->name, info->nin, info->nin == 1 ? "" : "s", info->nattrs,
                         info->nattrs == 1 ? "" : "s");
                else
                    serr(S, a->value->loc, "%s takes %d operand%s and no attributes; this is one too many",
                         info->name, info->nin, info->nin == 1 ? "" : "s");
                return NONE;
            }
            npos++;
            if (v.kind != MPK_V_NONE && coerce_attr(S, &info->attrs[k], &v, a->value->loc, info->name))
                o.attr[k] = v;
            else
                ok = false;
            o.given[k] = true;
            o.attr_loc[k] = a->value->loc;
            continue;
        }
        int k = 0;
        while (k < info->nattrs && strcmp(info->attrs[k].name, a->name) != 0)
            k++;
        if (k == info->nattrs) {
            if (serr(S, a->name_loc, "%s has no attribute '%s'", info->name, a->name)) {
                if (info->nattrs == 0) {
                    mpk_note(S->d, a->name_loc, "%s takes no attributes", info->name);
                } else {
                    char *names = "";
                    for (int j = 0; j < info->nattrs; j++)
                        names = mpk_arena_printf(S->a, "%s%s'%s'", names, j ? ", " : "",
                                                 info->attrs[j].name);
                    mpk_note(S->d, a->name_loc, "the attributes of %s are %s", info->name, names);
                }
            }
            ok = false;
            continue;
        }
        if (o.given[k]) {
            serr(S, a->name_loc, "%s: attribute '%s' given twice", info->name, a->name);
            ok = false;
            continue;
        }
        o.given[k] = true;
        o.attr_loc[k] = a->name_loc;
        o.attr_loc[k].end = a->value->loc.end;
        if (v.kind != MPK_V_NONE && coerce_attr(S, &info->attrs[k], &v, a->value->loc, info->name))
            o.attr[k] = v;
        else
            ok = false;
    }
    if (npos < info->nin) {
        serr(S, call->loc, "%s takes %d tensor operand%s, but %d %s given", info->name, info->nin,
             info->nin == 1 ? "" : "s", npos, npos == 1 ? "is" : "are");
        return NONE;
    }
    for (int k = 0; k < info->nattrs; k++) {
        if (o.given[k])
            continue;
        if (info->attrs[k].required) {
            serr(S, call->loc, "%s: missing attribute '%s'", info->name, info->attrs[k].name);
            ok = false;
            continue;
        }
        o.attr[k] = default_attr(S, &info->attrs[k]);
    }
    if (!ok || nin < info->nin)
        return NONE;
    if (!spend(S, call->loc))
        return NONE;

    enum { MAX_SPLIT = 64 };
    mpk_dtype dt;
    int64_t dims[MAX_SPLIT][MPK_MAX_DIMS];
    int ndim[MAX_SPLIT];
    int nout = infer(&o, &dt, dims, ndim, MAX_SPLIT);
    if (nout == 0)
        return NONE;

    mpk_node *n = add_node(S, &o, call->loc, dt, dims, ndim, nout);
    if (hints && !apply_hints(S, sc, n, hints))
        return NONE;
    return node_value(S, n);
}

/* ---- blocks ------------------------------------------------------------ */

static mpk_value exec_body(sema *S, scope *sc, mpk_stmt *body);

static void bind(sema *S, scope *sc, const char *name, mpk_value v, mpk_loc loc, bool is_param)
{
    binding *b = smap_get(&sc->vars, name);
    if (b && !b->dead) {
        if (!b->used && !b->is_param && b->v.kind != MPK_V_NONE && !mpk_diag_failed(S->d))
            swarn(S, b->loc, "value assigned to '%s' is never used", name);
        b->v = v;
        b->loc = loc;
        b->used = false;
        b->is_param = is_param;
        return;
    }
    sym *y = smap_get(&S->globals, name);
    if (y && y->decl->file == loc.file && y->kind != SYM_BLOCK && y->kind != SYM_GRAPH) {
        if (swarn(S, loc, "'%s' shadows the global %s of the same name", name, sym_kind_name[y->kind]))
            mpk_note(S->d, y->decl->name_loc, "the global '%s' is declared here", name);
    }
    b = mpk_arena_alloc(S->a, sizeof *b);
    b->name = name;
    b->v = v;
    b->loc = loc;
    b->is_param = is_param;
    b->next = sc->all;
    sc->all = b;
    smap_put(S->a, &sc->vars, name, b);
}

/* After an error, "never used" is mostly a consequence (a call that failed
 * never read its arguments), so these warnings wait for a clean model. */
static void warn_unused(sema *S, scope *sc)
{
    if (mpk_diag_failed(S->d))
        return;
    for (binding *b = sc->all; b; b = b->next) {
        if (b->dead || b->used || b->v.kind == MPK_V_NONE)
            continue;
        if (b->is_param)
            swarn(S, b->loc, "parameter '%s' of block '%s' is never used", b->name, sc->block);
        else
            swarn(S, b->loc, "value assigned to '%s' is never used", b->name);
    }
}

static bool on_stack(sema *S, const char *block)
{
    for (frame *f = S->fr; f; f = f->up)
        if (f->block && strcmp(f->block, block) == 0)
            return true;
    return false;
}

static mpk_arg *param_at(mpk_stmt *def, int k)
{
    mpk_arg *p = def->args;
    while (k-- > 0)
        p = p->next;
    return p;
}

static mpk_value expand_block(sema *S, scope *caller, mpk_expr *call, sym *blk)
{
    mpk_stmt *def = blk->decl;
    if (on_stack(S, blk->name)) {
        if (serr(S, call->loc, "block '%s' calls itself; blocks are expanded at compile time, "
                               "so recursion is not allowed", blk->name))
            mpk_note(S->d, def->name_loc, "'%s' defined here", blk->name);
        return NONE;
    }
    if (S->depth >= MAX_DEPTH) {
        serr(S, call->loc, "blocks nested too deeply (the limit is %d)", MAX_DEPTH);
        return NONE;
    }
    /* Arguments are evaluated in the caller's scope. */
    int nparams = 0;
    for (mpk_arg *p = def->args; p; p = p->next)
        nparams++;
    mpk_value *vals = mpk_arena_alloc(S->a, sizeof(mpk_value) * (size_t)(nparams + 1));
    bool *set = mpk_arena_alloc(S->a, (size_t)nparams + 1);
    bool ok = true;
    int pos = 0;
    for (mpk_arg *a = call->args; a; a = a->next) {
        int k = 0;
        mpk_arg *p = def->args;
        if (a->name) {
            while (p && strcmp(p->name, a->name) != 0)
                p = p->next, k++;
            if (!p) {
                if (serr(S, a->name_loc, "block '%s' has no parameter '%s'", blk->name, a->name))
                    mpk_note(S->d, def->name_loc, "'%s' defined here", blk->name);
                ok = false;
                continue;
            }
        } else {
            k = pos++;
            if (k >= nparams) {
                if (serr(S, a->value->loc, "too many arguments to block '%s' (it takes %d)",
                         blk->name, nparams))
                    mpk_note(S->d, def->name_loc, "'%s' defined here", blk->name);
                return NONE;
            }
        }
        const char *pname = param_at(def, k)->name;
        if (set[k]) {
            serr(S, a->name ? a->name_loc : a->value->loc, "parameter '%s' of block '%s' given twice",
                 pname, blk->name);
            ok = false;
            continue;
        }
        set[k] = true;
        vals[k] = eval(S, caller, a->value);
        if (vals[k].kind == MPK_V_TUPLE) {
            serr(S, a->value->loc, "argument '%s' is several values; pass them one by one", pname);
            ok = false;
        }
    }
    if (!ok)
        return NONE;
    int k = 0;
    for (mpk_arg *p = def->args; p; p = p->next, k++) {
        if (!set[k] && !p->value) {
            if (serr(S, call->loc, "missing argument '%s' in call to block '%s'", p->name, blk->name))
                mpk_note(S->d, p->name_loc, "parameter '%s' declared here", p->name);
            ok = false;
        }
    }
    if (!ok)
        return NONE;

    frame f = {.up = S->fr, .block = blk->name, .loc = call->loc};
    S->fr = &f;
    S->depth++;
    scope sc = {.block = blk->name};
    k = 0;
    for (mpk_arg *p = def->args; p; p = p->next, k++)
        if (set[k])
            bind(S, &sc, p->name, vals[k], p->name_loc, true);
    /* Defaults are evaluated at the call, in the block's scope, where the
     * arguments given and the defaults before are bound: f(x, n = 2, m = n * 2). */
    k = 0;
    for (mpk_arg *p = def->args; p; p = p->next, k++) {
        if (set[k])
            continue;
        mpk_value v = eval(S, &sc, p->value);
        if (v.kind == MPK_V_TENSOR || v.kind == MPK_V_TUPLE) {
            serr(S, p->value->loc, "the default of '%s' must be a constant", p->name);
            v = NONE;
        }
        bind(S, &sc, p->name, v, p->name_loc, true);
    }
    mpk_value r = exec_body(S, &sc, def->body);
    warn_unused(S, &sc);
    S->depth--;
    S->fr = f.up;
    return r;
}

static mpk_value eval_call(sema *S, scope *sc, mpk_expr *e, mpk_arg *hints)
{
    sym *y = smap_get(&S->globals, e->s);
    if (y && y->kind == SYM_BLOCK) {
        y->used = true;
        if (hints) {
            serr(S, hints->name_loc, "schedule hints apply to primitive ops, not to block '%s'", e->s);
            return NONE;
        }
        return expand_block(S, sc, e, y);
    }
    mpk_op op;
    if (mpk_op_lookup(e->s, &op))
        return apply_op(S, sc, e, op, hints);
    mpk_loc at = e->loc;
    at.end = at.start + (uint32_t)strlen(e->s);
    if (y) {
        if (serr(S, at, "'%s' is %s, not a block or an op", e->s, sym_kind_a[y->kind]))
            mpk_note(S->d, y->decl->name_loc, "'%s' declared here", e->s);
        return NONE;
    }
    const char *hint = suggest(S, sc, e->s, true);
    if (hint)
        serr(S, at, "unknown op or block '%s'; did you mean '%s'?", e->s, hint);
    else
        serr(S, at, "unknown op or block '%s'", e->s);
    return NONE;
}

/* ---- expressions --------------------------------------------------------- */

static mpk_value eval_hinted(sema *S, scope *sc, mpk_expr *e, mpk_arg *hints)
{
    if (!spend(S, e->loc))
        return NONE;
    if (hints && e->kind != MPK_E_CALL) {
        serr(S, hints->name_loc, "schedule hints apply to a call of a primitive op");
        return NONE;
    }
    switch (e->kind) {
    case MPK_E_INT:
        return mk_int(e->i);
    case MPK_E_FLOAT:
        return mk_float(e->f);
    case MPK_E_STRING:
        return (mpk_value){.kind = MPK_V_STRING, .s = e->s};
    case MPK_E_NAME:
        return lookup(S, sc, e->s, e->loc);
    case MPK_E_CALL:
        if (!sc) {
            serr(S, e->loc, "ops and blocks can be called only inside a graph or a block");
            return NONE;
        }
        return eval_call(S, sc, e, hints);
    case MPK_E_BINARY: {
        mpk_value l = eval(S, sc, e->lhs);
        mpk_value r = eval(S, sc, e->rhs);
        return eval_binary(S, e, l, r);
    }
    case MPK_E_NEG: {
        mpk_value v = eval(S, sc, e->lhs);
        if (v.kind == MPK_V_INT) {
            if (v.i == INT64_MIN) {
                serr(S, e->loc, "integer overflow in '-'");
                return NONE;
            }
            return mk_int(-v.i);
        }
        if (v.kind == MPK_V_FLOAT)
            return mk_float(-v.f);
        if (v.kind != MPK_V_NONE)
            serr(S, e->loc, "cannot negate %s", mpk_value_kind_name(v.kind));
        return NONE;
    }
    case MPK_E_INDEX: {
        mpk_value base = eval(S, sc, e->lhs);
        mpk_value idx = eval(S, sc, e->rhs);
        if (base.kind == MPK_V_NONE || idx.kind == MPK_V_NONE)
            return NONE;
        if (idx.kind != MPK_V_INT) {
            serr(S, e->rhs->loc, "an index must be an int, not %s", mpk_value_kind_name(idx.kind));
            return NONE;
        }
        if (base.kind == MPK_V_LIST) {
            if (idx.i < 0 || idx.i >= base.n) {
                serr(S, e->rhs->loc, "index %lld is out of range for a list of %d", (long long)idx.i,
                     base.n);
                return NONE;
            }
            return base.items[idx.i];
        }
        if (base.kind != MPK_V_TENSOR) {
            serr(S, e->lhs->loc, "cannot index %s", mpk_value_kind_name(base.kind));
            return NONE;
        }
        if (!sc) {
            serr(S, e->loc, "tensors can be indexed only inside a graph or a block");
            return NONE;
        }
        /* t[i] is index(t, i), with the operand already evaluated. */
        mpk_expr call = {.kind = MPK_E_CALL, .loc = e->loc, .s = "index"};
        opcall o = {.S = S, .call = &call, .op = MPK_OP_INDEX, .info = mpk_op_get(MPK_OP_INDEX)};
        o.in[0] = base.t;
        o.in_loc[0] = e->lhs->loc;
        o.attr[0] = mk_int(idx.i);
        o.given[0] = true;
        o.attr_loc[0] = e->rhs->loc;
        if (!spend(S, e->loc))
            return NONE;
        mpk_dtype dt;
        int64_t dims[1][MPK_MAX_DIMS];
        int ndim[1];
        if (!infer(&o, &dt, dims, ndim, 1))
            return NONE;
        return node_value(S, add_node(S, &o, e->loc, dt, dims, ndim, 1));
    }
    case MPK_E_LIST: {
        int n = 0;
        for (mpk_expr *i = e->items; i; i = i->next)
            n++;
        mpk_value l = {.kind = MPK_V_LIST, .n = n};
        l.items = mpk_arena_alloc(S->a, sizeof(mpk_value) * (size_t)(n + 1));
        n = 0;
        for (mpk_expr *i = e->items; i; i = i->next) {
            mpk_value v = eval(S, sc, i);
            if (v.kind == MPK_V_NONE)
                return NONE;
            if (!is_const(&v) || v.kind == MPK_V_LIST) {
                serr(S, i->loc, "a list holds constants (ints, floats, strings), not %s",
                     mpk_value_kind_name(v.kind));
                return NONE;
            }
            l.items[n++] = v;
        }
        return l;
    }
    }
    MPK_ASSERT(0);
    return NONE;
}

static mpk_value eval(sema *S, scope *sc, mpk_expr *e)
{
    return eval_hinted(S, sc, e, NULL);
}

/* Every expression evaluated is a step of the budget, as every statement. */

/* ---- statements ---------------------------------------------------------- */

static void exec_output(sema *S, scope *sc, mpk_stmt *s)
{
    mpk_value v = s->value ? eval_hinted(S, sc, s->value, s->args) : lookup(S, sc, s->name, s->name_loc);
    if (v.kind == MPK_V_NONE)
        return;
    mpk_loc at = s->value ? s->value->loc : s->name_loc;
    if (v.kind != MPK_V_TENSOR) {
        serr(S, at, "output '%s' must be a tensor, not %s", s->name, mpk_value_kind_name(v.kind));
        return;
    }
    for (int i = 0; i < S->g->outputs.n; i++) {
        mpk_output *o = S->g->outputs.items[i];
        if (strcmp(o->name, s->name) == 0) {
            if (serr(S, s->name_loc, "output '%s' is defined twice", s->name))
                mpk_note(S->d, o->loc, "first defined here");
            return;
        }
    }
    mpk_output *o = mpk_arena_alloc(S->a, sizeof *o);
    o->name = s->name;
    o->t = v.t;
    o->loc = s->name_loc;
    v.t->uses++;
    mpk_vec_push(S->a, &S->g->outputs, o);
    if (s->value)
        bind(S, sc, s->name, v, s->name_loc, false), lookup_local(sc, s->name)->used = true;
}

static void exec_for(sema *S, scope *sc, mpk_stmt *s)
{
    /* Messages underline "for l in lo..hi", not the whole loop. */
    mpk_loc head = {s->loc.file, s->loc.start, s->hi->loc.end};
    mpk_value lo = eval(S, sc, s->lo), hi = eval(S, sc, s->hi);
    if (lo.kind == MPK_V_NONE || hi.kind == MPK_V_NONE)
        return;
    if (lo.kind != MPK_V_INT || hi.kind != MPK_V_INT) {
        mpk_expr *bad = lo.kind != MPK_V_INT ? s->lo : s->hi;
        serr(S, bad->loc, "a loop bound must be an int, not %s",
             mpk_value_kind_name(lo.kind != MPK_V_INT ? lo.kind : hi.kind));
        return;
    }
    binding *prev = lookup_local(sc, s->name);
    if (prev) {
        if (serr(S, s->name_loc, "loop variable '%s' would hide a value of the same name", s->name))
            mpk_note(S->d, prev->loc, "'%s' assigned here", s->name);
        return;
    }
    int64_t count;
    if (__builtin_sub_overflow(hi.i, lo.i, &count) || count > MAX_LOOP) {
        serr(S, head, "the loop runs from %lld to %lld; the limit is %d iterations",
             (long long)lo.i, (long long)hi.i, MAX_LOOP);
        return;
    }
    frame f = {.up = S->fr, .loc = head, .var = s->name};
    S->fr = &f;
    for (int64_t i = lo.i; i < hi.i && !S->out_of_budget && !S->d->stopped; i++) {
        f.iter = i;
        bind(S, sc, s->name, mk_int(i), s->name_loc, false);
        binding *b = lookup_local(sc, s->name);
        b->is_loopvar = true;
        b->used = true; /* a loop need not use its variable */
        int errors = S->d->errors;
        exec_body(S, sc, s->body);
        b->dead = true;
        /* The next iterations would mostly repeat this one's errors, at a
         * cost: a million-iteration loop must not redo a failing lookup a
         * million times. */
        if (S->d->errors > errors)
            break;
    }
    S->fr = f.up;
}

static void exec_assign(sema *S, scope *sc, mpk_stmt *s)
{
    for (mpk_name *t = s->targets; t; t = t->next) {
        binding *b = lookup_local(sc, t->name);
        if (b && b->is_loopvar) {
            serr(S, t->loc, "cannot assign to loop variable '%s'", t->name);
            return;
        }
    }
    mpk_value v = eval_hinted(S, sc, s->value, s->args);
    int ntargets = 0;
    for (mpk_name *t = s->targets; t; t = t->next)
        ntargets++;
    int nvals = v.kind == MPK_V_TUPLE ? v.n : 1;
    if (v.kind != MPK_V_NONE && nvals != ntargets) {
        serr(S, s->value->loc, "this gives %d value%s, but %d name%s %s assigned", nvals,
             nvals == 1 ? "" : "s", ntargets, ntargets == 1 ? "" : "s", ntargets == 1 ? "is" : "are");
        v = NONE;
    }
    int i = 0;
    for (mpk_name *t = s->targets; t; t = t->next, i++) {
        mpk_value one = v.kind == MPK_V_TUPLE ? v.items[i] : v;
        for (mpk_name *u = s->targets; u != t; u = u->next)
            if (strcmp(u->name, t->name) == 0)
                serr(S, t->loc, "'%s' is assigned twice in one statement", t->name);
        bind(S, sc, t->name, one, t->loc, false);
    }
}

static mpk_value exec_body(sema *S, scope *sc, mpk_stmt *body)
{
    mpk_value ret = NONE;
    for (mpk_stmt *s = body; s; s = s->next) {
        if (S->out_of_budget || S->d->stopped || !spend(S, s->loc))
            return NONE;
        switch (s->kind) {
        case MPK_S_ASSIGN:
            exec_assign(S, sc, s);
            break;
        case MPK_S_WEIGHT: {
            mpk_value w = declare_weight(S, sc, s);
            bind(S, sc, s->name, w, s->name_loc, false);
            break;
        }
        case MPK_S_OUTPUT:
            if (sc->block)
                serr(S, s->loc, "'output' belongs in a graph; a block returns its result");
            else
                exec_output(S, sc, s);
            break;
        case MPK_S_FOR:
            exec_for(S, sc, s);
            break;
        case MPK_S_RETURN: {
            /* Placement was checked once per definition (check_block). */
            int n = 0;
            for (mpk_expr *e = s->values; e; e = e->next)
                n++;
            if (n == 1) {
                ret = eval(S, sc, s->values);
                if (ret.kind == MPK_V_TUPLE) {
                    serr(S, s->values->loc, "return the values one by one: return a, b");
                    ret = NONE;
                }
                break;
            }
            ret = (mpk_value){.kind = MPK_V_TUPLE, .n = n};
            ret.items = mpk_arena_alloc(S->a, sizeof(mpk_value) * (size_t)n);
            n = 0;
            for (mpk_expr *e = s->values; e; e = e->next) {
                mpk_value v = eval(S, sc, e);
                if (v.kind == MPK_V_NONE || v.kind == MPK_V_TUPLE)
                    ret = NONE;
                else if (ret.kind == MPK_V_TUPLE)
                    ret.items[n++] = v;
            }
            break;
        }
        default:
            MPK_ASSERT(0);
        }
    }
    return ret;
}

/* ---- global collection ------------------------------------------------- */

/* Statement kinds that may not appear inside a body, and return placement:
 * checked once per definition, whether or not the block is ever used. */
/* Returns false if a return is misplaced. */
static bool check_body(sema *S, mpk_stmt *body, bool in_block, bool top)
{
    bool ok = true;
    for (mpk_stmt *s = body; s; s = s->next) {
        if (s->kind == MPK_S_RETURN) {
            if (!in_block)
                ok = false, serr(S, s->loc, "'return' outside of a block");
            else if (!top || s->next)
                ok = false, serr(S, s->loc, "'return' must be the last statement of its block");
        }
        if (s->kind == MPK_S_FOR)
            ok &= check_body(S, s->body, in_block, false);
    }
    return ok;
}

static void check_block(sema *S, mpk_stmt *b)
{
    mpk_op op;
    if (mpk_op_lookup(b->name, &op))
        serr(S, b->name_loc, "block '%s' has the name of a primitive op", b->name);
    for (mpk_arg *p = b->args; p; p = p->next)
        for (mpk_arg *q = b->args; q != p; q = q->next)
            if (strcmp(p->name, q->name) == 0)
                serr(S, p->name_loc, "parameter '%s' declared twice", p->name);
    if (!check_body(S, b->body, true, true))
        return;
    mpk_stmt *last = b->body;
    while (last && last->next)
        last = last->next;
    if (!last || last->kind != MPK_S_RETURN) {
        if (serr(S, b->name_loc, "block '%s' does not end with 'return'", b->name))
            mpk_note(S->d, b->body_end, "the block ends here");
    }
}

static void collect(sema *S, mpk_stmt **graph)
{
    for (mpk_stmt *s = S->c->items; s; s = s->next) {
        sym_kind k;
        switch (s->kind) {
        case MPK_S_IMPORT:
        case MPK_S_SCHEDULE:
            continue;
        case MPK_S_PARAM: k = SYM_PARAM; break;
        case MPK_S_WEIGHT: k = SYM_WEIGHT; break;
        case MPK_S_STATE: k = SYM_STATE; break;
        case MPK_S_INPUT: k = SYM_INPUT; break;
        case MPK_S_BLOCK: k = SYM_BLOCK; check_block(S, s); break;
        case MPK_S_GRAPH:
            k = SYM_GRAPH;
            check_body(S, s->body, false, true);
            if (*graph) {
                if (serr(S, s->name_loc, "a model has one graph, but here is a second, '%s'", s->name))
                    mpk_note(S->d, (*graph)->name_loc, "the first is '%s', here", (*graph)->name);
                continue;
            }
            *graph = s;
            break;
        default:
            serr(S, s->loc, "this statement belongs inside a graph or a block");
            continue;
        }
        sym *old = smap_get(&S->globals, s->name);
        if (old) {
            if (serr(S, s->name_loc, "'%s' is already declared", s->name))
                mpk_note(S->d, old->decl->name_loc, "previous declaration of '%s' (a %s)", s->name,
                         sym_kind_name[old->kind]);
            continue;
        }
        sym *y = mpk_arena_alloc(S->a, sizeof *y);
        y->name = s->name;
        y->kind = k;
        y->decl = s;
        smap_put(S->a, &S->globals, s->name, y);
        mpk_vec_push(S->a, &S->syms, y);
    }
}

static void apply_defines(sema *S)
{
    for (int i = 0; i < S->c->opt.ndefines; i++) {
        const char *def = S->c->opt.defines[i];
        const char *eq = strchr(def, '=');
        mpk_loc cmd = {0, 0, 0};
        flush_chain(S);
        if (!eq || eq == def) {
            mpk_error(S->d, cmd, "-D %s: expected name=value", def);
            continue;
        }
        char *name = mpk_arena_strndup(S->a, def, (size_t)(eq - def));
        sym *y = smap_get(&S->globals, name);
        if (!y || y->kind != SYM_PARAM) {
            if (y)
                mpk_error(S->d, cmd, "-D %s: '%s' is %s, not a param", def, name, sym_kind_a[y->kind]);
            else
                mpk_error(S->d, cmd, "-D %s: the model has no param '%s'", def, name);
            continue;
        }
        y->override = eq + 1;
        y->used = true;
    }
}

static void schedule(sema *S)
{
    for (mpk_stmt *s = S->c->items; s; s = s->next) {
        if (s->kind != MPK_S_SCHEDULE)
            continue;
        for (mpk_arg *h = s->args; h; h = h->next) {
            int64_t *slot = strcmp(h->name, "workers") == 0 ? &S->g->workers
                          : strcmp(h->name, "tile") == 0 ? &S->g->tile
                          : strcmp(h->name, "kv_chunk") == 0 ? &S->g->kv_chunk : NULL;
            if (!slot) {
                if (serr(S, h->name_loc, "unknown schedule hint '%s'", h->name))
                    mpk_note(S->d, h->name_loc, "the hints are 'workers', 'tile' and 'kv_chunk'");
                continue;
            }
            mpk_value v = eval(S, NULL, h->value);
            if (v.kind == MPK_V_NONE)
                continue;
            if (v.kind != MPK_V_INT || v.i <= 0 || v.i > 1 << 20) {
                serr(S, h->value->loc, "schedule hint '%s' must be an int from 1 to %d, not %s",
                     h->name, 1 << 20, vstr(S, &v));
                continue;
            }
            if (*slot) {
                serr(S, h->name_loc, "schedule hint '%s' given twice", h->name);
                continue;
            }
            *slot = v.i;
        }
    }
}

static void declare_globals(sema *S)
{
    for (int i = 0; i < S->syms.n; i++) {
        sym *y = S->syms.items[i];
        mpk_stmt *s = y->decl;
        if (y->kind == SYM_PARAM) {
            eval_param(S, y);
        } else if (y->kind == SYM_WEIGHT) {
            y->value = declare_weight(S, NULL, s);
        } else if (y->kind == SYM_STATE || y->kind == SYM_INPUT) {
            mpk_dtype dt;
            int64_t dims[MPK_MAX_DIMS];
            int ndim;
            if (eval_type(S, NULL, &s->type, &dt, dims, &ndim))
                y->value = tensor_value(new_tensor(S, y->kind == SYM_STATE ? MPK_T_STATE : MPK_T_INPUT,
                                                   dt, ndim, dims, y->name, s->name_loc));
        }
        if (S->d->stopped)
            return;
    }
}

/* Params the compiler itself reads (they go into the blob's metadata):
 * checked here, and never "unused". */
static void check_metadata(sema *S)
{
    for (int i = 0; i < S->syms.n; i++) {
        sym *y = S->syms.items[i];
        if (y->kind != SYM_PARAM || strcmp(y->name, "eos") != 0)
            continue;
        y->used = true;
        mpk_value *v = &y->value;
        int n = v->kind == MPK_V_LIST ? v->n : 1;
        bool ok = v->kind == MPK_V_INT || v->kind == MPK_V_LIST;
        for (int k = 0; ok && v->kind == MPK_V_LIST && k < v->n; k++)
            ok = v->items[k].kind == MPK_V_INT && v->items[k].i >= 0 && v->items[k].i <= INT32_MAX;
        if (v->kind == MPK_V_INT)
            ok = v->i >= 0 && v->i <= INT32_MAX;
        if (v->kind == MPK_V_NONE)
            continue; /* its own error was reported */
        if (!ok || n > MPK_MAX_EOS)
            serr(S, y->decl->name_loc,
                 "param 'eos' (the end-of-sequence token ids) must be a token id or a list of at "
                 "most %d token ids, not %s", MPK_MAX_EOS, vstr(S, v));
    }
}

/* Only a model (a file with a graph) has unused names; a library's are
 * there for others. */
static void warn_unused_globals(sema *S)
{
    if (mpk_diag_failed(S->d))
        return;
    flush_chain(S);
    for (int i = 0; i < S->syms.n; i++) {
        sym *y = S->syms.items[i];
        if (!y->used && y->kind != SYM_GRAPH && y->decl->file == S->d->main_file)
            mpk_warning(S->d, y->decl->name_loc, "%s '%s' is never used", sym_kind_name[y->kind], y->name);
    }
}

mpk_graph *mpk_sema(mpk_ctx *c)
{
    /* After a syntax error, or without an imported file, statements are
     * missing and sema would report their absence: one error is enough. */
    if (c->import_failed || mpk_diag_failed(&c->diag))
        return NULL;
    sema S = {.c = c, .d = &c->diag, .a = c->arena};
    S.g = mpk_arena_alloc(c->arena, sizeof *S.g);
    mpk_stmt *graph = NULL;
    collect(&S, &graph);
    apply_defines(&S);
    declare_globals(&S);
    check_metadata(&S);
    schedule(&S);
    for (int i = 0; i < S.syms.n; i++) {
        sym *y = S.syms.items[i];
        if (y->kind != SYM_PARAM || y->value.kind == MPK_V_NONE)
            continue;
        mpk_param_value *p = mpk_arena_alloc(c->arena, sizeof *p);
        p->name = y->name;
        p->value = y->value;
        mpk_vec_push(c->arena, &S.g->params, p);
    }
    if (!graph) {
        flush_chain(&S);
        return NULL;
    }
    S.g->name = graph->name;
    if (!S.d->stopped) {
        scope sc = {0};
        exec_body(&S, &sc, graph->body);
        warn_unused(&S, &sc);
        flush_chain(&S);
        if (S.g->outputs.n == 0 && !mpk_diag_failed(S.d))
            mpk_error(S.d, graph->name_loc, "graph '%s' has no output", graph->name);
    }
    warn_unused_globals(&S);
    flush_chain(&S);
    return S.g;
}
