/* Layer kernels (see include/shiftvit/layers.h for shapes and formulas). */
#include "shiftvit/layers.h"

#include <blis.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/rng.h"

/* Per-thread partial sums for column reductions (nthreads x 2 x
 * max_channels) and one row of max_channels per thread (g_rows). */
static float *g_scratch, *g_rows;
static int g_scratch_channels;
static int g_scratch_threads;

void sv_layers_reserve(int max_channels) {
    int nt = omp_get_max_threads();
    if (g_scratch && max_channels <= g_scratch_channels && nt <= g_scratch_threads)
        return;
    sv_free(g_scratch);
    sv_free(g_rows);
    g_scratch = sv_alloc((size_t)nt * 2 * (size_t)max_channels * sizeof(float),
                         "layer scratch");
    g_rows = sv_alloc((size_t)nt * (size_t)max_channels * sizeof(float), "layer scratch");
    g_scratch_channels = max_channels;
    g_scratch_threads = nt;
}

/* BLIS's own split of 2 threads over its loops left 7-9% of the GEMM time on
 * the table on this model's shapes (T x C times C x 2C and the weight
 * gradients, measured on 2 cores); splitting the micro-panel loop (jr) was
 * the best or within noise of the best on every shape. With more threads the
 * jr share is capped so that each thread still gets >= 4 micro-panels of N
 * (NR = 12 in the skx sgemm kernel); the rest of the threads split the MC
 * loop (ic). */
static void gemm_ways(rntm_t *rntm, int N) {
    int nt = omp_get_max_threads(), jr = 1;
    for (int d = 1; d <= nt; d++)
        if (nt % d == 0 && N >= 48 * d) jr = d;
    bli_rntm_set_ways(1, 1, nt / jr, jr, 1, rntm);
}

void sv_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    gemm_ways(&rntm, N);
    bli_sgemm_ex(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, M, N, K, &alpha,
                 (float *)A, lda, 1, (float *)B, ldb, 1, &beta, C, ldc, 1, NULL, &rntm);
}

/* Per-thread partial sums of column reductions. Inside a parallel region each
 * thread accumulates into its own zeroed slab of 2 x C floats (two sums per
 * column), then partials_combine adds the slabs in thread order, so results
 * are deterministic for a fixed thread count. */
static int partials_threads(int C) {
    int nt = omp_get_max_threads();
    SV_CHECK(g_scratch && C <= g_scratch_channels && nt <= g_scratch_threads);
    return nt;
}

static float *partials_slab(int C) {
    float *p = g_scratch + (size_t)omp_get_thread_num() * 2 * C;
    memset(p, 0, 2 * (size_t)C * sizeof(float));
    return p;
}

/* Called by every thread of the region after its accumulation; out2 may be NULL. */
static void partials_combine(float *out, float *out2, int C) {
    int nth = omp_get_num_threads();
#pragma omp barrier
#pragma omp for
    for (int c = 0; c < C; c++) {
        float s = 0.f, s2 = 0.f;
        for (int i = 0; i < nth; i++) {
            s += g_scratch[(size_t)i * 2 * C + c];
            s2 += g_scratch[(size_t)i * 2 * C + C + c];
        }
        out[c] = s;
        if (out2) out2[c] = s2;
    }
}

/* Rows [lo, hi) of the calling thread's even share of T rows. */
static void thread_rows(long T, long *lo, long *hi) {
    int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    *lo = T * tid / nth;
    *hi = T * (tid + 1) / nth;
}

/* out[c] = sum over rows t of a[t][c], over contiguous row blocks per thread. */
static void column_sums(float *out, const float *a, int T, int C) {
#pragma omp parallel num_threads(partials_threads(C))
    {
        float *pa = partials_slab(C);
        long lo, hi;
        thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++) {
            const float *ra = a + t * C;
            for (int c = 0; c < C; c++) pa[c] += ra[c];
        }
        partials_combine(out, NULL, C);
    }
}

