/* libFuzzer target for the public API: each input decodes into one request
 * (attn_params with every feature, small tensors in the storage type, the
 * extra inputs, which outputs and calls) and runs it on one context created
 * once. Built with -fsanitize=fuzzer,address,undefined (meson -Dfuzz=true,
 * clang); tests/fuzz_replay.c runs the same function over files, so that
 * the seed corpus and every reduced crash also run in the ordinary builds.
 *
 * Properties checked (a violation prints why and aborts):
 *   - every status is ATTN_SUCCESS or one of the library's own codes
 *     (-2001..-2012); an OpenCL code on these small requests is a finding;
 *   - a failed call leaves a message and every output byte untouched;
 *   - attn_check answers with the forward's own status (and, on success,
 *     the algorithm the request asks for: AUTO is fused unless the
 *     probabilities are wanted). attn_check takes no pointers: where the
 *     only fault is a missing input (ATTN_ERR_NULL_ARGUMENT) or a bad
 *     per-batch or per-head array (ATTN_ERR_INVALID_VALUE), it succeeds
 *     and the forward must give exactly that status, a missing one first
 *     (attn_reference_host may name a bad array before a missing bias or
 *     keep-mask);
 *   - a request that is valid by the header's rules (sizes, head dims,
 *     enums, storage type, finite scale, softcap finite and >= 0, a known
 *     non-overlapping layout, bias and keep-mask broadcast over 0, 1 or the
 *     full count with strides >= 0, varlen totals > 0, every input params
 *     ask for given, key lengths in 0..seq_k, finite ALiBi slopes, and
 *     cu_seqlens from 0, not falling, no sequence longer than seq_q/seq_k,
 *     ending at most at the totals) succeeds on attn_check, the host call,
 *     the device call and attn_reference_host;
 *   - a successful forward leaves the bytes between strided rows, and with
 *     varlen the rows past the last sequence, alone; is answered by
 *     attn_reference_host too; and, when its inputs are modest (Q, K, V
 *     finite and |x| <= 4, |scale| <= 2, bias entries in [-4, 4] or -inf,
 *     |ALiBi slopes| <= 4), or wide (value_mode's wide scores or biases:
 *     Q, K, V finite, any finite scale, subnormal included, bias entries
 *     finite, up to -FLT_MAX, or -inf, |ALiBi slopes| <= 4, and
 *     naive_fp32 agreeing with the reference, as it does wherever fp32
 *     can hold the problem), matches the reference within test_util.h's
 *     max-error bound: max|out - ref| <= 2 max|naive_fp32 - ref| + 1e-6
 *     max(1, max|ref|), -inf exactly where the reference has it, nothing
 *     else non-finite (the NMSE rule is left to test_forward's large
 *     shapes: see check_against_reference). With f16 or bf16 storage, O is
 *     compared as test_compare_output does: the double reference on the
 *     stored values, unrounded, and naive_fp32's O rounded to the storage
 *     type;
 *   - the device-memory call gives the host call's status and bits, and
 *     refuses buffers one element short (O, bias, keep-mask:
 *     ATTN_ERR_BUFFER_TOO_SMALL) and offsets that are not whole elements (Q,
 *     bias: ATTN_ERR_INVALID_VALUE), leaving the caller's buffers untouched;
 *   - inputs params do not ask for (bias, keep-mask, key lengths, slopes,
 *     cu_seqlens holding garbage) change nothing;
 *   - attn_merge and attn_merge_device of a result with a part whose rows
 *     are all masked (LSE -inf, O NaN: never read), on either side and in
 *     place, give every row back, and of a result with itself the same O
 *     and LSE + log 2 (the device's float arithmetic within 2 ulps); except
 *     that, as the header says, a row at -inf in both is O 0 and a NaN LSE
 *     makes the row NaN (results holding an LSE of +inf are not merged:
 *     exp(inf - inf)). A merge refuses what attn_check refuses, and
 *     missing pointers, writing nothing;
 *   - attn_context_set_tuning accepts or refuses any string with
 *     ATTN_ERR_INVALID_VALUE; attn_status_name never returns NULL.
 *   - KV-cache requests (the kvcache byte) hold tests/fuzz_kvcache.c's
 *     properties.
 *
 * Kernel builds cost ~0.5 s each on PoCL, and every distinct (head dims,
 * storage type, mask, feature flags, LSE) makes new ones. So a forward
 * that would build kernels (attn_check accepts it and nothing is missing or
 * out of range) runs on the device only when it is in a small set (see
 * device_allowed): float storage without features, any mask and 7 pairs of
 * head dims from {1, 3, 8, 16}; or one of a few fixed (storage type, mask,
 * features, head dims) combinations, with LSE. PoCL also compiles the
 * merge and the three-kernel path's commit for each global size: those
 * run only at a few shapes (launch_shapes). Every other such request goes through
 * attn_check and attn_reference_host alone, the reference checked against
 * naive_fp32. Refused requests build nothing and always run every call.
 * Since mutation seldom lands on a combination, a selector in the input
 * (force_combo) puts a request on one, leaving the rest to the input.
 *
 * Library bugs found here and not fixed yet are listed in known_bug(): their
 * requests run every call and check, but their values are not compared.
 * ATTN_FUZZ_STATS=1 prints at exit how the inputs were answered.
 *
 * Input layout (a byte read past the end is 0, which turns a feature off):
 * see decode() below. */
#include "fuzz_request.h"
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- Kernel builds ---------------------------------------------------------- */

/* (head_dim, head_dim_v) of float requests without features that run on
 * the device: the fused program is built per pair, LSE and mask. */
static const int32_t plain_dims[7][2] = {{1, 1},  {3, 3}, {8, 8}, {16, 16},
                                         {1, 16}, {3, 8}, {16, 3}};

/* The two kernels launched without a fixed work-group size, the merge and
 * the three-kernel path's commit of a device call's O and LSE, are compiled
 * by PoCL for each global size (rows, heads_q, batch): they run (and
 * succeed) only at these, which the seeds use and most mutations keep.
 * Calls that are refused compile nothing and always run. */
static const int32_t launch_shapes[4][3] = {{9, 2, 1}, {9, 2, 2}, {17, 2, 2}, {18, 2, 1}};

static int launch_shape_ok(int64_t rows, int64_t heads, int64_t batch) {
    for (size_t i = 0; i < sizeof launch_shapes / sizeof launch_shapes[0]; i++) {
        if (rows == launch_shapes[i][0] && heads == launch_shapes[i][1] &&
            batch == launch_shapes[i][2]) {
            return 1;
        }
    }
    return 0;
}

static int device_allowed(const request *q) {
    const attn_params *p = &q->p;
    const int32_t dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    const unsigned features = feature_bits(p);
    if (p->dtype == ATTN_DTYPE_F32 && features == 0) {
        for (size_t i = 0; i < sizeof plain_dims / sizeof plain_dims[0]; i++) {
            if (p->head_dim == plain_dims[i][0] && dv == plain_dims[i][1]) {
                return 1;
            }
        }
        return 0;
    }
    if (!(q->flags & WANT_LSE)) {
        return 0;
    }
    for (size_t i = 0; i < sizeof device_combos / sizeof device_combos[0]; i++) {
        if (p->dtype == device_combos[i].dtype && p->mask == device_combos[i].mask &&
            features == device_combos[i].features && p->head_dim == device_combos[i].head_dim &&
            dv == device_combos[i].head_dim_v) {
            return 1;
        }
    }
    return 0;
}

/* ---- Statistics ----------------------------------------------------------- */

/* ATTN_FUZZ_STATS=1 prints at exit how the inputs were answered and how
 * many distinct kernel configurations the device forwards built. */
static struct {
    unsigned long inputs, huge, refused, faulted, device_ok, device_features, reference_alone,
        merges, kvcache;
    unsigned long feature_ok[7]; /* device forwards that succeeded, per F_* bit */
    unsigned long dtype_ok[3];
    uint64_t configs[1024]; /* (dtype, mask, features, dims, LSE, algo, shape) of device ones */
    int config_count;
} stats;

static void count_config(const request *q, attn_algo algo) {
    const attn_params *p = &q->p;
    stats.device_ok++;
    stats.device_features += feature_bits(p) != 0 || p->dtype != ATTN_DTYPE_F32;
    const int32_t dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    const uint64_t key = (uint64_t)p->dtype | (uint64_t)p->mask << 2 |
                         (uint64_t)feature_bits(p) << 4 | (uint64_t)p->head_dim << 11 |
                         (uint64_t)dv << 22 | (uint64_t)((q->flags & WANT_LSE) != 0) << 33 |
                         (uint64_t)algo << 34 | (uint64_t)q->shape << 36;
    for (int i = 0; i < stats.config_count; i++) {
        if (stats.configs[i] == key) {
            return;
        }
    }
    if (stats.config_count < 1024) {
        stats.configs[stats.config_count++] = key;
    }
    stats.dtype_ok[p->dtype]++;
    for (int b = 0; b < 7; b++) {
        stats.feature_ok[b] += (feature_bits(p) >> b) & 1;
    }
}

static void print_stats(void) {
    fprintf(stderr,
            "fuzz_forward stats: %lu inputs: %lu huge (attn_check alone), %lu refused by "
            "attn_check, %lu with a missing or bad input, %lu successful device forwards "
            "(%lu with features or 16-bit storage), %lu valid ones through "
            "attn_reference_host alone, %lu merged, %lu KV-cache requests\n"
            "  %d distinct device configurations; of them f32 %lu f16 %lu bf16 %lu; window %lu "
            "pad %lu varlen %lu softcap %lu alibi %lu bias %lu keep %lu\n",
            stats.inputs, stats.huge, stats.refused, stats.faulted, stats.device_ok,
            stats.device_features, stats.reference_alone, stats.merges, stats.kvcache,
            stats.config_count, stats.dtype_ok[0], stats.dtype_ok[1], stats.dtype_ok[2],
            stats.feature_ok[0], stats.feature_ok[1], stats.feature_ok[2], stats.feature_ok[3],
            stats.feature_ok[4], stats.feature_ok[5], stats.feature_ok[6]);
}

/* ---- Tensors ------------------------------------------------------------ */

/* Elements a tensor of `s` spans, or 0 when its sizes or strides are not
 * ones a valid request can have (the library must then refuse before it
 * reads: the harness passes a small dummy buffer). */
static size_t extent_or_zero(const test_shape *s) {
    if (s->batch <= 0 || s->heads <= 0 || s->seq <= 0 || s->inner <= 0 ||
        s->inner > ATTN_MAX_HEAD_DIM || s->strides.batch < 0 || s->strides.head < 0 ||
        s->strides.seq < 0) {
        return 0;
    }
    return test_shape_extent(s);
}

