/* The ShiftViT model: parameter table, initialisation, forward and backward
 * (SPEC sections 1-2). Shapes are in model.h and layers.h. */
#include "shiftvit/model.h"

#include <math.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/layers.h"
#include "shiftvit/rng.h"
#include "model_internal.h"

static int add_tensor(sv_model *m, int *cap, const char *name, int ndim,
                      const int *shape, double init) {
    if (m->num_tensors == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        m->tensors = realloc(m->tensors, (size_t)*cap * sizeof(sv_param_info));
        SV_CHECK(m->tensors);
    }
    sv_param_info *t = &m->tensors[m->num_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->size = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->size *= (size_t)shape[i];
    }
    t->offset = m->num_params;
    t->glorot_limit = init;
    m->num_params += t->size;
    return m->num_tensors++;
}

/* Glorot-uniform limit for a kernel: fan_in/out include the receptive field. */
static double glorot(int receptive, int cin, int cout) {
    return sqrt(6.0 / ((double)receptive * cin + (double)receptive * cout));
}

#define VEC(...) ((const int[]){__VA_ARGS__})
#define INIT_ZERO 0.0
#define INIT_ONE (-1.0)

static void build_table(sv_model *m, struct sv_model_acts *A) {
    int cap = 0;
    char nm[SV_MAX_NAME];
    int p = m->patch_size, C0 = m->channels[0];
    A->patch_w = add_tensor(m, &cap, "patch_projection/kernel", 4, VEC(p, p, 3, C0), glorot(p * p, 3, C0));
    A->patch_b = add_tensor(m, &cap, "patch_projection/bias", 1, VEC(C0), INIT_ZERO);
    int bi = 0;
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        int C = m->channels[s], H = m->mlp_ratio * C;
        for (int b = 0; b < m->depths[s]; b++, bi++) {
            block_acts *B = &A->blocks[bi];
            B->stage = s;
            B->index = b;
            B->layer_id = bi;
            B->drop_path_rate = m->depths[s] > 1 ? m->drop_path * (float)b / (float)(m->depths[s] - 1) : 0.f;
#define NAME(fmt, ...) (snprintf(nm, sizeof nm, fmt, __VA_ARGS__), nm)
            B->p.ln_g = add_tensor(m, &cap, NAME("stage%d/block%d/layer_norm/gamma", s + 1, b), 1, VEC(C), INIT_ONE);
            B->p.ln_b = add_tensor(m, &cap, NAME("stage%d/block%d/layer_norm/beta", s + 1, b), 1, VEC(C), INIT_ZERO);
            B->p.fc1_w = add_tensor(m, &cap, NAME("stage%d/block%d/mlp/fc1/kernel", s + 1, b), 2, VEC(C, H), glorot(1, C, H));
            B->p.fc1_b = add_tensor(m, &cap, NAME("stage%d/block%d/mlp/fc1/bias", s + 1, b), 1, VEC(H), INIT_ZERO);
            B->p.fc2_w = add_tensor(m, &cap, NAME("stage%d/block%d/mlp/fc2/kernel", s + 1, b), 2, VEC(H, C), glorot(1, H, C));
            B->p.fc2_b = add_tensor(m, &cap, NAME("stage%d/block%d/mlp/fc2/bias", s + 1, b), 1, VEC(C), INIT_ZERO);
        }
        if (s < SV_NUM_STAGES - 1) {
            merge_acts *M = &A->merges[s];
            M->p.ln_g = add_tensor(m, &cap, NAME("stage%d/patch_merge/layer_norm/gamma", s + 1), 1, VEC(C), INIT_ONE);
            M->p.ln_b = add_tensor(m, &cap, NAME("stage%d/patch_merge/layer_norm/beta", s + 1), 1, VEC(C), INIT_ZERO);
            M->p.red_w = add_tensor(m, &cap, NAME("stage%d/patch_merge/reduction/kernel", s + 1), 4, VEC(2, 2, C, 2 * C), glorot(4, C, 2 * C));
#undef NAME
        }
    }
    int C3 = m->channels[SV_NUM_STAGES - 1], K = m->num_classes;
    A->head_w = add_tensor(m, &cap, "classifier/kernel", 2, VEC(C3, K), glorot(1, C3, K));
    A->head_b = add_tensor(m, &cap, "classifier/bias", 1, VEC(K), INIT_ZERO);
}

