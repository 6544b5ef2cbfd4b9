/* Mixed precision (issue 12): bf16 operands, fp32 accumulation.
 *   - the product against a double-precision reference of the same
 *     bf16-rounded operands (rounded here by sv_bf16_round, checked against
 *     hand-computed cases): within the fp32 accumulation bound
 *     K * 2^-24 * sum|a||b| for every element, all four transpose cases. A
 *     product whose operands were truncated instead of rounded to nearest
 *     even misses this bound by orders of magnitude;
 *   - the same product against the fp32 operands: within the bound of the two
 *     operand roundings (2^-7 + 2^-16) * sum|a||b| plus the accumulation term;
 *   - the native path (oneDNN) and the emulated path (rounding + BLIS) agree
 *     to the accumulation bound (on a CPU without bf16 both are emulated);
 *   - dense layer forward and backward in bf16 against fp32 on the same data:
 *     elementwise within the operand-rounding bound;
 *   - the whole tiny model, forward and backward, bf16 against fp32 on the
 *     same weights, batch and masks: loss within 1e-2 relative, the flattened
 *     gradient's cosine >= 0.999 (the targets);
 *   - through the real program on the tiny config and the real data: 240
 *     steps (30 epochs) in bf16 track the fp32 run, every epoch's train loss
 *     within 3% of fp32's (the target); and 2 ranks give the 1-rank
 *     losses in bf16, every step within 2e-3 relative. In fp32 the two agree
 *     to ~4e-7 (order of the sums); in bf16 a last-bit difference can round an
 *     operand the other way (2^-8 of that element), and AdamW turns a changed
 *     near-zero gradient element into a step of up to lr: measured here 6.4e-4
 *     at worst over 16 steps, the bound leaves 3x for other CPUs' kernels;
 *   - ZeRO stage 1 in bf16 gives stage 0's losses exactly (the weights' bf16
 *     copy re-rounded after the all-gather);
 *   - a resume may switch precision, and says so.
 * Run from the repository root (reads configs/tiny.ini). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/rng.h"
#include "shiftvit/settings.h"
#include "test_util.h"

#define U32 (1.0 / 16777216.0) /* 2^-24, fp32 unit roundoff */

static void fill(float *v, size_t n, uint64_t seed, float scale) {
    uint64_t key = sv_rng_key(seed, 7, 0, 0, 0);
    for (size_t i = 0; i < n; i++) v[i] = scale * (2.f * sv_rng_uniform(key, i) - 1.f);
}

static float rounded(float f) { return sv_bf16_to_float(sv_bf16_round(f)); }