#define DUMMY_ELEMS 16

typedef struct tensors {
    attn_params r; /* resolved by the header's rules (test_resolve) */
    int dummies;   /* sizes the harness cannot form: every buffer a dummy */
    attn_dtype dtype;
    size_t es; /* bytes of a Q/K/V/O element */
    test_shape shape[6];
    size_t elems[6];                   /* 0: dummy */
    float *q, *k, *v;                  /* the stored values, as floats */
    void *q_store, *k_store, *v_store; /* in the storage type */
    int modest; /* every input finite and |x| <= 4, |scale| <= 2 (see the top) */
    int wide;   /* not modest, but finite (bias: or -inf) at any magnitude and scale */
    /* The extra inputs: what the request asks for, in x (for naive_fp32),
     * and what the calls are given (after drops and garbage). */
    test_extras x;
    size_t bias_alloc, keep_alloc; /* elements allocated */
    const float *bias;
    const uint8_t *keep;
    const int32_t *key_lengths, *cu_q, *cu_k;
    const float *slopes;
    float *garbage_f;
    uint8_t *garbage_u8;
    int32_t *garbage_i;
} tensors;

static void *alloc_bytes(size_t bytes) {
    return test_alloc_sentinel(bytes ? bytes : 1);
}

static float *alloc_floats(size_t elems) {
    return alloc_bytes((elems ? elems : DUMMY_ELEMS) * sizeof(float));
}

static const float value_specials[8] = {NAN,    INFINITY, -INFINITY, 1e30f,
                                        -1e30f, 1e-30f,   1.4e-45f,  -0.0f};

/* value_mode bits 4..5: Q and K (salts 1, 2) times this, so that q.k
 * reaches about 1e18, 1e30 or FLT_MAX; bits 6..7: wide biases (see
 * make_operands). */
static const float wide_qk[4] = {1.0f, 1e9f, 1e15f, 1.3e19f};

static void fill_values(const request *q, float *x, size_t n, uint64_t salt) {
    test_rng rng = rng_for(q, salt);
    float range = (q->value_mode & 3) == 3 ? 16.0f : 1.0f;
    if (salt <= 2) {
        range *= wide_qk[(q->value_mode >> 4) & 3];
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = test_rng_float(&rng, -range, range);
    }
    /* Some special values at input-chosen places. */
    const int count = (q->value_mode >> 2) & 3 ? 0 : q->specials & 7;
    for (int c = 0; c < count; c++) {
        const uint64_t pick = (uint64_t)(test_rng_float(&rng, 0.0f, 1.0f) * 1e9f);
        x[pick % n] = value_specials[((q->specials >> 3) + c) & 7];
    }
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            return 0;
        }
    }
    return 1;
}

static int all_modest(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(x[i]) <= 4.0f)) {
            return 0;
        }
    }
    return 1;
}

/* n floats in the storage type (a copy for f32 and invalid types). */
static void *to_storage(attn_dtype dtype, const float *x, size_t n) {
    if (dtype == ATTN_DTYPE_F16 || dtype == ATTN_DTYPE_BF16) {
        return test_to_storage(dtype, x, n);
    }
    void *out = alloc_bytes(n * sizeof(float));
    memcpy(out, x, n * sizeof(float));
    return out;
}

static void round_to_storage(attn_dtype dtype, float *x, size_t n) {
    if (dtype == ATTN_DTYPE_F16 || dtype == ATTN_DTYPE_BF16) {
        test_round_to_storage(dtype, x, n);
    }
}

/* Elements of the bias or keep-mask, or 0 when the request cannot have
 * one (the library must refuse it before reading: a dummy is passed). */
static size_t operand_extent(const request *q, const tensors *t, test_tensor which) {
    const attn_params *p = &q->p;
    const attn_score_operand *op = which == TEST_BIAS ? &p->bias : &p->keep_mask;
    if (t->dummies || !op->present || !operand_ok(op, p) || p->batch < 1 || p->heads_q < 1) {
        return 0;
    }
    const test_shape s = test_tensor_shape(&t->r, which);
    return extent_or_zero(&s);
}

static void make_operands(const request *q, tensors *t) {
    test_rng rng = rng_for(q, 6);
    const size_t bias_extent = operand_extent(q, t, TEST_BIAS);
    const size_t keep_extent = operand_extent(q, t, TEST_KEEP_MASK);
    /* Bias: 0 [-2, 2) with 3% -inf; 1 row 0 all -inf, others [-2, 2);
     * 2 with 1e30, infinities and NaN; 3 [-4, 4). */
    t->bias_alloc = bias_extent ? bias_extent : DUMMY_ELEMS;
    t->x.bias_elems = t->bias_alloc;
    t->x.bias = alloc_floats(t->bias_alloc);
    for (size_t e = 0; e < t->bias_alloc; e++) {
        const float u = test_rng_float(&rng, 0.0f, 1.0f);
        float b = test_rng_float(&rng, -2.0f, 2.0f);
        switch (q->bias_mode) {
        case 0:
            b = u < 0.03f ? -INFINITY : b;
            break;
        case 2:
            b = u < 0.1f ? value_specials[(size_t)(u * 80.0f) & 7] : b;
            break;
        case 3:
            b *= 2.0f;
            break;
        default:
            break;
        }
        /* Wide biases (value_mode bits 6..7): up to +-2e10; half of them
         * -FLT_MAX; half -1e30, the others up to +-1e30. */
        switch ((q->value_mode >> 6) & 3) {
        case 1:
            b *= 1e10f;
            break;
        case 2:
            b = u < 0.5f ? -FLT_MAX : b;
            break;
        case 3:
            b = u < 0.5f ? -1e30f : b * 5e29f;
            break;
        default:
            break;
        }
        t->x.bias[e] = b;
    }
    if (q->bias_mode == 1 && bias_extent) {
        const test_shape s = test_tensor_shape(&t->r, TEST_BIAS);
        for (int64_t b = 0; b < s.batch; b++) {
            for (int64_t h = 0; h < s.heads; h++) {
                float *row = t->x.bias + b * s.strides.batch + h * s.strides.head;
                for (int64_t j = 0; j < s.inner; j++) {
                    row[j] = -INFINITY;
                }
            }
        }
    }
    /* Keep-mask: 0 keeps 80% and hides all of row 1; 1 keeps all; 2 random
     * bytes (any nonzero keeps); 3 keeps nothing. */
    t->keep_alloc = keep_extent ? keep_extent : DUMMY_ELEMS;
    t->x.keep_mask_elems = t->keep_alloc;
    t->x.keep_mask = alloc_bytes(t->keep_alloc);
    for (size_t e = 0; e < t->keep_alloc; e++) {
        const float u = test_rng_float(&rng, 0.0f, 1.0f);
        const uint8_t any = (uint8_t)((unsigned)(u * 1024.0f) & 0xff);
        t->x.keep_mask[e] = q->keep_mode == 0   ? u < 0.8f
                            : q->keep_mode == 1 ? 1
                            : q->keep_mode == 2 ? (u < 0.25f ? 0 : (uint8_t)(any | 1))
                                                : 0;
    }
    if (q->keep_mode == 0 && keep_extent && q->p.seq_q > 1) {
        const test_shape s = test_tensor_shape(&t->r, TEST_KEEP_MASK);
        for (int64_t b = 0; b < s.batch; b++) {
            for (int64_t h = 0; h < s.heads; h++) {
                memset(t->x.keep_mask + b * s.strides.batch + h * s.strides.head + s.strides.seq, 0,
                       (size_t)s.inner);
            }
        }
    }
}

/* Key lengths: 0 random 0..seq_k; 1 all seq_k; 2 all 0; 3 batch 0 full,
 * batch 1 empty; 4 one -1; 5 one seq_k + 1; 6 one INT32_MIN or INT32_MAX;
 * 7 random. ALiBi slopes: 0, 1 ALiBi's geometric ones; 2 random in
 * [-1, 1); 3 zero; 4 +-1e30; 5 one NaN; 6 one infinity; 7 [-4, 4). */
static void make_metadata(const request *q, tensors *t) {
    const attn_params *p = &q->p;
    test_rng rng = rng_for(q, 7);
    const int32_t batch = p->batch >= 1 && p->batch <= MAX_BATCH ? p->batch : MAX_BATCH;
    const int32_t heads = p->heads_q >= 1 && p->heads_q <= 3 ? p->heads_q : 3;
    const int32_t seq_k = p->seq_k >= 1 && p->seq_k <= 64 ? p->seq_k : 1;
    t->x.key_lengths = malloc((size_t)batch * sizeof(int32_t));
    t->x.alibi_slopes = malloc((size_t)heads * sizeof(float));
    t->x.cu_seqlens_q = malloc((size_t)(batch + 1) * sizeof(int32_t));
    t->x.cu_seqlens_k = malloc((size_t)(batch + 1) * sizeof(int32_t));
    if (!t->x.key_lengths || !t->x.alibi_slopes || !t->x.cu_seqlens_q || !t->x.cu_seqlens_k) {
        fprintf(stderr, "fuzz_forward: out of host memory\n");
        abort();
    }
    const int32_t bad_b = (int32_t)(q->seed % (uint32_t)batch);
    for (int32_t b = 0; b < batch; b++) {
        const int32_t any = draw(&rng, 0, seq_k);
        int32_t len = any;
        switch (q->pad_mode) {
        case 1:
            len = seq_k;
            break;
        case 2:
            len = 0;
            break;
        case 3:
            len = b == 0 ? seq_k : b == 1 ? 0 : any;
            break;
        case 4:
            len = b == bad_b ? -1 : any;
            break;
        case 5:
            len = b == bad_b ? seq_k + 1 : any;
            break;
        case 6:
            len = b == bad_b ? (q->seed & 2 ? INT32_MIN : INT32_MAX) : any;
            break;
        default:
            break;
        }
        t->x.key_lengths[b] = len;
    }
    const int32_t bad_h = (int32_t)(q->seed % (uint32_t)heads);
    for (int32_t h = 0; h < heads; h++) {
        const float any = test_rng_float(&rng, -1.0f, 1.0f);
        float s = exp2f(-8.0f * (float)(h + 1) / (float)heads);
        switch (q->alibi_mode) {
        case 2:
            s = any;
            break;
        case 3:
            s = 0.0f;
            break;
        case 4:
            s = any < 0 ? -1e30f : 1e30f;
            break;
        case 5:
            s = h == bad_h ? NAN : s;
            break;
        case 6:
            s = h == bad_h ? (q->seed & 2 ? -INFINITY : INFINITY) : s;
            break;
        case 7:
            s = 4.0f * any;
            break;
        default:
            break;
        }
        t->x.alibi_slopes[h] = s;
    }
    memcpy(t->x.cu_seqlens_q, q->cu_q, (size_t)(batch + 1) * sizeof(int32_t));
    memcpy(t->x.cu_seqlens_k, q->cu_k, (size_t)(batch + 1) * sizeof(int32_t));
}

