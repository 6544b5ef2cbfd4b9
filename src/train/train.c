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
#include "train_internal.h"

#define BUCKET_BYTES (4u << 20) /* MACHINE_NOTES.md: 4 MiB buckets are the fast size */
#define TRACE_EVENTS (1u << 18) /* --trace: room for ~10k steps of the full model */

/* ---- the loop ---- */

typedef struct {
    sv_dataset train, val, test;
    float *x;
    int *labels;
    long *perm, *idx;
} buffers;

static void free_buffers(buffers *b) {
    sv_dataset_free(&b->train);
    sv_dataset_free(&b->val);
    sv_dataset_free(&b->test);
    sv_free(b->x);
    sv_free(b->labels); sv_free(b->perm); sv_free(b->idx);
}

/* ---- the trainer: set-up, steps, end of epoch, finish ---- */

typedef enum { STOP_NONE, STOP_MAX_STEPS, STOP_SIGNAL, STOP_EARLY, STOP_FAILED } stop_reason;

typedef struct {
    const sv_config *cfg;
    const sv_train_opts *opts;
    sv_dist *d;
    int rank0, tty;
    char dir[SV_PATH_LEN], out[SV_PATH_LEN]; /* data and run folders */
    int lock_fd;                              /* rank 0's lock on the run folder */
    int created_out;                          /* rank 0 made the run folder in this run */
    buffers B;
    int lb, maxb;                             /* training and largest per-rank batch */
    sv_model m;
    int have_model;
    sv_adamw opt;
    sv_ema ema;                               /* train.ema_decay: the average (w NULL when off) */
    sv_schedule sched;
    long total, warmup, steps_per_epoch;
    sv_train_state st;
    sv_metrics *mt;
    sv_trace trace_buf, *trace;
    sv_step step;                             /* the training step's buffers */
    int have_step;
    ckpt_ctx cc;
    tr_abort_ctx abort_ctx;                   /* what a collective timeout's last words need */
    tr_straggler strag;                       /* per-rank compute and wait times */
    long replica_checks;
    double t_run0, t_epoch, t_steps, imgs_epoch; /* run and epoch clocks, this epoch's step time and images */
    stop_reason stop;
    int status;                               /* sv_exit_status */
} trainer;

/* Ends set-up on every rank alike: ok is rank 0's verdict (bcast) or every
 * rank's (all), the message is rank 0's. */
static int setup_failed(trainer *T, int ok, int all, const char *what, int status, const char *err) {
    ok = all ? sv_dist_all_ok(T->d, ok) : sv_dist_bcast_int(T->d, ok);
    if (ok) return 0;
    if (T->rank0) fprintf(stderr, "shiftvit: %s%s\n", what, err);
    T->status = status;
    return 1;
}

/* Data: every rank loads and validates the same files. */
static int trainer_open_data(trainer *T, char *err) {
    const sv_config *cfg = T->cfg;
    int ok = sv_find_data_dir(T->opts->data_dir, cfg->data_dir, T->dir, err) == 0 &&
             sv_cifar_load_splits(T->dir, cfg->train_size, cfg->val_size, cfg->test_size, &T->B.train,
                                  &T->B.val, &T->B.test, err) == 0;
    if (!ok && !err[0]) snprintf(err, SV_ERR_LEN, "data could not be loaded on some rank");
    return setup_failed(T, ok, 1, "", SV_EXIT_BAD_INPUT, err) ? -1 : 0;
}

/* The run folder, proven writable and locked before the first step (after
 * the model: a batch too large for memory creates no folder). */
static int trainer_open_folder(trainer *T, char *err) {
    tr_resolve_out_dir(T->out, T->cfg, T->opts, T->d);
    int ok = 1;
    if (T->rank0 && (tr_prepare_out_dir(T->out, &T->created_out, err) != 0 ||
                     (T->lock_fd = sv_run_folder_lock(T->out, err)) < 0 ||
                     sv_run_folder_claim(T->out, T->opts->resume, T->opts->overwrite, err) != 0))
        ok = 0;
    /* flock again on the held lock: 0 only where the lock is real. */
    if (ok && T->rank0) sv_run_folder_remove_stale_temps(T->out, flock(T->lock_fd, LOCK_EX | LOCK_NB) == 0);
    return setup_failed(T, ok, 0, "", SV_EXIT_BAD_INPUT, err) ? -1 : 0;
}

