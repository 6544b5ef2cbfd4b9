/* Names and paths in output: UTF-8 checks, shell quoting, JSON strings (see text.h). */
#include "shiftvit/text.h"

#include <string.h>

/* Length (2-4) of the sequence that lead byte c starts, with the range
 * [lo, hi] its second byte must fall in (RFC 3629, table 3-7 of Unicode: no
 * overlongs, no surrogates, nothing above U+10FFFF); 0 if c cannot lead. */
static size_t utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) return 2;
    if (c >= 0xe0 && c <= 0xef) {
        if (c == 0xe0) *lo = 0xa0;
        if (c == 0xed) *hi = 0x9f;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (c == 0xf0) *lo = 0x90;
        if (c == 0xf4) *hi = 0x8f;
        return 4;
    }
    return 0;
}

/* Bytes at s, at most n, that form a valid prefix of a sequence led by s[0]. */
static size_t utf8_prefix(const unsigned char *u, size_t n, size_t avail, unsigned char lo,
                          unsigned char hi) {
    if (avail < 2 || u[1] < lo || u[1] > hi) return 1;
    size_t k = 2;
    while (k < n && k < avail && (u[k] & 0xc0) == 0x80) k++;
    return k;
}

size_t sv_utf8_seq(const char *s, size_t avail) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char lo, hi;
    size_t n = utf8_lead(u[0], &lo, &hi);
    return n && utf8_prefix(u, n, avail, lo, hi) == n ? n : 0;
}

/* Bytes of the printable character at s (1 for printable ASCII, 2-4 for a
 * UTF-8 character that is not a C1 control), 0 for a byte to escape. */
static size_t printable_len(const char *s, size_t avail) {
    unsigned char c = (unsigned char)s[0];
    if (c < 0x80) return c >= 0x20 && c != 0x7f;
    size_t m = sv_utf8_seq(s, avail);
    if (m == 2 && c == 0xc2 && (unsigned char)s[1] < 0xa0) return 0; /* U+0080..U+009F */
    return m;
}

static int needs_no_quotes(const char *s, size_t len) {
    if (len == 0 || s[0] == '=') return 0; /* zsh expands a word starting with '=' */
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t m = printable_len(s + i, len - i);
            if (!m) return 0;
            i += m;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("_./,:+=@%-", c)))
            return 0;
        i++;
    }
    return 1;
}

typedef struct {
    char *out;
    size_t n, pos, good; /* good: end of the last complete quoted piece */
    int full;
} sink;

static void put(sink *k, const char *s, size_t len) {
    if (k->full) return;
    if (k->pos + len + 1 > k->n) {
        k->full = 1;
        return;
    }
    memcpy(k->out + k->pos, s, len);
    k->pos += len;
}

static void piece_done(sink *k) {
    if (!k->full) k->good = k->pos;
}

const char *sv_shell_quote(const char *s, char *out, size_t n) {
    size_t len = strlen(s);
    if (n == 0) return out;
    if (needs_no_quotes(s, len) && len < n) {
        memcpy(out, s, len + 1);
        return out;
    }
    sink k = {out, n, 0, 0, 0};
    if (len == 0) put(&k, "''", 2);
    for (size_t i = 0; i < len;) {
        size_t m = printable_len(s + i, len - i);
        if (m) { /* a run of printable characters, single-quoted */
            put(&k, "'", 1);
            while (i < len && (m = printable_len(s + i, len - i)) > 0) {
                if (s[i] == '\'') put(&k, "'\\''", 4);
                else put(&k, s + i, m);
                i += m;
            }
            put(&k, "'", 1);
        } else { /* a run of bytes to escape, in $'...' */
            put(&k, "$'", 2);
            while (i < len && printable_len(s + i, len - i) == 0) {
                unsigned char c = (unsigned char)s[i++];
                char esc[8];
                if (c == '\n') memcpy(esc, "\\n", 3);
                else if (c == '\t') memcpy(esc, "\\t", 3);
                else if (c == '\r') memcpy(esc, "\\r", 3);
                else snprintf(esc, sizeof esc, "\\x%02x", c);
                put(&k, esc, strlen(esc));
            }
            put(&k, "'", 1);
        }
        piece_done(&k);
    }
    if (k.full) {
        k.pos = k.good;
        k.full = 0;
        while (k.pos + 4 > n && k.pos > 0) k.pos--; /* only when n is tiny */
        put(&k, "...", 3);
    }
    out[k.pos < n ? k.pos : n - 1] = '\0';
    return out;
}

/* Bytes of the ill-formed sequence at s to replace by one U+FFFD: its
 * maximal subpart (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal
 * Subparts", what Python's and ICU's decoders do): a lead byte and the
 * continuation bytes that could still have completed it. */
static size_t maximal_subpart(const char *s, size_t avail) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char lo, hi;
    size_t n = utf8_lead(u[0], &lo, &hi);
    return n ? utf8_prefix(u, n, avail, lo, hi) : 1;
}

int sv_json_string(FILE *f, const char *s) {
    int lossy = 0;
    size_t len = strlen(s);
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t m = sv_utf8_seq(s + i, len - i);
            if (m) fwrite(s + i, 1, m, f);
            else fputs("\\ufffd", f);
            lossy |= m == 0;
            i += m ? m : maximal_subpart(s + i, len - i);
            continue;
        }
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
        i++;
    }
    fputc('"', f);
    return lossy;
}

void sv_hex(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) fprintf(f, "%02x", *p);
}
