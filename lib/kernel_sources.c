/* Finding a program's source, embedded or on disk. */
#include "kernel_sources.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *embedded_source(const char *name) {
    for (size_t i = 0; i < attn_embedded_kernel_count; i++)
        if (strcmp(attn_embedded_kernels[i].name, name) == 0)
            return attn_embedded_kernels[i].source;
    return NULL;
}

/* Kernel files are a few tens of KiB: anything past this is not one. */
#define MAX_SOURCE_BYTES ((size_t)16 << 20)

/* Reads dir/name.cl, a regular file of at most MAX_SOURCE_BYTES, into a
 * malloc'ed string. Anything else at that path (a directory, whose size
 * ftell reports as 2^63 - 1; a FIFO, which would block) is refused before
 * anything is allocated. */
static attn_status read_source_file(attn_context_t ctx, const char *dir, const char *name,
                                    char **out) {
    *out = NULL;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s.cl", dir, name) >= sizeof path)
        return attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "ATTN_CL_KERNEL_DIR is too long");
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer. */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    attn_status status = ATTN_SUCCESS;
    if (fstat(fd, &st) != 0)
        status =
            attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "cannot stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        status = attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "%s is not a regular file", path);
    else if (st.st_size < 0 || (uintmax_t)st.st_size > MAX_SOURCE_BYTES)
        status = attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE,
                           "%s holds %jd bytes; a kernel source may hold at most %zu", path,
                           (intmax_t)st.st_size, MAX_SOURCE_BYTES);
    const size_t length = status == ATTN_SUCCESS ? (size_t)st.st_size : 0;
    char *text = status == ATTN_SUCCESS ? malloc(length + 1) : NULL;
    if (status == ATTN_SUCCESS && !text)
        status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate %zu bytes for %s",
                           length + 1, path);
    size_t done = 0;
    while (status == ATTN_SUCCESS && done < length) {
        const ssize_t got = read(fd, text + done, length - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            status = attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "cannot read %s: %s", path,
                               got < 0 ? strerror(errno) : "the file shrank while read");
        else
            done += (size_t)got;
    }
    close(fd);
    if (status != ATTN_SUCCESS) {
        free(text);
        return status;
    }
    text[length] = '\0';
    *out = text;
    return ATTN_SUCCESS;
}

static attn_status load_one(attn_context_t ctx, const char *name, char **out) {
    const char *dir = getenv("ATTN_CL_KERNEL_DIR");
    if (dir && *dir)
        return read_source_file(ctx, dir, name, out);
    const char *text = embedded_source(name);
    if (!text)
        return attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "no embedded kernel source named %s", name);
    *out = strdup(text);
    if (!*out)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot copy kernel source %s", name);
    return ATTN_SUCCESS;
}

/* Programs built from a shared file between common.cl and their own. */
static const struct {
    const char *program, *shared;
} shared_sources[] = {
    {"flash_decode", "decode_rows"},
    {"flash_decode_gpu", "decode_rows"},
};

attn_status attn_kernel_source(attn_context_t ctx, const char *program_name, char **source) {
    const char *shared_name = NULL;
    for (size_t i = 0; i < sizeof shared_sources / sizeof shared_sources[0]; i++)
        if (strcmp(shared_sources[i].program, program_name) == 0)
            shared_name = shared_sources[i].shared;
    char *parts[3] = {NULL, NULL, NULL};
    attn_status status = load_one(ctx, "common", &parts[0]);
    if (status == ATTN_SUCCESS && shared_name)
        status = load_one(ctx, shared_name, &parts[1]);
    if (status == ATTN_SUCCESS)
        status = load_one(ctx, program_name, &parts[2]);
    if (status == ATTN_SUCCESS) {
        size_t total = 1;
        for (int i = 0; i < 3; i++)
            total += parts[i] ? strlen(parts[i]) + 1 : 0;
        char *joined = malloc(total);
        if (!joined) {
            status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot join kernel sources");
        } else {
            size_t at = 0;
            for (int i = 0; i < 3; i++) {
                if (!parts[i])
                    continue;
                const size_t n = strlen(parts[i]);
                memcpy(joined + at, parts[i], n);
                joined[at + n] = '\n';
                at += n + 1;
            }
            joined[at] = '\0';
            *source = joined;
        }
    }
    for (int i = 0; i < 3; i++)
        free(parts[i]);
    return status;
}
