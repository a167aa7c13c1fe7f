/* Decoding a fuzz input into a request, and the header's validity rules;
 * see fuzz_request.h and the layout above decode(). */
#include "fuzz_request.h"

#include <float.h>
#include <math.h>
#include <string.h>

static uint8_t u8(reader *r) {
    if (!r->n) {
        return 0;
    }
    r->n--;
    return *r->p++;
}

static uint32_t u32(reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)u8(r) << (8 * i);
    }
    return v;
}

static float bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Values no valid request has. */
static const int32_t bad_sizes[4] = {0, -1, INT32_MIN, INT32_MAX};

/* A size in 1..max, or 1 time in 16 an invalid one. */
static int32_t size_field(reader *r, int32_t max) {
    const uint8_t b = u8(r);
    if ((b >> 4) == 0) {
        return bad_sizes[b & 3];
    }
    return 1 + (int32_t)(b % (uint8_t)max);
}

/* Head dims: mostly from {1, 3, 8, 16} (those that can run on the device,
 * see plain_dims), sometimes any of 1..512, sometimes invalid. `zero_ok`
 * lets 0 mean "same as head_dim" (head_dim_v). */
static const int32_t device_dims[4] = {1, 3, 8, 16};
static int32_t dim_field(reader *r, int zero_ok) {
    const uint8_t cls = u8(r), v = u8(r);
    if (zero_ok && cls < 64) {
        return 0;
    }
    if (cls < 80) {
        const int32_t bad[4] = {0, -1, ATTN_MAX_HEAD_DIM + 1, INT32_MAX};
        return bad[v & 3];
    }
    if (cls < 112) {
        return 1 + v; /* 1..256 */
    }
    if (cls < 128) {
        return 257 + v; /* 257..512 */
    }
    return device_dims[v & 3];
}

static int32_t enum_field(reader *r, int32_t count) {
    const uint8_t b = u8(r);
    if (b < 240) {
        return b % count;
    }
    const int32_t bad[4] = {count, -1, 255, INT32_MIN};
    return bad[b & 3];
}

/* The storage type, in two fields: the core layout's byte (255: the
 * invalid 3, else f32, as inputs written before 16-bit storage mean) and
 * an appended one that, when nonzero, replaces it: b % 3 (0 f32, 1 f16,
 * 2 bf16), or from 240 on an invalid value. */
static attn_dtype dtype_field(reader *r) {
    return u8(r) == 255 ? (attn_dtype)3 : ATTN_DTYPE_F32;
}

static attn_dtype storage_field(reader *r, attn_dtype core) {
    const uint8_t b = u8(r);
    if (b == 0) {
        return core;
    }
    if (b < 240) {
        return (attn_dtype)(b % 3);
    }
    const int32_t bad[4] = {-1, 255, INT32_MIN, 3};
    return (attn_dtype)bad[b & 3];
}

static float scale_field(reader *r) {
    const uint8_t cls = u8(r);
    const uint32_t raw = u32(r);
    const float specials[8] = {NAN, INFINITY, -INFINITY, FLT_MAX, 1e-38f, 1.4e-45f, -0.0f, 1e6f};
    switch (cls & 7) {
    case 4:
        return specials[raw & 7];
    case 5:
        return bits_to_float(raw); /* anything, NaN payloads included */
    case 6:
    case 7:
        return -2.0f + 4.0f * (float)(raw & 0xffff) / 65535.0f;
    default:
        return 0.0f; /* the default, 1/sqrt(head_dim) */
    }
}

/* 0..3 off; 4 modest (0.5..50); 5 huge; 6 special (NaN, infinities,
 * negative, -0 (off), the smallest denormal, tiny); 7 any bits. */
static float softcap_field(reader *r) {
    const uint8_t cls = u8(r);
    const uint32_t raw = u32(r);
    const float huge[4] = {1e4f, 1e6f, 1e30f, FLT_MAX};
    const float specials[8] = {NAN, INFINITY, -INFINITY, -1.0f, -0.0f, 1.4e-45f, 1e-30f, -FLT_MAX};
    switch (cls & 7) {
    case 4:
        return 0.5f + 49.5f * (float)(raw & 0xffff) / 65535.0f;
    case 5:
        return huge[raw & 3];
    case 6:
        return specials[raw & 7];
    case 7:
        return bits_to_float(raw);
    default:
        return 0.0f;
    }
}

