/* Augmentation, the evaluation transform and the batches (see data.h, SPEC
 * section 1; randomness per SPEC section 4). The CIFAR-10 reader is cifar.c. */
#include "shiftvit/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/rng.h"

/* Widest intermediate row sv_eval_image keeps on the stack (2 rows x 3 channels
 * x 1024 floats = 24 KiB); wider resize_size falls back to one heap buffer per
 * call. */
#define EVAL_STACK_WIDTH 1024

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

static inline int reflect_index(int k, int S) { return k < 0 ? -k : (k > S - 1 ? 2 * (S - 1) - k : k); }

void sv_translate_images_reflect(float *dst, const float *src, int n, int S, int d) {
    SV_CHECK(d > -S && d < S && dst != src);
#pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)n * S; r++) {
        long b = r / S;
        int i = (int)(r % S);
        const float *srow = src + ((size_t)b * S + reflect_index(i + d, S)) * S * 3;
        float *drow = dst + (size_t)r * S * 3;
        for (int j = 0; j < S; j++) {
            const float *p = srow + 3 * reflect_index(j + d, S);
            drow[3 * j] = p[0];
            drow[3 * j + 1] = p[1];
            drow[3 * j + 2] = p[2];
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
    *flip = sv_draw_flip(seed, epoch, sample, SV_FLIP_RANDOM);
}

int sv_draw_flip(uint64_t seed, long epoch, long sample, sv_flip_mode mode) {
    /* alternate: the draw of epoch 0, the same key as random's epoch 0 */
    long key_epoch = mode == SV_FLIP_ALTERNATE ? 0 : epoch;
    uint64_t kf = sv_rng_key(seed, SV_RNG_FLIP, (uint64_t)key_epoch, (uint64_t)sample, 0);
    int flip = sv_rng_uniform(kf, 0) < 0.5f;
    return mode == SV_FLIP_ALTERNATE ? flip ^ (int)(epoch & 1) : flip;
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
                   sv_batch_settings b, long epoch, int train) {
    const int S = b.image_size, R = b.resize_size;
    const size_t per = (size_t)S * S * 3;
    const int augment = train && b.augment;
    const uint64_t seed = b.seed;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const long s = idx[i];
        SV_CHECK(s >= 0 && s < ds->count);
        const uint8_t *img = ds->images + (size_t)s * SV_CIFAR_PIXELS;
        if (labels) labels[i] = ds->labels[s];
        if (augment) {
            uint8_t policy_img[SV_CIFAR_PIXELS], policy_tmp[SV_CIFAR_PIXELS];
            if (b.policy != SV_POLICY_NONE) {
                sv_aa_step steps[SV_AA_MAX_OPS];
                const int ns = sv_aa_draw(steps, seed, epoch, s, b.policy, b.policy_n, b.policy_m);
                memcpy(policy_img, img, SV_CIFAR_PIXELS);
                sv_aa_apply_steps(policy_img, policy_tmp, steps, ns);
                img = policy_img;
            }
            int oy, ox, flip;
            sv_draw_augment(seed, epoch, s, R, S, &oy, &ox, &flip);
            if (b.flip != SV_FLIP_RANDOM) flip = sv_draw_flip(seed, epoch, s, b.flip);
            sv_augment_image(x + (size_t)i * per, img, R, S, oy, ox, flip);
            if (b.translate > 0 || b.cutout > 0) {
                sv_extra_augment e = sv_draw_extra(seed, epoch, s, b.translate, b.cutout, S);
                sv_translate_cutout(x + (size_t)i * per, S, &e);
            }
        } else {
            sv_eval_image(x + (size_t)i * per, img, R, S);
        }
    }
}
