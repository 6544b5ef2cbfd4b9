/* `shiftvit predict`: classifies the user's own JPEG/PNG photos with a
 * checkpoint (SPEC section 1 "Inference"): options, the list of inputs, the
 * decode and 32x32 resize (image.h: nearest by default, as the Keras example;
 * bilinear or area on request), the evaluation transform, forward in inference
 * mode, softmax, text or JSON output, and optionally a 3x3 grid of the images
 * titled with their predicted class (grid.h). */
#include <ctype.h>
#include <getopt.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "shiftvit/atomic_file.h"
#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/data.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/grid.h"
#include "shiftvit/image.h"
#include "shiftvit/layers.h"
#include "shiftvit/settings.h"
#include "shiftvit/train.h"
#include "shiftvit/model.h"
#include "shiftvit/text.h"


static const char *const cifar_classes[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

typedef enum { RESIZE_NEAREST, RESIZE_BILINEAR, RESIZE_AREA } resize_mode;

static void predict_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit predict --checkpoint CKPT [--top-k K] [--json] [--grid OUT.png]\n"
            "                        [--resize nearest|bilinear|area] [--precision fp32|bf16|auto]\n"
            "                        [--tta-flip on|off] [--tta-translate N] [--weights ema|raw]\n"
            "                        IMAGE_OR_DIR...\n\n"
            "Classifies JPEG and PNG images (also grayscale, with alpha, or 16-bit) with a trained\n"
            "checkpoint: each image is resized to 32x32, given the evaluation transform and\n"
            "classified. Prints per image the top-K classes with their confidence in percent and\n"
            "the softmax probabilities of all classes. A directory means every file in it, in name\n"
            "order (hidden files and .txt files are skipped).\n\n"
            "  --checkpoint CKPT  HDF5 checkpoint written by `shiftvit train` (holds the config)\n"
            "  --top-k K          classes listed per image (default 3)\n"
            "  --json             one JSON object per image and line:\n"
            "                     {\"file\":..., \"probabilities\":[...], \"logits\":[...],\n"
            "                     \"top\":[{\"class\":..., \"confidence\":...}]}, confidence as a\n"
            "                     probability in [0, 1], logits the model's float32 outputs\n"
            "  --grid OUT.png     draw up to 9 of the images, each titled with its predicted class\n"
            "                     and confidence, into a PNG file (JPEG if OUT ends in .jpg/.jpeg)\n"
            "  --resize M         how the photo is brought to 32x32: nearest (default, as the Keras\n"
            "                     example), bilinear (no antialiasing) or area (box average)\n"
            "  --precision P      fp32, bf16 or auto matrix products (default: the\n"
            "                     checkpoint's train.precision)\n"
            "  --tta-flip on|off  average the logits of each image and its mirror (default:\n"
            "                     the checkpoint's train.tta_flip)\n"
            "  --tta-translate N  also the image moved by (+N, +N) and (-N, -N) pixels, border\n"
            "                     reflected (0 = off; default: the checkpoint's train.tta_translate)\n"
            "  --weights W        ema: the moving average of the weights (/ema, runs with\n"
            "                     train.ema_decay > 0); raw: the trained weights (/model);\n"
            "                     default: ema when the checkpoint has it\n"
            "  -h, --help         this text\n\n"
            "A file that is not an image, is truncated, or declares more than %dx%d or %ld\n"
            "pixels gets an error on stderr; the other files are still classified. Exit status 1\n"
            "if any file failed, else 0.\n\n"
            "example: build/shiftvit predict --checkpoint results/runs/X/best.h5 --grid grid.png \\\n"
            "             ../shared/data/inference_set/\n",
            SV_IMAGE_MAX_SIDE, SV_IMAGE_MAX_SIDE, SV_IMAGE_MAX_PIXELS);
}

/* ------------------------------------------------------------ inputs */

static int has_ext(const char *name, const char *ext) {
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcasecmp(name + n - e, ext) == 0;
}


