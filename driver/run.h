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

#endif
