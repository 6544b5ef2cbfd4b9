/* Training-loop options of the fast recipe (issue 15), through the real
 * program on configs/tiny.ini and the real data:
 *   - train.val_every = 2: validation only after epochs 2, 4, ... and the
 *     last; the other rows of metrics_epochs.csv hold nan in the val columns,
 *     their summary lines say so, best.h5 comes from a validated epoch;
 *   - early stopping counts validations: with frozen weights (learning rate
 *     1e-12, no weight decay) val top-1 never improves after the first
 *     validation, so patience 1 stops after epoch 4 with val_every = 2 and
 *     after epoch 2 with val_every = 1;
 *   - data.val_size = 0: no validation, no best.h5, the same training and
 *     TEST line as with a validation split; patience > 0 and `eval --split
 *     val` refused;
 *   - train.label_smoothing = 0 given explicitly is bitwise the default run;
 *   - resuming a run that already ended (all epochs done, or early stopped)
 *     trains nothing, says so, reprints the same TEST line and exits 0;
 *   - a reader holding metrics.h5 open costs no rows, and the warning names
 *     its lock (issue 14; a resume while a reader holds it: test_file_locks.c);
 *   - accuracy with ties and non-finite logits (issue 14), through `eval` on
 *     a checkpoint whose classifier was zeroed (all logits equal: top-1 is the
 *     share of class 0 among the test images, counted here from the file;
 *     top-5 is 1) or given a NaN bias (every row wrong).
 * The loss formula itself is checked in test_layers.c (finite differences and
 * hand-computed values). Runs build/shiftvit (or $BUILD/shiftvit) from the
 * repository root; each run's folder is a mkdtemp folder, removed at the end. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "test_util.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define TINY "configs/tiny.ini"

static char g_tmp[64];
static char g_bin[256] = "build/shiftvit";

/* Starts `shiftvit train ARGS --out TMP/NAME` (one process, 120 s limit),
 * stdout and stderr on the returned pipe. */
static FILE *start_train(const char *name, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 120 %s train -c " TINY " %s --out %s/%s 2>&1",
             g_bin, args, g_tmp, name);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    return p;
}

/* Runs training to its end; fails the test unless it exits 0. */
static char *train(const char *name, const char *args) {
    int status;
    char *out = sv_test_read_all(start_train(name, args), &status);
    if (status != 0) fail_msg("train %s --out %s/%s: exit status %d\n%s", args, g_tmp, name, status, out);
    return out;
}

typedef struct {
    int rows;
    double val_top1[64];
} epochs_csv;

/* Reads RUN/metrics_epochs.csv: val_top1 (column 6) of each row, in order. */
static void read_epochs(const char *name, epochs_csv *e) {
    char path[256], line[1024];
    snprintf(path, sizeof path, "%s/%s/metrics_epochs.csv", g_tmp, name);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: %s", path, strerror(errno));
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,seconds\n");
    e->rows = 0;
    while (fgets(line, sizeof line, f) && e->rows < 64) {
        char *fld = line;
        for (int c = 0; c < 5; c++) {
            fld = strchr(fld, ',');
            assert_non_null(fld);
            fld++;
        }
        int epoch = atoi(line);
        assert_int_equal(epoch, e->rows + 1);
        e->val_top1[e->rows++] = strtod(fld, NULL);
    }
    fclose(f);
}

static void test_val_every(void **state) {
    (void)state;
    char *out = train("every2", "--set train.epochs=5 --set train.val_every=2 --set train.patience=0");
    epochs_csv e;
    read_epochs("every2", &e);
    assert_int_equal(e.rows, 5);
    for (int i = 0; i < 5; i++) {
        int validated = (i + 1) % 2 == 0 || i + 1 == 5;
        if (validated != !isnan(e.val_top1[i]))
            fail_msg("epoch %d: val_top1 = %g, expected %s", i + 1, e.val_top1[i],
                     validated ? "a value" : "nan");
        if (validated) assert_true(e.val_top1[i] >= 0 && e.val_top1[i] <= 1);
    }
    assert_int_equal(sv_test_count(out, "val not run (train.val_every)"), 2); /* epochs 1, 3 */
    assert_int_equal(sv_test_count(out, "| val loss "), 3);                  /* 2, 4, 5 */
    assert_non_null(strstr(out, "TEST loss="));
    char path[256];
    snprintf(path, sizeof path, "%s/every2/best.h5", g_tmp);
    assert_int_equal(access(path, R_OK), 0);
    free(out);
}

static void test_line(const char *out, char *line, size_t n);

/* data.val_size = 0 (the final run on the whole training set): no epoch
 * validates, no best.h5, the training and the TEST line are those of the
 * same run with a validation split (validation does not touch the weights or
 * the random draws); patience > 0 and `eval --split val` are refused with the
 * keys named; resuming the ended run says there was no validation. */