/* What the calls are given: the arrays params ask for, one of them (or Q)
 * dropped, and with GARBAGE_EXTRAS the others too, holding values no valid
 * request has. */
static void choose_pointers(const request *q, tensors *t) {
    const attn_params *p = &q->p;
    const int garbage = (q->device_extra & GARBAGE_EXTRAS) != 0;
    t->garbage_f = alloc_floats(DUMMY_ELEMS);
    t->garbage_u8 = alloc_bytes(DUMMY_ELEMS);
    t->garbage_i = malloc(DUMMY_ELEMS * sizeof(int32_t));
    if (!t->garbage_i) {
        abort();
    }
    for (int i = 0; i < DUMMY_ELEMS; i++) {
        t->garbage_f[i] = NAN;
        t->garbage_i[i] = i % 2 ? INT32_MIN : 1000 - i;
    }
    t->bias = p->bias.present ? t->x.bias : garbage ? t->garbage_f : NULL;
    t->keep = p->keep_mask.present ? t->x.keep_mask : garbage ? t->garbage_u8 : NULL;
    t->key_lengths = p->key_padding ? t->x.key_lengths : garbage ? t->garbage_i : NULL;
    t->slopes = p->alibi ? t->x.alibi_slopes : garbage ? t->garbage_f : NULL;
    t->cu_q = p->varlen ? t->x.cu_seqlens_q : garbage ? t->garbage_i : NULL;
    t->cu_k = p->varlen ? t->x.cu_seqlens_k : garbage ? t->garbage_i + 1 : NULL;
    const int plain = (q->flags & PLAIN_CALLS) != 0;
    const int all = q->drop == DROP_EXTRAS || plain;
    if (all || q->drop == DROP_BIAS) {
        t->bias = NULL;
    }
    if (all || q->drop == DROP_KEEP) {
        t->keep = NULL;
    }
    if (all || q->drop == DROP_KEY_LENGTHS) {
        t->key_lengths = NULL;
    }
    if (all || q->drop == DROP_SLOPES) {
        t->slopes = NULL;
    }
    if (all || q->drop == DROP_CU_Q) {
        t->cu_q = NULL;
    }
    if (all || q->drop == DROP_CU_K) {
        t->cu_k = NULL;
    }
}

/* Tensors of the request's extents in its storage type, or (`dummies`, for
 * sizes whose products the harness cannot form) dummy buffers throughout;
 * the extra inputs. */
static void make_tensors(const request *q, int dummies, tensors *t) {
    memset(t, 0, sizeof *t);
    t->dummies = dummies;
    t->dtype = q->p.dtype;
    t->es = elem_size(t->dtype);
    if (!dummies) {
        test_resolve(&q->p, &t->r);
        const test_tensor which[6] = {TEST_Q, TEST_K, TEST_V, TEST_O, TEST_LSE, TEST_PROBS};
        for (int i = 0; i < 6; i++) {
            t->shape[i] = test_tensor_shape(&t->r, which[i]);
            t->elems[i] = extent_or_zero(&t->shape[i]);
        }
    }
    float **floats[3] = {&t->q, &t->k, &t->v};
    void **stores[3] = {&t->q_store, &t->k_store, &t->v_store};
    t->modest = fabsf(q->p.scale) <= 2.0f;
    t->wide = isfinite(q->p.scale);
    for (int i = 0; i < 3; i++) {
        const size_t n = t->elems[i] ? t->elems[i] : DUMMY_ELEMS;
        *floats[i] = alloc_floats(n);
        fill_values(q, *floats[i], n, (uint64_t)i + 1);
        round_to_storage(t->dtype, *floats[i], n);
        *stores[i] = to_storage(t->dtype, *floats[i], n);
        t->modest &= all_modest(*floats[i], t->elems[i]);
        t->wide &= all_finite(*floats[i], t->elems[i]);
    }
    make_operands(q, t);
    make_metadata(q, t);
    choose_pointers(q, t);
    const attn_params *p = &q->p;
    if (p->bias.present) {
        for (size_t e = 0; e < t->bias_alloc; e++) {
            const float b = t->x.bias[e];
            t->modest &= fabsf(b) <= 4.0f || b == -INFINITY;
            t->wide &= isfinite(b) || b == -INFINITY;
        }
    }
    if (p->alibi) {
        const int32_t heads = p->heads_q >= 1 && p->heads_q <= 3 ? p->heads_q : 3;
        for (int32_t h = 0; h < heads; h++) {
            t->modest &= fabsf(t->x.alibi_slopes[h]) <= 4.0f;
            t->wide &= fabsf(t->x.alibi_slopes[h]) <= 4.0f;
        }
    }
    t->wide &= !t->modest;
}

static void free_tensors(tensors *t) {
    void *all[] = {t->q,
                   t->k,
                   t->v,
                   t->q_store,
                   t->k_store,
                   t->v_store,
                   t->x.bias,
                   t->x.keep_mask,
                   t->x.key_lengths,
                   t->x.alibi_slopes,
                   t->x.cu_seqlens_q,
                   t->x.cu_seqlens_k,
                   t->garbage_f,
                   t->garbage_u8,
                   t->garbage_i};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]);
    }
}

/* ---- Faults the harness put in ---------------------------------------------- */

/* The status a forward owes its pointers and per-batch arrays once its
 * params pass: ATTN_ERR_NULL_ARGUMENT for an input params ask for that is
 * NULL, else ATTN_ERR_INVALID_VALUE for an array out of range, else 0.
 * `*alt` is the other status a call may give when both faults are there
 * (attn_reference_host checks the bias and keep-mask pointers after the
 * arrays' values). */
static attn_status predicted_fault(const request *q, const tensors *t, attn_status *alt) {
    const attn_params *p = &q->p;
    *alt = ATTN_SUCCESS;
    const int null_operand = (p->bias.present && !t->bias) || (p->keep_mask.present && !t->keep);
    const int null_meta = (p->key_padding && !t->key_lengths) || (p->alibi && !t->slopes) ||
                          (p->varlen && (!t->cu_q || !t->cu_k));
    int bad = 0;
    if (!null_meta && p->batch >= 1 && p->batch <= MAX_BATCH && p->heads_q >= 1 &&
        p->heads_q <= 3) {
        if (p->key_padding) {
            for (int32_t b = 0; b < p->batch; b++) {
                bad |= t->key_lengths[b] < 0 || t->key_lengths[b] > p->seq_k;
            }
        }
        if (p->alibi) {
            for (int32_t h = 0; h < p->heads_q; h++) {
                bad |= !isfinite(t->slopes[h]);
            }
        }
        if (p->varlen) {
            const int32_t *cu[2] = {t->cu_q, t->cu_k};
            const int32_t longest[2] = {p->seq_q, p->seq_k}, total[2] = {p->total_q, p->total_k};
            for (int s = 0; s < 2; s++) {
                bad |= cu[s][0] != 0 || cu[s][p->batch] > total[s];
                for (int32_t b = 0; b < p->batch; b++) {
                    const int64_t len = (int64_t)cu[s][b + 1] - cu[s][b];
                    bad |= len < 0 || len > longest[s];
                }
            }
        }
    }
    if (null_operand && !null_meta && bad) {
        *alt = ATTN_ERR_INVALID_VALUE;
    }
    return null_operand || null_meta ? ATTN_ERR_NULL_ARGUMENT
           : bad                     ? ATTN_ERR_INVALID_VALUE
                                     : ATTN_SUCCESS;
}

/* ---- Checks ------------------------------------------------------------- */

static const uint8_t *current_input;
static size_t current_size;
static const tensors *current_tensors;

/* ATTN_FUZZ_TRACE=1 (tests/fuzz_replay sets it) prints what each input
 * asked for and what each call answered. */
static char trace_line[512];
static size_t trace_len;

/* fmt takes the call's name and then its status's (unused for a note). */
static void trace(const char *fmt, const char *name, attn_status st) {
    if (trace_len < sizeof trace_line) {
        trace_len += (size_t)snprintf(trace_line + trace_len, sizeof trace_line - trace_len, fmt,
                                      name, attn_status_name(st));
    }
}

/* The request in one line: sizes, enums, scale, features. */
static void describe(char *buf, size_t size, const request *q) {
    const attn_params *p = &q->p;
    int n =
        snprintf(buf, size, "B%d Hq%d Hkv%d Sq%d Sk%d D%d Dv%d mask %d algo %d dtype %d scale %a",
                 p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k, p->head_dim, p->head_dim_v,
                 (int)p->mask, (int)p->algo, (int)p->dtype, (double)p->scale);
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (n > 0 && (size_t)n < size) {                                                           \
            n += snprintf(buf + n, size - (size_t)n, __VA_ARGS__);                                 \
        }                                                                                          \
    } while (0)
    if (p->softcap != 0.0f) {
        APPEND(" softcap %a", (double)p->softcap);
    }
    if (p->window.enabled) {
        APPEND(" window %d (%d, %d)", p->window.enabled, p->window.left, p->window.right);
    }
    if (p->alibi) {
        APPEND(" alibi %d slopes %d", p->alibi, q->alibi_mode);
    }
    const attn_score_operand *ops[2] = {&p->bias, &p->keep_mask};
    const char *names[2] = {"bias", "keep"};
    const uint8_t modes[2] = {q->bias_mode, q->keep_mode};
    for (int i = 0; i < 2; i++) {
        if (ops[i]->present) {
            APPEND(" %s %d [%d x %d] strides %lld/%lld/%lld values %d", names[i], ops[i]->present,
                   ops[i]->batch, ops[i]->heads, (long long)ops[i]->strides.batch,
                   (long long)ops[i]->strides.head, (long long)ops[i]->strides.seq, modes[i]);
        }
    }
    if (p->key_padding) {
        APPEND(" key_padding %d lengths %d", p->key_padding, q->pad_mode);
    }
    if (p->varlen) {
        APPEND(" varlen %d totals %d/%d", p->varlen, p->total_q, p->total_k);
    }
    if (q->drop != DROP_NONE) {
        APPEND(" drop %d", q->drop);
    }
    if (p->dropout_p != 0.0f) {
        APPEND(" dropout %a seed %llu offset %llu", (double)p->dropout_p,
               (unsigned long long)p->dropout_seed, (unsigned long long)p->dropout_offset);
    }
    if (q->backward) {
        APPEND(" backward 0x%02x", q->backward);
    }
    if (q->device_extra) {
        APPEND(" extra 0x%02x", q->device_extra);
    }
    if (q->shape) {
        APPEND(" kernel %s", kernel_shapes[q->shape]);
    }