/* Dropout's probability: 0 off (class 0); classes 1-3 a valid one in
 * [0, 0.95]; 4 special (NaN, -0 (off), 1, negative, a tiny one (threshold
 * 0: every key kept), just below 1 (threshold capped), the smallest
 * denormal, infinity); 5 any bits; 6, 7 one half. */
static float dropout_field(reader *r) {
    const uint8_t cls = u8(r);
    const uint32_t raw = u32(r);
    const float specials[8] = {NAN, -0.0f, 1.0f, -0.25f, 1e-30f, 0.99999f, 1.4e-45f, INFINITY};
    switch (cls & 7) {
    case 0:
        return 0.0f;
    case 1:
    case 2:
    case 3:
        return 0.95f * (float)(raw & 0xffff) / 65535.0f;
    case 4:
        return specials[raw & 7];
    case 5:
        return bits_to_float(raw);
    default:
        return 0.5f;
    }
}

static uint64_t u64(reader *r) {
    const uint64_t lo = u32(r);
    return lo | (uint64_t)u32(r) << 32;
}

/* A flag field: 0 off; otherwise nonzero, sometimes a value other than 1
 * (the header says nonzero). */
static int32_t flag_value(uint8_t cls) {
    return cls == 0 ? 0 : (cls & 0x80) ? -(int32_t)cls : 1;
}

/* A window extent: -8..39 (negative: unbounded), or one of the extremes. */
static int32_t extent_field(reader *r) {
    const uint8_t v = u8(r);
    if (v >= 248) {
        const int32_t specials[8] = {INT32_MIN, INT32_MAX, INT32_MAX - 1, 1 << 30,
                                     -1,        0,         65536,         -65536};
        return specials[v & 7];
    }
    return (int32_t)(v % 48) - 8;
}

/* A bias or keep-mask broadcast size: 0, 1, the full count, or another. */
static int32_t broadcast_field(uint8_t sel, int32_t full) {
    switch (sel & 3) {
    case 0:
        return 0;
    case 1:
        return 1;
    case 2:
        return full;
    default: {
        const int32_t bad[4] = {full < INT32_MAX ? full + 1 : -2, -1, full == 2 ? 3 : 2, INT32_MAX};
        return bad[(sel >> 2) & 3];
    }
    }
}

/* The feature flags the kernels are built with (lib/launch.c's
 * attn_feature_options, from the header's rules). */
unsigned feature_bits(const attn_params *p) {
    return (p->window.enabled ? F_WINDOW : 0) | (p->key_padding ? F_PAD : 0) |
           (p->varlen ? F_VARLEN : 0) | (p->softcap > 0.0f ? F_SOFTCAP : 0) |
           (p->alibi ? F_ALIBI : 0) | (p->bias.present ? F_BIAS : 0) |
           (p->keep_mask.present ? F_KEEP : 0);
}

/* The combinations with features or 16-bit storage that run on the device,
 * each on one pair of head dims and with LSE (5 programs each at most:
 * fused, and the three-kernel path's four): every feature appears in at
 * least three, all of them together in two, each storage type and each
 * mask in at least two. */
const device_combo device_combos[] = {
    {ATTN_DTYPE_F16, ATTN_MASK_NONE, 0, 8, 8},
    {ATTN_DTYPE_BF16, ATTN_MASK_CAUSAL_TOP_LEFT, 0, 3, 16},
    {ATTN_DTYPE_F16, ATTN_MASK_CAUSAL_BOTTOM_RIGHT, F_WINDOW | F_SOFTCAP, 8, 8},
    {ATTN_DTYPE_F32, ATTN_MASK_CAUSAL_TOP_LEFT, F_ALIBI | F_BIAS | F_PAD, 16, 3},
    {ATTN_DTYPE_F16, ATTN_MASK_NONE, F_KEEP | F_VARLEN | F_WINDOW, 8, 8},
    {ATTN_DTYPE_BF16, ATTN_MASK_CAUSAL_BOTTOM_RIGHT, F_ALL, 8, 8},
    {ATTN_DTYPE_F32, ATTN_MASK_NONE, F_ALL, 3, 16},
};
_Static_assert(sizeof device_combos / sizeof device_combos[0] == DEVICE_COMBOS,
               "force_combo's selector is three bits: 1..7");

/* Fused kernel shapes a forced combination may run with (tests/meson.build
 * sweeps the same ones): the device's table entry, the gpu-shaped variant
 * (kernels/flash_gpu.cl) at odd sizes and the narrowest cpu one. Not the
 * table-sized gpu one: as tests/meson.build says, the odd one covers its
 * features, and on a CPU it is slow. Set on the context for the input's
 * calls and reset after. */