/* Model, optimizer (ZeRO stage 1: the buckets and their shards first, then
 * AdamW state for the shards only) and schedule. */
static int trainer_build_model(trainer *T, char *err) {
    const sv_config *cfg = T->cfg;
    sv_dist *d = T->d;
    /* With accumulation the activations are sized for the micro-batch, and
     * evaluation runs in batches of that size too (its sums do not depend on
     * the batch), so memory falls with the micro-batch. */
    int A = cfg->accumulation_steps;
    T->lb = sv_local_batch(cfg->batch_size, d->world * A);
    long eval_images = T->B.val.count > T->B.test.count ? T->B.val.count : T->B.test.count;
    int eb = sv_eval_local_batch(cfg, eval_images, d->world);
    if (A > 1 && eb > T->lb) eb = T->lb;
    T->maxb = T->lb > eb ? T->lb : eb;
    int ok = sv_model_create(&T->m, sv_model_settings_from(cfg), T->maxb, err) == 0;
    /* what rank 0 prints when only another rank failed (that rank's message is its own) */
    if (ok) snprintf(err, SV_ERR_LEN, "model: another rank could not create its model (see its message)");
    T->have_model = ok;
    if (setup_failed(T, ok, 1, "", SV_EXIT_BAD_INPUT, err)) return -1;
    if (T->rank0 && T->m.bf16) printf("Precision: %s\n", sv_bf16_describe(T->m.bf16));
    sv_model_init_weights(&T->m, cfg->seed);
    sv_optimizer_setup(d, &T->m, &T->opt, cfg, BUCKET_BYTES);
    if (T->rank0 && cfg->zero_stage == 1)
        printf("ZeRO stage 1: %s\n", d->zero ? "each rank holds the AdamW state of 1/P of the parameters"
                                              : "nothing to shard with one rank (stage 0)");
    if (T->rank0 && cfg->allreduce_dtype == 1)
        printf("Gradient exchange in bf16: %s\n", d->bf16 ? "half the bytes of fp32, sums formed in fp32"
                                                          : "nothing to exchange with one rank (the gradient stays fp32)");
    if (T->rank0 && A > 1)
        printf("Gradient accumulation: %d micro-steps per optimizer step, micro-batches of at most %d per rank\n",
               A, T->lb);
    T->total = sv_config_total_steps(cfg);
    T->warmup = sv_config_warmup_steps(cfg);
    if (sv_schedule_init(&T->sched, cfg->lr_start, cfg->lr_max, T->warmup, T->total, err) != 0) {
        if (T->rank0) fprintf(stderr, "shiftvit: %s\n", err);
        T->status = SV_EXIT_BAD_INPUT;
        return -1;
    }
    T->steps_per_epoch = (T->B.train.count + cfg->batch_size - 1) / cfg->batch_size;
    return 0;
}

/* The state to start from: a fresh run, or the checkpoint of --resume. Then
 * proof that every replica starts from the same weights. */
static int trainer_load_state(trainer *T, char *err) {
    sv_train_state *st = &T->st;
    sv_dist *d = T->d;
    memset(st, 0, sizeof *st);
    st->best_val_top1 = -1;
    st->seed = T->cfg->seed;
    st->world_size = d->world;
    const char *resume = T->opts->resume;
    if (resume) {
        int ok = tr_load_checkpoint(resume, &T->m, &T->opt, st, d, err) == 0;
        if (setup_failed(T, ok, 1, "cannot resume: ", SV_EXIT_BAD_INPUT,
                         err[0] ? err : "a rank failed to read the checkpoint"))
            return -1;
        if (T->rank0) {
            char q[SV_QUOTED_LEN(SV_PATH_LEN)], best[64] = "no validation yet";
            if (st->best_epoch > 0)
                snprintf(best, sizeof best, "best val top-1 %.4f (epoch %ld)", st->best_val_top1, st->best_epoch);
            printf("Resumed from %s: epoch %ld, step %ld (%ld in epoch), %s\n",
                   sv_shell_quote(resume, q, sizeof q), st->epoch + 1, st->step, st->step_in_epoch, best);
        }
        if (T->opts->changes) tr_record_changes(st, T->cfg, T->opts->changes, T->rank0);
    }
    if (d->world > 1) {
        double h = 0;
        for (size_t i = 0; i < T->m.num_params; i += 97) h += T->m.params[i] * (double)((i % 13) + 1);
        uint64_t bits;
        memcpy(&bits, &h, sizeof bits);
        if (!sv_dist_same_checksum(d, bits)) {
            if (T->rank0) fprintf(stderr, "shiftvit: ranks hold different initial weights; broadcasting rank 0's\n");
            sv_dist_bcast_floats(d, T->m.params, T->m.num_params);
            sv_model_params_changed(&T->m);
        }
    }
    int ok = tr_ema_setup(&T->ema, &T->m, T->cfg, resume, T->rank0, err) == 0;
    return setup_failed(T, ok, 1, "cannot resume: ", SV_EXIT_BAD_INPUT, err[0] ? err : "a rank failed to read /ema") ? -1 : 0;
}

