/*
 * frontend.h - the public header of mpk's front end.
 *
 * The front end reads .mpk files and produces a typed, fully expanded op
 * graph (mpk_graph) that the lowering passes consume. It is organised as:
 *
 *   arena.c   one bump allocator per compilation; nothing is freed singly
 *   diag.c    source files, locations, GNU-style diagnostics
 *   parse.c   drives the flex scanner and bison parser (grammar/) into an AST
 *   value.c   compile-time values and the op table built from ops.def
 *   sema.c    names, params, expansion of blocks and loops, shape checks
 *   graph.c   printing the typed graph (mpk build --emit=graph)
 *
 * Locations are byte offsets into a source buffer; line and column are
 * computed only when a diagnostic is printed. Every function that can fail
 * on user input reports through mpk_diag and keeps going; the caller asks
 * mpk_diag_failed() at the end.
 */
#ifndef MPK_FRONTEND_H
#define MPK_FRONTEND_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MPK_VERSION "0.1.0"

/* ---- arena.c ---------------------------------------------------------- */

typedef struct mpk_arena mpk_arena;

mpk_arena *mpk_arena_new(void);
void mpk_arena_free(mpk_arena *a);
void *mpk_arena_alloc(mpk_arena *a, size_t size); /* zeroed, 16-aligned */
char *mpk_arena_strndup(mpk_arena *a, const char *s, size_t n);
char *mpk_arena_strdup(mpk_arena *a, const char *s);
char *mpk_arena_printf(mpk_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A growable array of pointers in the arena (old storage is abandoned). */
typedef struct {
    void **items;
    int n, cap;
} mpk_vec;
void mpk_vec_push(mpk_arena *a, mpk_vec *v, void *item);

/* ---- diag.c ----------------------------------------------------------- */

typedef struct {
    uint32_t file;  /* index into mpk_diag.files; 0 = command line */
    uint32_t start; /* byte offset of the first character */
    uint32_t end;   /* byte offset one past the last character */
} mpk_loc;

typedef struct mpk_source {
    const char *name;     /* as given (path or "<command-line>") */
    const char *path;     /* resolved path, for import de-duplication */
    const char *text;     /* whole file, NUL-terminated, may contain NULs */
    uint32_t len;
    uint32_t *lines;      /* byte offset at which each line starts */
    uint32_t nlines;
    bool has_importer;    /* imported from importer, else a root file */
    mpk_loc importer;
} mpk_source;

typedef enum { MPK_ERROR, MPK_WARNING, MPK_NOTE } mpk_severity;

typedef struct mpk_diag {
    mpk_arena *arena;
    FILE *out;             /* where messages go (stderr by default) */
    mpk_vec files;         /* mpk_source *; files[0] is the command line */
    int errors;            /* errors reported, duplicates included */
    int shown_errors;      /* errors printed */
    int warnings;
    int max_errors;        /* stop after this many printed errors; 0 = none */
    bool no_warnings;      /* -w */
    bool werror;           /* -Werror */
    bool stopped;          /* max_errors reached: callers should wind down */
    bool last_shown;       /* whether the last error/warning was printed,
                              so that its notes follow it or not */
    mpk_loc last_loc;      /* where the last message was printed */
    uint32_t main_file;    /* the file given to mpk (0: none yet); warnings
                              elsewhere (imports) are not shown */
    uint64_t *seen;        /* hashes of printed messages (dedupe) */
    size_t nseen, capseen;
} mpk_diag;

/* Errors, duplicates included, after which a compilation stops. */
#define MPK_MAX_ERRORS_SEEN 10000

void mpk_diag_init(mpk_diag *d, mpk_arena *a, FILE *out);
uint32_t mpk_diag_add_source(mpk_diag *d, const char *name, const char *path,
                             const char *text, size_t len);
mpk_source *mpk_diag_source(mpk_diag *d, uint32_t file);
void mpk_diag_linecol(mpk_diag *d, mpk_loc loc, uint32_t *line, uint32_t *col);

/* Report at loc; returns whether the message was printed (not a duplicate
 * of an earlier one, not past the error cap, not a silenced warning). */
bool mpk_error(mpk_diag *d, mpk_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool mpk_warning(mpk_diag *d, mpk_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A note belongs to the last error or warning and is printed only if it was. */
void mpk_note(mpk_diag *d, mpk_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool mpk_vreport(mpk_diag *d, mpk_severity sev, mpk_loc loc, const char *fmt,
                 va_list ap);
/* Notes that say through which imports a file was reached. */
void mpk_note_imports(mpk_diag *d, uint32_t file);
bool mpk_diag_failed(const mpk_diag *d);

/* Internal faults: print file and line, then abort. Never for user input. */
#define MPK_ASSERT(c)                                                        \
    ((c) ? (void)0 : mpk_internal_error(__FILE__, __LINE__, #c))
_Noreturn void mpk_internal_error(const char *file, int line, const char *what);

/* ---- the AST (built by grammar/parser.y) ------------------------------- */

typedef enum {
    MPK_E_INT, MPK_E_FLOAT, MPK_E_STRING, MPK_E_NAME, MPK_E_CALL,
    MPK_E_BINARY, MPK_E_NEG, MPK_E_INDEX, MPK_E_LIST
} mpk_expr_kind;

typedef struct mpk_expr mpk_expr;
typedef struct mpk_arg mpk_arg;

struct mpk_arg {          /* call argument or name = value pair */
    const char *name;     /* NULL for a positional argument */
    mpk_loc name_loc;
    mpk_expr *value;
    mpk_arg *next;
};

struct mpk_expr {
    mpk_expr_kind kind;
    mpk_loc loc;
    mpk_expr *next;       /* in expression lists */
    int64_t i;            /* INT */
    double f;             /* FLOAT */
    const char *s;        /* STRING (unescaped), NAME, CALL callee */
    int op;               /* BINARY: '+', '-', '*', '/', '%' */
    mpk_expr *lhs, *rhs;  /* BINARY; NEG uses lhs; INDEX: base, index */
    mpk_arg *args;        /* CALL */
    mpk_expr *items;      /* LIST */
};

typedef struct {
    mpk_loc loc;          /* the whole type, bf16[...] */
    const char *dtype;
    mpk_loc dtype_loc;
    mpk_expr *dims;       /* list, at least one */
} mpk_type_ast;

typedef enum {
    /* top level */
    MPK_S_IMPORT, MPK_S_PARAM, MPK_S_STATE, MPK_S_INPUT, MPK_S_SCHEDULE,
    MPK_S_BLOCK, MPK_S_GRAPH,
    /* top level and in bodies */
    MPK_S_WEIGHT,
    /* in bodies */
    MPK_S_ASSIGN, MPK_S_OUTPUT, MPK_S_FOR, MPK_S_RETURN
} mpk_stmt_kind;

typedef struct mpk_name {
    const char *name;
    mpk_loc loc;
    struct mpk_name *next;
} mpk_name;

typedef struct mpk_stmt mpk_stmt;
struct mpk_stmt {
    mpk_stmt_kind kind;
    mpk_loc loc;          /* the whole statement */
    mpk_stmt *next;
    const char *name;     /* declared name; IMPORT path; FOR variable */
    mpk_loc name_loc;
    mpk_type_ast type;    /* WEIGHT, STATE, INPUT */
    const char *tmpl;     /* WEIGHT name template */
    mpk_loc tmpl_loc;
    mpk_expr *value;      /* PARAM, ASSIGN, OUTPUT (NULL: output NAME) */
    mpk_expr *lo, *hi;    /* FOR */
    mpk_expr *values;     /* RETURN list */
    mpk_name *targets;    /* ASSIGN */
    mpk_arg *args;        /* ASSIGN/OUTPUT hints, SCHEDULE hints, BLOCK params */
    mpk_stmt *body;       /* BLOCK, GRAPH, FOR */
    mpk_loc body_end;     /* closing brace */
    uint32_t file;        /* source file of the statement */
};

/* ---- compile-time values and the op table (value.c) ------------------ */

typedef enum {
    MPK_DT_BF16, MPK_DT_F16, MPK_DT_F32, MPK_DT_I32, MPK_DT_COUNT
} mpk_dtype;
const char *mpk_dtype_name(mpk_dtype t);
int mpk_dtype_size(mpk_dtype t);
bool mpk_dtype_parse(const char *s, mpk_dtype *out);

typedef enum {
#define MPK_OP(e, name, operands, nout, attrs) MPK_OP_##e,
#include "ops.def"
#undef MPK_OP
    MPK_OP_COUNT
} mpk_op;
_Static_assert(MPK_OP_COUNT == 14, "ops.def changed: update every switch over mpk_op");

#define MPK_MAX_ATTRS 8
#define MPK_MAX_IN 5
#define MPK_MAX_DIMS 8

typedef enum { MPK_A_INT, MPK_A_FLOAT, MPK_A_STRING, MPK_A_LIST } mpk_attr_kind;

typedef struct mpk_value mpk_value;

typedef struct {
    const char *name;
    mpk_attr_kind kind;
    bool required;
    const char *dflt;     /* default as written in ops.def */
} mpk_attr_spec;

typedef struct {
    const char *name;
    int nin, nout;
    const char *operands[MPK_MAX_IN];
    int nattrs;
    mpk_attr_spec attrs[MPK_MAX_ATTRS];
} mpk_op_info;

const mpk_op_info *mpk_op_get(mpk_op op);
/* The index of op's attribute called name (in mpk_node.attrs and sema's
 * calls); an internal error if the op has none: names, not positions,
 * so that ops.def can reorder or add attributes. */
int mpk_op_attr(mpk_op op, const char *name);
/* Rope's inverse frequency i (of head_dim / 2) for rope's attributes
 * attrs (in the op table's order), in f32 as HF computes it (the llama3
 * rule from transformers' _compute_llama3_parameters): the compiler's
 * table, and what sema checks is finite. */
float mpk_rope_inv_freq(const mpk_value *attrs, int64_t i, int64_t head_dim);
/* Attribute name of node n: MPK_ATTR(n, "theta")->f. */
#define MPK_ATTR(n, name) (&(n)->attrs[mpk_op_attr((n)->op, (name))])
bool mpk_op_lookup(const char *name, mpk_op *out);

typedef struct mpk_tensor mpk_tensor;

typedef enum {
    MPK_V_NONE, MPK_V_INT, MPK_V_FLOAT, MPK_V_STRING, MPK_V_LIST,
    MPK_V_TENSOR, MPK_V_TUPLE
} mpk_value_kind;

struct mpk_value {
    mpk_value_kind kind;
    int64_t i;
    double f;
    const char *s;
    mpk_value *items;     /* LIST, TUPLE */
    int n;
    mpk_tensor *t;
};

const char *mpk_value_kind_name(mpk_value_kind k);
/* Formats constants as the language writes them; tensors as dtype[shape]. */
char *mpk_value_str(mpk_arena *a, const mpk_value *v);

/* ---- the typed graph (sema.c output, lowering input) ------------------ */

typedef enum {
    MPK_T_INPUT, MPK_T_WEIGHT, MPK_T_STATE, MPK_T_ACT, MPK_T_VIEW
} mpk_tensor_kind;

typedef struct mpk_node mpk_node;

struct mpk_tensor {
    int id;
    mpk_tensor_kind kind;
    mpk_dtype dtype;
    int ndim;
    int64_t dims[MPK_MAX_DIMS];
    const char *name;     /* input/state name; weight: HF tensor name */
    mpk_loc loc;          /* declaration, or the producing expression */
    mpk_node *producer;   /* ACT and VIEW */
    int uses;             /* operand uses plus outputs */
};

struct mpk_node {
    int id;
    mpk_op op;
    mpk_tensor *in[MPK_MAX_IN];
    int nin;
    mpk_tensor **out;
    int nout;
    mpk_value attrs[MPK_MAX_ATTRS]; /* in the op table's order, defaults filled */
    int64_t hint_tile, hint_kv_chunk; /* 0: none given */
    mpk_loc loc;
};

typedef struct {
    const char *name;
    mpk_tensor *t;
    mpk_loc loc;
} mpk_output;

typedef struct {
    const char *name;
    mpk_value value;
} mpk_param_value;

typedef struct mpk_graph {
    const char *name;
    mpk_vec tensors;      /* mpk_tensor *, in creation order */
    mpk_vec nodes;        /* mpk_node *, in a valid topological order */
    mpk_vec outputs;      /* mpk_output * */
    mpk_vec params;       /* mpk_param_value *, final values */
    int64_t workers, tile, kv_chunk; /* global schedule hints; 0: none */
} mpk_graph;

void mpk_graph_print(FILE *out, const mpk_graph *g);
int64_t mpk_tensor_numel(const mpk_tensor *t);

/* ---- the compilation (parse.c, sema.c) ------------------------------- */

typedef struct {
    const char **include_dirs;  /* -I, in order */
    int ninclude;
    const char **defines;       /* -D name=value, as given */
    int ndefines;
    const char *exe_dir;        /* directory of the running binary, or NULL */
    bool no_env;                /* ignore MPK_PATH (tests) */
} mpk_options;

/* Statements and ops that one compilation may expand: a bound on the work
 * a hostile model can ask for (a real one needs a few thousand). */
#define MPK_MAX_STEPS (2 * 1000 * 1000)

/* A model's param `eos` (a token id or a list of them) is read by the
 * compiler into the blob's metadata: generation stops at one of them. */
#define MPK_MAX_EOS 8

typedef struct mpk_ctx {
    mpk_arena *arena;
    mpk_diag diag;
    mpk_options opt;
    mpk_stmt *items;            /* every file's top-level items, in load order */
    mpk_stmt *items_tail;
    int64_t budget;             /* expansion steps left (guards hostile input) */
    bool import_failed;         /* names would be missing: sema is skipped */
} mpk_ctx;

mpk_ctx *mpk_ctx_new(const mpk_options *opt, FILE *diag_out);
void mpk_ctx_free(mpk_ctx *c);

/* Parse a file ("-": standard input) or a buffer and, transitively,
 * everything it imports. Returns false when the file could not be read
 * (already reported). */
bool mpk_load_file(mpk_ctx *c, const char *path);
bool mpk_load_buffer(mpk_ctx *c, const char *name, const char *text, size_t len);
/* The token codes (parser.h) of a buffer, for the lexer tests. */
int mpk_lex_tokens(mpk_ctx *c, const char *text, size_t len, int *out, int max);

/* Check names, params and shapes, expand blocks and loops. Returns the
 * graph, or NULL if the model has none; errors are in c->diag. */
mpk_graph *mpk_sema(mpk_ctx *c);

/* Scanner and parser state shared with grammar/ (not for other layers). */
typedef struct mpk_lexer {
    mpk_ctx *ctx;
    uint32_t file;
    uint32_t off;          /* byte offset of the next character */
    bool want_term;        /* a newline now ends the statement */
    int depth;             /* open '(' and '[' */
    mpk_loc parens[64];    /* where they were opened, for "to match" notes */
    mpk_loc braces[64];    /* open '{', for "unclosed" notes */
    int nbraces;
} mpk_lexer;

typedef struct mpk_parse_state {
    mpk_ctx *ctx;
    mpk_lexer *lex;
    uint32_t file;
    mpk_stmt *head, *tail; /* the file's top-level items */
} mpk_parse_state;

#endif
