/* The communicator (dist.h): MPI start and end, ranks and hosts, sharding,
 * the named collectives and the collective timeout. The gradient exchange
 * (bucketed all-reduce, ZeRO ring) is exchange.c; these two files are the only
 * ones that call MPI. */
#include "shiftvit/dist.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/common.h"
#include "dist_internal.h"

enum { TAG_PING = 1, TAG_PONG = 2, TAG_ABORT = 3, TAG_DONE = 4 };
/* How long a rank that timed out waits for the others to answer its probe. */
#define PROBE_SECONDS 5.0
/* How long it then waits for the ranks that answered to write their part
 * (their trace) before MPI_Abort ends them. */
#define ABORT_SECONDS 30

int sv_dist_parse_timeout(const char *text, const char *what, double *out, char *err) {
    char *end = NULL;
    /* Decimal only, as the config parser: no blanks, no hexadecimal. */
    int plain = text[0] != '\0' && strspn(text, "0123456789.eE+-") == strlen(text);
    double v = plain ? strtod(text, &end) : NAN;
    if (!plain || end == text || *end != '\0' || !isfinite(v) || v < 0)
        return sv_fail(err, "%s = '%s': expected a number of seconds >= 0 (0 = no timeout)", what, text);
    *out = v;
    return 0;
}

int sv_dist_init(int *argc, char ***argv, sv_dist *d, char *err) {
    memset(d, 0, sizeof *d);
    d->node = d->probe = d->ring = MPI_COMM_NULL;
    d->step = -1;
    d->timeout = SV_DEFAULT_COLLECTIVE_TIMEOUT;
    /* Open MPI's non-blocking all-reduce (libnbc) picks a binomial reduce +
     * broadcast for every in-place call: 2 log2(P) x the bytes over the slowest
     * link, against 2 (P-1)/P for a ring (measured: 2x slower at P = 2,
     * results/scaling/vcluster-*.md). Ask for the ring unless the user chose. */
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return sv_fail(err, "MPI_Init_thread failed");
    d->comm = MPI_COMM_WORLD;
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->world);
    if (provided < MPI_THREAD_FUNNELED)
        return sv_fail(err, "the MPI library provides thread level %d, below MPI_THREAD_FUNNELED (%d)",
                       provided, MPI_THREAD_FUNNELED);
    MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &d->node);
    MPI_Comm_rank(d->node, &d->local_rank);
    MPI_Comm_size(d->node, &d->local_size);
    MPI_Comm_dup(d->comm, &d->probe);
    d->hosts = sv_alloc((size_t)d->world * SV_HOST_LEN, "host names");
    char me[SV_HOST_LEN] = "?";
    gethostname(me, sizeof me);
    me[sizeof me - 1] = '\0';
    MPI_Allgather(me, SV_HOST_LEN, MPI_CHAR, d->hosts, SV_HOST_LEN, MPI_CHAR, d->comm);
    const char *env = getenv("SHIFTVIT_COLLECTIVE_TIMEOUT");
    if (env && *env) {
        d->timeout_from_env = 1;
        if (sv_dist_parse_timeout(env, "SHIFTVIT_COLLECTIVE_TIMEOUT", &d->timeout, err) != 0) return -2;
    }
    return 0;
}

void sv_dist_finalize(sv_dist *d) {
    if (d->exchange_free) d->exchange_free(d);
    sv_free(d->hosts);
    d->hosts = NULL;
    int fin = 0, init = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) {
        if (d->probe != MPI_COMM_NULL) MPI_Comm_free(&d->probe);
        if (d->ring != MPI_COMM_NULL) MPI_Comm_free(&d->ring);
        if (d->node != MPI_COMM_NULL) MPI_Comm_free(&d->node);
        MPI_Finalize();
    }
}

void sv_shard(long total, int rank, int world, long *start, long *count) {
    long base = total / world, extra = total % world;
    *count = base + (rank < extra ? 1 : 0);
    *start = (long)rank * base + (rank < extra ? rank : extra);
}

/* ------------------------------------------------------------ the timeout */

/* What a probe's answer says: 0 = waiting in a collective, else the kind of
 * local work (sv_local_work) the rank is busy with. The answers are sent from
 * this table: a buffer of a freed MPI_Isend must never change. */
