/* Metrics logs (see metrics.h): CSV files for `tail` and spreadsheets, and
 * <dir>/metrics.h5 with extendable float64 columns /steps/<name> and
 * /epochs/<name>.
 *
 * Rows are buffered in memory and appended to metrics.h5 at each
 * sv_metrics_flush (every epoch, and at close): the HDF5 file is opened,
 * extended and closed there, so between flushes it is closed and consistent
 * (a crash loses at most the rows since the last flush, and other programs
 * can read it while a run goes on). The step hot path only formats one CSV
 * line and copies seven doubles.
 *
 * A reader that holds the file open (h5py, a notebook, h5dump) holds HDF5's
 * file lock, and the writer cannot open it then. HDF5's locking stays on (a
 * reader must never see a half-written file), so a flush that cannot write
 * keeps its rows and tries again at the next flush, first cutting the columns
 * back to the rows known to be complete (a failed append can leave some
 * columns longer than others); close retries for a few seconds. Messages
 * name the lock when it is the cause. A resume never waits for a reader: the
 * CSV files are the record, and when metrics.h5 must be rebuilt from them
 * (or a reader holds it) the new file is written beside it and renamed over
 * it (atomic_file.h), so the reader keeps the old file and the run goes on.
 * File systems without locks: sv_h5_open (h5util.h). */
#include "shiftvit/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <sys/file.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shiftvit/atomic_file.h"
#include "shiftvit/common.h"
#include "shiftvit/text.h"
#include "shiftvit/h5util.h"

#define NSTEP 7
#define NEPOCH 9
#define NRANK 4 /* numeric columns of metrics_ranks.csv; the host name follows them */

static const char *const step_cols[NSTEP] = {"step", "epoch", "lr", "loss",
                                             "top1", "top5", "images_per_s"};
static const char *const epoch_cols[NEPOCH] = {"epoch",    "train_loss", "train_top1",
                                               "train_top5", "val_loss", "val_top1",
                                               "val_top5", "lr",         "seconds"};
static const char *const rank_cols[NRANK] = {"step", "rank", "compute_ms", "wait_ms"};

typedef struct {
    double *v; /* rows x ncols, row-major */
    size_t rows, cap;
    int ncols;
} rowbuf;

struct sv_metrics {
    FILE *steps, *epochs, *ranks;
    char h5path[SV_PATH_LEN + 32];
    char h5path_q[SV_QUOTED_LEN(SV_PATH_LEN + 32)]; /* h5path as one shell word, for messages */
    rowbuf sbuf, ebuf, rbuf; /* rows not yet in metrics.h5 */
    size_t h5_srows, h5_erows, h5_rrows; /* rows known to be complete in metrics.h5 */
    int h5_failed;      /* out of memory for the buffers: CSVs only from then on */
    int h5_pending;     /* a flush failed and its rows wait (warned once) */
};

/* ------------------------------------------------------------ row buffers */

static int rowbuf_push(rowbuf *b, const double *row) {
    if (b->rows == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        double *v = realloc(b->v, cap * (size_t)b->ncols * sizeof(double));
        if (!v) return -1;
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->rows * (size_t)b->ncols, row, (size_t)b->ncols * sizeof(double));
    b->rows++;
    return 0;
}

/* ------------------------------------------------------------ HDF5 */

/* 1 if another process holds HDF5's file lock on path (HDF5 locks with
 * flock(2): shared for readers, exclusive for writers). */
static int h5_locked_by_other(const char *path) { return sv_flock_probe(path, 1) == EWOULDBLOCK; }

static const char lock_hint[] =
    "another program has it open (an HDF5 reader such as h5py, a notebook or h5dump holds its file lock)";

/* The error for a metrics.h5 that could not be created or opened: names the
 * lock when it is the cause. Returns -1. */
static int open_failure(char *err, const char *path) {
    if (h5_locked_by_other(path))
        return sv_fail(err, "%s is locked: %s; close it and start again", path, lock_hint);
    return sv_fail(err, "%s: cannot create the HDF5 metrics log", path);
}


