/* bf16 matrix products through oneDNN's matmul primitive (see gemm_bf16.h). */
#include "shiftvit/gemm_bf16.h"

#include <dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "shiftvit/common.h"
#include "shiftvit/layers.h"

#define MAX_SHAPES 256

typedef struct {
    int ta, tb, M, N, K, ldc;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} shape_entry;

struct sv_bf16 {
    int native;            /* oneDNN with bf16 instructions; else BLIS emulation */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    shape_entry shapes[MAX_SHAPES];
    int nshapes;
    void *abuf, *bbuf;     /* rounded operands: uint16_t (native) or float (emulated) */
    size_t acap, bcap;     /* bytes */
    char desc[192];
};

int sv_bf16_native_cpu(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    int bf16 = 0, amx = 0;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) bf16 = (a >> 5) & 1; /* AVX512_BF16 */
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) amx = (d >> 22) & 1; /* AMX-BF16 */
    return bf16 || amx;
#else
    return 0;
#endif
}

static void check(dnnl_status_t s, const char *what) {
    if (s == dnnl_success) return;
    fprintf(stderr, "shiftvit: internal error: oneDNN %s failed (status %d)\n", what, (int)s);
    abort();
}

sv_bf16 *sv_bf16_create(int emulate) {
    sv_bf16 *ctx = calloc(1, sizeof *ctx);
    SV_CHECK(ctx != NULL);
    const dnnl_version_t *v = dnnl_version();
    ctx->native = !emulate && sv_bf16_native_cpu() && dnnl_engine_create(&ctx->engine, dnnl_cpu, 0) == dnnl_success &&
                  dnnl_stream_create(&ctx->stream, ctx->engine, dnnl_stream_default_flags) == dnnl_success;
    if (ctx->native)
        snprintf(ctx->desc, sizeof ctx->desc,
                 "bf16 matrix products (fp32 accumulation) through oneDNN %d.%d.%d, native bf16 instructions",
                 v->major, v->minor, v->patch);
    else
        snprintf(ctx->desc, sizeof ctx->desc,
                 "bf16 matrix products emulated%s (operands rounded to bf16, products in fp32 by BLIS: "
                 "the same numbers, slower than fp32)",
                 emulate ? "" : ": this CPU has no AVX512_BF16 or AMX-BF16");
    return ctx;
}

void sv_bf16_free(sv_bf16 *ctx) {
    if (!ctx) return;
    for (int i = 0; i < ctx->nshapes; i++) {
        shape_entry *e = &ctx->shapes[i];
        dnnl_primitive_destroy(e->prim);
        dnnl_memory_destroy(e->a);
        dnnl_memory_destroy(e->b);
        dnnl_memory_destroy(e->c);
    }
    if (ctx->stream) dnnl_stream_destroy(ctx->stream);
    if (ctx->engine) dnnl_engine_destroy(ctx->engine);
    sv_free(ctx->abuf);
    sv_free(ctx->bbuf);
    free(ctx);
}

const char *sv_bf16_describe(const sv_bf16 *ctx) { return ctx->desc; }

/* Grows a buffer to `bytes` (only the first product of each new size pays). */
static void *reserve(void **buf, size_t *cap, size_t bytes) {
    if (bytes > *cap) {
        sv_free(*buf);
        *buf = sv_alloc(bytes, "bf16 operands");
        *cap = bytes;
    }
    return *buf;
}

/* Rounds the rows x cols matrix src (leading dimension ld) into a compact
 * buffer: bf16 bits, or (emulation) the rounded values as fp32. */
static void round_matrix(void *dst, int as_float, const float *src, int rows, int cols, int ld) {
#pragma omp parallel for
    for (long r = 0; r < rows; r++) {
        const float *s = src + r * (long)ld;
        if (as_float) {
            float *d = (float *)dst + r * (long)cols;
            for (int c = 0; c < cols; c++) d[c] = sv_bf16_to_float(sv_bf16_round(s[c]));
        } else {
            uint16_t *d = (uint16_t *)dst + r * (long)cols;
            for (int c = 0; c < cols; c++) d[c] = sv_bf16_round(s[c]);
        }
    }
}

