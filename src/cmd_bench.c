/* `shiftvit bench`: times training steps (or inference, or the gradient
 * all-reduce alone) on synthetic data after warm-up (issues 5 and 6). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/trace.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/rng.h"
#include "shiftvit/train.h"

#define MAX_SETS 64

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit bench [-c CONFIG] [--set S.K=V]... [--steps N] [--warmup N]\n"
            "                      [--batch N] [--eval] [--allreduce [--bytes N]] [--trace FILE] [--json]\n\n"
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
            "  --allreduce        time only the all-reduce of the gradient buffer: time and bus\n"
            "                     bandwidth per call (OSU-style: 2(P-1)/P x bytes / time)\n"
            "  --bytes N          with --allreduce: a buffer of N bytes (suffix K, M or G:\n"
            "                     KiB, MiB, GiB) instead of the model's gradient\n"
            "  --trace FILE       write the timeline of the timed steps (Chrome trace-event\n"
            "                     JSON, as train --trace)\n"
            "  --json             print the results as one JSON object\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Measured speed of the matrix product on a shape typical of this model
 * (stage 3 fc1 at batch 256: 2304 x 768 x 384), GFLOP/s with the current
 * thread count: BLIS sgemm, or with bf != NULL the bf16 product (operand
 * rounding included, as the model pays it). */
static double measure_gemm_peak(sv_bf16 *bf) {
    int M = 2304, N = 768, K = 384;
    float *a = sv_alloc((size_t)M * K * sizeof(float), "bench");
    float *b = sv_alloc((size_t)K * N * sizeof(float), "bench");
    float *c = sv_alloc((size_t)M * N * sizeof(float), "bench");
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < 12; r++) {
        double t0 = sv_now();
        if (bf) sv_bf16_gemm(bf, 0, 0, M, N, K, a, K, b, N, c, N);
        else sv_gemm(0, 0, M, N, K, 1.f, a, K, b, N, 0.f, c, N);
        double dt = sv_now() - t0;
        if (r >= 2 && dt < best) best = dt;
    }
    sv_free(a); sv_free(b); sv_free(c);
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

