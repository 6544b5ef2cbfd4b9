/* Atomic file replacement: a file is either its old version or the whole new
 * one, also after a crash or a power cut, never a mixture or a truncated copy.
 * Every file shiftvit writes whole goes through it: checkpoints (their HDF5
 * image is built in memory and written here), config.ini, the metrics CSVs
 * when a resume rewinds them, metrics.h5 when a resume rebuilds it, checkpoints copied between run folders, and the
 * --trace file.
 *
 *     sv_atomic_file a;
 *     if (sv_atomic_begin(&a, path, why) != 0) ...;      // nothing to undo
 *     fprintf(a.f, ...);                                 // or sv_atomic_write
 *     if (cannot_go_on) sv_atomic_abort(&a);             // target untouched
 *     else if (sv_atomic_commit(&a, why) != 0) ...;      // target replaced or untouched
 *
 * The new contents go to a temporary file ".<name>.tmp.<pid>" in the target's
 * own directory (rename(2) is atomic only within one file system; hidden, so
 * that listings of a run folder show only real files). sv_atomic_commit then
 *   1. flushes the stdio buffer and checks that every write succeeded;
 *   2. fsyncs the temporary file: without it the rename can reach the disk
 *      before the data, and a power cut leaves the target empty or partial;
 *   3. renames it over the target (atomic: readers see old or new);
 *   4. fsyncs the directory: the rename is a change to the directory, and
 *      until that is on disk a power cut can bring back the old file (a
 *      checkpoint reported written would then be lost). File systems that
 *      cannot fsync a directory (EINVAL, EROFS) are accepted;
 *   5. removes temporary files of this target left by writers that were
 *      killed (their process is gone and the file untouched for a minute).
 *
 * Errors: every function that can fail returns -1 (SV_ATOMIC_NOT_DURABLE for
 * step 4) and writes into why (SV_ERR_LEN bytes) one clause naming the file
 * and the system's reason, e.g. "fsync of /run/.last.h5.tmp.42: Input/output
 * error"; callers put their own context in front ("cannot write checkpoint
 * X: ..."). On any failure before the rename the temporary file is removed
 * and the target is untouched. */
#ifndef SHIFTVIT_ATOMIC_FILE_H
#define SHIFTVIT_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "shiftvit/common.h" /* SV_PATH_LEN */

/* sv_atomic_commit: the target was replaced, but the directory fsync failed
 * (the new file may not survive a power cut). */
#define SV_ATOMIC_NOT_DURABLE (-2)

typedef struct {
    char path[SV_PATH_LEN + 64]; /* the target */
    char dir[SV_PATH_LEN + 64];  /* its directory ("." for a bare name) */
    char tmp[SV_PATH_LEN + 96];  /* dir/.<name>.tmp.<pid>; "" once committed or aborted */
    FILE *f;                     /* the temporary file, open for writing */
    int error;                   /* errno of the first failed sv_atomic_write, 0 if none */
} sv_atomic_file;

/* Creates the temporary file beside `path` and opens a->f on it. Returns 0,
 * or -1 (nothing left behind) when path is empty, too long, names a directory
 * ("dir/") or the file cannot be created ("cannot create temporary file T:
 * Permission denied"). */
int sv_atomic_begin(sv_atomic_file *a, const char *path, char *why);

/* fwrite of n bytes to a->f. Returns 0, or -1 after remembering the errno,
 * which sv_atomic_commit then reports (no message here: call commit or
 * abort next either way). Plain fprintf/fputs on a->f are checked by
 * commit too. */
int sv_atomic_write(sv_atomic_file *a, const void *buf, size_t n);

/* Steps 1-5 above. Returns 0; -1 when a write, the file's fsync, its close
 * or the rename failed (temporary file removed, target untouched); or
 * SV_ATOMIC_NOT_DURABLE when only the directory fsync failed. */
int sv_atomic_commit(sv_atomic_file *a, char *why);

/* Closes and removes the temporary file; the target is untouched. Does
 * nothing after commit or a second abort. */
void sv_atomic_abort(sv_atomic_file *a);

#endif
