/* TrivialAugment and RandAugment on uint8 images (autoaugment.h). Each
 * operation reproduces the PIL 9 function torchvision calls for it, to the
 * last bit: the same arithmetic types (float blends, 16.16 fixed-point nearest
 * sampling, double look-up tables) in the same order. This file is compiled
 * with -ffp-contract=off (Makefile) because a fused multiply-add would round
 * differently from PIL's separate multiply and add. */
#include "shiftvit/autoaugment.h"

#include <math.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/data.h" /* SV_CIFAR_SIDE, SV_CIFAR_PIXELS */
#include "shiftvit/rng.h"

#define S SV_CIFAR_SIDE
#define NPIX (S * S)

/* ------------------------------------------------------------- geometry */

/* floor(v * 65536 + 0.5) as an int: PIL's 16.16 fixed-point coefficient. */
static int fix16(double v) {
    double t = v * 65536.0 + 0.5;
    return t < 0.0 ? (int)floor(t) : (int)t;
}

/* floor(v / 65536) for any sign (a right shift of a negative int is
 * implementation-defined in C). */
static int floor16(int v) { return v >= 0 ? v >> 16 : -((-v + 65535) >> 16); }

/* Nearest-pixel affine warp with black fill, PIL's Image.transform(AFFINE,
 * data = a, NEAREST): output pixel (x, y) shows input pixel
 * floor(a0 (x + .5) + a1 (y + .5) + a2), floor(a3 (x + .5) + a4 (y + .5) + a5)
 * (column, row), evaluated as PIL does for images this small: 16.16 fixed
 * point, stepping by a0, a3 along a row and by a1, a4 from row to row. */
static void affine_nearest(uint8_t *out, const uint8_t *in, const double a[6]) {
    const int a0 = fix16(a[0]), a1 = fix16(a[1]), a3 = fix16(a[3]), a4 = fix16(a[4]);
    int row_x = fix16(a[2] + a[0] * 0.5 + a[1] * 0.5);
    int row_y = fix16(a[5] + a[3] * 0.5 + a[4] * 0.5);
    memset(out, 0, SV_CIFAR_PIXELS);
    for (int y = 0; y < S; y++) {
        int xx = row_x, yy = row_y;
        for (int x = 0; x < S; x++) {
            const int xi = floor16(xx), yi = floor16(yy);
            if (xi >= 0 && xi < S && yi >= 0 && yi < S)
                memcpy(out + 3 * (y * S + x), in + 3 * (yi * S + xi), 3);
            xx += a0;
            yy += a3;
        }
        row_x += a1;
        row_y += a4;
    }
}

/* Exact quarter turns (PIL's Transpose.ROTATE_90 / ROTATE_270, which
 * Image.rotate uses for 90 and 270 degrees on square images). */
static void rotate_quarter(uint8_t *out, const uint8_t *in, int counter_clockwise) {
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const int sy = counter_clockwise ? x : S - 1 - x;
            const int sx = counter_clockwise ? S - 1 - y : y;
            memcpy(out + 3 * (y * S + x), in + 3 * (sy * S + sx), 3);
        }
}

/* Image.rotate(deg) without expand: counter-clockwise about (16, 16), the
 * inverse rotation matrix PIL builds, nearest pixel, black fill. */
static void rotate(uint8_t *out, const uint8_t *in, double deg) {
    double d = fmod(deg, 360.0); /* Python's deg % 360: in [0, 360) */
    if (d < 0.0) d += 360.0;
    if (d == 0.0) {
        memcpy(out, in, SV_CIFAR_PIXELS);
        return;
    }
    if (d == 90.0 || d == 270.0) {
        rotate_quarter(out, in, d == 90.0);
        return;
    }
    if (d == 180.0) {
        for (int p = 0; p < NPIX; p++) memcpy(out + 3 * p, in + 3 * (NPIX - 1 - p), 3);
        return;
    }
    const double r = -(d * (M_PI / 180.0));
    const double c = cos(r), s = sin(r), half = S / 2.0;
    double a[6] = {c, s, 0.0, -s, c, 0.0};
    a[2] = c * -half + s * -half + 0.0 + half;
    a[5] = -s * -half + c * -half + 0.0 + half;
    affine_nearest(out, in, a);
}

