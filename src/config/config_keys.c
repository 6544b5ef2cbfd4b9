/* The config keys: one table with each key's field, type, range, default and
 * documentation. The defaults (sv_config_defaults), the parser and validator
 * (config_value.c, config_ini.c), the writer, `shiftvit train --help`,
 * `shiftvit info --keys` and the key table of configs/README.md all come from
 * it (tests/test_config.c fails when the README drifts). Defaults are the
 * SPEC section 1 recipe. */
#include "config_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OFF(field) offsetof(sv_config, field)
#define INT(f, lo, hi) .type = K_INT, .off = OFF(f), .imin = (lo), .imax = (hi)
#define LONG(f, lo, hi) .type = K_LONG, .off = OFF(f), .imin = (lo), .imax = (hi)
#define DEPTHS(f, lo, hi) .type = K_DEPTHS, .off = OFF(f), .imin = (lo), .imax = (hi)
#define REAL(t, f, lo, lo_open, hi, hi_open) \
    .type = K_##t, .off = OFF(f), .rmin = (lo), .rmin_open = (lo_open), .rmax = (hi), .rmax_open = (hi_open)
#define ULL(f) .type = K_ULL, .off = OFF(f)
#define BOOL(f) .type = K_BOOL, .off = OFF(f)
#define TEXT(f) .type = K_TEXT, .off = OFF(f)
#define CHOICE(f, names) .type = K_CHOICE, .off = OFF(f), .choices = (names)

#define BIG 1000000000LL /* upper bound for sizes: keeps total_steps far from overflow */

/* Index = value of sv_decay_mode / sv_precision. */
static const char *const decay_names[] = {"tfa", "torch", NULL};
const char *const sv_precision_names[] = {"fp32", "bf16", "auto", NULL};
static const char *const flip_names[] = {"random", "alternate", NULL}; /* sv_flip_mode */
/* Index = value of sv_aug_policy (autoaugment.h). */
static const char *const policy_names[] = {"none", "trivial", "randaugment", NULL};
/* Index = value of sv_config.allreduce_dtype. */
static const char *const allreduce_dtype_names[] = {"fp32", "bf16", NULL};

