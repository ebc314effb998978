/*
 * parser.y - the mpk grammar (a pure, reentrant bison parser).
 *
 * The parser only builds the AST (frontend.h); names, params and shapes are
 * sema's business. Everything is allocated in the compilation's arena, so
 * values that error recovery discards need no destructor. Statement lists
 * recover at the next end of statement or closing brace, so one run reports
 * many syntax errors.
 */
%define api.pure full
%define api.location.type {mpk_loc}
%define parse.error detailed
%locations
%expect 0
%param {void *scanner}
%parse-param {mpk_parse_state *P}

%code requires {
#include "frontend.h"
}

%code provides {
int yylex(YYSTYPE *yylval, YYLTYPE *yylloc, void *scanner);
void yyerror(YYLTYPE *loc, void *scanner, mpk_parse_state *P, const char *msg);
}

%code {
#include <string.h>

#define YYLLOC_DEFAULT(cur, rhs, n)                                     \
    do {                                                                \
        if (n) {                                                        \
            (cur).file = YYRHSLOC(rhs, 1).file;                         \
            (cur).start = YYRHSLOC(rhs, 1).start;                       \
            (cur).end = YYRHSLOC(rhs, n).end;                           \
        } else {                                                        \
            (cur).file = YYRHSLOC(rhs, 0).file;                         \
            (cur).start = (cur).end = YYRHSLOC(rhs, 0).end;             \
        }                                                               \
    } while (0)

static mpk_expr *mk_expr(mpk_parse_state *P, mpk_expr_kind k, mpk_loc loc)
{
    mpk_expr *e = mpk_arena_alloc(P->ctx->arena, sizeof *e);
    e->kind = k;
    e->loc = loc;
    return e;
}

static mpk_expr *mk_binary(mpk_parse_state *P, int op, mpk_expr *l, mpk_expr *r, mpk_loc loc)
{
    mpk_expr *e = mk_expr(P, MPK_E_BINARY, loc);
    e->op = op;
    e->lhs = l;
    e->rhs = r;
    return e;
}

static mpk_stmt *mk_stmt(mpk_parse_state *P, mpk_stmt_kind k, mpk_loc loc)
{
    mpk_stmt *s = mpk_arena_alloc(P->ctx->arena, sizeof *s);
    s->kind = k;
    s->loc = loc;
    s->file = P->file;
    return s;
}

static mpk_arg *mk_arg(mpk_parse_state *P, const char *name, mpk_loc name_loc, mpk_expr *v)
{
    mpk_arg *a = mpk_arena_alloc(P->ctx->arena, sizeof *a);
    a->name = name;
    a->name_loc = name_loc;
    a->value = v;
    return a;
}

#define APPEND(list, item)                                  \
    do {                                                    \
        if ((list).t) (list).t->next = (item);              \
        else (list).h = (item);                             \
        (list).t = (item);                                  \
    } while (0)

/* Appends a chain of statements (a param line declares several). */
#define APPEND_ALL(list, chain)                             \
    do {                                                    \
        for (mpk_stmt *s_ = (chain); s_; ) {                \
            mpk_stmt *n_ = s_->next;                        \
            s_->next = NULL;                                \
            APPEND(list, s_);                               \
            s_ = n_;                                        \
        }                                                   \
    } while (0)
}

%union {
    const char *str;
    int64_t i;
    double f;
    mpk_expr *expr;
    struct { mpk_expr *h, *t; } exprs;
    mpk_arg *arg;
    struct { mpk_arg *h, *t; } args;
    mpk_stmt *stmt;
    struct { mpk_stmt *h, *t; } stmts;
    struct { mpk_name *h, *t; } names;
    mpk_type_ast type;
}

%token YYEOF 0 "end of file"
%token TERM "end of line"
%token <str> IDENT "identifier"
%token <i> INT "integer"
%token <f> FLOAT "number"
%token <str> STRING "string"
%token DOTDOT "'..'"
%token IMPORT "'import'" PARAM "'param'" WEIGHT "'weight'" STATE "'state'"
%token INPUT "'input'" OUTPUT "'output'" GRAPH "'graph'" BLOCK "'block'"
%token FOR "'for'" IN "'in'" RETURN "'return'" WITH "'with'"
%token SCHEDULE "'schedule'"

%left '+' '-'
%left '*' '/' '%'
%precedence NEG

%type <expr> expr postfix primary
%type <exprs> expr_list
%type <arg> arg param pair
%type <args> args params params_opt pairs hints_opt
%type <stmt> item stmt weight_decl
%type <stmts> items body stmts param_items
%type <names> names
%type <type> type

%%

file:
    items                       { P->head = $1.h; P->tail = $1.t; }
    ;

items:
    %empty                      { $$.h = $$.t = NULL; }
    | items TERM                { $$ = $1; }
    | items item TERM           { $$ = $1; APPEND_ALL($$, $2); }
    | items error TERM          { $$ = $1; yyerrok; }
    ;

