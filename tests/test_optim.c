/* Verification of the optimiser (src/optim/optim.c) against SPEC section 1:
 * the WarmUpCosine schedule, AdamW with TensorFlow Addons decay (w -= wd w,
 * not scaled by lr) and the optional PyTorch decay (w -= lr wd w), both
 * followed by Keras Adam (lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
 * w -= lr_t m / (sqrt(v) + eps)); and the recipe's step counts from the
 * config. Expected values are literals computed offline with Python's math
 * module from the SPEC formulas (the scripts are quoted above each table). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/optim.h"
#include "shiftvit/settings.h"

#include "test_util.h"

/* ------------------------------------------------------------------------ */
/* WarmUpCosine                                                              */

/* Recipe: lr_start 1e-5, lr_max 1e-3, warmup 2343, total 15625. Python:
 *   def lr(s, ls=1e-5, lm=1e-3, w=2343, t=15625):
 *       c = 0.5 * lm * (1 + math.cos(math.pi * (s - w) / (t - w)))
 *       if s < w: c = ls + (lm - ls) / w * s
 *       if s > t: c = 0.0
 *       return c
 * 8984 = 2343 + (15625 - 2343) / 2 is the middle of the cosine (lr_max / 2). */
static void test_schedule_recipe(void **state) {
    (void)state;
    static const struct { long step; double lr; } v[] = {
        {0, 1e-05},
        {1, 1.0422535211267606e-05},
        {1000, 0.00043253521126760563},
        {2342, 0.0009995774647887324},
        {2343, 0.001},
        {2344, 0.0009999999860133793},
        {8000, 0.0006153249837738068},
        {8984, 0.0005},
        {15624, 1.3986620805983564e-11},
        {15625, 0.0},
        {15626, 0.0},
        {1000000, 0.0},
    };
    sv_schedule s;
    char err[SV_ERR_LEN] = "";
    assert_int_equal(sv_schedule_init(&s, 1e-5, 1e-3, 2343, 15625, err), 0);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        double got = sv_schedule_lr(&s, v[i].step);
        if (!(fabs(got - v[i].lr) <= 1e-12 * fabs(v[i].lr) + 1e-18))
            fail_msg("lr(step %ld) = %.17g, expected %.17g", v[i].step, got, v[i].lr);
    }
    /* Monotone: rising through the warmup, falling after it, never negative. */
    double prev = sv_schedule_lr(&s, 0);
    for (long t = 1; t <= 2343; t++) {
        double cur = sv_schedule_lr(&s, t);
        assert_true(cur > prev);
        prev = cur;
    }
    for (long t = 2344; t <= 15626; t++) {
        double cur = sv_schedule_lr(&s, t);
        assert_true(cur <= prev && cur >= 0.0);
        prev = cur;
    }
}

/* No warmup: the cosine starts at lr_max at step 0 (cos 0 = 1). */
static void test_schedule_no_warmup(void **state) {
    (void)state;
    sv_schedule s;
    char err[SV_ERR_LEN] = "";
    assert_int_equal(sv_schedule_init(&s, 1e-5, 1e-3, 0, 100, err), 0);
    assert_close(sv_schedule_lr(&s, 0), 1e-3, 1e-12, 0);
    assert_close(sv_schedule_lr(&s, 50), 5e-4, 1e-12, 1e-18);
    assert_close(sv_schedule_lr(&s, 100), 0.0, 0, 1e-18);
    assert_close(sv_schedule_lr(&s, 101), 0.0, 0, 0);
}

static int contains_any(const char *s, const char *a, const char *b, const char *c) {
    return strstr(s, a) || (b && strstr(s, b)) || (c && strstr(s, c));
}

/* Errors (SPEC: total < warmup, or lr_max < lr_start): -1 and a message that
 * names the values. */
