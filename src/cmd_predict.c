/* `shiftvit predict`: classifies the user's own JPEG/PNG photos with a
 * checkpoint (SPEC section 1 "Inference"): decode to RGB uint8 (stb_image),
 * resize to 32x32 (nearest by default, as the Keras example; bilinear or
 * area on request), the evaluation transform, forward in inference mode,
 * softmax. Optionally draws a 3x3 grid of the images titled with their
 * predicted class (stb_easy_font + stb_image_write).
 *
 * Debian's libstb (pkg-config stb) ships the stb_image and stb_image_write
 * implementations in libstb.so, so the headers are only declarations here;
 * stb_easy_font is header-only and all static. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wshadow"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/data.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/model.h"
#include "shiftvit/text.h"

/* Images whose header declares more than this are refused before decoding,
 * so memory stays bounded whatever the file claims. */
#define MAX_SIDE 16384
#define MAX_PIXELS (64L * 1024 * 1024)

#define GRID_MAX 9
#define GRID_COLS 3
#define THUMB 128

static const char *const cifar_classes[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

typedef enum { RESIZE_NEAREST, RESIZE_BILINEAR, RESIZE_AREA } resize_mode;

static void predict_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit predict --checkpoint CKPT [--top-k K] [--json] [--grid OUT.png]\n"
            "                        [--resize nearest|bilinear|area] [--precision fp32|bf16]\n"
            "                        IMAGE_OR_DIR...\n\n"
            "Classifies JPEG and PNG images (also grayscale, with alpha, or 16-bit) with a trained\n"
            "checkpoint: each image is resized to 32x32, given the evaluation transform and\n"
            "classified. Prints per image the top-K classes with their confidence in percent and\n"
            "the softmax probabilities of all classes. A directory means every file in it, in name\n"
            "order (hidden files and .txt files are skipped).\n\n"
            "  --checkpoint CKPT  HDF5 checkpoint written by `shiftvit train` (holds the config)\n"
            "  --top-k K          classes listed per image (default 3)\n"
            "  --json             one JSON object per image and line:\n"
            "                     {\"file\":..., \"probabilities\":[...], \"top\":[{\"class\":...,\n"
            "                     \"confidence\":...}]}, confidence as a probability in [0, 1]\n"
            "  --grid OUT.png     draw up to 9 of the images, each titled with its predicted class\n"
            "                     and confidence, into a PNG file (JPEG if OUT ends in .jpg/.jpeg)\n"
            "  --resize M         how the photo is brought to 32x32: nearest (default, as the Keras\n"
            "                     example), bilinear (no antialiasing) or area (box average)\n"
            "  --precision P      fp32 or bf16 matrix products (default: the checkpoint's\n"
            "                     train.precision)\n"
            "  -h, --help         this text\n\n"
            "A file that is not an image, is truncated, or declares more than %dx%d or %ld\n"
            "pixels gets an error on stderr; the other files are still classified. Exit status 1\n"
            "if any file failed, else 0.\n\n"
            "example: build/shiftvit predict --checkpoint results/runs/X/best.h5 --grid grid.png \\\n"
            "             ../shared/data/inference_set/\n",
            MAX_SIDE, MAX_SIDE, MAX_PIXELS);
}

/* ------------------------------------------------------------ resizing */

/* All three take RGB uint8 in (ih x iw x 3) and write oh x ow x 3. */

/* TensorFlow 2 nearest neighbour (half-pixel centres): src = floor((dst + 0.5) * in / out). */
static void resize_nearest(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw) {
    for (int y = 0; y < oh; y++) {
        long sy = (long)floor((y + 0.5) * ih / oh);
        if (sy > ih - 1) sy = ih - 1;
        for (int x = 0; x < ow; x++) {
            long sx = (long)floor((x + 0.5) * iw / ow);
            if (sx > iw - 1) sx = iw - 1;
            memcpy(out + ((size_t)y * ow + x) * 3, in + ((size_t)sy * iw + sx) * 3, 3);
        }
    }
}

