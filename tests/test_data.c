/* Tests of the data module: CIFAR-10 reader and its validation, the split, the
 * bilinear resize against PyTorch (tests/reference/resize_reference.h5, made by
 * tests/reference/make_resize_reference.py), augmentation, the evaluation
 * transform, the epoch permutation and the augmentation draws. Run from the
 * repository root (real data in SV_TEST_CIFAR). */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "test_util.h"

#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/data.h"
#include "shiftvit/settings.h"

#define REF_H5 "tests/reference/resize_reference.h5"
#define REF_N 3 /* images in the reference file */

/* ------------------------------------------------------------ helpers */

/* Reads dataset `name` of REF_H5 (n elements of mem_type) into buf; checks
 * the element count. */
static void read_ref(const char *name, hid_t mem_type, void *buf, size_t n) {
    hid_t f = H5Fopen(REF_H5, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s (run the tests from the repository root)", REF_H5);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: no dataset %s", REF_H5, name);
    hid_t s = H5Dget_space(d);
    hssize_t npts = H5Sget_simple_extent_npoints(s);
    if (npts != (hssize_t)n) fail_msg("%s:%s has %lld elements, expected %zu", REF_H5, name,
                                      (long long)npts, n);
    assert_true(H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(f);
}

static double max_abs_diff(const float *a, const float *b, size_t n, size_t *where) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) {
            m = d;
            if (where) *where = i;
        }
    }
    return m;
}

#define assert_max_diff(a, b, n, tol)                                             \
    do {                                                                          \
        size_t w_ = 0;                                                            \
        double m_ = max_abs_diff((a), (b), (n), &w_);                             \
        if (!(m_ <= (tol)))                                                       \
            fail_msg("max |%s - %s| = %.3g at %zu (%.7g vs %.7g), tolerance %g", #a, \
                     #b, m_, w_, (double)(a)[w_], (double)(b)[w_], (double)(tol)); \
    } while (0)

/* Raw record `r` (3073 bytes) of a file. */
static void read_raw_record(const char *path, long r, unsigned char *rec) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
    assert_int_equal(fseek(f, r * SV_CIFAR_RECORD, SEEK_SET), 0);
    assert_int_equal(fread(rec, 1, SV_CIFAR_RECORD, f), SV_CIFAR_RECORD);
    fclose(f);
}

/* Checks a loaded NHWC image against the planar record it came from. */
static void assert_image_is_record(const uint8_t *img, const unsigned char *rec) {
    for (int p = 0; p < 1024; p++)
        for (int c = 0; c < 3; c++)
            if (img[3 * p + c] != rec[1 + c * 1024 + p])
                fail_msg("pixel %d channel %d: %u, raw planar byte %u", p, c, img[3 * p + c],
                         rec[1 + c * 1024 + p]);
}

static void u8_to_float(float *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* --------------------------------------------------------------- resize */

/* 2x2 -> 4x4 by hand: source coordinates of dst 0..3 are 0 (clamped from
 * -0.25), 0.25, 0.75, 1 (1.25 with both neighbours at index 1), so with
 * in = [[0, 10], [20, 30]] out(y, x) = 20 * f[y] + 10 * f[x], f = 0, .25, .75, 1. */
static void test_resize_2x2_to_4x4(void **state) {
    (void)state;
    const float in[2 * 2 * 2] = {0, 1, 10, 2, 20, 3, 30, 4}; /* C = 2 */
    const float expect0[16] = {0,  2.5f,  7.5f,  10, 5,  7.5f,  12.5f, 15,
                               15, 17.5f, 22.5f, 25, 20, 22.5f, 27.5f, 30};
    const float f[4] = {0, 0.25f, 0.75f, 1};
    float out[4 * 4 * 2];
    sv_resize_bilinear(out, 4, 4, in, 2, 2, 2);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            assert_close(out[(y * 4 + x) * 2], expect0[y * 4 + x], 0, 1e-6);
            /* channel 1: 1 + f[x] * 1 + f[y] * 2 */
            assert_close(out[(y * 4 + x) * 2 + 1], 1 + f[x] + 2 * f[y], 0, 1e-6);
        }
}

static void test_resize_identity_and_constant(void **state) {
    (void)state;
    float in[5 * 3 * 3], out[5 * 3 * 3], big[9 * 7 * 3];
    for (int i = 0; i < 45; i++) in[i] = (float)(i * 7 % 11) - 3.5f;
    sv_resize_bilinear(out, 5, 3, in, 5, 3, 3); /* same size: exact copy */
    assert_memory_equal(out, in, sizeof in);
    for (int i = 0; i < 45; i++) in[i] = 0.75f;
    sv_resize_bilinear(big, 9, 7, in, 5, 3, 3);
    for (int i = 0; i < 9 * 7 * 3; i++) assert_close(big[i], 0.75, 0, 1e-6);
}

/* Random float maps to odd sizes, up (7x5 -> 11x13) and down (13x11 -> 5x4). */
static void test_resize_maps_vs_torch(void **state) {
    (void)state;
    float a_in[7 * 5 * 2], a_ref[11 * 13 * 2], a_out[11 * 13 * 2];
    float b_in[13 * 11 * 2], b_ref[5 * 4 * 2], b_out[5 * 4 * 2];
    read_ref("map_a_in", H5T_NATIVE_FLOAT, a_in, 70);
    read_ref("map_a_out", H5T_NATIVE_FLOAT, a_ref, 286);
    read_ref("map_b_in", H5T_NATIVE_FLOAT, b_in, 286);
    read_ref("map_b_out", H5T_NATIVE_FLOAT, b_ref, 40);
    sv_resize_bilinear(a_out, 11, 13, a_in, 7, 5, 2);
    sv_resize_bilinear(b_out, 5, 4, b_in, 13, 11, 2);
    assert_max_diff(a_out, a_ref, 286, 1e-5);
    assert_max_diff(b_out, b_ref, 40, 1e-5);
}

