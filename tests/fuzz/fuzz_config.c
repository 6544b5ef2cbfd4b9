/* libFuzzer target for the config parser (include/shiftvit/config.h): the
 * input as INI text (sv_config_load_string), its first line as a --set
 * assignment (sv_config_set), then sv_config_validate. Invariants checked
 * besides the sanitizers: an error always comes with a message, and a config
 * that loads writes out (sv_config_write) as text that loads back and writes
 * out identically (checkpoints store the config this way). Built and run by
 * tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shiftvit/common.h"
#include "shiftvit/config.h"

static char *write_text(const sv_config *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) abort();
    sv_config_write(c, f);
    if (fclose(f) != 0 || !text) abort();
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    sv_config c;
    char err[SV_ERR_LEN];
    sv_config_defaults(&c);
    err[0] = '\0';
    int rc = sv_config_load_string(&c, text, "fuzz.ini", err);
    if (rc != 0 && !err[0]) abort();

    /* The first line as a --set override, on top of the defaults. */
    size_t l = strcspn(text, "\n");
    char *line = strndup(text, l);
    sv_config s;
    sv_config_defaults(&s);
    err[0] = '\0';
    if (line && sv_config_set(&s, line, err) != 0 && !err[0]) abort();
    free(line);

    if (rc == 0) {
        err[0] = '\0';
        int valid = sv_config_validate(&c, err) == 0;
        if (!valid && !err[0]) abort();
        if (valid) {
            (void)sv_config_total_steps(&c);
            (void)sv_config_warmup_steps(&c);
        }
        /* Round trip: write, load the text into fresh defaults, write again. */
        char *a = write_text(&c);
        sv_config d;
        sv_config_defaults(&d);
        if (sv_config_load_string(&d, a, "written", err) != 0) {
            fprintf(stderr, "written config does not load back: %s\n---\n%s---\n", err, a);
            abort();
        }
        char *b = write_text(&d);
        if (strcmp(a, b) != 0) {
            fprintf(stderr, "config changes over a write/read round trip:\n---\n%s---\n%s---\n", a, b);
            abort();
        }
        free(a);
        free(b);
    }
    free(text);
    return 0;
}
