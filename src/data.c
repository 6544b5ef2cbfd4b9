/* CIFAR-10 binary reader, split, augmentation and evaluation transform
 * (see data.h, SPEC section 1; randomness per SPEC section 4). */
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
#include "shiftvit/rng.h"

#define CIFAR_PLANE (SV_CIFAR_SIDE * SV_CIFAR_SIDE)
/* Records read per chunk when scanning or loading a file (~0.8 MB). */
#define CHUNK_RECORDS 256
/* Widest intermediate row sv_eval_image keeps on the stack (2 rows x 3 channels
 * x 1024 floats = 24 KiB); wider resize_size falls back to one heap buffer per
 * call. */
#define EVAL_STACK_WIDTH 1024

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

/* ----------------------------------------------------------- transforms */

/* Source index pair and weight of one output coordinate (PyTorch
 * upsample_bilinear2d, align_corners=False, all in float32):
 * src = (dst + 0.5) * in / out - 0.5, clamped below at 0; i0 = floor(src),
 * i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1. */
typedef struct {
    int i0, i1;
    float w0, w1;
} lerp_t;

static inline lerp_t lerp_coef(int dst, int in, int out) {
    lerp_t c;
    float scale = (float)in / (float)out;
    float src = scale * ((float)dst + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    int i0 = (int)src;
    if (i0 > in - 1) i0 = in - 1;
    c.i0 = i0;
    c.i1 = i0 < in - 1 ? i0 + 1 : i0;
    float w = src - (float)i0;
    if (w > 1.0f) w = 1.0f;
    c.w1 = w;
    c.w0 = 1.0f - w;
    return c;
}

/* Evaluation order of PyTorch's CPU kernel:
 * h0 * (w0 * a + w1 * b) + h1 * (w0 * c + w1 * d). */
static inline float blend(lerp_t cy, lerp_t cx, float a, float b, float c, float d) {
    return cy.w0 * (cx.w0 * a + cx.w1 * b) + cy.w1 * (cx.w0 * c + cx.w1 * d);
}

void sv_resize_bilinear(float *out, int oh, int ow, const float *in, int ih, int iw,
                        int C) {
    SV_CHECK(oh > 0 && ow > 0 && ih > 0 && iw > 0 && C > 0);
    for (int y = 0; y < oh; y++) {
        lerp_t cy = lerp_coef(y, ih, oh);
        const float *r0 = in + (size_t)cy.i0 * iw * C;
        const float *r1 = in + (size_t)cy.i1 * iw * C;
        float *o = out + (size_t)y * ow * C;
        for (int x = 0; x < ow; x++) {
            lerp_t cx = lerp_coef(x, iw, ow);
            const size_t a = (size_t)cx.i0 * C, b = (size_t)cx.i1 * C;
            for (int c = 0; c < C; c++)
                o[(size_t)x * C + c] = blend(cy, cx, r0[a + c], r0[b + c], r1[a + c], r1[b + c]);
        }
    }
}

/* One row (index y of an rs x rs resize of the 32x32 uint8 image), all
 * columns: the values sv_resize_bilinear gives for that row. */
static void resized_row_u8(float *row, const uint8_t *img, int rs, int y) {
    lerp_t cy = lerp_coef(y, SV_CIFAR_SIDE, rs);
    const uint8_t *r0 = img + (size_t)cy.i0 * SV_CIFAR_SIDE * 3;
    const uint8_t *r1 = img + (size_t)cy.i1 * SV_CIFAR_SIDE * 3;
    for (int x = 0; x < rs; x++) {
        lerp_t cx = lerp_coef(x, SV_CIFAR_SIDE, rs);
        const int a = cx.i0 * 3, b = cx.i1 * 3;
        for (int c = 0; c < 3; c++)
            row[3 * x + c] = blend(cy, cx, (float)r0[a + c], (float)r0[b + c],
                                   (float)r1[a + c], (float)r1[b + c]);
    }
}

void sv_augment_image(float *out, const uint8_t *img, int resize_size, int image_size,
                      int oy, int ox, int flip) {
    SV_CHECK(image_size > 0 && resize_size >= image_size);
    SV_CHECK(oy >= 0 && ox >= 0 && oy + image_size <= resize_size &&
             ox + image_size <= resize_size);
    const float inv = 1.0f / 255.0f;
    const int S = image_size, R = resize_size;
    for (int y = 0; y < S; y++) {
        lerp_t cy = lerp_coef(oy + y, SV_CIFAR_SIDE, R);
        const uint8_t *r0 = img + (size_t)cy.i0 * SV_CIFAR_SIDE * 3;
        const uint8_t *r1 = img + (size_t)cy.i1 * SV_CIFAR_SIDE * 3;
        float *o = out + (size_t)y * S * 3;
        for (int x = 0; x < S; x++) {
            /* output column x shows crop column S-1-x when flipped */
            lerp_t cx = lerp_coef(ox + (flip ? S - 1 - x : x), SV_CIFAR_SIDE, R);
            const int a = cx.i0 * 3, b = cx.i1 * 3;
            for (int c = 0; c < 3; c++)
                o[3 * x + c] = blend(cy, cx, (float)r0[a + c], (float)r0[b + c],
                                     (float)r1[a + c], (float)r1[b + c]) * inv;
        }
    }
}

void sv_eval_image(float *out, const uint8_t *img, int resize_size, int image_size) {
    SV_CHECK(image_size > 0 && resize_size > 0);
    const float inv = 1.0f / 255.0f;
    const int S = image_size, R = resize_size;
    /* Two rows of the R x R intermediate at a time: the rows y0, y1 that output
     * row y blends. Same arithmetic as materialising the whole resize. */
    float stack_rows[2 * 3 * EVAL_STACK_WIDTH];
    float *rows = stack_rows;
    if (R > EVAL_STACK_WIDTH) rows = sv_alloc((size_t)2 * 3 * R * sizeof(float), "eval rows");
    float *row0 = rows, *row1 = rows + (size_t)3 * R;
    int have0 = -1, have1 = -1;
    for (int y = 0; y < S; y++) {
        lerp_t cy = lerp_coef(y, R, S);
        if (have0 != cy.i0) {
            if (have1 == cy.i0) { /* slide: old row1 becomes row0 */
                float *t = row0;
                row0 = row1;
                row1 = t;
                have0 = cy.i0;
                have1 = -1;
            } else {
                resized_row_u8(row0, img, R, cy.i0);
                have0 = cy.i0;
            }
        }
        if (have1 != cy.i1) {
            resized_row_u8(row1, img, R, cy.i1);
            have1 = cy.i1;
        }
        float *o = out + (size_t)y * S * 3;
        for (int x = 0; x < S; x++) {
            lerp_t cx = lerp_coef(x, R, S);
            const int a = cx.i0 * 3, b = cx.i1 * 3;
            for (int c = 0; c < 3; c++)
                o[3 * x + c] =
                    blend(cy, cx, row0[a + c], row0[b + c], row1[a + c], row1[b + c]) * inv;
        }
    }
    if (rows != stack_rows) sv_free(rows);
}

/* Row y of the translated image: source row y - dy shifted right by dx, zeros
 * where the source lies outside. memmove because source and destination are
 * the same image. */
static void translate_row(float *img, int S, int y, int dy, int dx) {
    const size_t row = (size_t)S * 3;
    float *o = img + (size_t)y * row;
    const int sy = y - dy;
    const int w = S - (dx < 0 ? -dx : dx); /* columns that come from inside */
    if (sy < 0 || sy >= S || w <= 0) {
        memset(o, 0, row * sizeof(float));
        return;
    }
    const float *src = img + (size_t)sy * row;
    if (dx >= 0) {
        memmove(o + (size_t)dx * 3, src, (size_t)w * 3 * sizeof(float));
        memset(o, 0, (size_t)dx * 3 * sizeof(float));
    } else {
        memmove(o, src + (size_t)(-dx) * 3, (size_t)w * 3 * sizeof(float));
        memset(o + (size_t)w * 3, 0, (size_t)(-dx) * 3 * sizeof(float));
    }
}

void sv_translate_cutout(float *img, int S, const sv_extra_augment *e) {
    if (e->dy != 0 || e->dx != 0) {
        /* In place: moving down reads rows above, so walk from the bottom;
         * moving up (or not at all) reads rows below, so walk from the top. */
        if (e->dy > 0)
            for (int y = S - 1; y >= 0; y--) translate_row(img, S, y, e->dy, e->dx);
        else
            for (int y = 0; y < S; y++) translate_row(img, S, y, e->dy, e->dx);
    }
    if (e->cutout > 0) {
        int y0 = e->cy - e->cutout / 2, x0 = e->cx - e->cutout / 2;
        int y1 = y0 + e->cutout, x1 = x0 + e->cutout;
        if (y0 < 0) y0 = 0;
        if (x0 < 0) x0 = 0;
        if (y1 > S) y1 = S;
        if (x1 > S) x1 = S;
        for (int y = y0; y < y1 && x0 < x1; y++)
            memset(img + ((size_t)y * S + x0) * 3, 0, (size_t)(x1 - x0) * 3 * sizeof(float));
    }
}

void sv_flip_images(float *x, int n, int S) {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)n * S; r++) {
        float *row = x + (size_t)r * S * 3;
        for (int a = 0, b = S - 1; a < b; a++, b--)
            for (int c = 0; c < 3; c++) {
                float t = row[3 * a + c];
                row[3 * a + c] = row[3 * b + c];
                row[3 * b + c] = t;
            }
    }
}

