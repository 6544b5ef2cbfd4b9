/* The gradient exchange (dist.h): the bucketed all-reduce of the flat
 * gradient buffer, overlapped with backward, ZeRO stage 1's reduce-scatter
 * ring and parameter all-gather, and the bf16 exchange (fp32 sums). Waits go
 * through the communicator's timeout-aware loops (comm.c, dist_internal.h). */
#include "shiftvit/dist.h"

#include <stdlib.h>
#include <string.h>

#include "shiftvit/common.h"
#include "dist_internal.h"

/* ------------------------------------------------------------ gradient all-reduce */

void sv_allreduce_setup(sv_dist *d, float *buf, size_t n, size_t bucket_bytes) {
    sv_allreduce_free(d);
    d->exchange_free = sv_allreduce_free; /* sv_dist_finalize frees it */
    d->buf = buf;
    d->n = n;
    d->bucket = bucket_bytes / sizeof(float);
    if (d->bucket == 0) d->bucket = 1;
    d->nbuckets = (int)((n + d->bucket - 1) / d->bucket);
    d->reqs = sv_alloc((size_t)d->nbuckets * sizeof(MPI_Request), "all-reduce requests");
    d->bucket_t0 = sv_alloc(2 * (size_t)d->nbuckets * sizeof(double), "all-reduce times");
    d->bucket_t1 = d->bucket_t0 + d->nbuckets;
    d->idx = sv_alloc((size_t)d->nbuckets * sizeof(int), "all-reduce indices");
    d->statuses = sv_alloc((size_t)d->nbuckets * sizeof(MPI_Status), "all-reduce statuses");
    for (int i = 0; i < d->nbuckets; i++) d->reqs[i] = MPI_REQUEST_NULL;
    d->next = d->nbuckets - 1;
}

void sv_allreduce_begin(sv_dist *d) {
    d->next = d->nbuckets - 1;
}

/* Floats in bucket b (the last one may be short). */
static size_t bucket_len(const sv_dist *d, int b) {
    size_t lo = (size_t)b * d->bucket;
    return d->n - lo < d->bucket ? d->n - lo : d->bucket;
}

/* ZeRO stage 1's reduce-scatter of one bucket: a ring of P - 1 steps driven
 * by this file (Open MPI's non-blocking reduce-scatter reduces the whole
 * bucket on rank 0 and scatters it from there). The bucket's P segments are
 * the shards of sv_shard. At step k rank r sends segment (r - 1 - k) mod P,
 * holding its own and the k ranks before it, to r + 1, and adds segment
 * (r - 2 - k) mod P from r - 1; after step P - 2 it holds the sum over all
 * ranks of segment r, its shard, which goes to gshard. Each segment is summed
 * in the same order on every run, whatever the timing. */
/* The segment rank r handles at ring step k: `back` places before its own. */
static int ring_segment(const sv_dist *d, int k, int back) {
    int P = d->world;
    return ((d->rank - back - k) % P + P) % P;
}

static void ring_post(sv_dist *d, int b) {
    int P = d->world, r = d->rank, k = d->rs_step[b];
    int s_send = ring_segment(d, k, 1), s_recv = ring_segment(d, k, 2);
    const int *cnt = d->counts + (size_t)b * P, *dsp = d->displs + (size_t)b * P;
    float *bucket = d->buf + (size_t)b * d->bucket;
    MPI_Irecv(d->rs_tmp + d->rs_tmp_off[b], cnt[s_recv], MPI_FLOAT, (r - 1 + P) % P, b, d->ring, &d->rs_req[2 * b]);
    MPI_Isend(bucket + dsp[s_send], cnt[s_send], MPI_FLOAT, (r + 1) % P, b, d->ring, &d->rs_req[2 * b + 1]);
}

/* Advances bucket b's ring if its step is done; 1 when the bucket is finished. */
static int ring_progress(sv_dist *d, int b) {
    if (d->rs_step[b] >= d->world - 1) return 1;
    int done = 0;
    MPI_Status st[2]; /* not MPI_STATUSES_IGNORE: see dist_wait_some */
    MPI_Testall(2, &d->rs_req[2 * b], &done, st);
    if (!done) return 0;
    int P = d->world, s_recv = ring_segment(d, d->rs_step[b], 2);
    float *dst = d->buf + (size_t)b * d->bucket + d->displs[(size_t)b * P + s_recv];
    const float *src = d->rs_tmp + d->rs_tmp_off[b];
    for (int i = 0; i < d->counts[(size_t)b * P + s_recv]; i++) dst[i] += src[i];
    if (++d->rs_step[b] < P - 1) {
        ring_post(d, b);
        return 0;
    }
    memcpy(d->gshard + d->shard_off[b], d->buf + d->shard_lo[b], d->shard_len[b] * sizeof(float));
    d->bucket_t1[b] = sv_now();
    return 1;
}

