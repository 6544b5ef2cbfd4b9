/* The C model against an independent PyTorch reference
 * (python/shiftvit/model.py, written from SPEC sections 1-3).
 *
 * tests/reference/make_model_reference.py writes, for a config, random
 * weights (every parameter non-trivial), random NHWC images and labels, and
 * the float64 logits, mean cross-entropy loss and every parameter gradient.
 * This test loads those weights into the C model, runs forward (inference and
 * zero-rate training mode) and backward, and compares:
 *   logits: |c - r| <= 1e-4 |r| + 1e-5 max|r|   (float32 rounding uses ~5% of it)
 *   loss:   1e-4 relative
 *   grads:  max|c - r| <= 1e-3 max|r| per tensor (float32 rounding: ~3e-6)
 *
 * The reference files are generated at test time into build/reference/ (the
 * tiny one is 2.8 MB, the recipe one ~94 MB: neither is committed), again
 * whenever the generator, the PyTorch model or the config is newer than the
 * file. Generation needs /usr/bin/python3 with torch and h5py (Debian
 * python3-torch, python3-h5py): a missing dependency is a failure, not a skip.
 * Run from the repository root. */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/layers.h"
#include "shiftvit/model.h"
#include "shiftvit/settings.h"

#include "test_util.h"

/* Recursive object visit: H5Ovisit3 / H5O_info2_t from HDF5 1.12, H5Ovisit2 /
 * H5O_info_t in 1.10 (Debian 12). */
#if H5_VERSION_GE(1, 12, 0)
typedef H5O_info2_t sv_h5_oinfo;
#define SV_H5_OVISIT H5Ovisit3
#else
typedef H5O_info_t sv_h5_oinfo;
#define SV_H5_OVISIT H5Ovisit2
#endif

#define PYTHON "/usr/bin/python3"
#define GENERATOR "tests/reference/make_model_reference.py"
#define TORCH_MODEL "python/shiftvit/model.py"
#define REF_DIR "build/reference"

/* Overridable with -D to try other configs by hand. */
#ifndef TINY_CONFIG
#define TINY_CONFIG "configs/tiny.ini"
#endif
#ifndef TINY_REF
#define TINY_REF REF_DIR "/tiny_reference.h5"
#endif
#define TINY_BATCH 4
#ifndef RECIPE_CONFIG
#define RECIPE_CONFIG "configs/cifar10_keras.ini"
#endif
#ifndef RECIPE_REF
#define RECIPE_REF REF_DIR "/recipe_reference.h5"
#endif
#define RECIPE_BATCH 2
#define RECIPE_PARAMS 11690602u

#define LOGIT_RTOL 1e-4
#define LOGIT_ATOL_FRAC 1e-5 /* of max |reference logit| */
#define LOSS_RTOL 1e-4
#define GRAD_TOL 1e-3        /* of max |reference gradient| of the tensor */

static double mtime_of(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return -1.0;
    return (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
}

/* Makes sure `out` exists and is newer than its inputs; (re)generates it. */
static void ensure_reference(const char *config, const char *out, int batch) {
    if (mtime_of(config) < 0)
        fail_msg("config %s not found (run the tests from the repository root)", config);
    double t = mtime_of(out);
    if (t >= 0 && t >= mtime_of(config) && t >= mtime_of(GENERATOR) &&
        t >= mtime_of(TORCH_MODEL))
        return;
    if (mkdir("build", 0777) != 0 && errno != EEXIST)
        fail_msg("mkdir build: %s", strerror(errno));
    if (mkdir(REF_DIR, 0777) != 0 && errno != EEXIST)
        fail_msg("mkdir " REF_DIR ": %s", strerror(errno));
    char cmd[4 * SV_PATH_LEN];
    snprintf(cmd, sizeof cmd, PYTHON " " GENERATOR " '%s' '%s' --batch %d", config,
             out, batch);
    printf("generating the reference: %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("'%s' failed (status %d): the PyTorch reference needs " PYTHON
                 " with torch and h5py (Debian python3-torch python3-h5py)",
                 cmd, rc);
    if (mtime_of(out) < 0)
        fail_msg("'%s' did not write %s", cmd, out);
}

/* Reads dataset `path` of `f` as `type` into buf (capacity cap elements).
 * Returns the element count; dims/ndim receive the shape when non-NULL. */
static size_t read_dataset(hid_t f, const char *path, hid_t type, void *buf,
                           size_t cap, int *ndim, hsize_t dims[8]) {
    if (H5Lexists(f, path, H5P_DEFAULT) <= 0)
        fail_msg("reference file has no dataset %s", path);
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0)
        fail_msg("cannot open dataset %s", path);
    hid_t s = H5Dget_space(d);
    hsize_t dd[8] = {0};
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd < 0 || nd > 8)
        fail_msg("dataset %s: bad rank %d", path, nd);
    H5Sget_simple_extent_dims(s, dd, NULL);
    size_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= (size_t)dd[i];
    if (n > cap)
        fail_msg("dataset %s has %zu elements, expected at most %zu", path, n, cap);
    if (buf && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        fail_msg("cannot read dataset %s", path);
    H5Sclose(s);
    H5Dclose(d);
    if (ndim)
        *ndim = nd;
    if (dims)
        memcpy(dims, dd, sizeof dd);
    return n;
}

