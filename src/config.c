/* Run configuration: defaults, INI parsing (inih), --set overrides, cross-field
 * validation and write-back (see config.h).
 *
 * Every key is described once, in the table `keys` below; the parser, the
 * validator and the writer all walk that table, so a key cannot be parsed but
 * not written (or the reverse). */
#include "shiftvit/config.h"
#include "shiftvit/common.h"
#include "shiftvit/text.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

/* Config files are a few KiB; anything much bigger is not a config. */
#define SV_CONFIG_MAX_BYTES (1 << 20)
/* Placeholder value handed to inih for a line too long for its fixed buffer
 * (INI_MAX_LINE is 200 in the Debian build); the real value is kept aside.
 * Control bytes are rejected in the text, so it cannot occur naturally. */
#define LONG_VALUE_MARK "\x01"
/* Values are quoted in messages up to this many bytes. */
#define SHOW 200

typedef enum { K_INT, K_LONG, K_ULL, K_FLOAT, K_DOUBLE, K_BOOL, K_STR, K_DEPTHS, K_DECAY, K_PRECISION } key_type;

typedef struct {
    const char *section;
    const char *name;
    key_type type;
    size_t off;
    long long imin, imax;   /* K_INT, K_LONG, K_DEPTHS (per entry) */
    double rmin, rmax;      /* K_FLOAT, K_DOUBLE; rmax = INFINITY for none */
    int rmin_open, rmax_open;
    const char *note;       /* appended to range errors, may be NULL */
} key_def;

#define OFF(field) offsetof(sv_config, field)
#define KI(s, n, f, lo, hi, note) {s, n, K_INT, OFF(f), lo, hi, 0, 0, 0, 0, note}
#define KL(s, n, f, lo, hi) {s, n, K_LONG, OFF(f), lo, hi, 0, 0, 0, 0, NULL}
#define KR(s, n, t, f, lo, lo_open, hi, hi_open) {s, n, t, OFF(f), 0, 0, lo, hi, lo_open, hi_open, NULL}
#define KX(s, n, t, f) {s, n, t, OFF(f), 0, 0, 0, 0, 0, 0, NULL}

#define BIG 1000000000LL /* upper bound for sizes: keeps total_steps far from overflow */

static const key_def keys[] = {
    KX("data", "dir", K_STR, data_dir),
    KL("data", "train_size", train_size, 1, BIG),
    KL("data", "val_size", val_size, 1, BIG),
    KL("data", "test_size", test_size, 0, BIG),
    KI("data", "image_size", image_size, 1, 4096, NULL),
    KI("data", "resize_size", resize_size, 1, 4096, NULL),
    KX("data", "augment", K_BOOL, augment),

    KI("model", "embed_dim", embed_dim, 1, 65536, NULL),
    {"model", "depths", K_DEPTHS, OFF(depths), 1, 1024, 0, 0, 0, 0, NULL},
    KI("model", "mlp_ratio", mlp_ratio, 1, 64, NULL),
    KI("model", "num_div", num_div, 4, 65536, "(the 4 shift directions need 4 channel groups)"),
    KI("model", "shift_pixel", shift_pixel, 0, 4096, NULL),
    KI("model", "patch_size", patch_size, 1, 4096, NULL),
    KR("model", "dropout", K_FLOAT, dropout, 0, 0, 1, 1),
    KR("model", "drop_path", K_FLOAT, drop_path, 0, 0, 1, 1),
    KR("model", "layer_norm_eps", K_FLOAT, layer_norm_eps, 0, 1, INFINITY, 0),
    KI("model", "num_classes", num_classes, 2, 1000000, NULL),

    KR("optim", "lr_start", K_DOUBLE, lr_start, 0, 0, INFINITY, 0),
    KR("optim", "lr_max", K_DOUBLE, lr_max, 0, 1, INFINITY, 0),
    KR("optim", "warmup_fraction", K_DOUBLE, warmup_fraction, 0, 0, 1, 1),
    KR("optim", "weight_decay", K_DOUBLE, weight_decay, 0, 0, 1, 1),
    KR("optim", "beta1", K_DOUBLE, beta1, 0, 0, 1, 1),
    KR("optim", "beta2", K_DOUBLE, beta2, 0, 0, 1, 1),
    KR("optim", "eps", K_DOUBLE, eps, 0, 1, INFINITY, 0),
    KX("optim", "decay_mode", K_DECAY, decay_mode),

    KI("train", "epochs", epochs, 1, 1000000, NULL),
    KI("train", "batch_size", batch_size, 1, 1 << 24, NULL),
    KI("train", "patience", patience, 0, 1000000, "(0 = off)"),
    KX("train", "seed", K_ULL, seed),
    KL("train", "max_steps", max_steps, 0, LONG_MAX),
    KI("train", "log_every", log_every, 1, INT_MAX, NULL),
    KI("train", "eval_batch_size", eval_batch_size, 1, 1 << 24, NULL),
    KI("train", "val_every", val_every, 1, 1000000, NULL),
    KR("train", "label_smoothing", K_FLOAT, label_smoothing, 0, 0, 1, 1),
    KX("train", "precision", K_PRECISION, precision),
    KR("train", "collective_timeout", K_DOUBLE, collective_timeout, 0, 0, INFINITY, 0),
    KI("train", "zero_stage", zero_stage, 0, 1, "(0: every rank holds the AdamW state; 1: each rank holds 1/P of it)"),

    KX("output", "dir", K_STR, out_dir),
    KI("output", "checkpoint_every", checkpoint_every, 1, 1000000, NULL),
    KI("output", "keep_last", keep_last, 0, 1000000, NULL),
};
#define NKEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"data", "model", "optim", "train", "output"};
#define NSECTIONS (sizeof sections / sizeof sections[0])
#define SECTION_LIST "[data], [model], [optim], [train] or [output]"

