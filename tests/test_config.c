/* Tests of the configuration module (src/config/): defaults, the shipped
 * configs, --set, write/read round trip and the error messages. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#include "shiftvit/common.h"
#include "shiftvit/config.h"

static char tmpdir[256];
static int nfiles;

static int setup(void **state) {
    (void)state;
    return sv_test_mkdtemp(tmpdir, sizeof tmpdir, "sv_test_config");
}

static int teardown(void **state) {
    (void)state;
    return sv_test_rm_rf(tmpdir);
}

/* Writes len bytes to a fresh file in tmpdir; returns its path (static). */
static const char *write_file(const char *data, size_t len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/f%d.ini", tmpdir, nfiles++);
    sv_test_write_file(path, data, len);
    return path;
}

/* Loads text (as a file) onto the defaults; expects failure and returns the message. */
static const char *load_fails(const char *text) {
    static char err[SV_ERR_LEN];
    sv_config c;
    sv_config_defaults(&c);
    err[0] = '\0';
    const char *path = write_file(text, strlen(text));
    if (sv_config_load(&c, path, err) == 0) fail_msg("loading \"%s\" succeeded", text);
    assert_true(err[0] != '\0');
    assert_contains(err, path);
    return err;
}

/* Applies overrides to the defaults; expects them to load and validation to fail. */
static const char *validate_fails(const char *const *sets, int n) {
    static char err[SV_ERR_LEN];
    sv_config c;
    sv_config_defaults(&c);
    for (int i = 0; i < n; i++)
        if (sv_config_set(&c, sets[i], err)) fail_msg("--set %s: %s", sets[i], err);
    err[0] = '\0';
    if (sv_config_validate(&c, err) == 0) fail_msg("validation passed");
    assert_true(err[0] != '\0');
    return err;
}

/* Field-by-field equality (not memcmp: padding and string tails may differ). */
static void assert_config_equal(const sv_config *a, const sv_config *b) {
    assert_string_equal(a->data_dir, b->data_dir);
    assert_int_equal(a->train_size, b->train_size);
    assert_int_equal(a->val_size, b->val_size);
    assert_int_equal(a->test_size, b->test_size);
    assert_int_equal(a->image_size, b->image_size);
    assert_int_equal(a->resize_size, b->resize_size);
    assert_int_equal(a->augment, b->augment);
    assert_int_equal(a->translate, b->translate);
    assert_int_equal(a->cutout, b->cutout);
    assert_int_equal(a->policy, b->policy);
    assert_int_equal(a->randaugment_n, b->randaugment_n);
    assert_int_equal(a->randaugment_m, b->randaugment_m);
    assert_int_equal(a->tta_flip, b->tta_flip);
    assert_int_equal(a->tta_translate, b->tta_translate);
    assert_int_equal(a->embed_dim, b->embed_dim);
    for (int i = 0; i < SV_NUM_STAGES; i++) assert_int_equal(a->depths[i], b->depths[i]);
    assert_int_equal(a->mlp_ratio, b->mlp_ratio);
    assert_int_equal(a->num_div, b->num_div);
    assert_int_equal(a->shift_pixel, b->shift_pixel);
    assert_int_equal(a->patch_size, b->patch_size);
    assert_true(a->dropout == b->dropout);
    assert_true(a->drop_path == b->drop_path);
    assert_true(a->layer_norm_eps == b->layer_norm_eps);
    assert_int_equal(a->num_classes, b->num_classes);
    assert_true(a->lr_start == b->lr_start);
    assert_true(a->lr_max == b->lr_max);
    assert_true(a->warmup_fraction == b->warmup_fraction);
    assert_true(a->weight_decay == b->weight_decay);
    assert_true(a->beta1 == b->beta1);
    assert_true(a->beta2 == b->beta2);
    assert_true(a->eps == b->eps);
    assert_int_equal(a->decay_mode, b->decay_mode);
    assert_int_equal(a->epochs, b->epochs);
    assert_int_equal(a->batch_size, b->batch_size);
    assert_int_equal(a->patience, b->patience);
    assert_true(a->seed == b->seed);
    assert_int_equal(a->max_steps, b->max_steps);
    assert_int_equal(a->log_every, b->log_every);
    assert_int_equal(a->eval_batch_size, b->eval_batch_size);
    assert_string_equal(a->out_dir, b->out_dir);
    assert_int_equal(a->checkpoint_every, b->checkpoint_every);
    assert_int_equal(a->keep_last, b->keep_last);
    assert_int_equal(a->accumulation_steps, b->accumulation_steps);
    assert_int_equal(a->allreduce_dtype, b->allreduce_dtype);
}

