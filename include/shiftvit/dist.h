/* Data-parallel plumbing over MPI (SPEC section 4): rank/world, sharding of a
 * global batch, the bucketed, overlapped all-reduce of the flat gradient buffer,
 * and the few named collectives the commands need. Every MPI call of the program
 * is in src/dist/: comm.c the communicator (start, ranks, hosts, named
 * collectives, timeout), exchange.c the gradient exchange (buckets, overlap,
 * ZeRO ring); all come from the main thread (MPI_THREAD_FUNNELED).
 *
 * Collective timeout (issue 13): every collective here waits by polling, and
 * one that has not completed after `timeout` seconds (train.collective_timeout,
 * or SHIFTVIT_COLLECTIVE_TIMEOUT) ends the job: the waiting rank names the
 * collective, the step and the ranks that did not answer a probe, then calls
 * MPI_Abort with exit status SV_EXIT_COLLECTIVE_TIMEOUT. A peer that vanished
 * without a TCP reset (a pulled cable, a frozen node) otherwise keeps the job
 * waiting for as long as TCP retransmits. PyTorch's process-group timeout is the
 * model; as there, ranks inside a collective answer a probe. So does a rank
 * doing long local work that the others wait for (rank 0 writing a checkpoint,
 * the metrics or the trace on a slow file system: issue 26): it runs the work
 * through sv_dist_local_work, answers "busy", and the others wait on without
 * the timeout for as long as it answers; a rank that stops answering (lost,
 * frozen) still ends the job one timeout plus one probe later.
 * Before MPI_Abort, the rank that timed out and every rank that answered run
 * the on_abort hook (the trainer writes that rank's trace). */
#ifndef SHIFTVIT_DIST_H
#define SHIFTVIT_DIST_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/* Default of train.collective_timeout, seconds (issue 13). */
#define SV_DEFAULT_COLLECTIVE_TIMEOUT 300.0

/* Exit status of a job ended by a collective timeout (README, "Exit status"). */
#define SV_EXIT_COLLECTIVE_TIMEOUT 5
#define SV_HOST_LEN 64

/* Long local work a rank may announce (sv_dist_local_work); 0 is "waiting in a
 * collective". */
typedef enum { SV_LOCAL_CHECKPOINT = 1, SV_LOCAL_METRICS, SV_LOCAL_TRACE, SV_LOCAL_RUN_FOLDER, SV_LOCAL_KINDS } sv_local_work;

