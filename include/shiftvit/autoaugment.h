/* Automatic augmentation policies on the 32 x 32 x 3 uint8 training images:
 * TrivialAugment (Mueller & Hutter, "TrivialAugment: Tuning-free Yet
 * State-of-the-Art Data Augmentation", ICCV 2021: one operation per image,
 * chosen uniformly, at a uniformly drawn strength) and RandAugment (Cubuk et
 * al., "RandAugment: Practical automated data augmentation with a reduced
 * search space", NeurIPS workshops 2020: n operations per image, each chosen
 * uniformly, all at one fixed strength m).
 *
 * The 14 operations and their strength tables are torchvision 0.14's
 * (torchvision/transforms/autoaugment.py: TrivialAugmentWide and RandAugment,
 * 31 strength bins); each operation is defined by, and tested against, the PIL
 * function torchvision applies to a PIL image (tests/reference/
 * make_autoaugment_reference.py). Geometric operations sample the nearest
 * pixel and fill with black; colour operations work per channel on uint8.
 *
 * Images: 32 x 32 x 3 uint8, NHWC (row-major rows of RGB pixels), the layout of
 * sv_dataset. Code: src/io/autoaugment.c. The draws are keyed by (seed, epoch,
 * sample) in the counter-based generator (rng.h, SV_RNG_POLICY), so any world
 * size and a resumed run apply the same operations. */
#ifndef SHIFTVIT_AUTOAUGMENT_H
#define SHIFTVIT_AUTOAUGMENT_H

#include <stdint.h>

/* The operations, in torchvision's order (the index a draw picks). */
typedef enum {
    SV_AA_IDENTITY = 0,
    SV_AA_SHEAR_X,      /* PIL affine (1, v, 0, 0, 1, 0): x_in = x + v * y */
    SV_AA_SHEAR_Y,      /* PIL affine (1, 0, 0, v, 1, 0): y_in = y + v * x */
    SV_AA_TRANSLATE_X,  /* PIL affine (1, 0, t, 0, 1, 0), t = (int)v pixels */
    SV_AA_TRANSLATE_Y,  /* PIL affine (1, 0, 0, 0, 1, t), t = (int)v pixels */
    SV_AA_ROTATE,       /* PIL Image.rotate(v degrees, counter-clockwise, about the centre) */
    SV_AA_BRIGHTNESS,   /* ImageEnhance.Brightness(1 + v): blend of black and the image */
    SV_AA_COLOR,        /* ImageEnhance.Color(1 + v): blend of its grey version and the image */
    SV_AA_CONTRAST,     /* ImageEnhance.Contrast(1 + v): blend of its mean grey and the image */
    SV_AA_SHARPNESS,    /* ImageEnhance.Sharpness(1 + v): blend of its 3x3 smoothing and the image */
    SV_AA_POSTERIZE,    /* ImageOps.posterize((int)v bits): keep the top bits of each value */
    SV_AA_SOLARIZE,     /* ImageOps.solarize(v): values >= v become 255 - value */
    SV_AA_AUTOCONTRAST, /* ImageOps.autocontrast: stretch each channel to 0..255 */
    SV_AA_EQUALIZE,     /* ImageOps.equalize: flatten each channel's histogram */
    SV_AA_OPS
} sv_aa_op;

/* data.policy. Index = the key's value. */
typedef enum {
    SV_POLICY_NONE = 0,
    SV_POLICY_TRIVIAL = 1,     /* TrivialAugmentWide: 1 op, random bin, random sign */
    SV_POLICY_RANDAUGMENT = 2, /* RandAugment: n ops, bin m, random sign */
} sv_aug_policy;

#define SV_AA_BINS 31 /* strength bins 0..30, torchvision's num_magnitude_bins */

/* Applies operation op at strength v (signed, in the op's own units: shear
 * factor, pixels, degrees, enhancement v (factor 1 + v), bits, threshold) to
 * one image. in, out: 32 x 32 x 3 uint8, distinct buffers. Identity,
 * AutoContrast and Equalize ignore v. No allocation; never fails (an op index
 * out of range aborts, a programming error). */
void sv_aa_apply(uint8_t *out, const uint8_t *in, sv_aa_op op, float v);

/* The unsigned strength of op at bin (0..SV_AA_BINS-1) in the space of
 * `policy` (TRIVIAL: TrivialAugmentWide's, RANDAUGMENT: RandAugment's for 32
 * x 32 images), computed as torchvision's float32 torch.linspace tables; 0 for
 * the ops without strength. Whether the sign is drawn: sv_aa_signed. */
float sv_aa_magnitude(sv_aug_policy policy, sv_aa_op op, int bin);

/* 1 when op's strength gets a random sign (shear, translate, rotate and the
 * four enhancements), else 0. */
int sv_aa_signed(sv_aa_op op);

#define SV_AA_MAX_OPS 8 /* the largest data.randaugment_n */

/* One operation of a drawn policy. */
typedef struct {
    sv_aa_op op;
    float v; /* signed strength, as sv_aa_apply takes it */
} sv_aa_step;

/* Draws the operations for one sample, keyed by (seed, epoch, sample):
 * TRIVIAL: 1 step, op and bin uniform; RANDAUGMENT: n steps (1..SV_AA_MAX_OPS),
 * each op uniform (with replacement) at bin m; signed ops get a sign with
 * p = 1/2. Writes the steps into steps[] and returns their count (0 for NONE). */
int sv_aa_draw(sv_aa_step *steps, uint64_t seed, long epoch, long sample,
               sv_aug_policy policy, int n, int m);

/* Applies the drawn steps in order to img in place (32 x 32 x 3 uint8);
 * tmp: a scratch image of the same size. */
void sv_aa_apply_steps(uint8_t *img, uint8_t *tmp, const sv_aa_step *steps, int nsteps);

#endif