static void test_no_validation_split(void **state) {
    (void)state;
    char with[256], without[256], path[256], cmd[512];
    char *out = train("withval", "--set train.epochs=2 --set train.patience=0");
    test_line(out, with, sizeof with);
    free(out);
    out = train("noval", "--set train.epochs=2 --set train.patience=0 --set data.val_size=0");
    test_line(out, without, sizeof without);
    assert_string_equal(without, with);
    assert_int_equal(sv_test_count(out, "val not run (data.val_size = 0)"), 2);
    assert_int_equal(sv_test_count(out, "| val loss "), 0);
    free(out);
    epochs_csv e;
    read_epochs("noval", &e);
    assert_int_equal(e.rows, 2);
    assert_true(isnan(e.val_top1[0]) && isnan(e.val_top1[1]));
    snprintf(path, sizeof path, "%s/noval/best.h5", g_tmp);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/noval/last.h5", g_tmp);
    assert_int_equal(access(path, R_OK), 0);

    snprintf(cmd, sizeof cmd, "--set train.epochs=2 --set train.patience=0 --set data.val_size=0 --resume %s", path);
    out = train("noval", cmd);
    assert_non_null(strstr(out, "Nothing more to train"));
    assert_non_null(strstr(out, "all train.epochs done; no validation)"));
    free(out);

    int st;
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 60 %s eval --checkpoint %s --split val 2>&1", g_bin, path);
    out = sv_test_capture(cmd, &st);
    assert_int_not_equal(st, 0);
    assert_non_null(strstr(out, "--split val: the checkpoint's run had no validation split ([data] val_size = 0 in"));
    free(out);

    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 60 %s train -c " TINY " --set data.val_size=0 --out %s/refused 2>&1",
             g_bin, g_tmp);
    out = sv_test_capture(cmd, &st);
    assert_int_not_equal(st, 0);
    assert_non_null(strstr(out, "[data] val_size = 0 leaves no validation split for early stopping ([train] patience = 5): "
                                "set [train] patience = 0"));
    free(out);
}

/* Frozen weights: every validation gives the same top-1, never "better". */
#define FROZEN "--set optim.lr_start=0 --set optim.lr_max=1e-12 --set optim.weight_decay=0 " \
               "--set train.epochs=10 --set train.patience=1"

static void test_patience_counts_validations(void **state) {
    (void)state;
    char *out = train("frozen2", FROZEN " --set train.val_every=2");
    epochs_csv e;
    read_epochs("frozen2", &e);
    assert_int_equal(e.rows, 4);
    assert_true(!isnan(e.val_top1[1]) && !isnan(e.val_top1[3]));
    assert_true(e.val_top1[1] == e.val_top1[3]);
    assert_non_null(strstr(out, "Early stopping: val top-1 has not improved for 1 validations (best"));
    assert_non_null(strstr(out, "at epoch 2)"));
    free(out);

    out = train("frozen1", FROZEN);
    read_epochs("frozen1", &e);
    assert_int_equal(e.rows, 2);
    assert_non_null(strstr(out, "Early stopping: val top-1 has not improved for 1 epochs (best"));
    free(out);
}

static char *slurp(const char *name, const char *file) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/%s", g_tmp, name, file);
    return sv_test_slurp(path, NULL);
}

/* Same losses, to the last printed digit, with smoothing 0 and by default;
 * different ones with smoothing 0.1 (the objective changed). */
static void test_label_smoothing_zero_is_default(void **state) {
    (void)state;
    const char *common = "--set train.epochs=1 --set train.max_steps=4";
    char args[512];
    free(train("ls_default", common));
    snprintf(args, sizeof args, "%s --set train.label_smoothing=0", common);
    free(train("ls_zero", args));
    snprintf(args, sizeof args, "%s --set train.label_smoothing=0.1", common);
    free(train("ls_01", args));
    char *a = slurp("ls_default", "metrics_steps.csv"), *b = slurp("ls_zero", "metrics_steps.csv"),
         *c = slurp("ls_01", "metrics_steps.csv");
    /* Column images_per_s differs run to run: compare up to the loss column. */
    char *la = a, *lb = b, *lc = c;
    int rows = 0, differ = 0;
    for (;;) {
        char *ea = strchr(la, '\n'), *eb = strchr(lb, '\n'), *ec = strchr(lc, '\n');
        if (!ea || !eb || !ec) break;
        if (rows > 0) {
            /* step,epoch,lr,loss,... : the loss is the 4th field */
            char fa[128], fb[128], fc[128];
            sscanf(la, "%*[^,],%*[^,],%*[^,],%127[^,]", fa);
            sscanf(lb, "%*[^,],%*[^,],%*[^,],%127[^,]", fb);
            sscanf(lc, "%*[^,],%*[^,],%*[^,],%127[^,]", fc);
            assert_string_equal(fa, fb);
            differ += strcmp(fa, fc) != 0;
        }
        la = ea + 1; lb = eb + 1; lc = ec + 1;
        rows++;
    }
    assert_int_equal(rows, 5); /* header + 4 steps */
    assert_int_equal(differ, 4);
    free(a); free(b); free(c);
}

