/* BLIS sub-configuration choice and CPU affinity report (see platform.h). */
#include "shiftvit/platform.h"

#include <blis.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
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

/* BLIS's own choice, asked in a child process: BLIS fixes its choice the
 * first time it is asked, for the life of the process, so the parent must
 * not ask before it has set BLIS_ARCH_TYPE. -1 if the probe failed. */
static int blis_own_choice(void) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
        int id = (int)bli_arch_query_id();
        ssize_t w = write(fd[1], &id, sizeof id);
        _exit(w == (ssize_t)sizeof id ? 0 : 1);
    }
    close(fd[1]);
    int id = -1;
    if (read(fd[0], &id, sizeof id) != (ssize_t)sizeof id) id = -1;
    close(fd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return id;
}

int sv_blis_select(char *desc, size_t len) {
    const char *user = getenv("BLIS_ARCH_TYPE");
    char why[160] = "BLIS's own detection";
    int overridden = 0;
    if (user && *user) {
        snprintf(why, sizeof why, "BLIS_ARCH_TYPE=%s set by the user", user);
    } else {
        /* BLIS 0.9.0 knows no CPU newer than its tables: on Zen 5 it falls back
         * to generic (or to AVX2 kernels on some VMs) although AVX-512 is there. */
        int have = blis_own_choice();
        if (have < 0) {
            snprintf(why, sizeof why, "BLIS's own detection; probing it in a child process failed");
        } else {
            int pick = have;
            const char *what = NULL;
            int have_avx512 = have == BLIS_ARCH_SKX || have == BLIS_ARCH_KNL;
            if (cpu_has_avx512() && !have_avx512) { pick = BLIS_ARCH_SKX; what = "AVX-512"; }
            else if (have == BLIS_ARCH_GENERIC && cpu_has_avx2()) { pick = BLIS_ARCH_HASWELL; what = "AVX2+FMA"; }
            if (pick != have) {
                char num[16];
                snprintf(num, sizeof num, "%d", pick);
                setenv("BLIS_ARCH_TYPE", num, 1);
                snprintf(why, sizeof why, "selected by shiftvit: BLIS detected %s on a CPU with %s",
                         bli_arch_string((arch_t)have), what);
                overridden = 1;
            }
        }
    }
    bli_init();
    if (desc)
        snprintf(desc, len, "BLIS %s sub-configuration %s (%s)", bli_info_get_version_str(),
                 bli_arch_string(bli_arch_query_id()), why);
    return overridden;
}

int sv_affinity_set(cpu_set_t *set) {
    /* The union over the OpenMP threads: with OMP_PROC_BIND each thread is
     * pinned to its own place, so the calling thread alone would show one. */
    CPU_ZERO(set);
    int failed = 0;
#pragma omp parallel
    {
        cpu_set_t mine;
        CPU_ZERO(&mine);
        int rc = sched_getaffinity(0, sizeof mine, &mine);
#pragma omp critical(sv_affinity)
        {
            if (rc != 0) failed = 1;
            else CPU_OR(set, set, &mine);
        }
    }
    if (failed) CPU_ZERO(set);
    return failed ? 0 : CPU_COUNT(set);
}

void sv_cpu_list(const cpu_set_t *set, char *list, size_t len) {
    size_t used = 0;
    list[0] = '\0';
    if (CPU_COUNT(set) == 0) {
        snprintf(list, len, "?");
        return;
    }
    for (int c = 0; c < CPU_SETSIZE && used + 16 < len; c++) {
        if (!CPU_ISSET(c, set)) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set)) e++;
        used += (size_t)snprintf(list + used, len - used, "%s%d", used ? "," : "", c);
        if (e > c) used += (size_t)snprintf(list + used, len - used, "-%d", e);
        c = e;
    }
}
