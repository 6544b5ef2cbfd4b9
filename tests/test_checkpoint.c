/* Tests of the HDF5 checkpoints (round trip, rejection of bad files,
 * atomicity under SIGKILL and write failures), of the metrics logs (CSV and
 * metrics.h5, append mode with the resume limits) and of the atomic file
 * writer they rely on. Run from the repository
 * root; files go to a fresh directory under /tmp. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "test_util.h"

#include "shiftvit/atomic_file.h"
#include "shiftvit/checkpoint.h"
#include "shiftvit/common.h"
#include "shiftvit/config.h"
#include "shiftvit/metrics.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"
#include "shiftvit/settings.h"
#include "shiftvit/train.h"

static char g_dir[256];

/* ------------------------------------------------------------ helpers */

static void tiny_config(sv_config *c, int embed_dim) {
    char err[SV_ERR_LEN];
    sv_config_defaults(c);
    if (sv_config_load(c, "configs/tiny.ini", err) != 0) {
        sv_config_defaults(c);
        c->embed_dim = 24;
        c->depths[0] = 1, c->depths[1] = 1, c->depths[2] = 2, c->depths[3] = 1;
        c->image_size = 16;
        c->resize_size = 20;
        c->train_size = 256;
        c->val_size = 128;
        c->test_size = 128;
        c->batch_size = 32;
        c->epochs = 2;
        snprintf(c->name, sizeof c->name, "tiny");
    }
    c->embed_dim = embed_dim;
    if (sv_config_validate(c, err) != 0) fail_msg("tiny config invalid: %s", err);
}

typedef struct {
    sv_config cfg;
    sv_model m;
    sv_adamw opt;
    sv_train_state st;
} fixture;

static void fixture_make(fixture *f, int embed_dim, uint64_t seed) {
    char err[SV_ERR_LEN];
    tiny_config(&f->cfg, embed_dim);
    if (sv_model_create(&f->m, sv_model_settings_from(&f->cfg), 1, err) != 0) fail_msg("model: %s", err);
    sv_model_init_weights(&f->m, seed);
    sv_adamw_init(&f->opt, f->m.num_params, sv_adamw_settings_from(&f->cfg));
    for (size_t i = 0; i < f->m.num_params; i++) {
        f->opt.m[i] = (float)((double)(i % 977) * 1e-3 - 0.3);
        f->opt.v[i] = (float)((double)(i % 313) * 1.7e-7);
    }
    f->opt.t = 1234;
    memset(&f->st, 0, sizeof f->st);
    f->st.step = 1234;
    f->st.epoch = 3;
    f->st.step_in_epoch = 7;
    f->st.best_val_top1 = 0.4567891234;
    f->st.best_epoch = 2;
    f->st.bad_epochs = 1;
    f->st.run_loss = 12.345678901;
    f->st.run_top1 = 3.25;
    f->st.run_top5 = 6.5;
    f->st.run_count = 224;
    f->st.seed = 0xfedcba9876543210ull;
    f->st.world_size = 3;
    f->st.wall_time = 98.7654321;
    f->st.epoch_time = 12.375;
}

static void fixture_free(fixture *f) {
    sv_adamw_free(&f->opt);
    sv_model_free(&f->m);
}

static void path_in(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", g_dir, name);
}

static void save_or_fail(const char *path, const fixture *f) {
    char err[SV_ERR_LEN];
    if (sv_checkpoint_save(path, &f->m, &f->opt, &f->st, &f->cfg, err) != 0)
        fail_msg("save %s: %s", path, err);
}

/* Loads `path` into a fresh tiny model and expects failure with every one of
 * the given substrings in the message. */
static void expect_load_error(const char *path, const char *s1, const char *s2, const char *s3) {
    fixture f;
    fixture_make(&f, 24, 1);
    char err[SV_ERR_LEN] = "";
    int rc = sv_checkpoint_load(path, &f.m, &f.opt, &f.st, err);
    fixture_free(&f);
    if (rc == 0) fail_msg("loading %s succeeded, expected an error", path);
    const char *want[3] = {s1, s2, s3};
    for (int i = 0; i < 3; i++)
        if (want[i] && !strstr(err, want[i]))
            fail_msg("error message lacks \"%s\": %s", want[i], err);
    print_message("      rejected: %s\n", err);
}

