/* The fp32 backend of the matrix products (gemm.h): BLIS. The bf16 backend's
 * emulated path (gemm_bf16.c) ends here too, with operands already rounded. */
#include <blis.h>
#include <omp.h>
#include <stddef.h>

#include "shiftvit/gemm.h"

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

/* Thread p multiplies rows [K p / parts, K (p + 1) / parts) of A and B into
 * C[p], BLIS single-threaded. */
void sv_gemm_ksplit(int M, int N, int K, const float *A, const float *B, int parts, float *C) {
#pragma omp parallel num_threads(parts)
    {
        int p = omp_get_thread_num();
        long lo = (long)K * p / parts, hi = (long)K * (p + 1) / parts;
        rntm_t rntm = BLIS_RNTM_INITIALIZER;
        bli_rntm_set_ways(1, 1, 1, 1, 1, &rntm);
        float one = 1.f, zero = 0.f;
        bli_sgemm_ex(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, M, N, hi - lo, &one, (float *)A + lo * M, M, 1,
                     (float *)B + lo * N, N, 1, &zero, C + (size_t)p * M * N, N, 1, NULL, &rntm);
    }
}
