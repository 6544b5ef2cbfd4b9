/* Tests of the TrivialAugment / RandAugment operations and draws
 * (autoaugment.h): every operation against PIL and torchvision on real and
 * made-up images (tests/reference/autoaugment_reference.h5, made by
 * tests/reference/make_autoaugment_reference.py), the strength tables against
 * torchvision's, the draws' distribution and determinism, and sv_make_batch
 * with a policy against the operations applied by hand. Run from the
 * repository root. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "test_util.h"

#include "shiftvit/autoaugment.h"
#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/data.h"
#include "shiftvit/settings.h"

#define REF_H5 "tests/reference/autoaugment_reference.h5"
#define REF_IMAGES 7
#define PIX SV_CIFAR_PIXELS

static const char *const op_names[SV_AA_OPS] = {
    "Identity", "ShearX",     "ShearY", "TranslateX", "TranslateY",   "Rotate",  "Brightness",
    "Color",    "Contrast",   "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize"};

/* Reads dataset `name` of REF_H5 into a new buffer of n elements of mem_type
 * (elem bytes each); fails the test when the element count differs (n = 0:
 * any count, returned in *count). */
static void *read_ref(const char *name, hid_t mem_type, size_t elem, size_t n, size_t *count) {
    hid_t f = H5Fopen(REF_H5, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s (run the tests from the repository root)", REF_H5);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: no dataset %s", REF_H5, name);
    hid_t s = H5Dget_space(d);
    size_t npts = (size_t)H5Sget_simple_extent_npoints(s);
    if (n && npts != n) fail_msg("%s:%s has %zu elements, expected %zu", REF_H5, name, npts, n);
    void *buf = malloc(npts * elem);
    assert_non_null(buf);
    assert_true(H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(f);
    if (count) *count = npts;
    return buf;
}

/* ------------------------------------------------------------ operations */

/* Every case of the reference file: op at its strength on each image, byte
 * for byte what PIL / torchvision produced. */
static void test_ops_match_pil(void **state) {
    (void)state;
    size_t ncases = 0;
    int32_t *ops = read_ref("ops", H5T_NATIVE_INT32, sizeof(int32_t), 0, &ncases);
    float *mags = read_ref("magnitudes", H5T_NATIVE_FLOAT, sizeof(float), ncases, NULL);
    uint8_t *images = read_ref("images", H5T_NATIVE_UINT8, 1, (size_t)REF_IMAGES * PIX, NULL);
    uint8_t *want = read_ref("outputs", H5T_NATIVE_UINT8, 1, ncases * REF_IMAGES * PIX, NULL);
    int covered[SV_AA_OPS] = {0};
    uint8_t got[PIX];
    for (size_t k = 0; k < ncases; k++) {
        assert_true(ops[k] >= 0 && ops[k] < SV_AA_OPS);
        covered[ops[k]] = 1;
        for (int i = 0; i < REF_IMAGES; i++) {
            const uint8_t *w = want + (k * REF_IMAGES + i) * PIX;
            sv_aa_apply(got, images + (size_t)i * PIX, (sv_aa_op)ops[k], mags[k]);
            int bad = 0, first = -1;
            for (int b = 0; b < PIX; b++)
                if (got[b] != w[b]) {
                    if (first < 0) first = b;
                    bad++;
                }
            if (bad)
                fail_msg("%s(%g) on image %d: %d of %d bytes differ from PIL; first at pixel "
                         "(%d, %d) channel %d: %u, PIL %u",
                         op_names[ops[k]], (double)mags[k], i, bad, PIX, first / 3 / 32,
                         first / 3 % 32, first % 3, got[first], w[first]);
        }
    }
    for (int op = 0; op < SV_AA_OPS; op++)
        if (!covered[op]) fail_msg("the reference file has no case of %s", op_names[op]);
    free(ops);
    free(mags);
    free(images);
    free(want);
}

/* Hand-computed edge cases that need no reference: a translation by the whole
 * side leaves black; posterize to 8 bits and solarize above 255 change
 * nothing; a quarter turn four times is the identity. */
static void test_ops_by_hand(void **state) {
    (void)state;
    uint8_t img[PIX], a[PIX], b[PIX];
    for (int i = 0; i < PIX; i++) img[i] = (uint8_t)(i * 37 + 11);
    static const uint8_t black[PIX];
    sv_aa_apply(a, img, SV_AA_TRANSLATE_X, 32.0f);
    assert_memory_equal(a, black, PIX);
    sv_aa_apply(a, img, SV_AA_TRANSLATE_Y, -32.9f); /* truncated to -32 */
    assert_memory_equal(a, black, PIX);
    /* translation by 3 to the right in PIL's form: out(x) = in(x + 3) */
    sv_aa_apply(a, img, SV_AA_TRANSLATE_X, 3.7f);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++)
                assert_int_equal(a[3 * (32 * y + x) + c],
                                 x + 3 < 32 ? img[3 * (32 * y + x + 3) + c] : 0);
    sv_aa_apply(a, img, SV_AA_POSTERIZE, 8.0f);
    assert_memory_equal(a, img, PIX);
    sv_aa_apply(a, img, SV_AA_SOLARIZE, 256.0f);
    assert_memory_equal(a, img, PIX);
    sv_aa_apply(a, img, SV_AA_SOLARIZE, 0.0f); /* every value inverted */
    for (int i = 0; i < PIX; i++) assert_int_equal(a[i], 255 - img[i]);
    memcpy(a, img, PIX);
    for (int t = 0; t < 4; t++) {
        sv_aa_apply(b, a, SV_AA_ROTATE, 90.0f);
        memcpy(a, b, PIX);
    }
    assert_memory_equal(a, img, PIX);
    /* factor 1 (strength 0) of every enhancement is the identity */
    for (int op = SV_AA_BRIGHTNESS; op <= SV_AA_SHARPNESS; op++) {
        sv_aa_apply(a, img, (sv_aa_op)op, 0.0f);
        assert_memory_equal(a, img, PIX);
    }
}

