/* fuzz_metrics_http.c: memd's metrics endpoint parsers: the HTTP request head
 * a scraper sends (any answer is one of the documented ones, never a read
 * past LEN) and the --metrics address. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct sockaddr_storage sa;
        struct xmem_error err = {0};
        socklen_t len = 0;
        char *copy = malloc(size ? size : 1), *s;
        int r;

        if (!copy)
                return 0;
        memcpy(copy, data, size); /* exactly SIZE bytes: ASan sees an overread */
        r = metrics_http_request(copy, size);
        assert(r == 0 || r == 200 || r == 400 || r == 404 || r == 405);
        assert(r != 0 || size < METRICS_REQUEST_MAX);
        free(copy);
        s = strndup((const char *)data, size);
        if (!s)
                return 0;
        if (metrics_parse_address(s, &sa, &len, &err) == 0)
                assert((sa.ss_family == AF_INET || sa.ss_family == AF_INET6) && len > 0);
        else
                assert(err.msg[0]);
        free(s);
        return 0;
}
