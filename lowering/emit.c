/*
 * emit.c - the blob file: blob/write.c makes the bytes from the lowering's
 * arrays (man 5 mpk-blob).
 *
 * The file is built in memory and written by mpk_write_file (mpk/util.h):
 * a regular file through a temporary file renamed into place only once
 * complete, so an interrupted or failed build never leaves a truncated
 * blob behind; a device or FIFO in place; a symbolic link's target.
 */
#include "lowering.h"
#include "mpk/util.h"

#include <stdlib.h>
#include <string.h>

/* Two tensor records the same buffer: a weight, state or constant both
 * graphs use (names compared as strings, bases as indices mapped). */
static bool same_tensor(const mpk_low *L, const mpkb_tensor *a, const mpk_low *Lc, const mpkb_tensor *b,
                        const uint32_t *map)
{
    if (a->space != b->space || a->dtype != b->dtype || a->ndim != b->ndim || a->split != b->split ||
        a->offset != b->offset || a->nbytes != b->nbytes || memcmp(a->dims, b->dims, sizeof a->dims) != 0 ||
        strcmp(L->strings + a->name, Lc->strings + b->name) != 0)
        return false;
    if (a->space == MPKB_SPACE_WEIGHT)
        return b->base == (uint32_t)(b - Lc->tensors) ? a->base == (uint32_t)(a - L->tensors)
                                                      : map[b->base] == a->base;
    return a->space == MPKB_SPACE_STATE;
}

/* The blob of decode graph L and chunk graph Lc (compiled from the same
 * model with n = 1 and n = chunk): one table of tensors, the chunk graph's
 * weight and state tensors mapped onto the decode graph's equal ones (a
 * weight is loaded once), its arena tensors and constants appended; its
 * strings appended after L's; both arenas planned from offset 0 (the
 * graphs' steps never overlap), so the arena is the larger of the two. */
static void *emit_chunked(mpk_low *L, mpk_low *Lc, size_t *size)
{
    uint32_t nt = L->ntensors + Lc->ntensors;
    mpkb_tensor *tens = mpk_malloc(sizeof *tens * nt);
    uint32_t *map = mpk_malloc(sizeof *map * (Lc->ntensors + 1));
    char *str = mpk_malloc(L->nstrings + Lc->nstrings + 1);
    uint64_t cbase = (L->nconsts + 63) / 64 * 64;
    uint8_t *consts = mpk_calloc(cbase + Lc->nconsts + 1, 1);
    mpkb_task *tasks = mpk_malloc(sizeof *tasks * (Lc->ntasks + 1));
    if (!tens || !map || !str || !consts || !tasks)
        mpk_out_of_memory();
    memcpy(tens, L->tensors, sizeof *tens * L->ntensors);
    memcpy(str, L->strings, L->nstrings);
    memcpy(str + L->nstrings, Lc->strings, Lc->nstrings);
    memcpy(consts, L->consts, L->nconsts);
    memcpy(consts + cbase, Lc->consts, Lc->nconsts);
    uint32_t n = L->ntensors;
    for (uint32_t i = 0; i < Lc->ntensors; i++)
        map[i] = MPKB_NONE;
    /* loaded weights first, so that every view finds its base mapped */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < Lc->ntensors; i++) {
            const mpkb_tensor *b = &Lc->tensors[i];
            bool loaded = b->space == MPKB_SPACE_WEIGHT && b->base == i;
            if (loaded != (pass == 0))
                continue;
            if (b->space == MPKB_SPACE_WEIGHT || b->space == MPKB_SPACE_STATE)
                for (uint32_t j = 0; j < L->ntensors && map[i] == MPKB_NONE; j++)
                    if (same_tensor(L, &L->tensors[j], Lc, b, map))
                        map[i] = j;
            if (map[i] != MPKB_NONE)
                continue;
            mpkb_tensor t = *b;
            t.name += L->nstrings;
            if (t.space == MPKB_SPACE_WEIGHT)
                t.base = loaded ? n : map[t.base];
            if (t.space == MPKB_SPACE_CONST)
                t.offset += cbase;
            map[i] = n;
            tens[n++] = t;
        }
    for (uint32_t i = 0; i < Lc->ntasks; i++) {
        tasks[i] = Lc->tasks[i];
        tasks[i].label += L->nstrings;
        for (int k = 0; k < MPKB_NT; k++)
            if (tasks[i].t[k] != MPKB_NONE)
                tasks[i].t[k] = map[tasks[i].t[k]];
    }
    mpkb_meta m = L->meta, cm = Lc->meta;
    uint64_t arena = m.arena_size > cm.arena_size ? m.arena_size : cm.arena_size;
    uint32_t chunk = Lc->tensors[cm.token_input].dims[0];
    m.arena_size = cm.arena_size = arena;
    m.chunk = cm.chunk = chunk;
    cm.name += L->nstrings;
    cm.token_input = map[cm.token_input];
    cm.pos_input = cm.pos_input == MPKB_NONE ? MPKB_NONE : map[cm.pos_input];
    cm.next_output = map[cm.next_output];
    cm.logits = map[cm.logits];
    mpkb_blob c = mpk_low_view(Lc);
    c.meta = &cm;
    c.tasks = tasks;
    mpkb_blob v = mpk_low_view(L);
    v.meta = &m;
    v.strings = str, v.strings_size = L->nstrings + Lc->nstrings;
    v.tensors = tens, v.ntensors = n;
    v.consts = consts, v.consts_size = cbase + Lc->nconsts;
    v.chunk = &c;
    void *buf = mpkb_write(&v, size);
    free(tens), free(map), free(str), free(consts), free(tasks);
    return buf;
}

void *mpk_emit_buffer(mpk_low *L, mpk_low *Lc, size_t *size)
{
    if (Lc)
        return emit_chunked(L, Lc, size);
    mpkb_blob v = mpk_low_view(L);
    return mpkb_write(&v, size);
}

bool mpk_emit(mpk_low *L, mpk_low *Lc, const char *path)
{
    size_t size;
    void *buf = mpk_emit_buffer(L, Lc, &size);
    if (!buf) {
        fprintf(stderr, "mpk: error: out of memory writing the blob\n");
        return false;
    }
    if (size > MPKB_MAX_FILE) {
        fprintf(stderr, "mpk: error: the blob would have %zu bytes; a blob has at most %llu (4 GiB)\n", size,
                (unsigned long long)MPKB_MAX_FILE);
        free(buf);
        return false;
    }
    bool ok = mpk_write_file(path, buf, size, NULL, 0, stderr);
    free(buf);
    return ok;
}