static void test_defaults_are_recipe(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    assert_string_equal(c.data_dir, "");
    assert_int_equal(c.train_size, 40000);
    assert_int_equal(c.val_size, 10000);
    assert_int_equal(c.test_size, 0);
    assert_int_equal(c.image_size, 48);
    assert_int_equal(c.resize_size, 52);
    assert_int_equal(c.augment, 1);
    assert_int_equal(c.embed_dim, 96);
    assert_int_equal(c.depths[0], 2);
    assert_int_equal(c.depths[1], 4);
    assert_int_equal(c.depths[2], 8);
    assert_int_equal(c.depths[3], 2);
    assert_int_equal(c.mlp_ratio, 2);
    assert_int_equal(c.num_div, 12);
    assert_int_equal(c.shift_pixel, 1);
    assert_int_equal(c.patch_size, 4);
    assert_true(c.dropout == 0.2f);
    assert_true(c.drop_path == 0.2f);
    assert_true(c.layer_norm_eps == 1e-5f);
    assert_int_equal(c.num_classes, 10);
    assert_true(c.lr_start == 1e-5);
    assert_true(c.lr_max == 1e-3);
    assert_true(c.warmup_fraction == 0.15);
    assert_true(c.weight_decay == 1e-4);
    assert_true(c.beta1 == 0.9);
    assert_true(c.beta2 == 0.999);
    assert_true(c.eps == 1e-7);
    assert_int_equal(c.decay_mode, SV_DECAY_TFA);
    assert_int_equal(c.epochs, 100);
    assert_int_equal(c.batch_size, 256);
    assert_int_equal(c.patience, 5);
    assert_true(c.seed == 42);
    assert_int_equal(c.max_steps, 0);
    assert_int_equal(c.log_every, 20);
    assert_int_equal(c.eval_batch_size, 256);
    assert_string_equal(c.out_dir, "");
    assert_int_equal(c.checkpoint_every, 1);
    assert_int_equal(c.keep_last, 3);
    assert_string_equal(c.name, "");
    assert_int_equal(sv_config_validate(&c, err), 0);
}

static void test_recipe_steps(void **state) {
    (void)state;
    sv_config c;
    sv_config_defaults(&c);
    assert_int_equal(sv_config_total_steps(&c), 15625);
    assert_int_equal(sv_config_warmup_steps(&c), 2343);
    c.epochs = 1; /* 40000/256 = 156.25 -> 156 */
    assert_int_equal(sv_config_total_steps(&c), 156);
    assert_int_equal(sv_config_warmup_steps(&c), 23);
}

/* Every key is in the recipe file: loading it onto a zeroed struct gives the
 * defaults. Keys added after the recipe file was frozen (bitwise unchanged
 * since) are absent from it: those whose default is not 0
 * (train.accumulation_steps, data.randaugment_n and _m) are set to it first. */
static void test_recipe_file_gives_defaults(void **state) {
    (void)state;
    sv_config c, d;
    char err[SV_ERR_LEN];
    memset(&c, 0, sizeof c);
    c.decay_mode = SV_DECAY_TORCH;
    c.seed = 7;
    strcpy(c.data_dir, "junk");
    strcpy(c.out_dir, "junk");
    c.accumulation_steps = 1;
    c.randaugment_n = 2;
    c.randaugment_m = 9;
    if (sv_config_load(&c, "configs/cifar10_keras.ini", err)) fail_msg("%s", err);
    sv_config_defaults(&d);
    assert_config_equal(&c, &d);
    assert_string_equal(c.name, "cifar10_keras");
    assert_int_equal(sv_config_validate(&c, err), 0);
}

