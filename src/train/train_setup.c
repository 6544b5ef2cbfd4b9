/* The trainer's set-up (train.c runs the loop): data, model, optimizer and
 * schedule, run folder, the state to start from, buffers and outputs, each
 * step agreed on by every rank (SPEC sections 1 and 4; issues 3-5, 26). */
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

void tr_free_buffers(buffers *b) {
    sv_dataset_free(&b->train);
    sv_dataset_free(&b->val);
    sv_dataset_free(&b->test);
    sv_free(b->x);
    sv_free(b->labels); sv_free(b->perm); sv_free(b->idx);
}

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

/* "best val top-1 0.8958 at epoch 62" for the lines that report a run's
 * state, or `none` while no epoch has validated (or none can: val_size 0). */
static const char *best_val_text(const sv_train_state *st, const char *none, char *buf, size_t n) {
    if (st->best_epoch > 0)
        snprintf(buf, n, "best val top-1 %.4f at epoch %ld", st->best_val_top1, st->best_epoch);
    else
        snprintf(buf, n, "%s", none);
    return buf;
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
            char q[SV_QUOTED_LEN(SV_PATH_LEN)], best[64];
            printf("Resumed from %s: epoch %ld, step %ld (%ld in epoch), %s\n",
                   sv_shell_quote(resume, q, sizeof q), st->epoch + 1, st->step, st->step_in_epoch,
                   best_val_text(st, "no validation yet", best, sizeof best));
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

int trainer_already_done(trainer *T) {
    if (!resumed_run_ended(T)) return 0;
    const sv_train_state *st = &T->st;
    const sv_config *cfg = T->cfg;
    char q[SV_QUOTED_LEN(SV_PATH_LEN)], best[64];
    best_val_text(st, "no validation", best, sizeof best);
    if (T->rank0)
        printf("Nothing more to train: the run in %s ended after epoch %ld (%s; %s); evaluating its final weights\n",
               sv_shell_quote(T->opts->resume, q, sizeof q), st->epoch,
               st->epoch >= cfg->epochs ? "all train.epochs done" : "early stopping", best);
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

int trainer_setup(trainer *T, char *err) {
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