static void test_rounding_by_hand(void **state) {
    (void)state;
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1). */
    assert_true(rounded(1.0f + 0x1p-8f) == 1.0f);
    /* 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6. */
    assert_true(rounded(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    /* just above the halfway point rounds up */
    assert_true(rounded(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    assert_true(rounded(-2.5f) == -2.5f);          /* exact in bf16 */
    assert_true(rounded(3.14159265f) == 3.140625f); /* 0x4049 */
    assert_true(isnan(rounded(NAN)));
    assert_true(isinf(rounded(INFINITY)));
    assert_true(sv_bf16_round(1.0f) == 0x3f80);
}

/* Element (i, j) of op(X), X stored rows x cols with ld. */
static float at(const float *X, int t, int ld, int i, int j) { return t ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j]; }

/* Checks C = op(A) op(B) elementwise: against the rounded operands within
 * the accumulation bound, against the fp32 operands within the rounding bound. */
static void check_product(const float *C, int ldc, int ta, int tb, int M, int N, int K, const float *A, int lda,
                          const float *B, int ldb, const char *what) {
    double worst_acc = 0, worst_round = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double r = 0, e = 0, s = 0;
            for (int k = 0; k < K; k++) {
                double a = at(A, ta, lda, i, k), b = at(B, tb, ldb, k, j);
                r += (double)rounded((float)a) * rounded((float)b);
                e += a * b;
                s += fabs(a * b);
            }
            double c = C[(size_t)i * ldc + j];
            double acc_bound = K * U32 * s * 1.01 + 1e-30;
            double round_bound = (0x1p-7 + 0x1p-16) * s * 1.01 + acc_bound;
            if (fabs(c - r) > acc_bound)
                fail_msg("%s: C[%d][%d] = %.9g, rounded-operand reference %.9g: |diff| %.3g > K u sum|ab| = %.3g",
                         what, i, j, c, r, fabs(c - r), acc_bound);
            if (fabs(c - e) > round_bound)
                fail_msg("%s: C[%d][%d] = %.9g, fp32-operand reference %.9g: |diff| %.3g > bound %.3g", what, i,
                         j, c, e, fabs(c - e), round_bound);
            if (fabs(c - r) / acc_bound > worst_acc) worst_acc = fabs(c - r) / acc_bound;
            if (fabs(c - e) / round_bound > worst_round) worst_round = fabs(c - e) / round_bound;
        }
    print_message("    %s: worst |C - ref(bf16 operands)| = %.2f of the bound, |C - ref(fp32)| = %.2f of its bound\n",
                  what, worst_acc, worst_round);
}

static void product_cases(int emulate) {
    sv_bf16 *bf = sv_bf16_create(emulate);
    print_message("    %s\n", sv_bf16_describe(bf));
    const int shapes[][3] = {{37, 29, 53}, {64, 96, 192}, {144, 192, 96}, {10, 768, 10}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                float *A = sv_alloc((size_t)(ta ? K : M) * lda * sizeof(float), "A");
                float *B = sv_alloc((size_t)(tb ? N : K) * ldb * sizeof(float), "B");
                float *C = sv_alloc((size_t)M * ldc * sizeof(float), "C");
                fill(A, (size_t)(ta ? K : M) * lda, 1 + s, 3.f);
                fill(B, (size_t)(tb ? N : K) * ldb, 100 + s, 0.5f);
                sv_bf16_gemm(bf, ta, tb, M, N, K, sv_mat_f32(A), lda, sv_mat_f32(B), ldb, C, ldc);
                char what[96];
                snprintf(what, sizeof what, "%s %dx%dx%d ta=%d tb=%d", emulate ? "emulated" : "default", M, K, N,
                         ta, tb);
                check_product(C, ldc, ta, tb, M, N, K, A, lda, B, ldb, what);
                sv_free(A); sv_free(B); sv_free(C);
            }
    }
    sv_bf16_free(bf);
}

static void test_product_default(void **state) {
    (void)state;
    product_cases(0);
}

static void test_product_emulated(void **state) {
    (void)state;
    product_cases(1);
}

/* Dense layer in bf16 against the fp32 layer, elementwise within the
 * operand-rounding bound of each output (sums of |products| from fp32). */
static void test_dense_layer(void **state) {
    (void)state;
    int T = 96, in = 48, out = 40;
    float *x = sv_alloc((size_t)T * in * 4, "x"), *w = sv_alloc((size_t)in * out * 4, "w"),
          *b = sv_alloc((size_t)out * 4, "b"), *dy = sv_alloc((size_t)T * out * 4, "dy");
    float *y32 = sv_alloc((size_t)T * out * 4, "y"), *y16 = sv_alloc((size_t)T * out * 4, "y");
    float *dx32 = sv_alloc((size_t)T * in * 4, "dx"), *dx16 = sv_alloc((size_t)T * in * 4, "dx");
    float *dw32 = sv_alloc((size_t)in * out * 4, "dw"), *dw16 = sv_alloc((size_t)in * out * 4, "dw");
    float *db32 = sv_alloc((size_t)out * 4, "db"), *db16 = sv_alloc((size_t)out * 4, "db");
    fill(x, (size_t)T * in, 11, 2.f);
    fill(w, (size_t)in * out, 12, 0.3f);
    fill(b, (size_t)out, 13, 0.1f);
    fill(dy, (size_t)T * out, 14, 0.01f);
    sv_scratch *ws = sv_scratch_create(256, 0);
    sv_bf16 *bf = sv_bf16_create(0);
    sv_dense_forward(y32, x, w, b, T, in, out);
    sv_dense_forward_mp(bf, y16, sv_mat_f32(x), sv_mat_f32(w), b, T, in, out);
    sv_dense_backward(ws, dx32, dw32, db32, dy, x, w, T, in, out);
    sv_dense_backward_mp(bf, ws, dx16, dw16, db16, sv_mat_f32(dy), sv_mat_f32(x), sv_mat_f32(w), T, in, out);
    double bound = 0x1p-7 + 0x1p-16 + 512 * U32;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int k = 0; k < in; k++) s += fabs((double)x[t * in + k] * w[k * out + o]);
            double d = fabs((double)y16[t * out + o] - y32[t * out + o]);
            if (d > bound * s) fail_msg("y[%d][%d]: bf16 %.9g fp32 %.9g (bound %.3g)", t, o, y16[t * out + o], y32[t * out + o], bound * s);
        }
    for (int t = 0; t < T; t++)
        for (int k = 0; k < in; k++) {
            double s = 0;
            for (int o = 0; o < out; o++) s += fabs((double)dy[t * out + o] * w[k * out + o]);
            if (fabs((double)dx16[t * in + k] - dx32[t * in + k]) > bound * s) fail_msg("dx[%d][%d] off", t, k);
        }
    for (int k = 0; k < in; k++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += fabs((double)x[t * in + k] * dy[t * out + o]);
            if (fabs((double)dw16[k * out + o] - dw32[k * out + o]) > bound * s) fail_msg("dw[%d][%d] off", k, o);
        }
    /* the bias gradient does not go through a product: bitwise fp32 */
    assert_memory_equal(db16, db32, (size_t)out * 4);
    sv_bf16_free(bf);
    sv_scratch_free(ws);
    sv_free(x); sv_free(w); sv_free(b); sv_free(dy); sv_free(y32); sv_free(y16); sv_free(dx32); sv_free(dx16);
    sv_free(dw32); sv_free(dw16); sv_free(db32); sv_free(db16);
}

