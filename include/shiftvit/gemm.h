/* Matrix products: one interface over two backends (issue 25).
 *
 * Every matrix product of the model is C = op(A) x op(B) with fp32
 * accumulation and an fp32 result. Two backends compute them:
 *   - fp32 operands: BLIS, src/kernels/gemm_fp32.c (sv_gemm, sv_gemm_ksplit,
 *     below);
 *   - bf16 operands: oneDNN, src/kernels/gemm_bf16.c (gemm_bf16.h). Where the
 *     CPU has no bf16 instructions (or oneDNN is not built in) it converts
 *     both operands to fp32 copies of their bf16 values and calls the fp32
 *     backend through this interface (sv_gemm).
 * The dense layers (src/kernels/dense.c, layers.h) choose a backend per
 * product. The fp32 backend calls neither the bf16 backend nor the dense
 * layers, and the bf16 backend does not call the dense layers: the calls run
 * one way, dense.c -> gemm_bf16.c -> gemm_fp32.c. */
#ifndef SHIFTVIT_GEMM_H
#define SHIFTVIT_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* How a matrix is stored in memory: fp32 values, or bf16 bits (the upper
 * 16 bits of the fp32 value rounded to nearest even). In bf16 mode the model
 * stores the activations that feed matrix products in bf16 (they are read
 * only by the products, so nothing else changes), and the weights' bf16 copy
 * is written by the AdamW pass (model.h). */
typedef enum { SV_DT_F32 = 0, SV_DT_BF16 = 1 } sv_dtype;

/* A matrix operand of a product: its first element and its storage type. */
typedef struct {
    const void *data;
    sv_dtype type;
} sv_matrix;

static inline sv_matrix sv_mat_f32(const float *p) {
    sv_matrix m = {p, SV_DT_F32};
    return m;
}
static inline sv_matrix sv_mat_bf16(const uint16_t *p) {
    sv_matrix m = {p, SV_DT_BF16};
    return m;
}
static inline sv_matrix sv_mat(const void *p, sv_dtype type) {
    sv_matrix m = {p, type};
    return m;
}

/* y[M][N] = alpha * op(A) op(B) + beta * y, row-major, through BLIS's typed API.
 * op(A) is M x K (A stored K x M when ta), op(B) is K x N (B stored N x K when tb).
 * lda/ldb/ldc are row strides in elements. */
void sv_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* The weight gradient split along K in fp32 (the counterpart of
 * sv_bf16_gemm_ksplit): C[p][M][N] = A_p^T B_p for p < parts, A (K x M) and
 * B (K x N) row-major and compact, A_p and B_p their p-th block of rows
 * [K p / parts, K (p + 1) / parts); one OpenMP thread per block, each a
 * single-threaded BLIS product. */
void sv_gemm_ksplit(int M, int N, int K, const float *A, const float *B, int parts, float *C);

#endif
