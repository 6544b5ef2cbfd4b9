/* The moving average of the weights (train.ema_decay, issue 22) through the
 * real program (build/shiftvit, or $BUILD/shiftvit) on the tiny config and
 * real CIFAR-10:
 *   1. a run with train.ema_decay = 0.9 says so, validates the average
 *      ("val (ema)"), writes /ema beside /model, and its TEST line (the
 *      average swapped into the training model) is what `eval` gives with
 *      the average loaded from the file (the default and --weights ema);
 *      --weights raw gives another line;
 *   2. an independent path: a copy of the checkpoint whose /model tensors
 *      are overwritten with the /ema tensors and whose /ema is deleted (HDF5
 *      calls here, not the program's reader) evaluates and predicts exactly
 *      as the original with --weights ema; asking that copy for --weights
 *      ema is a one-line error naming the file; `info` tells which of the
 *      two has EMA weights;
 *   3. the trainer's update index: from the checkpoint after update 1 to the
 *      one after update 2 (a resume), /ema moves as
 *      ema2 = ema1 - (1 - d2) (ema1 - w2) with d2 = min(0.9, 3 / 12) = 0.25,
 *      computed here in double from the files.
 * Every run has OMP_NUM_THREADS = 1 and a time limit. Outputs go to a
 * mkdtemp folder, removed at the end (kept with SV_TEST_KEEP=1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "shiftvit/config.h"
#include "shiftvit/model.h"
#include "shiftvit/settings.h"
#include "test_util.h"

#define TINY "configs/tiny.ini"
#define LIMIT "timeout -k 5 120 "

static char g_bin[256], g_tmp[64];

/* `shiftvit ARGS` (one rank); must exit 0. */
static sv_test_result run_ok(const char *args, const char *what) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, LIMIT "%s %s 2>&1", g_bin, args);
    return sv_test_run_ok(cmd, what);
}

/* The TEST line of `eval --checkpoint CKPT EXTRA`; *ema_line says whether
 * eval reported the EMA weights. */
static void eval_line(const char *ckpt, const char *extra, char *line, size_t n, int *ema_line) {
    char args[1024];
    snprintf(args, sizeof args, "eval --checkpoint %s --split test %s", ckpt, extra);
    sv_test_result r = run_ok(args, "eval");
    if (!sv_test_line_starting(r.out, "TEST loss=", line, n)) fail_msg("no TEST line:\n%s", sv_test_tail(r.out, 2000));
    *ema_line = strstr(r.out, "Weights evaluated: ema") != NULL;
    sv_test_result_free(&r);
}

/* Reads the float32 dataset `name` of f into a new buffer (*n elements). */
static float *read_floats(hid_t f, const char *name, size_t *n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) fail_msg("no dataset %s", name);
    hid_t sp = H5Dget_space(d);
    *n = (size_t)H5Sget_simple_extent_npoints(sp);
    float *buf = malloc(*n * sizeof(float) + 1);
    assert_non_null(buf);
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) fail_msg("cannot read %s", name);
    H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

typedef struct {
    int n;
    char names[64][256];
} name_list;

/* The tensor names of the tiny model, from the model's own table (the
 * layout of /model and /ema). */
static void tensor_names(name_list *l) {
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    if (sv_config_load(&c, TINY, err) != 0) fail_msg("%s", err);
    sv_model m;
    if (sv_model_create_inference(&m, sv_model_settings_from(&c), 1, err) != 0) fail_msg("%s", err);
    assert_true(m.num_tensors <= 64);
    l->n = m.num_tensors;
    for (int t = 0; t < m.num_tensors; t++) snprintf(l->names[t], sizeof l->names[t], "%s", m.tensors[t].name);
    sv_model_free(&m);
}

