/*
 * graph.c - the typed graph as text (mpk build --emit=graph).
 *
 * One line per declaration and per node, in the graph's topological order:
 *
 *   %12 : bf16[1, 2048] = matmul(%11, @model.layers.0.self_attn.q_proj.weight)
 *
 * Activations and views are %N (their tensor id), weights @NAME (the HF
 * name), inputs and states by their declared name. Every attribute is
 * printed, defaults included, so the text says exactly what lowering gets.
 */
#include "frontend.h"

#include <string.h>

static void print_type(FILE *out, const mpk_tensor *t)
{
    fprintf(out, "%s[", mpk_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim; i++)
        fprintf(out, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
    fputc(']', out);
}

static void print_ref(FILE *out, const mpk_tensor *t)
{
    switch (t->kind) {
    case MPK_T_WEIGHT: fprintf(out, "@%s", t->name); break;
    case MPK_T_INPUT:
    case MPK_T_STATE: fputs(t->name, out); break;
    default: fprintf(out, "%%%d", t->id);
    }
}

/* Bytes in the largest unit that keeps a leading digit: "15.26 GiB". */
static const char *size_str(char *buf, size_t n, int64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4)
        v /= 1024.0, u++;
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", v, units[u]);
    return buf;
}

void mpk_graph_print(FILE *out, const mpk_graph *g)
{
    mpk_arena *a = mpk_arena_new();
    int64_t wbytes = 0, sbytes = 0;
    int nweights = 0;
    for (int i = 0; i < g->tensors.n; i++) {
        const mpk_tensor *t = g->tensors.items[i];
        int64_t b = mpk_tensor_numel(t) * mpk_dtype_size(t->dtype);
        if (t->kind == MPK_T_WEIGHT)
            wbytes += b, nweights++;
        else if (t->kind == MPK_T_STATE)
            sbytes += b;
    }
    char wb[32], sb[32];
    fprintf(out, "# graph %s: %d ops, %d weights (%s), state %s\n", g->name, g->nodes.n, nweights,
            size_str(wb, sizeof wb, wbytes), size_str(sb, sizeof sb, sbytes));
    for (int i = 0; i < g->params.n; i++) {
        const mpk_param_value *p = g->params.items[i];
        fprintf(out, "param %s = %s\n", p->name, mpk_value_str(a, &p->value));
    }
    const char *sep = "schedule ";
    if (g->workers)
        fprintf(out, "%sworkers = %lld", sep, (long long)g->workers), sep = ", ";
    if (g->tile)
        fprintf(out, "%stile = %lld", sep, (long long)g->tile), sep = ", ";
    if (g->kv_chunk)
        fprintf(out, "%skv_chunk = %lld", sep, (long long)g->kv_chunk), sep = ", ";
    if (sep[0] == ',')
        fputc('\n', out);
    for (int i = 0; i < g->tensors.n; i++) {
        const mpk_tensor *t = g->tensors.items[i];
        if (t->kind == MPK_T_ACT || t->kind == MPK_T_VIEW)
            continue;
        fputs(t->kind == MPK_T_WEIGHT ? "weight " : t->kind == MPK_T_STATE ? "state " : "input ", out);
        print_ref(out, t);
        fputs(" : ", out);
        print_type(out, t);
        fputc('\n', out);
    }
    fprintf(out, "graph %s {\n", g->name);
    for (int i = 0; i < g->nodes.n; i++) {
        const mpk_node *n = g->nodes.items[i];
        const mpk_op_info *info = mpk_op_get(n->op);
        fputs("  ", out);
        for (int j = 0; j < n->nout; j++) {
            if (j)
                fputs(", ", out);
            print_ref(out, n->out[j]);
            fputs(" : ", out);
            print_type(out, n->out[j]);
        }
        fprintf(out, " = %s(", info->name);
        for (int j = 0; j < n->nin; j++) {
            if (j)
                fputs(", ", out);
            print_ref(out, n->in[j]);
        }
        for (int k = 0; k < info->nattrs; k++)
            fprintf(out, "%s%s=%s", n->nin || k ? ", " : "", info->attrs[k].name,
                    mpk_value_str(a, &n->attrs[k]));
        fputc(')', out);
        if (n->hint_tile)
            fprintf(out, " with tile = %lld", (long long)n->hint_tile);
        if (n->hint_kv_chunk)
            fprintf(out, " with kv_chunk = %lld", (long long)n->hint_kv_chunk);
        fputc('\n', out);
    }
    for (int i = 0; i < g->outputs.n; i++) {
        const mpk_output *o = g->outputs.items[i];
        fprintf(out, "  output %s = ", o->name);
        print_ref(out, o->t);
        fputs(" : ", out);
        print_type(out, o->t);
        fputc('\n', out);
    }
    fputs("}\n", out);
    mpk_arena_free(a);
}
