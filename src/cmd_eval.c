/* `shiftvit eval`: evaluates a checkpoint on the val or test split, on every
 * rank (contiguous shards, sums reduced), and prints the same line format as
 * training's final evaluation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/data.h"
#include "shiftvit/model.h"
#include "shiftvit/train.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit eval --checkpoint CKPT [--split val|test] [--data-dir DIR] [--batch N]\n\n"
            "Evaluates a checkpoint on a CIFAR-10 split with the evaluation transform and prints\n"
            "  TEST loss=... top1=... top5=...   (or VAL ... for --split val)\n"
            "The model and the split sizes come from the config stored in the checkpoint. Runs on\n"
            "any number of MPI ranks; every sample is counted exactly once.\n\n"
            "  --checkpoint CKPT  HDF5 checkpoint written by `shiftvit train`\n"
            "  --split S          val or test (default test)\n"
            "  --data-dir DIR     CIFAR-10 binary folder (else the checkpoint's data.dir,\n"
            "                     $CIFAR10_DIR, data/cifar-10-batches-bin,\n"
            "                     ../shared/data/cifar-10-batches-bin)\n"
            "  --batch N          global evaluation batch (default: the checkpoint's\n"
            "                     train.eval_batch_size)\n"
            "  --precision P      fp32 or bf16 matrix products (default: the checkpoint's\n"
            "                     train.precision)\n"
            "  -h, --help         this text\n\n"
            "example: mpirun -np 2 build/shiftvit eval --checkpoint results/runs/X/best.h5\n");
}

/* All ranks learn whether every rank succeeded. A failing rank prints its
 * message, except that ranks other than 0 stay quiet when rank 0 failed too
 * (every rank reads the same file, so they fail the same way). */
static int all_ok(sv_dist *d, int ok, const char *err) {
    int all = sv_dist_all_ok(d, ok), ok0 = sv_dist_bcast_int(d, ok);
    if (!ok && (d->rank == 0 || ok0)) {
        if (d->rank == 0 || d->world == 1) fprintf(stderr, "shiftvit eval: %s\n", err);
        else fprintf(stderr, "shiftvit eval (rank %d): %s\n", d->rank, err);
    }
    return all;
}

int sv_cmd_eval(int argc, char **argv) {
    sv_dist *d = sv_cli_dist();
    const char *ckpt = NULL, *split = "test", *data_dir = NULL, *precision = NULL;
    long batch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (d->rank == 0) eval_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--checkpoint") && has_next) {
            ckpt = argv[++i];
        } else if (!strcmp(a, "--split") && has_next) {
            split = argv[++i];
        } else if (!strcmp(a, "--data-dir") && has_next) {
            data_dir = argv[++i];
        } else if (!strcmp(a, "--precision") && has_next) {
            precision = argv[++i];
            if (strcmp(precision, "fp32") != 0 && strcmp(precision, "bf16") != 0) {
                if (d->rank == 0) fprintf(stderr, "shiftvit eval: --precision '%s' must be fp32 or bf16\n", precision);
                return 1;
            }
        } else if (!strcmp(a, "--batch") && has_next) {
            char *end;
            const char *v = argv[++i];
            batch = strtol(v, &end, 10);
            if (*end || end == v || batch < 1 || batch > 1000000) {
                if (d->rank == 0)
                    fprintf(stderr, "shiftvit eval: --batch '%s' must be an integer from 1 to 1000000\n", v);
                return 1;
            }
        } else {
            if (d->rank == 0) {
                fprintf(stderr, "shiftvit eval: unknown or incomplete option '%s'\n\n", a);
                eval_usage(stderr);
            }
            return 1;
        }
    }
    if (!ckpt) {
        if (d->rank == 0) {
            fprintf(stderr, "shiftvit eval: --checkpoint CKPT is required\n\n");
            eval_usage(stderr);
        }
        return 1;
    }
    int is_test = !strcmp(split, "test");
    if (!is_test && strcmp(split, "val") != 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit eval: --split '%s' must be val or test\n", split);
        return 1;
    }

    /* Every rank reads the checkpoint and the data itself. */
    char err[SV_ERR_LEN] = "";
    sv_config cfg;
    sv_config_defaults(&cfg);
    int ok = sv_checkpoint_read_config(ckpt, &cfg, err) == 0;
    if (ok && batch > 0) cfg.eval_batch_size = (int)batch;
    if (ok && precision) cfg.precision = !strcmp(precision, "bf16") ? SV_BF16 : SV_FP32; /* checked above */
    sv_model m;
    memset(&m, 0, sizeof m);
    int have_model = 0;
    if (ok) {
        int lb = sv_local_batch(cfg.eval_batch_size, d->world);
        ok = sv_model_create(&m, &cfg, lb, err) == 0;
        have_model = ok;
    }
    if (ok) ok = sv_checkpoint_load(ckpt, &m, NULL, NULL, err) == 0;
    sv_dataset ds;
    memset(&ds, 0, sizeof ds);
    if (ok) {
        char dir[SV_PATH_LEN];
        ok = sv_find_data_dir(data_dir, cfg.data_dir, dir, err) == 0;
        if (!ok && !data_dir && cfg.data_dir[0]) {
            char inner[SV_ERR_LEN];
            snprintf(inner, sizeof inner, "%s", err);
            sv_fail(err, "%s (data.dir stored in %s; pass --data-dir DIR)", inner, ckpt);
        }
        if (ok)
            ok = sv_cifar_load_splits(dir, cfg.train_size, cfg.val_size, cfg.test_size, NULL,
                                      is_test ? NULL : &ds, is_test ? &ds : NULL, err) == 0;
    }
    if (!all_ok(d, ok, err)) {
        sv_dataset_free(&ds);
        if (have_model) sv_model_free(&m);
        return 1;
    }

    int S = cfg.image_size;
    float *x = sv_alloc((size_t)m.max_batch * S * S * 3 * sizeof(float), "evaluation batch");
    int *labels = sv_alloc((size_t)m.max_batch * sizeof(int), "labels");
    long *idx = sv_alloc((size_t)m.max_batch * sizeof(long), "indices");
    sv_eval_result r = sv_evaluate(&m, &ds, &cfg, d, x, labels, idx);
    if (d->rank == 0) {
        if (m.bf16) printf("Precision: %s\n", sv_bf16_describe(m.bf16));
        printf("%s loss=%.4f top1=%.4f top5=%.4f\n", is_test ? "TEST" : "VAL", r.loss, r.top1, r.top5);
        if (!isfinite(r.loss))
            fprintf(stderr, "shiftvit eval: warning: the loss is not finite: the checkpoint's weights give non-finite "
                            "logits (rows with any non-finite logit count as wrong)\n");
        fflush(stdout);
    }
    sv_free(x);
    sv_free(labels);
    sv_free(idx);
    sv_dataset_free(&ds);
    sv_model_free(&m);
    return 0;
}