int sv_cmd_bench(int argc, char **argv) {
    sv_dist *d = sv_cli_dist();
    const char *config = "configs/cifar10_keras.ini";
    char *sets[MAX_SETS];
    int nsets = 0, steps = 10, warmup = 2, batch = 0, eval = 0, json = 0, allreduce = 0;
    size_t bytes = 0;
    const char *trace_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int nx = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (d->rank == 0) bench_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && nx) config = argv[++i];
        else if (!strcmp(a, "--set") && nx && nsets < MAX_SETS) sets[nsets++] = argv[++i];
        else if (!strcmp(a, "--steps") && nx) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && nx) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--batch") && nx) batch = atoi(argv[++i]);
        else if (!strcmp(a, "--eval")) eval = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--allreduce")) allreduce = 1;
        else if (!strcmp(a, "--trace") && nx) trace_path = argv[++i];
        else if (!strcmp(a, "--bytes") && nx) {
            int rc = parse_bytes(argv[++i], &bytes);
            if (rc != 0) {
                if (d->rank == 0)
                    fprintf(stderr, "shiftvit bench: --bytes '%s': %s\n", argv[i],
                            rc == -2 ? "more than 16G, the most this benchmark allocates"
                                     : "expected a size of at least 4 bytes such as 4096, 64K, 45M or 1G");
                return 1;
            }
        }
        else {
            if (d->rank == 0) {
                fprintf(stderr, "shiftvit bench: unknown or incomplete option '%s'\n\n", a);
                bench_usage(stderr);
            }
            return 1;
        }
    }
    const char *clash = trace_path && allreduce ? "--trace times the training or inference step, not --allreduce"
                        : bytes && !allreduce ? "--bytes applies to --allreduce only"
                                              : NULL;
    if (clash) {
        if (d->rank == 0) fprintf(stderr, "shiftvit bench: %s\n", clash);
        return 1;
    }
    char terr[SV_ERR_LEN];
    if (trace_path && sv_trace_check_path(d, trace_path, terr) != 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit bench: %s\n", terr);
        return 1;
    }
    if (steps < 1 || warmup < 0 || batch < 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit bench: --steps must be >= 1, --warmup and --batch >= 0\n");
        return 1;
    }
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (sv_cli_load_config(&cfg, config, sets, nsets) != 0) return 1;
    if (batch) cfg.batch_size = batch;
    if (cfg.batch_size < d->world) {
        if (d->rank == 0) fprintf(stderr, "shiftvit bench: batch %d is smaller than the world size %d\n", cfg.batch_size, d->world);
        return 1;
    }
    char err[SV_ERR_LEN];
    sv_model m;
    long start, n;
    sv_shard(cfg.batch_size, d->rank, d->world, &start, &n);
    if (allreduce) {
        if (sv_model_create(&m, &cfg, 1, err) != 0) return 2;
        size_t np = bytes ? (bytes + sizeof(float) - 1) / sizeof(float) : m.num_params;
        sv_model_free(&m);
        return bench_allreduce(d, np, steps, warmup, json);
    }
    if (!json) sv_cli_report_placement();
    if (sv_model_create(&m, &cfg, (int)n, err) != 0) {
        fprintf(stderr, "shiftvit: %s\n", err);
        return 2;
    }
    sv_model_init_weights(&m, cfg.seed);
    sv_adamw opt;
    sv_optimizer_setup(d, &m, &opt, &cfg, 4u << 20);
    int zero = d->zero;
    int S = cfg.image_size, K = cfg.num_classes;
    float *x = sv_alloc((size_t)n * S * S * 3 * sizeof(float), "bench input");
    float *probs = sv_alloc((size_t)n * K * sizeof(float), "bench");
    float *dl = sv_alloc((size_t)n * K * sizeof(float), "bench");
    int *labels = sv_alloc((size_t)n * sizeof(int), "bench");
    long *ids = sv_alloc((size_t)n * sizeof(long), "bench");
    uint64_t key = sv_rng_key(cfg.seed, 99, 0, 0, 0);
    for (size_t i = 0; i < (size_t)n * S * S * 3; i++) x[i] = sv_rng_uniform(key, i);
    for (long i = 0; i < n; i++) {
        labels[i] = (int)(i % K);
        ids[i] = start + i;
    }
    double *tot = calloc((size_t)steps, sizeof(double));
    double ph[4] = {0, 0, 0, 0}; /* forward, backward, all-reduce wait, optimiser */
    sv_trace trace_buf, *trace = NULL;
    if (trace_path) {
        if (sv_trace_open(&trace_buf, d, (size_t)steps * (4 + 2 * (size_t)d->nbuckets), err) != 0) {
            if (d->rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
            return 2;
        }
        trace = &trace_buf;
    }
    for (int s = -warmup; s < steps; s++) {
        sv_dist_barrier(d);
        double t0 = sv_now(), t1, t2, t3, t4;
        if (eval) {
            sv_model_forward(&m, x, (int)n, NULL);
            t1 = t2 = t3 = t4 = sv_now();
        } else {
            sv_train_rng rng = {cfg.seed, s + warmup, ids};
            const float *lg = sv_model_forward(&m, x, (int)n, &rng);
            sv_softmax_xent_forward(NULL, probs, lg, labels, (int)n, K, cfg.label_smoothing);
            sv_softmax_xent_backward(dl, probs, labels, (int)n, K, 1.0f / cfg.batch_size, cfg.label_smoothing);
            t1 = sv_now();
            sv_allreduce_begin(d);
            sv_model_backward(&m, dl, sv_allreduce_ready, d);
            t2 = sv_now();
            sv_allreduce_finish(d);
            t3 = sv_now();
            sv_optimizer_step(d, &m, &opt, 1e-4);
            t4 = sv_now();
        }
        double dt = t4 - t0;
        dt = sv_dist_max_double(d, dt);
        if (s >= 0) {
            tot[s] = dt;
            ph[0] += t1 - t0; ph[1] += t2 - t1; ph[2] += t3 - t2; ph[3] += t4 - t3;
            sv_trace_add(trace, SV_TR_FORWARD, t0, t1, s + 1, -1, NULL);
            if (!eval) {
                sv_trace_add(trace, SV_TR_BACKWARD, t1, t2, s + 1, -1, NULL);
                sv_trace_add_buckets(trace, d, s + 1, zero ? SV_TR_REDUCE_SCATTER : SV_TR_ALLREDUCE);
                sv_trace_add(trace, SV_TR_OPTIMIZER, t3, t4, s + 1, -1, NULL);
                if (zero) sv_trace_add_buckets(trace, d, s + 1, SV_TR_ALLGATHER);
            }
        }
    }
    if (trace && sv_trace_write(trace, d, trace_path, err) != 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
        return 2;
    }
    if (trace && d->rank == 0 && !json) printf("Trace: %s (summary: scripts/trace_summary.py)\n", trace_path);
    double med, lo, hi;
    stats(tot, steps, &med, &lo, &hi);
    double flop_img = m.flops_forward * (eval ? 1.0 : 3.0);
    double ips = cfg.batch_size / med;
    double gflops = ips * flop_img / 1e9;
    double peak = measure_gemm_peak(NULL); /* per rank, with its threads */
    double mfu = gflops / (peak * d->world);
    /* bf16: MFU against the measured bf16 product as well */
    double peak16 = m.bf16 ? measure_gemm_peak(m.bf16) : 0, mfu16 = m.bf16 ? gflops / (peak16 * d->world) : 0;
    const char *prec = m.bf16 ? "bf16" : "fp32";
    size_t rss_max = sv_dist_max_ulong(d, sv_peak_rss());
    /* AdamW moments, plus the reduced gradient shards of ZeRO stage 1, per rank */
    double state_mib = (2.0 * (double)opt.n + (zero ? (double)d->shard_n : 0.0)) * sizeof(float) / 1048576.0;
    for (int i = 0; i < 4; i++) ph[i] = 1e3 * ph[i] / steps;
    if (d->rank == 0) {
        if (json) {
            printf("{\"mode\":\"%s\",\"precision\":\"%s\",\"bf16_peak_gflops_per_rank\":%.2f,\"mfu_bf16\":%.4f,\"world_size\":%d,\"threads\":%d,\"global_batch\":%d,\"steps\":%d,"
                   "\"median_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f,\"images_per_s\":%.2f,\"gflops\":%.2f,"
                   "\"sgemm_peak_gflops_per_rank\":%.2f,\"mfu\":%.4f,\"peak_rss_mib\":%.1f,"
                   "\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"allreduce_wait_ms\":%.3f,\"optimizer_ms\":%.3f,"
                   "\"zero_stage\":%d,\"optimizer_state_mib_per_rank\":%.1f}\n",
                   eval ? "eval" : "train", prec, peak16, mfu16, d->world, omp_get_max_threads(),
                   cfg.batch_size, steps, 1e3 * med, 1e3 * lo, 1e3 * hi, ips, gflops, peak, mfu, rss_max / 1048576.0, ph[0], ph[1], ph[2], ph[3], zero, state_mib);
        } else {
            printf("%s step (%s), global batch %d on %d rank(s) x %d thread(s), %d steps after %d warm-up:\n",
                   eval ? "Inference" : "Training", prec, cfg.batch_size, d->world, omp_get_max_threads(),
                   steps, warmup);
            if (m.bf16) printf("  precision   %s\n", sv_bf16_describe(m.bf16));
            printf("  step time   median %.1f ms, min %.1f, max %.1f\n", 1e3 * med, 1e3 * lo, 1e3 * hi);
            printf("  throughput  %.1f images/s, %.1f GFLOP/s (%.1f MFLOP per image)\n", ips, gflops, flop_img / 1e6);
            printf("  MFU         %.1f%% of the measured sgemm peak (%.1f GFLOP/s per rank)\n", 100 * mfu, peak);
            if (m.bf16)
                printf("  MFU (bf16)  %.1f%% of the measured bf16 product (%.1f GFLOP/s per rank)\n", 100 * mfu16,
                       peak16);
            printf("  peak RSS    %.1f MiB per rank (max over ranks); AdamW state %.1f MiB per rank%s\n",
                   rss_max / 1048576.0, state_mib, zero ? " (ZeRO stage 1)" : "");
            printf("  rank 0 phases (mean ms): forward %.1f, backward %.1f, all-reduce wait %.1f, optimiser %.1f\n",
                   ph[0], ph[1], ph[2], ph[3]);
        }
        if (!json) printf("images_per_s=%.2f\n", ips);
    }
    free(tot);
    sv_free(x); sv_free(probs); sv_free(dl); sv_free(labels); sv_free(ids);
    sv_adamw_free(&opt);
    sv_model_free(&m);
    return 0;
}