/* Operands stored in bf16 are read in place: a product of pre-rounded bf16
 * operands (compact, or with a padded leading dimension) equals bitwise the
 * product of the fp32 operands rounded on the way in, on both paths. */
static void stored_operand_cases(int emulate) {
    sv_bf16 *bf = sv_bf16_create(emulate);
    int M = 150, K = 96, N = 70;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int pad = 0; pad < 2; pad++) {
                int lda = (ta ? M : K) + 7 * pad, ldb = (tb ? K : N) + 3 * pad;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb;
                float *A = sv_alloc(na * 4, "A"), *B = sv_alloc(nb * 4, "B");
                uint16_t *A16 = sv_alloc(na * 2, "A16"), *B16 = sv_alloc(nb * 2, "B16");
                float *C1 = sv_alloc((size_t)M * N * 4, "C"), *C2 = sv_alloc((size_t)M * N * 4, "C"),
                      *C3 = sv_alloc((size_t)M * N * 4, "C");
                fill(A, na, 21, 2.f);
                fill(B, nb, 22, 0.7f);
                sv_bf16_round_array(A16, A, na);
                sv_bf16_round_array(B16, B, nb);
                for (size_t i = 0; i < na; i++) assert_true(A16[i] == sv_bf16_round(A[i]));
                sv_bf16_gemm(bf, ta, tb, M, N, K, sv_mat_f32(A), lda, sv_mat_f32(B), ldb, C1, N);
                sv_bf16_gemm(bf, ta, tb, M, N, K, sv_mat_bf16(A16), lda, sv_mat_bf16(B16), ldb, C2, N);
                sv_bf16_gemm(bf, ta, tb, M, N, K, sv_mat_bf16(A16), lda, sv_mat_f32(B), ldb, C3, N);
                if (memcmp(C1, C2, (size_t)M * N * 4) || memcmp(C1, C3, (size_t)M * N * 4))
                    fail_msg("%s ta=%d tb=%d pad=%d: stored-bf16 operands give another product",
                             emulate ? "emulated" : "default", ta, tb, pad);
                if (ta == tb && tb == pad) /* the bound itself, for two of the cases */
                    check_product(C2, N, ta, tb, M, N, K, A, lda, B, ldb, "stored bf16 operands");
                sv_free(A); sv_free(B); sv_free(A16); sv_free(B16); sv_free(C1); sv_free(C2); sv_free(C3);
            }
    sv_bf16_free(bf);
}

static void test_stored_operands(void **state) {
    (void)state;
    stored_operand_cases(0);
    stored_operand_cases(1);
}

/* The bf16 weight gradient split along the rows (one batched oneDNN call,
 * layers.h sv_dense_dw_parts) against the unsplit product on the same
 * stored-bf16 operands: within the fp32 accumulation bound of each element. */
