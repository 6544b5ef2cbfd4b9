/* Mixed-precision matrix products (issue 12): bf16 operands, fp32
 * accumulation and fp32 result, through oneDNN's matmul primitive (Debian
 * libdnnl-dev 2.6). Master weights, gradients, optimizer state and every
 * other kernel stay fp32; only the operands of the products are rounded.
 *
 * bf16 is the upper half of an IEEE fp32 (8 exponent bits, 7 stored mantissa
 * bits; unit roundoff 2^-8 with round-to-nearest-even). A product of two bf16
 * numbers is exact in fp32, so C = round(A) x round(B) accumulated in fp32:
 * |C - A x B| <= ~2^-7 x sum_k |A_ik| |B_kj| for the two operand roundings,
 * plus fp32 accumulation error (Higham, Accuracy and Stability of Numerical
 * Algorithms, 2nd ed., section 3.1; bfloat16: Kalamkar et al., "A Study of
 * BFLOAT16 for Deep Learning Training", arXiv:1905.12322).
 *
 * On a CPU without bf16 instructions the products are emulated: operands
 * rounded to bf16 and multiplied by BLIS in fp32, which gives the same
 * numbers (exact products, fp32 sums) at fp32 speed plus the rounding. */
#ifndef SHIFTVIT_GEMM_BF16_H
#define SHIFTVIT_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "shiftvit/common.h" /* sv_bf16_round, sv_bf16_to_float */
#include "shiftvit/gemm.h"   /* sv_dtype, sv_matrix; the fp32 backend */

typedef struct sv_bf16 sv_bf16;

/* Creates the context (oneDNN engine and stream; primitives are created per
 * product shape on first use and kept). Never fails: on a CPU without bf16
 * instructions, or with emulate = 1 (tests compare the two paths), it
 * emulates (see sv_bf16_describe). */
sv_bf16 *sv_bf16_create(int emulate);
void sv_bf16_free(sv_bf16 *ctx);

/* One line for the start-up report, e.g. "bf16 matrix products through oneDNN
 * 2.6.3 (native: avx512_bf16)" or "... emulated: this CPU has no AVX512_BF16
 * or AMX-BF16 (correct, slower than fp32)". */
const char *sv_bf16_describe(const sv_bf16 *ctx);

/* 1 if the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX-BF16). */
int sv_bf16_native_cpu(void);

/* C[M][ldc] (row-major, fp32) = op(A) x op(B), alpha = 1, beta = 0, with bf16
 * operands and fp32 accumulation. op(A) is M x K: A is M x K (lda >= K), or
 * with ta = 1 stored K x M (lda >= M); op(B) is K x N: B is K x N (ldb >= N),
 * or with tb = 1 stored N x K (ldb >= K); lda, ldb, ldc in elements. An
 * operand stored in bf16 is read in place; an fp32 operand is first rounded
 * to bf16 (nearest even) into a buffer of the context (sized by
 * sv_bf16_prepare, or grown on first use). Emulation (no bf16 instructions):
 * both operands become fp32 copies of their bf16 values and BLIS multiplies
 * them, which gives the same numbers. Aborts with a message on an internal
 * oneDNN error (an impossible shape). */
void sv_bf16_gemm(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, sv_matrix A, int lda,
                  sv_matrix B, int ldb, float *C, int ldc);

/* Creates the primitive of one product shape with compact operands (lda and
 * ldb the stored row lengths; other arguments as sv_bf16_gemm) and grows the
 * rounding buffers for the operands whose type is SV_DT_F32, so that the
 * products prepared at model creation neither create nor allocate during
 * training. Other shapes (a smaller last batch) are prepared at first use. */
void sv_bf16_prepare(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, sv_dtype at, sv_dtype bt,
                     int ldc);

/* The weight gradient split along K (layers.h sv_dense_dw_parts):
 * C[p][M][N] = A_p^T B_p for p < parts, A (K x M) and B (K x N) stored
 * row-major and compact, A_p and B_p their p-th block of K / parts rows; one
 * batched oneDNN call (the batch is spread over the threads). Returns -1
 * without doing anything when it cannot (emulated products, or K not a
 * multiple of parts): the caller runs the unsplit product. */
int sv_bf16_gemm_ksplit(sv_bf16 *ctx, int M, int N, int K, sv_matrix A, sv_matrix B, int parts, float *C);
/* Creates its primitive (and operand copies) at model creation, as
 * sv_bf16_prepare. */
void sv_bf16_prepare_ksplit(sv_bf16 *ctx, int M, int N, int K, sv_dtype at, sv_dtype bt, int parts);

/* dst[i] = bf16 of src[i] (nearest even) for n elements, OpenMP-parallel. */
void sv_bf16_round_array(uint16_t *dst, const float *src, size_t n);

/* sv_bf16_round and sv_bf16_to_float, the scalar conversions, are in common.h
 * (the gradient exchange of src/dist/ uses them too). */

#endif
