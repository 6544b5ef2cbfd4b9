/* The modules' settings from the config (settings.h). */
#include "shiftvit/settings.h"

#include <string.h>

#include "shiftvit/gemm_bf16.h"

int sv_precision_is_bf16(int p) {
    return p == SV_BF16 || (p == SV_PRECISION_AUTO && sv_bf16_native_cpu());
}

sv_model_settings sv_model_settings_from(const sv_config *c) {
    sv_model_settings s;
    memset(&s, 0, sizeof s);
    s.image_size = c->image_size;
    s.patch_size = c->patch_size;
    s.num_classes = c->num_classes;
    s.embed_dim = c->embed_dim;
    for (int i = 0; i < SV_NUM_STAGES; i++) s.depths[i] = c->depths[i];
    s.mlp_ratio = c->mlp_ratio;
    s.num_div = c->num_div;
    s.shift_pixel = c->shift_pixel;
    s.dropout = c->dropout;
    s.drop_path = c->drop_path;
    s.eps = c->layer_norm_eps;
    s.bf16 = sv_precision_is_bf16(c->precision);
    return s;
}

/* config_keys.c (a lower layer) spells these ranges out as numbers. */
_Static_assert(SV_AA_MAX_OPS == 8 && SV_AA_BINS == 31,
               "data.randaugment_n / data.randaugment_m ranges in config_keys.c");

sv_batch_settings sv_batch_settings_from(const sv_config *c) {
    sv_batch_settings b;
    memset(&b, 0, sizeof b);
    b.image_size = c->image_size;
    b.resize_size = c->resize_size;
    b.augment = c->augment;
    b.translate = c->translate;
    b.cutout = c->cutout;
    b.flip = (sv_flip_mode)c->flip;
    b.policy = (sv_aug_policy)c->policy;
    b.policy_n = c->randaugment_n;
    b.policy_m = c->randaugment_m;
    b.seed = (uint64_t)c->seed;
    return b;
}

sv_adamw_settings sv_adamw_settings_from(const sv_config *c) {
    sv_adamw_settings s;
    memset(&s, 0, sizeof s);
    s.beta1 = c->beta1;
    s.beta2 = c->beta2;
    s.eps = c->eps;
    s.weight_decay = c->weight_decay;
    s.decay_mode = c->decay_mode;
    return s;
}
