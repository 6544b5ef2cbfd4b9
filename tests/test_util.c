/* Helpers shared by the cmocka test programs; see test_util.h. */
#include "test_util.h"

#include "shiftvit/launch.h"

#include <dirent.h>
#include <hdf5.h>
#include <errno.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* stb_image_write is header-only: its implementation for the tests that write
 * images (test_predict, test_predict_reference), which include the header for
 * the declarations. src/io/grid.c has its own, static, copy. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#define CIFAR_RECORD 3073 /* label + 32x32x3 */

void sv_test_assert_contains(const char *hay, const char *needle, const char *file, int line) {
    if (hay && strstr(hay, needle)) return;
    print_error("expected \"%s\" in:\n%s\n", needle, hay ? sv_test_tail(hay, 3000) : "(null)");
    _fail(file, line);
}

/* ------------------------------------------------------------ commands */

int sv_test_exit_status(int wait_status) {
    if (wait_status == -1) return -1;
    if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
    return -1;
}

int sv_test_system(const char *cmd) {
    fflush(stdout);
    fflush(stderr);
    return sv_test_exit_status(system(cmd));
}

char *sv_test_read_all(FILE *p, int *status) {
    size_t cap = 1 << 16, len = 0, got;
    char *out = malloc(cap);
    assert_non_null(out);
    while ((got = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[len] = '\0';
    *status = sv_test_exit_status(pclose(p));
    return out;
}

char *sv_test_capture(const char *cmd, int *status) {
    fflush(stdout);
    fflush(stderr);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("popen(%s): %s", cmd, strerror(errno));
    return sv_test_read_all(p, status);
}

sv_test_result sv_test_run(const char *cmd) {
    sv_test_result r;
    double t0 = sv_test_now();
    r.out = sv_test_capture(cmd, &r.status);
    r.seconds = sv_test_now() - t0;
    return r;
}

sv_test_result sv_test_run_ok(const char *cmd, const char *what) {
    sv_test_result r = sv_test_run(cmd);
    if (r.status != 0) {
        if (what) print_error("command: %s\n", cmd);
        fail_msg("%s%s%s exited with status %d; output ends:\n%s", what ? "" : "`", what ? what : cmd,
                 what ? "" : "`", r.status, sv_test_tail(r.out, 3000));
    }
    return r;
}

void sv_test_result_free(sv_test_result *r) {
    free(r->out);
    r->out = NULL;
}

char *sv_test_run_split(const char *cmd, const char *out_path, const char *err_path, int *status,
                        char **err) {
    char *full = NULL;
    if (asprintf(&full, "%s >%s 2>%s", cmd, out_path, err_path) < 0) fail_msg("out of memory");
    *status = sv_test_system(full);
    free(full);
    if (err) *err = sv_test_slurp_or_empty(err_path);
    return sv_test_slurp_or_empty(out_path);
}

void sv_test_mpirun(char *buf, size_t n, int P, const char *pass) {
    /* Names only: the ranks take the values from the launcher's environment. */
    char names[1024];
    size_t len = 0;
    names[0] = '\0';
    for (const char *p = pass ? pass : ""; *p;) {
        p += strspn(p, " ");
        size_t w = strcspn(p, " "), name = strcspn(p, " =");
        if (w == 0) break;
        if (len < sizeof names) len += (size_t)snprintf(names + len, sizeof names - len, " %.*s", (int)name, p);
        p += w;
    }
    if (len >= sizeof names) fail_msg("variables to pass longer than %zu bytes: %s", sizeof names, pass);
    sv_launch_opts o = {P, 1, SV_BIND_NONE, names};
    if (sv_launch_command(&o, ' ', buf, n) != 0) fail_msg("launcher command line longer than %zu bytes", n);
}

int sv_test_check_launcher(void) {
    char cmds[256];
    snprintf(cmds, sizeof cmds, "%s timeout", sv_launch_program());
    return sv_test_check_commands(cmds);
}

/* ------------------------------------------------------------ output text */

const char *sv_test_tail(const char *s, size_t n) {
    size_t len = strlen(s);
    return len > n ? s + len - n : s;
}

int sv_test_line_starting(const char *out, const char *prefix, char *line, size_t n) {
    size_t pl = strlen(prefix);
    line[0] = '\0';
    for (const char *p = out; *p; p++) {
        if ((p == out || p[-1] == '\n' || p[-1] == '\r') && !strncmp(p, prefix, pl)) {
            size_t l = strcspn(p, "\r\n");
            if (l >= n) l = n - 1;
            memcpy(line, p, l);
            line[l] = '\0';
            return 1;
        }
    }
    return 0;
}

int sv_test_count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* ------------------------------------------------------------ files */

char *sv_test_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) fail_msg("cannot read %s: %s", path, strerror(errno));
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) fail_msg("cannot read %s", path);
    s[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return s;
}

char *sv_test_slurp_or_empty(const char *path) {
    FILE *f = fopen(path, "rb");
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    assert_non_null(s);
    if (n > 0 && (fseek(f, 0, SEEK_SET) != 0 || fread(s, 1, (size_t)n, f) != (size_t)n)) s[0] = '\0';
    if (f) fclose(f);
    return s;
}

