/* Atomic file replacement: temporary file, fsync, rename, fsync of the
 * directory (see atomic_file.h for why each step). */
#include "shiftvit/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shiftvit/common.h"

int sv_atomic_begin(sv_atomic_file *a, const char *path, char *why) {
    memset(a, 0, sizeof *a);
    if (!path || !path[0]) return sv_fail(why, "empty path");
    size_t len = strlen(path);
    if (path[len - 1] == '/') return sv_fail(why, "%s names a directory, not a file", path);
    if (len >= sizeof a->path) return sv_fail(why, "path too long: %s", path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) /* else found only by the rename, after the work */
        return sv_fail(why, "%s is a directory, not a file", path);
    memcpy(a->path, path, len + 1);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash) {
        size_t dl = slash == path ? 1 : (size_t)(slash - path); /* "/name" */
        memcpy(a->dir, path, dl);
        a->dir[dl] = '\0';
    } else {
        strcpy(a->dir, ".");
    }
    int n = snprintf(a->tmp, sizeof a->tmp, "%s/.%s.tmp.%ld", a->dir, base, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof a->tmp) {
        a->tmp[0] = '\0';
        return sv_fail(why, "path too long: %s", path);
    }
    int fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd >= 0 && !(a->f = fdopen(fd, "w"))) {
        int e = errno;
        close(fd);
        unlink(a->tmp);
        errno = e;
    }
    if (!a->f) {
        sv_fail(why, "cannot create temporary file %s: %s", a->tmp, strerror(errno));
        a->tmp[0] = '\0';
        return -1;
    }
    return 0;
}

int sv_atomic_write(sv_atomic_file *a, const void *buf, size_t n) {
    if (a->error) return -1;
    if (n && fwrite(buf, 1, n, a->f) != n) {
        a->error = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

void sv_atomic_abort(sv_atomic_file *a) {
    if (a->f) fclose(a->f);
    a->f = NULL;
    if (a->tmp[0]) unlink(a->tmp);
    a->tmp[0] = '\0';
}

/* Removes temporary files ".<base>.tmp.<pid>" left in dir by writers that
 * were killed: the process is gone and the file untouched for a minute. */
static void remove_stale_temps(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d) return;
    char prefix[SV_PATH_LEN + 16];
    snprintf(prefix, sizeof prefix, ".%s.tmp.", base);
    size_t pl = strlen(prefix);
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl) != 0) continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[2 * SV_PATH_LEN + 64];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && now - sb.st_mtime > 60) unlink(p);
    }
    closedir(d);
}

/* fsync of the directory; file systems that cannot (EINVAL, EROFS) pass. */
static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd), e = errno;
    close(fd);
    errno = e;
    return rc != 0 && e != EINVAL && e != EROFS ? -1 : 0;
}

int sv_atomic_commit(sv_atomic_file *a, char *why) {
    if (!a->tmp[0]) return sv_fail(why, "%s: no write in progress", a->path);
    int e = a->error;
    const char *step = "writing";
    if (!e && ferror(a->f)) e = errno ? errno : EIO;
    if (!e && fflush(a->f) != 0) e = errno;
    if (!e && fsync(fileno(a->f)) != 0) e = errno, step = "fsync of";
    int rc = fclose(a->f);
    a->f = NULL;
    if (!e && rc != 0) e = errno, step = "closing";
    if (e) {
        sv_fail(why, "%s %s: %s", step, a->tmp, strerror(e));
        sv_atomic_abort(a);
        return -1;
    }
    if (rename(a->tmp, a->path) != 0) {
        sv_fail(why, "rename from %s: %s", a->tmp, strerror(errno));
        sv_atomic_abort(a);
        return -1;
    }
    a->tmp[0] = '\0';
    if (fsync_dir(a->dir) != 0) {
        sv_fail(why, "fsync of directory %s: %s", a->dir, strerror(errno));
        return SV_ATOMIC_NOT_DURABLE;
    }
    const char *slash = strrchr(a->path, '/');
    remove_stale_temps(a->dir, slash ? slash + 1 : a->path);
    return 0;
}
