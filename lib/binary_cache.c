/* The on-disk kernel binary cache: keys, the entry file format, and reading
 * and writing entries so that no reader ever trusts a partial or foreign
 * file.
 *
 * An entry file is
 *   bytes  0..7    magic "attnclbc"
 *   bytes  8..11   format version, little-endian (1)
 *   bytes 12..15   zero
 *   bytes 16..47   the key (so that a file copied or renamed onto another
 *                  key's name is refused)
 *   bytes 48..55   payload size, little-endian
 *   bytes 56..87   SHA-256 of the payload (a truncated or corrupt file is
 *                  refused: no fsync is needed for safety, only for keeping
 *                  an entry across a crash)
 *   bytes 88..     the payload: the driver's program binary. */
#include "binary_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "attnclbc"
#define FORMAT_VERSION 1u
#define HEADER_BYTES 88
/* Program binaries are a few MiB at most; a larger file is not an entry. */
#define MAX_PAYLOAD_BYTES ((uint64_t)256 << 20)

/* ---- Directory -------------------------------------------------------------- */

/* ATTN_CL_CACHE_DIR when set (empty: off), else $XDG_CACHE_HOME/attn_cl
 * (an absolute XDG_CACHE_HOME only, as the XDG spec asks), else
 * $HOME/.cache/attn_cl. Returns 0 when off. */
static int cache_dir(char *dir, size_t size) {
    const char *explicit_dir = getenv("ATTN_CL_CACHE_DIR");
    int n;
    if (explicit_dir) {
        if (!*explicit_dir)
            return 0;
        n = snprintf(dir, size, "%s", explicit_dir);
    } else {
        const char *xdg = getenv("XDG_CACHE_HOME");
        const char *home = getenv("HOME");
        if (xdg && xdg[0] == '/')
            n = snprintf(dir, size, "%s/attn_cl", xdg);
        else if (home && *home)
            n = snprintf(dir, size, "%s/.cache/attn_cl", home);
        else
            return 0;
    }
    return n > 0 && (size_t)n < size;
}

/* mkdir -p, new directories private to the user (0700, as XDG asks of its
 * cache directory). Returns 0 when `dir` exists as a directory afterwards. */
static int make_dirs(const char *dir) {
    char path[ATTN_BINARY_CACHE_PATH_MAX];
    const size_t length = strlen(dir);
    if (length >= sizeof path)
        return -1;
    memcpy(path, dir, length + 1);
    for (size_t i = 1; i <= length; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        const char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -1;
        path[i] = saved;
    }
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* ---- Key ------------------------------------------------------------------- */

/* Each field goes in with its length first, so that no two different field
 * lists hash the same bytes. */
static void hash_field(attn_sha256 *h, const void *data, size_t size) {
    unsigned char length[8];
    for (int i = 0; i < 8; i++)
        length[i] = (unsigned char)((uint64_t)size >> (8 * i));
    attn_sha256_update(h, length, sizeof length);
    attn_sha256_update(h, data, size);
}

static int hash_device_string(attn_sha256 *h, cl_device_id device, cl_device_info what) {
    size_t size = 0;
    if (clGetDeviceInfo(device, what, 0, NULL, &size) != CL_SUCCESS || size == 0)
        return -1;
    char *text = malloc(size);
    if (!text)
        return -1;
    const int ok = clGetDeviceInfo(device, what, size, text, NULL) == CL_SUCCESS;
    if (ok)
        hash_field(h, text, strnlen(text, size));
    free(text);
    return ok ? 0 : -1;
}

static int hash_platform_string(attn_sha256 *h, cl_platform_id platform, cl_platform_info what) {
    size_t size = 0;
    if (clGetPlatformInfo(platform, what, 0, NULL, &size) != CL_SUCCESS || size == 0)
        return -1;
    char *text = malloc(size);
    if (!text)
        return -1;
    const int ok = clGetPlatformInfo(platform, what, size, text, NULL) == CL_SUCCESS;
    if (ok)
        hash_field(h, text, strnlen(text, size));
    free(text);
    return ok ? 0 : -1;
}

/* Everything a binary depends on: the library (its kernels' host contract),
 * the device and its driver, the source and the options. */
static int make_key(attn_context_t ctx, const char *source, const char *build_options,
                    unsigned char key[ATTN_SHA256_BYTES]) {
    attn_sha256 h;
    attn_sha256_init(&h);
    static const char tag[] = "libattn_cl program binary key 1";
    hash_field(&h, tag, sizeof tag - 1);
    const char *version = attn_version_string();
    hash_field(&h, version, strlen(version));
    cl_platform_id platform;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) !=
            CL_SUCCESS ||
        hash_platform_string(&h, platform, CL_PLATFORM_NAME) != 0 ||
        hash_platform_string(&h, platform, CL_PLATFORM_VERSION) != 0 ||
        hash_device_string(&h, ctx->device, CL_DEVICE_NAME) != 0 ||
        hash_device_string(&h, ctx->device, CL_DEVICE_VENDOR) != 0 ||
        hash_device_string(&h, ctx->device, CL_DEVICE_VERSION) != 0 ||
        hash_device_string(&h, ctx->device, CL_DRIVER_VERSION) != 0)
        return -1;
    hash_field(&h, build_options, strlen(build_options));
    hash_field(&h, source, strlen(source));
    attn_sha256_final(&h, key);
    return 0;
}

