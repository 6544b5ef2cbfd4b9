/* File locks (issue 26, sections 5 and 6), through the real program on
 * configs/tiny.ini and the real data:
 *   - a file system where locks fail with ENOLCK (NFS without lockd, some
 *     Lustre and GPFS mounts), emulated by an LD_PRELOAD library compiled
 *     here: flock, the fcntl lock commands and lockf fail with ENOLCK on
 *     files under $SV_NOLOCK_DIR, everything else goes to the C library.
 *     `info`, `eval` and `predict` of a checkpoint copied there work, say
 *     once that HDF5 opens files without locking, call nothing damaged, and
 *     eval gives the numbers it gives on the same checkpoint where locks
 *     work; `train` and a resume there run to the end with a complete
 *     metrics.h5 (its rows read back here, without the library);
 *   - an h5py reader (/usr/bin/python3, a separate process holding HDF5's
 *     shared lock) keeps metrics.h5 open across a resume: the resume exits 0
 *     and says what it did, its CSV files and metrics.h5 hold every row (the
 *     HDF5 columns equal the CSV columns), and the reader's own view of the
 *     old file stays whole.
 * Runs build/shiftvit (or $BUILD/shiftvit) from the repository root; needs a
 * C compiler (cc) for the library; the reader test is skipped when
 * /usr/bin/python3 lacks h5py. Folders are under one mkdtemp folder,
 * removed at the end. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "test_util.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define TINY "configs/tiny.ini"
#define PYTHON "/usr/bin/python3"
#define NOLOCK_WARNING "without HDF5's file locking"

static char g_tmp[64];
static char g_bin[256] = "build/shiftvit";
static char g_shim[128];   /* the ENOLCK library */
static char g_nolock[128]; /* the folder where locks fail */
static char g_run[128];    /* a finished tiny run (2 epochs), written where locks work */

/* Tiny run: 256 training images, batch 32, 2 epochs. */
#define STEPS_PER_EPOCH (256 / 32)
#define EPOCHS 2

static const char shim_src[] =
    "#define _GNU_SOURCE\n"
    "#include <dlfcn.h>\n#include <errno.h>\n#include <fcntl.h>\n#include <stdarg.h>\n"
    "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <sys/file.h>\n#include <unistd.h>\n"
    /* 1 if fd is a file under $SV_NOLOCK_DIR (the "mount" without locks). */
    "static int no_locks(int fd) {\n"
    "    const char *dir = getenv(\"SV_NOLOCK_DIR\");\n"
    "    char link[64], path[4096];\n"
    "    if (!dir || !*dir) return 0;\n"
    "    snprintf(link, sizeof link, \"/proc/self/fd/%d\", fd);\n"
    "    ssize_t n = readlink(link, path, sizeof path - 1);\n"
    "    if (n < 0) return 0;\n"
    "    path[n] = 0;\n"
    "    size_t l = strlen(dir);\n"
    "    return strncmp(path, dir, l) == 0 && (path[l] == '/' || path[l] == 0);\n"
    "}\n"
    "static int lock_cmd(int c) {\n"
    "    return c == F_SETLK || c == F_SETLKW || c == F_GETLK || c == F_OFD_SETLK || c == F_OFD_SETLKW || c == F_OFD_GETLK;\n"
    "}\n"
    "int flock(int fd, int op) {\n"
    "    if (no_locks(fd)) { errno = ENOLCK; return -1; }\n"
    "    int (*real)(int, int) = (int (*)(int, int))dlsym(RTLD_NEXT, \"flock\");\n"
    "    return real(fd, op);\n"
    "}\n"
    "static int fcntl_any(const char *name, int fd, int cmd, void *arg) {\n"
    "    if (lock_cmd(cmd) && no_locks(fd)) { errno = ENOLCK; return -1; }\n"
    "    int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, name);\n"
    "    return real(fd, cmd, arg);\n"
    "}\n"
    "int fcntl(int fd, int cmd, ...) {\n"
    "    va_list ap; va_start(ap, cmd); void *arg = va_arg(ap, void *); va_end(ap);\n"
    "    return fcntl_any(\"fcntl\", fd, cmd, arg);\n"
    "}\n"
    "int fcntl64(int fd, int cmd, ...) {\n"
    "    va_list ap; va_start(ap, cmd); void *arg = va_arg(ap, void *); va_end(ap);\n"
    "    return fcntl_any(\"fcntl64\", fd, cmd, arg);\n"
    "}\n"
    "int lockf(int fd, int cmd, off_t len) {\n"
    "    if (no_locks(fd)) { errno = ENOLCK; return -1; }\n"
    "    int (*real)(int, int, off_t) = (int (*)(int, int, off_t))dlsym(RTLD_NEXT, \"lockf\");\n"
    "    return real(fd, cmd, len);\n"
    "}\n"
    "int lockf64(int fd, int cmd, off64_t len) {\n"
    "    if (no_locks(fd)) { errno = ENOLCK; return -1; }\n"
    "    int (*real)(int, int, off64_t) = (int (*)(int, int, off64_t))dlsym(RTLD_NEXT, \"lockf64\");\n"
    "    return real(fd, cmd, len);\n"
    "}\n";

