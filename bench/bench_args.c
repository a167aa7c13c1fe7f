#include "bench_args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SEQ_MIN 128
#define DEFAULT_SEQ_MAX 8192

const char *bench_mask_name(attn_mask mask) {
    switch (mask) {
    case ATTN_MASK_CAUSAL_TOP_LEFT:
        return "top-left";
    case ATTN_MASK_CAUSAL_BOTTOM_RIGHT:
        return "bottom-right";
    default:
        return "none";
    }
}

const char *bench_dtype_name(attn_dtype dtype) {
    switch (dtype) {
    case ATTN_DTYPE_F16:
        return "f16";
    case ATTN_DTYPE_BF16:
        return "bf16";
    default:
        return "f32";
    }
}

const char *bench_algo_name(attn_algo algo) {
    switch (algo) {
    case ATTN_ALGO_THREE_KERNEL:
        return "three-kernel";
    case ATTN_ALGO_FUSED:
        return "fused";
    default:
        return "auto";
    }
}

void bench_print_help(FILE *out, const char *program) {
    fprintf(out,
            "usage: %s [options]\n"
            "\n"
            "Times libattn_cl's attention forward on one OpenCL device over a sweep of\n"
            "sequence lengths, and checks it against the library's CPU reference.\n"
            "\n"
            "What is measured, for each point (one sequence length, one algorithm):\n"
            "  build    attn_plan_create(): validating and compiling the kernels the forward\n"
            "           uses. The first point of a shape pays for it; later points with the\n"
            "           same kernel options find the kernels in the context's cache. Some OpenCL\n"
            "           implementations also keep their own on-disk cache (PoCL does), so\n"
            "           a second invocation of attn_bench may build faster than the first.\n"
            "  ms       the median wall-clock time (CLOCK_MONOTONIC) of one execute of the\n"
            "           point's plan (attn_plan_execute_device + clWaitForEvents), after\n"
            "           --warmup untimed executes. Q, K and V are\n"
            "           uploaded once into device buffers; no transfer is timed.\n"
            "  GFLOP/s  2 * batch * heads_q * visible query-key pairs * (head_dim + head_dim_v)\n"
            "           / time. Masked pairs are not counted (causal is about half the\n"
            "           work); the softmax is not counted.\n"
            "  ref_ms   attn_reference() (one CPU thread, double accumulation), timed once,\n"
            "           and speedup = ref_ms / ms. The reference runs only while its work\n"
            "           is at most --ref-max-gflop (default 10: seq <= 2048 for the default\n"
            "           shape); max_abs_err is the largest |device - reference| over O.\n"
            "\n"
            "Sweep (seq_q = seq_k = n for each n, unless --seq-q or --seq-k fixes one side):\n"
            "  --seq LIST            comma-separated lengths, or one length (e.g. 100,1000)\n"
            "  --seq-min N           first length of a doubling sweep (default %d)\n"
            "  --seq-max N           last length of a doubling sweep (default %d)\n"
            "  --seq-k N             fix seq_k to N; the sweep varies seq_q\n"
            "  --seq-q N             fix seq_q to N; the sweep varies seq_k (decoding: --seq-q 1)\n"
            "\n"
            "Shape (Q, K, V and O are float32, contiguous [batch, heads, seq, dim]):\n"
            "  --batch N             batch size (default 1)\n"
            "  --heads N             query heads (default 8)\n"
            "  --heads-kv N          key/value heads, must divide --heads (default: --heads)\n"
            "  --head-dim N          head dimension of Q and K, 1..%d (default 64)\n"
            "  --head-dim-v N        head dimension of V and O (default: --head-dim)\n"
            "  --causal [ALIGN]      causal mask; ALIGN is top-left (query i sees keys j <= i,\n"
            "                        PyTorch is_causal) or bottom-right (j <= i + seq_k - seq_q,\n"
            "                        FlashAttention and KV-cache decoding). A bare --causal means\n"
            "                        bottom-right. The two are the same when seq_q == seq_k.\n"
            "                        --causal none (the default) turns the mask off.\n"
            "\n"
            "Variants (each reaches one feature of the library; combine freely):\n"
            "  --dtype T             storage of Q, K, V and O: f32 (default), f16 or bf16\n"
            "  --layout L            bhsd (default) or bshd: [batch, seq, heads, dim] strides\n"
            "  --window L,R          sliding window: keys diag-L .. diag+R (-1: unbounded)\n"
            "  --softcap C           logit soft-capping C * tanh(s / C)\n"
            "  --dropout P           dropout of the attention weights with probability P in\n"
            "                        (0, 1), seed --seed, offset 0\n"
            "  --alibi               ALiBi with slopes 2^(-8(h+1)/heads)\n"
            "  --bias                an additive bias [1, heads, seq_q, seq_k] in [-1, 1)\n"
            "  --keep-mask           a boolean mask [batch, 1, seq_q, seq_k] keeping 90%%\n"
            "  --key-padding         per-batch key lengths drawn from seq_k/2 .. seq_k\n"
            "  --varlen              the batch packed as sequences of seq/2 .. seq tokens\n"
            "                        (seq_q, seq_k are the longest; total in the notes)\n"
            "  GFLOP/s counts the pairs the masks, window, padding and lengths leave\n"
            "  visible (a keep-mask's hidden pairs are computed, so they count).\n"
            "\n",
            program, DEFAULT_SEQ_MIN, DEFAULT_SEQ_MAX, ATTN_MAX_HEAD_DIM);
    fprintf(
        out,
        "Algorithm and device:\n"
        "  --algo A              auto (default: what the library picks, reported by name),\n"
        "                        three-kernel, fused, or all (one row per algorithm)\n"
        "  --device P:D          platform P, device D as --list-devices numbers them\n"
        "                        (default: the library's choice, which honours the\n"
        "                        ATTN_CL_DEVICE=P:D environment variable, then the first GPU)\n"
        "  --list-devices        list the OpenCL devices and exit\n"
        "  --overhead            instead of the sweep, the host cost of one call on a tiny\n"
        "                        problem (B=H=S=1, D=64) and a decode shape (Sq=1, Sk=16384,\n"
        "                        Hq=32, Hkv=8, D=128): attn_forward_device against a reused\n"
        "                        plan's execute, the time inside the call (enqueue only),\n"
        "                        call + wait, and back-to-back executes with one wait\n"
        "  --host                time the host-memory call (a plan's attn_plan_execute_host:\n"
        "                        uploads and downloads included) instead of the device call\n"
        "  --probs               --host, also returning the attention probabilities\n"
        "  --probs-heads A:B     --probs for query heads A..B-1 only (B 0: to the last;\n"
        "                        negative: from the end), params.probs_heads_*\n"
        "  --probs-rows A:B      --probs for query rows A..B-1 only (\"-16:0\": the last 16)\n"
        "  --kvcache             instead of the sweep, one decoding step (seq_q 1) over a KV\n"
        "                        cache of each --seq length (contiguous, pages of 16, 256\n"
        "                        and 1): ms, tokens/s and the K and V bytes read per second\n"
        "                        next to a kernel streaming as many bytes (the roof), and\n"
        "                        the host us inside the execute call (enqueue only);\n"
        "                        --seq-q N (N > 1) adds N query rows a step (speculative\n"
        "                        decoding) and its cost against one row; --batch, --heads,\n"
        "                        --heads-kv, --head-dim, --dtype apply\n"
        "  --kv-dtype T          --kvcache's cache storage: f32, f16, bf16 or int8 (with a\n"
        "                        scale per token and head); default: --dtype's\n"
        "  --backward            instead of the sweep, the backward (a plan made with\n"
        "                        ATTN_PLAN_BACKWARD, fused forward) against the forward of\n"
        "                        each --seq length (seq_q = seq_k): median ms, GFLOP/s (the\n"
        "                        backward counted as 2.5 forwards) and their ratio; --batch,\n"
        "                        --heads, --heads-kv, --head-dim, --causal, --dtype apply\n"
        "\n"
        "Repeats and reference:\n"
        "  --repeats N           timed forwards per point, reported as their median (default 5)\n"
        "  --warmup N            untimed forwards before them (default 1)\n"
        "  --max-point-seconds S stop a point's timed forwards early once they have taken\n"
        "                        S seconds, after at least one (default 60); the runs column\n"
        "                        of the table and a note on stderr say how many ran\n"
        "  --no-ref              never run the CPU reference (max_abs_err stays empty)\n"
        "  --ref-max-gflop X     run the reference while its work is <= X GFLOP (default 10)\n"
        "  --ref-max-seq N       run the reference while seq_q and seq_k are <= N instead\n"
        "  --seed N              seed of the random inputs, uniform in [-1, 1) (default 1)\n"
        "\n");
    fprintf(out,
            "Output:\n"
            "  (default)             an aligned table on stdout, one row per point as it ends\n"
            "  --csv                 exactly one header line and one row per measured point:\n"
            "      "
            "algo,device,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,causal,dtype,ms,gflops,max_"
            "abs_err\n"
            "                        algo is the algorithm that ran (three-kernel or fused, also\n"
            "                        under --algo auto); device is the device name with commas\n"
            "                        replaced by ';'; causal is none, top-left or bottom-right;\n"
            "                        dtype is f32; max_abs_err is empty where the reference did\n"
            "                        not run.\n"
            "  Progress, build times and notes go to stderr, never to stdout. A point that\n"
            "  fails (no memory for the three-kernel score matrix, an algorithm this device\n"
            "  or build cannot serve) gets a note on stderr with the library's message and no\n"
            "  row; the sweep goes on.\n"
            "  --help                this text\n"
            "\n"
            "Cold start:\n"
            "  --first-forward       instead of the sweep's timing: the first forward of a new\n"
            "                        context (its kernels built or loaded, then run), with the\n"
            "                        on-disk kernel cache (ATTN_CL_CACHE_DIR) off, empty (a new\n"
            "                        directory under $TMPDIR or /tmp) and warm (the same\n"
            "                        directory again), one of each per round for --repeats\n"
            "                        rounds. Rows per point: one per cache state, ms = the\n"
            "                        first forward's median; the CSV adds columns cache and\n"
            "                        steady_ms (the median of --repeats later forwards in the\n"
            "                        warm context). The driver's own cache (PoCL's, under\n"
            "                        POCL_CACHE_DIR; POCL_KERNEL_CACHE=0 turns it off) is\n"
            "                        not touched: after the first round \"off\" builds meet it.\n"
            "\n"
            "Exit status: 0 when at least one point was measured, 1 when none was or the\n"
            "device could not be opened, 2 for bad options.\n"
            "\n"
            "Examples:\n"
            "  %s                                  default sweep 128..8192, 8 heads, d=64\n"
            "  %s --csv --algo all > results.csv   both algorithms, for other tools\n"
            "  %s --seq-q 1 --seq-max 65536 --no-ref   decoding one token over a KV cache\n"
            "  %s --seq 1000 --causal top-left --heads 32 --heads-kv 8 --head-dim 128\n",
            program, program, program, program);
}