static void test_line(const char *out, char *line, size_t n) {
    const char *t = strstr(out, "TEST loss=");
    if (!t) fail_msg("no TEST line in:\n%s", out);
    snprintf(line, n, "%.*s", (int)strcspn(t, "\n"), t);
}

static void resume_ended(const char *name, const char *args) {
    char first[256], again[256], resume[512];
    char *out = train(name, args);
    test_line(out, first, sizeof first);
    free(out);
    epochs_csv before, after;
    read_epochs(name, &before);
    snprintf(resume, sizeof resume, "%s --resume %s/%s/last.h5", args, g_tmp, name);
    out = train(name, resume);
    assert_non_null(strstr(out, "Nothing more to train"));
    if (strstr(out, "Epoch ")) fail_msg("the resumed run trained again:\n%s", out);
    test_line(out, again, sizeof again);
    assert_string_equal(again, first);
    read_epochs(name, &after);
    assert_int_equal(after.rows, before.rows);
    free(out);
}

/* A run of 1 epoch extended to 2 (--resume-with-changes), then resumed from
 * its epoch-1 checkpoint, which ended: nothing is trained, so the folder's
 * epoch-2 files and rows stay (the rewind used to remove them first). */
static void resume_ended_earlier_checkpoint(void) {
    free(train("extended", "--set train.epochs=1"));
    char args[512], path[512];
    snprintf(args, sizeof args, "--resume %s/extended/last.h5 --resume-with-changes --set train.epochs=2", g_tmp);
    free(train("extended", args));
    epochs_csv before, after;
    read_epochs("extended", &before);
    assert_int_equal(before.rows, 2);
    snprintf(args, sizeof args, "--resume %s/extended/epoch_0001.h5 --set train.epochs=1", g_tmp);
    char *out = train("extended", args);
    assert_non_null(strstr(out, "Nothing more to train"));
    if (strstr(out, "Rewound")) fail_msg("a run with nothing to train rewound the folder:\n%s", out);
    free(out);
    read_epochs("extended", &after);
    assert_int_equal(after.rows, 2);
    snprintf(path, sizeof path, "%s/extended/epoch_0002.h5", g_tmp);
    if (access(path, F_OK) != 0) fail_msg("%s was removed", path);
}

static void test_resume_ended_run(void **state) {
    (void)state;
    resume_ended("done", "--set train.epochs=2");
    resume_ended("stopped", FROZEN);
    resume_ended_earlier_checkpoint();
}

/* Sets every element of dataset `name` in checkpoint `path` to `value`. */
static void fill_dataset(const char *path, const char *name, float value) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: no dataset %s", path, name);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    assert_true(n > 0);
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (hssize_t i = 0; i < n; i++) v[i] = value;
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    free(v);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
}

/* `eval --split test` of a checkpoint: its TEST line's top1 and top5 as
 * printed (4 decimals) and the loss text. */
static void eval_test(const char *ckpt, char *loss, double *top1, double *top5) {
    char cmd[1024], line[512];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 60 %s eval --checkpoint %s --split test 2>&1", g_bin, ckpt);
    int st;
    char *out = sv_test_capture(cmd, &st);
    int found = sv_test_line_starting(out, "TEST loss=", line, sizeof line) &&
                sscanf(line, "TEST loss=%31s top1=%lf top5=%lf", loss, top1, top5) == 3;
    free(out);
    if (!found || st != 0) fail_msg("%s: no TEST line or exit status %d", cmd, st);
}