static void test_tiny_loads_and_validates(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    if (sv_config_load(&c, "configs/tiny.ini", err)) fail_msg("%s", err);
    if (sv_config_validate(&c, err)) fail_msg("%s", err);
    assert_string_equal(c.name, "tiny");
    assert_int_equal(c.embed_dim, 24);
    assert_int_equal(c.depths[0], 1);
    assert_int_equal(c.depths[1], 1);
    assert_int_equal(c.depths[2], 2);
    assert_int_equal(c.depths[3], 1);
    assert_int_equal(c.num_div, 12);
    assert_int_equal(c.embed_dim / c.num_div, 2);
    assert_int_equal(c.image_size, 16);
    assert_int_equal(c.resize_size, 20);
    assert_int_equal(c.patch_size, 4);
    assert_int_equal(c.mlp_ratio, 2);
    assert_int_equal(c.batch_size, 32);
    assert_int_equal(c.eval_batch_size, 64);
    assert_int_equal(c.train_size, 256);
    assert_int_equal(c.val_size, 128);
    assert_int_equal(c.test_size, 128);
    assert_int_equal(c.epochs, 2);
    assert_int_equal(c.patience, 5);
    assert_int_equal(c.log_every, 1);
    assert_true(c.lr_max == 1e-3); /* recipe value kept */
    assert_int_equal(sv_config_total_steps(&c), 16);
    assert_int_equal(sv_config_warmup_steps(&c), 2);
}

static void test_set_overrides(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    const char *sets[] = {
        "train.epochs=3",          "model.depths = 1, 2 ,3,4", "data.augment=no",
        "optim.decay_mode=torch",  "data.dir=/data/cifar 10",  "train.seed=18446744073709551615",
        "optim.lr_max=2.5e-3",     "model.dropout=0",          "output.dir=runs/a=b",
        "train.max_steps=1000",    "data.test_size=0",         "model.layer_norm_eps=1e-6",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (sv_config_set(&c, sets[i], err)) fail_msg("--set %s: %s", sets[i], err);
    assert_int_equal(c.epochs, 3);
    assert_int_equal(c.depths[0], 1);
    assert_int_equal(c.depths[1], 2);
    assert_int_equal(c.depths[2], 3);
    assert_int_equal(c.depths[3], 4);
    assert_int_equal(c.augment, 0);
    assert_int_equal(c.decay_mode, SV_DECAY_TORCH);
    assert_string_equal(c.data_dir, "/data/cifar 10");
    assert_true(c.seed == ULLONG_MAX);
    assert_true(c.lr_max == 2.5e-3);
    assert_true(c.dropout == 0.0f);
    assert_string_equal(c.out_dir, "runs/a=b");
    assert_int_equal(c.max_steps, 1000);
    assert_true(c.layer_norm_eps == 1e-6f);
    if (sv_config_validate(&c, err)) fail_msg("%s", err);

    /* Later overrides win; a file loaded afterwards keeps unrelated values. */
    assert_int_equal(sv_config_set(&c, "train.epochs=7", err), 0);
    assert_int_equal(c.epochs, 7);
    assert_int_equal(sv_config_load(&c, "configs/tiny.ini", err), 0);
    assert_int_equal(c.epochs, 2);
    assert_int_equal(c.decay_mode, SV_DECAY_TORCH);

    /* Booleans in every spelling. */
    const char *t[] = {"true", "1", "yes", "TRUE", "Yes"}, *f[] = {"false", "0", "no", "False"};
    char a[64];
    for (size_t i = 0; i < 5; i++) {
        snprintf(a, sizeof a, "data.augment=%s", t[i]);
        assert_int_equal(sv_config_set(&c, a, err), 0);
        assert_int_equal(c.augment, 1);
    }
    for (size_t i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "data.augment=%s", f[i]);
        assert_int_equal(sv_config_set(&c, a, err), 0);
        assert_int_equal(c.augment, 0);
    }
}

