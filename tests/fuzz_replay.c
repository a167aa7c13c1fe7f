/* Runs the fuzz target (tests/fuzz_forward.c) over files and directories,
 * for builds without libFuzzer: the seed corpus, and each crash reduced into
 * it, run as an ordinary test. A violated property aborts with its reason;
 * otherwise each input prints one line: what it asked for, what each call
 * answered, and PASS. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("%s: cannot open  FAIL\n", path);
        return 0;
    }
    uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    /* The name goes out first, so that an input that aborts is named. */
    printf("%s:", path);
    fflush(stdout);
    LLVMFuzzerTestOneInput(buf, n);
    printf("  PASS\n");
    fflush(stdout);
    return 1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of `dir`, in name order. */
static int run_dir(const char *dir, int *count) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("%s: cannot open  FAIL\n", dir);
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
            if (!names) {
                return 0;
            }
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (!names[n]) {
            return 0;
        }
        sprintf(names[n], "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        ok &= run_file(names[i]);
        free(names[i]);
        (*count)++;
    }
    free(names);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    setenv("ATTN_FUZZ_TRACE", "1", 0);
    int ok = 1, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            ok &= run_dir(argv[i], &count);
        } else {
            ok &= run_file(argv[i]);
            count++;
        }
    }
    printf("%s: %d input(s)\n", ok && count ? "PASS" : "FAIL", count);
    return ok && count ? 0 : 1;
}
