/* Devices and contexts: listing, choosing (default, ATTN_CL_DEVICE, options),
 * wrapping a caller's OpenCL objects without taking them over, version
 * queries, and what attn_check / attn_prepare say. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

static void report(const char *name, int ok, const char *detail) {
    printf("%-60s %-40s %s\n", name, detail ? detail : "", ok ? "PASS" : "FAIL");
    failures += !ok;
}

/* A small forward on `ctx` compared with the reference. */
static int forward_works(attn_context_t ctx, const char *name) {
    attn_params p;
    attn_params_init(&p, 1, 2, 9, 13, 16);
    /* D16 bottom-right throughout, like every memcheck test: under valgrind
     * each new kernel variant costs a minute of LLVM. */
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    test_problem t;
    if (test_problem_init(&t, &p, 77, 1.0f, 1, 0) != 0) {
        return 0;
    }
    float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
    float *lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
    attn_status st = attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, NULL);
    char detail[160] = "";
    test_result r = {0};
    if (st == ATTN_SUCCESS) {
        r = test_compare(&t.o_shape, o, t.ref_o, t.naive_o, t.o_elems);
        test_format_result(detail, sizeof detail, "O", &r);
    } else {
        snprintf(detail, sizeof detail, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    }
    int ok = st == ATTN_SUCCESS && r.ok &&
             test_compare(&t.lse_shape, lse, t.ref_lse, t.naive_lse, t.lse_elems).ok;
    report(name, ok, detail);
    free(o);
    free(lse);
    test_problem_free(&t);
    return ok;
}

static int same_device(const attn_device_info *a, const attn_device_info *b) {
    return a->platform_index == b->platform_index && a->device_index == b->device_index &&
           strcmp(a->device_name, b->device_name) == 0;
}

static void list_devices(attn_device_info *first) {
    size_t count = 0;
    attn_status st = attn_list_devices(NULL, 0, &count);
    if (st == ATTN_ERR_NO_DEVICE || (st == ATTN_SUCCESS && count == 0)) {
        printf("SKIP: no OpenCL device\n");
        exit(TEST_SKIP);
    }
    char detail[64];
    snprintf(detail, sizeof detail, "%zu device(s)", count);
    report("attn_list_devices(NULL, 0): count", st == ATTN_SUCCESS && count >= 1, detail);
    if (count == 0) {
        return;
    }

    /* Capacity 0 with an array: nothing written, count still told. */
    attn_device_info probe[2];
    memset(probe, TEST_SENTINEL_BYTE, sizeof probe);
    size_t count0 = 0;
    st = attn_list_devices(probe, 0, &count0);
    report("capacity 0 with an array: nothing written",
           st == ATTN_SUCCESS && count0 == count && test_is_sentinel(probe, sizeof probe), NULL);

    /* Capacity below the count: exactly `capacity` entries written. With a
     * single device that is capacity 0 above; otherwise write one. */
    if (count >= 2) {
        size_t count1 = 0;
        st = attn_list_devices(probe, 1, &count1);
        report("capacity 1 < count: one entry written, count total",
               st == ATTN_SUCCESS && count1 == count &&
                   test_is_sentinel(&probe[1], sizeof probe[1]),
               NULL);
    }

    /* Room to spare: count entries, the rest untouched. */
    attn_device_info *all = test_alloc_sentinel((count + 1) * sizeof *all);
    size_t count2 = 0;
    st = attn_list_devices(all, count + 1, &count2);
    int ok = st == ATTN_SUCCESS && count2 == count && test_is_sentinel(&all[count], sizeof *all);
    for (size_t i = 0; i < count && ok; i++) {
        const attn_device_info *d = &all[i];
        printf("  device %d:%d %s | %s | %s | %s | CUs %d mem %llu MiB alloc %llu MiB local %llu "
               "KiB\n",
               d->platform_index, d->device_index, d->device_name, d->vendor, d->device_version,
               d->driver_version, d->compute_units, (unsigned long long)(d->global_mem_bytes >> 20),
               (unsigned long long)(d->max_alloc_bytes >> 20),
               (unsigned long long)(d->local_mem_bytes >> 10));
        ok &= d->device_name[0] && d->platform_name[0] && d->compute_units > 0 &&
              d->global_mem_bytes > 0 && d->max_alloc_bytes > 0 &&
              d->max_alloc_bytes <= d->global_mem_bytes && d->platform_index >= 0 &&
              d->device_index >= 0 && memchr(d->device_name, 0, sizeof d->device_name);
    }
    report("capacity > count: every entry filled, the rest untouched", ok, NULL);
    *first = all[0];
    free(all);

    st = attn_list_devices(NULL, 0, NULL);
    report("attn_list_devices(count NULL) -> ATTN_ERR_NULL_ARGUMENT", st == ATTN_ERR_NULL_ARGUMENT,
           attn_status_name(st));
}