static void test_split_weight_gradient(void **state) {
    (void)state;
    int T = 4096, in = 32, out = 48, saved = omp_get_max_threads();
    omp_set_num_threads(2);
    assert_int_equal(sv_dense_dw_parts(T, in, out), 2);
    float *x = sv_alloc((size_t)T * in * 4, "x"), *dy = sv_alloc((size_t)T * out * 4, "dy");
    float *dw1 = sv_alloc((size_t)in * out * 4, "dw"), *dw2 = sv_alloc((size_t)in * out * 4, "dw");
    uint16_t *x16 = sv_alloc((size_t)T * in * 2, "x16"), *dy16 = sv_alloc((size_t)T * out * 2, "dy16");
    fill(x, (size_t)T * in, 61, 1.f);
    fill(dy, (size_t)T * out, 62, 0.1f);
    sv_bf16_round_array(x16, x, (size_t)T * in);
    sv_bf16_round_array(dy16, dy, (size_t)T * out);
    sv_bf16 *bf = sv_bf16_create(0);
    sv_scratch *ws = sv_scratch_create(64, (size_t)in * out);
    sv_dense_backward_mp(bf, NULL, NULL, dw1, NULL, sv_mat_bf16(dy16), sv_mat_bf16(x16), sv_mat_f32(dw1), T, in, out);
    sv_dense_backward_mp(bf, ws, NULL, dw2, NULL, sv_mat_bf16(dy16), sv_mat_bf16(x16), sv_mat_f32(dw1), T, in, out);
    double worst = 0;
    for (int i = 0; i < in; i++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int t = 0; t < T; t++)
                s += fabs((double)sv_bf16_to_float(x16[(size_t)t * in + i]) * sv_bf16_to_float(dy16[(size_t)t * out + o]));
            double bound = 2 * T * U32 * s + 1e-30, d = fabs((double)dw2[i * out + o] - dw1[i * out + o]);
            if (d > bound) fail_msg("dw[%d][%d]: split %.9g, unsplit %.9g (bound %.3g)", i, o, dw2[i * out + o], dw1[i * out + o], bound);
            if (d / bound > worst) worst = d / bound;
        }
    print_message("    split weight gradient (%s): worst difference %.3f of the accumulation bound\n", sv_bf16_describe(bf),
                  worst);
    sv_scratch_free(ws);
    sv_bf16_free(bf);
    omp_set_num_threads(saved);
    sv_free(x); sv_free(dy); sv_free(dw1); sv_free(dw2); sv_free(x16); sv_free(dy16);
}

/* n bf16 values equal, bitwise, the fp32 values rounded to nearest even. */
static void assert_rounded_copy(const uint16_t *b, const float *f, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (b[i] != sv_bf16_round(f[i]))
            fail_msg("%s[%zu]: bf16 0x%04x, fp32 %.9g rounds to 0x%04x", what, i, b[i], f[i], sv_bf16_round(f[i]));
}

/* Every kernel that writes an activation or gradient feeding a product in
 * bf16 writes exactly the rounding of what it writes in fp32, and what it
 * also computes in fp32 (LayerNorm statistics, the saved GELU derivative, the
 * bias gradients) is bitwise the same in both modes. */