static herr_t count_datasets_cb(hid_t obj, const char *name, const sv_h5_oinfo *info,
                                void *op_data) {
    (void)obj;
    (void)name;
    if (info->type == H5O_TYPE_DATASET)
        (*(int *)op_data)++;
    return 0;
}

/* Adds the element count of every dataset (op_data: size_t total). */
static herr_t sum_sizes_cb(hid_t obj, const char *name, const sv_h5_oinfo *info,
                           void *op_data) {
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hid_t s = H5Dget_space(d);
    *(size_t *)op_data += (size_t)H5Sget_simple_extent_npoints(s);
    H5Sclose(s);
    H5Dclose(d);
    return 0;
}

/* Number of datasets below group `path`. */
static int count_datasets(hid_t f, const char *path) {
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    if (g < 0)
        fail_msg("reference file has no group %s", path);
    int n = 0;
    SV_H5_OVISIT(g, H5_INDEX_NAME, H5_ITER_NATIVE, count_datasets_cb, &n, H5O_INFO_BASIC);
    H5Gclose(g);
    return n;
}

static void load_config(sv_config *cfg, const char *path) {
    char err[SV_ERR_LEN];
    sv_config_defaults(cfg);
    if (sv_config_load(cfg, path, err) != 0)
        fail_msg("sv_config_load(%s): %s", path, err);
    /* The reference has no dropout / drop path; zero rates also make the
     * training-mode forward (needed before backward) deterministic. */
    cfg->dropout = 0.0f;
    cfg->drop_path = 0.0f;
    if (sv_config_validate(cfg, err) != 0)
        fail_msg("sv_config_validate(%s): %s", path, err);
}

/* Copies every /params/<name> into the model, checking shapes; returns the
 * total number of floats in the file's /params. */
static size_t load_params(sv_model *m, hid_t f) {
    int in_file = count_datasets(f, "/params");
    if (in_file != m->num_tensors)
        fail_msg("reference has %d parameter tensors, the model %d", in_file,
                 m->num_tensors);
    size_t total = 0;
    for (int t = 0; t < m->num_tensors; t++) {
        const sv_param_info *p = &m->tensors[t];
        char path[SV_MAX_NAME + 16];
        snprintf(path, sizeof path, "/params/%s", p->name);
        int nd;
        hsize_t dims[8];
        /* Check the shape before reading so that a mismatch cannot overflow. */
        read_dataset(f, path, H5T_NATIVE_FLOAT, NULL, (size_t)-1, &nd, dims);
        int same = nd == p->ndim;
        for (int i = 0; same && i < nd; i++)
            same = dims[i] == (hsize_t)p->shape[i];
        if (!same) {
            char fs[128] = "", ms[128] = "";
            for (int i = 0; i < nd; i++)
                snprintf(fs + strlen(fs), sizeof fs - strlen(fs), "%s%llu", i ? "," : "",
                         (unsigned long long)dims[i]);
            for (int i = 0; i < p->ndim; i++)
                snprintf(ms + strlen(ms), sizeof ms - strlen(ms), "%s%d", i ? "," : "",
                         p->shape[i]);
            fail_msg("tensor %s: reference shape [%s], model shape [%s]", p->name, fs, ms);
        }
        total += read_dataset(f, path, H5T_NATIVE_FLOAT, m->params + p->offset, p->size,
                              NULL, NULL);
    }
    return total;
}

