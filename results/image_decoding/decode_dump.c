/* Measurement driver for results/image_decoding.md: decodes each FILE with
 * the sv_image_decode it is linked with (src/image.c, or the stb_image
 * version of an older commit), prints one line per file (accepted WxH, or
 * refused and why) and writes the pixels to OUTDIR/<name>.rgb. With -t N,
 * also the median of N decode times per file. Built by measure.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shiftvit/image.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int runs = 0, a = 1;
    if (argc > 2 && !strcmp(argv[1], "-t")) runs = atoi(argv[2]), a = 3;
    if (argc - a < 2) {
        fprintf(stderr, "usage: decode_dump [-t RUNS] OUTDIR FILE...\n");
        return 2;
    }
    const char *dir = argv[a++];
    for (; a < argc; a++) {
        int w = 0, h = 0;
        char why[512] = "";
        uint8_t *px = sv_image_decode(argv[a], &w, &h, why, sizeof why);
        const char *base = strrchr(argv[a], '/') ? strrchr(argv[a], '/') + 1 : argv[a];
        if (!px) {
            printf("%s\trefused\t%s\n", base, why);
            continue;
        }
        char out[4096];
        snprintf(out, sizeof out, "%s/%s.rgb", dir, base);
        FILE *f = fopen(out, "wb");
        if (!f || fwrite(px, 3, (size_t)w * h, f) != (size_t)w * h || fclose(f)) return 1;
        sv_image_free(px);
        printf("%s\taccepted\t%dx%d", base, w, h);
        if (runs > 0) {
            double *t = malloc(runs * sizeof *t);
            for (int r = 0; r < runs; r++) {
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                px = sv_image_decode(argv[a], &w, &h, why, sizeof why);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                sv_image_free(px);
                t[r] = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
            }
            qsort(t, runs, sizeof *t, cmp);
            printf("\t%.3f ms", t[runs / 2]);
            free(t);
        }
        printf("\n");
    }
    return 0;
}
