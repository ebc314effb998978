/*
 * check_parser.c - the grammar: the AST it builds, and recovery from
 * syntax errors so that one run reports several.
 */
#include "check_mpk.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    mpk_ctx *c;
    char *diag;
    size_t len;
    FILE *out;
} parsed;

static parsed parse(const char *src)
{
    parsed p = {0};
    p.out = open_memstream(&p.diag, &p.len);
    p.c = mpk_ctx_new(NULL, p.out);
    p.c->diag.max_errors = 0;
    mpk_load_buffer(p.c, "p.mpk", src, strlen(src));
    fclose(p.out); /* the stream points into this frame */
    return p;
}

static void parsed_free(parsed *p)
{
    free(p->diag);
    mpk_ctx_free(p->c);
}

static int count_items(const parsed *p)
{
    int n = 0;
    for (mpk_stmt *s = p->c->items; s; s = s->next)
        n++;
    return n;
}

START_TEST(top_level_items)
{
    parsed p = parse("param a = 1, b = a * 2\n"
                     "weight w : bf16[a, b] = \"model.w\"\n"
                     "state kv : bf16[2, 4]\n"
                     "input tok : i32[1]\n"
                     "schedule workers = 8\n"
                     "block f(x, y = 3) { return x }\n"
                     "graph g { output o = f(tok) }\n");
    ck_assert_int_eq(p.c->diag.errors, 0);
    ck_assert_int_eq(count_items(&p), 8); /* the param line declares two */
    mpk_stmt *s = p.c->items;
    ck_assert_int_eq(s->kind, MPK_S_PARAM);
    ck_assert_str_eq(s->name, "a");
    s = s->next;
    ck_assert_str_eq(s->name, "b");
    ck_assert_int_eq(s->value->kind, MPK_E_BINARY);
    ck_assert_int_eq(s->value->op, '*');
    s = s->next;
    ck_assert_int_eq(s->kind, MPK_S_WEIGHT);
    ck_assert_str_eq(s->type.dtype, "bf16");
    ck_assert_str_eq(s->tmpl, "model.w");
    s = s->next->next->next->next;
    ck_assert_int_eq(s->kind, MPK_S_BLOCK);
    ck_assert_str_eq(s->args->name, "x");
    ck_assert_ptr_null(s->args->value);
    ck_assert_str_eq(s->args->next->name, "y");
    ck_assert_int_eq(s->args->next->value->i, 3);
    ck_assert_int_eq(s->body->kind, MPK_S_RETURN);
    parsed_free(&p);
}
END_TEST

START_TEST(precedence)
{
    parsed p = parse("param a = 1 + 2 * 3 - -4 % 5\n");
    ck_assert_int_eq(p.c->diag.errors, 0);
    mpk_expr *e = p.c->items->value;
    /* ((1 + (2 * 3)) - ((-4) % 5)) */
    ck_assert_int_eq(e->op, '-');
    ck_assert_int_eq(e->lhs->op, '+');
    ck_assert_int_eq(e->lhs->rhs->op, '*');
    ck_assert_int_eq(e->rhs->op, '%');
    ck_assert_int_eq(e->rhs->lhs->kind, MPK_E_NEG);
    parsed_free(&p);
}
END_TEST