#undef APPEND
}

static void print_ints(const char *name, const int32_t *x, int32_t n) {
    if (!x) {
        fprintf(stderr, " %s NULL", name);
        return;
    }
    fprintf(stderr, " %s {", name);
    for (int32_t i = 0; i < n; i++) {
        fprintf(stderr, "%s%d", i ? ", " : "", x[i]);
    }
    fprintf(stderr, "}");
}

/* libFuzzer does not save the input of an abort here (once PoCL's compiler
 * is loaded it is not libFuzzer's handler that catches SIGABRT), so a
 * violation writes it into $ATTN_FUZZ_ARTIFACTS (scripts/fuzz.sh sets it)
 * as violation-<hash>. */
static void save_input(void) {
    const char *dir = getenv("ATTN_FUZZ_ARTIFACTS");
    if (!dir || !*dir) {
        return;
    }
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < current_size; i++) {
        hash = (hash ^ current_input[i]) * 0x100000001b3ull;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/violation-%016llx", dir, (unsigned long long)hash);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(current_input, 1, current_size, f);
        fclose(f);
        fprintf(stderr, "  input written to %s\n", path);
    }
}

static void violation(const char *what, const request *q, attn_status st, const char *message) {
    char desc[512];
    describe(desc, sizeof desc, q);
    fprintf(stderr,
            "fuzz_forward: %s\n  request %s\n  Q strides %lld/%lld/%lld flags 0x%02x extra 0x%02x "
            "known layout %d\n  status %s (%d): %s\n",
            what, desc, (long long)q->p.q_strides.batch, (long long)q->p.q_strides.head,
            (long long)q->p.q_strides.seq, q->flags, q->device_extra, q->known_layout,
            attn_status_name(st), (int)st, message ? message : "");
    const tensors *t = current_tensors;
    const attn_params *p = &q->p;
    if (t && p->batch >= 1 && p->batch <= MAX_BATCH && p->heads_q >= 1 && p->heads_q <= 3) {
        fprintf(stderr, " ");
        if (p->key_padding) {
            print_ints("key_lengths", t->key_lengths, p->batch);
        }
        if (p->varlen) {
            print_ints("cu_seqlens_q", t->cu_q, p->batch + 1);
            print_ints("cu_seqlens_k", t->cu_k, p->batch + 1);
        }
        if (p->alibi && t->slopes) {
            fprintf(stderr, " slopes {");
            for (int32_t h = 0; h < p->heads_q; h++) {
                fprintf(stderr, "%s%a", h ? ", " : "", (double)t->slopes[h]);
            }
            fprintf(stderr, "}");
        }
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "  input (%zu bytes):", current_size);
    for (size_t i = 0; i < current_size; i++) {
        fprintf(stderr, " %02x", current_input[i]);
    }
    fprintf(stderr, "\n");
    save_input();
    abort();
}

void fuzz_violation(const char *what, const request *q, attn_status st, const char *message) {
    violation(what, q, st, message);
}

static int documented(attn_status st) {
    return st == ATTN_SUCCESS || (st <= ATTN_ERR_NULL_ARGUMENT && st >= ATTN_ERR_KERNEL_SOURCE);
}

typedef struct outputs {
    void *o; /* in the storage type */
    float *lse, *probs;
    size_t o_bytes, lse_elems, probs_elems; /* allocated (dummy when 0 was asked) */
} outputs;

static void alloc_outputs(const request *q, const tensors *t, outputs *out) {
    memset(out, 0, sizeof *out);
    out->o_bytes = (t->elems[3] ? t->elems[3] : DUMMY_ELEMS) * t->es;
    out->o = alloc_bytes(out->o_bytes);
    if (q->flags & WANT_LSE) {
        out->lse_elems = t->elems[4] ? t->elems[4] : DUMMY_ELEMS;
        out->lse = alloc_floats(t->elems[4]);
    }
    if (q->flags & WANT_PROBS) {
        /* Contiguous; 0 elems when the shape is invalid. */
        out->probs_elems = t->elems[5] ? t->elems[5] : DUMMY_ELEMS;
        out->probs = alloc_floats(t->elems[5]);
    }
}

static void free_outputs(outputs *out) {
    free(out->o);
    free(out->lse);
    free(out->probs);
}

static int outputs_untouched(const outputs *out) {
    return test_is_sentinel(out->o, out->o_bytes) &&
           (!out->lse || test_is_sentinel(out->lse, out->lse_elems * sizeof(float))) &&
           (!out->probs || test_is_sentinel(out->probs, out->probs_elems * sizeof(float)));
}

static void check_failure(const request *q, attn_status st, const char *message, const outputs *out,
                          const char *call) {
    char what[128];
    if (!documented(st)) {
        snprintf(what, sizeof what, "%s returned an undocumented or OpenCL status", call);
        violation(what, q, st, message);
    }
    if (st != ATTN_SUCCESS && (!message || !*message)) {
        snprintf(what, sizeof what, "%s failed without a message", call);
        violation(what, q, st, message);
    }
    if (st != ATTN_SUCCESS && !outputs_untouched(out)) {
        snprintf(what, sizeof what, "%s failed but wrote its outputs", call);
        violation(what, q, st, message);
    }
}

/* A call's status against what attn_check said (`checked`, for the
 * outputs that call asks for) and the faults the harness put in: a
 * missing Q is refused first; else what attn_check refuses is refused
 * alike, or for a fault it cannot see; else exactly the fault's status,
 * or success. */
static void check_status(const request *q, attn_status st, attn_status checked, attn_status fault,
                         attn_status alt, int q_dropped, const char *message, const char *call) {
    char what[160];
    attn_status want;
    int ok;
    if (q_dropped) {
        want = ATTN_ERR_NULL_ARGUMENT;
        ok = st == want;
    } else if (checked == ATTN_SUCCESS) {
        want = fault;
        ok = st == fault || (alt && st == alt);
    } else {
        want = checked;
        ok = st == checked || (fault && (st == fault || (alt && st == alt)));
    }
    if (!ok) {
        snprintf(what, sizeof what, "%s gave %s where %s was due (attn_check: %s)", call,
                 attn_status_name(st), attn_status_name(want), attn_status_name(checked));
        violation(what, q, st, message);
    }
}

/* Whether the rows of a varlen request past its last sequence (in a
 * tensor of shape `s`, elements of `es` bytes) still hold the sentinel: the
 * forward must leave them alone. */
static int varlen_tail_untouched(const request *q, const tensors *t, const test_shape *s,
                                 const void *buf, size_t es) {
    if (!q->p.varlen) {
        return 1;
    }
    const int32_t end = t->x.cu_seqlens_q[q->p.batch];
    for (int64_t h = 0; h < s->heads; h++) {
        for (int64_t i = end; i < s->seq; i++) {
            const size_t at = (size_t)(h * s->strides.head + i * s->strides.seq);
            if (!test_is_sentinel((const char *)buf + at * es, (size_t)s->inner * es)) {
                return 0;
            }
        }
    }
    return 1;
}

/* Library bugs this harness found that are reported but not fixed yet,
 * each reduced into tests/fuzz_corpus/known-* (tests/make_fuzz_seeds.py's
 * SEEDS_KNOWN): a request one of them touches still makes every call and
 * every status and byte check, but its values are not held to the
 * reference, so that fuzz_corpus_replay passes meanwhile. Remove the entry
 * once the library is fixed and move its seed to SEEDS. None now: the one
 * found first, window extents near INT32_MAX wrapping in the kernels, was
 * fixed by 45d6ab4 (seed-window-extent-max checks it). */
static const char *known_bug(const request *q) {
    (void)q;
    return NULL;
}

/* The forward's result against attn_reference_host on the same inputs. */
static void check_against_reference(const request *q, const tensors *t, const outputs *got) {
    const attn_params *p = &q->p;
    const char *bug = known_bug(q);
    if (bug) {
        trace(" (known bug %s: values not compared)", bug, ATTN_SUCCESS);
    }
    outputs ref, exact, naive;
    alloc_outputs(q, t, &ref);
    /* On the stored values, in the storage type. */
    attn_host_tensors h = {.q = t->q_store,
                           .k = t->k_store,
                           .v = t->v_store,
                           .o = ref.o,
                           .lse = ref.lse,
                           .probs = ref.probs,
                           .bias = t->bias,
                           .keep_mask = t->keep,
                           .key_lengths = t->key_lengths,
                           .alibi_slopes = t->slopes,
                           .cu_seqlens_q = t->cu_q,
                           .cu_seqlens_k = t->cu_k};
    attn_status st = attn_reference_host(p, &h);
    if (st != ATTN_SUCCESS) {
        violation("the forward succeeded where attn_reference_host fails", q, st,
                  attn_last_error(NULL));
    }
    /* Every byte between strided rows keeps the sentinel; so do varlen's
     * rows past the last sequence. */
    if (got->lse &&
        test_compare(&t->shape[4], got->lse, got->lse, got->lse, got->lse_elems).gaps_written) {
        violation("the forward wrote between the rows of LSE", q, ATTN_SUCCESS, "");
    }
    if (!varlen_tail_untouched(q, t, &t->shape[3], got->o, t->es) ||
        (got->lse && !varlen_tail_untouched(q, t, &t->shape[4], got->lse, sizeof(float)))) {
        violation("the forward wrote rows past the last varlen sequence", q, ATTN_SUCCESS, "");
    }
    /* Through test_compare_output: a problem holding just what it reads. */
    test_problem tp;
    memset(&tp, 0, sizeof tp);
    tp.p = *p;
    tp.o_shape = t->shape[3];
    tp.o_elems = t->elems[3];
    alloc_outputs(q, t, &exact);
    alloc_outputs(q, t, &naive);
    tp.ref_o = (float *)exact.o;
    tp.naive_o = (float *)naive.o;
    if (t->dtype != ATTN_DTYPE_F32) {
        free(exact.o);
        free(naive.o);
        exact.o = tp.ref_o = alloc_floats(t->elems[3]);
        naive.o = tp.naive_o = alloc_floats(t->elems[3]);
    }
    /* The truth: the double reference on the float copies (which hold
     * exactly the stored values), O unrounded. */
    attn_params as_f32 = *p;
    as_f32.dtype = ATTN_DTYPE_F32;
    h.q = t->q;
    h.k = t->k;
    h.v = t->v;
    h.o = exact.o;
    h.lse = exact.lse;
    h.probs = exact.probs;
    st = attn_reference_host(&as_f32, &h);
    if (st != ATTN_SUCCESS) {
        violation("attn_reference_host fails on the float copies", q, st, attn_last_error(NULL));
    }
    test_result r = test_compare_output(&tp, got->o);
    if (r.gaps_written) {
        violation("the forward wrote between the rows of O", q, ATTN_SUCCESS, "");
    }
    if ((t->modest || t->wide) && !bug) {
        test_naive_fp32(&t->r, t->q, t->k, t->v, &t->x, naive.o, naive.lse, naive.probs);
        round_to_storage(t->dtype, naive.o, t->elems[3]);
        if (p->varlen && t->dtype != ATTN_DTYPE_F32) {
            /* Rows past the last sequence hold the sentinel in the storage
             * type (checked above): the same values everywhere. */
            float *o = alloc_floats(t->elems[3]);
            test_from_storage(t->dtype, got->o, o, t->elems[3]);
            const test_shape *s = &t->shape[3];
            for (int64_t hh = 0; hh < s->heads; hh++) {
                for (int64_t i = t->x.cu_seqlens_q[p->batch]; i < s->seq; i++) {
                    const size_t at = (size_t)(hh * s->strides.head + i * s->strides.seq);
                    for (int64_t d = 0; d < s->inner; d++) {
                        tp.ref_o[at + (size_t)d] = tp.naive_o[at + (size_t)d] = o[at + (size_t)d];
                    }
                }
            }
            free(o);
        }
        r = test_compare_output(&tp, got->o);
        const float *outs[2] = {got->lse, got->probs};
        const float *refs[2] = {exact.lse, exact.probs};
        const float *naives[2] = {naive.lse, naive.probs};
        const size_t elems[2] = {got->lse_elems, got->probs_elems};
        const char *names[3] = {"O", "LSE", "probabilities"};
        for (int i = 0; i < 3; i++) {
            if (i > 0) {
                if (!outs[i - 1]) {
                    continue;
                }
                r = test_compare(&t->shape[3 + i], outs[i - 1], refs[i - 1], naives[i - 1],
                                 elems[i - 1]);
            }
            /* The max-error rule alone: the NMSE rule is a statistic over
             * many elements, and these tensors can hold one (one output
             * of cancelling values, or a denormal scale's ~1e-45 LSE,
             * puts its relative error at 1e-4 while it is off by 5e-9). */
            /* Wide inputs fp32 cannot hold (a -1e10 bias over O(1) scores,
             * q.k past FLT_MAX) set no bound: naive_fp32 disagrees there. */
            if (t->wide && r.naive_disagrees) {
                continue;
            }
            const int ok = r.max_err <= r.bound && r.mismatch == 0 && r.gaps_written == 0 &&
                           !r.naive_disagrees;
            if (!ok) {
                char line[256], what[64];
                test_format_result(line, sizeof line, names[i], &r);
                snprintf(what, sizeof what, "%s outside the bound", names[i]);
                violation(what, q, ATTN_SUCCESS, line);
            }
        }
    }
    free_outputs(&ref);
    free_outputs(&exact);
    free_outputs(&naive);
}

