/*
 * check_lower.c - the lowering, the blob and the CPU executor together:
 * fusion decisions, a blob that survives writing and reading, the reader
 * refusing damage, fused and unfused lowerings agreeing, and a removed
 * event edge caught by the verifier and by some executor seed.
 *
 * Weights here are random bf16 made in memory: these tests are about the
 * task graph, not the model (tests/run-parity.sh compares with HF).
 */
#include "check_mpk.h"
#include "lowering/lowering.h"
#include "runtime/runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A two-layer Qwen3 small enough to run thousands of steps in a test. */
static const char qwen_src[] =
    "import \"std/qwen3.mpk\"\n"
    "param hidden = 48, layers = 2, inter = 80, vocab = 96\n"
    "param heads = 6, kv_heads = 2, head_dim = 16, eps = 1e-6, theta = 10000.0, max_seq = 64\n"
    "weight embed_tokens : bf16[vocab, hidden] = \"model.embed_tokens.weight\"\n"
    "weight norm : bf16[hidden] = \"model.norm.weight\"\n"
    "state kv : bf16[layers, 2, kv_heads, max_seq, head_dim]\n"
    "input token : i32[1]\n"
    "input pos : i32[1]\n"
    "graph decode {\n"
    "    x = embed(embed_tokens, token)\n"
    "    for l in 0..layers { x = qwen3_block(x, l, pos) }\n"
    "    logits = matmul(rmsnorm(x, norm, eps), embed_tokens)\n"
    "    output next = argmax(logits)\n"
    "}\n";

typedef struct {
    compiled c;
    mpk_low *L;
    void *buf;
    size_t size;
    mpkb_blob b;
    void **wdata;
    const void **table;
} built;

static void build_tp(built *B, const char *src, int64_t workers, int64_t tp)
{
    memset(B, 0, sizeof *B);
    B->c = compile_src(src, NULL, 0);
    ck_assert_msg(B->c.g && !mpk_diag_failed(&B->c.c->diag), "%s", B->c.diag);
    FILE *devnull = fopen("/dev/null", "w");
    mpk_lower_opts o = {.workers = workers, .tp = tp, .dump_out = devnull};
    B->c.c->diag.out = stderr;
    B->L = mpk_lower(B->c.g, &o, &B->c.c->diag);
    fclose(devnull);
    ck_assert_ptr_nonnull(B->L);
}

static void build(built *B, const char *src, int64_t workers) { build_tp(B, src, workers, 1); }

/* Emit, read back, and bind random weights (seeded, so runs compare):
 * rank `rank`'s part of each (whole, seeded) weight. */
static void load_rank(built *B, uint32_t rank)
{
    B->buf = mpk_emit_buffer(B->L, NULL, &B->size);
    ck_assert_ptr_nonnull(B->buf);
    ck_assert(mpkb_parse(&B->b, B->buf, B->size, "test.mpkb", stderr));
    B->table = calloc(B->b.ntensors, sizeof *B->table);
    B->wdata = calloc(B->b.ntensors, sizeof *B->wdata);
    for (uint32_t i = 0; i < B->b.ntensors; i++) {
        const mpkb_tensor *t = &B->b.tensors[i];
        if (t->space != MPKB_SPACE_WEIGHT || t->base != i)
            continue;
        /* seeded by name, so that two blobs of one model get equal weights */
        uint64_t rng = 12345;
        for (const char *p = mpkb_str(&B->b, t->name); *p; p++)
            rng = (rng ^ (uint8_t)*p) * 1099511628211ull;
        uint16_t *w = malloc(t->nbytes);
        bool norm = t->ndim == 1;
        /* std 1/sqrt(fan in), but 1 for the (tied) embedding: logits that
         * are sums of small cancelling terms would turn bf16 rounding
         * noise into large relative errors and hide real ones */
        bool emb = strstr(mpkb_str(&B->b, t->name), "embed") != NULL;
        uint32_t tp = t->split ? B->b.meta->tp : 1, d = t->split ? t->split - 1u : 0;
        uint64_t inner = 1;
        for (uint32_t k = d + 1; k < t->ndim; k++)
            inner *= t->dims[k];
        uint64_t part = t->dims[d] * inner; /* elements of one part per outer index */
        uint64_t last = t->dims[t->ndim - 1] * (t->split == t->ndim ? tp : 1);
        float scale = norm ? 0.2f : emb ? 3.46f : 3.46f / sqrtf((float)last);
        for (uint64_t k = 0; k < t->nbytes / 2 * tp; k++) { /* the whole tensor, kept: this rank's part */
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            float u = (float)((rng >> 40) & 0xffffff) / 16777216.0f - 0.5f; /* [-0.5, 0.5) */
            float v = norm ? 1.0f + scale * u : u * scale;
            uint32_t bits;
            memcpy(&bits, &v, 4);
            uint64_t o = k / (part * tp), r = k / part % tp;
            if (r == (t->split ? rank : 0)) /* a whole tensor: every rank's */
                w[o * part + k % part] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
        }
        B->wdata[i] = w;
        B->table[i] = w;
    }
}

