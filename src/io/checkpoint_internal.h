/* Internal to the checkpoint code: src/io/checkpoint_write.c (sv_checkpoint_save),
 * src/io/checkpoint_read.c (open, validate, load) and src/io/checkpoint_errors.c.
 * The file format is described in include/shiftvit/checkpoint.h. Not part of
 * the library's API (include/shiftvit/). */
#ifndef SHIFTVIT_CHECKPOINT_INTERNAL_H
#define SHIFTVIT_CHECKPOINT_INTERNAL_H

#include <stddef.h>

/* The innermost message of the current HDF5 error stack, which is then
 * cleared: for a system error its text alone ("No space left on device"),
 * else HDF5's description, else "HDF5 error". Written into buf (n bytes),
 * which is returned. Call with HDF5's error printing off (sv_h5_quiet). */
const char *ckpt_h5_reason(char *buf, size_t n);

#endif
