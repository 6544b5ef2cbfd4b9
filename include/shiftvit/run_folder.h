/* A run folder belongs to one run (issue 14, sections 3 and 4).
 *
 * A run folder holds what `shiftvit train` writes: config.ini, last.h5,
 * best.h5, epoch_NNNN.h5, metrics.h5, metrics_steps.csv and
 * metrics_epochs.csv. A new run may not start in a folder holding another run's
 * files (they would mix), and a run resumed into another folder brings its
 * history along, so that every run folder is complete: its best weights so
 * far and every metrics row since step 1. Rank 0 only; the callers broadcast
 * the outcome. */
#ifndef SHIFTVIT_RUN_FOLDER_H
#define SHIFTVIT_RUN_FOLDER_H

#include "shiftvit/train_state.h"

/* Checks that `dir` may receive this run: it does not exist, holds no run
 * files, or is the folder of the checkpoint being resumed (`resume`, NULL for a
 * new run). Otherwise, with overwrite = 0: -1 and a message naming the folder,
 * what it holds (name, seed, epochs and step of its last.h5) and the three ways
 * on (resume it, another --out, --overwrite); with overwrite = 1: deletes the
 * run files (nothing else in the folder), says so on stdout, returns 0, or -1
 * naming the file that could not be removed. */
int sv_run_folder_claim(const char *dir, const char *resume, int overwrite, char *err);

#define SV_RUN_LOCK_NAME ".shiftvit.lock"

/* Takes the run folder's lock (dir/.shiftvit.lock, flock, held until the
 * process exits), so that two runs started at once into one folder cannot
 * both proceed: the second gets -1 and a message naming the folder and the
 * pid holding it. Returns the lock's file descriptor, or -1. dir must exist. */
int sv_run_folder_lock(const char *dir, char *err);

/* Removes the temporary files (".<name>.tmp.<pid>", atomic_file.h) that a
 * writer killed mid-write left in dir (a job aborted while rank 0 wrote a
 * checkpoint leaves a full-size one per attempt, issue 26): with locked = 1
 * (the caller holds dir's lock, so no other run writes there) those of run
 * files whatever their pid; any other when its process no longer exists on
 * this host. Says on stdout how many and how large. Returns their number. */
int sv_run_folder_remove_stale_temps(const char *dir, int locked);

/* After the checkpoint `resume` (state `st`) was loaded for a run in its own
 * folder `dir` (a resume from an earlier epoch checkpoint rewinds the run):
 * removes epoch checkpoints from after the resumed epoch, puts back best.h5
 * as of the resumed step (or removes it when those weights are not in the
 * folder) and replaces a last.h5 from after it by the resumed checkpoint, so
 * that no file of the abandoned future stays. Says on stdout what it did.
 * Does nothing for another folder. Returns 0, or -1 with a message. */
int sv_run_folder_rewind(const char *dir, const char *resume, const sv_train_state *st, char *err);

/* After the checkpoint `resume` (state `st`) was loaded for a run whose folder
 * `dir` is not the checkpoint's own: copies the checkpoint folder's
 * metrics_steps.csv and metrics_epochs.csv (the resume then keeps their rows up
 * to the checkpoint's step and epoch) and the best weights as of the checkpoint
 * (the checkpoint itself, or that folder's best.h5 or epoch_NNNN.h5 whose
 * /state is the best epoch's end) as dir/best.h5, atomically. Says on stdout
 * what it brought, and warns when the best weights are nowhere to be found.
 * Does nothing when dir is the checkpoint's folder. Returns 0, or -1 with a
 * message naming the file that could not be copied. */
int sv_run_folder_adopt(const char *dir, const char *resume, const sv_train_state *st,
                        char *err);

#endif
