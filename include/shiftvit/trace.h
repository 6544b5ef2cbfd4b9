/* A step timeline (issue 13): `--trace FILE` on train and bench records what
 * each rank does and when, and rank 0 writes one Chrome trace-event JSON file,
 *   {"traceEvents": [{"name": "forward", "ph": "X", "ts": us, "dur": us,
 *                     "pid": rank, "tid": 0 | 1, "args": {...}}, ...]}
 * that opens in Perfetto (ui.perfetto.dev) or chrome://tracing.
 *   pid = rank (named "rank R on HOST"); tid 0 = the rank's main thread
 *   (forward, backward and its per-block parts, optimizer, checkpoint, eval,
 *   and "wait" for what another rank does alone: rank 0 writing a checkpoint),
 *   tid 1 + b = gradient bucket b: one event per step (with
 *   train.zero_stage = 1: reduce_scatter, then allgather of the parameters), from the
 *   bucket's MPI_Iallreduce to the moment the rank saw it complete (with
 *   train.allreduce_dtype = bf16: args.label "bf16", the bucket's whole bf16
 *   exchange). With train.accumulation_steps = A > 1 each micro-step has its
 *   forward and backward, args.label "micro k/A"; the buckets belong to the
 *   last micro-step's backward. The all-reduce is progressed by the main
 *   thread inside MPI calls; the buckets have tracks of their own because they
 *   overlap the backward pass and each other, and Perfetto's JSON importer
 *   cannot draw complete events that overlap partially on one track (its FAQ;
 *   issue 26 section 3).
 * Times: microseconds since a barrier at sv_trace_open (so ranks on different
 * hosts share an origin to within the barrier's skew).
 * Memory: `capacity` events allocated once at open (SHIFTVIT_TRACE_EVENTS
 * overrides it: a debug switch for tests). The last quarter (at most 4096) is
 * kept for checkpoints, waits and evaluations, so that those and the end of
 * the run stay in the file when the steps fill the rest; step events beyond
 * it are dropped and counted, and the file (otherData.dropped_events,
 * dropped_from_step) and rank 0's warning at the write say how many and from
 * which step. sv_trace_set_window keeps only a window of steps
 * (train.trace_steps).
 * scripts/trace_summary.py prints per-rank totals and the hidden all-reduce. */
#ifndef SHIFTVIT_TRACE_H
#define SHIFTVIT_TRACE_H

#include <stddef.h>

#include "shiftvit/dist.h"

typedef enum {
    SV_TR_FORWARD, SV_TR_BACKWARD, SV_TR_BACKWARD_PART, SV_TR_ALLREDUCE, SV_TR_OPTIMIZER,
    SV_TR_CHECKPOINT, SV_TR_EVAL, SV_TR_REDUCE_SCATTER, SV_TR_ALLGATHER, SV_TR_WAIT, SV_TR_KINDS
} sv_trace_kind;

typedef struct {
    double t0, t1;  /* sv_now() seconds */
    long step;      /* optimiser step (1-based) the event belongs to; 0: none */
    int kind;       /* sv_trace_kind */
    int bucket;     /* all-reduce bucket, else -1 */
    char label[32]; /* backward part: the block ("stage2/block3"); checkpoint: file; wait: what for */
} sv_trace_event;

typedef struct {
    sv_trace_event *ev;
    size_t n, cap;
    size_t reserve;     /* the last `reserve` events: checkpoints, waits, evaluations only */
    long first, last;   /* step events outside [first, last] are not recorded */
    long dropped;       /* events lost to a full buffer */
    long dropped_step;  /* step of the first of them (0: none) */
    double origin;  /* sv_now() after the opening barrier */
} sv_trace;

/* Collective: 0 when rank 0 can create `path`, else -1 with a message on
 * rank 0. The commands call it before any work, so that a bad --trace is
 * bad input (exit 1), not found at the end of a run. */
int sv_trace_check_path(sv_dist *d, const char *path, char *err);
/* Collective. Allocates room for `capacity` events, or SHIFTVIT_TRACE_EVENTS
 * when set (an integer >= 16); -1 with a message on failure or a bad value.
 * Records every step until sv_trace_set_window. */
int sv_trace_open(sv_trace *t, sv_dist *d, size_t capacity, char *err);
/* Only step events (forward, backward, buckets, optimizer) of steps first..last
 * are recorded from now on; checkpoints, waits and evaluations always. */
void sv_trace_set_window(sv_trace *t, long first, long last);
/* Records one event (no-op when t is NULL). Never allocates. */
void sv_trace_add(sv_trace *t, sv_trace_kind kind, double t0, double t1, long step, int bucket,
                  const char *label);
/* The buckets of the collective just finished (kind: SV_TR_ALLREDUCE, or with
 * ZeRO stage 1 SV_TR_REDUCE_SCATTER and SV_TR_ALLGATHER), bucket b on tid 1 + b. */
void sv_trace_add_buckets(sv_trace *t, const sv_dist *d, long step, sv_trace_kind kind);
/* Collective: gathers every rank's events to rank 0, which writes `path`
 * (atomically: atomic_file.h) and warns on stderr when events were dropped
 * (how many, from which step, on which ranks). Returns -1 with a message on
 * rank 0 when the file cannot be written. Frees the events. */
int sv_trace_write(sv_trace *t, sv_dist *d, const char *path, char *err);
/* Not collective: this rank's events so far, alone, in the same format (pid =
 * this rank), written to `path` atomically; for a job that a collective
 * timeout ends (issue 26), where no gather is possible. -1 with a message
 * (err) when the file cannot be written. Keeps the events. */
int sv_trace_write_rank(const sv_trace *t, const sv_dist *d, const char *path, char *err);

#endif