static int create_group(hid_t f, const char *group, const char *const *cols, int ncols,
                        hsize_t chunk) {
    hid_t g = H5Gcreate2(f, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    hsize_t zero = 0, maxd = H5S_UNLIMITED;
    hid_t space = H5Screate_simple(1, &zero, &maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int rc = space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 1, &chunk) < 0 ? -1 : 0;
    for (int c = 0; !rc && c < ncols; c++) {
        hid_t d = H5Dcreate2(g, cols[c], H5T_IEEE_F64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (d < 0) rc = -1;
        else H5Dclose(d);
    }
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    H5Gclose(g);
    return rc;
}

/* Creates (truncating) the metrics file with empty columns; returns it open,
 * or -1. */
static hid_t h5_create_open(const char *path) {
    hid_t f = sv_h5_create(path);
    if (f < 0) return -1;
    if (create_group(f, "/steps", step_cols, NSTEP, 1024) == 0 &&
        create_group(f, "/epochs", epoch_cols, NEPOCH, 64) == 0 &&
        create_group(f, "/ranks", rank_cols, NRANK, 1024) == 0)
        return f;
    H5Fclose(f);
    return -1;
}

static int h5_create(const char *path) {
    hid_t f = h5_create_open(path);
    return f < 0 || H5Fclose(f) < 0 ? -1 : 0;
}

/* Appends rows (row-major, ncols columns) to group/<col> of an open file. */
static int h5_append_rows(hid_t f, const char *group, const char *const *cols, int ncols,
                          const double *v, size_t rows) {
    if (rows == 0) return 0;
    hsize_t mdims[2] = {rows, (hsize_t)ncols};
    hid_t mspace = H5Screate_simple(2, mdims, NULL);
    if (mspace < 0) return -1;
    int rc = 0;
    char name[64];
    for (int c = 0; !rc && c < ncols; c++) {
        snprintf(name, sizeof name, "%s/%s", group, cols[c]);
        hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
        if (d < 0) {
            rc = -1;
            break;
        }
        hid_t fs = H5Dget_space(d);
        hsize_t n0 = 0;
        if (fs < 0 || H5Sget_simple_extent_ndims(fs) != 1) rc = -1;
        else H5Sget_simple_extent_dims(fs, &n0, NULL);
        if (fs >= 0) H5Sclose(fs);
        hsize_t n1 = n0 + rows;
        if (!rc && H5Dset_extent(d, &n1) < 0) rc = -1;
        if (!rc) {
            fs = H5Dget_space(d);
            hsize_t fstart = n0, fcount = rows;
            hsize_t mstart[2] = {0, (hsize_t)c}, mcount[2] = {rows, 1};
            if (fs < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, &fstart, NULL, &fcount, NULL) < 0 ||
                H5Sselect_hyperslab(mspace, H5S_SELECT_SET, mstart, NULL, mcount, NULL) < 0 ||
                H5Dwrite(d, H5T_NATIVE_DOUBLE, mspace, fs, H5P_DEFAULT, v) < 0)
                rc = -1;
            if (fs >= 0) H5Sclose(fs);
        }
        H5Dclose(d);
    }
    H5Sclose(mspace);
    return rc;
}

static hssize_t column_length(hid_t f, const char *name) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    hid_t t = H5Dget_type(d);
    hssize_t n = -1;
    if (s >= 0 && t >= 0 && H5Sget_simple_extent_ndims(s) == 1 && H5Tget_class(t) == H5T_FLOAT)
        n = H5Sget_simple_extent_npoints(s);
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return n;
}

/* Sets every column of group to the first `keep_rows` rows; -1 if a column
 * is missing or shorter than that. */
static int h5_truncate_group(hid_t f, const char *group, const char *const *cols, int ncols,
                             size_t keep_rows) {
    char name[64];
    for (int c = 0; c < ncols; c++) {
        snprintf(name, sizeof name, "%s/%s", group, cols[c]);
        hssize_t n = column_length(f, name);
        if (n < 0 || (size_t)n < keep_rows) return -1;
        hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
        if (d < 0) return -1;
        hsize_t k = keep_rows;
        herr_t rc = H5Dset_extent(d, &k);
        H5Dclose(d);
        if (rc < 0) return -1;
    }
    return 0;
}

/* Reads the key column (group/first col) and checks its first `rows` values
 * equal the CSV's keys (so the HDF5 file and the CSV agree). */
