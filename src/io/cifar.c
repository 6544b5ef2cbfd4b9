/* CIFAR-10 binary reader, the train/val/test split and the data folder
 * search (see data.h, SPEC section 1). The transforms and the batches are in
 * augment.c. */
#include "shiftvit/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "shiftvit/common.h"

#define CIFAR_PLANE (SV_CIFAR_SIDE * SV_CIFAR_SIDE)
/* Records read per chunk when scanning or loading a file (~0.8 MB). */
#define CHUNK_RECORDS 256

/* ------------------------------------------------------------------ files */

/* Reads exactly n bytes at offset off. Returns 0, or -1 with errno set
 * (errno = 0 for an unexpected end of file). */
static int read_full(int fd, void *buf, size_t n, off_t off) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = 0;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

static int read_error(char *err, const char *path, long record) {
    if (errno == 0)
        return sv_fail(err, "CIFAR-10 file %s: unexpected end of file at record %ld "
                            "(did the file change while reading?)", path, record);
    return sv_fail(err, "CIFAR-10 file %s: read error at record %ld: %s", path, record,
                   strerror(errno));
}

static int bad_label(char *err, const char *path, long record, unsigned value) {
    return sv_fail(err, "CIFAR-10 file %s: record %ld has label %u, expected 0..9 "
                        "(not a CIFAR-10 binary-version file, or corrupted)",
                   path, record, value);
}

/* Opens path for reading after the checks shared by check and load: exists,
 * regular file, readable, non-empty, whole number of records. Returns the fd
 * (>= 0) and the record count, or -1 with a message. */
