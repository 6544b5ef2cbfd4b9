/* build/shiftvit: subcommand dispatch, MPI start-up and shut-down. */
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/platform.h"

static sv_dist g_dist;
static char g_blis_desc[256];

sv_dist *sv_cli_dist(void) { return &g_dist; }

void sv_cli_apply_timeout(const sv_config *cfg) {
    if (!g_dist.timeout_from_env) g_dist.timeout = cfg->collective_timeout;
}

int sv_cli_load_config(sv_config *cfg, const char *path, char **sets, int nsets) {
    char err[SV_ERR_LEN];
    int rc = 0;
    if (path && sv_config_load(cfg, path, err) != 0) rc = -1;
    for (int i = 0; rc == 0 && i < nsets; i++)
        if (sv_config_set(cfg, sets[i], err) != 0) rc = -1;
    if (rc == 0 && sv_config_validate(cfg, err) != 0) rc = -1;
    if (rc != 0 && g_dist.rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
    if (rc == 0) sv_cli_apply_timeout(cfg);
    return rc;
}

/* Threads of all ranks on this node (node_threads) and the CPUs they may
 * use together (node_cpus, the union of their masks `mine`). Collective. */
static void node_load(sv_dist *d, const cpu_set_t *mine, int threads, int *node_threads, int *node_cpus) {
    cpu_set_t set = *mine;
    sv_dist_node_or(d, (unsigned long *)&set, (int)(sizeof set / sizeof(unsigned long)));
    *node_threads = sv_dist_node_sum_int(d, threads);
    *node_cpus = CPU_COUNT(&set);
}

void sv_cli_report_placement(void) {
    sv_dist *d = &g_dist;
    cpu_set_t mine;
    char cpus[256];
    int ncpu = sv_affinity_set(&mine);
    sv_cpu_list(&mine, cpus, sizeof cpus);
    int threads = omp_get_max_threads();
    int load[2]; /* this node's threads and CPUs; rank 0 gathers every rank's */
    node_load(d, &mine, threads, &load[0], &load[1]);
    int *loads = d->rank == 0 ? malloc(2 * sizeof(int) * (size_t)d->world) : NULL;
    sv_dist_gather(d, load, sizeof load, loads);
    int over_threads = 0, over_cpus = 1; /* the most oversubscribed node */
    for (int r = 0; d->rank == 0 && r < d->world; r++) {
        int t = loads[2 * r], c = loads[2 * r + 1];
        if (c > 0 && t > c && (long)t * over_cpus > (long)over_threads * c) {
            over_threads = t;
            over_cpus = c;
        }
    }
    free(loads);
    const char *host = d->hosts[d->rank];
    char line[512];
    snprintf(line, sizeof line, "  rank %d on %s: %d threads, CPUs %s (%d)%s", d->rank, host, threads,
             cpus, ncpu, ncpu < threads ? "  <-- fewer cores than threads" : "");
    int confined = ncpu < threads, any = confined;
    char *all = NULL;
    if (d->rank == 0) all = malloc((size_t)d->world * sizeof line);
    sv_dist_gather(d, line, sizeof line, all);
    any = sv_dist_max_int(d, confined);
    if (d->rank == 0) {
        printf("World size %d, %d rank(s) per node, %d thread(s) per rank\n%s\n", d->world,
               d->local_size, threads, g_blis_desc);
        for (int r = 0; r < d->world; r++) printf("%s\n", all + (size_t)r * sizeof line);
        if (over_threads > 0)
            printf("WARNING: %d thread(s) in all (ranks per node x threads per rank) share %d CPU(s) on one node: they oversubscribe it, and every step waits for the slowest thread. "
                   "Fix: OMP_NUM_THREADS = CPUs per node / ranks per node (mpirun -x OMP_NUM_THREADS=N, srun --cpus-per-task=N), or fewer ranks per node.\n",
                   over_threads, over_cpus);
        else if (any)
            printf("WARNING: a rank's threads share fewer cores than it runs threads (Open MPI binds each rank to one core when it starts 2 ranks or fewer). "
                   "Fix: mpirun --map-by slot:PE=%d --bind-to core ..., or --bind-to none; under SLURM: srun --cpus-per-task=%d.\n",
                   threads, threads);
        fflush(stdout);
        free(all);
    }
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit COMMAND [options]   (run under mpirun/srun for several ranks)\n\n"
            "Data-parallel ShiftViT trainer for CIFAR-10 (MPI + OpenMP + BLIS).\n\n"
            "commands:\n"
            "  train     train a model (-c CONFIG; --resume CKPT)\n"
            "  eval      evaluate a checkpoint on the val or test split\n"
            "  predict   classify your own JPEG/PNG images with a checkpoint\n"
            "  bench     time training or inference steps (images/s, GFLOP/s, per-layer)\n"
            "  info      model summary of a config, or the contents of a checkpoint\n\n"
            "'shiftvit COMMAND --help' describes each command.\n");
}

/* srun without PMI support starts N singletons that each think they are alone:
 * detect it before anything is written (issue 5). */
static int check_launch(const sv_dist *d) {
    const char *ntasks = getenv("SLURM_STEP_NUM_TASKS");
    if (!getenv("SLURM_PROCID") || !ntasks) return 0;
    int n = atoi(ntasks);
    if (n > 1 && d->world == 1) {
        fprintf(stderr,
                "shiftvit: SLURM started %d tasks but MPI reports a world size of 1: the ranks cannot see each other "
                "(PMI mismatch). Launch with 'srun --mpi=pmix' (Debian's Open MPI) or with mpirun inside the allocation.\n",
                n);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 1 : 0;
    }
    const char *cmd = argv[1];
    int (*fn)(int, char **) = NULL;
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
    sv_blis_select(g_blis_desc, sizeof g_blis_desc);
    char err[SV_ERR_LEN];
    int rc = sv_dist_init(&argc, &argv, &g_dist, err);
    if (rc != 0) {
        if (g_dist.rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
        sv_dist_finalize(&g_dist);
        return rc == -2 ? 1 : 2; /* bad input, or MPI failed */
    }
    int status = 1;
    if (check_launch(&g_dist) == 0) status = fn(argc - 1, argv + 1);
    /* A failing rank must not leave the others waiting in a collective. */
    sv_dist_max_int(&g_dist, status);
    sv_dist_finalize(&g_dist);
    return status;
}
