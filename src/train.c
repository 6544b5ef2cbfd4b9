/* The training loop: data-parallel steps, evaluation, early stopping,
 * checkpoints and metrics (SPEC sections 1 and 4; issues 3-5). */
#include "shiftvit/train.h"

#include <errno.h>
#include <stdlib.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/metrics.h"
#include "shiftvit/optim.h"
#include "shiftvit/run_folder.h"
#include "shiftvit/text.h"
#include "shiftvit/trace.h"

#define BUCKET_BYTES (4u << 20) /* MACHINE_NOTES.md: 4 MiB buckets are the fast size */
#define TRACE_EVENTS (1u << 18) /* --trace: room for ~10k steps of the full model */

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

static void install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int sv_local_batch(int global, int world) { return (global + world - 1) / world; }

/* Loss (the training objective, smoothed when label_smoothing > 0), top-1 and
 * top-5 sums of a batch; also fills probs. */
static void batch_metrics(const float *logits, float *probs, float *losses, const int *labels,
                          int n, int K, float smoothing, double *loss, double *top1, double *top5) {
    sv_softmax_xent_forward(losses, probs, logits, labels, n, K, smoothing);
    for (int i = 0; i < n; i++) {
        *loss += losses[i];
        *top1 += sv_topk_correct(logits + (size_t)i * K, K, labels[i], 1);
        *top5 += sv_topk_correct(logits + (size_t)i * K, K, labels[i], K < 5 ? K : 5);
    }
}

sv_eval_result sv_evaluate(sv_model *m, const sv_dataset *ds, const sv_config *cfg,
                           sv_dist *d, float *x, int *labels, long *idx) {
    long start, count;
    sv_shard(ds->count, d->rank, d->world, &start, &count);
    int bs = sv_local_batch(cfg->eval_batch_size, d->world);
    if (bs > m->max_batch) bs = m->max_batch;
    int K = m->num_classes;
    double sums[3] = {0, 0, 0};
    for (long b = 0; b < count; b += bs) {
        int n = (int)(count - b < bs ? count - b : bs);
        for (int i = 0; i < n; i++) idx[i] = start + b + i;
        sv_make_batch(x, labels, ds, idx, n, cfg, 0, 0);
        const float *logits = sv_model_forward(m, x, n, NULL);
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * K;
            float mx = l[0];
            for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
            double se = 0;
            for (int k = 0; k < K; k++) se += exp((double)l[k] - mx);
            sums[0] += mx + log(se) - l[labels[i]];
            sums[1] += sv_topk_correct(l, K, labels[i], 1);
            sums[2] += sv_topk_correct(l, K, labels[i], K < 5 ? K : 5);
        }
    }
    double all[4] = {sums[0], sums[1], sums[2], (double)count};
    sv_allreduce_doubles(d, all, 4);
    sv_eval_result r = {0, 0, 0, (long)all[3]};
    if (all[3] > 0) {
        r.loss = all[0] / all[3];
        r.top1 = all[1] / all[3];
        r.top5 = all[2] / all[3];
    }
    return r;
}

/* ---- output directory and checkpoints (rank 0) ---- */

static int mkdir_p(const char *path) {
    char tmp[SV_PATH_LEN];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0775) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0775) != 0 && errno != EEXIST) return -1;
    return 0;
}

/* Creates the output directory and proves it writable before any training. */
static int prepare_out_dir(const char *dir, char *err) {
    if (mkdir_p(dir) != 0)
        return sv_fail(err, "output directory %s: cannot create it: %s", dir, strerror(errno));
    char probe[SV_PATH_LEN + 32];
    snprintf(probe, sizeof probe, "%s/.write_test", dir);
    FILE *f = fopen(probe, "w");
    if (!f) return sv_fail(err, "output directory %s is not writable: %s", dir, strerror(errno));
    int bad = fputs("ok\n", f) < 0;
    bad |= fclose(f) != 0;
    unlink(probe);
    if (bad) return sv_fail(err, "output directory %s: writing failed: %s", dir, strerror(errno));
    return 0;
}

static void resolve_out_dir(char *out, const sv_config *cfg, const sv_train_opts *o, sv_dist *d) {
    if (o->out_dir && *o->out_dir) snprintf(out, SV_PATH_LEN, "%s", o->out_dir);
    else if (cfg->out_dir[0]) snprintf(out, SV_PATH_LEN, "%s", cfg->out_dir);
    else {
        /* Rank 0's clock names the run; every rank must agree on it. */
        long stamp = (long)time(NULL);
        stamp = sv_dist_bcast_long(d, stamp);
        time_t t = (time_t)stamp;
        struct tm tm;
        localtime_r(&t, &tm);
        char ts[32];
        strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", &tm);
        snprintf(out, SV_PATH_LEN, "results/runs/%s-%s", cfg->name[0] ? cfg->name : "run", ts);
    }
}

/* rank 0 decides, everyone learns the outcome: keeps all ranks in step on errors. */
static int agree(sv_dist *d, int ok) { return sv_dist_all_ok(d, ok); }