const key_def sv_config_keys[] = {
    {"data", "dir", TEXT(data_dir), .def = "", .resumable = 1,
     .doc = "Folder with `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin` (CIFAR-10 "
          "binary version). Empty: search the usual places."},
    {"data", "train_size", LONG(train_size, 1, BIG), .def = "40000",
     .doc = "Training images: the first `train_size` records of `data_batch_1..5`, in file order. "
          ">= 1."},
    {"data", "val_size", LONG(val_size, 0, BIG), .def = "10000", .note = "(0 = none)",
     .doc = "Validation images: the `val_size` records that follow the training ones. 0 = no "
          "validation split, for the final run on the whole training set once the "
          "hyper-parameters are chosen (`train_size = 50000`): no epoch validates, no "
          "`best.h5` is written (the test line and `predict` use the final weights: `last.h5` "
          "or the epoch checkpoints), and `train.patience` must be 0. >= 0."},
    {"data", "test_size", LONG(test_size, 0, BIG), .def = "0",
     .doc = "Test images taken from `test_batch.bin`; 0 = all. >= 0."},
    {"data", "image_size", INT(image_size, 1, 4096), .def = "48",
     .doc = "Model input side in pixels, after the crop. Divisible by `model.patch_size`."},
    {"data", "resize_size", INT(resize_size, 1, 4096), .def = "52",
     .doc = "Side of the bilinear resize (from 32) done before the crop. >= `image_size`."},
    {"data", "augment", BOOL(augment), .def = "true",
     .doc = "Random `image_size` crop and horizontal flip in training (evaluation always resizes to "
          "`image_size`)."},
    {"data", "flip", CHOICE(flip, flip_names), .def = "random",
     .doc = "With `augment`: `random` flips each image with probability 1/2 every epoch (the "
          "recipe); `alternate` flips it at random in epoch 0 (the same draw as `random`) and then "
          "on alternate epochs relative to that, so each image is seen both ways in every two "
          "epochs (KellerJordan/cifar10-airbench). Keyed by (seed, image), so any world size and "
          "a resume see the same flips."},
    {"data", "translate", INT(translate, 0, 4096), .def = "0",
     .doc = "With `augment`: after crop and flip, move the image by (dy, dx), each uniform in "
          "[-`translate`, `translate`] pixels, filling with black: the pad-and-crop of CIFAR "
          "training (Zagoruyko & Komodakis 2016 use 4). Drawn per (seed, epoch, image), so any "
          "world size sees the same images. 0 = off (the recipe). < `image_size`."},
    {"data", "cutout", INT(cutout, 0, 4096), .def = "0",
     .doc = "With `augment`: after the translation, set a square of `cutout` x `cutout` pixels "
          "to black, its centre uniform over the image and the box clipped at the border "
          "(DeVries & Taylor 2017). 0 = off (the recipe). <= `image_size`."},
    {"data", "policy", CHOICE(policy, policy_names), .def = "none",
     .doc = "With `augment`: an automatic augmentation policy applied to the 32x32 image before "
          "the crop. `trivial`: TrivialAugment (Mueller & Hutter 2021), one of 14 operations "
          "(shear, translation, rotation, brightness, colour, contrast, sharpness, posterize, "
          "solarize, autocontrast, equalize, identity) per image at a uniform strength from "
          "torchvision's TrivialAugmentWide table; `randaugment`: RandAugment (Cubuk et al. "
          "2020), `randaugment_n` operations at strength bin `randaugment_m`. Each operation "
          "matches PIL's to the bit; drawn per (seed, epoch, image). `none` = off (the recipe)."},
    {"data", "randaugment_n", INT(randaugment_n, 1, 8) /* SV_AA_MAX_OPS */, .def = "2",
     .doc = "With `policy = randaugment`: operations per image, each chosen at random (with "
          "replacement). 1..8."},
    {"data", "randaugment_m", INT(randaugment_m, 0, 30) /* SV_AA_BINS - 1 */, .def = "9",
     .doc = "With `policy = randaugment`: strength bin of every operation, 0 (none) .. 30 "
          "(strongest; torchvision's 31 bins: shear 0.3, translation 14.5 px, rotation 30 "
          "degrees, enhancement +-0.9 at 30). 0..30."},
    {"model", "embed_dim", INT(embed_dim, 1, 65536), .def = "96",
     .doc = "Channels of stage 1; each patch merging doubles them (96, 192, 384, 768). Divisible by "
          "`num_div`."},
    {"model", "depths", DEPTHS(depths, 1, 1024), .def = "2,4,8,2",
     .doc = "Shift blocks per stage: exactly 4 comma-separated integers, each >= 1."},
    {"model", "mlp_ratio", INT(mlp_ratio, 1, 64), .def = "2",
     .doc = "MLP hidden width = `mlp_ratio` x channels."},
    {"model", "num_div", INT(num_div, 4, 65536), .def = "12", .note = "(the 4 shift directions need 4 channel groups)",
     .doc = "Shift groups: `channels / num_div` channels move in each of the 4 directions (left, "
          "right, up, down), the rest stay. >= 4."},
    {"model", "shift_pixel", INT(shift_pixel, 0, 4096), .def = "1",
     .doc = "Shift offset in pixels (0 = no shift)."},
    {"model", "patch_size", INT(patch_size, 1, 4096), .def = "4",
     .doc = "Patch projection kernel and stride (48 / 4 = 12 x 12 tokens)."},
    {"model", "dropout", REAL(FLOAT, dropout, 0, 0, 1, 1), .def = "0.2",
     .doc = "Dropout rate after each MLP dense layer, in [0, 1)."},
    {"model", "drop_path", REAL(FLOAT, drop_path, 0, 0, 1, 1), .def = "0.2",
     .doc = "Largest stochastic-depth rate; rates are linspace(0, `drop_path`, depth) inside each "
          "stage. In [0, 1)."},
    {"model", "layer_norm_eps", REAL(FLOAT, layer_norm_eps, 0, 1, INFINITY, 0), .def = "1e-5",
     .doc = "LayerNorm epsilon, > 0."},
    {"model", "num_classes", INT(num_classes, 2, 1000000), .def = "10",
     .doc = "Output classes, >= 2."},
    {"optim", "lr_start", REAL(DOUBLE, lr_start, 0, 0, INFINITY, 0), .def = "1e-5",
     .doc = "Learning rate at step 0, start of the linear warmup. >= 0."},
    {"optim", "lr_max", REAL(DOUBLE, lr_max, 0, 1, INFINITY, 0), .def = "1e-3",
     .doc = "Peak learning rate at the end of warmup, followed by cosine decay to 0. >= `lr_start`."},
    {"optim", "warmup_fraction", REAL(DOUBLE, warmup_fraction, 0, 0, 1, 1), .def = "0.15",
     .doc = "Warmup steps = int(`warmup_fraction` x total steps), in [0, 1). Total steps = "
          "int(`train_size` / `batch_size` x `epochs`) (15625 and 2343 warmup for the recipe)."},
    {"optim", "weight_decay", REAL(DOUBLE, weight_decay, 0, 0, 1, 1), .def = "1e-4",
     .doc = "Decoupled weight decay, applied to every trainable variable. In [0, 1)."},
    {"optim", "beta1", REAL(DOUBLE, beta1, 0, 0, 1, 1), .def = "0.9",
     .doc = "Adam first-moment decay, in [0, 1)."},
    {"optim", "beta2", REAL(DOUBLE, beta2, 0, 0, 1, 1), .def = "0.999",
     .doc = "Adam second-moment decay, in [0, 1)."},
    {"optim", "eps", REAL(DOUBLE, eps, 0, 1, INFINITY, 0), .def = "1e-7",
     .doc = "Adam epsilon (Keras convention), > 0."},
    {"optim", "decay_mode", CHOICE(decay_mode, decay_names), .def = "tfa",
     .doc = "`tfa`: w -= wd x w before the Adam step (TensorFlow Addons AdamW, the recipe); "
          "`torch`: w -= lr x wd x w (PyTorch AdamW)."},
    {"train", "epochs", INT(epochs, 1, 1000000), .def = "100",
     .doc = "Maximum number of epochs."},
    {"train", "batch_size", INT(batch_size, 1, 1 << 24), .def = "256",
     .doc = "Global batch size, split over all MPI ranks (remainder to the first ranks)."},
    {"train", "patience", INT(patience, 0, 1000000), .def = "5", .note = "(0 = off)",
     .doc = "Early stopping: stop after this many validations in a row (epochs, with `val_every` = "
          "1) without a better validation top-1. 0 = off."},
    {"train", "seed", ULL(seed), .def = "42",
     .doc = "Seed of every random draw (initial weights, shuffling, crops, flips, dropout, drop "
          "path); 0 .. 2^64-1."},
    {"train", "max_steps", LONG(max_steps, 0, LONG_MAX), .def = "0", .resumable = 1,
     .doc = "Stop after this many optimiser steps (the schedule is unchanged); 0 = no limit."},
    {"train", "log_every", INT(log_every, 1, INT_MAX), .def = "20", .resumable = 1,
     .doc = "A progress line every N steps when stdout is not a terminal. >= 1."},
    {"train", "eval_batch_size", INT(eval_batch_size, 1, 1 << 24), .def = "256", .resumable = 1,
     .doc = "Global batch size for validation and test."},
    {"train", "val_every", INT(val_every, 1, 1000000), .def = "1",
     .doc = "Validate after every N-th epoch and after the last one. Epochs in between have `nan` "
          "in the `val_*` columns of `metrics_epochs.csv` and `metrics.h5`; `patience` then "
          "counts validations, not epochs, and `best.h5` is chosen among validated epochs. >= 1."},
    {"train", "label_smoothing", REAL(FLOAT, label_smoothing, 0, 0, 1, 1), .def = "0",
     .doc = "Label smoothing of the training loss (Keras "
          "`CategoricalCrossentropy(label_smoothing=...)`): target (1 - s) on the label plus s / "
          "`num_classes` on every class. The training loss in the logs is this smoothed loss; "
          "validation and test loss stay the plain cross-entropy, so runs with and without "
          "smoothing compare. In [0, 1); 0 = off (the recipe)."},
    {"train", "tta_flip", BOOL(tta_flip), .def = "false",
     .doc = "Flip test-time augmentation: validation, test, `eval` and `predict` average the "
          "logits of each image and of its horizontal mirror (two forward passes). Changes "
          "evaluation only, not training. false = off (the recipe)."},
    {"train", "tta_translate", INT(tta_translate, 0, 4096), .def = "0",
     .doc = "Translation test-time augmentation (KellerJordan/cifar10-airbench's multi-crop): "
          "validation, test, `eval` and `predict` also evaluate each image moved by (+N, +N) "
          "and by (-N, -N) pixels, the border filled by reflection, each with its mirror when "
          "`tta_flip`; the unmoved view(s) weigh 1/2 in the mean of the logits, the moved ones "
          "1/2 together. 3x the forward passes. Changes evaluation only. 0 = off (the recipe). "
          "< `image_size`."},
    {"train", "precision", CHOICE(precision, sv_precision_names), .def = "fp32", .resumable = 1,
     .doc = "Operands of the matrix products (every dense layer's forward, input-gradient and "
          "weight-gradient product): `fp32` (BLIS, the recipe), `bf16` (rounded to bf16, "
          "nearest even, fp32 accumulation, through oneDNN; emulated by rounding + BLIS on CPUs "
          "without AVX512_BF16 or AMX-BF16). Master weights, gradients, optimizer state, the "
          "all-reduce and checkpoints stay fp32; the weights' bf16 copy and the activations that "
          "only feed products are stored in bf16 (less memory than fp32). The training step runs "
          "1.7-1.9x the fp32 one on the AVX512_BF16 development VM and 2.2-2.6x on a Xeon with "
          "AMX-BF16 (`results/bench/`). `auto`: bf16 where the CPU has AVX512_BF16 or AMX-BF16, "
          "else fp32. A resume may change it (the log says so)."},
    {"train", "collective_timeout", REAL(DOUBLE, collective_timeout, 0, 0, INFINITY, 0), .def = "300", .resumable = 1,
     .doc = "Seconds a collective (the gradient all-reduce, a metrics all-reduce, a broadcast, a "
          "barrier) may wait before the job is aborted with exit status 5: a rank that waits "
          "longer names the collective, the step and the ranks that did not answer a probe (lost "
          "node or link, killed or frozen process), then calls `MPI_Abort`. Without it a peer "
          "that vanished without a TCP reset keeps every rank waiting for as long as TCP "
          "retransmits (minutes). `SHIFTVIT_COLLECTIVE_TIMEOUT` in the environment overrides it "
          "(a job script can set it for every command). >= 0; 0 = no timeout. A resume may change "
          "it."},
    {"train", "zero_stage", INT(zero_stage, 0, 1), .def = "0", .note = "(0: every rank holds the AdamW state; 1: each rank holds 1/P of it)", .resumable = 1,
     .doc = "Optimizer-state sharding. 0: every rank holds AdamW's moments for all parameters and "
          "all-reduces the gradient. 1 (ZeRO stage 1): each 4 MiB gradient bucket is "
          "reduce-scattered, each rank keeps the moments of its 1/P of every bucket and updates "
          "only those parameters, then the parameters are all-gathered; the AdamW state per rank "
          "drops from 2 x 44.6 MiB to 2 x 44.6 / P MiB (plus the 44.6 / P MiB reduced-gradient "
          "shard). Same updates to float rounding (bitwise with 2 ranks); checkpoints keep stage "
          "0's layout (rank 0 gathers the moments), so a run may resume under either stage and "
          "any world size. No effect with one rank."},
    {"train", "ema_decay", REAL(DOUBLE, ema_decay, 0, 0, 1, 1), .def = "0",
     .doc = "Exponential moving average of the weights: after every update ema = d ema + (1 - d) "
          "w, with d = min(`ema_decay`, (1 + t) / (10 + t)) after t updates (the warm-up of "
          "TensorFlow's `ExponentialMovingAverage` with `num_updates`), started at the initial "
          "weights. Validation, test, early stopping and `best.h5` then use the average (the "
          "epoch line says `val (ema)`, and the `val_*` metrics are the average's); checkpoints hold it as `/ema` beside `/model`, and "
          "`eval`, `predict` and the exporters take `--weights ema|raw` (default: ema when the "
          "checkpoint has it). Typical 0.999-0.9999. In [0, 1); 0 = off (the recipe)."},
    {"train", "accumulation_steps", INT(accumulation_steps, 1, 1 << 24), .def = "1", .resumable = 1,
     .doc = "Gradient accumulation: each optimizer step runs this many micro-steps on every rank, "
          "the global batch `batch_size` being split over world size x `accumulation_steps` "
          "micro-batches (remainder to the first ones); gradients add up locally and the "
          "all-reduce (or ZeRO's reduce-scatter) runs during the last micro-step's backward only. "
          "Samples, augmentations and dropout/drop path masks are drawn per global sample, so "
          "P ranks x A micro-steps follow the trajectory of P x A ranks x 1 to float rounding, "
          "with activations sized for the micro-batch (less memory). >= 1, and world size x "
          "`accumulation_steps` <= `batch_size`. A resume may change it (the global batch, and "
          "so the trajectory, stay; the log says so)."},
    {"train", "allreduce_dtype", CHOICE(allreduce_dtype, allreduce_dtype_names), .def = "fp32", .resumable = 1,
     .doc = "Type the gradient travels in between ranks. `fp32`: MPI all-reduce (the recipe). "
          "`bf16`: half the bytes; each rank sends its gradient rounded to bf16 straight to the "
          "rank that owns each segment (a pairwise reduce-scatter), which adds them to its own "
          "fp32 gradient in fp32, in rank order; the sums are rounded to bf16 once and "
          "all-gathered, so every rank holds the same gradient (with `zero_stage` = 1 each rank "
          "keeps its rounded shard). Error per element: one bf16 rounding of each other rank's "
          "contribution plus one of the sum, never a bf16 addition. No effect with one rank. A "
          "resume may change it (recorded in the checkpoints' `/config_changes`)."},
    {"train", "trace_steps", TEXT(trace_steps), .def = "", .resumable = 1,
     .doc = "With `--trace`: record the steps `FIRST-LAST` (optimizer steps, 1-based, e.g. "
          "`1000-1100`) or `FIRST-` (to the end); empty = every step. Checkpoints, evaluations "
          "and waits are recorded whatever the window. A long run fills the trace's buffer "
          "(2^18 events per rank, about 10,000 steps of the recipe model): the steps after it "
          "are dropped and the run says so, so choose the window to look at."},
    {"output", "dir", TEXT(out_dir), .def = "", .resumable = 1,
     .doc = "Run folder for metrics and checkpoints. Empty: `results/runs/<config "
          "name>-<timestamp>`, the config name being the file name without `.ini`."},
    {"output", "checkpoint_every", INT(checkpoint_every, 1, 1000000), .def = "1", .resumable = 1,
     .doc = "Epochs between checkpoints, >= 1."},
    {"output", "keep_last", INT(keep_last, 0, 1000000), .def = "3", .resumable = 1,
     .doc = "Epoch checkpoints kept besides `best.h5` and `last.h5`; 0 = none."},
};
const size_t sv_config_num_keys = sizeof sv_config_keys / sizeof sv_config_keys[0];

