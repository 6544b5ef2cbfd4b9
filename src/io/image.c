/* Image decoding and resizing for `shiftvit predict` (image.h): JPEG with
 * libjpeg-turbo, PNG with libpng (both Debian, security-maintained; the same
 * libjpeg-turbo that PIL decodes with, so the pixels equal PIL's), after the
 * project's own limits on the declared size; three resizes with TensorFlow 2's
 * conventions. The fuzzer's inputs: tests/fuzz/corpus/fuzz_image. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "shiftvit/image.h"

void sv_image_free(uint8_t *px) { free(px); }

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

int sv_image_too_big(unsigned long w, unsigned long h) {
    return w > SV_IMAGE_MAX_SIDE || h > SV_IMAGE_MAX_SIDE || w * h > (unsigned long)SV_IMAGE_MAX_PIXELS;
}

static void too_big(char *why, size_t whylen, unsigned long w, unsigned long h) {
    snprintf(why, whylen,
             "the image declares %lux%lu pixels, more than this command accepts (at most %d per side "
             "and %ld pixels); refusing to decode it",
             w, h, SV_IMAGE_MAX_SIDE, SV_IMAGE_MAX_PIXELS);
}

/* A progressive JPEG has about 10 scans, and each scan is a pass over the
 * whole image: a small file of thousands of scans would take minutes.
 * libjpeg-turbo's own fuzz targets stop at 500. */
#define MAX_JPEG_SCANS 500

typedef struct {
    struct jpeg_error_mgr mgr; /* first: libjpeg's err pointer is this struct */
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_ctx;

static void jpeg_fail(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    c->err->format_message(c, x->msg);
    longjmp(x->jb, 1);
}

/* libjpeg-turbo decodes past corrupt data with a warning, as PIL does; a file
 * that ends early (libjpeg-turbo would fill the rest grey) is refused, as PIL
 * refuses it. Trace messages (level >= 0) are ignored. */
static void jpeg_warn(j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(c);
}

static void jpeg_scans(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    if (((j_decompress_ptr)c)->input_scan_number > MAX_JPEG_SCANS) {
        snprintf(x->msg, sizeof x->msg, "more than %d scans", MAX_JPEG_SCANS);
        c->err->msg_code = 0; /* no libjpeg message */
        longjmp(x->jb, 1);
    }
}

/* a * b / 255, rounded (PIL's MULDIV255) */
static int mul255(int a, int b) {
    int t = a * b + 128;
    return (t + (t >> 8)) >> 8;
}

static uint8_t *decode_jpeg(FILE *f, int *w, int *h, char *why, size_t whylen) {
    struct jpeg_decompress_struct d;
    jpeg_ctx x;
    uint8_t *volatile px = NULL, *volatile cmyk = NULL;
    d.err = jpeg_std_error(&x.mgr);
    x.mgr.error_exit = jpeg_fail;
    x.mgr.emit_message = jpeg_warn;
    x.progress.progress_monitor = jpeg_scans;
    if (setjmp(x.jb)) {
        if (x.mgr.msg_code == JERR_IMAGE_TOO_BIG) too_big(why, whylen, d.image_width, d.image_height);
        else if (x.mgr.msg_code == JWRN_JPEG_EOF) snprintf(why, whylen, "truncated or corrupt JPEG (%s)", x.msg);
        else snprintf(why, whylen, "cannot decode: corrupt or unsupported JPEG (%s)", x.msg);
        goto fail;
    }
    jpeg_create_decompress(&d);
    d.progress = &x.progress;
    jpeg_stdio_src(&d, f);
    jpeg_read_header(&d, TRUE);
    if (sv_image_too_big(d.image_width, d.image_height)) {
        too_big(why, whylen, d.image_width, d.image_height);
        goto fail;
    }
    /* CMYK and YCCK come out as CMYK, converted below as PIL converts them;
     * libjpeg-turbo refuses other colour spaces before allocating the image. */
    int four = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    d.out_color_space = four ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&d);
    size_t W = d.output_width;
    px = malloc(W * d.output_height * 3);
    cmyk = four ? malloc(W * 4) : NULL;
    if (!px || (four && !cmyk)) {
        snprintf(why, whylen, "out of memory for %lux%u pixels", (unsigned long)W, d.output_height);
        goto fail;
    }
    while (d.output_scanline < d.output_height) {
        uint8_t *out = px + d.output_scanline * W * 3;
        JSAMPROW row = four ? cmyk : out;
        jpeg_read_scanlines(&d, &row, 1);
        /* PIL takes every CMYK JPEG for Adobe's inverted one: 255 - C, ..., then
         * R = (255 - K) - C (255 - K) / 255 */
        for (size_t i = 0; four && i < W * 3; i++) {
            int nk = cmyk[i / 3 * 4 + 3];
            out[i] = (uint8_t)(nk - mul255(255 - cmyk[i / 3 * 4 + i % 3], nk));
        }
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    free(cmyk);
    *w = (int)W;
    *h = (int)d.output_height;
    return px;
fail:
    jpeg_destroy_decompress(&d);
    free(px);
    free(cmyk);
    return NULL;
}

typedef struct {
    jmp_buf jb;
    char msg[200];
    FILE *f;
    int eof;
} png_ctx;

static void png_fail(png_structp p, png_const_charp m) {
    png_ctx *x = png_get_error_ptr(p);
    snprintf(x->msg, sizeof x->msg, "%s", m);
    longjmp(x->jb, 1);
}

static void png_warn(png_structp p, png_const_charp m) { (void)p, (void)m; }

static void png_read(png_structp p, png_bytep buf, size_t n) {
    png_ctx *x = png_get_io_ptr(p);
    if (fread(buf, 1, n, x->f) != n) {
        x->eof = 1;
        png_error(p, "the file ends before the image data does");
    }
}

/* Gray, palette, 1-16 bits, alpha: RGB8 as PIL's convert("RGB") gives it (and
 * stb_image did): gray replicated, alpha and tRNS dropped (not composited),
 * 16-bit to its high byte, no gamma correction. */
static uint8_t *decode_png(FILE *f, int *w, int *h, char *why, size_t whylen) {
    png_ctx x = {.f = f};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &x, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        snprintf(why, whylen, "out of memory starting libpng");
        goto fail;
    }
    if (setjmp(x.jb)) {
        snprintf(why, whylen, x.eof ? "truncated or corrupt PNG (%s)" : "cannot decode: corrupt or unsupported PNG (%s)",
                 x.msg);
        goto fail;
    }
    png_set_read_fn(png, &x, png_read);
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX); /* the project's limit, below, says more */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE); /* a fuzzer cannot fix checksums */
#endif
    png_read_info(png, info);
    size_t W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    if (sv_image_too_big(W, H)) {
        too_big(why, whylen, W, H);
        goto fail;
    }
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_palette_to_rgb(png);
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != W * 3) { /* a transform above missed a case */
        snprintf(why, whylen, "unsupported PNG: colour type %d, %d bits", png_get_color_type(png, info),
                 png_get_bit_depth(png, info));
        goto fail;
    }
    px = malloc(W * H * 3);
    rows = malloc(H * sizeof *rows);
    if (!px || !rows) {
        snprintf(why, whylen, "out of memory for %zux%zu pixels", W, H);
        goto fail;
    }
    for (size_t y = 0; y < H; y++) rows[y] = px + y * W * 3;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *w = (int)W;
    *h = (int)H;
    return px;
