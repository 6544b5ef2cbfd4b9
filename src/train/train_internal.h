/* Internal to the trainer (src/train*.c): the run folder and checkpoints,
 * the progress line, and the gradient-ready callbacks. Not part of the
 * library's API (include/shiftvit/). */
#ifndef SHIFTVIT_TRAIN_INTERNAL_H
#define SHIFTVIT_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/metrics.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/trace.h"
#include "shiftvit/train.h"

/* ---- train_outputs.c ---- */

/* What a checkpoint write needs; saved_step and failures are kept up to date. */
typedef struct {
    sv_model *m;
    sv_adamw *opt;
    sv_train_state *st;
    const sv_config *cfg;
    const char *dir;
    sv_dist *d;
    long saved_step; /* step of the newest checkpoint written, -1 if none */
    int failures;    /* checkpoints that could not be written */
    sv_trace *trace; /* --trace, or NULL */
    const sv_ema *ema; /* train.ema_decay > 0: the average saved as /ema; else NULL */
} ckpt_ctx;

/* What tr_on_abort needs of the trainer. */
typedef struct {
    const ckpt_ctx *cc;
    sv_trace *const *trace;  /* the trainer's --trace buffer pointer (NULL: none) */
    const char *trace_path;  /* --trace FILE */
    const char *resume;      /* --resume CKPT, or NULL */
    const char *out;         /* the run folder */
    const sv_dist *d;
} tr_abort_ctx;

/* SHIFTVIT_INJECT_NAN_STEP (tr_ready_inject). */
typedef struct {
    sv_dist *d;
    float *poison; /* gradient element to set to NaN, NULL once done */
    size_t offset; /* its tensor's offset */
} inject_ctx;

/* --trace (tr_ready_traced): the backward pass timed per block. */
typedef struct {
    sv_grad_ready_fn inner;
    void *inner_ctx;
    sv_trace *trace;
    const sv_model *m;
    long step;
    double t_part;     /* start of the part being timed */
    double t_last;     /* last callback */
    char part[32];     /* its block, "" before the first callback */
} traced_ready_ctx;

/* Creates the run folder and proves it writable (-1 with a message);
 * *created tells whether it did not exist before. */
int tr_prepare_out_dir(const char *dir, int *created, char *err);
/* Removes dir and its run lock when the lock is all it holds: what a run
 * that failed during set-up leaves in a folder it created. */
void tr_remove_if_only_lock(const char *dir);
/* dir/config.ini, the resolved config, written atomically (-1 with a message). */
int tr_write_config_ini(const char *dir, const sv_config *cfg, char *err);
/* --out, else output.dir, else results/runs/<config name>-<rank 0's timestamp>. Collective. */
void tr_resolve_out_dir(char *out, const sv_config *cfg, const sv_train_opts *o, sv_dist *d);
/* Rank 0 writes dir/name (atomically; ZeRO stage 1: the moments gathered
 * first); every rank learns whether it worked (1) or not (0). Collective. */
int tr_save_checkpoint(ckpt_ctx *c, const char *name);
/* Keeps the newest output.keep_last epoch_NNNN.h5 (rank 0). */
void tr_rotate_checkpoints(ckpt_ctx *c, long epoch_done);
/* dir/name as one shell word, in q (n bytes). */
const char *tr_quote_in(const char *dir, const char *name, char *q, size_t n);
/* The command that continues the run in dir, ready to paste into a shell. */
const char *tr_resume_command(const char *dir, int world, char *q, size_t n);
/* sv_dist.on_abort of the trainer (ctx: tr_abort_ctx): this rank's trace so
 * far as FILE.rankR.json beside --trace FILE, and on the rank that timed out
 * (mine) the checkpoint to resume from and the command; all said in hint. */
void tr_on_abort(void *ctx, int mine, char *hint, size_t n);
/* Rank 0's metrics I/O as local work (sv_dist_local_work: an epoch row
 * flushes metrics.h5, close may wait for a reader): sv_metrics_epoch of row,
 * else sv_metrics_close when close, else sv_metrics_flush. Others: nothing. */
void tr_rank0_metrics(sv_dist *d, sv_metrics *mt, const sv_epoch_row *row, int close);
/* --resume-with-changes: logs the changed keys and records them in st. */
void tr_record_changes(sv_train_state *st, const sv_config *cfg, const char *changes, int rank0);
/* 1 when the progress line should be redrawn in place (a terminal). */
int tr_progress_on_terminal(sv_progress_mode mode);
/* The Keras-style progress line. */
void tr_progress(int tty, long done, long total, double elapsed, double ms_step, double loss, double top1,
                 double top5, int final);