static uint8_t to_u8(double v) {
    v = floor(v + 0.5);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Bilinear with the semantics of sv_resize_bilinear (half-pixel, clamped, no
 * antialiasing), rounded to uint8. */
static void resize_bilinear(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw) {
    for (int y = 0; y < oh; y++) {
        double sy = (y + 0.5) * ih / oh - 0.5;
        if (sy < 0) sy = 0;
        if (sy > ih - 1) sy = ih - 1;
        int y0 = (int)sy, y1 = y0 + 1 < ih ? y0 + 1 : ih - 1;
        double fy = sy - y0;
        for (int x = 0; x < ow; x++) {
            double sx = (x + 0.5) * iw / ow - 0.5;
            if (sx < 0) sx = 0;
            if (sx > iw - 1) sx = iw - 1;
            int x0 = (int)sx, x1 = x0 + 1 < iw ? x0 + 1 : iw - 1;
            double fx = sx - x0;
            for (int c = 0; c < 3; c++) {
                double a = in[((size_t)y0 * iw + x0) * 3 + c], b = in[((size_t)y0 * iw + x1) * 3 + c];
                double d = in[((size_t)y1 * iw + x0) * 3 + c], e = in[((size_t)y1 * iw + x1) * 3 + c];
                double top = a + (b - a) * fx, bot = d + (e - d) * fx;
                out[((size_t)y * ow + x) * 3 + c] = to_u8(top + (bot - top) * fy);
            }
        }
    }
}

/* Box average: output pixel i covers source [i * in / out, (i + 1) * in / out),
 * each source pixel weighted by its overlap. Separable; returns -1 if out of
 * memory. */
static int resize_area(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw) {
    double *rows = malloc((size_t)ih * ow * 3 * sizeof(double));
    if (!rows) return -1;
    double sx = (double)iw / ow, sy = (double)ih / oh;
    for (int x = 0; x < ow; x++) {
        double a = x * sx, b = (x + 1) * sx;
        int i0 = (int)floor(a), i1 = (int)ceil(b);
        if (i1 > iw) i1 = iw;
        for (int y = 0; y < ih; y++) {
            double acc[3] = {0, 0, 0}, wsum = 0;
            for (int i = i0; i < i1; i++) {
                double w = fmin(b, i + 1.0) - fmax(a, (double)i);
                if (w <= 0) continue;
                const uint8_t *p = in + ((size_t)y * iw + i) * 3;
                for (int c = 0; c < 3; c++) acc[c] += w * p[c];
                wsum += w;
            }
            for (int c = 0; c < 3; c++) rows[((size_t)y * ow + x) * 3 + c] = wsum > 0 ? acc[c] / wsum : 0;
        }
    }
    for (int y = 0; y < oh; y++) {
        double a = y * sy, b = (y + 1) * sy;
        int j0 = (int)floor(a), j1 = (int)ceil(b);
        if (j1 > ih) j1 = ih;
        for (int x = 0; x < ow; x++) {
            double acc[3] = {0, 0, 0}, wsum = 0;
            for (int j = j0; j < j1; j++) {
                double w = fmin(b, j + 1.0) - fmax(a, (double)j);
                if (w <= 0) continue;
                const double *p = rows + ((size_t)j * ow + x) * 3;
                for (int c = 0; c < 3; c++) acc[c] += w * p[c];
                wsum += w;
            }
            for (int c = 0; c < 3; c++) out[((size_t)y * ow + x) * 3 + c] = to_u8(wsum > 0 ? acc[c] / wsum : 0);
        }
    }
    free(rows);
    return 0;
}

/* ------------------------------------------------------------ decoding */

static int has_ext(const char *name, const char *ext) {
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcasecmp(name + n - e, ext) == 0;
}

/* A user-facing reason for stb_image's terse message when it says more than
 * "corrupt"; NULL otherwise (the caller then says truncated or corrupt). */
static const char *explain(const char *why) {
    if (why && !strcmp(why, "unknown image type")) return "not a JPEG or PNG image (unknown file format)";
    return NULL;
}

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static unsigned long be32(const uint8_t *p) {
    return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

/* Declared size from a PNG IHDR or a JPEG SOFn header, read without decoding
 * (stb_image's own info call refuses very large images without saying their
 * size). Returns 1 when found; the file position is restored. */
static int header_size(FILE *f, unsigned long *w, unsigned long *h) {
    long pos = ftell(f);
    uint8_t b[32];
    int found = 0;
    size_t n = fread(b, 1, 24, f);
    if (n >= 24 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8) && !memcmp(b + 12, "IHDR", 4)) {
        *w = be32(b + 16);
        *h = be32(b + 20);
        found = 1;
    } else if (n >= 4 && b[0] == 0xFF && b[1] == 0xD8) {
        /* Walk the marker segments up to the first start-of-frame. */
        if (fseek(f, pos + 2, SEEK_SET) == 0) {
            for (int guard = 0; guard < 1000; guard++) {
                int c = fgetc(f);
                if (c != 0xFF) break;
                int m;
                while ((m = fgetc(f)) == 0xFF) {}
                if (m == EOF) break;
                if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* no length */
                if (fread(b, 1, 2, f) != 2) break;
                unsigned len = be16(b);
                if (len < 2) break;
                if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                    if (fread(b, 1, 5, f) != 5) break;
                    *h = be16(b + 1);
                    *w = be16(b + 3);
                    found = 1;
                    break;
                }
                if (m == 0xDA || m == 0xD9) break; /* scan data before any frame header */
                if (fseek(f, (long)len - 2, SEEK_CUR) != 0) break;
            }
        }
    }
    clearerr(f);
    fseek(f, pos, SEEK_SET);
    return found;
}

