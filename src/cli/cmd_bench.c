/* `shiftvit bench`: times training steps (or inference, or the gradient
 * all-reduce alone) on synthetic data after warm-up (issues 5 and 6). */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/settings.h"
#include "shiftvit/trace.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/rng.h"
#include "shiftvit/train.h"


static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit bench [-c CONFIG] [--set S.K=V]... [--steps N] [--warmup N]\n"
            "                      [--batch N] [--eval [--profile]] [--allreduce [--bytes N]]\n"
            "                      [--trace FILE] [--json]\n\n"
            "Times the training step (forward, backward, all-reduce, AdamW) on synthetic\n"
            "images after warm-up and prints median/min/max step time, images/s, GFLOP/s,\n"
            "model FLOP utilisation against a measured sgemm peak, peak RSS and the time per\n"
            "phase; ends with one line images_per_s=.... (with --json: only the JSON object)\n\n"
            "  -c, --config FILE  model config (default configs/cifar10_keras.ini)\n"
            "  --set S.K=V        override one config key (repeatable), e.g. --set train.precision=bf16,\n"
            "                     --set train.zero_stage=1\n"
            "  --steps N          timed steps (default 10)\n"
            "  --warmup N         untimed steps first (default 2)\n"
            "  --batch N          global batch (default train.batch_size)\n"
            "  --eval             time the inference forward pass instead\n"
            "  --profile          with --eval: also the median time per step of each kind of\n"
            "                     kernel (patch gather and product, shift + LayerNorm, fc1,\n"
            "                     GELU, fc2, residual, merge LayerNorm + gather and product,\n"
            "                     pooling, classifier), timed around each kernel call\n"
            "  --allreduce        time only the all-reduce of the gradient buffer: time and bus\n"
            "                     bandwidth per call (OSU-style: 2(P-1)/P x bytes / time)\n"
            "  --bytes N          with --allreduce: a buffer of N bytes (suffix K, M or G:\n"
            "                     KiB, MiB, GiB) instead of the model's gradient\n"
            "  --trace FILE       write the timeline of the timed steps (Chrome trace-event\n"
            "                     JSON, as train --trace)\n"
            "  --json             print the results as one JSON object\n"
            "  -h, --help         this text\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Measured speed of the matrix product on a shape typical of this model
 * (stage 3 fc1 at batch 256: 2304 x 768 x 384), GFLOP/s with the current
 * thread count: BLIS sgemm, or with bf != NULL the bf16 product of operands
 * already stored in bf16 (as the model stores its activations and weights). */
static double measure_gemm_peak(sv_bf16 *bf) {
    int M = 2304, N = 768, K = 384;
    float *a = sv_alloc((size_t)M * K * sizeof(float), "bench");
    float *b = sv_alloc((size_t)K * N * sizeof(float), "bench");
    float *c = sv_alloc((size_t)M * N * sizeof(float), "bench");
    uint16_t *a16 = sv_alloc((size_t)M * K * sizeof(uint16_t), "bench");
    uint16_t *b16 = sv_alloc((size_t)K * N * sizeof(uint16_t), "bench");
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    sv_bf16_round_array(a16, a, (size_t)M * K);
    sv_bf16_round_array(b16, b, (size_t)K * N);
    double best = 1e30;
    for (int r = 0; r < 12; r++) {
        double t0 = sv_now();
        if (bf) sv_bf16_gemm(bf, 0, 0, M, N, K, sv_mat_bf16(a16), K, sv_mat_bf16(b16), N, c, N);
        else sv_gemm(0, 0, M, N, K, 1.f, a, K, b, N, 0.f, c, N);
        double dt = sv_now() - t0;
        if (r >= 2 && dt < best) best = dt;
    }
    sv_free(a); sv_free(b); sv_free(c); sv_free(a16); sv_free(b16);
    return 2.0 * M * N * K / best / 1e9;
}