/* The environment of a command run "on" the lock-less folder. A sanitizer
 * build's runtime must come first among preloaded libraries; it is told not
 * to insist. */
static void nolock_env(char *buf, size_t n) {
    snprintf(buf, n, "SV_NOLOCK_DIR=%s LD_PRELOAD=%s ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0",
             g_nolock, g_shim);
}

/* Runs `[ENV] shiftvit ARGS` (one process, 120 s limit), stdout and stderr
 * together. */
static sv_test_result run_cmd(const char *env, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s OMP_NUM_THREADS=1 timeout -k 5 120 %s %s 2>&1", env, g_bin, args);
    return sv_test_run(cmd);
}

static void expect_ok(const sv_test_result *r, const char *what) {
    if (r->status != 0) fail_msg("%s: exit status %d:\n%s", what, r->status, sv_test_tail(r->out, 3000));
    if (strstr(r->out, "damaged")) fail_msg("%s calls a file damaged:\n%s", what, sv_test_tail(r->out, 3000));
}

/* Column col (0-based) of the data rows of a metrics CSV; returns the rows. */
static int csv_column(const char *path, int col, double *v, int cap) {
    char *text = sv_test_slurp(path, NULL);
    int rows = 0;
    char *line = strchr(text, '\n'); /* after the header */
    while (line && line[1] && rows < cap) {
        char *p = line + 1;
        for (int c = 0; c < col && p; c++) {
            p = strchr(p, ',');
            if (p) p++;
        }
        if (!p) fail_msg("%s: a row with fewer than %d columns", path, col + 1);
        v[rows++] = strtod(p, NULL);
        line = strchr(line + 1, '\n');
    }
    free(text);
    return rows;
}

/* The run folder's metrics are complete: STEPS_PER_EPOCH * EPOCHS step rows
 * numbered 1, 2, ... and EPOCHS epoch rows in both formats, and metrics.h5's
 * columns equal the CSV columns (CSV values are printed to 6 decimals). */
static void expect_complete_metrics(const char *dir) {
    enum { N = STEPS_PER_EPOCH * EPOCHS };
    char csv[256], h5[256];
    double c[64], h[64];
    snprintf(h5, sizeof h5, "%s/metrics.h5", dir);
    snprintf(csv, sizeof csv, "%s/metrics_steps.csv", dir);
    static const struct {
        const char *dataset;
        int col;
    } steps[] = {{"/steps/step", 0}, {"/steps/loss", 3}};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        assert_int_equal(csv_column(csv, steps[k].col, c, 64), N);
        assert_int_equal(sv_test_h5_column(h5, steps[k].dataset, h, 64), N);
        for (int i = 0; i < N; i++) {
            if (k == 0) assert_close(c[i], i + 1, 0, 0);
            assert_close(h[i], c[i], 0, 5e-7);
        }
    }
    snprintf(csv, sizeof csv, "%s/metrics_epochs.csv", dir);
    assert_int_equal(csv_column(csv, 5, c, 64), EPOCHS); /* val_top1 */
    assert_int_equal(sv_test_h5_column(h5, "/epochs/val_top1", h, 64), EPOCHS);
    for (int i = 0; i < EPOCHS; i++) assert_close(h[i], c[i], 0, 5e-7);
    assert_int_equal(sv_test_h5_column(h5, "/epochs/epoch", h, 64), EPOCHS);
    for (int i = 0; i < EPOCHS; i++) assert_close(h[i], i + 1, 0, 0);
}

