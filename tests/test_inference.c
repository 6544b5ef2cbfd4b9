/* The forward-only model of eval, predict and bench --eval
 * (sv_model_create_inference, issue 23): the same logits, bit for bit, as the
 * training model's inference forward pass, in fp32 and bf16, for the recipe
 * and for small models with 1x1 and odd-sided stages, at the full batch and a
 * smaller one, twice in a row (the ping-pong buffers carry nothing over), and
 * after the training model ran a training step's forward in between. It has
 * no gradients. The opt-in kernel profile (sv_model_set_profile, bench
 * --eval --profile) leaves the logits unchanged, writes only its own
 * SV_PROF_KINDS slots, and stops when turned off. */
#include <stdint.h>
#include <string.h>

#include "test_util.h"

#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/model.h"
#include "shiftvit/settings.h"

#define NB 8

static void config_for(sv_config *cfg, int which, int bf16) {
    sv_config_defaults(cfg); /* the recipe: 48x48, patch 4, 96 channels, depths 2,4,8,2 */
    if (which == 1) {        /* sides 3, 2, 1, 1; shift by 2 */
        cfg->embed_dim = 24;
        int d[4] = {2, 1, 2, 1};
        memcpy(cfg->depths, d, sizeof d);
        cfg->image_size = 12;
        cfg->resize_size = 12;
        cfg->shift_pixel = 2;
        cfg->num_classes = 7;
    } else if (which == 2) { /* 32x32, patch 2: sides 16, 8, 4, 2 */
        cfg->embed_dim = 12;
        int d[4] = {1, 2, 1, 1};
        memcpy(cfg->depths, d, sizeof d);
        cfg->image_size = 32;
        cfg->resize_size = 32;
        cfg->patch_size = 2;
    }
    cfg->precision = bf16 ? SV_BF16 : SV_FP32;
    char err[SV_ERR_LEN] = "";
    if (sv_config_validate(cfg, err) != 0) fail_msg("config rejected: %s", err);
}

/* Weights with every tensor non-trivial (LayerNorm gamma != 1, biases != 0). */
static void set_weights(sv_model *m) {
    sv_model_init_weights(m, 7);
    uint64_t s = 12345;
    for (size_t i = 0; i < m->num_params; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        m->params[i] += 0.05f * ((float)(s >> 40) / 16777216.0f - 0.5f);
    }
    sv_model_params_changed(m);
}

static void check_same_logits(int which, int bf16) {
    sv_config cfg;
    config_for(&cfg, which, bf16);
    sv_model train_m, infer_m;
    char err[SV_ERR_LEN] = "";
    if (sv_model_create(&train_m, sv_model_settings_from(&cfg), NB, err) != 0) fail_msg("sv_model_create: %s", err);
    if (sv_model_create_inference(&infer_m, sv_model_settings_from(&cfg), NB, err) != 0) fail_msg("sv_model_create_inference: %s", err);
    assert_true(infer_m.forward_only);
    assert_null(infer_m.grads);
    assert_int_equal(infer_m.num_params, train_m.num_params);
    set_weights(&train_m);
    set_weights(&infer_m);
    size_t per = (size_t)cfg.image_size * cfg.image_size * 3, K = (size_t)cfg.num_classes;
    float *x = test_malloc(NB * per * sizeof(float)), *want = test_malloc(NB * K * sizeof(float));
    uint64_t s = 99;
    for (size_t i = 0; i < NB * per; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)(s >> 40) / 16777216.0f;
    }
    double prof[SV_PROF_KINDS + 1] = {0};
    prof[SV_PROF_KINDS] = -7.0; /* a sentinel past the kinds */
    long ids[NB] = {0, 1, 2, 3, 4, 5, 6, 7};
    sv_train_rng rng = {1, 0, ids};
    for (int round = 0; round < 3; round++) {
        int n = round == 1 ? 3 : NB;
        sv_model_set_profile(&infer_m, round == 2 ? prof : NULL); /* the last round profiled */
        memcpy(want, sv_model_forward(&train_m, x, n, NULL), (size_t)n * K * sizeof(float));
        const float *got = sv_model_forward(&infer_m, x, n, NULL);
        for (size_t i = 0; i < (size_t)n * K; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
                fail_msg("config %d %s, batch %d, round %d: logit %zu is %.9g, the training model's %.9g", which,
                         bf16 ? "bf16" : "fp32", n, round, i, got[i], want[i]);
        sv_model_forward(&train_m, x, NB, &rng); /* a training forward in between */
    }
    sv_model_set_profile(&infer_m, NULL);
    double sum = 0;
    for (int k = 0; k < SV_PROF_KINDS; k++) {
        assert_true(prof[k] >= 0.0);
        sum += prof[k];
    }
    assert_true(sum > 0.0);
    assert_true(prof[SV_PROF_KINDS] == -7.0);
    double before[SV_PROF_KINDS];
    memcpy(before, prof, sizeof before);
    sv_model_forward(&infer_m, x, NB, NULL); /* profile off: nothing added */
    assert_memory_equal(before, prof, sizeof before);
    print_message("      config %d %s: %d parameters, logits identical at batch %d and 3\n", which,
                  bf16 ? "bf16" : "fp32", (int)infer_m.num_params, NB);
    test_free(x);
    test_free(want);
    sv_model_free(&train_m);
    sv_model_free(&infer_m);
}

static void test_recipe_fp32(void **state) { (void)state; check_same_logits(0, 0); }
static void test_recipe_bf16(void **state) { (void)state; check_same_logits(0, 1); }
static void test_small_sides_fp32(void **state) { (void)state; check_same_logits(1, 0); }
static void test_small_sides_bf16(void **state) { (void)state; check_same_logits(1, 1); }
static void test_patch2_fp32(void **state) { (void)state; check_same_logits(2, 0); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recipe_fp32),     cmocka_unit_test(test_recipe_bf16),
        cmocka_unit_test(test_small_sides_fp32), cmocka_unit_test(test_small_sides_bf16),
        cmocka_unit_test(test_patch2_fp32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
