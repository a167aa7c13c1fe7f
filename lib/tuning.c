/* The fused path's per-device parameter table and its overrides (syntax and
 * precedence in tuning.h). */
#include "tuning.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tuning_entry {
    cl_device_type type; /* 0: any */
    const char *vendor;  /* case-insensitive substring; "" matches any */
    const char *name;    /* likewise, of the device name */
    int max_head_dim;    /* the entry applies up to this head_dim; 0: any */
    attn_tuning t;
} tuning_entry;

/* First match wins: specific devices first, then per-type defaults, then the
 * catch-all. Measured entries say where they were measured. */
static const tuning_entry table[] = {
    /* PoCL 3.1 on 2 AMD EPYC (Zen 3) cores, fp32, 8 heads, n=4096: 6 rows of
     * 16-key tiles give 116-138 GFLOP/s for head_dim 32..256; 4-5 rows are
     * within noise of it, 2-3 rows ~83, 8 rows spill the 16 AVX2 registers
     * (~77), 8-key tiles ~104; unroll and vec=8 change little. */
    {CL_DEVICE_TYPE_CPU, "", "", 0, {ATTN_FUSED_CPU, 6, 16, 1, 16, 1, 0, 0, 0, 0, 0, 0, 1}},
    /* NVIDIA H200 (driver 580.159, OpenCL 3.0 CUDA), fp32, 8 heads, n=4096,
     * head_dim 64, attn_tune: 64 rows a group, a work-item a row, 64-key
     * tiles, 2.81 ms (12.2 TFLOP/s) against 4.44 ms (7.7) for the GPU
     * default below; 32 rows best at 3.32 ms, 4 rows 7.6 ms. */
    {CL_DEVICE_TYPE_GPU, "NVIDIA", "H200", 64,
     {ATTN_FUSED_GPU, 64, 64, 64, 16, 1, 0, 0, 0, 0, 0, 0, 64}},
    /* The same, head_dim 128 (attn_tune --seq 4096 --head-dim 128): 64 rows,
     * a work-item a row, 32-key tiles, 5.62 ms (12.2 TFLOP/s) against 9.92
     * ms for the GPU default below (16 rows, 128 work-items); 32 rows best
     * at 6.91 ms, 16 rows at 8.25 ms. Decoding (attn_tune --algo decode,
     * 8 sequences of 16384 f32 keys, 32/8 heads): groups of 256, 0.58 ms
     * against 0.71 for 64 and 0.69 for 128, with the library's splits (as
     * fast as the best fixed ones, 4: 0.57 ms). A 16-bit cache takes the same
     * groups, unmeasured. */
    {CL_DEVICE_TYPE_GPU, "NVIDIA", "H200", 128,
     {ATTN_FUSED_GPU, 64, 32, 64, 16, 1, 0, 0, 0, 0, 0, 0, 256}},
    /* GPUs (not measured here): 16 rows x 8 work-items a row; the key tile
     * shrinks with head_dim so that Q, K/V and P tiles stay within 32 KiB of
     * local memory. Decoding: groups of 64. */
    {CL_DEVICE_TYPE_GPU, "", "", 64, {ATTN_FUSED_GPU, 16, 64, 128, 16, 1, 0, 0, 0, 0, 0, 0, 64}},
    {CL_DEVICE_TYPE_GPU, "", "", 128, {ATTN_FUSED_GPU, 16, 32, 128, 16, 1, 0, 0, 0, 0, 0, 0, 64}},
    {CL_DEVICE_TYPE_GPU, "", "", 0, {ATTN_FUSED_GPU, 16, 16, 128, 16, 1, 0, 0, 0, 0, 0, 0, 64}},
    /* Anything else (accelerators, custom devices): the work-group shape. */
    {0, "", "", 128, {ATTN_FUSED_GPU, 16, 32, 128, 16, 1, 0, 0, 0, 0, 0, 0, 64}},
    {0, "", "", 0, {ATTN_FUSED_GPU, 16, 16, 128, 16, 1, 0, 0, 0, 0, 0, 0, 64}},
};

