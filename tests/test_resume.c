/* Exact resume (issue 4 "Resume" and "Verification"): runs the real program
 * (build/shiftvit, or $BUILD/shiftvit when BUILD is set) on the tiny config and
 * real CIFAR-10 (../shared/data/cifar-10-batches-bin) and checks that
 *   1. for the same world size (P = 1 and P = 2), 4 epochs straight and
 *      2 epochs + resume to the end give bitwise identical final weights and
 *      AdamW moments (every dataset under /model and /optimizer of last.h5,
 *      memcmp), the same /state, the same TEST line, and the same per-step
 *      losses (string equality of the CSV loss column for all 32 steps, no
 *      step missing or repeated in the resumed run's CSV; the per-epoch CSV
 *      too; and the float64 columns of metrics.h5 bitwise);
 *   2. the same holds when the first part stops in the middle of an epoch
 *      (after 12 updates, 4 into the second 8-step epoch);
 *   3. resuming with another world size (2 ranks -> 3 mid-epoch, 1 -> 2 at an
 *      epoch boundary) matches the straight run to float rounding (every
 *      tensor within 1e-4 of its max |value|, losses within 1e-4 relative);
 *   4. resuming from a bad checkpoint (text file, truncated copies, a missing
 *      file, another architecture) fails within a few seconds on every rank of
 *      a P = 2 run, with a message naming the file;
 *   5. in bf16 (train.precision = bf16), a mid-epoch split at P = 1 is
 *      bitwise the straight run too (the weights' bf16 copy, written by AdamW
 *      in one, is rounded from the loaded weights in the other).
 *   6. likewise with issue 22's keys: translation, cutout and flip TTA; and
 *      the moving average of the weights (train.ema_decay, /ema compared
 *      bitwise too) with the alternating flip under ZeRO stage 1;
 *   7. so is a mid-epoch split at P = 2 with gradient accumulation and the
 *      bf16 gradient exchange (issue 24).
 *
 * Both parts of a split run use train.epochs = 4, since the epoch count sizes
 * the learning-rate schedule (total_steps = int(train_size / batch * epochs));
 * the first part stops with train.max_steps (16 = 2 epochs of 8 steps, or 12).
 * The checkpoint stores the resolved config, max_steps included, so the resume
 * passes --set train.max_steps=0 to run to the end.
 *
 * Runs from the repository root. Every run has OMP_NUM_THREADS =
 * BLIS_NUM_THREADS = 1 and a time limit (a hang becomes a failure); P > 1 runs
 * use the launcher of the MPI the program was built with, unbound
 * (sv_test_mpirun: mpirun --oversubscribe for Open MPI). All runs use
 * one copy of the program, taken at the start, so a rebuild of build/shiftvit
 * while the tests run cannot mix two binaries. Outputs go to a mkdtemp
 * directory under /tmp, removed at the end (kept with SV_TEST_KEEP=1).
 * A check that the assertions can fail: SV_TEST_PERTURB=1 flips one bit of a
 * tensor read from the resumed run and sets the cross-world weight tolerance
 * to 0; SV_TEST_PERTURB=2 changes the last loss of the resumed run's CSV (as
 * read); both demand a message the bad-checkpoint runs do not print. Every
 * test must then fail. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "test_util.h"

#define TINY "configs/tiny.ini"
#define EPOCHS 4
#define STEPS_PER_EPOCH 8 /* tiny: 256 train images, batch 32 */
#define TOTAL_STEPS (EPOCHS * STEPS_PER_EPOCH)
#define RUN_LIMIT_S 120     /* per program run */
#define BAD_LIMIT_S 30      /* a bad-checkpoint run is killed after this */
#define BAD_MAX_S 10        /* ... and must have been refused within this */
#define CROSS_RTOL 1e-4     /* other world size: per tensor, of its max |value| */
#define CROSS_LOSS_RTOL 1e-4

static char g_tmp[64];
static char g_bin[256] = "build/shiftvit";
static double g_cross_rtol = CROSS_RTOL;
static int g_perturb = 0;
static int g_train_runs = 0;
static double g_train_seconds = 0;

/* ------------------------------------------------------------ running */

/* Command prefix that runs the program with P ranks under a time limit;
 * `wrap` (may be NULL) is put between the launcher and the program. */
static void launcher(char *buf, size_t n, int P, int limit_s, const char *wrap) {
    char mpirun[512] = "";
    if (P > 1) sv_test_mpirun(mpirun, sizeof mpirun, P, wrap ? SV_TEST_THREAD_VARS " SV_RC_DIR" : SV_TEST_THREAD_VARS);
    snprintf(buf, n, "%stimeout -k 5 %d %s%s%s%s%s", P > 1 ? "OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 " : "", limit_s,
             mpirun, P > 1 ? " " : "", wrap ? wrap : "", wrap ? " " : "", g_bin);
}

