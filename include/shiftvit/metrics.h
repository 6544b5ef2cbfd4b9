/* Metrics logs written by rank 0 (issues 3 and 4): <out>/metrics_steps.csv
 * (step,epoch,lr,loss,top1,top5,images_per_s), <out>/metrics_epochs.csv
 * (epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,seconds),
 * <out>/metrics_ranks.csv (step,rank,compute_ms,wait_ms,host: the straggler
 * report of issue 24, one row per rank every train.log_every steps and at each
 * epoch end) and <out>/metrics.h5 with extendable 1-D datasets /steps/<column>,
 * /epochs/<column> and /ranks/<column> of the same names (float64; the host
 * names are in the CSV only), flushed every epoch. */
#ifndef SHIFTVIT_METRICS_H
#define SHIFTVIT_METRICS_H

typedef struct sv_metrics sv_metrics;

typedef struct {
    long step, epoch;
    double lr, loss, top1, top5, images_per_s;
} sv_step_row;

typedef struct {
    long epoch;
    double train_loss, train_top1, train_top5, val_loss, val_top1, val_top5, lr, seconds;
} sv_epoch_row;

/* The straggler report's row: rank `rank` on `host`, per optimizer step over
 * the steps up to `step` since the previous row: milliseconds of compute (the
 * step's wall time less its waits) and of waiting for collectives. */
typedef struct {
    long step;
    int rank;
    const char *host;
    double compute_ms, wait_ms;
} sv_rank_row;

/* Opens (append = 1: keeps existing rows, for a resumed run; rows with
 * step/epoch beyond `keep_step`/`keep_epoch` are dropped so a resumed run does
 * not duplicate them) or creates the logs in dir. NULL with a message on error. */
sv_metrics *sv_metrics_open(const char *dir, int append, long keep_step,
                            long keep_epoch, char *err);
void sv_metrics_step(sv_metrics *mt, const sv_step_row *r);
void sv_metrics_epoch(sv_metrics *mt, const sv_epoch_row *r);
void sv_metrics_rank(sv_metrics *mt, const sv_rank_row *r);
/* Flushes CSV and HDF5 to disk. */
void sv_metrics_flush(sv_metrics *mt);
void sv_metrics_close(sv_metrics *mt);

#endif
