/* LayerNorm forward and backward (layers.h). The row kernels are in
 * layers_internal.h, shared with the fused shift + LayerNorm and LayerNorm +
 * window kernels of shift.c. */
#include "layers_internal.h"

void sv_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, int T, int C,
                          float eps) {
#pragma omp parallel for
    for (long t = 0; t < T; t++)
        ly_ln_row_forward(y + t * C, SV_DT_F32, mean + t, rstd + t, x + t * C, gamma, beta, C, eps);
}

void sv_layernorm_backward(sv_scratch *ws, float *dx, float *dgamma, float *dbeta,
                           const float *dy, const float *x, const float *mean,
                           const float *rstd, const float *gamma, int T, int C) {
#pragma omp parallel num_threads(ly_partials_threads(ws, C))
    {
        float *pg = ly_partials_slab(ws, C);
        float *pb = pg + C;
        long lo, hi;
        ly_thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++)
            ly_ln_row_backward(dx + t * C, dx + t * C, pg, pb, dy + t * C, x + t * C, mean[t],
                               rstd[t], gamma, C);
        ly_partials_combine(ws, dgamma, dbeta, C);
    }
}