/* C = op(A) x op(B) (alpha 1, beta 0) in fp32 through BLIS, or with bf16
 * operands when bf is not NULL. */
static void product(sv_bf16 *bf, int ta, int tb, int M, int N, int K, const float *A, int lda,
                    const float *B, int ldb, float *C, int ldc) {
    if (bf) sv_bf16_gemm(bf, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    else sv_gemm(ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc);
}

void sv_dense_forward(float *y, const float *x, const float *w, const float *b,
                      int T, int in, int out) {
    sv_dense_forward_mp(NULL, y, x, w, b, T, in, out);
}

void sv_dense_forward_mp(sv_bf16 *bf, float *y, const float *x, const float *w, const float *b,
                         int T, int in, int out) {
    /* beta = 0, bias added after: BLIS 0.9.0 with beta != 0 reads one float
     * past a narrow C (e.g. the 64 x 10 logits; tests/valgrind.sh found it). */
    product(bf, 0, 0, T, out, in, x, in, w, out, y, out);
    if (b) {
#pragma omp parallel for
        for (long t = 0; t < T; t++) {
            float *yr = y + t * out;
#pragma omp simd
            for (int o = 0; o < out; o++) yr[o] += b[o];
        }
    }
}

void sv_dense_backward(float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, int T, int in, int out) {
    sv_dense_backward_mp(NULL, dx, dw, db, dy, x, w, T, in, out);
}

void sv_dense_backward_mp(sv_bf16 *bf, float *dx, float *dw, float *db, const float *dy,
                          const float *x, const float *w, int T, int in, int out) {
    if (dx) product(bf, 0, 1, T, in, out, dy, out, w, out, dx, in);
    product(bf, 1, 0, in, out, T, x, in, dy, out, dw, out);
    if (db) column_sums(db, dy, T, out);
}

/* One row of LayerNorm. Two passes (mean, then squared deviations) keep the
 * variance accurate for large means, and each pass vectorises. */
static inline void ln_row_forward(float *restrict y, float *mean, float *rstd,
                                  const float *restrict x, const float *gamma,
                                  const float *beta, int C, float eps) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += x[c];
    float m = s / (float)C;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) {
        float d = x[c] - m;
        v += d * d;
    }
    float r = 1.0f / sqrtf(v / (float)C + eps);
#pragma omp simd
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * gamma[c] + beta[c];
    *mean = m;
    *rstd = r;
}

/* One row of the LayerNorm backward: out = base + input gradient (base may
 * alias out; NULL: out = the input gradient), parameter gradients
 * accumulated into pg, pb. */
static inline void ln_row_backward(float *out, const float *base, float *pg, float *pb,
                                   const float *dy, const float *x, float m, float r,
                                   const float *gamma, int C) {
    float sum_g = 0.f, sum_gx = 0.f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int c = 0; c < C; c++) {
        float xh = (x[c] - m) * r;
        float g = dy[c] * gamma[c];
        pg[c] += dy[c] * xh;
        pb[c] += dy[c];
        sum_g += g;
        sum_gx += g * xh;
    }
    sum_g /= C;
    sum_gx /= C;
    if (base) {
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - m) * r;
            out[c] = base[c] + r * (dy[c] * gamma[c] - sum_g - xh * sum_gx);
        }
    } else {
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - m) * r;
            out[c] = r * (dy[c] * gamma[c] - sum_g - xh * sum_gx);
        }
    }
}

void sv_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, int T, int C,
                          float eps) {
#pragma omp parallel for
    for (long t = 0; t < T; t++)
        ln_row_forward(y + t * C, mean + t, rstd + t, x + t * C, gamma, beta, C, eps);
}

