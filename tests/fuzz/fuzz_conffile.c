/* fuzz_conffile.c: configuration file parser; every setting it yields is
 * "--KEY[=VALUE]" for a known key, with a "NAME:LINE" within the input. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conffile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct option opts[] = {
    {"socket", required_argument, NULL, 's'},
    {"appliance", required_argument, NULL, 'a'},
    {"chunk-size", required_argument, NULL, 'c'},
    {"no-seccomp", no_argument, NULL, 'S'},
    {"stop-embedded", no_argument, NULL, 'X'},
    {"verbose", optional_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    CONFFILE_OPTIONS,
    {},
};

static bool known(const char *arg)
{
        for (const struct option *o = opts; o->name; o++) {
                size_t n = strlen(o->name);

                if (strncmp(arg + 2, o->name, n) == 0 && (arg[2 + n] == 0 || arg[2 + n] == '='))
                        return o->val != 'h' && o->val != 'X' && o->val < CONFFILE_OPT_CONFIG;
        }
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const char *const not_in_file[] = {"stop-embedded", NULL};
        struct conffile c = {};
        struct xmem_error err = {};
        size_t lines = 1;

        for (size_t i = 0; i < size; i++)
                lines += data[i] == '\n';
        if (conffile_parse((const char *)data, size, "f", opts, not_in_file, &c, &err) < 0) {
                assert(err.msg[0] && strncmp(err.msg, "f:", 2) == 0);
                assert(c.n == 0 && !c.args);
                return 0;
        }
        for (size_t i = 0; i < c.n; i++) {
                assert(strncmp(c.args[i], "--", 2) == 0 && known(c.args[i]));
                assert(strncmp(c.where[i], "f:", 2) == 0);
                assert(strtoul(c.where[i] + 2, NULL, 10) >= 1);
                assert(strtoul(c.where[i] + 2, NULL, 10) <= lines);
        }
        conffile_done(&c);
        return 0;
}
