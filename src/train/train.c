/* The training loop: data-parallel steps, evaluation, early stopping,
 * checkpoints and metrics (SPEC sections 1 and 4; issues 3-5). */
#include "shiftvit/train.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/metrics.h"
#include "shiftvit/optim.h"
#include "shiftvit/run_folder.h"
#include "shiftvit/settings.h"
#include "shiftvit/text.h"
#include "shiftvit/trace.h"
#include "trainer.h"

/* ---- the loop: steps, end of epoch, finish ---- */

/* The gradient of one step: the global batch is split over world size x A
 * micro-batches (sv_shard, as over ranks); rank r runs micro-batches r A ..
 * r A + A - 1, one per micro-step, so P ranks x A micro-steps see the
 * micro-batches of P x A ranks x 1 (every draw is keyed by global sample).
 * sv_step_micro does forward, loss, backward, and on the last micro-step the
 * bucketed collective; sums are the loss, top-1 and top-5 sums, the sample
 * count and the stop-signal flag, summed over ranks. */
static void trainer_gradient(trainer *T, long epoch, double sums[5]) {
    const sv_config *cfg = T->cfg;
    buffers *B = &T->B;
    int A = cfg->accumulation_steps;
    long g0 = T->st.step_in_epoch * cfg->batch_size;
    long gcount = B->train.count - g0 < cfg->batch_size ? B->train.count - g0 : cfg->batch_size;
    for (int a = 0; a < A; a++) {
        long s0, n;
        sv_shard(gcount, T->d->rank * A + a, T->d->world * A, &s0, &n);
        for (long i = 0; i < n; i++) B->idx[i] = B->perm[g0 + s0 + i];
        if (n > 0) sv_make_batch(B->x, B->labels, &B->train, B->idx, (int)n, sv_batch_settings_from(cfg), epoch, 1);
        sv_train_rng rng = {cfg->seed, epoch, B->idx};
        sums[4] = tr_stop_requested() ? 1.0 : 0.0;
        sv_step_micro(&T->step, a, B->x, B->labels, (int)n, gcount, &rng, sums);
    }
}

/* The reduced gradient is the same on every rank (or, with ZeRO, every rank
 * votes on its shard), so every rank takes the same decision, before the
 * update touches the weights. Returns 0 when the step may go on. */
static int trainer_check_finite(trainer *T, long epoch, double loss_sum) {
    sv_dist *d = T->d;
    int finite = sv_step_gradient_finite(&T->step);
    if (isfinite(loss_sum) && finite) return 0;
    if (T->rank0) {
        /* Stage 1: no rank holds the whole reduced gradient to name a tensor in. */
        int t = d->zero ? -1 : sv_model_first_nonfinite(&T->m, T->m.grads, NULL);
        fprintf(stderr, "shiftvit: non-finite %s at step %ld (epoch %ld)%s%s; stopping before the update.\n",
                isfinite(loss_sum) ? "gradient" : "loss", T->st.step + 1, epoch + 1,
                t >= 0 ? ": first non-finite tensor " : "", t >= 0 ? T->m.tensors[t].name : "");
        char q[SV_QUOTED_LEN(SV_PATH_LEN + 16)];
        if (T->cc.saved_step >= 0)
            fprintf(stderr, "shiftvit: the newest checkpoint, %s (step %ld), is intact; lower optim.lr_max and resume from it.\n",
                    tr_quote_in(T->out, "last.h5", q, sizeof q), T->cc.saved_step);
        else
            fprintf(stderr, "shiftvit: no checkpoint was written yet; lower optim.lr_max and start again.\n");
    }
    T->stop = STOP_FAILED;
    T->status = SV_EXIT_NONFINITE;
    return -1;
}

/* Metrics row and progress line of the step just taken (rank 0). */
static void trainer_log_step(trainer *T, long epoch, const double sums[5], double lr, double dt) {
    sv_train_state *st = &T->st;
    st->run_loss += sums[0];
    st->run_top1 += sums[1];
    st->run_top5 += sums[2];
    st->run_count += sums[3];
    T->t_steps += dt;
    T->imgs_epoch += sums[3];
    if (!T->rank0) return;
    sv_step_row row = {st->step, epoch + 1, lr, sums[0] / sums[3], sums[1] / sums[3], sums[2] / sums[3], sums[3] / dt};
    sv_metrics_step(T->mt, &row);
    long done = st->step_in_epoch + 1;
    int last = done == T->steps_per_epoch;
    if (T->tty || last || done % T->cfg->log_every == 0)
        tr_progress(T->tty, done, T->steps_per_epoch, sv_now() - T->t_epoch, 1e3 * dt, st->run_loss / st->run_count,
                 st->run_top1 / st->run_count, st->run_top5 / st->run_count, last);
}

