/* Internal to src/dist/: the communicator's timeout-aware wait loops
 * (comm.c), which the gradient exchange (exchange.c) waits with. */
#ifndef SHIFTVIT_DIST_INTERNAL_H
#define SHIFTVIT_DIST_INTERNAL_H

#include "shiftvit/dist.h"

/* A wait loop found nothing done: answer probes, end the job past the
 * timeout, back off. */
void dist_idle(sv_dist *d, double t0, double now, const char *what);

/* MPI_Waitall with the collective timeout: polls, answers probes, and backs
 * off (yield, then short sleeps) so that a long wait does not steal a core
 * from ranks that share it. done_at[i] (when not NULL) gets the time request i
 * was seen complete; idx and st are scratch for n indices and statuses (a
 * real array, not MPI_STATUSES_IGNORE: MPICH declares the argument an array,
 * and GCC warns that the constant points to no room for n statuses). The time
 * waited is added to d->wait_s (the straggler report). */
void dist_wait_some(sv_dist *d, int n, MPI_Request *reqs, double *done_at, int *idx, MPI_Status *st,
                    const char *what);

#endif