static void test_kernels_store_bf16(void **state) {
    (void)state;
    int N = 3, S = 7, C = 24, H = 48, L = S * S, T = N * L;
    float *x = sv_alloc((size_t)T * H * 4, "x"), *g = sv_alloc((size_t)C * 4, "g"), *b = sv_alloc((size_t)H * 4, "b");
    float *o32 = sv_alloc((size_t)T * H * 4 * 4, "out"), *xs = sv_alloc((size_t)T * C * 4, "xs");
    uint16_t *o16 = sv_alloc((size_t)T * H * 4 * 2, "out16");
    float *st32 = sv_alloc((size_t)T * 2 * 4, "stats"), *st16 = sv_alloc((size_t)T * 2 * 4, "stats");
    float *h32 = sv_alloc((size_t)T * H * 4, "h"), *h16 = sv_alloc((size_t)T * H * 4, "h");
    float *db32 = sv_alloc((size_t)H * 4, "db"), *db16 = sv_alloc((size_t)H * 4, "db"), *dp = sv_alloc((size_t)N * 4, "dp");
    uint8_t *mask = sv_alloc((size_t)T * C, "mask");
    uint64_t keys[3] = {11, 12, 13};
    sv_scratch *ws = sv_scratch_create(256, 0);
    fill(x, (size_t)T * H, 31, 2.f);
    fill(g, (size_t)C, 32, 1.f);
    fill(b, (size_t)H, 33, 0.3f);

    sv_shift_layernorm_forward(xs, o32, SV_DT_F32, st32, st32 + T, x, g, b, N, S, S, C, 12, 1, 1e-5f);
    sv_shift_layernorm_forward(xs, o16, SV_DT_BF16, st16, st16 + T, x, g, b, N, S, S, C, 12, 1, 1e-5f);
    assert_rounded_copy(o16, o32, (size_t)T * C, "shift+LayerNorm output");
    assert_memory_equal(st16, st32, (size_t)T * 2 * 4);

    int To = N * 4 * 4; /* 7 x 7 -> 4 x 4 windows, padded */
    sv_layernorm_window_forward(o32, SV_DT_F32, st32, st32 + T, x, g, b, N, S, S, C, 2, 1e-5f);
    sv_layernorm_window_forward(o16, SV_DT_BF16, st16, st16 + T, x, g, b, N, S, S, C, 2, 1e-5f);
    assert_rounded_copy(o16, o32, (size_t)To * 4 * C, "LayerNorm window columns");
    assert_memory_equal(st16, st32, (size_t)T * 2 * 4);

    sv_window_gather(o32, SV_DT_F32, x, N, S, S, 3, 4);
    sv_window_gather(o16, SV_DT_BF16, x, N, S, S, 3, 4);
    assert_rounded_copy(o16, o32, (size_t)N * 2 * 2 * 48, "patch columns");

    memcpy(h32, x, (size_t)T * H * 4);
    memcpy(h16, x, (size_t)T * H * 4);
    sv_gelu_dropout_forward(o32, SV_DT_F32, h32, b, N, L, H, keys, 0.2f, 1);
    sv_gelu_dropout_forward(o16, SV_DT_BF16, h16, b, N, L, H, keys, 0.2f, 1);
    assert_rounded_copy(o16, o32, (size_t)T * H, "GELU-dropout output");
    assert_memory_equal(h16, h32, (size_t)T * H * 4); /* the saved derivative */

    fill(o32 + (size_t)T * H, (size_t)T * H, 34, 0.05f); /* da */
    float *da = o32 + (size_t)T * H, *dh32 = o32 + 2 * (size_t)T * H;
    sv_gelu_dropout_backward(ws, dh32, SV_DT_F32, db32, da, h32, T, H);
    sv_gelu_dropout_backward(ws, o16, SV_DT_BF16, db16, da, h32, T, H);
    assert_rounded_copy(o16, dh32, (size_t)T * H, "GELU-dropout input gradient");
    assert_memory_equal(db16, db32, (size_t)H * 4);

    for (int i = 0; i < T * C; i++) mask[i] = (uint8_t)(i % 5 != 0);
    sv_drop_path_scales(dp, N, keys, 0.5f);
    sv_residual_dropout_backward(ws, dh32, SV_DT_F32, db32, da, mask, N, L, C, 1, 0.2f, dp);
    sv_residual_dropout_backward(ws, o16, SV_DT_BF16, db16, da, mask, N, L, C, 1, 0.2f, dp);
    assert_rounded_copy(o16, dh32, (size_t)T * C, "residual-dropout gradient");
    assert_memory_equal(db16, db32, (size_t)C * 4);

    sv_scratch_free(ws);
    sv_free(x); sv_free(g); sv_free(b); sv_free(o32); sv_free(xs); sv_free(o16); sv_free(st32); sv_free(st16);
    sv_free(h32); sv_free(h16); sv_free(db32); sv_free(db16); sv_free(dp); sv_free(mask);
}

/* AdamW writes the weights' bf16 copy in its own pass: bitwise the rounding
 * of the updated fp32 weights, which are the same as without the copy. */
static void test_adamw_writes_bf16_copy(void **state) {
    (void)state;
    sv_config c;
    sv_config_defaults(&c);
    size_t n = 1000;
    float *w1 = sv_alloc(n * 4, "w"), *w2 = sv_alloc(n * 4, "w"), *gr = sv_alloc(n * 4, "g");
    uint16_t *wb = sv_alloc(n * 2, "wb");
    fill(w1, n, 41, 0.1f);
    memcpy(w2, w1, n * 4);
    sv_adamw o1, o2;
    sv_adamw_init(&o1, n, sv_adamw_settings_from(&c));
    sv_adamw_init(&o2, n, sv_adamw_settings_from(&c));
    for (int step = 0; step < 3; step++) {
        fill(gr, n, 42 + step, 0.01f);
        sv_adamw_step(&o1, w1, NULL, gr, 1e-3);
        sv_adamw_step(&o2, w2, wb, gr, 1e-3);
        assert_memory_equal(w1, w2, n * 4);
        assert_rounded_copy(wb, w2, n, "bf16 weights");
    }
    sv_adamw_free(&o1);
    sv_adamw_free(&o2);
    sv_free(w1); sv_free(w2); sv_free(gr); sv_free(wb);
}