START_TEST(statements)
{
    parsed p = parse("graph g {\n"
                     "  q, k = split(x, -1, [2, 2])\n"
                     "  y = matmul(x, w) with tile = 64\n"
                     "  for l in 0..4 { y = f(y, l) }\n"
                     "  z = kv[1]\n"
                     "  output o = y; output z\n"
                     "}\n");
    ck_assert_int_eq(p.c->diag.errors, 0);
    mpk_stmt *s = p.c->items->body;
    ck_assert_int_eq(s->kind, MPK_S_ASSIGN);
    ck_assert_str_eq(s->targets->name, "q");
    ck_assert_str_eq(s->targets->next->name, "k");
    ck_assert_int_eq(s->value->args->next->next->value->kind, MPK_E_LIST);
    s = s->next;
    ck_assert_str_eq(s->args->name, "tile");
    s = s->next;
    ck_assert_int_eq(s->kind, MPK_S_FOR);
    ck_assert_int_eq(s->body->kind, MPK_S_ASSIGN);
    s = s->next;
    ck_assert_int_eq(s->value->kind, MPK_E_INDEX);
    s = s->next;
    ck_assert_int_eq(s->kind, MPK_S_OUTPUT);
    ck_assert_ptr_nonnull(s->value);
    ck_assert_int_eq(s->next->kind, MPK_S_OUTPUT);
    ck_assert_ptr_null(s->next->value);
    parsed_free(&p);
}
END_TEST

START_TEST(trailing_commas_and_multiline_calls)
{
    parsed p = parse("graph g {\n"
                     "  y = f(\n    a,\n    b,\n  )\n"
                     "  z = [1,\n 2,\n]\n"
                     "}\n");
    ck_assert_int_eq(p.c->diag.errors, 0);
    parsed_free(&p);
}
END_TEST

START_TEST(several_errors_in_one_run)
{
    parsed p = parse("param a = = 1\n"
                     "param b = 2\n"
                     "graph g {\n"
                     "  x = f(a,, b)\n"
                     "  y = 3\n"
                     "  z = ) 4\n"
                     "}\n"
                     "param c = 3 3\n");
    ck_assert_int_eq(p.c->diag.errors, 4);
    ck_assert_ptr_nonnull(strstr(p.diag, "p.mpk:1:11: error: syntax error"));
    ck_assert_ptr_nonnull(strstr(p.diag, "p.mpk:4:11: error: syntax error"));
    ck_assert_ptr_nonnull(strstr(p.diag, "p.mpk:6:7: error: syntax error"));
    ck_assert_ptr_nonnull(strstr(p.diag, "p.mpk:8:13: error: syntax error"));
    /* the good declarations around the errors survive */
    int params = 0;
    for (mpk_stmt *s = p.c->items; s; s = s->next)
        params += s->kind == MPK_S_PARAM;
    ck_assert_int_eq(params, 1);
    parsed_free(&p);
}
END_TEST

START_TEST(unclosed_brace_is_named)
{
    parsed p = parse("graph g {\n  x = 1\n");
    ck_assert_int_eq(p.c->diag.errors, 1);
    ck_assert_ptr_nonnull(strstr(p.diag, "unexpected end of file"));
    ck_assert_ptr_nonnull(strstr(p.diag, "p.mpk:1:9: note: this '{' is never closed"));
    parsed_free(&p);
}
END_TEST

START_TEST(deep_nesting_is_an_error_not_a_crash)
{
    size_t n = 20000;
    char *src = malloc(2 * n + 32);
    strcpy(src, "param a = ");
    size_t k = strlen(src);
    for (size_t i = 0; i < n; i++)
        src[k++] = '(';
    src[k++] = '1';
    for (size_t i = 0; i < n; i++)
        src[k++] = ')';
    src[k] = 0;
    parsed p = parse(src);
    ck_assert_int_ge(p.c->diag.errors, 1);
    ck_assert_ptr_nonnull(strstr(p.diag, "nested too deeply"));
    parsed_free(&p);
    free(src);
}
END_TEST

Suite *make_parser_suite(void)
{
    Suite *s = suite_create("parser");
    TCase *tc = tcase_create("grammar");
    tcase_add_test(tc, top_level_items);
    tcase_add_test(tc, precedence);
    tcase_add_test(tc, statements);
    tcase_add_test(tc, trailing_commas_and_multiline_calls);
    tcase_add_test(tc, several_errors_in_one_run);
    tcase_add_test(tc, unclosed_brace_is_named);
    tcase_add_test(tc, deep_nesting_is_an_error_not_a_crash);
    suite_add_tcase(s, tc);
    return s;
}
