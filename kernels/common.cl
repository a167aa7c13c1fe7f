/* Shared by every libattn_cl program; prepended to each kernel file. The
 * semantics are attn_cl.h's header comment; lib/reference.c spells out the
 * same rules in double.
 *
 * Build-time parameters (-D), set by the host for each plan (absent = 0):
 *   HEAD_DIM, HEAD_DIM_V  sizes of the Q/K and V/O rows
 *   DTYPE                 storage of Q, K, V, O: 0 float, 1 half, 2 bfloat16
 *   MASK_MODE             0 none, 1 causal top-left, 2 causal bottom-right
 *   HAS_LSE               1 when the log-sum-exp output is wanted
 *   WINDOW                1: a sliding window (runtime extents, negative = unbounded)
 *   KEY_PADDING           1: per-batch key lengths
 *   VARLEN                1: packed sequences through cu_seqlens
 *   SOFTCAP               1: s = softcap * tanh(s / softcap)
 *   ALIBI                 1: s -= slope[h] * |j - diag(i)|
 *   HAS_BIAS              1: s += bias[b, h, i, j]
 *   HAS_KEEP_MASK         1: keys whose keep_mask byte is 0 are masked
 *   DROPOUT               1: attention weights dropped by dropout_keep and
 *                         the kept ones scaled by dropout_scale = 1 / (1 - p)
 */

/* Clang notes that a 16-wide float vector passed to a function (vload16,
 * vstore16, a helper) would change the ABI on an x86 CPU without AVX-512. A
 * kernel program is compiled as one unit, so no ABI boundary exists here; the
 * note would only fail -Werror builds on such CPUs. Build options cannot carry
 * -Wno-psabi (PoCL refuses -W options other than -w and -Werror). */
#if defined(__clang__) && defined(__has_warning)
#if __has_warning("-Wpsabi")
#pragma clang diagnostic ignored "-Wpsabi"
#endif
#endif

#ifndef DTYPE
#define DTYPE 0
#endif
#ifndef MASK_MODE
#define MASK_MODE 0
#endif
#ifndef HAS_LSE
#define HAS_LSE 0
#endif
#ifndef WINDOW
#define WINDOW 0
#endif
#ifndef KEY_PADDING
#define KEY_PADDING 0
#endif
#ifndef VARLEN
#define VARLEN 0
#endif
#ifndef SOFTCAP
#define SOFTCAP 0
#endif
#ifndef ALIBI
#define ALIBI 0
#endif
#ifndef HAS_BIAS
#define HAS_BIAS 0
#endif
#ifndef HAS_KEEP_MASK
#define HAS_KEEP_MASK 0
#endif
#ifndef DROPOUT
#define DROPOUT 0
#endif

#if DTYPE < 0 || DTYPE > 2
#error "DTYPE must be 0 (float), 1 (half) or 2 (bfloat16)"
#endif
#if MASK_MODE < 0 || MASK_MODE > 2
#error "MASK_MODE must be 0, 1 or 2"
#endif
#if defined(HEAD_DIM) && (HEAD_DIM < 1 || HEAD_DIM > 512)
#error "HEAD_DIM must be 1..512 (ATTN_MAX_HEAD_DIM)"
#endif
#if defined(HEAD_DIM_V) && (HEAD_DIM_V < 1 || HEAD_DIM_V > 512)
#error "HEAD_DIM_V must be 1..512 (ATTN_MAX_HEAD_DIM)"
#endif

#define MASK_NONE 0
#define MASK_CAUSAL_TOP_LEFT 1
#define MASK_CAUSAL_BOTTOM_RIGHT 2

/* Anything beyond plain scale * q.k: the kernels then compute the modified
 * score itself rather than folding the scale into exp2. */
#define HAS_MODIFIERS (SOFTCAP || ALIBI || HAS_BIAS)

/* ---- Storage types -------------------------------------------------------- */

/* elem_t is the storage element; load_elem / store_elem convert through
 * float. Half uses the core vload_half / vstore_half_rte (no cl_khr_fp16);
 * bfloat16 is the top half of a float, stored rounded to nearest even. */