static void test_set_errors(void **state) {
    (void)state;
    sv_config c, d;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    d = c;

    assert_int_equal(sv_config_set(&c, "epochs=3", err), -1);
    assert_contains(err, "epochs=3");
    assert_contains(err, "section.key=value");

    assert_int_equal(sv_config_set(&c, "train.epochs", err), -1);
    assert_contains(err, "train.epochs");
    assert_contains(err, "section.key=value");

    assert_int_equal(sv_config_set(&c, "train.epoch=3", err), -1);
    assert_contains(err, "--set");
    assert_contains(err, "epoch");
    assert_contains(err, "unknown key");

    assert_int_equal(sv_config_set(&c, "trian.epochs=3", err), -1);
    assert_contains(err, "--set");
    assert_contains(err, "[trian]");

    assert_int_equal(sv_config_set(&c, "train.epochs=3.5", err), -1);
    assert_contains(err, "--set: [train] epochs = \"3.5\": not an integer");

    assert_int_equal(sv_config_set(&c, "model.depths=1,2,3,x", err), -1);
    assert_contains(err, "depths");
    assert_contains(err, "1,2,3,x");

    assert_int_equal(sv_config_set(&c, "optim.decay_mode=keras", err), -1);
    assert_contains(err, "decay_mode");
    assert_contains(err, "keras");

    assert_int_equal(sv_config_set(&c, "data.augment=maybe", err), -1);
    assert_contains(err, "augment");
    assert_contains(err, "maybe");

    assert_int_equal(sv_config_set(&c, "train.seed=-1", err), -1);
    assert_contains(err, "seed");
    assert_contains(err, "-1");

    assert_int_equal(sv_config_set(&c, "model.dropout=1", err), -1);
    assert_contains(err, "dropout");
    assert_contains(err, "[0, 1)");

    assert_int_equal(sv_config_set(&c, "optim.eps=0", err), -1);
    assert_contains(err, "eps");
    assert_contains(err, "> 0");

    assert_int_equal(sv_config_set(&c, "optim.lr_max=nan", err), -1);
    assert_contains(err, "nan");
    assert_int_equal(sv_config_set(&c, "optim.lr_max=inf", err), -1);
    assert_contains(err, "inf");
    assert_int_equal(sv_config_set(&c, "optim.lr_max=1e999", err), -1);
    assert_contains(err, "1e999");

    assert_int_equal(sv_config_set(&c, "model.num_div=2", err), -1);
    assert_contains(err, "num_div");
    assert_contains(err, "\"2\"");

    assert_int_equal(sv_config_set(&c, "data.dir=a ;b", err), -1);
    assert_contains(err, "dir");

    /* Failed overrides change nothing. */
    assert_config_equal(&c, &d);
}

static void roundtrip(const sv_config *c) {
    char err[SV_ERR_LEN];
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    assert_non_null(m);
    sv_config_write(c, m);
    assert_int_equal(fclose(m), 0);

    sv_config a, b;
    memset(&a, 0, sizeof a);
    if (sv_config_load_string(&a, text, "roundtrip", err)) fail_msg("%s\n%s", err, text);
    assert_config_equal(&a, c);

    const char *path = write_file(text, len);
    memset(&b, 0, sizeof b);
    if (sv_config_load(&b, path, err)) fail_msg("%s", err);
    assert_config_equal(&b, c);
    free(text);
}

static void test_write_read_roundtrip(void **state) {
    (void)state;
    sv_config c;
    sv_config_defaults(&c);
    roundtrip(&c);

    c.dropout = 0.1f;
    c.drop_path = 1.0f / 3.0f;
    c.layer_norm_eps = 1.2345678e-6f;
    c.lr_start = 1.0 / 3.0;
    c.lr_max = 0.1 + 0.7; /* 0.7999999999999999 */
    c.warmup_fraction = 0.1;
    c.weight_decay = 5e-300;
    c.beta1 = 0.0;
    c.beta2 = nextafter(1.0, 0.0);
    c.eps = 1e-300;
    c.seed = ULLONG_MAX;
    c.max_steps = 123456789012L;
    c.augment = 0;
    c.decay_mode = SV_DECAY_TORCH;
    c.depths[2] = 1024;
    c.train_size = 1000000000L;
    strcpy(c.data_dir, "/scratch/with space/é/a;b#c=d:e [x]");
    /* A path longer than inih's 200-byte line buffer. */
    memset(c.out_dir, 'x', SV_PATH_LEN - 1);
    c.out_dir[0] = '/';
    c.out_dir[SV_PATH_LEN - 1] = '\0';
    strcpy(c.name, "not-a-key");
    char err[SV_ERR_LEN];
    if (sv_config_validate(&c, err)) fail_msg("%s", err);
    roundtrip(&c);

    /* Random reals, written in their shortest exact form. */
    srand(12345);
    for (int i = 0; i < 200; i++) {
        double u = (double)rand() / ((double)RAND_MAX + 1.0);
        c.dropout = (float)u;
        c.drop_path = (float)(u * u);
        c.layer_norm_eps = (float)ldexp(u + 0.5, -(rand() % 120));
        c.lr_start = u * 1e-3;
        c.lr_max = c.lr_start + ldexp(u + 0.1, -(rand() % 900));
        c.beta2 = 1.0 - ldexp(u + 0.5, -(rand() % 50) - 1);
        roundtrip(&c);
    }
}

