/* Finding a program's source, embedded or on disk. */
#include "kernel_sources.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *embedded_source(const char *name) {
    for (size_t i = 0; i < attn_embedded_kernel_count; i++)
        if (strcmp(attn_embedded_kernels[i].name, name) == 0)
            return attn_embedded_kernels[i].source;
    return NULL;
}

/* Reads dir/name.cl into a malloc'ed string. */
static attn_status read_source_file(attn_context_t ctx, const char *dir, const char *name,
                                    char **out) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s.cl", dir, name) >= sizeof path)
        return attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "ATTN_CL_KERNEL_DIR is too long");
    FILE *f = fopen(path, "rb");
    if (!f)
        return attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "cannot open %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t length = 0;
    attn_status status = ATTN_SUCCESS;
    if (fseek(f, 0, SEEK_END) != 0 || (length = (size_t)ftell(f), fseek(f, 0, SEEK_SET) != 0)) {
        status = attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "cannot seek in %s", path);
    } else if (!(text = malloc(length + 1))) {
        status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate %zu bytes for %s",
                           length + 1, path);
    } else if (fread(text, 1, length, f) != length) {
        status = attn_fail(ctx, ATTN_ERR_KERNEL_SOURCE, "cannot read %s", path);
        free(text);
        text = NULL;
    } else {
        text[length] = '\0';
    }
    fclose(f);
    *out = text;
    return status;
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

attn_status attn_kernel_source(attn_context_t ctx, const char *program_name, char **source) {
    char *common = NULL, *body = NULL;
    attn_status status = load_one(ctx, "common", &common);
    if (status == ATTN_SUCCESS)
        status = load_one(ctx, program_name, &body);
    if (status == ATTN_SUCCESS) {
        size_t a = strlen(common), b = strlen(body);
        char *joined = malloc(a + b + 2);
        if (!joined) {
            status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot join kernel sources");
        } else {
            memcpy(joined, common, a);
            joined[a] = '\n';
            memcpy(joined + a + 1, body, b + 1);
            *source = joined;
        }
    }
    free(common);
    free(body);
    return status;
}