#if DTYPE == 0
typedef float elem_t;
#define load_elem(p, i) ((p)[i])
#define store_elem(p, i, x) ((p)[i] = (x))
#elif DTYPE == 1
typedef half elem_t;
#define load_elem(p, i) vload_half((i), (p))
#define store_elem(p, i, x) vstore_half_rte((x), (i), (p))
#else
typedef ushort elem_t;
#define load_elem(p, i) as_float((uint)(p)[i] << 16)
#define store_elem(p, i, x) ((p)[i] = float_to_bfloat(x))
#endif

/* The storage element's bits, for copies that convert nothing (half
 * elements cannot be assigned without cl_khr_fp16). */
#if DTYPE == 0
typedef uint elem_bits_t;
#else
typedef ushort elem_bits_t;
#endif

/* A KV cache's storage (the decode kernels, lib/kv_storage.c): KV_DTYPE 0
 * float, 1 half, 2 bfloat16 (as DTYPE), 3 int8 with a float scale per row
 * (load_kv gives the int8 value, undequantized); Q's type when absent.
 * kv_bits_t is its bits, for copies that convert nothing. */
#ifndef KV_DTYPE
#define KV_DTYPE DTYPE
#endif
#if KV_DTYPE < 0 || KV_DTYPE > 3
#error "KV_DTYPE must be 0 (float), 1 (half), 2 (bfloat16) or 3 (int8)"
#endif
#if KV_DTYPE == 0
typedef float kv_t;
typedef uint kv_bits_t;
#define load_kv(p, i) ((p)[i])
#define store_kv(p, i, x) ((p)[i] = (x))
#elif KV_DTYPE == 1
typedef half kv_t;
typedef ushort kv_bits_t;
#define load_kv(p, i) vload_half((i), (p))
#define store_kv(p, i, x) vstore_half_rte((x), (i), (p))
#elif KV_DTYPE == 2
typedef ushort kv_t;
typedef ushort kv_bits_t;
#define load_kv(p, i) as_float((uint)(p)[i] << 16)
#define store_kv(p, i, x) ((p)[i] = float_to_bfloat(x))
#else
typedef char kv_t;
typedef char kv_bits_t;
#define load_kv(p, i) ((float)(p)[i])
#endif