static const int g_states[SV_LOCAL_KINDS] = {0, 1, 2, 3, 4};
static const char *const g_state_names[SV_LOCAL_KINDS] = {
    "waiting in a collective", "writing a checkpoint", "writing the metrics", "writing the trace",
    "preparing the run folder",
};

static void answer_abort(sv_dist *d);

/* Answers the liveness probes of ranks that timed out: a rank inside a
 * collective (state 0), or one busy with local work (sv_dist_local_work). */
static void answer_probes(sv_dist *d, int state) {
    for (;;) {
        int flag, v;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, d->probe, &flag, &st);
        if (!flag) break;
        MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, TAG_PING, d->probe, MPI_STATUS_IGNORE);
        MPI_Request r;
        MPI_Isend(&g_states[state], 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, d->probe, &r);
        MPI_Request_free(&r);
    }
    answer_abort(d);
}

/* Sends a ping to every other rank and collects answers for PROBE_SECONDS;
 * answered[r] = 1 + the state rank r answered (sv_local_work), 0 when it did
 * not answer (this rank: 1). */
static int probe_ranks(sv_dist *d, char *answered) {
    memset(answered, 0, (size_t)d->world);
    answered[d->rank] = 1;
    int n = 1;
    /* Late answers to an earlier probe must not count for this one. */
    for (int flag = 1; flag;) {
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_PONG, d->probe, &flag, &st);
        int v;
        if (flag) MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, d->probe, MPI_STATUS_IGNORE);
    }
    for (int r = 0; r < d->world; r++) {
        if (r == d->rank) continue;
        MPI_Request q;
        MPI_Isend(&d->rank, 1, MPI_INT, r, TAG_PING, d->probe, &q);
        MPI_Request_free(&q);
    }
    double t0 = sv_now();
    while (n < d->world && sv_now() - t0 < PROBE_SECONDS) {
        int flag;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_PONG, d->probe, &flag, &st);
        if (flag) {
            int v;
            MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, d->probe, MPI_STATUS_IGNORE);
            if (!answered[st.MPI_SOURCE]) n++;
            answered[st.MPI_SOURCE] = (char)(1 + (v > 0 && v < SV_LOCAL_KINDS ? v : 0));
            continue;
        }
        answer_probes(d, 0);
        usleep(1000);
    }
    return n;
}

static void abort_now(int sig) {
    (void)sig;
    _exit(SV_EXIT_COLLECTIVE_TIMEOUT);
}

/* "rank 1 on n2, rank 3 on n4" for the ranks whose answered[r] is `want`. */
static void list_ranks(const sv_dist *d, const char *answered, int want, char *list, size_t size) {
    size_t len = 0;
    int shown = 0;
    list[0] = '\0';
    for (int r = 0; r < d->world && len < size - 96; r++) {
        if (answered[r] != want) continue;
        if (shown++ == 16) {
            snprintf(list + len, size - len, ", ...");
            return;
        }
        len += (size_t)snprintf(list + len, size - len, "%srank %d on %s", len ? ", " : "", r, d->hosts[r]);
    }
}

/* Every rank answered and one is busy with local work (a write of rank 0's):
 * the wait goes on without the timeout while its probes are answered; the
 * first time in this wait it says so. Returns 1 when that is the case. */
static int still_busy(sv_dist *d, const char *answered, const char *what, const char *step, double waited,
                      double t0) {
    int busy = 0; /* 1 + the first busy rank */
    for (int r = 0; r < d->world; r++) {
        if (answered[r] == 0) return 0;
        if (answered[r] > 1 && !busy) busy = r + 1;
    }
    if (!busy) {
        /* The busy rank may have just finished and joined this collective,
         * not yet complete here: one more timeout for a wait that saw it. */
        if (d->busy_seen <= t0 || d->busy_grace == t0) return 0;
        d->busy_grace = t0;
        d->busy_seen = sv_now();
        return 1;
    }
    d->busy_seen = sv_now();
    if (d->busy_noted != t0) {
        d->busy_noted = t0;
        fprintf(stderr,
                "shiftvit: rank %d on %s: %s%s has waited %.0f s (collective timeout %g s); rank %d on %s answers that "
                "it is %s: waiting on while it answers (probed every %g s)\n",
                d->rank, d->hosts[d->rank], what, step, waited, d->timeout, busy - 1, d->hosts[busy - 1],
                g_state_names[answered[busy - 1] - 1], d->timeout);
        fflush(stderr);
    }
    return 1;
}

