/* test_metrics.c: memd's metrics endpoint, its pure parts: the request head
 * a scraper sends, the --metrics address, and the latency histogram's
 * cumulative counts at powers of two. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "metrics.h"
#include "residency.h"

static int req(const char *s)
{
        return metrics_http_request(s, strlen(s));
}

Test(metrics, http_request_heads)
{
        cr_expect_eq(req("GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"), 200);
        cr_expect_eq(req("GET / HTTP/1.0\n\n"), 200);
        cr_expect_eq(req("GET /metrics?name[]=x HTTP/1.1\r\n\r\n"), 200);
        cr_expect_eq(req("GET /metrics HTTP/1.1\r\nHost: a\r\n"), 0, "incomplete");
        cr_expect_eq(req(""), 0);
        cr_expect_eq(req("POST /metrics HTTP/1.1\r\n\r\n"), 405);
        cr_expect_eq(req("GET /metricsX HTTP/1.1\r\n\r\n"), 404);
        cr_expect_eq(req("GET /metrics\r\n\r\n"), 400, "no version");
        cr_expect_eq(req("GET /me trics HTTP/1.1\r\n\r\n"), 400);
        cr_expect_eq(req("get /metrics HTTP/1.1\r\n\r\n"), 400);
        cr_expect_eq(req("GET /metrics SPDY/3\r\n\r\n"), 400);
        cr_expect_eq(req("\r\n\r\n"), 400);
}

Test(metrics, http_request_too_long)
{
        static char big[METRICS_REQUEST_MAX];

        memset(big, 'A', sizeof(big));
        cr_expect_eq(metrics_http_request(big, sizeof(big)), 400);
        cr_expect_eq(metrics_http_request(big, sizeof(big) - 1), 0);
}

static int addr(const char *s, int *family)
{
        struct sockaddr_storage sa;
        struct xmem_error err = {};
        socklen_t len;
        int r = metrics_parse_address(s, &sa, &len, &err);

        if (r == 0) {
                *family = sa.ss_family;
                if (sa.ss_family == AF_INET)
                        cr_expect_eq(ntohs(((struct sockaddr_in *)&sa)->sin_port), 9464);
        } else {
                cr_expect(err.msg[0], "%s: no message", s);
        }
        return r;
}

Test(metrics, addresses)
{
        int fam = 0;

        cr_expect_eq(addr("tcp://127.0.0.1:9464", &fam), 0);
        cr_expect_eq(fam, AF_INET);
        cr_expect_eq(addr("tcp://[::1]:9464", &fam), 0);
        cr_expect_eq(fam, AF_INET6);
        cr_expect_eq(addr("tcp://10.1.2.3:9464", &fam), 0, "an explicit address");
        cr_expect_lt(addr("tcp://0.0.0.0:9464", &fam), 0, "every interface");
        cr_expect_lt(addr("tcp://[::]:9464", &fam), 0, "every interface");
        cr_expect_lt(addr("tcp://localhost:9464", &fam), 0, "a host name");
        cr_expect_lt(addr("unix:///run/x.sock", &fam), 0);
        cr_expect_lt(addr("tcp://127.0.0.1", &fam), 0);
        cr_expect_lt(addr("127.0.0.1:9464", &fam), 0);
}

Test(metrics, latency_below_powers_of_two)
{
        static struct lat_hist h;
        uint64_t b[LAT_BUCKETS];

        lat_hist_add(&h, 3);
        lat_hist_add(&h, 1023);
        lat_hist_add(&h, 1024); /* the first of the next power */
        lat_hist_add(&h, 1500);
        lat_hist_add(&h, 5000000);
        for (unsigned i = 0; i < LAT_BUCKETS; i++)
                b[i] = h.bucket[i];
        cr_expect_eq(lat_hist_below_pow2(b, 2), 1);
        cr_expect_eq(lat_hist_below_pow2(b, 10), 2);
        cr_expect_eq(lat_hist_below_pow2(b, 11), 4);
        cr_expect_eq(lat_hist_below_pow2(b, 22), 4);
        cr_expect_eq(lat_hist_below_pow2(b, 23), 5);
        cr_expect_eq(lat_hist_below_pow2(b, 62), 5);
        cr_expect_eq(h.sum_ns, 3 + 1023 + 1024 + 1500 + 5000000);
}
