/* Helpers shared by the cmocka tests. */
#ifndef SHIFTVIT_TEST_UTIL_H
#define SHIFTVIT_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

/* Path of the shared data folder beside the project (CI lays it at ../shared). */
#define SV_TEST_SHARED "../shared"
#define SV_TEST_CIFAR SV_TEST_SHARED "/data/cifar-10-batches-bin"

/* Fails the test with both values when |a - b| > atol + rtol * |b|. */
#define assert_close(a, b, rtol, atol)                                          \
    do {                                                                        \
        double a_ = (a), b_ = (b);                                              \
        if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_)))                     \
            fail_msg("%s = %.9g, expected %s = %.9g (rtol %g, atol %g)", #a,   \
                     a_, #b, b_, (double)(rtol), (double)(atol));               \
    } while (0)

#endif