int attn_binary_cache_entry(attn_context_t ctx, const char *source, const char *build_options,
                            attn_binary_entry *entry) {
    if (!cache_dir(entry->dir, sizeof entry->dir))
        return 0;
    if (make_key(ctx, source, build_options, entry->key) != 0)
        return 0;
    char hex[2 * ATTN_SHA256_BYTES + 1];
    for (int i = 0; i < ATTN_SHA256_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", entry->key[i]);
    const int n = snprintf(entry->path, sizeof entry->path, "%s/%s.bin", entry->dir, hex);
    return n > 0 && (size_t)n < sizeof entry->path;
}

/* ---- Entry files ----------------------------------------------------------- */

static void put_le(unsigned char *p, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(value >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes) {
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++)
        value |= (uint64_t)p[i] << (8 * i);
    return value;
}

/* The whole of `path` when it is a regular file of a plausible size;
 * NULL otherwise. */
static unsigned char *read_file(const char *path, size_t *size) {
    /* O_NONBLOCK: a FIFO planted at the path must not block the build. */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    unsigned char *data = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= HEADER_BYTES &&
        (uint64_t)st.st_size <= HEADER_BYTES + MAX_PAYLOAD_BYTES)
        data = malloc((size_t)st.st_size);
    size_t done = 0;
    const size_t length = data ? (size_t)st.st_size : 0;
    while (data && done < length) {
        const ssize_t got = read(fd, data + done, length - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            free(data);
            data = NULL;
        } else {
            done += (size_t)got;
        }
    }
    close(fd);
    *size = length;
    return data;
}

/* The payload of a whole, uncorrupted entry for `key`; NULL for anything
 * else. */
static const unsigned char *check_entry(const unsigned char *data, size_t size,
                                        const unsigned char key[ATTN_SHA256_BYTES],
                                        size_t *payload_size) {
    if (memcmp(data, MAGIC, 8) != 0 || get_le(data + 8, 4) != FORMAT_VERSION ||
        get_le(data + 12, 4) != 0 || memcmp(data + 16, key, ATTN_SHA256_BYTES) != 0 ||
        get_le(data + 48, 8) != (uint64_t)(size - HEADER_BYTES) || size == HEADER_BYTES)
        return NULL;
    unsigned char digest[ATTN_SHA256_BYTES];
    attn_sha256_of(data + HEADER_BYTES, size - HEADER_BYTES, digest);
    if (memcmp(digest, data + 56, ATTN_SHA256_BYTES) != 0)
        return NULL;
    *payload_size = size - HEADER_BYTES;
    return data + HEADER_BYTES;
}

