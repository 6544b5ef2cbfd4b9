/* The model's matrix products one by one (`make gemm-shapes`): for every
 * dense layer of the recipe at global batch 256 (patch projection, fc1, fc2,
 * patch merging, classifier) the forward (T x in x out), input-gradient and
 * weight-gradient products, in fp32 through BLIS (sv_gemm, the sub-
 * configuration shiftvit selects) and in bf16 through oneDNN with operands
 * already stored in bf16 (sv_bf16_gemm, as the model runs them). Prints
 * GFLOP/s (best of 6 after one warm-up) and the bf16 milliseconds, and the
 * weight gradient split over the threads along its K = T axis (each thread a
 * single-threaded product of its rows, partial results added) in both
 * precisions: what the libraries' own threading leaves on the table there.
 * Timing: run alone (flock /tmp/shiftvit-timing.lock), OMP_NUM_THREADS set. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include <blis.h>

#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/platform.h"

#define REPS 6

typedef struct {
    float *x, *y, *w, *dx, *dw;
    uint16_t *x16, *y16, *w16;
} operands;

static void make_operands(operands *o, int T, int in, int out) {
    size_t nx = (size_t)T * in, ny = (size_t)T * out, nw = (size_t)in * out;
    o->x = sv_alloc(nx * 4, "x"); o->y = sv_alloc(ny * 4, "y"); o->w = sv_alloc(nw * 4, "w");
    o->dx = sv_alloc(nx * 4, "dx"); o->dw = sv_alloc(2 * nw * 4, "dw");
    o->x16 = sv_alloc(nx * 2, "x16"); o->y16 = sv_alloc(ny * 2, "y16"); o->w16 = sv_alloc(nw * 2, "w16");
    for (size_t i = 0; i < nx; i++) o->x[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < ny; i++) o->y[i] = (float)(i % 5) * 0.1f;
    for (size_t i = 0; i < nw; i++) o->w[i] = (float)(i % 3) * 0.1f;
    sv_bf16_round_array(o->x16, o->x, nx);
    sv_bf16_round_array(o->y16, o->y, ny);
    sv_bf16_round_array(o->w16, o->w, nw);
}

static void free_operands(operands *o) {
    sv_free(o->x); sv_free(o->y); sv_free(o->w); sv_free(o->dx); sv_free(o->dw);
    sv_free(o->x16); sv_free(o->y16); sv_free(o->w16);
}

/* Best seconds of product k (0-2 fp32 forward, dX, dW; 3-5 the same in bf16). */
static double time_product(sv_bf16 *bf, operands *o, int k, int T, int in, int out) {
    double best = 1e30;
    for (int r = 0; r <= REPS; r++) {
        double t = sv_now();
        switch (k) {
        case 0: sv_gemm(0, 0, T, out, in, 1.f, o->x, in, o->w, out, 0.f, o->y, out); break;
        case 1: sv_gemm(0, 1, T, in, out, 1.f, o->y, out, o->w, out, 0.f, o->dx, in); break;
        case 2: sv_gemm(1, 0, in, out, T, 1.f, o->x, in, o->y, out, 0.f, o->dw, out); break;
        case 3: sv_bf16_gemm(bf, 0, 0, T, out, in, sv_mat_bf16(o->x16), in, sv_mat_bf16(o->w16), out, o->y, out); break;
        case 4: sv_bf16_gemm(bf, 0, 1, T, in, out, sv_mat_bf16(o->y16), out, sv_mat_bf16(o->w16), out, o->dx, in); break;
        default: sv_bf16_gemm(bf, 1, 0, in, out, T, sv_mat_bf16(o->x16), in, sv_mat_bf16(o->y16), out, o->dw, out);
        }
        t = sv_now() - t;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

/* One thread's share of a K-split weight gradient, single-threaded: BLIS
 * with one way in every loop, or oneDNN, which runs serially inside a
 * parallel region. */
static void serial_dw(sv_bf16 *bf, operands *o, long lo, long hi, int in, int out, float *dst) {
    if (!bf) {
        rntm_t rntm = BLIS_RNTM_INITIALIZER;
        bli_rntm_set_ways(1, 1, 1, 1, 1, &rntm);
        float one = 1.f, zero = 0.f;
        bli_sgemm_ex(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, in, out, hi - lo, &one, o->x + lo * in, in, 1,
                     o->y + lo * out, out, 1, &zero, dst, out, 1, NULL, &rntm);
    } else {
        sv_bf16_gemm(bf, 1, 0, in, out, (int)(hi - lo), sv_mat_bf16(o->x16 + lo * in), in,
                     sv_mat_bf16(o->y16 + lo * out), out, dst, out);
    }
}

/* A layer's weight gradient split along K = T over the threads (partials
 * added): best seconds in fp32 (bf16 = 0) or bf16, one context per thread. */
static double time_k_split(operands *o, int bf16, int T, int in, int out) {
    int nt = omp_get_max_threads();
    if (nt > 16) nt = 16;
    sv_bf16 *per[16];
    for (int i = 0; i < nt; i++) per[i] = bf16 ? sv_bf16_create(0) : NULL;
    float *part = sv_alloc((size_t)nt * in * out * 4, "partials");
    double best = 1e30;
    for (int r = 0; r <= REPS; r++) {
        double t = sv_now();
#pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num();
            serial_dw(per[id], o, (long)T * id / nt, (long)T * (id + 1) / nt, in, out, part + (size_t)id * in * out);
        }
#pragma omp parallel for
        for (long j = 0; j < (long)in * out; j++)
            for (int i = 1; i < nt; i++) part[j] += part[(size_t)i * in * out + j];
        t = sv_now() - t;
        if (r > 0 && t < best) best = t;
    }
    for (int i = 0; i < nt; i++) sv_bf16_free(per[i]);
    sv_free(part);
    return best;
}

static void layer(sv_bf16 *bf, const char *name, int T, int in, int out) {
    operands o;
    make_operands(&o, T, in, out);
    double s[6], flop = 2.0 * T * in * out;
    for (int k = 0; k < 6; k++) s[k] = time_product(bf, &o, k, T, in, out);
    double k32 = time_k_split(&o, 0, T, in, out), k16 = time_k_split(&o, 1, T, in, out);
    printf("| %s | %d x %d x %d | %.0f / %.0f / %.0f | %.0f / %.0f / %.0f | %.2f / %.2f / %.2f | %.0f / %.0f |\n", name,
           T, in, out, flop / s[0] / 1e9, flop / s[1] / 1e9, flop / s[2] / 1e9, flop / s[3] / 1e9, flop / s[4] / 1e9,
           flop / s[5] / 1e9, 1e3 * s[3], 1e3 * s[4], 1e3 * s[5], flop / k32 / 1e9, flop / k16 / 1e9);
    free_operands(&o);
}

int main(void) {
    char desc[256];
    sv_blis_select(desc, sizeof desc);
    sv_bf16 *bf = sv_bf16_create(0);
    printf("%s\n%s\n%d thread(s)\n\n", desc, sv_bf16_describe(bf), omp_get_max_threads());
    printf("| layer | T x in x out | fp32 GFLOP/s fwd / dX / dW | bf16 GFLOP/s fwd / dX / dW | bf16 ms fwd / dX / dW "
           "| dW split along K over the threads, GFLOP/s fp32 / bf16 |\n");
    printf("|---|---|---|---|---|---|\n");
    int T[4] = {36864, 9216, 2304, 1024}, C[4] = {96, 192, 384, 768};
    char nm[32];
    layer(bf, "patch projection", 36864, 48, 96);
    for (int s = 0; s < 4; s++) {
        snprintf(nm, sizeof nm, "stage %d fc1", s + 1);
        layer(bf, nm, T[s], C[s], 2 * C[s]);
        snprintf(nm, sizeof nm, "stage %d fc2", s + 1);
        layer(bf, nm, T[s], 2 * C[s], C[s]);
        if (s < 3) {
            snprintf(nm, sizeof nm, "stage %d merge", s + 1);
            layer(bf, nm, T[s + 1], 4 * C[s], 2 * C[s]);
        }
    }
    layer(bf, "classifier", 256, 768, 10);
    sv_bf16_free(bf);
    return 0;
}