static void test_schedule_errors(void **state) {
    (void)state;
    sv_schedule s;
    char err[SV_ERR_LEN] = "";
    assert_int_equal(sv_schedule_init(&s, 1e-5, 1e-3, 2343, 2000, err), -1);
    if (!strstr(err, "2343") || !strstr(err, "2000"))
        fail_msg("message does not name the steps: \"%s\"", err);

    err[0] = '\0';
    assert_int_equal(sv_schedule_init(&s, 1e-3, 1e-5, 2343, 15625, err), -1);
    if (!contains_any(err, "0.001", "1e-03", "1e-3") || !contains_any(err, "1e-05", "1e-5", "0.00001"))
        fail_msg("message does not name lr_start and lr_max: \"%s\"", err);

    err[0] = '\0';
    assert_int_equal(sv_schedule_init(&s, 1e-5, 1e-3, -1, 15625, err), -1);
    assert_true(strlen(err) > 0);

    /* total == warmup is allowed (no decay phase). */
    assert_int_equal(sv_schedule_init(&s, 1e-5, 1e-3, 100, 100, err), 0);
    assert_close(sv_schedule_lr(&s, 0), 1e-5, 1e-12, 0);
    assert_close(sv_schedule_lr(&s, 101), 0.0, 0, 0);
    /* lr_start == lr_max is allowed. */
    assert_int_equal(sv_schedule_init(&s, 1e-3, 1e-3, 10, 100, err), 0);
    assert_close(sv_schedule_lr(&s, 5), 1e-3, 1e-12, 0);
}

/* ------------------------------------------------------------------------ */
/* AdamW                                                                     */

/* Three steps on w0 = [1, -2, 0.5] with b1 0.9, b2 0.999, eps 1e-7, wd 1e-2,
 * learning rates 1e-2, 5e-3, 2e-3 and gradients
 *   g1 = [0.1, -0.2, 0], g2 = [0.3, 0.1, 2e-6], g3 = [-0.2, 0.4, -1e-6]
 * (element 2: a zero gradient, then gradients small enough that eps, outside
 * the bias correction, changes the update). Python (double):
 *   for t, (g, lr) in enumerate(zip(G, lrs), 1):
 *       for i in range(3):
 *           w[i] -= (wd if mode == 'tfa' else lr * wd) * w[i]
 *           m[i] = b1 * m[i] + (1 - b1) * g[i]; v[i] = b2 * v[i] + (1 - b2) * g[i]**2
 *       lrt = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
 *       for i in range(3): w[i] -= lrt * m[i] / (math.sqrt(v[i]) + eps) */
static const float ADAM_W0[3] = {1.0f, -2.0f, 0.5f};
static const float ADAM_G[3][3] = {{0.1f, -0.2f, 0.0f}, {0.3f, 0.1f, 2e-6f}, {-0.2f, 0.4f, -1e-6f}};
static const double ADAM_LR[3] = {1e-2, 5e-3, 2e-3};
static const double ADAM_TFA[3][3] = {
    {0.9800003162177663, -1.970000158111383, 0.495},
    {0.9656114533515788, -1.9489684901721112, 0.4886085106564324},
    {0.9554395355689189, -1.9303934625373174, 0.48353305805897867},
};
static const double ADAM_TORCH[3][3] = {
    {0.9899003162177663, -1.989800158111383, 0.49995},
    {0.9852619614979456, -1.9883690017453193, 0.4984835131564324},
    {0.9847264530095715, -1.9892438916322117, 0.49828417599527985},
};
/* Moments after the three steps (the same in both modes). */
static const double ADAM_M[3] = {0.015099999999999995, 0.032799999999999996, 7.999999999999998e-08};
static const double ADAM_V[3] = {0.0001398900100000001, 0.00020991004000000022, 4.996000000000005e-15};

