/* The on-disk kernel binary cache (lib/binary_cache.c), through the
 * fault-injection build, whose call counters tell source builds
 * (clCreateProgramWithSource) from loads (clCreateProgramWithBinary):
 *   - SHA-256 against FIPS 180-4's vectors;
 *   - the directory: ATTN_CL_CACHE_DIR, empty = off, the XDG and HOME
 *     defaults;
 *   - a second context loads every program from disk, none from source;
 *   - a corrupt, truncated, emptied or foreign entry is never trusted: the
 *     program is rebuilt from source, right, and the entry rewritten;
 *   - an unusable directory (not creatable, a file, read-only) costs nothing
 *     but the cache: the forward still succeeds;
 *   - the key changes with the options, the source and nothing else;
 *   - two processes filling one empty cache at once leave whole entries;
 *   - a failure anywhere in loading (the binary call, its build, an
 *     allocation) is absorbed or reported cleanly, never a wrong result.
 * Every forward's output is checked against the reference. */
#include "binary_cache.h"
#include "fault_injection.h"
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what, const char *detail) {
    printf("%-70s %-30s %s\n", what, detail ? detail : "", ok ? "PASS" : "FAIL");
    failures += !ok;
}

/* ---- SHA-256 --------------------------------------------------------------- */

static void hex(const unsigned char *digest, char out[65]) {
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void check_sha256(void) {
    static const struct {
        const char *message;
        const char *digest;
    } vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
         "lmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        unsigned char digest[32];
        char got[65];
        attn_sha256_of(vectors[i].message, strlen(vectors[i].message), digest);
        hex(digest, got);
        char what[80];
        snprintf(what, sizeof what, "sha256 of a %zu-byte message", strlen(vectors[i].message));
        check(strcmp(got, vectors[i].digest) == 0, what, NULL);
    }
    /* A million 'a', fed in pieces that straddle the 64-byte blocks. */
    attn_sha256 h;
    attn_sha256_init(&h);
    char piece[997];
    memset(piece, 'a', sizeof piece);
    size_t left = 1000000;
    while (left > 0) {
        const size_t n = left < sizeof piece ? left : sizeof piece;
        attn_sha256_update(&h, piece, n);
        left -= n;
    }
    unsigned char digest[32];
    char got[65];
    attn_sha256_final(&h, digest);
    hex(digest, got);
    check(strcmp(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
          "sha256 of a million 'a' in 997-byte pieces", NULL);
}

/* ---- Files ------------------------------------------------------------------- */

static char root[256]; /* this run's scratch directory */

static void path_in(char *out, size_t size, const char *dir, const char *name) {
    if ((size_t)snprintf(out, size, "%s/%s", dir, name) >= size) {
        printf("FAIL: path too long: %s/%s\n", dir, name);
        exit(1);
    }
}

/* Entries (*.bin) and temporaries (*.tmp.*) in `dir`; -1 when it cannot be
 * read. When `first` is not NULL it gets the path of an entry. */
static int count_files(const char *dir, int *temporaries, char *first, size_t first_size) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int entries = 0, temps = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const size_t n = strlen(e->d_name);
        if (strstr(e->d_name, ".tmp."))
            temps++;
        else if (n > 4 && strcmp(e->d_name + n - 4, ".bin") == 0) {
            if (first && entries == 0)
                path_in(first, first_size, dir, e->d_name);
            entries++;
        }
    }
    closedir(d);
    if (temporaries)
        *temporaries = temps;
    return entries;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[1024];
        path_in(path, sizeof path, dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *data = malloc(n > 0 ? (size_t)n : 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return data;
}

static int spit(const char *path, const unsigned char *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, size, f) == size;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* ---- Forwards ------------------------------------------------------------------ */

/* What one forward in a new context did. */
typedef struct outcome {
    attn_status status;
    int right;           /* succeeded: O and LSE within the bound of the reference;
                            failed: O and LSE untouched and a message kept */
    long sources, loads; /* clCreateProgramWithSource / WithBinary calls */
    long calls[ATTN_FAULT_KIND_COUNT];
    int fired; /* the armed fault fired */
} outcome;

static int head_dim = 16;

/* A context on the default device, quietly (test_context_create prints). */
static attn_context_t new_context(void) {
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    if (st != ATTN_SUCCESS) {
        printf("%s: attn_context_create: %s: %s\n", st == ATTN_ERR_NO_DEVICE ? "SKIP" : "FAIL",
               attn_status_name(st), attn_last_error(NULL));
        exit(st == ATTN_ERR_NO_DEVICE ? TEST_SKIP : 1);
    }
    return ctx;
}

/* One attn_forward in a context of its own on the default device: the
 * first forward of a process that starts up, with the cache as the
 * environment sets it. D16 bottom-right as the other memcheck tests run it,
 * so that PoCL's own cache has its kernels. When `arm` is not
 * ATTN_FAULT_KIND_COUNT, its `nth` call in the forward fails. */
static outcome forward_armed(attn_fault_kind arm, long nth) {
    outcome out = {0};
    attn_context_t ctx = new_context();
    attn_params p;
    attn_params_init(&p, 1, 2, 9, 13, head_dim);
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    test_problem t;
    if (test_problem_init(&t, &p, 5, 1.0f, 1, 0) != 0) {
        printf("FAIL: test_problem_init\n");
        exit(1);
    }
    float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
    float *lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
    const cl_int error =
        arm == ATTN_FAULT_BUILD_PROGRAM ? CL_BUILD_PROGRAM_FAILURE : CL_OUT_OF_RESOURCES;
    attn_fault_reset();
    if (arm != ATTN_FAULT_KIND_COUNT)
        attn_fault_arm(arm, nth, error);
    out.status = attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, NULL);
    out.fired = attn_fault_fired();
    for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++)
        out.calls[k] = attn_fault_count((attn_fault_kind)k);
    attn_fault_reset();
    out.sources = out.calls[ATTN_FAULT_CREATE_PROGRAM];
    out.loads = out.calls[ATTN_FAULT_CREATE_PROGRAM_BINARY];
    if (out.status == ATTN_SUCCESS) {
        out.right = test_compare(&t.o_shape, o, t.ref_o, t.naive_o, t.o_elems).ok &&
                    test_compare(&t.lse_shape, lse, t.ref_lse, t.naive_lse, t.lse_elems).ok;
    } else {
        const attn_status expected =
            arm == ATTN_FAULT_HOST_ALLOC ? ATTN_ERR_HOST_OUT_OF_MEMORY : (attn_status)error;
        out.right = out.status == expected && attn_last_error(ctx)[0] &&
                    test_is_sentinel(o, t.o_elems * sizeof(float)) &&
                    test_is_sentinel(lse, t.lse_elems * sizeof(float));
    }
    free(o);
    free(lse);
    test_problem_free(&t);
    attn_context_destroy(ctx);
    return out;
}