/* One optimiser step: gradient, finiteness check, update, logging. Returns
 * 0 to go on, -1 when the run must stop (T->stop says why). */
static int trainer_step(trainer *T, long epoch) {
    sv_dist *d = T->d;
    double t0 = sv_now(), w0 = d->wait_s, sums[5];
    float lr = (float)sv_schedule_lr(&T->sched, T->st.step);
    d->step = T->st.step + 1; /* named by a collective timeout and the trace */
    trainer_gradient(T, epoch, sums);
    if (trainer_check_finite(T, epoch, sums[0]) != 0) return -1;
    sv_step_update(&T->step, lr);
    T->st.step++;
    if (T->opts->check_replicas && d->world > 1) {
        if (!tr_replicas_identical(&T->m, d)) {
            if (T->rank0) fprintf(stderr, "shiftvit: replicas differ after step %ld\n", T->st.step);
            T->stop = STOP_FAILED;
            T->status = SV_EXIT_RUNTIME;
            return -1;
        }
        T->replica_checks++;
    }
    double dt = sv_now() - t0;
    tr_straggler_step(&T->strag, dt, d->wait_s - w0);
    trainer_log_step(T, epoch, sums, lr, dt);
    long done = T->st.step_in_epoch + 1;
    if (done % T->cfg->log_every == 0 || done == T->steps_per_epoch)
        tr_straggler_report(&T->strag, d, T->mt, T->st.step);
    if (sums[4] > 0) { /* a stop signal reached some rank: stop after this step */
        T->st.step_in_epoch++;
        T->stop = STOP_SIGNAL;
        return -1;
    }
    return 0;
}

/* A stop in the middle of an epoch (max_steps, signal): checkpoint to resume
 * exactly here. */
static void trainer_save_mid_epoch(trainer *T, long epoch) {
    sv_train_state *st = &T->st;
    st->wall_time = sv_now() - T->t_run0;
    st->epoch_time = sv_now() - T->t_epoch;
    st->world_size = T->d->world;
    if (tr_save_checkpoint(&T->cc, "last.h5") && T->rank0) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN) * 3];
        if (T->stop == STOP_SIGNAL)
            printf("\nStopped by signal at step %ld (epoch %ld). Resume with: %s\n", st->step, epoch + 1,
                   tr_resume_command(T->out, T->d->world, q, sizeof q));
        else
            printf("Reached train.max_steps = %ld; checkpoint %s\n", T->cfg->max_steps,
                   tr_quote_in(T->out, "last.h5", q, sizeof q));
    }
}

/* The steps of one epoch from st.step_in_epoch on. Returns 1 when the epoch
 * ran to its end (or stopped with max_steps at it), 0 when the run stops in
 * its middle. */
static int trainer_run_epoch(trainer *T, long epoch) {
    sv_train_state *st = &T->st;
    const sv_config *cfg = T->cfg;
    /* A resumed epoch counts the time spent in it before the checkpoint. */
    T->t_epoch = sv_now() - st->epoch_time;
    T->imgs_epoch = T->t_steps = 0;
    st->epoch_time = 0;
    sv_epoch_permutation(T->B.perm, T->B.train.count, cfg->seed, epoch);
    if (T->rank0 && !(cfg->max_steps > 0 && st->step >= cfg->max_steps))
        printf("Epoch %ld/%d\n", epoch + 1, cfg->epochs);
    for (; st->step_in_epoch < T->steps_per_epoch; st->step_in_epoch++) {
        if (cfg->max_steps > 0 && st->step >= cfg->max_steps) {
            T->stop = STOP_MAX_STEPS;
            break;
        }
        if (trainer_step(T, epoch) != 0) break;
    }
    if (T->stop == STOP_FAILED) return 0;
    if ((T->stop == STOP_MAX_STEPS || T->stop == STOP_SIGNAL) && st->step_in_epoch < T->steps_per_epoch) {
        trainer_save_mid_epoch(T, epoch);
        return 0;
    }
    return 1;
}

/* Validation (every val_every-th epoch, the last, and at max_steps; never
 * without a validation split), then early stopping's count. Returns 1 when
 * the epoch improved the best val top-1. */