static int h5_keys_match(hid_t f, const char *group, const char *key, const rowbuf *csv) {
    char name[64];
    snprintf(name, sizeof name, "%s/%s", group, key);
    hssize_t n = column_length(f, name);
    if (n < 0 || (size_t)n < csv->rows) return 0;
    if (csv->rows == 0) return 1;
    double *v = malloc((size_t)n * sizeof(double));
    if (!v) return 0;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    int ok = d >= 0 && H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0;
    if (d >= 0) H5Dclose(d);
    for (size_t i = 0; ok && i < csv->rows; i++) ok = v[i] == csv->v[i * (size_t)csv->ncols];
    free(v);
    return ok;
}

/* ------------------------------------------------------------ CSV */

/* Parses one CSV data line of exactly ncols numbers into row (text_tail: then
 * one more, non-empty text column); 0 on success. */
static int parse_row(const char *line, size_t len, int ncols, int text_tail, double *row) {
    char buf[1024];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    char *p = buf;
    for (int c = 0; c < ncols; c++) {
        char *end;
        errno = 0;
        row[c] = strtod(p, &end);
        if (end == p) return -1;
        p = end;
        if (c < ncols - 1) {
            if (*p != ',') return -1;
            p++;
        }
    }
    if (text_tail) return p[0] == ',' && p[1] != '\0' && p[1] != '\r' && !strchr(p + 1, ',') ? 0 : -1;
    while (*p == ' ' || *p == '\r') p++;
    return *p ? -1 : 0;
}

/* Keeps the header and the complete rows whose first column is <= keep;
 * rewrites the file (atomic_file.h) and returns the kept rows in out.
 * A missing or empty file is created with the header. */
static int csv_truncate(const char *path, const char *header, int ncols, int text_tail, long keep,
                        rowbuf *out, char *err) {
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0;
    if (f) {
        struct stat sb;
        if (fstat(fileno(f), &sb) == 0 && sb.st_size > 0) {
            text = malloc((size_t)sb.st_size + 1);
            if (!text) {
                fclose(f);
                return sv_fail(err, "%s: out of memory reading it", path);
            }
            len = fread(text, 1, (size_t)sb.st_size, f);
            text[len] = '\0';
        }
        fclose(f);
    } else if (errno != ENOENT) {
        return sv_fail(err, "%s: cannot read: %s", path, strerror(errno));
    }

    sv_atomic_file a;
    char why[SV_ERR_LEN];
    if (sv_atomic_begin(&a, path, why) != 0) {
        free(text);
        return sv_fail(err, "%s: cannot open for writing: %s", path, why);
    }
    fprintf(a.f, "%s\n", header);
    double row[16];
    size_t pos = 0;
    int first = 1;
    while (text && pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        if (!nl) break; /* an incomplete last line (crash mid-write) is dropped */
        size_t ll = (size_t)(nl - line);
        pos += ll + 1;
        if (first) { /* the header */
            first = 0;
            if (parse_row(line, ll, ncols, text_tail, row) != 0) continue;
        }
        if (parse_row(line, ll, ncols, text_tail, row) != 0 || row[0] > (double)keep) continue;
        sv_atomic_write(&a, line, ll + 1);
        if (rowbuf_push(out, row) != 0) {
            sv_atomic_abort(&a);
            free(text);
            return sv_fail(err, "%s: out of memory", path);
        }
    }
    free(text);
    if (sv_atomic_commit(&a, why) != 0) return sv_fail(err, "%s: cannot rewrite: %s", path, why);
    return 0;
}

static const char step_header[] = "step,epoch,lr,loss,top1,top5,images_per_s";
static const char epoch_header[] =
    "epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,seconds";
static const char rank_header[] = "step,rank,compute_ms,wait_ms,host";

static FILE *open_csv(const char *dir, const char *name, const char *header, int append,
                      char *err) {
    char path[SV_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) {
        sv_fail(err, "%s: cannot open for writing: %s", path, strerror(errno));
        return NULL;
    }
    if (!append || ftell(f) == 0) fprintf(f, "%s\n", header);
    return f;
}

/* ------------------------------------------------------------ API */

