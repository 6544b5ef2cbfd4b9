/* Reading HDF5 checkpoints (the format: include/shiftvit/checkpoint.h):
 * every file is checked before any data is read (HDF5 signature, format
 * version, each tensor's presence, type and shape, the /state attributes),
 * and every failure is a one-line message naming the path and the object.
 * Every HDF5 call here runs with the library's automatic error printing
 * switched off. */
#include "shiftvit/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "shiftvit/common.h"
#include "shiftvit/h5util.h"

typedef struct {
    hid_t file;
    const char *path;
    char *err;
} reader;

static int rfail_h5(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rfail_h5(reader *r, const char *fmt, ...) {
    char what[SV_ERR_LEN], reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ckpt_h5_reason(reason, sizeof reason);
    return sv_fail(r->err, "checkpoint %s: %s (%s)", r->path, what, reason);
}

/* Opens the file after checking it is a readable HDF5 file with a supported
 * format version. Call inside quiet_begin/quiet_end. */
static int open_checked(reader *r) {
    const char *path = r->path;
    r->file = -1;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sv_fail(r->err, "cannot open checkpoint %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return sv_fail(r->err, "checkpoint %s is a directory, not a file", path);
    if (!S_ISREG(sb.st_mode)) /* a FIFO would block the open */
        return sv_fail(r->err, "checkpoint %s is not a regular file (a device, FIFO or socket)", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sv_fail(r->err, "cannot open checkpoint %s: %s", path, strerror(errno));
    close(fd);
    if (sb.st_size == 0)
        return sv_fail(r->err, "checkpoint %s is an empty file (0 bytes), not an HDF5 checkpoint", path);
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return sv_fail(r->err, "checkpoint %s is not an HDF5 file (%lld bytes, no HDF5 signature)",
                       path, (long long)sb.st_size);
    }
    r->file = sv_h5_open(path, H5F_ACC_RDONLY);
    if (r->file < 0) {
        char reason[256];
        ckpt_h5_reason(reason, sizeof reason);
        /* A lock that fails is no damage: say which lock (sv_h5_open already
         * went on without locks where this HDF5 can). */
        int lock = sv_flock_probe(path, 0);
        if (lock == EWOULDBLOCK)
            return sv_fail(r->err, "checkpoint %s cannot be opened: another program has it open for writing (it holds HDF5's file lock); try again once it has closed it",
                           path);
        if (lock)
            return sv_fail(r->err, "checkpoint %s cannot be opened: the file system refuses file locks (%s); run with HDF5_USE_FILE_LOCKING=FALSE",
                           path, strerror(lock));
        if (strstr(reason, "truncated"))
            return sv_fail(r->err, "checkpoint %s is truncated or damaged (%lld bytes): cannot open it as HDF5",
                           path, (long long)sb.st_size);
        return sv_fail(r->err, "checkpoint %s is damaged: cannot open it as HDF5 (%s)", path, reason);
    }
    htri_t has = H5Aexists(r->file, "format_version");
    if (has <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return sv_fail(r->err, "checkpoint %s has no format_version attribute on / (not a shiftvit checkpoint)",
                       path);
    }
    int version = -1;
    hid_t a = H5Aopen(r->file, "format_version", H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Aread(a, H5T_NATIVE_INT, &version);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return rfail_h5(r, "cannot read attribute /format_version");
    if (version > SV_CHECKPOINT_VERSION)
        return sv_fail(r->err,
                       "checkpoint %s was written by a newer shiftvit (format %d, this build reads up to %d)",
                       path, version, SV_CHECKPOINT_VERSION);
    if (version < 1)
        return sv_fail(r->err, "checkpoint %s: invalid format_version %d", path, version);
    return 0;
}

static void close_reader(reader *r) {
    if (r->file >= 0) H5Fclose(r->file);
    r->file = -1;
}

/* 1 if every component of the absolute path `name` exists as a link. */
static int path_exists(hid_t file, const char *name) {
    char buf[SV_MAX_NAME + 64];
    snprintf(buf, sizeof buf, "%s", name);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            htri_t e = H5Lexists(file, buf, H5P_DEFAULT);
            if (e <= 0) {
                H5Eclear2(H5E_DEFAULT);
                return 0;
            }
            *p = c;
            if (!c) return 1;
        }
    }
}

static void fmt_shape(char *out, size_t n, int ndim, const hsize_t *dims) {
    size_t k = 0;
    k += (size_t)snprintf(out + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

/* Checks presence, type and shape of prefix/<tensor> for every tensor. */
static int check_tensors(reader *r, const char *prefix, const sv_model *m) {
    char name[SV_MAX_NAME + 64];
    for (int t = 0; t < m->num_tensors; t++) {
        const sv_param_info *T = &m->tensors[t];
        snprintf(name, sizeof name, "%s/%s", prefix, T->name);
        hsize_t want[4];
        for (int i = 0; i < T->ndim; i++) want[i] = (hsize_t)T->shape[i];
        char ws[96], hs[96];
        fmt_shape(ws, sizeof ws, T->ndim, want);
        if (!path_exists(r->file, name))
            return sv_fail(r->err,
                           "checkpoint %s: tensor %s (shape %s) is missing (another architecture or a damaged file?)",
                           r->path, name, ws);
        hid_t ds = H5Dopen2(r->file, name, H5P_DEFAULT);
        if (ds < 0) return rfail_h5(r, "%s is not a readable dataset", name);
        hid_t type = H5Dget_type(ds);
        H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
        if (type >= 0) H5Tclose(type);
        hid_t space = H5Dget_space(ds);
        int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
        hsize_t dims[H5S_MAX_RANK];
        if (nd > 0 && nd <= H5S_MAX_RANK) H5Sget_simple_extent_dims(space, dims, NULL);
        if (space >= 0) H5Sclose(space);
        H5Dclose(ds);
        if (cls != H5T_FLOAT)
            return sv_fail(r->err, "checkpoint %s: tensor %s is not a floating-point dataset", r->path, name);
        if (nd < 0) return rfail_h5(r, "cannot read the shape of %s", name);
        int same = nd == T->ndim;
        for (int i = 0; same && i < nd; i++) same = dims[i] == want[i];
        if (!same) {
            if (nd > H5S_MAX_RANK) nd = 0;
            fmt_shape(hs, sizeof hs, nd, dims);
            return sv_fail(r->err,
                           "checkpoint %s: tensor %s has shape %s in the file, the model expects %s (another architecture?)",
                           r->path, name, hs, ws);
        }
    }
    return 0;
}

typedef struct {
    const sv_model *m;
    char extra[SV_MAX_NAME + 64];
    int found;
} visit_ctx;

static herr_t visit_cb(hid_t obj, const char *name, const H5O_info_t *info, void *data) {
    visit_ctx *v = data;
    (void)obj;
    if (info->type == H5O_TYPE_DATASET && sv_model_find(v->m, name) < 0) {
        snprintf(v->extra, sizeof v->extra, "%s", name);
        v->found = 1;
        return 1; /* stop */
    }
    return 0;
}

/* Datasets under /model that the model does not have (deeper architecture). */
static int check_no_extra(reader *r, const sv_model *m) {
    hid_t g = H5Gopen2(r->file, "/model", H5P_DEFAULT);
    if (g < 0) return rfail_h5(r, "cannot open group /model");
    visit_ctx v = {m, {0}, 0};
    herr_t rc = H5Ovisit(g, H5_INDEX_NAME, H5_ITER_INC, visit_cb, &v);
    H5Gclose(g);
    if (v.found)
        return sv_fail(r->err,
                       "checkpoint %s: tensor /model/%s is not part of this model (another architecture?)",
                       r->path, v.extra);
    if (rc < 0) return rfail_h5(r, "cannot list group /model");
    return 0;
}

static int read_tensors(reader *r, const char *prefix, const sv_model *m, float *buf) {
    char name[SV_MAX_NAME + 64];
    for (int t = 0; t < m->num_tensors; t++) {
        const sv_param_info *T = &m->tensors[t];
        snprintf(name, sizeof name, "%s/%s", prefix, T->name);
        hid_t ds = H5Dopen2(r->file, name, H5P_DEFAULT);
        if (ds < 0) return rfail_h5(r, "cannot open %s", name);
        herr_t rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf + T->offset);
        /* the reason first: H5Dclose clears HDF5's error stack */
        if (rc < 0) rc = rfail_h5(r, "cannot read %s (damaged file?)", name);
        H5Dclose(ds);
        if (rc < 0) return -1;
    }
    return 0;
}

static int read_attr(reader *r, hid_t obj, const char *objname, const char *name,
                     hid_t mem_type, void *value) {
    htri_t e = H5Aexists(obj, name);
    if (e <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return sv_fail(r->err, "checkpoint %s: attribute %s of %s is missing", r->path, name, objname);
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return rfail_h5(r, "cannot open attribute %s of %s", name, objname);
    hid_t space = H5Aget_space(a);
    hssize_t npts = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    if (space >= 0) H5Sclose(space);
    if (npts != 1) {
        H5Aclose(a);
        return sv_fail(r->err, "checkpoint %s: attribute %s of %s is not a single value", r->path,
                       name, objname);
    }
    herr_t rc = H5Aread(a, mem_type, value);
    H5Aclose(a);
    if (rc < 0) return rfail_h5(r, "cannot read attribute %s of %s", name, objname);
    return 0;
}

static char *read_string(reader *r, const char *name);

static int read_state(reader *r, sv_train_state *st) {
    if (!path_exists(r->file, "/state"))
        return sv_fail(r->err, "checkpoint %s has no /state group (weights-only checkpoint, cannot resume)",
                       r->path);
    hid_t g = H5Gopen2(r->file, "/state", H5P_DEFAULT);
    if (g < 0) return rfail_h5(r, "cannot open group /state");
    sv_train_state s;
    memset(&s, 0, sizeof s);
    const char *o = "/state";
    int rc = 0;
#define RL(field) if (!rc) rc = read_attr(r, g, o, #field, H5T_NATIVE_LONG, &s.field)
#define RD(field) if (!rc) rc = read_attr(r, g, o, #field, H5T_NATIVE_DOUBLE, &s.field)
    RL(step);
    RL(epoch);
    RL(step_in_epoch);
    RD(best_val_top1);
    RL(best_epoch);
    RL(bad_epochs);
    RD(run_loss);
    RD(run_top1);
    RD(run_top5);
    RD(run_count);
    RD(wall_time);
    /* Optional: checkpoints written before it existed resume with 0. */
    if (!rc && H5Aexists(g, "epoch_time") > 0) RD(epoch_time);
#undef RL
#undef RD
    if (!rc) rc = read_attr(r, g, o, "seed", H5T_NATIVE_UINT64, &s.seed);
    if (!rc) rc = read_attr(r, g, o, "world_size", H5T_NATIVE_INT, &s.world_size);
    H5Gclose(g);
    /* Optional: written only by runs resumed with --resume-with-changes. */
    if (!rc && path_exists(r->file, "/config_changes")) {
        char *text = read_string(r, "/config_changes");
        if (!text) rc = -1;
        else snprintf(s.config_changes, sizeof s.config_changes, "%s", text);
        free(text);
    }
    if (rc) return -1;
    if (s.step < 0 || s.epoch < 0 || s.step_in_epoch < 0 || s.bad_epochs < 0 || s.world_size < 1)
        return sv_fail(r->err,
                       "checkpoint %s: /state holds invalid values (step %ld, epoch %ld, step_in_epoch %ld, world_size %d)",
                       r->path, s.step, s.epoch, s.step_in_epoch, s.world_size);
    *st = s;
    return 0;
}

/* Reads the scalar string dataset `name` as a newly allocated string. */
static char *read_string(reader *r, const char *name) {
    hid_t ds = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (ds < 0) {
        rfail_h5(r, "cannot open %s", name);
        return NULL;
    }
    char *out = NULL;
    hid_t ftype = H5Dget_type(ds);
    hid_t space = H5Dget_space(ds);
    hssize_t npts = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    if (ftype < 0 || H5Tget_class(ftype) != H5T_STRING || npts != 1) {
        sv_fail(r->err, "checkpoint %s: %s is not a single string", r->path, name);
    } else if (H5Tis_variable_str(ftype) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        char *s = NULL;
        if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s) < 0 || !s) {
            rfail_h5(r, "cannot read %s", name);
        } else {
            out = strdup(s);
            hsize_t one = 1;
            hid_t ms = H5Screate_simple(1, &one, NULL);
            H5Dvlen_reclaim(mt, ms, H5P_DEFAULT, &s);
            H5Sclose(ms);
        }
        H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(ftype);
        if (sz == 0 || sz > (1u << 24)) {
            sv_fail(r->err, "checkpoint %s: %s has an implausible size (%zu bytes)", r->path, name, sz);
        } else {
            hid_t mt = H5Tcopy(ftype);
            H5Tset_size(mt, sz + 1);
            H5Tset_strpad(mt, H5T_STR_NULLTERM);
            out = calloc(1, sz + 2);
            if (out && H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
                rfail_h5(r, "cannot read %s", name);
                free(out);
                out = NULL;
            }
            H5Tclose(mt);
        }
    }
    if (space >= 0) H5Sclose(space);
    if (ftype >= 0) H5Tclose(ftype);
    H5Dclose(ds);
    return out;
}

static char *read_config_text(reader *r) {
    if (!path_exists(r->file, "/config")) {
        sv_fail(r->err, "checkpoint %s has no /config dataset (not a shiftvit checkpoint?)", r->path);
        return NULL;
    }
    return read_string(r, "/config");
}

int sv_checkpoint_read_config(const char *path, sv_config *cfg, char *err) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    reader r = {-1, path, err};
    int rc = open_checked(&r);
    char *text = NULL;
    if (!rc) {
        text = read_config_text(&r);
        if (!text) rc = -1;
    }
    close_reader(&r);
    sv_h5_quiet_end(&q);
    if (rc) return -1;

    char origin[SV_PATH_LEN + 16];
    snprintf(origin, sizeof origin, "%s:/config", path);
    sv_config c;
    sv_config_defaults(&c);
    rc = sv_config_load_string(&c, text, origin, err);
    if (!rc) {
        /* sv_config_write puts the name in its first line. */
        const char *tag = "; shiftvit configuration: ";
        if (strncmp(text, tag, strlen(tag)) == 0) {
            const char *s = text + strlen(tag);
            size_t n = strcspn(s, "\r\n");
            if (n >= sizeof c.name) n = sizeof c.name - 1;
            memcpy(c.name, s, n);
            c.name[n] = '\0';
        }
        rc = sv_config_validate(&c, err);
        if (rc) {
            char inner[SV_ERR_LEN];
            snprintf(inner, sizeof inner, "%s", err);
            sv_fail(err, "checkpoint %s: stored config is invalid: %s", path, inner);
        }
    }
    free(text);
    if (rc) return -1;
    *cfg = c;
    return 0;
}