static void load(built *B) { load_rank(B, 0); }

static void unbuild(built *B)
{
    for (uint32_t i = 0; B->wdata && i < B->b.ntensors; i++)
        free(B->wdata[i]);
    free(B->wdata);
    free(B->table);
    free(B->buf);
    mpk_low_free(B->L);
    compiled_free(&B->c);
}

/* Runs steps tokens (fed back greedily from token 3); logits of every step. */
static float *run(built *B, uint64_t seed, int steps, int32_t *tokens)
{
    uint32_t v = B->b.meta->vocab;
    float *logits = malloc(sizeof *logits * v * (size_t)steps);
    const void *const *tables[1] = {B->table};
    mpk_cpu *M = mpk_cpu_new(&B->b, tables, seed, stderr);
    ck_assert_ptr_nonnull(M);
    int32_t tok = 3;
    for (int s = 0; s < steps; s++) {
        ck_assert(mpk_cpu_step(M, tok, seed != 0, NULL, &tokens[s], logits + (size_t)s * v));
        tok = tokens[s];
    }
    mpk_cpu_free(M);
    return logits;
}

static int count_tasks(const mpk_low *L, uint16_t op, uint16_t flags)
{
    int n = 0;
    for (uint32_t i = 0; i < L->ntasks; i++)
        n += L->tasks[i].op == op && (L->tasks[i].flags & flags) == flags;
    return n;
}

START_TEST(test_fusion)
{
    built B;
    build(&B, qwen_src, 4);
    /* no norm, silu, mul, add or rope is left on its own */
    for (int op = MPKB_OP_RMSNORM; op <= MPKB_OP_COPY; op++)
        ck_assert_msg(count_tasks(B.L, (uint16_t)op, 0) == 0, "a %s task was not fused", mpkb_op_name((uint32_t)op));
    ck_assert_int_gt(count_tasks(B.L, MPKB_OP_MATVEC, MPKB_F_PRO_RMSNORM), 0);
    ck_assert_int_gt(count_tasks(B.L, MPKB_OP_MATVEC, MPKB_F_PRO_SILU_MUL), 0);
    ck_assert_int_gt(count_tasks(B.L, MPKB_OP_MATVEC, MPKB_F_EPI_RESIDUAL), 0);
    ck_assert_int_gt(count_tasks(B.L, MPKB_OP_MATVEC, MPKB_F_EPI_ARGMAX), 0);
    ck_assert_int_eq(count_tasks(B.L, MPKB_OP_ARGMAX_REDUCE, 0), 1);
    /* qk-norm and rope ride in attention */
    for (uint32_t i = 0; i < B.L->ntasks; i++)
        if (B.L->tasks[i].op == MPKB_OP_ATTENTION)
            ck_assert(B.L->tasks[i].t[5] != MPKB_NONE && B.L->tasks[i].t[6] != MPKB_NONE &&
                      B.L->tasks[i].t[8] != MPKB_NONE && B.L->tasks[i].t[9] != MPKB_NONE);
    unbuild(&B);
}
END_TEST

/* Every order of ready tasks, and every placement target, gives the same
 * bits: the events order everything that matters. */