/* The header: attn_check "is the validation and dispatch code the forward
 * itself runs" and refuses with the status the forward would. So for every
 * algorithm and output choice, check and forward must agree. */
static void check_matches_forward(attn_context_t ctx) {
    const attn_algo algos[3] = {ATTN_ALGO_AUTO, ATTN_ALGO_THREE_KERNEL, ATTN_ALGO_FUSED};
    const char *names[3] = {"AUTO", "THREE_KERNEL", "FUSED"};
    for (int a = 0; a < 3; a++) {
        for (int want_probs = 0; want_probs <= 1; want_probs++) {
            attn_params p;
            attn_params_init(&p, 1, 2, 16, 24, 16);
            p.algo = algos[a];
            p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
            test_problem t;
            if (test_problem_init(&t, &p, 90 + (uint64_t)a, 1.0f, 1, want_probs) != 0) {
                failures++;
                continue;
            }
            attn_status checked = attn_check(ctx, &p, 1, want_probs, NULL);
            float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
            float *lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
            float *probs = want_probs ? test_alloc_sentinel(t.probs_elems * sizeof(float)) : NULL;
            attn_status ran = attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, probs);
            int ok = checked == ran;
            if (ran == ATTN_SUCCESS) {
                ok &= test_compare(&t.o_shape, o, t.ref_o, t.naive_o, t.o_elems).ok &&
                      test_compare(&t.lse_shape, lse, t.ref_lse, t.naive_lse, t.lse_elems).ok;
                if (probs) {
                    ok &= test_compare(&t.probs_shape, probs, t.ref_probs, t.naive_probs,
                                       t.probs_elems)
                              .ok;
                }
            } else {
                ok &= test_is_sentinel(o, t.o_elems * sizeof(float)) &&
                      test_is_sentinel(lse, t.lse_elems * sizeof(float)) &&
                      (!probs || test_is_sentinel(probs, t.probs_elems * sizeof(float)));
            }
            char name[96], detail[128];
            snprintf(name, sizeof name, "attn_check agrees with attn_forward: %s%s", names[a],
                     want_probs ? " + probs" : "");
            snprintf(detail, sizeof detail, "check %s, forward %s", attn_status_name(checked),
                     attn_status_name(ran));
            report(name, ok, detail);
            free(o);
            free(lse);
            free(probs);
            test_problem_free(&t);
        }
    }
}

