/* The MPI launcher, in one place (issue 27): which MPI this binary was built
 * with, the command line that starts P ranks of it, and the check that the
 * launcher that started it is that MPI's. The tests (tests/test_util.c), the
 * scripts (through `shiftvit launcher`: scripts/mpirun.sh, jobs/local.sh) and
 * the trainer's messages (the resume command, the placement warnings) all
 * take the launcher from here, so a binary built with MPICH prints and runs
 * MPICH's `mpiexec` and one built with Open MPI `mpirun`.
 *
 * The family comes from mpi.h's macros at build time: OMPI_MAJOR_VERSION
 * (Open MPI) or MPICH_VERSION (MPICH and its derivatives: Intel MPI, MVAPICH,
 * Cray MPICH). The launcher's program is SV_MPIEXEC when the build defines
 * it (the Makefile's MPIEXEC: mpiexec.mpich for CC=mpicc.mpich), else
 * `mpirun` (Open MPI) or `mpiexec` (MPICH, the name the MPI standard gives). */
#ifndef SHIFTVIT_LAUNCH_H
#define SHIFTVIT_LAUNCH_H

#include <stddef.h>

#include "shiftvit/dist.h"

typedef enum { SV_MPI_OPEN_MPI, SV_MPI_MPICH, SV_MPI_OTHER } sv_mpi_family;

/* How the launcher places ranks. */
typedef enum {
    SV_BIND_DEFAULT, /* the launcher's own policy; no option written */
    SV_BIND_CORES,   /* each rank bound to `threads` cores of its own (Open MPI:
                      * --map-by slot:PE=T --bind-to core; MPICH: -bind-to core:T) */
    SV_BIND_NONE     /* no binding, more ranks than cores allowed (Open MPI:
                      * --oversubscribe --bind-to none; MPICH: -bind-to none) */
} sv_bind;

typedef struct {
    int np;          /* ranks (-np / -n); <= 0: option left out (a message's example) */
    int threads;     /* cores per rank for SV_BIND_CORES (>= 1) */
    sv_bind bind;
    /* Space-separated NAME or NAME=VALUE words the ranks must see (may be NULL).
     * Open MPI passes only what it is told: -x NAME / -x NAME=VALUE. MPICH's
     * mpiexec (Hydra) passes the whole environment by default, so a bare NAME
     * needs no option and NAME=VALUE becomes -genv NAME VALUE. */
    const char *env;
} sv_launch_opts;

/* The family of the MPI this binary was compiled with. */
sv_mpi_family sv_launch_family(void);
/* "Open MPI", "MPICH" or "an MPI" (for messages). */
const char *sv_launch_family_name(void);
/* The launcher's program (see above); a static string. */
const char *sv_launch_program(void);

/* Writes the launcher's words for `o` into buf (n bytes), separated by `sep`
 * (' ' for a shell line, '\n' one word a line for scripts), without a
 * trailing separator: the program and its arguments come after it. Adds
 * --allow-run-as-root for Open MPI when running as root (its mpirun refuses
 * root otherwise). Returns 0, or -1 when buf is too small (buf then holds a
 * truncated, terminated string). Words are not shell-quoted: NAME=VALUE words
 * of o->env must need no quoting. */
int sv_launch_command(const sv_launch_opts *o, char sep, char *buf, size_t n);

/* After sv_dist_init: 0 when the launcher that started this process agrees
 * with MPI about the world size, else -1 with a message in err (SV_ERR_LEN)
 * naming both. A launcher of another MPI starts P processes that each come up
 * as a world of one: the environment shows its world size
 * (OMPI_COMM_WORLD_SIZE: Open MPI's mpirun; PMI_SIZE: MPICH's mpiexec (Hydra)
 * and other PMI launchers; MPI_LOCALNRANKS: Hydra's ranks on this node,
 * compared with the node's ranks; SLURM_STEP_NUM_TASKS: srun) and MPI
 * another. Variables that say 1 or are absent are not checked. */
int sv_launch_check(const sv_dist *d, char *err);

#endif