/* The ranks that answered (answered[r] != 0) were told the job ends: each
 * runs its on_abort hook (its trace) and confirms, or ABORT_SECONDS pass. */
static void tell_the_others(sv_dist *d, const char *answered) {
    int waiting = 0;
    for (int r = 0; r < d->world; r++) {
        if (r == d->rank || !answered[r]) continue;
        MPI_Request q;
        MPI_Isend(&g_states[0], 1, MPI_INT, r, TAG_ABORT, d->probe, &q);
        MPI_Request_free(&q);
        waiting++;
    }
    double t0 = sv_now();
    while (waiting > 0 && sv_now() - t0 < ABORT_SECONDS) {
        int flag, v;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_DONE, d->probe, &flag, &st);
        if (flag) {
            MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, TAG_DONE, d->probe, MPI_STATUS_IGNORE);
            waiting--;
            continue;
        }
        answer_probes(d, 0);
        usleep(1000);
    }
}

/* This rank's last words before the job ends: the caller's hook (the
 * trainer writes this rank's trace and names the checkpoint to resume from),
 * once. */
static void run_abort_hook(sv_dist *d, int mine, char *hint, size_t n) {
    hint[0] = '\0';
    if (d->aborting++ || !d->on_abort) return;
    d->on_abort(d->on_abort_ctx, mine, hint, n);
}

/* Probes the other ranks. When every rank answered and one is busy with
 * local work, returns (the wait goes on). Otherwise names the collective, the
 * step and the silent ranks, lets every rank that answered run its abort
 * hook, and ends the job. */
static void timed_out(sv_dist *d, const char *what, double waited, double t0) {
    const char *me = d->hosts[d->rank];
    char step[40] = "";
    if (d->step >= 0) snprintf(step, sizeof step, " at step %ld", d->step);
    char *answered = sv_alloc((size_t)d->world, "probe answers");
    int n = probe_ranks(d, answered);
    if (still_busy(d, answered, what, step, waited, t0)) {
        sv_free(answered);
        return;
    }
    fprintf(stderr,
            "shiftvit: rank %d on %s: %s%s has not completed after %.0f s (collective timeout %g s: "
            "train.collective_timeout or SHIFTVIT_COLLECTIVE_TIMEOUT); probed the other ranks for up to %.0f s\n",
            d->rank, me, what, step, waited, d->timeout, PROBE_SECONDS);
    char list[1024], hint[1024];
    list_ranks(d, answered, 0, list, sizeof list);
    if (n < d->world)
        fprintf(stderr,
                "shiftvit: rank %d on %s: no answer from %d of %d rank(s): %s. Lost (node or link down, process "
                "killed or frozen) or stuck outside a collective. Aborting the job (exit status %d).\n",
                d->rank, me, d->world - n, d->world, list, SV_EXIT_COLLECTIVE_TIMEOUT);
    else
        fprintf(stderr,
                "shiftvit: rank %d on %s: every rank answered, so they wait in different collectives or the "
                "network is slower than the timeout allows. Aborting the job (exit status %d).\n",
                d->rank, me, SV_EXIT_COLLECTIVE_TIMEOUT);
    fflush(stderr);
    /* The hooks (traces) and MPI_Abort, which itself needs the network: do
     * not let this end hang either. */
    signal(SIGALRM, abort_now);
    alarm(2 * ABORT_SECONDS);
    run_abort_hook(d, 1, hint, sizeof hint);
    if (hint[0]) fprintf(stderr, "shiftvit: rank %d on %s: %s\n", d->rank, me, hint);
    fflush(stderr);
    tell_the_others(d, answered);
    sv_free(answered);
    alarm(20);
    MPI_Abort(d->comm, SV_EXIT_COLLECTIVE_TIMEOUT);
    _exit(SV_EXIT_COLLECTIVE_TIMEOUT);
}

/* A rank that ended the job tells this one (answer_probes): run the abort
 * hook (this rank's trace), confirm; MPI_Abort ends the process next. */