static void test_accuracy_ties_and_nan(void **state) {
    (void)state;
    free(train("ties", "--set train.epochs=1 --set train.max_steps=2"));
    /* Share of class 0 among the first 128 test records (configs/tiny.ini
     * test_size), read from the file itself. */
    FILE *f = fopen(SV_TEST_CIFAR "/test_batch.bin", "rb");
    assert_non_null(f);
    int zeros = 0;
    for (int i = 0; i < 128; i++) {
        assert_int_equal(fseek(f, (long)i * 3073, SEEK_SET), 0);
        zeros += fgetc(f) == 0;
    }
    fclose(f);
    char ckpt[256], loss[32];
    double top1, top5;
    snprintf(ckpt, sizeof ckpt, "%s/ties/last.h5", g_tmp);
    fill_dataset(ckpt, "/model/classifier/kernel", 0.f);
    fill_dataset(ckpt, "/model/classifier/bias", 0.f);
    eval_test(ckpt, loss, &top1, &top5);
    print_message("      zero classifier: %d of 128 test images are class 0; top1=%.4f top5=%.4f loss=%s\n", zeros,
                  top1, top5, loss);
    assert_close(top1, zeros / 128.0, 0, 5.1e-5);
    assert_close(top5, 1.0, 0, 0);
    assert_close(strtod(loss, NULL), log(10.0), 0, 1e-4); /* uniform softmax */
    fill_dataset(ckpt, "/model/classifier/bias", NAN);
    eval_test(ckpt, loss, &top1, &top5);
    if (!strstr(loss, "nan")) fail_msg("loss=%s, expected nan", loss);
    assert_close(top1, 0.0, 0, 0);
    assert_close(top5, 0.0, 0, 0);
    /* eval and predict say which tensor is not finite */
    const char *cmds[2] = {"eval --checkpoint %s --split test", "predict --checkpoint %s " SV_TEST_SHARED "/data/inference_set"};
    for (int i = 0; i < 2; i++) {
        char cmd[1024], what[256];
        snprintf(what, sizeof what, cmds[i], ckpt);
        snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 timeout -k 5 60 %s %s 2>&1", g_bin, what);
        int st;
        char *out = sv_test_capture(cmd, &st);
        if (!strstr(out, "warning: checkpoint") || !strstr(out, "tensor /model/classifier/bias holds a non-finite value"))
            fail_msg("%s: no warning naming /model/classifier/bias:\n%s", cmd, out);
        free(out);
    }
}

static hssize_t h5_rows(const char *path, const char *dataset) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s", path);
    hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return n;
}

/* Opens path read-only as an HDF5 reader does (shared file lock), retrying
 * for up to 10 s while the writer holds its exclusive lock for a flush. */
static hid_t open_reader(const char *path) {
    H5E_auto2_t func;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = -1;
    for (int i = 0; i < 1000 && f < 0; i++) {
        f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) sv_test_sleep(0.01);
    }
    H5Eset_auto2(H5E_DEFAULT, func, data);
    if (f < 0) fail_msg("cannot open %s for reading within 10 s", path);
    return f;
}

/* Issue 14, case 1: a reader holds metrics.h5 open (HDF5's shared file lock)
 * for 3 s after the first epoch row appears. Every row still reaches both
 * formats (8 epochs x 128 steps) and the warning names the lock. */
static void test_reader_does_not_cost_rows(void **state) {
    (void)state;
    const char *args = "--set data.train_size=4096 --set train.epochs=8 --set train.patience=0 "
                       "--set train.log_every=1000";
    FILE *p = start_train("locked", args);
    char csv[256], h5[256];
    snprintf(csv, sizeof csv, "%s/locked/metrics_epochs.csv", g_tmp);
    snprintf(h5, sizeof h5, "%s/locked/metrics.h5", g_tmp);
    int lines = 0; /* header + complete rows written so far */
    for (int i = 0; i < 2400 && lines < 2; i++) {
        sv_test_sleep(0.025);
        FILE *c = fopen(csv, "r");
        if (!c) continue;
        int ch;
        for (lines = 0; (ch = fgetc(c)) != EOF;) lines += ch == '\n';
        fclose(c);
    }
    assert_true(lines >= 2);
    epochs_csv e;
    hid_t reader = open_reader(h5);
    sv_test_sleep(3);
    H5Fclose(reader);
    int status;
    char *out = sv_test_read_all(p, &status);
    if (status != 0) fail_msg("exit status %d:\n%s", status, out);
    read_epochs("locked", &e);
    assert_int_equal(e.rows, 8);
    assert_int_equal(h5_rows(h5, "/epochs/epoch"), 8);
    assert_int_equal(h5_rows(h5, "/steps/step"), 1024);
    assert_int_equal(h5_rows(h5, "/steps/loss"), 1024);
    if (!strstr(out, "it is locked") || !strstr(out, "writable again"))
        fail_msg("no message naming the lock and its release:\n%s", out);
    free(out);
}

int main(void) {
    if (sv_test_bin_and_tmp(g_bin, sizeof g_bin, g_tmp, sizeof g_tmp, "sv_trainopt") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_val_every),
        cmocka_unit_test(test_patience_counts_validations),
        cmocka_unit_test(test_no_validation_split),
        cmocka_unit_test(test_label_smoothing_zero_is_default),
        cmocka_unit_test(test_accuracy_ties_and_nan),
        cmocka_unit_test(test_resume_ended_run),
        cmocka_unit_test(test_reader_does_not_cost_rows),
    };
    SV_TEST_RUN_AND_CLEAN(tests, g_tmp);
}
