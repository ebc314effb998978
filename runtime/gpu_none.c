/*
 * gpu_none.c - the GPU executor's entry points in an mpk-run built without
 * the CUDA toolkit (make found no nvcc, or GPU=0): each says so.
 */
#include "runtime.h"

mpk_gpu *mpk_gpu_new(const mpkb_blob *b, const void *const *weights, const mpk_gpu_opts *o, FILE *err)
{
    (void)b, (void)weights, (void)o;
    fprintf(err, "mpk-run: error: this mpk-run was built without CUDA (no nvcc when it was made); "
                 "run with --cpu for the CPU reference executor, or rebuild where nvcc is installed\n");
    return NULL;
}

double mpk_gpu_load_ms(const mpk_gpu *G, uint64_t *bytes)
{
    (void)G;
    *bytes = 0;
    return 0;
}

bool mpk_gpu_generate(mpk_gpu *G, const int32_t *prompt, uint32_t np, uint32_t ntok, const mpk_sampler *s,
                      float *logits, mpk_token_fn on_token, void *ctx, mpk_gpu_stats *st)
{
    (void)G, (void)prompt, (void)np, (void)ntok, (void)s, (void)logits, (void)on_token, (void)ctx, (void)st;
    return false;
}

void mpk_gpu_free(mpk_gpu *G) { (void)G; }
