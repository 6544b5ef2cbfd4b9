/* Run configuration: INI file sections [data] [model] [optim] [train] [output].
 *
 * Every key is described once, in the table of src/config/config_keys.c (field, type,
 * range, default, documentation): the defaults (the SPEC section 1 recipe;
 * configs/cifar10_keras.ini spells them out), the parser, the writer, the
 * --help texts and the key table of configs/README.md come from it. Parsing is
 * done with inih (Debian libinih-dev), src/config/config_ini.c. A failed load or --set leaves the struct as it
 * was. sv_config_write's first line, "; shiftvit configuration: <name>",
 * carries the name (checkpoints rely on it). */
#ifndef SHIFTVIT_CONFIG_H
#define SHIFTVIT_CONFIG_H

#include <stdio.h>

#include "shiftvit/common.h" /* SV_PATH_LEN */
#include "shiftvit/model.h"  /* SV_NUM_STAGES */
#include "shiftvit/optim.h"  /* sv_decay_mode */

/* SV_PRECISION_AUTO: bf16 where the CPU has bf16 instructions, else fp32
 * (sv_precision_is_bf16, settings.h). */
typedef enum { SV_FP32 = 0, SV_BF16 = 1, SV_PRECISION_AUTO = 2 } sv_precision;
/* Their names, indexed by sv_precision, NULL-terminated: the values of
 * train.precision and of eval/predict --precision (src/config/config_keys.c). */
extern const char *const sv_precision_names[];

typedef struct {
    /* [data] */
    char data_dir[SV_PATH_LEN]; /* "" = search (see data.h sv_find_data_dir) */
    long train_size;            /* first records of data_batch_1..5 used for training (40000) */
    long val_size;              /* following records used for validation (10000) */
    long test_size;             /* records of test_batch.bin used for test; 0 = all (0) */
    int image_size;             /* model input side after crop, pixels (48) */
    int resize_size;            /* side of the bilinear resize before the crop (52) */
    int augment;                /* 1 = random crop + flip in training (1) */
    int translate;              /* random translation up to N pixels, zero fill (0 = off) */
    int cutout;                 /* side of the cutout box in pixels (0 = off) */
    int flip;                   /* sv_flip_mode (data.h): random | alternate (random) */
    int policy;                 /* sv_aug_policy (autoaugment.h): none | trivial | randaugment (none) */
    int randaugment_n;          /* RandAugment: operations per image (2) */
    int randaugment_m;          /* RandAugment: strength bin 0..30 (9) */

    /* [model] */
    int embed_dim;              /* channels of stage 1 (96) */
    int depths[SV_NUM_STAGES];  /* shift blocks per stage (2,4,8,2) */
    int mlp_ratio;              /* hidden width = mlp_ratio * C (2) */
    int num_div;                /* shift groups: C / num_div channels per direction (12) */
    int shift_pixel;            /* shift offset in pixels (1) */
    int patch_size;             /* patch projection kernel = stride (4) */
    float dropout;              /* MLP dropout rate (0.2) */
    float drop_path;            /* max stochastic-depth rate per stage (0.2) */
    float layer_norm_eps;       /* (1e-5) */
    int num_classes;            /* (10) */

    /* [optim] */
    double lr_start;            /* (1e-5) */
    double lr_max;              /* (1e-3) */
    double warmup_fraction;     /* warmup = int(fraction * total_steps) (0.15) */
    double weight_decay;        /* (1e-4) */
    double beta1, beta2, eps;   /* (0.9, 0.999, 1e-7) */
    sv_decay_mode decay_mode;   /* tfa (w -= wd*w) | torch (w -= lr*wd*w) (tfa) */

    /* [train] */
    int epochs;                 /* (100) */
    int batch_size;             /* global batch over all ranks (256) */
    int patience;               /* early stopping after N validations without a better val top-1; 0 = off (5) */
    unsigned long long seed;    /* (42) */
    long max_steps;             /* stop after this many updates; 0 = no limit (0) */
    int log_every;              /* progress line every N steps when stdout is not a terminal (20) */
    int eval_batch_size;        /* global batch for evaluation (256) */
    int val_every;              /* validate after every N-th epoch and the last one (1) */
    float label_smoothing;      /* cross-entropy target smoothing, in [0, 1) (0) */
    int tta_flip;               /* evaluation averages the logits of each image and its mirror (0) */
    int tta_translate;          /* evaluation adds the views moved by (+N, +N) and (-N, -N) pixels; 0 = off (0) */
    sv_precision precision;     /* fp32 | bf16: operands of the matrix products (fp32) */
    double collective_timeout;  /* seconds a collective may wait before the job is aborted; 0 = none (300) */
    int zero_stage;             /* 0: replicated AdamW state; 1: sharded over ranks (ZeRO stage 1) (0) */
    double ema_decay;           /* moving average of the weights, evaluated and checkpointed; 0 = off (0) */
    int accumulation_steps;     /* micro-steps per optimizer step (gradient accumulation) (1) */
    int allreduce_dtype;        /* gradient exchange: 0 fp32, 1 bf16 (fp32 partial sums) (0) */
    char trace_steps[SV_PATH_LEN]; /* --trace records steps FIRST-LAST; "" = every step ("") */

    /* [output] */
    char out_dir[SV_PATH_LEN];  /* "" = results/runs/<config name>-<timestamp> */
    int checkpoint_every;       /* epochs between checkpoints (1) */
    int keep_last;              /* epoch checkpoints kept besides best.h5 and last.h5 (3) */

    /* Not a key: basename of the config file without .ini, for default out_dir. */
    char name[256];
} sv_config;

