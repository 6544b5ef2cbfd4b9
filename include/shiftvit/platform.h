/* Platform set-up: BLIS sub-configuration choice and CPU placement report. */
#ifndef SHIFTVIT_PLATFORM_H
#define SHIFTVIT_PLATFORM_H

#include <stddef.h>

/* Chooses the BLIS sub-configuration before BLIS initialises (issue 6).
 * BLIS 0.9.0 does not know CPUs newer than its tables (AMD Zen 5) and falls
 * back to its `generic` kernels, ~5x slower. Unless the user set
 * BLIS_ARCH_TYPE: on a CPU with AVX-512 (F, DQ, BW, VL) where BLIS's own
 * detection picked kernels without AVX-512 (generic, or haswell as seen on
 * some VMs), this selects `skx`; when BLIS picked generic on a CPU with
 * AVX2 + FMA, `haswell`.
 * BLIS fixes its choice once per process and does not export its CPU
 * detector, so the selection re-executes the program (execv of
 * /proc/self/exe with argv and BLIS_ARCH_TYPE set); call it first in main(),
 * before MPI_Init. Then initialises BLIS. Writes a one-line description of the choice into
 * desc (len bytes), e.g. "BLIS 0.9.0 sub-configuration skx (selected: BLIS
 * detected generic on a CPU with AVX-512)". Returns 1 if this process runs
 * with the overridden choice, 0 otherwise. */
int sv_blis_select(char **argv, char *desc, size_t len);

/* Number of CPUs this process may run on (sched_getaffinity) and their list
 * as text ("0-1", "3"), for the placement report of issue 5. */
int sv_affinity(char *list, size_t len);

#endif
