/* Shared helpers: error reporting, aligned allocation, wall-clock time.
 *
 * Convention used across the project: functions that can fail on user input
 * return 0 on success and -1 on error, after writing a one-line message that
 * names the file, the field and the offending value into an `sv_err` buffer
 * (see SV_ERR_LEN). Programming errors (impossible shapes) abort via SV_CHECK. */
#ifndef SHIFTVIT_COMMON_H
#define SHIFTVIT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SV_ERR_LEN 512

/* Longest path the program stores (config paths, run folders, data folders). */
#define SV_PATH_LEN 1024

/* Formats a message into err (size SV_ERR_LEN) and returns -1, so a caller
 * can write `return sv_fail(err, "...", ...);`. err may be NULL. Control bytes
 * and bytes that are not UTF-8 (from file names) come out as \xHH, so the
 * message is always one line of valid UTF-8. */
int sv_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Internal invariant check: prints file:line and the expression, then aborts.
 * Only for conditions that user input cannot reach. */
#define SV_CHECK(cond)                                                          \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "shiftvit: internal error at %s:%d: %s\n",          \
                    __FILE__, __LINE__, #cond);                                 \
            abort();                                                            \
        }                                                                       \
    } while (0)

/* 64-byte aligned allocation of n bytes, zero-filled (so every page is touched
 * once, at start-up: MACHINE_NOTES.md, first-touch costs ~15 us per page).
 * Exits the process with a message naming `what` if memory is exhausted. */
void *sv_alloc(size_t n, const char *what);
void sv_free(void *p);

/* Monotonic wall-clock time in seconds. */
double sv_now(void);

/* Bytes of memory the kernel reports available for new allocations
 * (MemAvailable of /proc/meminfo), or -1 where it cannot be read. */
double sv_mem_available(void);

/* Peak resident set size of this process in bytes (from getrusage), 0 if unknown. */
size_t sv_peak_rss(void);

/* fp32 -> bf16 bits (the upper half of an IEEE fp32: 8 exponent bits, 7
 * stored mantissa bits), round to nearest even; NaN stays NaN (quiet). Used
 * by the bf16 matrix products (gemm_bf16.h) and the bf16 gradient exchange
 * (dist.h). */
static inline uint16_t sv_bf16_round(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t nearest = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (v.u >> 16) | 0x40u;
    /* a select, not a branch: the loops that round whole rows vectorise */
    return (uint16_t)((v.u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : nearest);
}

/* bf16 bits -> fp32 (exact). */
static inline float sv_bf16_to_float(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

#endif
