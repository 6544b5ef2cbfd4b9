/* Counter-based random numbers (SPEC section 4).
 *
 * Every draw is a pure function of (seed, purpose, ids..., counter), so a value
 * does not depend on which rank or thread computes it, nor on the order of
 * computation: P = 1, 2 or 4 ranks see the same crops, flips and masks.
 * The mixer is SplitMix64's finaliser (Steele, Lea & Flood, "Fast splittable
 * pseudorandom number generators", OOPSLA 2014). */
#ifndef SHIFTVIT_RNG_H
#define SHIFTVIT_RNG_H

#include <stdint.h>

enum sv_rng_purpose {
    SV_RNG_INIT = 1,      /* weight initialisation: ids = (tensor index) */
    SV_RNG_PERMUTE = 2,   /* epoch permutation: ids = (epoch) */
    SV_RNG_CROP = 3,      /* crop offsets: ids = (epoch, sample) */
    SV_RNG_FLIP = 4,      /* horizontal flip: ids = (epoch, sample) */
    SV_RNG_DROPOUT = 5,   /* dropout: ids = (epoch, sample, layer) */
    SV_RNG_DROPPATH = 6,  /* drop path: ids = (epoch, sample, layer) */
    SV_RNG_TRANSLATE = 7, /* random translation: ids = (epoch, sample) */
    SV_RNG_CUTOUT = 8,    /* cutout box centre: ids = (epoch, sample) */
    SV_RNG_POLICY = 9,    /* TrivialAugment / RandAugment ops: ids = (epoch, sample) */
};

static inline uint64_t sv_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Key for a stream of draws: hashes the tuple (seed, purpose, a, b, c). */
static inline uint64_t sv_rng_key(uint64_t seed, uint64_t purpose, uint64_t a,
                                  uint64_t b, uint64_t c) {
    uint64_t k = sv_mix64(seed ^ 0x5348494654564954ull);
    k = sv_mix64(k ^ purpose);
    k = sv_mix64(k ^ a);
    k = sv_mix64(k ^ b);
    return sv_mix64(k ^ c);
}

/* Raw 64 random bits: draw number `counter` of stream `key`. */
static inline uint64_t sv_rng_bits(uint64_t key, uint64_t counter) {
    return sv_mix64(key + counter * 0xD1B54A32D192ED03ull);
}

/* Uniform float in [0, 1) with 24 random bits. */
static inline float sv_rng_uniform(uint64_t key, uint64_t counter) {
    return (float)(sv_rng_bits(key, counter) >> 40) * (1.0f / 16777216.0f);
}

/* 32-bit integer mixer "lowbias32" (C. Wellons, hash-prospector, 2018):
 * full avalanche, two 32-bit multiplies. */
static inline uint32_t sv_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return x ^ (x >> 16);
}

/* 24 random bits for element `counter` of stream `key`, for the per-element
 * dropout masks (tens of millions of draws per step). Two rounds of sv_mix32
 * keyed by the two halves of the 64-bit key: a vector unit holds 16 of these
 * 32-bit lanes against 8 of SplitMix64's 64-bit ones, whose three 64-bit
 * multiplies per draw made the RNG most of the GELU kernel's time. */
static inline uint32_t sv_rng_bits24(uint64_t key, uint32_t counter) {
    uint32_t x = sv_mix32((uint32_t)(key >> 32) + counter * 0x9E3779B9u);
    return sv_mix32(x ^ (uint32_t)key) >> 8;
}

/* Keep threshold of a dropout rate p in [0, 1): an element is kept iff
 * sv_rng_bits24(...) >= sv_rng_threshold24(p), i.e. iff the uniform
 * bits / 2^24 >= p, exactly (p * 2^24 is exact in float). */
static inline uint32_t sv_rng_threshold24(float p) {
    float v = p * 16777216.0f;
    uint32_t t = (uint32_t)v;
    return t + ((float)t < v);
}

/* Uniform integer in [0, n) (n > 0), by 64x64->128 multiply (Lemire). */
static inline uint64_t sv_rng_below(uint64_t key, uint64_t counter, uint64_t n) {
    return (uint64_t)(((unsigned __int128)sv_rng_bits(key, counter) * n) >> 64);
}

#endif