/* Parses a whole string as an integer in [min, max]. */
static int parse_int(const char *flag, const char *text, long long min, long long max,
                     long long *value) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || v < min || v > max) {
        fprintf(stderr, "attn_bench: %s wants an integer from %lld to %lld, not '%s'\n", flag, min,
                max, text);
        return 2;
    }
    *value = v;
    return 0;
}

static int parse_i32(const char *flag, const char *text, long long min, int32_t *value) {
    long long v;
    int rc = parse_int(flag, text, min, INT32_MAX, &v);
    if (rc == 0) {
        *value = (int32_t)v;
    }
    return rc;
}

static int parse_positive_double(const char *flag, const char *text, double *value) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !(v > 0.0)) {
        fprintf(stderr, "attn_bench: %s wants a positive number, not '%s'\n", flag, text);
        return 2;
    }
    *value = v;
    return 0;
}

static int parse_seq_list(const char *text, bench_options *opt) {
    char buffer[4096];
    if (strlen(text) >= sizeof buffer) {
        fprintf(stderr, "attn_bench: --seq list is too long\n");
        return 2;
    }
    strcpy(buffer, text);
    opt->num_seqs = 0;
    /* strtok would skip empty items; "128,,256" should be an error. */
    char *item = buffer;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma) {
            *comma = '\0';
        }
        if (opt->num_seqs == BENCH_MAX_POINTS) {
            fprintf(stderr, "attn_bench: --seq takes at most %d lengths\n", BENCH_MAX_POINTS);
            return 2;
        }
        if (parse_i32("--seq", item, 1, &opt->seqs[opt->num_seqs]) != 0) {
            return 2;
        }
        opt->num_seqs++;
        if (!comma) {
            return 0;
        }
        item = comma + 1;
    }
}