typedef struct {
    char **v;
    int n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = strdup(s);
    if (!l->v[l->n]) return -1;
    l->n++;
    return 0;
}

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the regular files of dir, sorted by name, skipping hidden and .txt
 * files. Returns the number added, or -1 with errno if it cannot be read. */
static int add_dir(strlist *files, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    strlist names = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || has_ext(e->d_name, ".txt")) continue;
        if (strlist_add(&names, e->d_name)) {
            closedir(d);
            strlist_free(&names);
            errno = ENOMEM;
            return -1;
        }
    }
    closedir(d);
    if (names.n) qsort(names.v, (size_t)names.n, sizeof *names.v, cmp_str);
    int added = 0;
    size_t dl = strlen(dir);
    for (int i = 0; i < names.n; i++) {
        size_t len = dl + strlen(names.v[i]) + 2;
        char *p = malloc(len);
        if (!p) break;
        snprintf(p, len, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", names.v[i]);
        struct stat sb;
        if (stat(p, &sb) == 0 && !S_ISREG(sb.st_mode)) {
            free(p); /* subdirectories and devices are not images */
            continue;
        }
        if (strlist_add(files, p) == 0) added++;
        free(p);
    }
    strlist_free(&names);
    return added;
}

/* ------------------------------------------------------------ output */

static const char *class_name(int k, int K, char *buf, size_t n) {
    if (K == 10) return cifar_classes[k];
    snprintf(buf, n, "class%d", k);
    return buf;
}

/* Softmax of one row of logits, in double: the exp of the log-softmax that
 * the training and validation losses use (layers.h). */
static void probabilities(const float *logits, int K, double *prob) {
    sv_log_softmax_row(prob, logits, K);
    for (int k = 0; k < K; k++) prob[k] = exp(prob[k]);
}

/* order = classes by descending probability, ties in class order. */
static void rank_classes(const double *prob, int K, int *order) {
    for (int k = 0; k < K; k++) order[k] = k;
    for (int a = 1; a < K; a++) { /* stable insertion sort */
        int v = order[a], b = a;
        while (b > 0 && prob[order[b - 1]] < prob[v]) {
            order[b] = order[b - 1];
            b--;
        }
        order[b] = v;
    }
}

static void print_json(const char *path, const float *logits, const double *prob, const int *order, int K,
                       int topk) {
    char cname[32];
    fputs("{\"file\":", stdout);
    if (sv_json_string(stdout, path)) {
        /* Not UTF-8: "file" is lossy, "file_hex" holds the exact bytes. */
        fputs(",\"file_hex\":\"", stdout);
        sv_hex(stdout, path);
        fputc('"', stdout);
    }
    fputs(",\"probabilities\":[", stdout);
    /* JSON has no NaN or infinity: null (weights with non-finite values) */
    for (int k = 0; k < K; k++) printf(isfinite(prob[k]) ? "%s%.9g" : "%snull", k ? "," : "", prob[k]);
    /* the model's float32 logits, exactly (9 significant digits), for checks
     * against another runtime (scripts/export_onnx.py, tests/test_export.c) */
    fputs("],\"logits\":[", stdout);
    for (int k = 0; k < K; k++) printf(isfinite(logits[k]) ? "%s%.9g" : "%snull", k ? "," : "", (double)logits[k]);
    fputs("],\"top\":[", stdout);
    for (int t = 0; t < topk; t++) {
        printf("%s{\"class\":", t ? "," : "");
        sv_json_string(stdout, class_name(order[t], K, cname, sizeof cname));
        printf(isfinite(prob[order[t]]) ? ",\"confidence\":%.9g}" : ",\"confidence\":null}", prob[order[t]]);
    }
    fputs("]}\n", stdout);
}

static void print_text(const char *path, int w, int h, const double *prob, const int *order, int K, int topk) {
    char cname[32], q[SV_QUOTED_LEN(SV_PATH_LEN)];
    printf("%s (%dx%d)\n", sv_shell_quote(path, q, sizeof q), w, h);
    for (int t = 0; t < topk; t++)
        printf("  %d. %-11s %6.2f%%\n", t + 1, class_name(order[t], K, cname, sizeof cname), 100.0 * prob[order[t]]);
    printf("  probabilities:");
    for (int k = 0; k < K; k++)
        printf(" %s %.4f%s", class_name(k, K, cname, sizeof cname), prob[k], k + 1 < K ? "," : "\n");
}

