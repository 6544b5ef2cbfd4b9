/* Independent check of `shiftvit predict` (issue 4 "Verification"): trains the
 * tiny config for one epoch on real CIFAR-10, then classifies photos of
 * ../shared/data/inference_set both with `build/shiftvit predict --json`
 * (or $BUILD/shiftvit) and with tests/reference/compare_checkpoint.py, which
 * loads the checkpoint's /model tensors and /config into the PyTorch reference
 * model (python/shiftvit/model.py, written from SPEC.md) and applies
 * the SPEC inference chain itself (PIL decode, nearest 32x32 with half-pixel
 * centres, bilinear 32 -> resize_size -> image_size, / 255, softmax).
 *
 * predict decodes JPEG with libjpeg-turbo, the library (Debian's
 * libjpeg62-turbo, same settings) PIL decodes with, so the pixels are equal
 * (results/image_decoding/README.md: 0 of 589,824 values differ on the 12 photos;
 * with stb_image they differed by up to 3 grey levels on 5.6%). So
 *   1. the comparison (1e-4 relative per probability, 1e-7 absolute floor)
 *      runs on lossless PNG copies of 4 photos (predict's decode of the JPEG,
 *      written with stb_image_write), plus PNGs that exercise the
 *      nearest-neighbour convention: a 100x75 crop (non-integer ratios), a
 *      24x20 crop (upsampling) and a 40x50 grayscale crop;
 *   2. predict on each JPEG prints exactly what it prints on the PNG of its
 *      decode (so the JPEG path is the chain checked in 1);
 *   3. on the JPEG files themselves the two programs agree to the same 1e-4
 *      (2e-2 relative and 1e-3 absolute while predict used stb_image) and on
 *      the top class;
 *   4. the script's own self-check: its nearest neighbour equals PIL NEAREST
 *      and TF2's (x + 0.5) * scale (128 -> 32 picks source pixel 4i + 2, as
 *      src/cli/cmd_predict.c's resize_nearest does).
 *
 * Needs /usr/bin/python3 with torch, h5py, numpy and PIL (Debian packages);
 * without them the tests are skipped. Run from the repository root; files go
 * to a mkdtemp directory under /tmp, removed at the end (kept with
 * SV_TEST_KEEP=1). SV_TEST_PERTURB=1 sets every tolerance to 0 and changes one
 * printed probability, so every comparison must fail. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb_image_write.h> /* implementation: tests/test_util.c */

#include "test_util.h"

#include "shiftvit/image.h"

#define TINY "configs/tiny.ini"
#define INFERENCE_SET SV_TEST_SHARED "/data/inference_set"
#define REFERENCE "tests/reference/compare_checkpoint.py"
#define PYTHON "/usr/bin/python3"
#define RTOL 1e-4       /* per probability, relative */
#define ATOL 1e-7       /* absolute floor */
#define JPEG_RTOL RTOL  /* the same JPEG decoder (was 2e-2 and 1e-3 with stb_image) */
#define JPEG_ATOL ATOL
#define K 10
#define MAX_IMAGES 16

static const char *const photos[] = {"000_cat", "003_airplane", "006_automobile", "011_bird"};
#define NPHOTOS (int)(sizeof photos / sizeof *photos)

static char g_tmp[64], g_ckpt[256];
static char g_bin[256] = "build/shiftvit";
static int g_have_python = 0, g_perturb = 0;
static double g_rtol = RTOL, g_atol = ATOL, g_jpeg_rtol = JPEG_RTOL, g_jpeg_atol = JPEG_ATOL;

/* ------------------------------------------------------------ helpers */

/* Runs cmd with stdout to a file, stderr to another; returns stdout (caller
 * frees). Fails the test unless cmd exits 0. */
static char *run_cmd(const char *cmd_body, const char *tag) {
    char out[256], err[256], *e;
    int status;
    snprintf(out, sizeof out, "%s/%s.out", g_tmp, tag);
    snprintf(err, sizeof err, "%s/%s.err", g_tmp, tag);
    char *o = sv_test_run_split(cmd_body, out, err, &status, &e);
    if (status != 0) {
        print_error("command: %s\n", cmd_body);
        fail_msg("%s exited with status %d; stderr:\n%s", tag, status, e);
    }
    free(e);
    return o;
}

