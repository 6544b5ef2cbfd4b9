/* `shiftvit train`: parses options, loads the config, runs sv_train. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/text.h"
#include "shiftvit/trace.h"
#include "shiftvit/train.h"


static void train_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit train [-c CONFIG] [--set section.key=value]... [--data-dir DIR]\n"
            "                      [--out DIR] [--overwrite] [--resume CKPT [--resume-with-changes]]\n"
            "                      [--trace FILE]\n\n"
            "Trains ShiftViT on CIFAR-10, one model replica per MPI rank, each on its shard of\n"
            "every global batch; gradients are all-reduced every step. Rank 0 prints progress and\n"
            "writes metrics (CSV + HDF5) and HDF5 checkpoints into the output directory.\n\n"
            "  -c, --config FILE  INI config (default configs/cifar10_keras.ini; with --resume and\n"
            "                     no -c, the config stored in the checkpoint)\n"
            "  --set S.K=V        override one config key, e.g. --set train.epochs=5 (repeatable)\n"
            "  --data-dir DIR     CIFAR-10 binary folder (else data.dir, $CIFAR10_DIR,\n"
            "                     data/cifar-10-batches-bin, ../shared/data/cifar-10-batches-bin)\n"
            "  --out DIR          run directory (default output.dir, else\n"
            "                     results/runs/<config name>-<timestamp>); one folder holds one run\n"
            "  --overwrite        DIR may hold another run: delete that run's files first\n"
            "  --resume CKPT      continue a run from a checkpoint (weights, AdamW moments, step,\n"
            "                     epoch, early-stopping state, data order); into another --out, the\n"
            "                     run's metrics and best weights so far come along\n"
            "  --resume-with-changes  allow keys that change the run's trajectory (batch size,\n"
            "                     seed, data, model, optimiser, schedule, stopping) to differ from\n"
            "                     the checkpoint's; the log and the checkpoints record the change.\n"
            "                     Without it such a change is refused; output, logging,\n"
            "                     checkpoint cadence, max_steps and the rank and thread counts may\n"
            "                     always change\n"
            "  --trace FILE       write the step timeline of every rank (forward, backward per\n"
            "                     block, all-reduce per bucket, optimizer, checkpoint, eval) as\n"
            "                     Chrome trace-event JSON: ui.perfetto.dev opens it,\n"
            "                     scripts/trace_summary.py sums it up\n"
            "  -h, --help         this text\n\n"
            "example: mpirun -np 2 build/shiftvit train -c configs/cifar10_keras.ini\n"
            "SIGINT, SIGTERM or SIGUSR1 stop the run at the next step boundary after a checkpoint.\n"
            "Across nodes: train.collective_timeout (or SHIFTVIT_COLLECTIVE_TIMEOUT) ends a job whose\n"
            "rank or node was lost; train.zero_stage=1 shards the AdamW state (configs/README.md).\n"
            "Exit status: 0 done or stopped after a checkpoint, 1 bad input, 2 runtime failure,\n"
            "3 non-finite loss or gradient, 4 a checkpoint could not be written, 5 a collective\n"
            "timed out (a rank was lost).\n");
    if (f != stdout) return; /* after a usage error: the options are enough */
    fprintf(f, "\nconfig keys (section.key = default; `shiftvit info --keys` explains each):\n");
    sv_config_describe_keys(f, SV_KEYS_SUMMARY);
}

/* A batch size changed in the middle of an epoch: the epoch goes on at step
 * s of the new size, so part of its image order is skipped or repeated. */
static void warn_batch_mid_epoch(const sv_config *stored, const sv_config *cfg, const char *ckpt, int rank0) {
    sv_train_state st;
    char err[SV_ERR_LEN];
    if (!rank0 || sv_checkpoint_read_state(ckpt, &st, err) != 0 || st.step_in_epoch == 0) return;
    long done = st.step_in_epoch * (long)stored->batch_size, next = st.step_in_epoch * (long)cfg->batch_size;
    fprintf(stderr,
            "shiftvit: warning: train.batch_size changes in the middle of epoch %ld (after %ld steps, %ld images): "
            "the epoch goes on at image %ld of its order, so images %ld..%ld are %s; resume from an epoch_NNNN.h5 "
            "to change it at an epoch boundary\n",
            st.epoch + 1, st.step_in_epoch, done, next, next < done ? next : done, (next < done ? done : next) - 1,
            next > done ? "skipped" : "seen twice");
}