static void create_default(const attn_device_info *first) {
    unsetenv("ATTN_CL_DEVICE");
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    report("attn_context_create(NULL options)", st == ATTN_SUCCESS && ctx, attn_status_name(st));
    if (!ctx) {
        return;
    }
    attn_device_info info;
    st = attn_context_device_info(ctx, &info);
    report("attn_context_device_info", st == ATTN_SUCCESS && info.device_name[0], info.device_name);
    report("a fresh context has no error message", attn_last_error(ctx)[0] == '\0', NULL);
    report("attn_context_queue is not NULL", attn_context_queue(ctx) != NULL, NULL);
    forward_works(ctx, "default context: forward vs reference");

    /* attn_check: all the probabilities go to the three-kernel path; a
     * subset of at most half of them to the fused path on a CPU device (its
     * cpu variant, the table's), to the three-kernel path on a GPU
     * (documented); any other answer must be an algorithm the forward then
     * runs. */
    attn_params p;
    attn_params_init(&p, 1, 2, 64, 64, 16);
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    attn_algo algo = ATTN_ALGO_AUTO;
    st = attn_check(ctx, &p, 1, 1, &algo);
    report("attn_check(AUTO, every probability): three-kernel",
           st == ATTN_SUCCESS && algo == ATTN_ALGO_THREE_KERNEL, attn_status_name(st));
    const char *tune = getenv("ATTN_CL_TUNE");
    const attn_algo for_subset = info.is_gpu || (tune && strstr(tune, "variant=") &&
                                                 !strstr(tune, "variant=cpu"))
                                     ? ATTN_ALGO_THREE_KERNEL
                                     : ATTN_ALGO_FUSED;
    p.probs_heads_begin = 1; /* one head of two, its last 32 rows: 1/4 */
    p.probs_rows_begin = 32;
    algo = ATTN_ALGO_AUTO;
    st = attn_check(ctx, &p, 1, 1, &algo);
    report("attn_check(AUTO, a quarter of the probabilities): fused on a CPU, three-kernel on "
           "a GPU",
           st == ATTN_SUCCESS && algo == for_subset, attn_status_name(st));
    p.probs_heads_begin = p.probs_rows_begin = 0;
    p.algo = ATTN_ALGO_THREE_KERNEL;
    algo = ATTN_ALGO_AUTO;
    st = attn_check(ctx, &p, 0, 0, &algo);
    report("attn_check(THREE_KERNEL) -> THREE_KERNEL",
           st == ATTN_SUCCESS && algo == ATTN_ALGO_THREE_KERNEL, attn_status_name(st));
    p.algo = ATTN_ALGO_FUSED;
    algo = ATTN_ALGO_AUTO;
    attn_status fused = attn_check(ctx, &p, 1, 0, &algo);
    report("attn_check(FUSED) -> FUSED", fused == ATTN_SUCCESS && algo == ATTN_ALGO_FUSED,
           attn_status_name(fused));
    p.algo = ATTN_ALGO_AUTO;
    algo = ATTN_ALGO_AUTO;
    st = attn_check(ctx, &p, 1, 0, &algo);
    char detail[64];
    snprintf(detail, sizeof detail, "-> %s (FUSED %s)",
             algo == ATTN_ALGO_FUSED          ? "FUSED"
             : algo == ATTN_ALGO_THREE_KERNEL ? "THREE_KERNEL"
                                              : "?",
             fused == ATTN_SUCCESS ? "available" : "refused");
    /* AUTO without probabilities is the fused path (documented). */
    report("attn_check(AUTO, no probs) -> FUSED", st == ATTN_SUCCESS && algo == ATTN_ALGO_FUSED,
           detail);

    st = attn_prepare(ctx, &p, 1, 0);
    report("attn_prepare(AUTO)", st == ATTN_SUCCESS, attn_status_name(st));
    st = attn_prepare(ctx, &p, 1, 1);
    report("attn_prepare(AUTO, probs)", st == ATTN_SUCCESS, attn_status_name(st));
    test_problem t;
    if (test_problem_init(&t, &p, 3, 1.0f, 1, 0) == 0) {
        float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
        float *lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
        st = attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, NULL);
        test_result r = test_compare(&t.o_shape, o, t.ref_o, t.naive_o, t.o_elems);
        test_result rl = test_compare(&t.lse_shape, lse, t.ref_lse, t.naive_lse, t.lse_elems);
        report("forward with the algorithm attn_check chose", st == ATTN_SUCCESS && r.ok && rl.ok,
               attn_status_name(st));
        free(o);
        free(lse);
        test_problem_free(&t);
    }

    check_matches_forward(ctx);
    attn_context_destroy(ctx);
    (void)first;
}