inline ushort float_to_bfloat(float x) {
    const uint bits = as_uint(x);
    if (isnan(x))
        return (ushort)((bits >> 16) | 0x40u);
    return (ushort)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* ---- Sequences and the keys a query sees ----------------------------------- */

/* Where sequence b's rows start in the tensors and its lengths; kept_k is
 * the number of keys before the padding. */
typedef struct sequence_info {
    int q0, k0;
    int len_q, len_k, kept_k;
} sequence_info;

/* The cu_seqlens and key lengths may come from the caller's device buffers,
 * which the host cannot check: every value is clamped so that no row index
 * leaves the tensors (total_q / total_k rows with varlen), whatever they
 * hold. Checked host arrays are within these bounds already. */
inline sequence_info sequence_of(int b, int seq_q, int seq_k, int total_q, int total_k,
                                 __global const int *cu_q, __global const int *cu_k,
                                 __global const int *key_lengths) {
    sequence_info s;
#if VARLEN
    s.q0 = clamp(cu_q[b], 0, total_q);
    s.k0 = clamp(cu_k[b], 0, total_k);
    s.len_q = clamp(cu_q[b + 1], s.q0, total_q) - s.q0;
    s.len_k = clamp(cu_k[b + 1], s.k0, total_k) - s.k0;
    s.len_q = min(s.len_q, seq_q);
    s.len_k = min(s.len_k, seq_k);
#else
    s.q0 = 0;
    s.k0 = 0;
    s.len_q = seq_q;
    s.len_k = seq_k;
#endif
    s.kept_k = s.len_k;
#if KEY_PADDING
    s.kept_k = clamp(key_lengths[b], 0, s.kept_k);
#endif
    return s;
}

/* The key query i is aligned with: the causal mask's, the window's and
 * ALiBi's origin. */
inline int diagonal(int i, sequence_info s) {
#if MASK_MODE == MASK_CAUSAL_TOP_LEFT
    return i;
#else
    return (i - s.len_q) + s.len_k; /* this order cannot overflow: i < len_q */
#endif
}

/* Query i sees at most keys first_key(i) .. last_key(i) (the keep-mask may
 * hide some of them); both grow with i, so a block of rows i0..i1 needs keys
 * first_key(i0) .. last_key(i1). last < first: none. */
inline int first_key(int i, sequence_info s, int win_left) {
#if WINDOW
    /* In 64 bits: a window extent may be anything up to INT32_MAX. */
    return win_left >= 0 ? (int)max(0L, (long)diagonal(i, s) - win_left) : 0;
#else
    return 0;
#endif
}

inline int last_key(int i, sequence_info s, int win_right) {
    int last = s.kept_k - 1;
#if MASK_MODE != MASK_NONE
    last = min(last, diagonal(i, s));
#endif
#if WINDOW
    if (win_right >= 0)
        last = (int)min((long)last, (long)diagonal(i, s) + win_right);
#endif
    return last;
}

/* Whether query i sees key j: its key range and the keep-mask (keep_row is
 * keep_mask[b, h, i, 0]; unread without HAS_KEEP_MASK). */
inline bool sees(int i, int j, sequence_info s, int win_left, int win_right,
                 __global const uchar *keep_row) {
    if (j < first_key(i, s, win_left) || j > last_key(i, s, win_right))
        return false;
#if HAS_KEEP_MASK
    if (keep_row[j] == 0)
        return false;
#endif
    return true;
}

/* ---- Score modifiers -------------------------------------------------------- */

/* scale * q.k -> softcap -> ALiBi -> bias, for key j of query i. `raw` is
 * q.k; `bias_row` points at bias[b, h, i, 0] (unused without HAS_BIAS). */
inline float modified_score(float raw, float scale, float softcap, float slope, int i, int j,
                            sequence_info s, __global const float *bias_row) {
    float x = raw * scale;
#if SOFTCAP
    x = softcap * tanh(x / softcap);
#endif
#if ALIBI
    x -= slope * (float)abs(j - diagonal(i, s));
#endif
#if HAS_BIAS
    x += bias_row[j];
#endif
    return x;
}

/* ---- Softmax weights ------------------------------------------------------- */

/* A weight is exp2((s - m) * c), with s <= m a score and m the row's shift,
 * c = unit * log2(e). The host (lib/softmax_exponent.c) passes 2c as
 * exp_hi * exp_lo, a mantissa and a power of two, and the kernels compute
 * ((s/2 - m/2) * exp_hi) * exp_lo: the halves' difference cannot overflow
 * for scores up to +-FLT_MAX, and c keeps every bit of a subnormal scale.
 * Never fma(s, c, -m * c): once m * c passes 2^24 it rounds away what
 * s - m keeps, and it overflows near FLT_MAX. `half_diff` is s/2 - m/2. */
#define EXPONENT_OF(half_diff) (((half_diff) * exp_hi) * exp_lo)

/* ---- The backward's rows ----------------------------------------------------- */

/* A query row's LSE as the backward kernels use it: +inf (the forward's
 * log-sum-exp overflowed fp32, so no probability can be recovered from it:
 * exp(s - LSE) would be 0 or NaN) becomes -inf, and the row contributes
 * nothing, like a row that sees no key (include/attn_cl.h's rule, which
 * lib/reference_backward.c follows). */
inline float backward_row_lse(float lse) {
    return lse == INFINITY ? -INFINITY : lse;
}

/* ---- Dropout: the Philox-4x32-10 mask ------------------------------------------ */

/* The keep decision of key j of query row i of (sequence b, query head h)
 * is a pure function of (seed, offset, b, h, i, j), the same in every kernel
 * and in lib/philox.c (the reference's): attn_cl.h's dropout fields give
 * the rule. One Philox-4x32-10 evaluation yields 16-bit draws for 8
 * consecutive keys 8 * (j / 8) .. + 7, low half of each word first. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Ten rounds over counters c0..c3 of type T (uint or a uint vector: lanes
 * are independent evaluations, so a kernel can draw many at once) under the
 * scalar key (k0, k1), in place. */
#define PHILOX4X32_10(T, c0, c1, c2, c3, k0, k1)                                                   \
    do {                                                                                           \
        uint pk0_ = (k0), pk1_ = (k1);                                                             \
        for (int pr_ = 0; pr_ < 10; pr_++) {                                                       \
            if (pr_ > 0) {                                                                         \
                pk0_ += PHILOX_W0;                                                                 \
                pk1_ += PHILOX_W1;                                                                 \
            }                                                                                      \
            const T hi0_ = mul_hi((T)PHILOX_M0, c0), lo0_ = (T)PHILOX_M0 * c0;                     \
            const T hi1_ = mul_hi((T)PHILOX_M1, c2), lo1_ = (T)PHILOX_M1 * c2;                     \
            c0 = hi1_ ^ c1 ^ (T)pk0_;                                                              \
            c1 = lo1_;                                                                             \
            c2 = hi0_ ^ c3 ^ (T)pk1_;                                                              \
            c3 = lo0_;                                                                             \
        }                                                                                          \
    } while (0)

/* The same rounds over N lanes (N = 2, 4, 8, 16) of uintN counters, for
 * CPU-shaped kernels: each lane is held in 64 bits, so that a multiply is
 * one 32x32 -> 64-bit product (vpmuludq) giving mul_hi and the low word at
 * once. LLVM lowers a uintN mul_hi on x86 into four 32-bit multiplies of
 * 16-bit halves (vpmulld, slow); this form is 2x faster there. GPUs have a
 * native mul_hi: their kernels keep PHILOX4X32_10. */
#define PHILOX_CAT_(a, b) a##b
#define PHILOX_CAT(a, b) PHILOX_CAT_(a, b)
#define PHILOX4X32_10_WIDE(N, c0, c1, c2, c3, k0, k1)                                              \
    do {                                                                                           \
        const ulong low_ = 0xFFFFFFFFul;                                                           \
        PHILOX_CAT(ulong, N) a0_ = PHILOX_CAT(convert_ulong, N)(c0);                               \
        PHILOX_CAT(ulong, N) a1_ = PHILOX_CAT(convert_ulong, N)(c1);                               \
        PHILOX_CAT(ulong, N) a2_ = PHILOX_CAT(convert_ulong, N)(c2);                               \
        PHILOX_CAT(ulong, N) a3_ = PHILOX_CAT(convert_ulong, N)(c3);                               \
        uint pk0_ = (k0), pk1_ = (k1);                                                             \
        _Pragma("unroll") for (int pr_ = 0; pr_ < 10; pr_++) {                                     \
            if (pr_ > 0) {                                                                         \
                pk0_ += PHILOX_W0;                                                                 \
                pk1_ += PHILOX_W1;                                                                 \
            }                                                                                      \
            const PHILOX_CAT(ulong, N) p0_ = (a0_ & low_) * (ulong)PHILOX_M0;                      \
            const PHILOX_CAT(ulong, N) p1_ = (a2_ & low_) * (ulong)PHILOX_M1;                      \
            a0_ = (p1_ >> 32) ^ a1_ ^ (ulong)pk0_;                                                 \
            a1_ = p1_ & low_;                                                                      \
            a2_ = (p0_ >> 32) ^ a3_ ^ (ulong)pk1_;                                                 \
            a3_ = p0_ & low_;                                                                      \
        }                                                                                          \
        c0 = PHILOX_CAT(convert_uint, N)(a0_);                                                     \
        c1 = PHILOX_CAT(convert_uint, N)(a1_);                                                     \
        c2 = PHILOX_CAT(convert_uint, N)(a2_);                                                     \
        c3 = PHILOX_CAT(convert_uint, N)(a3_);                                                     \
    } while (0)

inline uint4 philox4x32_10(uint4 ctr, uint2 key) {
    uint c0 = ctr.s0, c1 = ctr.s1, c2 = ctr.s2, c3 = ctr.s3;
    PHILOX4X32_10(uint, c0, c1, c2, c3, key.s0, key.s1);
    return (uint4)(c0, c1, c2, c3);
}

/* The Philox key of a call: the seed, its high word XORed with the
 * offset's high word (the offset's low word is the counter's last). */
inline uint2 dropout_key(ulong seed, ulong offset) {
    return (uint2)((uint)seed, (uint)(seed >> 32) ^ (uint)(offset >> 32));
}

/* The words of keys 8 * jb .. 8 * jb + 7 of row i of stream b * heads_q + h. */
inline uint4 dropout_words(ulong seed, ulong offset, uint stream, int i, int jb) {
    return philox4x32_10((uint4)((uint)jb, (uint)i, stream, (uint)offset),
                         dropout_key(seed, offset));
}

/* Whether key j of row i of `stream` is kept: its 16-bit draw >= threshold. */
inline int dropout_keep(ulong seed, ulong offset, uint stream, int i, int j, uint threshold) {
    const uint4 w = dropout_words(seed, offset, stream, i, j >> 3);
    const int m = (j & 7) >> 1;
    const uint word = m == 0 ? w.s0 : m == 1 ? w.s1 : m == 2 ? w.s2 : w.s3;
    return ((word >> (16 * (j & 1))) & 0xFFFFu) >= threshold;
}

/* The 16-bit draws of 4, 8 or 16 consecutive keys of one row in key order,
 * from the words of the evaluations holding them (a word holds two keys'
 * draws, low half first): dropout_draws4 from the half of an evaluation's
 * words that holds them, 8 from one evaluation, 16 from two. */
inline uint4 dropout_draws4(uint2 words) {
    return shuffle2(words & 0xFFFFu, words >> 16, (uint4)(0, 2, 1, 3));
}
inline uint8 dropout_draws8(uint4 words) {
    return shuffle2(words & 0xFFFFu, words >> 16, (uint8)(0, 4, 1, 5, 2, 6, 3, 7));
}
inline uint16 dropout_draws16(uint8 words) {
    return shuffle2(words & 0xFFFFu, words >> 16,
                    (uint16)(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
}
/* DROPOUT_DRAWS_N(w, l, k0): keys k0 .. k0 + N - 1 (k0 a multiple of N) of a
 * row whose evaluations' words are w[0..3][l] (and w[0..3][l + 1] for 16),
 * w a kernel's uint w[4][...] of vector-computed evaluations. */
#define DROPOUT_DRAWS_4(w, l, k0)                                                                  \
    dropout_draws4(((k0) >> 2) & 1 ? (uint2)((w)[2][l], (w)[3][l]) : (uint2)((w)[0][l], (w)[1][l]))
#define DROPOUT_DRAWS_8(w, l, k0) dropout_draws8((uint4)((w)[0][l], (w)[1][l], (w)[2][l], (w)[3][l]))
#define DROPOUT_DRAWS_16(w, l, k0)                                                                 \
    dropout_draws16((uint8)((w)[0][l], (w)[1][l], (w)[2][l], (w)[3][l], (w)[0][(l) + 1],           \
                            (w)[1][(l) + 1], (w)[2][(l) + 1], (w)[3][(l) + 1]))

/* ---- Tensor arguments ------------------------------------------------------ */

/* A strided tensor argument, as lib/launch.c's attn_arg_tensor appends it:
 * the buffer, its element offset and its batch, head and row strides, in
 * elements. TENSOR(__global const elem_t, q, q) declares q, q_off, q_sb,
 * q_sh and q_ss. */
#define TENSOR(type, name, p) type *name, ulong p##_off, long p##_sb, long p##_sh, long p##_ss
/* Element (b, h, r, 0) of tensor p relative to its buffer, without and with
 * its offset: the one place a row address is computed. */
#define STEP(p, b, h, r) ((b) * p##_sb + (h) * p##_sh + (long)(r) * p##_ss)
#define AT(p, b, h, r) (p##_off + STEP(p, b, h, r))

/* ---- The arguments every attention kernel ends with --------------------------- */

/* Set by lib/launch.c's attn_set_feature_args, in this order. Unused ones
 * still get a buffer; their -D flag is 0 and the kernel never reads them. */
#define FEATURE_PARAMS                                                                             \
    int seq_q, int seq_k, int total_q, int total_k, __global const int *cu_q,                      \
        __global const int *cu_k, __global const int *key_lengths, int win_left, int win_right,    \
        float softcap, __global const float *alibi_slopes,                                         \
        TENSOR(__global const float, bias, bias), TENSOR(__global const uchar, keep_mask, keep),   \
        ulong dropout_seed, ulong dropout_offset, uint dropout_threshold, float dropout_scale

/* sequence_of's arguments after the sequence index, from FEATURE_PARAMS. */
#define FEATURE_SEQUENCES seq_q, seq_k, total_q, total_k, cu_q, cu_k, key_lengths

/* bias[b, h, i, 0] and keep_mask[b, h, i, 0] (broadcast dimensions step 0). */
#define BIAS_ROW(b, h, i) (bias + AT(bias, (b), (h), i))
#define KEEP_ROW(b, h, i)                                                                          \
    (keep_mask + AT(keep, (b), (h), i))

#if ALIBI
#define SLOPE(h) alibi_slopes[h]
#else
#define SLOPE(h) 0.0f
#endif