/* ------------------------------------------------------------ round trip */

static void test_round_trip(void **state) {
    (void)state;
    fixture a, b;
    fixture_make(&a, 24, 7);
    char path[512], err[SV_ERR_LEN];
    path_in(path, sizeof path, "rt.h5");
    save_or_fail(path, &a);
    assert_int_equal(sv_test_count_temp_files(g_dir), 0);

    fixture_make(&b, 24, 99); /* different weights, then overwritten */
    memset(b.opt.m, 0, b.m.num_params * sizeof(float));
    memset(b.opt.v, 0, b.m.num_params * sizeof(float));
    b.opt.t = 0;
    memset(&b.st, 0, sizeof b.st);
    if (sv_checkpoint_load(path, &b.m, &b.opt, &b.st, err) != 0) fail_msg("load: %s", err);

    for (int t = 0; t < a.m.num_tensors; t++) {
        const sv_param_info *T = &a.m.tensors[t];
        if (memcmp(a.m.params + T->offset, b.m.params + T->offset, T->size * sizeof(float)))
            fail_msg("tensor %s differs after the round trip", T->name);
        if (memcmp(a.opt.m + T->offset, b.opt.m + T->offset, T->size * sizeof(float)))
            fail_msg("moment m of %s differs after the round trip", T->name);
        if (memcmp(a.opt.v + T->offset, b.opt.v + T->offset, T->size * sizeof(float)))
            fail_msg("moment v of %s differs after the round trip", T->name);
    }
    assert_int_equal(b.opt.t, 1234);
    assert_int_equal(b.st.step, a.st.step);
    assert_int_equal(b.st.epoch, a.st.epoch);
    assert_int_equal(b.st.step_in_epoch, a.st.step_in_epoch);
    assert_true(b.st.best_val_top1 == a.st.best_val_top1);
    assert_int_equal(b.st.best_epoch, a.st.best_epoch);
    assert_int_equal(b.st.bad_epochs, a.st.bad_epochs);
    assert_true(b.st.run_loss == a.st.run_loss);
    assert_true(b.st.run_top1 == a.st.run_top1);
    assert_true(b.st.run_top5 == a.st.run_top5);
    assert_true(b.st.run_count == a.st.run_count);
    assert_true(b.st.seed == a.st.seed);
    assert_int_equal(b.st.world_size, a.st.world_size);
    assert_true(b.st.wall_time == a.st.wall_time);
    assert_true(b.st.epoch_time == a.st.epoch_time);

    /* Weights only: no optimizer or state requested. */
    fixture c;
    fixture_make(&c, 24, 5);
    if (sv_checkpoint_load(path, &c.m, NULL, NULL, err) != 0) fail_msg("load weights: %s", err);
    assert_memory_equal(c.m.params, a.m.params, a.m.num_params * sizeof(float));

    /* A weights-only checkpoint cannot resume. */
    char wpath[512];
    path_in(wpath, sizeof wpath, "weights_only.h5");
    if (sv_checkpoint_save(wpath, &a.m, NULL, NULL, &a.cfg, err) != 0) fail_msg("save: %s", err);
    if (sv_checkpoint_load(wpath, &c.m, NULL, NULL, err) != 0) fail_msg("load weights: %s", err);
    assert_int_equal(sv_checkpoint_load(wpath, &c.m, &c.opt, &c.st, err), -1);
    assert_non_null(strstr(err, "optimizer"));

    fixture_free(&a);
    fixture_free(&b);
    fixture_free(&c);
}

/* /ema (train.ema_decay): saved beside /model and read back bitwise; a file
 * without it says so (sv_checkpoint_has_ema 0, sv_checkpoint_load_ema an
 * error naming the file) and still loads as before; /ema with another
 * architecture's shapes is refused naming the tensor. */
