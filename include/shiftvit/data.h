/* CIFAR-10 binary reader, the train/val/test split, augmentation and the
 * evaluation transform (SPEC section 1).
 *
 * Images are kept in memory as uint8 NHWC (N x 32 x 32 x 3, row-major, RGB),
 * converted once from the file's planar layout (1 label byte, 1024 R, 1024 G,
 * 1024 B per 3073-byte record). Model inputs are float32 NHWC in [0, 1].
 * Code: src/io/cifar.c (reader, split, data folder), src/io/augment.c (transforms,
 * batches). */
#ifndef SHIFTVIT_DATA_H
#define SHIFTVIT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "shiftvit/autoaugment.h" /* sv_aug_policy */
#include "shiftvit/common.h"      /* SV_PATH_LEN */

#define SV_CIFAR_SIDE 32
#define SV_CIFAR_PIXELS (SV_CIFAR_SIDE * SV_CIFAR_SIDE * 3)
#define SV_CIFAR_RECORD (1 + SV_CIFAR_PIXELS) /* 3073 bytes */
#define SV_CIFAR_TRAIN_FILES 5
#define SV_CIFAR_RECORDS_PER_FILE 10000

typedef struct {
    long count;
    uint8_t *images; /* count x 32 x 32 x 3, NHWC uint8 */
    uint8_t *labels; /* count, values 0..9 */
} sv_dataset;

/* Picks the CIFAR-10 directory, first found wins (issue 3): cli (--data-dir),
 * cfg_dir (data.dir), $CIFAR10_DIR, data/cifar-10-batches-bin,
 * ../shared/data/cifar-10-batches-bin. A candidate counts when it holds
 * data_batch_1.bin. Writes the choice into out (SV_PATH_LEN). On failure
 * returns -1 with a message listing the places tried and pointing at
 * scripts/get-cifar10.sh. A non-empty cli or cfg_dir that lacks the files is an
 * error naming it (no silent fallback). */
int sv_find_data_dir(const char *cli, const char *cfg_dir, char *out, char *err);

/* Checks one .bin file without loading it: exists, is a regular file, is
 * readable, non-empty, size a whole number of 3073-byte records, every label
 * byte 0..9. The error names the file and, for a bad label, the record index
 * and value; for a bad size, the size and the remainder. Returns the record
 * count in *records. */
int sv_cifar_check_file(const char *path, long *records, char *err);

/* Loads `count` records starting at global record `first` of the concatenation
 * of the given files (each validated with sv_cifar_check_file first). Fails
 * with a message if the files hold fewer than first + count records. */
int sv_cifar_load(sv_dataset *ds, const char *const *paths, int npaths,
                  long first, long count, char *err);

/* The SPEC split: train = first train_size records of data_batch_1..5, val =
 * the next val_size, test = first test_size (0 = all) of test_batch.bin.
 * train_size + val_size must not exceed the records present. */
int sv_cifar_load_splits(const char *dir, long train_size, long val_size,
                         long test_size, sv_dataset *train, sv_dataset *val,
                         sv_dataset *test, char *err);

void sv_dataset_free(sv_dataset *ds);

/* Bilinear resize with TensorFlow 2 / PyTorch align_corners=False semantics:
 * src = (dst + 0.5) * in / out - 0.5, clamped below at 0; i0 = floor(src),
 * i1 = min(i0 + 1, in - 1); no antialiasing.
 * in: ih x iw x C float NHWC (one image); out: oh x ow x C. */
void sv_resize_bilinear(float *out, int oh, int ow, const float *in, int ih,
                        int iw, int C);

/* Training augmentation of one image (SPEC section 1 steps 1-4): resize 32 ->
 * resize_size, crop image_size at (oy, ox), flip horizontally if flip != 0,
 * scale by 1/255. img: 32x32x3 uint8; out: image_size^2 x 3 float. */
void sv_augment_image(float *out, const uint8_t *img, int resize_size,
                      int image_size, int oy, int ox, int flip);

/* Evaluation transform: resize 32 -> resize_size, then resize_size ->
 * image_size, then 1/255. img: 32 x 32 x 3 uint8 (predict first resizes a
 * photo to 32x32, as SPEC section 1 says). out: image_size^2 x 3 float. */
void sv_eval_image(float *out, const uint8_t *img, int resize_size, int image_size);

/* Mirrors n images horizontally in place: x is n x S x S x 3 float NHWC;
 * column j and column S-1-j of every row swap. Applying it twice restores x. */
void sv_flip_images(float *x, int n, int S);

/* Moves n images by (d, d) pixels with the border filled by reflection
 * (numpy's / PyTorch's "reflect" padding, the edge pixel not repeated):
 * dst[b][i][j] = src[b][r(i + d)][r(j + d)], r(k) = -k for k < 0 and
 * 2(S-1) - k for k > S-1. For d = -1 this is airbench's view
 * pad(x, 1, reflect)[0:S, 0:S]. src, dst: n x S x S x 3 float NHWC, distinct;
 * |d| < S (checked: SV_CHECK). */