static void run_adamw_hand(sv_decay_mode mode, const double expect[3][3]) {
    sv_config cfg;
    sv_config_defaults(&cfg);
    cfg.weight_decay = 1e-2;
    cfg.beta1 = 0.9;
    cfg.beta2 = 0.999;
    cfg.eps = 1e-7;
    cfg.decay_mode = mode;
    sv_adamw o;
    sv_adamw_init(&o, 3, sv_adamw_settings_from(&cfg));
    assert_int_equal(o.n, 3);
    assert_int_equal(o.t, 0);
    assert_int_equal(o.decay_mode, mode);
    assert_close(o.weight_decay, 1e-2, 0, 0);
    for (int i = 0; i < 3; i++) {
        assert_close(o.m[i], 0.0, 0, 0);
        assert_close(o.v[i], 0.0, 0, 0);
    }
    float w[3];
    memcpy(w, ADAM_W0, sizeof w);
    for (int t = 0; t < 3; t++) {
        sv_adamw_step(&o, w, NULL, ADAM_G[t], ADAM_LR[t]);
        assert_int_equal(o.t, t + 1);
        for (int i = 0; i < 3; i++)
            if (!(fabs(w[i] - expect[t][i]) <= 1e-6 * fabs(expect[t][i]) + 2e-7))
                fail_msg("%s step %d: w[%d] = %.9g, expected %.9g",
                         mode == SV_DECAY_TFA ? "tfa" : "torch", t + 1, i, (double)w[i],
                         expect[t][i]);
    }
    /* The moments are float: (1 - b2) computed from b2 = 0.999f is
     * 9.99987e-4, 1.3e-5 below 1e-3 (TensorFlow's float32 Adam kernel does the
     * same), hence 3e-5 on v. */
    for (int i = 0; i < 3; i++) {
        assert_close(o.m[i], ADAM_M[i], 1e-5, 0);
        assert_close(o.v[i], ADAM_V[i], 3e-5, 0);
    }
    sv_adamw_free(&o);
}

static void test_adamw_tfa_hand(void **state) {
    (void)state;
    run_adamw_hand(SV_DECAY_TFA, ADAM_TFA);
}

static void test_adamw_torch_hand(void **state) {
    (void)state;
    run_adamw_hand(SV_DECAY_TORCH, ADAM_TORCH);
}

/* The recipe's hyper-parameters come from sv_config_defaults, and the first
 * Keras Adam step is lr * sign(g) up to eps: w1 = w0 (1 - 1e-4) - 1e-3 sign(g)
 * for |g| >> eps / sqrt(1 - b2) = 3.2e-6. */
static void test_adamw_recipe_defaults(void **state) {
    (void)state;
    sv_config cfg;
    sv_config_defaults(&cfg);
    sv_adamw o;
    sv_adamw_init(&o, 4, sv_adamw_settings_from(&cfg));
    assert_close(o.beta1, 0.9, 0, 0);
    assert_close(o.beta2, 0.999, 0, 0);
    assert_close(o.eps, 1e-7, 0, 0);
    assert_close(o.weight_decay, 1e-4, 0, 0);
    assert_int_equal(o.decay_mode, SV_DECAY_TFA);
    float w[4] = {1.0f, -1.0f, 0.25f, 3.0f};
    const float g[4] = {0.5f, 0.5f, -2.0f, 1e-2f};
    const float w0[4] = {1.0f, -1.0f, 0.25f, 3.0f};
    sv_adamw_step(&o, w, NULL, g, 1e-3);
    for (int i = 0; i < 4; i++) {
        double sgn = g[i] > 0 ? 1.0 : -1.0;
        /* exact: lr_t m / (sqrt v + eps) = 1e-3 |g| / (|g| + eps / sqrt(1e-3)) */
        double step = 1e-3 * fabs(g[i]) / (fabs(g[i]) + 1e-7 / sqrt(1e-3));
        assert_close(w[i], w0[i] * (1.0 - 1e-4) - sgn * step, 1e-6, 1e-7);
    }
    sv_adamw_free(&o);
}

/* Many parameters (the OpenMP loop) against a double-precision transcription
 * of the header's formulas, five steps, both decay modes. */
