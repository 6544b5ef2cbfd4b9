/* Run folders and resume (issue 14, sections 3-5), through the real program
 * on configs/tiny.ini and the real data (8 steps per epoch):
 *   - resuming with a key that changes the trajectory (batch size, seed) is
 *     refused, naming the key and both values, and leaves the run's files
 *     byte for byte as they were; keys that do not (log interval, checkpoint
 *     cadence) are accepted;
 *   - --resume-with-changes continues, says what changed at which step, and
 *     the checkpoints agree with it: /state seed = /config seed = the new one,
 *     /config_changes names the change, and it stays in later checkpoints;
 *   - resuming A/epoch_0001.h5 into another folder B brings A's best weights
 *     so far (epoch 1, as /state says) and A's metrics rows up to epoch 1;
 *   - a new run refuses a folder holding another run (naming the folder and
 *     that run's seed and epochs) and leaves it untouched; --overwrite
 *     removes the old run's files (not the user's own) before starting;
 *   - two runs started at once into one folder: the second is refused (the
 *     folder's lock), the first goes on;
 *   - resuming epoch_0001.h5 in its own folder rewinds: later epoch
 *     checkpoints removed, best.h5 and last.h5 from the abandoned epochs
 *     replaced;
 *   - a checkpoint with an infinite weight is refused for training, naming the
 *     tensor and the element;
 *   - a run folder whose name holds a space, quotes, $, a backquote, a
 *     newline and a byte that is not UTF-8: the raw name never appears in the
 *     output, the printed resume command pasted into bash resumes the run,
 *     and `predict --json` on a photo with such a name parses in Python's
 *     strict json module and gives the exact bytes back in file_hex; an
 *     error message naming such a file is one line, odd bytes as \xHH.
 * Each test works in its own mkdtemp folder, removed at the end. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "test_util.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define TINY "configs/tiny.ini"

static char g_tmp[64];
static char g_bin[256] = "build/shiftvit";

/* Runs `shiftvit ARGS` (formatted; one process, one thread, 120 s limit) and
 * returns its output, stdout and stderr together; *status gets the exit status. */