static void stats(double *v, int n, double *med, double *lo, double *hi) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *lo = v[0];
    *hi = v[n - 1];
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_allreduce(sv_dist *d, size_t n, int steps, int warmup, int json) {
    if (d->world == 1) {
        if (d->rank == 0)
            fprintf(stderr, "shiftvit bench: --allreduce needs several ranks (mpirun -np P, P >= 2): one rank has nothing to all-reduce\n");
        return 1;
    }
    float *buf = sv_alloc(n * sizeof(float), "all-reduce buffer");
    double *t = calloc((size_t)steps, sizeof(double));
    sv_allreduce_setup(d, buf, n, 4u << 20);
    for (int s = -warmup; s < steps; s++) {
        sv_dist_barrier(d);
        double t0 = sv_now();
        sv_allreduce_begin(d);
        sv_allreduce_finish(d);
        double dt = sv_now() - t0;
        dt = sv_dist_max_double(d, dt);
        if (s >= 0) t[s] = dt;
    }
    double med, lo, hi;
    stats(t, steps, &med, &lo, &hi);
    double bytes = (double)n * sizeof(float);
    double algbw = bytes / med / 1e9, busbw = d->world > 1 ? algbw * 2.0 * (d->world - 1) / d->world : 0;
    if (d->rank == 0) {
        if (json)
            printf("{\"world_size\":%d,\"bytes\":%.0f,\"bucket_bytes\":%u,\"median_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f,\"algbw_GBps\":%.3f,\"busbw_GBps\":%.3f}\n",
                   d->world, bytes, 4u << 20, 1e3 * med, 1e3 * lo, 1e3 * hi, algbw, busbw);
        else
            printf("all-reduce of %.2f MiB in 4 MiB buckets, %d ranks: median %.2f ms (min %.2f, max %.2f), algbw %.2f GB/s, busbw %.2f GB/s\n",
                   bytes / 1048576.0, d->world, 1e3 * med, 1e3 * lo, 1e3 * hi, algbw, busbw);
        if (!json) printf("allreduce_ms=%.3f\n", 1e3 * med);
    }
    sv_allreduce_free(d);
    free(t);
    sv_free(buf);
    return 0;
}

/* "4096", "64K", "45M", "1G" (binary units) -> bytes; -1 when not a size of
 * at least one float, -2 when over 16 GiB. */
static int parse_bytes(const char *s, size_t *out) {
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    double mult = 1;
    if (*end == 'K' || *end == 'k') mult = 1024.0, end++;
    else if (*end == 'M' || *end == 'm') mult = 1048576.0, end++;
    else if (*end == 'G' || *end == 'g') mult = 1073741824.0, end++;
    if (*end != '\0') return -1;
    if (v * mult > 16.0 * 1073741824.0) return -2;
    *out = (size_t)(v * mult);
    return *out >= sizeof(float) ? 0 : -1;
}

/* ------------------------------------------------------------ options */

typedef struct {
    const char *config, *trace;
    sv_cli_sets sets;
    long steps, warmup, batch;  /* batch 0: train.batch_size */
    int eval, json, allreduce, profile;
    size_t bytes;               /* --bytes, 0: the model's gradient */
} bench_opts;

enum { OPT_SET = 256, OPT_STEPS, OPT_WARMUP, OPT_BATCH, OPT_EVAL, OPT_JSON, OPT_ALLREDUCE, OPT_BYTES, OPT_TRACE, OPT_PROFILE };

static const struct option bench_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"config", required_argument, NULL, 'c'},
    {"set", required_argument, NULL, OPT_SET},
    {"steps", required_argument, NULL, OPT_STEPS},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"eval", no_argument, NULL, OPT_EVAL},
    {"json", no_argument, NULL, OPT_JSON},
    {"allreduce", no_argument, NULL, OPT_ALLREDUCE},
    {"bytes", required_argument, NULL, OPT_BYTES},
    {"trace", required_argument, NULL, OPT_TRACE},
    {"profile", no_argument, NULL, OPT_PROFILE},
    {NULL, 0, NULL, 0},
};

