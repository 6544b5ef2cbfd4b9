/* Small HDF5 helpers shared by checkpoints and the metrics log. */
#ifndef SHIFTVIT_H5UTIL_H
#define SHIFTVIT_H5UTIL_H

#include <hdf5.h>

/* Saved HDF5 automatic error printer: between sv_h5_quiet_begin and
 * sv_h5_quiet_end HDF5 prints nothing, so callers can turn its error stack
 * into one clear message of their own. */
typedef struct {
    H5E_auto2_t func;
    void *data;
} sv_h5_quiet;

void sv_h5_quiet_begin(sv_h5_quiet *q);
/* Clears the error stack and restores the printer. */
void sv_h5_quiet_end(const sv_h5_quiet *q);

/* H5Fopen / H5Fcreate (truncating) with HDF5's file locks (HDF5 1.10 takes a
 * flock(2) on every file it opens). Where the file system refuses
 * locks (ENOLCK: NFS without lockd, some Lustre and GPFS mounts; ENOSYS,
 * EOPNOTSUPP) the file is opened again without locking, as
 * HDF5_USE_FILE_LOCKING=FALSE does (HDF5's documented answer), and stderr
 * gets one warning per process naming the file and the system's reason
 * (the retry needs HDF5 >= 1.10.7, H5Pset_file_locking; Debian 12 has
 * 1.10.8; older builds fail as before). A
 * lock held by another program is not bypassed: that open fails.
 * Return a file id, or a negative value with the HDF5 error stack of the
 * failure kept for the caller's message. */
hid_t sv_h5_open(const char *path, unsigned flags);
hid_t sv_h5_create(const char *path);

/* Tries a non-blocking flock(2) on path (on its folder when path does not
 * exist), shared or exclusive, and releases it at once. Returns 0 when it
 * could be taken (or path cannot be opened: not a lock question),
 * EWOULDBLOCK when another open file holds a conflicting lock (an HDF5
 * reader's shared lock conflicts with exclusive; a writer's exclusive lock
 * with both), or the errno of a file system that refuses locks (ENOLCK...).
 * HDF5 1.10 locks with flock(2), so this is the lock HDF5 meets. */
int sv_flock_probe(const char *path, int exclusive);

#endif
