/* The command line of build/shiftvit: the subcommands and the helpers they
 * share (option errors, numbers and choices in option values, --set lists,
 * config loading, the placement report). Each subcommand takes the arguments
 * after its name (argv[0] is the subcommand), parses them with getopt_long,
 * prints --help, and returns the process exit status (0 success, 1 bad usage
 * or input, 2 runtime failure; train has more, see train.h sv_exit_status).
 * MPI is initialised by main() before the call and finalised after it. */
#ifndef SHIFTVIT_CLI_H
#define SHIFTVIT_CLI_H

#include <getopt.h>
#include <stdio.h>

#include "shiftvit/config.h"
#include "shiftvit/dist.h"

/* What main() hands every subcommand. */
typedef struct {
    sv_dist *d;          /* the MPI context (rank, world size, communicator) */
    const char *blis;    /* the BLIS kernel choice, as sv_blis_select described it */
} sv_cli;

int sv_cmd_train(const sv_cli *cli, int argc, char **argv);
int sv_cmd_eval(const sv_cli *cli, int argc, char **argv);
int sv_cmd_predict(const sv_cli *cli, int argc, char **argv);
int sv_cmd_bench(const sv_cli *cli, int argc, char **argv);
int sv_cmd_info(const sv_cli *cli, int argc, char **argv);
/* Runs without MPI started (cli->d is zeroed): see src/cli/cmd_launcher.c. */
int sv_cmd_launcher(const sv_cli *cli, int argc, char **argv);

/* Resets getopt_long's state before a subcommand's loop (optind = 1, its own
 * messages off: sv_cli_bad_option prints ours). */
void sv_cli_getopt_start(void);

/* getopt_long (the option string must start with ':'), except that an
 * option's value that is itself an option ("--out --overwrite") is refused:
 * it returns ':' as for a missing value, leaving that option to be read
 * next. A value starting with '-' is given as --out=-x. */
int sv_cli_next(int argc, char **argv, const char *shortopts, const struct option *longopts);

/* After sv_cli_next returned c = '?' or ':': rank 0 prints to stderr
 * "shiftvit CMD: unknown option '--x'", "option '--set' needs a value",
 * "option '--o' is ambiguous: --out, --overwrite" or "option '--json=1'
 * takes no value" (odd bytes shell-quoted), then where the options are
 * listed. Returns 1 (the exit status). */
int sv_cli_bad_option(const sv_cli *cli, const char *cmd, int c, char **argv, const struct option *longopts);

/* A positional argument where the command takes none: rank 0 names it.
 * Returns 1. */
int sv_cli_extra_argument(const sv_cli *cli, const char *cmd, const char *arg);

/* A path option's value (NULL: not given, fine): refused when empty or when
 * it does not fit SV_PATH_LEN (a longer one would be cut short silently
 * where it is copied). Rank 0 prints why; returns 0 or -1. */
int sv_cli_path(const sv_cli *cli, const char *cmd, const char *opt, const char *path);

/* An integer option value in [lo, hi] into *out; else rank 0 prints
 * "shiftvit CMD: OPT 'ARG' must be an integer from LO to HI" and -1. */
int sv_cli_int(const sv_cli *cli, const char *cmd, const char *opt, const char *arg, long lo, long hi, long *out);

/* An option value that must be one of names (NULL-terminated, compared
 * without case, as config values are) into *index;
 * else rank 0 prints "shiftvit CMD: OPT 'ARG' must be a, b or c" and -1. */
int sv_cli_choice(const sv_cli *cli, const char *cmd, const char *opt, const char *arg, const char *const *names,
                  int *index);

/* {"off", "on", NULL}: the values of on/off options such as --tta-flip
 * (index 0 off, 1 on), for sv_cli_choice. */
extern const char *const sv_cli_off_on[];

/* --weights of eval and predict: {"ema", "raw", NULL} for sv_cli_choice,
 * index SV_WEIGHTS_EMA or SV_WEIGHTS_RAW. */
enum { SV_WEIGHTS_EMA = 0, SV_WEIGHTS_RAW = 1 };
extern const char *const sv_cli_weights_names[];

/* eval and predict: loads the weights of ckpt into m (created from the
 * checkpoint's config): /model (weights = SV_WEIGHTS_RAW), its moving
 * average /ema (SV_WEIGHTS_EMA; a checkpoint without one is an error naming
 * the file), or -1: /ema when the checkpoint has it, else /model. *used_ema
 * says which. Returns 0, or -1 with the message of checkpoint.h. */
struct sv_model;
int sv_cli_load_weights(const char *ckpt, struct sv_model *m, int weights, int *used_ema, char *err);

/* The --set section.key=value options of a command, in order. */
typedef struct {
    char **v;
    int n, cap;
} sv_cli_sets;
/* Appends one (the string is argv's, not copied); -1 when out of memory. */
int sv_cli_sets_add(sv_cli_sets *s, char *assignment);
void sv_cli_sets_free(sv_cli_sets *s);

/* Loads a config for a subcommand: defaults, then the file (may be NULL),
 * then each --set in order, then validation. Prints the error on rank 0 and
 * returns -1 on failure. Sets the collective timeout of cli->d from
 * train.collective_timeout unless SHIFTVIT_COLLECTIVE_TIMEOUT set it (the
 * environment wins, so a job script can set it for every command). */
int sv_cli_load_config(const sv_cli *cli, sv_config *cfg, const char *path, const sv_cli_sets *sets);
/* Rank 0 prints world size, ranks per node, threads per rank, the BLIS choice
 * and each rank's CPU affinity, with a warning (and the fix) when a rank's
 * threads are confined to fewer cores than it runs threads, or a node is
 * oversubscribed (issue 5). Collective: every rank must call it. */
void sv_cli_report_placement(const sv_cli *cli);

/* eval and predict: a warning on stderr (from rank 0 only) when the weights loaded from
 * ckpt hold a NaN or infinity, naming the first such tensor and element:
 * the outputs will not be finite (training refuses such a checkpoint; these
 * commands report what the weights give). */
struct sv_model;
void sv_cli_warn_nonfinite_weights(int rank, const char *cmd, const char *ckpt, const struct sv_model *m);

#endif
