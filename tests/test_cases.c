/* The case language: one line that names a test case's shape, and its parser. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *test_mask_name(attn_mask mask) {
    switch (mask) {
    case ATTN_MASK_NONE:
        return "none";
    case ATTN_MASK_CAUSAL_TOP_LEFT:
        return "top-left";
    case ATTN_MASK_CAUSAL_BOTTOM_RIGHT:
        return "bottom-right";
    }
    return "?";
}

void test_describe(char *buf, size_t size, const attn_params *p, test_layout layout) {
    attn_params r;
    test_resolve(p, &r);
    int n = snprintf(buf, size, "B%d Hq%d Hkv%d Sq%d Sk%d D%d Dv%d %s %s", r.batch, r.heads_q,
                     r.heads_kv, r.seq_q, r.seq_k, r.head_dim, r.head_dim_v, test_mask_name(r.mask),
                     test_layout_name(layout));
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (n > 0 && (size_t)n < size) {                                                           \
            n += snprintf(buf + n, size - (size_t)n, __VA_ARGS__);                                 \
        }                                                                                          \
    } while (0)
    if (r.dtype != ATTN_DTYPE_F32) {
        APPEND(" %s", test_dtype_name(r.dtype));
    }
    if (r.window.enabled) {
        APPEND(" win=%d,%d", r.window.left, r.window.right);
    }
    if (r.softcap > 0.0f) {
        APPEND(" softcap=%g", (double)r.softcap);
    }
    if (r.alibi) {
        APPEND(" alibi");
    }
    if (r.bias.present) {
        APPEND(" bias=%dx%d", r.bias.batch, r.bias.heads);
    }
    if (r.keep_mask.present) {
        APPEND(" keep=%dx%d", r.keep_mask.batch, r.keep_mask.heads);
    }
    if (r.key_padding) {
        APPEND(" pad");
    }
    if (r.varlen) {
        APPEND(" varlen(%d,%d)", r.total_q, r.total_k);
    }
    if (r.dropout_p > 0.0f) {
        APPEND(" drop=%g,%llu,%llu", (double)r.dropout_p, (unsigned long long)r.dropout_seed,
               (unsigned long long)r.dropout_offset);
    }
#undef APPEND
}

/* Parses one case into params and options; returns 0 on a bad word. */
int test_parse_case(const char *text, attn_params *p, test_layout *layout, float *qk, int *quick) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    attn_params_init(p, 1, 1, 1, 1, 1);
    p->heads_kv = 0;
    p->head_dim_v = 0;
    *layout = TEST_BHSD;
    *qk = 1.0f;
    *quick = 0;
    int hkv = 0, dv = 0;
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
        int a = 0, b = 0;
        float f = 0;
        if (sscanf(w, "B%d", &a) == 1) {
            p->batch = a;
        } else if (sscanf(w, "Hq%d", &a) == 1) {
            p->heads_q = a;
        } else if (sscanf(w, "Hkv%d", &a) == 1) {
            hkv = a;
        } else if (sscanf(w, "Sq%d", &a) == 1) {
            p->seq_q = a;
        } else if (sscanf(w, "Sk%d", &a) == 1) {
            p->seq_k = a;
        } else if (sscanf(w, "Dv%d", &a) == 1) {
            dv = a;
        } else if (sscanf(w, "D%d", &a) == 1) {
            p->head_dim = a;
        } else if (!strcmp(w, "none") || !strcmp(w, "tl") || !strcmp(w, "br")) {
            p->mask = !strcmp(w, "tl")   ? ATTN_MASK_CAUSAL_TOP_LEFT
                      : !strcmp(w, "br") ? ATTN_MASK_CAUSAL_BOTTOM_RIGHT
                                         : ATTN_MASK_NONE;
        } else if (!strcmp(w, "bhsd") || !strcmp(w, "bshd") || !strcmp(w, "hbsd") ||
                   !strcmp(w, "padded")) {
            *layout = !strcmp(w, "bshd")     ? TEST_BSHD
                      : !strcmp(w, "hbsd")   ? TEST_HBSD
                      : !strcmp(w, "padded") ? TEST_PADDED
                                             : TEST_BHSD;
        } else if (!strcmp(w, "f32") || !strcmp(w, "f16") || !strcmp(w, "bf16")) {
            p->dtype = !strcmp(w, "f16")    ? ATTN_DTYPE_F16
                       : !strcmp(w, "bf16") ? ATTN_DTYPE_BF16
                                            : ATTN_DTYPE_F32;
        } else if (sscanf(w, "win=%d,%d", &a, &b) == 2) {
            p->window = (attn_window){1, a, b};
        } else if (sscanf(w, "softcap=%f", &f) == 1) {
            p->softcap = f;
        } else if (sscanf(w, "qk=%f", &f) == 1) {
            *qk = f;
        } else if (!strcmp(w, "alibi")) {
            p->alibi = 1;
        } else if (sscanf(w, "bias=%dx%d", &a, &b) == 2) {
            p->bias = (attn_score_operand){1, a, b, {0, 0, 0}};
        } else if (sscanf(w, "keep=%dx%d", &a, &b) == 2) {
            p->keep_mask = (attn_score_operand){1, a, b, {0, 0, 0}};
        } else if (!strcmp(w, "pad")) {
            p->key_padding = 1;
        } else if (!strcmp(w, "varlen")) {
            p->varlen = 1;
        } else if (sscanf(w, "drop=%f", &f) == 1) {
            /* drop=P or drop=P,SEED,OFFSET (default seed 42, offset 0) */
            unsigned long long seed = 42, offset = 0;
            sscanf(w, "drop=%*f,%llu,%llu", &seed, &offset);
            p->dropout_p = f;
            p->dropout_seed = seed;
            p->dropout_offset = offset;
        } else if (!strcmp(w, "quick")) {
            *quick = 1;
        } else {
            printf("FAIL: bad word '%s' in case \"%s\"\n", w, text);
            return 0;
        }
    }
    p->heads_kv = hkv ? hkv : p->heads_q;
    p->head_dim_v = dv ? dv : p->head_dim;
    return 1;
}
