/* Writing HDF5 checkpoints (the format: include/shiftvit/checkpoint.h).
 *
 * The whole file is built in memory (HDF5's core driver) and then written
 * out through the atomic file writer (atomic_file.h): a failed save never
 * touches the previous checkpoint. Every HDF5 call here runs with the
 * library's automatic error printing switched off; failures are turned into
 * one-line messages naming the path, the object and, when the library
 * reports one, the system error. */
#include "shiftvit/checkpoint.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "checkpoint_internal.h"
#include "shiftvit/atomic_file.h"
#include "shiftvit/common.h"
#include "shiftvit/h5util.h"

typedef struct {
    hid_t file, lcpl;
    const char *path; /* target path, for messages */
    char *err;
    int failed;
} writer;

static int wfail(writer *w, const char *what) {
    char reason[256];
    ckpt_h5_reason(reason, sizeof reason);
    w->failed = 1;
    return sv_fail(w->err, "cannot write checkpoint %s: %s: %s", w->path, what, reason);
}

/* One tensor as a single-chunk dataset with HDF5's Fletcher-32 checksum
 * filter: a flipped bit in the data fails the read (with h5py too) instead of
 * loading wrong weights. */
static int write_floats(writer *w, const char *name, int ndim, const int *shape,
                        const float *data) {
    hsize_t dims[4];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    if (space < 0) return wfail(w, name);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t ds = -1;
    if (dcpl >= 0 && H5Pset_chunk(dcpl, ndim, dims) >= 0 && H5Pset_fletcher32(dcpl) >= 0)
        ds = H5Dcreate2(w->file, name, H5T_IEEE_F32LE, space, w->lcpl, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    H5Sclose(space);
    if (ds < 0) return wfail(w, name);
    herr_t rc = H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (H5Dclose(ds) < 0 || rc < 0) return wfail(w, name);
    return 0;
}

static int write_attr(writer *w, hid_t obj, const char *objname, const char *name,
                      hid_t file_type, hid_t mem_type, const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    if (space < 0) return wfail(w, name);
    hid_t a = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    char what[160];
    snprintf(what, sizeof what, "attribute %s of %s", name, objname);
    if (a < 0) return wfail(w, what);
    herr_t rc = H5Awrite(a, mem_type, value);
    if (H5Aclose(a) < 0 || rc < 0) return wfail(w, what);
    return 0;
}

static int write_tensor_set(writer *w, const char *prefix, const sv_model *m,
                            const float *buf) {
    char name[SV_MAX_NAME + 64];
    for (int t = 0; t < m->num_tensors; t++) {
        const sv_param_info *T = &m->tensors[t];
        snprintf(name, sizeof name, "%s/%s", prefix, T->name);
        if (write_floats(w, name, T->ndim, T->shape, buf + T->offset)) return -1;
    }
    return 0;
}

static int write_string(writer *w, const char *name, const char *text) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0) return wfail(w, name);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t ds = H5Dcreate2(w->file, name, type, space, w->lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    if (ds < 0) {
        H5Tclose(type);
        return wfail(w, name);
    }
    herr_t rc = H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text);
    H5Tclose(type);
    if (H5Dclose(ds) < 0 || rc < 0) return wfail(w, name);
    return 0;
}

static int write_state(writer *w, const sv_train_state *st) {
    hid_t g = H5Gcreate2(w->file, "/state", w->lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return wfail(w, "/state");
    const char *o = "/state";
    int rc = 0;
#define WL(field) if (!rc) rc = write_attr(w, g, o, #field, H5T_STD_I64LE, H5T_NATIVE_LONG, &st->field)
#define WD(field) if (!rc) rc = write_attr(w, g, o, #field, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st->field)
    WL(step);
    WL(epoch);
    WL(step_in_epoch);
    WD(best_val_top1);
    WL(best_epoch);
    WL(bad_epochs);
    WD(run_loss);
    WD(run_top1);
    WD(run_top5);
    WD(run_count);
    WD(wall_time);
    WD(epoch_time);
#undef WL
#undef WD
    if (!rc) rc = write_attr(w, g, o, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st->seed);
    if (!rc) rc = write_attr(w, g, o, "world_size", H5T_STD_I32LE, H5T_NATIVE_INT, &st->world_size);
    if (H5Gclose(g) < 0 && !rc) rc = wfail(w, "/state");
    return rc;
}

static int write_contents(writer *w, const sv_model *m, const float *ema, const sv_adamw *opt,
                          const sv_train_state *st, const sv_config *cfg) {
    int version = SV_CHECKPOINT_VERSION;
    if (write_attr(w, w->file, "/", "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version))
        return -1;
    if (write_tensor_set(w, "/model", m, m->params)) return -1;
    if (ema && write_tensor_set(w, "/ema", m, ema)) return -1;
    if (opt) {
        hid_t g = H5Gcreate2(w->file, "/optimizer", w->lcpl, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) return wfail(w, "/optimizer");
        int rc = write_attr(w, g, "/optimizer", "t", H5T_STD_I64LE, H5T_NATIVE_LONG, &opt->t);
        if (H5Gclose(g) < 0 && !rc) rc = wfail(w, "/optimizer");
        if (rc) return -1;
        if (write_tensor_set(w, "/optimizer/m", m, opt->m)) return -1;
        if (write_tensor_set(w, "/optimizer/v", m, opt->v)) return -1;
    }
    if (st && write_state(w, st)) return -1;
    if (st && st->config_changes[0] && write_string(w, "/config_changes", st->config_changes))
        return -1;
    if (cfg) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) return sv_fail(w->err, "cannot write checkpoint %s: out of memory", w->path);
        sv_config_write(cfg, f);
        if (fclose(f) != 0 || !text) {
            free(text);
            return sv_fail(w->err, "cannot write checkpoint %s: out of memory", w->path);
        }
        int rc = write_string(w, "/config", text);
        free(text);
        if (rc) return -1;
    }
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) return wfail(w, "flush");
    return 0;
}