/* The model's buffers are allocated twice over the same code: once only
 * counted (dry), to refuse a batch that cannot fit before touching memory,
 * then for real. */
typedef struct {
    int dry;
    size_t bytes;
} model_alloc;

static void *take(model_alloc *al, size_t bytes, const char *what) {
    al->bytes += bytes;
    return al->dry ? NULL : sv_alloc(bytes, what);
}

static float *fbuf(model_alloc *al, size_t n, const char *what) { return take(al, n * sizeof(float), what); }

/* Storage of the activations that only feed matrix products. */
static sv_dtype act_type(const sv_model *m) { return m->act_bf16 ? SV_DT_BF16 : SV_DT_F32; }

/* n elements of such an activation. */
static void *abuf(const sv_model *m, model_alloc *al, size_t n, const char *what) {
    return take(al, n * (m->act_bf16 ? sizeof(uint16_t) : sizeof(float)), what);
}

/* One of them as a product's operand. */
static sv_matrix act(const sv_model *m, const void *p) { return sv_mat(p, act_type(m)); }

static void alloc_acts(sv_model *m, struct sv_model_acts *A, model_alloc *al) {
    int N = m->max_batch;
    size_t maxTC = 0, maxTH = 0, maxCols = 0;
    int s0 = m->sides[0];
    A->patch_cols = abuf(m, al, (size_t)N * s0 * s0 * m->patch_size * m->patch_size * 3, "patch columns");
    A->patch_out = fbuf(al, (size_t)N * s0 * s0 * m->channels[0], "patch projection output");
    for (int i = 0; i < A->num_blocks; i++) {
        block_acts *B = &A->blocks[i];
        int S = m->sides[B->stage], C = m->channels[B->stage];
        size_t T = (size_t)N * S * S, H = (size_t)m->mlp_ratio * C;
        B->xs = fbuf(al, T * C, "block activations");
        B->ln = abuf(m, al, T * C, "block activations");
        B->mean = fbuf(al, T, "block activations");
        B->rstd = fbuf(al, T, "block activations");
        B->h = fbuf(al, T * H, "block activations");
        B->a = abuf(m, al, T * H, "block activations");
        B->out = fbuf(al, T * C, "block activations");
        B->mask2 = take(al, T * C, "dropout masks");
        B->dp = fbuf(al, (size_t)N, "drop path");
        B->keys1 = take(al, (size_t)N * sizeof(uint64_t), "rng keys");
        B->keys2 = take(al, (size_t)N * sizeof(uint64_t), "rng keys");
        B->keys_dp = take(al, (size_t)N * sizeof(uint64_t), "rng keys");
        if (T * C > maxTC) maxTC = T * C;
        if (T * H > maxTH) maxTH = T * H;
    }
    for (int s = 0; s < SV_NUM_STAGES - 1; s++) {
        merge_acts *M = &A->merges[s];
        int S = m->sides[s], So = m->sides[s + 1], C = m->channels[s];
        size_t T = (size_t)N * S * S, To = (size_t)N * So * So;
        M->mean = fbuf(al, T, "patch merging activations");
        M->rstd = fbuf(al, T, "patch merging activations");
        M->cols = abuf(m, al, To * 4 * C, "patch merging activations");
        M->out = fbuf(al, To * 2 * C, "patch merging activations");
        if (To * 4 * C > maxCols) maxCols = To * 4 * C;
    }
    if ((size_t)N * s0 * s0 * m->channels[0] > maxTC) maxTC = (size_t)N * s0 * s0 * m->channels[0];
    int C3 = m->channels[SV_NUM_STAGES - 1];
    A->pooled = fbuf(al, (size_t)N * C3, "pooled features");
    A->logits = fbuf(al, (size_t)N * m->num_classes, "logits");
    A->z = fbuf(al, maxTC, "backward scratch");
    A->dh = fbuf(al, maxTH, "backward scratch");
    A->dln = fbuf(al, maxTC, "backward scratch");
    A->dx0 = fbuf(al, maxTC, "backward scratch");
    A->dx1 = fbuf(al, maxTC, "backward scratch");
    A->dcols = fbuf(al, maxCols ? maxCols : 1, "backward scratch");
    A->dpooled = fbuf(al, (size_t)N * C3, "backward scratch");
}