/* copy = src with every /model/<t> overwritten by /ema/<t>, and /ema removed. */
static void make_swapped_copy(const char *src, const char *copy) {
    sv_test_copy_file(src, copy, -1);
    hid_t f = H5Fopen(copy, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s", copy);
    static name_list l;
    tensor_names(&l);
    for (int i = 0; i < l.n; i++) {
        char e[300], m[300];
        snprintf(e, sizeof e, "/ema/%s", l.names[i]);
        snprintf(m, sizeof m, "/model/%s", l.names[i]);
        size_t ne, nm;
        float *a = read_floats(f, e, &ne), *b = read_floats(f, m, &nm);
        assert_int_equal(ne, nm);
        free(b);
        hid_t d = H5Dopen2(f, m, H5P_DEFAULT);
        assert_true(d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) >= 0);
        H5Dclose(d);
        free(a);
    }
    assert_true(H5Ldelete(f, "/ema", H5P_DEFAULT) >= 0);
    H5Fclose(f);
}

/* 1 and 2. */
static void test_ema_eval_paths(void **state) {
    (void)state;
    char args[1024], dir[256], ckpt[512], swapped[512], train_test[160];
    snprintf(dir, sizeof dir, "%s/run", g_tmp);
    snprintf(args, sizeof args,
             "train -c " TINY " --out %s --set train.ema_decay=0.9 --set data.flip=alternate --set train.max_steps=8",
             dir);
    sv_test_result r = run_ok(args, "training with train.ema_decay = 0.9");
    assert_contains(r.out, "EMA of the weights: decay 0.9");
    assert_contains(r.out, "| val (ema) loss ");
    assert_contains(r.out, "Weights evaluated: ema (train.ema_decay = 0.9)");
    if (!sv_test_line_starting(r.out, "TEST loss=", train_test, sizeof train_test)) fail_msg("no TEST line");
    sv_test_result_free(&r);
    snprintf(ckpt, sizeof ckpt, "%s/last.h5", dir);

    char dflt[160], ema[160], raw[160], sw[160];
    int e_dflt, e_ema, e_raw, e_sw;
    eval_line(ckpt, "", dflt, sizeof dflt, &e_dflt);
    eval_line(ckpt, "--weights ema", ema, sizeof ema, &e_ema);
    eval_line(ckpt, "--weights raw", raw, sizeof raw, &e_raw);
    assert_true(e_dflt && e_ema && !e_raw);
    assert_string_equal(dflt, ema);
    assert_string_equal(ema, train_test); /* in-place swap in train == loaded from the file */
    if (!strcmp(ema, raw)) fail_msg("--weights raw and ema give the same line: %s", raw);

    snprintf(swapped, sizeof swapped, "%s/swapped.h5", g_tmp);
    make_swapped_copy(ckpt, swapped);
    eval_line(swapped, "", sw, sizeof sw, &e_sw);
    assert_false(e_sw);
    assert_string_equal(sw, ema);
    print_message("    eval --weights ema: %s; the copy with /ema as /model: %s; raw: %s\n", ema, sw, raw);

    /* predict: the same logits, as JSON text */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, LIMIT "%s predict --checkpoint %s --json " SV_TEST_SHARED "/data/inference_set/000_cat.jpg 2>/dev/null",
             g_bin, ckpt);
    sv_test_result p1 = sv_test_run_ok(cmd, "predict of the checkpoint");
    snprintf(cmd, sizeof cmd, LIMIT "%s predict --checkpoint %s --json " SV_TEST_SHARED "/data/inference_set/000_cat.jpg 2>/dev/null",
             g_bin, swapped);
    sv_test_result p2 = sv_test_run_ok(cmd, "predict of the swapped copy");
    assert_contains(p1.out, "\"logits\"");
    assert_string_equal(p1.out, p2.out);
    sv_test_result_free(&p1);
    sv_test_result_free(&p2);

    /* --weights ema of a checkpoint without /ema: exit 1, one line naming it */
    snprintf(cmd, sizeof cmd, LIMIT "%s eval --checkpoint %s --weights ema 2>&1", g_bin, swapped);
    r = sv_test_run(cmd);
    assert_int_equal(r.status, 1);
    assert_contains(r.out, swapped);
    assert_contains(r.out, "has no EMA weights (/ema)");
    sv_test_result_free(&r);
    snprintf(cmd, sizeof cmd, LIMIT "%s predict --checkpoint %s --weights ema " SV_TEST_SHARED "/data/inference_set/000_cat.jpg 2>&1",
             g_bin, swapped);
    r = sv_test_run(cmd);
    assert_int_equal(r.status, 1);
    assert_contains(r.out, "has no EMA weights (/ema)");
    sv_test_result_free(&r);

    snprintf(args, sizeof args, "info %s", ckpt);
    r = run_ok(args, "info");
    assert_contains(r.out, "EMA weights (/ema): yes");
    sv_test_result_free(&r);
    snprintf(args, sizeof args, "info %s", swapped);
    r = run_ok(args, "info");
    assert_contains(r.out, "EMA weights (/ema): no");
    sv_test_result_free(&r);
}

