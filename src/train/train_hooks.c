/* Pieces of the training step around the model: the optimizer update (stage 0
 * or ZeRO stage 1), finiteness and replica checks, and the gradient-ready
 * callbacks that plant a test NaN or time the backward pass per block
 * (train_internal.h). */
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/layers.h"
#include "shiftvit/settings.h"
#include "shiftvit/text.h"
#include "shiftvit/trace.h"
#include "train_internal.h"

/* 1 if every value is finite: one parallel pass (a NaN or Inf poisons the sum). */
int tr_all_finite(const float *p, size_t n) {
    float s = 0.f;
#pragma omp parallel for simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += p[i] * 0.f;
    return s == 0.f;
}

/* Debug aid for the data-parallel tests (SHIFTVIT_CHECK_REPLICAS=1): the
 * replicas must hold bitwise identical weights after every update. Compares
 * an order-dependent checksum of all parameters across ranks. */
int tr_replicas_identical(const sv_model *m, sv_dist *d) {
    uint64_t h = 1469598103934665603ull;
    const uint32_t *w = (const uint32_t *)m->params;
    for (size_t i = 0; i < m->num_params; i++) h = (h ^ w[i]) * 1099511628211ull;
    return sv_dist_same_checksum(d, h);
}

/* SHIFTVIT_INJECT_NAN_STEP: the NaN has to be in the gradient before its
 * bucket's in-place MPI_Iallreduce starts (from then on MPI owns the buffer
 * and overwrites it with the sum), so it is planted from the gradient-ready
 * callback as soon as the classifier kernel's gradient is complete. */
void tr_ready_inject(void *ctx, size_t offset) {
    inject_ctx *c = ctx;
    if (c->poison && offset <= c->offset) {
        *c->poison = NAN;
        c->poison = NULL;
    }
    sv_allreduce_ready(c->d, offset);
}

int tr_check_batch_split(const sv_config *cfg, int world, int rank0) {
    int A = cfg->accumulation_steps;
    long parts = (long)world * A;
    if (cfg->batch_size >= parts) return 0;
    if (rank0 && A == 1)
        fprintf(stderr, "shiftvit: [train] batch_size = %d is smaller than the world size %d: every rank needs at least one sample\n",
                cfg->batch_size, world);
    else if (rank0)
        fprintf(stderr, "shiftvit: [train] accumulation_steps = %d: world size %d x %d = %ld micro-batches, more than "
                        "[train] batch_size = %d: every micro-batch needs at least one sample\n",
                A, world, A, parts, cfg->batch_size);
    return -1;
}

void sv_optimizer_setup(sv_dist *d, sv_model *m, sv_adamw *opt, const sv_config *cfg, size_t bucket_bytes) {
    if (cfg->zero_stage == 1 && d->world > 1) sv_zero_setup(d, m->params, m->grads, m->num_params, bucket_bytes);
    else sv_allreduce_setup(d, m->grads, m->num_params, bucket_bytes);
    if (cfg->allreduce_dtype == 1) sv_exchange_bf16(d);
    sv_adamw_init(opt, d->zero ? d->shard_n : m->num_params, sv_adamw_settings_from(cfg));
}

void sv_optimizer_step(sv_dist *d, sv_model *m, sv_adamw *opt, double lr) {
    if (!d->zero) {
        sv_adamw_step(opt, m->params, m->params_bf16, m->grads, lr);
        return;
    }
    for (int b = 0; b < d->nbuckets; b++)
        sv_adamw_update(opt, opt->t + 1, m->params + d->shard_lo[b], NULL, d->gshard + d->shard_off[b],
                        opt->m + d->shard_off[b], opt->v + d->shard_off[b], d->shard_len[b], lr);
    opt->t++;
    sv_zero_allgather(d);
    /* The other ranks' shards arrive in fp32: in bf16 mode the next forward
     * rounds the whole copy (one sweep; gathering a bf16 copy as well would
     * double the all-gather's messages). */
    sv_model_params_changed(m);
}

/* "stage2/block3/mlp/fc1/kernel" -> "stage2/block3"; "classifier/kernel" -> "classifier". */
static void tr_block_of(const char *tensor, char *out, size_t n) {
    const char *slash = strchr(tensor, '/');
    if (slash && !strncmp(tensor, "stage", 5)) slash = strchr(slash + 1, '/');
    size_t len = slash ? (size_t)(slash - tensor) : strlen(tensor);
    if (len >= n) len = n - 1;
    memcpy(out, tensor, len);
    out[len] = '\0';
}

void tr_traced_flush(traced_ready_ctx *c) {
    if (c->part[0]) sv_trace_add(c->trace, SV_TR_BACKWARD_PART, c->t_part, c->t_last, c->step, -1, c->part);
}

void tr_ready_traced(void *ctx, size_t offset) {
    traced_ready_ctx *c = ctx;
    c->inner(c->inner_ctx, offset);
    char part[32] = "?";
    for (int t = 0; t < c->m->num_tensors; t++)
        if (c->m->tensors[t].offset == offset) {
            tr_block_of(c->m->tensors[t].name, part, sizeof part);
            break;
        }
    if (strcmp(part, c->part) != 0) {
        tr_traced_flush(c);
        c->t_part = c->t_last;
        snprintf(c->part, sizeof c->part, "%s", part);
    }
    c->t_last = sv_now();
}

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

void tr_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int tr_stop_requested(void) { return g_stop_signal != 0; }

void tr_batch_metrics(const float *logits, float *probs, float *losses, const int *labels, int n, int K,
                      float smoothing, double *loss, double *top1, double *top5) {
    sv_softmax_xent_forward(losses, probs, logits, labels, n, K, smoothing);
    for (int i = 0; i < n; i++) {
        *loss += losses[i];
        *top1 += sv_topk_correct(logits + (size_t)i * K, K, labels[i], 1);
        *top5 += sv_topk_correct(logits + (size_t)i * K, K, labels[i], K < 5 ? K : 5);
    }
}
