/* `shiftvit predict`: classifies the user's own JPEG/PNG photos with a
 * checkpoint (SPEC section 1 "Inference"): options, the list of inputs, the
 * decode and 32x32 resize (image.h: nearest by default, as the Keras example;
 * bilinear or area on request), the evaluation transform, forward in inference
 * mode, softmax, text or JSON output, and optionally a 3x3 grid of the images
 * titled with their predicted class (grid.h). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "shiftvit/checkpoint.h"
#include "shiftvit/cli.h"
#include "shiftvit/common.h"
#include "shiftvit/data.h"
#include "shiftvit/gemm_bf16.h"
#include "shiftvit/grid.h"
#include "shiftvit/image.h"
#include "shiftvit/layers.h"
#include "shiftvit/model.h"
#include "shiftvit/text.h"


static const char *const cifar_classes[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

typedef enum { RESIZE_NEAREST, RESIZE_BILINEAR, RESIZE_AREA } resize_mode;

static void predict_usage(FILE *f) {
    fprintf(f,
            "usage: shiftvit predict --checkpoint CKPT [--top-k K] [--json] [--grid OUT.png]\n"
            "                        [--resize nearest|bilinear|area] [--precision fp32|bf16]\n"
            "                        IMAGE_OR_DIR...\n\n"
            "Classifies JPEG and PNG images (also grayscale, with alpha, or 16-bit) with a trained\n"
            "checkpoint: each image is resized to 32x32, given the evaluation transform and\n"
            "classified. Prints per image the top-K classes with their confidence in percent and\n"
            "the softmax probabilities of all classes. A directory means every file in it, in name\n"
            "order (hidden files and .txt files are skipped).\n\n"
            "  --checkpoint CKPT  HDF5 checkpoint written by `shiftvit train` (holds the config)\n"
            "  --top-k K          classes listed per image (default 3)\n"
            "  --json             one JSON object per image and line:\n"
            "                     {\"file\":..., \"probabilities\":[...], \"top\":[{\"class\":...,\n"
            "                     \"confidence\":...}]}, confidence as a probability in [0, 1]\n"
            "  --grid OUT.png     draw up to 9 of the images, each titled with its predicted class\n"
            "                     and confidence, into a PNG file (JPEG if OUT ends in .jpg/.jpeg)\n"
            "  --resize M         how the photo is brought to 32x32: nearest (default, as the Keras\n"
            "                     example), bilinear (no antialiasing) or area (box average)\n"
            "  --precision P      fp32 or bf16 matrix products (default: the checkpoint's\n"
            "                     train.precision)\n"
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

/* ------------------------------------------------------------ command */