/* `shiftvit train ARGS` with P ranks; fails the test unless it exits 0. */
static sv_test_result train(int P, const char *args) {
    char pre[1024], cmd[4096], what[64];
    launcher(pre, sizeof pre, P, RUN_LIMIT_S, NULL);
    snprintf(cmd, sizeof cmd, "%s train %s 2>&1", pre, args);
    snprintf(what, sizeof what, "training with P = %d", P);
    sv_test_result r = sv_test_run_ok(cmd, what);
    g_train_runs++;
    g_train_seconds += r.seconds;
    return r;
}

/* Straight runs (4 epochs) per world size, trained once and shared, with
 * their TEST lines. */
#define MODES 5
static int g_straight_done[MODES][4];
static char g_straight_test[MODES][4][128];
/* The mode of the running test: 0 the tiny config as it is; 1 mixed
 * precision; 2 the augmentation and evaluation keys of issue 22 on (TrivialAugment
 * among them); 3 the
 * moving average of the weights (validated, checkpointed as /ema) with the
 * alternating flip, under ZeRO stage 1; 4 gradient accumulation (2
 * micro-steps) with the bf16 gradient exchange (issue 24). Every
 * run of the test gets the mode's --set (a resume takes them from its
 * checkpoint); folders carry the mode's suffix. */
static int g_mode = 0;
static const char *const g_mode_sets[MODES] = {
    "", " --set train.precision=bf16",
    " --set data.translate=3 --set data.cutout=5 --set train.tta_flip=true --set data.policy=trivial",
    " --set train.ema_decay=0.9 --set data.flip=alternate --set train.zero_stage=1",
    " --set train.accumulation_steps=2 --set train.allreduce_dtype=bf16"};
static const char *const g_mode_suffix[MODES] = {"", "_bf16", "_aug", "_ema", "_accum"};

static const char *straight(int P) {
    static char dirs[MODES][4][128];
    assert_true(P >= 1 && P <= 3);
    char *dir = dirs[g_mode][P];
    snprintf(dir, sizeof dirs[0][0], "%s/straight_p%d%s", g_tmp, P, g_mode_suffix[g_mode]);
    if (!g_straight_done[g_mode][P]) {
        char args[512];
        snprintf(args, sizeof args, "-c " TINY " --out %s --set train.epochs=%d%s", dir, EPOCHS,
                 g_mode_sets[g_mode]);
        sv_test_result r = train(P, args);
        if (!sv_test_line_starting(r.out, "TEST loss=", g_straight_test[g_mode][P], sizeof g_straight_test[0][0]))
            fail_msg("no TEST line in:\n%s", sv_test_tail(r.out, 3000));
        sv_test_result_free(&r);
        g_straight_done[g_mode][P] = 1;
    }
    return dir;
}

/* Part 1 of a split run: P ranks, epochs = 4, stop after max_steps updates. */
static void train_part1(int P, const char *dir, long max_steps) {
    char args[512], want[128];
    snprintf(args, sizeof args, "-c " TINY " --out %s --set train.epochs=%d --set train.max_steps=%ld%s",
             dir, EPOCHS, max_steps, g_mode_sets[g_mode]);
    sv_test_result r = train(P, args);
    /* max_steps: last.h5 written, the test split evaluated (also at an epoch
     * boundary, after that epoch's validation). */
    snprintf(want, sizeof want, "Reached train.max_steps = %ld", max_steps);
    assert_contains(r.out, want);
    assert_contains(r.out, "TEST loss=");
    if (max_steps % STEPS_PER_EPOCH == 0) {
        snprintf(want, sizeof want, "epoch %ld/%d: train loss", max_steps / STEPS_PER_EPOCH, EPOCHS);
        assert_contains(r.out, want);
    }
    sv_test_result_free(&r);
}

/* Part 2: resume DIR/last.h5 into DIR with P ranks, to the end; copies its
 * TEST line into test_line. */
static void train_resume(int P, const char *dir, long from_step, char *test_line, size_t n) {
    char args[512], want[128];
    snprintf(args, sizeof args, "--resume %s/last.h5 --out %s --set train.max_steps=0", dir, dir);
    sv_test_result r = train(P, args);
    snprintf(want, sizeof want, "step %ld (%ld in epoch)", from_step, from_step % STEPS_PER_EPOCH);
    assert_contains(r.out, want);
    snprintf(want, sizeof want, "epoch %d/%d: train loss", EPOCHS, EPOCHS);
    assert_contains(r.out, want);
    if (!sv_test_line_starting(r.out, "TEST loss=", test_line, n)) fail_msg("no TEST line in:\n%s", sv_test_tail(r.out, 3000));
    sv_test_result_free(&r);
}

/* ------------------------------------------------------------ CSV */

#define MAX_ROWS 64

typedef struct {
    int n;
    long step[MAX_ROWS], epoch[MAX_ROWS];
    char loss[MAX_ROWS][32];
} steps_csv;

/* Splits a CSV line in place into at most max fields. */
static int split_csv(char *line, char **f, int max) {
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = '\0';
        p = c + 1;
    }
    return n;
}

