/* Tests of `shiftvit predict` (issue 4): runs the built binary (build/shiftvit,
 * or $BUILD/shiftvit) on a checkpoint of a freshly initialised tiny model:
 * the 12 photos of ../shared/data/inference_set, awkward but valid images
 * (grayscale JPEG, PNG with alpha, 16-bit PNG), bad files (text named .jpg,
 * truncated JPEG and PNG copies of a photo, PNG header claiming 100000x100000,
 * missing file), the grid,
 * and the probabilities against the library's own forward pass. The odd image
 * files are made with /usr/bin/python3 + PIL (Debian python3-pil, a dependency
 * of python3-matplotlib); those tests are skipped without it. Run from the
 * repository root. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h> /* implementation: tests/test_util.c */

#include "test_util.h"

#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/data.h"
#include "shiftvit/image.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/settings.h"

#define INFERENCE_SET SV_TEST_SHARED "/data/inference_set"

static char g_dir[256], g_ckpt[512], g_bin[512];
static sv_config g_cfg;
static sv_model g_model;

/* ------------------------------------------------------------ helpers */

typedef struct {
    int status;    /* exit status (sv_test_exit_status) */
    char *out;     /* stdout */
    char *err;     /* stderr */
} run_result;

/* Runs `build/shiftvit predict --checkpoint CKPT ARGS`. */
static run_result run_predict(const char *args) {
    char cmd[4096], out[600], err[600];
    snprintf(out, sizeof out, "%s/stdout.txt", g_dir);
    snprintf(err, sizeof err, "%s/stderr.txt", g_dir);
    snprintf(cmd, sizeof cmd, "%s predict --checkpoint %s %s", g_bin, g_ckpt, args);
    run_result r;
    r.out = sv_test_run_split(cmd, out, err, &r.status, &r.err);
    return r;
}

static void run_free(run_result *r) {
    free(r->out);
    free(r->err);
}

/* The JSON line of `file` in the output, or NULL. */
static const char *json_line(const char *out, const char *file) {
    char key[700];
    snprintf(key, sizeof key, "{\"file\":\"%s\"", file);
    return strstr(out, key);
}

/* Parses the probabilities array of a JSON line into p[0..n); returns the count. */
static int parse_probs(const char *line, double *p, int cap) {
    const char *s = strstr(line, "\"probabilities\":[");
    if (!s) return 0;
    s += strlen("\"probabilities\":[");
    int n = 0;
    while (n < cap) {
        char *end;
        p[n] = strtod(s, &end);
        if (end == s) break;
        n++;
        s = end;
        if (*s != ',') break;
        s++;
    }
    return n;
}

static void check_probs(const char *out, const char *file) {
    const char *line = json_line(out, file);
    if (!line) fail_msg("no JSON result for %s in:\n%s", file, out);
    double p[16], sum = 0;
    int n = parse_probs(line, p, 16);
    assert_int_equal(n, 10);
    for (int k = 0; k < n; k++) {
        assert_true(p[k] >= 0 && p[k] <= 1);
        sum += p[k];
    }
    assert_close(sum, 1.0, 0, 1e-6);
    assert_non_null(strstr(line, "\"top\":[{\"class\":\""));
}

static int have_pil(void) {
    return system("/usr/bin/python3 -c 'import PIL' >/dev/null 2>&1") == 0;
}

