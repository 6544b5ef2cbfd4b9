/* One data-parallel training step (train.h sv_step): forward, loss,
 * backward with the bucketed gradient collective, the finiteness check and
 * the AdamW update. The trainer and `bench` both run it, so the step that
 * bench times is the step that trains (issue 11). */
#include "shiftvit/train.h"

#include <math.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/layers.h"
#include "train_internal.h"

void sv_step_init(sv_step *s, sv_model *m, sv_adamw *opt, sv_dist *d, float label_smoothing, sv_trace *trace) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->opt = opt;
    s->d = d;
    s->label_smoothing = label_smoothing;
    s->trace = trace;
    size_t rows = (size_t)m->max_batch, K = (size_t)m->num_classes;
    s->probs = sv_alloc(rows * K * sizeof(float), "probabilities");
    s->losses = sv_alloc(rows * sizeof(float), "losses");
    s->dlogits = sv_alloc(rows * K * sizeof(float), "logit gradients");
}

void sv_step_free(sv_step *s) {
    sv_free(s->probs);
    sv_free(s->losses);
    sv_free(s->dlogits);
    memset(s, 0, sizeof *s);
}

/* SHIFTVIT_INJECT_NAN_STEP: the gradient element to poison at this step
 * (rank 0's first classifier-kernel element), or NULL. */
static float *nan_target(const sv_step *s) {
    const sv_model *m = s->m;
    if (s->inject_nan_step <= 0 || s->inject_nan_step != s->d->step || s->d->rank != 0) return NULL;
    return m->grads + m->tensors[sv_model_tensor_index(m, "classifier/kernel")].offset;
}

/* Backward pass of the logit gradient in s->dlogits, starting the bucketed
 * collective as gradients become ready (with --trace, timed per block; with
 * SHIFTVIT_INJECT_NAN_STEP, a NaN planted first). */
static void backward(sv_step *s, double tb) {
    sv_model *m = s->m;
    sv_dist *d = s->d;
    inject_ctx ic = {d, nan_target(s), 0};
    if (ic.poison) ic.offset = (size_t)(ic.poison - m->grads);
    sv_grad_ready_fn ready = ic.poison ? tr_ready_inject : sv_allreduce_ready;
    void *ready_ctx = ic.poison ? (void *)&ic : (void *)d;
    if (!s->trace) {
        sv_model_backward(m, s->dlogits, ready, ready_ctx);
        return;
    }
    traced_ready_ctx tc = {ready, ready_ctx, s->trace, m, d->step, tb, tb, ""};
    sv_model_backward(m, s->dlogits, tr_ready_traced, &tc);
    tr_traced_flush(&tc);
    sv_trace_add(s->trace, SV_TR_BACKWARD, tb, sv_now(), d->step, -1, NULL);
}

void sv_step_gradient(sv_step *s, const float *x, const int *labels, int n, long gcount, const sv_train_rng *rng,
                      double sums[5]) {
    sv_model *m = s->m;
    sv_dist *d = s->d;
    double t0 = sv_now(), tb = t0;
    sums[0] = sums[1] = sums[2] = 0;
    if (n > 0) {
        const float *logits = sv_model_forward(m, x, n, rng);
        tr_batch_metrics(logits, s->probs, s->losses, labels, n, m->num_classes, s->label_smoothing, &sums[0],
                         &sums[1], &sums[2]);
        sv_softmax_xent_backward(s->dlogits, s->probs, labels, n, m->num_classes, 1.0f / (float)gcount,
                                 s->label_smoothing);
        tb = sv_now();
        sv_trace_add(s->trace, SV_TR_FORWARD, t0, tb, d->step, -1, NULL);
        sv_allreduce_begin(d);
        backward(s, tb);
    } else {
        /* More ranks than samples in this (last) batch: contribute zeros. */
        memset(m->grads, 0, m->num_params * sizeof(float));
        sv_allreduce_begin(d);
        float *poison = nan_target(s);
        if (poison) *poison = NAN; /* no bucket has started yet */
    }
    double tw = sv_now();
    sv_allreduce_finish(d);
    sv_trace_add_buckets(s->trace, d, d->step, d->zero ? SV_TR_REDUCE_SCATTER : SV_TR_ALLREDUCE);
    sums[3] = (double)n;
    sv_allreduce_doubles(d, sums, 5);
    double te = sv_now();
    s->phase[0] = tb - t0;
    s->phase[1] = tw - tb;
    s->phase[2] = te - tw;
}

int sv_step_gradient_finite(sv_step *s) {
    sv_dist *d = s->d;
    return d->zero ? sv_dist_all_ok(d, tr_all_finite(d->gshard, d->shard_n))
                   : tr_all_finite(s->m->grads, s->m->num_params);
}

void sv_step_update(sv_step *s, float lr) {
    sv_dist *d = s->d;
    double t0 = sv_now();
    sv_optimizer_step(d, s->m, s->opt, lr);
    if (s->ema) sv_ema_update(s->ema, s->m->params, s->opt->t);
    double t1 = sv_now();
    sv_trace_add(s->trace, SV_TR_OPTIMIZER, t0, t1, d->step, -1, NULL);
    if (d->zero) sv_trace_add_buckets(s->trace, d, d->step, SV_TR_ALLGATHER);
    s->phase[3] = t1 - t0;
}