static int parse_mask(const char *text, attn_mask *mask) {
    if (strcmp(text, "none") == 0) {
        *mask = ATTN_MASK_NONE;
    } else if (strcmp(text, "top-left") == 0) {
        *mask = ATTN_MASK_CAUSAL_TOP_LEFT;
    } else if (strcmp(text, "bottom-right") == 0) {
        *mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    } else {
        return -1;
    }
    return 0;
}

static int parse_algo(const char *text, bench_options *opt) {
    if (strcmp(text, "auto") == 0) {
        opt->algos[0] = ATTN_ALGO_AUTO;
        opt->num_algos = 1;
    } else if (strcmp(text, "three-kernel") == 0) {
        opt->algos[0] = ATTN_ALGO_THREE_KERNEL;
        opt->num_algos = 1;
    } else if (strcmp(text, "fused") == 0) {
        opt->algos[0] = ATTN_ALGO_FUSED;
        opt->num_algos = 1;
    } else if (strcmp(text, "all") == 0) {
        opt->algos[0] = ATTN_ALGO_THREE_KERNEL;
        opt->algos[1] = ATTN_ALGO_FUSED;
        opt->num_algos = 2;
    } else {
        fprintf(stderr, "attn_bench: --algo wants auto, three-kernel, fused or all, not '%s'\n",
                text);
        return 2;
    }
    return 0;
}

