/* `shiftvit info`: model summary of a config, or what a checkpoint holds. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/settings.h"
#include "shiftvit/text.h"
#include "shiftvit/model.h"


static void info_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit info -c CONFIG [--set section.key=value]...\n"
            "       shiftvit info CHECKPOINT.h5\n"
            "       shiftvit info --keys [--markdown]\n\n"
            "With a config: a Keras-style model summary (output shape and parameters per layer,\n"
            "total parameters, forward MFLOP per image). With a checkpoint: its config,\n"
            "parameter count, step and epoch, best val top-1, and whether it holds EMA weights.\n"
            "With --keys: every config key with its default and meaning (--markdown: the table\n"
            "of configs/README.md).\n\n"
            "  -c, --config FILE  INI config\n"
            "  --set S.K=V        override one config key (repeatable), with -c\n"
            "  --keys             every config key, its default and meaning\n"
            "  --markdown         with --keys: as the Markdown table of configs/README.md\n"
            "  -h, --help         this text\n");
}

static int info_checkpoint(const char *path) {
    char err[SV_ERR_LEN];
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (sv_checkpoint_read_config(path, &cfg, err) != 0) {
        fprintf(stderr, "shiftvit: %s\n", err);
        return 1;
    }
    sv_model m;
    if (sv_model_create(&m, sv_model_settings_from(&cfg), 1, err) != 0) {
        fprintf(stderr, "shiftvit: %s\n", err);
        return 2;
    }
    sv_train_state st;
    memset(&st, 0, sizeof st);
    int rc = sv_checkpoint_load(path, &m, NULL, &st, err);
    if (rc != 0) {
        fprintf(stderr, "shiftvit: %s\n", err);
        sv_model_free(&m);
        return 1;
    }
    char q[SV_QUOTED_LEN(SV_PATH_LEN)];
    printf("Checkpoint: %s\n", sv_shell_quote(path, q, sizeof q));
    printf("Parameters: %zu in %d tensors\n", m.num_params, m.num_tensors);
    printf("Step: %ld, epoch: %ld (%ld steps into it), world size at save: %d, training time: %.1f min\n",
           st.step, st.epoch, st.step_in_epoch, st.world_size, st.wall_time / 60.0);
    if (st.best_epoch > 0)
        printf("Best val top-1: %.4f (epoch %ld); epochs without improvement: %ld\n", st.best_val_top1,
               st.best_epoch, st.bad_epochs);
    else
        printf("Best val top-1: none yet\n");
    int has_ema = sv_checkpoint_has_ema(path, err);
    printf("EMA weights (/ema): %s\n", has_ema > 0 ? "yes (eval and predict use them unless --weights raw)"
                                        : "no (train.ema_decay = 0)");
    if (st.config_changes[0]) printf("Changed on resume:\n%s", st.config_changes);
    printf("Config:\n");
    sv_config_write(&cfg, stdout);
    sv_model_free(&m);
    return 0;
}

/* The model summary of a config. */
static int info_config(const sv_cli *cli, const char *config, const sv_cli_sets *sets) {
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (sv_cli_load_config(cli, &cfg, config, sets) != 0) return 1;
    sv_model m;
    char err[SV_ERR_LEN];
    if (sv_model_create(&m, sv_model_settings_from(&cfg), 1, err) != 0) {
        fprintf(stderr, "shiftvit: %s\n", err);
        return 2;
    }
    char q[SV_QUOTED_LEN(SV_PATH_LEN)];
    printf("Config: %s\n", sv_shell_quote(config, q, sizeof q));
    sv_model_print_summary(&m, stdout);
    sv_model_free(&m);
    return 0;
}

enum { OPT_SET = 256, OPT_KEYS, OPT_MARKDOWN };

static const struct option info_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"config", required_argument, NULL, 'c'},
    {"set", required_argument, NULL, OPT_SET},
    {"keys", no_argument, NULL, OPT_KEYS},
    {"markdown", no_argument, NULL, OPT_MARKDOWN},
    {NULL, 0, NULL, 0},
};

int sv_cmd_info(const sv_cli *cli, int argc, char **argv) {
    const char *config = NULL;
    sv_cli_sets sets = {0};
    int keys = 0, markdown = 0, c, rc = -1;
    sv_cli_getopt_start();
    while (rc < 0 && (c = sv_cli_next(argc, argv, ":hc:", info_options)) != -1) {
        switch (c) {
        case 'h': rc = 0; if (cli->d->rank == 0) info_usage(stdout); break;
        case 'c': config = optarg; break;
        case OPT_SET: if (sv_cli_sets_add(&sets, optarg)) rc = 2; break;
        case OPT_KEYS: keys = 1; break;
        case OPT_MARKDOWN: markdown = 1; break;
        default: rc = sv_cli_bad_option(cli, "info", c, argv, info_options);
        }
    }
    const char *ckpt = optind < argc ? argv[optind] : NULL;
    const char *misuse = rc >= 0 ? NULL
                         : optind + 1 < argc ? "one checkpoint at a time"
                         : keys + !!config + !!ckpt > 1 ? "-c CONFIG, CHECKPOINT.h5 and --keys exclude each other: give one"
                         : keys + !!config + !!ckpt == 0 ? "give one of -c CONFIG, CHECKPOINT.h5 or --keys"
                         : markdown && !keys ? "--markdown goes with --keys"
                         : sets.n && !config ? "--set goes with -c CONFIG" : NULL;
    if (misuse && cli->d->rank == 0) {
        fprintf(stderr, "shiftvit info: %s\n\n", misuse);
        info_usage(stderr);
    }
    if (misuse) rc = 1;
    if (rc < 0 && cli->d->rank == 0) {
        if (keys) sv_config_describe_keys(stdout, markdown ? SV_KEYS_MARKDOWN : SV_KEYS_TEXT);
        rc = keys ? 0 : ckpt ? info_checkpoint(ckpt) : info_config(cli, config, &sets);
    }
    sv_cli_sets_free(&sets);
    return rc < 0 ? 0 : rc;
}
