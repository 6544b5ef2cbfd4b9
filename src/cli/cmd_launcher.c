/* `shiftvit launcher`: the command line that starts ranks of this binary with
 * the launcher of the MPI it was built with (launch.h), for the scripts
 * (scripts/mpirun.sh, jobs/local.sh). Runs without starting MPI. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/cli.h"
#include "shiftvit/launch.h"

static void launcher_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit launcher [-n RANKS] [-t THREADS] [--bind cores|none|default] [-x NAME[=VALUE]]...\n"
            "                         [--line]\n"
            "       shiftvit launcher --family\n\n"
            "Prints the launcher command that starts RANKS ranks of this binary, for the MPI it\n"
            "was built with (Open MPI: mpirun; MPICH: mpiexec), one word a line; the program and\n"
            "its arguments go after it. Does not start MPI.\n\n"
            "  -n, --np RANKS     ranks (default: left to the launcher)\n"
            "  -t, --threads T    with --bind cores: cores per rank (default 1)\n"
            "  --bind MODE        cores: each rank bound to T cores of its own; none: no binding,\n"
            "                     more ranks than cores allowed; default: the launcher's policy\n"
            "  -x NAME[=VALUE]    a variable the ranks must see (repeatable)\n"
            "  --line             the words on one line, separated by spaces\n"
            "  --family           print the MPI family and its launcher program, one a line\n"
            "  -h, --help         this text\n");
}

enum { OPT_BIND = 256, OPT_LINE, OPT_FAMILY };

static const struct option launcher_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"np", required_argument, NULL, 'n'},
    {"threads", required_argument, NULL, 't'},
    {"bind", required_argument, NULL, OPT_BIND},
    {"line", no_argument, NULL, OPT_LINE},
    {"family", no_argument, NULL, OPT_FAMILY},
    {NULL, 0, NULL, 0},
};

/* Adds one -x word to env (n bytes); 1 when it does not fit. */
static int add_env(char *env, size_t n, const char *w) {
    size_t len = strlen(env);
    if (!*w || strchr(w, ' ') || len + strlen(w) + 2 > n) {
        fprintf(stderr, "shiftvit launcher: -x '%s': expected NAME or NAME=VALUE without blanks (at most %zu bytes in all)\n",
                w, n - 1);
        return 1;
    }
    snprintf(env + len, n - len, "%s%s", len ? " " : "", w);
    return 0;
}

int sv_cmd_launcher(const sv_cli *cli, int argc, char **argv) {
    static const char *const binds[] = {"default", "cores", "none", NULL};
    static const sv_bind bind_of[] = {SV_BIND_DEFAULT, SV_BIND_CORES, SV_BIND_NONE};
    char env[1024] = "";
    long np = 0, threads = 1;
    int bind = 0, line = 0, family = 0, c, rc = -1;
    sv_cli_getopt_start();
    while (rc < 0 && (c = sv_cli_next(argc, argv, ":hn:t:x:", launcher_options)) != -1) {
        switch (c) {
        case 'h': rc = 0; launcher_usage(stdout); break;
        case 'n': if (sv_cli_int(cli, "launcher", "-n", optarg, 1, 1 << 20, &np)) rc = 1; break;
        case 't': if (sv_cli_int(cli, "launcher", "-t", optarg, 1, 4096, &threads)) rc = 1; break;
        case 'x': if (add_env(env, sizeof env, optarg)) rc = 1; break;
        case OPT_BIND: if (sv_cli_choice(cli, "launcher", "--bind", optarg, binds, &bind)) rc = 1; break;
        case OPT_LINE: line = 1; break;
        case OPT_FAMILY: family = 1; break;
        default: rc = sv_cli_bad_option(cli, "launcher", c, argv, launcher_options);
        }
    }
    if (rc < 0 && optind < argc) rc = sv_cli_extra_argument(cli, "launcher", argv[optind]);
    if (rc >= 0) return rc;
    if (family) {
        printf("%s\n%s\n", sv_launch_family_name(), sv_launch_program());
        return 0;
    }
    sv_launch_opts o = {(int)np, (int)threads, bind_of[bind], env};
    char buf[4096];
    if (sv_launch_command(&o, line ? ' ' : '\n', buf, sizeof buf) != 0) {
        fprintf(stderr, "shiftvit launcher: the command is longer than %zu bytes\n", sizeof buf - 1);
        return 1;
    }
    printf("%s\n", buf);
    return 0;
}
