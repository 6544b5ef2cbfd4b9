/* The ShiftViT model (SPEC section 1, shift of section 2): parameters in one
 * flat buffer, gradients in another, activations allocated once for the
 * largest local batch. Forward and backward never allocate.
 *
 * Layout of the flat parameter buffer: tensors in forward order (patch
 * projection, stage 1 blocks, stage 1 patch merging, ..., classifier), each
 * contiguous, Keras shapes and names (see sv_param_info). The gradient buffer
 * has the same layout, so the all-reduce runs over a few large contiguous
 * buckets, and backward finishes tensors from the end of the buffer towards
 * its start (which is what lets the all-reduce overlap backward). */
#ifndef SHIFTVIT_MODEL_H
#define SHIFTVIT_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SV_NUM_STAGES 4
#define SV_MAX_NAME 96

/* What the model is made of: its shape, regularisation and product precision.
 * The trainer and the commands fill it from the config's [data], [model] and
 * [train] keys (settings.h sv_model_settings_from); the model knows nothing
 * of the config. */
typedef struct {
    int image_size;             /* input side in pixels (data.image_size) */
    int patch_size;             /* patch projection kernel = stride */
    int num_classes;
    int embed_dim;              /* channels of stage 1; stage s has embed_dim * 2^s */
    int depths[SV_NUM_STAGES];  /* shift blocks per stage, each >= 1 */
    int mlp_ratio;              /* hidden width = mlp_ratio * C */
    int num_div;                /* shift groups: C / num_div channels per direction */
    int shift_pixel;            /* shift offset in pixels */
    float dropout;              /* MLP dropout rate */
    float drop_path;            /* max stochastic-depth rate per stage */
    float eps;                  /* LayerNorm epsilon */
    int bf16;                   /* 1: matrix products with bf16 operands (issue 12) */
} sv_model_settings;

typedef struct {
    char name[SV_MAX_NAME]; /* e.g. "stage1/block0/mlp/fc1/kernel" */
    int ndim;
    int shape[4];           /* Keras shape: Dense [in,out], Conv2D [kh,kw,cin,cout], others [C] */
    size_t offset;          /* in floats, into params and grads */
    size_t size;            /* product of shape */
    double glorot_limit;    /* > 0: Glorot-uniform kernel; 0: zeros; < 0: ones (LayerNorm gamma) */
} sv_param_info;

/* Randomness for a training forward pass (SPEC section 4): dropout and drop-path
 * draws are keyed by (seed, epoch, sample_ids[n], layer). */
typedef struct {
    uint64_t seed;
    long epoch;
    const long *sample_ids; /* N global sample indices, one per row of the batch */
} sv_train_rng;

/* Called by backward each time a parameter tensor's gradient is final, with the
 * lowest flat offset (in floats) whose gradient is now complete; offsets only
 * decrease during one backward pass. */
typedef void (*sv_grad_ready_fn)(void *ctx, size_t offset);

struct sv_model_acts; /* activation buffers, private to model.c */

typedef struct sv_model {
    /* Shape, from the settings. */
    int image_size, patch_size, num_classes, mlp_ratio, num_div, shift_pixel;
    int depths[SV_NUM_STAGES];
    int channels[SV_NUM_STAGES]; /* C per stage: embed_dim * 2^s */
    int sides[SV_NUM_STAGES];    /* H = W per stage: image/patch, then ceil(H/2) */
    float dropout, drop_path, eps;

    int num_tensors;
    sv_param_info *tensors;
    size_t num_params;  /* floats in params/grads (11,690,602 for the recipe) */
    float *params;
    float *grads;

    int max_batch;      /* activations are sized for this many samples */
    double flops_forward; /* per image, multiply-add = 2, GEMMs only */
    struct sv_model_acts *acts;
    struct sv_bf16 *bf16; /* train.precision = bf16: the matrix products' context
                           * (gemm_bf16.h); NULL for fp32 */
    uint16_t *params_bf16; /* bf16: the weights rounded to bf16 (nearest even),
                            * the flat layout of params; the products read the
                            * kernels from it. Written by the AdamW pass
                            * (sv_adamw_step's wb). NULL for fp32 */
    int params_bf16_stale; /* params changed since params_bf16 was written:
                            * the next forward rounds it again */
    int act_bf16;          /* bf16: the activations that only feed products
                            * (LayerNorm outputs, GELU outputs, window columns)
                            * are stored as bf16, halving their memory */
    struct sv_scratch *scratch; /* the backward kernels' workspace (layers.h),
                                 * created with the model for its widest tensor
                                 * and the OpenMP threads of that moment;
                                 * NULL in a forward-only model */
    double *profile;       /* NULL (the default), or seconds per kernel kind
                            * (sv_profile_kind) that sv_model_forward adds to:
                            * see sv_model_set_profile */
    int forward_only;      /* sv_model_create_inference: no gradients (grads
                            * NULL), no saved activations; inference forward
                            * passes only */
} sv_model;

/* Builds the parameter table and allocates params, grads, activations for
 * batches of up to max_batch samples and the backward scratch (all memory
 * touched once, now; forward and backward allocate nothing). The settings
 * must come from a config that passed sv_config_validate. Returns 0, or -1 with a message
 * in err if memory cannot be had. Weights are zero until sv_model_init_weights.
 * With s.bf16 every matrix product (forward and both backward
 * products of each dense layer) takes bf16 operands: the weights' bf16 copy
 * (params_bf16), activations stored in bf16 (act_bf16) and, in backward, the
 * fc1/fc2 output gradients written in bf16 by the kernels that make them;
 * the remaining fp32 operands are rounded on the way in (issue 12). */
