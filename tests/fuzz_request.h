/* The fuzz targets' request: how an input's bytes decode into attn_params
 * with every feature, the extra inputs, which outputs and calls (decode),
 * and the header's rules for which requests every device must accept
 * (valid_params). tests/fuzz_forward.c runs requests on the device;
 * tests/fuzz_validate.c runs the validation and planning alone. */
#ifndef FUZZ_REQUEST_H
#define FUZZ_REQUEST_H

#include "test_util.h"

#include <stddef.h>
#include <stdint.h>

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

enum {
    F_WINDOW = 1,
    F_PAD = 2,
    F_VARLEN = 4,
    F_SOFTCAP = 8,
    F_ALIBI = 16,
    F_BIAS = 32,
    F_KEEP = 64,
    F_ALL = 127,
};

/* A combination with features or 16-bit storage that runs on the device. */
typedef struct device_combo {
    attn_dtype dtype;
    attn_mask mask;
    unsigned features;
    int32_t head_dim, head_dim_v;
} device_combo;

#define DEVICE_COMBOS 7
extern const device_combo device_combos[DEVICE_COMBOS];

/* ---- The request -------------------------------------------------------- */

enum {
    WANT_LSE = 1,
    WANT_PROBS = 2,
    DEVICE_CALL = 4,
    DEVICE_SHORT = 8,       /* the device call's O buffer one element short */
    DEVICE_MISALIGNED = 16, /* the device call's Q offset half an element */
    TUNING_STRING = 32,     /* the rest of the input is a tuning spec (no feature fields) */
    MERGE = 64,             /* merge the result (attn_merge, attn_merge_device) */
    PLAIN_CALLS = 128,      /* attn_forward / attn_reference: no extra inputs */
};

/* Which pointer `drop` makes NULL. */
enum {
    DROP_BIAS,
    DROP_KEEP,
    DROP_KEY_LENGTHS,
    DROP_SLOPES,
    DROP_CU_Q,
    DROP_CU_K,
    DROP_EXTRAS, /* all six */
    DROP_Q,
    DROP_NONE,
};

/* The device_extra bits; its top three bits, when not 0, put the request
 * on device_combos[bits - 1] (see force_combo). */
enum {
    OPERAND_OFFSET = 1, /* bias and keep-mask one element into their buffers */
    BIAS_SHORT = 2,     /* the bias buffer one element short */
    BIAS_MISALIGNED = 4,
    KEEP_SHORT = 8,
    GARBAGE_EXTRAS = 16, /* inputs params do not ask for are given, holding garbage */
};
#define COMBO_SHIFT 5

#define MAX_BATCH 3 /* size_field(r, 3) */

/* The backward byte: bit 0 runs attn_backward_host after a forward with
 * LSE (or after a failed one: it must fail too); bit 1 asks for dBias;
 * bits 2-3 a fault (BWD_FAULT_*). */
enum {
    BACKWARD = 1,
    BACKWARD_DBIAS = 2,
};
enum {
    BWD_FAULT_NONE,
    BWD_FAULT_NO_DOUT,
    BWD_FAULT_NO_LSE,
    BWD_FAULT_NO_DQ,
};
#define BWD_FAULT_SHIFT 2

typedef struct request {
    uint8_t flags;
    attn_params p;
    int known_layout; /* strides from test_set_layout (or defaults) */
    uint8_t layout;   /* strides selector (applied once varlen's totals are known) */
    int8_t raw[15];   /* raw strides: 5 tensors x (batch/4, head/2, seq) */
    uint8_t value_mode, specials;
    uint32_t seed;
    /* Appended fields. */
    uint8_t alibi_mode, bias_mode, keep_mode, pad_mode;
    uint8_t bias_strides, keep_strides; /* selectors (applied with the layout) */
    uint8_t varlen_mode, varlen_fault;
    uint8_t drop, device_extra;
    uint8_t shape;    /* kernel_shapes[shape]: the fused kernel's shape (with force_combo) */
    uint8_t backward; /* BACKWARD, BACKWARD_DBIAS, the fault above BWD_FAULT_SHIFT */
    uint8_t kvcache;  /* nonzero: a KV-cache request, its fields next (tests/fuzz_kvcache.c) */
    int32_t cu_q[MAX_BATCH + 1], cu_k[MAX_BATCH + 1]; /* varlen with a batch in 1..3 */
} request;

extern const char *const kernel_shapes[3];

/* Requests by the magnitude of their sizes. */
typedef enum size_class {
    SIZES_SMALL,   /* every size within -1..ATTN_MAX_HEAD_DIM + 1: tensors are allocated */
    SIZES_REFUSED, /* an INT32_MIN count or an INT32_MAX head dim: must be refused */
    SIZES_HUGE,    /* an INT32_MAX count: may be valid but cannot be allocated */
} size_class;

/* Decodes the input's bytes (a byte read past the end is 0). */
void decode(reader *r, request *q);

/* The feature flags (F_*) the kernels are built with. */
unsigned feature_bits(const attn_params *p);

/* A splitmix stream for everything drawn from the input's seed. */
test_rng rng_for(const request *q, uint64_t salt);
/* An integer in lo..hi from rng. */
int32_t draw(test_rng *rng, int32_t lo, int32_t hi);

size_class classify(const attn_params *p);
int dtype_ok(attn_dtype d);
/* Bytes of one Q/K/V/O element; floats for an invalid type (the library
 * must refuse before it reads). */
size_t elem_size(attn_dtype d);
/* Whether a bias or keep-mask operand is one the header accepts. */
int operand_ok(const attn_score_operand *op, const attn_params *p);
/* Whether the header's rules make the request (its pointers aside) one
 * every device must accept. */
int valid_params(const request *q);

/* ATTN_ALGO_AUTO's choice for a request with probabilities (lib/dispatch.c):
 * the three-kernel path for more than half of them or on a GPU; for fewer
 * on a CPU device the fused path where it can serve them (its cpu variant,
 * asked of attn_check with ATTN_ALGO_FUSED), else the three-kernel path. */
attn_algo auto_algo_for_probs(attn_context_t ctx, const request *q, int want_lse);

/* tests/fuzz_kvcache.c: the KV-cache request whose fields follow in `r`,
 * run and checked (fuzz_forward's target only). */
void fuzz_kvcache(attn_context_t ctx, reader *r, const request *q);
/* tests/fuzz_forward.c's report of a violated property: prints the request
 * and the input, saves it, aborts. */
void fuzz_violation(const char *what, const request *q, attn_status st, const char *message);

#endif