item:
    IMPORT STRING               { $$ = mk_stmt(P, MPK_S_IMPORT, @$); $$->name = $2; $$->name_loc = @2; }
    | PARAM param_items         { $$ = $2.h; }
    | weight_decl               { $$ = $1; }
    | STATE IDENT ':' type      { $$ = mk_stmt(P, MPK_S_STATE, @$); $$->name = $2; $$->name_loc = @2; $$->type = $4; }
    | INPUT IDENT ':' type      { $$ = mk_stmt(P, MPK_S_INPUT, @$); $$->name = $2; $$->name_loc = @2; $$->type = $4; }
    | SCHEDULE pairs            { $$ = mk_stmt(P, MPK_S_SCHEDULE, @$); $$->args = $2.h; }
    | BLOCK IDENT '(' params_opt ')' body {
                                  $$ = mk_stmt(P, MPK_S_BLOCK, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->args = $4.h; $$->body = $6.h; $$->body_end = @6;
                                  $$->body_end.start = @6.end - 1;
                                }
    | GRAPH IDENT body          {
                                  $$ = mk_stmt(P, MPK_S_GRAPH, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->body = $3.h; $$->body_end = @3; $$->body_end.start = @3.end - 1;
                                }
    ;

param_items:
    IDENT '=' expr              {
                                  mpk_stmt *s = mk_stmt(P, MPK_S_PARAM, @$);
                                  s->name = $1; s->name_loc = @1; s->value = $3;
                                  $$.h = $$.t = s;
                                }
    | param_items ',' IDENT '=' expr {
                                  mpk_stmt *s = mk_stmt(P, MPK_S_PARAM, @3);
                                  s->loc.end = @5.end;
                                  s->name = $3; s->name_loc = @3; s->value = $5;
                                  $$ = $1; APPEND($$, s);
                                }
    ;

weight_decl:
    WEIGHT IDENT ':' type '=' STRING {
                                  $$ = mk_stmt(P, MPK_S_WEIGHT, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->type = $4; $$->tmpl = $6; $$->tmpl_loc = @6;
                                }
    ;

type:
    IDENT '[' expr_list ']'     { $$.loc = @$; $$.dtype = $1; $$.dtype_loc = @1; $$.dims = $3.h; }
    ;

params_opt:
    %empty                      { $$.h = $$.t = NULL; }
    | params                    { $$ = $1; }
    | params ','                { $$ = $1; }
    ;

params:
    param                       { $$.h = $$.t = $1; }
    | params ',' param          { $$ = $1; APPEND($$, $3); }
    ;

param:
    IDENT                       { $$ = mk_arg(P, $1, @1, NULL); }
    | IDENT '=' expr            { $$ = mk_arg(P, $1, @1, $3); }
    ;

body:
    '{' stmts '}'               { $$ = $2; }
    | '{' stmts stmt '}'        { $$ = $2; APPEND($$, $3); }
    | '{' stmts error '}'       { $$ = $2; yyerrok; }
    ;

stmts:
    %empty                      { $$.h = $$.t = NULL; }
    | stmts TERM                { $$ = $1; }
    | stmts stmt TERM           { $$ = $1; APPEND($$, $2); }
    | stmts error TERM          { $$ = $1; yyerrok; }
    ;

stmt:
    names '=' expr hints_opt    {
                                  $$ = mk_stmt(P, MPK_S_ASSIGN, @$); $$->targets = $1.h;
                                  $$->name = $1.h->name; $$->name_loc = $1.h->loc;
                                  $$->value = $3; $$->args = $4.h;
                                }
    | OUTPUT IDENT '=' expr hints_opt {
                                  $$ = mk_stmt(P, MPK_S_OUTPUT, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->value = $4; $$->args = $5.h;
                                }
    | OUTPUT IDENT              { $$ = mk_stmt(P, MPK_S_OUTPUT, @$); $$->name = $2; $$->name_loc = @2; }
    | FOR IDENT IN expr DOTDOT expr body {
                                  $$ = mk_stmt(P, MPK_S_FOR, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->lo = $4; $$->hi = $6; $$->body = $7.h;
                                }
    | RETURN expr_list          { $$ = mk_stmt(P, MPK_S_RETURN, @$); $$->values = $2.h; }
    | weight_decl               { $$ = $1; }
    ;

names:
    IDENT                       {
                                  mpk_name *n = mpk_arena_alloc(P->ctx->arena, sizeof *n);
                                  n->name = $1; n->loc = @1; $$.h = $$.t = n;
                                }
    | names ',' IDENT           {
                                  mpk_name *n = mpk_arena_alloc(P->ctx->arena, sizeof *n);
                                  n->name = $3; n->loc = @3; $$ = $1; APPEND($$, n);
                                }
    ;

hints_opt:
    %empty                      { $$.h = $$.t = NULL; }
    | WITH pairs                { $$ = $2; }
    ;

pairs:
    pair                        { $$.h = $$.t = $1; }
    | pairs ',' pair            { $$ = $1; APPEND($$, $3); }
    ;

pair:
    IDENT '=' expr              { $$ = mk_arg(P, $1, @1, $3); }
    ;

expr:
    expr '+' expr               { $$ = mk_binary(P, '+', $1, $3, @$); }
    | expr '-' expr             { $$ = mk_binary(P, '-', $1, $3, @$); }
    | expr '*' expr             { $$ = mk_binary(P, '*', $1, $3, @$); }
    | expr '/' expr             { $$ = mk_binary(P, '/', $1, $3, @$); }
    | expr '%' expr             { $$ = mk_binary(P, '%', $1, $3, @$); }
    | '-' expr %prec NEG        { $$ = mk_expr(P, MPK_E_NEG, @$); $$->lhs = $2; }
    | postfix                   { $$ = $1; }
    ;

postfix:
    primary                     { $$ = $1; }
    | postfix '[' expr ']'      { $$ = mk_expr(P, MPK_E_INDEX, @$); $$->lhs = $1; $$->rhs = $3; }
    ;

primary:
    INT                         { $$ = mk_expr(P, MPK_E_INT, @$); $$->i = $1; }
    | FLOAT                     { $$ = mk_expr(P, MPK_E_FLOAT, @$); $$->f = $1; }
    | STRING                    { $$ = mk_expr(P, MPK_E_STRING, @$); $$->s = $1; }
    | IDENT                     { $$ = mk_expr(P, MPK_E_NAME, @$); $$->s = $1; }
    | IDENT '(' ')'             { $$ = mk_expr(P, MPK_E_CALL, @$); $$->s = $1; }
    | IDENT '(' args ')'        { $$ = mk_expr(P, MPK_E_CALL, @$); $$->s = $1; $$->args = $3.h; }
    | IDENT '(' args ',' ')'    { $$ = mk_expr(P, MPK_E_CALL, @$); $$->s = $1; $$->args = $3.h; }
    | '(' expr ')'              { $$ = $2; }
    | '[' ']'                   { $$ = mk_expr(P, MPK_E_LIST, @$); }
    | '[' expr_list ']'         { $$ = mk_expr(P, MPK_E_LIST, @$); $$->items = $2.h; }
    | '[' expr_list ',' ']'     { $$ = mk_expr(P, MPK_E_LIST, @$); $$->items = $2.h; }
    ;

args:
    arg                         { $$.h = $$.t = $1; }
    | args ',' arg              { $$ = $1; APPEND($$, $3); }
    ;

arg:
    expr                        { $$ = mk_arg(P, NULL, @1, $1); }
    | IDENT '=' expr            { $$ = mk_arg(P, $1, @1, $3); }
    ;

expr_list:
    expr                        { $$.h = $$.t = $1; }
    | expr_list ',' expr        { $$ = $1; APPEND($$, $3); }
    ;

%%

void yyerror(YYLTYPE *loc, void *scanner, mpk_parse_state *P, const char *msg)
{
    (void)scanner;
    mpk_diag *d = &P->ctx->diag;
    mpk_loc at = *loc;
    mpk_source *src = mpk_diag_source(d, at.file);
    /* An error at the end of file points at the last character, so that the
     * caret lands on a real line. */
    if (at.start >= src->len && src->len > 0) {
        at.start = src->len - 1;
        while (at.start > 0 && (src->text[at.start] == '\n' || src->text[at.start] == '\r'))
            at.start--;
        at.end = at.start + 1;
    }
    /* Bison's own words for its stack overflowing. */
    if (strcmp(msg, "memory exhausted") == 0)
        msg = "the model is nested too deeply for the parser (the limit is 10000 levels)";
    if (!mpk_error(d, at, "%s", msg))
        return;
    mpk_lexer *lx = P->lex;
    int cap = (int)(sizeof lx->parens / sizeof lx->parens[0]);
    if (lx->depth > 0 && lx->depth <= cap && (strstr(msg, "expecting ')'") || strstr(msg, "expecting ']'") ||
                                              strstr(msg, "or ')'") || strstr(msg, "or ']'"))) {
        mpk_loc open = lx->parens[lx->depth - 1];
        mpk_source *os = mpk_diag_source(d, open.file);
        mpk_note(d, open, "to match this '%c'", os->text[open.start]);
    }
    if (loc->start >= src->len && P->lex->nbraces > 0) {
        int n = P->lex->nbraces;
        if (n > (int)(sizeof P->lex->braces / sizeof P->lex->braces[0]))
            n = (int)(sizeof P->lex->braces / sizeof P->lex->braces[0]);
        mpk_note(d, P->lex->braces[n - 1], "this '{' is never closed");
    }
    mpk_note_imports(d, at.file);
}
