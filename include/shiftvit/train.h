/* The training loop (SPEC sections 1 and 4) and evaluation. */
#ifndef SHIFTVIT_TRAIN_H
#define SHIFTVIT_TRAIN_H

#include "shiftvit/config.h"
#include "shiftvit/data.h"
#include "shiftvit/dist.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/trace.h"
#include "shiftvit/train_state.h"

/* Exit status of `shiftvit train` (README "Exit status"); 5 is dist.h's
 * SV_EXIT_COLLECTIVE_TIMEOUT. */
typedef enum {
    SV_EXIT_OK = 0,                /* done, or stopped by a signal after a checkpoint */
    SV_EXIT_BAD_INPUT = 1,         /* config, data, checkpoint or output folder refused */
    SV_EXIT_RUNTIME = 2,           /* out of memory, replicas differ, trace not written */
    SV_EXIT_NONFINITE = 3,         /* non-finite loss or gradient: stopped before the update */
    SV_EXIT_CHECKPOINT_FAILED = 4, /* finished, but a checkpoint could not be written */
} sv_exit_status;

typedef enum { SV_PROGRESS_AUTO, SV_PROGRESS_TTY, SV_PROGRESS_LINES } sv_progress_mode;

typedef struct {
    const char *data_dir;  /* --data-dir, or NULL */
    const char *out_dir;   /* --out, or NULL (config, then the default) */
    const char *resume;    /* --resume CKPT, or NULL */
    const char *changes;   /* on resume: the keys recorded as changes (trajectory keys
                            * accepted by --resume-with-changes, and train.precision),
                            * one "section.key before -> after" line each; else NULL */
    int overwrite;         /* --overwrite: the output folder may hold another run,
                            * whose files are removed first */
    const char *trace;     /* --trace FILE: the step timeline (trace.h), or NULL */
    /* Debug switches, read from the environment once by the command
     * (README "Developers"): */
    sv_progress_mode progress; /* SHIFTVIT_PROGRESS=tty|lines: force the progress style */
    int check_replicas;    /* SHIFTVIT_CHECK_REPLICAS=1: ranks compare a weight checksum after every update */
    long inject_nan_step;  /* SHIFTVIT_INJECT_NAN_STEP=N: a NaN in rank 0's classifier-kernel gradient at update N */
} sv_train_opts;

/* Runs the whole training job on every rank; rank 0 prints and writes files.
 * Returns the process exit status (0 success, 1 bad input, 2 runtime failure,
 * 3 stopped on a non-finite loss or gradient, 4 finished but some checkpoint
 * could not be written, e.g. disk full). */
int sv_train(const sv_config *cfg, const sv_train_opts *opts, sv_dist *d);

/* Evaluation results over a whole split (every sample counted exactly once for
 * any world size: contiguous shards, sums reduced, then divided). */
typedef struct { double loss, top1, top5; long count; } sv_eval_result;

/* Evaluates `ds` with the evaluation transform, batches of at most
 * ceil(cfg->eval_batch_size / world) per rank (<= m->max_batch).
 * x: scratch input buffer of m->max_batch images; labels/idx scratch of
 * m->max_batch entries. */
sv_eval_result sv_evaluate(sv_model *m, const sv_dataset *ds, const sv_config *cfg,
                           sv_dist *d, float *x, int *labels, long *idx);

/* Test-time augmentation of evaluation (train.tta_flip, train.tta_translate)
 * with its scratch for batches of up to n images. */
typedef struct {
    int flip;      /* each view also mirrored */
    int translate; /* also the views moved by (+t, +t) and (-t, -t), reflected border; 0 = off */
    float *logits; /* n x num_classes: the mean being built */
    float *images; /* n x S x S x 3 NHWC: a moved copy of the batch (translate only) */
} sv_tta;

/* Sets flip and translate from cfg and allocates the scratch they need
 * (none without either; aborts on allocation failure as sv_alloc does). */
void sv_tta_init(sv_tta *t, const sv_config *cfg, int n, int num_classes, int S);
/* Frees the scratch of sv_tta_init (safe on a zeroed or freed sv_tta). */
void sv_tta_free(sv_tta *t);

/* Logits of n images for evaluation (no dropout, no drop path). Without
 * test-time augmentation (t NULL or both off) the model's logits. With it,
 * the weighted mean of the logits of the views (KellerJordan/cifar10-airbench's
 * evaluation: a mean of logits, not of probabilities): the image and, with
 * flip, its horizontal mirror share weight 1/2 (1 without translate); with
 * translate, the images moved by (+t, +t) and (-t, -t)
 * (sv_translate_images_reflect), each with its mirror under flip, share the
 * other 1/2. x: n x S x S x 3 NHWC, mirrored in place and back (unchanged on
 * return); n <= the n of sv_tta_init. Returns n x num_classes logits, valid
 * until the next forward or call. */
const float *sv_eval_logits(sv_model *m, float *x, int n, int S, const sv_tta *t);

/* Per-rank batch sizes for a config: ceil(global / world). */
int sv_local_batch(int global, int world);

/* Per-rank evaluation batch for splits of at most `images` images:
 * sv_local_batch(cfg->eval_batch_size, world), capped at the largest shard,
 * ceil(images / world) (at least 1), so that a huge eval_batch_size or
 * --batch sizes the activations for the images there are, not for the
 * request. The results do not depend on the batch (per-image sums). */