static void test_ema_round_trip(void **state) {
    (void)state;
    fixture a, b;
    fixture_make(&a, 24, 7);
    fixture_make(&b, 24, 99);
    char path[512], plain[512], err[SV_ERR_LEN];
    path_in(path, sizeof path, "ema.h5");
    path_in(plain, sizeof plain, "no_ema.h5");
    size_t n = a.m.num_params;
    float *ema = malloc(n * sizeof(float)), *back = malloc(n * sizeof(float));
    assert_non_null(ema);
    assert_non_null(back);
    for (size_t i = 0; i < n; i++) ema[i] = a.m.params[i] * 0.5f + (float)(i % 7) * 1e-3f;
    if (sv_checkpoint_save_ema(path, &a.m, ema, &a.opt, &a.st, &a.cfg, err) != 0) fail_msg("save: %s", err);
    save_or_fail(plain, &a);
    assert_int_equal(sv_checkpoint_has_ema(path, err), 1);
    assert_int_equal(sv_checkpoint_has_ema(plain, err), 0);
    memset(back, 0, n * sizeof(float));
    if (sv_checkpoint_load_ema(path, &b.m, back, err) != 0) fail_msg("load /ema: %s", err);
    assert_memory_equal(back, ema, n * sizeof(float));
    /* /model, the moments and the state load as from a file without /ema */
    if (sv_checkpoint_load(path, &b.m, &b.opt, &b.st, err) != 0) fail_msg("load: %s", err);
    assert_memory_equal(b.m.params, a.m.params, n * sizeof(float));
    assert_memory_equal(b.opt.m, a.opt.m, n * sizeof(float));
    assert_int_equal(b.st.step, a.st.step);
    assert_int_equal(sv_checkpoint_load_ema(plain, &b.m, back, err), -1);
    assert_contains(err, plain);
    assert_contains(err, "/ema");
    assert_contains(err, "train.ema_decay");
    assert_int_equal(sv_checkpoint_has_ema("/nonexistent/x.h5", err), -1);
    /* another architecture */
    fixture c;
    fixture_make(&c, 36, 1);
    float *other = malloc(c.m.num_params * sizeof(float));
    assert_non_null(other);
    assert_int_equal(sv_checkpoint_load_ema(path, &c.m, other, err), -1);
    assert_contains(err, "/ema/");
    free(other);
    free(ema);
    free(back);
    fixture_free(&a);
    fixture_free(&b);
    fixture_free(&c);
}

static char *config_text(const sv_config *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    sv_config_write(c, f);
    fclose(f);
    return text;
}

static void test_config_round_trip(void **state) {
    (void)state;
    fixture a;
    fixture_make(&a, 24, 7);
    a.cfg.lr_max = 0.1 + 0.2; /* not a short decimal */
    a.cfg.seed = 18446744073709551615ull;
    snprintf(a.cfg.out_dir, sizeof a.cfg.out_dir, "results/runs/x y");
    char path[512], err[SV_ERR_LEN];
    path_in(path, sizeof path, "cfg.h5");
    save_or_fail(path, &a);
    sv_config c;
    if (sv_checkpoint_read_config(path, &c, err) != 0) fail_msg("read config: %s", err);
    char *ta = config_text(&a.cfg), *tc = config_text(&c);
    assert_string_equal(ta, tc);
    free(ta);
    free(tc);
    assert_true(c.lr_max == a.cfg.lr_max);
    assert_true(c.seed == a.cfg.seed);
    assert_int_equal(c.embed_dim, 24);
    assert_int_equal(c.depths[2], a.cfg.depths[2]);
    assert_string_equal(c.name, a.cfg.name);
    assert_string_equal(c.out_dir, "results/runs/x y");
    fixture_free(&a);
}

/* ------------------------------------------------------------ bad files */