int sv_test_file_lines(const char *path) {
    char *s = sv_test_slurp(path, NULL);
    int n = sv_test_count(s, "\n");
    free(s);
    return n;
}

void sv_test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s: %s", path, strerror(errno));
    if (fwrite(data, 1, len, f) != len || fclose(f) != 0) fail_msg("cannot write %s", path);
}

void sv_test_write_text(const char *path, const char *text) { sv_test_write_file(path, text, strlen(text)); }

void sv_test_copy_file(const char *from, const char *to, long limit) {
    FILE *a = fopen(from, "rb");
    if (!a) fail_msg("cannot open %s: %s", from, strerror(errno));
    FILE *b = fopen(to, "wb");
    if (!b) fail_msg("cannot create %s: %s", to, strerror(errno));
    static char buf[65536];
    long done = 0;
    size_t n;
    while ((limit < 0 || done < limit) && (n = fread(buf, 1, sizeof buf, a)) > 0) {
        if (limit >= 0 && done + (long)n > limit) n = (size_t)(limit - done);
        if (fwrite(buf, 1, n, b) != n) fail_msg("cannot write %s", to);
        done += (long)n;
    }
    fclose(a);
    if (fclose(b) != 0) fail_msg("cannot write %s", to);
}

int sv_test_exists(const char *path) { return access(path, F_OK) == 0; }

long sv_test_file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

int sv_test_count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------ time */

double sv_test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sv_test_sleep(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ setup */

void sv_test_bin(char *bin, size_t n) {
    const char *b = getenv("BUILD");
    snprintf(bin, n, "%s/shiftvit", b && *b ? b : "build");
}

int sv_test_mkdtemp(char *tmp, size_t n, const char *prefix) {
    snprintf(tmp, n, "/tmp/%s_XXXXXX", prefix);
    if (mkdtemp(tmp)) return 0;
    fprintf(stderr, "%s: mkdtemp %s: %s\n", program_invocation_short_name, tmp, strerror(errno));
    tmp[0] = '\0';
    return -1;
}

int sv_test_bin_and_tmp(char *bin, size_t nbin, char *tmp, size_t ntmp, const char *prefix) {
    sv_test_bin(bin, nbin);
    return sv_test_mkdtemp(tmp, ntmp, prefix);
}

int sv_test_check_bin(const char *bin) {
    if (access(bin, X_OK) == 0) return 0;
    fprintf(stderr, "%s: %s is not an executable (run `make` first)\n", program_invocation_short_name, bin);
    return -1;
}

int sv_test_check_cifar(const char *dir) {
    static const struct {
        const char *file;
        long records;
    } need[] = {{"data_batch_1.bin", 256}, {"test_batch.bin", 128}};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, need[i].file);
        if (stat(path, &sb) != 0 || access(path, R_OK) != 0) {
            fprintf(stderr, "%s: CIFAR-10 not found: %s: %s\n", program_invocation_short_name, path,
                    strerror(errno));
            return -1;
        }
        if (sb.st_size < CIFAR_RECORD * need[i].records || sb.st_size % CIFAR_RECORD != 0) {
            fprintf(stderr, "%s: %s is short or damaged: %lld bytes, expected at least %ld records of %d\n",
                    program_invocation_short_name, path, (long long)sb.st_size, need[i].records, CIFAR_RECORD);
            return -1;
        }
    }
    return 0;
}

int sv_test_check_commands(const char *cmds) {
    for (const char *p = cmds; *p;) {
        p += strspn(p, " ");
        int w = (int)strcspn(p, " ");
        if (w == 0) break;
        char cmd[512];
        snprintf(cmd, sizeof cmd, "command -v '%.*s' >/dev/null 2>&1", w, p);
        if (sv_test_system(cmd) != 0) {
            fprintf(stderr, "%s: %.*s is not on PATH\n", program_invocation_short_name, w, p);
            return -1;
        }
        p += w;
    }
    return 0;
}

static int make_writable(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)ftw;
    if (flag == FTW_D || flag == FTW_DNR) chmod(path, (sb->st_mode & 07777) | S_IRWXU);
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "%s: cannot remove %s: %s\n", program_invocation_short_name, path,
                                   strerror(errno));
    return 0;
}

int sv_test_rm_rf(const char *dir) {
    nftw(dir, make_writable, 16, FTW_PHYS);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return sv_test_exists(dir) ? -1 : 0;
}

void sv_test_clean_tmp(const char *dir) {
    if (!dir[0]) return;
    if (getenv("SV_TEST_KEEP")) fprintf(stderr, "%s: outputs kept in %s\n", program_invocation_short_name, dir);
    else sv_test_rm_rf(dir);
}

long sv_test_h5_column(const char *path, const char *name, double *out, long cap) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s", path);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) fail_msg("%s: no dataset %s", path, name);
    hid_t s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    if (n < 0 || n > cap) fail_msg("%s %s: %lld values, room for %ld", path, name, (long long)n, cap);
    if (n > 0) assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(f);
    return (long)n;
}
