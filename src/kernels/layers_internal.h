/* Internal to the layer kernels (src/kernels/scratch.c, dense.c, norms.c,
 * activations.c, shift.c, loss.c): the scratch layout, the per-thread
 * partial column sums of the backward kernels, and the LayerNorm row kernels
 * shared by the plain and the fused LayerNorms. Not part of the library's API
 * (include/shiftvit/layers.h). */
#ifndef SHIFTVIT_LAYERS_INTERNAL_H
#define SHIFTVIT_LAYERS_INTERNAL_H

#include <math.h>
#include <omp.h>
#include <stddef.h>

#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"

/* Writes v as element i of dst, stored as fp32 or (bf16 != 0) as bf16 bits
 * rounded to nearest even (an activation that feeds a matrix product, issue
 * 12). Row kernels that call it are always-inline and are called with a
 * constant bf16, so each loop is compiled once per type, without a branch. */
static inline void ly_put(void *dst, int bf16, size_t i, float v) {
    if (bf16) ((uint16_t *)dst)[i] = sv_bf16_round(v);
    else ((float *)dst)[i] = v;
}
#define LY_INLINE static inline __attribute__((always_inline))

/* Address of element i of a buffer stored as t. */
static inline void *ly_elem(void *p, sv_dtype t, size_t i) {
    return (char *)p + i * (t == SV_DT_BF16 ? sizeof(uint16_t) : sizeof(float));
}

/* ---- scratch.c ---- */

/* One allocation of sv_scratch_floats(channels, threads) floats. */
struct sv_scratch {
    float *partials; /* [threads][2][C] for the call's C: two sums per column */
    float *rows;     /* [threads][channels]: one row per thread */
    int channels, threads;
    float *dw;        /* [threads][dw_floats]: K-split weight-gradient partials */
    size_t dw_floats;
};

/* Per-thread partial sums of column reductions. Inside a parallel region each
 * thread accumulates into its own zeroed slab of 2 x C floats (two sums per
 * column), then ly_partials_combine adds the slabs in thread order, so results
 * are deterministic for a fixed thread count. */

/* Threads for a parallel region that reduces C columns: omp_get_max_threads(),
 * checked (SV_CHECK) against what ws was sized for. */
int ly_partials_threads(const sv_scratch *ws, int C);
/* The calling thread's slab, zeroed: sums [0, C), second sums [C, 2C). */
float *ly_partials_slab(const sv_scratch *ws, int C);
/* Called by every thread of the region after its accumulation: out[c] = sum
 * of the first sums, out2[c] (may be NULL) of the second, over the threads. */
void ly_partials_combine(const sv_scratch *ws, float *out, float *out2, int C);
/* The calling thread's row of ws->channels floats. */
float *ly_scratch_row(const sv_scratch *ws);
/* out[c] = sum over rows t of a[t][c] (a: [T][C]), over contiguous row blocks
 * per thread. */
void ly_column_sums(const sv_scratch *ws, float *out, const float *a, int T, int C);

/* Rows [lo, hi) of the calling thread's even share of T rows. */
static inline void ly_thread_rows(long T, long *lo, long *hi) {
    int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    *lo = T * tid / nth;
    *hi = T * (tid + 1) / nth;
}

/* ---- LayerNorm rows (norms.c, and the fused kernels of shift.c) ---- */

/* One row of LayerNorm, y stored as fp32 or (bf16 != 0) bf16. Two passes
 * (mean, then squared deviations) keep the variance accurate for large
 * means, and each pass vectorises. */
LY_INLINE void ly_ln_row_store(void *restrict y, int bf16, float *mean, float *rstd,
                               const float *restrict x, const float *gamma, const float *beta,
                               int C, float eps) {
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
    for (int c = 0; c < C; c++) ly_put(y, bf16, (size_t)c, (x[c] - m) * r * gamma[c] + beta[c]);
    *mean = m;
    *rstd = r;
}

/* The same with the type known only at run time (one branch per row). */
static inline void ly_ln_row_forward(void *restrict y, sv_dtype yt, float *mean, float *rstd,
                                     const float *restrict x, const float *gamma,
                                     const float *beta, int C, float eps) {
    if (yt == SV_DT_BF16) ly_ln_row_store(y, 1, mean, rstd, x, gamma, beta, C, eps);
    else ly_ln_row_store(y, 0, mean, rstd, x, gamma, beta, C, eps);
}

/* One row of the LayerNorm backward: out = base + input gradient (base may
 * alias out; NULL: out = the input gradient), parameter gradients
 * accumulated into pg, pb. */
static inline void ly_ln_row_backward(float *out, const float *base, float *pg, float *pb,
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

#endif
