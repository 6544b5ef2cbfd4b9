/* The communicator (dist.h): MPI start and end, ranks and hosts, sharding,
 * the named collectives and the collective timeout. The gradient exchange
 * (bucketed all-reduce, ZeRO ring) is exchange.c; these two files are the only
 * ones that call MPI. */
#include "shiftvit/dist.h"

#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/common.h"
#include "dist_internal.h"

enum { TAG_PING = 1, TAG_PONG = 2 };
/* How long a rank that timed out waits for the others to answer its probe. */
#define PROBE_SECONDS 5.0

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

/* A rank inside a collective answers the liveness probes of ranks that timed out. */
static void answer_probes(sv_dist *d) {
    int flag = 1;
    while (flag) {
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, d->probe, &flag, &st);
        if (!flag) return;
        int v;
        MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, TAG_PING, d->probe, MPI_STATUS_IGNORE);
        MPI_Request r;
        MPI_Isend(&d->rank, 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, d->probe, &r);
        MPI_Request_free(&r);
    }
}

/* Sends a ping to every other rank and collects answers for PROBE_SECONDS;
 * answered[r] = 1 for every rank that answered (and this one). */
static int probe_ranks(sv_dist *d, char *answered) {
    memset(answered, 0, (size_t)d->world);
    answered[d->rank] = 1;
    int n = 1;
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
            answered[st.MPI_SOURCE] = 1;
            continue;
        }
        answer_probes(d);
        usleep(1000);
    }
    return n;
}

static void abort_now(int sig) {
    (void)sig;
    _exit(SV_EXIT_COLLECTIVE_TIMEOUT);
}

/* Names the collective, the step and the silent ranks, then ends the job. */
static void timed_out(sv_dist *d, const char *what, double waited) {
    const char *me = d->hosts[d->rank];
    char step[40] = "";
    if (d->step >= 0) snprintf(step, sizeof step, " at step %ld", d->step);
    fprintf(stderr,
            "shiftvit: rank %d on %s: %s%s has not completed after %.0f s (collective timeout %g s: "
            "train.collective_timeout or SHIFTVIT_COLLECTIVE_TIMEOUT); probing the other ranks for %.0f s\n",
            d->rank, me, what, step, waited, d->timeout, PROBE_SECONDS);
    fflush(stderr);
    char *answered = sv_alloc((size_t)d->world, "probe answers");
    int n = probe_ranks(d, answered);
    char list[1024] = "";
    size_t len = 0;
    int shown = 0;
    for (int r = 0; r < d->world && len < sizeof list - 96; r++) {
        if (answered[r]) continue;
        if (shown++ == 16) {
            len += (size_t)snprintf(list + len, sizeof list - len, ", ...");
            break;
        }
        len += (size_t)snprintf(list + len, sizeof list - len, "%srank %d on %s", len ? ", " : "", r, d->hosts[r]);
    }
    if (n < d->world)
        fprintf(stderr,
                "shiftvit: rank %d on %s: no answer from %d of %d rank(s): %s. Lost (node or link down, process "
                "killed or frozen) or stuck outside a collective. Aborting the job (exit status %d); nothing was "
                "written after the last checkpoint, resume from it.\n",
                d->rank, me, d->world - n, d->world, list, SV_EXIT_COLLECTIVE_TIMEOUT);
    else
        fprintf(stderr,
                "shiftvit: rank %d on %s: every rank answered, so they wait in different collectives or the "
                "network is slower than the timeout allows. Aborting the job (exit status %d).\n",
                d->rank, me, SV_EXIT_COLLECTIVE_TIMEOUT);
    fflush(stderr);
    /* MPI_Abort itself needs the network; do not let it hang either. */
    signal(SIGALRM, abort_now);
    alarm(20);
    MPI_Abort(d->comm, SV_EXIT_COLLECTIVE_TIMEOUT);
    _exit(SV_EXIT_COLLECTIVE_TIMEOUT);
}

/* A wait loop found nothing done: answer probes, end the job past the
 * timeout, back off. */
void dist_idle(sv_dist *d, double t0, double now, const char *what) {
    answer_probes(d);
    double waited = now - t0;
    if (d->timeout > 0 && waited > d->timeout) timed_out(d, what, waited);
    if (waited > 0.5) usleep(200);
    else if (waited > 0.01) sched_yield();
}

/* MPI_Waitall with the collective timeout: polls, answers probes, and backs
 * off (yield, then short sleeps) so that a long wait does not steal a core
 * from ranks that share it. done_at[i] (when not NULL) gets the time request i
 * was seen complete; idx is scratch for n indices. The time waited is added
 * to d->wait_s (the straggler report). */
void dist_wait_some(sv_dist *d, int n, MPI_Request *reqs, double *done_at, int *idx, const char *what) {
    if (d->world == 1) {
        MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE);
        return;
    }
    double t0 = sv_now();
    for (;;) {
        int got = 0;
        if (d->timeout > 0) MPI_Testsome(n, reqs, &got, idx, MPI_STATUSES_IGNORE);
        else MPI_Waitsome(n, reqs, &got, idx, MPI_STATUSES_IGNORE);
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
    SV_CHECK(n <= 4);
    dist_wait_some(d, n, reqs, NULL, idx, what);
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