void sv_layernorm_backward(float *dx, float *dgamma, float *dbeta,
                           const float *dy, const float *x, const float *mean,
                           const float *rstd, const float *gamma, int T, int C) {
#pragma omp parallel num_threads(partials_threads(C))
    {
        float *pg = partials_slab(C);
        float *pb = pg + C;
        long lo, hi;
        thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++)
            ln_row_backward(dx + t * C, dx + t * C, pg, pb, dy + t * C, x + t * C, mean[t],
                            rstd[t], gamma, C);
        partials_combine(dgamma, dbeta, C);
    }
}

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

void sv_gelu_dropout_forward(float *a, float *h, const float *bias, int N, int L,
                             int H, const uint64_t *keys, float p, int save_grad) {
    int drop = keys && p > 0.f;
    float inv_keep = drop ? 1.0f / (1.0f - p) : 1.0f;
    uint32_t thr = drop ? sv_rng_threshold24(p) : 0;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int l = 0; l < L; l++) {
            size_t row = ((size_t)n * L + l) * H;
            float *hr = h + row, *ar = a + row;
            uint64_t key = drop ? keys[n] : 0;
            uint32_t base = (uint32_t)l * (uint32_t)H;
            if (save_grad) {
                /* h is overwritten by da/dh, all that backward needs: no
                 * mask is stored and no erf is evaluated twice. */
#pragma omp simd
                for (int c = 0; c < H; c++) {
                    float x = hr[c] + (bias ? bias[c] : 0.f), d;
                    float g = gelu_and_grad(x, &d);
                    float s = (!drop || sv_rng_bits24(key, base + (uint32_t)c) >= thr) ? inv_keep : 0.f;
                    ar[c] = g * s;
                    hr[c] = d * s;
                }
            } else {
#pragma omp simd
                for (int c = 0; c < H; c++) {
                    float g = gelu_inline(hr[c] + (bias ? bias[c] : 0.f));
                    float s = (!drop || sv_rng_bits24(key, base + (uint32_t)c) >= thr) ? inv_keep : 0.f;
                    ar[c] = g * s;
                }
            }
        }
    }
}

void sv_gelu_dropout_backward(float *dh, float *dbias, const float *da,
                              const float *grad, int T, int H) {
#pragma omp parallel num_threads(dbias ? partials_threads(H) : omp_get_max_threads())
    {
        float *pb = dbias ? partials_slab(H) : NULL;
        long lo, hi;
        thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++) {
            const float *dar = da + t * H, *gr = grad + t * H;
            float *dhr = dh + t * H;
#pragma omp simd
            for (int c = 0; c < H; c++) dhr[c] = dar[c] * gr[c];
            if (pb) {
#pragma omp simd
                for (int c = 0; c < H; c++) pb[c] += dhr[c];
            }
        }
        if (dbias) partials_combine(dbias, NULL, H);
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

void sv_residual_dropout_backward(float *dz, float *dbias, const float *dout,
                                  const uint8_t *mask, int N, int L, int C,
                                  int use_mask, float p, const float *dp) {
    long T = (long)N * L;
    float inv_keep = use_mask ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel num_threads(dbias ? partials_threads(C) : omp_get_max_threads())
    {
        float *pb = dbias ? partials_slab(C) : NULL;
        long lo, hi;
        thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++) {
            const float *gr = dout + t * C;
            float *dzr = dz + t * C;
            float s = (dp ? dp[t / L] : 1.0f) * inv_keep;
            if (use_mask) {
                const uint8_t *mr = mask + t * C;
#pragma omp simd
                for (int c = 0; c < C; c++) dzr[c] = mr[c] ? gr[c] * s : 0.f;
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) dzr[c] = gr[c] * s;
            }
            if (pb) {
#pragma omp simd
                for (int c = 0; c < C; c++) pb[c] += dzr[c];
            }
        }
        if (dbias) partials_combine(dbias, NULL, C);
    }
}

/* Copies n floats from src, or writes zeros when src is NULL (the vacated
 * border of a shifted channel group). */
static inline void copy_or_zero(float *restrict dst, const float *restrict src, int n) {
    if (src) {
#pragma omp simd
        for (int c = 0; c < n; c++) dst[c] = src[c];
    } else {
#pragma omp simd
        for (int c = 0; c < n; c++) dst[c] = 0.f;
    }
}