/* A request that runs on no device here: attn_reference_host alone, and
 * with modest inputs checked against naive_fp32 (the two must agree within
 * TEST_NAIVE_RTOL, or the rounding to the storage type more). */
static void check_reference_alone(const request *q, const tensors *t, attn_status checked) {
    const attn_params *p = &q->p;
    outputs ref, naive;
    alloc_outputs(q, t, &ref);
    attn_params as_f32 = *p;
    if (dtype_ok(p->dtype)) {
        as_f32.dtype = ATTN_DTYPE_F32;
    }
    attn_host_tensors h = {.q = t->q,
                           .k = t->k,
                           .v = t->v,
                           .o = ref.o,
                           .lse = ref.lse,
                           .probs = ref.probs,
                           .bias = t->bias,
                           .keep_mask = t->keep,
                           .key_lengths = t->key_lengths,
                           .alibi_slopes = t->slopes,
                           .cu_seqlens_q = t->cu_q,
                           .cu_seqlens_k = t->cu_k};
    /* O in float: room for it whatever the storage type. */
    free(ref.o);
    ref.o_bytes = (t->elems[3] ? t->elems[3] : DUMMY_ELEMS) * sizeof(float);
    ref.o = h.o = alloc_bytes(ref.o_bytes);
    attn_status st = attn_reference_host(&as_f32, &h);
    trace(" %s %s", "reference", st);
    check_failure(q, st, st ? attn_last_error(NULL) : "", &ref, "attn_reference_host");
    if (st != checked) {
        violation("attn_reference_host and attn_check disagree", q, st, attn_last_error(NULL));
    }
    if (st == ATTN_SUCCESS && t->modest) {
        alloc_outputs(q, t, &naive);
        free(naive.o);
        naive.o = alloc_floats(t->elems[3]);
        test_naive_fp32(&t->r, t->q, t->k, t->v, &t->x, naive.o, naive.lse, naive.probs);
        const float *refs[3] = {ref.o, ref.lse, ref.probs};
        const float *naives[3] = {naive.o, naive.lse, naive.probs};
        for (int i = 0; i < 3; i++) {
            if (refs[i] &&
                test_compare(&t->shape[3 + i], refs[i], refs[i], naives[i], 0).naive_disagrees) {
                violation("attn_reference_host and naive_fp32 disagree", q, st,
                          i == 0   ? "O"
                          : i == 1 ? "LSE"
                                   : "probabilities");
            }
        }
        free_outputs(&naive);
    }
    free_outputs(&ref);
}

/* ---- The device-memory call --------------------------------------------- */

static cl_context cl_context_of(attn_context_t ctx) {
    cl_context context = NULL;
    clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_CONTEXT, sizeof context, &context,
                          NULL);
    return context;
}

static cl_mem upload(cl_context context, const void *host, size_t bytes) {
    cl_int err;
    cl_mem mem = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                bytes ? bytes : 1, (void *)(uintptr_t)host, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "fuzz_forward: clCreateBuffer failed: %d\n", (int)err);
        abort();
    }
    return mem;
}

/* `bytes` of `data` after `pad` bytes of sentinel, in a buffer `cut` bytes
 * shorter. */
static cl_mem upload_at(cl_context context, const void *data, size_t bytes, size_t pad,
                        size_t cut) {
    unsigned char *host = alloc_bytes(pad + bytes);
    memcpy(host + pad, data, bytes);
    cl_mem mem = upload(context, host, pad + bytes - cut);
    free(host);
    return mem;
}

static void read_back(cl_command_queue queue, cl_mem mem, void *host, size_t bytes) {
    if (clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, bytes, host, 0, NULL, NULL) != CL_SUCCESS) {
        fprintf(stderr, "fuzz_forward: clEnqueueReadBuffer failed\n");
        abort();
    }
}

static void device_call(attn_context_t ctx, const request *q, const tensors *t, attn_status fault,
                        attn_status host_status, attn_algo host_algo, const outputs *host) {
    const attn_params *p = &q->p;
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = cl_context_of(ctx);
    const size_t es = t->es;
    const size_t o_cut = (q->flags & DEVICE_SHORT) && t->elems[3] > 1 ? es : 0;
    const size_t q_pad = (q->flags & DEVICE_MISALIGNED) ? es / 2 : 0;
    const uint8_t x = q->device_extra;
    const int with_bias = p->bias.present && t->bias, with_keep = p->keep_mask.present && t->keep;
    const size_t bias_pad = (x & BIAS_MISALIGNED) ? 2 : (x & OPERAND_OFFSET) ? 4 : 0;
    const size_t bias_cut = with_bias && (x & BIAS_SHORT) ? 4 : 0;
    const size_t keep_pad = (x & OPERAND_OFFSET) ? 1 : 0;
    /* A one-byte keep-mask cannot be cut: OpenCL has no empty buffers. */
    const size_t keep_cut = with_keep && (x & KEEP_SHORT) && keep_pad + t->keep_alloc > 1 ? 1 : 0;
    /* The buffers' faults, in the order the library checks them: Q, K, V,
     * O, LSE, bias, keep-mask. */
    const attn_status buffers = q_pad                                ? ATTN_ERR_INVALID_VALUE
                                : o_cut                              ? ATTN_ERR_BUFFER_TOO_SMALL
                                : with_bias && (x & BIAS_MISALIGNED) ? ATTN_ERR_INVALID_VALUE
                                : bias_cut                           ? ATTN_ERR_BUFFER_TOO_SMALL
                                : keep_cut                           ? ATTN_ERR_BUFFER_TOO_SMALL
                                                                     : ATTN_SUCCESS;
    attn_algo dev_algo = ATTN_ALGO_AUTO;
    const attn_status checked = attn_check(ctx, p, (q->flags & WANT_LSE) != 0, 0, &dev_algo);
    /* A three-kernel call that would run with LSE commits its outputs with
     * a kernel compiled per shape (see launch_shapes). */
    if (checked == ATTN_SUCCESS && !fault && !buffers && q->drop != DROP_Q &&
        dev_algo == ATTN_ALGO_THREE_KERNEL && (q->flags & WANT_LSE) &&
        !launch_shape_ok(p->seq_q, p->heads_q, p->batch)) {
        trace(" %s", "device skipped (not at a launch shape)", ATTN_SUCCESS);
        return;
    }
    outputs out;
    alloc_outputs(q, t, &out);
    const size_t q_bytes = (t->elems[0] ? t->elems[0] : DUMMY_ELEMS) * es;
    attn_device_tensors dt = {0};
    dt.q = q->drop == DROP_Q ? NULL : upload_at(context, t->q_store, q_bytes, q_pad, 0);
    dt.q_offset = q_pad;
    dt.k = upload(context, t->k_store, (t->elems[1] ? t->elems[1] : DUMMY_ELEMS) * es);
    dt.v = upload(context, t->v_store, (t->elems[2] ? t->elems[2] : DUMMY_ELEMS) * es);
    dt.o = upload(context, out.o, out.o_bytes - o_cut);
    dt.lse = out.lse ? upload(context, out.lse, out.lse_elems * sizeof(float)) : NULL;
    if (t->bias) {
        const size_t bytes = (p->bias.present ? t->bias_alloc : DUMMY_ELEMS) * sizeof(float);
        dt.bias = upload_at(context, t->bias, bytes, bias_pad, bias_cut);
        dt.bias_offset = bias_pad;
    }
    if (t->keep) {
        const size_t bytes = p->keep_mask.present ? t->keep_alloc : DUMMY_ELEMS;
        dt.keep_mask = upload_at(context, t->keep, bytes, keep_pad, keep_cut);
        dt.keep_mask_offset = keep_pad;
    }
    dt.key_lengths = t->key_lengths;
    dt.alibi_slopes = t->slopes;
    dt.cu_seqlens_q = t->cu_q;
    dt.cu_seqlens_k = t->cu_k;

    /* The device call never makes probabilities: ask the way the host call
     * would without them. */
    request dq = *q;
    dq.flags &= (uint8_t)~WANT_PROBS;
    cl_event done = NULL;
    attn_status st = attn_forward_device(ctx, p, &dt, 0, NULL, &done);
    trace(" %s %s", "device", st);
    const char *message = st == ATTN_SUCCESS ? "" : attn_last_error(ctx);
    if (st == ATTN_SUCCESS) {
        if (clWaitForEvents(1, &done) != CL_SUCCESS) {
            violation("the device call's event failed", &dq, st, "");
        }
        clReleaseEvent(done);
    } else if (done) {
        violation("the device call failed but set its event", &dq, st, message);
    }
    read_back(queue, dt.o, out.o, out.o_bytes - o_cut);
    if (out.lse) {
        read_back(queue, dt.lse, out.lse, out.lse_elems * sizeof(float));
    }
    check_failure(&dq, st, message, &out, "attn_forward_device");
    if (q->drop == DROP_Q || checked == ATTN_SUCCESS || !buffers) {
        /* Like the host call, with the buffers' fault after the request's. */
        check_status(&dq, st, checked, fault ? fault : buffers, ATTN_SUCCESS, q->drop == DROP_Q,
                     message, "attn_forward_device");
    } else if (st != checked && st != buffers && !(fault && st == fault)) {
        violation("the device call gave neither its request's nor its buffers' status", &dq, st,
                  message);
    }
    /* The same bits as the host call where both ran the same algorithm. */
    if (st == ATTN_SUCCESS && host_status == ATTN_SUCCESS && dev_algo == host_algo &&
        (memcmp(out.o, host->o, out.o_bytes) != 0 ||
         (out.lse && memcmp(out.lse, host->lse, out.lse_elems * sizeof(float)) != 0))) {
        violation("the device call's bits differ from the host call's", &dq, st, "");
    }
    if (st == ATTN_SUCCESS && host_status != ATTN_SUCCESS && !(q->flags & WANT_PROBS)) {
        violation("the device call succeeded where the host call failed", &dq, st, "");
    }
    cl_mem mems[7] = {dt.q, dt.k, dt.v, dt.o, dt.lse, dt.bias, dt.keep_mask};
    for (int i = 0; i < 7; i++) {
        if (mems[i]) {
            clReleaseMemObject(mems[i]);
        }
    }
    free_outputs(&out);
}

