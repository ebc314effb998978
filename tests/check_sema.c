/*
 * check_sema.c - names, params, expansion and shape checking, from whole
 * (tiny) models down to single ops.
 */
#include "check_mpk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A tiny Qwen3 through the stdlib; %s is spliced into the params. */
static const char tiny_qwen3[] =
    "import \"std/qwen3.mpk\"\n"
    "param hidden = 64, layers = 3, heads = 4, kv_heads = 2, head_dim = 16\n"
    "param inter = 96, vocab = 100, max_seq = 32, eps = 1e-6, theta = 10000.0\n"
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

/* A one-op model around a graph body: inputs a f32[2,8], b f32[2,8],
 * w f32[6,8], ids i32[2], p i32[2], c f32[4,8], kv f32[2,2,16,4]. */
static compiled graph_of(const char *body)
{
    char *src;
    int n = asprintf(&src,
                     "weight w : f32[6, 8] = \"w\"\n"
                     "weight c : f32[4, 8] = \"c\"\n"
                     "weight n8 : f32[8] = \"n8\"\n"
                     "state kv : f32[2, 2, 16, 4]\n"
                     "input a : f32[2, 8]\ninput b : f32[2, 8]\n"
                     "input ids : i32[2]\ninput p : i32[2]\n"
                     "graph g {\n%s\n}\n",
                     body);
    ck_assert_int_gt(n, 0);
    compiled r = compile_src(src, NULL, 0);
    free(src);
    return r;
}

/* A source that must fail, and a piece of the message it must give. */
typedef struct {
    const char *src, *want;
} error_case;

static void expect_errors(const error_case *cases, size_t n, compiled (*compile)(const char *))
{
    for (size_t i = 0; i < n; i++) {
        compiled r = compile(cases[i].src);
        ck_assert_msg(r.c->diag.errors > 0, "no error for: %s", cases[i].src);
        ck_assert_msg(strstr(r.diag, cases[i].want), "for '%s' expected \"%s\" in:\n%s",
                      cases[i].src, cases[i].want, r.diag);
        compiled_free(&r);
    }
}

static compiled whole(const char *src)
{
    return compile_src(src, NULL, 0);
}

static const mpk_tensor *output_of(const compiled *r, int i)
{
    ck_assert_int_gt(r->g->outputs.n, i);
    return ((mpk_output *)r->g->outputs.items[i])->t;
}

