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

void *mpk_emit_buffer(mpk_low *L, size_t *size)
{
    mpkb_blob v = mpk_low_view(L);
    return mpkb_write(&v, size);
}

bool mpk_emit(mpk_low *L, const char *path)
{
    size_t size;
    void *buf = mpk_emit_buffer(L, &size);
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