/* ---- The backward ------------------------------------------------------------- */

/* Gradients in the storage type (dBias float), sentinel-filled. */
typedef struct gradients {
    void *g[3];
    float *dbias;
    size_t bytes[3], dbias_bytes;
} gradients;

static void alloc_gradients(const tensors *t, int want_dbias, gradients *g) {
    memset(g, 0, sizeof *g);
    for (int i = 0; i < 3; i++) {
        g->bytes[i] = (t->elems[i] ? t->elems[i] : DUMMY_ELEMS) * t->es;
        g->g[i] = alloc_bytes(g->bytes[i]);
    }
    if (want_dbias) {
        g->dbias_bytes = (t->bias_alloc ? t->bias_alloc : DUMMY_ELEMS) * sizeof(float);
        g->dbias = alloc_bytes(g->dbias_bytes);
    }
}

static void free_gradients(gradients *g) {
    for (int i = 0; i < 3; i++) {
        free(g->g[i]);
    }
    free(g->dbias);
}

static int gradients_untouched(const gradients *g) {
    for (int i = 0; i < 3; i++) {
        if (!test_is_sentinel(g->g[i], g->bytes[i])) {
            return 0;
        }
    }
    return !g->dbias || test_is_sentinel(g->dbias, g->dbias_bytes);
}

/* Whether every element the reference wrote (not the sentinel) is finite
 * in `got` and every one it left is left in `got` too. */
static int gradient_elements_ok(const void *got, const void *ref, size_t elems, size_t es,
                                attn_dtype dtype, int want_finite) {
    for (size_t e = 0; e < elems; e++) {
        const unsigned char *a = (const unsigned char *)got + e * es;
        const unsigned char *b = (const unsigned char *)ref + e * es;
        const int left = test_is_sentinel(b, es);
        if (left != test_is_sentinel(a, es)) {
            return 0;
        }
        if (!left && want_finite) {
            float x;
            test_from_storage(dtype, a, &x, 1);
            if (!isfinite(x)) {
                return 0;
            }
        }
    }
    return 1;
}

/* attn_backward_host after the host call's forward (status `fwd`, outputs
 * `out`): dO drawn from the seed, the forward's O and LSE, the request's
 * extra inputs, and the fault the backward byte asks for. After a failed
 * forward (without probabilities, which the backward does not take, and
 * not refused for its algorithm alone, which the backward does not read)
 * the backward must fail too; after a successful one it succeeds unless a
 * fault was put in (ATTN_ERR_NULL_ARGUMENT), or dBias is asked without a
 * bias (ATTN_ERR_INVALID_VALUE). A failure leaves a message and every
 * gradient untouched; attn_reference_backward (which reads no LSE) agrees
 * on success or failure, and
 * on success the same elements written, all finite with modest inputs. */
static void backward_call(attn_context_t ctx, const request *q, const tensors *t, attn_status fwd,
                          const outputs *out) {
    const attn_params *p = &q->p;
    const int fault = (q->backward >> BWD_FAULT_SHIFT) & 3;
    const int want_dbias = (q->backward & BACKWARD_DBIAS) != 0;
    float *dout_f = alloc_floats(t->elems[3]);
    fill_values(q, dout_f, t->elems[3] ? t->elems[3] : DUMMY_ELEMS, 9);
    void *dout = to_storage(t->dtype, dout_f, t->elems[3] ? t->elems[3] : DUMMY_ELEMS);
    gradients g, ref;
    alloc_gradients(t, want_dbias, &g);
    alloc_gradients(t, want_dbias, &ref);
    attn_backward_host_tensors bt = {.q = q->drop == DROP_Q ? NULL : t->q_store,
                                     .k = t->k_store,
                                     .v = t->v_store,
                                     .o = out->o,
                                     .dout = fault == BWD_FAULT_NO_DOUT ? NULL : dout,
                                     .lse = fault == BWD_FAULT_NO_LSE ? NULL : out->lse,
                                     .dq = fault == BWD_FAULT_NO_DQ ? NULL : g.g[0],
                                     .dk = g.g[1],
                                     .dv = g.g[2],
                                     .dbias = g.dbias,
                                     .bias = t->bias,
                                     .keep_mask = t->keep,
                                     .key_lengths = t->key_lengths,
                                     .alibi_slopes = t->slopes,
                                     .cu_seqlens_q = t->cu_q,
                                     .cu_seqlens_k = t->cu_k};
    if (q->flags & PLAIN_CALLS) {
        /* The forward had no extra inputs: neither has its backward. */
        bt.bias = NULL;
        bt.keep_mask = NULL;
        bt.key_lengths = NULL;
        bt.alibi_slopes = NULL;
        bt.cu_seqlens_q = bt.cu_seqlens_k = NULL;
    }
    const attn_status st = attn_backward_host(ctx, p, &bt);
    trace(" %s %s", "backward", st);
    const char *message = st == ATTN_SUCCESS ? "" : attn_last_error(ctx);
    if (!documented(st)) {
        violation("attn_backward_host returned an undocumented or OpenCL status", q, st, message);
    }
    if (st != ATTN_SUCCESS && (!*message || !gradients_untouched(&g))) {
        violation("attn_backward_host failed without a message or wrote its gradients", q, st,
                  message);
    }
    const int missing = fault != BWD_FAULT_NONE || !out->lse;
    /* The backward reads no params.algo (one algorithm, attn_cl.h): a
     * forward refused for its algorithm alone (an invalid value) may be
     * differentiated all the same. */
    attn_params any_algo = *p;
    any_algo.algo = ATTN_ALGO_AUTO;
    const int refused_for_algo = attn_check(ctx, &any_algo, 1, 0, NULL) == ATTN_SUCCESS &&
                                 predicted_fault(q, t, &(attn_status){0}) == ATTN_SUCCESS &&
                                 q->drop != DROP_Q;
    if (fwd != ATTN_SUCCESS && !(q->flags & WANT_PROBS) && !refused_for_algo &&
        st == ATTN_SUCCESS) {
        violation("attn_backward_host succeeded where the forward failed", q, st, "");
    }
    if (fwd == ATTN_SUCCESS) {
        const attn_status want = missing                          ? ATTN_ERR_NULL_ARGUMENT
                                 : want_dbias && !p->bias.present ? ATTN_ERR_INVALID_VALUE
                                                                  : ATTN_SUCCESS;
        if (st != want) {
            char what[160];
            snprintf(what, sizeof what, "attn_backward_host gave %s where %s was due",
                     attn_status_name(st), attn_status_name(want));
            violation(what, q, st, message);
        }
    }
    /* The reference: the same answer, the same elements written. */
    attn_backward_host_tensors rt = bt;
    rt.dq = fault == BWD_FAULT_NO_DQ ? NULL : ref.g[0];
    rt.dk = ref.g[1];
    rt.dv = ref.g[2];
    rt.dbias = ref.dbias;
    const attn_status rst = attn_reference_backward(p, &rt);
    trace(" %s %s", "reference backward", rst);
    if (rst != ATTN_SUCCESS && (!*attn_last_error(NULL) || !gradients_untouched(&ref))) {
        violation("attn_reference_backward failed without a message or wrote its gradients", q, rst,
                  attn_last_error(NULL));
    }
    /* The reference recomputes O and LSE: a missing LSE is no fault to it. */
    const int lse_missing = !bt.lse;
    if (!lse_missing && (rst == ATTN_SUCCESS) != (st == ATTN_SUCCESS)) {
        violation("attn_backward_host and attn_reference_backward disagree", q, st,
                  rst ? attn_last_error(NULL) : message);
    }
    if (st == ATTN_SUCCESS && rst == ATTN_SUCCESS) {
        /* Finite where the inputs are: modest ones (Q, K, V and dO, drawn
         * alike, finite and small), or wide ones whose forward kept every
         * LSE finite (or -inf, a row that sees no key). Where scale * q.k
         * overflows, LSE is +inf and P = exp(s - LSE) cannot be
         * recovered from it: not held. */
        int want_finite =
            fwd == ATTN_SUCCESS && (t->modest || t->wide) && all_finite(dout_f, t->elems[3]);
        for (size_t e = 0; want_finite && !t->modest && e < t->elems[4]; e++) {
            const float l = out->lse[e];
            want_finite =
                test_is_sentinel(&out->lse[e], sizeof(float)) || isfinite(l) || l == -INFINITY;
        }
        for (int i = 0; i < 3; i++) {
            if (!gradient_elements_ok(g.g[i], ref.g[i], t->elems[i], t->es, t->dtype,
                                      want_finite)) {
                violation(want_finite ? "a gradient is not finite, or written where the "
                                        "reference leaves it"
                                      : "a gradient is written where the reference leaves it",
                          q, st,
                          i == 0   ? "dQ"
                          : i == 1 ? "dK"
                                   : "dV");
            }
        }
        if (g.dbias && !gradient_elements_ok(g.dbias, ref.dbias, t->bias_alloc, sizeof(float),
                                             ATTN_DTYPE_F32, want_finite)) {
            violation("dBias is not finite, or written where the reference leaves it", q, st, "");
        }
    }
    free_gradients(&g);
    free_gradients(&ref);
    free(dout);
    free(dout_f);
}

