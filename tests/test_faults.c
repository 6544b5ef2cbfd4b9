/* Faults that real clusters bring (issue 26), on the real program under
 * mpirun with the real data, through an LD_PRELOAD shim (tests/lib/
 * fault_shim.c, built here with the C compiler):
 *   - a slow file system: every checkpoint's and the trace's fsync takes
 *     longer than the collective timeout; the other rank waits for rank 0's
 *     writes without timing out, and the job finishes with exit 0 and no
 *     message calling a rank lost;
 *   - a rank frozen mid-run (SIGSTOP) with --trace FILE: the job ends with
 *     exit 5 and the rank that timed out writes its events up to the timeout
 *     to FILE.rank0.json (a valid trace), and says so with the checkpoint to
 *     resume from;
 *   - temporary checkpoint files left by a writer that was killed are removed
 *     when the next run starts in the folder.
 * No timing decides a pass: the time limits only turn a hang into a failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define TINY "configs/tiny.ini"

static char g_tmp[64];
static char g_bin[512] = "build/shiftvit";
static char g_shim[128]; /* the built fault_shim.so */

/* Runs `shiftvit ARGS` on 2 ranks under mpirun (with a time limit that only
 * turns a hang into a failure) with the variables kv = {NAME, VALUE, ...,
 * NULL} set for it and its ranks; the command line goes to cmd. */
static sv_test_result run2(const char *const *kv, const char *args, char *cmd, size_t n) {
    char launcher[1024], pass[512];
    size_t len = (size_t)snprintf(pass, sizeof pass, SV_TEST_THREAD_VARS " SHIFTVIT_PROGRESS");
    for (int i = 0; kv[i]; i += 2) {
        setenv(kv[i], kv[i + 1], 1);
        len += (size_t)snprintf(pass + len, sizeof pass - len, " %s", kv[i]);
    }
    sv_test_mpirun(launcher, sizeof launcher, 2, pass);
    snprintf(cmd, n, "timeout -k 10 240 %s %s %s 2>&1", launcher, g_bin, args);
    sv_test_result r = sv_test_run(cmd);
    for (int i = 0; kv[i]; i += 2) unsetenv(kv[i]);
    return r;
}

/* Every checkpoint's (and the trace's) fsync sleeps 8 s, the collective
 * timeout is 5 s (the case): on the main of before the change the job
 * ended with exit 5 at the first checkpoint ("every rank answered ..." or rank
 * 0 called "Lost"). With a 2 s timeout this test failed once in 4 CI-like
 * runs (exit 5; the output kept showed only the first epoch's steps, so the
 * cause is not known: a stall of the machine or a race of the probes); 5 s
 * leaves a loaded 2-core machine more margin while every write still outlasts
 * the timeout. */
static void test_slow_writes_do_not_time_out(void **state) {
    (void)state;
    char out[256], trace[256], args[1024], cmd[4096];
    snprintf(out, sizeof out, "%s/slow", g_tmp);
    snprintf(trace, sizeof trace, "%s/slow.json", g_tmp);
    const char *kv[] = {"LD_PRELOAD", g_shim, "SLOW_FSYNC_SECONDS", "8", "SLOW_FSYNC_MATCH", ".h5.tmp.:.json.tmp.",
                        "SHIFTVIT_COLLECTIVE_TIMEOUT", "5", NULL};
    snprintf(args, sizeof args, "train -c " TINY " --set train.epochs=1 --trace %s --out %s", trace, out);
    sv_test_result r = run2(kv, args, cmd, sizeof cmd);
    if (r.status != 0)
        fail_msg("exit status %d, expected 0 (a slow write is not a lost rank)\ncommand: %s\noutput ends:\n%s",
                 r.status, cmd, sv_test_tail(r.out, 3000));
    assert_contains(r.out, "slow_fsync: 8 s for "); /* the shim was active */
    assert_contains(r.out, "answers that it is writing a checkpoint: waiting on");
    assert_contains(r.out, "TEST loss=");
    assert_null(strstr(r.out, "Lost"));
    assert_null(strstr(r.out, "Aborting"));
    char last[300];
    snprintf(last, sizeof last, "%s/last.h5", out);
    assert_true(sv_test_exists(last));
    assert_true(sv_test_exists(trace));
    sv_test_result_free(&r);
}

/* Rank 1 stops itself (SIGSTOP) once the first epoch's last.h5 exists; rank
 * 0 times out (3 s) and writes its trace up to then. */
