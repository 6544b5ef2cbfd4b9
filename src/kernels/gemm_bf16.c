/* bf16 matrix products through oneDNN's matmul primitive (see gemm_bf16.h).
 * Built with -DSV_NO_ONEDNN (make ONEDNN=0, or no oneDNN found), every bf16
 * product takes the emulated path: operands rounded to bf16, products in fp32
 * by BLIS (the same operands as native bf16, summed in another order: outputs
 * differ by amounts of bf16 size, the classes agree; slower). */
#include "shiftvit/gemm_bf16.h"

#ifndef SV_NO_ONEDNN
#include <dnnl.h>
#endif
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "shiftvit/common.h"
#include "shiftvit/gemm.h" /* the fp32 backend, for emulation */

#define MAX_SHAPES 256

#ifdef SV_NO_ONEDNN
typedef struct shape_entry shape_entry; /* never created: native is 0 */
#else
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc; /* lda, ldb as read: compact for a rounded copy */
    int nb;                             /* > 1: batched (K-split weight gradient), K per part */
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} shape_entry;
#endif

struct sv_bf16 {
    int native;            /* oneDNN with bf16 instructions; else BLIS emulation */
#ifndef SV_NO_ONEDNN
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    shape_entry shapes[MAX_SHAPES];
    int nshapes;
#endif
    void *abuf, *bbuf;     /* operand copies: fp32 ones rounded to bf16 (native), or
                            * fp32 copies of the bf16 values (emulated) */
    size_t acap, bcap;     /* bytes */
    char desc[256];
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

#ifdef SV_NO_ONEDNN
sv_bf16 *sv_bf16_create(int emulate) {
    (void)emulate;
    sv_bf16 *ctx = calloc(1, sizeof *ctx);
    SV_CHECK(ctx != NULL);
    snprintf(ctx->desc, sizeof ctx->desc,
             "bf16 matrix products emulated: this shiftvit was built without oneDNN (make ONEDNN=0, or none found) "
             "(operands rounded to bf16, products in fp32 by BLIS: bf16-sized differences from native bf16, slower than fp32)");
    return ctx;
}

void sv_bf16_free(sv_bf16 *ctx) {
    if (!ctx) return;
    sv_free(ctx->abuf);
    sv_free(ctx->bbuf);
    free(ctx);
}

/* Never called: without oneDNN ctx->native is 0. */
static shape_entry *find_shape(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, int lda, int ldb,
                               int ldc, int nb) {
    SV_CHECK(0);
    return NULL;
}

static void execute(sv_bf16 *ctx, shape_entry *e, const void *a, const void *b, float *C) { SV_CHECK(0); }
#else
static void check(dnnl_status_t s, const char *what) {
    if (s == dnnl_success) return;
    fprintf(stderr, "shiftvit: internal error: oneDNN %s failed (status %d)\n", what, (int)s);
    abort();
}

/* 1 if oneDNN can build a bf16 matmul on this engine: it cannot when
 * ONEDNN_MAX_CPU_ISA (or an old CPU) leaves it no bf16 kernel. */
static int bf16_matmul_builds(dnnl_engine_t engine) {
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t dims = {16, 16}, strides = {16, 1};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_memory_desc_init_by_strides(&a, 2, dims, dnnl_bf16, strides) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&b, 2, dims, dnnl_bf16, strides) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&c, 2, dims, dnnl_f32, strides) == dnnl_success &&
             dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c) == dnnl_success &&
             dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    return ok;
}

