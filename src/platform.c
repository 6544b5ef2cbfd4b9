/* BLIS sub-configuration choice and CPU affinity report (see platform.h). */
#include "shiftvit/platform.h"

#include <blis.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int sv_blis_select(char **argv, char *desc, size_t len) {
    const char *user = getenv("BLIS_ARCH_TYPE");
    const char *picked = getenv("SHIFTVIT_BLIS_PICKED");
    char why[160] = "BLIS's own detection";
    if (picked && *picked) {
        snprintf(why, sizeof why, "selected by shiftvit: %s", picked);
    } else if (user && *user) {
        snprintf(why, sizeof why, "BLIS_ARCH_TYPE=%s set by the user", user);
    } else {
        /* BLIS 0.9.0 knows no CPU newer than its tables: on Zen 5 it falls back
         * to generic (or to AVX2 kernels on some VMs) although AVX-512 is there.
         * It fixes its choice once per process and does not export its
         * detector, so the program restarts itself with BLIS_ARCH_TYPE set,
         * before MPI or anything else has started. */
        arch_t have = bli_arch_query_id(), pick = have;
        const char *what = NULL;
        int have_avx512 = have == BLIS_ARCH_SKX || have == BLIS_ARCH_KNL;
        if (cpu_has_avx512() && !have_avx512) { pick = BLIS_ARCH_SKX; what = "AVX-512"; }
        else if (have == BLIS_ARCH_GENERIC && cpu_has_avx2()) { pick = BLIS_ARCH_HASWELL; what = "AVX2+FMA"; }
        if (pick != have && argv) {
            char num[16], note[96];
            snprintf(num, sizeof num, "%d", (int)pick);
            snprintf(note, sizeof note, "BLIS detected %s on a CPU with %s", bli_arch_string(have), what);
            setenv("BLIS_ARCH_TYPE", num, 1);
            setenv("SHIFTVIT_BLIS_PICKED", note, 1);
            execv("/proc/self/exe", argv);
            /* exec failed: carry on with BLIS's choice, and say so */
            snprintf(why, sizeof why, "restarting with BLIS_ARCH_TYPE=%s failed", num);
        }
    }
    bli_init();
    if (desc)
        snprintf(desc, len, "BLIS %s sub-configuration %s (%s)", bli_info_get_version_str(),
                 bli_arch_string(bli_arch_query_id()), why);
    return picked && *picked;
}

int sv_affinity(char *list, size_t len) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        snprintf(list, len, "?");
        return 0;
    }
    int count = CPU_COUNT(&set);
    size_t used = 0;
    list[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && used + 16 < len; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set)) e++;
        used += (size_t)snprintf(list + used, len - used, "%s%d", used ? "," : "", c);
        if (e > c) used += (size_t)snprintf(list + used, len - used, "-%d", e);
        c = e;
    }
    return count;
}