/* One parsed JSON line: the file name and the probabilities. */
typedef struct {
    char file[512];
    double p[K];
    char text[K][40]; /* the numbers as printed */
} result;

/* Parses every {"file": ..., "probabilities": [...]} line (predict's compact
 * JSON and the script's json.dumps spacing alike). Returns the count. */
static int parse_json_lines(const char *out, result *res, int cap, const char *who) {
    int n = 0;
    for (const char *line = out; *line && n < cap;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *f = strstr(line, "\"file\"");
        if (f && f < line + len) {
            result *r = &res[n];
            memset(r, 0, sizeof *r);
            f = strchr(f + 6, '"');
            if (!f) fail_msg("%s: bad JSON line: %.*s", who, (int)len, line);
            const char *e = strchr(f + 1, '"');
            snprintf(r->file, sizeof r->file, "%.*s", (int)(e - f - 1), f + 1);
            const char *p = strstr(line, "\"probabilities\"");
            if (!p || p > line + len) fail_msg("%s: no probabilities in: %.*s", who, (int)len, line);
            p = strchr(p, '[');
            assert_non_null(p);
            p++;
            for (int k = 0; k < K; k++) {
                while (*p == ' ') p++;
                char *end;
                r->p[k] = strtod(p, &end);
                if (end == p) fail_msg("%s: cannot read probability %d of %s", who, k, r->file);
                snprintf(r->text[k], sizeof r->text[k], "%.*s", (int)(end - p), p);
                p = end;
                while (*p == ' ') p++;
                if (k < K - 1 && *p++ != ',') fail_msg("%s: fewer than %d probabilities for %s", who, K, r->file);
            }
            while (*p == ' ') p++;
            if (*p != ']') fail_msg("%s: more than %d probabilities for %s", who, K, r->file);
            n++;
        }
        line += len + (eol ? 1 : 0);
    }
    return n;
}

/* All inputs (the PNGs, then the JPEG photos) classified once by predict and
 * once by the reference script (with its --self-check first): torch takes
 * seconds to import on a loaded machine. */
static const char *g_files[MAX_IMAGES];
static int g_nfiles = 0, g_done = 0;
static result g_c[MAX_IMAGES], g_py[MAX_IMAGES];
static char *g_py_out = NULL;

static void classify_all(void) {
    if (g_done) return;
    char list[4096] = "", body[8192];
    for (int i = 0; i < g_nfiles; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, " '%s'", g_files[i]);
    }
    snprintf(body, sizeof body, "%s predict --json --checkpoint %s%s", g_bin, g_ckpt, list);
    char *out = run_cmd(body, "predict");
    int nc = parse_json_lines(out, g_c, MAX_IMAGES, "predict");
    free(out);
    snprintf(body, sizeof body, "OMP_NUM_THREADS=1 %s %s --self-check %s%s", PYTHON, REFERENCE, g_ckpt, list);
    g_py_out = run_cmd(body, "reference");
    int np = parse_json_lines(g_py_out, g_py, MAX_IMAGES, "reference");
    assert_int_equal(nc, g_nfiles);
    assert_int_equal(np, g_nfiles);
    for (int i = 0; i < g_nfiles; i++) {
        assert_string_equal(g_c[i].file, g_files[i]);
        assert_string_equal(g_py[i].file, g_files[i]);
    }
    if (g_perturb) g_c[NPHOTOS - 1].p[K - 1] *= 1.0 + 1e-3;           /* a PNG: must fail */
    if (g_perturb) g_c[g_nfiles - 1].p[K - 1] *= 1.0 + 1e-3;         /* a JPEG: must fail */
    g_done = 1;
}

static int argmax(const double *p) {
    int b = 0;
    for (int k = 1; k < K; k++)
        if (p[k] > p[b]) b = k;
    return b;
}

/* Every probability within atol + rtol * |reference|; returns the largest
 * relative difference. */
