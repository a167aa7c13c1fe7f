/* Built program binaries kept on disk between processes, so that a new
 * context loads its kernels instead of compiling them (seconds per program
 * on some drivers). See docs/api.md ("Kernel cache") for the directory. The
 * cache only ever speeds a build up: whatever goes wrong with it (no
 * directory, a full disk, a corrupt, truncated or foreign file, a binary the
 * driver refuses) the program is built from source, and nothing is printed. */
#ifndef ATTN_BINARY_CACHE_H
#define ATTN_BINARY_CACHE_H

#include "attn_internal.h"
#include "sha256.h"

#define ATTN_BINARY_CACHE_PATH_MAX 4096

/* Where one program's binary lives: its key, a SHA-256 over everything the
 * binary depends on, and the file named after it. */
typedef struct attn_binary_entry {
    unsigned char key[ATTN_SHA256_BYTES];
    char dir[ATTN_BINARY_CACHE_PATH_MAX];
    char path[ATTN_BINARY_CACHE_PATH_MAX]; /* dir/<key in hex>.bin */
} attn_binary_entry;

/* The entry of the program built from `source` with `build_options` (the
 * exact string given to clBuildProgram) for ctx's device. Returns 0 when the
 * cache is off (ATTN_CL_CACHE_DIR empty, or no directory to default to) or
 * the device cannot be described; 1 when *entry is filled. */
int attn_binary_cache_entry(attn_context_t ctx, const char *source, const char *build_options,
                            attn_binary_entry *entry);

/* The program stored as `entry`, created from its binary and built with
 * `build_options` for ctx's device; NULL when there is none usable. */
cl_program attn_binary_cache_load(attn_context_t ctx, const attn_binary_entry *entry,
                                  const char *build_options);

/* Stores the binary of `program` (built for ctx's device) as `entry`: written
 * to a temporary file and renamed, so that readers, in this process or
 * another, see a whole entry or none. Failures are ignored. */
void attn_binary_cache_store(attn_context_t ctx, const attn_binary_entry *entry,
                             cl_program program);

#endif