static int column(char **f, int n, const char *name, const char *path) {
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i], name)) return i;
    fail_msg("%s: no column '%s' in the header", path, name);
    return -1;
}

static void read_steps(const char *dir, steps_csv *c) {
    char path[512], line[1024], *f[16];
    snprintf(path, sizeof path, "%s/metrics_steps.csv", dir);
    FILE *fp = fopen(path, "r");
    if (!fp) fail_msg("cannot open %s: %s", path, strerror(errno));
    if (!fgets(line, sizeof line, fp)) fail_msg("%s is empty", path);
    int nf = split_csv(line, f, 16);
    int cs = column(f, nf, "step", path), ce = column(f, nf, "epoch", path), cl = column(f, nf, "loss", path);
    memset(c, 0, sizeof *c);
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '\n' || line[0] == '\0') continue;
        if (c->n == MAX_ROWS) fail_msg("%s: more than %d rows", path, MAX_ROWS);
        nf = split_csv(line, f, 16);
        if (nf <= cs || nf <= ce || nf <= cl) fail_msg("%s: short row %d", path, c->n + 1);
        c->step[c->n] = atol(f[cs]);
        c->epoch[c->n] = atol(f[ce]);
        snprintf(c->loss[c->n], sizeof c->loss[c->n], "%s", f[cl]);
        c->n++;
    }
    fclose(fp);
}

/* Every step 1..32 exactly once, in order, with its epoch. */
static void check_steps_complete(const steps_csv *c, const char *dir) {
    if (c->n != TOTAL_STEPS)
        fail_msg("%s/metrics_steps.csv has %d rows, expected %d (steps missing or repeated)", dir, c->n,
                 TOTAL_STEPS);
    for (int i = 0; i < c->n; i++) {
        if (c->step[i] != i + 1)
            fail_msg("%s/metrics_steps.csv row %d is step %ld, expected %d (missing or duplicate step)", dir,
                     i + 1, c->step[i], i + 1);
        if (c->epoch[i] != i / STEPS_PER_EPOCH + 1)
            fail_msg("%s/metrics_steps.csv step %ld has epoch %ld, expected %d", dir, c->step[i], c->epoch[i],
                     i / STEPS_PER_EPOCH + 1);
    }
}

/* Per-step losses: identical strings (same world size). */
static void compare_losses_exact(const char *a_dir, const char *b_dir) {
    steps_csv a, b;
    read_steps(a_dir, &a);
    read_steps(b_dir, &b);
    check_steps_complete(&a, a_dir);
    check_steps_complete(&b, b_dir);
    if (g_perturb == 2) b.loss[TOTAL_STEPS - 1][0] ^= 1; /* SV_TEST_PERTURB=2: must fail */
    for (int i = 0; i < TOTAL_STEPS; i++)
        if (strcmp(a.loss[i], b.loss[i]))
            fail_msg("step %d: loss %s straight, %s after resume (%s vs %s)", i + 1, a.loss[i], b.loss[i], a_dir,
                     b_dir);
}

/* Per-step losses within rel (another world size). */
static void compare_losses_close(const char *a_dir, const char *b_dir, double rel) {
    steps_csv a, b;
    read_steps(a_dir, &a);
    read_steps(b_dir, &b);
    check_steps_complete(&a, a_dir);
    check_steps_complete(&b, b_dir);
    if (g_perturb == 2) b.loss[TOTAL_STEPS - 1][0] ^= 1; /* SV_TEST_PERTURB=2: must fail */
    for (int i = 0; i < TOTAL_STEPS; i++) {
        double x = atof(a.loss[i]), y = atof(b.loss[i]);
        if (!(fabs(x - y) <= rel * fabs(x) + 1e-6)) /* + the 6 printed decimals */
            fail_msg("step %d: loss %s straight, %s after resume with another world size (rtol %g)", i + 1,
                     a.loss[i], b.loss[i], rel);
    }
}

/* metrics_epochs.csv: epochs 1..4 once each; every column except the wall
 * time identical as text (train means, val figures, lr). */
static void compare_epochs_exact(const char *a_dir, const char *b_dir) {
    char pa[512], pb[512], la[1024], lb[1024], *fa[16], *fb[16];
    snprintf(pa, sizeof pa, "%s/metrics_epochs.csv", a_dir);
    snprintf(pb, sizeof pb, "%s/metrics_epochs.csv", b_dir);
    FILE *a = fopen(pa, "r"), *b = fopen(pb, "r");
    if (!a || !b) fail_msg("cannot open %s or %s", pa, pb);
    assert_non_null(fgets(la, sizeof la, a));
    assert_non_null(fgets(lb, sizeof lb, b));
    assert_string_equal(la, lb);
    int na = split_csv(la, fa, 16);
    int secs = column(fa, na, "seconds", pa);
    int rows = 0;
    while (fgets(la, sizeof la, a)) {
        rows++;
        if (!fgets(lb, sizeof lb, b)) fail_msg("%s has fewer rows than %s", pb, pa);
        na = split_csv(la, fa, 16);
        int nb = split_csv(lb, fb, 16);
        assert_int_equal(na, nb);
        if (atol(fb[0]) != rows) fail_msg("%s row %d is epoch %s (missing or duplicate epoch)", pb, rows, fb[0]);
        for (int i = 0; i < na; i++)
            if (i != secs && strcmp(fa[i], fb[i]))
                fail_msg("epoch %d, column %d: %s straight, %s after resume", rows, i, fa[i], fb[i]);
    }
    if (fgets(lb, sizeof lb, b)) fail_msg("%s has more rows than %s", pb, pa);
    assert_int_equal(rows, EPOCHS);
    fclose(a);
    fclose(b);
}

