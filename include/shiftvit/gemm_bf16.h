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

/* C[M][ldc] (row-major, fp32) = op(A) x op(B), alpha = 1, beta = 0, with A and
 * B rounded to bf16 (nearest even). op(A) is M x K: A is M x K (lda >= K), or
 * with ta = 1 stored K x M (lda >= M); op(B) is K x N: B is K x N (ldb >= N),
 * or with tb = 1 stored N x K (ldb >= K). Rounding copies the operands into
 * buffers of the context (grown on first use, then reused). Aborts with a
 * message on an internal oneDNN error (an impossible shape). */
void sv_bf16_gemm(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, float *C, int ldc);

/* Creates the primitive of one product shape (arguments as sv_bf16_gemm)
 * and grows the operand buffers to its size, so that products of the shapes
 * prepared at model creation neither create nor allocate during training.
 * Other shapes (a smaller last batch) are prepared at their first use. */
void sv_bf16_prepare(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, int ldc);

/* fp32 -> bf16 bits, round to nearest even; NaN stays NaN (quiet). */
static inline uint16_t sv_bf16_round(float f) {
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}

/* bf16 bits -> fp32 (exact). */
static inline float sv_bf16_to_float(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

#endif