static void create_from_env(const attn_device_info *first) {
    setenv("ATTN_CL_DEVICE", "0:0", 1);
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    attn_device_info info = {0};
    if (ctx) {
        attn_context_device_info(ctx, &info);
    }
    report("ATTN_CL_DEVICE=\"0:0\" picks device 0 of platform 0",
           st == ATTN_SUCCESS && info.platform_index == 0 && info.device_index == 0,
           info.device_name);
    if (ctx) {
        forward_works(ctx, "ATTN_CL_DEVICE=0:0: forward vs reference");
        attn_context_destroy(ctx);
    }
    unsetenv("ATTN_CL_DEVICE");

    /* Explicit options: the first listed device, with profiling. */
    attn_context_options opt;
    attn_context_options_init(&opt);
    report("attn_context_options_init: automatic choice",
           opt.platform_index == -1 && opt.device_index == -1 && opt.enable_profiling == 0, NULL);
    opt.platform_index = first->platform_index;
    opt.device_index = first->device_index;
    opt.enable_profiling = 1;
    ctx = NULL;
    st = attn_context_create(&opt, &ctx);
    memset(&info, 0, sizeof info);
    cl_command_queue_properties props = 0;
    if (ctx) {
        attn_context_device_info(ctx, &info);
        clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_PROPERTIES, sizeof props, &props,
                              NULL);
    }
    report("options naming the first device, profiling on",
           st == ATTN_SUCCESS && same_device(&info, first) && (props & CL_QUEUE_PROFILING_ENABLE),
           attn_status_name(st));
    if (ctx) {
        attn_context_destroy(ctx);
    }
}

static cl_uint context_refs(cl_context c) {
    cl_uint n = 0;
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL);
    return n;
}

static cl_uint queue_refs(cl_command_queue q) {
    cl_uint n = 0;
    clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof n, &n, NULL);
    return n;
}

/* The caller's context and queue: the library retains them while it uses
 * them and releases only its own references. */
static void create_from_cl(void) {
    cl_platform_id platform;
    cl_device_id device;
    cl_int err = clGetPlatformIDs(1, &platform, NULL);
    if (err == CL_SUCCESS) {
        err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL);
    }
    cl_context context =
        err == CL_SUCCESS ? clCreateContext(NULL, 1, &device, NULL, NULL, &err) : NULL;
    cl_command_queue queue =
        err == CL_SUCCESS ? clCreateCommandQueue(context, device, 0, &err) : NULL;
    if (err != CL_SUCCESS) {
        report("creating a caller's OpenCL context and queue", 0, "");
        return;
    }
    const cl_uint ctx_refs0 = context_refs(context), queue_refs0 = queue_refs(queue);

    attn_context_t ctx = NULL;
    attn_status st = attn_context_create_from_cl(context, device, queue, &ctx);
    report("attn_context_create_from_cl", st == ATTN_SUCCESS && ctx, attn_status_name(st));
    if (ctx) {
        report("attn_context_queue is the caller's queue", attn_context_queue(ctx) == queue, NULL);
        forward_works(ctx, "wrapped context: forward vs reference");
        attn_context_destroy(ctx);
    }
    /* Commands the library enqueued hold the queue until the driver retires
     * them, which it may do a little after they complete: finish, and give
     * it a moment, before calling a reference leaked. */
    clFinish(queue);
    for (int tries = 0;
         tries < 200 && (context_refs(context) != ctx_refs0 || queue_refs(queue) != queue_refs0);
         tries++) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    char detail[64];
    snprintf(detail, sizeof detail, "context %u -> %u, queue %u -> %u", ctx_refs0,
             context_refs(context), queue_refs0, queue_refs(queue));
    report("after destroy the caller's reference counts are back",
           context_refs(context) == ctx_refs0 && queue_refs(queue) == queue_refs0, detail);

    /* And the objects still work. */
    float data[16], back[16];
    for (int i = 0; i < 16; i++) {
        data[i] = (float)i;
    }
    cl_mem mem =
        clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof data, data, &err);
    if (err == CL_SUCCESS) {
        err = clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, sizeof back, back, 0, NULL, NULL);
        clReleaseMemObject(mem);
    }
    report("the caller's context and queue still work",
           err == CL_SUCCESS && memcmp(data, back, sizeof data) == 0, NULL);

    ctx = NULL;
    st = attn_context_create_from_cl(NULL, device, queue, &ctx);
    report("attn_context_create_from_cl(context NULL) -> ATTN_ERR_NULL_ARGUMENT",
           st == ATTN_ERR_NULL_ARGUMENT && ctx == NULL, attn_status_name(st));

    clReleaseCommandQueue(queue);
    clReleaseContext(context);
}