/* Batch buffers, sized once (no allocation inside the step), and the trace. */
static int trainer_alloc_buffers(trainer *T, char *err) {
    int maxb = T->maxb, S = T->cfg->image_size;
    buffers *B = &T->B;
    B->x = sv_alloc((size_t)maxb * S * S * 3 * sizeof(float), "input batch");
    B->labels = sv_alloc((size_t)maxb * sizeof(int), "labels");
    B->idx = sv_alloc((size_t)maxb * sizeof(long), "indices");
    B->perm = sv_alloc((size_t)B->train.count * sizeof(long), "permutation");
    if (T->opts->trace && sv_trace_open(&T->trace_buf, T->d, TRACE_EVENTS, err) != 0) {
        if (T->rank0) fprintf(stderr, "shiftvit: %s\n", err);
        T->status = SV_EXIT_RUNTIME;
        return -1;
    }
    if (T->opts->trace) {
        long first, last; /* train.trace_steps, valid (sv_config_validate) */
        T->trace = &T->trace_buf;
        if (sv_config_step_window(T->cfg->trace_steps, &first, &last) == 0) sv_trace_set_window(T->trace, first, last);
    }
    sv_step_init(&T->step, &T->m, &T->opt, T->d, T->cfg->label_smoothing, T->trace);
    sv_step_set_accumulation(&T->step, T->cfg->accumulation_steps);
    tr_straggler_init(&T->strag, T->d);
    T->step.inject_nan_step = T->opts->inject_nan_step;
    T->step.ema = T->ema.w ? &T->ema : NULL;
    T->have_step = 1;
    return 0;
}

/* A resumed run that already ended (all epochs, or early stopping) has
 * nothing more to train: a requeued job (jobs/train.sbatch resumes whenever
 * last.h5 exists) must not train on past its end. */
static int resumed_run_ended(const trainer *T) {
    const sv_train_state *st = &T->st;
    const sv_config *cfg = T->cfg;
    return T->opts->resume && st->step_in_epoch == 0 &&
           (st->epoch >= cfg->epochs || (cfg->patience > 0 && st->bad_epochs >= cfg->patience));
}

static int trainer_already_done(trainer *T) {
    if (!resumed_run_ended(T)) return 0;
    const sv_train_state *st = &T->st;
    const sv_config *cfg = T->cfg;
    char q[SV_QUOTED_LEN(SV_PATH_LEN)];
    if (T->rank0)
        printf("Nothing more to train: the run in %s ended after epoch %ld (%s; best val top-1 %.4f at epoch %ld); evaluating its final weights\n",
               sv_shell_quote(T->opts->resume, q, sizeof q), st->epoch,
               st->epoch >= cfg->epochs ? "all train.epochs done" : "early stopping", st->best_val_top1,
               st->best_epoch);
    return 1;
}

/* Rank 0's side of the run folder as one piece of local work (copies and
 * fsyncs on a slow file system: sv_dist_local_work): rewind or adopt on
 * resume, config.ini, the metrics logs. Resuming a run that ended trains
 * nothing, so it leaves the folder's later checkpoints, metrics rows and
 * config.ini as they are. */
typedef struct {
    trainer *T;
    int ended;
    const char *prefix; /* what the message starts with */
    char *err;
} outputs_job;

