/* test_transport_codec.c: the transports' pure logic: the shm extent cache
 * (replace, split, merge, lookup) and URI dispatch refusals. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "transport/extmap.h"
#include "transport/transport.h"

#define HOLE UINT64_MAX

static struct extmap m;

static void fini(void)
{
        extmap_clear(&m);
}

TestSuite(extmap, .fini = fini);

static void ins(uint64_t off, uint64_t len, uint64_t pool, bool w)
{
        struct extmap_ext e = { off, len, pool, w };
        cr_assert_eq(extmap_insert(&m, &e), 0);
}

static void expect(size_t i, uint64_t off, uint64_t len, uint64_t pool, bool w)
{
        cr_assert_lt(i, m.n, "only %zu extents", m.n);
        cr_expect_eq(m.v[i].off, off, "ext %zu off %lu", i, m.v[i].off);
        cr_expect_eq(m.v[i].len, len, "ext %zu len %lu", i, m.v[i].len);
        cr_expect_eq(m.v[i].pool, pool, "ext %zu pool %lu", i, m.v[i].pool);
        cr_expect_eq(m.v[i].writable, w, "ext %zu writable", i);
}

Test(extmap, find_in_empty_and_gaps)
{
        cr_assert_null(extmap_find(&m, 0));
        ins(100, 50, 1000, false);
        cr_assert_null(extmap_find(&m, 99));
        cr_assert_not_null(extmap_find(&m, 100));
        cr_assert_not_null(extmap_find(&m, 149));
        cr_assert_null(extmap_find(&m, 150));
}

Test(extmap, insert_keeps_order_and_merges_contiguous)
{
        ins(128, 64, 2128, false);
        ins(0, 64, 5000, false);
        ins(64, 64, 2064, false); /* continues 128.. in the pool: merged with it, not with 0.. */
        cr_assert_eq(m.n, 2);
        expect(0, 0, 64, 5000, false);
        expect(1, 64, 128, 2064, false);
}

Test(extmap, overlap_splits_old_extent)
{
        ins(0, 300, 1000, false);
        ins(100, 100, 9000, true);
        cr_assert_eq(m.n, 3);
        expect(0, 0, 100, 1000, false);
        expect(1, 100, 100, 9000, true);
        expect(2, 200, 100, 1200, false); /* the tail keeps its pool position */
        cr_assert_eq(extmap_find(&m, 250)->pool, 1200);
}

Test(extmap, replace_spanning_several)
{
        ins(0, 10, 100, false);
        ins(10, 10, 500, false);
        ins(20, 10, HOLE, false);
        ins(30, 10, 900, false);
        ins(5, 30, 7000, true);
        cr_assert_eq(m.n, 3);
        expect(0, 0, 5, 100, false);
        expect(1, 5, 30, 7000, true);
        expect(2, 35, 5, 905, false);
}

Test(extmap, holes_merge_only_with_holes)
{
        ins(0, 10, HOLE, false);
        ins(10, 10, HOLE, false);
        ins(20, 10, 30, false);
        cr_assert_eq(m.n, 2);
        expect(0, 0, 20, HOLE, false);
        expect(1, 20, 10, 30, false);
}

Test(extmap, writable_does_not_merge_with_readonly)
{
        ins(0, 10, 0, false);
        ins(10, 10, 10, true);
        cr_assert_eq(m.n, 2);
}

Test(extmap, many_random_inserts_stay_sorted_and_disjoint)
{
        uint64_t x = 42;
        for (int i = 0; i < 2000; i++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t off = (x >> 33) % 100000, len = 1 + (x >> 20) % 5000;
                ins(off, len, (x >> 7) % 1000000, (x & 1) != 0);
                const struct extmap_ext *e = extmap_find(&m, off + len - 1);
                cr_assert_not_null(e);
                cr_assert_leq(e->off, off + len - 1);
        }
        for (size_t i = 1; i < m.n; i++)
                cr_assert_leq(m.v[i - 1].off + m.v[i - 1].len, m.v[i].off, "overlap at %zu", i);
}

/* A read window answered while a write mapping is cached (another thread's
 * read-ahead) must not take the write mapping's writability away. */
Test(extmap, read_window_keeps_writable_extents)
{
        struct extmap_ext window = { 0, 1 << 20, 1 << 24, false };

        ins(65536, 65536, 5 << 20, true);
        ins(262144, 65536, 7 << 20, true);
        cr_assert_eq(extmap_insert_keep_writable(&m, &window), 0);
        cr_assert_eq(m.n, 5);
        expect(0, 0, 65536, 1 << 24, false);
        expect(1, 65536, 65536, 5 << 20, true);
        expect(2, 131072, 131072, (1 << 24) + 131072, false);
        expect(3, 262144, 65536, 7 << 20, true);
        expect(4, 327680, (1 << 20) - 327680, (1 << 24) + 327680, false);
        /* a hole answer fills around them the same way */
        extmap_clear(&m);
        ins(0, 4096, 9 << 20, true);
        window = (struct extmap_ext){ 0, 65536, HOLE, false };
        cr_assert_eq(extmap_insert_keep_writable(&m, &window), 0);
        expect(0, 0, 4096, 9 << 20, true);
        expect(1, 4096, 65536 - 4096, HOLE, false);
}

Test(transport_open, rdma_is_refused_with_a_reason)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };

        cr_assert_eq(xmem_transport_open("rdma://127.0.0.1:7070", NULL, &t, &err),
                     -EPROTONOSUPPORT);
        cr_assert_null(t);
        cr_assert(strstr(xmem_error_str(&err), "rdma"), "message: %s", xmem_error_str(&err));
}

Test(transport_open, bad_uri_and_refused_port)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };

        cr_assert_lt(xmem_transport_open("ftp://x", NULL, &t, &err), 0);
        cr_assert_lt(xmem_transport_open("unix:///nonexistent/xmem.sock", NULL, &t, &err), 0);
        cr_assert(strstr(xmem_error_str(&err), "connect"), "message: %s", xmem_error_str(&err));
        cr_assert_eq(xmem_transport_open("shm:///nonexistent/xmem.sock", NULL, &t, &err),
                     -ENOENT);
        cr_assert_null(t);
}
