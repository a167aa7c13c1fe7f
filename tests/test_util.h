/* Helpers shared by the libattn_cl tests: seeded data, the layouts the tests
 * sweep, a naive fp32 attention that sets the error bound, the comparison
 * rule, and a context chosen the way users choose one. */
#ifndef ATTN_TEST_UTIL_H
#define ATTN_TEST_UTIL_H

#include "attn_cl.h"

#include <stddef.h>
#include <stdint.h>

/* Exit status meson reads as "skipped". */
#define TEST_SKIP 77

/* ---- Data ----------------------------------------------------------------- */

typedef struct test_rng {
    uint64_t state;
} test_rng;

void test_rng_seed(test_rng *rng, uint64_t seed);
/* Uniform in [lo, hi). */
float test_rng_float(test_rng *rng, float lo, float hi);
void test_fill_uniform(test_rng *rng, float *data, size_t n, float lo, float hi);

/* Byte written over every output before a call, so that a test can tell which
 * bytes the call wrote. As a float 0xA5A5A5A5 is a small finite number. */
#define TEST_SENTINEL_BYTE 0xA5
void *test_alloc_sentinel(size_t bytes);
/* Whether all `bytes` bytes at `data` still hold the sentinel. */
int test_is_sentinel(const void *data, size_t bytes);

/* Nonzero when ATTN_TEST_QUICK is set (and not "0"): the memcheck runs use it
 * to cut every sweep to a few small shapes. */
int test_quick(void);

double test_seconds(void);

/* ---- Layouts -------------------------------------------------------------- */

typedef enum test_layout {
    TEST_BHSD = 0, /* all strides zero: the library's default */
    TEST_BSHD,     /* explicit strides, sequence outside heads */
    TEST_HBSD,     /* heads outermost: batch stride smaller than head stride */
    TEST_PADDED,   /* gaps between rows, heads and batches in every tensor */
} test_layout;

const char *test_layout_name(test_layout layout);

/* Sets q/k/v/o/lse strides of `p` (sizes already set; with varlen the
 * totals too, see test_varlen_totals) for `layout`. */
void test_set_layout(attn_params *p, test_layout layout);

/* With varlen: the sequence lengths test_problem_init will draw from `seed`
 * (sequence 0 the longest, seq_q and seq_k; the others from 0 up), summed
 * into p->total_q and p->total_k. */
void test_varlen_totals(attn_params *p, uint64_t seed);

/* `p` with the documented defaults resolved: heads_kv, head_dim_v, scale and
 * all strides explicit. Written from the header, not from the library. */
void test_resolve(const attn_params *p, attn_params *r);

/* TEST_PROBS: [batch, heads_q, seq_q, seq_k], always contiguous. With varlen
 * the other tensors are one batch of the packed total of rows. TEST_BIAS and
 * TEST_KEEP_MASK are [batch|1, heads|1, seq_q, seq_k]. */
typedef enum test_tensor {
    TEST_Q,
    TEST_K,
    TEST_V,
    TEST_O,
    TEST_LSE,
    TEST_PROBS,
    TEST_BIAS,
    TEST_KEEP_MASK
} test_tensor;

/* Shape of one tensor of a resolved request: sizes of batch, heads, seq and
 * the contiguous inner run, and its strides. */
typedef struct test_shape {
    int64_t batch, heads, seq, inner;
    attn_strides strides;
} test_shape;

test_shape test_tensor_shape(const attn_params *resolved, test_tensor which);
/* Elements from the first to one past the last element the tensor touches. */
size_t test_shape_extent(const test_shape *s);
/* Sequence lengths of a varlen request, drawn from their own stream of
 * `seed`: sequence 0 is the longest on both sides. */
void test_varlen_lengths(const attn_params *p, uint64_t seed, int32_t *len_q, int32_t *len_k);
/* The index of element (b, h, i, d) of a tensor of shape s. */
size_t test_element_at(const test_shape *s, int64_t b, int64_t h, int64_t i, int64_t d);

/* ---- Extra inputs ------------------------------------------------------------ */

/* The inputs beside Q, K and V that params may ask for (NULL when not). */
typedef struct test_extras {
    float *bias;
    uint8_t *keep_mask;
    int32_t *key_lengths;  /* [batch] */
    float *alibi_slopes;   /* [heads_q] */
    int32_t *cu_seqlens_q; /* [batch + 1] */
    int32_t *cu_seqlens_k;
    size_t bias_elems, keep_mask_elems;
} test_extras;

