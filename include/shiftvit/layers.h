/* Layer kernels: one forward and one backward function per layer.
 *
 * Layout: activations are NHWC float32, row-major, i.e. a T x C matrix with
 * T = N*H*W tokens and C contiguous channels. The kernels that write a tensor
 * read only by matrix products take its storage type (sv_dtype, gemm_bf16.h):
 * fp32, or bf16 in mixed precision (issue 12), rounded to nearest even from
 * the fp32 value the kernel computes. Weights use Keras' layouts:
 * Dense kernel [in][out], Conv2D kernel [kh][kw][cin][cout] (flattened it is a
 * (kh*kw*cin) x cout matrix). GEMMs go through BLIS; element-wise kernels are
 * OpenMP loops. None of the kernels allocates memory or fails (the one
 * allocation is sv_scratch_create, when the model is built): shapes are
 * checked by the caller (model.c) once, when the model is built.
 *
 * Unless noted, a backward function OVERWRITES its input gradient (dx) and its
 * parameter gradients (dw, db, dgamma, dbeta): every tensor is used exactly
 * once per step, so no gradient needs accumulation. The backward functions
 * that sum over rows (bias and LayerNorm parameter gradients) take the
 * caller's scratch (sv_scratch, below).
 *
 * Sources, by kernel family: src/kernels/scratch.c (sv_scratch), src/kernels/dense.c (dense
 * layers; the products: gemm.h), src/kernels/norms.c (LayerNorm), src/kernels/activations.c (GELU, dropout, drop
 * path, residual), src/kernels/shift.c (shift, windows, average pool, and the fused
 * LayerNorm variants of the shift and the windows), src/kernels/loss.c
 * (log-softmax, cross-entropy, top-k). */
#ifndef SHIFTVIT_LAYERS_H
#define SHIFTVIT_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "shiftvit/gemm.h" /* sv_gemm, sv_dtype, sv_matrix */
#include "shiftvit/gemm_bf16.h"

/* Workspace of the backward kernels that reduce over rows (bias and
 * LayerNorm parameter gradients): each thread sums its share of the rows into
 * its own slab of partial column sums, then the slabs are added in thread
 * order, so the sums are deterministic for a fixed thread count; the fused
 * LayerNorm + shift backward also keeps one row per thread in it. Owned by
 * the caller: sv_model creates one with the model (model.h, m->scratch)
 * and passes it to every backward kernel, so no kernel allocates and no
 * state is global. A kernel called with more than max_channels channels, or
 * with more OpenMP threads (omp_get_max_threads()) than at creation, aborts
 * (SV_CHECK). Not shared by concurrent calls. */
typedef struct sv_scratch sv_scratch;

/* Floats a scratch holds for max_channels channels and `threads` threads:
 * threads * 3 * max_channels (two partial sums and one row element per
 * channel and thread). */
size_t sv_scratch_floats(int max_channels, int threads);
/* Allocates a scratch of sv_scratch_floats(max_channels,
 * omp_get_max_threads()) floats, zeroed, plus omp_get_max_threads() x
 * max_dw_floats for the partial weight gradients of the dense layers whose
 * weight gradient is split (sv_dense_dw_parts; 0: none is, every weight
 * gradient is one product); exits with a message if memory is exhausted
 * (as sv_alloc). Call outside parallel regions. */
sv_scratch *sv_scratch_create(int max_channels, size_t max_dw_floats);
void sv_scratch_free(sv_scratch *ws); /* NULL is a no-op */

/* Dense: y[T][out] = x[T][in] w[in][out] + b[out] (b may be NULL). */
void sv_dense_forward(float *y, const float *x, const float *w, const float *b,
                      int T, int in, int out);
/* dx[T][in] = dy w^T (skipped if dx is NULL); dw[in][out] = x^T dy;
 * db[out] = column sums of dy (skipped if db is NULL). ws: scratch for at
 * least `out` channels, read for db and for the partials of a split weight
 * gradient (sv_dense_dw_parts); NULL when db is: dw is then one product. */
void sv_dense_backward(sv_scratch *ws, float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, int T, int in, int out);

