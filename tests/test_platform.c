/* BLIS sub-configuration choice (issue 6): on a CPU with AVX-512 the program
 * must run BLIS's AVX-512 kernels (skx) even though BLIS 0.9.0 itself picks
 * generic or haswell there, and a user's BLIS_ARCH_TYPE must be respected.
 * Runs the real program (bench prints the choice in its placement report). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/launch.h"
#include "test_util.h"

static char g_bin[512];

/* The "BLIS ..." line of a one-step tiny bench run with the given environment prefix. */
static void blis_line(const char *env, char *line, size_t n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "env -u BLIS_ARCH_TYPE -u OMP_PROC_BIND -u OMP_PLACES %s OMP_NUM_THREADS=1 %s bench -c configs/tiny.ini "
             "--steps 1 --warmup 0 2>&1",
             env, g_bin);
    char *out = sv_test_run_ok(cmd, NULL).out;
    sv_test_line_starting(out, "BLIS ", line, n);
    free(out);
    if (!line[0]) fail_msg("%s printed no BLIS line", cmd);
    print_message("      %s: %s\n", env[0] ? env : "(default)", line);
}

static void test_avx512_cpu_gets_skx(void **state) {
    (void)state;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))) {
        print_message("      this CPU has no AVX-512: nothing to select\n");
        skip();
    }
    char line[1024];
    blis_line("", line, sizeof line);
    assert_non_null(strstr(line, "sub-configuration skx"));
}

static void test_user_choice_respected(void **state) {
    (void)state;
    char line[1024];
    /* 0.9.0's numbering: 3 is haswell (enum arch_t: skx, knl, knc, haswell, ...). */
    blis_line("BLIS_ARCH_TYPE=3", line, sizeof line);
    assert_non_null(strstr(line, "sub-configuration haswell"));
    assert_non_null(strstr(line, "set by the user"));
}

/* OMP_PROC_BIND=true, common in HPC job scripts, must leave a rank its
 * cores: libgomp pins the initial thread at start-up, and a program that
 * re-executes itself (as this one once did to choose BLIS's kernels) inherits
 * that one-CPU mask and runs all its threads on one core. The placement
 * line of a 2-thread run must list as many CPUs as a run without binding. */
static void test_proc_bind_keeps_cpus(void **state) {
    (void)state;
    char cmd[1024];
    int cpus[2] = {-1, -1};
    const char *envs[2] = {"", "OMP_PROC_BIND=true"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "env -u OMP_PROC_BIND -u OMP_PLACES %s OMP_NUM_THREADS=2 %s bench -c configs/tiny.ini "
                 "--steps 1 --warmup 0 2>&1", envs[k], g_bin);
        char *out = sv_test_run_ok(cmd, NULL).out;
        for (char *save, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            const char *c = strstr(line, " threads, CPUs ");
            const char *open = c ? strchr(c, '(') : NULL;
            if (open && cpus[k] < 0) cpus[k] = atoi(open + 1);
        }
        free(out);
        if (cpus[k] < 1) fail_msg("%s printed no placement line", cmd);
        print_message("      %s: %d CPU(s)\n", envs[k][0] ? envs[k] : "(no binding)", cpus[k]);
    }
    assert_int_equal(cpus[1], cpus[0]);
}

/* Output of a one-step tiny bench with 2 ranks, no binding, T threads each
 * (caller frees). */
static char *two_ranks(int T) {
    char cmd[1024], mpirun[256];
    sv_test_mpirun(mpirun, sizeof mpirun, 2, "OMP_NUM_THREADS");
    snprintf(cmd, sizeof cmd,
             "env -u OMP_PROC_BIND -u OMP_PLACES OMP_NUM_THREADS=%d timeout -k 5 120 %s %s bench -c configs/tiny.ini "
             "--steps 1 --warmup 0 2>&1",
             T, mpirun, g_bin);
    return sv_test_run_ok(cmd, NULL).out;
}

/* Issue 14: 2 ranks x C threads on C CPUs oversubscribe the node; the
 * report says so with the numbers, once. 2 ranks x 1 thread do not (C >= 2). */
static void test_oversubscription_warned(void **state) {
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int C = CPU_COUNT(&set);
    char want[128];
    snprintf(want, sizeof want, "WARNING: %d thread(s) in all (ranks per node x threads per rank) share %d CPU(s)",
             2 * C, C);
    char *out = two_ranks(C);
    const char *w = strstr(out, want);
    if (!w) fail_msg("no \"%s\" in:\n%s", want, out);
    if (strstr(w + 1, "WARNING: ")) fail_msg("warned more than once:\n%s", out);
    free(out);
    if (C >= 2) {
        out = two_ranks(1);
        if (strstr(out, "oversubscribe")) fail_msg("2 ranks x 1 thread on %d CPUs warned:\n%s", C, out);
        free(out);
    }
}

/* Physical cores (distinct package/core pairs in sysfs) among the CPUs this
 * process may run on; the logical CPU count when sysfs has no topology. */
static int physical_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    long seen[CPU_SETSIZE];
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        char path[128];
        long core = c, pkg = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        FILE *f = fopen(path, "r");
        if (f) { if (fscanf(f, "%ld", &core) != 1) core = c; fclose(f); }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        if ((f = fopen(path, "r"))) { if (fscanf(f, "%ld", &pkg) != 1) pkg = 0; fclose(f); }
        long key = pkg * 100000 + core;
        int k = 0;
        while (k < n && seen[k] != key) k++;
        if (k == n) seen[n++] = key;
    }
    return n;
}

