/* Helpers shared by the cmocka test programs (definitions in test_util.c,
 * linked into every tests/test_*.c program by the Makefile).
 *
 * Conventions: a function documented as "fails the test" calls cmocka's
 * fail_msg (or an assert), which ends the running test; it may only be called
 * from a test or a cmocka fixture. Functions that return int 0 / -1 instead
 * (the sv_test_check_* and setup helpers) print why to stderr, prefixed with
 * the program's name, and are meant for setup code and main(). Memory a
 * function returns belongs to the caller unless stated otherwise. */
#ifndef SHIFTVIT_TEST_UTIL_H
#define SHIFTVIT_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Fails the test (at the caller's line) unless the text hay contains needle;
 * the message shows needle and the last 3000 characters of hay. */
#define assert_contains(hay, needle) sv_test_assert_contains((hay), (needle), __FILE__, __LINE__)
void sv_test_assert_contains(const char *hay, const char *needle, const char *file, int line);

/* ------------------------------------------------------------ commands */

/* Exit status of a finished command as the shell reports it: the exit code,
 * 128 + the signal number when a signal ended it, -1 when wait_status is -1
 * (the command could not be started or waited for). */
int sv_test_exit_status(int wait_status);

/* Runs cmd with /bin/sh (system()) and returns its exit status as
 * sv_test_exit_status does. Output goes where cmd sends it. */
int sv_test_system(const char *cmd);

/* Reads a popen'ed pipe to its end and closes it. Returns the output,
 * NUL-terminated (caller frees); *status gets the exit status
 * (sv_test_exit_status). Fails the test when out of memory. */
char *sv_test_read_all(FILE *p, int *status);

/* Runs a shell command and returns its stdout (plus whatever the command
 * redirects there, e.g. 2>&1), NUL-terminated (caller frees); *status gets
 * its exit status (sv_test_exit_status). Fails the test if popen fails. */
char *sv_test_capture(const char *cmd, int *status);

/* A command's result: see sv_test_run. */
typedef struct {
    int status;     /* exit status (sv_test_exit_status) */
    double seconds; /* wall time */
    char *out;      /* stdout (and stderr where the command sends it there) */
} sv_test_result;

/* sv_test_capture with the wall time, as one value; release its output with
 * sv_test_result_free. Fails the test if popen fails. */
sv_test_result sv_test_run(const char *cmd);

/* sv_test_run of a command that must succeed: unless it exits 0, fails the
 * test naming what (NULL: the command itself), the command, the exit status
 * and the last 3000 characters of the output. */
sv_test_result sv_test_run_ok(const char *cmd, const char *what);

/* Frees r->out and sets it to NULL (safe to call twice). */
void sv_test_result_free(sv_test_result *r);

/* Runs `cmd >out_path 2>err_path` with the shell. Returns what it wrote to
 * stdout (caller frees; "" when nothing); *err, when err is not NULL, gets
 * its stderr (caller frees); *status its exit status (sv_test_exit_status). */
char *sv_test_run_split(const char *cmd, const char *out_path, const char *err_path, int *status,
                        char **err);

/* Writes into buf (n bytes) the launcher for P ranks on this machine, for
 * the MPI the program was built with (shiftvit/launch.h, no binding, more
 * ranks than cores allowed; Open MPI: "mpirun -np P --oversubscribe --bind-to
 * none [--allow-run-as-root] -x NAME...", MPICH: "mpiexec -n P -bind-to
 * none"), passing every word of pass, a space-separated list of NAME or
 * NAME=value (may be NULL or ""; a value is dropped: the ranks take NAME from
 * the launcher's environment, so set it there). The caller puts any time
 * limit before it and the program and its arguments after it. Fails the test
 * when buf is too small. */
void sv_test_mpirun(char *buf, size_t n, int P, const char *pass);

/* sv_test_check_commands for the launcher (sv_launch_program) and timeout. */
int sv_test_check_launcher(void);

/* The variables every multi-rank test hands to its ranks. */
#define SV_TEST_THREAD_VARS "OMP_NUM_THREADS BLIS_NUM_THREADS"

/* ------------------------------------------------------------ output text */

/* The last n characters of s (s itself when shorter), for failure
 * messages. Points into s. */
const char *sv_test_tail(const char *s, size_t n);

/* Copies into line (n bytes, cut to fit) the first line of out that starts
 * with prefix, without its line end; a line starts at the start of out or
 * after '\n' or '\r', and ends at '\n', '\r' or the end. Returns 1, or 0 with
 * line set to "" when no line starts so. */
