/* Names and paths in output (issue 14, section 5). A Linux file name may hold
 * any byte but '/' and NUL: spaces, quotes, shell metacharacters, newlines,
 * bytes that are not UTF-8. Everything the program prints or writes that
 * contains a name goes through one of these, so that a printed command pasted
 * into a shell runs, a line of output stays one line, and JSON parses with a
 * strict parser. */
#ifndef SHIFTVIT_TEXT_H
#define SHIFTVIT_TEXT_H

#include <stddef.h>
#include <stdio.h>

/* Length in bytes (2-4) of the valid multi-byte UTF-8 sequence starting at
 * s[0], with `avail` bytes readable, or 0 if it is malformed (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF). ASCII bytes return 0:
 * callers test them first. */
size_t sv_utf8_seq(const char *s, size_t avail);

/* Buffer size that sv_shell_quote never overflows for a string of fewer than
 * `len` bytes: every byte may become $'\xHH' (7 bytes) plus quotes. */
#define SV_QUOTED_LEN(len) (8 * (len) + 8)

/* Shell word for s, in GNU coreutils' "shell-escape" style (ls
 * --quoting-style=shell-escape): s itself when it holds only characters no
 * shell treats specially (letters, digits, valid UTF-8 letters and
 * _ . / , : + = @ % ^ -); else single-quoted, a quote written '\'', and control
 * bytes and bytes that are not UTF-8 as $'\n', $'\xHH' (bash, zsh, ksh; the
 * output is always one line). Returns out, which holds at most n bytes with the
 * terminating NUL; a result that does not fit is cut at a quoting boundary and
 * ends in "..." (never with n >= SV_QUOTED_LEN(strlen(s))). */
const char *sv_shell_quote(const char *s, char *out, size_t n);

/* Writes s as a JSON string (RFC 8259) with its quotes: '"' and '\\' escaped,
 * control bytes as \n, \t or \u00XX, and each ill-formed UTF-8 sequence as
 * one U+FFFD per maximal subpart, as Python's and ICU's decoders replace them
 * (JSON text must be UTF-8). Returns 1 if s was not valid
 * UTF-8 (the written string is then lossy; see sv_hex), else 0. */
int sv_json_string(FILE *f, const char *s);

/* Writes the bytes of s as lowercase hexadecimal (no quotes): the lossless
 * form of a name that sv_json_string could not carry exactly. */
void sv_hex(FILE *f, const char *s);

#endif
