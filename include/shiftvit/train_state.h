/* Where a training run stands (sv_train_state): what a checkpoint's /state
 * holds, shared by the trainer (train.h), checkpoints (checkpoint.h) and run
 * folders (run_folder.h) without pulling in the whole trainer. */
#ifndef SHIFTVIT_TRAIN_STATE_H
#define SHIFTVIT_TRAIN_STATE_H

#include <stdint.h>

#define SV_CHANGES_LEN 4096

/* Where a run stands; saved in every checkpoint (/state) so that a resumed
 * run continues exactly: same learning rate, data order and early stopping. */
typedef struct {
    long step;             /* optimiser updates done (drives the schedule) */
    long epoch;            /* current epoch, 0-based */
    long step_in_epoch;    /* updates done inside the current epoch */
    double best_val_top1;  /* best val top-1 so far (-1 before the first eval) */
    long best_epoch;       /* 1-based epoch of best_val_top1, 0 if none */
    long bad_epochs;       /* epochs in a row without a new best (early stopping) */
    double run_loss, run_top1, run_top5, run_count; /* running train sums of the epoch */
    uint64_t seed;
    int world_size;        /* at save */
    double wall_time;      /* seconds of training so far */
    double epoch_time;     /* seconds already spent in the current epoch (a mid-epoch
                            * checkpoint; 0 at epoch boundaries and in checkpoints
                            * older than this field): the resumed epoch's `seconds`
                            * in metrics_epochs.csv then covers the whole epoch */
    char config_changes[SV_CHANGES_LEN]; /* keys changed on resume, one line each:
                            * "step N: section.key before -> after" (checkpoint
                            * /config_changes; "" if the run never changed) */
} sv_train_state;

#endif