/* One option of bench_options into o. Returns -1 to go on, else the exit status. */
static int bench_option(const sv_cli *cli, int c, char **argv, bench_opts *o) {
    switch (c) {
    case 'h':
        if (cli->d->rank == 0) bench_usage(stdout);
        return 0;
    case 'c': o->config = optarg; return -1;
    case OPT_SET: return sv_cli_sets_add(&o->sets, optarg) ? 2 : -1;
    case OPT_STEPS: return sv_cli_int(cli, "bench", "--steps", optarg, 1, 1000000, &o->steps) ? 1 : -1;
    case OPT_WARMUP: return sv_cli_int(cli, "bench", "--warmup", optarg, 0, 1000000, &o->warmup) ? 1 : -1;
    case OPT_BATCH: return sv_cli_int(cli, "bench", "--batch", optarg, 1, 1 << 24, &o->batch) ? 1 : -1;
    case OPT_EVAL: o->eval = 1; return -1;
    case OPT_JSON: o->json = 1; return -1;
    case OPT_ALLREDUCE: o->allreduce = 1; return -1;
    case OPT_TRACE: o->trace = optarg; return -1;
    case OPT_PROFILE: o->profile = 1; return -1;
    case OPT_BYTES: {
        int rc = parse_bytes(optarg, &o->bytes);
        if (rc == 0) return -1;
        if (cli->d->rank == 0)
            fprintf(stderr, "shiftvit bench: --bytes '%s': %s\n", optarg,
                    rc == -2 ? "more than 16G, the most this benchmark allocates"
                             : "expected a size of at least 4 bytes such as 4096, 64K, 45M or 1G");
        return 1;
    }
    default: return sv_cli_bad_option(cli, "bench", c, argv, bench_options);
    }
}

/* Returns -1 to go on, else the exit status (0 after --help). */
static int parse_bench_options(const sv_cli *cli, int argc, char **argv, bench_opts *o) {
    sv_cli_getopt_start();
    int c, rc = -1;
    while (rc < 0 && (c = sv_cli_next(argc, argv, ":hc:", bench_options)) != -1) rc = bench_option(cli, c, argv, o);
    if (rc >= 0) return rc;
    if (optind < argc) return sv_cli_extra_argument(cli, "bench", argv[optind]);
    if (sv_cli_path(cli, "bench", "-c", o->config) || sv_cli_path(cli, "bench", "--trace", o->trace)) return 1;
    const char *clash = o->trace && o->allreduce ? "--trace times the training or inference step, not --allreduce"
                        : o->bytes && !o->allreduce ? "--bytes applies to --allreduce only"
                        : o->profile && !o->eval    ? "--profile applies to --eval only"
                                                    : NULL;
    if (clash) {
        if (cli->d->rank == 0) fprintf(stderr, "shiftvit bench: %s\n", clash);
        return 1;
    }
    char err[SV_ERR_LEN];
    if (o->trace && sv_trace_check_path(cli->d, o->trace, err) != 0) {
        if (cli->d->rank == 0) fprintf(stderr, "shiftvit bench: %s\n", err);
        return 1;
    }
    return -1;
}

/* ------------------------------------------------------------ the timed steps */

/* Synthetic inputs: uniform pixels, labels cycling through the classes. */
typedef struct {
    float *x;
    int *labels;
    long *ids;   /* global sample ids (dropout and drop-path draws) */
    int n;       /* this rank's images */
} bench_batch;

static void make_bench_batch(bench_batch *b, const sv_config *cfg, long start, long n) {
    int S = cfg->image_size, K = cfg->num_classes;
    b->n = (int)n;
    b->x = sv_alloc((size_t)n * S * S * 3 * sizeof(float), "bench input");
    b->labels = sv_alloc((size_t)n * sizeof(int), "bench labels");
    b->ids = sv_alloc((size_t)n * sizeof(long), "bench ids");
    uint64_t key = sv_rng_key(cfg->seed, 99, 0, 0, 0);
    for (size_t i = 0; i < (size_t)n * S * S * 3; i++) b->x[i] = sv_rng_uniform(key, i);
    for (long i = 0; i < n; i++) {
        b->labels[i] = (int)(i % K);
        b->ids[i] = start + i;
    }
}

