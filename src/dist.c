/* MPI data parallelism: sharding and the bucketed, overlapped gradient all-reduce. */
#include "shiftvit/dist.h"

#include <string.h>

#include "shiftvit/common.h"

int sv_dist_init(int *argc, char ***argv, sv_dist *d, char *err) {
    memset(d, 0, sizeof *d);
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return sv_fail(err, "MPI_Init_thread failed");
    d->comm = MPI_COMM_WORLD;
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->world);
    if (provided < MPI_THREAD_FUNNELED)
        return sv_fail(err, "the MPI library provides thread level %d, below MPI_THREAD_FUNNELED (%d)",
                       provided, MPI_THREAD_FUNNELED);
    MPI_Comm node;
    MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_size(node, &d->local_size);
    MPI_Comm_free(&node);
    return 0;
}

void sv_dist_finalize(sv_dist *d) {
    sv_allreduce_free(d);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

void sv_shard(long total, int rank, int world, long *start, long *count) {
    long base = total / world, extra = total % world;
    *count = base + (rank < extra ? 1 : 0);
    *start = (long)rank * base + (rank < extra ? rank : extra);
}

void sv_allreduce_setup(sv_dist *d, float *buf, size_t n, size_t bucket_bytes) {
    sv_allreduce_free(d);
    d->buf = buf;
    d->n = n;
    d->bucket = bucket_bytes / sizeof(float);
    if (d->bucket == 0) d->bucket = 1;
    d->nbuckets = (int)((n + d->bucket - 1) / d->bucket);
    d->reqs = sv_alloc((size_t)d->nbuckets * sizeof(MPI_Request), "all-reduce requests");
    for (int i = 0; i < d->nbuckets; i++) d->reqs[i] = MPI_REQUEST_NULL;
    d->next = d->nbuckets - 1;
}

void sv_allreduce_begin(sv_dist *d) {
    d->next = d->nbuckets - 1;
    d->wait_seconds = 0;
}

static void start_bucket(sv_dist *d, int b) {
    size_t lo = (size_t)b * d->bucket;
    size_t len = d->n - lo < d->bucket ? d->n - lo : d->bucket;
    MPI_Iallreduce(MPI_IN_PLACE, d->buf + lo, (int)len, MPI_FLOAT, MPI_SUM, d->comm, &d->reqs[b]);
}

void sv_allreduce_ready(void *ctx, size_t offset) {
    sv_dist *d = ctx;
    if (d->world == 1 || !d->reqs) return;
    while (d->next >= 0 && (size_t)d->next * d->bucket >= offset) start_bucket(d, d->next--);
    /* Open MPI advances non-blocking collectives only inside MPI calls. */
    int flag;
    if (d->next < d->nbuckets - 1)
        MPI_Testall(d->nbuckets - 1 - d->next, d->reqs + d->next + 1, &flag, MPI_STATUSES_IGNORE);
}

void sv_allreduce_finish(sv_dist *d) {
    if (d->world == 1 || !d->reqs) return;
    double t0 = sv_now();
    while (d->next >= 0) start_bucket(d, d->next--);
    MPI_Waitall(d->nbuckets, d->reqs, MPI_STATUSES_IGNORE);
    d->wait_seconds = sv_now() - t0;
}

void sv_allreduce_free(sv_dist *d) {
    sv_free(d->reqs);
    d->reqs = NULL;
    d->nbuckets = 0;
}

void sv_allreduce_doubles(sv_dist *d, double *v, int n) {
    if (d->world > 1) MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm);
}