/* A NaN or infinity in the weights or moments of a checkpoint loaded to
 * train on would stop the run at its first step or poison it: refused at
 * load, naming the first such tensor. (eval and predict, which load no
 * optimizer, report what such weights give: issue 14, section 2.) */
static int check_finite(reader *r, const char *prefix, const sv_model *m, const float *buf) {
    size_t i = 0;
    int t = sv_model_first_nonfinite(m, buf, &i);
    if (t < 0) return 0;
    return sv_fail(r->err, "checkpoint %s: %s/%s holds a non-finite value (%g at element %zu); "
                   "training cannot resume from it", r->path, prefix, m->tensors[t].name,
                   (double)buf[m->tensors[t].offset + i], i);
}

int sv_checkpoint_load(const char *path, sv_model *m, sv_adamw *opt, sv_train_state *st,
                       char *err) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    reader r = {-1, path, err};
    int rc = open_checked(&r);
    /* Everything is checked before any data is read. */
    if (!rc && !path_exists(r.file, "/model"))
        rc = sv_fail(err, "checkpoint %s has no /model group (not a shiftvit checkpoint?)", path);
    if (!rc) rc = check_tensors(&r, "/model", m);
    if (!rc) rc = check_no_extra(&r, m);
    long t = 0;
    if (!rc && opt) {
        if (opt->n != m->num_params)
            rc = sv_fail(err, "checkpoint %s: optimizer holds %zu moments, model has %zu parameters",
                         path, opt->n, m->num_params);
        else if (!path_exists(r.file, "/optimizer"))
            rc = sv_fail(err, "checkpoint %s has no /optimizer group (weights-only checkpoint, cannot resume)",
                         path);
        if (!rc) rc = check_tensors(&r, "/optimizer/m", m);
        if (!rc) rc = check_tensors(&r, "/optimizer/v", m);
        if (!rc) {
            hid_t g = H5Gopen2(r.file, "/optimizer", H5P_DEFAULT);
            if (g < 0) rc = rfail_h5(&r, "cannot open group /optimizer");
            else {
                rc = read_attr(&r, g, "/optimizer", "t", H5T_NATIVE_LONG, &t);
                H5Gclose(g);
            }
            if (!rc && t < 0) rc = sv_fail(err, "checkpoint %s: /optimizer t = %ld is negative", path, t);
        }
    }
    sv_train_state s;
    if (!rc && st) rc = read_state(&r, &s);
    if (!rc) rc = read_tensors(&r, "/model", m, m->params);
    sv_model_params_changed(m); /* even a failed read may have written some */
    if (!rc && opt) rc = check_finite(&r, "/model", m, m->params);
    if (!rc && opt) {
        rc = read_tensors(&r, "/optimizer/m", m, opt->m);
        if (!rc) rc = read_tensors(&r, "/optimizer/v", m, opt->v);
        if (!rc) rc = check_finite(&r, "/optimizer/m", m, opt->m);
        if (!rc) rc = check_finite(&r, "/optimizer/v", m, opt->v);
        if (!rc) opt->t = t;
    }
    if (!rc && st) *st = s;
    close_reader(&r);
    sv_h5_quiet_end(&q);
    return rc;
}

int sv_checkpoint_read_state(const char *path, sv_train_state *st, char *err) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    reader r = {-1, path, err};
    int rc = open_checked(&r);
    if (!rc) rc = read_state(&r, st);
    close_reader(&r);
    sv_h5_quiet_end(&q);
    return rc;
}

int sv_checkpoint_has_ema(const char *path, char *err) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    reader r = {-1, path, err};
    int rc = open_checked(&r);
    if (!rc) rc = path_exists(r.file, "/ema");
    close_reader(&r);
    sv_h5_quiet_end(&q);
    return rc;
}

int sv_checkpoint_load_ema(const char *path, const sv_model *m, float *ema, char *err) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    reader r = {-1, path, err};
    int rc = open_checked(&r);
    if (!rc && !path_exists(r.file, "/ema"))
        rc = sv_fail(err, "checkpoint %s has no EMA weights (/ema): its run kept no moving average "
                     "(train.ema_decay = 0); use --weights raw", path);
    if (!rc) rc = check_tensors(&r, "/ema", m);
    if (!rc) rc = read_tensors(&r, "/ema", m, ema);
    close_reader(&r);
    sv_h5_quiet_end(&q);
    return rc;
}