static int parse_device(const char *text, bench_options *opt) {
    char buffer[64];
    const char *colon = strchr(text, ':');
    size_t len = colon ? (size_t)(colon - text) : 0;
    long long p, d;
    if (!colon || len == 0 || len >= sizeof buffer) {
        fprintf(stderr, "attn_bench: --device wants P:D (see --list-devices), not '%s'\n", text);
        return 2;
    }
    memcpy(buffer, text, len);
    buffer[len] = '\0';
    if (parse_int("--device platform", buffer, 0, INT32_MAX, &p) != 0 ||
        parse_int("--device device", colon + 1, 0, INT32_MAX, &d) != 0) {
        return 2;
    }
    opt->platform_index = (int32_t)p;
    opt->device_index = (int32_t)d;
    return 0;
}

/* --probs-heads / --probs-rows A:B, [A, B) as params.probs_* take it (B 0:
 * to the end); a negative A or B counts from the end of each point's heads
 * or rows ("-16:0", the last 16). Turns on --probs. */
static int parse_probs_range(const char *flag, const char *text, bench_options *opt,
                             int32_t range[2]) {
    char buffer[64];
    const char *colon = strchr(text, ':');
    size_t len = colon ? (size_t)(colon - text) : 0;
    long long a, b;
    if (!colon || len == 0 || len >= sizeof buffer) {
        fprintf(stderr, "attn_bench: %s wants A:B, not '%s'\n", flag, text);
        return 2;
    }
    memcpy(buffer, text, len);
    buffer[len] = '\0';
    if (parse_int(flag, buffer, INT32_MIN, INT32_MAX, &a) != 0 ||
        parse_int(flag, colon + 1, INT32_MIN, INT32_MAX, &b) != 0) {
        return 2;
    }
    range[0] = (int32_t)a;
    range[1] = (int32_t)b;
    opt->probs = 1;
    return 0;
}

static void set_defaults(bench_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->batch = 1;
    opt->heads_q = 8;
    opt->head_dim = 64;
    opt->mask = ATTN_MASK_NONE;
    opt->algos[0] = ATTN_ALGO_AUTO;
    opt->num_algos = 1;
    opt->platform_index = -1;
    opt->device_index = -1;
    opt->repeats = 5;
    opt->warmup = 1;
    opt->max_point_seconds = 60.0;
    opt->reference = 1;
    opt->ref_max_gflop = 10.0;
    opt->seed = 1;
}