/* Row blocks the weight gradient dw = x^T dy of a dense layer with T rows is
 * split into: omp_get_max_threads() when the rows are many against the
 * result, T >= threads x (in + out) / 2 (at batch 256 on 2 threads: the
 * patch projection and the stage 1-3 layers), else 1. Split, each block is
 * a product of its own (fp32: one single-threaded BLIS call per thread;
 * bf16: one batched oneDNN call) into the scratch, and the partials are
 * added in block order (deterministic for a fixed thread count). BLIS and
 * oneDNN spread only the result over the threads and reach half their speed
 * on such shapes (results/bench/bf16-storage-2026-12-01.md). The split
 * needs parts x in x out floats of scratch (sv_scratch_create); with less,
 * the product is not split. */
int sv_dense_dw_parts(int T, int in, int out);

/* The same two layers with operands that may be stored in bf16 (sv_matrix,
 * gemm_bf16.h): with bf not NULL the products take bf16 operands (fp32 ones
 * rounded to nearest even on the way in) and accumulate in fp32 (issue 12);
 * the bias, its gradient and the outputs y, dx, dw stay fp32. With bf = NULL
 * every operand must be fp32 (else SV_CHECK aborts) and these are exactly
 * sv_dense_forward / sv_dense_backward. db needs an fp32 dy (SV_CHECK); a
 * kernel that writes dy in bf16 sums the bias gradient itself. */
void sv_dense_forward_mp(struct sv_bf16 *bf, float *y, sv_matrix x, sv_matrix w, const float *b,
                         int T, int in, int out);
void sv_dense_backward_mp(struct sv_bf16 *bf, sv_scratch *ws, float *dx, float *dw, float *db,
                          sv_matrix dy, sv_matrix x, sv_matrix w, int T, int in, int out);

/* LayerNorm over the last axis (Ba, Kiros & Hinton 2016; Keras
 * LayerNormalization): y = (x - mean) * rstd * gamma + beta,
 * rstd = 1 / sqrt(var + eps), var the biased variance. x, y: [T][C];
 * mean, rstd: [T] saved for backward. */
void sv_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, int T, int C,
                          float eps);
/* dx[T][C] += LayerNorm input gradient (ACCUMULATES, for residual paths);
 * dgamma, dbeta [C] overwritten. x is the forward input. ws: scratch for at
 * least C channels. */
void sv_layernorm_backward(sv_scratch *ws, float *dx, float *dgamma, float *dbeta,
                           const float *dy, const float *x, const float *mean,
                           const float *rstd, const float *gamma, int T, int C);

/* Exact GELU: 0.5 x (1 + erf(x / sqrt 2)) (Hendrycks & Gimpel 2016), the
 * tf.nn.gelu default (approximate=False). */
float sv_gelu(float x);
float sv_gelu_grad(float x); /* d gelu / dx = Phi(x) + x phi(x) */

/* Fused fc1 bias + GELU + dropout (Srivastava et al. 2014, inverted scaling).
 * h: [N][L][H] (N samples, L tokens each, H channels), the fc1 GEMM output
 * WITHOUT bias; x = h + bias (bias[H], may be NULL).
 * a[N][L][H] = gelu(x) * m / keep with keep = 1 - p and m in {0, 1} drawn per
 * element from stream keys[n] (one key per sample), counter l*H + c: kept iff
 * sv_rng_bits24 >= sv_rng_threshold24(p) (rng.h). keys == NULL or p == 0: no
 * dropout (m = 1, keep = 1).
 * save_grad != 0 (training): on return h holds da/dx = m / keep * gelu'(x),
 * everything sv_gelu_dropout_backward needs (no mask, no second erf).
 * save_grad == 0: h is only read. a is stored as `at`: fp32, or bf16 bits
 * rounded to nearest even (bf16 mode: a feeds only fc2's products). */
void sv_gelu_dropout_forward(void *a, sv_dtype at, float *h, const float *bias, int N, int L,
                             int H, const uint64_t *keys, float p, int save_grad);
/* dh[T][H] = da * grad, with grad the h that sv_gelu_dropout_forward left
 * (save_grad != 0), T = N*L; overwrites dh, stored as `dht` (fp32, or bf16
 * bits rounded to nearest even: the operand of fc1's backward products).
 * An fp32 dh may alias da; a bf16 one must not overlap it.
 * dbias[H] = column sums of dh over the T rows from the fp32 values
 * (overwritten; skipped when NULL) -- the fc1 bias gradient, fused here to
 * save a sweep over dh. ws: scratch for at least H channels; may be NULL when
 * dbias is. */
