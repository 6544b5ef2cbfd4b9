/* A run folder belongs to one run: refusing mixed folders, adopting the history
 * of a run resumed elsewhere (see run_folder.h). */
#include "shiftvit/run_folder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shiftvit/atomic_file.h"
#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/text.h"

static const char *const run_files[] = {
    "config.ini", "last.h5", "best.h5", "metrics.h5", "metrics_steps.csv", "metrics_epochs.csv",
};

/* epoch_NNNN.h5, as train.c names epoch checkpoints. */
static int is_epoch_checkpoint(const char *name) {
    size_t len = strlen(name);
    if (len < 10 || strncmp(name, "epoch_", 6) != 0 || strcmp(name + len - 3, ".h5") != 0) return 0;
    for (size_t i = 6; i < len - 3; i++)
        if (name[i] < '0' || name[i] > '9') return 0;
    return 1;
}

static int is_run_file(const char *name) {
    for (size_t i = 0; i < sizeof run_files / sizeof *run_files; i++)
        if (!strcmp(name, run_files[i])) return 1;
    return is_epoch_checkpoint(name);
}

/* The folder part of a file path ("." for a bare name). */
static void parent_dir(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, n, ".");
    else if (slash == path) snprintf(out, n, "/");
    else snprintf(out, n, "%.*s", (int)(slash - path), path);
}

static int same_folder(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* "run 'tiny', seed 42, 3 epochs done, step 48" from dir/last.h5, or "". */
static void describe_run(const char *dir, char *out, size_t n) {
    char path[SV_PATH_LEN + 16], err[SV_ERR_LEN];
    snprintf(path, sizeof path, "%s/last.h5", dir);
    sv_config cfg;
    sv_train_state st;
    out[0] = '\0';
    if (!exists(path) || sv_checkpoint_read_config(path, &cfg, err) != 0 ||
        sv_checkpoint_read_state(path, &st, err) != 0)
        return;
    char name[SV_QUOTED_LEN(sizeof cfg.name)];
    snprintf(out, n, "run %s, seed %llu, %ld of %d epochs done, step %ld; ",
             sv_shell_quote(cfg.name[0] ? cfg.name : "?", name, sizeof name),
             (unsigned long long)st.seed, st.epoch, cfg.epochs, st.step);
}

int sv_run_folder_lock(const char *dir, char *err) {
    char path[SV_PATH_LEN + 32], q[SV_QUOTED_LEN(SV_PATH_LEN)];
    snprintf(path, sizeof path, "%s/" SV_RUN_LOCK_NAME, dir);
    sv_shell_quote(dir, q, sizeof q);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0664);
    if (fd < 0) return sv_fail(err, "output folder %s: cannot create its lock file: %s", q, strerror(errno));
    int locked = flock(fd, LOCK_EX | LOCK_NB) == 0, why = locked ? 0 : errno;
    if (!locked && why != EWOULDBLOCK) {
        /* A file system without locks (some NFS set-ups): go on unlocked, say so. */
        fprintf(stderr, "shiftvit: warning: output folder %s cannot be locked (%s); another run started into it "
                        "at the same time would not be stopped\n", q, strerror(why));
        return fd;
    }
    if (!locked) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        return sv_fail(err, "output folder %s is in use by another shiftvit run%s%s%s; one folder holds one run",
                       q, pid[0] ? " (process " : "", pid, pid[0] ? ")" : "");
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the pid is only a hint for the message above */
    }
    return fd;
}