typedef struct sv_dist {
    int rank, world;          /* in MPI_COMM_WORLD */
    int local_rank, local_size; /* ranks sharing this node */
    MPI_Comm comm;
    MPI_Comm node;            /* the ranks of this node (MPI_COMM_TYPE_SHARED) */
    MPI_Comm probe;           /* duplicate of comm for the timeout's liveness probe */
    char (*hosts)[SV_HOST_LEN]; /* hosts[r]: host name of rank r */
    double timeout;           /* seconds a collective may take; <= 0: no limit */
    int timeout_from_env;     /* SHIFTVIT_COLLECTIVE_TIMEOUT set it (it then overrides the config key) */
    long step;                /* optimiser step, for the timeout message (-1: none) */
    /* The timeout's view of local work and of the end (comm.c, issue 26). */
    double busy_seen;         /* sv_now() when a probe last found a rank busy with local work */
    double busy_noted;        /* start of the wait whose "busy" note was printed */
    double busy_grace;        /* start of the wait that got its one grace period after the busy rank answered "waiting" */
    int aborting;             /* the abort hook has run */
    /* Called once before a collective timeout ends the job, on the rank that
     * timed out (mine = 1) and on every rank that answered its probe: writes
     * what this rank can save (its trace) and puts into hint (n bytes) what the
     * user should know ("" for none): that file, and on the rank that timed
     * out what to resume from. NULL: nothing. */
    void (*on_abort)(void *ctx, int mine, char *hint, size_t n);
    void *on_abort_ctx;
    double wait_s;            /* seconds this rank has waited for collectives to complete (dist_wait_some,
                               * the reduce-scatter ring): the straggler report's wait time */
    /* The gradient exchange (src/dist/exchange.c): sv_allreduce_setup and
     * sv_zero_setup set exchange_free, which sv_dist_finalize calls (the
     * communicator, src/dist/comm.c, does not call the exchange). */
    void (*exchange_free)(struct sv_dist *d);
    /* Bucketed all-reduce state (sv_allreduce_*). */
    float *buf;
    size_t n, bucket;         /* floats in buf, floats per bucket */
    int nbuckets, next;       /* buckets are started from the last one down */
    MPI_Request *reqs;
    int *idx;                 /* scratch for MPI_Testsome */
    MPI_Status *statuses;     /* scratch for MPI_Testsome/Waitsome, nbuckets of them */
    double *bucket_t0, *bucket_t1; /* last step: each bucket's start and seen-complete time (sv_now) */
    /* ZeRO stage 1 (sv_zero_setup): each bucket's reduce-scatter leaves this
     * rank the sum of its shard of the bucket (sv_shard of the bucket over the
     * ranks), concatenated in gshard; the AdamW state covers those shards only. */
    int zero;
    float *params;            /* the parameter buffer, all-gathered after the update */
    float *gshard;            /* shard_n floats: this rank's reduced gradient shards */
    size_t shard_n;
    size_t *shard_lo, *shard_len, *shard_off; /* per bucket: offset in buf, length, offset in gshard */
    int *counts, *displs;     /* per bucket x rank: shard lengths and offsets within the bucket */
    MPI_Comm ring;            /* duplicate of comm for the reduce-scatter ring (tag = bucket) */
    int *rs_step;             /* per bucket: ring step in progress (P - 1: done) */
    MPI_Request *rs_req;      /* per bucket: its receive and send */
    float *rs_tmp;            /* receive buffers, one segment per bucket */
    size_t *rs_tmp_off;
    /* bf16 exchange (sv_exchange_bf16): the bucket's segments are the shards
     * above; a pairwise reduce-scatter (step k: send segment r + k to rank
     * r + k, receive segment r from rank r - k) sums in fp32, then the
     * bf16-rounded sums are all-gathered point to point. */
    int bf16;                 /* 1: the gradient travels as bf16 */
    uint16_t *x16;            /* n: the bucket's bf16 copy sent, then the gathered sums */
    uint16_t *rx16;           /* shard_n: received segments, per bucket at shard_off */
    MPI_Request *ag_req;      /* per bucket: 2 (P - 1) all-gather sends and receives */
} sv_dist;

/* MPI_Init_thread asking for MPI_THREAD_FUNNELED; fails (-1, message) if the
 * library provides less (-2: a bad SHIFTVIT_COLLECTIVE_TIMEOUT, bad input). Works without mpirun (world size 1). Gathers every
 * rank's host name. The timeout starts at SHIFTVIT_COLLECTIVE_TIMEOUT when that
 * is set (seconds), else SV_DEFAULT_COLLECTIVE_TIMEOUT; a bad value fails. */
int sv_dist_init(int *argc, char ***argv, sv_dist *d, char *err);
void sv_dist_finalize(sv_dist *d);

/* Runs fn(arg) and returns what it returns. With world size > 1 and a
 * collective timeout, fn runs on a worker thread while this (the MPI) thread
 * answers liveness probes as "busy with `kind`", so that ranks waiting for
 * this one in a collective do not time out (see the top). fn must make no
 * MPI call (MPI_THREAD_FUNNELED) and may use OpenMP; it runs alone (this
 * thread only polls MPI). Without a thread (pthread_create fails) fn runs
 * here, unprobed. */
int sv_dist_local_work(sv_dist *d, sv_local_work kind, int (*fn)(void *), void *arg);

/* Parses a timeout in seconds (>= 0, finite; 0 = no limit) from `text`, naming
 * `what` in the error. */
int sv_dist_parse_timeout(const char *text, const char *what, double *out, char *err);

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

