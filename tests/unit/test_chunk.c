/* test_chunk.c: the appliance's pure chunk and region bookkeeping: allocation,
 * reference counts, snapshot sharing, copy-on-write, revert, resize, exhaustion. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "chunk.h"
#include "region.h"

#define CS 4096u

static struct chunk_pool pool;
static struct region_table tab;
static const uint8_t key_a[XMEM_KEY_SIZE] = { 1 }, key_b[XMEM_KEY_SIZE] = { 2 },
                     key_c[XMEM_KEY_SIZE] = { 3 };

static void setup(void)
{
        cr_assert_eq(chunk_pool_init(&pool, 8), 0);
        cr_assert_eq(region_table_init(&tab, &pool, CS), 0);
}

static void teardown(void)
{
        region_table_done(&tab);
        chunk_pool_done(&pool);
}

static void punch_count(void *ud, chunk_id first, uint32_t n)
{
        (void)first;
        *(uint32_t *)ud += n;
}

/* Write to entry IDX of R the way the appliance does. Returns the chunk now mapped. */
static chunk_id write_chunk(struct region *r, uint64_t idx, chunk_id *ret_from)
{
        chunk_id from = 12345;
        cr_assert_geq(chunk_map_prepare_write(&pool, &r->map, idx, &from), 0);
        if (ret_from)
                *ret_from = from;
        return r->map.c[idx];
}

TestSuite(chunk, .init = setup, .fini = teardown);

Test(chunk, alloc_free_reuse_after_reclaim)
{
        chunk_id a, b, c;
        uint32_t punched = 0;

        cr_assert_eq(chunk_alloc(&pool, &a), 0);
        cr_assert_eq(chunk_alloc(&pool, &b), 0);
        cr_assert_neq(a, b);
        cr_assert_eq(pool.used, 2);
        chunk_ref(&pool, a);
        chunk_unref(&pool, a);
        cr_assert_eq(pool.refs[a], 1, "one ref left");
        chunk_unref(&pool, a);
        cr_assert_eq(pool.used, 1);
        /* a freed chunk is not handed out again before it was punched */
        for (int i = 0; i < 6; i++)
                cr_assert_eq(chunk_alloc(&pool, &c), 0);
        cr_assert_eq(chunk_alloc(&pool, &c), -ENOSPC);
        cr_assert_eq(chunk_pool_reclaim(&pool, punch_count, &punched), 1);
        cr_assert_eq(punched, 1);
        cr_assert_eq(chunk_alloc(&pool, &c), 0);
        cr_assert_eq(c, a);
}

static void punch_calls(void *ud, chunk_id first, uint32_t n)
{
        uint32_t *log = ud;
        log[log[0] * 2 + 1] = first;
        log[log[0] * 2 + 2] = n;
        log[0]++;
}

Test(chunk, reclaim_coalesces_runs)
{
        chunk_id c[4];
        uint32_t log[16] = {};

        for (int i = 0; i < 4; i++)
                cr_assert_eq(chunk_alloc(&pool, &c[i]), 0);
        chunk_unref(&pool, c[0]);
        chunk_unref(&pool, c[1]);
        chunk_unref(&pool, c[3]);
        chunk_pool_reclaim(&pool, punch_calls, log);
        cr_assert_eq(log[0], 2, "two runs: {0,1} and {3}");
        cr_assert_eq(log[1], c[0]);
        cr_assert_eq(log[2], 2);
        cr_assert_eq(log[3], c[3]);
        cr_assert_eq(log[4], 1);
}

Test(chunk, lazy_allocation_holes)
{
        struct region *r;

        cr_assert_eq(region_create(&tab, 0, 3 * CS - 10, key_a, false, 0, &r), 0);
        cr_assert_eq(r->size, 3 * CS, "rounded up to chunks");
        cr_assert_eq(r->id, 1);
        cr_assert_eq(pool.used, 0, "nothing allocated before a write");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(r->map.c[i], CHUNK_NONE);
        write_chunk(r, 1, NULL);
        cr_assert_eq(pool.used, 1);
        cr_assert(chunk_map_exclusive(&pool, &r->map, 1));
        cr_assert_not(chunk_map_exclusive(&pool, &r->map, 0));
}