void sv_gelu_dropout_backward(sv_scratch *ws, void *dh, sv_dtype dht, float *dbias, const float *da,
                              const float *grad, int T, int H);

/* Fused fc2 bias + dropout + drop path + residual (drop path: Huang et al.
 * 2016, "Deep Networks with Stochastic Depth"):
 * out = x + dp[n] * mask * (z + bias) / keep over [N][L][C], where dp[n] is 0
 * or 1/(1-p_path) per sample and mask the element dropout mask (rate p,
 * drawn as in sv_gelu_dropout_forward). keys NULL: no dropout. dp NULL: no
 * drop path. bias[C] may be NULL. */
void sv_residual_dropout_forward(float *out, uint8_t *mask, const float *x,
                                 const float *z, const float *bias, int N, int L,
                                 int C, const uint64_t *keys, float p,
                                 const float *dp);
/* dz = dout * dp[n] * mask / keep (overwrites dz, stored as `dzt`: fp32, or
 * bf16 bits rounded to nearest even for fc2's backward products), the
 * gradient of z + bias; dbias[C] = column sums of dz from the fp32 values
 * (overwritten; skipped when NULL). The x path is identity. ws: scratch for
 * at least C channels; may be NULL when dbias is. */
void sv_residual_dropout_backward(sv_scratch *ws, void *dz, sv_dtype dzt, float *dbias,
                                  const float *dout, const uint8_t *mask, int N, int L, int C,
                                  int use_mask, float p, const float *dp);

/* Drop-path scale per sample: dp[n] = (u >= p) / (1 - p) with u uniform from
 * keys[n] (counter 0). keys NULL or p == 0: dp[n] = 1. */
void sv_drop_path_scales(float *dp, int N, const uint64_t *keys, float p);

/* Shift (SPEC section 2; Wang et al. 2022): x, y [N][H][W][C], g = C / num_div;
 * channels [0,g) left, [g,2g) right, [2g,3g) up, [3g,4g) down by `pixel`,
 * vacated positions 0, the rest copied. */
void sv_shift_forward(float *y, const float *x, int N, int H, int W, int C,
                      int num_div, int pixel);
/* dx = opposite shift of dy (overwrites dx). */
void sv_shift_backward(float *dx, const float *dy, int N, int H, int W, int C,
                       int num_div, int pixel);

/* Fused shift + LayerNorm (the first two steps of a shift block, SPEC
 * section 1): xs = shift(x) as sv_shift_forward (saved: it is the residual
 * base and LayerNorm's input), y = LayerNorm(xs) as sv_layernorm_forward.
 * x, xs, y: [N][H][W][C]; mean, rstd: [N*H*W]. One sweep over x instead of
 * two kernels. y is stored as `yt` (fp32, or bf16 rounded to nearest even:
 * it feeds only fc1's products; backward recomputes from xs). */
void sv_shift_layernorm_forward(float *xs, void *y, sv_dtype yt, float *mean, float *rstd,
                                const float *x, const float *gamma, const float *beta,
                                int N, int H, int W, int C, int num_div, int pixel,
                                float eps);
/* Its backward, with the residual: dx = shift^T(dres + LayerNorm input
 * gradient of dy at xs), where dres is the gradient reaching xs through the
 * residual (the block output's gradient). dx: [N][H][W][C], OVERWRITTEN (the
 * border groups that the shift drops get 0); dgamma, dbeta [C] overwritten.
 * dres, dy and xs are read only. dx must not alias dres or dy. ws: scratch
 * for at least C channels. */
void sv_layernorm_shift_backward(sv_scratch *ws, float *dx, float *dgamma, float *dbeta,
                                 const float *dres, const float *dy, const float *xs,
                                 const float *mean, const float *rstd,
                                 const float *gamma, int N, int H, int W, int C,
                                 int num_div, int pixel);

/* Non-overlapping k x k windows with stride k and TensorFlow "same" padding
 * (zeros at the bottom/right only, when H or W is not a multiple of k):
 * cols[(n*Ho + i)*Wo + j][(kh*k + kw)*C + c] = x[n][i*k+kh][j*k+kw][c] or 0,
 * Ho = ceil(H / k), Wo = ceil(W / k). This is the im2col of a Conv2D with
 * kernel = stride = k, so the conv is one GEMM with the Keras kernel. cols
 * is stored as `ct` (fp32, or bf16 rounded to nearest even). */
