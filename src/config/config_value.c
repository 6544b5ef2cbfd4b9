/* Config values: parsing one value for a key (each type its own small
 * parser), re-checking the struct (sv_config_validate, with the cross-field
 * rules of SPEC section 1), and writing it back as INI text that reads back
 * to the same values. */
#include "config_internal.h"

#include "shiftvit/common.h"
#include "shiftvit/text.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------ */
/* Value parsing: each returns 0, or -1 with a reason in `why`.             */

static int parse_ll(const char *s, long long *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end) return -1;
    if (errno == ERANGE) return -2;
    *out = v;
    return 0;
}

static void range_text_int(const key_def *k, char *why, size_t n) {
    if (k->imax >= (k->type == K_LONG ? LONG_MAX : INT_MAX))
        snprintf(why, n, "must be >= %lld%s%s", k->imin, k->note ? " " : "", k->note ? k->note : "");
    else
        snprintf(why, n, "must be in [%lld, %lld]%s%s", k->imin, k->imax, k->note ? " " : "",
                 k->note ? k->note : "");
}

static int check_int(const key_def *k, long long v, char *why, size_t n) {
    if (v >= k->imin && v <= k->imax) return 0;
    range_text_int(k, why, n);
    return -1;
}

static int check_real(const key_def *k, double v, char *why, size_t n) {
    if (!isfinite(v)) {
        snprintf(why, n, "not a finite number");
        return -1;
    }
    int lo_ok = k->rmin_open ? v > k->rmin : v >= k->rmin;
    int hi_ok = isinf(k->rmax) || (k->rmax_open ? v < k->rmax : v <= k->rmax);
    if (lo_ok && hi_ok) return 0;
    if (isinf(k->rmax))
        snprintf(why, n, "must be %s %g", k->rmin_open ? ">" : ">=", k->rmin);
    else
        snprintf(why, n, "must be in %c%g, %g%c", k->rmin_open ? '(' : '[', k->rmin, k->rmax,
                 k->rmax_open ? ')' : ']');
    return -1;
}

/* Strings must survive sv_config_write + inih unchanged: no control bytes,
 * valid UTF-8 (the loader rejects anything else as binary), no leading or
 * trailing blanks (inih strips them) and no ';' at the start or after a blank
 * (written as "key = ;..." it would be an inline comment to inih). */
static int check_text_value(const char *s, char *why, size_t n) {
    size_t len = strlen(s);
    if (len && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[len - 1]))) {
        snprintf(why, n, "must not start or end with whitespace");
        return -1;
    }
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            snprintf(why, n, "contains control character 0x%02x", ch);
            return -1;
        }
        if (ch == ';' && (i == 0 || isspace((unsigned char)s[i - 1]))) {
            snprintf(why, n, "must not contain ';' at the start or after whitespace (an INI comment)");
            return -1;
        }
        if (ch < 0x80) {
            i++;
            continue;
        }
        size_t m = sv_utf8_seq(s + i, len - i);
        if (!m) {
            snprintf(why, n, "is not valid UTF-8");
            return -1;
        }
        i += m;
    }
    return 0;
}

static int parse_integer(sv_config *c, const key_def *k, const char *value, char *why, size_t n) {
    long long v;
    int rc = parse_ll(value, &v);
    if (rc == -1) return snprintf(why, n, "not an integer"), -1;
    if (rc == -2) {
        char range[160];
        range_text_int(k, range, sizeof range);
        return snprintf(why, n, "integer out of range (%s)", range), -1;
    }
    if (check_int(k, v, why, n)) return -1;
    char *field = (char *)c + k->off;
    if (k->type == K_INT) *(int *)field = (int)v;
    else *(long *)field = (long)v;
    return 0;
}

static int parse_ull(unsigned long long *field, const char *value, char *why, size_t n) {
    /* strtoull accepts "-1" and wraps it, so insist on a digit first. */
    if (!isdigit((unsigned char)value[0])) return snprintf(why, n, "not a non-negative integer"), -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (*end) return snprintf(why, n, "not a non-negative integer"), -1;
    if (errno == ERANGE) return snprintf(why, n, "integer out of range (max %llu)", ULLONG_MAX), -1;
    *field = v;
    return 0;
}