/* Objects that do not belong together, and an out-of-order queue: refused
 * at creation with a message, *ctx NULL, nothing of the caller's retained. */
static void expect_refused(const char *name, cl_context context, cl_device_id device,
                           cl_command_queue queue, attn_status want, const char *want_text) {
    const cl_uint ctx_refs0 = context_refs(context), queue_refs0 = queue_refs(queue);
    attn_context_t ctx = (attn_context_t)&failures; /* must be overwritten */
    attn_status st = attn_context_create_from_cl(context, device, queue, &ctx);
    const char *message = attn_last_error(NULL);
    char detail[160];
    snprintf(detail, sizeof detail, "%s: %.100s", attn_status_name(st), message);
    report(name,
           st == want && ctx == NULL && strstr(message, want_text) &&
               context_refs(context) == ctx_refs0 && queue_refs(queue) == queue_refs0,
           detail);
    if (st == ATTN_SUCCESS && ctx && ctx != (attn_context_t)&failures) {
        attn_context_destroy(ctx);
    }
}

static void create_from_cl_mismatched(void) {
    cl_platform_id platform;
    cl_device_id device;
    cl_int err = clGetPlatformIDs(1, &platform, NULL);
    if (err == CL_SUCCESS) {
        err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL);
    }
    cl_context a = err == CL_SUCCESS ? clCreateContext(NULL, 1, &device, NULL, NULL, &err) : NULL;
    cl_context b = err == CL_SUCCESS ? clCreateContext(NULL, 1, &device, NULL, NULL, &err) : NULL;
    cl_command_queue queue_b = err == CL_SUCCESS ? clCreateCommandQueue(b, device, 0, &err) : NULL;
    if (err != CL_SUCCESS) {
        report("creating two OpenCL contexts and a queue", 0, "");
        return;
    }
    expect_refused("create_from_cl(A, device, queue of B) -> INVALID_VALUE", a, device, queue_b,
                   ATTN_ERR_INVALID_VALUE, "another context");

    cl_command_queue ooo =
        clCreateCommandQueue(b, device, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    if (err == CL_SUCCESS) {
        expect_refused("create_from_cl(out-of-order queue) -> UNSUPPORTED", b, device, ooo,
                       ATTN_ERR_UNSUPPORTED, "out-of-order");
        clReleaseCommandQueue(ooo);
    } else {
        printf("%-60s %-40s SKIP\n", "out-of-order queue", "the device has none");
    }

    /* A device outside the context, and a queue of another device: two
     * sub-devices of one compute unit each, where the device can split. */
    const cl_device_partition_property equally[3] = {CL_DEVICE_PARTITION_EQUALLY, 1, 0};
    cl_uint count = 0;
    err = clCreateSubDevices(device, equally, 0, NULL, &count);
    cl_device_id *subs = err == CL_SUCCESS && count >= 2 ? calloc(count, sizeof *subs) : NULL;
    if (subs && clCreateSubDevices(device, equally, count, subs, NULL) == CL_SUCCESS) {
        cl_context both = clCreateContext(NULL, 2, subs, NULL, NULL, &err);
        cl_command_queue on_sub1 =
            err == CL_SUCCESS ? clCreateCommandQueue(both, subs[1], 0, &err) : NULL;
        if (err == CL_SUCCESS) {
            /* Which message depends on whether the runtime lists the
             * sub-devices or their root (PoCL) as the context's. */
            expect_refused("create_from_cl(sub-devices, root device) -> INVALID_VALUE", both,
                           device, on_sub1, ATTN_ERR_INVALID_VALUE, "device");
            expect_refused("create_from_cl(device 0, queue of device 1) -> INVALID_VALUE", both,
                           subs[0], on_sub1, ATTN_ERR_INVALID_VALUE, "device");
            attn_context_t ctx = NULL;
            attn_status st = attn_context_create_from_cl(both, subs[1], on_sub1, &ctx);
            report("create_from_cl(sub-devices, device 1, its queue) succeeds",
                   st == ATTN_SUCCESS && ctx, attn_status_name(st));
            attn_context_destroy(ctx);
            clReleaseCommandQueue(on_sub1);
            clReleaseContext(both);
        } else {
            report("creating a context of two sub-devices", 0, "");
        }
        for (cl_uint i = 0; i < count; i++) {
            clReleaseDevice(subs[i]);
        }
    } else {
        printf("%-60s %-40s SKIP\n", "a device outside the context", "no sub-devices");
    }
    free(subs);
    clReleaseCommandQueue(queue_b);
    clReleaseContext(b);
    clReleaseContext(a);
}