/* ------------------------------------------------------------ HDF5 */

typedef struct {
    int n;
    char names[512][256];
} name_list;

/* H5Lvisit callback (the same source for HDF5 1.10 and 1.12): records the
 * datasets. */
static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    name_list *l = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1;
    if (H5Iget_type(o) == H5I_DATASET && l->n < 512) snprintf(l->names[l->n++], 256, "%s", name);
    H5Oclose(o);
    return 0;
}

/* Names (relative to group) of every dataset below `group` of file f. */
static void list_datasets(hid_t f, const char *group, name_list *l, const char *path) {
    l->n = 0;
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0) fail_msg("%s: no group %s", path, group);
    if (H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, collect, l) < 0) fail_msg("%s: cannot list %s", path, group);
    H5Gclose(g);
    if (l->n == 0) fail_msg("%s: no dataset under %s", path, group);
}

/* Reads a dataset in its own (native) type. Returns the bytes, their count in
 * *nbytes, the element count in *npoints and whether it is float32 in *is_f32. */
static void *read_dataset(hid_t f, const char *name, size_t *nbytes, size_t *npoints, int *is_f32,
                          char *shape, size_t shape_len) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t ft = H5Dget_type(d), mt = H5Tget_native_type(ft, H5T_DIR_DEFAULT), sp = H5Dget_space(d);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    hsize_t dims[16];
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t off = 0;
    shape[0] = '\0';
    for (int i = 0; i < nd && off < shape_len; i++)
        off += snprintf(shape + off, shape_len - off, "%s%llu", i ? "x" : "", (unsigned long long)dims[i]);
    *npoints = (size_t)np;
    *nbytes = (size_t)np * H5Tget_size(mt);
    *is_f32 = H5Tequal(mt, H5T_NATIVE_FLOAT) > 0;
    void *buf = malloc(*nbytes ? *nbytes : 1);
    assert_non_null(buf);
    if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) fail_msg("cannot read %s", name);
    H5Sclose(sp);
    H5Tclose(mt);
    H5Tclose(ft);
    H5Dclose(d);
    return buf;
}

static hid_t open_h5(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s as HDF5", path);
    return f;
}

/* Compares every dataset under `group` of the two files: the same names and
 * shapes; bitwise (rtol < 0) or within rtol of each tensor's max |a|. Returns
 * the number of datasets compared. */
static int compare_group(hid_t fa, hid_t fb, const char *group, double rtol, const char *pa, const char *pb,
                         double *worst) {
    static name_list la, lb;
    list_datasets(fa, group, &la, pa);
    list_datasets(fb, group, &lb, pb);
    if (la.n != lb.n) fail_msg("%s has %d datasets under %s, %s has %d", pa, la.n, group, pb, lb.n);
    for (int i = 0; i < la.n; i++) {
        char full[600], sa[128], sb[128];
        snprintf(full, sizeof full, "%s/%s", group, la.names[i]);
        size_t na, nb, pa_n, pb_n;
        int fa32, fb32;
        void *a = read_dataset(fa, full, &na, &pa_n, &fa32, sa, sizeof sa);
        void *b = read_dataset(fb, full, &nb, &pb_n, &fb32, sb, sizeof sb);
        if (!a || !b) fail_msg("%s missing in %s", full, a ? pb : pa);
        if (strcmp(sa, sb) || na != nb) fail_msg("%s: shape %s in %s, %s in %s", full, sa, pa, sb, pb);
        if (g_perturb == 1 && i == la.n - 1) ((unsigned char *)b)[0] ^= 1; /* must fail */
        if (rtol < 0) {
            if (memcmp(a, b, na)) {
                size_t first = 0;
                while (first < na && ((unsigned char *)a)[first] == ((unsigned char *)b)[first]) first++;
                if (fa32)
                    fail_msg("%s differs between %s and %s (element %zu: %.9g vs %.9g)", full, pa, pb, first / 4,
                             ((float *)a)[first / 4], ((float *)b)[first / 4]);
                fail_msg("%s differs between %s and %s (byte %zu)", full, pa, pb, first);
            }
        } else {
            if (!fa32 || !fb32) fail_msg("%s is not float32", full);
            const float *x = a, *y = b;
            double mx = 0, md = 0;
            for (size_t k = 0; k < pa_n; k++) {
                mx = fmax(mx, fabs(x[k]));
                md = fmax(md, fabs((double)x[k] - y[k]));
            }
            double r = mx > 0 ? md / mx : md;
            if (worst && r > *worst) *worst = r;
            if (!(md <= rtol * mx) && !(mx == 0 && md == 0))
                fail_msg("%s: max |diff| %.3g = %.3g of max |value| %.3g (tolerance %g) between %s and %s", full,
                         md, r, mx, rtol, pa, pb);
        }
        free(a);
        free(b);
    }
    return la.n;
}