/* The doubling sweep seq_min, 2·seq_min, ... up to seq_max. */
static void fill_doubling(int32_t seq_min, int32_t seq_max, bench_options *opt) {
    opt->num_seqs = 0;
    for (int64_t n = seq_min; n <= seq_max; n *= 2) {
        opt->seqs[opt->num_seqs++] = (int32_t)n;
    }
}

/* Options that take a value; --causal is handled apart (its value is optional). */
static const char *const valued_flags[] = {
    "--seq",           "--seq-min",     "--seq-max",     "--seq-k",      "--seq-q",
    "--batch",         "--heads",       "--heads-kv",    "--head-dim",   "--head-dim-v",
    "--algo",          "--device",      "--repeats",     "--warmup",     "--max-point-seconds",
    "--ref-max-gflop", "--ref-max-seq", "--seed",        "--dtype",      "--layout",
    "--window",        "--softcap",     "--probs-heads", "--probs-rows", "--dropout",
    "--kv-dtype",
};

static int parse_window(const char *text, attn_window *window) {
    char *end = NULL;
    errno = 0;
    long left = strtol(text, &end, 10);
    if (end == text || *end != ',' || errno == ERANGE || left < -1 || left > INT32_MAX) {
        fprintf(stderr, "attn_bench: --window wants L,R (-1 for unbounded), not '%s'\n", text);
        return 2;
    }
    const char *rest = end + 1;
    long right = strtol(rest, &end, 10);
    if (end == rest || *end != '\0' || errno == ERANGE || right < -1 || right > INT32_MAX) {
        fprintf(stderr, "attn_bench: --window wants L,R (-1 for unbounded), not '%s'\n", text);
        return 2;
    }
    *window = (attn_window){1, (int32_t)left, (int32_t)right};
    return 0;
}