/* Full comparison of the C model against one reference file. */
static void check_reference(const char *config, const char *ref, int batch) {
    ensure_reference(config, ref, batch);
    sv_config cfg;
    load_config(&cfg, config);

    hid_t f = H5Fopen(ref, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        fail_msg("cannot open %s", ref);
    int nd;
    hsize_t dims[8];
    read_dataset(f, "/input", H5T_NATIVE_FLOAT, NULL, (size_t)-1, &nd, dims);
    const int N = (int)dims[0], S = cfg.image_size, K = cfg.num_classes;
    if (nd != 4 || dims[1] != (hsize_t)S || dims[2] != (hsize_t)S || dims[3] != 3)
        fail_msg("%s: /input is not N x %d x %d x 3", ref, S, S);
    assert_int_equal(N, batch);

    sv_model m;
    char err[SV_ERR_LEN];
    if (sv_model_create(&m, sv_model_settings_from(&cfg), N, err) != 0)
        fail_msg("sv_model_create: %s", err);
    size_t loaded = load_params(&m, f);
    assert_int_equal(loaded, m.num_params);

    float *x = malloc(sizeof(float) * (size_t)N * S * S * 3);
    int *labels = malloc(sizeof(int) * N);
    float *ref_logits = malloc(sizeof(float) * N * K);
    float *probs = malloc(sizeof(float) * N * K);
    float *losses = malloc(sizeof(float) * N);
    float *dlogits = malloc(sizeof(float) * N * K);
    float *ref_grads = malloc(sizeof(float) * m.num_params);
    long *ids = malloc(sizeof(long) * N);
    assert_non_null(x);
    assert_non_null(ref_grads);
    double ref_loss;
    read_dataset(f, "/input", H5T_NATIVE_FLOAT, x, (size_t)N * S * S * 3, NULL, NULL);
    assert_int_equal(read_dataset(f, "/labels", H5T_NATIVE_INT, labels, N, NULL, NULL), N);
    read_dataset(f, "/logits", H5T_NATIVE_FLOAT, NULL, (size_t)-1, &nd, dims);
    if (nd != 2 || dims[0] != (hsize_t)N || dims[1] != (hsize_t)K)
        fail_msg("%s: /logits is not %d x %d", ref, N, K);
    read_dataset(f, "/logits", H5T_NATIVE_FLOAT, ref_logits, (size_t)N * K, NULL, NULL);
    read_dataset(f, "/loss", H5T_NATIVE_DOUBLE, &ref_loss, 1, NULL, NULL);
    if (count_datasets(f, "/grads") != m.num_tensors)
        fail_msg("%s: /grads does not have %d tensors", ref, m.num_tensors);
    for (int t = 0; t < m.num_tensors; t++) {
        char path[SV_MAX_NAME + 16];
        snprintf(path, sizeof path, "/grads/%s", m.tensors[t].name);
        read_dataset(f, path, H5T_NATIVE_FLOAT, ref_grads + m.tensors[t].offset,
                     m.tensors[t].size, NULL, NULL);
    }
    H5Fclose(f);

    /* Inference-mode forward. */
    const float *logits = sv_model_forward(&m, x, N, NULL);
    double lmax = 0.0;
    for (int i = 0; i < N * K; i++)
        lmax = fmax(lmax, fabs(ref_logits[i]));
    double worst_logit = 0.0; /* error / allowed error */
    int worst_i = 0;
    for (int i = 0; i < N * K; i++) {
        double r = (double)fabsf(logits[i] - ref_logits[i]) /
                   (LOGIT_RTOL * fabs(ref_logits[i]) + LOGIT_ATOL_FRAC * lmax);
        if (isnan(r))
            r = INFINITY;
        if (r > worst_logit) {
            worst_logit = r;
            worst_i = i;
        }
    }
    sv_softmax_xent_forward(losses, probs, logits, labels, N, K, 0.f);
    double loss = 0.0;
    for (int n = 0; n < N; n++)
        loss += losses[n];
    loss /= N;
    printf("%s: logits max error %.3f of the bound (worst [%d][%d]: %.7g vs %.7g), "
           "loss %.7f vs %.7f (rel %.2e)\n",
           ref, worst_logit, worst_i / K, worst_i % K, logits[worst_i],
           ref_logits[worst_i], loss, ref_loss, fabs(loss - ref_loss) / fabs(ref_loss));
    if (!(worst_logit <= 1.0))
        fail_msg("%s: logit [%d][%d] = %.9g, reference %.9g (bound %g rel + %g abs)", ref,
                 worst_i / K, worst_i % K, logits[worst_i], ref_logits[worst_i], LOGIT_RTOL,
                 LOGIT_ATOL_FRAC * lmax);
    assert_close(loss, ref_loss, LOSS_RTOL, 0.0);

    /* Training-mode forward with zero rates (keeps activations), then backward. */
    for (int n = 0; n < N; n++)
        ids[n] = n;
    sv_train_rng rng = {.seed = 7, .epoch = 0, .sample_ids = ids};
    logits = sv_model_forward(&m, x, N, &rng);
    for (int i = 0; i < N * K; i++) {
        double r = (double)fabsf(logits[i] - ref_logits[i]) /
                   (LOGIT_RTOL * fabs(ref_logits[i]) + LOGIT_ATOL_FRAC * lmax);
        if (!(r <= 1.0))
            fail_msg("%s: training-mode (zero-rate) logit [%d][%d] = %.9g, reference %.9g",
                     ref, i / K, i % K, logits[i], ref_logits[i]);
    }
    sv_softmax_xent_forward(losses, probs, logits, labels, N, K, 0.f);
    sv_softmax_xent_backward(dlogits, probs, labels, N, K, 1.0f / (float)N, 0.f);
    memset(m.grads, 0xff, sizeof(float) * m.num_params); /* NaN: backward must overwrite */
    sv_model_backward(&m, dlogits, NULL, NULL);

    double worst = 0.0;
    int worst_t = -1, bad = 0;
    for (int t = 0; t < m.num_tensors; t++) {
        const sv_param_info *p = &m.tensors[t];
        const float *c = m.grads + p->offset, *r = ref_grads + p->offset;
        double rmax = 0.0, emax = 0.0;
        for (size_t i = 0; i < p->size; i++) {
            rmax = fmax(rmax, fabs(r[i]));
            double e = fabs((double)c[i] - (double)r[i]);
            if (!(e <= emax)) /* NaN sticks */
                emax = isnan(e) ? INFINITY : e;
        }
        double rel = rmax > 0 ? emax / rmax : emax;
        if (rel > GRAD_TOL) {
            if (bad < 20)
                printf("  gradient %-40s max error %.3e of max|ref| %.3e (rel %.2e)\n",
                       p->name, emax, rmax, rel);
            bad++;
        }
        if (!(rel <= worst) || worst_t < 0) {
            worst = rel;
            worst_t = t;
        }
    }
    printf("%s: gradients of %d tensors, worst %s at %.2e of its max|ref| (bound %g)\n", ref,
           m.num_tensors, m.tensors[worst_t].name, worst, GRAD_TOL);
    if (bad)
        fail_msg("%s: %d of %d gradient tensors differ by more than %g of their max; worst "
                 "%s at %.3e",
                 ref, bad, m.num_tensors, GRAD_TOL, m.tensors[worst_t].name, worst);

    free(x);
    free(labels);
    free(ref_logits);
    free(probs);
    free(losses);
    free(dlogits);
    free(ref_grads);
    free(ids);
    sv_model_free(&m);
}

static void test_tiny_reference(void **state) {
    (void)state;
    check_reference(TINY_CONFIG, TINY_REF, TINY_BATCH);
}

static void test_recipe_reference(void **state) {
    (void)state;
    check_reference(RECIPE_CONFIG, RECIPE_REF, RECIPE_BATCH);
}

/* SPEC section 1: 11,690,602 trainable parameters, in the model and in the
 * independent reference. */
static void test_recipe_param_count(void **state) {
    (void)state;
    sv_config cfg;
    load_config(&cfg, RECIPE_CONFIG);
    sv_model m;
    char err[SV_ERR_LEN];
    if (sv_model_create(&m, sv_model_settings_from(&cfg), 1, err) != 0)
        fail_msg("sv_model_create: %s", err);
    assert_int_equal(m.num_params, RECIPE_PARAMS);
    size_t sum = 0;
    for (int t = 0; t < m.num_tensors; t++)
        sum += m.tensors[t].size;
    assert_int_equal(sum, RECIPE_PARAMS);
    int m_tensors = m.num_tensors;
    sv_model_free(&m);

    ensure_reference(RECIPE_CONFIG, RECIPE_REF, RECIPE_BATCH);
    hid_t f = H5Fopen(RECIPE_REF, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        fail_msg("cannot open %s", RECIPE_REF);
    hid_t g = H5Gopen2(f, "/params", H5P_DEFAULT);
    assert_true(g >= 0);
    size_t in_file = 0;
    SV_H5_OVISIT(g, H5_INDEX_NAME, H5_ITER_NATIVE, sum_sizes_cb, &in_file, H5O_INFO_BASIC);
    printf("%s: model %zu parameters in %d tensors, reference file %zu\n", RECIPE_REF,
           (size_t)RECIPE_PARAMS, m_tensors, in_file);
    assert_int_equal(in_file, RECIPE_PARAMS);
    H5Gclose(g);
    H5Fclose(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_reference),
        cmocka_unit_test(test_recipe_param_count),
        cmocka_unit_test(test_recipe_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