/* CIFAR images 32 -> 52 (0..255 units, tolerance 1e-3). */
static void test_resize_images_vs_torch(void **state) {
    (void)state;
    static uint8_t imgs[REF_N * SV_CIFAR_PIXELS];
    static float ref[REF_N * 52 * 52 * 3], in[SV_CIFAR_PIXELS], out[52 * 52 * 3];
    read_ref("images_u8", H5T_NATIVE_UINT8, imgs, sizeof imgs);
    read_ref("resize52", H5T_NATIVE_FLOAT, ref, REF_N * 52 * 52 * 3);
    for (int k = 0; k < REF_N; k++) {
        u8_to_float(in, imgs + k * SV_CIFAR_PIXELS, SV_CIFAR_PIXELS);
        sv_resize_bilinear(out, 52, 52, in, 32, 32, 3);
        assert_max_diff(out, ref + k * 52 * 52 * 3, 52 * 52 * 3, 1e-3);
    }
}

/* The reference images are test_batch records 0..2: the reader must agree. */
static void test_reference_images_match_loader(void **state) {
    (void)state;
    static uint8_t imgs[REF_N * SV_CIFAR_PIXELS];
    uint8_t labels[REF_N];
    read_ref("images_u8", H5T_NATIVE_UINT8, imgs, sizeof imgs);
    read_ref("labels", H5T_NATIVE_UINT8, labels, REF_N);
    const char *p = SV_TEST_CIFAR "/test_batch.bin";
    sv_dataset ds;
    char err[SV_ERR_LEN] = "";
    if (sv_cifar_load(&ds, &p, 1, 0, REF_N, err)) fail_msg("%s", err);
    assert_memory_equal(ds.images, imgs, sizeof imgs);
    assert_memory_equal(ds.labels, labels, REF_N);
    sv_dataset_free(&ds);
}

/* Evaluation transform 32 -> 52 -> 48, / 255, vs PyTorch (tolerance 1e-5). */
static void test_eval_vs_torch(void **state) {
    (void)state;
    static uint8_t imgs[REF_N * SV_CIFAR_PIXELS];
    static float ref[REF_N * 48 * 48 * 3], out[48 * 48 * 3];
    read_ref("images_u8", H5T_NATIVE_UINT8, imgs, sizeof imgs);
    read_ref("eval48", H5T_NATIVE_FLOAT, ref, REF_N * 48 * 48 * 3);
    for (int k = 0; k < REF_N; k++) {
        sv_eval_image(out, imgs + k * SV_CIFAR_PIXELS, 52, 48);
        assert_max_diff(out, ref + k * 48 * 48 * 3, 48 * 48 * 3, 1e-5);
    }
}

/* sv_eval_image equals two explicit sv_resize_bilinear passes for other sizes
 * too (upscale second stage, equal sizes, a wide intermediate). */
static void test_eval_equals_two_resizes(void **state) {
    (void)state;
    static uint8_t imgs[REF_N * SV_CIFAR_PIXELS];
    static float in[SV_CIFAR_PIXELS], mid[1100 * 1100 * 3], ref[64 * 64 * 3], out[64 * 64 * 3];
    read_ref("images_u8", H5T_NATIVE_UINT8, imgs, sizeof imgs);
    u8_to_float(in, imgs, SV_CIFAR_PIXELS);
    const int cases[][2] = {{52, 48}, {40, 40}, {36, 64}, {32, 24}, {1100, 48}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int R = cases[t][0], S = cases[t][1];
        sv_resize_bilinear(mid, R, R, in, 32, 32, 3);
        sv_resize_bilinear(ref, S, S, mid, R, R, 3);
        for (int i = 0; i < S * S * 3; i++) ref[i] /= 255.0f;
        sv_eval_image(out, imgs, R, S);
        assert_max_diff(out, ref, (size_t)S * S * 3, 1e-6);
    }
}

/* ------------------------------------------------------------ augment */

/* Crop (oy, ox) of the 52x52 reference resize, flipped or not, / 255. */
static void crop_of(float *dst, const float *r52, int oy, int ox, int flip) {
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 48; x++) {
            int sx = ox + (flip ? 47 - x : x);
            for (int c = 0; c < 3; c++)
                dst[(y * 48 + x) * 3 + c] = r52[((oy + y) * 52 + sx) * 3 + c] / 255.0f;
        }
}