static int open_checked(const char *path, long *records, char *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return sv_fail(err, "cannot open CIFAR-10 file %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return sv_fail(err, "CIFAR-10 file %s is a directory, expected a regular file", path);
    if (!S_ISREG(st.st_mode))
        return sv_fail(err, "CIFAR-10 file %s is not a regular file", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sv_fail(err, "cannot open CIFAR-10 file %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) { /* size of what was actually opened */
        int e = errno;
        close(fd);
        return sv_fail(err, "cannot stat CIFAR-10 file %s: %s", path, strerror(e));
    }
    long long size = (long long)st.st_size;
    if (size == 0) {
        close(fd);
        return sv_fail(err, "CIFAR-10 file %s is empty (0 bytes); expected %d-byte records",
                       path, SV_CIFAR_RECORD);
    }
    if (size % SV_CIFAR_RECORD != 0) {
        close(fd);
        return sv_fail(err, "CIFAR-10 file %s has %lld bytes, not a multiple of the "
                            "%d-byte record (remainder %lld): truncated last record?",
                       path, size, SV_CIFAR_RECORD, size % SV_CIFAR_RECORD);
    }
    *records = (long)(size / SV_CIFAR_RECORD);
    return fd;
}

int sv_cifar_check_file(const char *path, long *records, char *err) {
    long n = 0;
    if (records) *records = 0;
    int fd = open_checked(path, &n, err);
    if (fd < 0) return -1;
    unsigned char *buf = malloc((size_t)CHUNK_RECORDS * SV_CIFAR_RECORD);
    if (!buf) {
        close(fd);
        return sv_fail(err, "CIFAR-10 file %s: out of memory for the read buffer", path);
    }
    int rc = 0;
    for (long r0 = 0; r0 < n && rc == 0; r0 += CHUNK_RECORDS) {
        long k = n - r0 < CHUNK_RECORDS ? n - r0 : CHUNK_RECORDS;
        if (read_full(fd, buf, (size_t)k * SV_CIFAR_RECORD, (off_t)r0 * SV_CIFAR_RECORD)) {
            rc = read_error(err, path, r0);
            break;
        }
        for (long j = 0; j < k; j++) {
            unsigned lab = buf[(size_t)j * SV_CIFAR_RECORD];
            if (lab > 9) {
                rc = bad_label(err, path, r0 + j, lab);
                break;
            }
        }
    }
    free(buf);
    close(fd);
    if (rc == 0 && records) *records = n;
    return rc;
}

/* Planar record (label, R plane, G plane, B plane) -> NHWC pixels. */
static void record_to_nhwc(uint8_t *dst, const unsigned char *rec) {
    const unsigned char *r = rec + 1, *g = r + CIFAR_PLANE, *b = g + CIFAR_PLANE;
    for (int p = 0; p < CIFAR_PLANE; p++) {
        dst[3 * p + 0] = r[p];
        dst[3 * p + 1] = g[p];
        dst[3 * p + 2] = b[p];
    }
}

/* Loads records [first, first + count) of the concatenation of already
 * validated files with the given record counts into a fresh ds. */
static int load_range(sv_dataset *ds, const char *const *paths, const long *nrec,
                      int npaths, long first, long count, char *err) {
    memset(ds, 0, sizeof *ds);
    ds->images = sv_alloc((size_t)count * SV_CIFAR_PIXELS, "CIFAR-10 images");
    ds->labels = sv_alloc((size_t)count, "CIFAR-10 labels");
    ds->count = count;
    unsigned char *buf = malloc((size_t)CHUNK_RECORDS * SV_CIFAR_RECORD);
    if (!buf) {
        sv_dataset_free(ds);
        return sv_fail(err, "out of memory for the CIFAR-10 read buffer");
    }
    long fstart = 0; /* global index of the current file's record 0 */
    long done = 0;   /* records written to ds */
    int rc = 0;
    for (int f = 0; f < npaths && done < count && rc == 0; f++) {
        long lo = first + done - fstart; /* first wanted record in this file */
        if (lo >= nrec[f]) {
            fstart += nrec[f];
            continue;
        }
        int fd = open(paths[f], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = sv_fail(err, "cannot open CIFAR-10 file %s: %s", paths[f], strerror(errno));
            break;
        }
        long hi = nrec[f];
        if (hi - lo > count - done) hi = lo + (count - done);
        for (long r0 = lo; r0 < hi && rc == 0; r0 += CHUNK_RECORDS) {
            long k = hi - r0 < CHUNK_RECORDS ? hi - r0 : CHUNK_RECORDS;
            if (read_full(fd, buf, (size_t)k * SV_CIFAR_RECORD, (off_t)r0 * SV_CIFAR_RECORD)) {
                rc = read_error(err, paths[f], r0);
                break;
            }
            for (long j = 0; j < k; j++) {
                const unsigned char *rec = buf + (size_t)j * SV_CIFAR_RECORD;
                if (rec[0] > 9) {
                    rc = bad_label(err, paths[f], r0 + j, rec[0]);
                    break;
                }
                ds->labels[done] = rec[0];
                record_to_nhwc(ds->images + (size_t)done * SV_CIFAR_PIXELS, rec);
                done++;
            }
        }
        close(fd);
        fstart += nrec[f];
    }
    free(buf);
    if (rc == 0 && done != count)
        rc = sv_fail(err, "CIFAR-10: loaded %ld of %ld records (internal error)", done, count);
    if (rc != 0) sv_dataset_free(ds);
    return rc;
}

/* Validates every file and totals the records. nrec has npaths entries. */
static int check_all(const char *const *paths, int npaths, long *nrec, long *total,
                     char *err) {
    *total = 0;
    for (int f = 0; f < npaths; f++) {
        if (sv_cifar_check_file(paths[f], &nrec[f], err)) return -1;
        *total += nrec[f];
    }
    return 0;
}

/* "a.bin" or "a.bin .. e.bin (5 files)" for messages. */
static void describe_files(char *buf, size_t len, const char *const *paths, int npaths) {
    if (npaths <= 0)
        snprintf(buf, len, "(no files)");
    else if (npaths == 1)
        snprintf(buf, len, "%s", paths[0]);
    else
        snprintf(buf, len, "%s .. %s (%d files)", paths[0], paths[npaths - 1], npaths);
}

int sv_cifar_load(sv_dataset *ds, const char *const *paths, int npaths, long first,
                  long count, char *err) {
    memset(ds, 0, sizeof *ds);
    if (npaths <= 0) return sv_fail(err, "CIFAR-10: no files given to load");
    if (first < 0 || count < 0)
        return sv_fail(err, "CIFAR-10: invalid record range (first %ld, count %ld)", first,
                       count);
    long *nrec = calloc((size_t)npaths, sizeof *nrec);
    if (!nrec) return sv_fail(err, "CIFAR-10: out of memory");
    long total = 0;
    int rc = check_all(paths, npaths, nrec, &total, err);
    if (rc == 0 && first + count > total) {
        char files[SV_ERR_LEN];
        describe_files(files, sizeof files, paths, npaths);
        rc = sv_fail(err, "CIFAR-10: %s %s %ld records, fewer than the %ld requested "
                          "(records %ld..%ld)",
                     files, npaths == 1 ? "holds" : "hold", total, first + count, first,
                     first + count - 1);
    }
    if (rc == 0) rc = load_range(ds, paths, nrec, npaths, first, count, err);
    free(nrec);
    return rc;
}

int sv_cifar_load_splits(const char *dir, long train_size, long val_size, long test_size,
                         sv_dataset *train, sv_dataset *val, sv_dataset *test, char *err) {
    sv_dataset none;
    if (!train) train = &none;
    if (!val) val = &none;
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (test) memset(test, 0, sizeof *test);
    if (train_size < 0 || val_size < 0 || test_size < 0)
        return sv_fail(err, "CIFAR-10 split sizes must not be negative (data.train_size = "
                            "%ld, data.val_size = %ld, data.test_size = %ld)",
                       train_size, val_size, test_size);

    char names[SV_CIFAR_TRAIN_FILES][SV_PATH_LEN + 32];
    const char *paths[SV_CIFAR_TRAIN_FILES];
    long nrec[SV_CIFAR_TRAIN_FILES];
    for (int f = 0; f < SV_CIFAR_TRAIN_FILES; f++) {
        snprintf(names[f], sizeof names[f], "%s/data_batch_%d.bin", dir, f + 1);
        paths[f] = names[f];
    }
    if (train != &none || val != &none) {
        long total = 0;
        if (check_all(paths, SV_CIFAR_TRAIN_FILES, nrec, &total, err)) return -1;
        if (train_size + val_size > total)
            return sv_fail(err, "CIFAR-10: data.train_size + data.val_size = %ld + %ld = %ld "
                                "exceeds the %ld records of %s/data_batch_1..%d.bin",
                           train_size, val_size, train_size + val_size, total, dir,
                           SV_CIFAR_TRAIN_FILES);
        if (train != &none &&
            load_range(train, paths, nrec, SV_CIFAR_TRAIN_FILES, 0, train_size, err))
            return -1;
        if (val != &none &&
            load_range(val, paths, nrec, SV_CIFAR_TRAIN_FILES, train_size, val_size, err)) {
            sv_dataset_free(train);
            return -1;
        }
    }
    if (test) {
        char tpath[SV_PATH_LEN + 32];
        snprintf(tpath, sizeof tpath, "%s/test_batch.bin", dir);
        const char *tp = tpath;
        long tn = 0;
        int rc = sv_cifar_check_file(tpath, &tn, err);
        if (rc == 0 && test_size > tn)
            rc = sv_fail(err, "CIFAR-10: data.test_size = %ld exceeds the %ld records of %s",
                         test_size, tn, tpath);
        if (rc == 0) rc = load_range(test, &tp, &tn, 1, 0, test_size ? test_size : tn, err);
        if (rc != 0) {
            sv_dataset_free(train);
            sv_dataset_free(val);
            return -1;
        }
    }
    return 0;
}

void sv_dataset_free(sv_dataset *ds) {
    if (!ds) return;
    sv_free(ds->images);
    sv_free(ds->labels);
    ds->images = NULL;
    ds->labels = NULL;
    ds->count = 0;
}

/* ------------------------------------------------------------ data folder */

/* 1 when dir/data_batch_1.bin is a regular file; else 0 and why in `why`. */
static int holds_cifar(const char *dir, char *why, size_t whylen) {
    struct stat st;
    char p[SV_PATH_LEN + 32];
    if (stat(dir, &st) != 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, whylen, "not a directory");
        return 0;
    }
    snprintf(p, sizeof p, "%s/data_batch_1.bin", dir);
    if (stat(p, &st) != 0) {
        snprintf(why, whylen, "no data_batch_1.bin there: %s", strerror(errno));
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "its data_batch_1.bin is not a regular file");
        return 0;
    }
    return 1;
}