int sv_run_folder_claim(const char *dir, const char *resume, int overwrite, char *err) {
    DIR *dp = opendir(dir);
    if (!dp) return 0; /* not there yet (or not a folder: creating it will say so) */
    char found[1024] = "";
    size_t len = 0;
    int count = 0;
    for (struct dirent *e; (e = readdir(dp)) != NULL;) {
        if (!is_run_file(e->d_name)) continue;
        count++;
        if (len < sizeof found - 64)
            len += (size_t)snprintf(found + len, sizeof found - len, "%s%s", len ? ", " : "", e->d_name);
    }
    closedir(dp);
    if (count == 0) return 0;
    if (resume) {
        char from[SV_PATH_LEN];
        parent_dir(resume, from, sizeof from);
        if (same_folder(from, dir)) return 0; /* resuming the run that lives here */
    }
    char q[SV_QUOTED_LEN(SV_PATH_LEN)], what[512];
    sv_shell_quote(dir, q, sizeof q);
    describe_run(dir, what, sizeof what);
    if (!overwrite) {
        char last[SV_PATH_LEN + 16], how[SV_QUOTED_LEN(SV_PATH_LEN) * 2 + 64] = "";
        snprintf(last, sizeof last, "%s/last.h5", dir);
        if (exists(last)) snprintf(how, sizeof how, "resume that run with --resume %s/last.h5 --out %s, ", q, q);
        return sv_fail(err,
                       "output folder %s holds another run (%sfiles: %s); one folder holds one run: "
                       "%schoose another --out, or pass --overwrite to delete its files first",
                       q, what, found, how);
    }
    dp = opendir(dir);
    if (!dp) return sv_fail(err, "output folder %s: cannot list it: %s", q, strerror(errno));
    int rc = 0;
    for (struct dirent *e; (e = readdir(dp)) != NULL && !rc;) {
        if (!is_run_file(e->d_name)) continue;
        char path[SV_PATH_LEN + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            rc = sv_fail(err, "--overwrite: cannot remove %s/%s: %s", q, e->d_name, strerror(errno));
    }
    closedir(dp);
    if (!rc) printf("--overwrite: removed the files of the earlier run in %s (%s%s)\n", q, what, found);
    return rc;
}

/* Copies src to dst atomically (atomic_file.h): dst is either the old file
 * or the whole copy. */
static int copy_file(const char *src, const char *dst, char *err) {
    char qs[SV_QUOTED_LEN(SV_PATH_LEN)], qd[SV_QUOTED_LEN(SV_PATH_LEN)], why[SV_ERR_LEN];
    sv_shell_quote(src, qs, sizeof qs);
    sv_shell_quote(dst, qd, sizeof qd);
    int in = open(src, O_RDONLY);
    if (in < 0) return sv_fail(err, "cannot read %s: %s", qs, strerror(errno));
    sv_atomic_file a;
    if (sv_atomic_begin(&a, dst, why) != 0) {
        close(in);
        return sv_fail(err, "cannot create a copy of %s next to %s: %s", qs, qd, why);
    }
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0 && sv_atomic_write(&a, buf, (size_t)n) == 0) {
    }
    int e = n < 0 ? errno : 0;
    close(in);
    if (e) {
        sv_atomic_abort(&a);
        return sv_fail(err, "cannot copy %s to %s: %s", qs, qd, strerror(e));
    }
    if (sv_atomic_commit(&a, why) != 0) return sv_fail(err, "cannot copy %s to %s: %s", qs, qd, why);
    return 0;
}

/* 1 if the checkpoint at path holds the weights at the end of epoch `epoch`. */
static int holds_epoch_end(const char *path, long epoch) {
    sv_train_state st;
    char err[SV_ERR_LEN];
    return exists(path) && sv_checkpoint_read_state(path, &st, err) == 0 && st.epoch == epoch &&
           st.step_in_epoch == 0;
}

/* The checkpoint holding the best weights as of state st (the end of epoch
 * st->best_epoch): the resumed file itself, or folder from's best.h5 or
 * epoch_NNNN.h5 whose /state says so. The path goes into buf; NULL if none. */
static const char *best_weights_as_of(const char *from, const char *resume, const sv_train_state *st,
                                      char *buf, size_t n) {
    if (st->best_epoch <= 0) return NULL;
    for (int i = 0; i < 3; i++) {
        if (i == 0) snprintf(buf, n, "%s", resume);
        else if (i == 1) snprintf(buf, n, "%s/best.h5", from);
        else snprintf(buf, n, "%s/epoch_%04ld.h5", from, st->best_epoch);
        if (holds_epoch_end(buf, st->best_epoch)) return buf;
    }
    return NULL;
}

int sv_run_folder_adopt(const char *dir, const char *resume, const sv_train_state *st,
                        char *err) {
    char from[SV_PATH_LEN];
    parent_dir(resume, from, sizeof from);
    if (same_folder(from, dir)) return 0;
    char qf[SV_QUOTED_LEN(SV_PATH_LEN)], qd[SV_QUOTED_LEN(SV_PATH_LEN)];
    sv_shell_quote(from, qf, sizeof qf);
    sv_shell_quote(dir, qd, sizeof qd);
    char src[SV_PATH_LEN + 32], dst[SV_PATH_LEN + 32], brought[160] = "";
    static const char *const logs[] = {"metrics_steps.csv", "metrics_epochs.csv"};
    int nlogs = 0;
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", from, logs[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, logs[i]);
        if (!exists(src)) continue;
        if (copy_file(src, dst, err) != 0) return -1;
        nlogs++;
    }
    if (nlogs)
        snprintf(brought, sizeof brought, "its metrics up to step %ld", st->step);
    if (st->best_epoch > 0) {
        char cand[SV_PATH_LEN + 32];
        const char *found = best_weights_as_of(from, resume, st, cand, sizeof cand);
        snprintf(dst, sizeof dst, "%s/best.h5", dir);
        if (found) {
            if (copy_file(found, dst, err) != 0) return -1;
            size_t len = strlen(brought);
            snprintf(brought + len, sizeof brought - len, "%sbest.h5 (epoch %ld, val top-1 %.4f)",
                     len ? " and " : "", st->best_epoch, st->best_val_top1);
        } else {
            fprintf(stderr,
                    "shiftvit: warning: the best weights so far (epoch %ld, val top-1 %.4f) are not in %s "
                    "(no best.h5 or epoch_%04ld.h5 from that epoch); %s/best.h5 will be written at the next "
                    "improvement\n",
                    st->best_epoch, st->best_val_top1, qf, st->best_epoch, qd);
        }
    }
    printf("Continuing the run of %s in %s%s%s\n", qf, qd, brought[0] ? ": brought " : "", brought);
    return 0;
}