static long attr_long(hid_t f, const char *obj, const char *name, const char *path) {
    long v = 0;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_LONG, &v) < 0) fail_msg("%s: cannot read attribute %s of %s", path, name, obj);
    H5Aclose(a);
    return v;
}

static double attr_double(hid_t f, const char *obj, const char *name, const char *path) {
    double v = 0;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) fail_msg("%s: cannot read attribute %s of %s", path, name, obj);
    H5Aclose(a);
    return v;
}

/* Compares last.h5 of two run directories: /model and /optimizer bitwise
 * (rtol < 0) or to rtol; /state step, epoch and early-stopping fields equal. */
static void compare_checkpoints(const char *a_dir, const char *b_dir, double rtol) {
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/last.h5", a_dir);
    snprintf(pb, sizeof pb, "%s/last.h5", b_dir);
    hid_t fa = open_h5(pa), fb = open_h5(pb);
    double worst = 0;
    int nm = compare_group(fa, fb, "/model", rtol, pa, pb, &worst);
    int no = compare_group(fa, fb, "/optimizer", rtol, pa, pb, &worst);
    assert_true(no == 2 * nm); /* m and v for every tensor */
    int has_ema = H5Lexists(fa, "/ema", H5P_DEFAULT) > 0;
    if (g_mode == 3 && !has_ema) fail_msg("%s has no /ema (train.ema_decay is on)", pa);
    if (has_ema) assert_int_equal(compare_group(fa, fb, "/ema", rtol, pa, pb, &worst), nm);
    static const char *longs[] = {"step", "epoch", "step_in_epoch", "best_epoch", "bad_epochs"};
    for (size_t i = 0; i < sizeof longs / sizeof *longs; i++) {
        long x = attr_long(fa, "/state", longs[i], pa), y = attr_long(fb, "/state", longs[i], pb);
        if (x != y) fail_msg("/state %s: %ld straight, %ld after resume", longs[i], x, y);
    }
    assert_int_equal(attr_long(fa, "/state", "step", pa), TOTAL_STEPS);
    assert_int_equal(attr_long(fa, "/state", "epoch", pa), EPOCHS);
    if (rtol < 0) {
        double x = attr_double(fa, "/state", "best_val_top1", pa), y = attr_double(fb, "/state", "best_val_top1", pb);
        if (x != y) fail_msg("/state best_val_top1: %.9g straight, %.9g after resume", x, y);
    } else {
        print_message("    %d tensors + %d moments within %.2g of their max |value| (tolerance %g)\n", nm, no,
                      worst, rtol);
    }
    H5Fclose(fa);
    H5Fclose(fb);
}

/* metrics.h5: /steps/{step,epoch,lr,loss,top1,top5} and every /epochs column
 * but the wall time, full float64 precision: bitwise (rtol < 0; the resumed
 * log keeps each step once) or the losses within rtol. */
static void compare_metrics_h5(const char *a_dir, const char *b_dir, double rtol) {
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/metrics.h5", a_dir);
    snprintf(pb, sizeof pb, "%s/metrics.h5", b_dir);
    hid_t fa = open_h5(pa), fb = open_h5(pb);
    static const char *cols[] = {"/steps/step", "/steps/epoch", "/steps/lr", "/steps/loss", "/steps/top1",
                                 "/steps/top5", "/epochs/epoch", "/epochs/train_loss", "/epochs/train_top1",
                                 "/epochs/train_top5", "/epochs/val_loss", "/epochs/val_top1",
                                 "/epochs/val_top5", "/epochs/lr"};
    for (size_t c = 0; c < sizeof cols / sizeof *cols; c++) {
        int is_loss = strstr(cols[c], "loss") != NULL;
        if (rtol >= 0 && !is_loss && strcmp(cols[c], "/steps/step") && strcmp(cols[c], "/epochs/epoch")) continue;
        size_t na, nb, npa, npb;
        int f32a, f32b;
        char sa[64], sb[64];
        double *a = read_dataset(fa, cols[c], &na, &npa, &f32a, sa, sizeof sa);
        double *b = read_dataset(fb, cols[c], &nb, &npb, &f32b, sb, sizeof sb);
        if (!a || !b) fail_msg("%s missing in %s", cols[c], a ? pb : pa);
        if (na != npa * sizeof(double) || nb != npb * sizeof(double)) fail_msg("%s is not float64", cols[c]);
        long want = !strncmp(cols[c], "/steps", 6) ? TOTAL_STEPS : EPOCHS;
        if ((long)npb != want || (long)npa != want)
            fail_msg("%s has %zu rows in %s and %zu in %s, expected %ld (missing or repeated rows)", cols[c], npa,
                     pa, npb, pb, want);
        if (!strcmp(cols[c], "/steps/step") || !strcmp(cols[c], "/epochs/epoch"))
            for (size_t i = 0; i < npb; i++)
                if (b[i] != (double)(i + 1)) fail_msg("%s row %zu of %s is %g", cols[c], i + 1, pb, b[i]);
        if (g_perturb == 2 && !strcmp(cols[c], "/steps/loss")) b[npb - 1] = nextafter(b[npb - 1], 10.0);
        for (size_t i = 0; i < npa; i++) {
            int same = rtol < 0 ? memcmp(&a[i], &b[i], sizeof(double)) == 0
                                : fabs(a[i] - b[i]) <= rtol * fabs(a[i]);
            if (!same)
                fail_msg("metrics.h5 %s row %zu: %.17g straight, %.17g after resume%s", cols[c], i + 1, a[i], b[i],
                         rtol < 0 ? "" : " (another world size)");
        }
        free(a);
        free(b);
    }
    H5Fclose(fa);
    H5Fclose(fb);
}