static void test_augment_crop_and_flip(void **state) {
    (void)state;
    static uint8_t imgs[REF_N * SV_CIFAR_PIXELS];
    static float r52[REF_N * 52 * 52 * 3], out[48 * 48 * 3], outf[48 * 48 * 3],
        ref[48 * 48 * 3];
    read_ref("images_u8", H5T_NATIVE_UINT8, imgs, sizeof imgs);
    read_ref("resize52", H5T_NATIVE_FLOAT, r52, REF_N * 52 * 52 * 3);
    for (int k = 0; k < REF_N; k++) {
        const uint8_t *img = imgs + k * SV_CIFAR_PIXELS;
        const float *r = r52 + k * 52 * 52 * 3;
        /* (0, 0) no flip: the top-left crop */
        sv_augment_image(out, img, 52, 48, 0, 0, 0);
        crop_of(ref, r, 0, 0, 0);
        assert_max_diff(out, ref, 48 * 48 * 3, 1e-5);
        /* flip mirrors it exactly */
        sv_augment_image(outf, img, 52, 48, 0, 0, 1);
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 48; x++)
                for (int c = 0; c < 3; c++)
                    assert_true(outf[(y * 48 + x) * 3 + c] == out[(y * 48 + 47 - x) * 3 + c]);
        /* other offsets */
        const int offs[][3] = {{4, 4, 0}, {2, 3, 1}, {4, 0, 1}, {1, 4, 0}};
        for (int t = 0; t < 4; t++) {
            sv_augment_image(out, img, 52, 48, offs[t][0], offs[t][1], offs[t][2]);
            crop_of(ref, r, offs[t][0], offs[t][1], offs[t][2]);
            assert_max_diff(out, ref, 48 * 48 * 3, 1e-5);
        }
    }
}

/* The draws: offsets in [0, 4], flips balanced, deterministic, keyed by
 * (seed, epoch, sample). */
static void test_augment_draws(void **state) {
    (void)state;
    long hist_y[5] = {0}, hist_x[5] = {0}, flips = 0, same = 0;
    const long N = 10000;
    for (long s = 0; s < N; s++) {
        int oy, ox, fl, oy2, ox2, fl2;
        sv_draw_augment(42, 3, s, 52, 48, &oy, &ox, &fl);
        assert_in_range(oy, 0, 4);
        assert_in_range(ox, 0, 4);
        assert_in_range(fl, 0, 1);
        hist_y[oy]++;
        hist_x[ox]++;
        flips += fl;
        sv_draw_augment(42, 3, s, 52, 48, &oy2, &ox2, &fl2);
        assert_int_equal(oy, oy2);
        assert_int_equal(ox, ox2);
        assert_int_equal(fl, fl2);
        sv_draw_augment(42, 4, s, 52, 48, &oy2, &ox2, &fl2);
        same += oy == oy2 && ox == ox2 && fl == fl2;
    }
    /* expected 5000 +- 50 (1 sd); 2000 +- 40 per offset */
    assert_in_range(flips, 4800, 5200);
    for (int v = 0; v < 5; v++) {
        assert_in_range(hist_y[v], 1840, 2160);
        assert_in_range(hist_x[v], 1840, 2160);
    }
    /* another epoch draws anew: P(all equal) = 1/50 per sample */
    assert_in_range(same, 100, 320);
    /* crop range 0 (resize == image) gives offset 0 */
    int oy, ox, fl;
    sv_draw_augment(7, 0, 0, 48, 48, &oy, &ox, &fl);
    assert_int_equal(oy, 0);
    assert_int_equal(ox, 0);
}

/* ------------------------------------------------- translate and cutout */

/* Independent reference of the translation: pad the S x S image with t zero
 * pixels on every side, then crop S x S at (t - dy, t - dx): the torchvision
 * RandomCrop(S, padding=t) formulation. */
static void pad_and_crop(float *dst, const float *src, int S, int t, int dy, int dx) {
    const int P = S + 2 * t;
    float *pad = calloc((size_t)P * P * 3, sizeof(float));
    assert_non_null(pad);
    for (int y = 0; y < S; y++)
        memcpy(pad + ((size_t)(y + t) * P + t) * 3, src + (size_t)y * S * 3, (size_t)S * 3 * sizeof(float));
    for (int y = 0; y < S; y++)
        memcpy(dst + (size_t)y * S * 3, pad + ((size_t)(y + t - dy) * P + (t - dx)) * 3,
               (size_t)S * 3 * sizeof(float));
    free(pad);
}

static void fill_pattern(float *img, int S) {
    for (int i = 0; i < S * S * 3; i++) img[i] = 1.0f + (float)i; /* no zeros */
}

/* Every translation of a 7x7 image up to 3 pixels (the borders included:
 * +-3 leaves 4 columns) equals the pad-and-crop reference; moves of 7 or more
 * leave a black image. */
static void test_translate_against_pad_and_crop(void **state) {
    (void)state;
    enum { S = 7, T = 3 };
    float src[S * S * 3], got[S * S * 3], ref[S * S * 3];
    fill_pattern(src, S);
    for (int dy = -T; dy <= T; dy++)
        for (int dx = -T; dx <= T; dx++) {
            memcpy(got, src, sizeof got);
            sv_extra_augment e = {dy, dx, 0, 0, 0};
            sv_translate_cutout(got, S, &e);
            pad_and_crop(ref, src, S, T, dy, dx);
            assert_memory_equal(got, ref, sizeof got);
        }
    /* hand-computed: dy = 1, dx = -2 moves pixel (0, 2) to (1, 0) */
    memcpy(got, src, sizeof got);
    sv_extra_augment e = {1, -2, 0, 0, 0};
    sv_translate_cutout(got, S, &e);
    assert_true(got[(1 * S + 0) * 3 + 1] == src[(0 * S + 2) * 3 + 1]);
    assert_true(got[(0 * S + 3) * 3] == 0.0f);         /* row 0 comes from outside */
    assert_true(got[(4 * S + S - 1) * 3 + 2] == 0.0f); /* so do the last 2 columns */
    sv_extra_augment far = {0, S, 0, 0, 0};
    memcpy(got, src, sizeof got);
    sv_translate_cutout(got, S, &far);
    for (int i = 0; i < S * S * 3; i++) assert_true(got[i] == 0.0f);
}

