/* Inside the config module (config_keys.c, config_value.c, config_ini.c):
 * the table of keys and the value parser and formatter that walk it. Not a
 * public header: commands use include/shiftvit/config.h. */
#ifndef SHIFTVIT_CONFIG_INTERNAL_H
#define SHIFTVIT_CONFIG_INTERNAL_H

#include <stddef.h>

#include "shiftvit/config.h"

/* Values are quoted in messages up to this many bytes. */
#define SHOW 200
#define SECTION_LIST "[data], [model], [optim], [train] or [output]"

typedef enum { K_INT, K_LONG, K_ULL, K_FLOAT, K_DOUBLE, K_BOOL, K_TEXT, K_DEPTHS, K_CHOICE } key_type;

/* One config key: where it lives in sv_config, how it is parsed and checked,
 * its default (written as in an INI file) and its documentation (Markdown,
 * the "Meaning" column of configs/README.md). */
typedef struct {
    const char *section;
    const char *name;
    key_type type;
    size_t off;                   /* offsetof(sv_config, field) */
    long long imin, imax;         /* K_INT, K_LONG, K_DEPTHS (per entry) */
    double rmin, rmax;            /* K_FLOAT, K_DOUBLE; rmax = INFINITY for none */
    int rmin_open, rmax_open;
    const char *const *choices;   /* K_CHOICE: names, NULL-terminated; the value is the index */
    const char *note;             /* appended to range errors, may be NULL */
    const char *def;              /* default value */
    int resumable;                /* a resumed run may change it (issue 14, section 3) */
    const char *doc;
} key_def;

extern const key_def sv_config_keys[];
extern const size_t sv_config_num_keys;

/* The key section.name, or NULL. */
const key_def *cfg_find_key(const char *section, const char *name);
/* True when s[0..n) names a section. */
int cfg_known_section(const char *s, size_t n);

/* Parses `value` for key k and stores it into c only when valid; else -1 and
 * the reason in why[n] ("not an integer", "must be in [1, 4096]"). */
int cfg_parse_value(sv_config *c, const key_def *k, const char *value, char *why, size_t n);
/* The value of key k in c as sv_config_write writes it. */
void cfg_format_value(const sv_config *c, const key_def *k, char *buf, size_t n);
/* Applies section.name = value; `where` ("file:line" or "--set") starts the
 * message in err[SV_ERR_LEN]. Unknown section or key: -1, the message lists
 * the known ones. */
int cfg_apply(sv_config *c, const char *where, const char *section, const char *name,
              const char *value, char *err);

#endif