const char *const kernel_shapes[3] = {NULL, "variant=gpu,rows=4,tile_k=12,wg=12",
                                      "variant=cpu,rows=1,tile_k=4,vec=4,unroll=4"};

static void strides_field(reader *r, request *q) {
    q->layout = u8(r);
    if ((q->layout & 7) >= 6) {
        for (int i = 0; i < 15; i++) {
            q->raw[i] = (int8_t)u8(r);
        }
    }
}

static int sizes_small(const attn_params *p) {
    return p->batch > 0 && p->batch <= 64 && p->heads_q > 0 && p->heads_q <= 64 &&
           p->heads_kv >= 0 && p->heads_kv <= 64 && p->seq_q > 0 && p->seq_q <= 64 &&
           p->seq_k > 0 && p->seq_k <= 64 && p->head_dim > 0 && p->head_dim <= ATTN_MAX_HEAD_DIM &&
           p->head_dim_v >= 0 && p->head_dim_v <= ATTN_MAX_HEAD_DIM;
}

/* The Q/K/V/O/LSE strides. */
static void apply_layout(request *q) {
    attn_params *p = &q->p;
    q->known_layout = 1;
    switch (q->layout & 7) {
    case 3:
    case 4:
    case 5:
        /* BSHD, HBSD, padded: only for sizes the layouts can take. */
        if (sizes_small(p) && (!p->varlen || (p->total_q > 0 && p->total_q <= 256 &&
                                              p->total_k > 0 && p->total_k <= 256))) {
            const test_layout layouts[3] = {TEST_BSHD, TEST_HBSD, TEST_PADDED};
            test_set_layout(p, layouts[(q->layout & 7) - 3]);
        }
        return;
    case 6:
    case 7: {
        /* Any small stride, negative and overlapping ones included. */
        attn_strides *all[5] = {&p->q_strides, &p->k_strides, &p->v_strides, &p->o_strides,
                                &p->lse_strides};
        for (int t = 0; t < 5; t++) {
            all[t]->batch = q->raw[3 * t] * 4;
            all[t]->head = q->raw[3 * t + 1] * 2;
            all[t]->seq = q->raw[3 * t + 2];
        }
        q->known_layout = 0;
        return;
    }
    default:
        return; /* packed BHSD */
    }
}

/* A bias or keep-mask's strides: packed; padded; partly given (rows shared
 * across heads and batches); overlapping rows; or one negative. */
static void apply_operand_strides(uint8_t sel, const attn_params *p, attn_score_operand *op) {
    if (!sizes_small(p)) {
        return;
    }
    const int64_t sq = p->seq_q, sk = p->seq_k;
    const int64_t heads = op->heads > 1 && op->heads <= 64 ? op->heads : 1;
    switch (sel & 7) {
    case 4: {
        const int64_t seq = sk + 1 + ((sel >> 3) & 3);
        op->strides = (attn_strides){heads * (sq * seq + 3) + 5, sq * seq + 3, seq};
        return;
    }
    case 5:
        op->strides = (attn_strides){0, 0, sk};
        return;
    case 6:
        op->strides = (attn_strides){2 * sk, sk, (sel >> 3) & 1};
        return;
    case 7: {
        const attn_strides negative[3] = {{0, 0, -1}, {0, -sk, sk}, {-1, 0, 0}};
        op->strides = negative[((sel >> 3) & 3) % 3];
        return;
    }
    default:
        return; /* packed */
    }
}

static void operand_field(reader *r, const attn_params *p, attn_score_operand *op, uint8_t *mode,
                          uint8_t *strides) {
    const uint8_t cls = u8(r), bsel = u8(r), hsel = u8(r);
    *strides = u8(r);
    /* Sizes even when absent: they must then be ignored. */
    op->present = flag_value(cls);
    op->batch = broadcast_field(bsel, p->batch);
    op->heads = broadcast_field(hsel, p->heads_q);
    *mode = (cls >> 1) & 3;
}

/* A splitmix stream for everything drawn from the input's seed. */
test_rng rng_for(const request *q, uint64_t salt) {
    test_rng rng;
    test_rng_seed(&rng, ((uint64_t)q->seed << 8) ^ salt);
    return rng;
}

