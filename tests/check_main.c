/*
 * check_main.c - runs every Check suite (front end, weights, lowering, sampler). Fork mode (Check's
 * default) keeps one crashing test from taking the others down.
 */
#include "check_mpk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

compiled compile_src(const char *src, const char **defines, int ndefines)
{
    static const char *incs[] = {"stdlib"};
    compiled r = {0};
    FILE *out = open_memstream(&r.diag, &r.len);
    ck_assert_ptr_nonnull(out);
    mpk_options opt = {.include_dirs = incs, .ninclude = 1, .defines = defines,
                       .ndefines = ndefines, .no_env = true};
    r.c = mpk_ctx_new(&opt, out);
    r.c->diag.max_errors = 0;
    mpk_load_buffer(r.c, "t.mpk", src, strlen(src));
    r.g = mpk_sema(r.c);
    fclose(out);
    return r;
}

void compiled_free(compiled *r)
{
    mpk_ctx_free(r->c);
    free(r->diag);
}

int count_op(const mpk_graph *g, mpk_op op)
{
    int n = 0;
    for (int i = 0; i < g->nodes.n; i++)
        n += ((mpk_node *)g->nodes.items[i])->op == op;
    return n;
}

int main(void)
{
    SRunner *sr = srunner_create(make_lexer_suite());
    srunner_add_suite(sr, make_parser_suite());
    srunner_add_suite(sr, make_sema_suite());
    srunner_add_suite(sr, make_weights_suite());
    srunner_add_suite(sr, make_lower_suite());
    srunner_add_suite(sr, make_sample_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