static void test_adamw_many(void **state) {
    (void)state;
    enum { N = 10007, STEPS = 5 };
    for (int mode = 0; mode < 2; mode++) {
        sv_config cfg;
        sv_config_defaults(&cfg);
        cfg.weight_decay = 3e-3;
        cfg.decay_mode = mode ? SV_DECAY_TORCH : SV_DECAY_TFA;
        sv_adamw o;
        sv_adamw_init(&o, N, sv_adamw_settings_from(&cfg));
        float *w = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
        double *rw = malloc(N * sizeof(double)), *rm = calloc(N, sizeof(double)),
               *rv = calloc(N, sizeof(double));
        assert_non_null(w); assert_non_null(g); assert_non_null(rw); assert_non_null(rm); assert_non_null(rv);
        for (int i = 0; i < N; i++) {
            w[i] = (float)sin(0.37 * i);
            rw[i] = w[i];
        }
        for (int t = 1; t <= STEPS; t++) {
            double lr = 1e-3 * t;
            for (int i = 0; i < N; i++) g[i] = (float)(0.1 * cos(0.11 * i * t + t));
            sv_adamw_step(&o, w, NULL, g, lr);
            double lrt = lr * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t));
            double dec = mode ? lr * 3e-3 : 3e-3;
            for (int i = 0; i < N; i++) {
                rw[i] -= dec * rw[i];
                rm[i] = 0.9 * rm[i] + 0.1 * g[i];
                rv[i] = 0.999 * rv[i] + 0.001 * (double)g[i] * g[i];
                rw[i] -= lrt * rm[i] / (sqrt(rv[i]) + 1e-7);
            }
        }
        for (int i = 0; i < N; i++)
            if (!(fabs(w[i] - rw[i]) <= 1e-6 * fabs(rw[i]) + 2e-6))
                fail_msg("mode %d: w[%d] = %.9g, expected %.9g", mode, i, (double)w[i], rw[i]);
        free(w); free(g); free(rw); free(rm); free(rv);
        sv_adamw_free(&o);
    }
}

/* ------------------------------------------------------------------------ */
/* Config step counts                                                        */

/* SPEC section 1: total = int(40000 / 256 * epochs), warmup = int(0.15 total).
 * Python: int(40000 / 256 * 100) = 15625, int(0.15 * 15625) = 2343;
 * int(40000 / 256 * 3) = 468, int(0.15 * 468) = 70;
 * int(40000 / 256 * 1) = 156, int(0.15 * 156) = 23. */