/* Cutout zeroes exactly the box [c - k/2, c - k/2 + k) clipped to the image,
 * for boxes inside, across each border and at the corners (even and odd k). */
static void test_cutout_boxes(void **state) {
    (void)state;
    enum { S = 8 };
    const int cases[][3] = {{4, 4, 4}, {0, 0, 4}, {7, 7, 4}, {0, 7, 3}, {3, 0, 5}, {7, 2, 8}, {4, 4, 1}};
    float src[S * S * 3], got[S * S * 3];
    fill_pattern(src, S);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int cy = cases[c][0], cx = cases[c][1], k = cases[c][2];
        memcpy(got, src, sizeof got);
        sv_extra_augment e = {0, 0, cy, cx, k};
        sv_translate_cutout(got, S, &e);
        long zeros = 0;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int in = y >= cy - k / 2 && y < cy - k / 2 + k && x >= cx - k / 2 && x < cx - k / 2 + k;
                for (int ch = 0; ch < 3; ch++) {
                    float v = got[(y * S + x) * 3 + ch];
                    assert_true(v == (in ? 0.0f : src[(y * S + x) * 3 + ch]));
                    zeros += v == 0.0f;
                }
            }
        /* the clipped box's area, counted by hand per case */
        static const long area[] = {16, 4, 9, 4, 15, 30, 1};
        assert_int_equal(zeros, 3 * area[c]);
    }
}

/* The draws: dy, dx uniform in [-t, t], box centres uniform over the image,
 * deterministic per (seed, epoch, sample), independent of crop and flip; off
 * draws nothing. */
static void test_extra_draws(void **state) {
    (void)state;
    long hist[7] = {0}, cy_hist[4] = {0}, same = 0;
    const long N = 14000;
    for (long s = 0; s < N; s++) {
        sv_extra_augment e = sv_draw_extra(42, 2, s, 3, 5, 4), f = sv_draw_extra(42, 2, s, 3, 5, 4);
        assert_memory_equal(&e, &f, sizeof e);
        assert_in_range(e.dy + 3, 0, 6);
        assert_in_range(e.dx + 3, 0, 6);
        assert_in_range(e.cy, 0, 3);
        assert_in_range(e.cx, 0, 3);
        assert_int_equal(e.cutout, 5);
        hist[e.dy + 3]++;
        cy_hist[e.cy]++;
        sv_extra_augment g = sv_draw_extra(42, 3, s, 3, 5, 4);
        same += g.dy == e.dy && g.dx == e.dx;
    }
    for (int v = 0; v < 7; v++) assert_in_range(hist[v], 1850, 2150); /* 2000 +- 41 sd */
    for (int v = 0; v < 4; v++) assert_in_range(cy_hist[v], 3320, 3680); /* 3500 +- 51 */
    assert_in_range(same, 180, 400); /* 1/49 of 14000 = 286 */
    sv_extra_augment off = sv_draw_extra(42, 2, 9, 0, 0, 4);
    assert_int_equal(off.dy, 0);
    assert_int_equal(off.dx, 0);
    assert_int_equal(off.cutout, 0);
}

/* The first `count` records of test_batch.bin, and a config for batches of
 * them: 52 -> 48 crops with augmentation, seed 42, the other keys 0. */
static void batch_fixture(sv_dataset *ds, long count, sv_config *cfg) {
    const char *pt = SV_TEST_CIFAR "/test_batch.bin";
    char err[SV_ERR_LEN] = "";
    if (sv_cifar_load(ds, &pt, 1, 0, count, err)) fail_msg("%s", err);
    memset(cfg, 0, sizeof *cfg);
    cfg->image_size = 48;
    cfg->resize_size = 52;
    cfg->augment = 1;
    cfg->seed = 42;
}

/* data.flip = alternate (airbench): epoch 0's flip is random's draw of
 * epoch 0 (about half the images), and from then on every image's flip
 * changes from each epoch to the next; random keeps its own draw per epoch
 * (the same as sv_draw_augment's), which agrees with alternate's in about
 * half the images after epoch 0. A batch at epoch 3 shows the images
 * mirrored as the draw says. */