static void init_md(dnnl_memory_desc_t *md, int rows, int cols, int transposed, dnnl_data_type_t t,
                    long ld) {
    /* A logical rows x cols matrix stored row-major, or stored transposed
     * (cols x rows, row-major): oneDNN reads either through the strides. */
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {transposed ? 1 : ld, transposed ? ld : 1};
    check(dnnl_memory_desc_init_by_strides(md, 2, dims, t, strides), "memory descriptor");
}

static shape_entry *find_shape(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, int ldc) {
    for (int i = 0; i < ctx->nshapes; i++) {
        shape_entry *e = &ctx->shapes[i];
        if (e->ta == ta && e->tb == tb && e->M == M && e->N == N && e->K == K && e->ldc == ldc) return e;
    }
    SV_CHECK(ctx->nshapes < MAX_SHAPES);
    shape_entry *e = &ctx->shapes[ctx->nshapes++];
    *e = (shape_entry){ta, tb, M, N, K, ldc, NULL, NULL, NULL, NULL};
    dnnl_memory_desc_t a, b, c;
    init_md(&a, M, K, ta, dnnl_bf16, ta ? M : K);
    init_md(&b, K, N, tb, dnnl_bf16, tb ? K : N);
    init_md(&c, M, N, 0, dnnl_f32, ldc);
    dnnl_matmul_desc_t desc;
    check(dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c), "matmul descriptor");
    dnnl_primitive_desc_t pd;
    check(dnnl_primitive_desc_create(&pd, &desc, NULL, ctx->engine, NULL), "matmul primitive descriptor");
    check(dnnl_primitive_create(&e->prim, pd), "matmul primitive");
    dnnl_primitive_desc_destroy(pd);
    check(dnnl_memory_create(&e->a, &a, ctx->engine, DNNL_MEMORY_NONE), "memory");
    check(dnnl_memory_create(&e->b, &b, ctx->engine, DNNL_MEMORY_NONE), "memory");
    check(dnnl_memory_create(&e->c, &c, ctx->engine, DNNL_MEMORY_NONE), "memory");
    return e;
}

void sv_bf16_prepare(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, int ldc) {
    size_t elt = ctx->native ? sizeof(uint16_t) : sizeof(float);
    reserve(&ctx->abuf, &ctx->acap, (size_t)M * K * elt);
    reserve(&ctx->bbuf, &ctx->bcap, (size_t)K * N * elt);
    if (ctx->native) find_shape(ctx, ta, tb, M, N, K, ldc);
}

void sv_bf16_gemm(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, float *C, int ldc) {
    int as_float = !ctx->native;
    size_t elt = as_float ? sizeof(float) : sizeof(uint16_t);
    int arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
    void *a = reserve(&ctx->abuf, &ctx->acap, (size_t)arows * acols * elt);
    void *b = reserve(&ctx->bbuf, &ctx->bcap, (size_t)brows * bcols * elt);
    round_matrix(a, as_float, A, arows, acols, lda);
    round_matrix(b, as_float, B, brows, bcols, ldb);
    if (as_float) {
        sv_gemm(ta, tb, M, N, K, 1.f, a, acols, b, bcols, 0.f, C, ldc);
        return;
    }
    shape_entry *e = find_shape(ctx, ta, tb, M, N, K, ldc);
    check(dnnl_memory_set_data_handle(e->a, a), "set handle");
    check(dnnl_memory_set_data_handle(e->b, b), "set handle");
    check(dnnl_memory_set_data_handle(e->c, C), "set handle");
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
    check(dnnl_primitive_execute(e->prim, ctx->stream, 3, args), "matmul");
    check(dnnl_stream_wait(ctx->stream), "stream wait");
}