static void test_config_steps(void **state) {
    (void)state;
    sv_config cfg;
    sv_config_defaults(&cfg);
    assert_int_equal(sv_config_total_steps(&cfg), 15625);
    assert_int_equal(sv_config_warmup_steps(&cfg), 2343);
    cfg.epochs = 3;
    assert_int_equal(sv_config_total_steps(&cfg), 468);
    assert_int_equal(sv_config_warmup_steps(&cfg), 70);
    cfg.epochs = 1;
    assert_int_equal(sv_config_total_steps(&cfg), 156);
    assert_int_equal(sv_config_warmup_steps(&cfg), 23);
    /* The recipe's schedule built from the config. */
    sv_config_defaults(&cfg);
    sv_schedule s;
    char err[SV_ERR_LEN] = "";
    assert_int_equal(sv_schedule_init(&s, cfg.lr_start, cfg.lr_max, sv_config_warmup_steps(&cfg),
                                      sv_config_total_steps(&cfg), err), 0);
    assert_close(sv_schedule_lr(&s, 0), 1e-5, 1e-12, 0);
    assert_close(sv_schedule_lr(&s, 2343), 1e-3, 1e-12, 0);
    assert_close(sv_schedule_lr(&s, 15626), 0.0, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Moving average of the weights (train.ema_decay)                          */

/* The warm-up of tf.train.ExponentialMovingAverage(decay, num_updates):
 * min(decay, (1 + t) / (10 + t)), by hand. */
static void test_ema_decay_warmup(void **state) {
    (void)state;
    assert_close(sv_ema_decay_at(0.999, 1), 2.0 / 11.0, 1e-15, 0);
    assert_close(sv_ema_decay_at(0.999, 2), 0.25, 1e-15, 0);
    assert_close(sv_ema_decay_at(0.999, 90), 0.91, 1e-15, 0);
    assert_close(sv_ema_decay_at(0.999, 8991), 0.999, 1e-15, 0); /* 8992 / 9001 > 0.999 */
    assert_close(sv_ema_decay_at(0.999, 100000), 0.999, 1e-15, 0);
    assert_close(sv_ema_decay_at(0.3, 2), 0.25, 1e-15, 0);
    assert_close(sv_ema_decay_at(0.3, 3), 0.3, 1e-15, 0); /* 4 / 13 > 0.3 */
}

/* sv_ema_update over 120 updates of changing weights against the same
 * recursion in double, with the decay written out (decay 0.9 reaches its cap
 * after t = 80 updates, so warm-up and cap are both covered); and two
 * steps by hand: ema0 = 1, w1 = 3, w2 = 0 give 1 + (9/11)(3 - 1) = 29/11,
 * then 29/11 - (3/4)(29/11) = 29/44. */
static void test_ema_update(void **state) {
    (void)state;
    enum { N = 1000, STEPS = 120 };
    static float w[N];
    static double ref[N];
    for (int i = 0; i < N; i++) w[i] = (float)sin(0.37 * i), ref[i] = w[i];
    sv_ema e;
    sv_ema_init(&e, w, N, 0.9);
    assert_memory_equal(e.w, w, sizeof w); /* starts at the weights */
    double worst = 0;
    for (long t = 1; t <= STEPS; t++) {
        for (int i = 0; i < N; i++) w[i] = (float)(sin(0.37 * i + 0.05 * t) + 0.01 * t);
        sv_ema_update(&e, w, t);
        double d = fmin(0.9, (1.0 + t) / (10.0 + t));
        for (int i = 0; i < N; i++) {
            ref[i] = d * ref[i] + (1 - d) * w[i];
            worst = fmax(worst, fabs(e.w[i] - ref[i]));
        }
    }
    if (!(worst <= 2e-6)) fail_msg("EMA differs from the double recursion by %.3g", worst);
    sv_ema_free(&e);

    float a = 1.0f, p = 3.0f;
    sv_ema_init(&e, &a, 1, 0.999);
    sv_ema_update(&e, &p, 1);
    assert_close(e.w[0], 29.0 / 11.0, 1e-6, 0);
    p = 0.0f;
    sv_ema_update(&e, &p, 2);
    assert_close(e.w[0], 29.0 / 44.0, 1e-6, 0);
    sv_ema_free(&e);
}

/* The swap used to evaluate the average: exact, and its own inverse. */
static void test_ema_swap(void **state) {
    (void)state;
    enum { N = 257 };
    float w[N], w0[N];
    for (int i = 0; i < N; i++) w[i] = w0[i] = (float)i * 0.5f - 3.0f;
    sv_ema e;
    sv_ema_init(&e, w, N, 0.5);
    for (int i = 0; i < N; i++) e.w[i] = (float)(N - i);
    float a0[N];
    memcpy(a0, e.w, sizeof a0);
    sv_ema_swap(&e, w);
    assert_memory_equal(w, a0, sizeof w);
    assert_memory_equal(e.w, w0, sizeof w0);
    sv_ema_swap(&e, w);
    assert_memory_equal(w, w0, sizeof w);
    assert_memory_equal(e.w, a0, sizeof a0);
    sv_ema_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_recipe),
        cmocka_unit_test(test_schedule_no_warmup),
        cmocka_unit_test(test_schedule_errors),
        cmocka_unit_test(test_adamw_tfa_hand),
        cmocka_unit_test(test_adamw_torch_hand),
        cmocka_unit_test(test_adamw_recipe_defaults),
        cmocka_unit_test(test_adamw_many),
        cmocka_unit_test(test_config_steps),
        cmocka_unit_test(test_ema_decay_warmup),
        cmocka_unit_test(test_ema_update),
        cmocka_unit_test(test_ema_swap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
