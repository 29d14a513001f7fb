/* test_regions.c: region management through the tcp and shm transports
 * against a real appliance: snapshot, clone, revert, resize, free, keys,
 * read-only snapshots, server-side copy within one appliance. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "transport/transport.h"

#define MIB (1u << 20)

static struct harness_proc app;
static uint8_t a[2 * MIB], b[2 * MIB];

static void setup(void)
{
        harness_appliance_setup(&app, "256M");
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(regions, .init = setup, .fini = teardown, .timeout = 60);

static struct xmem_transport *open_kind(const char *kind)
{
        const char *uri = !strcmp(kind, "tcp") ? app.tcp_uri : app.shm_uri;
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };
        cr_assert_eq(xmem_transport_open(uri, NULL, &t, &err), 0, "open %s: %s", uri,
                     xmem_error_str(&err));
        return t;
}

static struct xmem_region_ref filled(struct xmem_transport *t, uint64_t size, uint64_t seed)
{
        struct xmem_region_ref r;
        cr_assert_eq(xmem_region_alloc(t, size, &r, NULL), 0);
        harness_pattern(a, size, seed, 0);
        cr_assert_eq(xmem_write(t, &r, 0, a, size), 0);
        return r;
}

/* Region R holds the pattern SEED over [OFF, OFF+LEN). */
static bool holds(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t seed,
                  uint64_t off, uint64_t len)
{
        cr_assert_eq(xmem_read(t, r, off, b, len), 0);
        harness_pattern(a, len, seed, off);
        return memcmp(a, b, len) == 0;
}

static void snapshot_then_write(const char *kind)
{
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = filled(t, MIB, 1), s;

        /* read first so shm caches the pre-snapshot extents */
        cr_assert(holds(t, &r, 1, 0, MIB));
        cr_assert_eq(xmem_region_snapshot(t, &r, &s), 0);
        cr_assert_neq(s.id, r.id);
        harness_pattern(a, 200000, 2, 100000);
        cr_assert_eq(xmem_write(t, &r, 100000, a, 200000), 0);
        cr_assert(holds(t, &s, 1, 0, MIB), "%s: snapshot changed by a later write", kind);
        cr_assert(holds(t, &r, 2, 100000, 200000), "%s: region lost its new data", kind);
        cr_assert(holds(t, &r, 1, 0, 100000));
        cr_assert(holds(t, &r, 1, 300000, MIB - 300000));
        /* snapshots are read-only */
        cr_assert_eq(xmem_write(t, &s, 0, a, 4096), -EROFS);
        xmem_transport_close(t);
}

Test(regions, snapshot_tcp) { snapshot_then_write("tcp"); }
Test(regions, snapshot_shm) { snapshot_then_write("shm"); }

static void clone_independent(const char *kind)
{
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = filled(t, MIB, 3), c;

        cr_assert_eq(xmem_region_clone(t, &r, &c), 0);
        cr_assert(holds(t, &c, 3, 0, MIB), "%s: clone does not start as a copy", kind);
        harness_pattern(a, 70000, 4, 0);
        cr_assert_eq(xmem_write(t, &c, 0, a, 70000), 0);
        harness_pattern(a, 70000, 5, 500000);
        cr_assert_eq(xmem_write(t, &r, 500000, a, 70000), 0);
        cr_assert(holds(t, &r, 3, 0, 70000), "%s: clone write shows in source", kind);
        cr_assert(holds(t, &c, 3, 500000, 70000), "%s: source write shows in clone", kind);
        cr_assert(holds(t, &c, 4, 0, 70000));
        cr_assert(holds(t, &r, 5, 500000, 70000));
        xmem_transport_close(t);
}

Test(regions, clone_tcp) { clone_independent("tcp"); }
Test(regions, clone_shm) { clone_independent("shm"); }

static void revert(const char *kind)
{
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = filled(t, MIB, 6), s, bad;

        cr_assert_eq(xmem_region_snapshot(t, &r, &s), 0);
        harness_pattern(a, MIB, 7, 0);
        cr_assert_eq(xmem_write(t, &r, 0, a, MIB), 0);
        cr_assert(holds(t, &r, 7, 0, MIB));
        bad = s;
        bad.key[0] ^= 1;
        cr_assert_eq(xmem_region_revert(t, &r, &bad), -EACCES);
        cr_assert_eq(xmem_region_revert(t, &r, &s), 0);
        cr_assert(holds(t, &r, 6, 0, MIB), "%s: revert did not restore the snapshot", kind);
        /* writable again after the revert, snapshot still intact */
        harness_pattern(a, 4096, 8, 0);
        cr_assert_eq(xmem_write(t, &r, 0, a, 4096), 0);
        cr_assert(holds(t, &s, 6, 0, MIB));
        xmem_transport_close(t);
}

Test(regions, revert_tcp) { revert("tcp"); }
Test(regions, revert_shm) { revert("shm"); }