static double flops_per_image(const sv_model *m) {
    double f = 0;
    int p = m->patch_size;
    f += 2.0 * m->sides[0] * m->sides[0] * (p * p * 3) * m->channels[0];
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        double S2 = (double)m->sides[s] * m->sides[s], C = m->channels[s];
        f += m->depths[s] * S2 * 2.0 * 2.0 * C * (m->mlp_ratio * C);
        if (s < SV_NUM_STAGES - 1) {
            double So2 = (double)m->sides[s + 1] * m->sides[s + 1];
            f += So2 * 2.0 * (4 * C) * (2 * C);
        }
    }
    f += 2.0 * m->channels[SV_NUM_STAGES - 1] * m->num_classes;
    return f;
}

int sv_model_first_nonfinite(const sv_model *m, const float *buf, size_t *elem) {
    for (int t = 0; t < m->num_tensors; t++) {
        const float *p = buf + m->tensors[t].offset;
        for (size_t i = 0; i < m->tensors[t].size; i++)
            if (!isfinite(p[i])) {
                if (elem) *elem = i;
                return t;
            }
    }
    return -1;
}

/* Refuses (-1, message) a model whose parameters, gradients and activations
 * would not fit in the memory the kernel reports available: sv_alloc touches
 * all of it, and past that point the OOM killer, not a message, would end
 * the run. */
static int check_memory(sv_model *m, struct sv_model_acts *A, char *err) {
    model_alloc count = {1, 0};
    alloc_acts(m, A, &count);
    count.bytes += m->num_params * (2 * sizeof(float) + (m->act_bf16 ? sizeof(uint16_t) : 0));
    double need = (double)count.bytes, avail = sv_mem_available();
    if (avail <= 0 || need <= avail) return 0;
    return sv_fail(err,
                   "model: a batch of %d samples per rank needs %.1f GiB for parameters, gradients and "
                   "activations, more than the %.1f GiB this machine has available (MemAvailable); use a "
                   "smaller batch (train.batch_size, train.eval_batch_size, --batch) or more ranks",
                   m->max_batch, need / 1073741824.0, avail / 1073741824.0);
}

int model_setup(sv_model *m, const sv_model_settings *set, int max_batch, char *err) {
    memset(m, 0, sizeof *m);
    if (max_batch < 1) return sv_fail(err, "model: batch size %d must be at least 1", max_batch);
    m->image_size = set->image_size;
    m->patch_size = set->patch_size;
    m->num_classes = set->num_classes;
    m->mlp_ratio = set->mlp_ratio;
    m->num_div = set->num_div;
    m->shift_pixel = set->shift_pixel;
    m->dropout = set->dropout;
    m->drop_path = set->drop_path;
    m->eps = set->eps;
    m->max_batch = max_batch;
    int side = set->image_size / set->patch_size, nblocks = 0;
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        /* backward reads each merge's input from the stage's last block */
        if (set->depths[s] < 1)
            return sv_fail(err, "model: [model] depths entry %d = %d must be at least 1", s + 1, set->depths[s]);
        m->depths[s] = set->depths[s];
        m->channels[s] = set->embed_dim << s;
        m->sides[s] = side;
        side = (side + 1) / 2; /* TF "same" padding: ceil(H / 2) */
        nblocks += set->depths[s];
    }
    struct sv_model_acts *A = sv_alloc(sizeof *A, "model");
    A->num_blocks = nblocks;
    A->blocks = sv_alloc((size_t)nblocks * sizeof(block_acts), "model");
    m->acts = A;
    build_table(m, A);
    m->act_bf16 = set->bf16;
    m->flops_forward = flops_per_image(m);
    return 0;
}

