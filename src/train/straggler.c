/* The straggler report (issue 24, section 3; train_internal.h): every rank
 * times each optimizer step and the part of it spent waiting for collectives
 * (sv_dist.wait_s: the gradient all-reduce's completion, the metrics
 * all-reduce, broadcasts, barriers); compute is the rest (batch making,
 * forward, backward, optimizer). Every train.log_every steps and at each
 * epoch's last step rank 0 gathers the per-step means since the previous
 * report (one gather of 2 doubles per rank), writes one row per rank to the
 * metrics, and keeps per-rank sums for the epoch line's "slowest:" note.
 *
 * Why compute and not the step time: in data-parallel training every rank's
 * step takes as long as the slowest one's (they meet in the all-reduce), so
 * the step time cannot tell the ranks apart; the slow rank is the one whose
 * compute is long while the others wait for it (horovod/horovod#867). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/common.h"
#include "train_internal.h"

/* Slowest compute above the median by more than this: named on the epoch line. */
#define STRAGGLER_RATIO 1.10

void tr_straggler_init(tr_straggler *s, const sv_dist *d) {
    memset(s, 0, sizeof *s);
    if (d->rank != 0) return;
    size_t P = (size_t)d->world;
    s->all = sv_alloc(2 * P * sizeof(double), "straggler report");
    s->epoch_sum = sv_alloc(2 * P * sizeof(double), "straggler report");
    s->sorted = sv_alloc(P * sizeof(double), "straggler report");
    memset(s->epoch_sum, 0, 2 * P * sizeof(double));
}

void tr_straggler_free(tr_straggler *s) {
    sv_free(s->all);
    sv_free(s->epoch_sum);
    sv_free(s->sorted);
    memset(s, 0, sizeof *s);
}

void tr_straggler_step(tr_straggler *s, double step_s, double wait_s) {
    s->compute_s += step_s - wait_s;
    s->wait_s += wait_s;
    s->steps++;
}

void tr_straggler_report(tr_straggler *s, sv_dist *d, sv_metrics *mt, long step) {
    if (s->steps == 0) return; /* the same on every rank: they count the same steps */
    double mine[2] = {1e3 * s->compute_s / s->steps, 1e3 * s->wait_s / s->steps};
    sv_dist_gather(d, mine, sizeof mine, s->all);
    if (d->rank == 0) {
        for (int r = 0; r < d->world; r++) {
            sv_rank_row row = {step, r, d->hosts[r], s->all[2 * r], s->all[2 * r + 1]};
            if (mt) sv_metrics_rank(mt, &row);
            s->epoch_sum[2 * r] += s->all[2 * r] * s->steps;
            s->epoch_sum[2 * r + 1] += s->all[2 * r + 1] * s->steps;
        }
        s->epoch_steps += s->steps;
    }
    s->compute_s = s->wait_s = 0;
    s->steps = 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (the mean of the middle two for even n), sorting scratch. */
static double median(const double *v, int n, double *scratch) {
    memcpy(scratch, v, (size_t)n * sizeof *scratch);
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_double);
    return n % 2 ? scratch[n / 2] : 0.5 * (scratch[n / 2 - 1] + scratch[n / 2]);
}

void tr_straggler_epoch_note(tr_straggler *s, const sv_dist *d, char *buf, size_t n) {
    buf[0] = '\0';
    if (d->rank != 0) return;
    int P = d->world;
    if (P > 1 && s->epoch_steps > 0) {
        int slow = 0;
        for (int r = 0; r < P; r++) {
            s->all[r] = s->epoch_sum[2 * r] / s->epoch_steps; /* per-step compute, ms */
            if (s->all[r] > s->all[slow]) slow = r;
        }
        double med = median(s->all, P, s->sorted);
        if (s->all[slow] > STRAGGLER_RATIO * med)
            snprintf(buf, n, " | slowest: rank %d on %s, compute %.1f ms per step against a median of %.1f", slow,
                     d->hosts[slow], s->all[slow], med);
    }
    memset(s->epoch_sum, 0, 2 * (size_t)P * sizeof(double));
    s->epoch_steps = 0;
}