/* ---------------------------------------------------- bf16 exchange (dist.h) */

/* Bucket b's bf16 state in rs_step[b]: 1 .. P - 1 the reduce-scatter step in
 * flight, P the all-gather in flight, P + 1 done. */

/* Step k of bucket b's reduce-scatter: segment r + k of this rank's bf16
 * copy to rank r + k; segment r from rank r - k into rx16. */
static void pair_post(sv_dist *d, int b) {
    int P = d->world, r = d->rank, k = d->rs_step[b];
    int to = (r + k) % P, from = (r - k + P) % P;
    const int *cnt = d->counts + (size_t)b * P, *dsp = d->displs + (size_t)b * P;
    const uint16_t *x = d->x16 + (size_t)b * d->bucket;
    MPI_Irecv(d->rx16 + d->shard_off[b], cnt[r], MPI_UINT16_T, from, b, d->ring, &d->rs_req[2 * b]);
    MPI_Isend(x + dsp[to], cnt[to], MPI_UINT16_T, to, b, d->ring, &d->rs_req[2 * b + 1]);
}

/* Bucket b's fp32 sum of this rank's segment is complete: rounded to bf16
 * once, into the bf16 copy (whose segment r has been sent); ZeRO keeps it
 * in gshard, stage 0 sends it to every rank and receives theirs (tag
 * nbuckets + b: apart from the reduce-scatter's). Every segment of the copy
 * was sent during the reduce-scatter, so the receives may overwrite it. */
static void pair_gather_post(sv_dist *d, int b) {
    int P = d->world, r = d->rank;
    const int *cnt = d->counts + (size_t)b * P, *dsp = d->displs + (size_t)b * P;
    const float *sum = d->buf + d->shard_lo[b];
    uint16_t *x = d->x16 + (size_t)b * d->bucket, *mine = d->x16 + d->shard_lo[b];
    size_t len = d->shard_len[b];
    for (size_t i = 0; i < len; i++) mine[i] = sv_bf16_round(sum[i]);
    if (d->zero) {
        float *g = d->gshard + d->shard_off[b];
        for (size_t i = 0; i < len; i++) g[i] = sv_bf16_to_float(mine[i]);
        return;
    }
    MPI_Request *q = d->ag_req + 2 * (size_t)(P - 1) * b;
    for (int k = 1; k < P; k++) {
        int to = (r + k) % P, from = (r - k + P) % P;
        MPI_Irecv(x + dsp[from], cnt[from], MPI_UINT16_T, from, d->nbuckets + b, d->ring, q++);
        MPI_Isend(mine, (int)len, MPI_UINT16_T, to, d->nbuckets + b, d->ring, q++);
    }
}

/* Advances bucket b's bf16 exchange if its step is done; 1 when finished
 * (stage 0: buf holds the gathered bf16 sums as fp32). */
static int pair_progress(sv_dist *d, int b) {
    int P = d->world, done = 0;
    if (d->rs_step[b] > P) return 1;
    if (d->rs_step[b] == P) {
        MPI_Testall(2 * (P - 1), d->ag_req + 2 * (size_t)(P - 1) * b, &done, MPI_STATUSES_IGNORE);
        if (!done) return 0;
        float *dst = d->buf + (size_t)b * d->bucket;
        const uint16_t *x = d->x16 + (size_t)b * d->bucket;
        for (size_t i = 0, len = bucket_len(d, b); i < len; i++) dst[i] = sv_bf16_to_float(x[i]);
    } else {
        MPI_Testall(2, &d->rs_req[2 * b], &done, MPI_STATUSES_IGNORE);
        if (!done) return 0;
        float *dst = d->buf + d->shard_lo[b];
        const uint16_t *src = d->rx16 + d->shard_off[b];
        for (size_t i = 0; i < d->shard_len[b]; i++) dst[i] += sv_bf16_to_float(src[i]);
        if (++d->rs_step[b] < P) {
            pair_post(d, b);
            return 0;
        }
        pair_gather_post(d, b);
        if (!d->zero) return 0;
    }
    d->rs_step[b] = P + 1;
    d->bucket_t1[b] = sv_now();
    return 1;
}