static void version(void) {
    int major = -1, minor = -1, patch = -1;
    attn_version(&major, &minor, &patch);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", ATTN_CL_VERSION_MAJOR, ATTN_CL_VERSION_MINOR,
             ATTN_CL_VERSION_PATCH);
    const char *got = attn_version_string();
    report("attn_version matches the header",
           major == ATTN_CL_VERSION_MAJOR && minor == ATTN_CL_VERSION_MINOR &&
               patch == ATTN_CL_VERSION_PATCH,
           want);
    report("attn_version_string matches the header", got && strcmp(got, want) == 0,
           got ? got : "(NULL)");
}

/* An override the device cannot take is the caller's value: INVALID_VALUE,
 * not UNSUPPORTED. The gpu shape with rows=1, wg=tile_k=256 cannot shrink
 * (the key tile is one group's worth) and at head_dim 512 needs
 * 4 * (513 + 256 * 513 + 257 + 256) = 529,416 bytes of local memory: more
 * than devices with 512 KiB have. attn_check builds nothing. */
static void device_limits_of_overrides(attn_context_t ctx) {
    static const char spec[] = "variant=gpu,rows=1,wg=256,tile_k=256";
    const uint64_t need = 4 * (513 + 256 * 513 + 257 + 256);
    attn_device_info info;
    attn_context_device_info(ctx, &info);
    attn_params p;
    attn_params_init(&p, 1, 2, 9, 13, 512);
    p.algo = ATTN_ALGO_FUSED;
    const attn_status want = info.local_mem_bytes < need ? ATTN_ERR_INVALID_VALUE : ATTN_SUCCESS;
    char name[128];
    for (int env = 0; env <= 1; env++) {
        attn_context_set_tuning(ctx, env ? NULL : spec);
        if (env) {
            setenv("ATTN_CL_TUNE", spec, 1);
        }
        attn_status st = attn_check(ctx, &p, 1, 0, NULL);
        const char *origin = env ? "ATTN_CL_TUNE" : "attn_context_set_tuning";
        snprintf(name, sizeof name, "%s %s, D512 (local %llu KiB) -> %s", origin, spec,
                 (unsigned long long)(info.local_mem_bytes >> 10),
                 want == ATTN_SUCCESS ? "fits" : "INVALID_VALUE");
        report(name, st == want && (want == ATTN_SUCCESS || strstr(attn_last_error(ctx), origin)),
               st == ATTN_SUCCESS ? attn_status_name(st) : attn_last_error(ctx));
        unsetenv("ATTN_CL_TUNE");
    }
    attn_context_set_tuning(ctx, NULL);
}