/* Writes the odd and bad image files into dir with /usr/bin/python3. */
static const char *make_images_py =
    "import struct, sys, zlib, os\n"
    "from PIL import Image\n"
    "d = sys.argv[1]\n"
    "src = Image.open(sys.argv[2]).convert('RGB')\n"
    "src.convert('L').save(os.path.join(d, 'gray.jpg'), quality=90)\n"
    "a = src.convert('RGBA'); a.putalpha(128); a.save(os.path.join(d, 'alpha.png'))\n"
    "src.convert('LA').save(os.path.join(d, 'gray_alpha.png'))\n"
    "def chunk(t, b):\n"
    "    return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b) & 0xffffffff)\n"
    "def png(path, w, h, depth, ctype, raw):\n"
    "    with open(path, 'wb') as f:\n"
    "        f.write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, 0))\n"
    "                + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))\n"
    "w, h = 40, 30\n"
    "px = src.resize((w, h)).load()\n"
    "raw = b''.join(b'\\x00' + b''.join(struct.pack('>HHH', *(257 * c for c in px[x, y])) for x in range(w)) for y in range(h))\n"
    "png(os.path.join(d, 'deep16.png'), w, h, 16, 2, raw)\n"
    "png(os.path.join(d, 'huge.png'), 100000, 100000, 8, 2, b'\\x00' * 301)\n"
    "open(os.path.join(d, 'x.jpg'), 'w').write('this is a text file, not a JPEG\\n' * 10)\n"
    "data = open(sys.argv[2], 'rb').read()\n"
    "open(os.path.join(d, 'truncated.jpg'), 'wb').write(data[:len(data) // 2])\n"
    "src.save(os.path.join(d, 'whole.png'))\n"
    "p = open(os.path.join(d, 'whole.png'), 'rb').read()\n"
    "os.remove(os.path.join(d, 'whole.png'))\n"
    "open(os.path.join(d, 'truncated.png'), 'wb').write(p[:len(p) // 2])\n"
    "open(os.path.join(d, 'good.jpg'), 'wb').write(data)\n"
    "i = data.find(b'\\xff\\xc0')\n"
    "big = data[:i + 5] + struct.pack('>HH', 60000, 60000) + data[i + 9:]\n"
    "open(os.path.join(d, 'huge.jpg'), 'wb').write(big)\n"
    "open(os.path.join(d, 'notes.txt'), 'w').write('skipped silently\\n')\n"
    "open(os.path.join(d, 'empty.png'), 'wb').close()\n";

/* ------------------------------------------------------------ tests */

static void test_help_and_usage(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s predict --help >/dev/null 2>&1", g_bin);
    assert_int_equal(sv_test_system(cmd), 0);
    run_result r = run_predict(""); /* no images */
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "no image"));
    run_free(&r);
    r = run_predict("--resize cubic x.png");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "cubic"));
    run_free(&r);
}

static void test_inference_set(void **state) {
    (void)state;
    if (access(INFERENCE_SET "/000_cat.jpg", R_OK) != 0) {
        print_message("      %s not found; skipped\n", INFERENCE_SET);
        skip();
    }
    run_result r = run_predict("--json " INFERENCE_SET "/");
    if (r.status != 0) fail_msg("exit %d, stderr:\n%s", r.status, r.err);
    assert_int_equal(sv_test_count(r.out, "{\"file\":"), 12);
    assert_int_equal(sv_test_count(r.out, "\n"), 12);
    assert_string_equal(r.err, ""); /* labels.txt is skipped silently */
    check_probs(r.out, INFERENCE_SET "/000_cat.jpg");
    check_probs(r.out, INFERENCE_SET "/011_bird.jpg");
    /* Sorted by name. */
    assert_true(json_line(r.out, INFERENCE_SET "/000_cat.jpg") <
                json_line(r.out, INFERENCE_SET "/011_bird.jpg"));
    run_free(&r);

    /* Plain text output: top-K in percent, the probability vector, and a grid. */
    char grid[600], args[1024];
    snprintf(grid, sizeof grid, "%s/grid.png", g_dir);
    snprintf(args, sizeof args, "--top-k 2 --resize area --grid %s " INFERENCE_SET "/", grid);
    r = run_predict(args);
    if (r.status != 0) fail_msg("exit %d, stderr:\n%s", r.status, r.err);
    assert_int_equal(sv_test_count(r.out, "  1. "), 12);
    assert_int_equal(sv_test_count(r.out, "  2. "), 12);
    assert_int_equal(sv_test_count(r.out, "  3. "), 0);
    assert_int_equal(sv_test_count(r.out, "probabilities: airplane"), 12);
    assert_non_null(strstr(r.out, "%"));
    int w = 0, h = 0;
    char why[512];
    uint8_t *px = sv_image_decode(grid, &w, &h, why, sizeof why);
    if (!px) fail_msg("grid %s is not a readable PNG: %s", grid, why);
    sv_image_free(px);
    assert_int_equal(w, 3 * 144); /* 3 columns of 128-pixel images */
    assert_true(h > 3 * 128);
    run_free(&r);
    /* A .jpg grid is JPEG data (the JFIF signature FF D8 FF), not PNG under a JPEG name. */
    snprintf(grid, sizeof grid, "%s/grid.jpg", g_dir);
    snprintf(args, sizeof args, "--grid %s " INFERENCE_SET "/000_cat.jpg", grid);
    r = run_predict(args);
    assert_int_equal(r.status, 0);
    FILE *gf = fopen(grid, "rb");
    assert_non_null(gf);
    unsigned char sig[3] = {0, 0, 0};
    assert_int_equal(fread(sig, 1, 3, gf), 3);
    fclose(gf);
    assert_true(sig[0] == 0xff && sig[1] == 0xd8 && sig[2] == 0xff);
    run_free(&r);

    r = run_predict("--json --resize bilinear " INFERENCE_SET "/003_airplane.jpg");
    assert_int_equal(r.status, 0);
    check_probs(r.out, INFERENCE_SET "/003_airplane.jpg");
    run_free(&r);
}

