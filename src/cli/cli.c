/* Helpers shared by the subcommands (cli.h): getopt_long errors, option
 * values, --set lists, config loading and the placement report. */
#include "shiftvit/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/launch.h"
#include "shiftvit/model.h"
#include "shiftvit/platform.h"
#include "shiftvit/text.h"

void sv_cli_getopt_start(void) {
    optind = 1;
    opterr = 0;
}

int sv_cli_next(int argc, char **argv, const char *shortopts, const struct option *longopts) {
    int c = getopt_long(argc, argv, shortopts, longopts, NULL);
    /* "--out --overwrite": the value taken is the next option. Refused as a
     * missing value (write --out=--x for a value that starts with '-'); a
     * negative number is left to the value's own check. */
    if (c != -1 && c != '?' && c != ':' && optarg && optarg == argv[optind - 1] && optarg[0] == '-' &&
        (optarg[1] == '-' || isalpha((unsigned char)optarg[1]))) {
        optind--;
        optopt = c < 128 ? c : 0;
        return ':';
    }
    return c;
}

/* An argument as one shell word for a message (odd bytes as $'\xHH'), its
 * first 255 bytes. */
static const char *quoted(const char *arg, char *q, size_t n) {
    char shown[256];
    snprintf(shown, sizeof shown, "%s", arg);
    return sv_shell_quote(shown, q, n);
}

/* The long options that start with name (without "--" and "=value"), "a, b". */
static int prefix_matches(const struct option *longopts, const char *name, char *out, size_t n) {
    size_t len = strcspn(name, "="), used = 0;
    int count = 0;
    out[0] = '\0';
    for (const struct option *o = longopts; o->name; o++)
        if (!strncmp(o->name, name, len) && used < n) {
            used += (size_t)snprintf(out + used, n - used, "%s--%s", count ? ", " : "", o->name);
            count++;
        }
    return count;
}

int sv_cli_bad_option(const sv_cli *cli, const char *cmd, int c, char **argv, const struct option *longopts) {
    if (cli->d->rank != 0) return 1;
    const char *arg = argv[optind - 1];
    char shortopt[3] = {'-', (char)optopt, '\0'}, q[SV_QUOTED_LEN(256)], qnext[SV_QUOTED_LEN(256)], matches[512];
    /* A short option is named by optopt (it may sit in a cluster like -xc),
     * a long one by the argument itself. */
    const char *name = optopt > 0 && optopt < 128 && arg[1] != '-' ? shortopt : arg;
    quoted(name, q, sizeof q);
    const char *next = argv[optind];
    if (c == ':' && next && next[0] == '-')
        fprintf(stderr, "shiftvit %s: option %s needs a value (the next argument is the option %s; "
                        "write %s=VALUE for a value that starts with '-')\n", cmd, q, quoted(next, qnext, sizeof qnext), q);
    else if (c == ':') fprintf(stderr, "shiftvit %s: option %s needs a value\n", cmd, q);
    else if (name[0] == '-' && name[1] == '-' && prefix_matches(longopts, name + 2, matches, sizeof matches) > 1)
        fprintf(stderr, "shiftvit %s: option %s is ambiguous: %s\n", cmd, q, matches);
    else if (strchr(name, '=')) fprintf(stderr, "shiftvit %s: option %s takes no value\n", cmd, q);
    else fprintf(stderr, "shiftvit %s: unknown option %s\n", cmd, q);
    fprintf(stderr, "(shiftvit %s --help lists the options)\n", cmd);
    return 1;
}

int sv_cli_extra_argument(const sv_cli *cli, const char *cmd, const char *arg) {
    char q[SV_QUOTED_LEN(256)];
    if (cli->d->rank == 0)
        fprintf(stderr, "shiftvit %s: unexpected argument %s (shiftvit %s --help lists the options)\n", cmd,
                quoted(arg, q, sizeof q), cmd);
    return 1;
}

