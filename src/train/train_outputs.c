/* What the trainer writes and prints: the run folder, checkpoints (with ZeRO
 * stage 1's gather), the resume command, recorded config changes, the progress
 * line (train_internal.h). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shiftvit/atomic_file.h"
#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/launch.h"
#include "shiftvit/layers.h"
#include "shiftvit/run_folder.h"
#include "shiftvit/text.h"
#include "shiftvit/trace.h"
#include "train_internal.h"

static int tr_mkdir_p(const char *path) {
    char tmp[SV_PATH_LEN];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0775) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0775) != 0 && errno != EEXIST) return -1;
    return 0;
}

/* Creates the output directory and proves it writable before any training. */
int tr_prepare_out_dir(const char *dir, int *created, char *err) {
    struct stat st;
    *created = stat(dir, &st) != 0;
    if (tr_mkdir_p(dir) != 0)
        return sv_fail(err, "output directory %s: cannot create it: %s", dir, strerror(errno));
    char probe[SV_PATH_LEN + 32];
    snprintf(probe, sizeof probe, "%s/.write_test", dir);
    FILE *f = fopen(probe, "w");
    if (!f) return sv_fail(err, "output directory %s is not writable: %s", dir, strerror(errno));
    int bad = fputs("ok\n", f) < 0;
    bad |= fclose(f) != 0;
    unlink(probe);
    if (bad) return sv_fail(err, "output directory %s: writing failed: %s", dir, strerror(errno));
    return 0;
}

void tr_remove_if_only_lock(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return;
    int others = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, SV_RUN_LOCK_NAME)) others++;
    closedir(dp);
    if (others) return;
    char lock[SV_PATH_LEN + 32];
    snprintf(lock, sizeof lock, "%s/%s", dir, SV_RUN_LOCK_NAME);
    unlink(lock);
    rmdir(dir);
}

/* dir/config.ini: the resolved config, written atomically. */
int tr_write_config_ini(const char *dir, const sv_config *cfg, char *err) {
    char path[SV_PATH_LEN + 32], why[SV_ERR_LEN];
    snprintf(path, sizeof path, "%s/config.ini", dir);
    sv_atomic_file a;
    if (sv_atomic_begin(&a, path, why) != 0) return sv_fail(err, "cannot write %s: %s", path, why);
    sv_config_write(cfg, a.f);
    if (sv_atomic_commit(&a, why) != 0) return sv_fail(err, "cannot write %s: %s", path, why);
    return 0;
}

void tr_resolve_out_dir(char *out, const sv_config *cfg, const sv_train_opts *o, sv_dist *d) {
    if (o->out_dir && *o->out_dir) snprintf(out, SV_PATH_LEN, "%s", o->out_dir);
    else if (cfg->out_dir[0]) snprintf(out, SV_PATH_LEN, "%s", cfg->out_dir);
    else {
        /* Rank 0's clock names the run; every rank must agree on it. */
        long stamp = (long)time(NULL);
        stamp = sv_dist_bcast_long(d, stamp);
        time_t t = (time_t)stamp;
        struct tm tm;
        localtime_r(&t, &tm);
        char ts[32];
        strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", &tm);
        snprintf(out, SV_PATH_LEN, "results/runs/%s-%s", cfg->name[0] ? cfg->name : "run", ts);
    }
}

/* sv_checkpoint_save as sv_dist_local_work's job. */
typedef struct {
    const ckpt_ctx *c;
    const sv_adamw *opt;
    char path[SV_PATH_LEN + 64], err[SV_ERR_LEN];
} ckpt_write;

static int write_checkpoint(void *p) {
    ckpt_write *w = p;
    return sv_checkpoint_save_ema(w->path, w->c->m, w->c->ema ? w->c->ema->w : NULL, w->opt, w->c->st, w->c->cfg,
                                  w->err);
}