static void answer_abort(sv_dist *d) {
    int flag, v;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, TAG_ABORT, d->probe, &flag, &st);
    if (!flag) return;
    MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, TAG_ABORT, d->probe, MPI_STATUS_IGNORE);
    char hint[1024];
    run_abort_hook(d, 0, hint, sizeof hint);
    if (hint[0]) fprintf(stderr, "shiftvit: rank %d on %s: the job ends (rank %d timed out): %s\n", d->rank,
                         d->hosts[d->rank], st.MPI_SOURCE, hint);
    fflush(stderr);
    MPI_Request r;
    MPI_Isend(&g_states[0], 1, MPI_INT, st.MPI_SOURCE, TAG_DONE, d->probe, &r);
    MPI_Request_free(&r);
}

/* A wait loop found nothing done: answer probes, end the job past the
 * timeout (counted from the wait's start, or from the last probe that found
 * a rank busy with local work), back off. */
void dist_idle(sv_dist *d, double t0, double now, const char *what) {
    answer_probes(d, 0);
    double from = d->busy_seen > t0 ? d->busy_seen : t0;
    if (d->timeout > 0 && now - from > d->timeout) timed_out(d, what, now - t0, t0);
    double waited = now - t0;
    if (waited > 0.5) usleep(200);
    else if (waited > 0.01) sched_yield();
}

/* ------------------------------------------------------------ local work */

typedef struct {
    int (*fn)(void *);
    void *arg;
    int rc;
    atomic_int done;
} local_work;

static void *run_local_work(void *p) {
    local_work *w = p;
    w->rc = w->fn(w->arg);
    atomic_store(&w->done, 1);
    return NULL;
}

int sv_dist_local_work(sv_dist *d, sv_local_work kind, int (*fn)(void *), void *arg) {
    if (d->world == 1 || d->timeout <= 0 || kind <= 0 || kind >= SV_LOCAL_KINDS) return fn(arg);
    local_work w = {fn, arg, 0, 0};
    pthread_t th;
    if (pthread_create(&th, NULL, run_local_work, &w) != 0) return fn(arg); /* unprobed, as before */
    while (!atomic_load(&w.done)) {
        answer_probes(d, kind);
        usleep(2000);
    }
    pthread_join(th, NULL);
    return w.rc;
}

/* MPI_Waitall with the collective timeout: polls, answers probes, and backs
 * off (yield, then short sleeps) so that a long wait does not steal a core
 * from ranks that share it. done_at[i] (when not NULL) gets the time request i
 * was seen complete; idx and st are scratch for n indices and statuses (a
 * real array, not MPI_STATUSES_IGNORE: MPICH declares the argument an array,
 * and GCC warns that the constant points to no room for n statuses). The time
 * waited is added to d->wait_s (the straggler report). */
void dist_wait_some(sv_dist *d, int n, MPI_Request *reqs, double *done_at, int *idx, MPI_Status *st,
                    const char *what) {
    if (d->world == 1) {
        MPI_Waitall(n, reqs, st);
        return;
    }
    double t0 = sv_now();
    for (;;) {
        int got = 0;
        if (d->timeout > 0) MPI_Testsome(n, reqs, &got, idx, st);
        else MPI_Waitsome(n, reqs, &got, idx, st);
        double now = sv_now();
        if (got == MPI_UNDEFINED) { /* every request is done */
            d->wait_s += now - t0;
            return;
        }
        for (int i = 0; done_at && i < got; i++) done_at[idx[i]] = now;
        if (got > 0 || d->timeout <= 0) continue;
        dist_idle(d, t0, now, what);
    }
}

static void wait_all(sv_dist *d, int n, MPI_Request *reqs, const char *what) {
    int idx[4];
    MPI_Status st[4];
    SV_CHECK(n <= 4);
    dist_wait_some(d, n, reqs, NULL, idx, st, what);
}

/* ------------------------------------------------------------ named collectives */

static void allreduce(sv_dist *d, MPI_Comm c, void *v, int n, MPI_Datatype t, MPI_Op op, const char *what) {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, v, n, t, op, c, &r);
    wait_all(d, 1, &r, what);
}

