/* Helpers shared by the cmocka tests. */
#ifndef SHIFTVIT_TEST_UTIL_H
#define SHIFTVIT_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <cmocka.h>

/* Path of the shared data folder beside the project (CI lays it at ../shared). */
#define SV_TEST_SHARED "../shared"
#define SV_TEST_CIFAR SV_TEST_SHARED "/data/cifar-10-batches-bin"

/* Fails the test with both values when |a - b| > atol + rtol * |b|. */
#define assert_close(a, b, rtol, atol)                                          \
    do {                                                                        \
        double a_ = (a), b_ = (b);                                              \
        if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_)))                     \
            fail_msg("%s = %.9g, expected %s = %.9g (rtol %g, atol %g)", #a,   \
                     a_, #b, b_, (double)(rtol), (double)(atol));               \
    } while (0)

/* Reads a popen'ed pipe to its end and closes it: returns the output (caller
 * frees) and the exit status (-1: killed). */
static inline char *sv_test_read_all(FILE *p, int *status) {
    size_t cap = 1 << 16, len = 0, got;
    char *out = malloc(cap);
    assert_non_null(out);
    while ((got = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[len] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* Runs a shell command; returns its output (stdout and whatever the command
 * redirects there; caller frees) and its exit status (-1: killed). */
static inline char *sv_test_capture(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("popen %s failed", cmd);
    return sv_test_read_all(p, status);
}

/* The whole file at path, NUL-terminated (caller frees); *len gets its size
 * when len is not NULL. Fails the test if it cannot be read. */
static inline char *sv_test_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return s;
}

/* Writes len bytes to path (created or truncated); fails the test on error. */
static inline void sv_test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (fwrite(data, 1, len, f) != len || fclose(f) != 0) fail_msg("cannot write %s", path);
}

/* For tests that run the program: bin gets $BUILD/shiftvit (default
 * build/shiftvit), tmp a new folder /tmp/<prefix>_XXXXXX. Returns 0, or -1
 * after printing why (the test program then exits 1). */
static inline int sv_test_bin_and_tmp(char *bin, size_t nbin, char *tmp, size_t ntmp,
                                      const char *prefix) {
    const char *b = getenv("BUILD");
    snprintf(bin, nbin, "%s/shiftvit", b && *b ? b : "build");
    snprintf(tmp, ntmp, "/tmp/%s_XXXXXX", prefix);
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

/* Runs a cmocka group, then removes tmp unless SV_TEST_KEEP is set. */
#define SV_TEST_RUN_AND_CLEAN(tests, tmp)                                       \
    do {                                                                        \
        int failed_ = cmocka_run_group_tests(tests, NULL, NULL);                \
        if (!getenv("SV_TEST_KEEP")) sv_test_rm_rf(tmp);                        \
        return failed_;                                                         \
    } while (0)

/* Removes a test's temporary folder (mkdtemp names: no quotes in them). */
static inline void sv_test_rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

#endif
