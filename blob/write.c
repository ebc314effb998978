/*
 * write.c - a blob's bytes from its arrays (mpk-blob(5)); read.c is the
 * other half. The file is built in memory, so whoever writes it can make
 * the write atomic; every section is MPKB_ALIGN-aligned and covered by its
 * CRC, the table and the header by theirs.
 */
#include "mpk/blob.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the blob is little-endian; so is this writer");

uint32_t mpkb_crc(const void *p, size_t n)
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

static uint64_t align_up(uint64_t v) { return (v + MPKB_ALIGN - 1) / MPKB_ALIGN * MPKB_ALIGN; }

void *mpkb_write(const mpkb_blob *b, size_t *size)
{
    const mpkb_blob *c = b->chunk;
    struct {
        uint32_t kind, count, esize;
        const void *data;
    } sec[MPKB_NSECTIONS] = {
        {MPKB_SEC_META, 1, sizeof(mpkb_meta), b->meta},
        {MPKB_SEC_STRINGS, b->strings_size, 1, b->strings},
        {MPKB_SEC_TENSORS, b->ntensors, sizeof(mpkb_tensor), b->tensors},
        {MPKB_SEC_TASKS, b->ntasks, sizeof(mpkb_task), b->tasks},
        {MPKB_SEC_EVENTS, b->nevents, sizeof(mpkb_event), b->events},
        {MPKB_SEC_TRIGGERS, b->ntriggers, sizeof(uint32_t), b->triggers},
        {MPKB_SEC_QUEUES, b->nqueues, sizeof(mpkb_queue), b->queues},
        {MPKB_SEC_QTASKS, b->nqtasks, sizeof(uint32_t), b->qtasks},
        {MPKB_SEC_CONSTS, (uint32_t)b->consts_size, 1, b->consts},
    };
    int nsec = MPKB_NBASE_SECTIONS;
    if (c) {
        sec[nsec++] = (__typeof__(sec[0])){MPKB_SEC_CMETA, 1, sizeof(mpkb_meta), c->meta};
        sec[nsec++] = (__typeof__(sec[0])){MPKB_SEC_CTASKS, c->ntasks, sizeof(mpkb_task), c->tasks};
        sec[nsec++] = (__typeof__(sec[0])){MPKB_SEC_CEVENTS, c->nevents, sizeof(mpkb_event), c->events};
        sec[nsec++] = (__typeof__(sec[0])){MPKB_SEC_CTRIGGERS, c->ntriggers, sizeof(uint32_t), c->triggers};
        sec[nsec++] = (__typeof__(sec[0])){MPKB_SEC_CQUEUES, c->nqueues, sizeof(mpkb_queue), c->queues};
        sec[nsec++] = (__typeof__(sec[0])){MPKB_SEC_CQTASKS, c->nqtasks, sizeof(uint32_t), c->qtasks};
    }
    uint64_t at = align_up(sizeof(mpkb_header) + sizeof(mpkb_section) * (size_t)nsec);
    mpkb_section table[MPKB_NSECTIONS];
    for (int i = 0; i < nsec; i++) {
        uint64_t n = (uint64_t)sec[i].count * sec[i].esize;
        table[i] = (mpkb_section){.kind = sec[i].kind, .crc = mpkb_crc(sec[i].data, n), .offset = at,
                                  .size = n, .count = sec[i].count, .entry_size = sec[i].esize};
        at = align_up(at + n);
    }
    uint8_t *buf = calloc(1, at);
    if (!buf)
        return NULL;
    for (int i = 0; i < nsec; i++)
        if (table[i].size)
            memcpy(buf + table[i].offset, sec[i].data, table[i].size);
    memcpy(buf + sizeof(mpkb_header), table, sizeof *table * (size_t)nsec);
    mpkb_header h = {.version = c ? MPKB_VERSION : MPKB_VERSION_DECODE, .header_size = sizeof h, .file_size = at,
                     .table_offset = sizeof h, .nsections = (uint32_t)nsec,
                     .table_crc = mpkb_crc(table, sizeof *table * (size_t)nsec)};
    memcpy(h.magic, MPKB_MAGIC, 8);
    h.header_crc = mpkb_crc(&h, sizeof h);
    memcpy(buf, &h, sizeof h);
    *size = at;
    return buf;
}