/* Debian 12's stb_image (2.27) trusts a JPEG's Huffman tables: a DHT
 * segment declaring more than 256 codes makes it write past its tables, and
 * a scan that uses a table the file never defined makes it index its tables
 * with garbage (both fixed upstream in 2.28). Check what stb_image would
 * read before handing it the file: walk every marker segment (entropy-coded
 * data skipped; stb only takes a marker at the bytes FF xx, which this walk
 * visits too), record the tables each DHT defines and check each scan's
 * table references. Returns 0 and a reason in why for a bad file; the file
 * position is restored. */
static int jpeg_tables_ok(FILE *f, char *why, size_t whylen) {
    long pos = ftell(f);
    int ok = 1, progressive = 0;
    unsigned defined = 0; /* bit 4 * class + id */
    uint8_t b[64];
    /* stb_image takes a file for a JPEG when it starts with one or more 0xFF
     * and then 0xD8 (SOI); anything else is none of this check's business. */
    int first = fgetc(f), c = first;
    while (c == 0xFF) c = fgetc(f);
    if (first != 0xFF || c != 0xD8) {
        clearerr(f);
        fseek(f, pos, SEEK_SET);
        return 1;
    }
    while (ok) {
        c = fgetc(f);
        if (c == EOF) break;
        if (c != 0xFF) continue; /* entropy-coded data, or bytes stb skips */
        int m;
        while ((m = fgetc(f)) == 0xFF) {}
        if (m == EOF || m == 0xD9) break;                              /* EOI */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* stuffing, TEM, RSTn */
        if (fread(b, 1, 2, f) != 2) break;
        long len = (long)be16(b) - 2, end = ftell(f) + len;
        if (len < 0) break;
        if (m == 0xC0 || m == 0xC1 || m == 0xC2) progressive = m == 0xC2;
        if (m == 0xC4) { /* DHT: read as stb does, table after table */
            for (long left = len; left > 0;) {
                size_t got = fread(b, 1, 17, f);
                int n = 0;
                for (size_t i = 1; i < got; i++) n += b[i];
                if (got > 0 && ((b[0] >> 4) > 1 || (b[0] & 15) > 3 || n > 256)) {
                    snprintf(why, whylen,
                             "corrupt JPEG: bad Huffman table (DHT class %d, id %d, %d codes; at most 1, 3 "
                             "and 256); refusing to decode it", b[0] >> 4, b[0] & 15, n);
                    ok = 0;
                    break;
                }
                if (got < 17) break;
                defined |= 1u << (4 * (b[0] >> 4) + (b[0] & 15));
                left -= 17 + n;
                if (fseek(f, n, SEEK_CUR) != 0) break;
            }
        } else if (m == 0xDA && len >= 1) { /* SOS: the tables its components use */
            size_t got = fread(b, 1, len < (long)sizeof b ? (size_t)len : sizeof b, f);
            int ns = b[0];
            if (got >= (size_t)(1 + 2 * ns + 3)) {
                int ss = b[1 + 2 * ns], ah = b[3 + 2 * ns] >> 4;
                int need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || ss != 0;
                for (int k = 0; k < ns && ok; k++) {
                    int td = b[2 + 2 * k] >> 4, ta = b[2 + 2 * k] & 15;
                    int bad = (need_dc && td <= 3 && !(defined >> td & 1)) ? 0
                              : (need_ac && ta <= 3 && !(defined >> (4 + ta) & 1)) ? 1 : -1;
                    if (bad >= 0) {
                        snprintf(why, whylen,
                                 "corrupt JPEG: a scan uses Huffman table %s %d, which the file does not define "
                                 "before it; refusing to decode it", bad ? "AC" : "DC", bad ? ta : td);
                        ok = 0;
                    }
                }
            }
        }
        if (ok && fseek(f, end, SEEK_SET) != 0) break;
    }
    clearerr(f);
    fseek(f, pos, SEEK_SET);
    return ok;
}

