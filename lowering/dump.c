/*
 * dump.c - the task graph as text (mpk build --dump=PASS, mpk dump) and as
 * graphviz (mpk dump --dot).
 *
 * The text form has one line per item, so that it diffs and greps well:
 *
 *   tensor 12 bf16[1, 4096] arena @8192 +8192 "%41"
 *   task 7 matvec model.layers.0.self_attn.q_proj rows 0..32 flags rmsnorm
 *        wait e3 signal e5 x=t4 w=t9 out=t12 gamma=t10
 *   event 5 producers 32 lag 0 tasks 40..168
 *   queue 3: 7 140 301 ...
 */
#include "lowering/lowering.h"

#include <string.h>

static const char *const kop_names[] = {"embed", "matvec", "attention", "argmax", "rmsnorm",
                                        "rope", "add", "mul", "silu", "copy", "allreduce"};

/* Operand names per op, for the text form ("" = unused slot). */
static const char *operand_name(uint32_t op, int k)
{
    static const char *const names[MPKB_NOPS][MPKB_NT] = {
        [MPKB_OP_INPUTS] = {"token", "pos"},
        [MPKB_OP_EMBED] = {"table", "ids", "out"},
        [MPKB_OP_MATVEC] = {"x", "w", "out", "residual", "pro", "partials"},
        [MPKB_OP_ATTENTION] = {"q", "k", "v", "cache", "pos", "q_norm", "k_norm", "out", "q_rope", "k_rope"},
        [MPKB_OP_ATTN_MERGE] = {"partials", "out"},
        [MPKB_OP_ARGMAX_PART] = {"x", "partials"},
        [MPKB_OP_ARGMAX_REDUCE] = {"partials", "out"},
        [MPKB_OP_RMSNORM] = {"x", "gamma", "out"},
        [MPKB_OP_ROPE] = {"x", "pos", "inv_freq", "out"},
        [MPKB_OP_ADD] = {"a", "b", "out"},
        [MPKB_OP_MUL] = {"a", "b", "out"},
        [MPKB_OP_SILU] = {"x", "", "out"},
        [MPKB_OP_COPY] = {"src", "dst"},
        [MPKB_OP_ALLREDUCE] = {"partial", "residual", "out"},
    };
    const char *s = op < MPKB_NOPS ? names[op][k] : NULL;
    return s && *s ? s : "t";
}

static void print_tensor(const mpk_taskgraph *tg, uint32_t i, FILE *out)
{
    const mpkb_tensor *t = &tg->tensors[i];
    fprintf(out, "tensor %u %s[", i, mpkb_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++)
        fprintf(out, "%s%u", d ? ", " : "", t->dims[d]);
    fprintf(out, "] %s", mpkb_space_name(t->space));
    if (t->space == MPKB_SPACE_WEIGHT && t->base != i)
        fprintf(out, " in t%u", t->base);
    if (t->split)
        fprintf(out, " split dim %u", t->split - 1u);
    fprintf(out, " @%llu +%llu \"%s\"\n", (unsigned long long)t->offset,
            (unsigned long long)t->nbytes, tg->strings + t->name);
}

static void print_task(const mpk_taskgraph *tg, uint32_t i, FILE *out)
{
    const mpkb_task *t = &tg->tasks[i];
    fprintf(out, "task %u %s %s", i, mpkb_op_name(t->op), tg->strings + t->label);
    if (t->layer >= 0)
        fprintf(out, " layer %d", t->layer);
    fprintf(out, " i=%d,%d,%d,%d", t->i[0], t->i[1], t->i[2], t->i[3]);
    if (t->flags) {
        static const char *const fl[] = {"rmsnorm", "silu_mul", "residual", "argmax", "direct", "all_ranks"};
        fprintf(out, " flags");
        for (int b = 0; b < 6; b++)
            if (t->flags & (1u << b))
                fprintf(out, " %s", fl[b]);
    }
    if (t->dep != MPKB_NONE)
        fprintf(out, " wait e%u", t->dep);
    if (t->trig_count && tg->triggers) {
        fprintf(out, " signal");
        for (uint32_t k = 0; k < t->trig_count; k++)
            fprintf(out, "%se%u", k ? "," : " ", tg->triggers[t->trig_first + k]);
    }
    for (int k = 0; k < MPKB_NT; k++)
        if (t->t[k] != MPKB_NONE)
            fprintf(out, " %s=t%u", operand_name(t->op, k), t->t[k]);
    fputc('\n', out);
}

