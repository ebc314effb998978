/*
 * check_lexer.c - the scanner: tokens, literals, and where newlines end
 * statements.
 */
#include "check_mpk.h"
#include "parser.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    mpk_ctx *c;
    int toks[64];
    int n;
    char *diag;
    size_t len;
    FILE *out;
} lexed;

static lexed lex(const char *src)
{
    lexed l = {0};
    l.out = open_memstream(&l.diag, &l.len);
    l.c = mpk_ctx_new(NULL, l.out);
    l.n = mpk_lex_tokens(l.c, src, strlen(src), l.toks, 64);
    fclose(l.out); /* the stream points into this frame */
    return l;
}

static void lexed_free(lexed *l)
{
    free(l->diag);
    mpk_ctx_free(l->c);
}

static void expect(const char *src, const int *want, int n)
{
    lexed l = lex(src);
    ck_assert_msg(l.n == n, "'%s': %d tokens, expected %d", src, l.n, n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(l.toks[i] == want[i], "'%s': token %d is %d, expected %d", src, i,
                      l.toks[i], want[i]);
    ck_assert_int_eq(l.c->diag.errors, 0);
    lexed_free(&l);
}

START_TEST(keywords_and_names)
{
    int want[] = {PARAM, IDENT, '=', INT, ',', IDENT, '=', FLOAT, TERM};
    expect("param hidden = 1024, eps = 1e-6\n", want, 9);
    int want2[] = {IDENT, TERM, IDENT, TERM};
    expect("params\ninputs", want2, 4); /* keywords are whole words */
}
END_TEST

START_TEST(newline_ends_statement_only_after_an_ending_token)
{
    /* after '+' the statement continues */
    int want[] = {IDENT, '=', IDENT, '+', IDENT, TERM};
    expect("x = a +\n b\n", want, 6);
    /* inside parentheses newlines are spaces */
    int want2[] = {IDENT, '=', IDENT, '(', IDENT, ',', IDENT, ')', TERM};
    expect("x = f(a,\n b\n)\n", want2, 9);
    /* blank lines and comments add nothing */
    int want3[] = {IDENT, TERM, IDENT, TERM};
    expect("a\n\n# comment\n\nb # trailing\n", want3, 4);
    /* '}' ends a statement; '{' does not */
    int want4[] = {FOR, IDENT, IN, INT, DOTDOT, IDENT, '{', IDENT, '=', IDENT, TERM, '}', TERM};
    expect("for l in 0..n {\n x = y\n}\n", want4, 13);
}
END_TEST

START_TEST(braces_reset_bracket_depth)
{
    /* An unclosed '(' must not swallow the rest of the file. */
    int want[] = {IDENT, '(', '}', TERM, IDENT, TERM};
    expect("f(\n}\nx\n", want, 6);
}
END_TEST

START_TEST(end_of_file_ends_statement)
{
    int want[] = {IDENT, '=', INT, TERM};
    expect("x = 1", want, 4);
}
END_TEST

START_TEST(numbers)
{
    lexed l = lex("0..12 1.5 2e3 7");
    ck_assert_int_eq(l.n, 7);
    int want[] = {INT, DOTDOT, INT, FLOAT, FLOAT, INT, TERM};
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(l.toks[i], want[i]);
    lexed_free(&l);
}
END_TEST

START_TEST(integer_too_large)
{
    lexed l = lex("x = 99999999999999999999\n");
    ck_assert_int_eq(l.c->diag.errors, 1);
    ck_assert_ptr_nonnull(strstr(l.diag, "<lex>:1:5: error: integer literal is too large"));
    lexed_free(&l);
}
END_TEST

START_TEST(strings)
{
    lexed l = lex("\"a\\\"b\\\\c\\n\" \"x\\q\"");
    ck_assert_int_eq(l.n, 3);
    ck_assert_int_eq(l.toks[0], STRING);
    ck_assert_int_eq(l.c->diag.errors, 1);
    ck_assert_ptr_nonnull(strstr(l.diag, "<lex>:1:15: error: unknown escape sequence '\\q'"));
    lexed_free(&l);
}
END_TEST

START_TEST(unterminated_string)
{
    lexed l = lex("w = \"abc\nx\n");
    ck_assert_int_eq(l.c->diag.errors, 1);
    ck_assert_ptr_nonnull(strstr(l.diag, "<lex>:1:5: error: missing terminating '\"' character"));
    /* scanning goes on with the next line */
    ck_assert_int_eq(l.toks[l.n - 2], IDENT);
    lexed_free(&l);
}
END_TEST

START_TEST(stray_bytes)
{
    lexed l = lex("a $ b \x01 c");
    ck_assert_int_eq(l.c->diag.errors, 2);
    ck_assert_ptr_nonnull(strstr(l.diag, "<lex>:1:3: error: stray '$' in model"));
    ck_assert_ptr_nonnull(strstr(l.diag, "error: stray byte 0x01 in model"));
    ck_assert_int_eq(l.n, 4); /* a b c TERM */
    lexed_free(&l);
}
END_TEST

START_TEST(nul_byte_in_source)
{
    const char src[] = "a\0b\n";
    lexed l = {0};
    l.out = open_memstream(&l.diag, &l.len);
    l.c = mpk_ctx_new(NULL, l.out);
    l.n = mpk_lex_tokens(l.c, src, sizeof src - 1, l.toks, 64);
    fclose(l.out);
    ck_assert_int_eq(l.c->diag.errors, 1);
    ck_assert_ptr_nonnull(strstr(l.diag, "stray byte 0x00"));
    lexed_free(&l);
}
END_TEST

Suite *make_lexer_suite(void)
{
    Suite *s = suite_create("lexer");
    TCase *tc = tcase_create("tokens");
    tcase_add_test(tc, keywords_and_names);
    tcase_add_test(tc, newline_ends_statement_only_after_an_ending_token);
    tcase_add_test(tc, braces_reset_bracket_depth);
    tcase_add_test(tc, end_of_file_ends_statement);
    tcase_add_test(tc, numbers);
    tcase_add_test(tc, integer_too_large);
    tcase_add_test(tc, strings);
    tcase_add_test(tc, unterminated_string);
    tcase_add_test(tc, stray_bytes);
    tcase_add_test(tc, nul_byte_in_source);
    suite_add_tcase(s, tc);
    return s;
}