/* ---- Merging ------------------------------------------------------------------ */

/* A merged O and LSE against the header, row by row, for a part `r`
 * merged with an all-masked part (`self` 0) or with itself (1): a row whose
 * LSE is NaN is NaN; one at -inf (masked in both) is O 0, LSE -inf; any
 * other gives r's O back and its LSE (+ log 2 with itself). `ulps` > 0
 * allows that many float ulps (plus the smallest denormal, which float
 * arithmetic halves to 0) for O and LSE: the device merges in float.
 * Elements of no row keep the sentinel. On a difference, says which into
 * `why`. */
static int merged_ok(const tensors *t, const outputs *r, const void *o, const float *lse, int self,
                     double ulps, char *why, size_t why_size) {
    const size_t n = r->o_bytes / t->es, lse_n = r->lse_elems;
    float *want = alloc_floats(n), *got = alloc_floats(n);
    if (t->es == 2) {
        test_from_storage(t->dtype, r->o, want, n);
        test_from_storage(t->dtype, o, got, n);
    } else {
        memcpy(want, r->o, n * sizeof(float));
        memcpy(got, o, n * sizeof(float));
    }
    unsigned char *covered_o = calloc(n, 1), *covered_l = calloc(lse_n, 1);
    if (!covered_o || !covered_l) {
        abort();
    }
    const test_shape *os = &t->shape[3], *ls = &t->shape[4];
    int ok = 1;
    for (int64_t b = 0; b < os->batch && ok; b++) {
        for (int64_t h = 0; h < os->heads && ok; h++) {
            for (int64_t i = 0; i < os->seq && ok; i++) {
                const size_t at_l =
                    (size_t)(b * ls->strides.batch + h * ls->strides.head + i * ls->strides.seq);
                const size_t at_o =
                    (size_t)(b * os->strides.batch + h * os->strides.head + i * os->strides.seq);
                covered_l[at_l] = 1;
                const double la = r->lse[at_l], lg = lse[at_l];
                const double lw = isnan(la) || la == -INFINITY ? la : self ? la + log(2.0) : la;
                const double tol = (self ? fmax(ulps, 0.5) : ulps) * 0x1p-23 * fmax(1.0, fabs(lw));
                ok = isnan(lw) ? isnan(lg) : isinf(lw) ? lg == lw : fabs(lg - lw) <= tol;
                if (!ok) {
                    snprintf(why, why_size, "LSE element %zu: %a, expected %a", at_l, lg, lw);
                }
                for (int64_t d = 0; d < os->inner && ok; d++) {
                    const size_t e = at_o + (size_t)d;
                    covered_o[e] = 1;
                    const double w = isnan(la) ? NAN : la == -INFINITY ? 0.0 : want[e];
                    const double g = got[e];
                    ok = isnan(w) ? isnan(g)
                                  : g == w || (ulps > 0.0 && isfinite(w) &&
                                               fabs(g - w) <= ulps * 0x1p-23 * fabs(w) + 0x1p-149);
                    if (!ok) {
                        snprintf(why, why_size, "O element %zu: %a, expected %a", e, g, w);
                    }
                }
            }
        }
    }
    for (size_t e = 0; e < n && ok; e++) {
        ok = covered_o[e] || test_is_sentinel((const char *)o + e * t->es, t->es);
        if (!ok) {
            snprintf(why, why_size, "O element %zu between rows written", e);
        }
    }
    for (size_t e = 0; e < lse_n && ok; e++) {
        ok = covered_l[e] || test_is_sentinel(lse + e, sizeof(float));
        if (!ok) {
            snprintf(why, why_size, "LSE element %zu between rows written", e);
        }
    }
    free(want);
    free(got);
    free(covered_o);
    free(covered_l);
    return ok;
}

/* attn_merge (and with DEVICE_CALL attn_merge_device) of a forward's O and
 * LSE with a part whose rows are all masked (LSE -inf, O NaN: a part at
 * -inf is never read), on either side and in place; and with itself. */
static void check_merges(attn_context_t ctx, const request *q, const tensors *t, const outputs *r,
                         int on_device) {
    const attn_params *p = &q->p;
    const size_t n = r->o_bytes / t->es, lse_n = r->lse_elems;
    /* A row whose LSE is +inf (non-finite inputs) merges into NaN: the
     * header's formula is exp(inf - inf) there. */
    for (size_t e = 0; e < lse_n; e++) {
        if (r->lse[e] == INFINITY) {
            return;
        }
    }
    void *masked_o = alloc_bytes(r->o_bytes);
    float *masked_lse = alloc_floats(lse_n);
    const uint16_t nan16 = p->dtype == ATTN_DTYPE_F16 ? 0x7e00 : 0x7fc0;
    for (size_t e = 0; e < n; e++) {
        if (t->es == 2) {
            memcpy((char *)masked_o + 2 * e, &nan16, 2);
        } else {
            ((float *)masked_o)[e] = NAN;
        }
    }
    for (size_t e = 0; e < lse_n; e++) {
        masked_lse[e] = -INFINITY;
    }
    void *o = alloc_bytes(r->o_bytes);
    float *lse = alloc_floats(lse_n);
    char why[160] = "";
    for (int form = 0; form < 4; form++) {
        memset(o, TEST_SENTINEL_BYTE, r->o_bytes);
        memset(lse, TEST_SENTINEL_BYTE, lse_n * sizeof(float));
        attn_merge_tensors m = {r->o, masked_o, r->lse, masked_lse, o, lse};
        if (form == 1) {
            m = (attn_merge_tensors){masked_o, r->o, masked_lse, r->lse, o, lse};
        } else if (form == 2) {
            memcpy(o, r->o, r->o_bytes);
            memcpy(lse, r->lse, lse_n * sizeof(float));
            m = (attn_merge_tensors){o, masked_o, lse, masked_lse, o, lse};
        } else if (form == 3) {
            m = (attn_merge_tensors){r->o, r->o, r->lse, r->lse, o, lse};
        }
        attn_status st = attn_merge(p, &m);
        trace(" %s %s", "merge", st);
        if (st != ATTN_SUCCESS) {
            violation("attn_merge refused what the forward ran", q, st, attn_last_error(NULL));
        }
        if (!merged_ok(t, r, o, lse, form == 3, 0.0, why, sizeof why)) {
            violation(form == 3 ? "attn_merge of a result with itself"
                                : "attn_merge with an all-masked part changed the result",
                      q, st, why);
        }
    }
    stats.merges++;
    if (on_device) {
        cl_context context = cl_context_of(ctx);
        cl_command_queue queue = attn_context_queue(ctx);
        cl_mem a_o = upload(context, r->o, r->o_bytes), a_l = upload(context, r->lse, lse_n * 4);
        cl_mem b_o = upload(context, masked_o, r->o_bytes);
        cl_mem b_l = upload(context, masked_lse, lse_n * 4);
        memset(o, TEST_SENTINEL_BYTE, r->o_bytes);
        memset(lse, TEST_SENTINEL_BYTE, lse_n * sizeof(float));
        cl_mem m_o = upload(context, o, r->o_bytes), m_l = upload(context, lse, lse_n * 4);
        for (int form = 0; form < 2; form++) {
            const attn_merge_device_tensors d = {.o_a = a_o,
                                                 .o_b = form ? a_o : b_o,
                                                 .lse_a = a_l,
                                                 .lse_b = form ? a_l : b_l,
                                                 .o = m_o,
                                                 .lse = m_l};
            cl_event done = NULL;
            attn_status st = attn_merge_device(ctx, p, &d, 0, NULL, &done);
            trace(" %s %s", "merge_device", st);
            if (st != ATTN_SUCCESS) {
                violation("attn_merge_device refused what the forward ran", q, st,
                          attn_last_error(ctx));
            }
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
            read_back(queue, m_o, o, r->o_bytes);
            read_back(queue, m_l, lse, lse_n * sizeof(float));
            if (!merged_ok(t, r, o, lse, form, form ? 2.0 : 0.0, why, sizeof why)) {
                violation(form ? "attn_merge_device of a result with itself"
                               : "attn_merge_device with an all-masked part changed the result",
                          q, st, why);
            }
        }
        cl_mem mems[6] = {a_o, a_l, b_o, b_l, m_o, m_l};
        for (int i = 0; i < 6; i++) {
            clReleaseMemObject(mems[i]);
        }
    }
    free(masked_o);
    free(masked_lse);
    free(o);
    free(lse);
}

/* A merge of a request the forward refused, or with a pointer missing:
 * refused like attn_check refuses it (asking for LSE, no probabilities), or
 * ATTN_ERR_NULL_ARGUMENT, writing nothing. */
static void check_merge_refused(attn_context_t ctx, const request *q, const tensors *t) {
    outputs a, out;
    request with_lse = *q;
    with_lse.flags |= WANT_LSE;
    with_lse.flags &= (uint8_t)~WANT_PROBS;
    alloc_outputs(&with_lse, t, &a);
    alloc_outputs(&with_lse, t, &out);
    const int missing = q->drop == DROP_Q;
    attn_merge_tensors m = {a.o, a.o, missing ? NULL : a.lse, a.lse, out.o, out.lse};
    const attn_status checked = attn_check(ctx, &q->p, 1, 0, NULL);
    attn_status st = attn_merge(&q->p, &m);
    trace(" %s %s", "merge", st);
    check_failure(q, st, st ? attn_last_error(NULL) : "", &out, "attn_merge");
    const attn_status want = missing ? ATTN_ERR_NULL_ARGUMENT : checked;
    if (st != want) {
        violation("attn_merge and attn_check disagree", q, st, st ? attn_last_error(NULL) : "");
    }
    if (want != ATTN_SUCCESS && (q->flags & DEVICE_CALL)) {
        cl_context context = cl_context_of(ctx);
        cl_mem o = upload(context, out.o, out.o_bytes);
        cl_mem l = upload(context, out.lse, out.lse_elems * sizeof(float));
        const attn_merge_device_tensors d = {
            .o_a = o, .o_b = o, .lse_a = missing ? NULL : l, .lse_b = l, .o = o, .lse = l};
        cl_event done = NULL;
        st = attn_merge_device(ctx, &q->p, &d, 0, NULL, &done);
        trace(" %s %s", "merge_device", st);
        read_back(attn_context_queue(ctx), o, out.o, out.o_bytes);
        read_back(attn_context_queue(ctx), l, out.lse, out.lse_elems * sizeof(float));
        check_failure(q, st, st ? attn_last_error(ctx) : "", &out, "attn_merge_device");
        if (st != want || done) {
            violation("attn_merge_device and attn_check disagree", q, st,
                      st ? attn_last_error(ctx) : "");
        }
        clReleaseMemObject(o);
        clReleaseMemObject(l);
    }
    free_outputs(&a);
    free_outputs(&out);
}