/* The checkpoint as an HDF5 file image in memory, malloc'd (*len bytes), or
 * NULL with a message. h5name only names the in-memory file. The core
 * driver without backing store never touches the disk: the caller writes
 * the image to the file itself, so a full disk or a file size limit is a
 * plain write error with its errno, and HDF5 never holds a file it cannot
 * close (with the default driver a failed write leaves the file id open and
 * HDF5 crashes on it at exit). */
static char *build_image(const char *path, const char *h5name, const sv_model *m, const float *ema,
                         const sv_adamw *opt,
                         const sv_train_state *st, const sv_config *cfg, size_t *len, char *err) {
    sv_h5_quiet q;
    sv_h5_quiet_begin(&q);
    writer w = {-1, -1, path, err, 0};
    int rc = 0;
    w.lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (w.lcpl < 0 || H5Pset_create_intermediate_group(w.lcpl, 1) < 0) rc = wfail(&w, "property list");
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0) rc = wfail(&w, "property list");
    if (!rc) {
        w.file = H5Fcreate(h5name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (w.file < 0) rc = wfail(&w, "cannot create the file in memory");
    }
    if (fapl >= 0) H5Pclose(fapl);
    if (!rc) rc = write_contents(&w, m, ema, opt, st, cfg);
    char *image = NULL;
    ssize_t image_len = 0;
    if (!rc) {
        image_len = H5Fget_file_image(w.file, NULL, 0);
        image = image_len > 0 ? malloc((size_t)image_len) : NULL;
        if (!image) rc = sv_fail(err, "cannot write checkpoint %s: out of memory for %lld bytes", path, (long long)image_len);
        else if (H5Fget_file_image(w.file, image, (size_t)image_len) != image_len) rc = wfail(&w, "file image");
    }
    if (w.file >= 0 && H5Fclose(w.file) < 0 && !rc) rc = wfail(&w, "close");
    if (w.lcpl >= 0) H5Pclose(w.lcpl);
    sv_h5_quiet_end(&q);
    if (rc) {
        free(image);
        return NULL;
    }
    *len = (size_t)image_len;
    return image;
}

int sv_checkpoint_save(const char *path, const sv_model *m, const sv_adamw *opt,
                       const sv_train_state *st, const sv_config *cfg, char *err) {
    return sv_checkpoint_save_ema(path, m, NULL, opt, st, cfg, err);
}

int sv_checkpoint_save_ema(const char *path, const sv_model *m, const float *ema, const sv_adamw *opt,
                           const sv_train_state *st, const sv_config *cfg, char *err) {
    if (!path || !path[0]) return sv_fail(err, "checkpoint: empty path");
    if (opt && opt->n != m->num_params)
        return sv_fail(err, "cannot write checkpoint %s: optimizer holds %zu moments, model has %zu parameters",
                       path, opt->n, m->num_params);
    sv_atomic_file a;
    char why[SV_ERR_LEN];
    if (sv_atomic_begin(&a, path, why) != 0) return sv_fail(err, "cannot write checkpoint %s: %s", path, why);
    size_t len = 0;
    char *image = build_image(path, a.tmp, m, ema, opt, st, cfg, &len, err);
    if (!image) {
        sv_atomic_abort(&a);
        return -1;
    }
    sv_atomic_write(&a, image, len);
    free(image);
    int rc = sv_atomic_commit(&a, why);
    if (rc == SV_ATOMIC_NOT_DURABLE) return sv_fail(err, "checkpoint %s written, but %s", path, why);
    if (rc) return sv_fail(err, "cannot write checkpoint %s: %s", path, why);
    return 0;
}