START_TEST(test_orders_agree)
{
    built A, B;
    build(&A, qwen_src, 1); /* one KV chunk: attention writes directly */
    char *chunked = malloc(sizeof qwen_src + 32);
    sprintf(chunked, "%sschedule kv_chunk = 16\n", qwen_src);
    build(&B, chunked, 40); /* several chunks and a merge */
    free(chunked);
    ck_assert_int_eq(count_tasks(A.L, MPKB_OP_ATTN_MERGE, 0), 0);
    ck_assert_int_gt(count_tasks(B.L, MPKB_OP_ATTN_MERGE, 0), 0);
    load(&A);
    load(&B);
    enum { STEPS = 12 };
    int32_t ta[STEPS], tb[STEPS];
    float *ref = run(&A, 0, STEPS, ta);
    uint32_t v = A.b.meta->vocab;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        float *l = run(&A, seed, STEPS, tb);
        ck_assert_mem_eq(ta, tb, sizeof ta);
        ck_assert_mem_eq(ref, l, sizeof *l * v * STEPS);
        free(l);
    }
    /* split KV only changes the order of fp32 sums: close, not identical */
    float *l = run(&B, 3, STEPS, tb);
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)v * STEPS; i++)
        num += (l[i] - ref[i]) * (l[i] - ref[i]), den += ref[i] * ref[i];
    ck_assert_msg(sqrt(num / den) < 1e-2, "split-KV logits differ by %g", sqrt(num / den));
    free(l);
    free(ref);
    unbuild(&A);
    unbuild(&B);
}
END_TEST

/* The same model with every intermediate made an output, so that nothing
 * fuses: the unfused task kinds must agree with the fused ones up to the
 * extra bf16 roundings of the stored intermediates. */
static const char unfused_src[] =
    "param hidden = 48, inter = 80, vocab = 96, heads = 6, kv_heads = 2, head_dim = 16\n"
    "param eps = 1e-6, max_seq = 64\n"
    "weight emb : bf16[vocab, hidden] = \"model.embed_tokens.weight\"\n"
    "weight n1 : bf16[hidden] = \"model.layers.0.input_layernorm.weight\"\n"
    "weight wq : bf16[heads * head_dim, hidden] = \"model.layers.0.self_attn.q_proj.weight\"\n"
    "weight wk : bf16[kv_heads * head_dim, hidden] = \"model.layers.0.self_attn.k_proj.weight\"\n"
    "weight wv : bf16[kv_heads * head_dim, hidden] = \"model.layers.0.self_attn.v_proj.weight\"\n"
    "weight wo : bf16[hidden, heads * head_dim] = \"model.layers.0.self_attn.o_proj.weight\"\n"
    "weight qn : bf16[head_dim] = \"model.layers.0.self_attn.q_norm.weight\"\n"
    "weight kn : bf16[head_dim] = \"model.layers.0.self_attn.k_norm.weight\"\n"
    "weight n2 : bf16[hidden] = \"model.layers.0.post_attention_layernorm.weight\"\n"
    "weight wg : bf16[inter, hidden] = \"model.layers.0.mlp.gate_proj.weight\"\n"
    "weight wu : bf16[inter, hidden] = \"model.layers.0.mlp.up_proj.weight\"\n"
    "weight wd : bf16[hidden, inter] = \"model.layers.0.mlp.down_proj.weight\"\n"
    "weight nf : bf16[hidden] = \"model.norm.weight\"\n"
    "state kv : bf16[1, 2, kv_heads, max_seq, head_dim]\n"
    "input token : i32[1]\n"
    "input pos : i32[1]\n"
    "graph decode {\n"
    "    x = embed(emb, token)\n"
    "    h = rmsnorm(x, n1, eps)\n"
    "    s1, s2 = split(matmul(h, wq), 1, [48, 48])\n"
    "    q = reshape(matmul(h, wq), [1, heads, head_dim])\n"
    "    k = reshape(matmul(h, wk), [1, kv_heads, head_dim])\n"
    "    v = reshape(matmul(h, wv), [1, kv_heads, head_dim])\n"
    "    qa = rmsnorm(q, qn, eps)\n"
    "    q = rope(qa, pos, theta = 10000.0)\n"
    "    ka = rmsnorm(k, kn, eps)\n"
    "    k = rope(ka, pos, theta = 10000.0)\n"
    "    o = attention(q, k, v, kv[0], pos)\n"
    "    a = matmul(reshape(o, [1, heads * head_dim]), wo)\n"
    "    x2 = add(x, a)\n"
    "    h2 = rmsnorm(x2, n2, eps)\n"
    "    g = silu(matmul(h2, wg))\n"
    "    m = mul(g, matmul(h2, wu))\n"
    "    d = matmul(m, wd)\n"
    "    x3 = add(x2, d)\n"
    "    hf = rmsnorm(x3, nf, eps)\n"
    "    logits = matmul(hf, emb)\n"
    "    output next = argmax(logits)\n"
    "    output o1 = h\n output o2 = qa\n output o3 = ka\n output o4 = q\n output o5 = k\n"
    "    output o6 = a\n output o7 = g\n output o8 = m\n output o9 = d\n output o10 = hf\n"
    "    output o11 = logits\n output o12 = s2\n output o13 = slice(k, 2, 0, 8)\n"
    "    output o14 = argmax(mul(logits, logits))\n"
    "}\n";

