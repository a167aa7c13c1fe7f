/* The smallest complete use of libattn_cl: causal attention for one batch of
 * 4 heads on the default OpenCL device, checked against the CPU reference.
 *
 *   cc example.c $(pkg-config --cflags --libs attn_cl) -o example && ./example
 */
#include <attn_cl.h>

#include <stdio.h>
#include <stdlib.h>

int main(void) {
    enum { BATCH = 1, HEADS = 4, SEQ = 128, DIM = 64 };
    const size_t n = (size_t)BATCH * HEADS * SEQ * DIM;
    float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
    float *out = malloc(n * sizeof *out), *ref = malloc(n * sizeof *ref);
    if (!q || !k || !v || !out || !ref)
        return 1;
    for (size_t i = 0; i < n; i++) { /* any data will do: small values from three periods */
        q[i] = (float)(i % 7) / 7.0f - 0.5f;
        k[i] = (float)(i % 11) / 11.0f - 0.5f;
        v[i] = (float)(i % 17) / 17.0f;
    }

    attn_context_t ctx;
    attn_status status = attn_context_create(NULL, &ctx);
    if (status != ATTN_SUCCESS) {
        fprintf(stderr, "no device: %s: %s\n", attn_status_name(status), attn_last_error(NULL));
        return 1;
    }
    attn_device_info info;
    attn_context_device_info(ctx, &info);

    attn_params params;
    attn_params_init(&params, BATCH, HEADS, SEQ, SEQ, DIM); /* scale = 1/sqrt(DIM) */
    params.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;

    status = attn_forward(ctx, &params, q, k, v, out, NULL, NULL);
    if (status != ATTN_SUCCESS) {
        fprintf(stderr, "forward failed: %s: %s\n", attn_status_name(status), attn_last_error(ctx));
        attn_context_destroy(ctx);
        return 1;
    }
    attn_reference(&params, q, k, v, ref, NULL, NULL);
    double max_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = out[i] > ref[i] ? (double)out[i] - ref[i] : (double)ref[i] - out[i];
        max_err = err > max_err ? err : max_err;
    }
    printf("libattn_cl %s on %s: max |device - reference| = %.3g\n", attn_version_string(),
           info.device_name, max_err);

    attn_context_destroy(ctx);
    free(q);
    free(k);
    free(v);
    free(out);
    free(ref);
    return max_err < 1e-4 ? 0 : 1;
}