static void test_alternating_flip(void **state) {
    (void)state;
    enum { N = 10000, EPOCHS = 6 };
    long flips0 = 0, agree_random[EPOCHS] = {0};
    for (long s = 0; s < N; s++) {
        int oy, ox, fl0;
        sv_draw_augment(42, 0, s, 52, 48, &oy, &ox, &fl0);
        int f0 = sv_draw_flip(42, 0, s, SV_FLIP_ALTERNATE);
        assert_int_equal(f0, fl0);
        assert_int_equal(sv_draw_flip(42, 0, s, SV_FLIP_RANDOM), fl0);
        flips0 += f0;
        int prev = f0;
        for (long e = 1; e < EPOCHS; e++) {
            int f = sv_draw_flip(42, e, s, SV_FLIP_ALTERNATE), fl;
            if (f == prev) fail_msg("sample %ld: alternate flip %d in epochs %ld and %ld", s, f, e - 1, e);
            assert_int_equal(f, f0 ^ (int)(e % 2));
            sv_draw_augment(42, e, s, 52, 48, &oy, &ox, &fl);
            assert_int_equal(sv_draw_flip(42, e, s, SV_FLIP_RANDOM), fl);
            agree_random[e] += f == fl;
            prev = f;
        }
    }
    assert_in_range(flips0, 4800, 5200); /* 1/2 within 4 standard deviations */
    for (int e = 1; e < EPOCHS; e++) assert_in_range(agree_random[e], 4800, 5200);
    /* another seed, another epoch-0 draw */
    long same = 0;
    for (long s = 0; s < N; s++) same += sv_draw_flip(42, 0, s, SV_FLIP_ALTERNATE) == sv_draw_flip(43, 0, s, SV_FLIP_ALTERNATE);
    assert_in_range(same, 4800, 5200);

    sv_dataset ds;
    sv_config cfg;
    batch_fixture(&ds, 8, &cfg);
    cfg.flip = SV_FLIP_ALTERNATE;
    enum { B = 8, PER = 48 * 48 * 3 };
    const long idx[B] = {0, 1, 2, 3, 4, 5, 6, 7};
    static float x[B * PER], ref[PER];
    sv_make_batch(x, NULL, &ds, idx, B, sv_batch_settings_from(&cfg), 3, 1);
    for (int i = 0; i < B; i++) {
        int oy, ox, fl, oy0, ox0, f0;
        sv_draw_augment(42, 0, idx[i], 52, 48, &oy0, &ox0, &f0); /* epoch 0's flip */
        sv_draw_augment(42, 3, idx[i], 52, 48, &oy, &ox, &fl);   /* epoch 3's crop */
        /* epoch 3 is odd: mirrored against epoch 0 */
        sv_augment_image(ref, ds.images + idx[i] * SV_CIFAR_PIXELS, 52, 48, oy, ox, !f0);
        assert_memory_equal(x + i * PER, ref, sizeof ref);
    }
    sv_dataset_free(&ds);
}

/* sv_flip_images mirrors every row of every image and is its own inverse. */
static void test_flip_images(void **state) {
    (void)state;
    enum { N = 3, S = 5 };
    float x[N * S * S * 3], orig[N * S * S * 3];
    for (int i = 0; i < N * S * S * 3; i++) x[i] = orig[i] = (float)i;
    sv_flip_images(x, N, S);
    for (int n = 0; n < N; n++)
        for (int y = 0; y < S; y++)
            for (int c = 0; c < S; c++)
                for (int ch = 0; ch < 3; ch++)
                    assert_true(x[((n * S + y) * S + c) * 3 + ch] ==
                                orig[((n * S + y) * S + (S - 1 - c)) * 3 + ch]);
    sv_flip_images(x, N, S);
    assert_memory_equal(x, orig, sizeof x);
}

static void test_epoch_permutation(void **state) {
    (void)state;
    const long n = 40000;
    long *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q), *r = malloc(n * sizeof *r);
    char *seen = calloc(n, 1);
    assert_non_null(p);
    assert_non_null(q);
    assert_non_null(r);
    assert_non_null(seen);
    sv_epoch_permutation(p, n, 42, 0);
    sv_epoch_permutation(q, n, 42, 0);
    sv_epoch_permutation(r, n, 42, 1);
    long fixed = 0, same = 0;
    for (long i = 0; i < n; i++) {
        assert_in_range(p[i], 0, n - 1);
        assert_int_equal(seen[p[i]], 0);
        seen[p[i]] = 1;
        fixed += p[i] == i;
        same += p[i] == r[i];
    }
    assert_memory_equal(p, q, n * sizeof *p);
    assert_true(fixed < 10); /* about 1 expected */
    assert_true(same < 10);  /* epochs differ */
    sv_epoch_permutation(q, n, 43, 0); /* so do seeds */
    assert_memory_not_equal(p, q, n * sizeof *p);
    /* small n: every permutation of 3 appears over epochs */
    int counts[6] = {0};
    for (long e = 0; e < 600; e++) {
        long s[3];
        sv_epoch_permutation(s, 3, 1, e);
        assert_int_equal(s[0] + s[1] + s[2], 3);
        int code = (int)(s[0] * 2 + (s[1] > s[2]));
        counts[code]++;
    }
    for (int c = 0; c < 6; c++) assert_in_range(counts[c], 60, 140);
    long one[1] = {-1};
    sv_epoch_permutation(one, 1, 1, 0);
    assert_int_equal(one[0], 0);
    sv_epoch_permutation(NULL, 0, 1, 0); /* n = 0 touches nothing */
    free(p);
    free(q);
    free(r);
    free(seen);
}

/* -------------------------------------------------------------- loading */

static void test_load_first_labels(void **state) {
    (void)state;
    const uint8_t train0[10] = {6, 9, 9, 4, 1, 1, 2, 7, 8, 3};
    const uint8_t test0[10] = {3, 8, 8, 0, 6, 6, 1, 6, 3, 1};
    const char *p1 = SV_TEST_CIFAR "/data_batch_1.bin", *pt = SV_TEST_CIFAR "/test_batch.bin";
    sv_dataset ds;
    char err[SV_ERR_LEN] = "";
    if (sv_cifar_load(&ds, &p1, 1, 0, 10, err)) fail_msg("%s", err);
    assert_int_equal(ds.count, 10);
    assert_memory_equal(ds.labels, train0, 10);
    sv_dataset_free(&ds);
    assert_null(ds.images);
    if (sv_cifar_load(&ds, &pt, 1, 0, 10, err)) fail_msg("%s", err);
    assert_memory_equal(ds.labels, test0, 10);
    sv_dataset_free(&ds);

    long n = 0;
    if (sv_cifar_check_file(p1, &n, err)) fail_msg("%s", err);
    assert_int_equal(n, SV_CIFAR_RECORDS_PER_FILE);
}

