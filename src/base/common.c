/* Error formatting, aligned allocation and timing (see common.h). */
#include "shiftvit/common.h"
#include "shiftvit/text.h"

#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* Copies msg into err (SV_ERR_LEN bytes) with control bytes and bytes that
 * are not UTF-8 written as \xHH: a message naming a file whose name holds a
 * newline or invalid UTF-8 stays one valid line (issue 14, section 5). */
static void escape_message(char *err, const char *msg) {
    size_t o = 0, len = strlen(msg);
    for (size_t i = 0; i < len && o + 5 < SV_ERR_LEN;) {
        unsigned char c = (unsigned char)msg[i];
        size_t m = c >= 0x80 ? sv_utf8_seq(msg + i, len - i) : (c >= 0x20 && c != 0x7f);
        if (m && o + m < SV_ERR_LEN - 1) {
            memcpy(err + o, msg + i, m);
            o += m;
            i += m;
        } else if (m) {
            break;
        } else {
            o += (size_t)snprintf(err + o, SV_ERR_LEN - o, "\\x%02x", c);
            i++;
        }
    }
    err[o] = '\0';
}

int sv_fail(char *err, const char *fmt, ...) {
    if (err) {
        char msg[SV_ERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        escape_message(err, msg);
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

double sv_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    double kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    fclose(f);
    return kib > 0 ? kib * 1024.0 : -1;
}

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
