/* Platform set-up: BLIS sub-configuration choice and CPU placement report. */
#ifndef SHIFTVIT_PLATFORM_H
#define SHIFTVIT_PLATFORM_H

#include <sched.h>
#include <stddef.h>

/* Chooses the BLIS sub-configuration before BLIS initialises (issue 6).
 * BLIS 0.9.0 does not know CPUs newer than its tables (AMD Zen 5) and falls
 * back to its `generic` kernels, ~5x slower. Unless the user set
 * BLIS_ARCH_TYPE: on a CPU with AVX-512 (F, DQ, BW, VL) where BLIS's own
 * detection picked kernels without AVX-512 (generic, or haswell as seen on
 * some VMs), this selects `skx`; when BLIS picked generic on a CPU with
 * AVX2 + FMA, `haswell`.
 * BLIS fixes its choice once per process and does not export its CPU
 * detector, so BLIS's own choice is asked in a forked child; the parent then
 * sets BLIS_ARCH_TYPE before its first BLIS call. (An earlier version
 * re-executed the program instead; under OMP_PROC_BIND=true libgomp had
 * already pinned the process to one CPU, the new image inherited that mask
 * and ran both threads on one core, 40x slower.) Call it first in main(),
 * before MPI_Init and before any OpenMP region. Then initialises BLIS.
 * Writes a one-line description of the choice into desc (len bytes), e.g.
 * "BLIS 0.9.0 sub-configuration skx (selected by shiftvit: BLIS detected
 * haswell on a CPU with AVX-512)". Returns 1 if the choice was overridden. */
int sv_blis_select(char *desc, size_t len);

/* The CPUs this process's OpenMP threads may run on: the union of each
 * thread's sched_getaffinity mask (under OMP_PROC_BIND every thread is pinned
 * to its own place), for the placement report of issue 5. set is cleared
 * first; returns its CPU count, 0 if a mask could not be read (set then
 * empty). Runs one OpenMP parallel region. */
int sv_affinity_set(cpu_set_t *set);

/* Writes set as a CPU list ("0-1", "0,2-3") into list (len bytes, cut short
 * if too small), or "?" for an empty set. */
void sv_cpu_list(const cpu_set_t *set, char *list, size_t len);

#endif