/* 1 if the file starts as stb_image recognises a PNG (its 8-byte signature)
 * or a JPEG (0xFF, any more 0xFF, then SOI 0xD8). Everything else stb_image
 * would also decode (GIF, BMP, PSD, TGA, HDR, PIC, PNM) is refused: this
 * command promises JPEG and PNG, and Debian's stb_image 2.27 has known
 * faults in those other readers. The file position is restored. */
static int png_or_jpeg(FILE *f) {
    long pos = ftell(f);
    uint8_t b[8];
    size_t n = fread(b, 1, 8, f);
    int yes = n == 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8);
    if (!yes && n >= 2 && b[0] == 0xFF) {
        size_t i = 1;
        while (i < n && b[i] == 0xFF) i++;
        int c = i < n ? b[i] : fgetc(f);
        while (i >= n && c == 0xFF) c = fgetc(f);
        yes = c == 0xD8;
    }
    clearerr(f);
    fseek(f, pos, SEEK_SET);
    return yes;
}

/* For a PNG: every chunk's declared length must fit in the bytes that follow
 * it. stb_image grows its buffer to a chunk's declared length before reading
 * it, so a PNG that claims gigabytes of IDAT in a small file would make it
 * allocate them (found by tests/fuzz/fuzz_image). With this check memory stays
 * bounded by the file size (and the declared pixel count, checked apart).
 * Not a PNG: nothing to check. The file position is restored. */
static int png_chunks_ok(FILE *f, long size, char *why, size_t whylen) {
    long pos = ftell(f);
    uint8_t b[8];
    int ok = 1;
    if (fread(b, 1, 8, f) == 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) {
        long off = 8;
        while (off + 8 <= size) {
            if (fread(b, 1, 8, f) != 8) break;
            unsigned long len = (unsigned long)b[0] << 24 | (unsigned long)b[1] << 16 |
                                (unsigned long)b[2] << 8 | b[3];
            if (len > 0x7fffffffUL || (unsigned long)(size - off - 12) < len) {
                snprintf(why, whylen,
                         "truncated or corrupt PNG: chunk \"%.4s\" at byte %ld declares %lu bytes, the file has %ld left",
                         (const char *)b + 4, off, len, size - off - 12 > 0 ? size - off - 12 : 0);
                ok = 0;
                break;
            }
            if (!memcmp(b + 4, "IEND", 4)) break;
            off += 12 + (long)len;
            if (fseek(f, off, SEEK_SET) != 0) break;
        }
    }
    clearerr(f);
    fseek(f, pos, SEEK_SET);
    return ok;
}

static int too_big(unsigned long w, unsigned long h) {
    return w > MAX_SIDE || h > MAX_SIDE || w * h > (unsigned long)MAX_PIXELS;
}

/* Decodes `path` to RGB uint8 after checking its declared size. Returns the
 * pixels (free with stbi_image_free) or NULL with a reason in why. */