static void test_write_is_readable(void **state) {
    (void)state;
    sv_config c;
    sv_config_defaults(&c);
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    assert_non_null(m);
    sv_config_write(&c, m);
    assert_int_equal(fclose(m), 0);
    assert_contains(text, "[model]\nembed_dim = 96\ndepths = 2,4,8,2\n");
    assert_contains(text, "\ndropout = 0.2\n");
    assert_contains(text, "\nlr_start = 1e-05\n");
    assert_contains(text, "\nwarmup_fraction = 0.15\n");
    assert_contains(text, "\ndecay_mode = tfa\n");
    assert_contains(text, "\naugment = true\n");
    assert_true(strncmp(text, "; shiftvit configuration\n", 25) == 0);
    free(text);

    /* The name goes into the first line (a comment), cut at a control byte. */
    strcpy(c.name, "tiny\n[bogus]");
    m = open_memstream(&text, &len);
    assert_non_null(m);
    sv_config_write(&c, m);
    assert_int_equal(fclose(m), 0);
    assert_true(strncmp(text, "; shiftvit configuration: tiny\n[data]\n", 38) == 0);
    char err[SV_ERR_LEN];
    sv_config d;
    sv_config_defaults(&d);
    if (sv_config_load_string(&d, text, "named", err)) fail_msg("%s", err);
    free(text);
}

static void test_syntax_accepted(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    const char *text =
        "\xEF\xBB\xBF# BOM, '#' and ';' comments, CRLF, indentation, ':' separator\r\n"
        "[model]\r\n"
        "  embed_dim = 48   ; inline comment\r\n"
        "\tnum_div: 8\r\n"
        "\n"
        "[train]\n"
        "epochs = 5\n"
        "epochs = 6\n"
        "[output]\n"; /* empty section is fine */
    if (sv_config_load_string(&c, text, "inline", err)) fail_msg("%s", err);
    assert_int_equal(c.embed_dim, 48);
    assert_int_equal(c.num_div, 8);
    assert_int_equal(c.epochs, 6);
    assert_string_equal(c.name, ""); /* only sv_config_load sets it */

    const char *path = write_file("[data]\ntrain_size = 100\n", strlen("[data]\ntrain_size = 100\n"));
    assert_int_equal(sv_config_load(&c, path, err), 0);
    const char *base = strrchr(path, '/') + 1;
    assert_int_equal(strlen(c.name), strlen(base) - 4);
    assert_memory_equal(c.name, base, strlen(c.name));
}

static void test_error_unknown_section(void **state) {
    (void)state;
    const char *e = load_fails("; comment\n[modle]\nembed_dim = 96\n");
    assert_contains(e, ":2:");
    assert_contains(e, "modle");
    assert_contains(e, "unknown section");
    /* Even without keys in it. */
    e = load_fails("[model]\nembed_dim = 96\n[extra]\n");
    assert_contains(e, ":3:");
    assert_contains(e, "[extra]");
}

static void test_error_unknown_key(void **state) {
    (void)state;
    const char *e = load_fails("[model]\n\nembd_dim = 96\n");
    assert_contains(e, ":3:");
    assert_contains(e, "[model] embd_dim = \"96\"");
    assert_contains(e, "unknown key");
    e = load_fails("embed_dim = 96\n");
    assert_contains(e, ":1:");
    assert_contains(e, "embed_dim");
    assert_contains(e, "outside any section");
}

