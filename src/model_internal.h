/* Internal to the model (src/model.c, src/model_products.c): the dense
 * layers' matrix products as a list of shapes. */
#ifndef SHIFTVIT_MODEL_INTERNAL_H
#define SHIFTVIT_MODEL_INTERNAL_H

#include <stddef.h>

#include "shiftvit/model.h"

/* bf16: the products of every dense layer at a batch of N (forward, input
 * gradient, weight gradient: whole or split along T, as gemm.c runs them),
 * prepared at model creation (gemm_bf16.h sv_bf16_prepare). */
void model_prepare_products(sv_model *m, int N);

/* Floats of the largest weight gradient that gemm.c splits at a batch of N
 * (layers.h sv_dense_dw_parts): the size of the scratch's partials. */
size_t model_max_split_dw(const sv_model *m, int N);

#endif