static void test_trace_written_on_timeout(void **state) {
    (void)state;
    char out[256], trace[256], rank0[256], last[300], args[1024], cmd[4096];
    snprintf(out, sizeof out, "%s/frozen", g_tmp);
    snprintf(trace, sizeof trace, "%s/frozen.json", g_tmp);
    snprintf(rank0, sizeof rank0, "%s/frozen.rank0.json", g_tmp);
    snprintf(last, sizeof last, "%s/last.h5", out);
    const char *kv[] = {"LD_PRELOAD", g_shim, "SHIM_STOP_RANK", "1", "SHIM_STOP_WHEN", last,
                        "SHIFTVIT_COLLECTIVE_TIMEOUT", "3", NULL};
    snprintf(args, sizeof args,
             "train -c " TINY " --set train.epochs=200 --set train.patience=0 --set train.log_every=100 "
             "--trace %s --out %s", trace, out);
    sv_test_result r = run2(kv, args, cmd, sizeof cmd);
    if (r.status != 5)
        fail_msg("exit status %d, expected 5 (a collective timed out)\ncommand: %s\noutput ends:\n%s", r.status, cmd,
                 sv_test_tail(r.out, 3000));
    assert_contains(r.out, "fault_shim: "); /* rank 1 did stop */
    assert_contains(r.out, "no answer from 1 of 2 rank(s): rank 1 on ");
    char want[400];
    snprintf(want, sizeof want, "its trace up to the timeout (");
    assert_contains(r.out, want);
    assert_contains(r.out, rank0);
    snprintf(want, sizeof want, "Nothing was written after %s (step ", last);
    assert_contains(r.out, want);
    assert_contains(r.out, "resume from it with: mpirun -np 2 ");
    assert_false(sv_test_exists(trace)); /* no gathered file: the gather is impossible */
    /* A valid trace with rank 0's steps: scripts/trace_summary.py --check
     * when Python is there, else its JSON shape. */
    size_t len;
    char *json = sv_test_slurp(rank0, &len);
    assert_non_null(json);
    assert_contains(json, "\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0");
    assert_contains(json, "\"name\":\"forward\"");
    assert_contains(json, "\"name\":\"checkpoint\"");
    assert_null(strstr(json, "\"pid\":1,"));
    assert_true(len > 2 && strcmp(json + len - 3, "]}\n") == 0);
    free(json);
    sv_test_result_free(&r);
}

/* A killed writer's temporary checkpoint in the folder of a new run: removed
 * at the start, and said so. */
static void test_stale_temporary_files_removed(void **state) {
    (void)state;
    char out[256], tmp1[320], tmp2[320], keep[320], cmd[2048];
    snprintf(out, sizeof out, "%s/stale", g_tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", out);
    assert_int_equal(sv_test_system(cmd), 0);
    /* pid 1 runs (init), so only the lock can tell that a run file's temporary
     * file is stale; pid 999999999 cannot exist. */
    snprintf(tmp1, sizeof tmp1, "%s/.last.h5.tmp.1", out);
    snprintf(tmp2, sizeof tmp2, "%s/.epoch_0001.h5.tmp.999999999", out);
    snprintf(keep, sizeof keep, "%s/.notes.txt.tmp.1", out); /* not a run file, writer alive: kept */
    sv_test_write_text(tmp1, "partial checkpoint");
    sv_test_write_text(tmp2, "partial checkpoint");
    sv_test_write_text(keep, "someone else's");
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 timeout -k 5 120 %s train -c " TINY " --set train.max_steps=1 --out %s 2>&1", g_bin,
             out);
    sv_test_result r = sv_test_run_ok(cmd, "a run in a folder with stale temporary files");
    assert_contains(r.out, "Removed 2 temporary file(s)");
    assert_false(sv_test_exists(tmp1));
    assert_false(sv_test_exists(tmp2));
    assert_true(sv_test_exists(keep));
    sv_test_result_free(&r);
}

/* The binary, the data, a folder, and the shim built into it; 0 or -1. */
static int setup(void) {
    if (sv_test_bin_and_tmp(g_bin, sizeof g_bin, g_tmp, sizeof g_tmp, "sv_test_faults") ||
        sv_test_check_bin(g_bin) || sv_test_check_cifar(SV_TEST_CIFAR) || sv_test_check_commands("mpirun timeout cc"))
        return -1;
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("BLIS_NUM_THREADS", "1", 1);
    setenv("SHIFTVIT_PROGRESS", "lines", 1);
    unsetenv("SHIFTVIT_COLLECTIVE_TIMEOUT");
    snprintf(g_shim, sizeof g_shim, "%s/fault_shim.so", g_tmp);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cc -O1 -shared -fPIC -o %s tests/lib/fault_shim.c -ldl -lpthread", g_shim);
    if (sv_test_system(cmd) != 0) {
        fprintf(stderr, "test_faults: cannot build the shim: %s\n", cmd);
        return -1;
    }
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* SV_TEST_FILTER=test_slow*: one case (cmocka's pattern). */
    if (getenv("SV_TEST_FILTER")) cmocka_set_test_filter(getenv("SV_TEST_FILTER"));
    if (setup() != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_writes_do_not_time_out),
        cmocka_unit_test(test_trace_written_on_timeout),
        cmocka_unit_test(test_stale_temporary_files_removed),
    };
    SV_TEST_RUN_AND_CLEAN(tests, g_tmp);
}
