/* LD_PRELOAD shim for tests (issue 26): faults a real cluster brings.
 *
 * A slow parallel file system: fsync and fdatasync of a file whose path
 * contains one of the colon-separated substrings of SLOW_FSYNC_MATCH (default
 * ".h5.tmp.", the temporary file of a checkpoint being written:
 * atomic_file.h) first sleep SLOW_FSYNC_SECONDS (unset or 0: no slowing),
 * then do the real call. Each slowed call is logged to stderr ("slow_fsync:
 * 8 s for PATH") so that a test can tell that the shim was active.
 *
 * A frozen rank: with SHIM_STOP_RANK=R and SHIM_STOP_WHEN=PATH, the process
 * of rank R (OMPI_COMM_WORLD_RANK, or PMI_RANK) stops itself with SIGSTOP as
 * soon as PATH exists (polled every 20 ms by a thread), as a node that hangs
 * or a link pulled without a TCP reset look to the other ranks.
 *
 * Built by tests/test_faults.c with `cc -shared -fPIC ... -ldl -lpthread`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int matches(int fd, char *path, size_t n) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, path, n - 1);
    if (len <= 0) return 0;
    path[len] = '\0';
    const char *list = getenv("SLOW_FSYNC_MATCH");
    if (!list || !*list) list = ".h5.tmp.";
    while (*list) {
        size_t l = strcspn(list, ":");
        if (l > 0) {
            char want[256];
            snprintf(want, sizeof want, "%.*s", (int)l, list);
            if (strstr(path, want)) return 1;
        }
        list += l + (list[l] == ':');
    }
    return 0;
}

static void slow_down(int fd) {
    char path[4096];
    if (!matches(fd, path, sizeof path)) return;
    const char *s = getenv("SLOW_FSYNC_SECONDS");
    double secs = s && *s ? atof(s) : 0.0;
    if (secs <= 0) return;
    fprintf(stderr, "slow_fsync: %g s for %s\n", secs, path);
    struct timespec ts = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow_down(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow_down(fd);
    return real(fd);
}

static void *stop_when_there(void *p) {
    const char *path = p;
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (access(path, F_OK) != 0) nanosleep(&ts, NULL);
    fprintf(stderr, "fault_shim: %s exists: rank %s stops (SIGSTOP)\n", path, getenv("SHIM_STOP_RANK"));
    kill(getpid(), SIGSTOP);
    return NULL;
}

__attribute__((constructor)) static void start_stopper(void) {
    const char *want = getenv("SHIM_STOP_RANK"), *path = getenv("SHIM_STOP_WHEN");
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!rank) rank = getenv("PMI_RANK");
    if (!want || !path || !rank || strcmp(want, rank) != 0) return;
    pthread_t t;
    if (pthread_create(&t, NULL, stop_when_there, (void *)path) == 0) pthread_detach(t);
}
