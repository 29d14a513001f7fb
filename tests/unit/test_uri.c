/* test_uri.c: endpoint parsing. */
#include <criterion/criterion.h>
#include <string.h>

#include "uri.h"

Test(uri, accepted)
{
        struct xmem_uri u;
        struct xmem_error err = { 0 };
        char buf[XMEM_URI_MAX];

        cr_assert_eq(xmem_uri_parse("tcp://127.0.0.1:7070", &u, &err), 0);
        cr_assert_eq(u.scheme, XMEM_URI_TCP);
        cr_assert_str_eq(u.host, "127.0.0.1");
        cr_assert_eq(u.port, 7070);

        cr_assert_eq(xmem_uri_parse("tcp://[::1]:9", &u, &err), 0);
        cr_assert_str_eq(u.host, "::1");
        cr_assert_str_eq(xmem_uri_format(&u, buf, sizeof(buf)), "tcp://[::1]:9");

        cr_assert_eq(xmem_uri_parse("unix:///run/xmem/appliance.sock", &u, &err), 0);
        cr_assert_eq(u.scheme, XMEM_URI_UNIX);
        cr_assert_str_eq(u.path, "/run/xmem/appliance.sock");

        cr_assert_eq(xmem_uri_parse("shm:///tmp/a.sock", &u, &err), 0);
        cr_assert_eq(u.scheme, XMEM_URI_SHM);
        cr_assert_eq(xmem_uri_parse("rdma://10.0.0.5:7471", &u, &err), 0);
        cr_assert_eq(u.scheme, XMEM_URI_RDMA);
}

Test(uri, refused_with_reason)
{
        static const struct {
                const char *s;
                const char *why;
        } bad[] = {
                { "", "empty" },
                { "127.0.0.1:7070", "expected" },
                { "ftp://x:1", "unknown scheme" },
                { "tcp://host", "missing port" },
                { "tcp://host:0", "port" },
                { "tcp://host:65536", "port" },
                { "tcp://host:12x", "port" },
                { "tcp://:80", "bad host" },
                { "tcp://::1:80", "brackets" },
                { "tcp://[::1:80", "unterminated" },
                { "unix://relative.sock", "absolute" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct xmem_uri u = { .port = 4242 };
                struct xmem_error err = { 0 };
                cr_assert_lt(xmem_uri_parse(bad[i].s, &u, &err), 0, "'%s' accepted", bad[i].s);
                cr_assert_not_null(strstr(err.msg, bad[i].why), "'%s': message '%s' lacks '%s'",
                                   bad[i].s, err.msg, bad[i].why);
                cr_assert_eq(u.port, 4242, "output touched on failure");
        }
}

Test(uri, path_too_long)
{
        char s[300] = "unix:///";
        struct xmem_uri u;
        struct xmem_error err = { 0 };

        memset(s + 8, 'a', 200);
        s[208] = 0;
        cr_assert_lt(xmem_uri_parse(s, &u, &err), 0);
        cr_assert_not_null(strstr(err.msg, "too long"));
}
