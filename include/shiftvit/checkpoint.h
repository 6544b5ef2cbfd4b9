/* HDF5 checkpoints (issue 4). Layout, readable with h5dump or h5py:
 *   /model/<tensor name>        one float32 dataset per tensor, Keras shape,
 *                               e.g. /model/stage1/block0/mlp/fc1/kernel;
 *                               one chunk with HDF5's Fletcher-32 checksum
 *                               (checked on every read: a damaged tensor is an
 *                               error, not wrong weights; files written before
 *                               have none and still load)
 *   /ema/<tensor name>          the exponential moving average of the weights
 *                               (train.ema_decay > 0 only), same names, shapes
 *                               and checksum as /model; files without it load
 *                               as before (format version unchanged)
 *   /optimizer/m/<tensor name>  AdamW first moments, same shapes
 *   /optimizer/v/<tensor name>  AdamW second moments
 *   /optimizer (attribute t)    updates done
 *   /state                      attributes of sv_train_state
 *   /config                     the resolved INI config (string)
 *   /config_changes             keys changed by resumes with --resume-with-changes,
 *                               one line each (string; only when there were any)
 *   / (attribute format_version) SV_CHECKPOINT_VERSION
 * Written by rank 0 only, atomically (atomic_file.h: temporary file in the
 * same directory, flush + fsync, rename, fsync of the directory).
 * Code: src/io/checkpoint_write.c (save), src/io/checkpoint_read.c (checks and
 * loads), src/io/checkpoint_errors.c (HDF5 errors as one-line reasons). */
#ifndef SHIFTVIT_CHECKPOINT_H
#define SHIFTVIT_CHECKPOINT_H

#include "shiftvit/config.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/train_state.h"

#define SV_CHECKPOINT_VERSION 1

/* Writes a checkpoint to `path` atomically. opt and st may be NULL (weights
 * only). Returns 0, or -1 with a message naming the path and the HDF5 or
 * system error (e.g. disk full); on failure the previous file at `path`, if
 * any, is untouched and the temporary file removed. */
int sv_checkpoint_save(const char *path, const sv_model *m, const sv_adamw *opt,
                       const sv_train_state *st, const sv_config *cfg, char *err);

/* sv_checkpoint_save plus, when ema is not NULL, the moving average of the
 * weights (m->num_params floats, the layout of m->params) as /ema. */
int sv_checkpoint_save_ema(const char *path, const sv_model *m, const float *ema, const sv_adamw *opt,
                           const sv_train_state *st, const sv_config *cfg, char *err);

/* 1 when the checkpoint holds EMA weights (/ema), 0 when not, -1 with a
 * message when the file is not a readable checkpoint (the checks of
 * sv_checkpoint_read_config). */
int sv_checkpoint_has_ema(const char *path, char *err);

/* Reads /ema into ema (m->num_params floats, the layout of m->params; m
 * created from a matching config), every tensor's presence and shape checked
 * first as for /model. A checkpoint without /ema is an error (-1) saying the
 * run kept no average (train.ema_decay = 0) and naming the file. */
int sv_checkpoint_load_ema(const char *path, const sv_model *m, float *ema, char *err);

/* Reads the stored config of a checkpoint (for eval, predict, info and resume)
 * after checking the file is HDF5 and its format version is supported. */
int sv_checkpoint_read_config(const char *path, sv_config *cfg, char *err);

/* Loads weights (and, when not NULL, optimizer moments and state) into a model
 * created from a matching config. Every tensor's presence and shape is checked
 * before reading; the error names the tensor and both shapes. With opt (a
 * resume) a non-finite weight or moment is an error naming the tensor. On error (-1,
 * message in err) the model's buffers may be partly overwritten: callers
 * treat it as fatal and exit. */
int sv_checkpoint_load(const char *path, sv_model *m, sv_adamw *opt,
                       sv_train_state *st, char *err);

/* Reads only /state (and /config_changes) of a checkpoint, after the same
 * format checks: for describing a run folder and finding its best weights.
 * Returns 0, or -1 with a message naming the path and the attribute. */
int sv_checkpoint_read_state(const char *path, sv_train_state *st, char *err);

#endif
