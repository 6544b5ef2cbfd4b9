/* AdamW with TensorFlow Addons semantics and the WarmUpCosine schedule
 * (SPEC section 1). */
#ifndef SHIFTVIT_OPTIM_H
#define SHIFTVIT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

/* Weight decay: tfa (w -= wd * w, tfa.optimizers.AdamW) or torch
 * (w -= lr * wd * w, torch.optim.AdamW); optim.decay_mode. */
typedef enum { SV_DECAY_TFA = 0, SV_DECAY_TORCH = 1 } sv_decay_mode;

/* AdamW's hyper-parameters, filled from the config's [optim] section by the
 * trainer (settings.h sv_adamw_settings_from); the optimizer knows nothing of
 * the config. */
typedef struct {
    double beta1, beta2, eps, weight_decay;
    sv_decay_mode decay_mode;
} sv_adamw_settings;

typedef struct {
    double lr_start, lr_max;
    long warmup, total;
} sv_schedule;

/* Checks and stores the schedule. Errors (SPEC section 1): total < warmup,
 * lr_max < lr_start, negative step counts. The message names the values. */
int sv_schedule_init(sv_schedule *s, double lr_start, double lr_max,
                     long warmup, long total, char *err);

/* Learning rate after `step` updates (step = 0, 1, 2, ...), the Keras example's
 * WarmUpCosine: linear lr_start -> lr_max over [0, warmup), then
 * 0.5 lr_max (1 + cos(pi (step - warmup) / (total - warmup))), 0 past total. */
double sv_schedule_lr(const sv_schedule *s, long step);

typedef struct {
    size_t n;        /* number of parameters */
    float *m, *v;    /* first and second moments, n floats each (zeroed at start) */
    long t;          /* updates done so far */
    double beta1, beta2, eps, weight_decay;
    sv_decay_mode decay_mode;
} sv_adamw;

/* Allocates and zeroes the moments for n parameters; takes the hyper-parameters
 * from s. */
void sv_adamw_init(sv_adamw *o, size_t n, sv_adamw_settings s);
void sv_adamw_free(sv_adamw *o);

/* One update with learning rate lr, over the flat buffers w and g (n floats):
 *   tfa mode:   w <- w - wd * w         (tfa.optimizers.AdamW: decay not scaled by lr)
 *   torch mode: w <- w - lr * wd * w    (torch.optim.AdamW)
 * then Keras Adam with t = o->t + 1:
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  w <- w - lr_t m / (sqrt(v) + eps)
 * (eps outside the bias correction, as Keras). Increments o->t.
 * wb (may be NULL): the weights' bf16 copy (n elements, bf16 mode, issue
 * 12), written in the same pass with the new w rounded to nearest even, so
 * the next forward's products need no sweep of their own. */
void sv_adamw_step(sv_adamw *o, float *w, uint16_t *wb, const float *g, double lr);

/* The same update for update number t (1-based) over n elements with their own
 * moments m and v (a shard of the parameters: ZeRO stage 1); o->t is left
 * alone. sv_adamw_step is this over all of w with o->m, o->v, then o->t++. */
void sv_adamw_update(const sv_adamw *o, long t, float *w, uint16_t *wb, const float *g, float *m, float *v,
                     size_t n, double lr);

/* Exponential moving average of the weights (train.ema_decay, issue 22):
 * one flat buffer beside the parameters, same layout (model.h tensors).
 * Evaluated and checkpointed (/ema) as weights of their own. */
typedef struct {
    size_t n;      /* number of parameters */
    float *w;      /* the average, n floats (NULL when off) */
    double decay;  /* train.ema_decay, in (0, 1) */
} sv_ema;

/* Allocates the average and starts it at params (n floats): TensorFlow's
 * ExponentialMovingAverage starts each shadow variable at the variable's
 * value. decay must lie in (0, 1). */
void sv_ema_init(sv_ema *e, const float *params, size_t n, double decay);
void sv_ema_free(sv_ema *e);

/* The decay of update number t (t = optimizer updates done, this one
 * included: 1, 2, ...): min(decay, (1 + t) / (10 + t)), the num_updates
 * warm-up of tf.train.ExponentialMovingAverage (TensorFlow 1.x
 * moving_averages.py), so that early averages are not dominated by the
 * random initial weights. */
double sv_ema_decay_at(double decay, long t);

/* After optimizer update t: w <- w - (1 - d_t) (w - params), i.e.
 * w = d_t w + (1 - d_t) params with d_t = sv_ema_decay_at(e->decay, t), in
 * float32 per element in the order TensorFlow's assign_moving_average uses
 * (shadow -= (1 - decay) * (shadow - value)). Element-wise, so the result
 * does not depend on the thread count. */
void sv_ema_update(sv_ema *e, const float *params, long t);

/* Exchanges params and the average element by element (n floats each):
 * exact, no buffer; a second call restores both. For evaluating the
 * average in the training model (the caller marks the params changed). */
void sv_ema_swap(sv_ema *e, float *params);

#endif