static uint8_t *decode(const char *path, int *w, int *h, char *why, size_t whylen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb = {0};
    if (fstat(fileno(f), &sb) == 0 && sb.st_size == 0) {
        fclose(f);
        snprintf(why, whylen, "empty file (0 bytes), not an image");
        return NULL;
    }
    unsigned long hw = 0, hh = 0;
    if (header_size(f, &hw, &hh) && too_big(hw, hh)) {
        snprintf(why, whylen,
                 "the image declares %lux%lu pixels, more than this command accepts (at most %d per side "
                 "and %ld pixels); refusing to decode it",
                 hw, hh, MAX_SIDE, MAX_PIXELS);
        fclose(f);
        return NULL;
    }
    if (!png_or_jpeg(f)) {
        snprintf(why, whylen, "not a JPEG or PNG image (unknown file format)");
        fclose(f);
        return NULL;
    }
    if (!jpeg_tables_ok(f, why, whylen) || !png_chunks_ok(f, (long)sb.st_size, why, whylen)) {
        fclose(f);
        return NULL;
    }
    int comp = 0;
    if (!stbi_info_from_file(f, w, h, &comp)) {
        const char *r = stbi_failure_reason();
        const char *e = explain(r);
        if (e) snprintf(why, whylen, "%s", e);
        else snprintf(why, whylen, "not a readable image: truncated or corrupt file (%s)", r ? r : "?");
        fclose(f);
        return NULL;
    }
    if (*w <= 0 || *h <= 0 || too_big((unsigned long)*w, (unsigned long)*h)) {
        snprintf(why, whylen,
                 "the image declares %dx%d pixels, more than this command accepts (at most %d per side "
                 "and %ld pixels); refusing to decode it",
                 *w, *h, MAX_SIDE, MAX_PIXELS);
        fclose(f);
        return NULL;
    }
    int n = 0;
    uint8_t *px = stbi_load_from_file(f, w, h, &n, 3);
    fclose(f);
    if (!px) {
        const char *r = stbi_failure_reason();
        const char *e = explain(r);
        if (e) snprintf(why, whylen, "%s", e);
        else snprintf(why, whylen, "cannot decode: truncated or corrupt image (%s)", r ? r : "?");
        return NULL;
    }
    return px;
}

/* ------------------------------------------------------------ inputs */

typedef struct {
    char **v;
    int n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = strdup(s);
    if (!l->v[l->n]) return -1;
    l->n++;
    return 0;
}

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the regular files of dir, sorted by name, skipping hidden and .txt
 * files. Returns the number added, or -1 with errno if it cannot be read. */
static int add_dir(strlist *files, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    strlist names = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || has_ext(e->d_name, ".txt")) continue;
        if (strlist_add(&names, e->d_name)) {
            closedir(d);
            strlist_free(&names);
            errno = ENOMEM;
            return -1;
        }
    }
    closedir(d);
    if (names.n) qsort(names.v, (size_t)names.n, sizeof *names.v, cmp_str);
    int added = 0;
    size_t dl = strlen(dir);
    for (int i = 0; i < names.n; i++) {
        size_t len = dl + strlen(names.v[i]) + 2;
        char *p = malloc(len);
        if (!p) break;
        snprintf(p, len, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", names.v[i]);
        struct stat sb;
        if (stat(p, &sb) == 0 && !S_ISREG(sb.st_mode)) {
            free(p); /* subdirectories and devices are not images */
            continue;
        }
        if (strlist_add(files, p) == 0) added++;
        free(p);
    }
    strlist_free(&names);
    return added;
}

/* ------------------------------------------------------------ output */

static const char *class_name(int k, int K, char *buf, size_t n) {
    if (K == 10) return cifar_classes[k];
    snprintf(buf, n, "class%d", k);
    return buf;
}

/* ------------------------------------------------------------ grid */

typedef struct {
    uint8_t thumb[THUMB * THUMB * 3];
    char title[64];
    char name[64];
} grid_cell;

#define CELL_PAD 8
#define TITLE_H 24
#define NAME_H 14
#define CELL_W (THUMB + 2 * CELL_PAD)
#define CELL_H (TITLE_H + THUMB + NAME_H + CELL_PAD)

/* Rasterises stb_easy_font quads (scaled by s, placed at ox, oy) into an RGB
 * canvas: a pixel is set when its centre lies inside a quad. */