static outcome forward_in_new_context(void) {
    return forward_armed(ATTN_FAULT_KIND_COUNT, 0);
}

static const char *describe(const outcome *o, char *buf, size_t size) {
    snprintf(buf, size, "%s src %ld bin %ld%s", o->status == ATTN_SUCCESS ? "ok" : "FAILED",
             o->sources, o->loads, o->right ? "" : " WRONG");
    return buf;
}

static int programs; /* programs the forward builds, from the first cold run */

/* ---- Directory --------------------------------------------------------------- */

static void check_directory_choice(void) {
    char buf[80], xdg[512], home[512], dir[512];
    /* Empty: off. Nothing loaded, nothing written anywhere we look. */
    snprintf(xdg, sizeof xdg, "%s/xdg", root);
    setenv("XDG_CACHE_HOME", xdg, 1);
    setenv("ATTN_CL_CACHE_DIR", "", 1);
    outcome o = forward_in_new_context();
    check(o.status == ATTN_SUCCESS && o.right && o.loads == 0 && o.sources > 0 &&
              count_files(xdg, NULL, NULL, 0) < 0,
          "ATTN_CL_CACHE_DIR empty: off, nothing written", describe(&o, buf, sizeof buf));
    programs = (int)o.sources;

    /* Unset: $XDG_CACHE_HOME/attn_cl, created with its parents. */
    unsetenv("ATTN_CL_CACHE_DIR");
    o = forward_in_new_context();
    path_in(dir, sizeof dir, xdg, "attn_cl");
    struct stat st;
    int entries = count_files(dir, NULL, NULL, 0);
    check(o.status == ATTN_SUCCESS && o.right && entries == programs && stat(dir, &st) == 0 &&
              (st.st_mode & 0777) == 0700,
          "unset: entries in $XDG_CACHE_HOME/attn_cl (mode 0700)", describe(&o, buf, sizeof buf));

    /* A relative XDG_CACHE_HOME is not one (XDG): $HOME/.cache/attn_cl. */
    snprintf(home, sizeof home, "%s/home", root);
    setenv("XDG_CACHE_HOME", "relative/cache", 1);
    setenv("HOME", home, 1);
    o = forward_in_new_context();
    path_in(dir, sizeof dir, home, ".cache/attn_cl");
    entries = count_files(dir, NULL, NULL, 0);
    check(o.status == ATTN_SUCCESS && o.right && entries == programs,
          "unset, XDG_CACHE_HOME relative: $HOME/.cache/attn_cl", describe(&o, buf, sizeof buf));
    unsetenv("XDG_CACHE_HOME");
}