int sv_model_create(sv_model *m, sv_model_settings settings, int max_batch, char *err) {
    if (model_setup(m, &settings, max_batch, err) != 0) return -1;
    struct sv_model_acts *A = m->acts;
    if (check_memory(m, A, err)) {
        sv_model_free(m);
        return -1;
    }
    model_alloc al = {0, 0};
    m->params = fbuf(&al, m->num_params, "parameters");
    m->grads = fbuf(&al, m->num_params, "gradients");
    if (m->act_bf16) m->params_bf16 = take(&al, m->num_params * sizeof(uint16_t), "bf16 weights");
    m->params_bf16_stale = 1;
    alloc_acts(m, A, &al);
    /* Scratch for the widest reduction (the last stage's fc1 bias gradient,
     * mlp_ratio x C3 channels, or the classifier's bias), with margin. */
    int maxc = 2 * m->channels[SV_NUM_STAGES - 1] * m->mlp_ratio;
    if (m->num_classes > maxc) maxc = m->num_classes;
    m->scratch = sv_scratch_create(maxc, model_max_split_dw(m, max_batch));
    m->bf16 = m->act_bf16 ? sv_bf16_create(0) : NULL;
    if (m->bf16) model_prepare_products(m, max_batch, 0);
    return 0;
}

void sv_model_free(sv_model *m) {
    struct sv_model_acts *A = m->acts;
    if (A && A->forward_only) {
        m->params = NULL; /* shared[0] */
        for (int i = 0; i < A->nshared; i++) sv_free(A->shared[i]);
        sv_free(A->blocks);
        sv_free(A);
    } else if (A) {
        for (int i = 0; i < A->num_blocks; i++) {
            block_acts *B = &A->blocks[i];
            sv_free(B->xs); sv_free(B->ln); sv_free(B->mean); sv_free(B->rstd);
            sv_free(B->h); sv_free(B->a); sv_free(B->out);
            sv_free(B->mask2); sv_free(B->dp); sv_free(B->keys1); sv_free(B->keys2);
            sv_free(B->keys_dp);
        }
        for (int s = 0; s < SV_NUM_STAGES - 1; s++) {
            merge_acts *M = &A->merges[s];
            sv_free(M->mean); sv_free(M->rstd); sv_free(M->cols); sv_free(M->out);
        }
        sv_free(A->blocks); sv_free(A->patch_cols); sv_free(A->patch_out);
        sv_free(A->pooled); sv_free(A->logits); sv_free(A->z); sv_free(A->dh);
        sv_free(A->dln); sv_free(A->dx0); sv_free(A->dx1); sv_free(A->dcols);
        sv_free(A->dpooled); sv_free(A);
    }
    sv_free(m->params);
    sv_free(m->grads);
    sv_free(m->params_bf16);
    free(m->tensors);
    sv_bf16_free(m->bf16);
    sv_scratch_free(m->scratch);
    memset(m, 0, sizeof *m);
}

void sv_model_params_changed(sv_model *m) { m->params_bf16_stale = 1; }

/* bf16: the weights' copy, rounded again if params changed since. */
static void refresh_bf16_weights(sv_model *m) {
    if (!m->params_bf16 || !m->params_bf16_stale) return;
    sv_bf16_round_array(m->params_bf16, m->params, m->num_params);
    m->params_bf16_stale = 0;
}

void sv_model_init_weights(sv_model *m, uint64_t seed) {
    sv_model_params_changed(m);
    for (int t = 0; t < m->num_tensors; t++) {
        const sv_param_info *T = &m->tensors[t];
        float *w = m->params + T->offset;
        if (T->glorot_limit > 0) {
            uint64_t key = sv_rng_key(seed, SV_RNG_INIT, (uint64_t)t, 0, 0);
            float lim = (float)T->glorot_limit;
            for (size_t i = 0; i < T->size; i++)
                w[i] = (2.0f * sv_rng_uniform(key, i) - 1.0f) * lim;
        } else {
            float v = T->glorot_limit < 0 ? 1.0f : 0.0f;
            for (size_t i = 0; i < T->size; i++) w[i] = v;
        }
    }
}