static void free_bench_batch(bench_batch *b) {
    sv_free(b->x);
    sv_free(b->labels);
    sv_free(b->ids);
}

/* Runs warmup + steps steps (the trainer's step, or the inference forward
 * pass); tot[s] gets each timed step's time (max over ranks), ph the summed
 * phases (sv_step phase order). */
static void run_steps(const bench_opts *o, const sv_config *cfg, sv_step *st, const bench_batch *b, double *tot,
                      double ph[4], double *prof) {
    sv_dist *d = st->d;
    sv_trace *trace = st->trace;
    int warned = 0;
    for (long s = -o->warmup; s < o->steps; s++) {
        st->trace = s >= 0 ? trace : NULL; /* the timed steps only */
        if (s >= 0 && prof) sv_model_set_profile(st->m, prof + (size_t)s * SV_PROF_KINDS); /* one row per step */
        sv_dist_barrier(d);
        d->step = s + o->warmup + 1; /* 1, 2, ... as in training */
        double t0 = sv_now();
        if (o->eval) {
            sv_model_forward(st->m, b->x, b->n, NULL);
            st->phase[0] = sv_now() - t0;
        } else {
            sv_train_rng rng = {cfg->seed, s + o->warmup, b->ids};
            double sums[5] = {0, 0, 0, 0, 0};
            sv_step_gradient(st, b->x, b->labels, b->n, cfg->batch_size, &rng, sums);
            if (!sv_step_gradient_finite(st) && d->rank == 0 && !warned++) /* collective under ZeRO */
                fprintf(stderr, "shiftvit bench: warning: non-finite gradient at step %ld (the updates are timed anyway)\n",
                        d->step);
            sv_step_update(st, 1e-4f);
        }
        double dt = sv_dist_max_double(d, sv_now() - t0);
        if (s < 0) continue;
        tot[s] = dt;
        for (int i = 0; i < (o->eval ? 1 : 4); i++) ph[i] += st->phase[i];
        if (o->eval) sv_trace_add(st->trace, SV_TR_FORWARD, t0, t0 + st->phase[0], s + 1, -1, NULL);
    }
}

/* The input pipeline of a training step: this rank's share of the batch built
 * by sv_make_batch (decode-free: CIFAR-10 is held as uint8) with the config's
 * augmentation, from random pixels, `steps` times; mean seconds. The trainer
 * builds each batch before its step, so this adds to the step time. Writes
 * into b->x, whose synthetic images are not needed any more. */
static double time_input(const sv_config *cfg, const bench_batch *b, long steps) {
    sv_dataset ds = {b->n, sv_alloc((size_t)b->n * SV_CIFAR_PIXELS, "bench images"),
                     sv_alloc((size_t)b->n, "bench labels")};
    uint64_t key = sv_rng_key(cfg->seed, 98, 0, 0, 0);
    for (size_t i = 0; i < (size_t)b->n * SV_CIFAR_PIXELS; i++) ds.images[i] = (uint8_t)sv_rng_bits(key, i);
    for (long i = 0; i < b->n; i++) ds.labels[i] = (uint8_t)(i % 10);
    long *idx = sv_alloc((size_t)b->n * sizeof(long), "bench indices");
    for (long i = 0; i < b->n; i++) idx[i] = i;
    int *labels = sv_alloc((size_t)b->n * sizeof(int), "bench labels");
    double t0 = sv_now();
    for (long s = 0; s < steps; s++) sv_make_batch(b->x, labels, &ds, idx, b->n, sv_batch_settings_from(cfg), s, 1);
    double mean = (sv_now() - t0) / (double)steps;
    sv_free(labels);
    sv_free(idx);
    sv_dataset_free(&ds);
    return mean;
}

/* ------------------------------------------------------------ the report */

typedef struct {
    double med, lo, hi;        /* step time, s */
    double ips, gflops, flop_img;
    double peak, mfu, peak16, mfu16;
    double rss_mib, state_mib; /* peak RSS (max over ranks), AdamW state per rank */
    double ph[4];              /* mean phase times, ms */
    double input_ms;           /* training: building a batch (time_input), rank 0 */
    int profiled;              /* --profile: prof holds rank 0's ms per step of each kernel kind, median over steps */
    double prof[SV_PROF_KINDS];
} bench_result;