/* The decode kernels' shape key: decode_wg outside 1..1024 is a malformed
 * spec; inside it but not a power of two, a spec the decode plan refuses
 * with INVALID_VALUE naming it (the gpu shape's trees halve the group). */
static void decode_shape_overrides(attn_context_t ctx) {
    attn_status st = attn_context_set_tuning(ctx, "decode_wg=0");
    report("attn_context_set_tuning(decode_wg=0) -> INVALID_VALUE", st == ATTN_ERR_INVALID_VALUE,
           attn_status_name(st));
    st = attn_context_set_tuning(ctx, "decode_wg=2048");
    report("attn_context_set_tuning(decode_wg=2048) -> INVALID_VALUE",
           st == ATTN_ERR_INVALID_VALUE, attn_status_name(st));
    attn_params p;
    attn_params_init(&p, 1, 4, 1, 300, 64);
    p.heads_kv = 2;
    p.algo = ATTN_ALGO_FUSED;
    static const struct {
        const char *spec;
        attn_status want;
    } cases[] = {{"variant=decode,decode_wg=12", ATTN_ERR_INVALID_VALUE},
                 {"variant=decode,decode_wg=32", ATTN_SUCCESS},
                 {"variant=decode,decode_wg=1", ATTN_SUCCESS}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        attn_context_set_tuning(ctx, cases[i].spec);
        st = attn_check(ctx, &p, 1, 0, NULL);
        char name[160];
        snprintf(name, sizeof name, "attn_check under %s -> %s", cases[i].spec,
                 attn_status_name(cases[i].want));
        report(name,
               st == cases[i].want &&
                   (st == ATTN_SUCCESS || strstr(attn_last_error(ctx), "decode_wg") != NULL),
               st == ATTN_SUCCESS ? attn_status_name(st) : attn_last_error(ctx));
    }
    /* A vec the gpu variant's spec carries to the decode kernels (a KV
     * cache's plan): refused by the plan, not a kernel build failure. */
    attn_kvcache_params kp;
    attn_kvcache_params_init(&kp, 1, 4, 1, 300, 64);
    kp.attn.heads_kv = 2;
    attn_context_set_tuning(ctx, "variant=gpu,vec=12");
    attn_plan_t plan = NULL;
    st = attn_plan_create_kvcache(ctx, &kp, 0, &plan);
    report("attn_plan_create_kvcache under variant=gpu,vec=12 -> INVALID_VALUE",
           st == ATTN_ERR_INVALID_VALUE && plan == NULL &&
               strstr(attn_last_error(ctx), "decode kernels take vec") != NULL,
           st == ATTN_SUCCESS ? attn_status_name(st) : attn_last_error(ctx));
    attn_plan_destroy(plan);
    attn_context_set_tuning(ctx, NULL);
}

/* attn_context_set_tuning and ATTN_CL_TUNE over the device's table. The
 * valid spec is the one forward_fused_cpu_narrow runs, so that memcheck finds
 * its kernels in PoCL's cache. */
