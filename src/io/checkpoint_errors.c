/* HDF5 error stacks turned into the one-line reasons of checkpoint messages
 * (checkpoint_internal.h). */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint_internal.h"

typedef struct {
    char msg[256];
    int found;
} walk_ctx;

/* Keeps the innermost error description (the first one walking upward). */
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    walk_ctx *w = data;
    (void)n;
    if (!w->found && e->desc && e->desc[0]) {
        const char *d = e->desc;
        /* System errors read "... error message = 'No space left on device' ...". */
        const char *em = strstr(d, "error message = '");
        if (em) {
            em += strlen("error message = '");
            const char *end = strchr(em, '\'');
            size_t len = end ? (size_t)(end - em) : strlen(em);
            if (len >= sizeof w->msg) len = sizeof w->msg - 1;
            memcpy(w->msg, em, len);
            w->msg[len] = '\0';
        } else {
            snprintf(w->msg, sizeof w->msg, "%s", d);
        }
        w->found = 1;
    }
    return 0;
}

const char *ckpt_h5_reason(char *buf, size_t n) {
    walk_ctx w = {{0}, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w);
    H5Eclear2(H5E_DEFAULT);
    snprintf(buf, n, "%s", w.found ? w.msg : "HDF5 error");
    return buf;
}