cl_program attn_binary_cache_load(attn_context_t ctx, const attn_binary_entry *entry,
                                  const char *build_options) {
    size_t size = 0;
    unsigned char *data = read_file(entry->path, &size);
    if (!data)
        return NULL;
    size_t payload_size = 0;
    const unsigned char *payload = check_entry(data, size, entry->key, &payload_size);
    cl_program program = NULL;
    if (payload) {
        cl_int binary_status = CL_SUCCESS, err;
        program = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &payload_size, &payload,
                                            &binary_status, &err);
        if (err != CL_SUCCESS || binary_status != CL_SUCCESS)
            program = NULL; /* the driver refused it: no object was made */
    }
    free(data);
    if (program &&
        clBuildProgram(program, 1, &ctx->device, build_options, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(program);
        program = NULL;
    }
    return program;
}

/* The binary `program` holds for ctx's device (malloc'ed), or NULL. A
 * program made from source in a context of several devices has a slot per
 * device; only ctx's is asked for. */
static unsigned char *program_binary(attn_context_t ctx, cl_program program, size_t *size) {
    cl_uint count = 0;
    if (clGetProgramInfo(program, CL_PROGRAM_NUM_DEVICES, sizeof count, &count, NULL) !=
            CL_SUCCESS ||
        count == 0)
        return NULL;
    cl_device_id *devices = malloc(count * sizeof *devices);
    size_t *sizes = malloc(count * sizeof *sizes);
    unsigned char **binaries = calloc(count, sizeof *binaries);
    unsigned char *binary = NULL;
    cl_uint mine = count;
    if (devices && sizes && binaries &&
        clGetProgramInfo(program, CL_PROGRAM_DEVICES, count * sizeof *devices, devices, NULL) ==
            CL_SUCCESS &&
        clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, count * sizeof *sizes, sizes, NULL) ==
            CL_SUCCESS)
        for (mine = 0; mine < count && devices[mine] != ctx->device; mine++)
            ;
    if (mine < count && sizes[mine] > 0 && sizes[mine] <= MAX_PAYLOAD_BYTES &&
        (binary = malloc(sizes[mine])) != NULL) {
        binaries[mine] = binary;
        if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, count * sizeof *binaries, binaries,
                             NULL) != CL_SUCCESS) {
            free(binary);
            binary = NULL;
        } else {
            *size = sizes[mine];
        }
    }
    free(devices);
    free(sizes);
    free(binaries);
    return binary;
}

static int write_all(int fd, const unsigned char *data, size_t size) {
    while (size > 0) {
        const ssize_t put = write(fd, data, size);
        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return -1;
        data += put;
        size -= (size_t)put;
    }
    return 0;
}

void attn_binary_cache_store(attn_context_t ctx, const attn_binary_entry *entry,
                             cl_program program) {
    size_t size = 0;
    unsigned char *binary = program_binary(ctx, program, &size);
    if (!binary)
        return;
    unsigned char header[HEADER_BYTES] = {0};
    memcpy(header, MAGIC, 8);
    put_le(header + 8, FORMAT_VERSION, 4);
    memcpy(header + 16, entry->key, ATTN_SHA256_BYTES);
    put_le(header + 48, size, 8);
    attn_sha256_of(binary, size, header + 56);

    /* A name of this writer's own beside the entry (same file system, so the
     * rename is atomic); concurrent writers of one key each rename a whole
     * file over the name, and the last one stays. */
    char temp[ATTN_BINARY_CACHE_PATH_MAX + 16];
    const int n = snprintf(temp, sizeof temp, "%s.tmp.XXXXXX", entry->path);
    int fd = -1;
    if (n > 0 && (size_t)n < sizeof temp && make_dirs(entry->dir) == 0)
        fd = mkstemp(temp);
    if (fd >= 0) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        int ok = write_all(fd, header, sizeof header) == 0 && write_all(fd, binary, size) == 0;
        ok &= close(fd) == 0;
        if (!ok || rename(temp, entry->path) != 0)
            unlink(temp);
    }
    free(binary);
}