/* 3. */
static void test_ema_update_index(void **state) {
    (void)state;
    char args[1024], dir[256], p1[512], p2[512];
    snprintf(dir, sizeof dir, "%s/steps", g_tmp);
    snprintf(args, sizeof args, "train -c " TINY " --out %s --set train.ema_decay=0.9 --set train.max_steps=1", dir);
    sv_test_result r = run_ok(args, "one update");
    sv_test_result_free(&r);
    snprintf(p1, sizeof p1, "%s/step1.h5", g_tmp);
    snprintf(p2, sizeof p2, "%s/last.h5", dir);
    sv_test_copy_file(p2, p1, -1);
    snprintf(args, sizeof args, "train --resume %s --out %s --set train.max_steps=2", p2, dir);
    r = run_ok(args, "the second update, resumed");
    assert_contains(r.out, "resumed from the checkpoint's /ema");
    sv_test_result_free(&r);
    hid_t f1 = H5Fopen(p1, H5F_ACC_RDONLY, H5P_DEFAULT), f2 = H5Fopen(p2, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f1 >= 0 && f2 >= 0);
    static name_list l;
    tensor_names(&l);
    double d2 = 0.25, worst = 0, moved = 0;
    for (int i = 0; i < l.n; i++) {
        char e[300], m[300];
        snprintf(e, sizeof e, "/ema/%s", l.names[i]);
        snprintf(m, sizeof m, "/model/%s", l.names[i]);
        size_t n1, n2, nw;
        float *e1 = read_floats(f1, e, &n1), *e2 = read_floats(f2, e, &n2), *w2 = read_floats(f2, m, &nw);
        assert_true(n1 == n2 && n2 == nw);
        double amax = 0, dmax = 0;
        for (size_t k = 0; k < n1; k++) {
            double want = e1[k] - (1 - d2) * ((double)e1[k] - w2[k]);
            amax = fmax(amax, fabs(want));
            dmax = fmax(dmax, fabs(e2[k] - want));
            moved = fmax(moved, fabs((double)e2[k] - e1[k]));
        }
        if (!(dmax <= 1e-6 * amax + 1e-7)) fail_msg("/ema/%s: %.3g from the update with d2 = 0.25", l.names[i], dmax);
        worst = fmax(worst, amax > 0 ? dmax / amax : dmax);
        free(e1);
        free(e2);
        free(w2);
    }
    assert_true(moved > 0); /* the average did move */
    print_message("    %d tensors: /ema after update 2 within %.2g (relative) of ema1 - 0.75 (ema1 - w2)\n", l.n, worst);
    H5Fclose(f1);
    H5Fclose(f2);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (sv_test_bin_and_tmp(g_bin, sizeof g_bin, g_tmp, sizeof g_tmp, "sv_test_ema") || sv_test_check_bin(g_bin) ||
        sv_test_check_cifar(SV_TEST_CIFAR) || sv_test_check_commands("timeout"))
        return 1;
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("BLIS_NUM_THREADS", "1", 1);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ema_eval_paths),
        cmocka_unit_test(test_ema_update_index),
    };
    SV_TEST_RUN_AND_CLEAN(tests, g_tmp);
}