/* A resumed run continues the checkpoint's trajectory: keys that would change
 * it are refused, each named with both values, unless --resume-with-changes
 * says the change is meant (issue 14, section 3). Then *changes gets the
 * changed keys, one "section.key before -> after" line each (NULL if none). */
static int resume_changes(const sv_config *stored, const sv_config *cfg, const char *ckpt,
                          int with_changes, int rank0, char **changes) {
    enum { MAXCH = 64 };
    static sv_config_change ch[MAXCH];
    int n = sv_config_diff(stored, cfg, ch, MAXCH), refused = 0;
    if (n > MAXCH) n = MAXCH;
    size_t len = 0, cap = 1;
    for (int i = 0; i < n; i++) cap += strlen(ch[i].key) + strlen(ch[i].before) + strlen(ch[i].after) + 8;
    char *text = calloc(1, cap);
    if (!text) {
        if (rank0) fprintf(stderr, "shiftvit: out of memory\n");
        return -1;
    }
    char q[SV_QUOTED_LEN(SV_PATH_LEN)];
    for (int i = 0; i < n; i++) {
        /* A precision or gradient-exchange type switch is allowed without
         * asking, but recorded like a change (rounding differs from then on). */
        int precision = !strcmp(ch[i].key, "train.precision") || !strcmp(ch[i].key, "train.allreduce_dtype");
        if (precision) {
            len += (size_t)snprintf(text + len, cap - len, "%s %s -> %s\n", ch[i].key, ch[i].before, ch[i].after);
            continue;
        }
        if (!ch[i].trajectory) continue;
        len += (size_t)snprintf(text + len, cap - len, "%s %s -> %s\n", ch[i].key, ch[i].before, ch[i].after);
        if (!with_changes && rank0)
            fprintf(stderr, "shiftvit: cannot resume: %s is %s in the run of %s but %s here\n", ch[i].key,
                    ch[i].before, sv_shell_quote(ckpt, q, sizeof q), ch[i].after);
        refused++;
    }
    if (refused && !with_changes) {
        if (rank0)
            fprintf(stderr, "shiftvit: a resumed run keeps every key that shapes its trajectory; drop the "
                            "change%s, or pass --resume-with-changes to continue with the new value%s "
                            "(recorded in the log and the checkpoints)\n",
                    refused > 1 ? "s" : "", refused > 1 ? "s" : "");
        free(text);
        return -1;
    }
    if (with_changes && stored->batch_size != cfg->batch_size) warn_batch_mid_epoch(stored, cfg, ckpt, rank0);
    *changes = len ? text : NULL;
    if (!len) free(text);
    return 0;
}

/* The test suites' switches (README "Developers"), read once here. */
static void read_debug_switches(sv_train_opts *o) {
    const char *p = getenv("SHIFTVIT_PROGRESS");
    o->progress = p && !strcmp(p, "tty") ? SV_PROGRESS_TTY : p && !strcmp(p, "lines") ? SV_PROGRESS_LINES : SV_PROGRESS_AUTO;
    const char *c = getenv("SHIFTVIT_CHECK_REPLICAS");
    o->check_replicas = c && *c && strcmp(c, "0") != 0;
    const char *n = getenv("SHIFTVIT_INJECT_NAN_STEP");
    o->inject_nan_step = n ? atol(n) : 0;
}

/* Everything after the options: the config (from the file, or the
 * checkpoint's when resuming), the resume checks, then the trainer. */
