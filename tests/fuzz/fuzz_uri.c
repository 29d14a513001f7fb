/* fuzz_uri.c: endpoint parser; a parsed URI must format and parse back equal. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "uri.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct xmem_uri u, v;
        struct xmem_error err = { 0 };
        char *s, buf[XMEM_URI_MAX];

        s = strndup((const char *)data, size);
        if (!s)
                return 0;
        if (xmem_uri_parse(s, &u, &err) == 0) {
                xmem_uri_format(&u, buf, sizeof(buf));
                assert(xmem_uri_parse(buf, &v, &err) == 0);
                assert(v.scheme == u.scheme && v.port == u.port);
                assert(strcmp(v.host, u.host) == 0 && strcmp(v.path, u.path) == 0);
        } else {
                assert(err.msg[0]);
        }
        free(s);
        return 0;
}
