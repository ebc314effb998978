/*
 * run.h - `mpk run` (run.c): import a checkpoint directory, build it into
 * the cache unless built already, and exec mpk-run on it. argv[0] is the
 * command; exe_dir is the directory of the running mpk (or NULL), where the
 * stdlib and mpk-run are looked for. Returns only on failure, with mpk's
 * exit status.
 */
#ifndef MPK_RUN_H
#define MPK_RUN_H

int mpk_run_cmd(int argc, char **argv, const char *exe_dir);

/* mpk build --chunk (and mpk run): the chunk graph of the model at path,
 * loaded and checked again with -D n=lo->rows after opt's -D, lowered with
 * lo. *cc is its compilation (free it after the result). NULL after
 * reporting. mpk_chunk_unfit: why graph g (the decode graph) cannot have
 * one ("has none", ...), or NULL when it has param n of default 1. */
#include "frontend/frontend.h"
#include "lowering/lowering.h"

/* mpk run's --chunk default: prompt tokens per chunk step. */
#define MPK_RUN_CHUNK 64

mpk_low *mpk_lower_chunk(const char *path, const mpk_options *opt, const mpk_lower_opts *lo, int max_errors,
                         bool werror, mpk_ctx **cc);
const char *mpk_chunk_unfit(const mpk_graph *g);

#endif
