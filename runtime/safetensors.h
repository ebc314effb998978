/*
 * safetensors.h - what weights.c and safetensors.c share; private to them
 * (the runtime's interface is runtime.h).
 *
 * The loader carries one mpk_weights_open call: where problems go, how many
 * were reported, the weights being opened. The st_ functions report every
 * problem through st_problem, as one "FILE: problem" or "FILE: tensor
 * 'NAME': problem" line each, and count it; they never exit on bad input.
 */
#ifndef MPK_SAFETENSORS_H
#define MPK_SAFETENSORS_H

#include <jansson.h>

#include "runtime.h"

/* A real header is a few MB (tens of thousands of tensors); anything larger
 * is garbage, and parsing it would cost gigabytes of JSON nodes. */
#define HEADER_MAX (100u << 20)
#define HEADER_MAX_TEXT "100 MiB"
/* Hostile names can be long; messages quote this many bytes of them. */
#define QUOTE_MAX 200

typedef struct {
    char *path;            /* as messages name it: DIR/SHARD, or PATH */
    char *shard;           /* the index's name for it; NULL without an index */
    const uint8_t *map;    /* the whole file */
    size_t size;
    json_t *header;        /* the header object; NULL once bound */
    bool ok;               /* the header parsed; its entries are checked */
    const uint8_t *data;   /* the data area */
    uint64_t data_size;
} st_file;

typedef struct {
    FILE *err;
    unsigned long errors;
    mpk_weights *w;
} loader;

/* One header entry, read and checked. */
typedef struct {
    const char *dtype;     /* as the file spells it */
    unsigned bits;         /* element bits; 0: a dtype safetensors lacks */
    const json_t *shape;
    uint64_t begin, end, nbytes;
} st_entry;

/* ---- messages (safetensors.c) -------------------------------------------- */

/* "FILE: [tensor 'NAME': ]message", cleaned of control characters. */
__attribute__((format(printf, 4, 5)))
void st_problem(loader *L, const char *file, const char *tensor, const char *fmt, ...);
/* WHAT ("the header", "the index") failed to parse as JSON. */
void st_json_problem(loader *L, const char *file, const char *what, const json_error_t *je);

/* ---- files and headers (safetensors.c) ----------------------------------- */

/* DIR/NAME, malloc'd; NULL on out of memory. */
char *st_join(const char *dir, const char *name);
/* Maps PATH read-only (an empty file: *map NULL); false once reported. */
bool st_map_file(loader *L, const char *path, const uint8_t **map, size_t *size);
/* Maps F, parses its header and checks every entry; F->ok if it parsed. */
void st_load_file(loader *L, st_file *f);
/* Reads the header entry NAME: V of F into E; with REPORT its problems are
 * reported. */
bool st_read_entry(loader *L, const st_file *f, const char *name, const json_t *v, st_entry *e,
                   bool report);
/* How safetensors spells mpk dtype DT (an mpkb_dtype below MPKB_NDTYPES). */
const char *st_dtype_name(uint32_t dt);

#endif