static char *shiftvit(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *shiftvit(int *status, const char *fmt, ...) {
    char args[2048], cmd[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 120 %s %s 2>&1", g_bin, args);
    return sv_test_capture(cmd, status);
}

/* shiftvit that must exit 0. */
static char *shiftvit_ok(const char *what, const char *args) {
    int status;
    char *out = shiftvit(&status, "%s", args);
    if (status != 0) fail_msg("%s: `shiftvit %s` exited %d:\n%s", what, args, status, out);
    return out;
}

/* /state attribute `name` of a checkpoint, as a 64-bit integer. */
static long long state_attr(const char *ckpt, const char *name) {
    hid_t f = H5Fopen(ckpt, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t a = H5Aopen_by_name(f, "/state", name, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    long long v = 0;
    assert_true(H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    return v;
}

/* A variable-length string dataset of a checkpoint (caller frees), or NULL. */
static char *h5_string(const char *ckpt, const char *name) {
    hid_t f = H5Fopen(ckpt, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    char *copy = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) {
        hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        char *s = NULL;
        assert_true(H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s) >= 0);
        copy = strdup(s);
        H5free_memory(s);
        H5Tclose(t);
        H5Dclose(ds);
    }
    H5Fclose(f);
    return copy;
}

static void test_trajectory_change_refused(void **state) {
    (void)state;
    char a[128], ckpt[160], steps[160];
    snprintf(a, sizeof a, "%s/a", g_tmp);
    snprintf(ckpt, sizeof ckpt, "%s/last.h5", a);
    snprintf(steps, sizeof steps, "%s/metrics_steps.csv", a);
    char args[1024];
    snprintf(args, sizeof args, "train -c " TINY " --set train.max_steps=3 --out %s", a);
    free(shiftvit_ok("first part", args));
    size_t n0, s0;
    char *ck0 = sv_test_slurp(ckpt, &n0), *st0 = sv_test_slurp(steps, &s0);

    int status;
    char *out = shiftvit(&status, "train -c " TINY " --resume %s --out %s --set train.batch_size=64", ckpt, a);
    assert_int_equal(status, 1);
    assert_contains(out, "train.batch_size is 32 in the run of");
    assert_contains(out, "but 64 here");
    assert_contains(out, "--resume-with-changes");
    free(out);
    out = shiftvit(&status, "train --resume %s --out %s --set train.seed=7", ckpt, a);
    assert_int_equal(status, 1);
    assert_contains(out, "train.seed is 42 in the run of");
    assert_contains(out, "but 7 here");
    free(out);

    size_t n1, s1;
    char *ck1 = sv_test_slurp(ckpt, &n1), *st1 = sv_test_slurp(steps, &s1);
    assert_true(n0 == n1 && memcmp(ck0, ck1, n0) == 0);
    assert_true(s0 == s1 && memcmp(st0, st1, s0) == 0);
    free(ck0); free(ck1); free(st0); free(st1);

    /* Keys that do not change the trajectory are accepted without a word. */
    snprintf(args, sizeof args, "train --resume %s --out %s --set train.log_every=2 --set output.keep_last=1", ckpt, a);
    out = shiftvit_ok("resume with log_every and keep_last", args);
    if (strstr(out, "changed keys")) fail_msg("harmless keys reported as changes:\n%s", out);
    assert_contains(out, "TEST loss=");
    free(out);
}

static void test_resume_with_changes_recorded(void **state) {
    (void)state;
    char b[128], ckpt[160], args[1024];
    snprintf(b, sizeof b, "%s/b", g_tmp);
    snprintf(ckpt, sizeof ckpt, "%s/last.h5", b);
    snprintf(args, sizeof args, "train -c " TINY " --set train.max_steps=3 --out %s", b);
    free(shiftvit_ok("first part", args));
    assert_int_equal(state_attr(ckpt, "seed"), 42);

    snprintf(args, sizeof args, "train --resume %s --out %s --resume-with-changes --set train.seed=7 --set train.max_steps=5",
             ckpt, b);
    char *out = shiftvit_ok("resume with a new seed", args);
    assert_contains(out, "Continuing with changed keys from step 3:\n  train.seed 42 -> 7\n");
    free(out);
    assert_int_equal(state_attr(ckpt, "step"), 5);
    assert_int_equal(state_attr(ckpt, "seed"), 7);
    char *cfg = h5_string(ckpt, "/config"), *changes = h5_string(ckpt, "/config_changes");
    assert_non_null(cfg);
    assert_contains(cfg, "\nseed = 7\n");
    assert_non_null(changes);
    assert_string_equal(changes, "step 3: train.seed 42 -> 7\n");
    free(cfg);
    free(changes);

    /* A later plain resume keeps the new seed and the record. */
    snprintf(args, sizeof args, "train --resume %s --out %s --set train.max_steps=6", ckpt, b);
    out = shiftvit_ok("plain resume after the change", args);
    if (strstr(out, "changed keys")) fail_msg("the plain resume reports changes:\n%s", out);
    free(out);
    assert_int_equal(state_attr(ckpt, "step"), 6);
    changes = h5_string(ckpt, "/config_changes");
    assert_non_null(changes);
    assert_string_equal(changes, "step 3: train.seed 42 -> 7\n");
    free(changes);

    int status;
    out = shiftvit(&status, "train -c " TINY " --resume-with-changes --out %s/nowhere", g_tmp);
    assert_int_equal(status, 1);
    assert_contains(out, "--resume-with-changes needs --resume");
    free(out);
}

/* Line `n` (0 = header) of a text file, without its newline. */
static void nth_line(const char *path, int n, char *line, size_t size) {
    char *s = sv_test_slurp(path, NULL), *p = s;
    for (int i = 0; i < n && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (!p || !*p) fail_msg("%s has no line %d", path, n);
    snprintf(line, size, "%.*s", (int)strcspn(p, "\n"), p);
    free(s);
}

static void test_resume_into_other_folder(void **state) {
    (void)state;
    char a[128], bdir[128], args[1024], p[256], q[256];
    snprintf(a, sizeof a, "%s/frozen", g_tmp);
    snprintf(bdir, sizeof bdir, "%s/elsewhere", g_tmp);
    /* Frozen weights: val top-1 is best at epoch 1 and never better after. */
    snprintf(args, sizeof args,
             "train -c " TINY " --set optim.lr_start=0 --set optim.lr_max=1e-12 --set optim.weight_decay=0 "
             "--set train.epochs=3 --set train.patience=0 --out %s", a);
    free(shiftvit_ok("frozen run", args));
    snprintf(p, sizeof p, "%s/best.h5", a);
    assert_int_equal(state_attr(p, "epoch"), 1);

    snprintf(args, sizeof args, "train --resume %s/epoch_0001.h5 --out %s", a, bdir);
    char *out = shiftvit_ok("resume into another folder", args);
    assert_contains(out, "Continuing the run of");
    assert_contains(out, "best.h5 (epoch 1");
    free(out);
    snprintf(p, sizeof p, "%s/best.h5", bdir);
    if (!sv_test_exists(p)) fail_msg("%s is missing", p);
    assert_int_equal(state_attr(p, "epoch"), 1);
    snprintf(p, sizeof p, "%s/metrics_epochs.csv", bdir);
    assert_int_equal(sv_test_file_lines(p), 4); /* header + epochs 1-3 */
    char la[512], lb[512];
    nth_line(p, 1, lb, sizeof lb);
    snprintf(q, sizeof q, "%s/metrics_epochs.csv", a);
    nth_line(q, 1, la, sizeof la);
    assert_string_equal(lb, la);
    snprintf(p, sizeof p, "%s/metrics_steps.csv", bdir);
    assert_int_equal(sv_test_file_lines(p), 1 + 24);
    snprintf(p, sizeof p, "%s/metrics.h5", bdir);
    assert_true(sv_test_exists(p));
}

static void test_folder_holds_another_run(void **state) {
    (void)state;
    char c[128], args[1024], p[256];
    snprintf(c, sizeof c, "%s/c", g_tmp);
    snprintf(args, sizeof args, "train -c " TINY " --set train.epochs=3 --out %s", c);
    free(shiftvit_ok("first run", args));
    snprintf(p, sizeof p, "%s/notes.txt", c);
    sv_test_write_file(p, "mine\n", 5);
    snprintf(p, sizeof p, "%s/metrics_epochs.csv", c);
    size_t n0, n1;
    char *m0 = sv_test_slurp(p, &n0);

    int status;
    char *out = shiftvit(&status, "train -c " TINY " --set train.seed=7 --set train.epochs=1 --out %s", c);
    assert_int_equal(status, 1);
    assert_contains(out, "holds another run");
    assert_contains(out, "seed 42, 3 of 3 epochs done");
    assert_contains(out, "--overwrite");
    free(out);
    char *m1 = sv_test_slurp(p, &n1);
    assert_true(n0 == n1 && memcmp(m0, m1, n0) == 0);
    free(m0);
    free(m1);

    snprintf(args, sizeof args, "train -c " TINY " --set train.seed=7 --set train.epochs=1 --out %s --overwrite", c);
    out = shiftvit_ok("--overwrite", args);
    assert_contains(out, "--overwrite: removed the files of the earlier run");
    free(out);
    assert_int_equal(sv_test_file_lines(p), 2);
    snprintf(p, sizeof p, "%s/epoch_0003.h5", c);
    assert_false(sv_test_exists(p));
    snprintf(p, sizeof p, "%s/last.h5", c);
    assert_int_equal(state_attr(p, "seed"), 7);
    snprintf(p, sizeof p, "%s/notes.txt", c);
    assert_true(sv_test_exists(p));
}

/* Two runs started at once into one folder: the second is refused while the
 * first holds the folder's lock. */
static void test_concurrent_run_refused(void **state) {
    (void)state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/busy", g_tmp);
    setenv("SV_BUSY", dir, 1);
    setenv("SV_BIN", g_bin, 1);
    int status;
    char *out = sv_test_capture(
        "export OMP_NUM_THREADS=1; \"$SV_BIN\" train -c " TINY " --set train.epochs=3000 --set train.patience=0 "
        "--out \"$SV_BUSY\" > \"$SV_BUSY.first\" 2>&1 & p=$!; "
        "for i in $(seq 1200); do [ -e \"$SV_BUSY/last.h5\" ] && break; sleep 0.1; done; "
        "\"$SV_BIN\" train -c " TINY " --set train.seed=9 --out \"$SV_BUSY\" 2>&1; echo \"second exit $?\"; "
        "kill -USR1 $p; wait $p; echo \"first exit $?\"",
        &status);
    assert_contains(out, "is in use by another shiftvit run (process");
    assert_contains(out, "second exit 1");
    assert_contains(out, "first exit 0");
    free(out);
}

/* Resuming an earlier epoch checkpoint in its own folder rewinds the run: no
 * file from the abandoned epochs stays. */
static void test_rewind_in_place(void **state) {
    (void)state;
    char dir[128], args[1024], p[256];
    snprintf(dir, sizeof dir, "%s/rewind", g_tmp);
    snprintf(args, sizeof args, "train -c " TINY " --set train.epochs=3 --set train.patience=0 --out %s", dir);
    free(shiftvit_ok("three epochs", args));
    snprintf(p, sizeof p, "%s/best.h5", dir);
    long long best_step = state_attr(p, "step");
    snprintf(args, sizeof args, "train --resume %s/epoch_0001.h5 --out %s --set train.max_steps=9", dir, dir);
    char *out = shiftvit_ok("resume from epoch 1", args);
    assert_contains(out, "Rewound: removed");
    free(out);
    snprintf(p, sizeof p, "%s/epoch_0002.h5", dir);
    assert_false(sv_test_exists(p));
    snprintf(p, sizeof p, "%s/epoch_0003.h5", dir);
    assert_false(sv_test_exists(p));
    snprintf(p, sizeof p, "%s/last.h5", dir);
    assert_int_equal(state_attr(p, "step"), 9);
    snprintf(p, sizeof p, "%s/best.h5", dir);
    if (best_step > 8) { /* the best was from an abandoned epoch: back to epoch 1's weights */
        assert_true(sv_test_exists(p));
        assert_int_equal(state_attr(p, "step"), 8);
    } else {
        assert_int_equal(state_attr(p, "step"), best_step);
    }
}

/* A checkpoint with a non-finite weight is refused for training, naming the tensor. */
static void test_nonfinite_checkpoint_refused(void **state) {
    (void)state;
    char dir[128], args[1024], src[256], bad[256];
    snprintf(dir, sizeof dir, "%s/finite", g_tmp);
    snprintf(args, sizeof args, "train -c " TINY " --set train.max_steps=3 --out %s", dir);
    free(shiftvit_ok("short run", args));
    snprintf(src, sizeof src, "%s/last.h5", dir);
    snprintf(bad, sizeof bad, "%s/inf.h5", g_tmp);
    sv_test_copy_file(src, bad, -1);
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t ds = H5Dopen2(f, "/model/classifier/bias", H5P_DEFAULT);
    assert_true(ds >= 0);
    float v[10];
    for (int i = 0; i < 10; i++) v[i] = i == 3 ? INFINITY : 0.f;
    assert_true(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(ds);
    H5Fclose(f);
    int status;
    char *out = shiftvit(&status, "train --resume %s --out %s/from_inf", bad, g_tmp);
    assert_int_equal(status, 1);
    assert_contains(out, "/model/classifier/bias holds a non-finite value (inf at element 3)");
    free(out);
}

static void test_odd_names_in_output(void **state) {
    (void)state;
    /* Names travel to the shell in environment variables, never in the command text. */
    char dir[256], imgs[256], img[300];
    snprintf(dir, sizeof dir, "%s/odd 'q' \"d\" $x;`y`\n\xff", g_tmp);
    snprintf(imgs, sizeof imgs, "%s/photos", g_tmp);
    snprintf(img, sizeof img, "%s/a\"b\\c\n\xfe.jpg", imgs);
    setenv("SV_ODD", dir, 1);
    setenv("SV_IMG", img, 1);
    setenv("SV_BIN", g_bin, 1);
    int status;
    /* Stop the run by signal once its first checkpoint exists. */
    char *out = sv_test_capture(
        "export OMP_NUM_THREADS=1; \"$SV_BIN\" train -c " TINY
        " --set train.epochs=200 --out \"$SV_ODD\" 2>&1 & p=$!; "
        "for i in $(seq 1200); do [ -e \"$SV_ODD/last.h5\" ] && break; sleep 0.1; done; "
        "kill -USR1 $p; wait $p",
        &status);
    assert_int_equal(status, 0);
    if (strstr(out, dir)) fail_msg("the raw folder name was printed:\n%s", out);
    const char *r = strstr(out, "Resume with: ");
    if (!r) fail_msg("no resume command in:\n%s", out);
    r += strlen("Resume with: ");
    char cmd[4096], script[8192];
    snprintf(cmd, sizeof cmd, "%.*s", (int)strcspn(r, "\n"), r);
    free(out);
    /* Pasted into bash, with `shiftvit` standing for the binary. */
    snprintf(script, sizeof script,
             "shiftvit() { OMP_NUM_THREADS=1 timeout -k 5 120 \"$SV_BIN\" \"$@\"; }\n%s --set train.max_steps=1 2>&1\n", cmd);
    char path[128];
    snprintf(path, sizeof path, "%s/paste.sh", g_tmp);
    sv_test_write_text(path, script);
    char run[256];
    snprintf(run, sizeof run, "bash %s", path);
    out = sv_test_capture(run, &status);
    if (status != 0 || !strstr(out, "Resumed from"))
        fail_msg("the printed command [%s] did not resume (status %d):\n%s", cmd, status, out);
    if (strstr(out, dir)) fail_msg("the raw folder name was printed:\n%s", out);
    free(out);

    /* predict: a photo with an odd name, JSON checked by Python's strict parser. */
    assert_int_equal(mkdir(imgs, 0775), 0);
    sv_test_copy_file(SV_TEST_SHARED "/data/inference_set/000_cat.jpg", img, -1);
    out = sv_test_capture(
        "OMP_NUM_THREADS=1 \"$SV_BIN\" predict --checkpoint \"$SV_ODD/last.h5\" --json \"$SV_IMG\" | "
        "python3 -c 'import json, os, sys\n"
        "rows = [json.loads(l, strict=True) for l in sys.stdin.buffer.read().decode(\"utf-8\").splitlines()]\n"
        "assert len(rows) == 1, rows\n"
        "assert bytes.fromhex(rows[0][\"file_hex\"]) == os.environb[b\"SV_IMG\"], rows\n"
        "print(\"json ok\")' 2>&1",
        &status);
    if (status != 0 || !strstr(out, "json ok")) fail_msg("predict --json (status %d):\n%s", status, out);
    free(out);
    out = sv_test_capture("OMP_NUM_THREADS=1 \"$SV_BIN\" predict --checkpoint \"$SV_ODD/last.h5\" \"$SV_IMG\" 2>&1", &status);
    assert_int_equal(status, 0);
    if (strstr(out, img)) fail_msg("predict printed the raw file name:\n%s", out);
    assert_contains(out, "$'\\n\\xfe'");
    free(out);
    /* An error naming such a file stays one line, its odd bytes as \xHH. */
    out = sv_test_capture("OMP_NUM_THREADS=1 \"$SV_BIN\" eval --checkpoint \"$SV_ODD/missing.h5\" 2>&1", &status);
    assert_int_not_equal(status, 0);
    if (strchr(out, '\n') != out + strlen(out) - 1) fail_msg("the error is not one line:\n%s", out);
    assert_contains(out, "\\x0a\\xff/missing.h5");
    free(out);
}

int main(void) {
    if (sv_test_bin_and_tmp(g_bin, sizeof g_bin, g_tmp, sizeof g_tmp, "sv_runfolder") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trajectory_change_refused),
        cmocka_unit_test(test_resume_with_changes_recorded),
        cmocka_unit_test(test_resume_into_other_folder),
        cmocka_unit_test(test_folder_holds_another_run),
        cmocka_unit_test(test_odd_names_in_output),
        cmocka_unit_test(test_concurrent_run_refused),
        cmocka_unit_test(test_rewind_in_place),
        cmocka_unit_test(test_nonfinite_checkpoint_refused),
    };
    SV_TEST_RUN_AND_CLEAN(tests, g_tmp);
}