/* ---- Cold, warm, corrupt --------------------------------------------------- */

static void check_cold_then_warm(const char *dir) {
    char buf[80];
    setenv("ATTN_CL_CACHE_DIR", dir, 1);
    outcome cold = forward_in_new_context();
    int temps = -1;
    const int entries = count_files(dir, &temps, NULL, 0);
    check(cold.status == ATTN_SUCCESS && cold.right && cold.loads == 0 &&
              cold.sources == programs && entries == programs && temps == 0,
          "empty cache: built from source, one entry per program",
          describe(&cold, buf, sizeof buf));
    outcome warm = forward_in_new_context();
    check(warm.status == ATTN_SUCCESS && warm.right && warm.sources == 0 && warm.loads == programs,
          "second context: every program loaded from disk", describe(&warm, buf, sizeof buf));
}

typedef enum damage {
    TRUNCATE_HALF,
    TRUNCATE_HEADER,
    EMPTY,
    FLIP_PAYLOAD_BYTE,
    FLIP_KEY_BYTE,
    FOREIGN,   /* another entry's whole file under this name */
    GARBAGE,   /* the size of an entry, none of its bytes */
    DIRECTORY, /* a directory where the file should be */
    DAMAGE_COUNT
} damage;

static const char *damage_name(damage d) {
    static const char *const names[DAMAGE_COUNT] = {
        "truncated to half",      "truncated to the header", "emptied",
        "a payload byte flipped", "a key byte flipped",      "another entry's file",
        "random bytes",           "a directory in its place"};
    return names[d];
}

/* Damages every entry of `dir` in the same way; returns the count. */
static int damage_entries(const char *dir, damage how) {
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char paths[16][1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 16)
        if (strstr(e->d_name, ".bin"))
            path_in(paths[n++], sizeof paths[0], dir, e->d_name);
    closedir(d);
    size_t size0 = 0;
    unsigned char *other = n > 1 ? slurp(paths[n - 1], &size0) : NULL;
    for (int i = 0; i < n; i++) {
        size_t size = 0;
        unsigned char *data = slurp(paths[i], &size);
        if (!data)
            continue;
        switch (how) {
        case TRUNCATE_HALF:
            spit(paths[i], data, size / 2);
            break;
        case TRUNCATE_HEADER:
            spit(paths[i], data, 88);
            break;
        case EMPTY:
            spit(paths[i], data, 0);
            break;
        case FLIP_PAYLOAD_BYTE:
            data[size - 7] ^= 0x40;
            spit(paths[i], data, size);
            break;
        case FLIP_KEY_BYTE:
            data[20] ^= 0x01;
            spit(paths[i], data, size);
            break;
        case FOREIGN:
            /* With one program, a valid entry of another key: its own with
             * the key changed, checksum intact. */
            if (other && i != n - 1) {
                spit(paths[i], other, size0);
            } else {
                data[16] ^= 0x80;
                spit(paths[i], data, size);
            }
            break;
        case GARBAGE:
            for (size_t j = 0; j < size; j++)
                data[j] = (unsigned char)(j * 131 + 7);
            spit(paths[i], data, size);
            break;
        case DIRECTORY:
            unlink(paths[i]);
            mkdir(paths[i], 0700);
            break;
        case DAMAGE_COUNT:
            break;
        }
        free(data);
    }
    free(other);
    return n;
}

static void check_damaged(const char *dir, damage how) {
    char what[96], buf[80];
    const int damaged = damage_entries(dir, how);
    outcome o = forward_in_new_context();
    snprintf(what, sizeof what, "entries %s: rebuilt from source, right", damage_name(how));
    /* A directory in the entry's place cannot be replaced by a rename: the
     * program is built from source each time, and that is all. */
    check(damaged == programs && o.status == ATTN_SUCCESS && o.right && o.sources == programs &&
              o.loads == 0,
          what, describe(&o, buf, sizeof buf));
    if (how == DIRECTORY) {
        remove_tree(dir);
        forward_in_new_context(); /* refill */
        return;
    }
    o = forward_in_new_context();
    check(o.status == ATTN_SUCCESS && o.right && o.sources == 0 && o.loads == programs,
          "  then rewritten: the next context loads them", describe(&o, buf, sizeof buf));
}