void sv_translate_images_reflect(float *dst, const float *src, int n, int S, int d);

/* Crop offsets and flip for one sample, keyed by (seed, epoch, sample index):
 * oy, ox uniform in [0, resize_size - image_size], flip with p = 0.5. */
void sv_draw_augment(uint64_t seed, long epoch, long sample, int resize_size,
                     int image_size, int *oy, int *ox, int *flip);

/* data.flip: how the training flip of an image is chosen per epoch. */
typedef enum { SV_FLIP_RANDOM = 0, SV_FLIP_ALTERNATE = 1 } sv_flip_mode;

/* The horizontal flip of sample `sample` in epoch `epoch` (1 flip, 0 not):
 * SV_FLIP_RANDOM: an independent draw with p = 1/2 keyed by (seed, epoch,
 * sample) (the flip of sv_draw_augment); SV_FLIP_ALTERNATE: epoch 0's draw,
 * inverted on odd epochs (airbench's alternating flip,
 * KellerJordan/cifar10-airbench: each image flipped at random in the first
 * epoch, then on alternate epochs relative to that). Stateless, so any rank
 * and a resumed run draw the same. */
int sv_draw_flip(uint64_t seed, long epoch, long sample, sv_flip_mode mode);

/* The extra augmentations of data.translate and data.cutout for one sample,
 * drawn by sv_draw_extra and applied by sv_translate_cutout. */
typedef struct {
    int dy, dx;       /* translation in pixels, each in [-translate, translate] */
    int cy, cx;       /* cutout box centre, each in [0, image_size) */
    int cutout;       /* cutout box side in pixels (0 = none) */
} sv_extra_augment;

/* Draws translation and cutout for one sample, keyed by (seed, epoch, sample)
 * like sv_draw_augment, with their own purposes (rng.h) so that turning them
 * on leaves the crop and flip draws unchanged. translate = 0 gives dy = dx = 0
 * without drawing; cutout = 0 gives no box. */
sv_extra_augment sv_draw_extra(uint64_t seed, long epoch, long sample, int translate,
                               int cutout, int image_size);

/* Applies e to one image in place. img: S x S x 3 float NHWC.
 * Translation (the "pad by t with zeros, then crop S at a random offset" of
 * CIFAR training since Zagoruyko & Komodakis, "Wide Residual Networks", 2016):
 * out(y, x) = in(y - dy, x - dx) where that lies inside the image, else 0.
 * Then cutout (DeVries & Taylor, "Improved Regularization of Convolutional
 * Neural Networks with Cutout", 2017): the box of side e->cutout whose top-left
 * corner is (cy - cutout / 2, cx - cutout / 2) is set to 0, clipped to the
 * image (a box centred near a border erases less). */
void sv_translate_cutout(float *img, int S, const sv_extra_augment *e);

/* Fills perm[0..n) with the epoch's permutation of 0..n-1 (Fisher-Yates driven by
 * the counter-based generator keyed by (seed, epoch)), identical on every rank. */
void sv_epoch_permutation(long *perm, long n, uint64_t seed, long epoch);

/* How sv_make_batch transforms the images: the config's [data] keys and
 * train.seed, filled by the trainer and the commands (settings.h
 * sv_batch_settings_from); the data code knows nothing of the config. */
typedef struct {
    int image_size;  /* model input side after the crop, pixels (data.image_size) */
    int resize_size; /* side of the bilinear resize before the crop */
    int augment;     /* 1: random crop and flip in training */
    int translate;   /* random translation up to N pixels, zero fill (0 = off) */
    int cutout;      /* side of the cutout box in pixels (0 = off) */
    sv_flip_mode flip; /* data.flip: random (each epoch) or alternate */
    sv_aug_policy policy; /* data.policy, applied before the crop (autoaugment.h) */
    int policy_n, policy_m; /* data.randaugment_n and _m: ops per image, strength bin */
    uint64_t seed;   /* the draws are keyed by (seed, epoch, sample) */
} sv_batch_settings;

/* Builds a batch: for i in [0, n) takes sample idx[i] of ds, writes its labels
 * and the transformed image into x (n x image_size x image_size x 3 float).
 * train != 0: augmentation (when b.augment: b.policy's operations on the uint8
 * image (sv_aa_draw, sv_aa_apply_steps), crop and flip (sv_draw_flip with
 * b.flip), then translation and cutout when set) with draws keyed by (b.seed, epoch, idx[i]); train ==
 * 0: evaluation transform. OpenMP-parallel over images. */
void sv_make_batch(float *x, int *labels, const sv_dataset *ds, const long *idx,
                   int n, sv_batch_settings b, long epoch, int train);

#endif