void mpk_print_taskgraph(const mpk_taskgraph *tg, FILE *out)
{
    const mpkb_meta *m = tg->meta;
    fprintf(out, "model \"%s\" workers %u vocab %u max_seq %u", tg->strings + m->name, m->workers,
            m->vocab, m->max_seq);
    if (m->tp > 1)
        fprintf(out, " tp %u", m->tp);
    fputc('\n', out);
    fprintf(out, "inputs token=t%u pos=", m->token_input);
    if (m->pos_input == MPKB_NONE)
        fprintf(out, "none");
    else
        fprintf(out, "t%u", m->pos_input);
    fprintf(out, " outputs next=t%u logits=t%u step_event=e%u eos", m->next_output, m->logits,
            m->step_event);
    for (uint32_t i = 0; i < m->neos && i < MPKB_MAX_EOS; i++)
        fprintf(out, " %d", m->eos[i]);
    fprintf(out, "%s\n", m->neos ? "" : " none");
    fprintf(out, "sizes arena %llu state %llu weights %llu bytes_per_step %llu\n",
            (unsigned long long)m->arena_size, (unsigned long long)m->state_size,
            (unsigned long long)m->weight_size, (unsigned long long)m->bytes_per_step);
    for (uint32_t i = 0; i < tg->ntensors; i++)
        print_tensor(tg, i, out);
    for (uint32_t i = 0; i < tg->ntasks; i++)
        print_task(tg, i, out);
    for (uint32_t e = 0; e < tg->nevents; e++)
        fprintf(out, "event %u producers %u lag %u tasks %u..%u%s\n", e, tg->events[e].triggers,
                tg->events[e].lag, tg->events[e].first_task, tg->events[e].first_task + tg->events[e].ntasks,
                tg->events[e].flags & MPKB_EV_ALL_RANKS ? " all_ranks" : "");
    for (uint32_t w = 0; tg->queues && w < m->workers; w++) {
        fprintf(out, "queue %u:", w);
        for (uint32_t k = 0; k < tg->queues[w].count; k++)
            fprintf(out, " %u", tg->qtasks[tg->queues[w].first + k]);
        fputc('\n', out);
    }
}

void mpk_print_dot(const mpk_taskgraph *tg, FILE *out)
{
    fprintf(out, "digraph tasks {\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n");
    char buf[256];
    for (uint32_t i = 0; i < tg->ntasks; i++) {
        mpk_task_desc(tg, i, buf, sizeof buf);
        fprintf(out, "  t%u [label=\"", i);
        for (const char *p = buf; *p; p++)
            fprintf(out, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
        fprintf(out, "\"];\n");
    }
    /* producer -> each task waiting for an event it signals (not the step event) */
    for (uint32_t p = 0; p < tg->ntasks; p++) {
        const mpkb_task *t = &tg->tasks[p];
        for (uint32_t k = 0; k < t->trig_count; k++) {
            const mpkb_event *e = &tg->events[tg->triggers[t->trig_first + k]];
            if (e->lag)
                continue;
            for (uint32_t c = e->first_task; c < e->first_task + e->ntasks; c++)
                fprintf(out, "  t%u -> t%u;\n", p, c);
        }
    }
    fprintf(out, "}\n");
}

static void dump_kops(const mpk_low *L, FILE *out)
{
    for (int i = 0; i < L->nkops; i++) {
        const mpk_kop *k = &L->kops[i];
        fprintf(out, "kop %d %s %s", i, kop_names[k->kind], k->label ? k->label : "");
        if (k->flags) {
            static const char *const fl[] = {"rmsnorm", "silu_mul", "residual", "argmax", "direct"};
            for (int b = 0; b < 5; b++)
                if (k->flags & (1u << b))
                    fprintf(out, " +%s", fl[b]);
        }
        for (int s = 0; s < MPKB_NT; s++)
            if (k->t[s] >= 0)
                fprintf(out, " %s", L->lt[k->t[s]].name);
        fputc('\n', out);
    }
}

void mpk_dump_pass(const mpk_low *L, const char *pass, FILE *out)
{
    fprintf(out, "# after %s\n", pass);
    if (strcmp(pass, "fuse") == 0) {
        dump_kops(L, out);
        return;
    }
    mpk_taskgraph tg = mpk_low_taskgraph(L);
    if (strcmp(pass, "tile") == 0) {
        /* operands are still the lowering's tensors, not the blob's */
        for (uint32_t i = 0; i < L->ntasks; i++) {
            const mpkb_task *t = &L->tasks[i];
            fprintf(out, "task %u %s %s i=%d,%d,%d,%d", i, mpkb_op_name(t->op), L->strings + t->label,
                    t->i[0], t->i[1], t->i[2], t->i[3]);
            for (int k = 0; k < MPKB_NT; k++)
                if (t->t[k] != MPKB_NONE)
                    fprintf(out, " %s=%s", operand_name(t->op, k), L->lt[t->t[k]].name);
            fputc('\n', out);
        }
        return;
    }
    mpkb_meta m = L->meta;
    tg.meta = &m;
    if (strcmp(pass, "memory") == 0) {
        for (uint32_t i = 0; i < tg.ntensors; i++)
            print_tensor(&tg, i, out);
        for (uint32_t i = 0; i < tg.ntasks; i++)
            print_task(&tg, i, out);
        return;
    }
    if (strcmp(pass, "events") == 0)
        tg.queues = NULL;
    mpk_print_taskgraph(&tg, out);
}