static int trainer_validate(trainer *T, long finished, sv_eval_result *v) {
    const sv_config *cfg = T->cfg;
    sv_train_state *st = &T->st;
    int validate = cfg->val_size > 0 && (finished % cfg->val_every == 0 || finished == cfg->epochs ||
                                         (cfg->max_steps > 0 && st->step >= cfg->max_steps));
    sv_eval_result none = {NAN, NAN, NAN, 0};
    *v = none;
    if (!validate) return 0;
    double te = sv_now();
    *v = tr_evaluate(&T->m, &T->ema, &T->B.val, cfg, T->d, T->B.x, T->B.labels, T->B.idx);
    sv_trace_add(T->trace, SV_TR_EVAL, te, sv_now(), st->step, -1, "val");
    if (v->top1 > st->best_val_top1) {
        st->best_val_top1 = v->top1;
        st->best_epoch = finished;
        st->bad_epochs = 0;
        return 1;
    }
    st->bad_epochs++; /* counts validations without improvement */
    return 0;
}

/* The epoch line and the metrics row (rank 0). */
static void trainer_log_epoch(trainer *T, long finished, const sv_eval_result *v, int improved) {
    if (!T->rank0) return;
    const sv_train_state *st = &T->st;
    double secs = sv_now() - T->t_epoch, lr_now = sv_schedule_lr(&T->sched, st->step);
    double tl = st->run_count ? st->run_loss / st->run_count : 0, t1 = st->run_count ? st->run_top1 / st->run_count : 0,
           t5 = st->run_count ? st->run_top5 / st->run_count : 0;
    char val_text[96], slowest[SV_HOST_LEN + 96];
    snprintf(val_text, sizeof val_text, "val not run (%s)", T->cfg->val_size ? "train.val_every" : "data.val_size = 0");
    tr_straggler_epoch_note(&T->strag, T->d, slowest, sizeof slowest);
    if (!isnan(v->loss))
        snprintf(val_text, sizeof val_text, "%s loss %.4f top1 %.4f top5 %.4f", tr_val_name(&T->ema), v->loss,
                 v->top1, v->top5);
    printf("epoch %ld/%d: train loss %.4f top1 %.4f top5 %.4f | %s | %.1f images/s | lr %.3g | %.1f s%s%s\n", finished,
           T->cfg->epochs, tl, t1, t5, val_text, T->t_steps > 0 ? T->imgs_epoch / T->t_steps : 0.0, lr_now, secs,
           improved ? " | new best" : "", slowest);
    fflush(stdout);
    sv_epoch_row row = {finished, tl, t1, t5, v->loss, v->top1, v->top5, lr_now, secs};
    tr_rank0_metrics(T->d, T->mt, &row, 0);
}

/* End of an epoch: validation, early stopping, metrics, and the checkpoints,
 * whose state describes the start of the next epoch. */
static void trainer_end_epoch(trainer *T, long epoch) {
    const sv_config *cfg = T->cfg;
    sv_train_state *st = &T->st;
    long finished = epoch + 1;
    sv_eval_result v;
    int improved = trainer_validate(T, finished, &v);
    trainer_log_epoch(T, finished, &v, improved);
    int early = cfg->patience > 0 && st->bad_epochs >= cfg->patience;
    if (early) T->stop = STOP_EARLY;
    st->epoch = finished;
    st->step_in_epoch = 0;
    st->run_loss = st->run_top1 = st->run_top5 = st->run_count = 0;
    st->wall_time = sv_now() - T->t_run0;
    st->world_size = T->d->world;
    if (improved) tr_save_checkpoint(&T->cc, "best.h5");
    if (finished % cfg->checkpoint_every == 0 || early || finished == cfg->epochs || T->stop == STOP_MAX_STEPS) {
        char name[64];
        snprintf(name, sizeof name, "epoch_%04ld.h5", finished);
        if (tr_save_checkpoint(&T->cc, name)) tr_rotate_checkpoints(&T->cc, finished);
    }
    tr_save_checkpoint(&T->cc, "last.h5");
    if (early && T->rank0)
        printf("Early stopping: val top-1 has not improved for %d %s (best %.4f at epoch %ld)\n", cfg->patience,
               cfg->val_every > 1 ? "validations" : "epochs", st->best_val_top1, st->best_epoch);
    if (T->stop == STOP_SIGNAL && T->rank0) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN) * 3];
        printf("Stopped by signal at the end of epoch %ld. Resume with: %s\n", finished,
               tr_resume_command(T->out, T->d->world, q, sizeof q));
    }
}

/* The test split (unless the run failed or a signal stopped it), the status
 * of checkpoint failures, the trace. */
