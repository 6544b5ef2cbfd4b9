/* libFuzzer target for the CIFAR-10 binary reader (include/shiftvit/data.h):
 * the input is written to a file (the reader takes paths), checked with
 * sv_cifar_check_file and loaded with sv_cifar_load, alone and as the second
 * of two files. Invariants checked besides the sanitizers: the check and the
 * load agree, a good file's labels are 0..9 and its pixels are the planar
 * bytes in NHWC order, an error leaves no dataset behind and names the file.
 * Built and run by tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/common.h"
#include "shiftvit/data.h"

static char g_path[64], g_path2[64];

static void write_file(const char *path, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_path, sizeof g_path, "%s/fuzz_cifar_%ld.bin", dir, (long)getpid());
    snprintf(g_path2, sizeof g_path2, "%s/fuzz_cifar_%ld_b.bin", dir, (long)getpid());
    /* The second file of a pair: one good record, label 3. */
    uint8_t rec[SV_CIFAR_RECORD];
    for (int i = 0; i < SV_CIFAR_RECORD; i++) rec[i] = (uint8_t)(i * 7);
    rec[0] = 3;
    write_file(g_path2, rec, sizeof rec);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(g_path, data, size);
    char err[SV_ERR_LEN] = "";
    long records = -1;
    int rc = sv_cifar_check_file(g_path, &records, err);
    int good = size > 0 && size % SV_CIFAR_RECORD == 0;
    for (size_t r = 0; good && r < size / SV_CIFAR_RECORD; r++) good = data[r * SV_CIFAR_RECORD] <= 9;
    if ((rc == 0) != good) abort();                    /* accepts a bad file or refuses a good one */
    if (rc != 0 && !strstr(err, g_path)) abort();      /* the message names the file */
    if (rc == 0 && records != (long)(size / SV_CIFAR_RECORD)) abort();

    sv_dataset ds;
    memset(&ds, 0xA5, sizeof ds);
    const char *one[1] = {g_path};
    char err2[SV_ERR_LEN] = "";
    long n = rc == 0 ? records : 1;
    if (sv_cifar_load(&ds, one, 1, 0, n, err2) == 0) {
        if (rc != 0) abort();
        for (long i = 0; i < n; i++) {
            const uint8_t *rec = data + i * SV_CIFAR_RECORD;
            if (ds.labels[i] != rec[0] || ds.labels[i] > 9) abort();
            for (int p = 0; p < 1024; p += 97)
                for (int c = 0; c < 3; c++)
                    if (ds.images[(size_t)i * SV_CIFAR_PIXELS + 3 * p + c] != rec[1 + c * 1024 + p]) abort();
        }
        sv_dataset_free(&ds);
    } else {
        if (rc == 0) abort();
        if (ds.images || ds.labels) abort();
        if (strcmp(err, err2) != 0) abort();           /* the same message as the check */
    }
    /* Records past the end, and the file behind a good one. */
    if (rc == 0 && sv_cifar_load(&ds, one, 1, records, 1, err2) == 0) abort();
    const char *two[2] = {g_path2, g_path};
    long first = size % 7, count = rc == 0 ? 1 + records - first : 1;
    if (first > 1 + records) first = 0, count = 1;
    if (sv_cifar_load(&ds, two, 2, first, count, err2) == 0) {
        if (rc != 0) abort();
        if (first == 0 && ds.labels[0] != 3) abort();
        sv_dataset_free(&ds);
    } else if (rc != 0 && !strstr(err2, g_path)) {
        abort();
    }
    return 0;
}
