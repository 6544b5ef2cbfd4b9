/* The dense layer (layers.h): forward and backward, each product sent to one
 * of the two backends of gemm.h -- fp32 through BLIS (gemm_fp32.c) or bf16
 * operands through oneDNN (gemm_bf16.c). */
#include "layers_internal.h"
#include "shiftvit/common.h"
#include "shiftvit/gemm.h"
#include "shiftvit/gemm_bf16.h"

/* C = op(A) x op(B) (alpha 1, beta 0) in fp32 through BLIS, or with bf16
 * operands when bf is not NULL; without bf both operands must be fp32. */
static void product(sv_bf16 *bf, int ta, int tb, int M, int N, int K, sv_matrix A, int lda,
                    sv_matrix B, int ldb, float *C, int ldc) {
    if (bf) {
        sv_bf16_gemm(bf, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
    SV_CHECK(A.type == SV_DT_F32 && B.type == SV_DT_F32);
    sv_gemm(ta, tb, M, N, K, 1.f, A.data, lda, B.data, ldb, 0.f, C, ldc);
}

void sv_dense_forward(float *y, const float *x, const float *w, const float *b,
                      int T, int in, int out) {
    sv_dense_forward_mp(NULL, y, sv_mat_f32(x), sv_mat_f32(w), b, T, in, out);
}

void sv_dense_forward_mp(sv_bf16 *bf, float *y, sv_matrix x, sv_matrix w, const float *b,
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

void sv_dense_backward(sv_scratch *ws, float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, int T, int in, int out) {
    sv_dense_backward_mp(NULL, ws, dx, dw, db, sv_mat_f32(dy), sv_mat_f32(x), sv_mat_f32(w), T, in, out);
}

int sv_dense_dw_parts(int T, int in, int out) {
    int nt = omp_get_max_threads();
    return nt > 1 && 2L * T >= (long)nt * (in + out) ? nt : 1;
}

/* dw[in][out] = x^T dy, split along the T rows when sv_dense_dw_parts says
 * so and the scratch has room, else one product. */
static void weight_gradient(sv_bf16 *bf, sv_scratch *ws, float *dw, sv_matrix x, sv_matrix dy, int T, int in,
                            int out) {
    int parts = sv_dense_dw_parts(T, in, out);
    size_t n = (size_t)in * out;
    int split = parts > 1 && ws && ws->dw && n <= ws->dw_floats && parts <= ws->threads;
    if (split && bf) {
        split = sv_bf16_gemm_ksplit(bf, in, out, T, x, dy, parts, ws->dw) == 0;
    } else if (split) {
        SV_CHECK(x.type == SV_DT_F32 && dy.type == SV_DT_F32); /* as product() checks the unsplit case */
        sv_gemm_ksplit(in, out, T, x.data, dy.data, parts, ws->dw);
    }
    if (!split) {
        product(bf, 1, 0, in, out, T, x, in, dy, out, dw, out);
        return;
    }
    const float *pw = ws->dw;
#pragma omp parallel for simd
    for (size_t j = 0; j < n; j++) {
        float s = pw[j];
        for (int p = 1; p < parts; p++) s += pw[(size_t)p * n + j];
        dw[j] = s;
    }
}

void sv_dense_backward_mp(sv_bf16 *bf, sv_scratch *ws, float *dx, float *dw, float *db,
                          sv_matrix dy, sv_matrix x, sv_matrix w, int T, int in, int out) {
    if (dx) product(bf, 0, 1, T, in, out, dy, out, w, out, dx, in);
    weight_gradient(bf, ws, dw, x, dy, T, in, out);
    if (db) {
        SV_CHECK(dy.type == SV_DT_F32); /* a bf16 dy's producer sums the bias gradient */
        ly_column_sums(ws, db, dy.data, T, out);
    }
}
