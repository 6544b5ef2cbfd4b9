/* Token movement (layers.h): the shift and its adjoint, the fused shift +
 * LayerNorm and its backward, the k x k window gather and scatter with the
 * fused LayerNorm + window kernels (patch merging), and global average
 * pooling. Built with -fno-tree-loop-distribute-patterns (Makefile): GCC
 * would turn the channel-group copies into memmove calls. */
#include <string.h>

#include "layers_internal.h"

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

void sv_shift_layernorm_forward(float *xs, void *y, sv_dtype yt, float *mean, float *rstd,
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
                ly_ln_row_forward(ly_elem(y, yt, tok * C), yt, mean + tok, rstd + tok, xs + tok * C, gamma,
                                  beta, C, eps);
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

void sv_layernorm_shift_backward(sv_scratch *ws, float *dx, float *dgamma, float *dbeta,
                                 const float *dres, const float *dy, const float *xs,
                                 const float *mean, const float *rstd,
                                 const float *gamma, int N, int H, int W, int C,
                                 int num_div, int pixel) {
    int g = C / num_div;
    long T = (long)N * H * W;
#pragma omp parallel num_threads(ly_partials_threads(ws, C))
    {
        float *pg = ly_partials_slab(ws, C);
        float *pb = pg + C;
        float *v = ly_scratch_row(ws);
        long lo, hi;
        ly_thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++) {
            int w = (int)(t % W), h = (int)(t / W % H);
            ly_ln_row_backward(v, dres + t * C, pg, pb, dy + t * C, xs + t * C, mean[t], rstd[t],
                               gamma, C);
            unshift_token(dx + t * C, v, h, w, H, W, C, g, pixel);
        }
        ly_partials_combine(ws, dgamma, dbeta, C);
    }
}

void sv_window_gather(void *cols, sv_dtype ct, const float *x, int N, int H, int W, int C, int k) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
    size_t elt = ct == SV_DT_BF16 ? sizeof(uint16_t) : sizeof(float);
#pragma omp parallel for collapse(3)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                size_t dst = (((size_t)n * Ho + i) * Wo + j) * (size_t)(k * k * C);
                for (int kh = 0; kh < k; kh++)
                    for (int kw = 0; kw < k; kw++) {
                        int y = i * k + kh, xx = j * k + kw;
                        void *d = ly_elem(cols, ct, dst + (size_t)(kh * k + kw) * C);
                        const float *src = x + (((size_t)n * H + y) * W + xx) * C;
                        if (y >= H || xx >= W)
                            memset(d, 0, (size_t)C * elt);
                        else if (ct == SV_DT_BF16)
                            for (int c = 0; c < C; c++) ((uint16_t *)d)[c] = sv_bf16_round(src[c]);
                        else
                            memcpy(d, src, (size_t)C * sizeof(float));
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

void sv_layernorm_window_forward(void *cols, sv_dtype ct, float *mean, float *rstd, const float *x,
                                 const float *gamma, const float *beta, int N, int H, int W,
                                 int C, int k, float eps) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
    size_t elt = ct == SV_DT_BF16 ? sizeof(uint16_t) : sizeof(float);
#pragma omp parallel for collapse(3) schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                size_t dst = (((size_t)n * Ho + i) * Wo + j) * (size_t)(k * k * C);
                for (int kh = 0; kh < k; kh++)
                    for (int kw = 0; kw < k; kw++) {
                        int yy = i * k + kh, xx = j * k + kw;
                        void *d = ly_elem(cols, ct, dst + (size_t)(kh * k + kw) * C);
                        if (yy < H && xx < W) {
                            size_t t = ((size_t)n * H + yy) * W + xx;
                            ly_ln_row_forward(d, ct, mean + t, rstd + t, x + t * C, gamma, beta, C,
                                              eps);
                        } else {
                            memset(d, 0, (size_t)C * elt); /* +0.0 in both types */
                        }
                    }
            }
}

void sv_layernorm_window_backward(sv_scratch *ws, float *dx, float *dgamma, float *dbeta,
                                  const float *dcols, const float *x, const float *mean,
                                  const float *rstd, const float *gamma, int N, int H,
                                  int W, int C, int k) {
    int Ho = (H + k - 1) / k, Wo = (W + k - 1) / k;
    long windows = (long)N * Ho * Wo;
#pragma omp parallel num_threads(ly_partials_threads(ws, C))
    {
        float *pg = ly_partials_slab(ws, C);
        float *pb = pg + C;
        long lo, hi;
        ly_thread_rows(windows, &lo, &hi);
        for (long o = lo; o < hi; o++) {
            int j = (int)(o % Wo), i = (int)(o / Wo % Ho), n = (int)(o / ((long)Wo * Ho));
            const float *src = dcols + (size_t)o * (size_t)(k * k * C);
            for (int kh = 0; kh < k; kh++)
                for (int kw = 0; kw < k; kw++) {
                    int yy = i * k + kh, xx = j * k + kw;
                    if (yy >= H || xx >= W) continue; /* padding: no input */
                    size_t t = ((size_t)n * H + yy) * W + xx;
                    ly_ln_row_backward(dx + t * C, NULL, pg, pb, src + (size_t)(kh * k + kw) * C,
                                       x + t * C, mean[t], rstd[t], gamma, C);
                }
        }
        ly_partials_combine(ws, dgamma, dbeta, C);
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