static void test_error_not_integer(void **state) {
    (void)state;
    const char *e = load_fails("[model]\nembed_dim = abc\n");
    assert_contains(e, ":2: [model] embed_dim = \"abc\": not an integer");
    e = load_fails("[model]\nembed_dim = 96x\n");
    assert_contains(e, "\"96x\"");
    e = load_fails("[model]\nembed_dim = 9 6\n");
    assert_contains(e, "\"9 6\"");
    e = load_fails("[model]\nembed_dim =\n");
    assert_contains(e, "embed_dim = \"\"");
    e = load_fails("[model]\nembed_dim = 99999999999999999999\n");
    assert_contains(e, "99999999999999999999");
    assert_contains(e, "out of range");
    e = load_fails("[model]\nembed_dim = 4294967392\n"); /* fits long, not int */
    assert_contains(e, "4294967392");
    e = load_fails("[optim]\nlr_max = 1e-3x\n");
    assert_contains(e, "[optim] lr_max = \"1e-3x\": not a number");
}

static void test_error_negative_batch(void **state) {
    (void)state;
    const char *e = load_fails("[train]\nbatch_size = -5\n");
    assert_contains(e, ":2:");
    assert_contains(e, "[train] batch_size = \"-5\"");
    assert_contains(e, "must be in [1, ");
    e = load_fails("[train]\nbatch_size = 0\n");
    assert_contains(e, "batch_size = \"0\"");
}

static void test_error_depths(void **state) {
    (void)state;
    const char *e = load_fails("[model]\ndepths = 2,4,8\n");
    assert_contains(e, "[model] depths = \"2,4,8\"");
    assert_contains(e, "got 3");
    e = load_fails("[model]\ndepths = 2,4,8,2,1\n");
    assert_contains(e, "got 5");
    e = load_fails("[model]\ndepths = 2,0,8,2\n");
    assert_contains(e, "\"2,0,8,2\"");
    e = load_fails("[model]\ndepths = 2,,8,2\n");
    assert_contains(e, "\"2,,8,2\"");
}

static void test_error_embed_dim_num_div(void **state) {
    (void)state;
    const char *sets[] = {"model.embed_dim=100"};
    const char *e = validate_fails(sets, 1);
    assert_contains(e, "embed_dim = 100");
    assert_contains(e, "num_div = 12");
    /* num_div < 4 is caught by the parser and by validate for hand-made configs. */
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    c.num_div = 3;
    c.embed_dim = 99;
    assert_int_equal(sv_config_validate(&c, err), -1);
    assert_contains(err, "num_div = 3");
}

static void test_error_image_patch(void **state) {
    (void)state;
    const char *sets[] = {"data.image_size=50", "data.resize_size=56"};
    const char *e = validate_fails(sets, 2);
    assert_contains(e, "image_size = 50");
    assert_contains(e, "patch_size = 4");
    const char *sets2[] = {"data.resize_size=40"};
    e = validate_fails(sets2, 1);
    assert_contains(e, "resize_size = 40");
    assert_contains(e, "image_size = 48");
}

static void test_error_lr(void **state) {
    (void)state;
    const char *sets[] = {"optim.lr_max=1e-6"};
    const char *e = validate_fails(sets, 1);
    assert_contains(e, "lr_max = 1e-06");
    assert_contains(e, "lr_start = 1e-05");
}

static void test_error_steps(void **state) {
    (void)state;
    const char *sets[] = {"data.train_size=100", "train.epochs=1"};
    const char *e = validate_fails(sets, 2);
    assert_contains(e, "train_size = 100");
    assert_contains(e, "batch_size = 256");
    assert_contains(e, "total steps");
    /* Hand-made out-of-range values are caught too. */
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    c.eval_batch_size = 0;
    assert_int_equal(sv_config_validate(&c, err), -1);
    assert_contains(err, "eval_batch_size = 0");
    sv_config_defaults(&c);
    c.drop_path = 1.5f;
    assert_int_equal(sv_config_validate(&c, err), -1);
    assert_contains(err, "drop_path = 1.5");
}