/* Opens a copy of a good checkpoint read-write for surgery. */
static hid_t open_copy(const char *good, const char *copy) {
    sv_test_copy_file(good, copy, -1);
    hid_t f = H5Fopen(copy, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

static void test_bad_files(void **state) {
    (void)state;
    fixture a;
    fixture_make(&a, 24, 7);
    char good[512], p[512];
    path_in(good, sizeof good, "good.h5");
    save_or_fail(good, &a);
    fixture_free(&a);

    path_in(p, sizeof p, "missing.h5");
    expect_load_error(p, p, "No such file", NULL);

    path_in(p, sizeof p, "empty.h5");
    sv_test_write_text(p, "");
    expect_load_error(p, p, "empty", NULL);

    path_in(p, sizeof p, "half.h5");
    sv_test_copy_file(good, p, sv_test_file_size(good) / 2);
    expect_load_error(p, p, "truncated", NULL);

    path_in(p, sizeof p, "text.h5");
    sv_test_write_text(p, "[model]\nembed_dim = 24\n");
    expect_load_error(p, p, "not an HDF5 file", NULL);

    /* The config reader rejects them the same way. */
    sv_config c;
    char err[SV_ERR_LEN];
    assert_int_equal(sv_checkpoint_read_config(p, &c, err), -1);
    assert_non_null(strstr(err, "not an HDF5 file"));

    /* One tensor deleted. */
    path_in(p, sizeof p, "deleted.h5");
    hid_t f = open_copy(good, p);
    assert_true(H5Ldelete(f, "/model/stage2/block0/mlp/fc1/kernel", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_load_error(p, "/model/stage2/block0/mlp/fc1/kernel", "missing", "[48,96]");

    /* One tensor with the wrong shape. */
    path_in(p, sizeof p, "misshaped.h5");
    f = open_copy(good, p);
    assert_true(H5Ldelete(f, "/model/classifier/bias", H5P_DEFAULT) >= 0);
    hsize_t dims[1] = {11};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t ds = H5Dcreate2(f, "/model/classifier/bias", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                          H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
    expect_load_error(p, "/model/classifier/bias", "[11]", "[10]");

    /* One bit of a tensor's stored data flipped: its Fletcher-32 checksum
     * fails the read (without it the file would load other weights). */
    path_in(p, sizeof p, "flipped.h5");
    f = open_copy(good, p);
    ds = H5Dopen2(f, "/model/stage1/block0/mlp/fc2/kernel", H5P_DEFAULT);
    haddr_t addr = 0;
    hsize_t chunk_bytes = 0, origin[2];
    unsigned filter_mask = 0;
    hid_t fsp = H5Dget_space(ds);
    assert_true(H5Dget_chunk_info(ds, fsp, 0, origin, &filter_mask, &addr, &chunk_bytes) >= 0);
    H5Sclose(fsp);
    H5Dclose(ds);
    H5Fclose(f);
    FILE *fp = fopen(p, "r+b");
    assert_non_null(fp);
    long at_byte = (long)(addr + chunk_bytes / 2);
    assert_int_equal(fseek(fp, at_byte, SEEK_SET), 0);
    int byte = fgetc(fp);
    assert_int_equal(fseek(fp, at_byte, SEEK_SET), 0);
    fputc(byte ^ 0x10, fp);
    assert_int_equal(fclose(fp), 0);
    expect_load_error(p, "/model/stage1/block0/mlp/fc2/kernel", "Fletcher32", NULL);

    /* Format version from the future. */
    path_in(p, sizeof p, "future.h5");
    f = open_copy(good, p);
    hid_t at = H5Aopen(f, "format_version", H5P_DEFAULT);
    int v = 99;
    assert_true(H5Awrite(at, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(at);
    H5Fclose(f);
    expect_load_error(p, "newer shiftvit", "format 99", "up to 1");
    assert_int_equal(sv_checkpoint_read_config(p, &c, err), -1);
    assert_non_null(strstr(err, "format 99"));

    /* A /state attribute missing. */
    path_in(p, sizeof p, "nostate.h5");
    f = open_copy(good, p);
    hid_t g = H5Gopen2(f, "/state", H5P_DEFAULT);
    assert_true(H5Adelete(g, "epoch") >= 0);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(p, "epoch", "/state", "missing");

    /* epoch_time is optional: a checkpoint from before it resumes with 0. */
    path_in(p, sizeof p, "no_epoch_time.h5");
    f = open_copy(good, p);
    g = H5Gopen2(f, "/state", H5P_DEFAULT);
    assert_true(H5Adelete(g, "epoch_time") >= 0);
    H5Gclose(g);
    H5Fclose(f);
    {
        fixture o;
        fixture_make(&o, 24, 5);
        o.st.epoch_time = 99;
        if (sv_checkpoint_load(p, &o.m, &o.opt, &o.st, err) != 0) fail_msg("load without epoch_time: %s", err);
        assert_true(o.st.epoch_time == 0);
        assert_int_equal(o.st.step, 1234);
        fixture_free(&o);
    }

    /* Another architecture: wider (shape mismatch) and deeper (extra tensors). */
    fixture w;
    fixture_make(&w, 36, 3);
    path_in(p, sizeof p, "wide.h5");
    save_or_fail(p, &w);
    fixture_free(&w);
    expect_load_error(p, "/model/", "[4,4,3,36]", "[4,4,3,24]");

    fixture d;
    fixture_make(&d, 24, 3);
    fixture_free(&d);
    sv_config deep;
    tiny_config(&deep, 24);
    deep.depths[0] = 2;
    sv_model dm;
    if (sv_model_create(&dm, sv_model_settings_from(&deep), 1, err) != 0) fail_msg("model: %s", err);
    path_in(p, sizeof p, "deep.h5");
    if (sv_checkpoint_save(p, &dm, NULL, NULL, &deep, err) != 0) fail_msg("save: %s", err);
    sv_model_free(&dm);
    expect_load_error(p, "stage1/block1", "not part of this model", NULL);
}

/* ------------------------------------------------------------ atomicity */

static void test_save_fails_cleanly(void **state) {
    (void)state;
    fixture a;
    fixture_make(&a, 24, 7);
    char p[512], err[SV_ERR_LEN];
    path_in(p, sizeof p, "no/such/dir/x.h5");
    assert_int_equal(sv_checkpoint_save(p, &a.m, &a.opt, &a.st, &a.cfg, err), -1);
    assert_non_null(strstr(err, p));
    assert_non_null(strstr(err, "No such file"));
    print_message("      save error: %s\n", err);

    if (geteuid() != 0) { /* root writes into read-only directories anyway */
        char ro[400];
        path_in(ro, sizeof ro, "readonly");
        assert_int_equal(mkdir(ro, 0555), 0);
        snprintf(p, sizeof p, "%s/x.h5", ro);
        assert_int_equal(sv_checkpoint_save(p, &a.m, &a.opt, &a.st, &a.cfg, err), -1);
        assert_non_null(strstr(err, "Permission denied"));
        assert_int_equal(sv_test_count_temp_files(ro), 0);
        chmod(ro, 0755);
    }

    /* A write failure mid-file (file size limit, like a full disk): the
     * previous checkpoint stays intact and no temporary file is left. */
    char dir[400];
    path_in(dir, sizeof dir, "full");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/last.h5", dir);
    fixture old;
    fixture_make(&old, 24, 11);
    save_or_fail(p, &old);
    long before = sv_test_file_size(p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {(rlim_t)(before / 3), (rlim_t)(before / 3)};
        setrlimit(RLIMIT_FSIZE, &rl);
        char e[SV_ERR_LEN];
        int rc = sv_checkpoint_save(p, &a.m, &a.opt, &a.st, &a.cfg, e);
        fprintf(stderr, "      save under a file size limit: %s\n", rc ? e : "succeeded?");
        _exit(rc == -1 && strstr(e, p) && strstr(e, "File too large") ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(sv_test_count_temp_files(dir), 0);
    assert_int_equal(sv_test_file_size(p), before);
    fixture chk;
    fixture_make(&chk, 24, 1);
    if (sv_checkpoint_load(p, &chk.m, &chk.opt, &chk.st, err) != 0) fail_msg("old file: %s", err);
    assert_memory_equal(chk.m.params, old.m.params, old.m.num_params * sizeof(float));
    fixture_free(&chk);
    fixture_free(&old);
    fixture_free(&a);
}

static void remove_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

static void test_kill_during_save(void **state) {
    (void)state;
    char dir[400], p[600], err[SV_ERR_LEN];
    path_in(dir, sizeof dir, "kill");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/last.h5", dir);
    fixture a, chk;
    fixture_make(&a, 24, 7);
    fixture_make(&chk, 24, 1);
    /* A first checkpoint exists before the kills start, so every kill (also on
     * a loaded machine, where a save can outlast the longest delay) must leave
     * a loadable newest file. */
    if (sv_checkpoint_save(p, &a.m, &a.opt, &a.st, &a.cfg, err) != 0) fail_msg("first save: %s", err);
    srand(12345);
    int loaded = 0, mid_write = 0;
    for (int it = 0; it < 30; it++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (long k = 0;; k++) {
                a.st.step = k;
                char e[SV_ERR_LEN];
                if (sv_checkpoint_save(p, &a.m, &a.opt, &a.st, &a.cfg, e) != 0) {
                    fprintf(stderr, "child: %s\n", e);
                    _exit(3);
                }
            }
        }
        struct timespec ts = {0, (long)(rand() % 50) * 1000000L + rand() % 1000000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            fail_msg("saving child ended on its own (status 0x%x)", status);
        if (access(p, F_OK) == 0) {
            if (sv_checkpoint_load(p, &chk.m, &chk.opt, &chk.st, err) != 0)
                fail_msg("after kill %d: newest checkpoint unloadable: %s", it, err);
            assert_memory_equal(chk.m.params, a.m.params, a.m.num_params * sizeof(float));
            assert_memory_equal(chk.opt.v, a.opt.v, a.m.num_params * sizeof(float));
            loaded++;
        }
        mid_write += sv_test_count_temp_files(dir) > 0;
        remove_temp_files(dir); /* a killed writer leaves its temporary file */
    }
    print_message("      30 kills, %d during a write; the newest checkpoint loaded %d times\n",
                  mid_write, loaded);
    assert_true(mid_write > 0);
    assert_int_equal(loaded, 30);
    fixture_free(&a);
    fixture_free(&chk);
}

/* Temporary files of killed writers are cleaned up by the next save once
 * they are a minute old and their process is gone. */
static void test_stale_temp_removed(void **state) {
    (void)state;
    char dir[400], p[600], stale[700], fresh[700];
    path_in(dir, sizeof dir, "stale");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/last.h5", dir);
    snprintf(stale, sizeof stale, "%s/.last.h5.tmp.999999999", dir);
    snprintf(fresh, sizeof fresh, "%s/.last.h5.tmp.999999998", dir);
    sv_test_write_text(stale, "partial");
    sv_test_write_text(fresh, "partial");
    struct timespec old[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    assert_int_equal(utimensat(AT_FDCWD, stale, old, 0), 0);
    fixture a;
    fixture_make(&a, 24, 7);
    save_or_fail(p, &a);
    fixture_free(&a);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(fresh, F_OK), 0);
}

/* ------------------------------------------------------------ metrics */


static void write_rows(sv_metrics *mt, long step0, long step1, long steps_per_epoch) {
    for (long s = step0; s <= step1; s++) {
        sv_step_row r = {s, (s - 1) / steps_per_epoch, 1e-3 * s, 2.5 - 0.01 * s, 0.1, 0.5, 1000.0};
        sv_metrics_step(mt, &r);
        if (s % steps_per_epoch == 0) {
            long e = s / steps_per_epoch;
            sv_epoch_row er = {e, 2.0, 0.2, 0.6, 2.1, 0.25 + 0.01 * e, 0.65, 1e-3 * s, 1.5};
            sv_metrics_epoch(mt, &er);
        }
    }
}

static void test_metrics_append(void **state) {
    (void)state;
    char dir[512], err[SV_ERR_LEN], p[600];
    path_in(dir, sizeof dir, "run");
    assert_int_equal(mkdir(dir, 0755), 0);

    /* 4 epochs of 5 steps: steps 1..20, epochs 1..4. */
    sv_metrics *mt = sv_metrics_open(dir, 0, 0, 0, err);
    if (!mt) fail_msg("open: %s", err);
    write_rows(mt, 1, 20, 5);
    /* Flushed every epoch: the files are readable while the run is open. */
    snprintf(p, sizeof p, "%s/metrics.h5", dir);
    double col[256];
    assert_int_equal(sv_test_h5_column(p, "/epochs/epoch", col, 256), 4);
    assert_int_equal(sv_test_h5_column(p, "/steps/step", col, 256), 20);
    sv_metrics_close(mt);

    /* Resume from a checkpoint at the end of epoch 2 (step 10). */
    mt = sv_metrics_open(dir, 1, 10, 2, err);
    if (!mt) fail_msg("reopen: %s", err);
    write_rows(mt, 11, 15, 5); /* epoch 3 again, shorter run */
    sv_metrics_close(mt);

    snprintf(p, sizeof p, "%s/metrics_steps.csv", dir);
    char *s = sv_test_slurp(p, NULL);
    assert_int_equal(sv_test_count(s, "\n"), 1 + 15);
    const char *hdr = "step,epoch,lr,loss,top1,top5,images_per_s\n";
    assert_true(strncmp(s, hdr, strlen(hdr)) == 0);
    free(s);
    snprintf(p, sizeof p, "%s/metrics_epochs.csv", dir);
    s = sv_test_slurp(p, NULL);
    assert_int_equal(sv_test_count(s, "\n"), 1 + 3);
    assert_non_null(strstr(s, "\n3,"));
    assert_null(strstr(s, "\n4,"));
    free(s);

    snprintf(p, sizeof p, "%s/metrics.h5", dir);
    assert_int_equal(sv_test_h5_column(p, "/steps/step", col, 256), 15);
    for (int i = 0; i < 15; i++) assert_true(col[i] == i + 1);
    assert_int_equal(sv_test_h5_column(p, "/steps/lr", col, 256), 15);
    assert_true(col[14] == 1e-3 * 15);
    const char *ecols[] = {"epoch", "train_loss", "train_top1", "train_top5", "val_loss",
                           "val_top1", "val_top5", "lr", "seconds"};
    for (int c = 0; c < 9; c++) {
        char name[64];
        snprintf(name, sizeof name, "/epochs/%s", ecols[c]);
        assert_int_equal(sv_test_h5_column(p, name, col, 256), 3);
    }
    assert_int_equal(sv_test_h5_column(p, "/epochs/epoch", col, 256), 3);
    assert_true(col[0] == 1 && col[1] == 2 && col[2] == 3);
    assert_int_equal(sv_test_h5_column(p, "/epochs/val_top1", col, 256), 3);
    assert_true(col[2] == 0.25 + 0.01 * 3);
    const char *scols[] = {"step", "epoch", "lr", "loss", "top1", "top5", "images_per_s"};
    for (int c = 0; c < 7; c++) {
        char name[64];
        snprintf(name, sizeof name, "/steps/%s", scols[c]);
        assert_int_equal(sv_test_h5_column(p, name, col, 256), 15);
    }

    /* A damaged metrics.h5 (and a half-written CSV line) on resume: the
     * HDF5 log is rebuilt from the CSV rows that are kept. */
    snprintf(p, sizeof p, "%s/metrics.h5", dir);
    sv_test_write_text(p, "garbage, not HDF5");
    snprintf(p, sizeof p, "%s/metrics_steps.csv", dir);
    FILE *fa = fopen(p, "a");
    fputs("16,3,0.0", fa);
    fclose(fa);
    mt = sv_metrics_open(dir, 1, 12, 2, err);
    if (!mt) fail_msg("reopen: %s", err);
    sv_metrics_close(mt);
    snprintf(p, sizeof p, "%s/metrics.h5", dir);
    assert_int_equal(sv_test_h5_column(p, "/steps/step", col, 256), 12);
    assert_true(col[11] == 12);
    assert_int_equal(sv_test_h5_column(p, "/steps/images_per_s", col, 256), 12);
    assert_int_equal(sv_test_h5_column(p, "/epochs/epoch", col, 256), 2);
    snprintf(p, sizeof p, "%s/metrics_steps.csv", dir);
    assert_int_equal(sv_test_file_lines(p), 1 + 12);

    /* Append mode on a directory without logs creates them. */
    char d2[512];
    path_in(d2, sizeof d2, "run2");
    assert_int_equal(mkdir(d2, 0755), 0);
    mt = sv_metrics_open(d2, 1, 100, 100, err);
    if (!mt) fail_msg("open: %s", err);
    write_rows(mt, 1, 5, 5);
    sv_metrics_close(mt);
    snprintf(p, sizeof p, "%s/metrics.h5", d2);
    assert_int_equal(sv_test_h5_column(p, "/steps/step", col, 256), 5);

    /* A directory that does not exist is an error naming it. */
    char d3[512];
    path_in(d3, sizeof d3, "nope/deeper");
    mt = sv_metrics_open(d3, 0, 0, 0, err);
    assert_null(mt);
    assert_non_null(strstr(err, d3));
}

/* ------------------------------------------------------------ atomic writer */

/* sv_atomic_begin/commit/abort (atomic_file.h): the target is the old file
 * until commit, then the whole new one; a failed write or an abort leaves
 * the old file and no temporary file. */
static void test_atomic_file(void **state) {
    (void)state;
    char dir[400], p[600], why[SV_ERR_LEN];
    path_in(dir, sizeof dir, "atomic");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/config.ini", dir);
    sv_test_write_text(p, "old\n");

    /* Commit replaces the file; until then readers see the old one. */
    sv_atomic_file a;
    if (sv_atomic_begin(&a, p, why) != 0) fail_msg("begin: %s", why);
    assert_non_null(strstr(a.tmp, dir));
    fprintf(a.f, "new %d\n", 42);
    assert_int_equal(sv_test_count_temp_files(dir), 1);
    char *s = sv_test_slurp(p, NULL);
    assert_string_equal(s, "old\n");
    free(s);
    if (sv_atomic_commit(&a, why) != 0) fail_msg("commit: %s", why);
    s = sv_test_slurp(p, NULL);
    assert_string_equal(s, "new 42\n");
    free(s);
    assert_int_equal(sv_test_count_temp_files(dir), 0);

    /* Abort: the old file stays, the temporary file goes. */
    if (sv_atomic_begin(&a, p, why) != 0) fail_msg("begin: %s", why);
    fputs("half", a.f);
    sv_atomic_abort(&a);
    sv_atomic_abort(&a); /* a second abort does nothing */
    s = sv_test_slurp(p, NULL);
    assert_string_equal(s, "new 42\n");
    free(s);
    assert_int_equal(sv_test_count_temp_files(dir), 0);

    /* A write failure (file size limit, like a full disk) fails the commit
     * with the file and the reason named; the old file stays whole. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        static char big[1 << 16];
        memset(big, 'x', sizeof big);
        char e[SV_ERR_LEN] = "";
        sv_atomic_file b;
        if (sv_atomic_begin(&b, p, e) != 0) _exit(2);
        int wrc = sv_atomic_write(&b, big, sizeof big);
        int rc = sv_atomic_commit(&b, e);
        fprintf(stderr, "      commit under a file size limit: %s\n", rc ? e : "succeeded?");
        _exit(wrc == -1 && rc == -1 && strstr(e, "/.config.ini.tmp.") && strstr(e, "File too large") ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    s = sv_test_slurp(p, NULL);
    assert_string_equal(s, "new 42\n");
    free(s);
    assert_int_equal(sv_test_count_temp_files(dir), 0);

    /* A folder that does not exist: nothing created, the path named. */
    char q[700];
    snprintf(q, sizeof q, "%s/missing/x.ini", dir);
    assert_int_equal(sv_atomic_begin(&a, q, why), -1);
    assert_non_null(strstr(why, "/missing/.x.ini.tmp."));
    assert_non_null(strstr(why, "No such file or directory"));
    assert_null(a.f);
    snprintf(q, sizeof q, "%s/", dir);
    assert_int_equal(sv_atomic_begin(&a, q, why), -1);
    assert_non_null(strstr(why, "names a directory"));
    assert_int_equal(sv_test_count_temp_files(dir), 0);
}

/* ------------------------------------------------------------ main */

static int setup(void **state) {
    (void)state;
    return sv_test_mkdtemp(g_dir, sizeof g_dir, "sv_test_ckpt");
}

static int teardown(void **state) {
    (void)state;
    sv_test_rm_rf(g_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_config_round_trip),
        cmocka_unit_test(test_ema_round_trip),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_save_fails_cleanly),
        cmocka_unit_test(test_kill_during_save),
        cmocka_unit_test(test_stale_temp_removed),
        cmocka_unit_test(test_metrics_append),
        cmocka_unit_test(test_atomic_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