/* One output token of the shift: y[n][h][w][c] = x[n][h + sy][w + sx][c] or
 * 0 outside, where the group of c sets (sx, sy) (times d = pixel for the
 * forward shift, -pixel for its adjoint): left out[w] = in[w + 1], right
 * out[w] = in[w - 1], up out[h] = in[h + 1], down out[h] = in[h - 1]. Five
 * contiguous copies: one per shifted group and the unshifted rest. xr points
 * at x's token (n, h, w). */
static inline void shift_token(float *yr, const float *xr, int h, int w, int H, int W,
                               int C, int g, int d) {
    int wl = w + d, wr = w - d, hu = h + d, hd = h - d;
    copy_or_zero(yr, (wl >= 0 && wl < W) ? xr + (ptrdiff_t)d * C : NULL, g);
    copy_or_zero(yr + g, (wr >= 0 && wr < W) ? xr + g - (ptrdiff_t)d * C : NULL, g);
    copy_or_zero(yr + 2 * g, (hu >= 0 && hu < H) ? xr + 2 * g + (ptrdiff_t)d * W * C : NULL, g);
    copy_or_zero(yr + 3 * g, (hd >= 0 && hd < H) ? xr + 3 * g - (ptrdiff_t)d * W * C : NULL, g);
    copy_or_zero(yr + 4 * g, xr + 4 * g, C - 4 * g);
}

static void shift_apply(float *y, const float *x, int N, int H, int W, int C,
                        int num_div, int pixel, int sign) {
    int g = C / num_div, d = pixel * sign;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                size_t tok = ((size_t)n * H + h) * W + w;
                shift_token(y + tok * C, x + tok * C, h, w, H, W, C, g, d);
            }
}

void sv_shift_forward(float *y, const float *x, int N, int H, int W, int C,
                      int num_div, int pixel) {
    shift_apply(y, x, N, H, W, C, num_div, pixel, 1);
}

void sv_shift_backward(float *dx, const float *dy, int N, int H, int W, int C,
                       int num_div, int pixel) {
    shift_apply(dx, dy, N, H, W, C, num_div, pixel, -1);
}

void sv_shift_layernorm_forward(float *xs, float *y, float *mean, float *rstd,
                                const float *x, const float *gamma, const float *beta,
                                int N, int H, int W, int C, int num_div, int pixel,
                                float eps) {
    int g = C / num_div;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                size_t tok = ((size_t)n * H + h) * W + w;
                shift_token(xs + tok * C, x + tok * C, h, w, H, W, C, g, pixel);
                ln_row_forward(y + tok * C, mean + tok, rstd + tok, xs + tok * C, gamma, beta,
                               C, eps);
            }
}

/* The adjoint of the shift, written from the source side: token (h, w)'s
 * gradient row v goes to the tokens its channel groups were shifted to, and
 * the groups of dx that no token reaches (a border `pixel` wide) are zeroed
 * by their own token. Every element of dx is written exactly once. */
static inline void unshift_token(float *dx_tok, const float *v, int h, int w, int H,
                                 int W, int C, int g, int d) {
    ptrdiff_t row = (ptrdiff_t)W * C;
    /* left: xs[w] = x[w + d], so x[w + d] receives v[w]; x[w < d] nothing. */
    if (w + d < W) copy_or_zero(dx_tok + (ptrdiff_t)d * C, v, g);
    if (w < d) copy_or_zero(dx_tok, NULL, g);
    /* right: x[w - d] receives v[w]; x[w >= W - d] nothing. */
    if (w - d >= 0) copy_or_zero(dx_tok - (ptrdiff_t)d * C + g, v + g, g);
    if (w >= W - d) copy_or_zero(dx_tok + g, NULL, g);
    /* up: x[h + d] receives v[h]; down: x[h - d] receives v[h]. */
    if (h + d < H) copy_or_zero(dx_tok + d * row + 2 * g, v + 2 * g, g);
    if (h < d) copy_or_zero(dx_tok + 2 * g, NULL, g);
    if (h - d >= 0) copy_or_zero(dx_tok - d * row + 3 * g, v + 3 * g, g);
    if (h >= H - d) copy_or_zero(dx_tok + 3 * g, NULL, g);
    copy_or_zero(dx_tok + 4 * g, v + 4 * g, C - 4 * g);
}