/* --profile: the products' and the other kernels' summed ms per step. */
static void profile_split(const bench_result *r, double *products, double *rest) {
    *products = *rest = 0;
    for (int k = 0; k < SV_PROF_KINDS; k++) *(sv_profile_is_product[k] ? products : rest) += r->prof[k];
}

static void print_json(const bench_opts *o, const sv_config *cfg, const sv_model *m, int zero, const bench_result *r,
                       int world) {
    printf("{\"mode\":\"%s\",\"precision\":\"%s\",\"bf16_peak_gflops_per_rank\":%.2f,\"mfu_bf16\":%.4f,\"world_size\":%d,\"threads\":%d,\"global_batch\":%d,\"steps\":%ld,"
           "\"median_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f,\"images_per_s\":%.2f,\"gflops\":%.2f,"
           "\"sgemm_peak_gflops_per_rank\":%.2f,\"mfu\":%.4f,\"peak_rss_mib\":%.1f,"
           "\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"allreduce_wait_ms\":%.3f,\"optimizer_ms\":%.3f,"
           "\"zero_stage\":%d,\"optimizer_state_mib_per_rank\":%.1f,\"input_ms\":%.3f",
           o->eval ? "eval" : "train", sv_precision_names[m->bf16 ? SV_BF16 : SV_FP32], r->peak16, r->mfu16, world, omp_get_max_threads(),
           cfg->batch_size, o->steps, 1e3 * r->med, 1e3 * r->lo, 1e3 * r->hi, r->ips, r->gflops, r->peak, r->mfu,
           r->rss_mib, r->ph[0], r->ph[1], r->ph[2], r->ph[3], zero, r->state_mib, r->input_ms);
    if (r->profiled) {
        double prod, rest;
        profile_split(r, &prod, &rest);
        printf(",\"profile_ms\":{");
        for (int k = 0; k < SV_PROF_KINDS; k++) printf("%s\"%s\":%.3f", k ? "," : "", sv_profile_names[k], r->prof[k]);
        printf("},\"profile_products_ms\":%.3f,\"profile_other_ms\":%.3f", prod, rest);
    }
    printf("}\n");
}

static void print_text(const bench_opts *o, const sv_config *cfg, const sv_model *m, int zero, const bench_result *r,
                       int world) {
    printf("%s step (%s), global batch %d on %d rank(s) x %d thread(s), %ld steps after %ld warm-up:\n",
           o->eval ? "Inference" : "Training", sv_precision_names[m->bf16 ? SV_BF16 : SV_FP32], cfg->batch_size, world, omp_get_max_threads(),
           o->steps, o->warmup);
    if (m->bf16) printf("  precision   %s\n", sv_bf16_describe(m->bf16));
    printf("  step time   median %.1f ms, min %.1f, max %.1f\n", 1e3 * r->med, 1e3 * r->lo, 1e3 * r->hi);
    printf("  throughput  %.1f images/s, %.1f GFLOP/s (%.1f MFLOP per image)\n", r->ips, r->gflops, r->flop_img / 1e6);
    printf("  MFU         %.1f%% of the measured sgemm peak (%.1f GFLOP/s per rank)\n", 100 * r->mfu, r->peak);
    if (m->bf16)
        printf("  MFU (bf16)  %.1f%% of the measured bf16 product (%.1f GFLOP/s per rank)\n", 100 * r->mfu16, r->peak16);
    printf("  peak RSS    %.1f MiB per rank (max over ranks); AdamW state %.1f MiB per rank%s\n", r->rss_mib,
           r->state_mib, zero ? " (ZeRO stage 1)" : "");
    printf("  rank 0 phases (mean ms): forward %.1f, backward %.1f, all-reduce wait %.1f, optimiser %.1f\n", r->ph[0],
           r->ph[1], r->ph[2], r->ph[3]);
    if (r->profiled) {
        double prod, rest;
        profile_split(r, &prod, &rest);
        printf("  kernels (rank 0, ms per step, median over the steps):\n");
        for (int k = 0; k < SV_PROF_KINDS; k++)
            printf("    %-24s %8.2f  %5.1f%%%s\n", sv_profile_names[k], r->prof[k], 100 * r->prof[k] / (prod + rest),
                   sv_profile_is_product[k] ? "  (product)" : "");
        printf("    %-24s %8.2f  %5.1f%%\n    %-24s %8.2f  %5.1f%%\n", "products", prod, 100 * prod / (prod + rest),
               "other kernels", rest, 100 * rest / (prod + rest));
    }
    if (!o->eval)
        printf("  input       %.2f ms to build rank 0's batch with the config's augmentation (%.1f%% of step + input)\n",
               r->input_ms, 100 * r->input_ms / (r->input_ms + 1e3 * r->med));
    printf("images_per_s=%.2f\n", r->ips);
}

