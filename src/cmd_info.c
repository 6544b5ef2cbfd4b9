/* `shiftvit info`: model summary of a config, or what a checkpoint holds. */
#include <stdio.h>
#include <string.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/text.h"
#include "shiftvit/model.h"

#define MAX_SETS 64

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit info -c CONFIG [--set section.key=value]...\n"
            "       shiftvit info CHECKPOINT.h5\n\n"
            "With a config: a Keras-style model summary (output shape and parameters per layer,\n"
            "total parameters, forward MFLOP per image). With a checkpoint: its config,\n"
            "parameter count, step and epoch, and best val top-1.\n");
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
    if (sv_model_create(&m, &cfg, 1, err) != 0) {
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
    if (st.config_changes[0]) printf("Changed on resume:\n%s", st.config_changes);
    printf("Config:\n");
    sv_config_write(&cfg, stdout);
    sv_model_free(&m);
    return 0;
}

int sv_cmd_info(int argc, char **argv) {
    sv_dist *d = sv_cli_dist();
    const char *config = NULL, *ckpt = NULL;
    char *sets[MAX_SETS];
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (d->rank == 0) info_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(a, "--set") && i + 1 < argc && nsets < MAX_SETS) {
            sets[nsets++] = argv[++i];
        } else if (a[0] != '-' && !ckpt) {
            ckpt = a;
        } else {
            if (d->rank == 0) {
                fprintf(stderr, "shiftvit info: unknown or incomplete option '%s'\n\n", a);
                info_usage(stderr);
            }
            return 1;
        }
    }
    if (d->rank != 0) return 0;
    if (ckpt && !config) return info_checkpoint(ckpt);
    if (!config) {
        info_usage(stderr);
        return 1;
    }
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (sv_cli_load_config(&cfg, config, sets, nsets) != 0) return 1;
    sv_model m;
    char err[SV_ERR_LEN];
    if (sv_model_create(&m, &cfg, 1, err) != 0) {
        fprintf(stderr, "shiftvit: %s\n", err);
        return 2;
    }
    char q[SV_QUOTED_LEN(SV_PATH_LEN)];
    printf("Config: %s\n", sv_shell_quote(config, q, sizeof q));
    sv_model_print_summary(&m, stdout);
    sv_model_free(&m);
    return 0;
}