void sv_config_defaults(sv_config *c) {
    memset(c, 0, sizeof *c); /* also zeroes padding and the string buffers */
    c->train_size = 40000;
    c->val_size = 10000;
    c->test_size = 0;
    c->image_size = 48;
    c->resize_size = 52;
    c->augment = 1;

    c->embed_dim = 96;
    c->depths[0] = 2;
    c->depths[1] = 4;
    c->depths[2] = 8;
    c->depths[3] = 2;
    c->mlp_ratio = 2;
    c->num_div = 12;
    c->shift_pixel = 1;
    c->patch_size = 4;
    c->dropout = 0.2f;
    c->drop_path = 0.2f;
    c->layer_norm_eps = 1e-5f;
    c->num_classes = 10;

    c->lr_start = 1e-5;
    c->lr_max = 1e-3;
    c->warmup_fraction = 0.15;
    c->weight_decay = 1e-4;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-7;
    c->decay_mode = SV_DECAY_TFA;
    c->precision = SV_FP32;
    c->collective_timeout = SV_DEFAULT_COLLECTIVE_TIMEOUT;

    c->epochs = 100;
    c->batch_size = 256;
    c->patience = 5;
    c->seed = 42;
    c->max_steps = 0;
    c->log_every = 20;
    c->eval_batch_size = 256;
    c->val_every = 1;
    c->label_smoothing = 0.f;

    c->checkpoint_every = 1;
    c->keep_last = 3;
}

/* ------------------------------------------------------------------------ */
/* Lookup                                                                   */

static int known_section(const char *s, size_t n) {
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strlen(sections[i]) == n && memcmp(sections[i], s, n) == 0) return 1;
    return 0;
}

static const key_def *find_key(const char *section, const char *name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* "a, b, c" list of the keys of one section, for unknown-key messages. */
static void section_keys(const char *section, char *out, size_t n) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NKEYS && len < n; i++) {
        if (strcmp(keys[i].section, section) != 0) continue;
        int w = snprintf(out + len, n - len, "%s%s", len ? ", " : "", keys[i].name);
        if (w < 0) break;
        len += (size_t)w;
    }
}

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