static void trainer_finish(trainer *T, char *err) {
    sv_dist *d = T->d;
    tr_rank0_metrics(d, T->mt, NULL, 0);
    if (T->opts->check_replicas && T->rank0 && T->status == SV_EXIT_OK && d->world > 1)
        printf("Replica check: weights bitwise identical on all %d ranks after each of %ld updates\n", d->world,
               T->replica_checks);
    if (T->stop != STOP_SIGNAL && T->stop != STOP_FAILED) {
        double te = sv_now();
        sv_eval_result t = tr_evaluate(&T->m, &T->ema, &T->B.test, T->cfg, d, T->B.x, T->B.labels, T->B.idx);
        sv_trace_add(T->trace, SV_TR_EVAL, te, sv_now(), T->st.step, -1, "test");
        if (T->rank0) {
            printf("Evaluated %ld test images on %d rank(s)\n", t.count, d->world);
            if (T->ema.w) printf("Weights evaluated: ema (train.ema_decay = %g)\n", T->cfg->ema_decay);
            printf("TEST loss=%.4f top1=%.4f top5=%.4f\n", t.loss, t.top1, t.top5);
            char q[SV_QUOTED_LEN(SV_PATH_LEN)];
            printf("Run directory: %s (%.1f min)\n", sv_shell_quote(T->out, q, sizeof q),
                   (sv_now() - T->t_run0) / 60.0);
        }
    }
    /* Training goes on when a checkpoint cannot be written (the weights in
     * memory are fine and the previous files stay intact), but the run must
     * not look clean. */
    if (T->cc.failures > 0 && T->status == SV_EXIT_OK) {
        if (T->rank0)
            fprintf(stderr, "shiftvit: %d checkpoint(s) could not be written (see above); the newest one on disk is from step %ld\n",
                    T->cc.failures, T->cc.saved_step);
        T->status = SV_EXIT_CHECKPOINT_FAILED;
    }
    if (!T->trace) return;
    if (sv_trace_write(T->trace, d, T->opts->trace, err) != 0) {
        if (T->rank0) fprintf(stderr, "shiftvit: %s\n", err);
        if (T->status == SV_EXIT_OK) T->status = SV_EXIT_RUNTIME;
    } else if (T->rank0) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN)];
        printf("Trace: %s (open in ui.perfetto.dev; summary: scripts/trace_summary.py)\n",
               sv_shell_quote(T->opts->trace, q, sizeof q));
    }
}

static void trainer_free(trainer *T) {
    if (T->rank0 && T->mt) tr_rank0_metrics(T->d, T->mt, NULL, 1);
    if (T->trace) free(T->trace->ev); /* only when sv_trace_write was not reached */
    if (T->have_step) sv_step_free(&T->step);
    tr_straggler_free(&T->strag);
    if (T->have_model) {
        sv_adamw_free(&T->opt);
        sv_ema_free(&T->ema);
        sv_model_free(&T->m);
    }
    tr_free_buffers(&T->B);
    if (T->lock_fd >= 0) {
        if (T->created_out && T->status != SV_EXIT_OK) tr_remove_if_only_lock(T->out);
        close(T->lock_fd);
    }
}

int sv_train(const sv_config *cfg, const sv_train_opts *opts, sv_dist *d) {
    char err[SV_ERR_LEN] = "";
    trainer *T = calloc(1, sizeof *T);
    if (!T) {
        fprintf(stderr, "shiftvit: out of memory\n");
        return SV_EXIT_RUNTIME;
    }
    T->cfg = cfg;
    T->opts = opts;
    T->d = d;
    T->rank0 = d->rank == 0;
    T->lock_fd = -1;
    T->status = SV_EXIT_OK;
    T->cc.saved_step = -1;
    tr_abort_ctx ab = {&T->cc, &T->trace, opts->trace, opts->resume, T->out, d};
    T->abort_ctx = ab;
    d->on_abort = tr_on_abort;
    d->on_abort_ctx = &T->abort_ctx;
    if (trainer_setup(T, err) == 0) {
        if (trainer_already_done(T)) T->stop = STOP_EARLY;
        for (; T->st.epoch < cfg->epochs && T->stop == STOP_NONE; T->st.epoch++) {
            long epoch = T->st.epoch;
            if (!trainer_run_epoch(T, epoch)) break;
            trainer_end_epoch(T, epoch);
            T->st.epoch = epoch; /* trainer_end_epoch moved it on; so does the loop */
            if (T->stop != STOP_NONE) {
                T->st.epoch++;
                break;
            }
        }
        trainer_finish(T, err);
    }
    int status = T->status;
    trainer_free(T);
    d->on_abort = NULL; /* main's last collective may still time out */
    free(T);
    return status;
}