START_TEST(test_unfused_agrees)
{
    built U, F;
    build(&U, unfused_src, 3);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_RMSNORM, 0), 0);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_ROPE, 0), 0);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_ADD, 0), 0);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_MUL, 0), 0);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_SILU, 0), 0);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_ARGMAX_PART, 0), 0);
    ck_assert_int_gt(count_tasks(U.L, MPKB_OP_COPY, 0), 0);
    /* the same model without the extra outputs fuses everything */
    char *fsrc = strdup(unfused_src);
    char *cut = strstr(fsrc, "    output o1");
    strcpy(cut, "}\n");
    char *qkv = strstr(fsrc, "    s1, s2 = ");
    memmove(qkv, strchr(qkv, '\n') + 1, strlen(strchr(qkv, '\n') + 1) + 1);
    build(&F, fsrc, 3);
    free(fsrc);
    ck_assert_int_eq(count_tasks(F.L, MPKB_OP_RMSNORM, 0), 0);
    load(&U);
    load(&F);
    enum { STEPS = 10 };
    int32_t tu[STEPS], tf[STEPS];
    float *lu = run(&U, 5, STEPS, tu), *lf = run(&F, 5, STEPS, tf);
    uint32_t v = U.b.meta->vocab;
    /* compare the first step (same input token), where paths cannot diverge */
    double num = 0, den = 0;
    for (uint32_t i = 0; i < v; i++)
        num += (lu[i] - lf[i]) * (lu[i] - lf[i]), den += lf[i] * lf[i];
    ck_assert_msg(sqrt(num / den) < 1e-2, "unfused and fused logits differ by %g", sqrt(num / den));
    ck_assert_int_eq(tu[0], tf[0]);
    free(lu);
    free(lf);
    unbuild(&U);
    unbuild(&F);
}
END_TEST

/* Removes producer p from the event task t waits for: p signals the step
 * event instead, so every count still adds up and only the edge is gone. */
static void remove_edge(mpk_low *L, uint32_t t, uint32_t *p_out)
{
    uint32_t e = L->tasks[t].dep;
    for (uint32_t p = 0; p < L->ntasks; p++) {
        mpkb_task *x = &L->tasks[p];
        for (uint32_t k = 0; k < x->trig_count; k++)
            if (L->triggers[x->trig_first + k] == e && x->op == MPKB_OP_MATVEC) {
                L->triggers[x->trig_first + k] = L->meta.step_event;
                L->events[e].triggers--;
                L->events[L->meta.step_event].triggers++;
                *p_out = p;
                return;
            }
    }
    ck_abort_msg("no matvec producer for task %u", t);
}

START_TEST(test_removed_edge)
{
    built B;
    build(&B, qwen_src, 1);
    load(&B);
    enum { STEPS = 6 };
    int32_t ref_t[STEPS], t[STEPS];
    float *ref = run(&B, 0, STEPS, ref_t);
    free(B.buf);
    B.buf = NULL;
    /* the first attention task loses one of the q/k/v tiles it reads */
    uint32_t att = 0, prod = 0;
    while (B.L->tasks[att].op != MPKB_OP_ATTENTION)
        att++;
    remove_edge(B.L, att, &prod);
    mpkb_blob tg = mpk_low_view(B.L);
    char *msg = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&msg, &len);
    int bad = mpk_verify(&tg, out, 10);
    fclose(out);
    ck_assert_int_gt(bad, 0);
    char want[64];
    snprintf(want, sizeof want, "task %u (attention", att);
    ck_assert_msg(strstr(msg, want), "verifier did not name %s:\n%s", want, msg);
    snprintf(want, sizeof want, "task %u (matvec", prod);
    ck_assert_msg(strstr(msg, want), "verifier did not name %s:\n%s", want, msg);
    free(msg);
    /* the reader accepts it (counts add up); some order reads too early */
    for (uint32_t i = 0; i < B.b.ntensors; i++)
        free(B.wdata[i]);
    free(B.wdata), free(B.table);
    load(&B);
    int differ = 0;
    uint32_t v = B.b.meta->vocab;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        float *l = run(&B, seed, STEPS, t);
        differ += memcmp(l, ref, sizeof *l * v * STEPS) != 0;
        free(l);
    }
    ck_assert_msg(differ > 0, "no seed out of 20 noticed the missing edge");
    free(ref);
    unbuild(&B);
}
END_TEST