/* Parses `value` for key k and stores it into c only if it is valid. */
static int parse_value(sv_config *c, const key_def *k, const char *value, char *why, size_t n) {
    char *field = (char *)c + k->off;
    switch (k->type) {
    case K_INT:
    case K_LONG: {
        long long v;
        int rc = parse_ll(value, &v);
        if (rc == -1) return snprintf(why, n, "not an integer"), -1;
        if (rc == -2) {
            char range[160];
            range_text_int(k, range, sizeof range);
            return snprintf(why, n, "integer out of range (%s)", range), -1;
        }
        if (check_int(k, v, why, n)) return -1;
        if (k->type == K_INT) *(int *)field = (int)v;
        else *(long *)field = (long)v;
        return 0;
    }
    case K_ULL: {
        /* strtoull accepts "-1" and wraps it, so insist on a digit first. */
        if (!isdigit((unsigned char)value[0])) return snprintf(why, n, "not a non-negative integer"), -1;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (*end) return snprintf(why, n, "not a non-negative integer"), -1;
        if (errno == ERANGE) return snprintf(why, n, "integer out of range (max %llu)", ULLONG_MAX), -1;
        *(unsigned long long *)field = v;
        return 0;
    }
    case K_FLOAT:
    case K_DOUBLE: {
        if (!*value || isspace((unsigned char)*value)) return snprintf(why, n, "not a number"), -1;
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end) return snprintf(why, n, "not a number"), -1;
        /* Overflow gives inf and is caught here; underflow to a subnormal or
         * zero is accepted (the range check then applies to that value). */
        if (!isfinite(v)) return snprintf(why, n, "not a finite number"), -1;
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
    case K_BOOL: {
        static const char *const yes[] = {"true", "1", "yes"}, *const no[] = {"false", "0", "no"};
        for (int i = 0; i < 3; i++) {
            if (strcasecmp(value, yes[i]) == 0) return *(int *)field = 1, 0;
            if (strcasecmp(value, no[i]) == 0) return *(int *)field = 0, 0;
        }
        return snprintf(why, n, "not a boolean (true/false, 1/0, yes/no)"), -1;
    }
    case K_STR: {
        size_t len = strlen(value);
        if (len >= SV_PATH_LEN)
            return snprintf(why, n, "too long (%zu bytes, at most %d)", len, SV_PATH_LEN - 1), -1;
        if (check_text_value(value, why, n)) return -1;
        memcpy(field, value, len + 1);
        return 0;
    }
    case K_DEPTHS: {
        int d[SV_NUM_STAGES];
        int count = 0;
        const char *p = value;
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (count < SV_NUM_STAGES) {
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
                    return snprintf(why, n, "entry %d is not an integer (expected %d comma-separated "
                                    "integers, e.g. 2,4,8,2)", count + 1, SV_NUM_STAGES), -1;
                if (v < k->imin || v > k->imax)
                    return snprintf(why, n, "entry %d = %lld must be in [%lld, %lld]", count + 1, v,
                                    k->imin, k->imax), -1;
                d[count] = (int)v;
            }
            count++;
            if (!comma) break;
            p = comma + 1;
        }
        if (count != SV_NUM_STAGES)
            return snprintf(why, n, "expected %d comma-separated integers (one per stage), got %d",
                            SV_NUM_STAGES, count), -1;
        memcpy(field, d, sizeof d);
        return 0;
    }
    case K_DECAY:
        if (strcasecmp(value, "tfa") == 0) return *(sv_decay_mode *)field = SV_DECAY_TFA, 0;
        if (strcasecmp(value, "torch") == 0) return *(sv_decay_mode *)field = SV_DECAY_TORCH, 0;
        return snprintf(why, n, "expected tfa or torch"), -1;
    case K_PRECISION:
        if (strcasecmp(value, "fp32") == 0) return *(sv_precision *)field = SV_FP32, 0;
        if (strcasecmp(value, "bf16") == 0) return *(sv_precision *)field = SV_BF16, 0;
        return snprintf(why, n, "expected fp32 or bf16"), -1;
    }
    return snprintf(why, n, "internal error: unknown key type"), -1;
}

