/* The moving average of the weights in the trainer (train.ema_decay, issue
 * 22): set-up and resume, and evaluation with the averaged weights
 * (train_internal.h). The update itself is optim.h's sv_ema_update, run by
 * the training step after the optimizer (train_step.c).
 *
 * Every rank keeps the whole average, ZeRO stage 1 included: after the
 * update (stage 0) or the parameters' all-gather (stage 1) every rank holds
 * all the new weights, so each can update the average with no message; and
 * validation and test are sharded over the ranks by image, with every rank
 * running the whole model, so every rank needs all the averaged weights at
 * each evaluation anyway. A sharded average would save n (1 - 1/P) floats per
 * rank but cost an all-gather before every evaluation and checkpoint. */
#include <stdio.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "train_internal.h"

int tr_ema_setup(sv_ema *e, const sv_model *m, const sv_config *cfg, const char *resume, int rank0, char *err) {
    e->w = NULL;
    e->n = 0;
    if (!(cfg->ema_decay > 0)) return 0;
    sv_ema_init(e, m->params, m->num_params, cfg->ema_decay);
    int has = resume ? sv_checkpoint_has_ema(resume, err) : 0;
    if (has < 0) return -1;
    if (has && sv_checkpoint_load_ema(resume, m, e->w, err) != 0) return -1;
    if (rank0)
        printf("EMA of the weights: decay %g (warm-up min(decay, (1 + t) / (10 + t))), %s; "
               "validation, test and best.h5 use it\n", cfg->ema_decay,
               has ? "resumed from the checkpoint's /ema"
                   : resume ? "started at the resumed weights (the checkpoint has no /ema)" : "started at the initial weights");
    return 0;
}

sv_eval_result tr_evaluate(sv_model *m, sv_ema *e, const sv_dataset *ds, const sv_config *cfg, sv_dist *d,
                           float *x, int *labels, long *idx) {
    if (!e->w) return sv_evaluate(m, ds, cfg, d, x, labels, idx);
    sv_ema_swap(e, m->params);
    sv_model_params_changed(m);
    sv_eval_result r = sv_evaluate(m, ds, cfg, d, x, labels, idx);
    sv_ema_swap(e, m->params); /* both as they were */
    sv_model_params_changed(m);
    return r;
}

const char *tr_val_name(const sv_ema *e) { return e->w ? "val (ema)" : "val"; }
