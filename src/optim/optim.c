/* AdamW (TensorFlow Addons semantics) and WarmUpCosine (SPEC section 1). */
#include "shiftvit/optim.h"

#include <math.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"

int sv_schedule_init(sv_schedule *s, double lr_start, double lr_max,
                     long warmup, long total, char *err) {
    if (warmup < 0 || total < 0)
        return sv_fail(err, "learning-rate schedule: warmup steps %ld and total steps %ld must not be negative",
                       warmup, total);
    if (total < warmup)
        return sv_fail(err, "learning-rate schedule: total steps %ld must be larger or equal to warmup steps %ld",
                       total, warmup);
    if (lr_max < lr_start)
        return sv_fail(err, "learning-rate schedule: lr_start %g must be smaller or equal to lr_max %g",
                       lr_start, lr_max);
    s->lr_start = lr_start;
    s->lr_max = lr_max;
    s->warmup = warmup;
    s->total = total;
    return 0;
}

double sv_schedule_lr(const sv_schedule *s, long step) {
    if (step > s->total) return 0.0;
    if (s->warmup > 0 && step < s->warmup)
        return s->lr_start + (s->lr_max - s->lr_start) / (double)s->warmup * (double)step;
    /* total == warmup leaves no decay phase: the Keras formula divides by zero
     * there; hold lr_max until total, which is the limit of the cosine. */
    if (s->total == s->warmup) return s->lr_max;
    double c = cos(M_PI * (double)(step - s->warmup) / (double)(s->total - s->warmup));
    return 0.5 * s->lr_max * (1.0 + c);
}

void sv_adamw_init(sv_adamw *o, size_t n, sv_adamw_settings s) {
    o->n = n;
    o->m = sv_alloc(n * sizeof(float), "AdamW first moment");
    o->v = sv_alloc(n * sizeof(float), "AdamW second moment");
    o->t = 0;
    o->beta1 = s.beta1;
    o->beta2 = s.beta2;
    o->eps = s.eps;
    o->weight_decay = s.weight_decay;
    o->decay_mode = s.decay_mode;
}

void sv_adamw_free(sv_adamw *o) {
    sv_free(o->m);
    sv_free(o->v);
    o->m = o->v = NULL;
}

/* Elements [0, n) of the update (see sv_adamw_update); with_bf16 constant
 * after inlining, so the fp32-only loop carries no store it does not need. */
static inline __attribute__((always_inline)) void adamw_loop(float *w, uint16_t *wb, int with_bf16,
                                                             const float *g, float *m, float *v,
                                                             size_t n, float decay, float lr_t,
                                                             float fb1, float fb2, float one_b1,
                                                             float one_b2, float eps) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) {
        float wi = w[i] - decay * w[i];
        float gi = g[i];
        float mi = fb1 * m[i] + one_b1 * gi;
        float vi = fb2 * v[i] + one_b2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float wn = wi - lr_t * mi / (sqrtf(vi) + eps);
        w[i] = wn;
        if (with_bf16) wb[i] = sv_bf16_round(wn);
    }
}

void sv_adamw_update(const sv_adamw *o, long t, float *w, uint16_t *wb, const float *g, float *m, float *v,
                     size_t n, double lr) {
    double b1 = o->beta1, b2 = o->beta2;
    float lr_t = (float)(lr * sqrt(1.0 - pow(b2, (double)t)) / (1.0 - pow(b1, (double)t)));
    float decay = (float)(o->decay_mode == SV_DECAY_TORCH ? lr * o->weight_decay : o->weight_decay);
    float fb1 = (float)b1, fb2 = (float)b2, eps = (float)o->eps;
    /* 1 - b2 in double: (1 - (float)0.999) is 1.3e-5 relative off */
    float one_b1 = (float)(1.0 - b1), one_b2 = (float)(1.0 - b2);
    if (wb) adamw_loop(w, wb, 1, g, m, v, n, decay, lr_t, fb1, fb2, one_b1, one_b2, eps);
    else adamw_loop(w, NULL, 0, g, m, v, n, decay, lr_t, fb1, fb2, one_b1, one_b2, eps);
}

void sv_adamw_step(sv_adamw *o, float *w, uint16_t *wb, const float *g, double lr) {
    sv_adamw_update(o, o->t + 1, w, wb, g, o->m, o->v, o->n, lr);
    o->t++;
}

void sv_ema_init(sv_ema *e, const float *params, size_t n, double decay) {
    SV_CHECK(decay > 0 && decay < 1);
    e->n = n;
    e->decay = decay;
    e->w = sv_alloc(n * sizeof(float), "moving average of the weights");
    memcpy(e->w, params, n * sizeof(float));
}

void sv_ema_free(sv_ema *e) {
    sv_free(e->w);
    e->w = NULL;
    e->n = 0;
}

double sv_ema_decay_at(double decay, long t) {
    double warm = (1.0 + (double)t) / (10.0 + (double)t);
    return warm < decay ? warm : decay;
}

void sv_ema_update(sv_ema *e, const float *params, long t) {
    /* 1 - d in double, then float: (1 - (float)0.999) is 1.3e-5 relative off */
    const float one_d = (float)(1.0 - sv_ema_decay_at(e->decay, t));
    float *w = e->w;
#pragma omp parallel for simd
    for (size_t i = 0; i < e->n; i++) w[i] -= one_d * (w[i] - params[i]);
}

void sv_ema_swap(sv_ema *e, float *params) {
    float *w = e->w;
#pragma omp parallel for simd
    for (size_t i = 0; i < e->n; i++) {
        float t = w[i];
        w[i] = params[i];
        params[i] = t;
    }
}