int sv_model_find(const sv_model *m, const char *name) {
    for (int t = 0; t < m->num_tensors; t++)
        if (strcmp(m->tensors[t].name, name) == 0) return t;
    return -1;
}

static inline float *P(sv_model *m, int t) { return m->params + m->tensors[t].offset; }
static inline float *G(sv_model *m, int t) { return m->grads + m->tensors[t].offset; }
/* Tensor t as a product's weight operand: its bf16 copy, or fp32. */
static inline sv_matrix W(sv_model *m, int t) {
    size_t o = m->tensors[t].offset;
    return m->params_bf16 ? sv_mat_bf16(m->params_bf16 + o) : sv_mat_f32(m->params + o);
}

const char *const sv_profile_names[SV_PROF_KINDS] = {
    "patch_gather", "patch_product", "shift_layernorm", "fc1_product", "gelu", "fc2_product",
    "residual", "merge_layernorm_gather", "merge_product", "pool", "classifier_product"};
const int sv_profile_is_product[SV_PROF_KINDS] = {0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1};

void sv_model_set_profile(sv_model *m, double *secs) { m->profile = secs; }

/* The opt-in profile (sv_model_set_profile): PROF(m, kind, call) runs call and,
 * when profiling, adds its wall time to m->profile[kind]. The kernels end with
 * their OpenMP region's barrier, so the time is the whole kernel's. */
static inline double prof_start(const sv_model *m) { return m->profile ? sv_now() : 0.0; }
static inline void prof_stop(sv_model *m, int kind, double t0) {
    if (m->profile) m->profile[kind] += sv_now() - t0;
}
#define PROF(m, kind, call)                \
    do {                                   \
        double prof_t0_ = prof_start(m);   \
        call;                              \
        prof_stop(m, kind, prof_t0_);      \
    } while (0)

static void draw_keys(block_acts *B, int N, const sv_train_rng *rng) {
    for (int n = 0; n < N; n++) {
        uint64_t id = (uint64_t)rng->sample_ids[n];
        B->keys1[n] = sv_rng_key(rng->seed, SV_RNG_DROPOUT, (uint64_t)rng->epoch, id, 2 * (uint64_t)B->layer_id);
        B->keys2[n] = sv_rng_key(rng->seed, SV_RNG_DROPOUT, (uint64_t)rng->epoch, id, 2 * (uint64_t)B->layer_id + 1);
        B->keys_dp[n] = sv_rng_key(rng->seed, SV_RNG_DROPPATH, (uint64_t)rng->epoch, id, (uint64_t)B->layer_id);
    }
}

/* One shift block: out = shift(x) + DropPath(Dropout(fc2(Dropout(GELU(fc1(LN(shift(x)))))))). */
static void block_forward(sv_model *m, block_acts *B, const float *x, int N,
                          const sv_train_rng *rng) {
    struct sv_model_acts *A = m->acts;
    int S = m->sides[B->stage], C = m->channels[B->stage], H = m->mlp_ratio * C;
    int T = N * S * S;
    int training = rng != NULL;
    if (training) draw_keys(B, N, rng);
    PROF(m, SV_PROF_SHIFT_LN,
         sv_shift_layernorm_forward(B->xs, B->ln, act_type(m), B->mean, B->rstd, x, P(m, B->p.ln_g),
                                    P(m, B->p.ln_b), N, S, S, C, m->num_div, m->shift_pixel, m->eps));
    /* The biases are added inside the GELU and residual kernels, which sweep
     * over those tensors anyway. */
    PROF(m, SV_PROF_FC1, sv_dense_forward_mp(m->bf16, B->h, act(m, B->ln), W(m, B->p.fc1_w), NULL, T, C, H));
    PROF(m, SV_PROF_GELU,
         sv_gelu_dropout_forward(B->a, act_type(m), B->h, P(m, B->p.fc1_b), N, S * S, H,
                                 training ? B->keys1 : NULL, m->dropout, training));
    PROF(m, SV_PROF_FC2, sv_dense_forward_mp(m->bf16, A->z, act(m, B->a), W(m, B->p.fc2_w), NULL, T, H, C));
    int use_dp = training && B->drop_path_rate > 0.f;
    if (use_dp) sv_drop_path_scales(B->dp, N, B->keys_dp, B->drop_path_rate);
    PROF(m, SV_PROF_RESIDUAL,
         sv_residual_dropout_forward(B->out, B->mask2, B->xs, A->z, P(m, B->p.fc2_b), N, S * S, C,
                                     training ? B->keys2 : NULL, m->dropout, use_dp ? B->dp : NULL));
}