static int parse_real(sv_config *c, const key_def *k, const char *value, char *why, size_t n) {
    if (!*value || isspace((unsigned char)*value)) return snprintf(why, n, "not a number"), -1;
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (end == value || *end) return snprintf(why, n, "not a number"), -1;
    /* Overflow gives inf and is caught here; underflow to a subnormal or
     * zero is accepted (the range check then applies to that value). */
    if (!isfinite(v)) return snprintf(why, n, "not a finite number"), -1;
    char *field = (char *)c + k->off;
    if (k->type == K_FLOAT) {
        if (fabs(v) > FLT_MAX) return snprintf(why, n, "out of single-precision range"), -1;
        float f = (float)v;
        if (check_real(k, f, why, n)) return -1;
        *(float *)field = f;
    } else {
        if (check_real(k, v, why, n)) return -1;
        *(double *)field = v;
    }
    return 0;
}

static int parse_bool(int *field, const char *value, char *why, size_t n) {
    static const char *const yes[] = {"true", "1", "yes"}, *const no[] = {"false", "0", "no"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(value, yes[i]) == 0) return *field = 1, 0;
        if (strcasecmp(value, no[i]) == 0) return *field = 0, 0;
    }
    return snprintf(why, n, "not a boolean (true/false, 1/0, yes/no)"), -1;
}

static int parse_text(char *field, const char *value, char *why, size_t n) {
    size_t len = strlen(value);
    if (len >= SV_PATH_LEN) return snprintf(why, n, "too long (%zu bytes, at most %d)", len, SV_PATH_LEN - 1), -1;
    if (check_text_value(value, why, n)) return -1;
    memcpy(field, value, len + 1);
    return 0;
}

/* One entry of a depths list, p[0..len) with blanks around it. */
static int parse_depth(const key_def *k, const char *p, size_t len, int index, int *out, char *why, size_t n) {
    char item[32];
    while (len && isspace((unsigned char)*p)) p++, len--;
    while (len && isspace((unsigned char)p[len - 1])) len--;
    long long v;
    int rc = -1;
    if (len < sizeof item) {
        memcpy(item, p, len);
        item[len] = '\0';
        rc = parse_ll(item, &v);
    }
    if (rc)
        return snprintf(why, n, "entry %d is not an integer (expected %d comma-separated integers, e.g. 2,4,8,2)",
                        index + 1, SV_NUM_STAGES), -1;
    if (v < k->imin || v > k->imax)
        return snprintf(why, n, "entry %d = %lld must be in [%lld, %lld]", index + 1, v, k->imin, k->imax), -1;
    *out = (int)v;
    return 0;
}

static int parse_depths(sv_config *c, const key_def *k, const char *value, char *why, size_t n) {
    int d[SV_NUM_STAGES], count = 0;
    for (const char *p = value;; count++) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (count < SV_NUM_STAGES && parse_depth(k, p, len, count, &d[count], why, n)) return -1;
        if (!comma) break;
        p = comma + 1;
    }
    count++;
    if (count != SV_NUM_STAGES)
        return snprintf(why, n, "expected %d comma-separated integers (one per stage), got %d", SV_NUM_STAGES,
                        count), -1;
    memcpy((char *)c + k->off, d, sizeof d);
    return 0;
}

/* "tfa or torch", "fp32 or bf16": the names of a K_CHOICE key. */
static void choice_list(const key_def *k, char *out, size_t n) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; k->choices[i] && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s%s", i == 0 ? "" : k->choices[i + 1] ? ", " : " or ",
                                k->choices[i]);
}

static int parse_choice(sv_config *c, const key_def *k, const char *value, char *why, size_t n) {
    for (int i = 0; k->choices[i]; i++)
        if (strcasecmp(value, k->choices[i]) == 0) return *(int *)((char *)c + k->off) = i, 0;
    char list[128];
    choice_list(k, list, sizeof list);
    return snprintf(why, n, "expected %s", list), -1;
}

int cfg_parse_value(sv_config *c, const key_def *k, const char *value, char *why, size_t n) {
    char *field = (char *)c + k->off;
    switch (k->type) {
    case K_INT:
    case K_LONG: return parse_integer(c, k, value, why, n);
    case K_ULL: return parse_ull((unsigned long long *)field, value, why, n);
    case K_FLOAT:
    case K_DOUBLE: return parse_real(c, k, value, why, n);
    case K_BOOL: return parse_bool((int *)field, value, why, n);
    case K_TEXT: return parse_text(field, value, why, n);
    case K_DEPTHS: return parse_depths(c, k, value, why, n);
    case K_CHOICE: return parse_choice(c, k, value, why, n);
    }
    return snprintf(why, n, "internal error: unknown key type"), -1;
}

/* ------------------------------------------------------------------------ */
/* Validation, writing                                                      */

/* Re-checks one field as the parser would (the struct may have been filled
 * by code rather than by the parser). */