/* Cosine of two flattened gradients, in double. */
static double cosine_of(const float *a, const float *b, size_t n) {
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    return dot / sqrt(na * nb);
}

/* Forward (training mode) + loss + backward of one batch; returns the mean loss. */
static double model_step(sv_model *m, const float *x, const int *labels, const long *ids, int N, float *probs,
                         float *dl) {
    sv_train_rng rng = {42, 0, ids};
    const float *logits = sv_model_forward(m, x, N, &rng);
    float losses[64];
    sv_softmax_xent_forward(losses, probs, logits, labels, N, m->num_classes, 0.f);
    double L = 0;
    for (int i = 0; i < N; i++) L += losses[i];
    sv_softmax_xent_backward(dl, probs, labels, N, m->num_classes, 1.f / N, 0.f);
    sv_model_backward(m, dl, NULL, NULL);
    return L / N;
}

static void test_whole_model(void **state) {
    (void)state;
    sv_config c32, c16;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c32);
    if (sv_config_load(&c32, "configs/tiny.ini", err)) fail_msg("%s", err);
    c16 = c32;
    c16.precision = SV_BF16;
    int N = 32, S = c32.image_size, K = c32.num_classes;
    sv_model m32, m16;
    if (sv_model_create(&m32, sv_model_settings_from(&c32), N, err) || sv_model_create(&m16, sv_model_settings_from(&c16), N, err)) fail_msg("%s", err);
    sv_model_init_weights(&m32, 42);
    sv_model_init_weights(&m16, 42);
    float *x = sv_alloc((size_t)N * S * S * 3 * 4, "x"), *probs = sv_alloc((size_t)N * K * 4, "p"),
          *dl = sv_alloc((size_t)N * K * 4, "dl");
    int labels[64];
    long ids[64];
    uint64_t key = sv_rng_key(3, 9, 0, 0, 0);
    for (size_t i = 0; i < (size_t)N * S * S * 3; i++) x[i] = sv_rng_uniform(key, i);
    for (int i = 0; i < N; i++) labels[i] = i % K, ids[i] = i;
    double l32 = model_step(&m32, x, labels, ids, N, probs, dl);
    double l16 = model_step(&m16, x, labels, ids, N, probs, dl);
    /* The emulated path (no bf16 instructions: stored bf16 operands widened
     * to fp32, BLIS) on the same model: the same products up to the order of
     * the fp32 sums. */
    sv_model me;
    if (sv_model_create(&me, sv_model_settings_from(&c16), N, err)) fail_msg("%s", err);
    sv_bf16_free(me.bf16);
    me.bf16 = sv_bf16_create(1);
    sv_model_init_weights(&me, 42);
    double le = model_step(&me, x, labels, ids, N, probs, dl);
    double cos_e = cosine_of(me.grads, m16.grads, me.num_params);
    print_message("    emulated bf16: loss %.6f (native %.6f), gradient cosine with native %.8f\n", le, l16, cos_e);
    assert_true(fabs(le - l16) <= 1e-4 * fabs(l16));
    assert_true(cos_e >= 0.99999);
    sv_model_free(&me);
    double cosine = cosine_of(m32.grads, m16.grads, m32.num_params);
    print_message("    tiny model, batch %d: loss fp32 %.6f bf16 %.6f (rel %.2e), gradient cosine %.6f\n", N, l32, l16,
                  fabs(l16 - l32) / l32, cosine);
    assert_true(fabs(l16 - l32) <= 1e-2 * fabs(l32));
    assert_true(cosine >= 0.999);
    assert_true(cosine < 1.0 - 1e-9 || l16 != l32); /* the bf16 path really ran */
    sv_free(x); sv_free(probs); sv_free(dl);
    sv_model_free(&m32);
    sv_model_free(&m16);
}