static void draw_text(uint8_t *img, int W, int H, float ox, float oy, float s, const char *text,
                      const uint8_t rgb[3]) {
    static char vbuf[64 * 1024];
    char t[128];
    snprintf(t, sizeof t, "%s", text);
    int quads = stb_easy_font_print(0, 0, t, NULL, vbuf, (int)sizeof vbuf);
    for (int q = 0; q < quads; q++) {
        float x0 = 1e9f, y0 = 1e9f, x1 = -1e9f, y1 = -1e9f;
        for (int v = 0; v < 4; v++) {
            const float *xy = (const float *)(vbuf + (size_t)(q * 4 + v) * 16);
            x0 = fminf(x0, xy[0]), x1 = fmaxf(x1, xy[0]);
            y0 = fminf(y0, xy[1]), y1 = fmaxf(y1, xy[1]);
        }
        x0 = ox + s * x0, x1 = ox + s * x1, y0 = oy + s * y0, y1 = oy + s * y1;
        for (int y = (int)floorf(y0); y <= (int)ceilf(y1); y++) {
            if (y < 0 || y >= H || y + 0.5f < y0 || y + 0.5f > y1) continue;
            for (int x = (int)floorf(x0); x <= (int)ceilf(x1); x++) {
                if (x < 0 || x >= W || x + 0.5f < x0 || x + 0.5f > x1) continue;
                memcpy(img + ((size_t)y * W + x) * 3, rgb, 3);
            }
        }
    }
}

/* Text width in canvas pixels at scale s. */
static float text_width(const char *text, float s) {
    char t[128];
    snprintf(t, sizeof t, "%s", text);
    return s * (float)stb_easy_font_width(t);
}