/* ---- Naive fp32 attention --------------------------------------------------- */

/* The textbook algorithm in float, every feature of attn_cl.h's header
 * comment written out again from the header: scores, modifiers, masks, max,
 * exp, sum, divide. Its error against the double reference is what fp32
 * arithmetic costs on this shape, and so sets the bound a device result is
 * held to. `x` may be NULL when params ask for no extra input. Writes only
 * the elements the tensors cover (probabilities: all of them); lse and probs
 * may be NULL. O is in float, not rounded to params' storage type. */
void test_naive_fp32(const attn_params *resolved, const float *q, const float *k, const float *v,
                     const test_extras *x, float *o, float *lse, float *probs);

/* ---- Storage types ------------------------------------------------------------- */

size_t test_dtype_size(attn_dtype dtype);
const char *test_dtype_name(attn_dtype dtype);
/* n floats into the storage type (a new sentinel-padded allocation; for f32
 * a copy), and back. */
void *test_to_storage(attn_dtype dtype, const float *in, size_t n);
void test_from_storage(attn_dtype dtype, const void *in, float *out, size_t n);
/* Each float rounded to the storage type and back, in place. */
void test_round_to_storage(attn_dtype dtype, float *data, size_t n);

/* ---- Comparison --------------------------------------------------------------- */

/* Bound rule (FlashAttention's):
 *     max|out - ref| <= 2 * max|naive_fp32 - ref| + atol,
 *     atol = TEST_ATOL * max(1, max|ref|)
 * and the normalized mean squared error sum((out-ref)^2) / sum(ref^2) at most
 *     4 * NMSE(naive_fp32) + TEST_NMSE_FLOOR
 * (4 = 2 squared). ref is attn_reference (double accumulation, rounded to
 * float). atol is 1e-6 for O and probabilities (|values| <= 1); it grows
 * with the tensor's magnitude because LSE carries the scale of the scores,
 * where one float ulp (6e-5 at 600, in the large-logit cases) can exceed a
 * fixed atol on a shape too small for naive_fp32's error to set the bound.
 * A -inf in ref (a fully masked row's LSE) must be -inf in out; any other
 * non-finite value in out fails. */
#define TEST_ATOL 1e-6
#define TEST_NMSE_FLOOR 1e-10

/* The bound trusts that naive_fp32 and the reference compute the same thing:
 * if a bug in either made them disagree, the bound would widen to cover any
 * output. So they must also agree within
 *     max|naive_fp32 - ref| <= TEST_NAIVE_RTOL * max(1, max|ref|)
 * and on which elements are -inf. */
#define TEST_NAIVE_RTOL 1e-3

typedef struct test_result {
    double max_err, bound;
    double nmse, nmse_bound;
    size_t worst;        /* logical index (row-major over batch, heads, seq, inner) of max_err */
    size_t mismatch;     /* elements that break the -inf / finite rule */
    size_t gaps_written; /* elements outside the tensor the call changed */
    int naive_disagrees; /* naive_fp32 and the reference differ: a test bug */
    int ok;
} test_result;

/* Compares the tensor `shape` in three buffers of the same layout. When
 * `buffer_elems` is nonzero, also checks that every element of `out` the
 * tensor does not cover still holds the sentinel. */
test_result test_compare(const test_shape *shape, const float *out, const float *ref,
                         const float *naive, size_t buffer_elems);
/* test_compare with the agreement naive_fp32 must reach with the reference
 * (TEST_NAIVE_RTOL for float storage; more where inputs were rounded). */
test_result test_compare_rtol(const test_shape *shape, const float *out, const float *ref,
                              const float *naive, size_t buffer_elems, double naive_rtol);

/* "O err 1.2e-07 <= 3.4e-07 nmse 1.0e-14 <= 1.0e-10" into buf. */
void test_format_result(char *buf, size_t size, const char *name, const test_result *r);

/* ---- A whole problem --------------------------------------------------------- */

/* Random inputs for one request, with the reference's and the naive outputs.
 * Output buffers are sized to the tensors' extents. Q, K and V are rounded to
 * params' storage type, so that the float copies hold exactly what the
 * library reads from q_store, k_store and v_store. */