static int contains_nocase(const char *haystack, const char *needle) {
    const size_t n = strlen(needle);
    if (n == 0)
        return 1;
    for (; *haystack; haystack++) {
        size_t i = 0;
        while (i < n && haystack[i] &&
               tolower((unsigned char)haystack[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

/* ---- The context's spec --------------------------------------------------- */

attn_status attn_context_set_tuning(attn_context_t ctx, const char *spec) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_context_set_tuning: ctx is NULL");
    if (!spec)
        spec = "";
    if (strlen(spec) >= ATTN_TUNING_SPEC_MAX)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "attn_context_set_tuning: the spec is longer than %d characters",
                         ATTN_TUNING_SPEC_MAX - 1);
    /* Syntax and ranges now; whether the values suit a problem and the
     * device is known only at a forward. */
    attn_tuning scratch = table[0].t;
    attn_status status = attn_tuning_parse(ctx, "attn_context_set_tuning", spec, &scratch, NULL);
    if (status != ATTN_SUCCESS)
        return status;
    pthread_mutex_lock(&ctx->lock);
    memcpy(ctx->tuning_spec, spec, strlen(spec) + 1);
    pthread_mutex_unlock(&ctx->lock);
    return ATTN_SUCCESS;
}

/* ---- Parsing ------------------------------------------------------------ */

typedef struct tuning_key {
    const char *name;
    int min, max;
    size_t offset;
    unsigned bit;
} tuning_key;

static const tuning_key keys[] = {
    {"rows", 1, 256, offsetof(attn_tuning, rows), ATTN_TUNE_ROWS},
    {"tile_k", 1, 256, offsetof(attn_tuning, tile_k), ATTN_TUNE_TILE_K},
    {"wg", 1, 1024, offsetof(attn_tuning, wg), ATTN_TUNE_WG},
    {"vec", 4, 16, offsetof(attn_tuning, vec), ATTN_TUNE_VEC},
    {"unroll", 1, 64, offsetof(attn_tuning, unroll), ATTN_TUNE_UNROLL},
    {"splits", 0, 256, offsetof(attn_tuning, splits), ATTN_TUNE_SPLITS},
    {"bwd_block", 0, 16, offsetof(attn_tuning, bwd_block), ATTN_TUNE_BWD_BLOCK},
    {"bwd_tile", 0, 8, offsetof(attn_tuning, bwd_tile), ATTN_TUNE_BWD_TILE},
    {"bwd_rows", 0, 256, offsetof(attn_tuning, bwd_rows), ATTN_TUNE_BWD_ROWS},
    {"bwd_tile_k", 0, 256, offsetof(attn_tuning, bwd_tile_k), ATTN_TUNE_BWD_TILE_K},
    {"bwd_wg", 0, 1024, offsetof(attn_tuning, bwd_wg), ATTN_TUNE_BWD_WG},
    {"decode_wg", 1, 1024, offsetof(attn_tuning, decode_wg), ATTN_TUNE_DECODE_WG},
};

attn_status attn_tuning_parse(attn_context_t ctx, const char *origin, const char *spec,
                              attn_tuning *t, unsigned *named) {
    attn_tuning out = *t;
    unsigned seen = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        const char *next = end ? end + 1 : p + strlen(p);
        size_t len = end ? (size_t)(end - p) : strlen(p);
        /* Blanks around an item are allowed; empty items are skipped. */
        while (len > 0 && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0) {
            p = next;
            continue;
        }
        const char *eq = memchr(p, '=', len);
        if (!eq)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "%s \"%s\": \"%.*s\" is not key=value",
                             origin, spec, (int)len, p);
        const size_t key_len = (size_t)(eq - p), value_len = len - key_len - 1;
        char value[32];
        if (value_len == 0 || value_len >= sizeof value)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "%s \"%s\": bad value in \"%.*s\"",
                             origin, spec, (int)len, p);
        memcpy(value, eq + 1, value_len);
        value[value_len] = '\0';

        if (key_len == 7 && strncmp(p, "variant", 7) == 0) {
            if (strcmp(value, "cpu") == 0)
                out.variant = ATTN_FUSED_CPU;
            else if (strcmp(value, "gpu") == 0)
                out.variant = ATTN_FUSED_GPU;
            else if (strcmp(value, "decode") == 0)
                out.variant = ATTN_FUSED_DECODE;
            else
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "%s \"%s\": variant must be cpu, gpu or decode, not \"%s\"",
                                 origin, spec, value);
            seen |= ATTN_TUNE_VARIANT;
        } else {
            const tuning_key *key = NULL;
            for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
                if (strlen(keys[i].name) == key_len && strncmp(p, keys[i].name, key_len) == 0)
                    key = &keys[i];
            if (!key)
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "%s \"%s\": unknown key \"%.*s\" (variant, rows, tile_k, wg, "
                                 "vec, unroll, splits, bwd_block, bwd_tile, bwd_rows, "
                                 "bwd_tile_k, bwd_wg)",
                                 origin, spec, (int)key_len, p);
            char *rest;
            errno = 0;
            const long v = strtol(value, &rest, 10);
            if (errno || *rest || rest == value || v < key->min || v > key->max)
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "%s \"%s\": %s must be an integer in %d..%d, not \"%s\"", origin,
                                 spec, key->name, key->min, key->max, value);
            *(int *)((char *)&out + key->offset) = (int)v;
            seen |= key->bit;
        }
        p = next;
    }
    *t = out;
    if (named)
        *named = seen;
    return ATTN_SUCCESS;
}