static double compare(const result *c, const result *py, int n, double rtol, double atol) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < K; k++) {
            double d = fabs(c[i].p[k] - py[i].p[k]);
            double rel = d / fmax(fabs(py[i].p[k]), 1e-300);
            if (rel > worst) worst = rel;
            if (!(d <= atol + rtol * fabs(py[i].p[k])))
                fail_msg("%s, class %d: predict %.9g, reference %.9g (|diff| %.3g, rtol %g, atol %g)", c[i].file, k,
                         c[i].p[k], py[i].p[k], d, rtol, atol);
        }
        double sum = 0;
        for (int k = 0; k < K; k++) sum += c[i].p[k];
        assert_close(sum, 1.0, 0, 1e-6);
    }
    return worst;
}

static void require_python(void) {
    if (!g_have_python) {
        print_message("      needs %s with torch, h5py, numpy and PIL; skipped\n", PYTHON);
        skip();
    }
}

/* ------------------------------------------------------------ images */

static char g_png[8][256];
static int g_npng = 0;

static void write_png(const char *name, const uint8_t *px, int w, int h, int comp, int stride) {
    char *p = g_png[g_npng++];
    snprintf(p, sizeof g_png[0], "%s/%s.png", g_tmp, name);
    if (!stbi_write_png(p, w, h, comp, px, stride)) fail_msg("cannot write %s", p);
}

/* PNG copies of predict's decode of the photos (g_png[i] for photos[i]),
 * then three crops of the first. */
static int make_pngs(void) {
    for (int i = 0; i <= NPHOTOS; i++) {
        char src[512];
        snprintf(src, sizeof src, INFERENCE_SET "/%s.jpg", photos[i < NPHOTOS ? i : 0]);
        int w, h;
        char why[512];
        uint8_t *px = sv_image_decode(src, &w, &h, why, sizeof why);
        if (!px) {
            fprintf(stderr, "test_predict_reference: cannot decode %s: %s\n", src, why);
            return -1;
        }
        if (i < NPHOTOS) {
            write_png(photos[i], px, w, h, 3, w * 3);
        } else if (w >= 105 && h >= 85) {
            /* 100 x 75: 100/32 and 75/32 are not integers */
            write_png("crop_100x75", px + ((size_t)10 * w + 5) * 3, 100, 75, 3, w * 3);
            /* 24 x 20: smaller than 32, nearest upsamples */
            write_png("crop_24x20", px + ((size_t)40 * w + 50) * 3, 24, 20, 3, w * 3);
            /* 40 x 50 grayscale (one channel; both decoders replicate it) */
            uint8_t gray[50 * 40];
            for (int y = 0; y < 50; y++)
                for (int x = 0; x < 40; x++) {
                    const uint8_t *q = px + ((size_t)(y + 30) * w + x + 60) * 3;
                    gray[y * 40 + x] = (uint8_t)((q[0] * 77 + q[1] * 150 + q[2] * 29) >> 8);
                }
            write_png("gray_40x50", gray, 40, 50, 1, 40);
        }
        sv_image_free(px);
    }
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_reference_self_check(void **state) {
    (void)state;
    require_python();
    classify_all();
    const char *line = strstr(g_py_out, "nearest 32x32 ==");
    if (!line || !strstr(line, ": ok")) fail_msg("the reference self-check printed:\n%s", g_py_out);
    if (g_perturb && !strstr(g_py_out, "(SV_TEST_PERTURB: not printed)")) fail_msg("SV_TEST_PERTURB=1: must fail");
    print_message("      %.*s\n", (int)strcspn(line, "\n"), line);
}

static void test_png_matches_reference(void **state) {
    (void)state;
    require_python();
    classify_all();
    double worst = compare(g_c, g_py, g_npng, g_rtol, g_atol);
    for (int i = 0; i < g_npng; i++) assert_int_equal(argmax(g_c[i].p), argmax(g_py[i].p));
    print_message("      %d PNG images: largest relative difference %.2g (tolerance %g)\n", g_npng, worst, g_rtol);
}

static void test_jpeg_same_as_its_png(void **state) {
    (void)state;
    char list[4096] = "", body[8192];
    for (int i = 0; i < NPHOTOS; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, " " INFERENCE_SET "/%s.jpg %s", photos[i], g_png[i]);
    }
    snprintf(body, sizeof body, "%s predict --json --checkpoint %s%s", g_bin, g_ckpt, list);
    char *out = run_cmd(body, "predict_jpeg_png");
    result res[MAX_IMAGES];
    assert_int_equal(parse_json_lines(out, res, MAX_IMAGES, "predict"), 2 * NPHOTOS);
    free(out);
    if (g_perturb) res[1].text[0][0] ^= 1;
    for (int i = 0; i < NPHOTOS; i++)
        for (int k = 0; k < K; k++)
            if (strcmp(res[2 * i].text[k], res[2 * i + 1].text[k]))
                fail_msg("%s class %d: %s, but %s on the PNG of its decode", res[2 * i].file, k, res[2 * i].text[k],
                         res[2 * i + 1].text[k]);
}