void sv_layernorm_shift_backward(float *dx, float *dgamma, float *dbeta,
                                 const float *dres, const float *dy, const float *xs,
                                 const float *mean, const float *rstd,
                                 const float *gamma, int N, int H, int W, int C,
                                 int num_div, int pixel) {
    int g = C / num_div;
    long T = (long)N * H * W;
#pragma omp parallel num_threads(partials_threads(C))
    {
        float *pg = partials_slab(C);
        float *pb = pg + C;
        float *v = g_rows + (size_t)omp_get_thread_num() * g_scratch_channels;
        long lo, hi;
        thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++) {
            int w = (int)(t % W), h = (int)(t / W % H);
            ln_row_backward(v, dres + t * C, pg, pb, dy + t * C, xs + t * C, mean[t], rstd[t],
                            gamma, C);
            unshift_token(dx + t * C, v, h, w, H, W, C, g, pixel);
        }
        partials_combine(dgamma, dbeta, C);
    }
}

void sv_window_gather(float *cols, const float *x, int N, int H, int W, int C,
                      int k) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
#pragma omp parallel for collapse(3)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                float *dst = cols + (((size_t)n * Ho + i) * Wo + j) * (size_t)(k * k * C);
                for (int kh = 0; kh < k; kh++)
                    for (int kw = 0; kw < k; kw++) {
                        int y = i * k + kh, xx = j * k + kw;
                        float *d = dst + (size_t)(kh * k + kw) * C;
                        if (y < H && xx < W)
                            memcpy(d, x + (((size_t)n * H + y) * W + xx) * C, (size_t)C * sizeof(float));
                        else
                            memset(d, 0, (size_t)C * sizeof(float));
                    }
            }
}

void sv_window_scatter(float *dx, const float *dcols, int N, int H, int W,
                       int C, int k) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
#pragma omp parallel for collapse(3)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                const float *src = dcols + (((size_t)n * Ho + i) * Wo + j) * (size_t)(k * k * C);
                for (int kh = 0; kh < k; kh++)
                    for (int kw = 0; kw < k; kw++) {
                        int y = i * k + kh, xx = j * k + kw;
                        if (y < H && xx < W)
                            memcpy(dx + (((size_t)n * H + y) * W + xx) * C,
                                   src + (size_t)(kh * k + kw) * C, (size_t)C * sizeof(float));
                    }
            }
}

void sv_layernorm_window_forward(float *cols, float *mean, float *rstd, const float *x,
                                 const float *gamma, const float *beta, int N, int H, int W,
                                 int C, int k, float eps) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
#pragma omp parallel for collapse(3) schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                float *dst = cols + (((size_t)n * Ho + i) * Wo + j) * (size_t)(k * k * C);
                for (int kh = 0; kh < k; kh++)
                    for (int kw = 0; kw < k; kw++) {
                        int yy = i * k + kh, xx = j * k + kw;
                        float *d = dst + (size_t)(kh * k + kw) * C;
                        if (yy < H && xx < W) {
                            size_t t = ((size_t)n * H + yy) * W + xx;
                            ln_row_forward(d, mean + t, rstd + t, x + t * C, gamma, beta, C, eps);
                        } else {
                            copy_or_zero(d, NULL, C);
                        }
                    }
            }
}

void sv_layernorm_window_backward(float *dx, float *dgamma, float *dbeta,
                                  const float *dcols, const float *x, const float *mean,
                                  const float *rstd, const float *gamma, int N, int H,
                                  int W, int C, int k) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
    long windows = (long)N * Ho * Wo;