sv_bf16 *sv_bf16_create(int emulate) {
    sv_bf16 *ctx = calloc(1, sizeof *ctx);
    SV_CHECK(ctx != NULL);
    const dnnl_version_t *v = dnnl_version();
    int cpu = sv_bf16_native_cpu(), builds = 0;
    if (!emulate && cpu && dnnl_engine_create(&ctx->engine, dnnl_cpu, 0) == dnnl_success &&
        dnnl_stream_create(&ctx->stream, ctx->engine, dnnl_stream_default_flags) == dnnl_success)
        builds = bf16_matmul_builds(ctx->engine);
    ctx->native = builds;
    /* ONEDNN_MAX_CPU_ISA may keep oneDNN below the CPU's bf16 instructions:
     * it then still runs bf16 products, on its own fp32 emulation. */
    int isa_bf16 = (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    if (ctx->native)
        snprintf(ctx->desc, sizeof ctx->desc, "bf16 matrix products (fp32 accumulation) through oneDNN %d.%d.%d, %s",
                 v->major, v->minor, v->patch,
                 isa_bf16 ? "native bf16 instructions"
                          : "emulated inside oneDNN (ONEDNN_MAX_CPU_ISA excludes the CPU's bf16 instructions)");
    else
        snprintf(ctx->desc, sizeof ctx->desc,
                 "bf16 matrix products emulated%s (operands rounded to bf16, products in fp32 by BLIS: "
                 "bf16-sized differences from native bf16, slower than fp32)",
                 emulate ? "" : !cpu ? ": this CPU has no AVX512_BF16 or AMX-BF16"
                                     : ": oneDNN cannot build them here (ONEDNN_MAX_CPU_ISA?)");
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
#endif

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

/* The rows x cols matrix src (leading dimension ld, stored as `type`) as a
 * compact buffer: bf16 bits, or (emulation, as_float) fp32 copies of the bf16
 * values. */
static void convert_matrix(void *dst, int as_float, sv_matrix src, int rows, int cols, int ld) {
#pragma omp parallel for
    for (long r = 0; r < rows; r++) {
        if (src.type == SV_DT_BF16) {
            const uint16_t *s = (const uint16_t *)src.data + r * (long)ld;
            float *d = (float *)dst + r * (long)cols; /* only emulation converts bf16 */
            for (int c = 0; c < cols; c++) d[c] = sv_bf16_to_float(s[c]);
            continue;
        }
        const float *s = (const float *)src.data + r * (long)ld;
        if (as_float) {
            float *d = (float *)dst + r * (long)cols;
            for (int c = 0; c < cols; c++) d[c] = sv_bf16_to_float(sv_bf16_round(s[c]));
        } else {
            uint16_t *d = (uint16_t *)dst + r * (long)cols;
            for (int c = 0; c < cols; c++) d[c] = sv_bf16_round(s[c]);
        }
    }
}

void sv_bf16_round_array(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) dst[i] = sv_bf16_round(src[i]);
}

#ifndef SV_NO_ONEDNN
static void init_md(dnnl_memory_desc_t *md, int nb, int rows, int cols, int transposed, dnnl_data_type_t t,
                    long ld, long batch_stride) {
    /* A logical rows x cols matrix stored row-major, or stored transposed
     * (cols x rows, row-major): oneDNN reads either through the strides;
     * nb > 1 of them batch_stride elements apart. */
    dnnl_dims_t dims = {rows, cols}, strides = {transposed ? 1 : ld, transposed ? ld : 1};
    if (nb > 1) {
        dnnl_dims_t dims3 = {nb, rows, cols}, strides3 = {batch_stride, strides[0], strides[1]};
        check(dnnl_memory_desc_init_by_strides(md, 3, dims3, t, strides3), "memory descriptor");
    } else {
        check(dnnl_memory_desc_init_by_strides(md, 2, dims, t, strides), "memory descriptor");
    }
}

/* The primitive of C = op(A) op(B) (nb = 1), or of nb such products over
 * consecutive K-row blocks of a transposed A and of B into nb consecutive
 * M x N results (nb > 1: ta = 1, tb = 0, K the rows per block). */
static shape_entry *find_shape(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, int lda, int ldb,
                               int ldc, int nb) {
    for (int i = 0; i < ctx->nshapes; i++) {
        shape_entry *e = &ctx->shapes[i];
        if (e->ta == ta && e->tb == tb && e->M == M && e->N == N && e->K == K && e->lda == lda &&
            e->ldb == ldb && e->ldc == ldc && e->nb == nb)
            return e;
    }
    SV_CHECK(ctx->nshapes < MAX_SHAPES);
    shape_entry *e = &ctx->shapes[ctx->nshapes++];
    *e = (shape_entry){ta, tb, M, N, K, lda, ldb, ldc, nb, NULL, NULL, NULL, NULL};
    dnnl_memory_desc_t a, b, c;
    init_md(&a, nb, M, K, ta, dnnl_bf16, lda, (long)K * lda);
    init_md(&b, nb, K, N, tb, dnnl_bf16, ldb, (long)K * ldb);
    init_md(&c, nb, M, N, 0, dnnl_f32, ldc, (long)M * ldc);
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
#endif

/* Bytes of the compact copy of a rows x cols operand of type t: none for a
 * bf16 operand on the native path (read in place). */
static size_t copy_bytes(const sv_bf16 *ctx, sv_dtype t, int rows, int cols) {
    if (ctx->native && t == SV_DT_BF16) return 0;
    return (size_t)rows * cols * (ctx->native ? sizeof(uint16_t) : sizeof(float));
}

/* Grows the copy buffers for the operands of op(A) op(B) that will be copied. */
static void reserve_copies(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, sv_dtype at, sv_dtype bt) {
    int arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
    size_t abytes = copy_bytes(ctx, at, arows, acols), bbytes = copy_bytes(ctx, bt, brows, bcols);
    if (abytes) reserve(&ctx->abuf, &ctx->acap, abytes);
    if (bbytes) reserve(&ctx->bbuf, &ctx->bcap, bbytes);
}

void sv_bf16_prepare(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, sv_dtype at, sv_dtype bt,
                     int ldc) {
    reserve_copies(ctx, ta, tb, M, N, K, at, bt);
    if (ctx->native) find_shape(ctx, ta, tb, M, N, K, ta ? M : K, tb ? K : N, ldc, 1);
}

/* The operand as the product reads it: in place (bf16, native), or its
 * compact copy in *buf; *ld is set to the leading dimension read. */
static const void *operand(sv_bf16 *ctx, sv_matrix X, int rows, int cols, int *ld, void **buf, size_t *cap) {
    size_t bytes = copy_bytes(ctx, X.type, rows, cols);
    if (!bytes) return X.data;
    void *copy = reserve(buf, cap, bytes);
    convert_matrix(copy, !ctx->native, X, rows, cols, *ld);
    *ld = cols;
    return copy;
}

#ifndef SV_NO_ONEDNN
static void execute(sv_bf16 *ctx, shape_entry *e, const void *a, const void *b, float *C) {
    check(dnnl_memory_set_data_handle(e->a, (void *)a), "set handle");
    check(dnnl_memory_set_data_handle(e->b, (void *)b), "set handle");
    check(dnnl_memory_set_data_handle(e->c, C), "set handle");
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
    check(dnnl_primitive_execute(e->prim, ctx->stream, 3, args), "matmul");
    check(dnnl_stream_wait(ctx->stream), "stream wait");
}
#endif

void sv_bf16_gemm(sv_bf16 *ctx, int ta, int tb, int M, int N, int K, sv_matrix A, int lda,
                  sv_matrix B, int ldb, float *C, int ldc) {
    int arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
    const void *a = operand(ctx, A, arows, acols, &lda, &ctx->abuf, &ctx->acap);
    const void *b = operand(ctx, B, brows, bcols, &ldb, &ctx->bbuf, &ctx->bcap);
    if (!ctx->native) {
        sv_gemm(ta, tb, M, N, K, 1.f, a, lda, b, ldb, 0.f, C, ldc);
        return;
    }
    execute(ctx, find_shape(ctx, ta, tb, M, N, K, lda, ldb, ldc, 1), a, b, C);
}

void sv_bf16_prepare_ksplit(sv_bf16 *ctx, int M, int N, int K, sv_dtype at, sv_dtype bt, int parts) {
    if (!ctx->native || parts < 2 || K % parts) return;
    reserve_copies(ctx, 1, 0, M, N, K, at, bt);
    find_shape(ctx, 1, 0, M, N, K / parts, M, N, N, parts);
}

int sv_bf16_gemm_ksplit(sv_bf16 *ctx, int M, int N, int K, sv_matrix A, sv_matrix B, int parts, float *C) {
    if (!ctx->native || parts < 2 || K % parts) return -1;
    int lda = M, ldb = N;
    const void *a = operand(ctx, A, K, M, &lda, &ctx->abuf, &ctx->acap);
    const void *b = operand(ctx, B, K, N, &ldb, &ctx->bbuf, &ctx->bcap);
    execute(ctx, find_shape(ctx, 1, 0, M, N, K / parts, lda, ldb, N, parts), a, b, C);
    return 0;
}