/* Step statistics, FLOP rates against the measured GEMM peaks, memory. Collective. */
static void summarize(const bench_opts *o, const sv_config *cfg, sv_model *m, const sv_adamw *opt, sv_dist *d,
                      double *tot, const double ph[4], const double *prof, bench_result *r) {
    stats(tot, (int)o->steps, &r->med, &r->lo, &r->hi);
    r->flop_img = m->flops_forward * (o->eval ? 1.0 : 3.0);
    r->ips = cfg->batch_size / r->med;
    r->gflops = r->ips * r->flop_img / 1e9;
    r->peak = measure_gemm_peak(NULL); /* per rank, with its threads */
    r->mfu = r->gflops / (r->peak * d->world);
    r->peak16 = m->bf16 ? measure_gemm_peak(m->bf16) : 0;
    r->mfu16 = m->bf16 ? r->gflops / (r->peak16 * d->world) : 0;
    r->rss_mib = sv_dist_max_ulong(d, sv_peak_rss()) / 1048576.0;
    /* AdamW moments, plus the reduced gradient shards of ZeRO stage 1, per rank */
    r->state_mib = o->eval ? 0.0 : (2.0 * (double)opt->n + (d->zero ? (double)d->shard_n : 0.0)) * sizeof(float) / 1048576.0;
    for (int i = 0; i < 4; i++) r->ph[i] = 1e3 * ph[i] / o->steps;
    /* per kind the median over the timed steps: one slow step (another
     * process taking a core) moves a mean by its whole excess */
    r->profiled = o->profile;
    for (int k = 0; k < SV_PROF_KINDS; k++) {
        r->prof[k] = 0;
        if (!o->profile) continue;
        for (long s = 0; s < o->steps; s++) tot[s] = prof[(size_t)s * SV_PROF_KINDS + k];
        double lo, hi;
        stats(tot, (int)o->steps, &r->prof[k], &lo, &hi);
        r->prof[k] *= 1e3;
    }
}

/* ------------------------------------------------------------ command */

/* The config of the benchmark, with --batch applied and checked against the world size. */
static int bench_config(const sv_cli *cli, const bench_opts *o, sv_config *cfg) {
    sv_config_defaults(cfg);
    if (sv_cli_load_config(cli, cfg, o->config, &o->sets) != 0) return 1;
    if (o->batch) cfg->batch_size = (int)o->batch;
    if (cfg->batch_size >= cli->d->world) return 0;
    if (cli->d->rank == 0)
        fprintf(stderr, "shiftvit bench: batch %d is smaller than the world size %d\n", cfg->batch_size, cli->d->world);
    return 1;
}