static void tuning_overrides(void) {
    static const char narrow[] = "variant=cpu,rows=1,tile_k=4,wg=1,vec=4,unroll=4";
    attn_context_t ctx = NULL;
    if (!test_ok(NULL, attn_context_create(NULL, &ctx), "attn_context_create")) {
        failures++;
        return;
    }
    attn_params p;
    attn_params_init(&p, 1, 2, 9, 13, 16);
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    p.algo = ATTN_ALGO_FUSED;

    attn_status st = attn_context_set_tuning(NULL, narrow);
    report("attn_context_set_tuning(NULL ctx)", st == ATTN_ERR_NULL_ARGUMENT, attn_status_name(st));
    st = attn_context_set_tuning(ctx, narrow);
    report("attn_context_set_tuning(valid spec)", st == ATTN_SUCCESS, attn_status_name(st));
    forward_works(ctx, "forward under the context's spec");

    st = attn_context_set_tuning(ctx, "rows=abc");
    report("a malformed spec is refused with a message",
           st == ATTN_ERR_INVALID_VALUE && strstr(attn_last_error(ctx), "rows"),
           attn_status_name(st));
    char longer[300];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    st = attn_context_set_tuning(ctx, longer);
    report("a spec of 299 characters is refused", st == ATTN_ERR_INVALID_VALUE,
           attn_status_name(st));
    forward_works(ctx, "a refused spec keeps the previous one");

    /* Well-formed, but the gpu variant needs wg a multiple of rows. The
     * environment then overrides it key by key: a full spec fixes it. */
    st = attn_context_set_tuning(ctx, "variant=gpu,rows=6,tile_k=16,wg=4");
    report("a spec the forward cannot take is accepted here", st == ATTN_SUCCESS,
           attn_status_name(st));
    /* Q, K, V and O of p's shape: the forward uploads them before it
     * reaches the tuning. */
    static float q[2 * 9 * 16], kv[2 * 13 * 16], o[2 * 9 * 16];
    attn_status fwd = attn_forward(ctx, &p, q, kv, kv, o, NULL, NULL);
    attn_status chk = attn_check(ctx, &p, 0, 0, NULL);
    char detail[96];
    snprintf(detail, sizeof detail, "forward %s, check %s", attn_status_name(fwd),
             attn_status_name(chk));
    report("... and fails the forward and attn_check alike",
           fwd == ATTN_ERR_INVALID_VALUE && chk == ATTN_ERR_INVALID_VALUE, detail);
    report("... with a message naming the override",
           strstr(attn_last_error(ctx), "attn_context_set_tuning \"variant=gpu,rows=6") != NULL,
           attn_last_error(ctx));
    /* The same values through ATTN_CL_TUNE: the message names it instead. */
    attn_context_set_tuning(ctx, NULL);
    setenv("ATTN_CL_TUNE", "variant=gpu,rows=6,tile_k=16,wg=4", 1);
    chk = attn_check(ctx, &p, 0, 0, NULL);
    report("ATTN_CL_TUNE the forward cannot take -> INVALID_VALUE naming it",
           chk == ATTN_ERR_INVALID_VALUE && strstr(attn_last_error(ctx), "ATTN_CL_TUNE \"") &&
               !strstr(attn_last_error(ctx), "attn_context_set_tuning"),
           attn_status_name(chk));
    unsetenv("ATTN_CL_TUNE");
    device_limits_of_overrides(ctx);
    decode_shape_overrides(ctx);

    setenv("ATTN_CL_TUNE", narrow, 1);
    forward_works(ctx, "ATTN_CL_TUNE applies over the context's spec");
    unsetenv("ATTN_CL_TUNE");

    st = attn_context_set_tuning(ctx, NULL);
    report("attn_context_set_tuning(NULL spec) removes it", st == ATTN_SUCCESS,
           attn_status_name(st));
    forward_works(ctx, "forward on the table's entry again");
    attn_context_destroy(ctx);
}

int main(void) {
    attn_device_info first;
    memset(&first, 0, sizeof first);
    list_devices(&first);
    if (failures) {
        printf("FAIL: cannot list devices\n");
        return 1;
    }
    create_default(&first);
    create_from_env(&first);
    create_from_cl();
    create_from_cl_mismatched();
    tuning_overrides();
    version();
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