/* Write, read back, and damage: every damaged header byte is refused. */
/* Runs a tensor-parallel blob (R[r] holds rank r's weights); NULL when a
 * step fails (allowed only when !must). */
static float *run_tp(built *R, int tp, uint64_t seed, int steps, int32_t *tokens, bool must)
{
    uint32_t v = R[0].b.meta->vocab;
    float *logits = malloc(sizeof *logits * v * (size_t)steps);
    const void *const *tables[4];
    for (int r = 0; r < tp; r++)
        tables[r] = R[r].table;
    FILE *devnull = fopen("/dev/null", "w");
    mpk_cpu *M = mpk_cpu_new(&R[0].b, tables, seed, must ? stderr : devnull);
    ck_assert_ptr_nonnull(M);
    int32_t tok = 3;
    for (int s = 0; s < steps && logits; s++) {
        bool ok = mpk_cpu_step(M, tok, seed != 0, NULL, &tokens[s], logits + (size_t)s * v);
        ck_assert(ok || !must);
        if (!ok) {
            free(logits);
            logits = NULL;
        } else
            tok = tokens[s];
    }
    mpk_cpu_free(M);
    fclose(devnull);
    return logits;
}

/* --tp 2 of the test model: allreduce tasks and an argmax over both
 * ranks, the same tokens as one rank from the same whole weights, the same
 * bits under every task order; without its ALL_RANKS events the verifier
 * and some executor order notice. */
START_TEST(test_tensor_parallel)
{
    enum { STEPS = 10, TP = 2 };
    built A, R[TP];
    build(&A, qwen_src, 8);
    load(&A);
    for (uint32_t r = 0; r < TP; r++) {
        build_tp(&R[r], qwen_src, 8, TP);
        load_rank(&R[r], r);
    }
    ck_assert_uint_eq(R[0].b.meta->tp, TP);
    ck_assert_uint_eq(R[0].b.meta->vocab, A.b.meta->vocab);
    ck_assert_int_gt(count_tasks(R[0].L, MPKB_OP_ALLREDUCE, MPKB_F_EPI_RESIDUAL), 0);
    ck_assert_int_eq(count_tasks(R[0].L, MPKB_OP_ARGMAX_REDUCE, MPKB_F_ALL_RANKS), 1);
    int32_t ta[STEPS], tb[STEPS], tc[STEPS];
    uint32_t v = A.b.meta->vocab;
    float *ref = run(&A, 0, STEPS, ta);
    float *l0 = run_tp(R, TP, 0, STEPS, tb, true);
    ck_assert_mem_eq(ta, tb, sizeof ta);
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)v * STEPS; i++)
        num += (l0[i] - ref[i]) * (l0[i] - ref[i]), den += ref[i] * ref[i];
    ck_assert_msg(sqrt(num / den) < 1e-3, "tp 2 logits differ from one rank's by %g", sqrt(num / den));
    for (uint64_t seed = 1; seed <= 6; seed++) {
        float *l = run_tp(R, TP, seed, STEPS, tc, true);
        ck_assert_mem_eq(tb, tc, sizeof tb);
        ck_assert_mem_eq(l0, l, sizeof *l * v * STEPS);
        free(l);
    }
    /* drop every ALL_RANKS flag: each rank then waits for its own partials only */
    FILE *devnull = fopen("/dev/null", "w");
    mpkb_blob tg = mpk_low_view(R[0].L);
    ck_assert_int_eq(mpk_verify(&tg, devnull, 10), 0);
    for (uint32_t e = 0; e < R[0].L->nevents; e++)
        R[0].L->events[e].flags = 0;
    ck_assert_int_gt(mpk_verify(&tg, devnull, 10), 0);
    fclose(devnull);
    for (uint32_t e = 0; e < R[0].b.nevents; e++)
        ((mpkb_event *)R[0].b.events)[e].flags = 0;
    bool noticed = false;
    for (uint64_t seed = 1; seed <= 20 && !noticed; seed++) {
        float *l = run_tp(R, TP, seed, STEPS, tc, false);
        noticed = !l || memcmp(l, l0, sizeof *l * v * STEPS) != 0;
        free(l);
    }
    ck_assert_msg(noticed, "no task order of 20 shows the missing cross-rank events");
    free(ref);
    free(l0);
    unbuild(&A);
    for (int r = 0; r < TP; r++)
        unbuild(&R[r]);
}
END_TEST