/* ---- Unusable directories ------------------------------------------------------ */

static void check_unusable(const char *what, const char *dir) {
    char buf[80];
    setenv("ATTN_CL_CACHE_DIR", dir, 1);
    outcome o = forward_in_new_context();
    check(o.status == ATTN_SUCCESS && o.right && o.sources == programs && o.loads == 0, what,
          describe(&o, buf, sizeof buf));
}

static void check_unusable_dirs(void) {
    char file[512], under_file[512], readonly[512];
    path_in(file, sizeof file, root, "a-file");
    spit(file, (const unsigned char *)"x", 1);
    check_unusable("ATTN_CL_CACHE_DIR is a regular file", file);
    path_in(under_file, sizeof under_file, file, "cache");
    check_unusable("ATTN_CL_CACHE_DIR under a regular file (no mkdir)", under_file);
    check_unusable("ATTN_CL_CACHE_DIR is /dev/null", "/dev/null");
    /* Read-only: root writes anyway, so this one checks only without it. */
    path_in(readonly, sizeof readonly, root, "readonly");
    mkdir(readonly, 0500);
    if (geteuid() != 0) {
        check_unusable("ATTN_CL_CACHE_DIR read-only", readonly);
        check(count_files(readonly, NULL, NULL, 0) == 0, "  nothing written there", NULL);
    }
    chmod(readonly, 0700);
}

/* ---- Keys ---------------------------------------------------------------------- */

static void check_keys(void) {
    attn_context_t ctx = new_context();
    setenv("ATTN_CL_CACHE_DIR", "/nonexistent-attn-cl-cache", 1);
    attn_binary_entry a, b, c, d;
    const int made = attn_binary_cache_entry(ctx, "kernel void k() {}", "-DA=1", &a) &&
                     attn_binary_cache_entry(ctx, "kernel void k() {}", "-DA=2", &b) &&
                     attn_binary_cache_entry(ctx, "kernel void k() { }", "-DA=1", &c) &&
                     attn_binary_cache_entry(ctx, "kernel void k() {}", "-DA=1", &d);
    check(made, "entries made while ATTN_CL_CACHE_DIR is set", NULL);
    check(made && memcmp(a.key, b.key, sizeof a.key) != 0 && strcmp(a.path, b.path) != 0,
          "key changes with the build options", NULL);
    check(made && memcmp(a.key, c.key, sizeof a.key) != 0, "key changes with the source", NULL);
    check(made && memcmp(a.key, d.key, sizeof a.key) == 0 && strcmp(a.path, d.path) == 0,
          "key is the same for the same program", NULL);
    check(made && strncmp(a.path, "/nonexistent-attn-cl-cache/", 27) == 0 &&
              strlen(a.path) == 27 + 64 + 4,
          "entry path is <dir>/<64 hex digits>.bin", a.path + (made ? 27 : 0));
    setenv("ATTN_CL_CACHE_DIR", "", 1);
    check(!attn_binary_cache_entry(ctx, "kernel void k() {}", "-DA=1", &a),
          "no entry while ATTN_CL_CACHE_DIR is empty", NULL);
    attn_context_destroy(ctx);
}

/* A forward whose options differ (another head_dim) stores other entries. */
static void check_options_change_entries(const char *dir) {
    char buf[80];
    setenv("ATTN_CL_CACHE_DIR", dir, 1);
    const int before = count_files(dir, NULL, NULL, 0);
    head_dim = 24;
    outcome o = forward_in_new_context();
    head_dim = 16;
    const int after = count_files(dir, NULL, NULL, 0);
    check(o.status == ATTN_SUCCESS && o.right && o.sources > 0 && o.loads == 0 &&
              after == before + o.sources,
          "head_dim 24 (other -D options): new entries beside the old",
          describe(&o, buf, sizeof buf));
}

/* ---- Two processes at once ----------------------------------------------------- */

/* A child's side: one forward, exit 0 when it was right and, with
 * `from_disk`, loaded every program and built none. */
