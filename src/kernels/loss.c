/* The classifier's loss and metrics (layers.h): the one log-softmax (training
 * loss, evaluation and predict all take it from sv_log_softmax_row), softmax
 * cross-entropy with label smoothing, and the Keras top-k hit. */
#include <math.h>
#include <stddef.h>

#include "shiftvit/layers.h"

double sv_log_softmax_row(double *logp, const float *logits, int K) {
    float mx = logits[0];
    for (int k = 1; k < K; k++) mx = logits[k] > mx ? logits[k] : mx;
    double s = 0.0;
    for (int k = 0; k < K; k++) s += exp((double)logits[k] - mx);
    double lse = mx + log(s);
    if (logp)
        for (int k = 0; k < K; k++) logp[k] = (double)logits[k] - lse;
    return lse;
}

void sv_softmax_xent_forward(float *losses, float *probs, const float *logits,
                             const int *labels, int N, int K, float smoothing) {
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * K;
        float *p = probs + (size_t)n * K;
        double lse = sv_log_softmax_row(NULL, l, K);
        for (int k = 0; k < K; k++) p[k] = (float)exp((double)l[k] - lse);
        if (!losses) continue;
        /* -sum_k t_k log p_k = lse - sum_k t_k l_k, since sum_k t_k = 1.
         * Without smoothing exactly the plain loss (bitwise, as before). */
        double sum_l = 0.0;
        if (smoothing != 0.f)
            for (int k = 0; k < K; k++) sum_l += l[k];
        double target_logit = smoothing == 0.f
                                  ? (double)l[labels[n]]
                                  : (1.0 - smoothing) * l[labels[n]] + smoothing * sum_l / K;
        losses[n] = (float)(lse - target_logit);
    }
}

void sv_softmax_xent_backward(float *dlogits, const float *probs,
                              const int *labels, int N, int K, float scale, float smoothing) {
    float off = smoothing / (float)K, on = 1.f - smoothing + off;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            dlogits[(size_t)n * K + k] =
                (probs[(size_t)n * K + k] - (k == labels[n] ? on : off)) * scale;
}

int sv_topk_correct(const float *logits, int K, int label, int k) {
    float own = logits[label];
    int greater = 0, tied_before = 0;
    for (int i = 0; i < K; i++) {
        if (!isfinite(logits[i])) return 0; /* a broken row is never right */
        greater += logits[i] > own;
        tied_before += i < label && logits[i] == own;
    }
    /* top-1 is the argmax, ties going to the lowest index; top-k (k > 1)
     * counts ties at the boundary in the label's favour (tf.math.in_top_k). */
    return k == 1 ? greater == 0 && tied_before == 0 : greater < k;
}