/* Applies section.key = value; `where` is "file:line" or "--set". */
static int apply(sv_config *c, const char *where, const char *section, const char *name,
                 const char *value, char *err) {
    if (!*section)
        return sv_fail(err, "%s: %s = \"%.*s\": key outside any section (expected " SECTION_LIST ")",
                       where, name, SHOW, value);
    if (!known_section(section, strlen(section)))
        return sv_fail(err, "%s: unknown section [%s] (expected " SECTION_LIST ")", where, section);
    const key_def *k = find_key(section, name);
    if (!k) {
        char list[256];
        section_keys(section, list, sizeof list);
        return sv_fail(err, "%s: [%s] %s = \"%.*s\": unknown key (keys of [%s]: %s)", where, section,
                       name, SHOW, value, section, list);
    }
    char why[256];
    if (parse_value(c, k, value, why, sizeof why))
        return sv_fail(err, "%s: [%s] %s = \"%.*s\": %s", where, section, name, SHOW, value, why);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Text checks and the inih driver                                          */

/* Rejects NUL bytes, control bytes other than tab/CR/LF/FF and invalid
 * UTF-8, naming the line. */
static int check_text(const char *text, size_t len, const char *origin, char *err) {
    int line = 1;
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n') line++;
        if (ch == 0)
            return sv_fail(err, "%s:%d: binary content (NUL byte at offset %zu), not an INI text file",
                           origin, line, i);
        if ((ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r' && ch != '\f') || ch == 0x7f)
            return sv_fail(err, "%s:%d: binary content (control byte 0x%02x at offset %zu), not an "
                           "INI text file", origin, line, ch, i);
        if (ch < 0x80) {
            i++;
            continue;
        }
        size_t m = sv_utf8_seq(text + i, len - i);
        if (!m)
            return sv_fail(err, "%s:%d: binary content (invalid UTF-8 at offset %zu), not an INI text "
                           "file", origin, line, i);
        i += m;
    }
    return 0;
}

/* True when every line is blank or a comment. */
static int text_is_empty(const char *text, size_t len) {
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) i = 3;
    int at_line_start = 1, in_comment = 0;
    for (; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n') {
            at_line_start = 1;
            in_comment = 0;
        } else if (in_comment || isspace(ch)) {
            continue;
        } else if (at_line_start && (ch == ';' || ch == '#')) {
            in_comment = 1;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Copies line `lineno` (1-based), blanks stripped, into out for messages. */
static void get_line(const char *text, size_t len, int lineno, char *out, size_t n) {
    size_t i = 0;
    for (int l = 1; l < lineno && i < len; i++)
        if (text[i] == '\n') l++;
    if (lineno == 1 && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) i = 3;
    while (i < len && text[i] != '\n' && isspace((unsigned char)text[i])) i++;
    size_t e = i;
    while (e < len && text[e] != '\n') e++;
    while (e > i && isspace((unsigned char)text[e - 1])) e--;
    size_t m = e - i < n - 1 ? e - i : n - 1;
    memcpy(out, text + i, m);
    out[m] = '\0';
}

typedef struct {
    sv_config *cfg;
    const char *origin;
    const char *text;
    size_t len, pos;
    int lineno;
    int err_line;   /* line of the first error found by the reader or handler */
    char *err;
    char *long_value; /* value of an overlong line (see LONG_VALUE_MARK) */
    int long_line;
} parse_state;

/* inih's ini_find_chars_or_comment on [s, e): first char of `chars`, or an
 * inline ';' comment (preceded by whitespace), or e. */
static const char *find_chars_or_comment(const char *s, const char *e, const char *chars) {
    int was_space = 0;
    for (; s < e; s++) {
        if (chars && strchr(chars, *s)) break;
        if (was_space && *s == ';') break;
        was_space = isspace((unsigned char)*s);
    }
    return s;
}

static char *fail_line(parse_state *st, const char *fmt, const char *detail) {
    char where[SV_PATH_LEN + 32];
    snprintf(where, sizeof where, "%s:%d", st->origin, st->lineno);
    sv_fail(st->err, fmt, where, detail);
    st->err_line = st->lineno;
    return NULL;
}

/* inih reader: hands over one line per call, so inih's line count matches
 * st->lineno inside the handler (the Debian build has no INI_HANDLER_LINENO).
 * Leading blanks are removed so an indented key is a key, not a multi-line
 * continuation of the previous value. Section headers are checked here because
 * inih reports no event for a section without keys. */
static char *reader(char *str, int num, void *stream) {
    parse_state *st = stream;
    if (st->err_line || st->pos >= st->len) return NULL;
    const char *b = st->text + st->pos;
    const char *nl = memchr(b, '\n', st->len - st->pos);
    const char *e = nl ? nl : st->text + st->len;
    st->pos = (size_t)(e - st->text) + (nl ? 1 : 0);
    st->lineno++;
    if (st->lineno == 1 && e - b >= 3 && memcmp(b, "\xEF\xBB\xBF", 3) == 0) b += 3;
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    size_t n = (size_t)(e - b);

    if (n && *b == '[') {
        const char *close = find_chars_or_comment(b + 1, e, "]");
        if (close < e && *close == ']' && !known_section(b + 1, (size_t)(close - b - 1))) {
            char name[SHOW + 1];
            size_t m = (size_t)(close - b - 1);
            if (m > SHOW) m = SHOW;
            memcpy(name, b + 1, m);
            name[m] = '\0';
            return fail_line(st, "%s: unknown section [%s] (expected " SECTION_LIST ")", name);
        }
        if (close < e && n + 2 > (size_t)num) n = (size_t)(close - b) + 1; /* drop trailing text */
    }
    if (n + 2 <= (size_t)num) {
        memcpy(str, b, n);
        str[n] = '\n';
        str[n + 1] = '\0';
        return str;
    }
    /* Overlong line (e.g. a long data.dir path). */
    if (*b == ';' || *b == '#') {
        strcpy(str, ";\n");
        return str;
    }
    const char *sep = find_chars_or_comment(b, e, "=:");
    size_t klen = (size_t)(sep - b);
    if (sep == e || (*sep != '=' && *sep != ':') || klen + sizeof LONG_VALUE_MARK + 2 > (size_t)num) {
        char shown[SHOW + 1];
        size_t m = n < SHOW ? n : SHOW;
        memcpy(shown, b, m);
        shown[m] = '\0';
        return fail_line(st, "%s: line too long and not a key = value line: \"%s\"", shown);
    }
    const char *v = sep + 1, *ve = find_chars_or_comment(v, e, NULL);
    while (v < ve && isspace((unsigned char)*v)) v++;
    while (ve > v && isspace((unsigned char)ve[-1])) ve--;
    free(st->long_value);
    st->long_value = malloc((size_t)(ve - v) + 1);
    if (!st->long_value) return fail_line(st, "%s: out of memory%s", "");
    memcpy(st->long_value, v, (size_t)(ve - v));
    st->long_value[ve - v] = '\0';
    st->long_line = st->lineno;
    memcpy(str, b, klen);
    snprintf(str + klen, (size_t)num - klen, "=%s\n", LONG_VALUE_MARK);
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    parse_state *st = user;
    if (st->err_line) return 0;
    if (st->long_line == st->lineno && strcmp(value, LONG_VALUE_MARK) == 0) value = st->long_value;
    char where[SV_PATH_LEN + 32];
    snprintf(where, sizeof where, "%s:%d", st->origin, st->lineno);
    if (apply(st->cfg, where, section, name, value, st->err)) {
        st->err_line = st->lineno;
        return 0;
    }
    return 1;
}

/* Parses text[0..len) onto c (all or nothing). */
static int parse_text(sv_config *c, const char *text, size_t len, const char *origin,
                      const char *what, char *err) {
    if (check_text(text, len, origin, err)) return -1;
    if (text_is_empty(text, len))
        return sv_fail(err, "%s: %s is empty (no sections or keys)", origin, what);
    sv_config tmp = *c;
    parse_state st = {.cfg = &tmp, .origin = origin, .text = text, .len = len, .err = err};
    int rc = ini_parse_stream(reader, &st, handler, &st);
    free(st.long_value);
    if (rc < 0) return sv_fail(err, "%s: internal INI parser error %d", origin, rc);
    if (rc > 0 && (st.err_line == 0 || rc < st.err_line)) {
        char line[SHOW + 1];
        get_line(text, len, rc, line, sizeof line);
        return sv_fail(err, "%s:%d: syntax error: \"%s\" (expected [section], key = value or a "
                       "; comment)", origin, rc, line);
    }
    if (st.err_line) return -1;
    *c = tmp;
    return 0;
}

int sv_config_load(sv_config *c, const char *path, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sv_fail(err, "cannot open config file %s: %s", path, strerror(errno));
    char *buf = malloc(SV_CONFIG_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return sv_fail(err, "%s: out of memory", path);
    }
    size_t len = fread(buf, 1, SV_CONFIG_MAX_BYTES + 1, f);
    int read_errno = errno;
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sv_fail(err, "cannot read config file %s: %s", path, strerror(read_errno));
    }
    if (len > SV_CONFIG_MAX_BYTES) {
        free(buf);
        return sv_fail(err, "%s: config file too large (more than %d bytes)", path, SV_CONFIG_MAX_BYTES);
    }
    sv_config tmp = *c;
    int rc = parse_text(&tmp, buf, len, path, "config file", err);
    free(buf);
    if (rc) return -1;

    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n >= 4 && strcmp(base + n - 4, ".ini") == 0) n -= 4;
    if (n >= sizeof tmp.name) n = sizeof tmp.name - 1;
    memcpy(tmp.name, base, n);
    tmp.name[n] = '\0';
    *c = tmp;
    return 0;
}

int sv_config_load_string(sv_config *c, const char *text, const char *origin, char *err) {
    if (!origin) origin = "<string>";
    if (!text) return sv_fail(err, "%s: no config text", origin);
    return parse_text(c, text, strlen(text), origin, "config text", err);
}

int sv_config_set(sv_config *c, const char *assignment, char *err) {
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    if (!eq || !dot)
        return sv_fail(err, "--set \"%.*s\": expected section.key=value (e.g. train.epochs=10)", SHOW,
                       assignment);
    char section[64], name[64];
    const char *s = assignment, *se = dot, *k = dot + 1, *ke = eq, *v = eq + 1;
    while (s < se && isspace((unsigned char)*s)) s++;
    while (se > s && isspace((unsigned char)se[-1])) se--;
    while (k < ke && isspace((unsigned char)*k)) k++;
    while (ke > k && isspace((unsigned char)ke[-1])) ke--;
    if ((size_t)(se - s) >= sizeof section || (size_t)(ke - k) >= sizeof name)
        return sv_fail(err, "--set \"%.*s\": unknown section or key", SHOW, assignment);
    memcpy(section, s, (size_t)(se - s));
    section[se - s] = '\0';
    memcpy(name, k, (size_t)(ke - k));
    name[ke - k] = '\0';
    /* Blanks around the value are dropped, as in a file. */
    while (*v && isspace((unsigned char)*v)) v++;
    size_t vlen = strlen(v);
    while (vlen && isspace((unsigned char)v[vlen - 1])) vlen--;
    char *value = malloc(vlen + 1);
    if (!value) return sv_fail(err, "--set: out of memory");
    memcpy(value, v, vlen);
    value[vlen] = '\0';
    int rc = apply(c, "--set", section, name, value, err);
    free(value);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Validation, writing, step counts                                         */

/* Re-checks one field as the parser would (the struct may have been filled
 * by code rather than by the parser). */
static int check_field(const sv_config *c, const key_def *k, char *err) {
    const char *field = (const char *)c + k->off;
    char why[256];
    switch (k->type) {
    case K_INT:
    case K_LONG: {
        long long v = k->type == K_INT ? *(const int *)field : *(const long *)field;
        if (check_int(k, v, why, sizeof why))
            return sv_fail(err, "[%s] %s = %lld: %s", k->section, k->name, v, why);
        return 0;
    }
    case K_FLOAT:
    case K_DOUBLE: {
        double v = k->type == K_FLOAT ? *(const float *)field : *(const double *)field;
        if (check_real(k, v, why, sizeof why))
            return sv_fail(err, "[%s] %s = %g: %s", k->section, k->name, v, why);
        return 0;
    }
    case K_BOOL: {
        int v = *(const int *)field;
        if (v != 0 && v != 1) return sv_fail(err, "[%s] %s = %d: must be 0 or 1", k->section, k->name, v);
        return 0;
    }
    case K_STR:
        if (!memchr(field, '\0', SV_PATH_LEN))
            return sv_fail(err, "[%s] %s: not NUL-terminated within %d bytes", k->section, k->name,
                           SV_PATH_LEN);
        if (check_text_value(field, why, sizeof why))
            return sv_fail(err, "[%s] %s = \"%.*s\": %s", k->section, k->name, SHOW, field, why);
        return 0;
    case K_DEPTHS: {
        const int *d = (const int *)field;
        for (int i = 0; i < SV_NUM_STAGES; i++)
            if (d[i] < k->imin || d[i] > k->imax)
                return sv_fail(err, "[%s] %s = %d,%d,%d,%d: entry %d = %d must be in [%lld, %lld]",
                               k->section, k->name, d[0], d[1], d[2], d[3], i + 1, d[i], k->imin,
                               k->imax);
        return 0;
    }
    case K_DECAY: {
        sv_decay_mode m = *(const sv_decay_mode *)field;
        if (m != SV_DECAY_TFA && m != SV_DECAY_TORCH)
            return sv_fail(err, "[%s] %s = %d: expected tfa or torch", k->section, k->name, (int)m);
        return 0;
    }
    case K_PRECISION: {
        sv_precision m = *(const sv_precision *)field;
        if (m != SV_FP32 && m != SV_BF16)
            return sv_fail(err, "[%s] %s = %d: expected fp32 or bf16", k->section, k->name, (int)m);
        return 0;
    }
    case K_ULL:
        return 0;
    }
    return 0;
}

int sv_config_validate(const sv_config *c, char *err) {
    for (size_t i = 0; i < NKEYS; i++)
        if (check_field(c, &keys[i], err)) return -1;

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
    if (c->lr_max < c->lr_start)
        return sv_fail(err, "[optim] lr_max = %g is smaller than [optim] lr_start = %g", c->lr_max,
                       c->lr_start);
    long total = sv_config_total_steps(c), warmup = sv_config_warmup_steps(c);
    if (total < 1)
        return sv_fail(err, "total steps = int([data] train_size = %ld / [train] batch_size = %d * "
                       "[train] epochs = %d) = %ld: must be >= 1", c->train_size, c->batch_size,
                       c->epochs, total);
    if (warmup > total)
        return sv_fail(err, "warmup steps = %ld ([optim] warmup_fraction = %g) exceed total steps = %ld",
                       warmup, c->warmup_fraction, total);
    if (!memchr(c->name, '\0', sizeof c->name))
        return sv_fail(err, "config name is not NUL-terminated");
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
static void format_value(const sv_config *c, const key_def *k, char *buf, size_t n) {
    const char *field = (const char *)c + k->off;
    switch (k->type) {
    case K_INT: snprintf(buf, n, "%d", *(const int *)field); break;
    case K_LONG: snprintf(buf, n, "%ld", *(const long *)field); break;
    case K_ULL: snprintf(buf, n, "%llu", *(const unsigned long long *)field); break;
    case K_FLOAT: format_real(buf, n, *(const float *)field, 1); break;
    case K_DOUBLE: format_real(buf, n, *(const double *)field, 0); break;
    case K_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); break;
    case K_STR: snprintf(buf, n, "%.*s", SV_PATH_LEN - 1, field); break;
    case K_DEPTHS: {
        const int *d = (const int *)field;
        snprintf(buf, n, "%d,%d,%d,%d", d[0], d[1], d[2], d[3]);
        break;
    }
    case K_DECAY:
        snprintf(buf, n, "%s", *(const sv_decay_mode *)field == SV_DECAY_TORCH ? "torch" : "tfa");
        break;
    case K_PRECISION:
        snprintf(buf, n, "%s", *(const sv_precision *)field == SV_BF16 ? "bf16" : "fp32");
        break;
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
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
        }
        char value[SV_PATH_LEN];
        format_value(c, k, value, sizeof value);
        /* "key =" for an empty string: no trailing blank */
        fprintf(f, "%s =%s%s\n", k->name, value[0] ? " " : "", value);
    }
}

/* Keys a resumed run may change: they steer output, logging and when to stop
 * this part, never the weights of any step (issue 14, section 3). Every other
 * key changes the trajectory. */
static const char *const resumable_keys[] = {
    "data.dir", "train.max_steps", "train.log_every", "train.eval_batch_size",
    "train.precision", /* issue 12: a resume may switch precision; the log says so */
    "train.collective_timeout",
    "train.zero_stage", /* the same updates to float rounding, laid out differently */
    "output.dir", "output.checkpoint_every", "output.keep_last",
};

static int key_is_resumable(const key_def *k) {
    char full[64];
    snprintf(full, sizeof full, "%s.%s", k->section, k->name);
    for (size_t i = 0; i < sizeof resumable_keys / sizeof *resumable_keys; i++)
        if (!strcmp(full, resumable_keys[i])) return 1;
    return 0;
}

int sv_config_diff(const sv_config *before, const sv_config *after, sv_config_change *out,
                   int max) {
    int count = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        char a[SV_PATH_LEN], b[SV_PATH_LEN];
        format_value(before, k, a, sizeof a);
        format_value(after, k, b, sizeof b);
        if (!strcmp(a, b)) continue;
        if (count < max) {
            sv_config_change *ch = &out[count];
            snprintf(ch->key, sizeof ch->key, "%s.%s", k->section, k->name);
            snprintf(ch->before, sizeof ch->before, "%s", a);
            snprintf(ch->after, sizeof ch->after, "%s", b);
            ch->trajectory = !key_is_resumable(k);
        }
        count++;
    }
    return count;
}

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