static void merge_forward(sv_model *m, int s, const float *x, int N) {
    merge_acts *M = &m->acts->merges[s];
    int S = m->sides[s], So = m->sides[s + 1], C = m->channels[s];
    PROF(m, SV_PROF_MERGE_LN,
         sv_layernorm_window_forward(M->cols, act_type(m), M->mean, M->rstd, x, P(m, M->p.ln_g),
                                     P(m, M->p.ln_b), N, S, S, C, 2, m->eps));
    PROF(m, SV_PROF_MERGE_PRODUCT,
         sv_dense_forward_mp(m->bf16, M->out, act(m, M->cols), W(m, M->p.red_w), NULL, N * So * So, 4 * C, 2 * C));
}

const float *sv_model_forward(sv_model *m, const float *x, int N,
                              const sv_train_rng *rng) {
    SV_CHECK(N >= 1 && N <= m->max_batch);
    SV_CHECK(!(rng && m->forward_only)); /* a forward-only model has no room for training */
    struct sv_model_acts *A = m->acts;
    int p = m->patch_size, S0 = m->sides[0];
    refresh_bf16_weights(m);
    PROF(m, SV_PROF_PATCH_GATHER,
         sv_window_gather(A->patch_cols, act_type(m), x, N, m->image_size, m->image_size, 3, p));
    PROF(m, SV_PROF_PATCH_PRODUCT,
         sv_dense_forward_mp(m->bf16, A->patch_out, act(m, A->patch_cols), W(m, A->patch_w), P(m, A->patch_b),
                             N * S0 * S0, p * p * 3, m->channels[0]));
    const float *cur = A->patch_out;
    int bi = 0;
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        for (int b = 0; b < m->depths[s]; b++, bi++) {
            block_forward(m, &A->blocks[bi], cur, N, rng);
            cur = A->blocks[bi].out;
        }
        if (s < SV_NUM_STAGES - 1) {
            merge_forward(m, s, cur, N);
            cur = A->merges[s].out;
        }
    }
    int S3 = m->sides[SV_NUM_STAGES - 1], C3 = m->channels[SV_NUM_STAGES - 1];
    PROF(m, SV_PROF_POOL, sv_avgpool_forward(A->pooled, cur, N, S3 * S3, C3));
    PROF(m, SV_PROF_HEAD,
         sv_dense_forward_mp(m->bf16, A->logits, sv_mat_f32(A->pooled), W(m, A->head_w), P(m, A->head_b), N, C3,
                             m->num_classes));
    A->last_n = N;
    A->last_training = rng != NULL;
    return A->logits;
}

static void notify(sv_model *m, sv_grad_ready_fn ready, void *ctx, int tensor) {
    if (ready) ready(ctx, m->tensors[tensor].offset);
}