/* The step benchmark: model, optimizer and step as the trainer makes them, timed steps, report. */
static int bench_model(const sv_cli *cli, const bench_opts *o, const sv_config *cfg) {
    sv_dist *d = cli->d;
    char err[SV_ERR_LEN];
    long start, n;
    sv_shard(cfg->batch_size, d->rank, d->world, &start, &n);
    if (!o->json) sv_cli_report_placement(cli);
    sv_model m;
    /* --eval: the forward-only model of eval and predict, no optimizer */
    sv_model_settings ms = sv_model_settings_from(cfg);
    int bad = o->eval ? sv_model_create_inference(&m, ms, (int)n, err) : sv_model_create(&m, ms, (int)n, err);
    if (bad) { /* a batch that cannot fit: bad input, as in train */
        fprintf(stderr, "shiftvit: %s\n", err);
        return 1;
    }
    sv_model_init_weights(&m, cfg->seed);
    sv_adamw opt;
    memset(&opt, 0, sizeof opt);
    if (!o->eval) sv_optimizer_setup(d, &m, &opt, cfg, 4u << 20);
    sv_trace trace_buf, *trace = NULL;
    if (o->trace && sv_trace_open(&trace_buf, d, (size_t)o->steps * (128 + 4 * (size_t)d->nbuckets), err) != 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
        return 2;
    }
    if (o->trace) trace = &trace_buf;
    sv_step st = {.m = &m, .d = d, .trace = trace};
    if (!o->eval) sv_step_init(&st, &m, &opt, d, cfg->label_smoothing, trace);
    sv_ema ema = {0, NULL, 0}; /* train.ema_decay: timed in the update, as trained */
    if (!o->eval && cfg->ema_decay > 0) sv_ema_init(&ema, m.params, m.num_params, cfg->ema_decay);
    if (ema.w) st.ema = &ema;
    bench_batch b;
    make_bench_batch(&b, cfg, start, n);
    double *tot = sv_alloc((size_t)o->steps * sizeof(double), "bench times"), ph[4] = {0, 0, 0, 0};
    double *prof = o->profile ? sv_alloc((size_t)o->steps * SV_PROF_KINDS * sizeof(double), "bench profile") : NULL;
    if (prof) memset(prof, 0, (size_t)o->steps * SV_PROF_KINDS * sizeof(double));
    run_steps(o, cfg, &st, &b, tot, ph, prof);
    sv_model_set_profile(&m, NULL);
    double input_s = o->eval ? 0 : time_input(cfg, &b, o->steps);
    int rc = 0;
    if (trace && sv_trace_write(trace, d, o->trace, err) != 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
        rc = 2;
    } else if (trace && d->rank == 0 && !o->json) {
        printf("Trace: %s (summary: scripts/trace_summary.py)\n", o->trace);
    }
    bench_result r;
    summarize(o, cfg, &m, &opt, d, tot, ph, prof, &r);
    r.input_ms = 1e3 * input_s;
    if (d->rank == 0 && rc == 0) (o->json ? print_json : print_text)(o, cfg, &m, d->zero, &r, d->world);
    sv_free(tot);
    if (prof) sv_free(prof);
    free_bench_batch(&b);
    sv_step_free(&st);
    sv_ema_free(&ema);
    sv_adamw_free(&opt);
    sv_model_free(&m);
    return rc;
}

/* After the options: the config, then the all-reduce or the step benchmark. */
static int run_bench(const sv_cli *cli, const bench_opts *o) {
    sv_config cfg;
    if (bench_config(cli, o, &cfg) != 0) return 1;
    if (!o->allreduce) return bench_model(cli, o, &cfg);
    sv_model m;
    char err[SV_ERR_LEN];
    if (sv_model_create(&m, sv_model_settings_from(&cfg), 1, err) != 0) return 2;
    size_t np = o->bytes ? (o->bytes + sizeof(float) - 1) / sizeof(float) : m.num_params;
    sv_model_free(&m);
    return bench_allreduce(cli->d, np, (int)o->steps, (int)o->warmup, o->json);
}

int sv_cmd_bench(const sv_cli *cli, int argc, char **argv) {
    bench_opts o = {.config = "configs/cifar10_keras.ini", .steps = 10, .warmup = 2};
    int rc = parse_bench_options(cli, argc, argv, &o);
    if (rc < 0) rc = run_bench(cli, &o);
    sv_cli_sets_free(&o.sets);
    return rc;
}