static int run_train(const sv_cli *cli, sv_train_opts *o, const char *config, const sv_cli_sets *sets,
                     int with_changes) {
    sv_dist *d = cli->d;
    if (with_changes && !o->resume) {
        if (d->rank == 0) fprintf(stderr, "shiftvit train: --resume-with-changes needs --resume CKPT\n");
        return 1;
    }
    sv_config cfg, stored;
    sv_config_defaults(&cfg);
    if (o->resume) {
        char err[SV_ERR_LEN];
        if (sv_checkpoint_read_config(o->resume, &stored, err) != 0) {
            if (d->rank == 0) fprintf(stderr, "shiftvit: cannot resume: %s\n", err);
            return 1;
        }
        /* A stored max_steps is where the first part stopped: resuming means
         * going on (a --set train.max_steps=N below still applies). */
        stored.max_steps = 0;
        if (!config) cfg = stored;
    } else if (!config) {
        config = "configs/cifar10_keras.ini";
    }
    if (sv_cli_load_config(cli, &cfg, config, sets) != 0) return 1;
    char *changes = NULL;
    if (o->resume) {
        snprintf(cfg.name, sizeof cfg.name, "%s", stored.name); /* the run keeps its name */
        if (resume_changes(&stored, &cfg, o->resume, with_changes, d->rank == 0, &changes) != 0)
            return 1;
        o->changes = changes;
        if (stored.zero_stage != cfg.zero_stage && d->rank == 0)
            printf("Resuming with train.zero_stage = %d: the checkpoint's run used %d (checkpoints have one layout)\n",
                   cfg.zero_stage, stored.zero_stage);
        if (stored.accumulation_steps != cfg.accumulation_steps && d->rank == 0)
            printf("Resuming with train.accumulation_steps = %d: the checkpoint's run used %d (same global batch, same trajectory)\n",
                   cfg.accumulation_steps, stored.accumulation_steps);
        if (stored.allreduce_dtype != cfg.allreduce_dtype && d->rank == 0)
            printf("Resuming with train.allreduce_dtype = %s: the checkpoint's run used %s (recorded in /config_changes)\n",
                   cfg.allreduce_dtype ? "bf16" : "fp32", stored.allreduce_dtype ? "bf16" : "fp32");
        if (stored.precision != cfg.precision && d->rank == 0)
            printf("Resuming in %s: the checkpoint's run trained in %s (a resume may change precision)\n",
                   sv_precision_names[cfg.precision], sv_precision_names[stored.precision]);
    }
    read_debug_switches(o);
    char err[SV_ERR_LEN];
    if (o->trace && sv_trace_check_path(d, o->trace, err) != 0) {
        if (d->rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
        free(changes);
        return 1;
    }
    sv_cli_report_placement(cli);
    int rc = sv_train(&cfg, o, d);
    free(changes);
    return rc;
}

enum { OPT_SET = 256, OPT_DATA_DIR, OPT_OUT, OPT_OVERWRITE, OPT_RESUME, OPT_WITH_CHANGES, OPT_TRACE };

static const struct option train_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"config", required_argument, NULL, 'c'},
    {"set", required_argument, NULL, OPT_SET},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"out", required_argument, NULL, OPT_OUT},
    {"overwrite", no_argument, NULL, OPT_OVERWRITE},
    {"resume", required_argument, NULL, OPT_RESUME},
    {"resume-with-changes", no_argument, NULL, OPT_WITH_CHANGES},
    {"trace", required_argument, NULL, OPT_TRACE},
    {NULL, 0, NULL, 0},
};

/* Fills o, *config, sets and *with_changes from the command line. Returns
 * -1 to go on, else the exit status (0 after --help). */
static int parse_train_options(const sv_cli *cli, int argc, char **argv, sv_train_opts *o, const char **config,
                               sv_cli_sets *sets, int *with_changes) {
    sv_cli_getopt_start();
    int c;
    while ((c = sv_cli_next(argc, argv, ":hc:", train_options)) != -1) {
        switch (c) {
        case 'h':
            if (cli->d->rank == 0) train_usage(stdout);
            return 0;
        case 'c': *config = optarg; break;
        case OPT_SET:
            if (sv_cli_sets_add(sets, optarg) != 0) return 2;
            break;
        case OPT_DATA_DIR: o->data_dir = optarg; break;
        case OPT_OUT: o->out_dir = optarg; break;
        case OPT_OVERWRITE: o->overwrite = 1; break;
        case OPT_RESUME: o->resume = optarg; break;
        case OPT_WITH_CHANGES: *with_changes = 1; break;
        case OPT_TRACE: o->trace = optarg; break;
        default: return sv_cli_bad_option(cli, "train", c, argv, train_options);
        }
    }
    if (optind < argc) return sv_cli_extra_argument(cli, "train", argv[optind]);
    const char *paths[][2] = {{"-c", *config}, {"--data-dir", o->data_dir}, {"--out", o->out_dir},
                              {"--resume", o->resume}, {"--trace", o->trace}};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
        if (sv_cli_path(cli, "train", paths[i][0], paths[i][1]) != 0) return 1;
    return -1;
}

int sv_cmd_train(const sv_cli *cli, int argc, char **argv) {
    const char *config = NULL;
    sv_cli_sets sets = {0};
    sv_train_opts o = {0};
    int with_changes = 0;
    int rc = parse_train_options(cli, argc, argv, &o, &config, &sets, &with_changes);
    if (rc < 0) rc = run_train(cli, &o, config, &sets, with_changes);
    sv_cli_sets_free(&sets);
    return rc;
}