int sv_test_line_starting(const char *out, const char *prefix, char *line, size_t n);

/* Number of non-overlapping occurrences of needle (not "") in s. */
int sv_test_count(const char *s, const char *needle);

/* ------------------------------------------------------------ files */

/* The whole file at path, NUL-terminated (caller frees); *len gets its size
 * when len is not NULL. Fails the test if it cannot be read. */
char *sv_test_slurp(const char *path, size_t *len);

/* The whole file at path, NUL-terminated (caller frees), or "" (allocated)
 * when it cannot be opened or read. Fails the test only when out of memory. */
char *sv_test_slurp_or_empty(const char *path);

/* Number of lines ('\n' characters) of the file at path. Fails the test if it
 * cannot be read. */
int sv_test_file_lines(const char *path);

/* Writes len bytes to path (created or truncated); fails the test on error. */
void sv_test_write_file(const char *path, const void *data, size_t len);

/* sv_test_write_file of the string text, without its NUL. */
void sv_test_write_text(const char *path, const char *text);

/* Copies the first limit bytes of from (all of it when limit < 0, all there
 * is when it is shorter) into to, created or truncated; fails the test on
 * error. */
void sv_test_copy_file(const char *from, const char *to, long limit);

/* 1 if path exists (following links), else 0. */
int sv_test_exists(const char *path);

/* Size of the file at path in bytes, -1 if it cannot be stat'ed. */
long sv_test_file_size(const char *path);

/* Number of entries of dir whose name contains ".tmp." (the temporary files
 * of the program's atomic writes); 0 when dir cannot be read. */
int sv_test_count_temp_files(const char *dir);

/* Reads the 1-D dataset name of the HDF5 file at path as doubles into out
 * (at most cap values); returns its length. Fails the test when the file or
 * the dataset cannot be opened or read, or it holds more than cap values. */
long sv_test_h5_column(const char *path, const char *name, double *out, long cap);

/* ------------------------------------------------------------ time */

/* Seconds on the monotonic clock. */
double sv_test_now(void);

/* Sleeps s seconds (s >= 0). */
void sv_test_sleep(double s);

/* ------------------------------------------------------------ setup */

/* Writes $BUILD/shiftvit (default build/shiftvit) into bin (n bytes). */
void sv_test_bin(char *bin, size_t n);

/* Makes a new folder /tmp/<prefix>_XXXXXX; its name goes to tmp (n bytes).
 * Returns 0, or -1 after printing why. */
int sv_test_mkdtemp(char *tmp, size_t n, const char *prefix);

/* For tests that run the program: sv_test_bin into bin, then
 * sv_test_mkdtemp into tmp. Returns 0, or -1 after printing why (the test
 * program then exits 1). */
int sv_test_bin_and_tmp(char *bin, size_t nbin, char *tmp, size_t ntmp, const char *prefix);

/* 0 if bin is an executable file; otherwise prints that it is not (run
 * `make` first) and returns -1. */
int sv_test_check_bin(const char *bin);

/* 0 if the CIFAR-10 folder dir holds data_batch_1.bin with at least 256 and
 * test_batch.bin with at least 128 whole 3073-byte records, both readable;
 * otherwise prints which file is missing or short and returns -1. */
int sv_test_check_cifar(const char *dir);

/* 0 if every word of cmds (space-separated command names) is on PATH;
 * otherwise prints the first that is not and returns -1. */
int sv_test_check_commands(const char *cmds);

/* Removes dir and everything below it, without a shell (any name works) and
 * without following links; directories are made writable first. Returns 0,
 * or -1 (after printing what could not be removed). */
int sv_test_rm_rf(const char *dir);

/* End of a program's run: removes its temporary folder dir with
 * sv_test_rm_rf, or, when SV_TEST_KEEP is set, keeps it and prints where it
 * is. Does nothing when dir is "". */
void sv_test_clean_tmp(const char *dir);

/* Runs a cmocka group, then cleans tmp up (sv_test_clean_tmp). */
#define SV_TEST_RUN_AND_CLEAN(tests, tmp)                                       \
    do {                                                                        \
        int failed_ = cmocka_run_group_tests(tests, NULL, NULL);                \
        sv_test_clean_tmp(tmp);                                                 \
        return failed_;                                                         \
    } while (0)

#endif