int32_t draw(test_rng *rng, int32_t lo, int32_t hi) {
    return lo + (int32_t)test_rng_float(rng, 0.0f, (float)(hi - lo + 1) - 0.5f);
}

/* Varlen: sequence lengths (from the seed), an optional corruption, and the
 * totals. varlen_mode: 0 sequence 0 the longest, 1 random, 2 every other
 * sequence empty, 3 all the longest. varlen_fault: bits 0-2 the corruption
 * (4 cu[0] = 1, 5 falling, 6 a sequence one longer than seq, 7 cu[B] past
 * the total), bit 3 on the K side instead of Q; bits 4-6 the totals (0-3
 * cu[B], at least 1; 4 a few rows more; 5 total_q 0; 6 total_k -1 or
 * INT32_MIN; 7 total_k 40 rows more). */
static void make_varlen(request *q) {
    attn_params *p = &q->p;
    if (!p->varlen || p->batch < 1 || p->batch > MAX_BATCH || p->seq_q < 1 || p->seq_k < 1 ||
        p->seq_q > 64 || p->seq_k > 64) {
        /* Without varlen the totals are ignored: garbage with GARBAGE_EXTRAS. */
        p->total_q = p->varlen ? 1 : (q->device_extra & GARBAGE_EXTRAS) ? -3 : 0;
        p->total_k = p->varlen ? 1 : (q->device_extra & GARBAGE_EXTRAS) ? INT32_MIN : 0;
        memset(q->cu_q, 0, sizeof q->cu_q);
        memset(q->cu_k, 0, sizeof q->cu_k);
        return;
    }
    test_rng rng = rng_for(q, 5);
    const int32_t batch = p->batch;
    int32_t len[2][MAX_BATCH];
    const int32_t longest[2] = {p->seq_q, p->seq_k};
    for (int side = 0; side < 2; side++) {
        for (int32_t b = 0; b < batch; b++) {
            const int32_t any = draw(&rng, 0, longest[side]);
            switch (q->varlen_mode & 3) {
            case 0:
                len[side][b] = b == 0 ? longest[side] : any;
                break;
            case 1:
                len[side][b] = any;
                break;
            case 2:
                len[side][b] = b % 2 ? 0 : any;
                break;
            default:
                len[side][b] = longest[side];
                break;
            }
        }
    }
    const int fault = q->varlen_fault & 7, side = (q->varlen_fault >> 3) & 1;
    if (fault == 6) {
        len[side][batch - 1] = longest[side] + 1;
    }
    int32_t *cu[2] = {q->cu_q, q->cu_k};
    for (int s = 0; s < 2; s++) {
        cu[s][0] = 0;
        for (int32_t b = 0; b < batch; b++) {
            cu[s][b + 1] = cu[s][b] + len[s][b];
        }
    }
    if (fault == 4) {
        cu[side][0] = 1;
    } else if (fault == 5) {
        if (batch >= 2) {
            cu[side][1] = cu[side][2] + 1;
        } else {
            cu[side][1] = -1;
        }
    }
    const int32_t extra = 1 + (int32_t)(q->seed & 3);
    int32_t *total[2] = {&p->total_q, &p->total_k};
    for (int s = 0; s < 2; s++) {
        *total[s] = cu[s][batch] > 0 ? cu[s][batch] : 1;
    }
    switch ((q->varlen_fault >> 4) & 7) {
    case 4:
        p->total_q += extra;
        p->total_k += extra;
        break;
    case 5:
        p->total_q = 0;
        break;
    case 6:
        p->total_k = q->seed & 1 ? INT32_MIN : -1;
        break;
    case 7:
        p->total_k += 40;
        break;
    default:
        break;
    }
    if (fault == 7) {
        cu[side][batch] = *total[side] + 1;
    }
}

/* Puts a request on device_combos[c]: its storage type, mask and head
 * dims, LSE, its features on (a flag that was 0 becomes 1, a softcap of 0
 * becomes 5) and the others off. Everything else stays the input's: sizes,
 * values, broadcasts, strides, the extra inputs and their faults. Random
 * mutation seldom lands on a combination, and only these run on the device
 * with features. */
