/*
 * replay.h - the replayer that make check builds from each fuzz target
 * (-DMPK_FUZZ_MAIN, linked with tests/fuzz/replay.c), so that the corpora of
 * past findings keep being checked without clang.
 *
 * replay.c's main runs every file named on its command line, and every
 * regular file (not a dot file; no subdirectories) of every directory named
 * there, in name order: read whole into a malloc'd buffer of its size
 * (8-byte aligned, NUL after the last byte), timed, and handed to the
 * target's fuzz_replay_one. Then it prints one line
 *     NAME: N inputs[COUNTS], 0 crashes, slowest T ms (FILE)
 * and fails when an input took more than 5 s: a slow input is a bug too.
 * An unreadable file exits 1.
 */
#ifndef MPK_FUZZ_REPLAY_H
#define MPK_FUZZ_REPLAY_H

#include <stddef.h>
#include <stdint.h>

/* What each target defines for the replayer. */
extern const char fuzz_replay_name[];                                /* "fuzz smoke" */
void fuzz_replay_one(const char *path, const uint8_t *data, size_t size); /* one input */
/* Said after "N inputs" in the summary: "" or " (...)". */
const char *fuzz_replay_counts(void);

#endif
