/* Element-wise kernels of the MLP (layers.h): exact GELU, the fused fc1
 * bias + GELU + dropout, the fused fc2 bias + dropout + drop path + residual,
 * and the drop-path scales. */
#include <stdint.h>

#include "layers_internal.h"
#include "shiftvit/rng.h"

/* erf(x) for float as a rational function x P(x^2) / Q(x^2) on [-4, 4]
 * (erf is +-1 to float precision beyond), the minimax approximation used by
 * Eigen and XLA for float erf; max error ~1e-7, no branches, so the GELU
 * loops vectorise (libm's erff does not). */
static inline float erf_fast(float x) {
    x = x < -4.f ? -4.f : (x > 4.f ? 4.f : x);
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    p = p * x;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return p / q;
}

/* exp(x) for x <= 0 (the Gaussian density's argument): x = n ln2 + r with
 * |r| <= ln2/2, exp(r) by its degree-6 Taylor polynomial (relative error
 * < 2e-7), 2^n assembled in the exponent bits; underflows to 0 below -87. */
static inline float exp_neg_fast(float x) {
    x = x < -87.f ? -87.f : x;
    /* round to nearest by the 1.5 * 2^23 trick: vectorises, unlike roundf */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.42860682030941723e-6f;
    float p = 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    union { float f; int32_t i; } u = {.i = ((int32_t)n + 127) << 23};
    return p * u.f;
}

static inline float gelu_inline(float x) {
    return 0.5f * x * (1.0f + erf_fast(x * 0.70710678118654752f));
}

static inline float gelu_grad_inline(float x) {
    float cdf = 0.5f * (1.0f + erf_fast(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * exp_neg_fast(-0.5f * x * x);
    return cdf + x * pdf;
}

float sv_gelu(float x) { return gelu_inline(x); }
float sv_gelu_grad(float x) { return gelu_grad_inline(x); }

/* GELU and its derivative from one erf: gelu = x Phi(x),
 * gelu' = Phi(x) + x phi(x). */
static inline float gelu_and_grad(float x, float *grad) {
    float cdf = 0.5f * (1.0f + erf_fast(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * exp_neg_fast(-0.5f * x * x);
    *grad = cdf + x * pdf;
    return x * cdf;
}

/* One row of the fused bias + GELU + dropout: a (fp32 or bf16) from h; in
 * training h is overwritten by da/dh, all that backward needs (no mask is
 * stored and no erf is evaluated twice). `drop` is a compile-time constant
 * at each call: without dropout the keep test, which the vectorised loop
 * would evaluate for every element (a hash) and then discard, is not there
 * at all (5.8 against 7.2 ms for 12.6 M elements, inference; 6.1 against
 * 8.8 ms in training). */
LY_INLINE void gelu_dropout_row(void *a, int bf16, float *hr, const float *bias, uint64_t key,
                                uint32_t base, uint32_t thr, float inv_keep, int drop, int save_grad,
                                int H) {
    if (save_grad) {
#pragma omp simd
        for (int c = 0; c < H; c++) {
            float x = hr[c] + (bias ? bias[c] : 0.f), d;
            float g = gelu_and_grad(x, &d);
            float s = drop ? (sv_rng_bits24(key, base + (uint32_t)c) >= thr ? inv_keep : 0.f) : 1.f;
            ly_put(a, bf16, (size_t)c, g * s);
            hr[c] = d * s;
        }
    } else {
#pragma omp simd
        for (int c = 0; c < H; c++) {
            float g = gelu_inline(hr[c] + (bias ? bias[c] : 0.f));
            float s = drop ? (sv_rng_bits24(key, base + (uint32_t)c) >= thr ? inv_keep : 0.f) : 1.f;
            ly_put(a, bf16, (size_t)c, g * s);
        }
    }
}

/* gelu_dropout_row with its type and dropout as constants. */
static void gelu_dropout_row_as(void *a, sv_dtype at, float *hr, const float *bias, uint64_t key,
                                uint32_t base, uint32_t thr, float inv_keep, int drop, int save_grad,
                                int H) {
    int bf16 = at == SV_DT_BF16;
    if (bf16 && drop) gelu_dropout_row(a, 1, hr, bias, key, base, thr, inv_keep, 1, save_grad, H);
    else if (bf16) gelu_dropout_row(a, 1, hr, bias, key, base, thr, inv_keep, 0, save_grad, H);
    else if (drop) gelu_dropout_row(a, 0, hr, bias, key, base, thr, inv_keep, 1, save_grad, H);
    else gelu_dropout_row(a, 0, hr, bias, key, base, thr, inv_keep, 0, save_grad, H);
}

void sv_gelu_dropout_forward(void *a, sv_dtype at, float *h, const float *bias, int N, int L,
                             int H, const uint64_t *keys, float p, int save_grad) {
    int drop = keys && p > 0.f;
    float inv_keep = drop ? 1.0f / (1.0f - p) : 1.0f;
    uint32_t thr = drop ? sv_rng_threshold24(p) : 0;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int l = 0; l < L; l++) {
            size_t row = ((size_t)n * L + l) * H;
            uint64_t key = drop ? keys[n] : 0;
            uint32_t base = (uint32_t)l * (uint32_t)H;
            gelu_dropout_row_as(ly_elem(a, at, row), at, h + row, bias, key, base, thr, inv_keep,
                                drop, save_grad, H);
        }
    }
}

/* Rows [lo, hi) of dh = da * grad (fp32 or bf16), their fp32 values summed
 * into pb (may be NULL). */
LY_INLINE void gelu_backward_rows(void *dh, int bf16, float *pb, const float *da, const float *grad,
                                  long lo, long hi, int H) {
    for (long t = lo; t < hi; t++) {
        const float *dar = da + t * H, *gr = grad + t * H;
        void *dhr = ly_elem(dh, bf16 ? SV_DT_BF16 : SV_DT_F32, (size_t)t * H);
        if (pb) {
#pragma omp simd
            for (int c = 0; c < H; c++) {
                float v = dar[c] * gr[c];
                ly_put(dhr, bf16, (size_t)c, v);
                pb[c] += v;
            }
        } else {
#pragma omp simd
            for (int c = 0; c < H; c++) ly_put(dhr, bf16, (size_t)c, dar[c] * gr[c]);
        }
    }
}

void sv_gelu_dropout_backward(sv_scratch *ws, void *dh, sv_dtype dht, float *dbias, const float *da,
                              const float *grad, int T, int H) {
#pragma omp parallel num_threads(dbias ? ly_partials_threads(ws, H) : omp_get_max_threads())
    {
        float *pb = dbias ? ly_partials_slab(ws, H) : NULL;
        long lo, hi;
        ly_thread_rows(T, &lo, &hi);
        if (dht == SV_DT_BF16) gelu_backward_rows(dh, 1, pb, da, grad, lo, hi, H);
        else gelu_backward_rows(dh, 0, pb, da, grad, lo, hi, H);
        if (dbias) ly_partials_combine(ws, dbias, NULL, H);
    }
}

void sv_drop_path_scales(float *dp, int N, const uint64_t *keys, float p) {
    for (int n = 0; n < N; n++)
        dp[n] = (keys && p > 0.f) ? (sv_rng_uniform(keys[n], 0) >= p ? 1.0f / (1.0f - p) : 0.f)
                                  : 1.0f;
}

void sv_residual_dropout_forward(float *out, uint8_t *mask, const float *x,
                                 const float *z, const float *bias, int N, int L,
                                 int C, const uint64_t *keys, float p,
                                 const float *dp) {
    int drop = keys && p > 0.f;
    float inv_keep = drop ? 1.0f / (1.0f - p) : 1.0f;
    uint32_t thr = drop ? sv_rng_threshold24(p) : 0;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int l = 0; l < L; l++) {
            size_t row = ((size_t)n * L + l) * C;
            const float *xr = x + row, *zr = z + row;
            float *yr = out + row;
            float s = (dp ? dp[n] : 1.0f) * inv_keep;
            if (drop) {
                uint8_t *mr = mask + row;
                uint64_t key = keys[n];
                uint32_t base = (uint32_t)l * (uint32_t)C;
#pragma omp simd
                for (int c = 0; c < C; c++) {
                    uint8_t k = sv_rng_bits24(key, base + (uint32_t)c) >= thr;
                    float v = (zr[c] + (bias ? bias[c] : 0.f)) * s;
                    mr[c] = k;
                    yr[c] = xr[c] + (k ? v : 0.f);
                }
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) yr[c] = xr[c] + (zr[c] + (bias ? bias[c] : 0.f)) * s;
            }
        }
    }
}