/* Rank 0 writes `name`; every rank learns whether it worked. */
int tr_save_checkpoint(ckpt_ctx *c, const char *name) {
    int ok = 1;
    double t0 = sv_now();
    /* ZeRO stage 1: rank 0 gathers the AdamW state; the file's layout is stage 0's. */
    sv_adamw full = *c->opt;
    if (c->d->zero) {
        full.n = c->m->num_params;
        full.m = c->d->rank == 0 ? sv_alloc(2 * full.n * sizeof(float), "gathered AdamW state") : NULL;
        full.v = full.m ? full.m + full.n : NULL;
        sv_zero_gather(c->d, c->opt->m, full.m);
        sv_zero_gather(c->d, c->opt->v, full.v);
    }
    if (c->d->rank == 0) {
        ckpt_write w = {c, &full, "", ""};
        snprintf(w.path, sizeof w.path, "%s/%s", c->dir, name);
        /* A slow file system must not look like a lost rank to the others. */
        if (sv_dist_local_work(c->d, SV_LOCAL_CHECKPOINT, write_checkpoint, &w) != 0) {
            fprintf(stderr, "shiftvit: checkpoint not written: %s\n", w.err);
            ok = 0;
        }
    }
    if (c->d->zero) sv_free(full.m);
    ok = sv_dist_bcast_int(c->d, ok);
    if (ok) c->saved_step = c->st->step;
    else c->failures++;
    /* Only rank 0 writes: the others wait for it (issue 26, section 3). */
    char what[32];
    snprintf(what, sizeof what, "checkpoint %s", name);
    sv_trace_add(c->trace, c->d->rank == 0 ? SV_TR_CHECKPOINT : SV_TR_WAIT, t0, sv_now(), c->st->step, -1,
                 c->d->rank == 0 ? name : what);
    return ok;
}