/* Planar -> NHWC, also across the boundary between two files. */
static void test_load_nhwc_across_files(void **state) {
    (void)state;
    const char *paths[2] = {SV_TEST_CIFAR "/data_batch_1.bin", SV_TEST_CIFAR "/data_batch_2.bin"};
    unsigned char rec[SV_CIFAR_RECORD];
    sv_dataset ds;
    char err[SV_ERR_LEN] = "";
    if (sv_cifar_load(&ds, paths, 2, 9998, 4, err)) fail_msg("%s", err);
    assert_int_equal(ds.count, 4);
    for (int k = 0; k < 4; k++) {
        read_raw_record(paths[k < 2 ? 0 : 1], k < 2 ? 9998 + k : k - 2, rec);
        assert_int_equal(ds.labels[k], rec[0]);
        assert_image_is_record(ds.images + (size_t)k * SV_CIFAR_PIXELS, rec);
    }
    /* one pixel spelled out: record 9999, row 5, column 7 */
    read_raw_record(paths[0], 9999, rec);
    const uint8_t *px = ds.images + SV_CIFAR_PIXELS + (5 * 32 + 7) * 3;
    assert_int_equal(px[0], rec[1 + 5 * 32 + 7]);
    assert_int_equal(px[1], rec[1 + 1024 + 5 * 32 + 7]);
    assert_int_equal(px[2], rec[1 + 2048 + 5 * 32 + 7]);
    sv_dataset_free(&ds);
}

static void test_load_splits(void **state) {
    (void)state;
    const uint8_t test0[10] = {3, 8, 8, 0, 6, 6, 1, 6, 3, 1};
    unsigned char rec[SV_CIFAR_RECORD];
    sv_dataset tr, va, te;
    char err[SV_ERR_LEN] = "";
    /* small sizes: val starts at record train_size */
    if (sv_cifar_load_splits(SV_TEST_CIFAR, 100, 50, 20, &tr, &va, &te, err)) fail_msg("%s", err);
    assert_int_equal(tr.count, 100);
    assert_int_equal(va.count, 50);
    assert_int_equal(te.count, 20);
    read_raw_record(SV_TEST_CIFAR "/data_batch_1.bin", 100, rec);
    assert_int_equal(va.labels[0], rec[0]);
    assert_image_is_record(va.images, rec);
    read_raw_record(SV_TEST_CIFAR "/data_batch_1.bin", 99, rec);
    assert_image_is_record(tr.images + 99 * SV_CIFAR_PIXELS, rec);
    assert_memory_equal(te.labels, test0, 10);
    sv_dataset_free(&tr);
    sv_dataset_free(&va);
    sv_dataset_free(&te);

    /* val crossing into data_batch_2, test = all */
    if (sv_cifar_load_splits(SV_TEST_CIFAR, 9990, 20, 0, &tr, &va, &te, err)) fail_msg("%s", err);
    assert_int_equal(te.count, 10000);
    read_raw_record(SV_TEST_CIFAR "/data_batch_2.bin", 0, rec);
    assert_image_is_record(va.images + 10 * SV_CIFAR_PIXELS, rec);
    sv_dataset_free(&tr);
    sv_dataset_free(&va);
    sv_dataset_free(&te);

    /* the recipe split: val = data_batch_5; only val and test asked for */
    if (sv_cifar_load_splits(SV_TEST_CIFAR, 40000, 10000, 0, NULL, &va, &te, err))
        fail_msg("%s", err);
    assert_int_equal(va.count, 10000);
    read_raw_record(SV_TEST_CIFAR "/data_batch_5.bin", 0, rec);
    assert_image_is_record(va.images, rec);
    read_raw_record(SV_TEST_CIFAR "/data_batch_5.bin", 9999, rec);
    assert_image_is_record(va.images + 9999L * SV_CIFAR_PIXELS, rec);
    long hist[10] = {0};
    for (long i = 0; i < va.count; i++) hist[va.labels[i]]++;
    assert_int_equal(hist[0], 1014); /* data/README.md class counts */
    assert_int_equal(hist[9], 1022);
    sv_dataset_free(&va);
    sv_dataset_free(&te);

    /* too many records */
    assert_int_equal(sv_cifar_load_splits(SV_TEST_CIFAR, 45000, 10000, 0, &tr, &va, &te, err), -1);
    assert_contains(err, "55000");
    assert_contains(err, "50000");
    assert_contains(err, "data_batch_1");
    assert_null(tr.images);
    assert_int_equal(sv_cifar_load_splits(SV_TEST_CIFAR, 10, 10, 10001, &tr, &va, &te, err), -1);
    assert_contains(err, "10001");
    assert_contains(err, "test_batch.bin");
    assert_null(tr.images);
    assert_null(va.images);
    assert_int_equal(sv_cifar_load_splits(SV_TEST_CIFAR, -1, 10, 0, &tr, &va, &te, err), -1);
    assert_contains(err, "-1");

    const char *p1 = SV_TEST_CIFAR "/data_batch_1.bin";
    assert_int_equal(sv_cifar_load(&tr, &p1, 1, 9990, 20, err), -1);
    assert_contains(err, "data_batch_1.bin");
    assert_contains(err, "10000 records");
    assert_contains(err, "10010");
    assert_null(tr.images);
}

/* --------------------------------------------------------- bad inputs */

