/* HDF5 helpers shared by the checkpoint code and metrics.c (see h5util.h). */
#include "shiftvit/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "shiftvit/common.h"
#include "shiftvit/text.h"

void sv_h5_quiet_begin(sv_h5_quiet *q) {
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void sv_h5_quiet_end(const sv_h5_quiet *q) {
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

/* Opens path, or its folder when path does not exist (a file HDF5 has not
 * created yet lives on the folder's file system). */
static int open_for_probe(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0 || errno != ENOENT) return fd;
    char dir[SV_PATH_LEN + 64];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    return open(dir, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
}

int sv_flock_probe(const char *path, int exclusive) {
    int fd = open_for_probe(path);
    if (fd < 0) return 0; /* nothing to lock: not a lock problem */
    int rc = 0;
    if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) flock(fd, LOCK_UN);
    else rc = errno == EWOULDBLOCK || errno == EINTR ? EWOULDBLOCK : errno;
    close(fd);
    return rc;
}

static hid_t make_fapl(int locking) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    if (fapl >= 0) H5Pset_file_locking(fapl, locking ? 1 : 0, 1);
#else
    (void)locking;
#endif
    return fapl;
}

/* Closes the property list without losing the error stack of a failure. */
static hid_t finish(hid_t fapl, hid_t f) {
    if (fapl >= 0) {
        hid_t es = f < 0 ? H5Eget_current_stack() : -1;
        H5Pclose(fapl);
        if (es >= 0) H5Eset_current_stack(es);
    }
    return f;
}

static hid_t open_or_create(const char *path, unsigned flags, int create, int locking) {
    hid_t fapl = make_fapl(locking), p = fapl >= 0 ? fapl : H5P_DEFAULT;
    return finish(fapl, create ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, p) : H5Fopen(path, flags, p));
}

/* HDF5 locks every file it opens with flock(2) and fails the open when the
 * file system refuses (ENOLCK: NFS without lockd, some Lustre and GPFS
 * mounts); its ignore_when_disabled flag covers only ENOSYS. HDF5's own
 * answer is HDF5_USE_FILE_LOCKING=FALSE: the same is done here, for the one
 * open, and only when a lock probe shows the lock itself is what fails (a
 * lock held by another program, EWOULDBLOCK, still fails the open). */
static hid_t open_locked_or_not(const char *path, unsigned flags, int create) {
    hid_t f = open_or_create(path, flags, create, 1);
#if H5_VERSION_GE(1, 10, 7)
    int why = f < 0 ? sv_flock_probe(path, create || (flags & H5F_ACC_RDWR)) : 0;
    if (why && why != EWOULDBLOCK) {
        static int warned; /* once per process: every later open would say the same */
        if (!warned) {
            char q[SV_QUOTED_LEN(SV_PATH_LEN + 64)];
            fprintf(stderr, "shiftvit: warning: file locks fail on the file system of %s (%s); HDF5 files are opened "
                            "without HDF5's file locking there (as HDF5_USE_FILE_LOCKING=FALSE does): do not let another "
                            "program write them while this one runs\n",
                    sv_shell_quote(path, q, sizeof q), strerror(why));
        }
        warned = 1;
        f = open_or_create(path, flags, create, 0);
    }
#endif
    return f;
}

hid_t sv_h5_open(const char *path, unsigned flags) { return open_locked_or_not(path, flags, 0); }

hid_t sv_h5_create(const char *path) { return open_locked_or_not(path, 0, 1); }