static void test_error_empty(void **state) {
    (void)state;
    const char *e = load_fails("");
    assert_contains(e, "empty");
    e = load_fails("; only a comment\n\n   \n# another\n");
    assert_contains(e, "empty");
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    assert_int_equal(sv_config_load_string(&c, "  \n", "ckpt.h5:/config", err), -1);
    assert_contains(err, "ckpt.h5:/config");
    assert_contains(err, "empty");
}

static void test_error_binary(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    const char bin[] = "[model]\nembed_dim = 96\n\0\x01\x02\xff garbage";
    const char *path = write_file(bin, sizeof bin - 1);
    assert_int_equal(sv_config_load(&c, path, err), -1);
    assert_contains(err, path);
    assert_contains(err, "binary");
    assert_contains(err, ":3:");
    assert_int_equal(c.embed_dim, 96);

    const char *e = load_fails("[data]\ndir = caf\xe9\n"); /* Latin-1, not UTF-8 */
    assert_contains(e, "binary");
    assert_contains(e, ":2:");
    e = load_fails("[data]\ndir = a\x01" "b\n");
    assert_contains(e, "binary");

    /* A CIFAR record is binary too. */
    unsigned char rec[3073];
    for (size_t i = 0; i < sizeof rec; i++) rec[i] = (unsigned char)(i * 37);
    path = write_file((const char *)rec, sizeof rec);
    assert_int_equal(sv_config_load(&c, path, err), -1);
    assert_contains(err, "binary");
}

static void test_error_missing_file(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN], path[512];
    sv_config_defaults(&c);
    snprintf(path, sizeof path, "%s/does-not-exist.ini", tmpdir);
    assert_int_equal(sv_config_load(&c, path, err), -1);
    assert_contains(err, path);
    assert_contains(err, strerror(ENOENT));
    assert_int_equal(sv_config_load(&c, tmpdir, err), -1); /* a directory */
    assert_contains(err, tmpdir);
}

static void test_error_syntax_and_atomic(void **state) {
    (void)state;
    const char *e = load_fails("[model]\nembed_dim = 48\nthis is not a key\n");
    assert_contains(e, ":3:");
    assert_contains(e, "this is not a key");
    assert_contains(e, "syntax");
    e = load_fails("[model\nembed_dim = 48\n");
    assert_contains(e, ":1:");
    assert_contains(e, "[model");

    /* The first error wins, whichever kind it is. */
    e = load_fails("[model]\nbogus line\nembed_dim = x\n");
    assert_contains(e, ":2:");
    e = load_fails("[model]\nembed_dim = x\nbogus line\n");
    assert_contains(e, ":2: [model] embed_dim = \"x\"");

    /* A failed load leaves the config untouched. */
    sv_config c, d;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    d = c;
    const char *path = write_file("[model]\nembed_dim = 48\n[train]\nepochs = -1\n", strlen("[model]\nembed_dim = 48\n[train]\nepochs = -1\n"));
    assert_int_equal(sv_config_load(&c, path, err), -1);
    assert_contains(err, ":4: [train] epochs = \"-1\"");
    assert_config_equal(&c, &d);
    assert_string_equal(c.name, "");
}