/* /state of a part-1 checkpoint. */
static void check_state(const char *dir, long step, long epoch, long step_in_epoch) {
    char p[512];
    snprintf(p, sizeof p, "%s/last.h5", dir);
    hid_t f = open_h5(p);
    assert_int_equal(attr_long(f, "/state", "step", p), step);
    assert_int_equal(attr_long(f, "/state", "epoch", p), epoch);
    assert_int_equal(attr_long(f, "/state", "step_in_epoch", p), step_in_epoch);
    H5Fclose(f);
}

/* ------------------------------------------------------------ tests */

/* Part-1 run directories are copied (DIR.part1) before the resume, so the
 * other-world-size tests can resume the same checkpoint without training the
 * first part again; each test still runs alone (it trains part 1 itself when
 * no copy exists). */
static void part1_copy_name(char *buf, size_t n, int P, long stop) {
    snprintf(buf, n, "%s/part1_p%d_at%ld", g_tmp, P, stop);
}

static void save_part1(const char *dir, int P, long stop) {
    char copy[256], cmd[1024];
    part1_copy_name(copy, sizeof copy, P, stop);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", copy, dir, copy);
    assert_int_equal(system(cmd), 0);
}

static int restore_part1(const char *dir, int P, long stop) {
    char copy[256], cmd[1024];
    part1_copy_name(copy, sizeof copy, P, stop);
    if (access(copy, F_OK) != 0) return 0;
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", dir, copy, dir);
    assert_int_equal(system(cmd), 0);
    return 1;
}

/* Split at `stop` updates with P ranks, resume with P ranks, compare bitwise. */
static void split_same_world(int P, long stop) {
    const char *ref = straight(P);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/split_p%d_at%ld%s", g_tmp, P, stop, g_mode_suffix[g_mode]);
    train_part1(P, dir, stop);
    check_state(dir, stop, stop / STEPS_PER_EPOCH, stop % STEPS_PER_EPOCH);
    save_part1(dir, P, stop);
    char test_line[128];
    train_resume(P, dir, stop, test_line, sizeof test_line);
    compare_checkpoints(ref, dir, -1);
    compare_losses_exact(ref, dir);
    compare_epochs_exact(ref, dir);
    compare_metrics_h5(ref, dir, -1);
    if (strcmp(test_line, g_straight_test[g_mode][P]))
        fail_msg("test split: \"%s\" straight, \"%s\" after resume", g_straight_test[g_mode][P], test_line);
}

static void test_epoch_boundary_p1(void **state) {
    (void)state;
    split_same_world(1, 2 * STEPS_PER_EPOCH);
}

static void test_epoch_boundary_p2(void **state) {
    (void)state;
    split_same_world(2, 2 * STEPS_PER_EPOCH);
}

static void test_mid_epoch_p1(void **state) {
    (void)state;
    split_same_world(1, 12);
}

static void test_mid_epoch_p2(void **state) {
    (void)state;
    split_same_world(2, 12);
}

/* bf16 (issue 12): the weights' bf16 copy is written by AdamW in a straight
 * run and rounded from the loaded fp32 weights after a resume; both must
 * give the same products, so the resumed run is bitwise the straight one.
 * Last in the list: a failure leaves g_mode set. */
static void test_mid_epoch_p1_bf16(void **state) {
    (void)state;
    g_mode = 1;
    split_same_world(1, 12);
    g_mode = 0;
}

/* Issue 22's keys (translation, cutout, TrivialAugment, flip TTA): their draws are keyed by
 * (seed, epoch, sample), so a run split mid-epoch, and across world sizes
 * 2 -> 1, ends bitwise as the straight run (same world) and within float
 * rounding (other world), with the same TEST line. */
static void test_mid_epoch_augment(void **state) {
    (void)state;
    g_mode = 2;
    split_same_world(2, 12);
    g_mode = 0;
}

