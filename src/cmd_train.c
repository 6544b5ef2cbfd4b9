/* `shiftvit train`: parses options, loads the config, runs sv_train. */
#include <stdio.h>
#include <string.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/train.h"

#define MAX_SETS 64

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit train [-c CONFIG] [--set section.key=value]... [--data-dir DIR]\n"
            "                      [--out DIR] [--resume CKPT]\n\n"
            "Trains ShiftViT on CIFAR-10, one model replica per MPI rank, each on its shard of\n"
            "every global batch; gradients are all-reduced every step. Rank 0 prints progress and\n"
            "writes metrics (CSV + HDF5) and HDF5 checkpoints into the output directory.\n\n"
            "  -c, --config FILE  INI config (default configs/cifar10_keras.ini; with --resume and\n"
            "                     no -c, the config stored in the checkpoint)\n"
            "  --set S.K=V        override one config key, e.g. --set train.epochs=5 (repeatable)\n"
            "  --data-dir DIR     CIFAR-10 binary folder (else data.dir, $CIFAR10_DIR,\n"
            "                     data/cifar-10-batches-bin, ../shared/data/cifar-10-batches-bin)\n"
            "  --out DIR          run directory (default output.dir, else\n"
            "                     results/runs/<config name>-<timestamp>)\n"
            "  --resume CKPT      continue a run from a checkpoint (weights, AdamW moments, step,\n"
            "                     epoch, early-stopping state, data order)\n"
            "  -h, --help         this text\n\n"
            "example: mpirun -np 2 build/shiftvit train -c configs/cifar10_keras.ini\n"
            "SIGINT, SIGTERM or SIGUSR1 stop the run at the next step boundary after a checkpoint.\n");
}

int sv_cmd_train(int argc, char **argv) {
    sv_dist *d = sv_cli_dist();
    const char *config = NULL;
    char *sets[MAX_SETS];
    int nsets = 0;
    sv_train_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (d->rank == 0) train_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has_next) {
            config = argv[++i];
        } else if (!strcmp(a, "--set") && has_next) {
            if (nsets == MAX_SETS) {
                if (d->rank == 0) fprintf(stderr, "shiftvit train: at most %d --set options\n", MAX_SETS);
                return 1;
            }
            sets[nsets++] = argv[++i];
        } else if (!strcmp(a, "--data-dir") && has_next) {
            o.data_dir = argv[++i];
        } else if (!strcmp(a, "--out") && has_next) {
            o.out_dir = argv[++i];
        } else if (!strcmp(a, "--resume") && has_next) {
            o.resume = argv[++i];
        } else {
            if (d->rank == 0) {
                fprintf(stderr, "shiftvit train: unknown or incomplete option '%s'\n\n", a);
                train_usage(stderr);
            }
            return 1;
        }
    }
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (!config && o.resume) {
        char err[SV_ERR_LEN];
        if (sv_checkpoint_read_config(o.resume, &cfg, err) != 0) {
            if (d->rank == 0) fprintf(stderr, "shiftvit: cannot resume: %s\n", err);
            return 1;
        }
        /* A stored max_steps is where the first part stopped: resuming means
         * going on (a --set train.max_steps=N below still applies). */
        cfg.max_steps = 0;
    } else if (!config) {
        config = "configs/cifar10_keras.ini";
    }
    if (sv_cli_load_config(&cfg, config, sets, nsets) != 0) return 1;
    sv_cli_report_placement();
    return sv_train(&cfg, &o, d);
}