/* Epoch checkpoints epoch_NNNN.h5: keep the newest keep_last. */
void tr_rotate_checkpoints(ckpt_ctx *c, long epoch_done) {
    if (c->d->rank != 0 || c->cfg->keep_last <= 0) return;
    long old = epoch_done - (long)c->cfg->keep_last * c->cfg->checkpoint_every;
    if (old < 1) return;
    char path[SV_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/epoch_%04ld.h5", c->dir, old);
    unlink(path);
}

/* dir/name as one shell word. */
const char *tr_quote_in(const char *dir, const char *name, char *q, size_t n) {
    char path[SV_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return sv_shell_quote(path, q, n);
}

/* The command that continues the run in dir, ready to paste into a shell:
 * inside a SLURM job the batch script's submission (jobs/train.sbatch resumes
 * from RUN_DIR/last.h5); else this binary by its absolute path, under its MPI's
 * launcher with the same world size when there is more than one rank; the
 * config comes from the checkpoint. */
const char *tr_resume_command(const char *dir, int world, char *q, size_t n) {
    if (getenv("SLURM_JOB_ID")) {
        char out[SV_QUOTED_LEN(SV_PATH_LEN)];
        snprintf(q, n, "RUN_DIR=%s sbatch jobs/train.sbatch", sv_shell_quote(dir, out, sizeof out));
        return q;
    }
    char ckpt[SV_QUOTED_LEN(SV_PATH_LEN + 16)], out[SV_QUOTED_LEN(SV_PATH_LEN)], exe[SV_PATH_LEN] = "shiftvit",
         qexe[SV_QUOTED_LEN(SV_PATH_LEN)], launcher[160] = "";
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) exe[len] = '\0';
    else snprintf(exe, sizeof exe, "shiftvit");
    /* The launcher of the MPI this binary was built with (launch.h). */
    sv_launch_opts lo = {world, 1, SV_BIND_DEFAULT, NULL};
    if (world > 1 && sv_launch_command(&lo, ' ', launcher, sizeof launcher - 1) == 0) strcat(launcher, " ");
    else launcher[0] = '\0';
    snprintf(q, n, "%s%s train --resume %s --out %s", launcher, sv_shell_quote(exe, qexe, sizeof qexe),
             tr_quote_in(dir, "last.h5", ckpt, sizeof ckpt), sv_shell_quote(dir, out, sizeof out));
    return q;
}

/* FILE.rankR.json beside --trace FILE (FILE's ".json" replaced). */
static void rank_trace_path(const char *file, int rank, char *out, size_t n) {
    size_t len = strlen(file);
    int json = len > 5 && !strcmp(file + len - 5, ".json");
    snprintf(out, n, "%.*s.rank%d.json", (int)(json ? len - 5 : len), file, rank);
}

void tr_on_abort(void *ctx, int mine, char *hint, size_t n) {
    const tr_abort_ctx *a = ctx;
    const sv_trace *t = *a->trace;
    size_t len = 0;
    if (t && t->ev) {
        char path[SV_PATH_LEN + 32], err[SV_ERR_LEN], q[SV_QUOTED_LEN(SV_PATH_LEN + 32)];
        rank_trace_path(a->trace_path, a->d->rank, path, sizeof path);
        if (sv_trace_write_rank(t, a->d, path, err) == 0)
            len += (size_t)snprintf(hint, n, "its trace up to the timeout (%zu events) is in %s. ", t->n,
                                    sv_shell_quote(path, q, sizeof q));
        else
            len += (size_t)snprintf(hint, n, "its trace could not be written: %s. ", err);
    }
    if (!mine || len >= n) return;
    char q[SV_QUOTED_LEN(SV_PATH_LEN) * 3], c[SV_QUOTED_LEN(SV_PATH_LEN + 16)];
    if (a->cc->saved_step >= 0)
        snprintf(hint + len, n - len, "Nothing was written after %s (step %ld); resume from it with: %s",
                 tr_quote_in(a->out, "last.h5", c, sizeof c), a->cc->saved_step,
                 tr_resume_command(a->out, a->d->world, q, sizeof q));
    else if (a->resume)
        snprintf(hint + len, n - len, "No checkpoint was written since the resume; resume again from %s",
                 sv_shell_quote(a->resume, c, sizeof c));
    else
        snprintf(hint + len, n - len, "No checkpoint was written yet: nothing to resume from.");
}

/* sv_dist_local_work's job for tr_rank0_metrics. */
typedef struct {
    sv_metrics *mt;
    const sv_epoch_row *row;
    int close;
} metrics_job;

static int metrics_io(void *p) {
    metrics_job *j = p;
    if (j->row) sv_metrics_epoch(j->mt, j->row);
    else if (j->close) sv_metrics_close(j->mt);
    else sv_metrics_flush(j->mt);
    return 0;
}

void tr_rank0_metrics(sv_dist *d, sv_metrics *mt, const sv_epoch_row *row, int close) {
    metrics_job j = {mt, row, close};
    if (d->rank == 0) sv_dist_local_work(d, SV_LOCAL_METRICS, metrics_io, &j);
}

/* --resume-with-changes: the log and every later checkpoint say which keys
 * changed at which step; /state takes the new seed so that it agrees with
 * /config. */
void tr_record_changes(sv_train_state *st, const sv_config *cfg, const char *changes,
                           int rank0) {
    if (rank0) printf("Continuing with changed keys from step %ld:\n", st->step);
    for (const char *line = changes; *line;) {
        size_t n = strcspn(line, "\n");
        size_t len = strlen(st->config_changes);
        if (len + n + 32 < sizeof st->config_changes)
            snprintf(st->config_changes + len, sizeof st->config_changes - len, "step %ld: %.*s\n",
                     st->step, (int)n, line);
        if (rank0) printf("  %.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
    st->seed = cfg->seed;
}

/* ---- progress display (rank 0) ---- */

/* Redraw the progress line in place only on a terminal. Open MPI hands its
 * ranks a pseudo-terminal even when mpirun's own output goes to a file (a
 * SLURM log), so under mpirun lines are the default; SHIFTVIT_PROGRESS=tty or
 * =lines forces either. */
int tr_progress_on_terminal(sv_progress_mode mode) {
    if (mode == SV_PROGRESS_TTY) return 1;
    if (mode == SV_PROGRESS_LINES) return 0;
    if (getenv("OMPI_COMM_WORLD_SIZE")) return 0;
    return isatty(STDOUT_FILENO);
}

void tr_progress(int tty, long done, long total, double elapsed, double ms_step, double loss,
                     double top1, double top5, int final) {
    char bar[32];
    int width = 30, filled = total ? (int)(width * done / total) : width;
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : '.';
    if (filled < width && filled >= 0) bar[filled] = '>';
    bar[width] = '\0';
    printf("%s%4ld/%ld [%s] - %.0fs %.0fms/step - loss: %.4f - top1: %.4f - top5: %.4f%s",
           tty ? "\r" : "", done, total, bar, elapsed, ms_step, loss, top1, top5,
           (!tty || final) ? "\n" : "");
    fflush(stdout);
}

/* sv_checkpoint_load, and with ZeRO stage 1 this rank's shards of the AdamW
 * state it holds (the file has stage 0's layout, whatever wrote it). */
int tr_load_checkpoint(const char *path, sv_model *m, sv_adamw *opt, sv_train_state *st, const sv_dist *d,
                           char *err) {
    if (!d->zero) return sv_checkpoint_load(path, m, opt, st, err);
    sv_adamw full = *opt;
    full.n = m->num_params;
    full.m = sv_alloc(2 * full.n * sizeof(float), "AdamW state being loaded");
    full.v = full.m + full.n;
    int rc = sv_checkpoint_load(path, m, &full, st, err);
    if (rc == 0) {
        sv_zero_take_shards(d, full.m, opt->m);
        sv_zero_take_shards(d, full.v, opt->v);
        opt->t = full.t;
    }
    sv_free(full.m);
    return rc;
}