static int write_grid(const char *path, const grid_cell *cells, int n, char *why, size_t whylen) {
    int cols = n < GRID_COLS ? n : GRID_COLS, rows = (n + GRID_COLS - 1) / GRID_COLS;
    int W = cols * CELL_W, H = rows * CELL_H + CELL_PAD;
    uint8_t *img = malloc((size_t)W * H * 3);
    if (!img) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    memset(img, 255, (size_t)W * H * 3);
    const uint8_t black[3] = {0, 0, 0}, grey[3] = {96, 96, 96};
    for (int i = 0; i < n; i++) {
        int cx = (i % GRID_COLS) * CELL_W, cy = (i / GRID_COLS) * CELL_H + CELL_PAD;
        float s = 2.0f, tw = text_width(cells[i].title, s);
        if (tw > CELL_W - 4) {
            s = s * (CELL_W - 4) / tw;
            tw = text_width(cells[i].title, s);
        }
        draw_text(img, W, H, cx + (CELL_W - tw) / 2, (float)cy + 4, s, cells[i].title, black);
        for (int y = 0; y < THUMB; y++)
            memcpy(img + ((size_t)(cy + TITLE_H + y) * W + cx + CELL_PAD) * 3,
                   cells[i].thumb + (size_t)y * THUMB * 3, THUMB * 3);
        float nw = text_width(cells[i].name, 1.0f);
        draw_text(img, W, H, cx + (CELL_W - nw) / 2, (float)(cy + TITLE_H + THUMB + 3), 1.0f,
                  cells[i].name, grey);
    }
    errno = 0;
    /* The format follows the name: .jpg/.jpeg is JPEG (quality 92), anything else PNG. */
    const char *dot = strrchr(path, '.');
    int jpeg = dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
    int ok = jpeg ? stbi_write_jpg(path, W, H, 3, img, 92) : stbi_write_png(path, W, H, 3, img, W * 3);
    free(img);
    if (!ok) {
        snprintf(why, whylen, "cannot write the %s file (%s)", jpeg ? "JPEG" : "PNG",
                 errno ? strerror(errno) : "stb_image_write failed");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ command */

int sv_cmd_predict(int argc, char **argv) {
    sv_dist *d = sv_cli_dist();
    if (d->rank != 0) return 0; /* predict runs on rank 0 only */
    const char *ckpt = NULL, *grid = NULL;
    int topk = 3, json = 0;
    const char *precision = NULL;
    resize_mode mode = RESIZE_NEAREST;
    strlist args = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            predict_usage(stdout);
            strlist_free(&args);
            return 0;
        } else if (!strcmp(a, "--checkpoint") && has_next) {
            ckpt = argv[++i];
        } else if (!strcmp(a, "--top-k") && has_next) {
            char *end;
            const char *v = argv[++i];
            long k = strtol(v, &end, 10);
            if (*end || end == v || k < 1 || k > 1000) {
                fprintf(stderr, "shiftvit predict: --top-k '%s' must be a positive integer\n", v);
                strlist_free(&args);
                return 1;
            }
            topk = (int)k;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--precision") && has_next) {
            precision = argv[++i];
            if (strcmp(precision, "fp32") != 0 && strcmp(precision, "bf16") != 0) {
                fprintf(stderr, "shiftvit predict: --precision '%s' must be fp32 or bf16\n", precision);
                strlist_free(&args);
                return 1;
            }
        } else if (!strcmp(a, "--grid") && has_next) {
            grid = argv[++i];
        } else if (!strcmp(a, "--resize") && has_next) {
            const char *v = argv[++i];
            if (!strcmp(v, "nearest")) mode = RESIZE_NEAREST;
            else if (!strcmp(v, "bilinear")) mode = RESIZE_BILINEAR;
            else if (!strcmp(v, "area")) mode = RESIZE_AREA;
            else {
                fprintf(stderr, "shiftvit predict: --resize '%s' must be nearest, bilinear or area\n", v);
                strlist_free(&args);
                return 1;
            }
        } else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) strlist_add(&args, argv[i]);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "shiftvit predict: unknown or incomplete option '%s'\n\n", a);
            predict_usage(stderr);
            strlist_free(&args);
            return 1;
        } else {
            strlist_add(&args, a);
        }
    }
    if (!ckpt || args.n == 0) {
        fprintf(stderr, "shiftvit predict: %s\n\n",
                !ckpt ? "--checkpoint CKPT is required" : "no image or directory given");
        predict_usage(stderr);
        strlist_free(&args);
        return 1;
    }

    char err[SV_ERR_LEN];
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (sv_checkpoint_read_config(ckpt, &cfg, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        strlist_free(&args);
        return 1;
    }
    if (precision) cfg.precision = !strcmp(precision, "bf16") ? SV_BF16 : SV_FP32; /* checked above */
    sv_model m;
    if (sv_model_create(&m, &cfg, 1, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        strlist_free(&args);
        return 2;
    }
    if (sv_checkpoint_load(ckpt, &m, NULL, NULL, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        sv_model_free(&m);
        strlist_free(&args);
        return 1;
    }
    int K = m.num_classes;
    if (topk > K) topk = K;
    /* on stderr: stdout may be JSON */
    if (m.bf16) fprintf(stderr, "shiftvit predict: precision: %s\n", sv_bf16_describe(m.bf16));

    /* Expand directories. */
    int failed = 0;
    strlist files = {0};
    for (int i = 0; i < args.n; i++) {
        struct stat sb;
        if (stat(args.v[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            int n = add_dir(&files, args.v[i]);
            if (n < 0) {
                fprintf(stderr, "shiftvit predict: %s: cannot read the directory: %s\n", args.v[i],
                        strerror(errno));
                failed++;
            } else if (n == 0) {
                fprintf(stderr, "shiftvit predict: %s: no image files in this directory\n", args.v[i]);
                failed++;
            }
        } else {
            strlist_add(&files, args.v[i]); /* errors (missing file...) are reported below */
        }
    }

    int S = cfg.image_size;
    float *x = sv_alloc((size_t)S * S * 3 * sizeof(float), "input image");
    double *prob = sv_alloc((size_t)K * sizeof(double), "probabilities");
    int *order = sv_alloc((size_t)K * sizeof(int), "class order");
    grid_cell *cells = grid ? calloc(GRID_MAX, sizeof *cells) : NULL;
    int ncells = 0, classified = 0;
    uint8_t small[32 * 32 * 3];
    char why[512], cname[32], qpath[SV_QUOTED_LEN(SV_PATH_LEN)];

    for (int fi = 0; fi < files.n; fi++) {
        const char *path = files.v[fi];
        int w = 0, h = 0;
        uint8_t *px = decode(path, &w, &h, why, sizeof why);
        if (!px) {
            fprintf(stderr, "shiftvit predict: %s: %s\n", sv_shell_quote(path, qpath, sizeof qpath), why);
            failed++;
            continue;
        }
        int rc = 0;
        if (mode == RESIZE_NEAREST) resize_nearest(small, 32, 32, px, h, w);
        else if (mode == RESIZE_BILINEAR) resize_bilinear(small, 32, 32, px, h, w);
        else rc = resize_area(small, 32, 32, px, h, w);
        if (rc == 0 && cells && ncells < GRID_MAX) rc = resize_area(cells[ncells].thumb, THUMB, THUMB, px, h, w);
        stbi_image_free(px);
        if (rc != 0) {
            fprintf(stderr, "shiftvit predict: %s: out of memory resizing %dx%d pixels\n",
                    sv_shell_quote(path, qpath, sizeof qpath), w, h);
            failed++;
            continue;
        }

        sv_eval_image(x, small, cfg.resize_size, cfg.image_size);
        const float *logits = sv_model_forward(&m, x, 1, NULL);
        double mx = logits[0], se = 0;
        for (int k = 1; k < K; k++) mx = logits[k] > mx ? logits[k] : mx;
        for (int k = 0; k < K; k++) se += (prob[k] = exp((double)logits[k] - mx));
        for (int k = 0; k < K; k++) prob[k] /= se;
        for (int k = 0; k < K; k++) order[k] = k;
        for (int a = 1; a < K; a++) { /* stable insertion sort, descending */
            int v = order[a], b = a;
            while (b > 0 && prob[order[b - 1]] < prob[v]) {
                order[b] = order[b - 1];
                b--;
            }
            order[b] = v;
        }

        if (json) {
            fputs("{\"file\":", stdout);
            if (sv_json_string(stdout, path)) {
                /* Not UTF-8: "file" is lossy, "file_hex" holds the exact bytes. */
                fputs(",\"file_hex\":\"", stdout);
                sv_hex(stdout, path);
                fputc('"', stdout);
            }
            fputs(",\"probabilities\":[", stdout);
            /* JSON has no NaN or infinity: null (weights with non-finite values) */
            for (int k = 0; k < K; k++) printf(isfinite(prob[k]) ? "%s%.9g" : "%snull", k ? "," : "", prob[k]);
            fputs("],\"top\":[", stdout);
            for (int t = 0; t < topk; t++) {
                printf("%s{\"class\":", t ? "," : "");
                sv_json_string(stdout, class_name(order[t], K, cname, sizeof cname));
                printf(isfinite(prob[order[t]]) ? ",\"confidence\":%.9g}" : ",\"confidence\":null}", prob[order[t]]);
            }
            fputs("]}\n", stdout);
        } else {
            printf("%s (%dx%d)\n", sv_shell_quote(path, qpath, sizeof qpath), w, h);
            for (int t = 0; t < topk; t++)
                printf("  %d. %-11s %6.2f%%\n", t + 1, class_name(order[t], K, cname, sizeof cname),
                       100.0 * prob[order[t]]);
            printf("  probabilities:");
            for (int k = 0; k < K; k++)
                printf(" %s %.4f%s", class_name(k, K, cname, sizeof cname), prob[k], k + 1 < K ? "," : "\n");
        }
        fflush(stdout);
        classified++;

        if (cells && ncells < GRID_MAX) {
            grid_cell *c = &cells[ncells++];
            snprintf(c->title, sizeof c->title, "%s %.1f%%", class_name(order[0], K, cname, sizeof cname),
                     100.0 * prob[order[0]]);
            const char *base = strrchr(path, '/');
            base = base ? base + 1 : path;
            snprintf(c->name, sizeof c->name, "%.22s%s", base, strlen(base) > 22 ? "..." : "");
        }
    }

    if (grid) {
        if (ncells == 0) {
            fprintf(stderr, "shiftvit predict: no image was classified; %s not written\n", grid);
            failed++;
        } else if (write_grid(grid, cells, ncells, why, sizeof why) != 0) {
            fprintf(stderr, "shiftvit predict: %s: %s\n", sv_shell_quote(grid, qpath, sizeof qpath), why);
            failed++;
        } else if (!json) {
            printf("Grid of %d image(s): %s\n", ncells, sv_shell_quote(grid, qpath, sizeof qpath));
        }
    }
    if (failed && !json)
        fprintf(stderr, "shiftvit predict: %d image(s) classified, %d error(s)\n", classified, failed);

    free(cells);
    sv_free(x);
    sv_free(prob);
    sv_free(order);
    strlist_free(&files);
    strlist_free(&args);
    sv_model_free(&m);
    return failed ? 1 : 0;
}