void attn_tuning_format(const attn_tuning *t, char *buf, size_t size) {
    static const char *const variants[] = {"cpu", "gpu", "decode"};
    int n = snprintf(buf, size,
                     "variant=%s,rows=%d,tile_k=%d,wg=%d,vec=%d,unroll=%d,splits=%d,decode_wg=%d",
                     variants[t->variant], t->rows, t->tile_k, t->wg, t->vec, t->unroll, t->splits,
                     t->decode_wg);
    /* The backward's keys only where they leave its defaults. */
    const struct {
        const char *name;
        int value;
    } bwd[] = {{"bwd_block", t->bwd_block},
               {"bwd_tile", t->bwd_tile},
               {"bwd_rows", t->bwd_rows},
               {"bwd_tile_k", t->bwd_tile_k},
               {"bwd_wg", t->bwd_wg}};
    for (size_t i = 0; i < sizeof bwd / sizeof bwd[0]; i++)
        if (bwd[i].value && n >= 0 && (size_t)n < size)
            n += snprintf(buf + n, size - (size_t)n, ",%s=%d", bwd[i].name, bwd[i].value);
}

/* ---- Refusals ----------------------------------------------------------- */

attn_status attn_tuning_refuse(attn_context_t ctx, const attn_tuning *t,
                               const attn_tuning_origin *origin, unsigned keys, const char *reason,
                               ...) {
    char why[256], text[200];
    va_list args;
    va_start(args, reason);
    vsnprintf(why, sizeof why, reason, args);
    va_end(args);
    attn_tuning_format(t, text, sizeof text);
    const int by_context = (origin->context & keys) != 0, by_env = (origin->env & keys) != 0;
    if (!by_context && !by_env)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "fused tuning %s, the built-in table's entry for this device: %s "
                         "(attn_context_set_tuning or ATTN_CL_TUNE can choose other values)",
                         text, why);
    const char *env = getenv("ATTN_CL_TUNE");
    char context_part[ATTN_TUNING_SPEC_MAX + 40] = "", env_part[300] = "";
    if (by_context)
        snprintf(context_part, sizeof context_part, "attn_context_set_tuning \"%s\"%s",
                 ctx->tuning_spec, by_env ? " and " : "");
    if (by_env)
        snprintf(env_part, sizeof env_part, "ATTN_CL_TUNE \"%.250s\"", env ? env : "");
    return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "%s%s (fused tuning %s): %s", context_part,
                     env_part, text, why);
}

/* ---- Lookup ------------------------------------------------------------- */

/* The context's spec, then ATTN_CL_TUNE, over *t; which keys each set. */
static attn_status apply_overrides(attn_context_t ctx, attn_tuning *t, attn_tuning_origin *from) {
    attn_status status = ATTN_SUCCESS;
    from->context = from->env = 0;
    if (ctx->tuning_spec[0])
        status =
            attn_tuning_parse(ctx, "attn_context_set_tuning", ctx->tuning_spec, t, &from->context);
    const char *env = getenv("ATTN_CL_TUNE");
    if (status == ATTN_SUCCESS && env && *env)
        status = attn_tuning_parse(ctx, "ATTN_CL_TUNE", env, t, &from->env);
    from->context &= ~from->env;
    return status;
}

/* The first generic entry (no vendor or device name) of `variant` (cpu or
 * gpu) that serves `head_dim`: that kernel shape's defaults. */
static const attn_tuning *variant_defaults(attn_fused_variant variant, int head_dim) {
    const tuning_entry *last = NULL;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const tuning_entry *e = &table[i];
        if (e->t.variant != variant || e->vendor[0] || e->name[0])
            continue;
        if (e->max_head_dim == 0 || head_dim <= e->max_head_dim)
            return &e->t;
        last = e;
    }
    return &last->t; /* the table has an entry without a limit for both shapes */
}

/* The forward's kernel shape of `from` (variant, rows, tile_k, wg, vec,
 * unroll) into *t; decoding's and the backward's keys stay. */
static void take_shape(attn_tuning *t, const attn_tuning *from) {
    t->variant = from->variant;
    t->rows = from->rows;
    t->tile_k = from->tile_k;
    t->wg = from->wg;
    t->vec = from->vec;
    t->unroll = from->unroll;
}

