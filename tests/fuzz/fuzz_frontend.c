/*
 * fuzz_frontend.c - the front end under a fuzzer.
 *
 * Built with clang -fsanitize=fuzzer (make fuzz) this is a libFuzzer
 * target: every input is compiled as a model (parse, imports through
 * -I stdlib, sema, graph printing) with diagnostics thrown away. Built with
 * -DMPK_FUZZ_MAIN (make check) it replays the files of the directories it
 * is given, so the corpus of past findings keeps being checked without
 * clang. Either way a crash, a sanitizer report or a slow input is the bug.
 */
#include "frontend/frontend.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    static const char *incs[] = {"stdlib"};
    if (!sink)
        sink = fopen("/dev/null", "w");
    if (!sink)
        abort();
    mpk_options opt = {.include_dirs = incs, .ninclude = 1, .no_env = true};
    mpk_ctx *c = mpk_ctx_new(&opt, sink);
    c->diag.max_errors = 0; /* every error path, not just the first 20 */
    mpk_load_buffer(c, "fuzz.mpk", (const char *)data, size);
    mpk_graph *g = mpk_sema(c);
    if (g && !mpk_diag_failed(&c->diag))
        mpk_graph_print(sink, g);
    mpk_ctx_free(c);
    return 0;
}

#ifdef MPK_FUZZ_MAIN
#include "replay.h"

/* The front end must stay fast on anything. */
const char fuzz_replay_name[] = "fuzz smoke";
const char *fuzz_replay_counts(void) { return ""; }

void fuzz_replay_one(const char *path, const uint8_t *data, size_t size)
{
    (void)path;
    LLVMFuzzerTestOneInput(data, size);
}
#endif
