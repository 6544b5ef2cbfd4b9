/* The MPI launcher in one place (launch.h): the family from mpi.h's macros,
 * the launcher's command line for it, and the launch-mismatch check. */
#include "shiftvit/launch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/common.h"

sv_mpi_family sv_launch_family(void) {
#if defined(OMPI_MAJOR_VERSION)
    return SV_MPI_OPEN_MPI;
#elif defined(MPICH_VERSION)
    return SV_MPI_MPICH;
#else
    return SV_MPI_OTHER;
#endif
}

const char *sv_launch_family_name(void) {
    static const char *names[] = {"Open MPI", "MPICH", "an MPI"};
    return names[sv_launch_family()];
}

const char *sv_launch_program(void) {
#ifdef SV_MPIEXEC
    if (SV_MPIEXEC[0]) return SV_MPIEXEC;
#endif
    /* Open MPI's own name; MPICH's mpiexec is the standard's (MPI 4.0 11.5). */
    return sv_launch_family() == SV_MPI_OPEN_MPI ? "mpirun" : "mpiexec";
}

/* Appends one word (printf format) and the separator before it. */
typedef struct {
    char *buf;
    size_t n, len;
    char sep;
} words;

static void word(words *w, const char *fmt, ...) {
    if (w->len + 1 >= w->n) {
        w->len = w->n;
        return;
    }
    if (w->len > 0) w->buf[w->len++] = w->sep;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(w->buf + w->len, w->n - w->len, fmt, ap);
    va_end(ap);
    w->len = k < 0 ? w->n : w->len + (size_t)k;
}

/* Each NAME or NAME=VALUE word of env as the family passes it (launch.h). */
static void env_words(words *w, const char *env, int open_mpi) {
    for (const char *p = env ? env : ""; *p;) {
        p += strspn(p, " ");
        int len = (int)strcspn(p, " "), name = (int)strcspn(p, " =");
        if (len == 0) break;
        if (open_mpi) {
            word(w, "-x");
            word(w, "%.*s", len, p);
        } else if (name < len) {
            word(w, "-genv");
            word(w, "%.*s", name, p);
            word(w, "%.*s", len - name - 1, p + name + 1);
        }
        p += len;
    }
}

int sv_launch_command(const sv_launch_opts *o, char sep, char *buf, size_t n) {
    words w = {buf, n, 0, sep};
    int open_mpi = sv_launch_family() == SV_MPI_OPEN_MPI;
    if (n == 0) return -1;
    buf[0] = '\0';
    word(&w, "%s", sv_launch_program());
    if (o->np > 0) {
        word(&w, open_mpi ? "-np" : "-n");
        word(&w, "%d", o->np);
    }
    int t = o->threads > 0 ? o->threads : 1;
    if (o->bind == SV_BIND_CORES && open_mpi) {
        word(&w, "--map-by");
        word(&w, "slot:PE=%d", t);
        word(&w, "--bind-to");
        word(&w, "core");
    } else if (o->bind == SV_BIND_CORES) {
        /* Hydra: each rank bound to t consecutive cores of its own. */
        word(&w, "-bind-to");
        word(&w, "core:%d", t);
    } else if (o->bind == SV_BIND_NONE && open_mpi) {
        word(&w, "--oversubscribe");
        word(&w, "--bind-to");
        word(&w, "none");
    } else if (o->bind == SV_BIND_NONE) {
        /* Hydra allows more ranks than cores without an option. */
        word(&w, "-bind-to");
        word(&w, "none");
    }
    if (open_mpi && geteuid() == 0) word(&w, "--allow-run-as-root");
    env_words(&w, o->env, open_mpi);
    if (w.len >= n) {
        buf[n - 1] = '\0';
        return -1;
    }
    return 0;
}

/* The environment's count in `var` when it is a number > 1, else 0. */
static int env_count(const char *var) {
    const char *s = getenv(var);
    char *end;
    long v = s && *s ? strtol(s, &end, 10) : 0;
    return v > 1 && v < (1L << 30) && *end == '\0' ? (int)v : 0;
}

/* The first line of MPI_Get_library_version (callable before MPI_Init). */
static void library_version(char *v, size_t n) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, "\n,")] = '\0';
    for (char *c = lib; *c; c++)
        if (*c == '\t') *c = ' '; /* MPICH: "MPICH Version:\t4.0.2" */
    snprintf(v, n, "%s", lib[0] ? lib : sv_launch_family_name());
}

int sv_launch_check(const sv_dist *d, char *err) {
    /* srun without PMI support starts N singletons that each think they are
     * alone (issue 5). Only a world of 1 is refused: inside an allocation,
     * mpirun's daemons are an srun step of one task per node, which the ranks
     * inherit. */
    int n = env_count("SLURM_STEP_NUM_TASKS");
    if (getenv("SLURM_PROCID") && n > 1 && d->world == 1)
        return sv_fail(err,
                       "SLURM started %d tasks (SLURM_STEP_NUM_TASKS=%d) but MPI reports a world size of 1: the ranks "
                       "cannot see each other (PMI mismatch). Launch with 'srun --mpi=pmix' (Debian's Open MPI) or "
                       "with %s inside the allocation.",
                       n, n, sv_launch_program());
    /* An mpirun sets these for exactly the ranks it starts. */
    static const struct {
        const char *var, *who;
        int local;
    } seen[] = {
        {"OMPI_COMM_WORLD_SIZE", "Open MPI's mpirun", 0},
        {"PMI_SIZE", "MPICH's mpiexec (Hydra) or another PMI launcher", 0},
        {"MPI_LOCALNRANKS", "MPICH's mpiexec (Hydra), ranks on this node", 1},
    };
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++) {
        int want = env_count(seen[i].var), got = seen[i].local ? d->local_size : d->world;
        if (want == 0 || want == got) continue;
        char lib[128];
        library_version(lib, sizeof lib);
        return sv_fail(err,
                       "the launcher started %d ranks (%s=%d: %s) but MPI reports a %s of %d: this binary is built "
                       "with %s (%s), whose launcher is '%s'. Launch it with %s, or build with the launcher's MPI "
                       "(README: Any MPI).",
                       want, seen[i].var, want, seen[i].who, seen[i].local ? "node size" : "world size", got,
                       sv_launch_family_name(), lib, sv_launch_program(), sv_launch_program());
    }
    return 0;
}