/* Advances every started bucket's ring (or bf16 exchange); 1 when all
 * nbuckets are finished. */
static int ring_progress_all(sv_dist *d) {
    int all = 1;
    for (int b = d->nbuckets - 1; b > d->next; b--) all &= d->bf16 ? pair_progress(d, b) : ring_progress(d, b);
    return all && d->next < 0;
}

static void start_bucket(sv_dist *d, int b) {
    size_t lo = (size_t)b * d->bucket, len = bucket_len(d, b);
    d->bucket_t0[b] = sv_now();
    if (d->bf16) {
        uint16_t *x = d->x16 + lo;
        const float *g = d->buf + lo;
        for (size_t i = 0; i < len; i++) x[i] = sv_bf16_round(g[i]);
        d->rs_step[b] = 1;
        pair_post(d, b);
    } else if (d->zero) {
        d->rs_step[b] = 0;
        ring_post(d, b);
    } else {
        MPI_Iallreduce(MPI_IN_PLACE, d->buf + lo, (int)len, MPI_FLOAT, MPI_SUM, d->comm, &d->reqs[b]);
    }
}

void sv_allreduce_ready(void *ctx, size_t offset) {
    sv_dist *d = ctx;
    if (d->world == 1 || !d->reqs) return;
    while (d->next >= 0 && (size_t)d->next * d->bucket >= offset) start_bucket(d, d->next--);
    if (d->zero || d->bf16) {
        ring_progress_all(d);
        return;
    }
    /* Open MPI advances non-blocking collectives only inside MPI calls. */
    int first = d->next + 1, got = 0;
    if (first < d->nbuckets) {
        MPI_Testsome(d->nbuckets - first, d->reqs + first, &got, d->idx, d->statuses);
        double now = sv_now();
        for (int i = 0; got != MPI_UNDEFINED && i < got; i++) d->bucket_t1[first + d->idx[i]] = now;
    }
}

void sv_allreduce_finish(sv_dist *d) {
    if (d->world == 1 || !d->reqs) return;
    double t0 = sv_now();
    while (d->next >= 0) start_bucket(d, d->next--);
    if (d->zero || d->bf16) {
        const char *what = d->bf16 ? "the bf16 gradient exchange" : "the gradient reduce-scatter";
        while (!ring_progress_all(d)) dist_idle(d, t0, sv_now(), what);
        d->wait_s += sv_now() - t0;
    } else {
        dist_wait_some(d, d->nbuckets, d->reqs, d->bucket_t1, d->idx, d->statuses, "the gradient all-reduce");
    }
}

/* Bucket b's segments, sv_shard of the bucket over the ranks (counts and
 * displs, per bucket x rank), and this rank's segment of every bucket
 * (shard_lo, shard_len, shard_off; shard_n in all). Once. */
static void segments_setup(sv_dist *d) {
    if (d->counts) return;
    int B = d->nbuckets, P = d->world;
    d->shard_lo = sv_alloc(3 * (size_t)B * sizeof(size_t), "ZeRO shards");
    d->shard_len = d->shard_lo + B;
    d->shard_off = d->shard_len + B;
    d->counts = sv_alloc(2 * (size_t)B * P * sizeof(int), "ZeRO counts");
    d->displs = d->counts + (size_t)B * P;
    d->shard_n = 0;
    for (int b = 0; b < B; b++) {
        size_t lo = (size_t)b * d->bucket, len = bucket_len(d, b);
        for (int r = 0; r < P; r++) {
            long start, count;
            sv_shard((long)len, r, P, &start, &count);
            d->counts[(size_t)b * P + r] = (int)count;
            d->displs[(size_t)b * P + r] = (int)start;
            if (r == d->rank) {
                d->shard_lo[b] = lo + (size_t)start;
                d->shard_len[b] = (size_t)count;
                d->shard_off[b] = d->shard_n;
                d->shard_n += (size_t)count;
            }
        }
    }
}

/* Per bucket: the step of its ring (or bf16 exchange), P + 1 = done, and
 * that step's receive and send; the ring's communicator. Once. */
static void steps_setup(sv_dist *d) {
    if (d->rs_step) return;
    int B = d->nbuckets;
    d->rs_step = sv_alloc((size_t)B * sizeof(int), "ZeRO ring steps");
    d->rs_req = sv_alloc(2 * (size_t)B * sizeof(MPI_Request), "ZeRO ring requests");
    for (int b = 0; b < B; b++) {
        d->rs_step[b] = d->world + 1;
        d->rs_req[2 * b] = d->rs_req[2 * b + 1] = MPI_REQUEST_NULL;
    }
    if (d->ring == MPI_COMM_NULL) MPI_Comm_dup(d->comm, &d->ring);
}

