/* libFuzzer target for the image decoder of `shiftvit predict` (image.h),
 * called as sv_cmd_predict calls it: sv_image_decode(path), the 32x32 resize
 * (nearest, bilinear, area), the grid thumbnail (area) and the evaluation
 * transform. The input is written to a file because sv_image_decode takes a
 * path. The decoders are Debian's libpng and libjpeg-turbo, linked as they
 * are: not instrumented, so the fuzzer sees the branches of src/io/image.c only
 * and the sanitizers check the libraries' memory accesses only where they go
 * through intercepted calls (memcpy, malloc...) - the libraries are fuzzed
 * upstream (OSS-Fuzz). run.sh defines FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION,
 * which makes libpng ignore chunk CRCs (mutated inputs rarely fix them).
 * Invariant besides the sanitizers: a refused image always has a reason, a
 * decoded one a size within the limits. Built and run by tests/fuzz/run.sh.
 *
 * Regression inputs (corpus/fuzz_image/regress_*), found by this target
 * when src/io/image.c decoded with Debian's stb_image 2.27, kept for the new
 * decoders (all refused, without a sanitizer report):
 *   regress_dht_*.jpg  a DHT segment declaring more than 256 codes made
 *                      stb_image write past its Huffman tables; _after_ff_fill
 *                      has 0xFF fill bytes before SOI;
 *   regress_undefined_ac_table.jpg  a scan using a Huffman table never defined;
 *   regress_pnm_int_overflow.pgm  signed overflow in stb_image's PNM reader;
 *   regress_png_*.png  a chunk length far beyond the file (stb_image
 *                      allocated it), NULL + 0 in stb_image's PNG reader. */
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