static void test_odd_and_bad_files(void **state) {
    (void)state;
    if (access(INFERENCE_SET "/000_cat.jpg", R_OK) != 0 || !have_pil()) {
        print_message("      needs %s and /usr/bin/python3 with PIL; skipped\n", INFERENCE_SET);
        skip();
    }
    char dir[600], py[700], cmd[2048];
    snprintf(dir, sizeof dir, "%s/imgs", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(py, sizeof py, "%s/make_images.py", g_dir);
    sv_test_write_text(py, make_images_py);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s/000_cat.jpg", py, dir, INFERENCE_SET);
    assert_int_equal(system(cmd), 0);

    char args[2048];
    snprintf(args, sizeof args, "--json %s %s/missing.png", dir, g_dir);
    run_result r = run_predict(args);
    print_message("      stderr of predict:\n%s", r.err);
    assert_int_equal(r.status, 1);
    const char *good[] = {"gray.jpg", "alpha.png", "gray_alpha.png", "deep16.png", "good.jpg"};
    char p[800];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, good[i]);
        check_probs(r.out, p);
    }
    assert_int_equal(sv_test_count(r.out, "{\"file\":"), 5);
    /* Each bad file gets one line naming it and the reason. */
    struct {
        const char *file, *reason;
    } bad[] = {
        {"x.jpg", "not a JPEG or PNG image"},
        {"truncated.jpg", "truncated or corrupt JPEG"},
        {"truncated.png", "truncated or corrupt PNG"},
        {"huge.png", "declares 100000x100000 pixels"},
        {"huge.jpg", "declares 60000x60000 pixels"},
        {"empty.png", "empty file"},
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof *bad); i++) {
        snprintf(p, sizeof p, "%s/%s: ", dir, bad[i].file);
        const char *line = strstr(r.err, p);
        if (!line) fail_msg("no error line for %s in:\n%s", bad[i].file, r.err);
        const char *nl = strchr(line, '\n');
        const char *why = strstr(line, bad[i].reason);
        if (!why || (nl && why > nl)) fail_msg("error for %s lacks \"%s\":\n%s", bad[i].file, bad[i].reason, r.err);
    }
    assert_non_null(strstr(r.err, "missing.png: cannot open: No such file or directory"));
    assert_null(strstr(r.err, "notes.txt"));
    run_free(&r);

    /* The 16-bit PNG gives the same class as its 8-bit twin would: just check
     * the command classifies it alone with exit 0. */
    snprintf(args, sizeof args, "%s/deep16.png", dir);
    r = run_predict(args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "(40x30)"));
    run_free(&r);
}

