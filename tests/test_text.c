/* Names and paths in output (issue 14, section 5), checked against the real
 * consumers rather than against expected strings:
 *   - sv_shell_quote: the quoted word, given to bash, is the original bytes
 *     (bash's printf '%s' prints it back), for every byte 1..255 alone and in
 *     names mixing spaces, quotes, shell metacharacters, newlines, bytes that
 *     are not UTF-8 and valid UTF-8; the word is always one line; plain names
 *     stay unquoted; a buffer too small gives a cut word that still parses;
 *   - sv_json_string: Python's json module (strict: control characters in
 *     strings are errors) decodes it to the original text when it is UTF-8,
 *     and to the text with U+FFFD for each bad byte otherwise, as Python's
 *     own decode(errors="replace") does; sv_hex gives the bytes back exactly.
 * Needs bash and python3 (both on every Debian machine this runs on). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shiftvit/text.h"
#include "test_util.h"

/* Runs `bash -c 'printf %s WORD'` and returns what it printed (caller frees). */
static char *bash_echo(const char *word, int *status) {
    char script[9000];
    snprintf(script, sizeof script, "printf %%s %s", word);
    char tmpl[] = "/tmp/sv_text_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, script, strlen(script)), (ssize_t)strlen(script));
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "bash %s", tmpl);
    char *out = sv_test_capture(cmd, status);
    unlink(tmpl);
    return out;
}

static void assert_round_trip(const char *name) {
    char q[SV_QUOTED_LEN(256)];
    sv_shell_quote(name, q, sizeof q);
    if (strchr(q, '\n')) fail_msg("quoted word spans lines: [%s]", q);
    int status;
    char *back = bash_echo(q, &status);
    if (status != 0 || strcmp(back, name) != 0) {
        char hex[1024] = "";
        for (size_t i = 0; name[i] && i < 300; i++) sprintf(hex + 2 * i, "%02x", (unsigned char)name[i]);
        fail_msg("bash read the word [%s] back as [%s] (status %d); original bytes %s", q, back, status, hex);
    }
    free(back);
}

static void test_every_byte(void **state) {
    (void)state;
    for (int c = 1; c < 256; c++) {
        char name[4] = {'a', (char)c, 'b', '\0'};
        assert_round_trip(name);
    }
}

static void test_odd_names(void **state) {
    (void)state;
    const char *names[] = {
        "run 1", "it's", "a\"b", "back\\slash", "$HOME", "`id`", "$(id)", "a;b&c|d", "x>y<z",
        "*.h5", "?", "[ab]", "{a,b}", "~user", "#hash", "!bang", "line\nbreak", "\ttab",
        "\r", "bad\xff\xfe utf8", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "\xc2\x85next-line",
        "'", "''", "-rf", "=cmd", "a=b", "/tmp/runs/x y/last.h5", "\x1b[31mred",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) assert_round_trip(names[i]);
}

static void test_plain_names_unquoted(void **state) {
    (void)state;
    char q[256];
    assert_string_equal(sv_shell_quote("results/runs/tiny-20261130-120000/last.h5", q, sizeof q),
                        "results/runs/tiny-20261130-120000/last.h5");
    assert_string_equal(sv_shell_quote("caf\xc3\xa9", q, sizeof q), "caf\xc3\xa9");
    assert_string_equal(sv_shell_quote("", q, sizeof q), "''");
}

static void test_cut_word_still_parses(void **state) {
    (void)state;
    char q[24];
    sv_shell_quote("a very long name with spaces\nand a newline", q, sizeof q);
    assert_true(strlen(q) < sizeof q);
    assert_non_null(strstr(q, "..."));
    int status;
    char *back = bash_echo(q, &status);
    assert_int_equal(status, 0);
    free(back);
}

/* Python decodes the JSON string; with hex = 1 it also checks sv_hex. */
static void assert_json(const char *name) {
    char tmpl[] = "/tmp/sv_json_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"s\":", f);
    int lossy = sv_json_string(f, name);
    fputs(",\"hex\":\"", f);
    sv_hex(f, name);
    fputs("\"}\n", f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys\n"
             "d = json.loads(open(sys.argv[1], \"rb\").read().decode(\"utf-8\"), strict=True)\n"
             "raw = bytes.fromhex(d[\"hex\"])\n"
             "assert d[\"s\"] == raw.decode(\"utf-8\", errors=\"replace\"), (d, raw)\n"
             "sys.exit(3 if %d != (raw.decode(\"utf-8\", errors=\"replace\").encode() != raw) else 0)' %s",
             lossy, tmpl);
    int st = sv_test_system(cmd);
    unlink(tmpl);
    if (st != 0) fail_msg("JSON of name #%s# failed in Python (status %d)", name, st);
}

static void test_json_strings(void **state) {
    (void)state;
    const char *names[] = {
        "plain.jpg", "quote\"d", "back\\slash", "line\nbreak", "\ttab\r", "\x01\x1f\x7f",
        "bad\xff.jpg", "caf\xc3\xa9", "\xed\xa0\x80 surrogate", "\xc0\xaf overlong", "\xf4\x90\x80\x80",
        "trunc\xe6\x97", "\xe6\x97\xa5\xe6\x9c\xac.png",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) assert_json(names[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_byte),
        cmocka_unit_test(test_odd_names),
        cmocka_unit_test(test_plain_names_unquoted),
        cmocka_unit_test(test_cut_word_still_parses),
        cmocka_unit_test(test_json_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