int sv_cmd_predict(int argc, char **argv) {
    sv_dist *d = sv_cli_dist();
    if (d->rank != 0) return 0; /* predict runs on rank 0 only */
    const char *ckpt = NULL, *grid = NULL;
    int topk = 3, json = 0;
    const char *precision = NULL;
    resize_mode mode = RESIZE_NEAREST;
    strlist args = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            predict_usage(stdout);
            strlist_free(&args);
            return 0;
        } else if (!strcmp(a, "--checkpoint") && has_next) {
            ckpt = argv[++i];
        } else if (!strcmp(a, "--top-k") && has_next) {
            char *end;
            const char *v = argv[++i];
            long k = strtol(v, &end, 10);
            if (*end || end == v || k < 1 || k > 1000) {
                fprintf(stderr, "shiftvit predict: --top-k '%s' must be a positive integer\n", v);
                strlist_free(&args);
                return 1;
            }
            topk = (int)k;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--precision") && has_next) {
            precision = argv[++i];
            if (strcmp(precision, "fp32") != 0 && strcmp(precision, "bf16") != 0) {
                fprintf(stderr, "shiftvit predict: --precision '%s' must be fp32 or bf16\n", precision);
                strlist_free(&args);
                return 1;
            }
        } else if (!strcmp(a, "--grid") && has_next) {
            grid = argv[++i];
        } else if (!strcmp(a, "--resize") && has_next) {
            const char *v = argv[++i];
            if (!strcmp(v, "nearest")) mode = RESIZE_NEAREST;
            else if (!strcmp(v, "bilinear")) mode = RESIZE_BILINEAR;
            else if (!strcmp(v, "area")) mode = RESIZE_AREA;
            else {
                fprintf(stderr, "shiftvit predict: --resize '%s' must be nearest, bilinear or area\n", v);
                strlist_free(&args);
                return 1;
            }
        } else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) strlist_add(&args, argv[i]);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "shiftvit predict: unknown or incomplete option '%s'\n\n", a);
            predict_usage(stderr);
            strlist_free(&args);
            return 1;
        } else {
            strlist_add(&args, a);
        }
    }
    if (!ckpt || args.n == 0) {
        fprintf(stderr, "shiftvit predict: %s\n\n",
                !ckpt ? "--checkpoint CKPT is required" : "no image or directory given");
        predict_usage(stderr);
        strlist_free(&args);
        return 1;
    }

    char err[SV_ERR_LEN];
    sv_config cfg;
    sv_config_defaults(&cfg);
    if (sv_checkpoint_read_config(ckpt, &cfg, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        strlist_free(&args);
        return 1;
    }
    if (precision) cfg.precision = !strcmp(precision, "bf16") ? SV_BF16 : SV_FP32; /* checked above */
    sv_model m;
    if (sv_model_create(&m, &cfg, 1, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        strlist_free(&args);
        return 2;
    }
    if (sv_checkpoint_load(ckpt, &m, NULL, NULL, err) != 0) {
        fprintf(stderr, "shiftvit predict: %s\n", err);
        sv_model_free(&m);
        strlist_free(&args);
        return 1;
    }
    int K = m.num_classes;
    if (topk > K) topk = K;
    /* on stderr: stdout may be JSON */
    if (m.bf16) fprintf(stderr, "shiftvit predict: precision: %s\n", sv_bf16_describe(m.bf16));

    /* Expand directories. */
    int failed = 0;
    strlist files = {0};
    for (int i = 0; i < args.n; i++) {
        struct stat sb;
        if (stat(args.v[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            int n = add_dir(&files, args.v[i]);
            if (n < 0) {
                fprintf(stderr, "shiftvit predict: %s: cannot read the directory: %s\n", args.v[i],
                        strerror(errno));
                failed++;
            } else if (n == 0) {
                fprintf(stderr, "shiftvit predict: %s: no image files in this directory\n", args.v[i]);
                failed++;
            }
        } else {
            strlist_add(&files, args.v[i]); /* errors (missing file...) are reported below */
        }
    }

    int S = cfg.image_size;
    float *x = sv_alloc((size_t)S * S * 3 * sizeof(float), "input image");
    double *prob = sv_alloc((size_t)K * sizeof(double), "probabilities");
    int *order = sv_alloc((size_t)K * sizeof(int), "class order");
    sv_grid_cell *cells = grid ? calloc(SV_GRID_MAX, sizeof *cells) : NULL;
    int ncells = 0, classified = 0;
    uint8_t small[32 * 32 * 3];
    char why[512], cname[32], qpath[SV_QUOTED_LEN(SV_PATH_LEN)];

    for (int fi = 0; fi < files.n; fi++) {
        const char *path = files.v[fi];
        int w = 0, h = 0;
        uint8_t *px = sv_image_decode(path, &w, &h, why, sizeof why);
        if (!px) {
            fprintf(stderr, "shiftvit predict: %s: %s\n", sv_shell_quote(path, qpath, sizeof qpath), why);
            failed++;
            continue;
        }
        int rc = 0;
        if (mode == RESIZE_NEAREST) sv_image_resize_nearest(small, 32, 32, px, h, w);
        else if (mode == RESIZE_BILINEAR) sv_image_resize_bilinear(small, 32, 32, px, h, w);
        else rc = sv_image_resize_area(small, 32, 32, px, h, w);
        if (rc == 0 && cells && ncells < SV_GRID_MAX) rc = sv_image_resize_area(cells[ncells].thumb, SV_GRID_THUMB, SV_GRID_THUMB, px, h, w);
        sv_image_free(px);
        if (rc != 0) {
            fprintf(stderr, "shiftvit predict: %s: out of memory resizing %dx%d pixels\n",
                    sv_shell_quote(path, qpath, sizeof qpath), w, h);
            failed++;
            continue;
        }

        sv_eval_image(x, small, cfg.resize_size, cfg.image_size);
        const float *logits = sv_model_forward(&m, x, 1, NULL);
        sv_log_softmax_row(prob, logits, K); /* log-probabilities, then their exp */
        for (int k = 0; k < K; k++) prob[k] = exp(prob[k]);
        for (int k = 0; k < K; k++) order[k] = k;
        for (int a = 1; a < K; a++) { /* stable insertion sort, descending */
            int v = order[a], b = a;
            while (b > 0 && prob[order[b - 1]] < prob[v]) {
                order[b] = order[b - 1];
                b--;
            }
            order[b] = v;
        }

        if (json) {
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
            fputs("],\"top\":[", stdout);
            for (int t = 0; t < topk; t++) {
                printf("%s{\"class\":", t ? "," : "");
                sv_json_string(stdout, class_name(order[t], K, cname, sizeof cname));
                printf(isfinite(prob[order[t]]) ? ",\"confidence\":%.9g}" : ",\"confidence\":null}", prob[order[t]]);
            }
            fputs("]}\n", stdout);
        } else {
            printf("%s (%dx%d)\n", sv_shell_quote(path, qpath, sizeof qpath), w, h);
            for (int t = 0; t < topk; t++)
                printf("  %d. %-11s %6.2f%%\n", t + 1, class_name(order[t], K, cname, sizeof cname),
                       100.0 * prob[order[t]]);
            printf("  probabilities:");
            for (int k = 0; k < K; k++)
                printf(" %s %.4f%s", class_name(k, K, cname, sizeof cname), prob[k], k + 1 < K ? "," : "\n");
        }
        fflush(stdout);
        classified++;

        if (cells && ncells < SV_GRID_MAX) {
            sv_grid_cell *c = &cells[ncells++];
            snprintf(c->title, sizeof c->title, "%s %.1f%%", class_name(order[0], K, cname, sizeof cname),
                     100.0 * prob[order[0]]);
            const char *base = strrchr(path, '/');
            base = base ? base + 1 : path;
            snprintf(c->name, sizeof c->name, "%.22s%s", base, strlen(base) > 22 ? "..." : "");
        }
    }

    if (grid) {
        if (ncells == 0) {
            fprintf(stderr, "shiftvit predict: no image was classified; %s not written\n", grid);
            failed++;
        } else if (sv_grid_write(grid, cells, ncells, why, sizeof why) != 0) {
            fprintf(stderr, "shiftvit predict: %s: %s\n", sv_shell_quote(grid, qpath, sizeof qpath), why);
            failed++;
        } else if (!json) {
            printf("Grid of %d image(s): %s\n", ncells, sv_shell_quote(grid, qpath, sizeof qpath));
        }
    }
    if (failed && !json)
        fprintf(stderr, "shiftvit predict: %d image(s) classified, %d error(s)\n", classified, failed);

    free(cells);
    sv_free(x);
    sv_free(prob);
    sv_free(order);
    strlist_free(&files);
    strlist_free(&args);
    sv_model_free(&m);
    return failed ? 1 : 0;
}