static void force_combo(request *q, int c) {
    attn_params *p = &q->p;
    const unsigned f = device_combos[c].features;
    p->dtype = device_combos[c].dtype;
    p->mask = device_combos[c].mask;
    p->head_dim = device_combos[c].head_dim;
    p->head_dim_v = device_combos[c].head_dim_v;
    q->flags |= WANT_LSE;
    p->window.enabled = !(f & F_WINDOW) ? 0 : p->window.enabled ? p->window.enabled : 1;
    p->softcap = !(f & F_SOFTCAP) ? 0.0f : p->softcap != 0.0f ? p->softcap : 5.0f;
    p->alibi = !(f & F_ALIBI) ? 0 : p->alibi ? p->alibi : 1;
    p->key_padding = !(f & F_PAD) ? 0 : p->key_padding ? p->key_padding : 1;
    p->varlen = !(f & F_VARLEN) ? 0 : p->varlen ? p->varlen : 1;
    p->bias.present = !(f & F_BIAS) ? 0 : p->bias.present ? p->bias.present : 1;
    p->keep_mask.present = !(f & F_KEEP) ? 0 : p->keep_mask.present ? p->keep_mask.present : 1;
}

/* The byte layout. A byte read past the end is 0: every appended field
 * then means "off", so inputs written for an earlier layout keep their
 * meaning.
 *   0      flags (WANT_LSE ...)
 *   1..5   batch, heads_q, heads_kv, seq_q, seq_k
 *   6..9   head_dim, head_dim_v (two bytes each)
 *   10..12 mask, algo, dtype (255: invalid; see storage_field)
 *   13..17 scale (class, 4 bytes)
 *   18     layout (6, 7: 15 raw stride bytes follow)
 *   then   value_mode, specials, seed (4 bytes)
 * With TUNING_STRING the rest of the input is the tuning spec. Otherwise
 * the appended fields follow, each described where it is read:
 *   storage type (storage_field); softcap (class, 4 bytes); window (class,
 *   left, right); alibi (class); bias (class, batch, heads, strides);
 *   keep-mask (the same); key padding (class); varlen (class, fault: see
 *   make_varlen); drop (one pointer made NULL); device_extra (the device
 *   call's buffers, GARBAGE_EXTRAS, and in its top three bits force_combo);
 *   with force_combo, the fused kernel's shape (kernel_shapes); dropout
 *   (dropout_field: class, 4 bytes; seed, offset: 8 bytes each, low
 *   first); the backward byte (BACKWARD...); the kvcache byte: nonzero makes
 *   the request a KV-cache one, its fields next (tests/fuzz_kvcache.c).
 * tests/make_fuzz_seeds.py writes this layout from keyword arguments. */
void decode(reader *r, request *q) {
    memset(q, 0, sizeof *q);
    q->flags = u8(r);
    attn_params *p = &q->p;
    attn_params_init(p, 1, 1, 1, 1, 1);
    p->batch = size_field(r, 3);
    p->heads_q = size_field(r, 3);
    const uint8_t kv = u8(r);
    p->heads_kv = kv < 128 ? 0 : (kv < 136 ? bad_sizes[kv & 3] : 1 + kv % 3);
    p->seq_q = size_field(r, 40);
    p->seq_k = size_field(r, 40);
    p->head_dim = dim_field(r, 0);
    p->head_dim_v = dim_field(r, 1);
    p->mask = (attn_mask)enum_field(r, 3);
    p->algo = (attn_algo)enum_field(r, 3);
    p->dtype = dtype_field(r);
    p->scale = scale_field(r);
    strides_field(r, q);
    q->value_mode = u8(r);
    q->specials = u8(r);
    q->seed = u32(r);
    q->drop = DROP_NONE;
    if (!(q->flags & TUNING_STRING)) {
        p->dtype = storage_field(r, p->dtype);
        p->softcap = softcap_field(r);
        const uint8_t win = u8(r);
        p->window.enabled = (win & 3) ? flag_value(win) : 0;
        p->window.left = extent_field(r);
        p->window.right = extent_field(r);
        const uint8_t alibi = u8(r);
        p->alibi = flag_value(alibi);
        q->alibi_mode = alibi & 7;
        operand_field(r, p, &p->bias, &q->bias_mode, &q->bias_strides);
        operand_field(r, p, &p->keep_mask, &q->keep_mode, &q->keep_strides);
        const uint8_t pad = u8(r);
        p->key_padding = flag_value(pad);
        q->pad_mode = pad & 7;
        const uint8_t varlen = u8(r);
        p->varlen = flag_value(varlen);
        q->varlen_mode = varlen & 3;
        q->varlen_fault = u8(r);
        const uint8_t drop = u8(r);
        q->drop = (drop & 0xC0) == 0xC0 ? drop & 7 : DROP_NONE;
        q->device_extra = u8(r);
        const uint8_t shape = u8(r);
        if (q->device_extra >> COMBO_SHIFT) {
            force_combo(q, (q->device_extra >> COMBO_SHIFT) - 1);
            q->shape = shape % 3;
        }
        p->dropout_p = dropout_field(r);
        p->dropout_seed = u64(r);
        p->dropout_offset = u64(r);
        q->backward = u8(r);
        q->kvcache = u8(r);
    }
    make_varlen(q);
    apply_layout(q);
    apply_operand_strides(q->bias_strides, p, &p->bias);
    apply_operand_strides(q->keep_strides, p, &p->keep_mask);
}