/* A 32x32 PNG needs no resize: predict's probabilities must equal the
 * library's forward pass on the evaluation transform of the same pixels. */
static void test_matches_forward(void **state) {
    (void)state;
    uint8_t img[32 * 32 * 3];
    for (int i = 0; i < 32 * 32 * 3; i++) img[i] = (uint8_t)((i * 37 + (i / 96) * 11) & 255);
    char png[600];
    snprintf(png, sizeof png, "%s/pattern.png", g_dir);
    assert_true(stbi_write_png(png, 32, 32, 3, img, 32 * 3) != 0);

    int S = g_cfg.image_size, K = g_model.num_classes;
    float *x = malloc((size_t)S * S * 3 * sizeof(float));
    sv_eval_image(x, img, g_cfg.resize_size, S);
    const float *logits = sv_model_forward(&g_model, x, 1, NULL);
    double want[16], mx = logits[0], se = 0;
    for (int k = 1; k < K; k++) mx = logits[k] > mx ? logits[k] : mx;
    for (int k = 0; k < K; k++) se += (want[k] = exp((double)logits[k] - mx));
    free(x);

    const char *modes[] = {"nearest", "bilinear", "area"};
    for (int mi = 0; mi < 3; mi++) {
        char args[1024];
        snprintf(args, sizeof args, "--json --resize %s %s", modes[mi], png);
        run_result r = run_predict(args);
        assert_int_equal(r.status, 0);
        const char *line = json_line(r.out, png);
        assert_non_null(line);
        double got[16];
        assert_int_equal(parse_probs(line, got, 16), K);
        /* 1e-5: the program picks BLIS's AVX-512 kernels (platform.c) and this
         * test process keeps BLIS's own choice, so the two sum in different
         * orders; a wrong transform or resize is off by 1e-3 or more. */
        for (int k = 0; k < K; k++) assert_close(got[k], want[k] / se, 1e-5, 1e-9);
        run_free(&r);
    }
}

/* ------------------------------------------------------------ main */

static int setup(void **state) {
    (void)state;
    sv_test_bin(g_bin, sizeof g_bin);
    if (sv_test_check_bin(g_bin) || sv_test_mkdtemp(g_dir, sizeof g_dir, "sv_test_predict")) return -1;
    char err[SV_ERR_LEN];
    sv_config_defaults(&g_cfg);
    if (sv_config_load(&g_cfg, "configs/tiny.ini", err) != 0) {
        sv_config_defaults(&g_cfg);
        g_cfg.embed_dim = 24;
        g_cfg.depths[0] = 1, g_cfg.depths[1] = 1, g_cfg.depths[2] = 2, g_cfg.depths[3] = 1;
        g_cfg.image_size = 16;
        g_cfg.resize_size = 20;
        g_cfg.train_size = 256;
        g_cfg.batch_size = 32;
        g_cfg.epochs = 2;
    }
    if (sv_config_validate(&g_cfg, err) != 0) {
        fprintf(stderr, "test_predict: %s\n", err);
        return -1;
    }
    if (sv_model_create(&g_model, sv_model_settings_from(&g_cfg), 1, err) != 0) return -1;
    sv_model_init_weights(&g_model, 1234);
    snprintf(g_ckpt, sizeof g_ckpt, "%s/tiny.h5", g_dir);
    if (sv_checkpoint_save(g_ckpt, &g_model, NULL, NULL, &g_cfg, err) != 0) {
        fprintf(stderr, "test_predict: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    sv_model_free(&g_model);
    sv_test_rm_rf(g_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_usage),
        cmocka_unit_test(test_inference_set),
        cmocka_unit_test(test_odd_and_bad_files),
        cmocka_unit_test(test_matches_forward),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