/* ZeRO stage 1 over the same buckets (world size > 1): sv_allreduce_begin /
 * _ready / _finish then reduce-scatter instead of all-reduce, leaving this
 * rank's reduced shards in d->gshard; after the update of those shards,
 * sv_zero_allgather(d) gives every rank all parameters. */
void sv_zero_setup(sv_dist *d, float *params, float *grads, size_t n, size_t bucket_bytes);
void sv_zero_allgather(sv_dist *d);
/* Rank 0 receives the full n-float vector whose shards the ranks hold in
 * `shard` (shard_n floats each, laid out as gshard), into `full` (rank 0 only). */
void sv_zero_gather(sv_dist *d, const float *shard, float *full);
/* This rank's shards of a full n-float vector, into `shard` (laid out as gshard). */
void sv_zero_take_shards(const sv_dist *d, const float *full, float *shard);

/* Switches the exchange set up by sv_allreduce_setup or sv_zero_setup to
 * bf16 (train.allreduce_dtype = bf16; d->bf16 set). Bucket b's segments are
 * the shards of sv_zero_setup (sv_shard of the bucket over the ranks); rank
 * r owns segment r. Reduce-scatter, P - 1 steps: at step k rank r sends its
 * gradient of segment (r + k) mod P, rounded to bf16 (nearest even), to rank
 * (r + k) mod P and adds the bf16 segment received from rank (r - k) mod P
 * into its own fp32 segment, in fp32. Each owner thus forms
 *   s = g_r + bf16(g_{r-1}) + bf16(g_{r-2}) + ... (fp32, this order),
 * whatever the timing: no partial sum is ever rounded to bf16 (a ring would
 * forward rounded partial sums; DDP's bf16_compress_hook sums in bf16), so
 * |result - sum_i g_i| <= 2^-8 (|s| + sum_{i != r} |g_i|) + fp32 rounding,
 * and for bf16-representable g_i it is one bf16 rounding of the fp32 sum.
 * Stage 0: the owner's bf16(s) is sent to every other rank (all-gather,
 * point to point) and every rank, the owner included, takes bf16(s) back to
 * fp32 in buf: identical gradients on all ranks. ZeRO stage 1: bf16(s) goes
 * to gshard (the same values stage 0 would use). Half the bytes of fp32 on
 * the wire. World size 1: no-op (d->bf16 stays 0). Call after the setup,
 * before the first step. */
void sv_exchange_bf16(sv_dist *d);

/* In-place sum over ranks of a few doubles (metrics, flags). */
void sv_allreduce_doubles(sv_dist *d, double *v, int n);

/* Named collectives: every rank calls them in the same order. */
/* 1 if `ok` is non-zero on every rank. */
int sv_dist_all_ok(sv_dist *d, int ok);
/* Rank 0's value, on every rank. */
int sv_dist_bcast_int(sv_dist *d, int v);
long sv_dist_bcast_long(sv_dist *d, long v);
void sv_dist_bcast_floats(sv_dist *d, float *v, size_t n);
/* 1 if every rank passed the same 64-bit checksum. */
int sv_dist_same_checksum(sv_dist *d, uint64_t h);
/* Maximum over ranks, on every rank. */
int sv_dist_max_int(sv_dist *d, int v);
double sv_dist_max_double(sv_dist *d, double v);
unsigned long sv_dist_max_ulong(sv_dist *d, unsigned long v);
void sv_dist_barrier(sv_dist *d);
/* Rank 0 receives every rank's `bytes` bytes of `mine`, in rank order, into
 * `all` (world * bytes; ignored on other ranks). */
void sv_dist_gather(sv_dist *d, const void *mine, size_t bytes, void *all);
/* Rank 0 receives counts[r] bytes from each rank r (counts: only read on rank
 * 0; every rank passes its own `bytes`), in rank order, into `all`. */
void sv_dist_gatherv(sv_dist *d, const void *mine, size_t bytes, void *all, const size_t *counts);
/* Over the ranks of this node: bitwise OR of words[0..n), and the sum of v. */
void sv_dist_node_or(sv_dist *d, unsigned long *words, int n);
int sv_dist_node_sum_int(sv_dist *d, int v);

#endif
