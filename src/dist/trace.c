/* The step timeline of --trace: events in a buffer allocated once, gathered to
 * rank 0 and written as Chrome trace-event JSON (trace.h). */
#include "shiftvit/trace.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/atomic_file.h"
#include "shiftvit/common.h"
#include "shiftvit/text.h"

static const char *const kind_names[SV_TR_KINDS] = {
    "forward", "backward", "backward", "allreduce", "optimizer", "checkpoint", "eval", "reduce_scatter", "allgather",
    "wait",
};

/* Events on a bucket's track (tid 1 + bucket). */
static int bucket_kind(int kind) {
    return kind == SV_TR_ALLREDUCE || kind == SV_TR_REDUCE_SCATTER || kind == SV_TR_ALLGATHER;
}

/* Events of one step; the others (checkpoint, eval, wait) are rare and kept
 * in the buffer's reserve. */
static int step_kind(int kind) {
    return kind != SV_TR_CHECKPOINT && kind != SV_TR_EVAL && kind != SV_TR_WAIT;
}

#define TRACE_ENV "SHIFTVIT_TRACE_EVENTS"
#define RESERVE_MAX 4096

/* SHIFTVIT_TRACE_EVENTS (a debug switch: a short buffer that a test can
 * fill), else `capacity`; 0 with a message for a bad value. */
static size_t trace_capacity(size_t capacity, char *err) {
    const char *env = getenv(TRACE_ENV);
    if (!env || !*env) return capacity;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(env, &end, 10);
    if (errno || end == env || *end || v < 16 || v > (1LL << 30)) {
        sv_fail(err, "%s = '%s': expected a number of events in [16, 2^30]", TRACE_ENV, env);
        return 0;
    }
    return (size_t)v;
}

int sv_trace_check_path(sv_dist *d, const char *path, char *err) {
    int ok = 1;
    if (d->rank == 0) {
        sv_atomic_file a;
        char why[SV_ERR_LEN];
        if (sv_atomic_begin(&a, path, why) == 0) {
            sv_atomic_abort(&a);
        } else {
            sv_fail(err, "--trace %s: cannot create it: %s", path, why);
            ok = 0;
        }
    }
    return sv_dist_bcast_int(d, ok) ? 0 : -1;
}

int sv_trace_open(sv_trace *t, sv_dist *d, size_t capacity, char *err) {
    memset(t, 0, sizeof *t);
    capacity = trace_capacity(capacity, err);
    if (!sv_dist_all_ok(d, capacity > 0)) return -1;
    t->ev = calloc(capacity, sizeof *t->ev);
    if (!sv_dist_all_ok(d, t->ev != NULL)) {
        free(t->ev);
        t->ev = NULL;
        return sv_fail(err, "--trace: cannot allocate %zu events", capacity);
    }
    /* calloc'd pages are touched now, not inside the timed steps. */
    memset(t->ev, 0, capacity * sizeof *t->ev);
    t->cap = capacity;
    t->reserve = capacity / 4 < RESERVE_MAX ? capacity / 4 : RESERVE_MAX;
    t->first = LONG_MIN;
    t->last = LONG_MAX;
    sv_dist_barrier(d);
    t->origin = sv_now();
    return 0;
}

void sv_trace_set_window(sv_trace *t, long first, long last) {
    t->first = first;
    t->last = last;
}

void sv_trace_add(sv_trace *t, sv_trace_kind kind, double t0, double t1, long step, int bucket,
                  const char *label) {
    if (!t || !t->ev) return;
    int steps = step_kind(kind);
    if (steps && (step < t->first || step > t->last)) return;
    if (t->n == t->cap || (steps && t->n >= t->cap - t->reserve)) {
        if (t->dropped++ == 0) t->dropped_step = step;
        return;
    }
    sv_trace_event *e = &t->ev[t->n++];
    e->t0 = t0;
    e->t1 = t1;
    e->step = step;
    e->kind = kind;
    e->bucket = bucket;
    snprintf(e->label, sizeof e->label, "%s", label ? label : "");
}

void sv_trace_add_buckets(sv_trace *t, const sv_dist *d, long step, sv_trace_kind kind) {
    if (!t || !t->ev || d->world == 1) return;
    /* the gradient's buckets in bf16 say so (the parameters' all-gather is fp32) */
    const char *label = d->bf16 && kind != SV_TR_ALLGATHER ? "bf16" : NULL;
    for (int b = 0; b < d->nbuckets; b++) sv_trace_add(t, kind, d->bucket_t0[b], d->bucket_t1[b], step, b, label);
}

static void write_event(FILE *f, const sv_trace_event *e, int rank, double origin, int first) {
    fprintf(f, "%s\n{\"name\":\"%s%s%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"args\":{",
            first ? "" : ",", kind_names[e->kind], e->kind == SV_TR_BACKWARD_PART ? " " : "",
            e->kind == SV_TR_BACKWARD_PART ? e->label : "", rank, bucket_kind(e->kind) ? 1 + e->bucket : 0,
            1e6 * (e->t0 - origin), 1e6 * (e->t1 - e->t0));
    fprintf(f, "\"step\":%ld", e->step);
    if (e->bucket >= 0) fprintf(f, ",\"bucket\":%d", e->bucket);
    if (e->label[0] && e->kind != SV_TR_BACKWARD_PART) {
        fputs(",\"label\":", f);
        sv_json_string(f, e->label);
    }
    fputs("}}", f);
}

/* Sums the (dropped events, first dropped step) pairs of n ranks: the events
 * dropped, the earliest step that lost any (0 for none) and the ranks that
 * lost some. */
typedef struct {
    long events, from;
    int ranks;
} dropped_sum;

