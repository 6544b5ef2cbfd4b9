/* The forward-only model (model.h sv_model_create_inference): the training
 * model's parameter table and kernels, with the activations of one layer at
 * a time. The forward pass is model.c's own (sv_model_forward): only the
 * buffers differ. Each block reads its input from one ping-pong buffer and
 * writes its output to the other; its intermediate buffers (shifted input,
 * LayerNorm output and statistics, fc1 output, GELU output, fc2 output) are
 * the same for every block and merge, sized for the largest. */
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "model_internal.h"

typedef struct {
    size_t tc, th, cols, t; /* elements: largest T x C, T x H, window columns, T */
} infer_sizes;

static infer_sizes largest(const sv_model *m) {
    size_t N = (size_t)m->max_batch, s0 = (size_t)m->sides[0], p = (size_t)m->patch_size;
    infer_sizes z = {N * s0 * s0 * m->channels[0], 0, N * s0 * s0 * p * p * 3, N * s0 * s0};
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        size_t S = (size_t)m->sides[s], C = (size_t)m->channels[s], T = N * S * S;
        if (T * C > z.tc) z.tc = T * C;
        if (T * C * m->mlp_ratio > z.th) z.th = T * C * m->mlp_ratio;
        if (T > z.t) z.t = T;
        if (s + 1 < SV_NUM_STAGES) {
            size_t So = (size_t)m->sides[s + 1];
            if (N * So * So * 4 * C > z.cols) z.cols = N * So * So * 4 * C;
        }
    }
    return z;
}

/* Bytes of every buffer, in the order make_buffers allocates them. */
static void buffer_bytes(const sv_model *m, size_t bytes[12], int *n) {
    infer_sizes z = largest(m);
    size_t f = sizeof(float), a = m->act_bf16 ? sizeof(uint16_t) : sizeof(float);
    size_t C3 = (size_t)m->channels[SV_NUM_STAGES - 1], N = (size_t)m->max_batch;
    size_t b[] = {m->num_params * f, z.tc * f, z.tc * f, /* params, ping, pong */
                  z.tc * f, z.tc * a, z.t * f, z.t * f, /* xs, ln, mean, rstd */
                  z.th * f, z.th * a, z.tc * f,          /* h, a, z */
                  z.cols * a, N * C3 * f + N * (size_t)m->num_classes * f}; /* cols, pooled + logits */
    *n = (int)(sizeof b / sizeof *b);
    memcpy(bytes, b, sizeof b);
}

static int check_memory(const sv_model *m, char *err) {
    size_t bytes[12];
    int n;
    buffer_bytes(m, bytes, &n);
    double need = (double)m->num_params * (m->act_bf16 ? sizeof(uint16_t) : 0), avail = sv_mem_available();
    for (int i = 0; i < n; i++) need += (double)bytes[i];
    if (avail <= 0 || need <= avail) return 0;
    return sv_fail(err,
                   "model: inference on a batch of %d samples per rank needs %.1f GiB for parameters and "
                   "activations, more than the %.1f GiB this machine has available (MemAvailable); use a "
                   "smaller batch (train.eval_batch_size, --batch) or more ranks",
                   m->max_batch, need / 1073741824.0, avail / 1073741824.0);
}

/* Points every block and merge at the shared buffers, in forward order. */
static void assign(sv_model *m, void *const buf[12]) {
    struct sv_model_acts *A = m->acts;
    float *pp[2] = {buf[1], buf[2]};
    int cur = 0, bi = 0;
    A->patch_cols = buf[10];
    A->patch_out = pp[cur];
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        for (int b = 0; b < m->depths[s]; b++, bi++) {
            block_acts *B = &A->blocks[bi];
            B->xs = buf[3];
            B->ln = buf[4];
            B->mean = buf[5];
            B->rstd = buf[6];
            B->h = buf[7];
            B->a = buf[8];
            cur ^= 1;
            B->out = pp[cur];
        }
        if (s + 1 < SV_NUM_STAGES) {
            merge_acts *M = &A->merges[s];
            M->mean = buf[5];
            M->rstd = buf[6];
            M->cols = buf[10];
            cur ^= 1;
            M->out = pp[cur];
        }
    }
    A->z = buf[9];
    A->pooled = buf[11];
    A->logits = (float *)buf[11] + (size_t)m->max_batch * m->channels[SV_NUM_STAGES - 1];
}

int sv_model_create_inference(sv_model *m, sv_model_settings settings, int max_batch, char *err) {
    if (model_setup(m, &settings, max_batch, err) != 0) return -1;
    struct sv_model_acts *A = m->acts;
    A->forward_only = 1;
    m->forward_only = 1;
    if (check_memory(m, err)) {
        sv_model_free(m);
        return -1;
    }
    size_t bytes[12];
    buffer_bytes(m, bytes, &A->nshared);
    for (int i = 0; i < A->nshared; i++)
        A->shared[i] = sv_alloc(bytes[i] ? bytes[i] : 1, i == 0 ? "parameters" : "inference activations");
    m->params = A->shared[0];
    assign(m, A->shared);
    if (m->act_bf16) m->params_bf16 = sv_alloc(m->num_params * sizeof(uint16_t), "bf16 weights");
    m->params_bf16_stale = 1;
    m->bf16 = m->act_bf16 ? sv_bf16_create(0) : NULL;
    if (m->bf16) model_prepare_products(m, max_batch, 1);
    return 0;
}