void sv_zero_setup(sv_dist *d, float *params, float *grads, size_t n, size_t bucket_bytes) {
    sv_allreduce_setup(d, grads, n, bucket_bytes);
    int B = d->nbuckets, P = d->world;
    d->zero = 1;
    d->params = params;
    segments_setup(d);
    steps_setup(d);
    d->gshard = sv_alloc(d->shard_n * sizeof(float) + 64, "ZeRO gradient shards");
    /* The ring's receive buffers: each bucket's largest segment. */
    d->rs_tmp_off = sv_alloc((size_t)B * sizeof(size_t), "ZeRO ring buffers");
    size_t tmp = 0;
    for (int b = 0; b < B; b++) {
        d->rs_tmp_off[b] = tmp;
        tmp += (size_t)d->counts[(size_t)b * P]; /* segment 0 is the largest (sv_shard) */
    }
    d->rs_tmp = sv_alloc(tmp * sizeof(float) + 64, "ZeRO ring buffers");
}

void sv_exchange_bf16(sv_dist *d) {
    if (d->world == 1 || !d->reqs) return;
    segments_setup(d);
    steps_setup(d);
    size_t nreq = 2 * (size_t)(d->world - 1) * (size_t)d->nbuckets;
    d->x16 = sv_alloc(d->n * sizeof(uint16_t) + 64, "bf16 gradient copy");
    d->rx16 = sv_alloc(d->shard_n * sizeof(uint16_t) + 64, "bf16 gradient segments");
    d->ag_req = sv_alloc(nreq * sizeof(MPI_Request), "bf16 all-gather requests");
    for (size_t i = 0; i < nreq; i++) d->ag_req[i] = MPI_REQUEST_NULL;
    d->bf16 = 1;
}

void sv_zero_allgather(sv_dist *d) {
    for (int b = 0; b < d->nbuckets; b++) {
        size_t lo = (size_t)b * d->bucket;
        d->bucket_t0[b] = sv_now();
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, d->params + lo, d->counts + (size_t)b * d->world,
                        d->displs + (size_t)b * d->world, MPI_FLOAT, d->comm, &d->reqs[b]);
    }
    dist_wait_some(d, d->nbuckets, d->reqs, d->bucket_t1, d->idx, d->statuses, "the parameter all-gather");
}

void sv_zero_gather(sv_dist *d, const float *shard, float *full) {
    for (int b = 0; b < d->nbuckets; b++) {
        size_t lo = (size_t)b * d->bucket;
        MPI_Igatherv(shard + d->shard_off[b], (int)d->shard_len[b], MPI_FLOAT, d->rank == 0 ? full + lo : NULL,
                     d->counts + (size_t)b * d->world, d->displs + (size_t)b * d->world, MPI_FLOAT, 0, d->comm,
                     &d->reqs[b]);
    }
    dist_wait_some(d, d->nbuckets, d->reqs, NULL, d->idx, d->statuses, "a gather of the optimizer state");
}

void sv_zero_take_shards(const sv_dist *d, const float *full, float *shard) {
    for (int b = 0; b < d->nbuckets; b++)
        memcpy(shard + d->shard_off[b], full + d->shard_lo[b], d->shard_len[b] * sizeof(float));
}

void sv_allreduce_free(sv_dist *d) {
    sv_free(d->x16);
    sv_free(d->rx16);
    sv_free(d->ag_req);
    d->x16 = d->rx16 = NULL;
    d->ag_req = NULL;
    d->bf16 = 0;
    sv_free(d->rs_step);
    sv_free(d->rs_req);
    sv_free(d->rs_tmp_off);
    sv_free(d->rs_tmp);
    d->rs_step = NULL;
    d->rs_req = NULL;
    d->rs_tmp_off = NULL;
    d->rs_tmp = NULL;
    sv_free(d->gshard);
    sv_free(d->shard_lo);
    sv_free(d->counts);
    d->gshard = NULL;
    d->shard_lo = d->shard_len = d->shard_off = NULL;
    d->counts = d->displs = NULL;
    d->zero = 0;
    sv_free(d->reqs);
    sv_free(d->bucket_t0);
    sv_free(d->idx);
    sv_free(d->statuses);
    d->reqs = NULL;
    d->bucket_t0 = d->bucket_t1 = NULL;
    d->idx = NULL;
    d->statuses = NULL;
    d->nbuckets = 0;
}