fail:
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(px);
    return NULL;
}

/* Decodes `path` to RGB uint8 by its first bytes: the PNG signature, or a
 * JPEG's SOI marker followed by another marker (FF D8 FF, as PIL and file(1)
 * tell a JPEG). */
uint8_t *sv_image_decode(const char *path, int *w, int *h, char *why, size_t whylen) {
    struct stat pre;
    if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode)) { /* a FIFO would block the open */
        snprintf(why, whylen, "%s, not an image file", S_ISDIR(pre.st_mode) ? "a directory" : "a device, FIFO or socket");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb = {0};
    uint8_t sig[8];
    size_t n = fread(sig, 1, sizeof sig, f);
    uint8_t *px = NULL;
    if (fstat(fileno(f), &sb) == 0 && sb.st_size == 0)
        snprintf(why, whylen, "empty file (0 bytes), not an image");
    else if (n == 8 && !memcmp(sig, "\x89PNG\r\n\x1a\n", 8) && fseek(f, 0, SEEK_SET) == 0)
        px = decode_png(f, w, h, why, whylen);
    else if (n >= 3 && sig[0] == 0xFF && sig[1] == 0xD8 && sig[2] == 0xFF && fseek(f, 0, SEEK_SET) == 0)
        px = decode_jpeg(f, w, h, why, whylen);
    else
        snprintf(why, whylen, "not a JPEG or PNG image (unknown file format)");
    fclose(f);
    return px;
}