static void test_jpeg_matches_reference(void **state) {
    (void)state;
    require_python();
    classify_all();
    const result *c = g_c + g_npng, *py = g_py + g_npng;
    double worst = compare(c, py, NPHOTOS, g_jpeg_rtol, g_jpeg_atol);
    for (int i = 0; i < NPHOTOS; i++) {
        /* the top class agrees unless the reference's top two are closer than the tolerance */
        int a = argmax(c[i].p), b = argmax(py[i].p);
        double second = 0;
        for (int k = 0; k < K; k++)
            if (k != b && py[i].p[k] > second) second = py[i].p[k];
        if (a != b && py[i].p[b] - second > 2 * (g_jpeg_atol + g_jpeg_rtol * py[i].p[b]))
            fail_msg("%s: predict says class %d, the reference class %d", c[i].file, a, b);
    }
    print_message("      %d JPEG photos (PIL and predict, both libjpeg-turbo): largest relative difference %.2g "
                  "(tolerance %g)\n", NPHOTOS, worst, g_jpeg_rtol);
}

/* ------------------------------------------------------------ setup */

static int setup(void **state) {
    (void)state;
    sv_test_bin(g_bin, sizeof g_bin);
    if (sv_test_check_bin(g_bin) || sv_test_check_cifar(SV_TEST_CIFAR)) return -1;
    if (access(INFERENCE_SET "/000_cat.jpg", R_OK) != 0) {
        fprintf(stderr, "test_predict_reference: %s not found\n", INFERENCE_SET);
        return -1;
    }
    g_have_python = system(PYTHON " -c 'import torch, h5py, numpy, PIL' >/dev/null 2>&1") == 0;
    const char *perturb = getenv("SV_TEST_PERTURB");
    if (perturb && !strcmp(perturb, "1")) {
        g_perturb = 1;
        g_rtol = g_atol = g_jpeg_rtol = g_jpeg_atol = 0;
    }
    if (sv_test_mkdtemp(g_tmp, sizeof g_tmp, "sv_test_predref")) return -1;
    if (make_pngs() != 0) return -1;
    static char jpegs[NPHOTOS][256];
    for (int i = 0; i < g_npng; i++) g_files[g_nfiles++] = g_png[i];
    for (int i = 0; i < NPHOTOS; i++) {
        snprintf(jpegs[i], sizeof jpegs[i], INFERENCE_SET "/%s.jpg", photos[i]);
        g_files[g_nfiles++] = jpegs[i];
    }
    /* A freshly trained checkpoint: the tiny config, one epoch. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} timeout -k 5 120 %s train -c " TINY
             " --out %s/run --set train.epochs=1 >%s/train.log 2>&1",
             g_bin, g_tmp, g_tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_predict_reference: training failed, see %s/train.log\n", g_tmp);
        return -1;
    }
    snprintf(g_ckpt, sizeof g_ckpt, "%s/run/last.h5", g_tmp);
    return access(g_ckpt, R_OK);
}

static int teardown(void **state) {
    (void)state;
    free(g_py_out);
    sv_test_clean_tmp(g_tmp);
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_self_check),
        cmocka_unit_test(test_png_matches_reference),
        cmocka_unit_test(test_jpeg_same_as_its_png),
        cmocka_unit_test(test_jpeg_matches_reference),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
