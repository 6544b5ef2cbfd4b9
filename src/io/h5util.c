/* HDF5 helpers shared by the checkpoint code and metrics.c (see h5util.h). */
#include "shiftvit/h5util.h"

void sv_h5_quiet_begin(sv_h5_quiet *q) {
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void sv_h5_quiet_end(const sv_h5_quiet *q) {
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    if (fapl >= 0) H5Pset_file_locking(fapl, 1, 1);
#endif
    return fapl;
}

/* Closes the property list without losing the error stack of a failure. */
static hid_t finish(hid_t fapl, hid_t f) {
    if (fapl >= 0) {
        hid_t es = f < 0 ? H5Eget_current_stack() : -1;
        H5Pclose(fapl);
        if (es >= 0) H5Eset_current_stack(es);
    }
    return f;
}

hid_t sv_h5_open(const char *path, unsigned flags) {
    hid_t fapl = make_fapl();
    return finish(fapl, H5Fopen(path, flags, fapl >= 0 ? fapl : H5P_DEFAULT));
}

hid_t sv_h5_create(const char *path) {
    hid_t fapl = make_fapl();
    return finish(fapl, H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT));
}