static int open_outputs_rank0(void *p) {
    outputs_job *j = p;
    trainer *T = j->T;
    const sv_train_opts *o = T->opts;
    char ini[SV_PATH_LEN + 16];
    snprintf(ini, sizeof ini, "%s/config.ini", T->out);
    if (o->resume && ((!j->ended && sv_run_folder_rewind(T->out, o->resume, &T->st, j->err) != 0) ||
                      sv_run_folder_adopt(T->out, o->resume, &T->st, j->err) != 0))
        return -1;
    if (!(j->ended && access(ini, F_OK) == 0) && tr_write_config_ini(T->out, T->cfg, j->err) != 0) return -1;
    j->prefix = "metrics: ";
    T->mt = sv_metrics_open(T->out, o->resume != NULL, j->ended ? LONG_MAX : T->st.step,
                            j->ended ? LONG_MAX : T->st.epoch, j->err);
    return T->mt ? 0 : -1;
}

/* Rank 0's side of the run folder (above); then the checkpoint context and
 * the start banner. */
static int trainer_open_outputs(trainer *T, char *err) {
    const sv_config *cfg = T->cfg;
    const sv_train_opts *o = T->opts;
    int ended = resumed_run_ended(T);
    outputs_job j = {T, ended, "", err};
    int ok = !T->rank0 || sv_dist_local_work(T->d, SV_LOCAL_RUN_FOLDER, open_outputs_rank0, &j) == 0;
    if (setup_failed(T, ok, 0, j.prefix, SV_EXIT_BAD_INPUT, err)) return -1;
    /* On resume the folder's last.h5 is this state (rewound or adopted above,
     * or the resumed file itself) only if it exists. */
    char last_path[SV_PATH_LEN + 16];
    snprintf(last_path, sizeof last_path, "%s/last.h5", T->out);
    ckpt_ctx cc = {&T->m, &T->opt, &T->st, cfg, T->out, T->d,
                   o->resume && access(last_path, F_OK) == 0 ? T->st.step : -1, 0, T->trace,
                   T->ema.w ? &T->ema : NULL};
    T->cc = cc;
    if (T->rank0) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN)], qn[SV_QUOTED_LEN(sizeof cfg->name)];
        printf("Training %s: %zu parameters, %ld train / %ld val / %ld test images from %s\n",
               sv_shell_quote(cfg->name[0] ? cfg->name : "model", qn, sizeof qn), T->m.num_params,
               T->B.train.count, T->B.val.count, T->B.test.count, sv_shell_quote(T->dir, q, sizeof q));
        printf("World size %d, global batch %d (%d per rank), %ld steps per epoch, %ld total (warmup %ld); output in %s\n",
               T->d->world, cfg->batch_size, T->lb, T->steps_per_epoch, T->total, T->warmup,
               sv_shell_quote(T->out, q, sizeof q));
        fflush(stdout);
    }
    return 0;
}

static int trainer_setup(trainer *T, char *err) {
    tr_install_signal_handlers(); /* early: a preemption warning during start-up waits for the first step */
    if (tr_check_batch_split(T->cfg, T->d->world, T->rank0) != 0) {
        T->status = SV_EXIT_BAD_INPUT;
        return -1;
    }
    if (trainer_open_data(T, err) || trainer_build_model(T, err) || trainer_open_folder(T, err) || trainer_load_state(T, err) ||
        trainer_alloc_buffers(T, err) || trainer_open_outputs(T, err))
        return -1;
    T->tty = T->rank0 && tr_progress_on_terminal(T->opts->progress);
    T->t_run0 = sv_now() - T->st.wall_time;
    return 0;
}

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

/* Validation (every val_every-th epoch, the last, and at max_steps), then
 * early stopping's count. Returns 1 when the epoch improved the best val top-1. */
static int trainer_validate(trainer *T, long finished, sv_eval_result *v) {
    const sv_config *cfg = T->cfg;
    sv_train_state *st = &T->st;
    int validate = finished % cfg->val_every == 0 || finished == cfg->epochs ||
                   (cfg->max_steps > 0 && st->step >= cfg->max_steps);
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
    char val_text[96] = "val not run (train.val_every)", slowest[SV_HOST_LEN + 96];
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
    free_buffers(&T->B);
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