static int takes_value(const char *flag) {
    for (size_t i = 0; i < sizeof valued_flags / sizeof valued_flags[0]; i++) {
        if (strcmp(flag, valued_flags[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static int apply_valued(const char *flag, const char *value, bench_options *opt, int32_t *seq_min,
                        int32_t *seq_max) {
    long long v = 0;
    if (strcmp(flag, "--seq") == 0) {
        return parse_seq_list(value, opt);
    } else if (strcmp(flag, "--seq-min") == 0) {
        return parse_i32(flag, value, 1, seq_min);
    } else if (strcmp(flag, "--seq-max") == 0) {
        return parse_i32(flag, value, 1, seq_max);
    } else if (strcmp(flag, "--seq-k") == 0) {
        return parse_i32(flag, value, 1, &opt->fixed_seq_k);
    } else if (strcmp(flag, "--seq-q") == 0) {
        return parse_i32(flag, value, 1, &opt->fixed_seq_q);
    } else if (strcmp(flag, "--batch") == 0) {
        return parse_i32(flag, value, 1, &opt->batch);
    } else if (strcmp(flag, "--heads") == 0) {
        return parse_i32(flag, value, 1, &opt->heads_q);
    } else if (strcmp(flag, "--heads-kv") == 0) {
        return parse_i32(flag, value, 1, &opt->heads_kv);
    } else if (strcmp(flag, "--head-dim") == 0) {
        return parse_i32(flag, value, 1, &opt->head_dim);
    } else if (strcmp(flag, "--head-dim-v") == 0) {
        return parse_i32(flag, value, 1, &opt->head_dim_v);
    } else if (strcmp(flag, "--algo") == 0) {
        return parse_algo(value, opt);
    } else if (strcmp(flag, "--probs-heads") == 0) {
        return parse_probs_range(flag, value, opt, opt->probs_heads);
    } else if (strcmp(flag, "--probs-rows") == 0) {
        return parse_probs_range(flag, value, opt, opt->probs_rows);
    } else if (strcmp(flag, "--device") == 0) {
        return parse_device(value, opt);
    } else if (strcmp(flag, "--repeats") == 0) {
        int rc = parse_int(flag, value, 1, 1000000, &v);
        if (rc == 0) {
            opt->repeats = (int)v;
        }
        return rc;
    } else if (strcmp(flag, "--warmup") == 0) {
        int rc = parse_int(flag, value, 0, 1000000, &v);
        if (rc == 0) {
            opt->warmup = (int)v;
        }
        return rc;
    } else if (strcmp(flag, "--max-point-seconds") == 0) {
        return parse_positive_double(flag, value, &opt->max_point_seconds);
    } else if (strcmp(flag, "--ref-max-gflop") == 0) {
        return parse_positive_double(flag, value, &opt->ref_max_gflop);
    } else if (strcmp(flag, "--ref-max-seq") == 0) {
        return parse_i32(flag, value, 1, &opt->ref_max_seq);
    } else if (strcmp(flag, "--dtype") == 0) {
        for (int d = ATTN_DTYPE_F32; d <= ATTN_DTYPE_BF16; d++) {
            if (strcmp(value, bench_dtype_name((attn_dtype)d)) == 0) {
                opt->dtype = (attn_dtype)d;
                return 0;
            }
        }
        fprintf(stderr, "attn_bench: --dtype wants f32, f16 or bf16, not '%s'\n", value);
        return 2;
    } else if (strcmp(flag, "--kv-dtype") == 0) {
        static const char *const kv_names[] = {"f32", "f16", "bf16", "int8"};
        for (int d = 0; d < 4; d++) {
            if (strcmp(value, kv_names[d]) == 0) {
                opt->kv_dtype = (attn_kv_dtype)(ATTN_KV_DTYPE_F32 + d);
                return 0;
            }
        }
        fprintf(stderr, "attn_bench: --kv-dtype wants f32, f16, bf16 or int8, not '%s'\n", value);
        return 2;
    } else if (strcmp(flag, "--layout") == 0) {
        if (strcmp(value, "bhsd") != 0 && strcmp(value, "bshd") != 0) {
            fprintf(stderr, "attn_bench: --layout wants bhsd or bshd, not '%s'\n", value);
            return 2;
        }
        opt->bshd = strcmp(value, "bshd") == 0;
        return 0;
    } else if (strcmp(flag, "--window") == 0) {
        return parse_window(value, &opt->window);
    } else if (strcmp(flag, "--dropout") == 0) {
        double p = 0.0;
        int rc = parse_positive_double(flag, value, &p);
        if (rc == 0 && p >= 1.0) {
            fprintf(stderr, "attn_bench: --dropout wants a probability below 1, not '%s'\n", value);
            rc = 2;
        }
        opt->dropout = (float)p;
        return rc;
    } else if (strcmp(flag, "--softcap") == 0) {
        double c = 0.0;
        int rc = parse_positive_double(flag, value, &c);
        opt->softcap = (float)c;
        return rc;
    } else {
        /* --seed */
        int rc = parse_int(flag, value, 0, INT64_MAX, &v);
        if (rc == 0) {
            opt->seed = (uint64_t)v;
        }
        return rc;
    }
}

/* Checks that the options make sense together and derives the sweep. */
static int finish(bench_options *opt, int seq_list_given, int32_t seq_min, int32_t seq_max,
                  int seq_range_given) {
    if (seq_list_given && seq_range_given) {
        fprintf(stderr, "attn_bench: give either --seq or --seq-min/--seq-max, not both\n");
        return 2;
    }
    if (opt->fixed_seq_q > 0 && opt->fixed_seq_k > 0) {
        fprintf(stderr, "attn_bench: --seq-q and --seq-k together leave nothing to sweep; "
                        "use --seq N --seq-k M for one point\n");
        return 2;
    }
    if (!seq_list_given) {
        if (seq_min > seq_max) {
            fprintf(stderr, "attn_bench: --seq-min %d is above --seq-max %d\n", (int)seq_min,
                    (int)seq_max);
            return 2;
        }
        fill_doubling(seq_min, seq_max, opt);
    }
    if (opt->heads_kv == 0) {
        opt->heads_kv = opt->heads_q;
    }
    if (opt->head_dim_v == 0) {
        opt->head_dim_v = opt->head_dim;
    }
    /* Shape limits (head_dim range, heads_kv dividing heads_q) are the
     * library's to enforce: attn_check reports them with its own message. */
    return 0;
}

int bench_parse_args(int argc, char **argv, bench_options *opt) {
    int32_t seq_min = DEFAULT_SEQ_MIN, seq_max = DEFAULT_SEQ_MAX;
    int seq_list_given = 0, seq_range_given = 0;
    set_defaults(opt);

    for (int i = 1; i < argc; i++) {
        char flag[64];
        const char *arg = argv[i];
        const char *value = NULL;
        const char *eq = strchr(arg, '=');
        size_t flag_len = eq ? (size_t)(eq - arg) : strlen(arg);

        if (strcmp(arg, "-h") == 0) {
            opt->help = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || flag_len >= sizeof flag) {
            fprintf(stderr, "attn_bench: unexpected argument '%s' (see --help)\n", arg);
            return 2;
        }
        memcpy(flag, arg, flag_len);
        flag[flag_len] = '\0';
        if (eq) {
            value = eq + 1;
        }

        if (strcmp(flag, "--causal") == 0) {
            /* The value is optional: take the next word only if it is one. */
            attn_mask mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
            if (value) {
                if (parse_mask(value, &mask) != 0) {
                    fprintf(stderr,
                            "attn_bench: --causal wants top-left, bottom-right or none, not '%s'\n",
                            value);
                    return 2;
                }
            } else if (i + 1 < argc && argv[i + 1][0] != '-') {
                /* A bare --causal is followed by another option or nothing. */
                if (parse_mask(argv[i + 1], &mask) != 0) {
                    fprintf(stderr,
                            "attn_bench: --causal wants top-left, bottom-right or none, not '%s'\n",
                            argv[i + 1]);
                    return 2;
                }
                i++;
            }
            opt->mask = mask;
            continue;
        }

        if (takes_value(flag)) {
            if (!value) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "attn_bench: %s needs a value\n", flag);
                    return 2;
                }
                value = argv[++i];
            }
            if (strcmp(flag, "--seq") == 0) {
                seq_list_given = 1;
            } else if (strcmp(flag, "--seq-min") == 0 || strcmp(flag, "--seq-max") == 0) {
                seq_range_given = 1;
            }
            if (apply_valued(flag, value, opt, &seq_min, &seq_max) != 0) {
                return 2;
            }
            continue;
        }

        if (value) {
            fprintf(stderr, "attn_bench: %s takes no value\n", flag);
            return 2;
        }
        if (strcmp(flag, "--csv") == 0) {
            opt->csv = 1;
        } else if (strcmp(flag, "--list-devices") == 0) {
            opt->list_devices = 1;
        } else if (strcmp(flag, "--overhead") == 0) {
            opt->overhead = 1;
        } else if (strcmp(flag, "--kvcache") == 0) {
            opt->kvcache = 1;
        } else if (strcmp(flag, "--host") == 0) {
            opt->host = 1;
        } else if (strcmp(flag, "--probs") == 0) {
            opt->probs = 1;
        } else if (strcmp(flag, "--backward") == 0) {
            opt->backward = 1;
        } else if (strcmp(flag, "--no-ref") == 0) {
            opt->reference = 0;
        } else if (strcmp(flag, "--alibi") == 0) {
            opt->alibi = 1;
        } else if (strcmp(flag, "--bias") == 0) {
            opt->bias = 1;
        } else if (strcmp(flag, "--keep-mask") == 0) {
            opt->keep_mask = 1;
        } else if (strcmp(flag, "--key-padding") == 0) {
            opt->key_padding = 1;
        } else if (strcmp(flag, "--varlen") == 0) {
            opt->varlen = 1;
        } else if (strcmp(flag, "--first-forward") == 0) {
            opt->first_forward = 1;
        } else if (strcmp(flag, "--help") == 0) {
            opt->help = 1;
        } else {
            fprintf(stderr, "attn_bench: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
    }
    return finish(opt, seq_list_given, seq_min, seq_max, seq_range_given);
}
