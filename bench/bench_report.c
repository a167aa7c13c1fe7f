#include "bench_report.h"

#include "bench_work.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

/* A device name fit for one CSV field: commas would split it and quotes or
 * line breaks would confuse readers that split lines on ','. */
static void csv_field(const char *text, char *out, size_t size) {
    size_t n = 0;
    for (; *text && n + 1 < size; text++) {
        char c = *text;
        if (c == ',') {
            c = ';';
        } else if (c == '"') {
            c = '\'';
        } else if ((unsigned char)c < 0x20) {
            c = ' ';
        }
        out[n++] = c;
    }
    out[n] = '\0';
}

static double gflops_of(const bench_row *row) {
    return row->ms > 0.0 ? row->flops / (row->ms * 1e6) : 0.0;
}

void bench_report_begin(const bench_options *opt, const attn_device_info *device) {
    if (opt->csv) {
        printf("algo,device,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,causal,dtype,ms,gflops,"
               "max_abs_err%s\n",
               opt->first_forward ? ",cache,steady_ms" : "");
        fflush(stdout);
        return;
    }
    printf("device   %s (%d:%d, %s, %s)\n", device->device_name, (int)device->platform_index,
           (int)device->device_index, device->platform_name, device->device_version);
    printf("shape    batch %d, heads %d (kv %d), head_dim %d", (int)opt->batch, (int)opt->heads_q,
           (int)opt->heads_kv, (int)opt->head_dim);
    if (opt->head_dim_v != opt->head_dim) {
        printf(" (v %d)", (int)opt->head_dim_v);
    }
    printf(", %s, causal %s", bench_dtype_name(opt->dtype), bench_mask_name(opt->mask));
    if (opt->bshd) {
        printf(", bshd");
    }
    if (opt->window.enabled) {
        printf(", window %d,%d", (int)opt->window.left, (int)opt->window.right);
    }
    if (opt->softcap > 0.0f) {
        printf(", softcap %g", (double)opt->softcap);
    }
    if (opt->dropout > 0.0f) {
        printf(", dropout %g", (double)opt->dropout);
    }
    const char *flags[5] = {opt->alibi ? ", alibi" : "", opt->bias ? ", bias" : "",
                            opt->keep_mask ? ", keep-mask" : "",
                            opt->key_padding ? ", key padding" : "", opt->varlen ? ", varlen" : ""};
    for (int f = 0; f < 5; f++) {
        printf("%s", flags[f]);
    }
    printf("\n");
    if (opt->first_forward) {
        printf("timing   first forward (attn_forward_device + wait) in a new context, median of "
               "%d rounds;\n"
               "         cache = the on-disk kernel cache (off, empty, warm); steady = a later "
               "forward\n\n",
               opt->repeats);
        printf("%-12s %7s %7s %-6s %4s %10s %10s %11s\n", "algo", "seq_q", "seq_k", "cache", "runs",
               "first_ms", "steady_ms", "max_abs_err");
        fflush(stdout);
        return;
    }
    printf("timing   median of %d forwards after %d warm-up; build = attn_plan_create; "
           "ref = CPU reference, once\n\n",
           opt->repeats, opt->warmup);
    printf("%-12s %7s %7s %10s %4s %10s %8s %10s %8s %11s\n", "algo", "seq_q", "seq_k", "build_ms",
           "runs", "ms", "GFLOP/s", "ref_ms", "speedup", "max_abs_err");
    fflush(stdout);
}

void bench_report_row(const bench_options *opt, const attn_device_info *device,
                      const bench_row *row) {
    const attn_params *p = &row->params;
    int have_ref = row->ref_ms >= 0.0;
    if (opt->csv) {
        char name[sizeof device->device_name];
        csv_field(device->device_name, name, sizeof name);
        printf("%s,%s,%d,%d,%d,%d,%d,%d,%s,%s,%.4f,%.3f,", bench_algo_name(row->algo), name,
               (int)p->batch, (int)p->heads_q, (int)p->heads_kv, (int)p->seq_q, (int)p->seq_k,
               (int)p->head_dim, bench_mask_name(p->mask), bench_dtype_name(p->dtype), row->ms,
               gflops_of(row));
        if (have_ref) {
            printf("%.3e", row->max_abs_err);
        }
        if (opt->first_forward) {
            printf(",%s,%.4f", row->cache, row->steady_ms);
        }
        printf("\n");
    } else if (opt->first_forward) {
        printf("%-12s %7d %7d %-6s %4d %10.1f %10.3f ", bench_algo_name(row->algo), (int)p->seq_q,
               (int)p->seq_k, row->cache, row->runs, row->ms, row->steady_ms);
        if (have_ref) {
            printf("%11.2e\n", row->max_abs_err);
        } else {
            printf("%11s\n", "-");
        }
    } else {
        printf("%-12s %7d %7d %10.1f %4d %10.3f %8.2f ", bench_algo_name(row->algo), (int)p->seq_q,
               (int)p->seq_k, row->build_ms, row->runs, row->ms, gflops_of(row));
        if (have_ref) {
            printf("%10.1f %7.1fx %11.2e\n", row->ref_ms, row->ref_ms / row->ms, row->max_abs_err);
        } else {
            printf("%10s %8s %11s\n", "-", "-", "-");
        }
    }
    fflush(stdout);
}

void bench_report_devices(const attn_device_info *devices, size_t count) {
    printf("%-5s %-3s %4s %10s %10s  %s\n", "P:D", "GPU", "CUs", "mem_MiB", "alloc_MiB",
           "device / platform / version");
    for (size_t i = 0; i < count; i++) {
        const attn_device_info *d = &devices[i];
        char index[32];
        snprintf(index, sizeof index, "%d:%d", (int)d->platform_index, (int)d->device_index);
        printf("%-5s %-3s %4d %10llu %10llu  %s / %s / %s\n", index, d->is_gpu ? "yes" : "no",
               (int)d->compute_units, (unsigned long long)(d->global_mem_bytes >> 20),
               (unsigned long long)(d->max_alloc_bytes >> 20), d->device_name, d->platform_name,
               d->device_version);
    }
}

void bench_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