int sv_eval_local_batch(const sv_config *cfg, long images, int world);

/* Prepares the update of m's parameters: the bucketed gradient collective of
 * d over m->grads (all-reduce; with train.zero_stage = 1 and more than one
 * rank, ZeRO stage 1's reduce-scatter and shards, d->zero set) and opt, whose
 * AdamW moments cover all parameters or, under ZeRO, this rank's shards
 * (d->shard_n floats). With train.allreduce_dtype = bf16 the gradient travels
 * as bf16 with fp32 sums (sv_exchange_bf16). bucket_bytes: 4 MiB is the fast
 * size (MACHINE_NOTES.md). */
void sv_optimizer_setup(sv_dist *d, sv_model *m, sv_adamw *opt, const sv_config *cfg, size_t bucket_bytes);

/* The update after a backward pass whose gradient the bucketed collective of d
 * has reduced: stage 0, AdamW over every parameter (gradient all-reduced);
 * ZeRO stage 1 (sv_zero_setup), AdamW over this rank's shards (opt holds
 * their moments) and then the all-gather of the parameters. Same arithmetic
 * per element either way (SPEC section 1). */
void sv_optimizer_step(sv_dist *d, sv_model *m, sv_adamw *opt, double lr);

/* One data-parallel training step (src/train/train_step.c), shared by the trainer
 * and `bench` so that the timed step is the trained step. Buffers are sized
 * once by sv_step_init (nothing is allocated inside the step). */
typedef struct {
    sv_model *m;
    sv_adamw *opt;
    sv_dist *d;                       /* d->step names the step in traces and timeouts */
    float *probs, *losses, *dlogits;  /* m->max_batch x K, m->max_batch, m->max_batch x K (row-major) */
    float label_smoothing;            /* train.label_smoothing */
    sv_trace *trace;                  /* --trace, or NULL */
    long inject_nan_step;             /* SHIFTVIT_INJECT_NAN_STEP: NaN in rank 0's classifier gradient at this d->step; 0 = never */
    sv_ema *ema;                      /* train.ema_decay: updated after each update; NULL = off */
    double phase[4];                  /* the last step, seconds: forward and loss, backward, all-reduce
                                       * wait (with the metric sums), update; forward and backward
                                       * summed over the micro-steps */
    int accum;                        /* micro-steps per optimizer step (train.accumulation_steps; 1) */
    float *acc;                       /* accum > 1: the micro-steps' summed gradient, num_params floats */
} sv_step;

/* Allocates the step's buffers (exits with a message when out of memory, as sv_alloc). */
void sv_step_init(sv_step *s, sv_model *m, sv_adamw *opt, sv_dist *d, float label_smoothing, sv_trace *trace);
void sv_step_free(sv_step *s);

/* Forward pass of this rank's n images x (n x S x S x 3, NHWC) with their
 * labels, loss (cross-entropy, label smoothing as configured, scaled by
 * 1 / gcount, the images of the global batch), backward pass with the
 * bucketed gradient all-reduce (or ZeRO reduce-scatter) started as gradients
 * become ready, and finished. n may be 0 (more ranks than images): the rank
 * contributes zeros. sums: sums[4] is a flag the caller sets (a stop signal);
 * on return sums[0..2] are the loss, top-1 and top-5 sums, sums[3] the image
 * count and sums[4] the flag, each summed over ranks. Collective. Without
 * accumulation only (s->accum = 1): sv_step_micro's single micro-step. */
void sv_step_gradient(sv_step *s, const float *x, const int *labels, int n, long gcount, const sv_train_rng *rng,
                      double sums[5]);

/* Gradient accumulation over `steps` micro-steps per optimizer step (>= 1;
 * once, after sv_step_init; steps > 1 allocates s->acc, num_params floats). */
void sv_step_set_accumulation(sv_step *s, int steps);

/* Micro-step `micro` (0 .. s->accum - 1) of an optimizer step: forward pass
 * of this rank's micro-batch of n images (n may be 0), loss scaled by
 * 1 / gcount (the images of the global batch, so the micro-steps' gradients
 * add up to the global batch's mean), backward pass. Micro-step 0 sets
 * sums[0..3] to 0; each adds its loss, top-1 and top-5 sums and n to them.
 * The micro-steps' gradients are summed locally (s->acc) with no
 * communication; only the last micro-step's backward runs the bucketed
 * all-reduce (or ZeRO reduce-scatter) of the sum, then sums[0..4] are summed
 * over ranks as in sv_step_gradient (collective: the last micro-step only).
 * Floating-point order: ((g_0 + g_1) + ...) + g_{A-1}, then over ranks. */
void sv_step_micro(sv_step *s, int micro, const float *x, const int *labels, int n, long gcount,
                   const sv_train_rng *rng, double sums[5]);

/* 1 when the reduced gradient is finite everywhere (every rank decides the
 * same; collective under ZeRO stage 1). */
int sv_step_gradient_finite(sv_step *s);

/* The update at learning rate lr: sv_optimizer_step, traced; then, when
 * s->ema is set, the moving average of the weights (sv_ema_update with t =
 * the optimizer's updates done). */
void sv_step_update(sv_step *s, float lr);

#endif