static int check_field(const sv_config *c, const key_def *k, char *err) {
    const char *field = (const char *)c + k->off;
    char why[256];
    switch (k->type) {
    case K_INT:
    case K_LONG: {
        long long v = k->type == K_INT ? *(const int *)field : *(const long *)field;
        if (check_int(k, v, why, sizeof why)) return sv_fail(err, "[%s] %s = %lld: %s", k->section, k->name, v, why);
        return 0;
    }
    case K_FLOAT:
    case K_DOUBLE: {
        double v = k->type == K_FLOAT ? *(const float *)field : *(const double *)field;
        if (check_real(k, v, why, sizeof why)) return sv_fail(err, "[%s] %s = %g: %s", k->section, k->name, v, why);
        return 0;
    }
    case K_BOOL: {
        int v = *(const int *)field;
        if (v != 0 && v != 1) return sv_fail(err, "[%s] %s = %d: must be 0 or 1", k->section, k->name, v);
        return 0;
    }
    case K_TEXT:
        if (!memchr(field, '\0', SV_PATH_LEN))
            return sv_fail(err, "[%s] %s: not NUL-terminated within %d bytes", k->section, k->name, SV_PATH_LEN);
        if (check_text_value(field, why, sizeof why))
            return sv_fail(err, "[%s] %s = \"%.*s\": %s", k->section, k->name, SHOW, field, why);
        return 0;
    case K_DEPTHS: {
        const int *d = (const int *)field;
        for (int i = 0; i < SV_NUM_STAGES; i++)
            if (d[i] < k->imin || d[i] > k->imax)
                return sv_fail(err, "[%s] %s = %d,%d,%d,%d: entry %d = %d must be in [%lld, %lld]", k->section,
                               k->name, d[0], d[1], d[2], d[3], i + 1, d[i], k->imin, k->imax);
        return 0;
    }
    case K_CHOICE: {
        int v = *(const int *)field, count = 0;
        while (k->choices[count]) count++;
        if (v < 0 || v >= count) {
            choice_list(k, why, sizeof why);
            return sv_fail(err, "[%s] %s = %d: expected %s", k->section, k->name, v, why);
        }
        return 0;
    }
    case K_ULL: return 0;
    }
    return 0;
}

/* The schedule's step counts (config.h), for the cross-field checks below and
 * for the trainer. Here, with the checks, so that the key table (config_keys.c)
 * calls the value code and never the other way round. */
long sv_config_total_steps(const sv_config *c) {
    if (c->batch_size <= 0) return 0;
    double t = (double)c->train_size / c->batch_size * c->epochs;
    if (!(t < (double)LONG_MAX)) return LONG_MAX; /* only for unvalidated configs */
    return (long)t;
}

long sv_config_warmup_steps(const sv_config *c) {
    double w = c->warmup_fraction * (double)sv_config_total_steps(c);
    if (!(w < (double)LONG_MAX)) return w > 0 ? LONG_MAX : 0;
    return (long)w;
}

int sv_config_step_window(const char *text, long *first, long *last) {
    *first = 1;
    *last = LONG_MAX;
    if (!text[0]) return 0;
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)text[0])) return -1;
    long a = strtol(text, &end, 10);
    if (errno || *end != '-' || a < 1) return -1;
    const char *p = end + 1;
    long b = LONG_MAX;
    if (*p) {
        if (!isdigit((unsigned char)*p)) return -1;
        b = strtol(p, &end, 10);
        if (errno || *end || b < a) return -1;
    }
    *first = a;
    *last = b;
    return 0;
}

