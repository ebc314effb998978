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
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

static int ninputs;
static double worst_ms;
static char worst[512];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    double t0 = now_ms();
    LLVMFuzzerTestOneInput(buf, n);
    double ms = now_ms() - t0;
    if (ms > worst_ms) {
        worst_ms = ms;
        snprintf(worst, sizeof worst, "%s", path);
    }
    ninputs++;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            run_file(argv[i]);
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, alphasort);
        for (int j = 0; j < n; j++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[j]->d_name);
            struct stat st;
            if (names[j]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
                run_file(path);
            free(names[j]);
        }
        free(names);
        closedir(d);
    }
    /* A slow input is a bug too: the front end must stay fast on anything. */
    printf("fuzz smoke: %d inputs, 0 crashes, slowest %.1f ms (%s)\n", ninputs, worst_ms, worst);
    if (worst_ms > 5000) {
        fprintf(stderr, "fuzz smoke: %s took %.0f ms; the limit is 5000\n", worst, worst_ms);
        return 1;
    }
    return 0;
}
#endif