/* The line of out starting with prefix; fails the test when there is none. */
static void line_of(const char *out, const char *prefix, char *line, size_t n) {
    if (!sv_test_line_starting(out, prefix, line, n))
        fail_msg("no line starting with %s in:\n%s", prefix, sv_test_tail(out, 3000));
}

/* info, eval and predict of a checkpoint copied onto the lock-less folder. */
static void test_read_checkpoint_without_locks(void **state) {
    (void)state;
    char ckpt[256], args[1024], env[512];
    snprintf(ckpt, sizeof ckpt, "%s/last.h5", g_nolock);
    snprintf(args, sizeof args, "%s/last.h5", g_run);
    sv_test_copy_file(args, ckpt, -1);
    nolock_env(env, sizeof env);

    snprintf(args, sizeof args, "info %s", ckpt);
    sv_test_result r = run_cmd(env, args);
    expect_ok(&r, "info");
    assert_int_equal(sv_test_count(r.out, NOLOCK_WARNING), 1);
    assert_contains(r.out, "No locks available");
    sv_test_result_free(&r);

    /* The same numbers as eval of the original where locks work. */
    char line_nolock[512], line_ref[512];
    snprintf(args, sizeof args, "eval --checkpoint %s --split test", ckpt);
    r = run_cmd(env, args);
    expect_ok(&r, "eval");
    assert_int_equal(sv_test_count(r.out, NOLOCK_WARNING), 1);
    line_of(r.out, "TEST", line_nolock, sizeof line_nolock);
    sv_test_result_free(&r);
    snprintf(args, sizeof args, "eval --checkpoint %s/last.h5 --split test", g_run);
    r = run_cmd("", args);
    expect_ok(&r, "eval where locks work");
    assert_int_equal(sv_test_count(r.out, NOLOCK_WARNING), 0);
    line_of(r.out, "TEST", line_ref, sizeof line_ref);
    sv_test_result_free(&r);
    assert_string_equal(line_nolock, line_ref);

    snprintf(args, sizeof args, "predict --checkpoint %s " SV_TEST_SHARED "/data/inference_set", ckpt);
    r = run_cmd(env, args);
    expect_ok(&r, "predict");
    assert_int_equal(sv_test_count(r.out, NOLOCK_WARNING), 1);
    sv_test_result_free(&r);
}

/* train, then a resume of its first epoch, in a folder on the lock-less
 * "mount": both run to the end and metrics.h5 holds every row. */
static void test_train_and_resume_without_locks(void **state) {
    (void)state;
    char dir[256], args[1024], env[512];
    snprintf(dir, sizeof dir, "%s/run", g_nolock);
    nolock_env(env, sizeof env);
    snprintf(args, sizeof args, "train -c " TINY " --out %s", dir);
    sv_test_result r = run_cmd(env, args);
    expect_ok(&r, "train");
    assert_contains(r.out, "cannot be locked (No locks available)"); /* the run folder's own lock */
    assert_int_equal(sv_test_count(r.out, NOLOCK_WARNING), 1);
    sv_test_result_free(&r);
    expect_complete_metrics(dir);

    snprintf(args, sizeof args, "train --resume %s/epoch_0001.h5 --out %s", dir, dir);
    r = run_cmd(env, args);
    expect_ok(&r, "train --resume");
    assert_int_equal(sv_test_count(r.out, NOLOCK_WARNING), 1);
    sv_test_result_free(&r);
    expect_complete_metrics(dir);
}