/* A new metrics.h5 holding the rows: written as the temporary file of an
 * atomic replacement (HDF5 writes it through its own descriptor, commit
 * then fsyncs and renames it). Never H5Fcreate on metrics.h5 itself: HDF5
 * truncates before it locks, which would empty a reader's file. */
static int h5_rebuild(const char *path, const rowbuf *srows, const rowbuf *erows, const rowbuf *rrows, char *why) {
    sv_atomic_file a;
    if (sv_atomic_begin(&a, path, why) != 0) return -1;
    hid_t f = h5_create_open(a.tmp);
    int rc = f < 0 ? -1 : 0;
    if (!rc) rc = h5_append_rows(f, "/steps", step_cols, NSTEP, srows->v, srows->rows);
    if (!rc) rc = h5_append_rows(f, "/epochs", epoch_cols, NEPOCH, erows->v, erows->rows);
    if (!rc) rc = h5_append_rows(f, "/ranks", rank_cols, NRANK, rrows->v, rrows->rows);
    if (f >= 0 && H5Fclose(f) < 0) rc = -1;
    if (rc) {
        sv_fail(why, "cannot write the HDF5 file %s", a.tmp);
        sv_atomic_abort(&a);
        return -1;
    }
    return sv_atomic_commit(&a, why) == -1 ? -1 : 0;
}

/* Append mode: brings metrics.h5 to the kept CSV rows, by truncating its
 * columns when they agree with the CSV, else (or when a reader holds it)
 * rebuilding it from the CSV. */
static int h5_resume(sv_metrics *mt, const rowbuf *srows, const rowbuf *erows, const rowbuf *rrows, char *err) {
    const char *path = mt->h5path;
    int ok = 0, held = h5_locked_by_other(path);
    if (!held && access(path, F_OK) == 0 && H5Fis_hdf5(path) > 0) {
        hid_t f = sv_h5_open(path, H5F_ACC_RDWR);
        /* A log from before the straggler report has no /ranks: it gets an empty one. */
        if (f >= 0 && H5Lexists(f, "/ranks", H5P_DEFAULT) == 0) create_group(f, "/ranks", rank_cols, NRANK, 1024);
        if (f >= 0) {
            ok = h5_keys_match(f, "/steps", "step", srows) &&
                 h5_keys_match(f, "/ranks", "step", rrows) &&
                 h5_keys_match(f, "/epochs", "epoch", erows) &&
                 h5_truncate_group(f, "/steps", step_cols, NSTEP, srows->rows) == 0 &&
                 h5_truncate_group(f, "/epochs", epoch_cols, NEPOCH, erows->rows) == 0 &&
                 h5_truncate_group(f, "/ranks", rank_cols, NRANK, rrows->rows) == 0;
            if (H5Fclose(f) < 0) ok = 0;
        }
        H5Eclear2(H5E_DEFAULT);
        if (f < 0) held = h5_locked_by_other(path); /* a reader that came meanwhile */
        if (!ok && !held)
            fprintf(stderr, "shiftvit: warning: %s is damaged or disagrees with the CSV logs; rebuilding it from them\n",
                    mt->h5path_q);
    }
    if (ok) return 0;
    char why[SV_ERR_LEN];
    if (h5_rebuild(path, srows, erows, rrows, why) != 0)
        return sv_fail(err, "%s: cannot rebuild the HDF5 metrics log from the CSV files: %s", path, why);
    if (held)
        fprintf(stderr, "shiftvit: %s is locked: %s. The resume goes on: a new metrics.h5 rebuilt from the CSV files "
                        "(%zu step and %zu epoch rows) took its place; the reader keeps the old file until it opens it again\n",
                mt->h5path_q, lock_hint, srows->rows, erows->rows);
    return 0;
}

