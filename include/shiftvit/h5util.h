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

/* H5Fopen / H5Fcreate (truncating) with HDF5's file locks requested but not
 * required (HDF5 >= 1.10.7), so file systems without locks (some cluster
 * file systems) still work. Return a file id, or a negative value with the
 * HDF5 error stack of the failure kept for the caller's message. */
hid_t sv_h5_open(const char *path, unsigned flags);
hid_t sv_h5_create(const char *path);

#endif
