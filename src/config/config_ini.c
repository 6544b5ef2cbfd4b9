/* Config text: the INI reader (inih, Debian libinih-dev), --set overrides and
 * the messages that name file, line, [section] key and value.
 *
 * inih is driven through ini_parse_stream with a reader of our own, the
 * library's interface for custom input: the reader hands inih one line at a
 * time, so inih's line count is ours inside the handler (the Debian build
 * has no INI_HANDLER_LINENO), and it passes a line longer than the build's
 * INI_MAX_LINE (200) as a placeholder whose value it keeps aside (a long
 * data.dir path). */
#include "config_internal.h"

#include "shiftvit/common.h"
#include "shiftvit/text.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ini.h>

/* Config files are a few KiB; anything much bigger is not a config. */
#define SV_CONFIG_MAX_BYTES (1 << 20)
/* Placeholder value handed to inih for an overlong line; control bytes are
 * rejected in the text, so it cannot occur naturally. */
#define LONG_VALUE_MARK "\x01"

/* "a, b, c" list of the keys of one section, for unknown-key messages. */
static void section_keys(const char *section, char *out, size_t n) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sv_config_num_keys && len < n; i++) {
        if (strcmp(sv_config_keys[i].section, section) != 0) continue;
        int w = snprintf(out + len, n - len, "%s%s", len ? ", " : "", sv_config_keys[i].name);
        if (w < 0) break;
        len += (size_t)w;
    }
}

/* Applies section.key = value; `where` is "file:line" or "--set". */
int cfg_apply(sv_config *c, const char *where, const char *section, const char *name,
                 const char *value, char *err) {
    if (!*section)
        return sv_fail(err, "%s: %s = \"%.*s\": key outside any section (expected " SECTION_LIST ")",
                       where, name, SHOW, value);
    if (!cfg_known_section(section, strlen(section)))
        return sv_fail(err, "%s: unknown section [%s] (expected " SECTION_LIST ")", where, section);
    const key_def *k = cfg_find_key(section, name);
    if (!k) {
        char list[256];
        section_keys(section, list, sizeof list);
        return sv_fail(err, "%s: [%s] %s = \"%.*s\": unknown key (keys of [%s]: %s)", where, section,
                       name, SHOW, value, section, list);
    }
    char why[256];
    if (cfg_parse_value(c, k, value, why, sizeof why))
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
        if (close < e && *close == ']' && !cfg_known_section(b + 1, (size_t)(close - b - 1))) {
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
    if (cfg_apply(st->cfg, where, section, name, value, st->err)) {
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
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) /* a FIFO would block the read */
        return sv_fail(err, "config file %s is %s, not a regular file", path,
                       S_ISDIR(sb.st_mode) ? "a directory" : "a device, FIFO or socket");
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
    int rc = cfg_apply(c, "--set", section, name, value, err);
    free(value);
    return rc;
}