/* The weights' bf16 copy follows params: after an edit announced by
 * sv_model_params_changed the next forward uses the new weights, exactly as
 * a model built with them does. */
static void test_weight_copy_follows_params(void **state) {
    (void)state;
    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    if (sv_config_load(&c, "configs/tiny.ini", err)) fail_msg("%s", err);
    c.precision = SV_BF16;
    int N = 4, S = c.image_size, K = c.num_classes;
    sv_model a, b;
    if (sv_model_create(&a, sv_model_settings_from(&c), N, err) || sv_model_create(&b, sv_model_settings_from(&c), N, err)) fail_msg("%s", err);
    sv_model_init_weights(&a, 5);
    float *x = sv_alloc((size_t)N * S * S * 3 * 4, "x"), before[64], after[64];
    fill(x, (size_t)N * S * S * 3, 51, 0.5f);
    memcpy(before, sv_model_forward(&a, x, N, NULL), (size_t)N * K * 4);
    for (size_t i = 0; i < a.num_params; i++) a.params[i] *= 1.5f;
    sv_model_params_changed(&a);
    memcpy(after, sv_model_forward(&a, x, N, NULL), (size_t)N * K * 4);
    memcpy(b.params, a.params, a.num_params * 4);
    sv_model_params_changed(&b);
    const float *fresh = sv_model_forward(&b, x, N, NULL);
    assert_memory_equal(after, fresh, (size_t)N * K * 4);
    assert_memory_not_equal(after, before, (size_t)N * K * 4);
    assert_rounded_copy(a.params_bf16, a.params, a.num_params, "model bf16 weights");
    sv_free(x);
    sv_model_free(&a);
    sv_model_free(&b);
}

static char g_tmp[64], g_bin[256];

/* Trains the tiny config with P ranks (1 thread each) into g_tmp/name. */
static void train_tiny(const char *name, int P, const char *sets) {
    char cmd[2048], mpirun[256];
    sv_test_mpirun(mpirun, sizeof mpirun, P, SV_TEST_THREAD_VARS);
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 timeout -k 10 300 %s %s train -c configs/tiny.ini %s --out %s/%s 2>&1",
             mpirun, g_bin, sets, g_tmp, name);
    char *out = sv_test_run_ok(cmd, NULL).out;
    if (strstr(sets, "bf16") && !strstr(out, "Precision: bf16")) fail_msg("no precision line:\n%s", out);
    free(out);
}

/* Column `col` (0-based) of the rows of RUN/file, up to max rows. */
static int read_column(const char *name, const char *file, int col, double *v, int max) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/%s", g_tmp, name, file);
    char *text = sv_test_slurp(path, NULL), *line = strchr(text, '\n');
    int n = 0;
    while (line && line[1] && n < max) {
        const char *f = line + 1;
        for (int c = 0; c < col; c++) f = strchr(f, ',') + 1;
        v[n++] = strtod(f, NULL);
        line = strchr(line + 1, '\n');
    }
    free(text);
    return n;
}

static void test_training_tracks_fp32(void **state) {
    (void)state;
    const char *sets = "--set train.epochs=30 --set train.patience=0";
    char bf[256];
    snprintf(bf, sizeof bf, "%s --set train.precision=bf16", sets);
    train_tiny("fp32", 1, sets);
    train_tiny("bf16", 1, bf);
    double a[64], b[64];
    int na = read_column("fp32", "metrics_epochs.csv", 1, a, 64), nb = read_column("bf16", "metrics_epochs.csv", 1, b, 64);
    assert_int_equal(na, 30);
    assert_int_equal(nb, 30);
    double worst = 0;
    for (int e = 0; e < na; e++) {
        double rel = fabs(b[e] - a[e]) / a[e];
        if (rel > worst) worst = rel;
        if (rel > 0.03) fail_msg("epoch %d: train loss bf16 %.5f against fp32 %.5f (%.1f%%)", e + 1, b[e], a[e], 100 * rel);
    }
    print_message("    30 epochs (240 steps): train loss %.4f -> %.4f in fp32, %.4f -> %.4f in bf16; worst epoch %.2f%% apart\n",
                  a[0], a[na - 1], b[0], b[nb - 1], 100 * worst);
}