static int child(const char *dir, int from_disk) {
    setenv("ATTN_CL_CACHE_DIR", dir, 1);
    outcome o = forward_in_new_context();
    return o.status == ATTN_SUCCESS && o.right && (!from_disk || (o.sources == 0 && o.loads > 0))
               ? 0
               : 1;
}

/* Runs `count` children of this program with `mode` at once; whether all
 * exited 0. They are not under this process's valgrind, and there the
 * device reports another CPU (another key), which is why the loading check
 * runs in a child too. */
static int children(const char *self, const char *mode, const char *dir, int count) {
    pid_t pids[2];
    for (int i = 0; i < count; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            execl(self, self, mode, dir, (char *)NULL);
            _exit(127);
        }
    }
    int ok = 1;
    for (int i = 0; i < count; i++) {
        int status = 0;
        ok &= pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0;
    }
    return ok;
}

static void check_two_processes(const char *self) {
    char dir[512];
    path_in(dir, sizeof dir, root, "shared");
    int ok = 1;
    /* Several rounds: each a fresh empty cache that two processes started
     * together fill at once. */
    const int rounds = test_quick() ? 1 : 3;
    for (int r = 0; r < rounds && ok; r++) {
        remove_tree(dir);
        ok &= children(self, "--fill", dir, 2);
    }
    int temps = -1;
    const int entries = count_files(dir, &temps, NULL, 0);
    check(ok && entries == programs && temps == 0,
          "two processes fill one empty cache at once: both right", NULL);
    check(children(self, "--load", dir, 1), "  then a third process loads every entry they wrote",
          NULL);
}

/* ---- Faults while loading ------------------------------------------------------ */

/* Every failure point of a forward in a new context on a warm cache, for the
 * calls loading makes: each is absorbed (source build, right) or reported
 * with the injected status and the outputs untouched; the cache still
 * loads afterwards. */
static void check_load_faults(const char *dir) {
    static const attn_fault_kind kinds[] = {ATTN_FAULT_CREATE_PROGRAM_BINARY,
                                            ATTN_FAULT_BUILD_PROGRAM, ATTN_FAULT_HOST_ALLOC};
    setenv("ATTN_CL_CACHE_DIR", dir, 1);
    const outcome clean = forward_in_new_context();
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const long count = clean.calls[kinds[k]];
        int all = 1, absorbed = 0, reported = 0, walked = 0;
        for (long n = 1; n <= count; n++) {
            if (test_quick() && n != 1 && n != count)
                continue;
            /* Armed once the context exists: creating one is test_faults'
             * to walk. */
            const outcome o = forward_armed(kinds[k], n);
            absorbed += o.status == ATTN_SUCCESS;
            reported += o.status != ATTN_SUCCESS;
            if (!o.right || !o.fired)
                printf("  %s #%ld: %s%s\n", attn_fault_call_name(kinds[k]), n,
                       attn_status_name(o.status), o.fired ? "" : " (did not fire)");
            all &= o.right && o.fired;
            walked++;
        }
        char what[96], detail[64];
        snprintf(what, sizeof what, "warm cache, %s failing: absorbed or reported",
                 attn_fault_call_name(kinds[k]));
        snprintf(detail, sizeof detail, "%d walked: %d absorbed, %d reported", walked, absorbed,
                 reported);
        check(all && count > 0 && clean.loads == programs, what, detail);
    }
    char buf[80];
    outcome o = forward_in_new_context();
    check(o.status == ATTN_SUCCESS && o.right && o.sources == 0 && o.loads == programs,
          "  and the cache still loads whole afterwards", describe(&o, buf, sizeof buf));
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--fill") == 0)
        return child(argv[2], 0);
    if (argc == 3 && strcmp(argv[1], "--load") == 0)
        return child(argv[2], 1);

    check_sha256();
    snprintf(root, sizeof root, "/tmp/attn_cl_test_binary_cache.XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    attn_context_t probe = test_context_create(); /* exits 77 without a device */
    attn_context_destroy(probe);

    check_directory_choice();
    char dir[512];
    path_in(dir, sizeof dir, root, "nested/cache"); /* parents created too */
    check_cold_then_warm(dir);
    for (int d = 0; d < DAMAGE_COUNT; d++) {
        if (test_quick() && d != TRUNCATE_HALF && d != FLIP_PAYLOAD_BYTE)
            continue;
        check_damaged(dir, (damage)d);
    }
    check_unusable_dirs();
    check_keys();
    if (!test_quick())
        check_options_change_entries(dir);
    check_two_processes(argv[0]);
    check_load_faults(dir);

    remove_tree(root);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
