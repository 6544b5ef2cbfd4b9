/* libFuzzer target for the image decoder of `shiftvit predict` (image.h),
 * called as sv_cmd_predict calls it: sv_image_decode(path), the 32x32 resize
 * (nearest, bilinear, area), the grid thumbnail (area) and the evaluation
 * transform. The input is written to a file because sv_image_decode takes a
 * path. stb_image's implementation is compiled in here (the same Debian
 * header libstb.so is built from) so that the fuzzer sees its branches and
 * the sanitizers its memory accesses; src/image.c links against it. Invariant besides the
 * sanitizers: a refused image always has a reason, a decoded one a size
 * within the limits. Built and run by tests/fuzz/run.sh.
 *
 * Regression inputs (corpus/fuzz_image/regress_*), found by this target:
 *   regress_dht_*.jpg  a DHT segment declaring more than 256 codes makes
 *                      stb_image 2.27 write past its Huffman tables (memory
 *                      corruption); _after_ff_fill has 0xFF fill bytes before
 *                      SOI, which stb_image accepts as a JPEG too;
 *   regress_pnm_int_overflow.pgm  signed overflow in stb_image's PNM reader;
 *   regress_png_empty_first_idat.png  NULL + 0 in stb_image's PNG reader
 *                      (harmless; suppressed by run.sh's ubsan.supp).
 * The first two fail until sv_image_decode refuses such files itself. */
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "shiftvit/data.h"
#include "shiftvit/grid.h"
#include "shiftvit/image.h"

static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_path, sizeof g_path, "%s/fuzz_image_%ld.img", dir, (long)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();

    int w = 0, h = 0;
    char why[512] = "";
    uint8_t *px = sv_image_decode(g_path, &w, &h, why, sizeof why);
    if (!px) {
        if (!why[0]) abort();
        return 0;
    }
    if (w <= 0 || h <= 0 || sv_image_too_big((unsigned long)w, (unsigned long)h)) abort();
    static uint8_t small[32 * 32 * 3], thumb[SV_GRID_THUMB * SV_GRID_THUMB * 3];
    static float x[64 * 64 * 3];
    sv_image_resize_nearest(small, 32, 32, px, h, w);
    sv_image_resize_bilinear(small, 32, 32, px, h, w);
    if (sv_image_resize_area(small, 32, 32, px, h, w) != 0) abort();
    if (sv_image_resize_area(thumb, SV_GRID_THUMB, SV_GRID_THUMB, px, h, w) != 0) abort();
    sv_image_free(px);
    sv_eval_image(x, small, 52, 48);
    for (int i = 0; i < 48 * 48 * 3; i++)
        if (!(x[i] >= 0.0f && x[i] <= 1.0f)) abort();
    return 0;
}