static void test_rank_invariance(void **state) {
    (void)state;
    const char *sets = "--set train.epochs=2 --set train.precision=bf16";
    train_tiny("p1", 1, sets);
    train_tiny("p2", 2, sets);
    double a[64], b[64];
    int na = read_column("p1", "metrics_steps.csv", 3, a, 64), nb = read_column("p2", "metrics_steps.csv", 3, b, 64);
    assert_int_equal(na, 16);
    assert_int_equal(nb, 16);
    double worst = 0;
    for (int i = 0; i < na; i++) {
        double rel = fabs(b[i] - a[i]) / fabs(a[i]);
        if (rel > worst) worst = rel;
        if (rel > 2e-3) fail_msg("step %d: loss %.7f on 2 ranks, %.7f on 1", i + 1, b[i], a[i]);
    }
    print_message("    bf16, 16 steps: losses on 1 and 2 ranks within %.2e relative\n", worst);
}

/* ZeRO stage 1 in bf16: the other ranks' shards of the weights arrive by the
 * all-gather in fp32, and the next forward rounds the bf16 copy from them;
 * every step's loss must equal stage 0's (where AdamW writes the copy). A
 * stale copy would change the losses from the second step on. */
static void test_zero_stage1_bf16(void **state) {
    (void)state;
    train_tiny("zero0", 2, "--set train.epochs=2 --set train.precision=bf16 --set train.zero_stage=0");
    train_tiny("zero1", 2, "--set train.epochs=2 --set train.precision=bf16 --set train.zero_stage=1");
    double a[64], b[64];
    int na = read_column("zero0", "metrics_steps.csv", 3, a, 64), nb = read_column("zero1", "metrics_steps.csv", 3, b, 64);
    assert_int_equal(na, 16);
    assert_int_equal(nb, 16);
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) fail_msg("step %d: loss %.7f with ZeRO stage 1, %.7f without", i + 1, b[i], a[i]);
    print_message("    bf16 on 2 ranks: ZeRO stage 1 gives stage 0's 16 losses exactly\n");
}

/* oneDNN limited below bf16 (ONEDNN_MAX_CPU_ISA=AVX2) cannot build a bf16
 * matmul: the run falls back to the emulated products and says so (it
 * aborted before). */
static void test_onednn_without_bf16_kernels(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 timeout -k 10 120 %s train -c configs/tiny.ini "
             "--set train.precision=bf16 --set train.max_steps=2 --out %s/isa 2>&1",
             g_bin, g_tmp);
    char *out = sv_test_run_ok(cmd, NULL).out;
    if (!strstr(out, "Precision: bf16 matrix products emulated")) fail_msg("no fallback to the emulated products:\n%s", out);
    free(out);
}

/* A run may change precision on resume (issue 12): accepted, and said. */
static void test_resume_in_other_precision(void **state) {
    (void)state;
    train_tiny("switch", 1, "--set train.max_steps=3");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 %s train --resume %s/switch/last.h5 --out %s/switch --set train.precision=bf16 "
             "--set train.max_steps=6 2>&1",
             g_bin, g_tmp, g_tmp);
    char *out = sv_test_run_ok(cmd, NULL).out;
    if (!strstr(out, "Resuming in bf16: the checkpoint's run trained in fp32"))
        fail_msg("the switch is not stated:\n%s", out);
    if (!strstr(out, "Precision: bf16")) fail_msg("no precision line:\n%s", out);
    free(out);
}

int main(void) {
    if (sv_test_bin_and_tmp(g_bin, sizeof g_bin, g_tmp, sizeof g_tmp, "sv_bf16") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding_by_hand),
        cmocka_unit_test(test_product_default),
        cmocka_unit_test(test_product_emulated),
        cmocka_unit_test(test_dense_layer),
        cmocka_unit_test(test_stored_operands),
        cmocka_unit_test(test_split_weight_gradient),
        cmocka_unit_test(test_kernels_store_bf16),
        cmocka_unit_test(test_adamw_writes_bf16_copy),
        cmocka_unit_test(test_whole_model),
        cmocka_unit_test(test_weight_copy_follows_params),
        cmocka_unit_test(test_training_tracks_fp32),
        cmocka_unit_test(test_rank_invariance),
        cmocka_unit_test(test_zero_stage1_bf16),
        cmocka_unit_test(test_onednn_without_bf16_kernels),
        cmocka_unit_test(test_resume_in_other_precision),
    };
    SV_TEST_RUN_AND_CLEAN(tests, g_tmp);
}