/* sv_checkpoint_load, and with ZeRO stage 1 this rank's shards of the moments. */
int tr_load_checkpoint(const char *path, sv_model *m, sv_adamw *opt, sv_train_state *st, const sv_dist *d,
                       char *err);

/* ---- train_ema.c ---- */

/* train.ema_decay > 0: allocates the average of the weights (set-up, not in
 * the step) and starts it at m's weights, or on resume at the checkpoint's
 * /ema (a checkpoint without one, e.g. a run that turned the key on with
 * --resume-with-changes, starts it at the loaded weights and says so).
 * Every rank keeps the whole average (see train_ema.c). Returns 0, or -1
 * with a message when /ema cannot be read. e->w stays NULL when off. */
int tr_ema_setup(sv_ema *e, const sv_model *m, const sv_config *cfg, const char *resume, int rank0, char *err);

/* sv_evaluate of ds with m's weights, or with the average when e->w is set:
 * the average is swapped into m->params for the evaluation and back after it
 * (exact; the bf16 weight copy is marked for refreshing both times). */
sv_eval_result tr_evaluate(sv_model *m, sv_ema *e, const sv_dataset *ds, const sv_config *cfg, sv_dist *d,
                           float *x, int *labels, long *idx);

/* "val" or "val (ema)": what the epoch line calls the validation. */
const char *tr_val_name(const sv_ema *e);

/* ---- train_hooks.c ---- */

/* 0 when train.batch_size covers world x train.accumulation_steps
 * micro-batches of at least one sample; else -1 after rank 0 names the keys
 * and values on stderr. */
int tr_check_batch_split(const sv_config *cfg, int world, int rank0);
/* 1 if every one of n floats is finite. */
int tr_all_finite(const float *p, size_t n);
/* 1 if every rank holds bitwise the same weights (a checksum compared). Collective. */
int tr_replicas_identical(const sv_model *m, sv_dist *d);
/* sv_grad_ready_fn: plants the NaN of inject_ctx, then starts buckets. */
void tr_ready_inject(void *ctx, size_t offset);
/* sv_grad_ready_fn: times the backward pass per block around ctx->inner. */
void tr_ready_traced(void *ctx, size_t offset);
/* Records the block being timed when the backward pass ends. */
void tr_traced_flush(traced_ready_ctx *c);
/* SIGINT, SIGTERM and SIGUSR1 ask for a stop at the next step boundary;
 * tr_stop_requested says whether one came (async-signal-safe flag). */
void tr_install_signal_handlers(void);
int tr_stop_requested(void);
/* Loss (the training objective, smoothed when label_smoothing > 0), top-1 and
 * top-5 sums of a batch of n logits rows (n x K); also fills probs (n x K) and
 * losses (n). */
void tr_batch_metrics(const float *logits, float *probs, float *losses, const int *labels, int n, int K,
                      float smoothing, double *loss, double *top1, double *top5);

/* ---- straggler.c: the straggler report (issue 24, section 3) ---- */

typedef struct {
    double compute_s, wait_s; /* this rank, since the last report */
    long steps;               /* steps since the last report (the same on every rank) */
    double *all;              /* rank 0: 2 x world, gathered per-step means (compute, wait), ms */
    double *epoch_sum;        /* rank 0: 2 x world, this epoch's per-rank sums, ms */
    long epoch_steps;         /* rank 0: steps in epoch_sum */
    double *sorted;           /* rank 0: world, scratch for the median */
} tr_straggler;

/* Allocates rank 0's arrays (world size), once before the first step. */
void tr_straggler_init(tr_straggler *s, const sv_dist *d);
void tr_straggler_free(tr_straggler *s);
/* One step of this rank: its wall time and the part of it spent waiting for
 * collectives (both seconds). No allocation, no communication. */
void tr_straggler_step(tr_straggler *s, double step_s, double wait_s);
/* Collective (every rank at the same step): rank 0 gathers each rank's mean
 * compute and wait per step since the last report and writes them as rows of
 * step `step` to mt (metrics_ranks.csv, /ranks in metrics.h5; mt may be NULL);
 * nothing when no step was taken since. */
void tr_straggler_report(tr_straggler *s, sv_dist *d, sv_metrics *mt, long step);
/* Rank 0: " | slowest: rank R on HOST, compute X ms per step against a median
 * of Y" when the slowest rank's mean compute per step over the epoch's reports
 * is more than 10% above the median over ranks, else ""; starts the next
 * epoch's sums. Other ranks: "". */
void tr_straggler_epoch_note(tr_straggler *s, const sv_dist *d, char *buf, size_t n);

#endif