static void bcast(sv_dist *d, void *v, int n, MPI_Datatype t, const char *what) {
    MPI_Request r;
    MPI_Ibcast(v, n, t, 0, d->comm, &r);
    wait_all(d, 1, &r, what);
}

void sv_allreduce_doubles(sv_dist *d, double *v, int n) {
    if (d->world > 1) allreduce(d, d->comm, v, n, MPI_DOUBLE, MPI_SUM, "the metrics all-reduce");
}

int sv_dist_all_ok(sv_dist *d, int ok) {
    int v = ok != 0;
    if (d->world > 1) allreduce(d, d->comm, &v, 1, MPI_INT, MPI_MIN, "an all-ranks-ok vote");
    return v;
}

int sv_dist_bcast_int(sv_dist *d, int v) {
    if (d->world > 1) bcast(d, &v, 1, MPI_INT, "a broadcast from rank 0");
    return v;
}

long sv_dist_bcast_long(sv_dist *d, long v) {
    if (d->world > 1) bcast(d, &v, 1, MPI_LONG, "a broadcast from rank 0");
    return v;
}

void sv_dist_bcast_floats(sv_dist *d, float *v, size_t n) {
    if (d->world > 1) bcast(d, v, (int)n, MPI_FLOAT, "the broadcast of rank 0's weights");
}

int sv_dist_same_checksum(sv_dist *d, uint64_t h) {
    if (d->world == 1) return 1;
    uint64_t v[2] = {h, ~h}; /* min of h and min of ~h (= ~max of h) in one call */
    allreduce(d, d->comm, v, 2, MPI_UINT64_T, MPI_MIN, "a checksum comparison");
    return v[0] == ~v[1];
}

int sv_dist_max_int(sv_dist *d, int v) {
    if (d->world > 1) allreduce(d, d->comm, &v, 1, MPI_INT, MPI_MAX, "a maximum over ranks");
    return v;
}

double sv_dist_max_double(sv_dist *d, double v) {
    if (d->world > 1) allreduce(d, d->comm, &v, 1, MPI_DOUBLE, MPI_MAX, "a maximum over ranks");
    return v;
}

unsigned long sv_dist_max_ulong(sv_dist *d, unsigned long v) {
    if (d->world > 1) allreduce(d, d->comm, &v, 1, MPI_UNSIGNED_LONG, MPI_MAX, "a maximum over ranks");
    return v;
}

void sv_dist_barrier(sv_dist *d) {
    if (d->world == 1) return;
    MPI_Request r;
    MPI_Ibarrier(d->comm, &r);
    wait_all(d, 1, &r, "a barrier");
}

void sv_dist_gather(sv_dist *d, const void *mine, size_t bytes, void *all) {
    if (d->world == 1) {
        memcpy(all, mine, bytes);
        return;
    }
    MPI_Request r;
    MPI_Igather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, 0, d->comm, &r);
    wait_all(d, 1, &r, "a gather to rank 0");
}

void sv_dist_gatherv(sv_dist *d, const void *mine, size_t bytes, void *all, const size_t *counts) {
    if (d->world == 1) {
        memcpy(all, mine, bytes);
        return;
    }
    int *cnt = NULL, *disp = NULL;
    if (d->rank == 0) {
        cnt = sv_alloc(2 * (size_t)d->world * sizeof(int), "gather counts");
        disp = cnt + d->world;
        for (int r = 0, off = 0; r < d->world; r++) {
            cnt[r] = (int)counts[r];
            disp[r] = off;
            off += cnt[r];
        }
    }
    MPI_Request r;
    MPI_Igatherv(mine, (int)bytes, MPI_BYTE, all, cnt, disp, MPI_BYTE, 0, d->comm, &r);
    wait_all(d, 1, &r, "a gather to rank 0");
    sv_free(cnt);
}

void sv_dist_node_or(sv_dist *d, unsigned long *words, int n) {
    if (d->local_size > 1) allreduce(d, d->node, words, n, MPI_UNSIGNED_LONG, MPI_BOR, "a node-wide reduction");
}

int sv_dist_node_sum_int(sv_dist *d, int v) {
    if (d->local_size > 1) allreduce(d, d->node, &v, 1, MPI_INT, MPI_SUM, "a node-wide reduction");
    return v;
}