/* ------------------------------------------------------------ options */

typedef struct {
    const char *ckpt, *grid;
    int topk, json;
    int precision;        /* -1: the checkpoint's, else sv_precision */
    int resize;           /* resize_mode */
    int tta_flip;         /* -1: the checkpoint's train.tta_flip, else 0 off / 1 on */
    int tta_translate;    /* -1: the checkpoint's train.tta_translate, else pixels */
    int weights;          /* -1: ema when the checkpoint has it, else SV_WEIGHTS_EMA / SV_WEIGHTS_RAW */
    char **inputs;        /* files and directories, in the order given */
    int ninputs;
} predict_opts;

enum { OPT_CHECKPOINT = 256, OPT_TOPK, OPT_JSON, OPT_PRECISION, OPT_GRID, OPT_RESIZE, OPT_TTA_FLIP, OPT_TTA_TRANSLATE,
       OPT_WEIGHTS };

static const struct option predict_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
    {"top-k", required_argument, NULL, OPT_TOPK},
    {"json", no_argument, NULL, OPT_JSON},
    {"precision", required_argument, NULL, OPT_PRECISION},
    {"grid", required_argument, NULL, OPT_GRID},
    {"resize", required_argument, NULL, OPT_RESIZE},
    {"tta-flip", required_argument, NULL, OPT_TTA_FLIP},
    {"tta-translate", required_argument, NULL, OPT_TTA_TRANSLATE},
    {"weights", required_argument, NULL, OPT_WEIGHTS},
    {NULL, 0, NULL, 0},
};

static const char *const resize_names[] = {"nearest", "bilinear", "area", NULL}; /* resize_mode order */

/* Returns -1 to go on, else the exit status (0 after --help). */
static int parse_predict_options(const sv_cli *cli, int argc, char **argv, predict_opts *o) {
    sv_cli_getopt_start();
    int c;
    long k;
    while ((c = sv_cli_next(argc, argv, ":h", predict_options)) != -1) {
        switch (c) {
        case 'h': predict_usage(stdout); return 0;
        case OPT_CHECKPOINT: o->ckpt = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_GRID: o->grid = optarg; break;
        case OPT_TOPK:
            if (sv_cli_int(cli, "predict", "--top-k", optarg, 1, 1000, &k)) return 1;
            o->topk = (int)k;
            break;
        case OPT_PRECISION:
            if (sv_cli_choice(cli, "predict", "--precision", optarg, sv_precision_names, &o->precision)) return 1;
            break;
        case OPT_RESIZE:
            if (sv_cli_choice(cli, "predict", "--resize", optarg, resize_names, &o->resize)) return 1;
            break;
        case OPT_TTA_FLIP:
            if (sv_cli_choice(cli, "predict", "--tta-flip", optarg, sv_cli_off_on, &o->tta_flip)) return 1;
            break;
        case OPT_TTA_TRANSLATE:
            if (sv_cli_int(cli, "predict", "--tta-translate", optarg, 0, 4096, &k)) return 1;
            o->tta_translate = (int)k;
            break;
        case OPT_WEIGHTS:
            if (sv_cli_choice(cli, "predict", "--weights", optarg, sv_cli_weights_names, &o->weights)) return 1;
            break;
        default: return sv_cli_bad_option(cli, "predict", c, argv, predict_options);
        }
    }
    o->inputs = argv + optind;
    o->ninputs = argc - optind;
    if (o->ckpt && o->ninputs > 0) return -1;
    fprintf(stderr, "shiftvit predict: %s\n\n", !o->ckpt ? "--checkpoint CKPT is required" : "no image or directory given");
    predict_usage(stderr);
    return 1;
}

/* ------------------------------------------------------------ command */

/* The files to classify: each argument, directories expanded. Returns the
 * number of arguments that failed (unreadable or empty directory). */