static int bcast_ok(sv_dist *d, int ok) { return sv_dist_bcast_int(d, ok); }

typedef struct {
    sv_model *m;
    sv_adamw *opt;
    sv_train_state *st;
    const sv_config *cfg;
    const char *dir;
    sv_dist *d;
    long saved_step; /* step of the newest checkpoint written, -1 if none */
    int failures;    /* checkpoints that could not be written */
    sv_trace *trace; /* --trace, or NULL */
} ckpt_ctx;

/* Rank 0 writes `name`; every rank learns whether it worked. */
static int save_checkpoint(ckpt_ctx *c, const char *name) {
    int ok = 1;
    double t0 = sv_now();
    /* ZeRO stage 1: rank 0 gathers the AdamW state; the file's layout is stage 0's. */
    sv_adamw full = *c->opt;
    if (c->d->zero) {
        full.n = c->m->num_params;
        full.m = c->d->rank == 0 ? sv_alloc(2 * full.n * sizeof(float), "gathered AdamW state") : NULL;
        full.v = full.m ? full.m + full.n : NULL;
        sv_zero_gather(c->d, c->opt->m, full.m);
        sv_zero_gather(c->d, c->opt->v, full.v);
    }
    if (c->d->rank == 0) {
        char path[SV_PATH_LEN + 64], err[SV_ERR_LEN];
        snprintf(path, sizeof path, "%s/%s", c->dir, name);
        if (sv_checkpoint_save(path, c->m, &full, c->st, c->cfg, err) != 0) {
            fprintf(stderr, "shiftvit: checkpoint not written: %s\n", err);
            ok = 0;
        }
    }
    if (c->d->zero) sv_free(full.m);
    ok = bcast_ok(c->d, ok);
    if (ok) c->saved_step = c->st->step;
    else c->failures++;
    sv_trace_add(c->trace, SV_TR_CHECKPOINT, t0, sv_now(), c->st->step, -1, name);
    return ok;
}