/* dy: gradient of the block output; on return dx holds the gradient of its input. */
static void block_backward(sv_model *m, block_acts *B, float *dy, float *dx, int N,
                           sv_grad_ready_fn ready, void *ctx) {
    struct sv_model_acts *A = m->acts;
    int S = m->sides[B->stage], C = m->channels[B->stage], H = m->mlp_ratio * C;
    int T = N * S * S;
    int use_mask = m->dropout > 0.f;
    int use_dp = B->drop_path_rate > 0.f;
    /* dz (fc2's output gradient) goes to A->z; in bf16 the d GELU-dropout
     * input goes to B->a, which nothing reads after fc2's weight gradient. */
    sv_residual_dropout_backward(m->scratch, A->z, act_type(m), G(m, B->p.fc2_b), dy, B->mask2, N, S * S, C,
                                 use_mask, m->dropout, use_dp ? B->dp : NULL);
    sv_dense_backward_mp(m->bf16, m->scratch, A->dh, G(m, B->p.fc2_w), NULL, act(m, A->z), act(m, B->a),
                         W(m, B->p.fc2_w), T, H, C);
    notify(m, ready, ctx, B->p.fc2_w);
    void *dh = m->act_bf16 ? B->a : A->dh;
    sv_gelu_dropout_backward(m->scratch, dh, act_type(m), G(m, B->p.fc1_b), A->dh, B->h, T, H);
    sv_dense_backward_mp(m->bf16, m->scratch, A->dln, G(m, B->p.fc1_w), NULL, act(m, dh), act(m, B->ln),
                         W(m, B->p.fc1_w), T, C, H);
    notify(m, ready, ctx, B->p.fc1_w);
    /* The residual adds the shifted x, so dy is the identity path's gradient of
     * xs; LayerNorm's input gradient adds to it before the shift's adjoint. */
    sv_layernorm_shift_backward(m->scratch, dx, G(m, B->p.ln_g), G(m, B->p.ln_b), dy, A->dln,
                                B->xs, B->mean, B->rstd, P(m, B->p.ln_g), N, S, S, C,
                                m->num_div, m->shift_pixel);
    notify(m, ready, ctx, B->p.ln_g);
}

static void merge_backward(sv_model *m, int s, const float *x, float *dy, float *dx,
                           int N, sv_grad_ready_fn ready, void *ctx) {
    struct sv_model_acts *A = m->acts;
    merge_acts *M = &A->merges[s];
    int S = m->sides[s], So = m->sides[s + 1], C = m->channels[s];
    sv_dense_backward_mp(m->bf16, m->scratch, A->dcols, G(m, M->p.red_w), NULL, sv_mat_f32(dy), act(m, M->cols),
                         W(m, M->p.red_w), N * So * So, 4 * C, 2 * C);
    notify(m, ready, ctx, M->p.red_w);
    sv_layernorm_window_backward(m->scratch, dx, G(m, M->p.ln_g), G(m, M->p.ln_b), A->dcols, x,
                                 M->mean, M->rstd, P(m, M->p.ln_g), N, S, S, C, 2);
    notify(m, ready, ctx, M->p.ln_g);
}

void sv_model_backward(sv_model *m, const float *dlogits, sv_grad_ready_fn ready,
                       void *ready_ctx) {
    struct sv_model_acts *A = m->acts;
    SV_CHECK(A->last_training);
    int N = A->last_n;
    int S3 = m->sides[SV_NUM_STAGES - 1], C3 = m->channels[SV_NUM_STAGES - 1];
    sv_dense_backward_mp(m->bf16, m->scratch, A->dpooled, G(m, A->head_w), G(m, A->head_b), sv_mat_f32(dlogits),
                         sv_mat_f32(A->pooled), W(m, A->head_w), N, C3, m->num_classes);
    notify(m, ready, ready_ctx, A->head_w);
    float *dy = A->dx0, *dx = A->dx1, *tmp;
    sv_avgpool_backward(dy, A->dpooled, N, S3 * S3, C3);
    int bi = A->num_blocks - 1;
    for (int s = SV_NUM_STAGES - 1; s >= 0; s--) {
        if (s < SV_NUM_STAGES - 1) {
            const float *x = A->blocks[bi].out; /* last block of stage s */
            merge_backward(m, s, x, dy, dx, N, ready, ready_ctx);
            tmp = dy; dy = dx; dx = tmp;
        }
        for (int b = m->depths[s] - 1; b >= 0; b--, bi--) {
            block_backward(m, &A->blocks[bi], dy, dx, N, ready, ready_ctx);
            tmp = dy; dy = dx; dx = tmp;
        }
    }
    int p = m->patch_size, S0 = m->sides[0];
    sv_dense_backward_mp(m->bf16, m->scratch, NULL, G(m, A->patch_w), G(m, A->patch_b), sv_mat_f32(dy),
                         act(m, A->patch_cols), W(m, A->patch_w), N * S0 * S0, p * p * 3, m->channels[0]);
    notify(m, ready, ready_ctx, A->patch_w);
}

