/* Kernel parameters of the fused path, per device (the three-kernel path
 * reads them too: the variant picks its shape, its cpu shape takes rows,
 * tile_k and vec; lib/three_kernel.c): a small table keyed by
 * device type, vendor and device name (first match wins, defaults last),
 * then overrides.
 *
 * Override syntax (ATTN_CL_TUNE and attn_context_set_tuning): a
 * comma-separated list of key=value, e.g. "variant=cpu,rows=8,tile_k=8".
 * Keys left out keep the table's value; when the override names the other
 * kernel shape (cpu or gpu) than the device's entry, the shape keys it
 * leaves out (rows, tile_k, wg, vec, unroll) take that shape's defaults.
 * Keys:
 *
 *   variant  cpu | gpu | decode   kernel shape (kernels/flash_cpu.cl,
 *                        flash_gpu.cl; decode: lib/decode.c's algorithm,
 *                        kernels/flash_decode.cl, for any problem). Naming a
 *                        variant also turns off AUTO's choice of the decode
 *                        algorithm for decode-shaped problems on CPUs.
 *   rows     1..256      query rows per work-item (cpu, 1..8) or per
 *                        work-group (gpu)
 *   tile_k   1..256      keys per tile (cpu: 4, 8 or 16; gpu: a multiple of
 *                        wg / rows)
 *   wg       1..1024     work-items per work-group (cpu: 1; gpu: a multiple
 *                        of rows, at most the device's limit)
 *   vec      4, 8, 16    accumulator vector width across head_dim_v (cpu)
 *   unroll   1..64       unroll factor of the head_dim loop of Q.K^T (cpu)
 *   splits   0..256      decode: key ranges a kv head is split into (0: as
 *                        many as fill the device's compute units)
 *   decode_wg  1..1024   decode: 1 for the cpu shape (kernels/flash_decode.cl,
 *                        one work-item a block of rows), a power of two for
 *                        the gpu shape with that many work-items a group
 *                        (kernels/flash_decode_gpu.cl)
 *   bwd_block  0, 4, 8, 16  the backward's cpu shape: rows a work-item holds
 *                        (kernels/backward.cl's BLOCK; 0: 16)
 *   bwd_tile   0..8      its rows / keys a step takes (TILE; 0: 4)
 *   bwd_rows, bwd_tile_k, bwd_wg  0..256, 0..256, 0..1024: the backward's
 *                        gpu shape (kernels/backward_gpu.cl), as rows, tile_k
 *                        and wg are the forward's (0: the forward's value)
 *
 * Precedence: the table, then the context's spec (attn_context_set_tuning),
 * then ATTN_CL_TUNE, so that the environment can override an application's
 * choice. An empty spec is no override. A malformed spec fails the forward
 * with ATTN_ERR_INVALID_VALUE and a message naming the spec.
 *
 * Values the chosen variant, the problem or the device cannot take: when a
 * key the refusal depends on came from an override, the caller chose it, and
 * the forward fails with ATTN_ERR_INVALID_VALUE naming that override; when
 * they are all the table's, the built-in choice cannot serve a valid
 * request: ATTN_ERR_UNSUPPORTED (attn_tuning_refuse decides). */
#ifndef ATTN_TUNING_H
#define ATTN_TUNING_H

#include "attn_internal.h"

typedef enum attn_fused_variant {
    ATTN_FUSED_CPU = 0, /* one work-item per block of query rows, explicit vectors */
    ATTN_FUSED_GPU = 1, /* a work-group per block of query rows, tiles in local memory */
    ATTN_FUSED_DECODE = 2, /* lib/decode.c: K and V in place, rows of a kv head together */
} attn_fused_variant;

/* The keys, as bits of a set. */
enum {
    ATTN_TUNE_VARIANT = 1 << 0,
    ATTN_TUNE_ROWS = 1 << 1,
    ATTN_TUNE_TILE_K = 1 << 2,
    ATTN_TUNE_WG = 1 << 3,
    ATTN_TUNE_VEC = 1 << 4,
    ATTN_TUNE_UNROLL = 1 << 5,
    ATTN_TUNE_SPLITS = 1 << 6,
    ATTN_TUNE_BWD_BLOCK = 1 << 7,
    ATTN_TUNE_BWD_TILE = 1 << 8,
    ATTN_TUNE_BWD_ROWS = 1 << 9,
    ATTN_TUNE_BWD_TILE_K = 1 << 10,
    ATTN_TUNE_BWD_WG = 1 << 11,
    ATTN_TUNE_DECODE_WG = 1 << 12,
};

typedef struct attn_tuning {
    attn_fused_variant variant;
    int rows;   /* cpu: per work-item; gpu: per work-group */
    int tile_k; /* keys per tile */
    int wg;     /* work-items per work-group */
    int vec;    /* cpu: accumulator vector width */
    int unroll; /* cpu: head_dim loop unroll */
    int splits; /* decode: key splits, 0 = by compute units */
    /* The backward's shapes (lib/backward.c); 0 everywhere: its defaults.
     * cpu shape (any variant but gpu): rows a work-item holds (4, 8, 16;
     * 0: 16) and rows or keys a step takes (1..8; 0: 4). gpu shape: rows a
     * work-group owns, rows of the other side a tile, work-items a group
     * (0: the forward's rows, tile_k and wg). */
    int bwd_block, bwd_tile;
    int bwd_rows, bwd_tile_k, bwd_wg;
    int decode_wg; /* decode: 1 the cpu shape, more the gpu shape's group */
} attn_tuning;

/* Where a tuning's values came from: the keys the context's spec and
 * ATTN_CL_TUNE set (each key counted for the one applied last); the rest are
 * the table's. */
typedef struct attn_tuning_origin {
    unsigned context, env;
} attn_tuning_origin;

/* The table's entry for `device`'s type / vendor / name and p's head dims
 * (the larger of head_dim and head_dim_v picks the entry), with ctx's spec
 * and ATTN_CL_TUNE applied, and which keys those set. Checks the result's
 * ranges, not the device's limits (fused.c does, knowing the problem). The
 * caller holds ctx->lock. */
attn_status attn_tuning_lookup(attn_context_t ctx, const attn_params *p, attn_tuning *out,
                               attn_tuning_origin *origin);

/* Replaces `t`'s forward kernel shape (variant, rows, tile_k, wg, vec,
 * unroll) by the cpu shape's defaults for `head_dim`: for the fused path's
 * probabilities, which only that shape writes, when no override chose one. */
void attn_tuning_take_cpu_shape(attn_tuning *t, int head_dim);

/* Parses `spec` over `t` (keys not named keep their value); `origin` names
 * the spec in messages ("ATTN_CL_TUNE", "attn_context_set_tuning"). When
 * `named` is not NULL it receives the set of keys the spec names. */
attn_status attn_tuning_parse(attn_context_t ctx, const char *origin, const char *spec,
                              attn_tuning *t, unsigned *named);

/* Refuses `t` for `reason` (printf-style), which depends on the keys in
 * `keys`: ATTN_ERR_INVALID_VALUE naming the override(s) when `origin` says
 * one of them came from one, otherwise ATTN_ERR_UNSUPPORTED naming the table's entry.
 * The caller holds ctx->lock (the context's spec is read). */
attn_status attn_tuning_refuse(attn_context_t ctx, const attn_tuning *t,
                               const attn_tuning_origin *origin, unsigned keys, const char *reason,
                               ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Writes `t` in the override syntax ("variant=cpu,rows=6,..."). */
void attn_tuning_format(const attn_tuning *t, char *buf, size_t size);

#endif