/* ---------------------------------------------------------------- tables */

static void check_table(const char *name, sv_aug_policy policy) {
    float *t = read_ref(name, H5T_NATIVE_FLOAT, sizeof(float), SV_AA_OPS * SV_AA_BINS, NULL);
    for (int op = 0; op < SV_AA_OPS; op++)
        for (int bin = 0; bin < SV_AA_BINS; bin++) {
            const float got = sv_aa_magnitude(policy, (sv_aa_op)op, bin);
            const float want = t[op * SV_AA_BINS + bin];
            /* torch.linspace's last bit depends on its vector width (the
             * machine that made the file), so 2 units in the last place */
            if (!(fabsf(got - want) <= 2.4e-7f * fmaxf(1.0f, fabsf(want))))
                fail_msg("%s %s bin %d: %.9g, torchvision %.9g", name, op_names[op], bin,
                         (double)got, (double)want);
        }
    free(t);
}

static void test_tables_match_torchvision(void **state) {
    (void)state;
    check_table("ta_table", SV_POLICY_TRIVIAL);
    check_table("ra_table", SV_POLICY_RANDAUGMENT);
    int32_t *sig = read_ref("signed", H5T_NATIVE_INT32, sizeof(int32_t), SV_AA_OPS, NULL);
    for (int op = 0; op < SV_AA_OPS; op++)
        if (sv_aa_signed((sv_aa_op)op) != sig[op])
            fail_msg("%s: signed %d, torchvision %d", op_names[op], sv_aa_signed((sv_aa_op)op),
                     sig[op]);
    free(sig);
}

/* ----------------------------------------------------------------- draws */

/* Pearson's chi-square statistic of counts against a uniform expectation. */
static double chi_square(const long *counts, int k, long total) {
    const double e = (double)total / k;
    double x = 0.0;
    for (int i = 0; i < k; i++) x += (counts[i] - e) * (counts[i] - e) / e;
    return x;
}

/* TrivialAugment: one step per image; op, bin and sign uniform (chi-square
 * below the 0.999 quantile: 34.5 for 13 degrees of freedom, 59.7 for 30), the
 * strength the table's value at some bin. The same key gives the same draw;
 * another epoch or sample another one. */
static void test_trivial_draws(void **state) {
    (void)state;
    enum { N = 28000 };
    long op_count[SV_AA_OPS] = {0}, bin_count[SV_AA_BINS] = {0}, neg = 0, signed_n = 0;
    long same_as_next_epoch = 0;
    for (long s = 0; s < N; s++) {
        sv_aa_step st[SV_AA_MAX_OPS], again[SV_AA_MAX_OPS], other[SV_AA_MAX_OPS];
        assert_int_equal(sv_aa_draw(st, 42, 3, s, SV_POLICY_TRIVIAL, 5, 7), 1);
        assert_int_equal(sv_aa_draw(again, 42, 3, s, SV_POLICY_TRIVIAL, 5, 7), 1);
        assert_int_equal(st[0].op, again[0].op);
        assert_true(st[0].v == again[0].v);
        sv_aa_draw(other, 42, 4, s, SV_POLICY_TRIVIAL, 5, 7);
        same_as_next_epoch += other[0].op == st[0].op && other[0].v == st[0].v;
        op_count[st[0].op]++;
        int bin = -1;
        for (int b = 0; b < SV_AA_BINS; b++)
            if (sv_aa_magnitude(SV_POLICY_TRIVIAL, st[0].op, b) == fabsf(st[0].v)) bin = b;
        assert_true(bin >= 0);
        if (st[0].op == SV_AA_SHEAR_X) bin_count[bin]++; /* strictly increasing table */
        if (sv_aa_signed(st[0].op) && st[0].v != 0.0f) {
            signed_n++;
            neg += st[0].v < 0.0f;
        } else {
            assert_true(st[0].v >= 0.0f);
        }
    }
    assert_true(chi_square(op_count, SV_AA_OPS, N) < 34.5);
    long shear = op_count[SV_AA_SHEAR_X];
    assert_true(chi_square(bin_count, SV_AA_BINS, shear) < 59.7);
    assert_true(fabs((double)neg / signed_n - 0.5) < 0.02);
    assert_true(same_as_next_epoch < N / 50); /* ~1/(14*31*2) by chance plus the unsigned ops */
}

