/* Subcommands of build/shiftvit. Each takes the arguments after its name
 * (argv[0] is the subcommand), prints --help, and returns the process exit
 * status (0 success, 1 bad usage or input, 2 runtime failure). MPI is
 * initialised by main() before the call and finalised after it. */
#ifndef SHIFTVIT_CLI_H
#define SHIFTVIT_CLI_H

#include "shiftvit/dist.h"

/* The MPI context main() initialised (rank, world size, communicator). */
sv_dist *sv_cli_dist(void);

/* Loads a config for a subcommand: defaults, then the file (may be NULL), then
 * each "--set section.key=value" in sets[0..nsets), then validation. Prints the
 * error on rank 0 and returns -1 on failure. */
#include "shiftvit/config.h"
int sv_cli_load_config(sv_config *cfg, const char *path, char **sets, int nsets);

/* Sets the collective timeout of the MPI context from cfg->collective_timeout,
 * unless SHIFTVIT_COLLECTIVE_TIMEOUT set it (the environment wins, so that a job
 * script can set it for every command). sv_cli_load_config calls it. */
void sv_cli_apply_timeout(const sv_config *cfg);

/* Rank 0 prints world size, ranks per node, threads per rank, the BLIS choice
 * and each rank's CPU affinity, with a warning (and the fix) when a rank's
 * threads are confined to fewer cores than it runs threads (issue 5).
 * Collective: every rank must call it. */
void sv_cli_report_placement(void);

int sv_cmd_train(int argc, char **argv);
int sv_cmd_eval(int argc, char **argv);
int sv_cmd_predict(int argc, char **argv);
int sv_cmd_bench(int argc, char **argv);
int sv_cmd_info(int argc, char **argv);

#endif