/* The moving average of the weights (issue 22): /ema is checkpointed
 * mid-epoch and resumed, so the resumed run's /ema, its validation of the
 * average (metrics) and its TEST line are bitwise the straight run's; with
 * the alternating flip (stateless: epoch 0's draw, inverted on odd epochs)
 * and ZeRO stage 1 (every rank keeps the whole average). */
static void test_mid_epoch_ema(void **state) {
    (void)state;
    g_mode = 3;
    split_same_world(2, 12);
    g_mode = 0;
}

/* Issue 24: gradient accumulation (2 micro-steps per update) with the bf16
 * gradient exchange, split mid-epoch at P = 2 (between optimizer steps):
 * bitwise the straight run (nothing of a step outlives it: the accumulated
 * gradient starts again at each step's first micro-step). */
static void test_mid_epoch_accum_bf16(void **state) {
    (void)state;
    g_mode = 4;
    split_same_world(2, 12);
    g_mode = 0;
}

/* Part 1 with P1 ranks, resume with P2 ranks: float rounding only. */
static void split_other_world(int P1, int P2, long stop) {
    const char *ref = straight(P1);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/split_p%d_to_p%d_at%ld", g_tmp, P1, P2, stop);
    if (!restore_part1(dir, P1, stop)) train_part1(P1, dir, stop);
    check_state(dir, stop, stop / STEPS_PER_EPOCH, stop % STEPS_PER_EPOCH);
    char test_line[128];
    train_resume(P2, dir, stop, test_line, sizeof test_line);
    compare_checkpoints(ref, dir, g_cross_rtol);
    compare_losses_close(ref, dir, CROSS_LOSS_RTOL);
    compare_metrics_h5(ref, dir, CROSS_LOSS_RTOL);
    /* the checkpoint records the world size that wrote it */
    char p[512];
    snprintf(p, sizeof p, "%s/last.h5", dir);
    hid_t f = open_h5(p);
    assert_int_equal(attr_long(f, "/state", "world_size", p), P2);
    H5Fclose(f);
}

static void test_other_world_2_to_3_mid_epoch(void **state) {
    (void)state;
    split_other_world(2, 3, 12);
}

static void test_other_world_1_to_2_epoch_boundary(void **state) {
    (void)state;
    split_other_world(1, 2, 2 * STEPS_PER_EPOCH);
}

/* Resume from `ckpt` with P = 2 (extra arguments `extra`): every rank exits
 * non-zero within BAD_LIMIT_S, and rank 0 names the file (and `also`). */
static void expect_bad_resume(const char *ckpt, const char *extra, const char *also) {
    char rcdir[256], wrap[512], pre[1024], cmd[4096];
    static int serial;
    snprintf(rcdir, sizeof rcdir, "%s/rc%d", g_tmp, serial++);
    assert_int_equal(mkdir(rcdir, 0755), 0);
    /* Each rank runs under a wrapper that records its exit status and exits
     * 0, so mpirun does not kill the other rank before it has exited. */
    snprintf(wrap, sizeof wrap, "%s/wrap.sh", g_tmp);
    launcher(pre, sizeof pre, 2, BAD_LIMIT_S, wrap);
    snprintf(cmd, sizeof cmd, "SV_RC_DIR=%s %s train %s --resume %s --out %s/bad_out 2>&1", rcdir, pre,
             extra ? extra : "", ckpt, g_tmp);
    sv_test_result r = sv_test_run(cmd);
    if (r.status == 124 || r.status == 137 || r.status == 128 + 9)
        fail_msg("resume from %s hung: killed after %d s; output ends:\n%s", ckpt, BAD_LIMIT_S, sv_test_tail(r.out, 2000));
    /* One rc.PID file per rank (the wrapper knows no rank: that is MPI's). */
    DIR *dir = opendir(rcdir);
    assert_non_null(dir);
    int ranks = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        if (strncmp(e->d_name, "rc.", 3) != 0) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", rcdir, e->d_name);
        FILE *f = fopen(p, "r");
        int st = -1;
        if (!f || fscanf(f, "%d", &st) != 1) st = -1;
        if (f) fclose(f);
        ranks++;
        if (st == 0) fail_msg("a rank (%s) exited 0 resuming from %s; output:\n%s", p, ckpt, sv_test_tail(r.out, 2000));
    }
    closedir(dir);
    if (ranks != 2) fail_msg("%d of 2 ranks exited (rc.PID files in %s); output:\n%s", ranks, rcdir, sv_test_tail(r.out, 2000));
    if (!strstr(r.out, ckpt)) fail_msg("the error does not name %s:\n%s", ckpt, sv_test_tail(r.out, 2000));
    if (also) assert_contains(r.out, also);
    if (g_perturb) assert_contains(r.out, "(SV_TEST_PERTURB: a message that is not there)");
    if (r.seconds > BAD_MAX_S)
        fail_msg("refusing %s took %.1f s", ckpt, r.seconds);
    print_message("    %s: refused by both ranks in %.1f s\n", strrchr(ckpt, '/') + 1, r.seconds);
    sv_test_result_free(&r);
}