int sv_model_create(sv_model *m, sv_model_settings s, int max_batch, char *err);

/* A forward-only model for eval, predict and bench --eval (issue 23): the
 * parameters (and their bf16 copy) and the activations of one layer at a
 * time -- two ping-pong buffers for the layer outputs and one set of block
 * buffers (shifted input, LayerNorm, fc1, GELU, fc2) sized for the largest
 * layer -- with no gradients, optimizer room, saved activations, dropout
 * masks or backward scratch. sv_model_forward with rng == NULL gives the
 * same logits, bit for bit, as a model of sv_model_create (the same kernels
 * on the same values); rng != NULL and sv_model_backward are refused
 * (SV_CHECK). Free with sv_model_free. Returns 0, or -1 with a message. */
int sv_model_create_inference(sv_model *m, sv_model_settings s, int max_batch, char *err);
void sv_model_free(sv_model *m);

/* To be called after m->params is written other than by an AdamW pass that
 * also wrote m->params_bf16 (initialisation, checkpoint load, ZeRO's
 * all-gather, a test's edit): in bf16 mode the next forward rounds the
 * weights' bf16 copy again (one sweep over the parameters); no-op in fp32.
 * sv_model_init_weights calls it itself. */
void sv_model_params_changed(sv_model *m);

/* Keras default initialisation (SPEC section 1): Glorot-uniform kernels with
 * limit sqrt(6 / (fan_in + fan_out)) (conv fans include kh*kw), biases 0,
 * LayerNorm gamma 1 and beta 0. Element i of tensor t is drawn from the
 * counter-based generator keyed by (seed, SV_RNG_INIT, t): identical on every
 * rank and machine. */
void sv_model_init_weights(sv_model *m, uint64_t seed);

/* First tensor of buf (params, grads or an optimizer moment: the flat layout
 * of m) holding a NaN or infinity, and in *elem (may be NULL) the element
 * within it; -1 if every value is finite. */
int sv_model_first_nonfinite(const sv_model *m, const float *buf, size_t *elem);

/* Index of the tensor with this name, or -1. */
int sv_model_find(const sv_model *m, const char *name);

/* Forward pass. x: N x image_size x image_size x 3, NHWC float in [0, 1];
 * N <= max_batch. rng != NULL: training mode (dropout, drop path, activations
 * kept for backward); rng == NULL: inference mode. Returns the logits,
 * N x num_classes, valid until the next forward. */
const float *sv_model_forward(sv_model *m, const float *x, int N,
                              const sv_train_rng *rng);

/* The kinds of kernel of the forward pass, for an opt-in profile (issue 23:
 * where the inference time goes). In forward order. Shift and LayerNorm of a
 * block are one kernel (sv_shift_layernorm_forward), as are a merge's
 * LayerNorm and its 2x2 window gather (sv_layernorm_window_forward); fc1's
 * bias is added by the GELU kernel and fc2's by the residual kernel. */
typedef enum {
    SV_PROF_PATCH_GATHER,  /* patch projection's window gather (im2col) */
    SV_PROF_PATCH_PRODUCT, /* patch projection product (+ its bias) */
    SV_PROF_SHIFT_LN,      /* block: shift + LayerNorm */
    SV_PROF_FC1,           /* block: fc1 product */
    SV_PROF_GELU,          /* block: fc1 bias + GELU (+ dropout in training) */
    SV_PROF_FC2,           /* block: fc2 product */
    SV_PROF_RESIDUAL,      /* block: fc2 bias + residual add (+ dropout, drop path) */
    SV_PROF_MERGE_LN,      /* merge: LayerNorm + 2x2 window gather */
    SV_PROF_MERGE_PRODUCT, /* merge: reduction product */
    SV_PROF_POOL,          /* global average pooling */
    SV_PROF_HEAD,          /* classifier product (+ its bias) */
    SV_PROF_KINDS
} sv_profile_kind;

/* Short names of the kinds, e.g. "fc1_product" (JSON keys). */
extern const char *const sv_profile_names[SV_PROF_KINDS];

/* 1 for the kinds that are matrix products. */
extern const int sv_profile_is_product[SV_PROF_KINDS];

/* Opt-in per-kind timing of sv_model_forward: from now on each forward adds
 * the wall-clock seconds (sv_now) of each kernel call to secs[kind]
 * (secs: SV_PROF_KINDS doubles, owned by the caller, not cleared here);
 * secs = NULL turns it off. Off, the forward pays one branch per kernel. */
void sv_model_set_profile(sv_model *m, double *secs);

/* Backward pass of the last training forward. dlogits: N x num_classes (e.g.
 * from sv_softmax_xent_backward). Overwrites m->grads entirely. ready (may be
 * NULL) is told as each tensor's gradient becomes final. */
void sv_model_backward(sv_model *m, const float *dlogits, sv_grad_ready_fn ready,
                       void *ready_ctx);

/* Keras-style summary: per layer the output shape and parameter count, then
 * total parameters and forward MFLOP per image. */
void sv_model_print_summary(const sv_model *m, FILE *f);

/* Index in m->tensors of the tensor named `name` (e.g. "classifier/kernel",
 * the Keras weight names of model.c); aborts (SV_CHECK) when there is none. */
int sv_model_tensor_index(const sv_model *m, const char *name);

#endif