/* RandAugment: n steps, every one at bin m; ops uniform over all steps. */
static void test_randaugment_draws(void **state) {
    (void)state;
    enum { N = 10000, n = 3, m = 17 };
    long op_count[SV_AA_OPS] = {0};
    for (long s = 0; s < N; s++) {
        sv_aa_step st[SV_AA_MAX_OPS];
        assert_int_equal(sv_aa_draw(st, 7, 0, s, SV_POLICY_RANDAUGMENT, n, m), n);
        for (int k = 0; k < n; k++) {
            op_count[st[k].op]++;
            assert_true(fabsf(st[k].v) == sv_aa_magnitude(SV_POLICY_RANDAUGMENT, st[k].op, m));
        }
    }
    assert_true(chi_square(op_count, SV_AA_OPS, (long)N * n) < 34.5);
    sv_aa_step st[SV_AA_MAX_OPS];
    assert_int_equal(sv_aa_draw(st, 7, 0, 0, SV_POLICY_NONE, n, m), 0);
}

/* --------------------------------------------------------------- batches */

/* sv_make_batch with a policy = the drawn operations on the uint8 image, then
 * the same crop, flip, translation and cutout as without a policy. */
static void test_make_batch_applies_policy(void **state) {
    (void)state;
    enum { N = 6 };
    uint8_t images[N * PIX], labels[N];
    for (int i = 0; i < N * PIX; i++) images[i] = (uint8_t)((i * 131) ^ (i >> 5));
    for (int i = 0; i < N; i++) labels[i] = (uint8_t)i;
    sv_dataset ds = {N, images, labels};
    sv_config cfg;
    sv_config_defaults(&cfg);
    cfg.image_size = 32;
    cfg.resize_size = 32;
    cfg.translate = 2;
    cfg.cutout = 5;
    long idx[N] = {5, 0, 3, 1, 4, 2};
    for (int policy = SV_POLICY_TRIVIAL; policy <= SV_POLICY_RANDAUGMENT; policy++) {
        cfg.policy = policy;
        cfg.randaugment_n = 2;
        cfg.randaugment_m = 12;
        sv_batch_settings b = sv_batch_settings_from(&cfg);
        float x[N * PIX], want[PIX];
        int lab[N];
        sv_make_batch(x, lab, &ds, idx, N, b, 9, 1);
        for (int i = 0; i < N; i++) {
            uint8_t img[PIX], tmp[PIX];
            sv_aa_step st[SV_AA_MAX_OPS];
            memcpy(img, images + idx[i] * PIX, PIX);
            int ns = sv_aa_draw(st, b.seed, 9, idx[i], (sv_aug_policy)policy, 2, 12);
            sv_aa_apply_steps(img, tmp, st, ns);
            int oy, ox, flip;
            sv_draw_augment(b.seed, 9, idx[i], 32, 32, &oy, &ox, &flip);
            sv_augment_image(want, img, 32, 32, oy, ox, flip);
            sv_extra_augment e = sv_draw_extra(b.seed, 9, idx[i], 2, 5, 32);
            sv_translate_cutout(want, 32, &e);
            assert_memory_equal(x + (size_t)i * PIX, want, sizeof want);
            assert_int_equal(lab[i], labels[idx[i]]);
        }
        /* evaluation ignores the policy */
        float ev[N * PIX];
        sv_make_batch(ev, lab, &ds, idx, N, b, 9, 0);
        for (int i = 0; i < N; i++) {
            sv_eval_image(want, images + idx[i] * PIX, 32, 32);
            assert_memory_equal(ev + (size_t)i * PIX, want, sizeof want);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_match_pil),
        cmocka_unit_test(test_ops_by_hand),
        cmocka_unit_test(test_tables_match_torchvision),
        cmocka_unit_test(test_trivial_draws),
        cmocka_unit_test(test_randaugment_draws),
        cmocka_unit_test(test_make_batch_applies_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