static char g_tmp[64];    /* mkdtemp folder for the bad-file tests */
static char g_root[4096]; /* the directory the tests started in */

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_tmp, name);
}

/* A valid record with the given label and a pixel pattern. */
static void make_record(unsigned char *rec, unsigned label) {
    rec[0] = (unsigned char)label;
    for (int i = 1; i < SV_CIFAR_RECORD; i++) rec[i] = (unsigned char)(i * 31 + label);
}

static void expect_check_error(const char *name, const char *n1, const char *n2) {
    char path[256], err[SV_ERR_LEN] = "";
    long n = 77;
    tmp_path(path, sizeof path, name);
    assert_int_equal(sv_cifar_check_file(path, &n, err), -1);
    assert_contains(err, path);
    if (n1) assert_contains(err, n1);
    if (n2) assert_contains(err, n2);
    /* loading reports the same problem */
    sv_dataset ds;
    const char *p = path;
    char err2[SV_ERR_LEN] = "";
    assert_int_equal(sv_cifar_load(&ds, &p, 1, 0, 1, err2), -1);
    assert_string_equal(err2, err);
    assert_null(ds.images);
}

static void test_bad_files(void **state) {
    (void)state;
    static unsigned char buf[4 * SV_CIFAR_RECORD];
    char path[256];

    tmp_path(path, sizeof path, "empty.bin");
    sv_test_write_file(path, buf, 0);
    expect_check_error("empty.bin", "empty", NULL);

    tmp_path(path, sizeof path, "short.bin"); /* one record minus its last byte */
    sv_test_write_file(path, buf, 3072);
    expect_check_error("short.bin", "3072 bytes", "remainder 3072");

    make_record(buf, 1);
    make_record(buf + SV_CIFAR_RECORD, 2);
    tmp_path(path, sizeof path, "tail.bin"); /* 2 records + 100 stray bytes */
    sv_test_write_file(path, buf, 2 * SV_CIFAR_RECORD + 100);
    expect_check_error("tail.bin", "6246 bytes", "remainder 100");

    make_record(buf + SV_CIFAR_RECORD, 10);
    tmp_path(path, sizeof path, "label10.bin");
    sv_test_write_file(path, buf, 2 * SV_CIFAR_RECORD);
    expect_check_error("label10.bin", "record 1 ", "label 10");

    make_record(buf, 255);
    tmp_path(path, sizeof path, "label255.bin");
    sv_test_write_file(path, buf, SV_CIFAR_RECORD);
    expect_check_error("label255.bin", "record 0 ", "label 255");

    tmp_path(path, sizeof path, "data_batch_1.bin");
    assert_int_equal(mkdir(path, 0755), 0);
    expect_check_error("data_batch_1.bin", "directory", NULL);

    expect_check_error("missing.bin", strerror(ENOENT), NULL);

    /* a good small file, then one bad file in a list: the message names it */
    for (int k = 0; k < 4; k++) make_record(buf + k * SV_CIFAR_RECORD, (unsigned)k * 3);
    char good[256], bad[256], err[SV_ERR_LEN] = "";
    tmp_path(good, sizeof good, "good.bin");
    sv_test_write_file(good, buf, 4 * SV_CIFAR_RECORD);
    long n = 0;
    if (sv_cifar_check_file(good, &n, err)) fail_msg("%s", err);
    assert_int_equal(n, 4);
    tmp_path(bad, sizeof bad, "label10.bin");
    const char *list[2] = {good, bad};
    sv_dataset ds;
    assert_int_equal(sv_cifar_load(&ds, list, 2, 0, 2, err), -1);
    assert_contains(err, bad);
    /* the good file alone loads, labels and pixels as written */
    if (sv_cifar_load(&ds, list, 1, 1, 3, err)) fail_msg("%s", err);
    assert_int_equal(ds.labels[0], 3);
    assert_int_equal(ds.labels[2], 9);
    assert_image_is_record(ds.images, buf + SV_CIFAR_RECORD);
    sv_dataset_free(&ds);
    assert_int_equal(sv_cifar_load(&ds, list, 1, 3, 2, err), -1);
    assert_contains(err, "fewer");
    assert_contains(err, good);

    /* a split over a folder whose data_batch_1.bin is a directory */
    sv_dataset tr, va, te;
    assert_int_equal(sv_cifar_load_splits(g_tmp, 10, 10, 0, &tr, &va, &te, err), -1);
    assert_contains(err, "data_batch_1.bin");
    assert_contains(err, "directory");
}

/* ------------------------------------------------------ data directory */