/* ---- One input ---------------------------------------------------------- */

static void finish_trace(const request *q) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *env = getenv("ATTN_FUZZ_TRACE");
        enabled = env && *env && strcmp(env, "0") != 0;
    }
    if (enabled) {
        char desc[512];
        describe(desc, sizeof desc, q);
        printf(" %s Q strides %lld/%lld/%lld%s flags 0x%02x:%s", desc,
               (long long)q->p.q_strides.batch, (long long)q->p.q_strides.head,
               (long long)q->p.q_strides.seq, q->known_layout ? "" : " (raw)", q->flags,
               trace_line);
    }
    trace_len = 0;
    trace_line[0] = '\0';
}

static attn_context_t context(void) {
    static attn_context_t ctx;
    if (!ctx) {
        const char *env = getenv("ATTN_FUZZ_STATS");
        if (env && *env && strcmp(env, "0") != 0) {
            atexit(print_stats);
        }
        attn_status st = attn_context_create(NULL, &ctx);
        if (st != ATTN_SUCCESS) {
            fprintf(stderr, "fuzz_forward: no context: %s: %s\n", attn_status_name(st),
                    attn_last_error(NULL));
            abort();
        }
    }
    return ctx;
}

static void tuning_string(attn_context_t ctx, reader *r) {
    char spec[300];
    size_t n = r->n < sizeof spec - 1 ? r->n : sizeof spec - 1;
    memcpy(spec, r->p, n);
    spec[n] = '\0';
    r->n -= n;
    attn_status st = attn_context_set_tuning(ctx, spec);
    trace(" %s %s", "set_tuning", st);
    if (st != ATTN_SUCCESS && st != ATTN_ERR_INVALID_VALUE) {
        request none;
        memset(&none, 0, sizeof none);
        violation("attn_context_set_tuning gave neither success nor INVALID_VALUE", &none, st,
                  attn_last_error(ctx));
    }
    /* Forwards run on the device's table entry. */
    attn_context_set_tuning(ctx, NULL);
}

/* The host call: attn_forward_host, or with PLAIN_CALLS attn_forward. */
static attn_status host_call(attn_context_t ctx, const request *q, const tensors *t,
                             const outputs *out) {
    const void *qs = q->drop == DROP_Q ? NULL : t->q_store;
    if (q->flags & PLAIN_CALLS) {
        return attn_forward(ctx, &q->p, qs, t->k_store, t->v_store, out->o, out->lse, out->probs);
    }
    const attn_host_tensors h = {.q = qs,
                                 .k = t->k_store,
                                 .v = t->v_store,
                                 .o = out->o,
                                 .lse = out->lse,
                                 .probs = out->probs,
                                 .bias = t->bias,
                                 .keep_mask = t->keep,
                                 .key_lengths = t->key_lengths,
                                 .alibi_slopes = t->slopes,
                                 .cu_seqlens_q = t->cu_q,
                                 .cu_seqlens_k = t->cu_k};
    return attn_forward_host(ctx, &q->p, &h);
}

/* attn_reference_host (attn_reference with PLAIN_CALLS) on the stored
 * inputs, against attn_check of the request as the reference reads it
 * (it has no algorithms: probabilities with ATTN_ALGO_FUSED are answered). */
static void reference_call(attn_context_t ctx, const request *q, const tensors *t,
                           attn_status fault, attn_status alt) {
    attn_params as_read = q->p;
    if ((q->flags & WANT_PROBS) && as_read.algo == ATTN_ALGO_FUSED) {
        as_read.algo = ATTN_ALGO_AUTO;
    }
    const attn_status checked =
        attn_check(ctx, &as_read, (q->flags & WANT_LSE) != 0, (q->flags & WANT_PROBS) != 0, NULL);
    outputs ref;
    alloc_outputs(q, t, &ref);
    const void *qs = q->drop == DROP_Q ? NULL : t->q_store;
    attn_status st;
    if (q->flags & PLAIN_CALLS) {
        st = attn_reference(&q->p, qs, t->k_store, t->v_store, ref.o, ref.lse, ref.probs);
    } else {
        const attn_host_tensors h = {.q = qs,
                                     .k = t->k_store,
                                     .v = t->v_store,
                                     .o = ref.o,
                                     .lse = ref.lse,
                                     .probs = ref.probs,
                                     .bias = t->bias,
                                     .keep_mask = t->keep,
                                     .key_lengths = t->key_lengths,
                                     .alibi_slopes = t->slopes,
                                     .cu_seqlens_q = t->cu_q,
                                     .cu_seqlens_k = t->cu_k};
        st = attn_reference_host(&q->p, &h);
    }
    trace(" %s %s", "reference", st);
    const char *message = st ? attn_last_error(NULL) : "";
    check_failure(q, st, message, &ref, "attn_reference_host");
    check_status(q, st, checked, fault, alt, q->drop == DROP_Q, message, "attn_reference_host");
    free_outputs(&ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    current_input = data;
    current_size = size;
    current_tensors = NULL;
    attn_context_t ctx = context();
    stats.inputs++;
    reader r = {data, size};
    request q;
    decode(&r, &q);
    if (!attn_status_name((attn_status)(int32_t)q.seed) ||
        !*attn_status_name((attn_status)(int32_t)q.seed)) {
        violation("attn_status_name gave NULL or \"\"", &q, ATTN_SUCCESS, "");
    }
    if (q.flags & TUNING_STRING) {
        tuning_string(ctx, &r);
    }
    if (q.kvcache) {
        fuzz_kvcache(ctx, &r, &q);
        stats.kvcache++;
        finish_trace(&q);
        return 0;
    }
    if (q.shape) {
        const attn_status st = attn_context_set_tuning(ctx, kernel_shapes[q.shape]);
        if (st != ATTN_SUCCESS) {
            violation("attn_context_set_tuning refused a kernel shape the tests use", &q, st,
                      attn_last_error(ctx));
        }
    }

    const int want_lse = (q.flags & WANT_LSE) != 0, want_probs = (q.flags & WANT_PROBS) != 0;
    const size_class sizes = classify(&q.p);
    if (sizes == SIZES_HUGE) {
        /* Nothing that reads tensors: the check alone must answer. */
        attn_status st = attn_check(ctx, &q.p, want_lse, want_probs, NULL);
        trace(" %s %s", "check", st);
        stats.huge++;
        check_failure(&q, st, st ? attn_last_error(ctx) : "", &(outputs){0}, "attn_check");
        attn_context_set_tuning(ctx, NULL);
        finish_trace(&q);
        return 0;
    }
    tensors t;
    make_tensors(&q, sizes == SIZES_REFUSED, &t);
    current_tensors = &t;
    const int valid = sizes == SIZES_SMALL && valid_params(&q);
    if (sizes == SIZES_REFUSED && valid_params(&q)) {
        violation("the harness took a request with extreme sizes for valid", &q, ATTN_SUCCESS, "");
    }
    attn_status alt;
    const attn_status fault = predicted_fault(&q, &t, &alt);
    const int q_dropped = q.drop == DROP_Q;

    attn_algo chosen = ATTN_ALGO_AUTO;
    attn_status checked = attn_check(ctx, &q.p, want_lse, want_probs, &chosen);
    trace(" %s %s", "check", checked);
    check_failure(&q, checked, checked ? attn_last_error(ctx) : "", &(outputs){0}, "attn_check");
    if (sizes == SIZES_REFUSED && checked == ATTN_SUCCESS) {
        violation("attn_check accepted a request with an INT32_MIN size or head dim", &q, checked,
                  "");
    }
    if (valid && checked != ATTN_SUCCESS) {
        violation("attn_check refused a valid request", &q, checked, attn_last_error(ctx));
    }
    const attn_algo expected = q.p.algo != ATTN_ALGO_AUTO ? q.p.algo
                               : !want_probs              ? ATTN_ALGO_FUSED
                               : checked == ATTN_SUCCESS  ? auto_algo_for_probs(ctx, &q, want_lse)
                                                          : ATTN_ALGO_AUTO;
    if (checked == ATTN_SUCCESS && chosen != expected) {
        violation("attn_check chose another algorithm", &q, checked, "");
    }

    /* Device work only where it builds few kernels (see the top). */
    const int builds = checked == ATTN_SUCCESS && !fault && !q_dropped;
    stats.refused += checked != ATTN_SUCCESS;
    stats.faulted += checked == ATTN_SUCCESS && !builds;
    if (!builds || device_allowed(&q)) {
        outputs out;
        alloc_outputs(&q, &t, &out);
        attn_status st = host_call(ctx, &q, &t, &out);
        trace(" %s %s", "forward", st);
        const char *message = st == ATTN_SUCCESS ? "" : attn_last_error(ctx);
        check_failure(&q, st, message, &out, "the host call");
        check_status(&q, st, checked, fault, ATTN_SUCCESS, q_dropped, message, "the host call");
        reference_call(ctx, &q, &t, fault, alt);
        if (st == ATTN_SUCCESS) {
            check_against_reference(&q, &t, &out);
            count_config(&q, chosen);
        }
        if (q.flags & DEVICE_CALL) {
            device_call(ctx, &q, &t, fault, st, chosen, &out);
        }
        if (q.backward & BACKWARD) {
            backward_call(ctx, &q, &t, st, &out);
        }
        if ((q.flags & MERGE) && st == ATTN_SUCCESS && out.lse) {
            const int64_t rows = q.p.varlen ? q.p.total_q : q.p.seq_q;
            check_merges(ctx, &q, &t, &out,
                         (q.flags & DEVICE_CALL) &&
                             launch_shape_ok(rows, q.p.heads_q, q.p.varlen ? 1 : q.p.batch));
        } else if ((q.flags & MERGE) && st != ATTN_SUCCESS) {
            check_merge_refused(ctx, &q, &t);
        }
        free_outputs(&out);
    } else {
        check_reference_alone(&q, &t, checked);
        stats.reference_alone++;
    }
    free_tensors(&t);
    current_tensors = NULL;
    attn_context_set_tuning(ctx, NULL);
    finish_trace(&q);
    return 0;
}
