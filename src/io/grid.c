/* The 3x3 picture of `shiftvit predict --grid` (grid.h): thumbnails titled
 * with their predicted class, text rasterised from stb_easy_font's quads,
 * written with stb_image_write. Both are header-only (STB_CFLAGS names their
 * folder): this file compiles the one implementation it uses, static, so no
 * stb library is linked. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-braces"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

#include "shiftvit/grid.h"

#define GRID_COLS 3

/* ------------------------------------------------------------ grid */

#define CELL_PAD 8
#define TITLE_H 24
#define NAME_H 14
#define CELL_W (SV_GRID_THUMB + 2 * CELL_PAD)
#define CELL_H (TITLE_H + SV_GRID_THUMB + NAME_H + CELL_PAD)

/* Rasterises stb_easy_font quads (scaled by s, placed at ox, oy) into an RGB
 * canvas: a pixel is set when its centre lies inside a quad. */
static void draw_text(uint8_t *img, int W, int H, float ox, float oy, float s, const char *text,
                      const uint8_t rgb[3]) {
    char vbuf[64 * 1024]; /* stb_easy_font's vertices: 16 bytes each, room for the 127 characters of t */
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

int sv_grid_write(const char *path, const sv_grid_cell *cells, int n, char *why, size_t whylen) {
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
        for (int y = 0; y < SV_GRID_THUMB; y++)
            memcpy(img + ((size_t)(cy + TITLE_H + y) * W + cx + CELL_PAD) * 3,
                   cells[i].thumb + (size_t)y * SV_GRID_THUMB * 3, SV_GRID_THUMB * 3);
        float nw = text_width(cells[i].name, 1.0f);
        draw_text(img, W, H, cx + (CELL_W - nw) / 2, (float)(cy + TITLE_H + SV_GRID_THUMB + 3), 1.0f,
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