int sv_cli_path(const sv_cli *cli, const char *cmd, const char *opt, const char *path) {
    if (!path) return 0;
    size_t n = strlen(path);
    if (n > 0 && n < SV_PATH_LEN) return 0;
    if (cli->d->rank == 0) {
        if (n == 0) fprintf(stderr, "shiftvit %s: %s '': an empty path\n", cmd, opt);
        else fprintf(stderr, "shiftvit %s: %s is %zu bytes long, at most %d: a shorter path, please (a symbolic link helps)\n",
                     cmd, opt, n, SV_PATH_LEN - 1);
    }
    return -1;
}

int sv_cli_int(const sv_cli *cli, const char *cmd, const char *opt, const char *arg, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (end != arg && !*end && errno == 0 && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    char q[SV_QUOTED_LEN(256)];
    if (cli->d->rank == 0)
        fprintf(stderr, "shiftvit %s: %s %s must be an integer from %ld to %ld\n", cmd, opt, quoted(arg, q, sizeof q), lo,
                hi);
    return -1;
}

const char *const sv_cli_off_on[] = {"off", "on", NULL};
const char *const sv_cli_weights_names[] = {"ema", "raw", NULL};

int sv_cli_load_weights(const char *ckpt, struct sv_model *m, int weights, int *used_ema, char *err) {
    *used_ema = 0;
    if (sv_checkpoint_load(ckpt, m, NULL, NULL, err) != 0) return -1;
    int want = weights;
    if (want < 0) { /* default: the average when the run kept one */
        int has = sv_checkpoint_has_ema(ckpt, err);
        if (has < 0) return -1;
        want = has ? SV_WEIGHTS_EMA : SV_WEIGHTS_RAW;
    }
    if (want == SV_WEIGHTS_RAW) return 0;
    if (sv_checkpoint_load_ema(ckpt, m, m->params, err) != 0) return -1;
    sv_model_params_changed(m);
    *used_ema = 1;
    return 0;
}

int sv_cli_choice(const sv_cli *cli, const char *cmd, const char *opt, const char *arg, const char *const *names,
                  int *index) {
    int n = 0;
    for (; names[n]; n++)
        if (!strcasecmp(arg, names[n])) { /* as config values: BF16 = bf16 */
            *index = n;
            return 0;
        }
    if (cli->d->rank != 0) return -1;
    char q[SV_QUOTED_LEN(256)];
    fprintf(stderr, "shiftvit %s: %s %s must be ", cmd, opt, quoted(arg, q, sizeof q));
    for (int i = 0; i < n; i++) fprintf(stderr, "%s%s", names[i], i + 2 < n ? ", " : i + 1 < n ? " or " : "\n");
    return -1;
}

int sv_cli_sets_add(sv_cli_sets *s, char *assignment) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = assignment;
    return 0;
}