typedef struct test_problem {
    attn_params p; /* as passed to the library (varlen totals filled in) */
    attn_params r; /* resolved */
    test_shape q_shape, k_shape, v_shape, o_shape, lse_shape, probs_shape;
    size_t q_elems, k_elems, v_elems, o_elems, lse_elems, probs_elems;
    float *q, *k, *v;
    void *q_store, *k_store, *v_store; /* params' storage type */
    test_extras x;
    float *ref_o, *ref_lse, *ref_probs;       /* double reference, O not rounded */
    float *naive_o, *naive_lse, *naive_probs; /* fp32, O rounded to the storage type */
} test_problem;

/* Q and K are drawn from [-qk_range, qk_range), V from [-1, 1). The extra
 * inputs params ask for are generated from the seed: a bias in [-2, 2) with
 * a few -inf, a keep-mask keeping 80% (and hiding all of query row 1), key
 * lengths from 0 to seq_k (batch 0 full, batch 1 empty), ALiBi's geometric
 * slopes, and with varlen and total_q == 0 random sequence lengths (sequence
 * 0 the longest). Returns 0 on success; prints why and returns -1 when the
 * reference fails. */
int test_problem_init(test_problem *t, const attn_params *p, uint64_t seed, float qk_range,
                      int want_lse, int want_probs);
/* Computes t's reference and naive outputs from its float inputs (called by
 * test_problem_init; again by a test that changed the inputs). Returns 0, or
 * prints why and returns -1 when the reference fails. */
int test_problem_compute_outputs(test_problem *t);
void test_problem_free(test_problem *t);

/* O's storage, sentinel-filled: o_elems elements of the storage type. */
void *test_alloc_output(const test_problem *t);

/* The host tensors for the library: t's inputs and the given outputs. */
attn_host_tensors test_host_tensors(const test_problem *t, void *o, float *lse, float *probs);

/* Compares an O the library wrote in the storage type (o_elems elements)
 * with the reference: test_compare on its float values (naive_fp32 allowed
 * one rounding to the storage type more than TEST_NAIVE_RTOL), and its gaps
 * checked byte for byte. */
test_result test_compare_output(const test_problem *t, const void *o_store);

/* A request written as one line of words (test_features.c lists them):
 *   B2 Hq4 Hkv2 Sq33 Sk65 D31 Dv16   sizes (Hkv, Dv default to Hq, D)
 *   none | tl | br                   mask: none, causal top-left, bottom-right
 *   bhsd | bshd | hbsd | padded      layout of every tensor
 *   f32 | f16 | bf16                 storage of Q, K, V and O
 *   win=L,R  softcap=C  alibi  bias=BxH  keep=BxH  pad  varlen   features
 *   drop=P[,SEED,OFFSET]             dropout (seed 42, offset 0 by default)
 *   qk=X                             Q and K drawn from [-X, X) (default 1)
 *   quick                            also in the memcheck subset
 * Sets *p (strides not yet: see test_set_layout), *layout, *qk and *quick;
 * returns 0 after printing a FAIL line for a word it does not know. */
int test_parse_case(const char *text, attn_params *p, test_layout *layout, float *qk, int *quick);

/* "B2 Hq4 Hkv2 Sq7 Sk100 D31 Dv31 top-left bshd" */
void test_describe(char *buf, size_t size, const attn_params *p, test_layout layout);
const char *test_mask_name(attn_mask mask);

/* ---- Devices ------------------------------------------------------------------ */

/* attn_context_create(NULL) (ATTN_CL_DEVICE honoured); prints the device.
 * Exits with TEST_SKIP when there is no OpenCL device, 1 on other failures. */
attn_context_t test_context_create(void);

/* The sweep programs' command line: argv[1] "three-kernel" or "fused"
 * into *algo, and an optional argv[2] "probs" (exits 2 with a usage line
 * otherwise), and a line naming them and ATTN_CL_TUNE, then the bound the
 * program holds results to. */
void test_sweep_begin(int argc, char **argv, attn_algo *algo);
/* Whether the sweep asks for probabilities: always on the three-kernel
 * path, on the fused path with argv[2] "probs". */
int test_sweep_probs(void);

/* Prints `what` with the status name and attn_last_error(ctx) when status is
 * not success; returns whether it was success. */
int test_ok(attn_context_t ctx, attn_status status, const char *what);

#endif
