/* The backward kernels' scratch (layers.h: sv_scratch) and the per-thread
 * partial column sums that use it (layers_internal.h). */
#include <string.h>

#include "layers_internal.h"
#include "shiftvit/common.h"

size_t sv_scratch_floats(int max_channels, int threads) {
    return (size_t)threads * 3 * (size_t)max_channels;
}

sv_scratch *sv_scratch_create(int max_channels, size_t max_dw_floats) {
    sv_scratch *s = sv_alloc(sizeof *s, "layer scratch");
    s->threads = omp_get_max_threads();
    s->channels = max_channels;
    s->partials = sv_alloc(sv_scratch_floats(max_channels, s->threads) * sizeof(float),
                           "layer scratch");
    s->rows = s->partials + (size_t)s->threads * 2 * (size_t)max_channels;
    s->dw_floats = max_dw_floats;
    if (max_dw_floats) s->dw = sv_alloc((size_t)s->threads * max_dw_floats * sizeof(float), "weight-gradient partials");
    return s;
}

void sv_scratch_free(sv_scratch *s) {
    if (!s) return;
    sv_free(s->partials);
    sv_free(s->dw);
    sv_free(s);
}

int ly_partials_threads(const sv_scratch *ws, int C) {
    int nt = omp_get_max_threads();
    SV_CHECK(ws && C <= ws->channels && nt <= ws->threads);
    return nt;
}

float *ly_partials_slab(const sv_scratch *ws, int C) {
    float *p = ws->partials + (size_t)omp_get_thread_num() * 2 * C;
    memset(p, 0, 2 * (size_t)C * sizeof(float));
    return p;
}

void ly_partials_combine(const sv_scratch *ws, float *out, float *out2, int C) {
    int nth = omp_get_num_threads();
    const float *all = ws->partials;
#pragma omp barrier
#pragma omp for
    for (int c = 0; c < C; c++) {
        float s = 0.f, s2 = 0.f;
        for (int i = 0; i < nth; i++) {
            s += all[(size_t)i * 2 * C + c];
            s2 += all[(size_t)i * 2 * C + C + c];
        }
        out[c] = s;
        if (out2) out2[c] = s2;
    }
}

float *ly_scratch_row(const sv_scratch *ws) {
    return ws->rows + (size_t)omp_get_thread_num() * ws->channels;
}

void ly_column_sums(const sv_scratch *ws, float *out, const float *a, int T, int C) {
#pragma omp parallel num_threads(ly_partials_threads(ws, C))
    {
        float *pa = ly_partials_slab(ws, C);
        long lo, hi;
        ly_thread_rows(T, &lo, &hi);
        for (long t = lo; t < hi; t++) {
            const float *ra = a + t * C;
            for (int c = 0; c < C; c++) pa[c] += ra[c];
        }
        ly_partials_combine(ws, out, NULL, C);
    }
}