/* Replaces dst by a copy of src; says so. */
static int replace_with(const char *src, const char *dst, const char *why, char *err) {
    char qs[SV_QUOTED_LEN(SV_PATH_LEN)], qd[SV_QUOTED_LEN(SV_PATH_LEN)];
    if (copy_file(src, dst, err) != 0) return -1;
    printf("Rewound: %s is now %s (%s)\n", sv_shell_quote(dst, qd, sizeof qd), sv_shell_quote(src, qs, sizeof qs), why);
    return 0;
}

int sv_run_folder_rewind(const char *dir, const char *resume, const sv_train_state *st, char *err) {
    char from[SV_PATH_LEN];
    parent_dir(resume, from, sizeof from);
    if (!same_folder(from, dir)) return 0;
    char q[SV_QUOTED_LEN(SV_PATH_LEN)], path[SV_PATH_LEN + 32];
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    /* Epoch checkpoints from beyond the resumed point belong to the abandoned future. */
    for (struct dirent *e; (e = readdir(dp)) != NULL;) {
        if (!is_epoch_checkpoint(e->d_name) || atol(e->d_name + 6) <= st->epoch) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat a, b;
        if (stat(path, &a) == 0 && stat(resume, &b) == 0 && a.st_ino == b.st_ino) continue;
        if (unlink(path) != 0) {
            closedir(dp);
            return sv_fail(err, "cannot remove %s: %s", sv_shell_quote(path, q, sizeof q), strerror(errno));
        }
        printf("Rewound: removed %s (after the resumed step %ld)\n", sv_shell_quote(path, q, sizeof q), st->step);
    }
    closedir(dp);
    sv_train_state later;
    char e2[SV_ERR_LEN];
    /* best.h5 from after the resumed point: back to the best as of that point. */
    snprintf(path, sizeof path, "%s/best.h5", dir);
    if (exists(path) && sv_checkpoint_read_state(path, &later, e2) == 0 && later.step > st->step) {
        /* (best.h5 itself, from after the resumed step, never qualifies) */
        char cand[SV_PATH_LEN + 32];
        const char *found = best_weights_as_of(dir, resume, st, cand, sizeof cand);
        if (found) {
            if (replace_with(found, path, "the best weights as of the resumed step", err) != 0) return -1;
        } else {
            if (unlink(path) != 0) return sv_fail(err, "cannot remove %s: %s", sv_shell_quote(path, q, sizeof q), strerror(errno));
            printf("Rewound: removed %s (from after the resumed step; the best weights as of it are not in the folder)\n",
                   sv_shell_quote(path, q, sizeof q));
        }
    }
    /* last.h5 from after the resumed point: a resume before the next checkpoint would jump ahead. */
    snprintf(path, sizeof path, "%s/last.h5", dir);
    struct stat a, b;
    int is_resume = stat(path, &a) == 0 && stat(resume, &b) == 0 && a.st_ino == b.st_ino;
    if (!is_resume && exists(path) && sv_checkpoint_read_state(path, &later, e2) == 0 && later.step > st->step)
        if (replace_with(resume, path, "the resumed checkpoint", err) != 0) return -1;
    return 0;
}

/* ".last.h5.tmp.4242" -> base "last.h5" (n bytes), pid 4242; 0 when the name
 * is not an atomic_file.h temporary file. */
static int temp_file_of(const char *name, char *base, size_t n, long *pid) {
    const char *t = strstr(name, ".tmp.");
    if (name[0] != '.' || !t || t == name + 1) return 0;
    char *end;
    *pid = strtol(t + 5, &end, 10);
    if (*end || end == t + 5 || *pid <= 0) return 0;
    snprintf(base, n, "%.*s", (int)(t - name - 1), name + 1);
    return 1;
}

int sv_run_folder_remove_stale_temps(const char *dir, int locked) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int removed = 0;
    double mb = 0;
    for (struct dirent *e; (e = readdir(dp)) != NULL;) {
        char base[256], path[SV_PATH_LEN + 300];
        long pid;
        if (!temp_file_of(e->d_name, base, sizeof base, &pid) || pid == (long)getpid()) continue;
        /* A run file's writer held this folder's lock, which is now ours: it
         * is gone. Any other writer: only when its process is. */
        int dead = (locked && is_run_file(base)) || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (!dead || lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || unlink(path) != 0) continue;
        removed++;
        mb += sb.st_size / 1048576.0;
    }
    closedir(dp);
    if (removed) {
        char q[SV_QUOTED_LEN(SV_PATH_LEN)];
        printf("Removed %d temporary file(s) (%.1f MB) left in %s by a writer that was killed\n", removed, mb,
               sv_shell_quote(dir, q, sizeof q));
    }
    return removed;
}
