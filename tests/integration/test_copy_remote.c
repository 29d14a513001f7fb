/* test_copy_remote.c: appliance-to-appliance copy. The client asks appliance A
 * to copy a region to appliance B; the data goes A -> B, never through us. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "transport/transport.h"

#define SIZE (3u << 20)

static struct harness_proc pa, pb;

static void setup(void)
{
        static const char *const args[] = { "--pool-size", "128M", NULL };
        harness_init(&pa);
        harness_init(&pb);
        harness_appliance_start(&pa, args);
        harness_appliance_start(&pb, args);
}

static void teardown(void)
{
        harness_cleanup(&pa);
        harness_cleanup(&pb);
}

TestSuite(copy_remote, .init = setup, .fini = teardown, .timeout = 60);

static struct xmem_transport *open_uri(const char *uri)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };
        cr_assert_eq(xmem_transport_open(uri, NULL, &t, &err), 0, "open %s: %s", uri,
                     xmem_error_str(&err));
        return t;
}

Test(copy_remote, region_a_to_b)
{
        struct xmem_transport *ta = open_uri(pa.tcp_uri), *tb = open_uri(pb.tcp_uri);
        struct xmem_region_ref src, dst, bad;
        static uint8_t w[SIZE], r[SIZE];

        cr_assert(xmem_transport_hello(ta)->features & XMEM_FEAT_REMOTE_COPY);
        cr_assert_eq(xmem_region_alloc(ta, SIZE, &src, NULL), 0);
        cr_assert_eq(xmem_region_alloc(tb, SIZE, &dst, NULL), 0);
        harness_pattern(w, SIZE, 77, 0);
        cr_assert_eq(xmem_write(ta, &src, 0, w, SIZE), 0);

        cr_assert_eq(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &dst, 0, SIZE), 0);
        cr_assert_eq(xmem_read(tb, &dst, 0, r, SIZE), 0);
        cr_assert(!memcmp(w, r, SIZE), "B does not hold A's data");

        /* unaligned piece to another offset */
        memset(r, 0, SIZE);
        cr_assert_eq(xmem_region_copy(ta, &src, 4321, pb.tcp_uri, &dst, 100, 654321), 0);
        cr_assert_eq(xmem_read(tb, &dst, 100, r, 654321), 0);
        cr_assert(!memcmp(w + 4321, r, 654321), "unaligned remote copy differs");

        /* a wrong destination key is refused by B, reported through A */
        bad = dst;
        bad.key[3] ^= 8;
        cr_assert_lt(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &bad, 0, 4096), 0);
        /* an unreachable destination fails, it does not hang */
        cr_assert_lt(xmem_region_copy(ta, &src, 0, "tcp://127.0.0.1:1", &dst, 0, 4096), 0);
        xmem_transport_close(ta);
        xmem_transport_close(tb);
}

/* The client sends only the COPY: during the copy it holds no connection to B
 * at all (B's region was made beforehand, that transport closed), so the data
 * can only have gone from A to B directly. */
Test(copy_remote, data_bypasses_client)
{
        struct xmem_transport *ta, *tb = open_uri(pb.tcp_uri);
        struct xmem_region_ref src, dst;
        static uint8_t w[SIZE], r[SIZE];

        cr_assert_eq(xmem_region_alloc(tb, SIZE, &dst, NULL), 0);
        xmem_transport_close(tb);

        ta = open_uri(pa.tcp_uri);
        cr_assert_eq(xmem_region_alloc(ta, SIZE, &src, NULL), 0);
        harness_pattern(w, SIZE, 5, 0);
        cr_assert_eq(xmem_write(ta, &src, 0, w, SIZE), 0);
        cr_assert_eq(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &dst, 0, SIZE), 0);
        xmem_transport_close(ta);

        tb = open_uri(pb.tcp_uri);
        cr_assert_eq(xmem_read(tb, &dst, 0, r, SIZE), 0);
        cr_assert(!memcmp(w, r, SIZE), "B does not hold A's data");
        xmem_transport_close(tb);
}
