/* Matrix products and the dense layer (layers.h): sv_gemm through BLIS, the
 * fp32 / bf16 product dispatch, dense forward and backward. */
#include <blis.h>

#include "layers_internal.h"
#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"

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

/* fp32 blocks of the split weight gradient: thread p multiplies rows
 * [T p / parts, T (p + 1) / parts) into parts_out[p], BLIS single-threaded. */
static void dw_blocks_fp32(float *parts_out, int parts, const float *x, const float *dy, int T, int in, int out) {
#pragma omp parallel num_threads(parts)
    {
        int p = omp_get_thread_num();
        long lo = (long)T * p / parts, hi = (long)T * (p + 1) / parts;
        rntm_t rntm = BLIS_RNTM_INITIALIZER;
        bli_rntm_set_ways(1, 1, 1, 1, 1, &rntm);
        float one = 1.f, zero = 0.f;
        bli_sgemm_ex(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, in, out, hi - lo, &one, (float *)x + lo * in, in, 1,
                     (float *)dy + lo * out, out, 1, &zero, parts_out + (size_t)p * in * out, out, 1, NULL, &rntm);
    }
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
        dw_blocks_fp32(ws->dw, parts, x.data, dy.data, T, in, out);
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