static int choose(const char *dir, char *out, char *err) {
    if (strlen(dir) >= SV_PATH_LEN)
        return sv_fail(err, "CIFAR-10 data folder path is too long (%zu bytes, limit %d)",
                       strlen(dir), SV_PATH_LEN - 1);
    snprintf(out, SV_PATH_LEN, "%s", dir);
    return 0;
}

#define GET_HINT "run scripts/get-cifar10.sh to download it, or pass --data-dir"

int sv_find_data_dir(const char *cli, const char *cfg_dir, char *out, char *err) {
    char why[256];
    if (out) out[0] = '\0';
    if (cli && cli[0]) {
        if (holds_cifar(cli, why, sizeof why)) return choose(cli, out, err);
        return sv_fail(err, "--data-dir %s does not hold the CIFAR-10 binary files (%s); "
                            "point it at the folder with data_batch_1.bin .. test_batch.bin, "
                            "or run scripts/get-cifar10.sh to download them",
                       cli, why);
    }
    if (cfg_dir && cfg_dir[0]) {
        if (holds_cifar(cfg_dir, why, sizeof why)) return choose(cfg_dir, out, err);
        return sv_fail(err, "data.dir = %s (from the config) does not hold the CIFAR-10 "
                            "binary files (%s); set it to the folder with data_batch_1.bin .. "
                            "test_batch.bin, or run scripts/get-cifar10.sh to download them "
                            "(--data-dir overrides data.dir)",
                       cfg_dir, why);
    }
    const char *defaults[] = {"data/cifar-10-batches-bin",
                              "../shared/data/cifar-10-batches-bin"};
    char tried[320]; /* leaves room for the hint in the message */
    size_t len = 0;
    const char *env = getenv("CIFAR10_DIR");
    if (env && env[0]) {
        if (holds_cifar(env, why, sizeof why)) return choose(env, out, err);
        len += (size_t)snprintf(tried + len, sizeof tried - len, "$CIFAR10_DIR=%s (%s), ",
                                env, why);
    } else {
        len += (size_t)snprintf(tried + len, sizeof tried - len, "$CIFAR10_DIR (unset), ");
    }
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        if (holds_cifar(defaults[i], why, sizeof why)) return choose(defaults[i], out, err);
        if (len < sizeof tried)
            len += (size_t)snprintf(tried + len, sizeof tried - len, "%s%s (%s)",
                                    i ? ", " : "", defaults[i], why);
    }
    return sv_fail(err, "CIFAR-10 data not found (no --data-dir or data.dir given); tried: "
                        "%s; " GET_HINT,
                   tried);
}