/* ------------------------------------------------------------ randomness */

void sv_draw_augment(uint64_t seed, long epoch, long sample, int resize_size,
                     int image_size, int *oy, int *ox, int *flip) {
    SV_CHECK(resize_size >= image_size);
    const uint64_t range = (uint64_t)(resize_size - image_size) + 1;
    uint64_t kc = sv_rng_key(seed, SV_RNG_CROP, (uint64_t)epoch, (uint64_t)sample, 0);
    *oy = (int)sv_rng_below(kc, 0, range);
    *ox = (int)sv_rng_below(kc, 1, range);
    uint64_t kf = sv_rng_key(seed, SV_RNG_FLIP, (uint64_t)epoch, (uint64_t)sample, 0);
    *flip = sv_rng_uniform(kf, 0) < 0.5f;
}

sv_extra_augment sv_draw_extra(uint64_t seed, long epoch, long sample, int translate,
                               int cutout, int image_size) {
    sv_extra_augment e = {0, 0, 0, 0, cutout};
    if (translate > 0) {
        const uint64_t range = 2 * (uint64_t)translate + 1;
        uint64_t k = sv_rng_key(seed, SV_RNG_TRANSLATE, (uint64_t)epoch, (uint64_t)sample, 0);
        e.dy = (int)sv_rng_below(k, 0, range) - translate;
        e.dx = (int)sv_rng_below(k, 1, range) - translate;
    }
    if (cutout > 0) {
        uint64_t k = sv_rng_key(seed, SV_RNG_CUTOUT, (uint64_t)epoch, (uint64_t)sample, 0);
        e.cy = (int)sv_rng_below(k, 0, (uint64_t)image_size);
        e.cx = (int)sv_rng_below(k, 1, (uint64_t)image_size);
    }
    return e;
}