Test(chunk, ids_never_reused_and_keys_checked)
{
        struct region *a, *b, *found;

        cr_assert_eq(region_create(&tab, 0, CS, key_a, false, 0, &a), 0);
        region_free(&tab, a);
        cr_assert_eq(region_create(&tab, 0, CS, key_b, false, 0, &b), 0);
        cr_assert_eq(b->id, 2);
        cr_assert_eq(region_lookup(&tab, 1, key_a, &found), -ENOENT);
        cr_assert_eq(region_lookup(&tab, 2, key_a, &found), -EACCES);
        cr_assert_eq(region_lookup(&tab, 2, key_b, &found), 0);
        cr_assert_eq(found, b);
        cr_assert_eq(region_lookup(&tab, 0, key_b, &found), -ENOENT);
}

Test(chunk, snapshot_shares_then_cow_breaks)
{
        struct region *r, *s;
        chunk_id orig, now, from;

        cr_assert_eq(region_create(&tab, 0, 2 * CS, key_a, false, 0, &r), 0);
        orig = write_chunk(r, 0, NULL);
        cr_assert_eq(region_snapshot(&tab, r, key_b, &s), 0);
        cr_assert(s->snapshot);
        cr_assert_eq(s->parent, r->id);
        cr_assert_eq(s->size, r->size);
        cr_assert_eq(s->map.c[0], orig, "snapshot shares the chunk");
        cr_assert_eq(pool.refs[orig], 2);
        cr_assert_eq(pool.used, 1, "a snapshot costs no chunk");
        cr_assert(chunk_shared(&pool, orig));

        now = write_chunk(r, 0, &from);
        cr_assert_neq(now, orig, "first write to a shared chunk copies it");
        cr_assert_eq(from, orig, "caller copies the old bytes from the shared chunk");
        cr_assert_eq(s->map.c[0], orig, "snapshot keeps the old chunk");
        cr_assert_eq(pool.refs[orig], 1);
        cr_assert_eq(pool.refs[now], 1);
        /* second write: already exclusive */
        cr_assert_eq(write_chunk(r, 0, &from), now);
        cr_assert_eq(from, CHUNK_NONE);
        /* a hole stays shared as a hole */
        cr_assert_eq(s->map.c[1], CHUNK_NONE);
}

Test(chunk, clone_is_writable_and_independent)
{
        struct region *r, *c;
        chunk_id orig;

        cr_assert_eq(region_create(&tab, 0, CS, key_a, false, 0, &r), 0);
        orig = write_chunk(r, 0, NULL);
        cr_assert_eq(region_clone(&tab, r, key_b, &c), 0);
        cr_assert_not(c->snapshot);
        cr_assert_eq(c->parent, 0);
        cr_assert_neq(write_chunk(c, 0, NULL), orig);
        cr_assert_eq(r->map.c[0], orig);
        cr_assert_eq(pool.refs[orig], 1);
}

Test(chunk, revert_restores_map_and_size)
{
        struct region *r, *s, *other, *s2;
        chunk_id orig;
        uint64_t size;
        uint32_t punched = 0;

        cr_assert_eq(region_create(&tab, 0, CS, key_a, false, 0, &r), 0);
        orig = write_chunk(r, 0, NULL);
        cr_assert_eq(region_snapshot(&tab, r, key_b, &s), 0);
        write_chunk(r, 0, NULL);
        cr_assert_eq(region_resize(&tab, r, 3 * CS, &size), 0);
        write_chunk(r, 2, NULL);
        cr_assert_eq(pool.used, 3);

        cr_assert_eq(region_revert(&tab, r, s), 0);
        cr_assert_eq(r->size, CS);
        cr_assert_eq(r->map.n, 1);
        cr_assert_eq(r->map.c[0], orig);
        cr_assert_eq(pool.refs[orig], 2);
        cr_assert_eq(pool.used, 1, "chunks written after the snapshot are dropped");
        cr_assert_eq(chunk_pool_reclaim(&pool, punch_count, &punched), 2);

        /* only a snapshot of that region; never a snapshot itself */
        cr_assert_eq(region_create(&tab, 0, CS, key_c, false, 0, &other), 0);
        cr_assert_eq(region_revert(&tab, other, s), -EINVAL);
        cr_assert_eq(region_revert(&tab, r, other), -EINVAL);
        cr_assert_eq(region_snapshot(&tab, other, key_c, &s2), 0);
        cr_assert_eq(region_revert(&tab, r, s2), -EINVAL);
        cr_assert_eq(region_revert(&tab, s, s), -EROFS);
}