static void test_find_data_dir(void **state) {
    (void)state;
    char out[SV_PATH_LEN], err[SV_ERR_LEN] = "";
    char empty_dir[256], missing[256];
    tmp_path(empty_dir, sizeof empty_dir, "nodata");
    assert_int_equal(mkdir(empty_dir, 0755), 0);
    tmp_path(missing, sizeof missing, "no-such-dir");

    /* explicit folders that lack the files are errors naming them */
    assert_int_equal(sv_find_data_dir(empty_dir, NULL, out, err), -1);
    assert_contains(err, empty_dir);
    assert_contains(err, "--data-dir");
    assert_contains(err, "data_batch_1.bin");
    assert_int_equal(sv_find_data_dir(missing, "", out, err), -1);
    assert_contains(err, missing);
    assert_contains(err, strerror(ENOENT));
    assert_int_equal(sv_find_data_dir("", empty_dir, out, err), -1);
    assert_contains(err, empty_dir);
    assert_contains(err, "data.dir");
    assert_int_equal(sv_find_data_dir(g_tmp, NULL, out, err), -1); /* data_batch_1.bin is a dir */
    assert_contains(err, g_tmp);

    /* first found wins: cli, then the config */
    if (sv_find_data_dir(SV_TEST_CIFAR, empty_dir, out, err)) fail_msg("%s", err);
    assert_string_equal(out, SV_TEST_CIFAR);
    if (sv_find_data_dir(NULL, SV_TEST_CIFAR, out, err)) fail_msg("%s", err);
    assert_string_equal(out, SV_TEST_CIFAR);

    /* $CIFAR10_DIR, then the default places */
    const char *old = getenv("CIFAR10_DIR");
    char saved[SV_PATH_LEN] = "";
    if (old) snprintf(saved, sizeof saved, "%s", old);
    setenv("CIFAR10_DIR", SV_TEST_CIFAR "/", 1);
    if (sv_find_data_dir("", "", out, err)) fail_msg("%s", err);
    assert_string_equal(out, SV_TEST_CIFAR "/");
    setenv("CIFAR10_DIR", empty_dir, 1); /* falls through to the defaults */
    if (sv_find_data_dir(NULL, NULL, out, err)) fail_msg("%s", err);
    assert_true(strcmp(out, "data/cifar-10-batches-bin") == 0 ||
                strcmp(out, "../shared/data/cifar-10-batches-bin") == 0);

    /* nothing anywhere: every place tried, and how to get the data */
    unsetenv("CIFAR10_DIR");
    assert_int_equal(chdir(empty_dir), 0);
    int rc = sv_find_data_dir(NULL, NULL, out, err);
    assert_int_equal(chdir(g_root), 0);
    if (old) setenv("CIFAR10_DIR", saved, 1);
    assert_int_equal(rc, -1);
    assert_contains(err, "CIFAR10_DIR");
    assert_contains(err, "data/cifar-10-batches-bin");
    assert_contains(err, "../shared/data/cifar-10-batches-bin");
    assert_contains(err, "scripts/get-cifar10.sh");
    assert_contains(err, "--data-dir");
}

/* ----------------------------------------------------------------- batch */

static void test_make_batch(void **state) {
    (void)state;
    sv_dataset ds;
    sv_config cfg;
    batch_fixture(&ds, 20, &cfg);
    enum { N = 6, PER = 48 * 48 * 3 };
    const long idx[N] = {5, 0, 19, 7, 5, 12};
    static float x[N * PER], ref[PER];
    int labels[N];

    sv_make_batch(x, labels, &ds, idx, N, sv_batch_settings_from(&cfg), 3, 1);
    for (int i = 0; i < N; i++) {
        int oy, ox, fl;
        assert_int_equal(labels[i], ds.labels[idx[i]]);
        sv_draw_augment(42, 3, idx[i], 52, 48, &oy, &ox, &fl);
        sv_augment_image(ref, ds.images + idx[i] * SV_CIFAR_PIXELS, 52, 48, oy, ox, fl);
        assert_memory_equal(x + i * PER, ref, sizeof ref);
    }
    /* keyed by the sample index, not the position in the batch */
    assert_memory_equal(x, x + 4 * PER, sizeof ref);

    /* evaluation, and training with augment off, use the eval transform */
    for (int train = 0; train < 2; train++) {
        cfg.augment = train ? 0 : 1;
        memset(labels, -1, sizeof labels);
        sv_make_batch(x, labels, &ds, idx, N, sv_batch_settings_from(&cfg), 3, train);
        for (int i = 0; i < N; i++) {
            assert_int_equal(labels[i], ds.labels[idx[i]]);
            sv_eval_image(ref, ds.images + idx[i] * SV_CIFAR_PIXELS, 52, 48);
            assert_memory_equal(x + i * PER, ref, sizeof ref);
        }
    }
    float lo = 1, hi = 0;
    for (int i = 0; i < N * PER; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    assert_true(lo >= 0.0f && hi <= 1.0f && hi > 0.5f);
    sv_dataset_free(&ds);
}

/* ----------------------------------------------------------------- main */

static int group_setup(void **state) {
    (void)state;
    if (!getcwd(g_root, sizeof g_root)) return -1;
    return sv_test_mkdtemp(g_tmp, sizeof g_tmp, "sv_test_data");
}

static int group_teardown(void **state) {
    (void)state;
    if (chdir(g_root) != 0) return -1;
    return sv_test_rm_rf(g_tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_2x2_to_4x4),
        cmocka_unit_test(test_resize_identity_and_constant),
        cmocka_unit_test(test_resize_maps_vs_torch),
        cmocka_unit_test(test_resize_images_vs_torch),
        cmocka_unit_test(test_reference_images_match_loader),
        cmocka_unit_test(test_eval_vs_torch),
        cmocka_unit_test(test_eval_equals_two_resizes),
        cmocka_unit_test(test_augment_crop_and_flip),
        cmocka_unit_test(test_augment_draws),
        cmocka_unit_test(test_epoch_permutation),
        cmocka_unit_test(test_load_first_labels),
        cmocka_unit_test(test_load_nhwc_across_files),
        cmocka_unit_test(test_load_splits),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_find_data_dir),
        cmocka_unit_test(test_make_batch),
        cmocka_unit_test(test_translate_against_pad_and_crop),
        cmocka_unit_test(test_cutout_boxes),
        cmocka_unit_test(test_extra_draws),
        cmocka_unit_test(test_flip_images),
        cmocka_unit_test(test_alternating_flip),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