void attn_tuning_take_cpu_shape(attn_tuning *t, int head_dim) {
    take_shape(t, variant_defaults(ATTN_FUSED_CPU, head_dim));
}

attn_status attn_tuning_lookup(attn_context_t ctx, const attn_params *p, attn_tuning *out,
                               attn_tuning_origin *origin) {
    const int head_dim = p->head_dim > p->head_dim_v ? p->head_dim : p->head_dim_v;
    cl_device_type type = 0;
    cl_int err = clGetDeviceInfo(ctx->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo(CL_DEVICE_TYPE)");
    const tuning_entry *found = &table[sizeof table / sizeof table[0] - 1];
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const tuning_entry *e = &table[i];
        if ((e->type == 0 || (e->type & type)) && contains_nocase(ctx->info.vendor, e->vendor) &&
            contains_nocase(ctx->info.device_name, e->name) &&
            (e->max_head_dim == 0 || head_dim <= e->max_head_dim)) {
            found = e;
            break;
        }
    }
    attn_tuning t = found->t;
    attn_tuning_origin from = {0, 0};
    attn_status status = apply_overrides(ctx, &t, &from);
    if (status != ATTN_SUCCESS)
        return status;
    if (t.variant != found->t.variant && t.variant != ATTN_FUSED_DECODE) {
        /* An override chose the other kernel shape: the shape keys it left
         * out come from that shape's defaults (a GPU's wg 128 means nothing
         * to the cpu shape), the rest from this device's entry. */
        attn_tuning base = found->t;
        take_shape(&base, variant_defaults(t.variant, head_dim));
        t = base;
        status = apply_overrides(ctx, &t, &from);
        if (status != ATTN_SUCCESS)
            return status;
    }

    if (t.variant == ATTN_FUSED_DECODE) {
        /* lib/decode.c chooses its own shape; only vec (its widest vector)
         * and splits apply. */
        if (t.vec != 4 && t.vec != 8 && t.vec != 16)
            return attn_tuning_refuse(ctx, &t, &from, ATTN_TUNE_VEC | ATTN_TUNE_VARIANT,
                                      "the decode variant takes vec 4, 8 or 16");
    } else if (t.variant == ATTN_FUSED_CPU) {
        const unsigned bad =
            (t.rows > 8 ? ATTN_TUNE_ROWS : 0u) |
            (t.tile_k != 4 && t.tile_k != 8 && t.tile_k != 16 ? ATTN_TUNE_TILE_K : 0u) |
            (t.vec != 4 && t.vec != 8 && t.vec != 16 ? ATTN_TUNE_VEC : 0u) |
            (t.wg != 1 ? ATTN_TUNE_WG : 0u);
        if (bad)
            return attn_tuning_refuse(ctx, &t, &from, bad | ATTN_TUNE_VARIANT,
                                      "the cpu variant takes rows 1..8, tile_k and vec 4, 8 or "
                                      "16, and wg 1");
    } else if (t.wg % t.rows != 0 || t.tile_k % (t.wg / t.rows) != 0) {
        return attn_tuning_refuse(
            ctx, &t, &from, ATTN_TUNE_VARIANT | ATTN_TUNE_ROWS | ATTN_TUNE_TILE_K | ATTN_TUNE_WG,
            "the gpu variant needs wg a multiple of rows and tile_k a multiple of wg / rows");
    }
    if (t.decode_wg & (t.decode_wg - 1))
        return attn_tuning_refuse(ctx, &t, &from, ATTN_TUNE_DECODE_WG,
                                  "decode_wg must be 1 (the cpu shape) or a power of two");
    if (t.bwd_block != 0 && t.bwd_block != 4 && t.bwd_block != 8 && t.bwd_block != 16)
        return attn_tuning_refuse(ctx, &t, &from, ATTN_TUNE_BWD_BLOCK,
                                  "bwd_block must be 4, 8 or 16 (or 0, the default)");
    if (t.variant == ATTN_FUSED_GPU) {
        const int rows = t.bwd_rows ? t.bwd_rows : t.rows, wg = t.bwd_wg ? t.bwd_wg : t.wg;
        if (wg % rows != 0)
            return attn_tuning_refuse(
                ctx, &t, &from,
                ATTN_TUNE_BWD_ROWS | ATTN_TUNE_BWD_WG | ATTN_TUNE_ROWS | ATTN_TUNE_WG,
                "the backward's gpu shape needs its wg a multiple of its rows");
    }
    *out = t;
    *origin = from;
    return ATTN_SUCCESS;
}
