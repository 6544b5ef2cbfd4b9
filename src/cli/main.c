/* build/shiftvit: subcommand dispatch, MPI start-up and shut-down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/launch.h"
#include "shiftvit/platform.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit COMMAND [options]   (run under mpirun/srun for several ranks)\n\n"
            "Data-parallel ShiftViT trainer for CIFAR-10 (MPI + OpenMP + BLIS).\n\n"
            "commands:\n"
            "  train     train a model (-c CONFIG; --resume CKPT)\n"
            "  eval      evaluate a checkpoint on the val or test split\n"
            "  predict   classify your own JPEG/PNG images with a checkpoint\n"
            "  bench     time training or inference steps (images/s, GFLOP/s, MFU, per-phase times)\n"
            "  info      model summary of a config, or the contents of a checkpoint\n"
            "  launcher  the command that starts ranks of this binary with its MPI's launcher\n\n"
            "'shiftvit COMMAND --help' describes each command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 1 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "launcher")) {
        /* No MPI start: scripts ask it before they launch anything. */
        sv_dist none;
        memset(&none, 0, sizeof none);
        sv_cli cli = {&none, ""};
        return sv_cmd_launcher(&cli, argc - 1, argv + 1);
    }
    int (*fn)(const sv_cli *, int, char **) = NULL;
    if (!strcmp(cmd, "train")) fn = sv_cmd_train;
    else if (!strcmp(cmd, "eval")) fn = sv_cmd_eval;
    else if (!strcmp(cmd, "predict")) fn = sv_cmd_predict;
    else if (!strcmp(cmd, "bench")) fn = sv_cmd_bench;
    else if (!strcmp(cmd, "info")) fn = sv_cmd_info;
    if (!fn) {
        fprintf(stderr, "shiftvit: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return 1;
    }
    char blis[256];
    sv_blis_select(blis, sizeof blis);
    sv_dist dist;
    sv_cli cli = {&dist, blis};
    char err[SV_ERR_LEN];
    int rc = sv_dist_init(&argc, &argv, &dist, err);
    if (rc != 0) {
        if (dist.rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
        sv_dist_finalize(&dist);
        return rc == -2 ? 1 : 2; /* bad input, or MPI failed */
    }
    int status = 1;
    /* A launcher of another MPI starts P worlds of one (issue 5, 27): refuse
     * before anything is written. */
    if (sv_launch_check(&dist, err) != 0) fprintf(stderr, "shiftvit: %s\n", err);
    else status = fn(&cli, argc - 1, argv + 1);
    /* A failing rank must not leave the others waiting in a collective. */
    sv_dist_max_int(&dist, status);
    sv_dist_finalize(&dist);
    return status;
}
