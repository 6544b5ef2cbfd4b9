/* Decoding and resizing of the user's photos for `shiftvit predict`. Pixels
 * are RGB uint8, row-major, interleaved: h x w x 3 (HWC). */
#ifndef SHIFTVIT_IMAGE_H
#define SHIFTVIT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Images whose header declares more than this are refused before decoding,
 * so memory stays bounded whatever the file claims. */
#define SV_IMAGE_MAX_SIDE 16384
#define SV_IMAGE_MAX_PIXELS (64L * 1024 * 1024)

/* Decodes the JPEG (libjpeg-turbo) or PNG (libpng) file at `path`, told by
 * its first bytes, to RGB uint8 (*h x *w x 3) as PIL's convert("RGB") does:
 * gray replicated, alpha dropped (not composited), 16-bit to the high byte,
 * CMYK converted. The declared size is checked before any pixel is
 * allocated; truncated files are refused. Returns the pixels (free with
 * sv_image_free) or NULL with a one-line, user-facing reason in why (never
 * empty). */
uint8_t *sv_image_decode(const char *path, int *w, int *h, char *why, size_t whylen);
void sv_image_free(uint8_t *px);

/* 1 when w x h exceeds SV_IMAGE_MAX_SIDE per side or SV_IMAGE_MAX_PIXELS. */
int sv_image_too_big(unsigned long w, unsigned long h);

/* Resize RGB uint8 in (ih x iw x 3) to out (oh x ow x 3), TensorFlow 2's
 * tf.image.resize conventions (half-pixel centres):
 *   nearest:  src = floor((dst + 0.5) * in / out)  (the Keras example's Resizing)
 *   bilinear: linear interpolation of the 2x2 neighbours, no antialiasing
 *   area:     the mean of the source pixels each output pixel covers (fractional
 *             weights); returns -1 when its row buffer cannot be allocated. */
void sv_image_resize_nearest(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw);
void sv_image_resize_bilinear(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw);
int sv_image_resize_area(uint8_t *out, int oh, int ow, const uint8_t *in, int ih, int iw);

#endif
