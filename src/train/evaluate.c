/* Evaluation of a split, sharded over the ranks (SPEC section 4: every image
 * counts once for any world size). */
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/layers.h"
#include "shiftvit/settings.h"
#include "shiftvit/train.h"

int sv_local_batch(int global, int world) { return (global + world - 1) / world; }

int sv_eval_local_batch(const sv_config *cfg, long images, int world) {
    long shard = (images + world - 1) / world;
    int bs = sv_local_batch(cfg->eval_batch_size, world);
    if (shard < 1) shard = 1;
    return bs < shard ? bs : (int)shard;
}

void sv_tta_init(sv_tta *t, const sv_config *cfg, int n, int num_classes, int S) {
    t->flip = cfg->tta_flip;
    t->translate = cfg->tta_translate;
    int any = t->flip || t->translate;
    t->logits = any ? sv_alloc((size_t)n * num_classes * sizeof(float), "test-time augmentation logits") : NULL;
    t->images = t->translate ? sv_alloc((size_t)n * S * S * 3 * sizeof(float), "test-time augmentation images")
                             : NULL;
}

void sv_tta_free(sv_tta *t) {
    sv_free(t->logits);
    sv_free(t->images);
    t->logits = t->images = NULL;
}

/* acc = (first) or += w x the logits of x, then += w x those of its mirror
 * under flip. The weights are powers of two, so each product is exact and
 * flip alone gives 0.5 (a + b) to the bit. */
static void add_views(sv_model *m, float *x, int n, int S, int flip, float w, float *acc, int first) {
    const size_t len = (size_t)n * m->num_classes;
    const float *l = sv_model_forward(m, x, n, NULL);
    for (size_t i = 0; i < len; i++) acc[i] = first ? w * l[i] : acc[i] + w * l[i];
    if (!flip) return;
    sv_flip_images(x, n, S);
    l = sv_model_forward(m, x, n, NULL);
    sv_flip_images(x, n, S); /* the caller's images as they were */
    for (size_t i = 0; i < len; i++) acc[i] += w * l[i];
}

const float *sv_eval_logits(sv_model *m, float *x, int n, int S, const sv_tta *t) {
    if (!t || (!t->flip && !t->translate)) return sv_model_forward(m, x, n, NULL);
    float w = (t->translate ? 0.5f : 1.0f) / (t->flip ? 2 : 1);
    add_views(m, x, n, S, t->flip, w, t->logits, 1);
    for (int sign = 1; t->translate && sign >= -1; sign -= 2) {
        sv_translate_images_reflect(t->images, x, n, S, sign * t->translate);
        add_views(m, t->images, n, S, t->flip, 0.5f * w, t->logits, 0);
    }
    return t->logits;
}

sv_eval_result sv_evaluate(sv_model *m, const sv_dataset *ds, const sv_config *cfg,
                           sv_dist *d, float *x, int *labels, long *idx) {
    long start, count;
    sv_shard(ds->count, d->rank, d->world, &start, &count);
    int bs = sv_local_batch(cfg->eval_batch_size, d->world);
    if (bs > m->max_batch) bs = m->max_batch;
    int K = m->num_classes;
    double sums[3] = {0, 0, 0};
    sv_tta tta;
    sv_tta_init(&tta, cfg, bs, K, cfg->image_size);
    for (long b = 0; b < count; b += bs) {
        int n = (int)(count - b < bs ? count - b : bs);
        for (int i = 0; i < n; i++) idx[i] = start + b + i;
        sv_make_batch(x, labels, ds, idx, n, sv_batch_settings_from(cfg), 0, 0);
        const float *logits = sv_eval_logits(m, x, n, cfg->image_size, &tta);
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * K;
            /* -log softmax(l)[label] by the training loss's log-softmax,
             * summed in double (not rounded to float per image) */
            sums[0] += sv_log_softmax_row(NULL, l, K) - l[labels[i]];
            sums[1] += sv_topk_correct(l, K, labels[i], 1);
            sums[2] += sv_topk_correct(l, K, labels[i], K < 5 ? K : 5);
        }
    }
    sv_tta_free(&tta);
    double all[4] = {sums[0], sums[1], sums[2], (double)count};
    sv_allreduce_doubles(d, all, 4);
    sv_eval_result r = {0, 0, 0, (long)all[3]};
    if (all[3] > 0) {
        r.loss = all[0] / all[3];
        r.top1 = all[1] / all[3];
        r.top5 = all[2] / all[3];
    }
    return r;
}