static void test_bad_checkpoints(void **state) {
    (void)state;
    char good[512], p[512], dir[256], args[512];
    snprintf(good, sizeof good, "%s/last.h5", straight(1)); /* a valid checkpoint to damage */
    struct stat sb;
    assert_int_equal(stat(good, &sb), 0);

    /* a text file (the config is read from the checkpoint: fails before training starts) */
    snprintf(p, sizeof p, "%s/text.h5", g_tmp);
    sv_test_write_text(p, "this is a text file, not a checkpoint\n");
    expect_bad_resume(p, NULL, NULL);

    /* truncated copies: half the file, and all but the last byte (with -c the
     * config comes from the INI file and the weights fail to load inside train) */
    snprintf(p, sizeof p, "%s/truncated_half.h5", g_tmp);
    sv_test_copy_file(good, p, sb.st_size / 2);
    expect_bad_resume(p, NULL, NULL);
    snprintf(p, sizeof p, "%s/truncated_last_byte.h5", g_tmp);
    sv_test_copy_file(good, p, sb.st_size - 1);
    expect_bad_resume(p, "-c " TINY, NULL);

    snprintf(p, sizeof p, "%s/does_not_exist.h5", g_tmp);
    expect_bad_resume(p, NULL, NULL);

    /* another architecture: a checkpoint of embed_dim 12 into the tiny model
     * (24): refused as a trajectory change naming the key and both values;
     * with --resume-with-changes the shape check names the tensor */
    snprintf(dir, sizeof dir, "%s/embed12", g_tmp);
    snprintf(args, sizeof args, "-c " TINY " --out %s --set model.embed_dim=12 --set train.max_steps=1", dir);
    sv_test_result r = train(1, args);
    sv_test_result_free(&r);
    snprintf(p, sizeof p, "%s/last.h5", dir);
    expect_bad_resume(p, "-c " TINY, "model.embed_dim is 12 in the run of");
    expect_bad_resume(p, "-c " TINY " --resume-with-changes", "patch_projection/kernel");
}

/* ------------------------------------------------------------ setup */

static int setup(void **state) {
    (void)state;
    sv_test_bin(g_bin, sizeof g_bin);
    if (sv_test_check_bin(g_bin) || sv_test_check_cifar(SV_TEST_CIFAR) || sv_test_check_launcher())
        return -1;
    const char *perturb = getenv("SV_TEST_PERTURB");
    if (perturb && (!strcmp(perturb, "1") || !strcmp(perturb, "2"))) {
        g_perturb = atoi(perturb);
        if (g_perturb == 1) g_cross_rtol = 0;
    }
    /* One thread per process: these runs are tiny, and OpenMP threads that
     * spin on a loaded (or oversubscribed, P = 3 on 2 cores) machine make
     * them slow. */
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("BLIS_NUM_THREADS", "1", 1);
    unsetenv("SHIFTVIT_CHECK_REPLICAS");
    unsetenv("SHIFTVIT_INJECT_NAN_STEP");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (sv_test_mkdtemp(g_tmp, sizeof g_tmp, "sv_test_resume")) return -1;
    /* Every run uses one copy of the program: a rebuild of build/shiftvit
     * while the tests run would otherwise compare two different binaries. */
    char copy[256], cmd[1024];
    snprintf(copy, sizeof copy, "%s/shiftvit", g_tmp);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_bin, copy);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_resume: cannot copy %s to %s\n", g_bin, copy);
        return -1;
    }
    snprintf(g_bin, sizeof g_bin, "%s", copy);
    char wrap[128];
    snprintf(wrap, sizeof wrap, "%s/wrap.sh", g_tmp);
    sv_test_write_text(wrap, "#!/bin/sh\n\"$@\"\necho $? > \"$SV_RC_DIR/rc.$$\"\nexit 0\n");
    return chmod(wrap, 0755);
}

static int teardown(void **state) {
    (void)state;
    print_message("test_resume: %d training runs, %.1f s in all\n", g_train_runs, g_train_seconds);
    sv_test_clean_tmp(g_tmp);
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch_boundary_p1),
        cmocka_unit_test(test_epoch_boundary_p2),
        cmocka_unit_test(test_mid_epoch_p1),
        cmocka_unit_test(test_mid_epoch_p2),
        cmocka_unit_test(test_other_world_2_to_3_mid_epoch),
        cmocka_unit_test(test_other_world_1_to_2_epoch_boundary),
        cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_mid_epoch_p1_bf16),
        cmocka_unit_test(test_mid_epoch_augment),
        cmocka_unit_test(test_mid_epoch_ema),
        cmocka_unit_test(test_mid_epoch_accum_bf16),
    };
    /* SV_TEST_FILTER=test_accum* runs the matching tests only (cmocka's glob) */
    if (getenv("SV_TEST_FILTER")) cmocka_set_test_filter(getenv("SV_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