Test(chunk, resize_grows_holes_and_shrink_drops_refs)
{
        struct region *r;
        uint64_t size = 0;

        cr_assert_eq(region_create(&tab, 0, 2 * CS, key_a, false, 0, &r), 0);
        write_chunk(r, 0, NULL);
        write_chunk(r, 1, NULL);
        cr_assert_eq(region_resize(&tab, r, 4 * CS + 1, &size), 0);
        cr_assert_eq(size, 5 * CS);
        cr_assert_eq(r->map.c[4], CHUNK_NONE);
        cr_assert_eq(pool.used, 2);
        cr_assert_eq(region_resize(&tab, r, CS, &size), 0);
        cr_assert_eq(size, CS);
        cr_assert_eq(pool.used, 1);
        cr_assert_eq(pool.npending, 1);
}

Test(chunk, snapshot_is_read_only_for_resize)
{
        struct region *r, *s;
        uint64_t size = 7;

        cr_assert_eq(region_create(&tab, 0, CS, key_a, false, 0, &r), 0);
        cr_assert_eq(region_snapshot(&tab, r, key_b, &s), 0);
        cr_assert_eq(region_resize(&tab, s, 2 * CS, &size), -EROFS);
        cr_assert_eq(size, 7, "out-param untouched on failure");
        cr_assert_eq(tab.nsnapshots, 1);
        region_free(&tab, s);
        cr_assert_eq(tab.nsnapshots, 0);
        cr_assert_eq(tab.count, 1);
}

Test(chunk, pool_exhaustion_and_free_returns_chunks)
{
        struct region *r, *s;
        chunk_id from;

        cr_assert_eq(region_create(&tab, 0, 8 * CS, key_a, false, 0, &r), 0);
        for (int i = 0; i < 8; i++)
                write_chunk(r, (uint64_t)i, NULL);
        cr_assert_eq(chunk_pool_free_count(&pool), 0);
        cr_assert_eq(region_snapshot(&tab, r, key_b, &s), 0, "a snapshot needs no free chunk");
        cr_assert_eq(chunk_map_prepare_write(&pool, &r->map, 3, &from), -ENOSPC,
                     "copy-on-write needs a free chunk");
        cr_assert_eq(s->map.c[3], r->map.c[3], "nothing changed on failure");
        region_free(&tab, s);
        cr_assert_eq(pool.npending, 0, "chunks still referenced by the region");
        region_free(&tab, r);
        cr_assert_eq(pool.used, 0);
        cr_assert_eq(pool.npending, 8);
        chunk_pool_reclaim(&pool, NULL, NULL);
        cr_assert_eq(chunk_pool_free_count(&pool), 8);
}

Test(chunk, share_and_set_keep_counts)
{
        struct chunk_map a = {}, b = {};
        chunk_id c;

        cr_assert_eq(chunk_map_resize(&pool, &a, 2), 0);
        cr_assert_eq(chunk_alloc(&pool, &c), 0);
        chunk_map_set(&pool, &a, 0, c);
        chunk_unref(&pool, c); /* the map holds the only reference now */
        cr_assert_eq(pool.refs[c], 1);
        cr_assert_eq(chunk_map_share(&pool, &b, &a), 0);
        cr_assert_eq(pool.refs[c], 2);
        chunk_map_set(&pool, &b, 0, CHUNK_NONE);
        cr_assert_eq(pool.refs[c], 1);
        chunk_map_set(&pool, &b, 1, c);
        cr_assert_eq(pool.refs[c], 2);
        chunk_map_clear(&pool, &a);
        chunk_map_clear(&pool, &b);
        cr_assert_eq(pool.used, 0);
}

Test(chunk, rebuild_after_replay)
{
        struct chunk_map m = {};

        pool.rebuilding = true;
        cr_assert_eq(chunk_map_resize(&pool, &m, 2), 0);
        chunk_map_set(&pool, &m, 0, 5);
        chunk_map_set(&pool, &m, 1, 5);
        chunk_map_set(&pool, &m, 1, 6);
        chunk_map_set(&pool, &m, 1, CHUNK_NONE);
        chunk_pool_rebuild_free(&pool);
        cr_assert_not(pool.rebuilding);
        cr_assert_eq(pool.refs[5], 1);
        cr_assert_eq(pool.used, 1);
        cr_assert_eq(pool.npending, 7, "every unreferenced chunk is punched once");
        chunk_pool_reclaim(&pool, NULL, NULL);
        for (int i = 0; i < 7; i++) {
                chunk_id c;
                cr_assert_eq(chunk_alloc(&pool, &c), 0);
                cr_assert_neq(c, 5);
        }
        chunk_map_clear(&pool, &m);
}