void sv_cli_sets_free(sv_cli_sets *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

static void apply_timeout(const sv_cli *cli, const sv_config *cfg) {
    if (!cli->d->timeout_from_env) cli->d->timeout = cfg->collective_timeout;
}

/* A relative config path that names no file from the current folder is
 * looked for beside the program: in <its folder>/../share/shiftvit (make
 * install's layout) and <its folder>/.. (build/shiftvit in the source tree),
 * as given ("configs/tiny.ini") and under configs/ ("tiny.ini"). Returns the
 * first file found (in buf), or path itself. */
static const char *find_config(const char *path, char *buf, size_t n) {
    if (!path[0] || path[0] == '/' || access(path, F_OK) == 0) return path;
    char exe[SV_PATH_LEN];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = len > 0 ? (exe[len] = '\0', strrchr(exe, '/')) : NULL;
    if (!slash) return path;
    *slash = '\0';
    const char *under[] = {"/../share/shiftvit/", "/../share/shiftvit/configs/", "/../", "/../configs/"};
    for (size_t i = 0; i < sizeof under / sizeof *under; i++)
        if ((size_t)snprintf(buf, n, "%s%s%s", exe, under[i], path) < n && access(buf, R_OK) == 0) {
            char *real = realpath(buf, NULL); /* without the "/.." */
            if (real && strlen(real) < n) strcpy(buf, real);
            free(real);
            return buf;
        }
    return path;
}

int sv_cli_load_config(const sv_cli *cli, sv_config *cfg, const char *path, const sv_cli_sets *sets) {
    char err[SV_ERR_LEN], found[2 * SV_PATH_LEN];
    int rc = 0;
    if (path && find_config(path, found, sizeof found) == found) {
        if (cli->d->rank == 0) fprintf(stderr, "shiftvit: config %s: not in the current folder; using %s\n", path, found);
        path = found;
    }
    if (path && sv_config_load(cfg, path, err) != 0) rc = -1;
    for (int i = 0; rc == 0 && sets && i < sets->n; i++)
        if (sv_config_set(cfg, sets->v[i], err) != 0) rc = -1;
    if (rc == 0 && sv_config_validate(cfg, err) != 0) rc = -1;
    if (rc != 0 && cli->d->rank == 0) fprintf(stderr, "shiftvit: %s\n", err);
    if (rc == 0) apply_timeout(cli, cfg);
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

void sv_cli_report_placement(const sv_cli *cli) {
    sv_dist *d = cli->d;
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
    snprintf(line, sizeof line, "  rank %d on %s: %d %s, CPUs %s (%d)%s", d->rank, host, threads,
             threads == 1 ? "thread" : "threads", cpus, ncpu, ncpu < threads ? "  <-- fewer cores than threads" : "");
    int confined = ncpu < threads, any = confined;
    char *all = NULL;
    if (d->rank == 0) all = malloc((size_t)d->world * sizeof line);
    sv_dist_gather(d, line, sizeof line, all);
    any = sv_dist_max_int(d, confined);
    if (d->rank == 0) {
        printf("World size %d, %d rank(s) per node, %d thread(s) per rank\n%s\n", d->world,
               d->local_size, threads, cli->blis);
        for (int r = 0; r < d->world; r++) printf("%s\n", all + (size_t)r * sizeof line);
        /* The fixes in the words of this binary's MPI launcher (launch.h). */
        char fix[2][160];
        sv_launch_opts env = {0, 1, SV_BIND_DEFAULT, "OMP_NUM_THREADS=N"}, cores = {0, threads, SV_BIND_CORES, NULL},
                       none = {0, 1, SV_BIND_NONE, NULL};
        if (over_threads > 0) {
            sv_launch_command(&env, ' ', fix[0], sizeof fix[0]);
            printf("WARNING: %d thread(s) in all (ranks per node x threads per rank) share %d CPU(s) on one node: they oversubscribe it, and every step waits for the slowest thread. "
                   "Fix: OMP_NUM_THREADS = CPUs per node / ranks per node (%s, srun --cpus-per-task=N), or fewer ranks per node.\n",
                   over_threads, over_cpus, fix[0]);
        } else if (any) {
            sv_launch_command(&cores, ' ', fix[0], sizeof fix[0]);
            sv_launch_command(&none, ' ', fix[1], sizeof fix[1]);
            printf("WARNING: a rank's threads share fewer cores than it runs threads (Open MPI binds each rank to one core when it starts 2 ranks or fewer). "
                   "Fix: %s ..., or %s ...; under SLURM: srun --cpus-per-task=%d.\n",
                   fix[0], fix[1], threads);
        }
        fflush(stdout);
        free(all);
    }
}

void sv_cli_warn_nonfinite_weights(int rank, const char *cmd, const char *ckpt, const sv_model *m) {
    if (rank != 0) return;
    size_t elem = 0;
    int t = sv_model_first_nonfinite(m, m->params, &elem);
    if (t < 0) return;
    char q[SV_QUOTED_LEN(SV_PATH_LEN)];
    fprintf(stderr,
            "shiftvit %s: warning: checkpoint %s: tensor /model/%s holds a non-finite value (element %zu, %g): "
            "the outputs will not be finite\n",
            cmd, sv_shell_quote(ckpt, q, sizeof q), m->tensors[t].name, elem, m->params[m->tensors[t].offset + elem]);
}