static void assert_shape(const mpk_tensor *t, mpk_dtype dt, int ndim, const int64_t *dims)
{
    ck_assert_int_eq(t->dtype, dt);
    ck_assert_int_eq(t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        ck_assert_int_eq(t->dims[i], dims[i]);
}

START_TEST(tiny_qwen3_expands)
{
    compiled r = compile_src(tiny_qwen3, NULL, 0);
    ck_assert_msg(r.c->diag.errors == 0 && r.c->diag.warnings == 0, "%s", r.diag);
    ck_assert_ptr_nonnull(r.g);
    /* per layer: 7 matmuls, 4 rmsnorms, 2 ropes, 1 attention; plus the head */
    ck_assert_int_eq(count_op(r.g, MPK_OP_MATMUL), 3 * 7 + 1);
    ck_assert_int_eq(count_op(r.g, MPK_OP_RMSNORM), 3 * 4 + 1);
    ck_assert_int_eq(count_op(r.g, MPK_OP_ROPE), 3 * 2);
    ck_assert_int_eq(count_op(r.g, MPK_OP_ATTENTION), 3);
    ck_assert_int_eq(count_op(r.g, MPK_OP_ARGMAX), 1);
    int weights = 0;
    for (int i = 0; i < r.g->tensors.n; i++)
        weights += ((mpk_tensor *)r.g->tensors.items[i])->kind == MPK_T_WEIGHT;
    ck_assert_int_eq(weights, 3 * 11 + 2); /* tied: no lm_head */
    const mpk_tensor *next = output_of(&r, 0);
    int64_t d[] = {1};
    assert_shape(next, MPK_DT_I32, 1, d);
    /* the layer index reached the weight names */
    bool found = false;
    for (int i = 0; i < r.g->tensors.n; i++) {
        mpk_tensor *t = r.g->tensors.items[i];
        if (t->kind == MPK_T_WEIGHT && strcmp(t->name, "model.layers.2.self_attn.k_norm.weight") == 0) {
            int64_t kd[] = {16};
            assert_shape(t, MPK_DT_BF16, 1, kd);
            found = true;
        }
    }
    ck_assert(found);
    compiled_free(&r);
}
END_TEST

START_TEST(every_example_node_is_in_topological_order)
{
    compiled r = compile_src(tiny_qwen3, NULL, 0);
    ck_assert_int_eq(r.c->diag.errors, 0);
    for (int i = 0; i < r.g->nodes.n; i++) {
        mpk_node *n = r.g->nodes.items[i];
        for (int j = 0; j < n->nin; j++)
            if (n->in[j]->producer)
                ck_assert_int_lt(n->in[j]->producer->id, n->id);
    }
    compiled_free(&r);
}
END_TEST

START_TEST(defines_override_params)
{
    const char *defs[] = {"layers=5", "theta=5e5"};
    compiled r = compile_src(tiny_qwen3, defs, 2);
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    ck_assert_int_eq(count_op(r.g, MPK_OP_ATTENTION), 5);
    for (int i = 0; i < r.g->nodes.n; i++) {
        mpk_node *n = r.g->nodes.items[i];
        if (n->op == MPK_OP_ROPE)
            ck_assert(n->attrs[0].f == 5e5);
    }
    /* a derived param sees the override: kv's first dim follows layers */
    for (int i = 0; i < r.g->tensors.n; i++) {
        mpk_tensor *t = r.g->tensors.items[i];
        if (t->kind == MPK_T_STATE)
            ck_assert_int_eq(t->dims[0], 5);
    }
    compiled_free(&r);
}
END_TEST

START_TEST(define_errors)
{
    const char *unknown[] = {"nosuch=3"};
    compiled r = compile_src(tiny_qwen3, unknown, 1);
    ck_assert_diag_has(r, "mpk: error: -D nosuch=3: the model has no param 'nosuch'");
    compiled_free(&r);
    const char *kind[] = {"layers=many"};
    r = compile_src(tiny_qwen3, kind, 1);
    ck_assert_diag_has(r, "-D layers=many: param 'layers' is an int, not a string");
    compiled_free(&r);
    const char *noeq[] = {"layers"};
    r = compile_src(tiny_qwen3, noeq, 1);
    ck_assert_diag_has(r, "-D layers: expected name=value");
    compiled_free(&r);
    const char *notparam[] = {"norm=1"};
    r = compile_src(tiny_qwen3, notparam, 1);
    ck_assert_diag_has(r, "'norm' is a weight, not a param");
    compiled_free(&r);
}
END_TEST

START_TEST(param_arithmetic)
{
    compiled r = compile_src("param a = 7 / 2, b = 7 % 3, c = 7.0 / 2, d = -a * 3\n"
                             "param s = \"ab\" + \"cd\", e = (a + 1) * (b - 3)\n"
                             "param f = c + a\n",
                             NULL, 0);
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    ck_assert_ptr_null(r.g); /* no graph: a library */
    compiled_free(&r);
    r = compile_src("param a = 9223372036854775807 + 1\n", NULL, 0);
    ck_assert_diag_has(r, "integer overflow in '+'");
    compiled_free(&r);
    r = compile_src("param a = 1 / (2 - 2)\n", NULL, 0);
    ck_assert_diag_has(r, "t.mpk:1:16: error: division by zero");
    compiled_free(&r);
    r = compile_src("param a = b + 1, b = a\n", NULL, 0);
    ck_assert_diag_has(r, "is defined in terms of itself");
    compiled_free(&r);
    r = compile_src("param a = 1e308 * 10\n", NULL, 0);
    ck_assert_diag_has(r, "floating-point overflow in '*'");
    compiled_free(&r);
    r = compile_src("param a = \"x\" * 2\n", NULL, 0);
    ck_assert_diag_has(r, "operand of '*' is a string; expected a number");
    compiled_free(&r);
}
END_TEST

START_TEST(op_shapes)
{
    compiled r = graph_of("x = matmul(a, w)\n"
                          "y = rmsnorm(a, n8, 1e-5)\n"
                          "e = embed(c, ids)\n"
                          "s = silu(add(a, mul(a, b)))\n"
                          "h = reshape(a, [2, 2, 4])\n"
                          "r = rope(h, p, theta = 1e4)\n"
                          "u, v = split(a, 1, [3, 5])\n"
                          "t = slice(a, -1, 2, 6)\n"
                          "m = argmax(a)\n"
                          "k = reshape(a, [2, -1, 2])\n"
                          "z = allreduce(a)\n"
                          "output x\noutput y\noutput e\noutput s\noutput r\noutput u\noutput v\n"
                          "output t\noutput m\noutput k\noutput z\n");
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    int64_t x[] = {2, 6}, y[] = {2, 8}, rr[] = {2, 2, 4}, u[] = {2, 3}, v[] = {2, 5},
            t[] = {2, 4}, m[] = {2}, k[] = {2, 4, 2};
    assert_shape(output_of(&r, 0), MPK_DT_F32, 2, x);
    assert_shape(output_of(&r, 1), MPK_DT_F32, 2, y);
    assert_shape(output_of(&r, 2), MPK_DT_F32, 2, y);
    assert_shape(output_of(&r, 3), MPK_DT_F32, 2, y);
    assert_shape(output_of(&r, 4), MPK_DT_F32, 3, rr);
    assert_shape(output_of(&r, 5), MPK_DT_F32, 2, u);
    assert_shape(output_of(&r, 6), MPK_DT_F32, 2, v);
    assert_shape(output_of(&r, 7), MPK_DT_F32, 2, t);
    assert_shape(output_of(&r, 8), MPK_DT_I32, 1, m);
    assert_shape(output_of(&r, 9), MPK_DT_F32, 3, k);
    ck_assert_int_eq(output_of(&r, 5)->kind, MPK_T_VIEW);
    compiled_free(&r);
}
END_TEST

START_TEST(attention_gqa)
{
    compiled r = graph_of("q = reshape(matmul(a, w), [2, 6, 1])\n"
                          "x = reshape(a, [2, 2, 4])\n"
                          "o = attention(x, x, x, kv, p)\n"
                          "output o\n"
                          "output q\n");
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    const mpk_node *att = output_of(&r, 0)->producer;
    ck_assert_int_eq(att->op, MPK_OP_ATTENTION);
    ck_assert(att->attrs[0].f == 0.5); /* 1/sqrt(head_dim = 4) */
    compiled_free(&r);
    /* 3 query heads over 2 kv heads cannot be grouped */
    r = graph_of("weight w12 : f32[12, 8] = \"w12\"\n"
                 "q = reshape(matmul(a, w12), [2, 3, 4])\n"
                 "k = reshape(a, [2, 2, 4])\n"
                 "output o = attention(q, k, k, kv, p)\n");
    ck_assert_diag_has(r, "3 query heads cannot be grouped over 2 kv heads");
    compiled_free(&r);
}
END_TEST

START_TEST(op_errors)
{
    static const error_case cases[] = {
        {"output o = matmul(reshape(a, [4, 4]), w)", "a weight is [out, in], so its last dimension must be 4"},
        {"output o = add(a, w)", "add: shapes differ: f32[2, 8] and f32[6, 8]"},
        {"output o = embed(c, a)", "token ids must be i32[n], not f32[2, 8]"},
        {"output o = rmsnorm(a, w)", "the weight must be f32[8]"},
        {"output o = rmsnorm(a, n8, eps = -1)", "'eps' must be positive"},
        {"output o = reshape(a, [3, 5])", "cannot reshape f32[2, 8] (16 elements) to [3, 5]"},
        {"x, y = split(a, 1, [3, 4])\noutput x\noutput y", "add up to 7, but dimension 1"},
        {"output o = slice(a, 2, 0, 1)", "dimension 2 is out of range"},
        {"output o = slice(a, 1, 5, 5)", "is empty or out of range"},
        {"output o = rope(reshape(a, [2, 2, 4]), p, scaling = \"yarn\")", "unknown scaling \"yarn\""},
        {"output o = rope(reshape(a, [2, 4, 2]), ids, scaling = \"llama3\", low_freq_factor = 4)",
         "must exceed low_freq_factor"},
        {"output o = rope(a, p)", "expected a tensor of shape [n, heads, head_dim]"},
        {"output o = argmax(ids)", "expected a floating-point tensor"},
        {"output o = matmul(a)", "matmul takes 2 tensor operands, but 1 is given"},
        {"output o = matmul(a, w, 3)", "one too many"},
        {"output o = matmul(a, w, tile = 3)", "matmul has no attribute 'tile'"},
        {"output o = slice(a, 1, 0)", "slice: missing attribute 'end'"},
        {"output o = slice(a, 1.5, 0, 2)", "'dim' must be an int, not a float"},
        {"output o = reshape(a, [2, \"x\"])", "must be a list of ints, but item 1 is a string"},
        {"output o = silu(3)", "operand 1 must be a tensor, not an int"},
        {"output o = a + b", "'+' works on constants; for tensors use add(a, b)"},
        {"output o = kv[2]", "index 2 is out of range"},
        {"output o = ids[0]", "it has one dimension"},
        {"output o = allreduce(a, \"max\")", "unknown reduction \"max\""},
        {"output o = matmul(a, w) with tile = 0", "hint 'tile' must be a positive int"},
        {"output o = add(a, b) with tile = 4", "no schedule hint 'tile' for add"},
        {"x = a with tile = 4\noutput o = x", "schedule hints apply to a call of a primitive op"},
        {"output o = matmull(a, w)", "unknown op or block 'matmull'; did you mean 'matmul'?"},
        {"output o = silu(aa)", "'aa' is not defined; did you mean 'a'?"},
        {"x = silu(a)\noutput o = x\noutput o = x", "output 'o' is defined twice"},
        {"x, y = silu(a)\noutput x", "this gives 1 value, but 2 names are assigned"},
        {"for i in 0..2 { i = silu(a) }\noutput o = a", "cannot assign to loop variable 'i'"},
        {"for i in 0..2000000 { }\noutput o = a", "the limit is 1048576 iterations"},
        {"for i in -9223372036854775807..9223372036854775807 { }\noutput o = a",
         "the loop runs from -9223372036854775807 to 9223372036854775807"},
        {"return a", "'return' outside of a block"},
    };
    expect_errors(cases, sizeof cases / sizeof cases[0], graph_of);
}
END_TEST

START_TEST(tied_and_conflicting_weights)
{
    compiled r = compile_src("input t : i32[1]\n"
                             "block head(x) {\n"
                             "  weight e : bf16[10, 4] = \"model.embed\"\n"
                             "  return matmul(x, e)\n"
                             "}\n"
                             "graph g {\n"
                             "  weight e : bf16[10, 4] = \"model.embed\"\n"
                             "  output o = head(embed(e, t))\n"
                             "}\n",
                             NULL, 0);
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    int weights = 0;
    for (int i = 0; i < r.g->tensors.n; i++)
        weights += ((mpk_tensor *)r.g->tensors.items[i])->kind == MPK_T_WEIGHT;
    ck_assert_int_eq(weights, 1);
    compiled_free(&r);
    r = compile_src("weight a : bf16[10, 4] = \"x\"\nweight b : bf16[4, 10] = \"x\"\n", NULL, 0);
    ck_assert_diag_has(r, "weight 'x' declared as bf16[4, 10] here but as bf16[10, 4] before");
    ck_assert_diag_has(r, "note: 'x' first declared here");
    compiled_free(&r);
}
END_TEST

START_TEST(templates)
{
    compiled r = compile_src("param pre = \"model\"\n"
                             "input t : i32[1]\n"
                             "block f(x, l) {\n"
                             "  weight w : bf16[4, 4] = \"{pre}.layers.{l}.w{{0}}\"\n"
                             "  return matmul(x, w)\n"
                             "}\n"
                             "weight e : bf16[10, 4] = \"e\"\n"
                             "graph g { x = embed(e, t)\n for l in 2..4 { x = f(x, l) }\n output o = x }\n",
                             NULL, 0);
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    bool seen = false;
    for (int i = 0; i < r.g->tensors.n; i++) {
        mpk_tensor *t = r.g->tensors.items[i];
        seen |= t->name && strcmp(t->name, "model.layers.3.w{0}") == 0;
    }
    ck_assert(seen);
    compiled_free(&r);
    r = compile_src("weight w : bf16[4] = \"a.{nope}.b\"\n", NULL, 0);
    ck_assert_diag_has(r, "'nope' is not defined");
    compiled_free(&r);
    r = compile_src("param x = 1.5\nweight w : bf16[4] = \"a.{x}\"\n", NULL, 0);
    ck_assert_diag_has(r, "'{x}' in weight name is a float");
    compiled_free(&r);
    r = compile_src("weight w : bf16[4] = \"a.{x\"\n", NULL, 0);
    ck_assert_diag_has(r, "unclosed '{' in weight name");
    compiled_free(&r);
}
END_TEST

START_TEST(blocks)
{
    static const error_case cases[] = {
        {"block f(x) { return f(x) }\ninput t : i32[1]\ngraph g { output o = f(t) }", "block 'f' calls itself"},
        {"block f(x) { y = x }\ngraph g { }", "block 'f' does not end with 'return'"},
        {"block f(x) { return x\n y = x }\ngraph g { }", "'return' must be the last statement"},
        {"block f(x) { return x }\ninput t : i32[1]\ngraph g { output o = f(t, t) }", "too many arguments to block 'f'"},
        {"block f(x, y) { return x }\ninput t : i32[1]\ngraph g { output o = f(t) }", "missing argument 'y'"},
        {"block f(x) { return x }\ninput t : i32[1]\ngraph g { output o = f(t, z = t) }", "block 'f' has no parameter 'z'"},
        {"block matmul(x) { return x }\ngraph g { }", "has the name of a primitive op"},
        {"block f(x, x) { return x }\ngraph g { }", "parameter 'x' declared twice"},
        {"param a = 1\nparam a = 2", "'a' is already declared"},
        {"graph g { }\ngraph h { }", "a model has one graph, but here is a second"},
        {"graph g { x = 1 }", "graph 'g' has no output"},
        {"block f(x) { return x }\ninput t : i32[1]\ngraph g { x = f(t) with tile = 2\n output o = x }",
         "schedule hints apply to primitive ops, not to block 'f'"},
        {"schedule workers = 0", "must be an int from 1 to 1048576, not 0"},
        {"schedule threads = 4", "unknown schedule hint 'threads'"},
        {"param a = silu(1)", "ops and blocks can be called only inside a graph or a block"},
        {"weight w : bf16[0, 4] = \"w\"", "a dimension must be positive"},
        {"weight w : bf42[4] = \"w\"", "unknown dtype 'bf42'"},
        {"weight w : bf16[1048576, 1048576, 1048576] = \"w\"", "tensor is too large"},
    };
    expect_errors(cases, sizeof cases / sizeof cases[0], whole);
}
END_TEST

START_TEST(block_keywords_defaults_and_tuples)
{
    compiled r = compile_src("input t : i32[1]\nweight e : f32[10, 4] = \"e\"\n"
                             "block f(x, n = 2, m = 1) {\n"
                             "  a, b = split(x, 1, [n, 4 - n])\n"
                             "  return b, a\n"
                             "}\n"
                             "graph g { p, q = f(embed(e, t), m = 5, n = 1)\n output p\n output q }\n",
                             NULL, 0);
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    ck_assert_diag_has(r, "parameter 'm' of block 'f' is never used");
    int64_t p[] = {1, 3}, q[] = {1, 1};
    assert_shape(output_of(&r, 0), MPK_DT_F32, 2, p);
    assert_shape(output_of(&r, 1), MPK_DT_F32, 2, q);
    compiled_free(&r);
}
END_TEST

START_TEST(errors_in_blocks_carry_the_expansion_chain)
{
    const char *defs[] = {"head_dim=15"}; /* odd: rope must refuse it */
    compiled r = compile_src(tiny_qwen3, defs, 1);
    ck_assert_int_gt(r.c->diag.errors, 0);
    ck_assert_diag_has(r, "head_dim must be even");
    ck_assert_diag_has(r, "note: in expansion of block 'qwen3_block'");
    ck_assert_diag_has(r, "note: in iteration l = 0");
    /* reported once for q and once for k, not once per layer */
    const char *first = strstr(r.diag, "head_dim must be even");
    const char *second = strstr(first + 1, "head_dim must be even");
    ck_assert_ptr_nonnull(second);
    ck_assert_ptr_null(strstr(second + 1, "head_dim must be even"));
    ck_assert_int_eq(r.c->diag.shown_errors, 2);
    compiled_free(&r);
}
END_TEST

START_TEST(warnings)
{
    compiled r = compile_src("param unused = 3\n"
                             "weight w : f32[4, 4] = \"w\"\n"
                             "input t : i32[1]\n"
                             "weight e : f32[10, 4] = \"e\"\n"
                             "block f(x) { return x }\n"
                             "graph g {\n"
                             "  x = embed(e, t)\n"
                             "  y = silu(x)\n"
                             "  y = silu(x)\n"
                             "  w = x\n"
                             "  output o = y\n"
                             "}\n",
                             NULL, 0);
    ck_assert_msg(r.c->diag.errors == 0, "%s", r.diag);
    ck_assert_diag_has(r, "t.mpk:1:7: warning: param 'unused' is never used");
    ck_assert_diag_has(r, "t.mpk:5:7: warning: block 'f' is never used");
    ck_assert_diag_has(r, "t.mpk:8:3: warning: value assigned to 'y' is never used");
    ck_assert_diag_has(r, "t.mpk:10:3: warning: 'w' shadows the global weight of the same name");
    ck_assert_diag_has(r, "t.mpk:10:3: warning: value assigned to 'w' is never used");
    ck_assert_diag_has(r, "t.mpk:2:8: warning: weight 'w' is never used");
    ck_assert_int_eq(r.c->diag.warnings, 6);
    compiled_free(&r);
}
END_TEST

START_TEST(budget_stops_explosive_models)
{
    compiled r = compile_src("input t : i32[1]\nweight e : f32[10, 4] = \"e\"\n"
                             "graph g {\n x = embed(e, t)\n"
                             " for i in 0..1000000 { for j in 0..1000000 { x = silu(x) } }\n"
                             " output o = x\n}\n",
                             NULL, 0);
    ck_assert_diag_has(r, "the model expands to too many operations");
    compiled_free(&r);
}
END_TEST

START_TEST(imports)
{
    char dir[] = "/tmp/mpk-check-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], sub[256];
    snprintf(sub, sizeof sub, "%s/lib", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/lib/a.mpk", dir);
    FILE *f = fopen(path, "w");
    fputs("import \"lib/a.mpk\"\nblock twice(x) { return add(x, x) }\n", f); /* imports itself */
    fclose(f);
    snprintf(path, sizeof path, "%s/lib/bad.mpk", dir);
    f = fopen(path, "w");
    fputs("block broken(x) { return x +* }\n", f);
    fclose(f);

    const char *incs[] = {dir};
    mpk_options opt = {.include_dirs = incs, .ninclude = 1, .no_env = true};
    char *out = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&out, &len);
    mpk_ctx *c = mpk_ctx_new(&opt, o);
    const char src[] = "import \"lib/a.mpk\"\nimport \"lib/a.mpk\"\nimport \"lib/bad.mpk\"\n"
                       "import \"lib/none.mpk\"\n";
    mpk_load_buffer(c, "m.mpk", src, sizeof src - 1);
    fclose(o);
    ck_assert_int_eq(c->diag.errors, 2);
    ck_assert_msg(strstr(out, "m.mpk:4:8: error: cannot find 'lib/none.mpk'"), "%s", out);
    ck_assert_msg(strstr(out, "note: searched"), "%s", out);
    ck_assert_msg(strstr(out, "/lib/bad.mpk:1:29: error: syntax error"), "%s", out);
    ck_assert_msg(strstr(out, "m.mpk:3:8: note: 'lib/bad.mpk' imported from here") ||
                  strstr(out, "note: '"), "%s", out);
    mpk_ctx_free(c);
    free(out);

    snprintf(path, sizeof path, "%s/lib/a.mpk", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lib/bad.mpk", dir);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
}
END_TEST

START_TEST(import_refuses_what_is_not_a_file)
{
    compiled r = compile_src("import \"/dev/zero\"\nimport \"/tmp\"\n", NULL, 0);
    ck_assert_int_eq(r.c->diag.errors, 2);
    ck_assert_diag_has(r, "cannot import '/dev/zero': not a readable file");
    compiled_free(&r);
    /* a missing import stops before sema: no cascade of unknown names */
    r = compile_src("import \"std/nosuch.mpk\"\ninput t : i32[1]\ngraph g { output o = mine(t) }\n",
                    NULL, 0);
    ck_assert_int_eq(r.c->diag.errors, 1);
    ck_assert_diag_has(r, "cannot find 'std/nosuch.mpk'");
    ck_assert_ptr_null(r.g);
    compiled_free(&r);
}
END_TEST

Suite *make_sema_suite(void)
{
    Suite *s = suite_create("sema");
    TCase *models = tcase_create("models");
    tcase_add_test(models, tiny_qwen3_expands);
    tcase_add_test(models, every_example_node_is_in_topological_order);
    tcase_add_test(models, defines_override_params);
    tcase_add_test(models, define_errors);
    tcase_add_test(models, errors_in_blocks_carry_the_expansion_chain);
    suite_add_tcase(s, models);
    TCase *ops = tcase_create("ops");
    tcase_add_test(ops, op_shapes);
    tcase_add_test(ops, attention_gqa);
    tcase_add_test(ops, op_errors);
    suite_add_tcase(s, ops);
    TCase *names = tcase_create("names");
    tcase_add_test(names, param_arithmetic);
    tcase_add_test(names, tied_and_conflicting_weights);
    tcase_add_test(names, templates);
    tcase_add_test(names, blocks);
    tcase_add_test(names, block_keywords_defaults_and_tuples);
    tcase_add_test(names, warnings);
    tcase_add_test(names, budget_stops_explosive_models);
    tcase_add_test(names, imports);
    tcase_add_test(names, import_refuses_what_is_not_a_file);
    suite_add_tcase(s, names);
    return s;
}