START_TEST(test_blob_damage)
{
    built B;
    build(&B, qwen_src, 7);
    load(&B);
    uint8_t *copy = aligned_alloc(64, (B.size + 63) / 64 * 64);
    FILE *devnull = fopen("/dev/null", "w");
    mpkb_blob b;
    for (size_t i = 0; i < B.size; i += i < 4096 ? 1 : 97) {
        memcpy(copy, B.buf, B.size);
        copy[i] ^= 0x5a;
        bool ok = mpkb_parse(&b, copy, B.size, "x", devnull);
        /* only padding between sections can change unnoticed */
        if (ok)
            ck_assert_msg(i >= sizeof(mpkb_header) + MPKB_NBASE_SECTIONS * sizeof(mpkb_section), "byte %zu", i);
    }
    for (size_t n = 0; n < B.size; n += n < 1024 ? 1 : 211)
        ck_assert(!mpkb_parse(&b, B.buf, n, "x", devnull));
    fclose(devnull);
    free(copy);
    unbuild(&B);
}
END_TEST

/* The shared ancestor sets against plain bitsets: random adds and unions
 * of sets built from each other (as events' are), each set finished before
 * others are made from it, over sizes that need 0 to 2 inner levels. */
START_TEST(test_ancset)
{
    static const uint32_t sizes[] = {100, 4096, 5000, 300000};
    for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
        uint32_t n = sizes[z], nsets = 60;
        size_t words = (n + 63) / 64;
        mpk_anc *A = mpk_anc_new(n);
        mpk_aset *set = calloc(nsets, sizeof *set);
        uint64_t *ref = calloc(nsets * words, sizeof *ref);
        uint64_t seed = 12345 + z;
        for (uint32_t s = 0; s < nsets; s++) {
            uint64_t *r = ref + s * words;
            /* unions with earlier sets, a dense run, then scattered adds */
            for (int u = 0; u < 3 && s > 0; u++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                uint32_t o = (uint32_t)(seed >> 33) % s;
                set[s] = mpk_anc_union(A, set[s], set[o], s);
                for (size_t w = 0; w < words; w++)
                    r[w] |= ref[o * words + w];
            }
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t lo = (uint32_t)(seed >> 33) % n, len = (uint32_t)(seed >> 13) % (n / 2 + 1);
            for (uint32_t t = lo; t < lo + len && t < n; t++) {
                set[s] = mpk_anc_add(A, set[s], t, s);
                r[t / 64] |= 1ull << (t % 64);
            }
            for (int k = 0; k < 50; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                uint32_t t = (uint32_t)(seed >> 33) % n;
                set[s] = mpk_anc_add(A, set[s], t, s);
                r[t / 64] |= 1ull << (t % 64);
            }
        }
        for (uint32_t s = 0; s < nsets; s++)
            for (uint32_t t = 0; t < n; t++)
                ck_assert_msg(mpk_anc_has(A, set[s], t) == ((ref[s * words + t / 64] >> (t % 64)) & 1),
                              "size %u, set %u, task %u", n, s, t);
        /* a set of every task is the shared full tree: a few nodes, not n bits */
        mpk_aset all = 0;
        for (uint32_t t = 0; t < n; t++)
            all = mpk_anc_add(A, all, t, nsets);
        ck_assert(mpk_anc_has(A, all, 0) && mpk_anc_has(A, all, n - 1));
        free(set);
        free(ref);
        mpk_anc_free(A);
    }
}
END_TEST

Suite *make_lower_suite(void)
{
    Suite *s = suite_create("lower");
    TCase *tc = tcase_create("lower");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fusion);
    tcase_add_test(tc, test_orders_agree);
    tcase_add_test(tc, test_unfused_agrees);
    tcase_add_test(tc, test_removed_edge);
    tcase_add_test(tc, test_tensor_parallel);
    tcase_add_test(tc, test_blob_damage);
    tcase_add_test(tc, test_ancset);
    suite_add_tcase(s, tc);
    return s;
}
