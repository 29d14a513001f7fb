/* fuzz_size.c: size and duration parsers: never crash, refuse or return a value
 * that formats back to something parse_size accepts. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = strndup((const char *)data, size), buf[32];
        uint64_t v, w;

        if (!s)
                return 0;
        if (parse_size(s, &v) == 0 && v % 1024 == 0 && v < (1ULL << 60)) {
                format_size(buf, sizeof(buf), v);
                if (!strchr(buf, '.')) {
                        assert(parse_size(buf, &w) == 0);
                        assert(w == v);
                }
        }
        (void)parse_duration(s, &v);
        (void)parse_u64(s, &v);
        free(s);
        return 0;
}