sv_metrics *sv_metrics_open(const char *dir, int append, long keep_step, long keep_epoch,
                            char *err) {
    sv_metrics *mt = calloc(1, sizeof *mt);
    if (!mt) {
        sv_fail(err, "metrics: out of memory");
        return NULL;
    }
    mt->sbuf.ncols = NSTEP;
    mt->ebuf.ncols = NEPOCH;
    mt->rbuf.ncols = NRANK;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        int bad = stat(dir, &sb) != 0;
        sv_fail(err, "metrics: output directory %s: %s", dir,
                bad ? strerror(errno) : "not a directory");
        free(mt);
        return NULL;
    }
    snprintf(mt->h5path, sizeof mt->h5path, "%s/metrics.h5", dir);
    sv_shell_quote(mt->h5path, mt->h5path_q, sizeof mt->h5path_q);

    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    int rc = 0;
    if (append) {
        char path[SV_PATH_LEN + 64];
        rowbuf srows = {NULL, 0, 0, NSTEP}, erows = {NULL, 0, 0, NEPOCH}, rrows = {NULL, 0, 0, NRANK};
        snprintf(path, sizeof path, "%s/metrics_steps.csv", dir);
        rc = csv_truncate(path, step_header, NSTEP, 0, keep_step, &srows, err);
        snprintf(path, sizeof path, "%s/metrics_epochs.csv", dir);
        if (!rc) rc = csv_truncate(path, epoch_header, NEPOCH, 0, keep_epoch, &erows, err);
        snprintf(path, sizeof path, "%s/metrics_ranks.csv", dir);
        if (!rc) rc = csv_truncate(path, rank_header, NRANK, 1, keep_step, &rrows, err);
        if (!rc) rc = h5_resume(mt, &srows, &erows, &rrows, err);
        mt->h5_srows = srows.rows;
        mt->h5_erows = erows.rows;
        mt->h5_rrows = rrows.rows;
        free(srows.v);
        free(erows.v);
        free(rrows.v);
    } else if (h5_create(mt->h5path) != 0) {
        rc = open_failure(err, mt->h5path);
    }
    sv_h5_quiet_end(&q);
    if (rc) {
        free(mt);
        return NULL;
    }
    mt->steps = open_csv(dir, "metrics_steps.csv", step_header, append, err);
    if (mt->steps) mt->epochs = open_csv(dir, "metrics_epochs.csv", epoch_header, append, err);
    if (mt->epochs) mt->ranks = open_csv(dir, "metrics_ranks.csv", rank_header, append, err);
    if (!mt->steps || !mt->epochs || !mt->ranks) {
        sv_metrics_close(mt);
        return NULL;
    }
    return mt;
}

static void h5_warn(sv_metrics *mt) {
    if (!mt->h5_failed)
        fprintf(stderr, "shiftvit: warning: out of memory for the rows of %s; metrics continue in the CSV files only\n",
                mt->h5path_q);
    mt->h5_failed = 1;
}

void sv_metrics_step(sv_metrics *mt, const sv_step_row *r) {
    fprintf(mt->steps, "%ld,%ld,%.9g,%.6f,%.6f,%.6f,%.1f\n", r->step, r->epoch, r->lr, r->loss,
            r->top1, r->top5, r->images_per_s);
    double row[NSTEP] = {(double)r->step, (double)r->epoch, r->lr, r->loss,
                         r->top1, r->top5, r->images_per_s};
    if (!mt->h5_failed && rowbuf_push(&mt->sbuf, row) != 0) h5_warn(mt);
}

void sv_metrics_epoch(sv_metrics *mt, const sv_epoch_row *r) {
    fprintf(mt->epochs, "%ld,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.9g,%.1f\n", r->epoch, r->train_loss,
            r->train_top1, r->train_top5, r->val_loss, r->val_top1, r->val_top5, r->lr, r->seconds);
    double row[NEPOCH] = {(double)r->epoch, r->train_loss, r->train_top1, r->train_top5,
                          r->val_loss,      r->val_top1,   r->val_top5,   r->lr,
                          r->seconds};
    if (!mt->h5_failed && rowbuf_push(&mt->ebuf, row) != 0) h5_warn(mt);
    sv_metrics_flush(mt);
}

void sv_metrics_rank(sv_metrics *mt, const sv_rank_row *r) {
    fprintf(mt->ranks, "%ld,%d,%.3f,%.3f,%s\n", r->step, r->rank, r->compute_ms, r->wait_ms, r->host);
    double row[NRANK] = {(double)r->step, (double)r->rank, r->compute_ms, r->wait_ms};
    if (!mt->h5_failed && rowbuf_push(&mt->rbuf, row) != 0) h5_warn(mt);
}

