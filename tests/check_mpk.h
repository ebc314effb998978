/*
 * check_mpk.h - shared helpers of the Check suites: compile a model given
 * as a string, with diagnostics captured in memory.
 */
#ifndef CHECK_MPK_H
#define CHECK_MPK_H

#include <check.h>

#include "frontend/frontend.h"

typedef struct {
    mpk_ctx *c;
    mpk_graph *g;
    char *diag;       /* everything the compiler printed */
    size_t len;
} compiled;

/* Compiles src as "t.mpk" with -I stdlib and the given -D definitions. */
compiled compile_src(const char *src, const char **defines, int ndefines);
void compiled_free(compiled *r);
/* Number of graph nodes with the given op. */
int count_op(const mpk_graph *g, mpk_op op);

Suite *make_lexer_suite(void);
Suite *make_parser_suite(void);
Suite *make_sema_suite(void);
Suite *make_weights_suite(void);
Suite *make_lower_suite(void);
Suite *make_sample_suite(void);

#define ck_assert_diag_has(r, text)                                                  \
    ck_assert_msg(strstr((r).diag, (text)) != NULL, "expected \"%s\" in:\n%s", (text), \
                  (r).diag)

#endif