void sv_epoch_permutation(long *perm, long n, uint64_t seed, long epoch) {
    for (long i = 0; i < n; i++) perm[i] = i;
    const uint64_t key = sv_rng_key(seed, SV_RNG_PERMUTE, (uint64_t)epoch, 0, 0);
    for (long i = n - 1; i > 0; i--) {
        long j = (long)sv_rng_below(key, (uint64_t)i, (uint64_t)i + 1);
        long t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void sv_make_batch(float *x, int *labels, const sv_dataset *ds, const long *idx, int n,
                   const sv_config *cfg, long epoch, int train) {
    const int S = cfg->image_size, R = cfg->resize_size;
    const size_t per = (size_t)S * S * 3;
    const int augment = train && cfg->augment;
    const uint64_t seed = (uint64_t)cfg->seed;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const long s = idx[i];
        SV_CHECK(s >= 0 && s < ds->count);
        const uint8_t *img = ds->images + (size_t)s * SV_CIFAR_PIXELS;
        if (labels) labels[i] = ds->labels[s];
        if (augment) {
            int oy, ox, flip;
            sv_draw_augment(seed, epoch, s, R, S, &oy, &ox, &flip);
            sv_augment_image(x + (size_t)i * per, img, R, S, oy, ox, flip);
            if (cfg->translate > 0 || cfg->cutout > 0) {
                sv_extra_augment e = sv_draw_extra(seed, epoch, s, cfg->translate, cfg->cutout, S);
                sv_translate_cutout(x + (size_t)i * per, S, &e);
            }
        } else {
            sv_eval_image(x + (size_t)i * per, img, R, S);
        }
    }
}