/* Rows [lo, hi) of dz = dout * dp[n] * mask / keep (fp32 or bf16), their
 * fp32 values summed into pb (may be NULL). */
LY_INLINE void residual_backward_rows(void *dz, int bf16, float *pb, const float *dout,
                                      const uint8_t *mask, const float *dp, float inv_keep, long lo,
                                      long hi, int L, int C) {
    for (long t = lo; t < hi; t++) {
        const float *gr = dout + t * C;
        const uint8_t *mr = mask ? mask + t * C : NULL;
        void *dzr = ly_elem(dz, bf16 ? SV_DT_BF16 : SV_DT_F32, (size_t)t * C);
        float s = (dp ? dp[t / L] : 1.0f) * inv_keep;
        if (pb) {
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float v = (!mr || mr[c]) ? gr[c] * s : 0.f;
                ly_put(dzr, bf16, (size_t)c, v);
                pb[c] += v;
            }
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++) ly_put(dzr, bf16, (size_t)c, (!mr || mr[c]) ? gr[c] * s : 0.f);
        }
    }
}

void sv_residual_dropout_backward(sv_scratch *ws, void *dz, sv_dtype dzt, float *dbias,
                                  const float *dout, const uint8_t *mask, int N, int L, int C,
                                  int use_mask, float p, const float *dp) {
    long T = (long)N * L;
    float inv_keep = use_mask ? 1.0f / (1.0f - p) : 1.0f;
    const uint8_t *m = use_mask ? mask : NULL;
#pragma omp parallel num_threads(dbias ? ly_partials_threads(ws, C) : omp_get_max_threads())
    {
        float *pb = dbias ? ly_partials_slab(ws, C) : NULL;
        long lo, hi;
        ly_thread_rows(T, &lo, &hi);
        if (dzt == SV_DT_BF16) residual_backward_rows(dz, 1, pb, dout, m, dp, inv_keep, lo, hi, L, C);
        else residual_backward_rows(dz, 0, pb, dout, m, dp, inv_keep, lo, hi, L, C);
        if (dbias) ly_partials_combine(ws, dbias, NULL, C);
    }
}
