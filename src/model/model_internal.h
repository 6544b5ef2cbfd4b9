/* Internal to the model (src/model/model.c, src/model/model_infer.c,
 * src/model/model_products.c): the activation buffers, the set-up both kinds of
 * model share, and the dense layers' matrix products as a list of shapes. */
#ifndef SHIFTVIT_MODEL_INTERNAL_H
#define SHIFTVIT_MODEL_INTERNAL_H

#include <stddef.h>

#include "shiftvit/model.h"

/* Tensor indices of one shift block, one patch merging, and the ends. */
typedef struct { int ln_g, ln_b, fc1_w, fc1_b, fc2_w, fc2_b; } block_params;
typedef struct { int ln_g, ln_b, red_w; } merge_params;

/* Saved activations of one shift block for a batch of up to max_batch. */
typedef struct {
    int stage, index, layer_id;
    float drop_path_rate;
    block_params p;
    float *xs;          /* shifted input = residual base   [T][C] */
    void *ln;           /* LayerNorm output, act_type(m)   [T][C] */
    float *mean, *rstd; /* LayerNorm statistics            [T] */
    float *h;           /* fc1 output; in training, overwritten by
                           d GELU-dropout / dh             [T][hid] */
    void *a;            /* dropout(GELU(h)), act_type(m)   [T][hid];
                           in bf16 backward, after fc2's weight gradient
                           has read it, the bf16 d GELU-dropout input */
    float *out;         /* block output                    [T][C] */
    uint8_t *mask2;     /* dropout mask after fc2          [T][C] */
    float *dp;          /* drop-path scale per sample      [N] */
    uint64_t *keys1, *keys2, *keys_dp; /* per-sample RNG keys [N] */
} block_acts;

typedef struct {
    merge_params p;
    float *mean, *rstd;      /* LayerNorm statistics of the stage output [T] */
    void *cols;              /* LayerNorm output in 2x2 windows, act_type(m) [To][4C] */
    float *out;              /* merged tokens                [To][2C] */
} merge_acts;

struct sv_model_acts {
    int num_blocks;
    block_acts *blocks;
    merge_acts merges[SV_NUM_STAGES - 1];
    int patch_w, patch_b, head_w, head_b;
    void *patch_cols;  /* act_type(m) [T0][p*p*3] */
    float *patch_out;  /* [T0][C0] */
    float *pooled;     /* [N][C3] */
    float *logits;     /* [N][K] */
    /* Backward scratch, sized for the largest stage. */
    float *z;          /* fc2 output / its gradient (act_type(m)) [maxTC] */
    float *dh;         /* gradient of a and h         [maxTH] */
    float *dln;        /* gradient of LayerNorm output [maxTC] */
    float *dx0, *dx1;  /* ping-pong activation gradients [maxTC] */
    float *dcols;      /* [max To*4C] */
    float *dpooled;    /* [N][C3] */
    int last_n, last_training;
    /* A forward-only model (sv_model_create_inference): the blocks and
     * merges share these buffers (freed once, here), the backward scratch is
     * NULL. */
    int forward_only, nshared;
    void *shared[12];
};

/* The shape, the parameter table and m->acts (blocks, tensor indices; no
 * buffer yet) from the config; m->act_bf16 and m->flops_forward set.
 * Returns 0, or -1 with a message in err. */
int model_setup(sv_model *m, const sv_model_settings *s, int max_batch, char *err);

/* bf16: the products of every dense layer at a batch of N (forward, input
 * gradient, weight gradient: whole or split along T, as dense.c runs them;
 * forward_only: the forward products alone), prepared at model creation
 * (gemm_bf16.h sv_bf16_prepare). */
void model_prepare_products(sv_model *m, int N, int forward_only);

/* Floats of the largest weight gradient that dense.c splits at a batch of N
 * (layers.h sv_dense_dw_parts): the size of the scratch's partials. */
size_t model_max_split_dw(const sv_model *m, int N);

#endif