#pragma omp parallel num_threads(partials_threads(C))
    {
        float *pg = partials_slab(C);
        float *pb = pg + C;
        long lo, hi;
        thread_rows(windows, &lo, &hi);
        for (long o = lo; o < hi; o++) {
            int j = (int)(o % Wo), i = (int)(o / Wo % Ho), n = (int)(o / ((long)Wo * Ho));
            const float *src = dcols + (size_t)o * (size_t)(k * k * C);
            for (int kh = 0; kh < k; kh++)
                for (int kw = 0; kw < k; kw++) {
                    int yy = i * k + kh, xx = j * k + kw;
                    if (yy >= H || xx >= W) continue; /* padding: no input */
                    size_t t = ((size_t)n * H + yy) * W + xx;
                    ln_row_backward(dx + t * C, NULL, pg, pb, src + (size_t)(kh * k + kw) * C,
                                    x + t * C, mean[t], rstd[t], gamma, C);
                }
        }
        partials_combine(dgamma, dbeta, C);
    }
}

void sv_avgpool_forward(float *y, const float *x, int N, int HW, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        float *yr = y + (size_t)n * C;
        for (int c = 0; c < C; c++) yr[c] = 0.f;
        for (int t = 0; t < HW; t++) {
            const float *xr = x + ((size_t)n * HW + t) * C;
            for (int c = 0; c < C; c++) yr[c] += xr[c];
        }
        for (int c = 0; c < C; c++) yr[c] /= (float)HW;
    }
}

void sv_avgpool_backward(float *dx, const float *dy, int N, int HW, int C) {
#pragma omp parallel for collapse(2)
    for (int n = 0; n < N; n++)
        for (int t = 0; t < HW; t++) {
            float *dr = dx + ((size_t)n * HW + t) * C;
            const float *g = dy + (size_t)n * C;
            for (int c = 0; c < C; c++) dr[c] = g[c] / (float)HW;
        }
}

void sv_softmax_xent_forward(float *losses, float *probs, const float *logits,
                             const int *labels, int N, int K, float smoothing) {
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * K;
        float *p = probs + (size_t)n * K;
        float mx = l[0];
        double sum_l = 0.0;
        for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
        double s = 0.0;
        for (int k = 0; k < K; k++) {
            s += exp((double)l[k] - mx);
            sum_l += l[k];
        }
        double lse = mx + log(s);
        for (int k = 0; k < K; k++) p[k] = (float)exp((double)l[k] - lse);
        if (!losses) continue;
        /* -sum_k t_k log p_k = lse - sum_k t_k l_k, since sum_k t_k = 1.
         * Without smoothing exactly the plain loss (bitwise, as before). */
        double target_logit = smoothing == 0.f
                                  ? (double)l[labels[n]]
                                  : (1.0 - smoothing) * l[labels[n]] + smoothing * sum_l / K;
        losses[n] = (float)(lse - target_logit);
    }
}

void sv_softmax_xent_backward(float *dlogits, const float *probs,
                              const int *labels, int N, int K, float scale, float smoothing) {
    float off = smoothing / (float)K, on = 1.f - smoothing + off;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            dlogits[(size_t)n * K + k] =
                (probs[(size_t)n * K + k] - (k == labels[n] ? on : off)) * scale;
}

int sv_topk_correct(const float *logits, int K, int label, int k) {
    float own = logits[label];
    int greater = 0, tied_before = 0;
    for (int i = 0; i < K; i++) {
        if (!isfinite(logits[i])) return 0; /* a broken row is never right */
        greater += logits[i] > own;
        tied_before += i < label && logits[i] == own;
    }
    /* top-1 is the argmax, ties going to the lowest index; top-k (k > 1)
     * counts ties at the boundary in the label's favour (tf.math.in_top_k). */
    return k == 1 ? greater == 0 && tied_before == 0 : greater < k;
}
