/*
 * replay.c - the main of the fuzz targets' replayers (replay.h).
 */
#include "replay.h"

#include "mpk/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SLOW_MS 5000

static int ninputs;
static double worst_ms;
static char worst[512];

/* The file, whole, in a malloc'd buffer with a NUL after it; exits 1 when
 * it cannot be read. */
static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    size_t cap = 0, n = 0;
    uint8_t *buf = NULL;
    for (size_t k;;) {
        buf = mpk_grow(buf, &cap, n + (1 << 16) + 1, 1);
        if ((k = fread(buf + n, 1, cap - 1 - n, f)) == 0)
            break;
        n += k;
    }
    if (ferror(f)) {
        fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
        exit(1);
    }
    fclose(f);
    buf[n] = 0;
    *size = n;
    return buf;
}

static void run_file(const char *path)
{
    size_t n;
    uint8_t *buf = read_file(path, &n);
    double t0 = mpk_now_ms();
    fuzz_replay_one(path, buf, n);
    double ms = mpk_now_ms() - t0;
    if (ms > worst_ms) {
        worst_ms = ms;
        snprintf(worst, sizeof worst, "%s", path);
    }
    free(buf);
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
    printf("%s: %d inputs%s, 0 crashes, slowest %.1f ms (%s)\n", fuzz_replay_name, ninputs,
           fuzz_replay_counts(), worst_ms, worst);
    if (worst_ms > SLOW_MS) {
        fprintf(stderr, "%s: %s took %.0f ms; the limit is %d\n", fuzz_replay_name, worst, worst_ms, SLOW_MS);
        return 1;
    }
    return 0;
}