static int expand_inputs(const predict_opts *o, strlist *files) {
    int failed = 0;
    for (int i = 0; i < o->ninputs; i++) {
        const char *a = o->inputs[i];
        struct stat sb;
        if (stat(a, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            strlist_add(files, a); /* errors (missing file...) are reported when it is decoded */
            continue;
        }
        int n = add_dir(files, a);
        if (n < 0) fprintf(stderr, "shiftvit predict: %s: cannot read the directory: %s\n", a, strerror(errno));
        else if (n == 0) fprintf(stderr, "shiftvit predict: %s: no image files in this directory\n", a);
        failed += n <= 0;
    }
    return failed;
}

/* The model of a checkpoint, in the precision asked for. */
static int load_model(const predict_opts *o, sv_config *cfg, sv_model *m) {
    char err[SV_ERR_LEN];
    sv_config_defaults(cfg);
    if (sv_checkpoint_read_config(o->ckpt, cfg, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        return 1;
    }
    if (o->precision >= 0) cfg->precision = (sv_precision)o->precision;
    if (o->tta_flip >= 0) cfg->tta_flip = o->tta_flip;
    if (o->tta_translate >= 0) cfg->tta_translate = o->tta_translate;
    if (cfg->tta_translate >= cfg->image_size) {
        fprintf(stderr, "shiftvit predict: --tta-translate %d must be smaller than the checkpoint's "
                "[data] image_size = %d\n", cfg->tta_translate, cfg->image_size);
        return 1;
    }
    if (sv_model_create_inference(m, sv_model_settings_from(cfg), 1, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        return 2;
    }
    int used_ema = 0;
    if (sv_cli_load_weights(o->ckpt, m, o->weights, &used_ema, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        sv_model_free(m);
        return 1;
    }
    sv_cli_warn_nonfinite_weights(0, "predict", o->ckpt, m);
    /* on stderr: stdout may be JSON */
    if (m->bf16) fprintf(stderr, "shiftvit predict: precision: %s\n", sv_bf16_describe(m->bf16));
    if (used_ema) fprintf(stderr, "shiftvit predict: weights: ema (train.ema_decay = %g)\n", cfg->ema_decay);
    return 0;
}

/* Working memory of the classification loop. */
typedef struct {
    const predict_opts *o;
    const sv_config *cfg;
    sv_model *m;
    float *x;             /* the model input, image_size^2 x 3 (NHWC, one image) */
    double *prob;         /* K */
    int *order;           /* K */
    sv_grid_cell *cells;  /* SV_GRID_MAX, or NULL without --grid */
    int ncells;
    sv_tta tta;           /* test-time augmentation (train.tta_flip, train.tta_translate) */
} predictor;

/* Decodes, resizes and classifies one file, prints its result and keeps its
 * grid cell. Returns 0, or 1 after an error message. */
static int classify_file(predictor *P, const char *path) {
    const predict_opts *o = P->o;
    char why[512], q[SV_QUOTED_LEN(SV_PATH_LEN)];
    int w = 0, h = 0, rc = 0, K = P->m->num_classes, topk = o->topk < K ? o->topk : K;
    uint8_t small[32 * 32 * 3];
    uint8_t *px = sv_image_decode(path, &w, &h, why, sizeof why);
    if (!px) {
        fprintf(stderr, "shiftvit predict: %s: %s\n", sv_shell_quote(path, q, sizeof q), why);
        return 1;
    }
    if (o->resize == RESIZE_NEAREST) sv_image_resize_nearest(small, 32, 32, px, h, w);
    else if (o->resize == RESIZE_BILINEAR) sv_image_resize_bilinear(small, 32, 32, px, h, w);
    else rc = sv_image_resize_area(small, 32, 32, px, h, w);
    sv_grid_cell *cell = P->cells && P->ncells < SV_GRID_MAX ? &P->cells[P->ncells] : NULL;
    if (rc == 0 && cell) rc = sv_image_resize_area(cell->thumb, SV_GRID_THUMB, SV_GRID_THUMB, px, h, w);
    sv_image_free(px);
    if (rc != 0) {
        fprintf(stderr, "shiftvit predict: %s: out of memory resizing %dx%d pixels\n", sv_shell_quote(path, q, sizeof q), w, h);
        return 1;
    }
    sv_eval_image(P->x, small, P->cfg->resize_size, P->cfg->image_size);
    const int S = P->cfg->image_size;
    const float *logits = sv_eval_logits(P->m, P->x, 1, S, &P->tta);
    probabilities(logits, K, P->prob);
    rank_classes(P->prob, K, P->order);
    if (o->json) print_json(path, logits, P->prob, P->order, K, topk);
    else print_text(path, w, h, P->prob, P->order, K, topk);
    fflush(stdout);
    if (cell) {
        char cname[32];
        snprintf(cell->title, sizeof cell->title, "%s %.1f%%", class_name(P->order[0], K, cname, sizeof cname),
                 100.0 * P->prob[P->order[0]]);
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        snprintf(cell->name, sizeof cell->name, "%.22s%s", base, strlen(base) > 22 ? "..." : "");
        P->ncells++;
    }
    return 0;
}

/* --grid: the picture of the classified images. Returns 0 or 1 (failed). */
static int write_grid(const predictor *P) {
    const char *grid = P->o->grid;
    char why[512], q[SV_QUOTED_LEN(SV_PATH_LEN)];
    if (P->ncells == 0) {
        fprintf(stderr, "shiftvit predict: no image was classified; %s not written\n", grid);
        return 1;
    }
    if (sv_grid_write(grid, P->cells, P->ncells, why, sizeof why) != 0) {
        fprintf(stderr, "shiftvit predict: %s: %s\n", sv_shell_quote(grid, q, sizeof q), why);
        return 1;
    }
    if (!P->o->json) printf("Grid of %d image(s): %s\n", P->ncells, sv_shell_quote(grid, q, sizeof q));
    return 0;
}

static int run_predict(const predict_opts *o) {
    sv_config cfg;
    sv_model m;
    sv_atomic_file probe; /* --grid's folder is checked before the work, not after it */
    char why[SV_ERR_LEN];
    if (o->grid && sv_atomic_begin(&probe, o->grid, why) != 0) {
        fprintf(stderr, "shiftvit predict: --grid: %s\n", why);
        return 1;
    }
    if (o->grid) sv_atomic_abort(&probe);
    int rc = load_model(o, &cfg, &m);
    if (rc) return rc;
    strlist files = {0};
    int failed = expand_inputs(o, &files), classified = 0, S = cfg.image_size, K = m.num_classes;
    predictor P = {o, &cfg, &m, sv_alloc((size_t)S * S * 3 * sizeof(float), "input image"),
                   sv_alloc((size_t)K * sizeof(double), "probabilities"), sv_alloc((size_t)K * sizeof(int), "class order"),
                   o->grid ? calloc(SV_GRID_MAX, sizeof(sv_grid_cell)) : NULL, 0, {0}};
    sv_tta_init(&P.tta, &cfg, 1, K, S);
    for (int i = 0; i < files.n; i++) {
        int bad = classify_file(&P, files.v[i]);
        failed += bad;
        classified += !bad;
    }
    if (o->grid) failed += write_grid(&P);
    if (failed && !o->json)
        fprintf(stderr, "shiftvit predict: %d image(s) classified, %d error(s)\n", classified, failed);
    free(P.cells);
    sv_free(P.x);
    sv_free(P.prob);
    sv_free(P.order);
    sv_tta_free(&P.tta);
    strlist_free(&files);
    sv_model_free(&m);
    return failed ? 1 : 0;
}

int sv_cmd_predict(const sv_cli *cli, int argc, char **argv) {
    if (cli->d->rank != 0) return 0; /* predict runs on rank 0 only */
    predict_opts o = {.topk = 3, .precision = -1, .resize = RESIZE_NEAREST, .tta_flip = -1, .tta_translate = -1,
                        .weights = -1};
    int rc = parse_predict_options(cli, argc, argv, &o);
    return rc >= 0 ? rc : run_predict(&o);
}