/* An h5py reader holds metrics.h5 open across a resume. */
static void test_resume_while_h5py_reads_metrics(void **state) {
    (void)state;
    if (sv_test_system(PYTHON " -c 'import h5py' >/dev/null 2>&1") != 0) {
        print_message("      %s lacks h5py (Debian python3-h5py); skipped\n", PYTHON);
        skip();
    }
    char dir[256], cmd[2048], stop[256], h5[256];
    snprintf(dir, sizeof dir, "%s/reader", g_tmp);
    snprintf(cmd, sizeof cmd, "cp -a %s %s", g_run, dir);
    assert_int_equal(sv_test_system(cmd), 0);
    snprintf(stop, sizeof stop, "%s/stop-reader", g_tmp);
    snprintf(h5, sizeof h5, "%s/metrics.h5", dir);

    /* The reader prints its row count once open, holds the file until the
     * stop file appears (60 s at most), then prints the count it still sees. */
    snprintf(cmd, sizeof cmd,
             "timeout -k 5 90 " PYTHON " -c '"
             "import h5py, os, sys, time\n"
             "f = h5py.File(sys.argv[1], \"r\")\n"
             "print(\"open\", len(f[\"/steps/step\"]), flush=True)\n"
             "t = time.time()\n"
             "while not os.path.exists(sys.argv[2]) and time.time() - t < 60: time.sleep(0.05)\n"
             "print(\"still\", len(f[\"/steps/step\"][:]), len(f[\"/epochs/epoch\"][:]), flush=True)\n"
             "' %s %s 2>&1",
             h5, stop);
    FILE *reader = popen(cmd, "r");
    assert_non_null(reader);
    char first[256] = "";
    if (!fgets(first, sizeof first, reader)) fail_msg("the h5py reader printed nothing");
    if (strncmp(first, "open 16", 7) != 0) fail_msg("the h5py reader says: %s", first);

    char args[1024];
    snprintf(args, sizeof args, "train --resume %s/epoch_0001.h5 --out %s", dir, dir);
    sv_test_result r = run_cmd("", args);
    sv_test_write_text(stop, "");
    int status;
    char *rest = sv_test_read_all(reader, &status);
    if (r.status != 0) fail_msg("the resume: exit status %d:\n%s", r.status, sv_test_tail(r.out, 3000));
    assert_contains(r.out, "is locked");
    assert_contains(r.out, "The resume goes on: a new metrics.h5 rebuilt from the CSV files (8 step and 1 epoch rows)");
    if (strstr(r.out, "damaged")) fail_msg("the resume calls a file damaged:\n%s", sv_test_tail(r.out, 3000));
    /* The reader's file was replaced, not rewritten under it. */
    assert_int_equal(status, 0);
    assert_contains(rest, "still 16 2");
    free(rest);
    sv_test_result_free(&r);
    expect_complete_metrics(dir);
}

/* Compiles the library and trains the reference run where locks work. */
static int setup(void **state) {
    (void)state;
    snprintf(g_shim, sizeof g_shim, "%s/nolock.so", g_tmp);
    snprintf(g_nolock, sizeof g_nolock, "%s/nolock", g_tmp);
    snprintf(g_run, sizeof g_run, "%s/ref", g_tmp);
    char src[256], cmd[1024];
    snprintf(src, sizeof src, "%s/nolock.c", g_tmp);
    FILE *f = fopen(src, "w");
    if (!f || fputs(shim_src, f) < 0 || fclose(f) != 0) return fprintf(stderr, "test_file_locks: cannot write %s\n", src), -1;
    snprintf(cmd, sizeof cmd, "cc -shared -fPIC -O1 -o %s %s -ldl", g_shim, src);
    if (sv_test_system(cmd) != 0) return fprintf(stderr, "test_file_locks: cannot compile %s\n", src), -1;
    if (mkdir(g_nolock, 0777) != 0) return perror(g_nolock), -1;
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 120 %s train -c " TINY " --out %s >%s/ref.log 2>&1",
             g_bin, g_run, g_tmp);
    if (sv_test_system(cmd) != 0) return fprintf(stderr, "test_file_locks: %s failed (see %s/ref.log)\n", cmd, g_tmp), -1;
    return 0;
}

int main(void) {
    if (sv_test_bin_and_tmp(g_bin, sizeof g_bin, g_tmp, sizeof g_tmp, "sv_locks") != 0) return 1;
    if (sv_test_check_cifar(SV_TEST_CIFAR) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_checkpoint_without_locks),
        cmocka_unit_test(test_train_and_resume_without_locks),
        cmocka_unit_test(test_resume_while_h5py_reads_metrics),
    };
    int failed = cmocka_run_group_tests(tests, setup, NULL);
    sv_test_clean_tmp(g_tmp);
    return failed;
}