/* Epoch checkpoints epoch_NNNN.h5: keep the newest keep_last. */
static void rotate_checkpoints(ckpt_ctx *c, long epoch_done) {
    if (c->d->rank != 0 || c->cfg->keep_last <= 0) return;
    long old = epoch_done - (long)c->cfg->keep_last * c->cfg->checkpoint_every;
    if (old < 1) return;
    char path[SV_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/epoch_%04ld.h5", c->dir, old);
    unlink(path);
}

/* dir/name as one shell word. */
static const char *quote_in(const char *dir, const char *name, char *q, size_t n) {
    char path[SV_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return sv_shell_quote(path, q, n);
}

/* The command that continues the run in dir, ready to paste into a shell:
 * this binary by its absolute path, under mpirun with the same world size
 * when there is more than one rank; the config comes from the checkpoint. */
static const char *resume_command(const char *dir, int world, char *q, size_t n) {
    char ckpt[SV_QUOTED_LEN(SV_PATH_LEN + 16)], out[SV_QUOTED_LEN(SV_PATH_LEN)], exe[SV_PATH_LEN] = "shiftvit",
         qexe[SV_QUOTED_LEN(SV_PATH_LEN)], launcher[96] = "";
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) exe[len] = '\0';
    else snprintf(exe, sizeof exe, "shiftvit");
    if (world > 1)
        snprintf(launcher, sizeof launcher, "mpirun -np %d %s", world, geteuid() == 0 ? "--allow-run-as-root " : "");
    snprintf(q, n, "%s%s train --resume %s --out %s", launcher, sv_shell_quote(exe, qexe, sizeof qexe),
             quote_in(dir, "last.h5", ckpt, sizeof ckpt), sv_shell_quote(dir, out, sizeof out));
    return q;
}

/* --resume-with-changes: the log and every later checkpoint say which keys
 * changed at which step; /state takes the new seed so that it agrees with
 * /config. */
static void record_changes(sv_train_state *st, const sv_config *cfg, const char *changes,
                           int rank0) {
    if (rank0) printf("Continuing with changed keys from step %ld:\n", st->step);
    for (const char *line = changes; *line;) {
        size_t n = strcspn(line, "\n");
        size_t len = strlen(st->config_changes);
        if (len + n + 32 < sizeof st->config_changes)
            snprintf(st->config_changes + len, sizeof st->config_changes - len, "step %ld: %.*s\n",
                     st->step, (int)n, line);
        if (rank0) printf("  %.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
    st->seed = cfg->seed;
}

/* ---- progress display (rank 0) ---- */

/* Redraw the progress line in place only on a terminal. Open MPI hands its
 * ranks a pseudo-terminal even when mpirun's own output goes to a file (a
 * SLURM log), so under mpirun lines are the default; SHIFTVIT_PROGRESS=tty or
 * =lines forces either. */
static int progress_on_terminal(void) {
    const char *force = getenv("SHIFTVIT_PROGRESS");
    if (force && !strcmp(force, "tty")) return 1;
    if (force && !strcmp(force, "lines")) return 0;
    if (getenv("OMPI_COMM_WORLD_SIZE")) return 0;
    return isatty(STDOUT_FILENO);
}

static void progress(int tty, long done, long total, double elapsed, double ms_step, double loss,
                     double top1, double top5, int final) {
    char bar[32];
    int width = 30, filled = total ? (int)(width * done / total) : width;
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : '.';
    if (filled < width && filled >= 0) bar[filled] = '>';
    bar[width] = '\0';
    printf("%s%4ld/%ld [%s] - %.0fs %.0fms/step - loss: %.4f - top1: %.4f - top5: %.4f%s",
           tty ? "\r" : "", done, total, bar, elapsed, ms_step, loss, top1, top5,
           (!tty || final) ? "\n" : "");
    fflush(stdout);
}

/* ---- the loop ---- */

typedef struct {
    sv_dataset train, val, test;
    float *x, *probs, *losses, *dlogits;
    int *labels;
    long *perm, *idx;
} buffers;

static void free_buffers(buffers *b) {
    sv_dataset_free(&b->train);
    sv_dataset_free(&b->val);
    sv_dataset_free(&b->test);
    sv_free(b->x); sv_free(b->probs); sv_free(b->losses); sv_free(b->dlogits);
    sv_free(b->labels); sv_free(b->perm); sv_free(b->idx);
}

/* 1 if every value is finite: one parallel pass (a NaN or Inf poisons the sum). */
static int all_finite(const float *p, size_t n) {
    float s = 0.f;
#pragma omp parallel for simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += p[i] * 0.f;
    return s == 0.f;
}

/* Debug aid for the data-parallel tests (SHIFTVIT_CHECK_REPLICAS=1): the
 * replicas must hold bitwise identical weights after every update. Compares
 * an order-dependent checksum of all parameters across ranks. */
static int replicas_identical(const sv_model *m, sv_dist *d) {
    uint64_t h = 1469598103934665603ull;
    const uint32_t *w = (const uint32_t *)m->params;
    for (size_t i = 0; i < m->num_params; i++) h = (h ^ w[i]) * 1099511628211ull;
    return sv_dist_same_checksum(d, h);
}

/* SHIFTVIT_INJECT_NAN_STEP: the NaN has to be in the gradient before its
 * bucket's in-place MPI_Iallreduce starts (from then on MPI owns the buffer
 * and overwrites it with the sum), so it is planted from the gradient-ready
 * callback as soon as the classifier kernel's gradient is complete. */
typedef struct {
    sv_dist *d;
    float *poison; /* gradient element to set to NaN, NULL once done */
    size_t offset; /* its tensor's offset */
} inject_ctx;

static void ready_inject(void *ctx, size_t offset) {
    inject_ctx *c = ctx;
    if (c->poison && offset <= c->offset) {
        *c->poison = NAN;
        c->poison = NULL;
    }
    sv_allreduce_ready(c->d, offset);
}

/* sv_checkpoint_load, and with ZeRO stage 1 this rank's shards of the AdamW
 * state it holds (the file has stage 0's layout, whatever wrote it). */
static int load_checkpoint(const char *path, sv_model *m, sv_adamw *opt, sv_train_state *st, const sv_dist *d,
                           char *err) {
    if (!d->zero) return sv_checkpoint_load(path, m, opt, st, err);
    sv_adamw full = *opt;
    full.n = m->num_params;
    full.m = sv_alloc(2 * full.n * sizeof(float), "AdamW state being loaded");
    full.v = full.m + full.n;
    int rc = sv_checkpoint_load(path, m, &full, st, err);
    if (rc == 0) {
        sv_zero_take_shards(d, full.m, opt->m);
        sv_zero_take_shards(d, full.v, opt->v);
        opt->t = full.t;
    }
    sv_free(full.m);
    return rc;
}

void sv_optimizer_step(sv_dist *d, sv_model *m, sv_adamw *opt, double lr) {
    if (!d->zero) {
        sv_adamw_step(opt, m->params, m->grads, lr);
        return;
    }
    for (int b = 0; b < d->nbuckets; b++)
        sv_adamw_update(opt, opt->t + 1, m->params + d->shard_lo[b], d->gshard + d->shard_off[b],
                        opt->m + d->shard_off[b], opt->v + d->shard_off[b], d->shard_len[b], lr);
    opt->t++;
    sv_zero_allgather(d);
}

/* --trace: the backward pass in parts, one per block (or merge, classifier,
 * patch embedding), each ending when the block's last weight gradient is
 * final (the gradient-ready callback), which is also when its bucket may
 * start. Wraps the callback that starts the all-reduce. */
typedef struct {
    sv_grad_ready_fn inner;
    void *inner_ctx;
    sv_trace *trace;
    const sv_model *m;
    long step;
    double t_part;     /* start of the part being timed */
    double t_last;     /* last callback */
    char part[32];     /* its block, "" before the first callback */
} traced_ready_ctx;

/* "stage2/block3/mlp/fc1/kernel" -> "stage2/block3"; "classifier/kernel" -> "classifier". */
static void block_of(const char *tensor, char *out, size_t n) {
    const char *slash = strchr(tensor, '/');
    if (slash && !strncmp(tensor, "stage", 5)) slash = strchr(slash + 1, '/');
    size_t len = slash ? (size_t)(slash - tensor) : strlen(tensor);
    if (len >= n) len = n - 1;
    memcpy(out, tensor, len);
    out[len] = '\0';
}

static void traced_flush(traced_ready_ctx *c) {
    if (c->part[0]) sv_trace_add(c->trace, SV_TR_BACKWARD_PART, c->t_part, c->t_last, c->step, -1, c->part);
}

static void ready_traced(void *ctx, size_t offset) {
    traced_ready_ctx *c = ctx;
    c->inner(c->inner_ctx, offset);
    char part[32] = "?";
    for (int t = 0; t < c->m->num_tensors; t++)
        if (c->m->tensors[t].offset == offset) {
            block_of(c->m->tensors[t].name, part, sizeof part);
            break;
        }
    if (strcmp(part, c->part) != 0) {
        traced_flush(c);
        c->t_part = c->t_last;
        snprintf(c->part, sizeof c->part, "%s", part);
    }
    c->t_last = sv_now();
}

int sv_train(const sv_config *cfg, const sv_train_opts *opts, sv_dist *d) {
    char err[SV_ERR_LEN] = "";
    int rank0 = d->rank == 0, status = 0;
    /* Early, so that a preemption warning during start-up is not fatal: it is
     * acted upon at the first step boundary. */
    install_signal_handlers();
    if (cfg->batch_size < d->world) {
        if (rank0)
            fprintf(stderr, "shiftvit: [train] batch_size = %d is smaller than the world size %d: every rank needs at least one sample\n",
                    cfg->batch_size, d->world);
        return 1;
    }
    /* Data: every rank loads and validates the same files. */
    buffers B;
    memset(&B, 0, sizeof B);
    char dir[SV_PATH_LEN];
    int ok = sv_find_data_dir(opts->data_dir, cfg->data_dir, dir, err) == 0 &&
             sv_cifar_load_splits(dir, cfg->train_size, cfg->val_size, cfg->test_size, &B.train,
                                  &B.val, &B.test, err) == 0;
    if (!agree(d, ok)) {
        if (rank0) fprintf(stderr, "shiftvit: %s\n", err[0] ? err : "data could not be loaded on some rank");
        free_buffers(&B);
        return 1;
    }
    /* Output directory, proven writable before the first step. */
    char out[SV_PATH_LEN];
    resolve_out_dir(out, cfg, opts, d);
    ok = 1;
    int lock_fd = -1; /* held by rank 0 for the whole run */
    if (rank0 && (prepare_out_dir(out, err) != 0 || (lock_fd = sv_run_folder_lock(out, err)) < 0 ||
                  sv_run_folder_claim(out, opts->resume, opts->overwrite, err) != 0))
        ok = 0;
    if (!bcast_ok(d, ok)) {
        if (rank0) fprintf(stderr, "shiftvit: %s\n", err);
        if (lock_fd >= 0) close(lock_fd);
        free_buffers(&B);
        return 1;
    }

    int lb = sv_local_batch(cfg->batch_size, d->world);
    int eb = sv_local_batch(cfg->eval_batch_size, d->world);
    int maxb = lb > eb ? lb : eb;
    sv_model m;
    if (sv_model_create(&m, cfg, maxb, err) != 0) {
        if (rank0) fprintf(stderr, "shiftvit: %s\n", err);
        free_buffers(&B);
        return 2;
    }
    if (rank0 && m.bf16) printf("Precision: %s\n", sv_bf16_describe(m.bf16));
    sv_model_init_weights(&m, cfg->seed);
    sv_adamw opt;
    /* ZeRO stage 1: the buckets and their shards first, then AdamW state for the shards only. */
    int zero = cfg->zero_stage == 1 && d->world > 1;
    if (zero) sv_zero_setup(d, m.params, m.grads, m.num_params, BUCKET_BYTES);
    else sv_allreduce_setup(d, m.grads, m.num_params, BUCKET_BYTES);
    sv_adamw_init(&opt, zero ? d->shard_n : m.num_params, cfg);
    if (rank0 && cfg->zero_stage == 1)
        printf("ZeRO stage 1: %s\n", zero ? "each rank holds the AdamW state of 1/P of the parameters"
                                           : "nothing to shard with one rank (stage 0)");
    sv_schedule sched;
    long total = sv_config_total_steps(cfg), warmup = sv_config_warmup_steps(cfg);
    if (sv_schedule_init(&sched, cfg->lr_start, cfg->lr_max, warmup, total, err) != 0) {
        if (rank0) fprintf(stderr, "shiftvit: %s\n", err);
        status = 1;
        goto done_model;
    }
    sv_train_state st;
    memset(&st, 0, sizeof st);
    st.best_val_top1 = -1;
    st.seed = cfg->seed;
    st.world_size = d->world;
    if (opts->resume) {
        ok = load_checkpoint(opts->resume, &m, &opt, &st, d, err) == 0;
        if (!agree(d, ok)) {
            if (rank0) fprintf(stderr, "shiftvit: cannot resume: %s\n", err[0] ? err : "a rank failed to read the checkpoint");
            status = 1;
            goto done_model;
        }
        if (rank0) {
            char q[SV_QUOTED_LEN(SV_PATH_LEN)], best[64] = "no validation yet";
            if (st.best_epoch > 0)
                snprintf(best, sizeof best, "best val top-1 %.4f (epoch %ld)", st.best_val_top1, st.best_epoch);
            printf("Resumed from %s: epoch %ld, step %ld (%ld in epoch), %s\n",
                   sv_shell_quote(opts->resume, q, sizeof q), st.epoch + 1, st.step, st.step_in_epoch, best);
        }
        if (opts->changes) record_changes(&st, cfg, opts->changes, rank0);
    }
    /* Identical replicas: the seed gives the same weights everywhere; prove it. */
    if (d->world > 1) {
        double h = 0;
        for (size_t i = 0; i < m.num_params; i += 97) h += m.params[i] * (double)((i % 13) + 1);
        uint64_t bits;
        memcpy(&bits, &h, sizeof bits);
        if (!sv_dist_same_checksum(d, bits)) {
            if (rank0) fprintf(stderr, "shiftvit: ranks hold different initial weights; broadcasting rank 0's\n");
            sv_dist_bcast_floats(d, m.params, m.num_params);
        }
    }
    int K = m.num_classes, S = cfg->image_size;
    B.x = sv_alloc((size_t)maxb * S * S * 3 * sizeof(float), "input batch");
    B.probs = sv_alloc((size_t)maxb * K * sizeof(float), "probabilities");
    B.losses = sv_alloc((size_t)maxb * sizeof(float), "losses");
    B.dlogits = sv_alloc((size_t)maxb * K * sizeof(float), "logit gradients");
    B.labels = sv_alloc((size_t)maxb * sizeof(int), "labels");
    B.idx = sv_alloc((size_t)maxb * sizeof(long), "indices");
    B.perm = sv_alloc((size_t)B.train.count * sizeof(long), "permutation");
    sv_trace trace_buf, *trace = NULL;
    if (opts->trace) {
        if (sv_trace_open(&trace_buf, d, TRACE_EVENTS, err) != 0) {
            if (rank0) fprintf(stderr, "shiftvit: %s\n", err);
            status = 2;
            goto done_model;
        }
        trace = &trace_buf;
    }

    sv_metrics *mt = NULL;
    ok = 1;
    if (rank0 && opts->resume && (sv_run_folder_rewind(out, opts->resume, &st, err) != 0 ||
                                  sv_run_folder_adopt(out, opts->resume, &st, err) != 0))
        ok = 0;
    if (!bcast_ok(d, ok)) {
        if (rank0) fprintf(stderr, "shiftvit: %s\n", err);
        status = 1;
        goto done_all;
    }
    if (rank0) {
        char cpath[SV_PATH_LEN + 32];
        snprintf(cpath, sizeof cpath, "%s/config.ini", out);
        FILE *cf = fopen(cpath, "w");
        if (cf) {
            sv_config_write(cfg, cf);
            fclose(cf);
        }
        mt = sv_metrics_open(out, opts->resume != NULL, st.step, st.epoch, err);
        ok = mt != NULL;
    }
    if (!bcast_ok(d, ok)) {
        if (rank0) fprintf(stderr, "shiftvit: metrics: %s\n", err);
        status = 1;
        goto done_all;
    }
    long steps_per_epoch = (B.train.count + cfg->batch_size - 1) / cfg->batch_size;
    if (rank0) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN)], qn[SV_QUOTED_LEN(sizeof cfg->name)];
        printf("Training %s: %zu parameters, %ld train / %ld val / %ld test images from %s\n",
               sv_shell_quote(cfg->name[0] ? cfg->name : "model", qn, sizeof qn), m.num_params,
               B.train.count, B.val.count, B.test.count, sv_shell_quote(dir, q, sizeof q));
        printf("World size %d, global batch %d (%d per rank), %ld steps per epoch, %ld total (warmup %ld); output in %s\n",
               d->world, cfg->batch_size, lb, steps_per_epoch, total, warmup,
               sv_shell_quote(out, q, sizeof q));
        fflush(stdout);
    }
    const char *chk = getenv("SHIFTVIT_CHECK_REPLICAS");
    int check_replicas = chk && *chk && strcmp(chk, "0") != 0 && d->world > 1;
    long replica_checks = 0;
    /* Fault-injection for the robustness tests: SHIFTVIT_INJECT_NAN_STEP=N puts a
     * NaN into the classifier-kernel gradient on rank 0 at update N. */
    const char *inj = getenv("SHIFTVIT_INJECT_NAN_STEP");
    long inject_nan_step = inj ? atol(inj) : 0;
    int tty = rank0 && progress_on_terminal();
    /* On resume the folder's last.h5 is this state (rewound or adopted above,
     * or the resumed file itself) only if it exists. */
    char last_path[SV_PATH_LEN + 16];
    snprintf(last_path, sizeof last_path, "%s/last.h5", out);
    ckpt_ctx cc = {&m, &opt, &st, cfg, out, d, opts->resume && access(last_path, F_OK) == 0 ? st.step : -1, 0, trace};
    int stop = 0; /* 1 max_steps, 2 signal, 3 early stop, 4 non-finite */
    double t_run0 = sv_now() - st.wall_time;
    /* A resumed run that already ended (all epochs, or early stopping) has
     * nothing more to train: a requeued job (jobs/train.sbatch resumes
     * whenever last.h5 exists) must not train on past its end. */
    if (opts->resume && st.step_in_epoch == 0 &&
        (st.epoch >= cfg->epochs || (cfg->patience > 0 && st.bad_epochs >= cfg->patience))) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN)];
        if (rank0)
            printf("Nothing more to train: the run in %s ended after epoch %ld (%s; best val top-1 %.4f at epoch %ld); evaluating its final weights\n",
                   sv_shell_quote(opts->resume, q, sizeof q), st.epoch,
                   st.epoch >= cfg->epochs ? "all train.epochs done" : "early stopping",
                   st.best_val_top1, st.best_epoch);
        stop = 3;
    }

    for (; st.epoch < cfg->epochs && !stop; st.epoch++) {
        long epoch = st.epoch;
        /* A resumed epoch counts the time spent in it before the checkpoint. */
        double t_epoch = sv_now() - st.epoch_time, imgs_epoch = 0, t_steps = 0;
        st.epoch_time = 0;
        sv_epoch_permutation(B.perm, B.train.count, cfg->seed, epoch);
        if (rank0 && !(cfg->max_steps > 0 && st.step >= cfg->max_steps))
            printf("Epoch %ld/%d\n", epoch + 1, cfg->epochs);
        for (; st.step_in_epoch < steps_per_epoch; st.step_in_epoch++) {
            if (cfg->max_steps > 0 && st.step >= cfg->max_steps) { stop = 1; break; }
            double t0 = sv_now();
            long g0 = st.step_in_epoch * cfg->batch_size;
            long gcount = B.train.count - g0 < cfg->batch_size ? B.train.count - g0 : cfg->batch_size;
            long s0, n;
            sv_shard(gcount, d->rank, d->world, &s0, &n);
            for (long i = 0; i < n; i++) B.idx[i] = B.perm[g0 + s0 + i];
            double sums[5] = {0, 0, 0, 0, g_stop_signal ? 1.0 : 0.0};
            float lr = (float)sv_schedule_lr(&sched, st.step);
            d->step = st.step + 1; /* named by a collective timeout */
            inject_ctx ic = {d, NULL, 0};
            if (inject_nan_step == st.step + 1 && rank0) {
                ic.offset = m.tensors[m.num_tensors - 2].offset; /* classifier kernel */
                ic.poison = m.grads + ic.offset;
            }
            if (n > 0) {
                sv_make_batch(B.x, B.labels, &B.train, B.idx, (int)n, cfg, epoch, 1);
                sv_train_rng rng = {cfg->seed, epoch, B.idx};
                double tf = sv_now();
                const float *logits = sv_model_forward(&m, B.x, (int)n, &rng);
                batch_metrics(logits, B.probs, B.losses, B.labels, (int)n, K, cfg->label_smoothing,
                              &sums[0], &sums[1], &sums[2]);
                sv_softmax_xent_backward(B.dlogits, B.probs, B.labels, (int)n, K, 1.0f / (float)gcount,
                                         cfg->label_smoothing);
                double tb = sv_now();
                sv_trace_add(trace, SV_TR_FORWARD, tf, tb, d->step, -1, NULL);
                sv_allreduce_begin(d);
                sv_grad_ready_fn ready = ic.poison ? ready_inject : sv_allreduce_ready;
                void *ready_ctx = ic.poison ? (void *)&ic : (void *)d;
                traced_ready_ctx tc = {ready, ready_ctx, trace, &m, d->step, tb, tb, ""};
                if (trace) sv_model_backward(&m, B.dlogits, ready_traced, &tc);
                else sv_model_backward(&m, B.dlogits, ready, ready_ctx);
                if (trace) {
                    traced_flush(&tc);
                    sv_trace_add(trace, SV_TR_BACKWARD, tb, sv_now(), d->step, -1, NULL);
                }
            } else {
                /* More ranks than samples in this (last) batch: contribute zeros. */
                memset(m.grads, 0, m.num_params * sizeof(float));
                sv_allreduce_begin(d);
                if (ic.poison) *ic.poison = NAN; /* no bucket has started yet */
            }
            sv_allreduce_finish(d);
            sv_trace_add_buckets(trace, d, d->step, zero ? SV_TR_REDUCE_SCATTER : SV_TR_ALLREDUCE);
            sums[3] = (double)n;
            sv_allreduce_doubles(d, sums, 5);
            /* The reduced gradient is the same on every rank, so every rank
             * takes the same decision, before the update touches the weights. */
            int finite = zero ? sv_dist_all_ok(d, all_finite(d->gshard, d->shard_n)) : all_finite(m.grads, m.num_params);
            if (!isfinite(sums[0]) || !finite) {
                /* Stage 1: no rank holds the whole reduced gradient to name a tensor in. */
                int t = zero ? -1 : sv_model_first_nonfinite(&m, m.grads, NULL);
                if (rank0) {
                    fprintf(stderr, "shiftvit: non-finite %s at step %ld (epoch %ld)%s%s; stopping before the update.\n",
                            isfinite(sums[0]) ? "gradient" : "loss", st.step + 1, epoch + 1,
                            t >= 0 ? ": first non-finite tensor " : "", t >= 0 ? m.tensors[t].name : "");
                    char q[SV_QUOTED_LEN(SV_PATH_LEN + 16)];
                    if (cc.saved_step >= 0)
                        fprintf(stderr, "shiftvit: the newest checkpoint, %s (step %ld), is intact; lower optim.lr_max and resume from it.\n",
                                quote_in(out, "last.h5", q, sizeof q), cc.saved_step);
                    else
                        fprintf(stderr, "shiftvit: no checkpoint was written yet; lower optim.lr_max and start again.\n");
                }
                stop = 4;
                status = 3;
                break;
            }
            double to = sv_now();
            sv_optimizer_step(d, &m, &opt, lr);
            sv_trace_add(trace, SV_TR_OPTIMIZER, to, sv_now(), d->step, -1, NULL);
            if (zero) sv_trace_add_buckets(trace, d, d->step, SV_TR_ALLGATHER);
            st.step++;
            if (check_replicas) {
                if (!replicas_identical(&m, d)) {
                    if (rank0) fprintf(stderr, "shiftvit: replicas differ after step %ld\n", st.step);
                    stop = 4;
                    status = 2;
                    break;
                }
                replica_checks++;
            }
            st.run_loss += sums[0];
            st.run_top1 += sums[1];
            st.run_top5 += sums[2];
            st.run_count += sums[3];
            double dt = sv_now() - t0;
            t_steps += dt;
            imgs_epoch += sums[3];
            if (rank0) {
                double rl = st.run_loss / st.run_count, r1 = st.run_top1 / st.run_count,
                       r5 = st.run_top5 / st.run_count;
                sv_step_row row = {st.step, epoch + 1, lr, sums[0] / sums[3], sums[1] / sums[3],
                                   sums[2] / sums[3], sums[3] / dt};
                sv_metrics_step(mt, &row);
                long done = st.step_in_epoch + 1;
                int last = done == steps_per_epoch;
                if (tty || last || done % cfg->log_every == 0)
                    progress(tty, done, steps_per_epoch, sv_now() - t_epoch, 1e3 * dt, rl, r1, r5, last);
            }
            if (sums[4] > 0) {
                st.step_in_epoch++;
                stop = 2;
                break;
            }
        }
        if (stop == 4) break;
        if (stop == 1 || stop == 2) {
            if (st.step_in_epoch < steps_per_epoch) {
                /* Mid-epoch: checkpoint to resume exactly here. */
                st.wall_time = sv_now() - t_run0;
                st.epoch_time = sv_now() - t_epoch;
                st.world_size = d->world;
                if (save_checkpoint(&cc, "last.h5") && rank0) {
                    char q[SV_QUOTED_LEN(SV_PATH_LEN) * 3];
                    if (stop == 2)
                        printf("\nStopped by signal at step %ld (epoch %ld). Resume with: %s\n",
                               st.step, epoch + 1, resume_command(out, d->world, q, sizeof q));
                    else
                        printf("Reached train.max_steps = %ld; checkpoint %s\n", cfg->max_steps,
                               quote_in(out, "last.h5", q, sizeof q));
                }
                break;
            }
        }
        /* End of epoch: validation (every val_every-th epoch and the last),
         * early stopping, checkpoints, metrics. */
        long finished = epoch + 1;
        int validate = finished % cfg->val_every == 0 || finished == cfg->epochs ||
                       (cfg->max_steps > 0 && st.step >= cfg->max_steps);
        sv_eval_result v = {NAN, NAN, NAN, 0};
        if (validate) {
            double te = sv_now();
            v = sv_evaluate(&m, &B.val, cfg, d, B.x, B.labels, B.idx);
            sv_trace_add(trace, SV_TR_EVAL, te, sv_now(), st.step, -1, "val");
        }
        double secs = sv_now() - t_epoch;
        double lr_now = sv_schedule_lr(&sched, st.step);
        double tl = st.run_count ? st.run_loss / st.run_count : 0, t1 = st.run_count ? st.run_top1 / st.run_count : 0,
               t5 = st.run_count ? st.run_top5 / st.run_count : 0;
        int improved = validate && v.top1 > st.best_val_top1;
        if (improved) {
            st.best_val_top1 = v.top1;
            st.best_epoch = epoch + 1;
            st.bad_epochs = 0;
        } else if (validate) {
            st.bad_epochs++; /* counts validations without improvement */
        }
        if (rank0) {
            char val_text[96] = "val not run (train.val_every)";
            if (validate)
                snprintf(val_text, sizeof val_text, "val loss %.4f top1 %.4f top5 %.4f", v.loss, v.top1, v.top5);
            printf("epoch %ld/%d: train loss %.4f top1 %.4f top5 %.4f | %s | %.1f images/s | lr %.3g | %.1f s%s\n",
                   epoch + 1, cfg->epochs, tl, t1, t5, val_text,
                   t_steps > 0 ? imgs_epoch / t_steps : 0.0, lr_now, secs, improved ? " | new best" : "");
            fflush(stdout);
            sv_epoch_row row = {epoch + 1, tl, t1, t5, v.loss, v.top1, v.top5, lr_now, secs};
            sv_metrics_epoch(mt, &row);
        }
        int early = cfg->patience > 0 && st.bad_epochs >= cfg->patience;
        if (early) stop = 3;
        /* The state saved describes the start of the next epoch. */
        st.epoch = finished;
        st.step_in_epoch = 0;
        st.run_loss = st.run_top1 = st.run_top5 = st.run_count = 0;
        st.wall_time = sv_now() - t_run0;
        st.world_size = d->world;
        if (improved) save_checkpoint(&cc, "best.h5");
        if (finished % cfg->checkpoint_every == 0 || early || finished == cfg->epochs || stop == 1) {
            char name[64];
            snprintf(name, sizeof name, "epoch_%04ld.h5", finished);
            if (save_checkpoint(&cc, name)) rotate_checkpoints(&cc, finished);
        }
        save_checkpoint(&cc, "last.h5");
        if (early && rank0)
            printf("Early stopping: val top-1 has not improved for %d %s (best %.4f at epoch %ld)\n",
                   cfg->patience, cfg->val_every > 1 ? "validations" : "epochs", st.best_val_top1,
                   st.best_epoch);
        st.epoch = finished - 1; /* the for-loop increments it */
        if (stop == 2 && rank0) {
            char q[SV_QUOTED_LEN(SV_PATH_LEN) * 3];
            printf("Stopped by signal at the end of epoch %ld. Resume with: %s\n", finished,
                   resume_command(out, d->world, q, sizeof q));
        }
        if (stop) { st.epoch++; break; }
    }
    if (rank0) sv_metrics_flush(mt);
    if (check_replicas && rank0 && status == 0)
        printf("Replica check: weights bitwise identical on all %d ranks after each of %ld updates\n",
               d->world, replica_checks);
    if (stop == 0 || stop == 1 || stop == 3) {
        double te = sv_now();
        sv_eval_result t = sv_evaluate(&m, &B.test, cfg, d, B.x, B.labels, B.idx);
        sv_trace_add(trace, SV_TR_EVAL, te, sv_now(), st.step, -1, "test");
        if (rank0) {
            printf("Evaluated %ld test images on %d rank(s)\n", t.count, d->world);
            printf("TEST loss=%.4f top1=%.4f top5=%.4f\n", t.loss, t.top1, t.top5);
            char q[SV_QUOTED_LEN(SV_PATH_LEN)];
            printf("Run directory: %s (%.1f min)\n", sv_shell_quote(out, q, sizeof q),
                   (sv_now() - t_run0) / 60.0);
        }
    }
    /* Training goes on when a checkpoint cannot be written (the weights in
     * memory are fine and the previous files stay intact), but the run must
     * not look clean: exit status 4. */
    if (cc.failures > 0 && status == 0) {
        if (rank0)
            fprintf(stderr, "shiftvit: %d checkpoint(s) could not be written (see above); the newest one on disk is from step %ld\n",
                    cc.failures, cc.saved_step);
        status = 4;
    }
    if (trace) {
        if (sv_trace_write(trace, d, opts->trace, err) != 0) {
            if (rank0) fprintf(stderr, "shiftvit: %s\n", err);
            if (status == 0) status = 2;
        } else if (rank0) {
            char q[SV_QUOTED_LEN(SV_PATH_LEN)];
            printf("Trace: %s (open in ui.perfetto.dev; summary: scripts/trace_summary.py)\n",
                   sv_shell_quote(opts->trace, q, sizeof q));
        }
    }
done_all:
    if (rank0) sv_metrics_close(mt);
done_model:
    sv_adamw_free(&opt);
    sv_model_free(&m);
    free_buffers(&B);
    if (lock_fd >= 0) close(lock_fd);
    return status;
}
