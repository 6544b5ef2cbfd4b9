/* The picture `shiftvit predict --grid FILE` draws: up to SV_GRID_MAX
 * thumbnails (SV_GRID_THUMB x SV_GRID_THUMB RGB uint8, HWC) in rows of three,
 * each titled with its predicted class and captioned with its file name. */
#ifndef SHIFTVIT_GRID_H
#define SHIFTVIT_GRID_H

#include <stddef.h>
#include <stdint.h>

#define SV_GRID_MAX 9
#define SV_GRID_THUMB 128

typedef struct {
    uint8_t thumb[SV_GRID_THUMB * SV_GRID_THUMB * 3];
    char title[64];
    char name[64];
} sv_grid_cell;

/* Writes cells[0..n) to path: JPEG (quality 92) when the name ends in .jpg or
 * .jpeg, PNG otherwise. Returns 0, or -1 with a reason in why. */
int sv_grid_write(const char *path, const sv_grid_cell *cells, int n, char *why, size_t whylen);

#endif
