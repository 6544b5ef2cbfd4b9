/* The dense layers of the model as product shapes (model_internal.h): the
 * bf16 primitives prepared at creation, the scratch for split weight
 * gradients. */
#include "model_internal.h"

#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"

/* A dense layer's product shapes and operand storage: x [T][in] as stored
 * (xt), its output gradient as stored (dyt), and whether it has an input
 * gradient (the patch projection has none). */
typedef struct {
    int T, in, out, has_dx;
    sv_dtype xt, dyt;
} dense_shape;

#define MAX_DENSE (3 * SV_NUM_STAGES + 1)

/* The model's dense layers at a batch of N, one entry per kind: the patch
 * projection, fc1 and fc2 of each stage, the patch merges, the classifier.
 * In bf16 a block's fc1 reads the LayerNorm output and fc2 the GELU output,
 * both stored as bf16, and their output gradients come as bf16 from the
 * GELU and residual backward kernels; the merges and the patch projection
 * get fp32 output gradients (the residual stream), the classifier fp32
 * pooled features. Returns the count. */
static int dense_shapes(const sv_model *m, int N, dense_shape *d) {
    const sv_dtype B16 = SV_DT_BF16, F32 = SV_DT_F32;
    int p = m->patch_size, S0 = m->sides[0], n = 0;
    d[n++] = (dense_shape){N * S0 * S0, p * p * 3, m->channels[0], 0, B16, F32};
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        int S = m->sides[s], C = m->channels[s], H = m->mlp_ratio * C;
        d[n++] = (dense_shape){N * S * S, C, H, 1, B16, B16};
        d[n++] = (dense_shape){N * S * S, H, C, 1, B16, B16};
        if (s + 1 < SV_NUM_STAGES) {
            int So = m->sides[s + 1];
            d[n++] = (dense_shape){N * So * So, 4 * C, 2 * C, 1, B16, F32};
        }
    }
    d[n++] = (dense_shape){N, m->channels[SV_NUM_STAGES - 1], m->num_classes, 1, F32, F32};
    SV_CHECK(n <= MAX_DENSE);
    return n;
}

void model_prepare_products(sv_model *m, int N, int forward_only) {
    dense_shape d[MAX_DENSE];
    int n = dense_shapes(m, N, d);
    for (int i = 0; i < n; i++) {
        const dense_shape *L = &d[i];
        sv_bf16_prepare(m->bf16, 0, 0, L->T, L->out, L->in, L->xt, SV_DT_BF16, L->out);
        if (forward_only) continue;
        if (L->has_dx) sv_bf16_prepare(m->bf16, 0, 1, L->T, L->in, L->out, L->dyt, SV_DT_BF16, L->in);
        int parts = sv_dense_dw_parts(L->T, L->in, L->out);
        if (parts > 1) sv_bf16_prepare_ksplit(m->bf16, L->in, L->out, L->T, L->xt, L->dyt, parts);
        else sv_bf16_prepare(m->bf16, 1, 0, L->in, L->out, L->T, L->xt, L->dyt, L->out);
    }
}

size_t model_max_split_dw(const sv_model *m, int N) {
    dense_shape d[MAX_DENSE];
    int n = dense_shapes(m, N, d);
    size_t most = 0;
    for (int i = 0; i < n; i++)
        if (sv_dense_dw_parts(d[i].T, d[i].in, d[i].out) > 1 && (size_t)d[i].in * d[i].out > most)
            most = (size_t)d[i].in * d[i].out;
    return most;
}