static void resize_free_keys(const char *kind)
{
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = filled(t, MIB, 9), bad = r;
        uint64_t size = 0;
        char *json = NULL;

        cr_assert_eq(xmem_region_resize(t, &r, 2 * MIB, &size), 0);
        cr_assert_geq(size, 2 * MIB);
        cr_assert(holds(t, &r, 9, 0, MIB), "%s: grow lost data", kind);
        cr_assert_eq(xmem_read(t, &r, MIB, b, MIB), 0);
        for (unsigned i = 0; i < MIB; i++)
                cr_assert_eq(b[i], 0, "%s: grown part not zero at %u", kind, i);
        cr_assert_eq(xmem_region_resize(t, &r, MIB / 2, &size), 0);
        cr_assert_lt(xmem_read(t, &r, MIB / 2, b, 4096), 0, "read past a shrunk end");

        bad.key[5] ^= 0x40;
        cr_assert_eq(xmem_read(t, &bad, 0, b, 4096), -EACCES);
        cr_assert_eq(xmem_write(t, &bad, 0, b, 4096), -EACCES);

        cr_assert_eq(xmem_stats(t, &r, &json), 0);
        cr_assert(json && json[0] == '{', "stats: %s", json ? json : "(null)");
        free(json);
        cr_assert_eq(xmem_stats(t, NULL, &json), 0);
        free(json);

        cr_assert_eq(xmem_region_free(t, &r), 0);
        cr_assert_eq(xmem_read(t, &r, 0, b, 4096), -ENOENT);
        cr_assert_eq(xmem_write(t, &r, 0, b, 4096), -ENOENT);
        cr_assert_eq(xmem_region_free(t, &r), -ENOENT);
        xmem_transport_close(t);
}

Test(regions, resize_free_keys_tcp) { resize_free_keys("tcp"); }
Test(regions, resize_free_keys_shm) { resize_free_keys("shm"); }

static void local_copy(const char *kind)
{
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref src = filled(t, 2 * MIB, 10), dst, bad;
        uint64_t chunk = xmem_transport_hello(t)->chunk_size;

        cr_assert_eq(xmem_region_alloc(t, 2 * MIB, &dst, NULL), 0);
        /* aligned: whole chunks */
        cr_assert_eq(xmem_region_copy(t, &src, chunk, NULL, &dst, 0, 4 * chunk), 0);
        cr_assert_eq(xmem_read(t, &dst, 0, b, 4 * chunk), 0);
        harness_pattern(a, 4 * chunk, 10, chunk);
        cr_assert(!memcmp(a, b, 4 * chunk), "%s: aligned copy differs", kind);
        /* unaligned source and destination */
        cr_assert_eq(xmem_region_copy(t, &src, 1234, "", &dst, MIB + 777, 300001), 0);
        cr_assert_eq(xmem_read(t, &dst, MIB + 777, b, 300001), 0);
        harness_pattern(a, 300001, 10, 1234);
        cr_assert(!memcmp(a, b, 300001), "%s: unaligned copy differs", kind);
        /* the copy is independent of later writes to the source */
        harness_pattern(a, 4 * chunk, 11, chunk);
        cr_assert_eq(xmem_write(t, &src, chunk, a, 4 * chunk), 0);
        cr_assert_eq(xmem_read(t, &dst, 0, b, 4 * chunk), 0);
        harness_pattern(a, 4 * chunk, 10, chunk);
        cr_assert(!memcmp(a, b, 4 * chunk), "%s: source write leaked into copy", kind);
        bad = dst;
        bad.key[0] ^= 1;
        cr_assert_eq(xmem_region_copy(t, &src, 0, NULL, &bad, 0, 4096), -EACCES);
        cr_assert_eq(xmem_region_copy(t, &src, 0, NULL, &dst, 2 * MIB - 10, 4096), -ERANGE);
        xmem_transport_close(t);
}

Test(regions, copy_tcp) { local_copy("tcp"); }
Test(regions, copy_shm) { local_copy("shm"); }

/* A restarted memd re-opens its regions by id and key on a new connection:
 * the data is there, a wrong key or an unknown id is refused, a freed region
 * is gone. */
static void open_existing(const char *kind)
{
        struct xmem_transport *t = open_kind(kind), *again;
        struct xmem_region_ref r = filled(t, 1 << 20, 77), bad;
        uint64_t size = 0;

        again = open_kind(kind);
        cr_assert_eq(xmem_region_open(again, &r, &size), 0);
        cr_expect_geq(size, 1 << 20);
        cr_expect(holds(again, &r, 77, 0, 1 << 20));
        bad = r;
        bad.key[0] ^= 1;
        cr_expect_eq(xmem_region_open(again, &bad, &size), -EACCES);
        bad = r;
        bad.id += 1000;
        cr_expect_eq(xmem_region_open(again, &bad, &size), -ENOENT);
        cr_assert_eq(xmem_region_free(t, &r), 0);
        cr_expect_eq(xmem_region_open(again, &r, &size), -ENOENT);
        xmem_transport_close(again);
        xmem_transport_close(t);
}

Test(regions, open_existing_tcp) { open_existing("tcp"); }
Test(regions, open_existing_shm) { open_existing("shm"); }
