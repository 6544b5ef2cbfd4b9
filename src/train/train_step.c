/* One data-parallel training step (train.h sv_step): forward, loss,
 * backward with the bucketed gradient collective, the finiteness check and
 * the AdamW update. The trainer and `bench` both run it, so the step that
 * bench times is the step that trains (issue 11). */
#include "shiftvit/train.h"

#include <math.h>
#include <stdio.h>
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
    s->accum = 1;
    size_t rows = (size_t)m->max_batch, K = (size_t)m->num_classes;
    s->probs = sv_alloc(rows * K * sizeof(float), "probabilities");
    s->losses = sv_alloc(rows * sizeof(float), "losses");
    s->dlogits = sv_alloc(rows * K * sizeof(float), "logit gradients");
}

void sv_step_set_accumulation(sv_step *s, int steps) {
    SV_CHECK(steps >= 1 && !s->acc);
    s->accum = steps;
    if (steps > 1) s->acc = sv_alloc(s->m->num_params * sizeof(float), "accumulated gradients");
}

void sv_step_free(sv_step *s) {
    sv_free(s->acc);
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

/* Gradient accumulation (train.accumulation_steps): the micro-steps'
 * gradients meet in s->acc as each tensor's gradient becomes final, while it
 * is still in cache. The first micro-step copies, the middle ones add, and
 * the last adds s->acc into the model's gradient before passing the offset
 * on to the collective, which then sends the whole sum. */
typedef enum { ACC_COPY, ACC_ADD, ACC_FINAL } accum_mode;

typedef struct {
    sv_grad_ready_fn inner; /* last micro-step: starts buckets; else NULL */
    void *inner_ctx;
    float *grads, *acc;
    size_t hi; /* gradients at [hi, num_params) are done */
    accum_mode mode;
} accum_ctx;

static void accum_range(accum_ctx *c, size_t lo) {
    float *g = c->grads, *a = c->acc;
    long n = (long)(c->hi - lo);
    accum_mode mode = c->mode;
#pragma omp parallel for simd if (n > (1L << 16))
    for (long i = (long)lo; i < (long)c->hi; i++) {
        if (mode == ACC_COPY) a[i] = g[i];
        else if (mode == ACC_ADD) a[i] += g[i];
        else g[i] += a[i];
    }
    c->hi = lo;
}

static void accum_ready(void *ctx, size_t offset) {
    accum_ctx *c = ctx;
    if (offset < c->hi) accum_range(c, offset);
    if (c->inner) c->inner(c->inner_ctx, offset);
}

/* The trace label of a micro-step, "micro 2/4" for the second of four;
 * NULL without accumulation. */
static const char *micro_label(const sv_step *s, int micro, char *buf, size_t n) {
    if (s->accum == 1) return NULL;
    snprintf(buf, n, "micro %d/%d", micro + 1, s->accum);
    return buf;
}

/* Backward pass of the logit gradient in s->dlogits; on the last micro-step
 * the bucketed collective starts as gradients become ready (with
 * SHIFTVIT_INJECT_NAN_STEP, a NaN planted first), with accumulation the
 * micro-steps' gradients are summed on the way (accum_ctx); with --trace,
 * timed per block. */
static void backward(sv_step *s, double tb, int micro, int last) {
    sv_model *m = s->m;
    sv_dist *d = s->d;
    inject_ctx ic = {d, last ? nan_target(s) : NULL, 0};
    if (ic.poison) ic.offset = (size_t)(ic.poison - m->grads);
    sv_grad_ready_fn ready = !last ? NULL : ic.poison ? tr_ready_inject : sv_allreduce_ready;
    void *ready_ctx = ic.poison ? (void *)&ic : (void *)d;
    accum_ctx ac = {ready, ready_ctx, m->grads, s->acc, m->num_params,
                    micro == 0 ? ACC_COPY : last ? ACC_FINAL : ACC_ADD};
    if (s->accum > 1) {
        ready = accum_ready;
        ready_ctx = &ac;
    }
    char label[32];
    if (!s->trace) {
        sv_model_backward(m, s->dlogits, ready, ready_ctx);
    } else {
        traced_ready_ctx tc = {ready, ready_ctx, s->trace, m, d->step, tb, tb, ""};
        sv_model_backward(m, s->dlogits, tr_ready_traced, &tc);
        tr_traced_flush(&tc);
        sv_trace_add(s->trace, SV_TR_BACKWARD, tb, sv_now(), d->step, -1, micro_label(s, micro, label, sizeof label));
    }
    /* the tensors below the last reported offset; the collective's finish
     * starts their buckets */
    if (s->accum > 1 && ac.hi > 0) accum_range(&ac, 0);
}

/* A micro-batch without samples (more micro-batches than images in the
 * last batch of an epoch) contributes zeros. */
static void empty_micro_step(sv_step *s, int micro, int last) {
    sv_model *m = s->m;
    if (!last) {
        if (micro == 0) memset(s->acc, 0, m->num_params * sizeof(float));
        return;
    }
    if (micro == 0) memset(m->grads, 0, m->num_params * sizeof(float));
    else memcpy(m->grads, s->acc, m->num_params * sizeof(float));
    sv_allreduce_begin(s->d);
    float *poison = nan_target(s);
    if (poison) *poison = NAN; /* no bucket has started yet */
}

void sv_step_micro(sv_step *s, int micro, const float *x, const int *labels, int n, long gcount,
                   const sv_train_rng *rng, double sums[5]) {
    sv_model *m = s->m;
    sv_dist *d = s->d;
    int last = micro == s->accum - 1;
    SV_CHECK(micro >= 0 && micro < s->accum);
    double t0 = sv_now(), tb = t0;
    if (micro == 0) sums[0] = sums[1] = sums[2] = sums[3] = s->phase[0] = s->phase[1] = s->phase[2] = 0;
    if (n > 0) {
        char label[32];
        const float *logits = sv_model_forward(m, x, n, rng);
        tr_batch_metrics(logits, s->probs, s->losses, labels, n, m->num_classes, s->label_smoothing, &sums[0],
                         &sums[1], &sums[2]);
        sv_softmax_xent_backward(s->dlogits, s->probs, labels, n, m->num_classes, 1.0f / (float)gcount,
                                 s->label_smoothing);
        tb = sv_now();
        sv_trace_add(s->trace, SV_TR_FORWARD, t0, tb, d->step, -1, micro_label(s, micro, label, sizeof label));
        if (last) sv_allreduce_begin(d);
        backward(s, tb, micro, last);
    } else {
        empty_micro_step(s, micro, last);
    }
    sums[3] += (double)n;
    double tw = sv_now();
    s->phase[0] += tb - t0;
    s->phase[1] += tw - tb;
    if (!last) return;
    sv_allreduce_finish(d);
    sv_trace_add_buckets(s->trace, d, d->step, d->zero ? SV_TR_REDUCE_SCATTER : SV_TR_ALLREDUCE);
    sv_allreduce_doubles(d, sums, 5);
    s->phase[2] = sv_now() - tw;
}

void sv_step_gradient(sv_step *s, const float *x, const int *labels, int n, long gcount, const sv_train_rng *rng,
                      double sums[5]) {
    SV_CHECK(s->accum == 1);
    sv_step_micro(s, 0, x, labels, n, gcount, rng, sums);
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