static const char *const sections[] = {"data", "model", "optim", "train", "output"};

int cfg_known_section(const char *s, size_t n) {
    for (size_t i = 0; i < sizeof sections / sizeof *sections; i++)
        if (strlen(sections[i]) == n && memcmp(sections[i], s, n) == 0) return 1;
    return 0;
}

const key_def *cfg_find_key(const char *section, const char *name) {
    for (size_t i = 0; i < sv_config_num_keys; i++)
        if (strcmp(sv_config_keys[i].section, section) == 0 && strcmp(sv_config_keys[i].name, name) == 0)
            return &sv_config_keys[i];
    return NULL;
}

void sv_config_defaults(sv_config *c) {
    memset(c, 0, sizeof *c); /* also zeroes padding and the string buffers */
    for (size_t i = 0; i < sv_config_num_keys; i++) {
        const key_def *k = &sv_config_keys[i];
        char why[256];
        if (cfg_parse_value(c, k, k->def, why, sizeof why) != 0) {
            /* A table error, caught by the first test run. */
            fprintf(stderr, "shiftvit: internal error: default of [%s] %s = \"%s\": %s\n", k->section, k->name,
                    k->def, why);
            abort();
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Documentation                                                            */

/* Markdown to plain text: code spans lose their backticks, "*(empty)*" its stars. */
static void plain(const char *md, char *out, size_t n) {
    size_t j = 0;
    for (size_t i = 0; md[i] && j + 1 < n; i++)
        if (md[i] != '`') out[j++] = md[i];
    out[j] = '\0';
}

/* Writes text[0..len) wrapped at `width` columns: the first line after
 * `lead` (padded to `indent` columns), the others indented by `indent`. */
static void wrap(FILE *f, const char *lead, const char *text, int len, int indent, int width) {
    const char *p = text, *stop = text + len;
    fprintf(f, "%-*s", indent, lead);
    int first = 1;
    while (p < stop) {
        while (p < stop && *p == ' ') p++;
        const char *end = p, *cut = NULL;
        while (end < stop && end - p <= width - indent) {
            if (*end == ' ') cut = end;
            end++;
        }
        if (end < stop && cut) end = cut;
        fprintf(f, "%*s%.*s\n", first ? 0 : indent, "", (int)(end - p), p);
        first = 0;
        p = end;
    }
    if (first) fputc('\n', f);
}

/* The first sentence of a plain-text doc: up to ". " before a capital letter. */
static int first_sentence(const char *s) {
    for (int i = 1; s[i]; i++)
        if (s[i] == '.' && s[i - 1] != '.' && s[i + 1] == ' ' && s[i + 2] >= 'A' && s[i + 2] <= 'Z')
            return i + 1;
    return (int)strlen(s);
}

static void describe_markdown(FILE *f) {
    fprintf(f, "| Section | Key | Default | Meaning |\n| --- | --- | --- | --- |\n");
    for (size_t i = 0; i < sv_config_num_keys; i++) {
        const key_def *k = &sv_config_keys[i];
        fprintf(f, "| %s | `%s` | %s | %s |\n", k->section, k->name, *k->def ? k->def : "*(empty)*", k->doc);
    }
}

void sv_config_describe_keys(FILE *f, sv_keys_format format) {
    if (format == SV_KEYS_MARKDOWN) {
        describe_markdown(f);
        return;
    }
    const char *section = "";
    for (size_t i = 0; i < sv_config_num_keys; i++) {
        const key_def *k = &sv_config_keys[i];
        char doc[2048], key[64];
        plain(k->doc, doc, sizeof doc);
        snprintf(key, sizeof key, "%s.%s = %s", k->section, k->name, *k->def ? k->def : "(empty)");
        char lead[80];
        snprintf(lead, sizeof lead, "  %s", key);
        if (format == SV_KEYS_SUMMARY) {
            wrap(f, lead, doc, first_sentence(doc), 36, 88);
            continue;
        }
        if (strcmp(section, k->section) != 0) fprintf(f, "%s[%s]\n", *section ? "\n" : "", k->section);
        section = k->section;
        fprintf(f, "%s\n", lead);
        wrap(f, "", doc, (int)strlen(doc), 6, 80);
    }
}

/* ------------------------------------------------------------------------ */
/* Differences, step counts                                                 */

int sv_config_diff(const sv_config *before, const sv_config *after, sv_config_change *out, int max) {
    int count = 0;
    for (size_t i = 0; i < sv_config_num_keys; i++) {
        const key_def *k = &sv_config_keys[i];
        char a[SV_PATH_LEN], b[SV_PATH_LEN];
        cfg_format_value(before, k, a, sizeof a);
        cfg_format_value(after, k, b, sizeof b);
        if (!strcmp(a, b)) continue;
        if (count < max) {
            sv_config_change *ch = &out[count];
            snprintf(ch->key, sizeof ch->key, "%s.%s", k->section, k->name);
            snprintf(ch->before, sizeof ch->before, "%s", a);
            snprintf(ch->after, sizeof ch->after, "%s", b);
            ch->trajectory = !k->resumable;
        }
        count++;
    }
    return count;
}