size_class classify(const attn_params *p) {
    const int32_t counts[5] = {p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k};
    int huge = 0;
    for (int i = 0; i < 5; i++) {
        if (counts[i] == INT32_MIN) {
            return SIZES_REFUSED;
        }
        huge |= counts[i] == INT32_MAX;
    }
    if (p->head_dim == INT32_MAX || p->head_dim_v == INT32_MAX) {
        return SIZES_REFUSED;
    }
    return huge ? SIZES_HUGE : SIZES_SMALL;
}

int dtype_ok(attn_dtype d) {
    return d == ATTN_DTYPE_F32 || d == ATTN_DTYPE_F16 || d == ATTN_DTYPE_BF16;
}

/* Bytes of one Q/K/V/O element; floats for an invalid type (the library
 * must refuse before it reads). */
size_t elem_size(attn_dtype d) {
    return d == ATTN_DTYPE_F16 || d == ATTN_DTYPE_BF16 ? 2 : 4;
}

int operand_ok(const attn_score_operand *op, const attn_params *p) {
    if (!op->present) {
        return 1;
    }
    const int sizes = (op->batch == 0 || op->batch == 1 || op->batch == p->batch) &&
                      (op->heads == 0 || op->heads == 1 || op->heads == p->heads_q);
    return sizes && op->strides.batch >= 0 && op->strides.head >= 0 && op->strides.seq >= 0;
}

/* Whether the header's rules make `p` (its pointers aside) a request every
 * device must accept. */
int valid_params(const request *q) {
    const attn_params *p = &q->p;
    const int32_t hkv = p->heads_kv ? p->heads_kv : p->heads_q;
    const int32_t dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    return q->known_layout && p->batch > 0 && p->heads_q > 0 && hkv > 0 && p->heads_q % hkv == 0 &&
           p->seq_q > 0 && p->seq_k > 0 && p->head_dim >= 1 && p->head_dim <= ATTN_MAX_HEAD_DIM &&
           dv >= 1 && dv <= ATTN_MAX_HEAD_DIM &&
           (unsigned)p->mask <= ATTN_MASK_CAUSAL_BOTTOM_RIGHT &&
           (unsigned)p->algo <= ATTN_ALGO_FUSED && dtype_ok(p->dtype) && isfinite(p->scale) &&
           isfinite(p->softcap) && p->softcap >= 0.0f && operand_ok(&p->bias, p) &&
           operand_ok(&p->keep_mask, p) && (!p->varlen || (p->total_q > 0 && p->total_k > 0)) &&
           p->dropout_p >= 0.0f && p->dropout_p < 1.0f &&
           !((q->flags & WANT_PROBS) && p->algo == ATTN_ALGO_FUSED);
}

attn_algo auto_algo_for_probs(attn_context_t ctx, const request *q, int want_lse) {
    attn_device_info info;
    if (attn_context_device_info(ctx, &info) != ATTN_SUCCESS || info.is_gpu)
        return ATTN_ALGO_THREE_KERNEL;
    /* docs/api.md: more than half of the probabilities go to the three-kernel path. */
    const attn_params *p = &q->p;
    const int heads_end = p->probs_heads_end ? p->probs_heads_end : p->heads_q;
    const int rows_end = p->probs_rows_end ? p->probs_rows_end : p->seq_q;
    if (2.0 * (heads_end - p->probs_heads_begin) * (rows_end - p->probs_rows_begin) >
        (double)p->heads_q * p->seq_q)
        return ATTN_ALGO_THREE_KERNEL;
    attn_params fused = q->p;
    fused.algo = ATTN_ALGO_FUSED;
    return attn_check(ctx, &fused, want_lse, 1, NULL) == ATTN_SUCCESS ? ATTN_ALGO_FUSED
                                                                      : ATTN_ALGO_THREE_KERNEL;
}
