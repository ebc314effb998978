/*
 * emit.c - the blob file: blob/write.c makes the bytes from the lowering's
 * arrays (man 5 mpk-blob).
 *
 * The file is built in memory and written through a temporary file in the
 * destination's directory, renamed into place only once complete, so an
 * interrupted or failed build never leaves a truncated blob behind.
 */
#include "lowering.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void *mpk_emit_buffer(mpk_low *L, size_t *size)
{
    mpkb_blob v = mpk_low_view(L);
    return mpkb_write(&v, size);
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
