/* `shiftvit eval`: evaluates a checkpoint on the val or test split, on every
 * rank (contiguous shards, sums reduced), and prints the same line format as
 * training's final evaluation. */
#include <getopt.h>
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
#include "shiftvit/settings.h"
#include "shiftvit/train.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit eval --checkpoint CKPT [--split val|test] [--data-dir DIR] [--batch N]\n"
            "                     [--precision fp32|bf16|auto] [--tta-flip on|off] [--tta-translate N]\n"
            "                     [--weights ema|raw]\n\n"
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
            "  --precision P      fp32, bf16 or auto matrix products (default: the\n"
            "                     checkpoint's train.precision)\n"
            "  --tta-flip on|off  average the logits of each image and its mirror (default:\n"
            "                     the checkpoint's train.tta_flip)\n"
            "  --tta-translate N  also the image moved by (+N, +N) and (-N, -N) pixels, border\n"
            "                     reflected (0 = off; default: the checkpoint's train.tta_translate)\n"
            "  --weights W        ema: the moving average of the weights (/ema, runs with\n"
            "                     train.ema_decay > 0); raw: the trained weights (/model);\n"
            "                     default: ema when the checkpoint has it\n"
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

typedef struct {
    const char *ckpt, *data_dir;
    int split_test;  /* 1 test, 0 val */
    int precision;   /* -1: the checkpoint's, else sv_precision */
    long batch;      /* 0: the checkpoint's train.eval_batch_size */
    int tta_flip;    /* -1: the checkpoint's train.tta_flip, else 0 off / 1 on */
    long tta_translate; /* -1: the checkpoint's train.tta_translate, else pixels */
    int weights;     /* -1: ema when the checkpoint has it, else SV_WEIGHTS_EMA / SV_WEIGHTS_RAW */
} eval_opts;

/* Reads the checkpoint and the split on every rank, evaluates, prints on rank 0. */
static int run_eval(sv_dist *d, const eval_opts *o) {
    const char *ckpt = o->ckpt, *data_dir = o->data_dir;
    int is_test = o->split_test;
    /* Every rank reads the checkpoint and the data itself. */
    char err[SV_ERR_LEN] = "";
    sv_config cfg;
    sv_config_defaults(&cfg);
    int ok = sv_checkpoint_read_config(ckpt, &cfg, err) == 0;
    if (ok && o->batch > 0) cfg.eval_batch_size = (int)o->batch;
    if (ok && o->precision >= 0) cfg.precision = (sv_precision)o->precision;
    if (ok && o->tta_flip >= 0) cfg.tta_flip = o->tta_flip;
    if (ok && o->tta_translate >= 0) cfg.tta_translate = (int)o->tta_translate;
    if (ok && !is_test && cfg.val_size == 0)
        ok = sv_fail(err, "--split val: the checkpoint's run had no validation split ([data] val_size = 0 in %s)",
                     ckpt) == 0;
    if (ok && cfg.tta_translate >= cfg.image_size)
        ok = sv_fail(err, "--tta-translate %d must be smaller than the checkpoint's [data] image_size = %d",
                     cfg.tta_translate, cfg.image_size) == 0;
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
    sv_model m;
    memset(&m, 0, sizeof m);
    int have_model = 0;
    if (ok) {
        ok = sv_model_create_inference(&m, sv_model_settings_from(&cfg), sv_eval_local_batch(&cfg, ds.count, d->world), err) == 0;
        have_model = ok;
    }
    int used_ema = 0;
    if (ok) ok = sv_cli_load_weights(ckpt, &m, o->weights, &used_ema, err) == 0;
    if (ok) sv_cli_warn_nonfinite_weights(d->rank, "eval", ckpt, &m);
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
        if (used_ema) printf("Weights evaluated: ema (train.ema_decay = %g)\n", cfg.ema_decay);
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

enum { OPT_CHECKPOINT = 256, OPT_SPLIT, OPT_DATA_DIR, OPT_BATCH, OPT_PRECISION, OPT_TTA_FLIP, OPT_TTA_TRANSLATE,
       OPT_WEIGHTS };

static const struct option eval_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
    {"split", required_argument, NULL, OPT_SPLIT},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"precision", required_argument, NULL, OPT_PRECISION},
    {"tta-flip", required_argument, NULL, OPT_TTA_FLIP},
    {"tta-translate", required_argument, NULL, OPT_TTA_TRANSLATE},
    {"weights", required_argument, NULL, OPT_WEIGHTS},
    {NULL, 0, NULL, 0},
};

static const char *const split_names[] = {"val", "test", NULL};

/* Returns -1 to go on, else the exit status (0 after --help). */
static int parse_eval_options(const sv_cli *cli, int argc, char **argv, eval_opts *o) {
    sv_cli_getopt_start();
    int c;
    while ((c = sv_cli_next(argc, argv, ":h", eval_options)) != -1) {
        switch (c) {
        case 'h':
            if (cli->d->rank == 0) eval_usage(stdout);
            return 0;
        case OPT_CHECKPOINT: o->ckpt = optarg; break;
        case OPT_DATA_DIR: o->data_dir = optarg; break;
        case OPT_SPLIT:
            if (sv_cli_choice(cli, "eval", "--split", optarg, split_names, &o->split_test)) return 1;
            break;
        case OPT_PRECISION:
            if (sv_cli_choice(cli, "eval", "--precision", optarg, sv_precision_names, &o->precision)) return 1;
            break;
        case OPT_TTA_FLIP:
            if (sv_cli_choice(cli, "eval", "--tta-flip", optarg, sv_cli_off_on, &o->tta_flip)) return 1;
            break;
        case OPT_TTA_TRANSLATE:
            if (sv_cli_int(cli, "eval", "--tta-translate", optarg, 0, 4096, &o->tta_translate)) return 1;
            break;
        case OPT_WEIGHTS:
            if (sv_cli_choice(cli, "eval", "--weights", optarg, sv_cli_weights_names, &o->weights)) return 1;
            break;
        case OPT_BATCH:
            if (sv_cli_int(cli, "eval", "--batch", optarg, 1, 1000000, &o->batch)) return 1;
            break;
        default: return sv_cli_bad_option(cli, "eval", c, argv, eval_options);
        }
    }
    if (optind < argc) return sv_cli_extra_argument(cli, "eval", argv[optind]);
    if (!o->ckpt) {
        if (cli->d->rank == 0) fprintf(stderr, "shiftvit eval: --checkpoint CKPT is required (shiftvit eval --help lists the options)\n");
        return 1;
    }
    if (sv_cli_path(cli, "eval", "--checkpoint", o->ckpt) || sv_cli_path(cli, "eval", "--data-dir", o->data_dir)) return 1;
    return -1;
}

int sv_cmd_eval(const sv_cli *cli, int argc, char **argv) {
    eval_opts o = {.split_test = 1, .precision = -1, .tta_flip = -1, .tta_translate = -1, .weights = -1};
    int rc = parse_eval_options(cli, argc, argv, &o);
    return rc >= 0 ? rc : run_eval(cli->d, &o);
}