/* ----------------------------------------------------------------- colour */

/* PIL's Image.blend(degenerate, image, alpha) on uint8: inside [0, 1] the
 * float result is truncated, outside it is clipped to 0..255 first. */
static void blend(uint8_t *out, const uint8_t *degenerate, const uint8_t *in, float alpha) {
    const int inside = alpha >= 0.0f && alpha <= 1.0f;
    for (int i = 0; i < SV_CIFAR_PIXELS; i++) {
        const float t = (float)degenerate[i] + alpha * (float)((int)in[i] - (int)degenerate[i]);
        if (inside)
            out[i] = (uint8_t)t;
        else
            out[i] = t <= 0.0f ? 0 : t >= 255.0f ? 255 : (uint8_t)t;
    }
}

/* ITU-R 601-2 luma as PIL's convert("L") computes it (16-bit fixed point,
 * rounded). */
static uint8_t luma(const uint8_t *p) {
    return (uint8_t)(((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u +
                      (uint32_t)p[2] * 7471u + 0x8000u) >> 16);
}

/* ImageFilter.SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, sum 13) as PIL runs
 * it: float32 weights k / 13, rows y+1, y, y-1 summed left to right, rounded;
 * the outermost rows and columns are copied unchanged. */
static void smooth(uint8_t *out, const uint8_t *in) {
    const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
    memcpy(out, in, SV_CIFAR_PIXELS);
    for (int y = 1; y < S - 1; y++)
        for (int x = 1; x < S - 1; x++)
            for (int c = 0; c < 3; c++) {
                float ss = 0.0f;
                for (int dy = 1; dy >= -1; dy--) {
                    const uint8_t *r = in + 3 * ((y + dy) * S + x) + c;
                    const float mid = dy == 0 ? k5 : k1;
                    ss += (float)r[-3] * k1 + (float)r[0] * mid + (float)r[3] * k1;
                }
                out[3 * (y * S + x) + c] =
                    ss <= 0.0f ? 0 : ss >= 255.0f ? 255 : (uint8_t)(ss + 0.5f);
            }
}

/* The ImageEnhance degenerate image of op (the image the blend starts from). */
static void degenerate_of(uint8_t *deg, const uint8_t *in, sv_aa_op op) {
    switch (op) {
    case SV_AA_BRIGHTNESS:
        memset(deg, 0, SV_CIFAR_PIXELS);
        break;
    case SV_AA_COLOR:
        for (int p = 0; p < NPIX; p++) memset(deg + 3 * p, luma(in + 3 * p), 3);
        break;
    case SV_AA_CONTRAST: { /* int(mean of the luma + 0.5), as ImageStat gives it */
        double sum = 0.0;
        for (int p = 0; p < NPIX; p++) sum += luma(in + 3 * p);
        memset(deg, (int)(sum / NPIX + 0.5), SV_CIFAR_PIXELS);
        break;
    }
    default: /* SV_AA_SHARPNESS */
        smooth(deg, in);
        break;
    }
}

/* Applies one 256-entry look-up table per channel. */
static void apply_luts(uint8_t *out, const uint8_t *in, const uint8_t lut[3][256]) {
    for (int p = 0; p < NPIX; p++)
        for (int c = 0; c < 3; c++) out[3 * p + c] = lut[c][in[3 * p + c]];
}

static void histograms(int h[3][256], const uint8_t *in) {
    memset(h, 0, 3 * 256 * sizeof(int));
    for (int p = 0; p < NPIX; p++)
        for (int c = 0; c < 3; c++) h[c][in[3 * p + c]]++;
}

/* ImageOps.autocontrast(cutoff = 0): each channel's [lo, hi] stretched to
 * [0, 255] by int(i * 255 / (hi - lo) - lo * 255 / (hi - lo)) in double; a
 * channel with one value is left as it is. */
static void autocontrast(uint8_t *out, const uint8_t *in) {
    int h[3][256];
    uint8_t lut[3][256];
    histograms(h, in);
    for (int c = 0; c < 3; c++) {
        int lo = 0, hi = 255;
        while (lo < 255 && !h[c][lo]) lo++;
        while (hi > 0 && !h[c][hi]) hi--;
        for (int i = 0; i < 256; i++) lut[c][i] = (uint8_t)i;
        if (hi <= lo) continue;
        const double scale = 255.0 / (hi - lo), offset = -lo * scale;
        for (int i = 0; i < 256; i++) {
            const int v = (int)(i * scale + offset);
            lut[c][i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    apply_luts(out, in, lut);
}

/* ImageOps.equalize: per channel, step = (pixels - count of the top value) /
 * 255 (integer division), value i maps to (step / 2 + pixels below i) / step,
 * clipped to 255; channels with one value or step 0 stay as they are. */
static void equalize(uint8_t *out, const uint8_t *in) {
    int h[3][256];
    uint8_t lut[3][256];
    histograms(h, in);
    for (int c = 0; c < 3; c++) {
        int used = 0, last = 0;
        for (int i = 0; i < 256; i++)
            if (h[c][i]) used++, last = i;
        const int step = (NPIX - h[c][last]) / 255;
        for (int i = 0; i < 256; i++) lut[c][i] = (uint8_t)i;
        if (used <= 1 || step == 0) continue;
        for (int i = 0, n = step / 2; i < 256; i++) {
            const int v = n / step;
            lut[c][i] = (uint8_t)(v > 255 ? 255 : v);
            n += h[c][i];
        }
    }
    apply_luts(out, in, lut);
}

/* ImageOps.posterize(bits) and ImageOps.solarize(threshold): one table. */
static void posterize_or_solarize(uint8_t *out, const uint8_t *in, sv_aa_op op, float v) {
    uint8_t lut[3][256];
    const int bits = (int)v;
    const int mask = ~((1 << (8 - (bits < 0 ? 0 : bits > 8 ? 8 : bits))) - 1);
    for (int i = 0; i < 256; i++) {
        const int o = op == SV_AA_POSTERIZE ? (i & mask) : ((float)i < v ? i : 255 - i);
        lut[0][i] = lut[1][i] = lut[2][i] = (uint8_t)o;
    }
    apply_luts(out, in, lut);
}

/* ------------------------------------------------------------ operations */

void sv_aa_apply(uint8_t *out, const uint8_t *in, sv_aa_op op, float v) {
    const int t = (int)v; /* whole pixels, truncated like torchvision's int() */
    switch (op) {
    case SV_AA_IDENTITY:
        memcpy(out, in, SV_CIFAR_PIXELS);
        break;
    case SV_AA_SHEAR_X:
        affine_nearest(out, in, (const double[6]){1.0, v, 0.0, 0.0, 1.0, 0.0});
        break;
    case SV_AA_SHEAR_Y:
        affine_nearest(out, in, (const double[6]){1.0, 0.0, 0.0, v, 1.0, 0.0});
        break;
    case SV_AA_TRANSLATE_X:
        affine_nearest(out, in, (const double[6]){1.0, 0.0, t, 0.0, 1.0, 0.0});
        break;
    case SV_AA_TRANSLATE_Y:
        affine_nearest(out, in, (const double[6]){1.0, 0.0, 0.0, 0.0, 1.0, t});
        break;
    case SV_AA_ROTATE:
        rotate(out, in, v);
        break;
    case SV_AA_BRIGHTNESS:
    case SV_AA_COLOR:
    case SV_AA_CONTRAST:
    case SV_AA_SHARPNESS: {
        uint8_t deg[SV_CIFAR_PIXELS];
        degenerate_of(deg, in, op);
        blend(out, deg, in, (float)(1.0 + (double)v));
        break;
    }
    case SV_AA_POSTERIZE:
    case SV_AA_SOLARIZE:
        posterize_or_solarize(out, in, op, v);
        break;
    case SV_AA_AUTOCONTRAST:
        autocontrast(out, in);
        break;
    case SV_AA_EQUALIZE:
        equalize(out, in);
        break;
    default:
        SV_CHECK(0 && "autoaugment op out of range");
    }
}

/* ---------------------------------------------------------- strength tables */

/* Element i of torch.linspace(start, end, 31) in float32: torch computes the
 * first half from the start and the second half back from the end. */
static float linspace31(float start, float end, int i) {
    const float step = (end - start) / (float)(SV_AA_BINS - 1);
    return i < SV_AA_BINS / 2 ? start + step * (float)i
                              : end - step * (float)(SV_AA_BINS - 1 - i);
}

float sv_aa_magnitude(sv_aug_policy policy, sv_aa_op op, int bin) {
    SV_CHECK(bin >= 0 && bin < SV_AA_BINS);
    const int wide = policy == SV_POLICY_TRIVIAL;
    switch (op) {
    case SV_AA_SHEAR_X:
    case SV_AA_SHEAR_Y:
        return linspace31(0.0f, wide ? 0.99f : 0.3f, bin);
    case SV_AA_TRANSLATE_X:
    case SV_AA_TRANSLATE_Y: /* RandAugment: 150/331 of the side, as in the paper's ImageNet setting */
        return linspace31(0.0f, wide ? 32.0f : (float)(150.0 / 331.0 * S), bin);
    case SV_AA_ROTATE:
        return linspace31(0.0f, wide ? 135.0f : 30.0f, bin);
    case SV_AA_BRIGHTNESS:
    case SV_AA_COLOR:
    case SV_AA_CONTRAST:
    case SV_AA_SHARPNESS:
        return linspace31(0.0f, wide ? 0.99f : 0.9f, bin);
    case SV_AA_POSTERIZE: /* 8 - round(bin / (30 / levels)), levels 6 (wide) or 4 */
        return (float)(8 - (int)nearbyintf((float)bin / (wide ? 5.0f : 7.5f)));
    case SV_AA_SOLARIZE:
        return linspace31(255.0f, 0.0f, bin);
    default:
        return 0.0f;
    }
}

int sv_aa_signed(sv_aa_op op) { return op >= SV_AA_SHEAR_X && op <= SV_AA_SHARPNESS; }

/* ------------------------------------------------------------------ draws */

int sv_aa_draw(sv_aa_step *steps, uint64_t seed, long epoch, long sample,
               sv_aug_policy policy, int n, int m) {
    if (policy == SV_POLICY_NONE) return 0;
    const int count = policy == SV_POLICY_TRIVIAL ? 1 : n;
    SV_CHECK(count >= 1 && count <= SV_AA_MAX_OPS && m >= 0 && m < SV_AA_BINS);
    const uint64_t key = sv_rng_key(seed, SV_RNG_POLICY, (uint64_t)epoch, (uint64_t)sample, 0);
    for (int k = 0; k < count; k++) {
        const uint64_t c = 3 * (uint64_t)k;
        const sv_aa_op op = (sv_aa_op)sv_rng_below(key, c, SV_AA_OPS);
        const int bin = policy == SV_POLICY_TRIVIAL ? (int)sv_rng_below(key, c + 1, SV_AA_BINS) : m;
        float v = sv_aa_magnitude(policy, op, bin);
        if (sv_aa_signed(op) && sv_rng_below(key, c + 2, 2)) v = -v;
        steps[k] = (sv_aa_step){op, v};
    }
    return count;
}

void sv_aa_apply_steps(uint8_t *img, uint8_t *tmp, const sv_aa_step *steps, int nsteps) {
    for (int k = 0; k < nsteps; k++) {
        sv_aa_apply(tmp, img, steps[k].op, steps[k].v);
        memcpy(img, tmp, SV_CIFAR_PIXELS);
    }
}