static dropped_sum sum_dropped(const long *dropped, int n) {
    dropped_sum s = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        if (!dropped[2 * i]) continue;
        s.events += dropped[2 * i];
        s.ranks++;
        if (!s.from || dropped[2 * i + 1] < s.from) s.from = dropped[2 * i + 1];
    }
    return s;
}

/* The events of ranks r0 .. r0 + nr - 1 (rank 0: every rank's, gathered; a
 * rank at a collective timeout: its own), each rank's times relative to its
 * own origin, as one JSON document; counts, origins and the (dropped events,
 * first dropped step) pairs of dropped are indexed from r0. */
static int write_file(const char *path, const sv_trace *t, const sv_dist *d, int r0, int nr, const sv_trace_event *all,
                      const size_t *counts, const long *dropped, const double *origins, char *err) {
    sv_atomic_file a;
    char why[SV_ERR_LEN];
    if (sv_atomic_begin(&a, path, why) != 0) return sv_fail(err, "--trace %s: cannot create it: %s", path, why);
    FILE *f = a.f;
    dropped_sum lost = sum_dropped(dropped, nr);
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"world_size\":%d,\"buffer_events\":%zu,"
               "\"dropped_events\":%ld,\"dropped_from_step\":%ld,\"first_step\":%ld,\"last_step\":%ld},\n\"traceEvents\":[",
            d->world, t->cap, lost.events, lost.from, t->first == LONG_MIN ? 0 : t->first, t->last == LONG_MAX ? 0 : t->last);
    int first = 1;
    size_t k = 0;
    for (int r = r0; r < r0 + nr; r++) {
        char name[SV_HOST_LEN + 32];
        snprintf(name, sizeof name, "rank %d on %s", r, d->hosts[r]);
        fprintf(f, "%s\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":", first ? "" : ",", r);
        sv_json_string(f, name);
        fputs("}}", f);
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"compute\"}}", r);
        for (int b = 0; b < d->nbuckets && d->world > 1; b++)
            fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"bucket %d\"}}",
                    r, 1 + b, b);
        first = 0;
        for (size_t i = 0; i < counts[r - r0] / sizeof *all; i++, k++) write_event(f, &all[k], r, origins[r - r0], 0);
    }
    fputs("\n]}\n", f);
    if (sv_atomic_commit(&a, why) != 0) return sv_fail(err, "--trace %s: writing failed: %s", path, why);
    return 0;
}

/* write_file of every rank's events as sv_dist_local_work's job. */
typedef struct {
    const char *path;
    const sv_trace *t;
    const sv_dist *d;
    const sv_trace_event *all;
    const size_t *counts;
    const long *dropped;
    const double *origins;
    char *err;
} trace_job;

static int write_gathered(void *p) {
    trace_job *j = p;
    return write_file(j->path, j->t, j->d, 0, j->d->world, j->all, j->counts, j->dropped, j->origins, j->err);
}

/* Rank 0: says how many events were dropped, from which step and on which ranks. */
static void warn_dropped(const sv_trace *t, const sv_dist *d, const char *path, const long *dropped) {
    dropped_sum lost = sum_dropped(dropped, d->world);
    if (!lost.events) return;
    fprintf(stderr,
            "shiftvit: warning: --trace %s: the event buffer (%zu events per rank) filled at step %ld; %ld later step "
            "event(s) on %d rank(s) were dropped (checkpoints, evaluations and waits are kept). Trace a window of "
            "steps with train.trace_steps = FIRST-LAST.\n",
            path, t->cap, lost.from, lost.events, lost.ranks);
}

int sv_trace_write(sv_trace *t, sv_dist *d, const char *path, char *err) {
    size_t mine = t->n * sizeof *t->ev;
    long lost[2] = {t->dropped, t->dropped_step};
    size_t *counts = NULL;
    long *dropped = NULL;
    double *origins = NULL;
    sv_trace_event *all = NULL;
    if (d->rank == 0) {
        counts = sv_alloc((size_t)d->world * sizeof *counts, "trace counts");
        dropped = sv_alloc(2 * (size_t)d->world * sizeof *dropped, "trace counts");
        origins = sv_alloc((size_t)d->world * sizeof *origins, "trace origins");
    }
    sv_dist_gather(d, &mine, sizeof mine, counts);
    sv_dist_gather(d, lost, sizeof lost, dropped);
    sv_dist_gather(d, &t->origin, sizeof t->origin, origins);
    size_t total = 0;
    for (int r = 0; d->rank == 0 && r < d->world; r++) total += counts[r];
    if (d->rank == 0) all = sv_alloc(total ? total : 1, "trace events");
    sv_dist_gatherv(d, t->ev, mine, all, counts);
    int rc = 0;
    trace_job j = {path, t, d, all, counts, dropped, origins, err};
    /* The others wait for this write in their next collective. */
    if (d->rank == 0) rc = sv_dist_local_work(d, SV_LOCAL_TRACE, write_gathered, &j);
    if (d->rank == 0 && rc == 0) warn_dropped(t, d, path, dropped);
    sv_free(all);
    sv_free(counts);
    sv_free(dropped);
    sv_free(origins);
    free(t->ev);
    t->ev = NULL;
    return rc;
}

int sv_trace_write_rank(const sv_trace *t, const sv_dist *d, const char *path, char *err) {
    if (!t || !t->ev) return sv_fail(err, "--trace: no events to write");
    size_t bytes = t->n * sizeof *t->ev;
    long lost[2] = {t->dropped, t->dropped_step};
    return write_file(path, t, d, d->rank, 1, t->ev, &bytes, lost, &t->origin, err);
}