/* Issue 27: the wrappers that start ranks on one machine must give each of
 * 2 ranks x 1 thread a core of its own. scripts/mpirun.sh compared with
 * `nproc` after exporting OMP_NUM_THREADS=1, which GNU nproc obeys, so it
 * took its oversubscribed branch (--bind-to none) and both ranks reported
 * "CPUs 0-1 (2)". The placement report must show one CPU per rank, a
 * different one for each. */
static void check_pinned_2x1(const char *what, const char *cmd) {
    char *out = sv_test_run_ok(cmd, what).out;
    char cpus[2][64] = {"", ""};
    for (int r = 0; r < 2; r++) {
        char prefix[32], line[512];
        snprintf(prefix, sizeof prefix, "  rank %d on ", r);
        if (!sv_test_line_starting(out, prefix, line, sizeof line))
            fail_msg("%s: no placement line for rank %d in:\n%s", what, r, sv_test_tail(out, 3000));
        const char *c = strstr(line, ", CPUs ");
        int n = 0;
        if (!c || sscanf(c, ", CPUs %63s (%d)", cpus[r], &n) != 2)
            fail_msg("%s: cannot read the CPUs of \"%s\"", what, line);
        print_message("      %s: %s\n", what, line);
        if (n != 1) fail_msg("%s: rank %d is not pinned to one core: \"%s\"", what, r, line);
    }
    if (!strcmp(cpus[0], cpus[1])) fail_msg("%s: both ranks on CPU %s", what, cpus[0]);
    free(out);
}

static void test_wrappers_pin_2x1(void **state) {
    (void)state;
    int cores = physical_cores();
    if (cores < 2) {
        print_message("      %d core(s): 2 ranks x 1 thread cannot each have one\n", cores);
        skip();
    }
    const char *run = "env -u OMP_PROC_BIND -u OMP_PLACES -u NP -u RANKS OMP_NUM_THREADS=2 timeout -k 5 120";
    const char *args = "bench -c configs/tiny.ini --steps 1 --warmup 0 2>&1";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s env NP=2 THREADS=1 scripts/mpirun.sh %s %s", run, g_bin, args);
    check_pinned_2x1("scripts/mpirun.sh", cmd);
    snprintf(cmd, sizeof cmd, "%s env SHIFTVIT=%s jobs/local.sh -n 2 -t 1 %s", run, g_bin, args);
    check_pinned_2x1("jobs/local.sh", cmd);
}

/* Issue 27: started by a launcher of another MPI, the program came up as P
 * separate worlds of one and trained P times over with no word. It must
 * refuse, naming the launcher's world size and MPI's. `cmd` runs the program
 * (a tiny bench) under such a launcher; `var` is the variable it sets. */
static void check_mismatch_refused(const char *what, const char *cmd, const char *var) {
    sv_test_result r = sv_test_run(cmd);
    print_message("      %s: exit %d\n", what, r.status);
    if (r.status == 0) fail_msg("%s: exit status 0, expected a refusal; output ends:\n%s", what, sv_test_tail(r.out, 2000));
    char want[96];
    snprintf(want, sizeof want, "the launcher started 2 ranks (%s=2", var);
    assert_contains(r.out, want);
    assert_contains(r.out, "but MPI reports a world size of 1");
    assert_contains(r.out, sv_launch_program());
    if (strstr(r.out, "World size")) fail_msg("%s: the run started before the refusal:\n%s", what, sv_test_tail(r.out, 2000));
    sv_test_result_free(&r);
}

static void test_launch_mismatch_refused(void **state) {
    (void)state;
    int ompi = sv_launch_family() == SV_MPI_OPEN_MPI;
    /* The other family's variable on a single process: what each of its
     * ranks sees (the library ignores the other MPI's variables). */
    const char *var = ompi ? "PMI_SIZE" : "OMPI_COMM_WORLD_SIZE";
    const char *args = "bench -c configs/tiny.ini --steps 1 --warmup 0 2>&1";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "env OMP_NUM_THREADS=1 %s=2 timeout -k 5 60 %s %s", var, g_bin, args);
    check_mismatch_refused(var, cmd, var);
    /* The other MPI's real launcher, when installed (Debian's names). */
    const char *other = ompi ? "mpiexec.mpich" : "mpirun.openmpi";
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", other);
    if (sv_test_system(cmd) != 0) {
        print_message("      %s not installed: the real cross-launch is not tried\n", other);
        return;
    }
    snprintf(cmd, sizeof cmd, "env OMP_NUM_THREADS=1 timeout -k 5 60 %s %s %s %s", other,
             ompi ? "-n 2" : "--oversubscribe --bind-to none -np 2 -x OMP_NUM_THREADS",
             ompi || geteuid() != 0 ? "" : "--allow-run-as-root", g_bin);
    char full[1200];
    snprintf(full, sizeof full, "%s %s", cmd, args);
    check_mismatch_refused(other, full, var);
}

int main(void) {
    sv_test_bin(g_bin, sizeof g_bin);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oversubscription_warned),
        cmocka_unit_test(test_avx512_cpu_gets_skx),
        cmocka_unit_test(test_user_choice_respected),
        cmocka_unit_test(test_proc_bind_keeps_cpus),
        cmocka_unit_test(test_wrappers_pin_2x1),
        cmocka_unit_test(test_launch_mismatch_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