static void test_long_lines(void **state) {
    (void)state;
    /* Line numbers stay right around a long value and a long comment. */
    char text[4096], dir[600];
    memset(dir, 'd', sizeof dir - 1);
    dir[0] = '/';
    dir[sizeof dir - 1] = '\0';
    char comment[400];
    memset(comment, 'c', sizeof comment - 1);
    comment[0] = ';';
    comment[sizeof comment - 1] = '\0';
    snprintf(text, sizeof text, "%s\n[data]\ndir = %s   ; trailing comment\n\n[model]\nembed_dim = x\n",
             comment, dir);
    const char *e = load_fails(text);
    assert_contains(e, ":6: [model] embed_dim = \"x\"");

    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    snprintf(text, sizeof text, "%s\n[data]\ndir = %s   ; trailing comment\n", comment, dir);
    if (sv_config_load_string(&c, text, "long", err)) fail_msg("%s", err);
    assert_string_equal(c.data_dir, dir);

    /* Too long for the buffer. */
    char big[1200];
    memset(big, 'p', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(text, sizeof text, "[data]\ndir = /%s\n", big);
    e = load_fails(text);
    assert_contains(e, ":2: [data] dir = ");
    assert_contains(e, "too long");
}

/* sv_config_describe_keys's text in a string (caller frees); *len its length. */
static char *describe_keys(sv_keys_format format, size_t *len) {
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    assert_non_null(f);
    sv_config_describe_keys(f, format);
    fclose(f);
    return text;
}

/* configs/README.md's key table is the key table of src/config/config_keys.c: a key
 * added, a default or a meaning changed in one place and not the other fails
 * here (regenerate with build/shiftvit info --keys --markdown). */
static void test_readme_key_table_matches(void **state) {
    (void)state;
    size_t glen = 0;
    char *generated = describe_keys(SV_KEYS_MARKDOWN, &glen);
    char *readme = sv_test_slurp("configs/README.md", NULL);
    const char *open_mark = strstr(readme, "tests/test_config.c fails when this copy differs");
    assert_non_null(open_mark);
    const char *begin = strstr(open_mark, "-->\n");
    const char *end = strstr(readme, "<!-- end of generated key table -->");
    assert_non_null(begin);
    assert_non_null(end);
    begin += 4;
    assert_true(end > begin);
    if ((size_t)(end - begin) != glen || memcmp(begin, generated, glen) != 0)
        fail_msg("configs/README.md key table differs from the key table of src/config/config_keys.c "
                 "(README %zu bytes, generated %zu):\n%.*s\n--- generated ---\n%s",
                 (size_t)(end - begin), glen, (int)(end - begin), begin, generated);
    /* Every key is documented and every default is the value the struct gets. */
    sv_config c;
    sv_config_defaults(&c);
    assert_non_null(strstr(generated, "| train | `epochs` | 100 |"));
    assert_int_equal(c.epochs, 100);
    free(readme);
    free(generated);
}

/* The summary of train --help: one entry per key with its default; setting
 * every key to the default it shows, starting from zeros, gives the defaults. */
static void test_key_summary_lists_every_key(void **state) {
    (void)state;
    size_t len = 0;
    char *text = describe_keys(SV_KEYS_SUMMARY, &len);
    sv_config c, d;
    memset(&c, 0, sizeof c);
    sv_config_defaults(&d);
    char err[SV_ERR_LEN];
    int keys = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char key[64], value[256];
        if (line[2] == ' ' || sscanf(line, " %63s = %255s", key, value) != 2) continue; /* a continuation */
        char set[400];
        snprintf(set, sizeof set, "%s=%s", key, strcmp(value, "(empty)") ? value : "");
        if (sv_config_set(&c, set, err)) fail_msg("%s", err);
        keys++;
    }
    assert_int_equal(keys, 52);
    assert_config_equal(&c, &d);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_recipe),
        cmocka_unit_test(test_recipe_steps),
        cmocka_unit_test(test_recipe_file_gives_defaults),
        cmocka_unit_test(test_tiny_loads_and_validates),
        cmocka_unit_test(test_set_overrides),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_write_read_roundtrip),
        cmocka_unit_test(test_write_is_readable),
        cmocka_unit_test(test_syntax_accepted),
        cmocka_unit_test(test_error_unknown_section),
        cmocka_unit_test(test_error_unknown_key),
        cmocka_unit_test(test_error_not_integer),
        cmocka_unit_test(test_error_negative_batch),
        cmocka_unit_test(test_error_depths),
        cmocka_unit_test(test_error_embed_dim_num_div),
        cmocka_unit_test(test_error_image_patch),
        cmocka_unit_test(test_error_lr),
        cmocka_unit_test(test_error_steps),
        cmocka_unit_test(test_error_empty),
        cmocka_unit_test(test_error_binary),
        cmocka_unit_test(test_error_missing_file),
        cmocka_unit_test(test_error_syntax_and_atomic),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_readme_key_table_matches),
        cmocka_unit_test(test_key_summary_lists_every_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
