/*
 * logits_cmp.c - compare a row of mpk-run's --dump-logits against a
 * reference row (both raw little-endian float32), for tests/run-parity.sh.
 *
 *   logits_cmp GOT.f32 GOT_ROW REF.f32 REF_ROW VOCAB TOL
 *
 * Prints the relative L2 error ||got - ref|| / ||ref|| and exits 0 if it is
 * at most TOL, 1 if not, 2 on bad usage or unreadable files.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float *row(const char *path, long r, long n)
{
    FILE *f = fopen(path, "rb");
    float *v = malloc(sizeof *v * (size_t)n);
    if (!f || !v || fseek(f, r * n * (long)sizeof *v, SEEK_SET) != 0 ||
        fread(v, sizeof *v, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "logits_cmp: cannot read row %ld of %ld floats from %s\n", r, n, path);
        exit(2);
    }
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: logits_cmp GOT.f32 GOT_ROW REF.f32 REF_ROW VOCAB TOL\n");
        return 2;
    }
    long n = atol(argv[5]);
    double tol = atof(argv[6]);
    if (n <= 0) {
        fprintf(stderr, "logits_cmp: bad vocab size '%s'\n", argv[5]);
        return 2;
    }
    float *a = row(argv[1], atol(argv[2]), n), *b = row(argv[3], atol(argv[4]), n);
    double num = 0, den = 0;
    for (long i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("%.3e\n", rel);
    free(a);
    free(b);
    return isfinite(rel) && rel <= tol ? 0 : 1;
}
