/*
 * dump.c - the task graph as text (mpk build --dump=PASS, mpk dump) and as
 * graphviz (mpk dump --dot).
 *
 * The text form has one line per item, so that it diffs and greps well:
 *
 *   tensor 12 bf16[1, 4096] arena @8192 +8192 "%41"
 *   task 7 matvec model.layers.0.self_attn.q_proj layer 0 lo=0 hi=32 tile=0
 *        eps=1e-06 flags rmsnorm wait e3 signal e5 x=t4 w=t9 out=t12 pro=t10
 *   event 5 producers 32 lag 0 tasks 40..168
 *   queue 3: 7 140 301 ...
 */
#include "lowering.h"

#include <string.h>

const char *mpk_kop_name(mpk_kop_kind k)
{
    static const char *const names[K_COUNT] = {
#define NAME_(ID, name) [K_##ID] = #name,
        MPK_KOPS(NAME_)
#undef NAME_
    };
    return (int)k < K_COUNT ? names[k] : "?";
}

/* Operand k's name in the text form (mpk/taskops.def), "t" if unused. */
static const char *operand_name(uint32_t op, int k)
{
    const char *s = mpkb_operand_name(op, k);
    return s ? s : "t";
}

/* The named immediates: "lo=0 hi=32 tile=3 eps=1e-06". */
static void print_imms(const mpkb_task *t, FILE *out)
{
    for (int k = 0; k < MPKB_NI; k++)
        if (mpkb_imm_name(t->op, k, false))
            fprintf(out, " %s=%d", mpkb_imm_name(t->op, k, false), t->i[k]);
    for (int k = 0; k < MPKB_NF; k++)
        if (mpkb_imm_name(t->op, k, true))
            fprintf(out, " %s=%g", mpkb_imm_name(t->op, k, true), (double)t->f[k]);
}

static void print_tensor(const mpkb_blob *tg, uint32_t i, FILE *out)
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

static void print_task(const mpkb_blob *tg, uint32_t i, FILE *out)
{
    const mpkb_task *t = &tg->tasks[i];
    fprintf(out, "task %u %s %s", i, mpkb_op_name(t->op), tg->strings + t->label);
    if (t->layer >= 0)
        fprintf(out, " layer %d", t->layer);
    print_imms(t, out);
    if (t->flags) {
        char fl[96];
        fprintf(out, " flags %s", mpkb_flag_names(t->flags, fl, sizeof fl));
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

void mpk_print_taskgraph(const mpkb_blob *tg, FILE *out)
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

void mpk_print_dot(const mpkb_blob *tg, FILE *out)
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
        fprintf(out, "kop %d %s %s", i, mpk_kop_name(k->kind), k->label ? k->label : "");
        if (k->flags) {
            char fl[96];
            fprintf(out, " flags %s", mpkb_flag_names(k->flags, fl, sizeof fl));
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
    mpkb_blob tg = mpk_low_view(L);
    if (strcmp(pass, "tile") == 0) {
        /* operands are still the lowering's tensors, not the blob's */
        for (uint32_t i = 0; i < L->ntasks; i++) {
            const mpkb_task *t = &L->tasks[i];
            fprintf(out, "task %u %s %s", i, mpkb_op_name(t->op), L->strings + t->label);
            print_imms(t, out);
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