static void fmt_shape(char *buf, size_t n, int h, int w, int c) {
    if (h > 0) snprintf(buf, n, "(None, %d, %d, %d)", h, w, c);
    else snprintf(buf, n, "(None, %d)", c);
}

static size_t tensor_range(const sv_model *m, int first, int last) {
    size_t s = 0;
    for (int t = first; t <= last; t++) s += m->tensors[t].size;
    return s;
}

void sv_model_print_summary(const sv_model *m, FILE *f) {
    const struct sv_model_acts *A = m->acts;
    char shape[64];
    fprintf(f, "Model: \"shiftvit\"\n");
    fprintf(f, "%-44s %-24s %12s\n", "Layer", "Output Shape", "Param #");
    fprintf(f, "==============================================================================\n");
    fmt_shape(shape, sizeof shape, m->image_size, m->image_size, 3);
    fprintf(f, "%-44s %-24s %12s\n", "input", shape, "0");
    fmt_shape(shape, sizeof shape, m->sides[0], m->sides[0], m->channels[0]);
    char patch[64];
    snprintf(patch, sizeof patch, "patch_projection (Conv2D %dx%d/%d)", m->patch_size, m->patch_size, m->patch_size);
    fprintf(f, "%-44s %-24s %12zu\n", patch, shape, tensor_range(m, A->patch_w, A->patch_b));
    int bi = 0;
    char name[96];
    for (int s = 0; s < SV_NUM_STAGES; s++) {
        for (int b = 0; b < m->depths[s]; b++, bi++) {
            const block_acts *B = &A->blocks[bi];
            fmt_shape(shape, sizeof shape, m->sides[s], m->sides[s], m->channels[s]);
            snprintf(name, sizeof name, "stage%d/block%d (shift, drop_path %.3f)", s + 1, b, B->drop_path_rate);
            fprintf(f, "%-44s %-24s %12zu\n", name, shape, tensor_range(m, B->p.ln_g, B->p.fc2_b));
        }
        if (s < SV_NUM_STAGES - 1) {
            const merge_acts *M = &A->merges[s];
            fmt_shape(shape, sizeof shape, m->sides[s + 1], m->sides[s + 1], m->channels[s + 1]);
            snprintf(name, sizeof name, "stage%d/patch_merge (LN + Conv2D 2x2/2)", s + 1);
            fprintf(f, "%-44s %-24s %12zu\n", name, shape, tensor_range(m, M->p.ln_g, M->p.red_w));
        }
    }
    fmt_shape(shape, sizeof shape, 0, 0, m->channels[SV_NUM_STAGES - 1]);
    fprintf(f, "%-44s %-24s %12s\n", "global_average_pool", shape, "0");
    fmt_shape(shape, sizeof shape, 0, 0, m->num_classes);
    fprintf(f, "%-44s %-24s %12zu\n", "classifier (Dense)", shape, tensor_range(m, A->head_w, A->head_b));
    fprintf(f, "==============================================================================\n");
    char big[32];
    size_t n = m->num_params;
    if (n >= 1000000) snprintf(big, sizeof big, "%zu,%03zu,%03zu", n / 1000000, n / 1000 % 1000, n % 1000);
    else if (n >= 1000) snprintf(big, sizeof big, "%zu,%03zu", n / 1000, n % 1000);
    else snprintf(big, sizeof big, "%zu", n);
    fprintf(f, "Total params: %s\nTrainable params: %s\nNon-trainable params: 0\n", big, big);
    fprintf(f, "Forward cost: %.1f MFLOP per image (multiply-add = 2, GEMMs only)\n",
            m->flops_forward / 1e6);
}

int sv_model_tensor_index(const sv_model *m, const char *name) {
    for (int t = 0; t < m->num_tensors; t++)
        if (!strcmp(m->tensors[t].name, name)) return t;
    SV_CHECK(!"no such tensor");
    return -1;
}
