/* The settings each module takes, filled from the config (issue 25). The
 * model (model.h), the batches (data.h) and AdamW (optim.h) take their own
 * settings struct and know nothing of sv_config; the trainer and the
 * commands fill those structs here, from the keys of the config. */
#ifndef SHIFTVIT_SETTINGS_H
#define SHIFTVIT_SETTINGS_H

#include "shiftvit/config.h"
#include "shiftvit/data.h"
#include "shiftvit/model.h"
#include "shiftvit/optim.h"

/* 1 if a model of train.precision p runs its products in bf16: p is bf16, or
 * auto on a CPU where sv_bf16_native_cpu() holds (gemm_bf16.h). */
int sv_precision_is_bf16(int p);

/* [model] keys, data.image_size and train.precision (resolved by
 * sv_precision_is_bf16). */
sv_model_settings sv_model_settings_from(const sv_config *c);

/* data.image_size, resize_size, augment, translate, cutout, flip and train.seed. */
sv_batch_settings sv_batch_settings_from(const sv_config *c);

/* optim.beta1, beta2, eps, weight_decay and decay_mode. */
sv_adamw_settings sv_adamw_settings_from(const sv_config *c);

#endif
