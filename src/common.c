/* Error formatting, aligned allocation and timing (see common.h). */
#include "shiftvit/common.h"

#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

int sv_fail(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, SV_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void *sv_alloc(size_t n, const char *what) {
    void *p = NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0 || !p) {
        fprintf(stderr, "shiftvit: out of memory allocating %zu bytes for %s\n", n, what);
        exit(2);
    }
    memset(p, 0, rounded);
    return p;
}

void sv_free(void *p) { free(p); }

double sv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t sv_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports kilobytes */
}