/* One try at appending the buffered rows; 0 when they are in the file. */
static int h5_try_append(sv_metrics *mt) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    hid_t f = sv_h5_open(mt->h5path, H5F_ACC_RDWR);
    int rc = f < 0 ? -1 : 0;
    /* Undo what an earlier failed append may have left half done. */
    if (!rc && mt->h5_pending)
        rc = h5_truncate_group(f, "/steps", step_cols, NSTEP, mt->h5_srows) ||
             h5_truncate_group(f, "/epochs", epoch_cols, NEPOCH, mt->h5_erows) ||
             h5_truncate_group(f, "/ranks", rank_cols, NRANK, mt->h5_rrows);
    if (!rc) rc = h5_append_rows(f, "/steps", step_cols, NSTEP, mt->sbuf.v, mt->sbuf.rows);
    if (!rc) rc = h5_append_rows(f, "/epochs", epoch_cols, NEPOCH, mt->ebuf.v, mt->ebuf.rows);
    if (!rc) rc = h5_append_rows(f, "/ranks", rank_cols, NRANK, mt->rbuf.v, mt->rbuf.rows);
    if (f >= 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
    if (f >= 0 && H5Fclose(f) < 0) rc = -1;
    sv_h5_quiet_end(&q);
    return rc;
}

/* Appends the buffered rows; on failure keeps them for the next flush. */
static int h5_flush_rows(sv_metrics *mt) {
    if (mt->h5_failed || (mt->sbuf.rows == 0 && mt->ebuf.rows == 0 && mt->rbuf.rows == 0)) return 0;
    if (h5_try_append(mt) != 0) {
        if (!mt->h5_pending) {
            if (h5_locked_by_other(mt->h5path))
                fprintf(stderr, "shiftvit: warning: cannot append to %s: it is locked: %s; its rows are kept and written once it is closed (the CSV files have every row)\n",
                        mt->h5path_q, lock_hint);
            else
                fprintf(stderr, "shiftvit: warning: cannot append to %s; its rows are kept and tried again at the next epoch (the CSV files have every row)\n",
                        mt->h5path_q);
        }
        mt->h5_pending = 1;
        return -1;
    }
    if (mt->h5_pending)
        fprintf(stderr, "shiftvit: %s is writable again: %zu step and %zu epoch rows kept meanwhile are in it\n",
                mt->h5path_q, mt->sbuf.rows, mt->ebuf.rows);
    mt->h5_pending = 0;
    mt->h5_srows += mt->sbuf.rows;
    mt->h5_erows += mt->ebuf.rows;
    mt->h5_rrows += mt->rbuf.rows;
    mt->sbuf.rows = 0;
    mt->ebuf.rows = 0;
    mt->rbuf.rows = 0;
    return 0;
}

void sv_metrics_flush(sv_metrics *mt) {
    if (!mt) return;
    if (mt->steps) fflush(mt->steps);
    if (mt->epochs) fflush(mt->epochs);
    if (mt->ranks) fflush(mt->ranks);
    h5_flush_rows(mt);
}

#define CLOSE_RETRY_S 10 /* how long close waits for a reader to let go */

void sv_metrics_close(sv_metrics *mt) {
    if (!mt) return;
    sv_metrics_flush(mt);
    for (int i = 0; mt->h5_pending && i < 4 * CLOSE_RETRY_S; i++) {
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
        h5_flush_rows(mt);
    }
    if (mt->h5_pending)
        fprintf(stderr, "shiftvit: warning: %s: %zu step and %zu epoch rows could not be written in %d s (%s); the CSV files have them, and `train --resume` rebuilds metrics.h5 from the CSV files\n",
                mt->h5path_q, mt->sbuf.rows, mt->ebuf.rows, CLOSE_RETRY_S,
                h5_locked_by_other(mt->h5path) ? lock_hint : "the file cannot be written");
    if (mt->steps) fclose(mt->steps);
    if (mt->epochs) fclose(mt->epochs);
    if (mt->ranks) fclose(mt->ranks);
    free(mt->sbuf.v);
    free(mt->ebuf.v);
    free(mt->rbuf.v);
    free(mt);
}
