/* Data-parallel plumbing over MPI (SPEC section 4): rank/world, sharding of a
 * global batch, and the bucketed, overlapped all-reduce of the flat gradient
 * buffer. All MPI calls come from the main thread (MPI_THREAD_FUNNELED). */
#ifndef SHIFTVIT_DIST_H
#define SHIFTVIT_DIST_H

#include <mpi.h>
#include <stddef.h>

typedef struct {
    int rank, world;          /* in MPI_COMM_WORLD */
    int local_rank, local_size; /* ranks sharing this node */
    MPI_Comm comm;
    /* Bucketed all-reduce state (sv_allreduce_*). */
    float *buf;
    size_t n, bucket;         /* floats in buf, floats per bucket */
    int nbuckets, next;       /* buckets are started from the last one down */
    MPI_Request *reqs;
    double wait_seconds;      /* time blocked in sv_allreduce_finish, last step */
} sv_dist;

/* MPI_Init_thread asking for MPI_THREAD_FUNNELED; fails (-1, message) if the
 * library provides less. Works without mpirun (world size 1). */
int sv_dist_init(int *argc, char ***argv, sv_dist *d, char *err);
void sv_dist_finalize(sv_dist *d);

/* Splits `total` items over `world` ranks as SPEC section 4: each gets
 * total / world, the first total % world ranks one more; rank r's items are
 * [*start, *start + *count) in rank order. */
void sv_shard(long total, int rank, int world, long *start, long *count);

/* Prepares the bucketed all-reduce (sum) of buf[0..n) in buckets of
 * bucket_bytes (4 MiB is the fast size here: MACHINE_NOTES.md). */
void sv_allreduce_setup(sv_dist *d, float *buf, size_t n, size_t bucket_bytes);
/* Marks the start of a backward pass: no bucket in flight. */
void sv_allreduce_begin(sv_dist *d);
/* sv_grad_ready_fn for sv_model_backward: starts MPI_Iallreduce for every bucket
 * that lies wholly at or above `offset` (gradients there are final) and
 * progresses those in flight. ctx is the sv_dist. */
void sv_allreduce_ready(void *ctx, size_t offset);
/* Starts what is left and waits for all buckets; buf then holds the sum over
 * ranks. No-op communication for world size 1. */
void sv_allreduce_finish(sv_dist *d);
void sv_allreduce_free(sv_dist *d);

/* In-place sum over ranks of a few doubles (metrics, flags). */
void sv_allreduce_doubles(sv_dist *d, double *v, int n);

#endif