void sv_window_gather(void *cols, sv_dtype ct, const float *x, int N, int H, int W, int C, int k);
/* Inverse: dx[n][y][x][c] = dcols at its window position (padding dropped).
 * Overwrites dx. Every input position lies in exactly one window. */
void sv_window_scatter(float *dx, const float *dcols, int N, int H, int W,
                       int C, int k);

/* Fused LayerNorm + window gather (patch merging, SPEC section 1):
 * cols = sv_window_gather(LayerNorm(x), k) with the same padding, without
 * the intermediate [N][H][W][C] tensor. mean, rstd: [N*H*W] per input token;
 * padded window positions are written as 0. cols is stored as `ct` (fp32,
 * or bf16 rounded to nearest even). */
void sv_layernorm_window_forward(void *cols, sv_dtype ct, float *mean, float *rstd, const float *x,
                                 const float *gamma, const float *beta, int N, int H, int W,
                                 int C, int k, float eps);
/* Its backward: dx[N][H][W][C] = LayerNorm input gradient of the scattered
 * dcols (OVERWRITES dx: every input token lies in exactly one window);
 * dgamma, dbeta [C] overwritten. ws: scratch for at least C channels. */
void sv_layernorm_window_backward(sv_scratch *ws, float *dx, float *dgamma, float *dbeta,
                                  const float *dcols, const float *x, const float *mean,
                                  const float *rstd, const float *gamma, int N, int H,
                                  int W, int C, int k);

/* Global average pool: y[N][C] = mean over HW of x[N][HW][C]. */
void sv_avgpool_forward(float *y, const float *x, int N, int HW, int C);
/* dx[n][t][c] = dy[n][c] / HW (overwrites dx). */
void sv_avgpool_backward(float *dx, const float *dy, int N, int HW, int C);

/* The one log-softmax of the project (training loss, evaluation loss and
 * predict's probabilities all come from it): for one row of K logits
 * (K >= 1) returns lse = log sum_k exp(logits[k]) in nats, so that
 * log softmax(logits)[k] = logits[k] - lse. Computed stably (the max shift
 * of log-sum-exp; Goodfellow, Bengio & Courville, Deep Learning, 2016,
 * section 4.1) as m + log(sum_k exp(logits[k] - m)), m the largest logit
 * (float), the exponentials and their sum in double, in index order
 * (bitwise the same for a given row everywhere). logp[K] (may be NULL)
 * receives logits[k] - lse in double. A NaN or +infinite logit makes lse
 * NaN, as do logits that are all -infinite (no error: e.g. predict prints
 * null). */
double sv_log_softmax_row(double *logp, const float *logits, int K);

/* Softmax cross-entropy per sample, with optional label smoothing (Szegedy et
 * al. 2016; Keras CategoricalCrossentropy(label_smoothing)): the target is
 * t[k] = (1 - smoothing) [k == label] + smoothing / K. probs[N][K] =
 * softmax(logits[N][K]) (row-major) = exp(logits - lse) with lse from
 * sv_log_softmax_row; losses[n] = -sum_k t[k] log probs[n][k], computed as
 * lse - sum_k t[k] logits[n][k] in double, rounded to float (nats). smoothing
 * in [0, 1); 0 is the plain loss, bitwise. losses may be NULL. */
void sv_softmax_xent_forward(float *losses, float *probs, const float *logits,
                             const int *labels, int N, int K, float smoothing);
/* dlogits[n][k] = (probs[n][k] - t[k]) * scale, t as above; scale is
 * 1 / global batch so that the all-reduced sum is the mean's gradient. */
void sv_softmax_xent_backward(float *dlogits, const float *probs,
                              const int *labels, int N, int K, float scale, float smoothing);

/* 1 if the label counts as a top-k hit for one row of K logits, else 0, with
 * Keras's definitions: top-1 (k = 1) is the argmax with ties going to the
 * lowest class index (categorical_accuracy); for k > 1 the label is a hit
 * when fewer than k logits are strictly greater than its own, so ties at the
 * boundary count (top_k_categorical_accuracy, tf.math.in_top_k). A row with
 * any non-finite logit is wrong for every k. */
int sv_topk_correct(const float *logits, int K, int label, int k);

#endif
