/* attn_bench's stdout: the aligned table or the CSV (DESIGN.md, "Bench
 * output": the CSV columns are fixed, other tools read them). */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include "attn_cl.h"
#include "bench_args.h"

/* One measured point. */
typedef struct bench_row {
    attn_params params; /* heads_kv and head_dim_v resolved */
    attn_algo algo;     /* the one that ran, never AUTO */
    double build_ms;    /* attn_prepare */
    int runs;           /* timed forwards behind the median */
    double ms;          /* their median */
    double flops;       /* the work count (bench_work.h) */
    double ref_ms;      /* < 0: the reference did not run */
    double max_abs_err; /* meaningful only when ref_ms >= 0 */
    /* --first-forward: ms is the first forward's median, in a new context
     * with the kernel cache `cache` ("off", "empty", "warm"); steady_ms the
     * median of the forwards after it. */
    const char *cache;
    double steady_ms;
} bench_row;

/* The CSV header, or the table's preamble and column heads. */
void bench_report_begin(const bench_options *opt, const attn_device_info *device);

/* One CSV row or table line, flushed so that a long sweep shows as it goes. */
void bench_report_row(const bench_options *opt, const attn_device_info *device,
                      const bench_row *row);

/* A progress line or note on stderr, so that stdout stays the table or
 * the CSV. */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The device table of --list-devices. */
void bench_report_devices(const attn_device_info *devices, size_t count);

#endif
