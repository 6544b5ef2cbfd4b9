/* Image decoding and resizing for `shiftvit predict` (image.h): structure
 * checks of JPEG and PNG files that keep stb_image away from its known faults
 * (the fuzzer's regression inputs: tests/fuzz/corpus/fuzz_image), then
 * stb_image; three resizes with TensorFlow 2's conventions.
 *
 * Debian's libstb (pkg-config stb) ships the stb_image implementation in
 * libstb.so, so the header is only declarations here (the fuzzer compiles
 * the implementation into itself, instrumented). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <stb/stb_image.h>

#include "shiftvit/image.h"

void sv_image_free(uint8_t *px) { stbi_image_free(px); }

/* ------------------------------------------------------------ resizing */

/* All three take RGB uint8 in (ih x iw x 3) and write oh x ow x 3. */

/* TensorFlow 2 nearest neighbour (half-pixel centres): src = floor((dst + 0.5) * in / out). */
void sv_image_resize_nearest(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw) {
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
void sv_image_resize_bilinear(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw) {
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
int sv_image_resize_area(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw) {
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

int sv_image_too_big(unsigned long w, unsigned long h) {
    return w > SV_IMAGE_MAX_SIDE || h > SV_IMAGE_MAX_SIDE || w * h > (unsigned long)SV_IMAGE_MAX_PIXELS;
}

/* Decodes `path` to RGB uint8 after checking its declared size. Returns the
 * pixels (free with stbi_image_free) or NULL with a reason in why. */
uint8_t *sv_image_decode(const char *path, int *w, int *h, char *why, size_t whylen) {
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
    if (header_size(f, &hw, &hh) && sv_image_too_big(hw, hh)) {
        snprintf(why, whylen,
                 "the image declares %lux%lu pixels, more than this command accepts (at most %d per side "
                 "and %ld pixels); refusing to decode it",
                 hw, hh, SV_IMAGE_MAX_SIDE, SV_IMAGE_MAX_PIXELS);
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
    if (*w <= 0 || *h <= 0 || sv_image_too_big((unsigned long)*w, (unsigned long)*h)) {
        snprintf(why, whylen,
                 "the image declares %dx%d pixels, more than this command accepts (at most %d per side "
                 "and %ld pixels); refusing to decode it",
                 *w, *h, SV_IMAGE_MAX_SIDE, SV_IMAGE_MAX_PIXELS);
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