/* Fills c with the SPEC recipe defaults: each key's default text from the
 * key table, parsed as a file's value would be (so 0.2 is the float 0.2f). */
void sv_config_defaults(sv_config *c);

typedef enum {
    SV_KEYS_SUMMARY,  /* one line per key: "  section.key = default  first sentence" (train --help) */
    SV_KEYS_TEXT,     /* by section, each key with its whole meaning wrapped at 80 columns */
    SV_KEYS_MARKDOWN, /* the "| Section | Key | Default | Meaning |" table of configs/README.md */
} sv_keys_format;

/* Writes the documentation of every key, in table order, to f. */
void sv_config_describe_keys(FILE *f, sv_keys_format format);

/* Reads an INI file onto c (keys not in the file keep their current value).
 * Errors (-1, message in err[SV_ERR_LEN]): unreadable file, empty file, binary
 * content, syntax error, unknown section or key, malformed or out-of-range
 * value; the message names file, line, section.key and the value. Sets c->name. */
int sv_config_load(sv_config *c, const char *path, char *err);

/* Same as sv_config_load but from a string; `origin` names it in messages
 * (e.g. "checkpoint.h5:/config"). */
int sv_config_load_string(sv_config *c, const char *text, const char *origin, char *err);

/* Applies one "section.key=value" override (the --set flag). Same checks and
 * messages as the file parser, with origin "--set". */
int sv_config_set(sv_config *c, const char *assignment, char *err);

/* Cross-field checks after all overrides: embed_dim divisible by num_div,
 * image_size divisible by patch_size, resize_size >= image_size, positive sizes,
 * lr_max >= lr_start, warmup <= total steps (SPEC section 1), etc. The message
 * names the keys and values involved. */
int sv_config_validate(const sv_config *c, char *err);

/* Writes c as an INI file that sv_config_load reads back to the same values. */
void sv_config_write(const sv_config *c, FILE *f);

/* One key whose value differs between two configs (sv_config_diff). */
typedef struct {
    char key[48];              /* "section.key" */
    char before[SV_PATH_LEN];  /* the values as sv_config_write writes them */
    char after[SV_PATH_LEN];
    int trajectory;            /* 1 if the key changes the run's trajectory (the
                                * weights of some step): batch size, seed, data
                                * sizes, augmentation, model, optimiser, schedule
                                * length, stopping rules, loss; 0 for data.dir,
                                * train.max_steps, train.log_every,
                                * train.eval_batch_size, train.precision and
                                * [output] */
} sv_config_change;

/* Compares every key of `before` and `after` (name is not a key); stores the
 * first `max` differences in key order into out and returns how many keys
 * differ. Used by resume to refuse or record changes (issue 14, section 3). */
int sv_config_diff(const sv_config *before, const sv_config *after, sv_config_change *out,
                   int max);

/* Total optimiser steps as the recipe counts them: int(train_size / batch * epochs)
 * with real division (SPEC section 1: 15625 for 100 epochs). */
long sv_config_total_steps(const sv_config *c);
/* Warmup steps: int(warmup_fraction * total_steps) (2343 for the recipe). */
long sv_config_warmup_steps(const sv_config *c);
/* train.trace_steps as steps first..last: "FIRST-LAST" (1 <= FIRST <= LAST),
 * "FIRST-" (to the end) or "" (every step: 1..LONG_MAX). 0, or -1 when the
 * text is none of these (sv_config_validate names the key). */
int sv_config_step_window(const char *text, long *first, long *last);

#endif
