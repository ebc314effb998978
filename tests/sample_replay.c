/*
 * sample_replay.c - check an executor's sampled tokens against the
 * sampler's definition, on the logits it dumped:
 *
 *   sample_replay LOGITS.f32 VOCAB NPROMPT TOKENS T K P MINP SEED [ROW0]
 *
 * LOGITS.f32 is mpk-run --dump-logits's file (one row of VOCAB floats per
 * step), TOKENS the generated ids (as mpk-run prints them, one argument),
 * T K P MINP SEED the sampler. The j-th generated token (from 0) must be
 * mpk_sample of row NPROMPT - 1 + j with that row's step as the counter:
 * what mpk/sample.h says any executor, CPU or GPU, draws from those logits.
 * ROW0 (default 0) is the position of the file's first row: NPROMPT - 1
 * for a prompt run in chunk steps, whose dump starts at its last token.
 * Prints each token that differs; exit 0 when none does, 1 when one does,
 * 2 on bad arguments or a short file.
 */
#include "runtime/runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(const char *what)
{
    fprintf(stderr, "sample_replay: %s\n", what);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc != 10 && argc != 11)
        return bad("usage: sample_replay LOGITS.f32 VOCAB NPROMPT TOKENS T K P MINP SEED [ROW0]");
    uint32_t row0 = argc == 11 ? (uint32_t)strtoul(argv[10], NULL, 10) : 0;
    FILE *f = fopen(argv[1], "rb");
    if (!f)
        return bad(strerror(errno));
    uint32_t vocab = (uint32_t)strtoul(argv[2], NULL, 10), np = (uint32_t)strtoul(argv[3], NULL, 10);
    mpk_sampler s = {.temperature = strtof(argv[5], NULL), .top_k = (int32_t)strtol(argv[6], NULL, 10),
                     .top_p = strtof(argv[7], NULL), .min_p = strtof(argv[8], NULL),
                     .seed = strtoull(argv[9], NULL, 10)};
    if (vocab == 0 || np == 0 || row0 > np - 1)
        return bad("VOCAB and NPROMPT must be positive, and ROW0 at most NPROMPT - 1");
    float *row = malloc(sizeof *row * vocab);
    void *scratch = malloc(mpk_sample_scratch(vocab));
    if (!row || !scratch)
        return bad("out of memory");
    /* skip the rows before the last prompt step */
    if (fseek(f, (long)((np - 1 - row0) * (uint64_t)vocab * sizeof *row), SEEK_SET) != 0)
        return bad("the logits file is too short");
    int status = 0, j = 0;
    for (char *p = argv[4], *end; *p; p = end, j++) {
        long tok = strtol(p, &end, 10);
        if (end == p)
            break;
        if (fread(row, sizeof *row, vocab, f) != vocab)
            return bad("the logits file is too short for the tokens");
        uint32_t step = np - 1 + (uint32_t)j;
        int32_t want = mpk_sample(row, vocab, &s, step, scratch);
        if (want != tok) {
            printf("token %d (step %u): %ld, but the sampler draws %d from the logits\n", j, step, tok, want);
            status = 1;
        }
    }
    if (j == 0)
        return bad("no tokens");
    fclose(f);
    free(row);
    free(scratch);
    return status;
}
