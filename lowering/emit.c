/*
 * emit.c - the blob: header, section table, sections (man 5 mpk-blob).
 *
 * The file is built in memory and written through a temporary file in the
 * destination's directory, renamed into place only once complete, so an
 * interrupted or failed build never leaves a truncated blob behind.
 */
#include "lowering/lowering.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the blob is little-endian; so is this writer");

static uint64_t align_up(uint64_t v) { return (v + MPKB_ALIGN - 1) / MPKB_ALIGN * MPKB_ALIGN; }

static uint32_t crc(const void *p, uint64_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    const Bytef *b = p;
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

void *mpk_emit_buffer(mpk_low *L, size_t *size)
{
    mpkb_meta meta = L->meta;
    meta.name = mpk_str_intern(L, L->g->name ? L->g->name : "");
    meta.max_seq = 0;
    for (uint32_t t = 0; t < L->ntasks; t++)
        if (L->tasks[t].op == MPKB_OP_ATTENTION) {
            uint32_t s = L->tensors[L->tasks[t].t[3]].dims[2];
            meta.max_seq = meta.max_seq == 0 || s < meta.max_seq ? s : meta.max_seq;
        }
    if (meta.max_seq == 0)
        meta.max_seq = UINT32_MAX; /* nothing bounds the context */
    /* eos: the model's param, if it has one (sema checked its form) */
    for (int i = 0; i < L->g->params.n; i++) {
        const mpk_param_value *p = L->g->params.items[i];
        if (strcmp(p->name, "eos") != 0)
            continue;
        if (p->value.kind == MPK_V_INT)
            meta.eos[meta.neos++] = (int32_t)p->value.i;
        for (int k = 0; p->value.kind == MPK_V_LIST && k < p->value.n && k < MPKB_MAX_EOS; k++)
            meta.eos[meta.neos++] = (int32_t)p->value.items[k].i;
    }
    struct {
        uint32_t kind, count, esize;
        const void *data;
    } sec[MPKB_NSECTIONS] = {
        {MPKB_SEC_META, 1, sizeof meta, &meta},
        {MPKB_SEC_STRINGS, L->nstrings, 1, L->strings},
        {MPKB_SEC_TENSORS, L->ntensors, sizeof(mpkb_tensor), L->tensors},
        {MPKB_SEC_TASKS, L->ntasks, sizeof(mpkb_task), L->tasks},
        {MPKB_SEC_EVENTS, L->nevents, sizeof(mpkb_event), L->events},
        {MPKB_SEC_TRIGGERS, L->ntriggers, sizeof(uint32_t), L->triggers},
        {MPKB_SEC_QUEUES, L->meta.workers, sizeof(mpkb_queue), L->queues},
        {MPKB_SEC_QTASKS, L->ntasks, sizeof(uint32_t), L->qtasks},
        {MPKB_SEC_CONSTS, (uint32_t)L->nconsts, 1, L->consts},
    };
    uint64_t at = align_up(sizeof(mpkb_header) + sizeof(mpkb_section) * MPKB_NSECTIONS);
    mpkb_section table[MPKB_NSECTIONS];
    for (int i = 0; i < MPKB_NSECTIONS; i++) {
        uint64_t n = (uint64_t)sec[i].count * sec[i].esize;
        table[i] = (mpkb_section){.kind = sec[i].kind, .crc = crc(sec[i].data, n), .offset = at,
                                  .size = n, .count = sec[i].count, .entry_size = sec[i].esize};
        at = align_up(at + n);
    }
    uint8_t *buf = calloc(1, at);
    if (!buf)
        return NULL;
    for (int i = 0; i < MPKB_NSECTIONS; i++)
        if (table[i].size)
            memcpy(buf + table[i].offset, sec[i].data, table[i].size);
    memcpy(buf + sizeof(mpkb_header), table, sizeof table);
    mpkb_header h = {.version = MPKB_VERSION, .header_size = sizeof h, .file_size = at,
                     .table_offset = sizeof h, .nsections = MPKB_NSECTIONS,
                     .table_crc = crc(table, sizeof table)};
    memcpy(h.magic, MPKB_MAGIC, 8);
    h.header_crc = crc(&h, sizeof h);
    memcpy(buf, &h, sizeof h);
    *size = at;
    return buf;
}

/* mkstemp makes the file 0600; give it the usual 0666 less the umask. */
static bool fchmod_default(const char *path)
{
    mode_t mask = umask(0);
    umask(mask);
    return chmod(path, 0666 & ~mask) == 0;
}

bool mpk_emit(mpk_low *L, const char *path)
{
    size_t size;
    void *buf = mpk_emit_buffer(L, &size);
    if (!buf) {
        fprintf(stderr, "mpk: error: out of memory writing the blob\n");
        return false;
    }
    bool ok;
    if (strcmp(path, "-") == 0) {
        ok = fwrite(buf, 1, size, stdout) == size && fflush(stdout) == 0;
        if (!ok)
            fprintf(stderr, "mpk: error: writing the blob to standard output failed\n");
        free(buf);
        return ok;
    }
    char *tmp = malloc(strlen(path) + 16);
    sprintf(tmp, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "mpk: error: cannot write '%s': %s\n", path, strerror(errno));
        free(tmp);
        free(buf);
        return false;
    }
    FILE *f = fdopen(fd, "wb");
    ok = f && fwrite(buf, 1, size, f) == size;
    ok = (f ? fclose(f) == 0 : (close(fd), false)) && ok;
    if (ok && fchmod_default(tmp) && rename(tmp, path) == 0) {
        free(tmp);
        free(buf);
        return true;
    }
    fprintf(stderr, "mpk: error: cannot write '%s': %s\n", path, strerror(errno));
    unlink(tmp);
    free(tmp);
    free(buf);
    return false;
}
