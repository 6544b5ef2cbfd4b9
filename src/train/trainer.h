/* The trainer's state, shared by its set-up (train_setup.c) and its loop
 * (train.c). Internal to src/train/. */
#ifndef SHIFTVIT_TRAINER_H
#define SHIFTVIT_TRAINER_H

#include "shiftvit/data.h"
#include "shiftvit/dist.h"
#include "shiftvit/train.h"
#include "train_internal.h"

#define BUCKET_BYTES (4u << 20) /* MACHINE_NOTES.md: 4 MiB buckets are the fast size */
#define TRACE_EVENTS (1u << 18) /* --trace: room for ~10k steps of the full model */

typedef struct {
    sv_dataset train, val, test;
    float *x;
    int *labels;
    long *perm, *idx;
} buffers;

/* Frees the datasets and the batch buffers (train_setup.c). */
void tr_free_buffers(buffers *b);

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

/* Set-up on every rank (train_setup.c): signal handlers, the batch split,
 * data, model and optimizer, run folder, the state to start from (fresh or
 * --resume), batch buffers and outputs. 0, or -1 with T->status set and the
 * message printed (rank 0) or in err. */
int trainer_setup(trainer *T, char *err);

/* A resumed run whose checkpoint is already at its end (or stopped early):
 * says so on rank 0 and returns 1. */
int trainer_already_done(trainer *T);

#endif