/* The rules between keys (SPEC section 1). */
static int check_cross_fields(const sv_config *c, char *err) {
    /* Channels double per stage, so divisibility at stage 1 covers all stages. */
    if (c->embed_dim % c->num_div != 0)
        return sv_fail(err, "[model] embed_dim = %d is not divisible by [model] num_div = %d (each "
                       "shift direction gets embed_dim/num_div channels)", c->embed_dim, c->num_div);
    if (c->image_size % c->patch_size != 0)
        return sv_fail(err, "[data] image_size = %d is not divisible by [model] patch_size = %d",
                       c->image_size, c->patch_size);
    if (c->resize_size < c->image_size)
        return sv_fail(err, "[data] resize_size = %d is smaller than [data] image_size = %d (the "
                       "crop must fit in the resized image)", c->resize_size, c->image_size);
    if (c->translate >= c->image_size)
        return sv_fail(err, "[data] translate = %d must be smaller than [data] image_size = %d (a "
                       "larger move leaves a black image)", c->translate, c->image_size);
    if (c->tta_translate >= c->image_size)
        return sv_fail(err, "[train] tta_translate = %d must be smaller than [data] image_size = %d (the "
                       "reflected border needs a pixel to mirror)", c->tta_translate, c->image_size);
    if (c->cutout > c->image_size)
        return sv_fail(err, "[data] cutout = %d is larger than [data] image_size = %d", c->cutout,
                       c->image_size);
    if (c->val_size == 0 && c->patience > 0)
        return sv_fail(err, "[data] val_size = 0 leaves no validation split for early stopping ([train] "
                       "patience = %d): set [train] patience = 0", c->patience);
    if (c->lr_max < c->lr_start)
        return sv_fail(err, "[optim] lr_max = %g is smaller than [optim] lr_start = %g", c->lr_max,
                       c->lr_start);
    long w0, w1;
    if (sv_config_step_window(c->trace_steps, &w0, &w1) != 0)
        return sv_fail(err, "[train] trace_steps = \"%.*s\": expected FIRST-LAST (optimizer steps, 1 <= FIRST <= "
                       "LAST), FIRST- (to the end) or nothing (every step)", SHOW, c->trace_steps);
    long total = sv_config_total_steps(c), warmup = sv_config_warmup_steps(c);
    if (total < 1)
        return sv_fail(err, "total steps = int([data] train_size = %ld / [train] batch_size = %d * "
                       "[train] epochs = %d) = %ld: must be >= 1", c->train_size, c->batch_size,
                       c->epochs, total);
    if (warmup > total)
        return sv_fail(err, "warmup steps = %ld ([optim] warmup_fraction = %g) exceed total steps = %ld",
                       warmup, c->warmup_fraction, total);
    return 0;
}

int sv_config_validate(const sv_config *c, char *err) {
    for (size_t i = 0; i < sv_config_num_keys; i++)
        if (check_field(c, &sv_config_keys[i], err)) return -1;
    if (check_cross_fields(c, err)) return -1;
    if (!memchr(c->name, '\0', sizeof c->name)) return sv_fail(err, "config name is not NUL-terminated");
    return 0;
}

/* Shortest %.*g form that reads back (through the parser's strtod, then the
 * float conversion for float fields) to exactly v: "0.2" rather than
 * "0.200000003". 9 (float) or 17 (double) digits always suffice. */
static void format_real(char *buf, size_t n, double v, int is_float) {
    if (v == floor(v) && fabs(v) < 1e15) { /* 300, not the shorter 3e+02 */
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v) return;
    }
}

/* The value of key k in c as sv_config_write writes it (strings as they are). */
void cfg_format_value(const sv_config *c, const key_def *k, char *buf, size_t n) {
    const char *field = (const char *)c + k->off;
    switch (k->type) {
    case K_INT: snprintf(buf, n, "%d", *(const int *)field); break;
    case K_LONG: snprintf(buf, n, "%ld", *(const long *)field); break;
    case K_ULL: snprintf(buf, n, "%llu", *(const unsigned long long *)field); break;
    case K_FLOAT: format_real(buf, n, *(const float *)field, 1); break;
    case K_DOUBLE: format_real(buf, n, *(const double *)field, 0); break;
    case K_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); break;
    case K_TEXT: snprintf(buf, n, "%.*s", SV_PATH_LEN - 1, field); break;
    case K_DEPTHS: {
        const int *d = (const int *)field;
        snprintf(buf, n, "%d,%d,%d,%d", d[0], d[1], d[2], d[3]);
        break;
    }
    case K_CHOICE: {
        int v = *(const int *)field, count = 0;
        while (k->choices[count]) count++;
        if (v >= 0 && v < count) snprintf(buf, n, "%s", k->choices[v]);
        else snprintf(buf, n, "%d", v); /* unvalidated struct */
        break;
    }
    }
}

void sv_config_write(const sv_config *c, FILE *f) {
    /* First line "; shiftvit configuration: <name>": checkpoint readers take
     * the name back from it (name is not a key). Cut at a control byte so the
     * comment stays one line. */
    int name_len = 0;
    while (name_len < (int)sizeof c->name && (unsigned char)c->name[name_len] >= 0x20 &&
           c->name[name_len] != 0x7f)
        name_len++;
    fprintf(f, "; shiftvit configuration%s%.*s\n", name_len ? ": " : "", name_len, c->name);
    const char *section = "";
    for (size_t i = 0; i < sv_config_num_keys; i++) {
        const key_def *k = &sv_config_keys[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
        }
        char value[SV_PATH_LEN];
        cfg_format_value(c, k, value, sizeof value);
        /* "key =" for an empty string: no trailing blank */
        fprintf(f, "%s =%s%s\n", k->name, value[0] ? " " : "", value);
    }
}
