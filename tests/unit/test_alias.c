/* test_alias.c: the arena's alias table (memd/alias.h): where memd serves a
 * chunk in each state of an alias, runs cut where addresses stop being
 * adjacent, parts of an alias split off, and bad requests refused with the
 * table unchanged. A real arena (a memfd); no process is attached (the
 * userfaultfd calls fail quietly). */
#include <criterion/criterion.h>

#include "arena.h"

#define PG 4096ULL
#define BASE 0x7f0000000000ULL
#define ALIAS 0x500000000ULL

static struct arena *a;

static void setup(void)
{
        cr_assert_eq(arena_new(64 * PG, PG, NULL, true, &a), 0);
        arena_attach(a, -1, BASE);
}

static void teardown(void)
{
        arena_free(a);
}

static int op(const char *what, uint64_t addr, uint64_t first, uint64_t n)
{
        struct xmem_error err = {};

        return arena_alias_op(a, what, addr, first * PG, n * PG, &err);
}

Test(alias, states_decide_the_address, .init = setup, .fini = teardown)
{
        uint64_t lo, hi;

        cr_assert_eq(arena_chunk_addr(a, 10), BASE + 10 * PG);
        cr_assert_eq(op("pin", ALIAS, 8, 4), 0);
        /* pinned: still served at the arena's address, kept from eviction */
        cr_expect_eq(arena_chunk_addr(a, 10), BASE + 10 * PG);
        cr_expect(a->pinned[10] && !a->pinned[12]);
        cr_expect(!arena_owns(a, ALIAS));
        cr_assert_eq(op("live", ALIAS, 8, 4), 0);
        cr_expect_eq(arena_chunk_addr(a, 10), ALIAS + 2 * PG);
        cr_expect_eq(arena_chunk_of(a, ALIAS + 3 * PG + 17), 11);
        cr_expect(!a->pinned[10]);
        arena_segment(a, 9, &lo, &hi);
        cr_expect(lo == 8 && hi == 12, "alias segment [%lu, %lu)", lo, hi);
        arena_segment(a, 20, &lo, &hi);
        cr_expect(lo == 12 && hi == 64, "arena segment [%lu, %lu)", lo, hi);
        arena_segment(a, 3, &lo, &hi);
        cr_expect(lo == 0 && hi == 8, "arena segment [%lu, %lu)", lo, hi);
        cr_assert_eq(op("drop", ALIAS, 8, 4), 0);
        cr_expect_eq(arena_chunk_addr(a, 10), BASE + 10 * PG);
        cr_expect_eq(arena_chunk_of(a, ALIAS), UINT64_MAX);
}

Test(alias, part_of_an_alias_held_and_dropped, .init = setup, .fini = teardown)
{
        cr_assert_eq(op("remap", ALIAS, 16, 8), 0); /* live at once */
        cr_assert_eq(op("hold", ALIAS + 2 * PG, 18, 2), 0);
        cr_expect(arena_alias_held(a, 18) && arena_alias_held(a, 19));
        cr_expect(!arena_alias_held(a, 17) && !arena_alias_held(a, 20));
        cr_expect_eq(atomic_load(&a->n_aliases), 3);
        cr_assert_eq(op("drop", ALIAS + 2 * PG, 18, 2), 0);
        cr_expect_eq(arena_chunk_addr(a, 18), BASE + 18 * PG);
        cr_expect_eq(arena_chunk_addr(a, 20), ALIAS + 4 * PG);
        cr_expect_eq(arena_chunk_addr(a, 17), ALIAS + 1 * PG);
}

Test(alias, bad_requests_change_nothing, .init = setup, .fini = teardown)
{
        struct xmem_error err = {};

        cr_assert_eq(op("pin", ALIAS, 8, 4), 0);
        cr_expect_eq(op("pin", BASE + PG, 30, 1), -EINVAL);           /* in the arena */
        cr_expect_eq(op("pin", ALIAS + 2 * PG, 40, 4), -EEXIST);      /* overlaps */
        cr_expect_eq(op("pin", ALIAS + 100 * PG, 9, 1), -EEXIST);     /* pages taken */
        cr_expect_eq(op("live", ALIAS + PG, 8, 1), -ENOENT);          /* not where it is */
        cr_expect_eq(op("drop", ALIAS + 100 * PG, 30, 1), -ENOENT);   /* none */
        cr_expect_eq(arena_alias_op(a, "pin", ALIAS + 100 * PG, 62 * PG, 4 * PG, &err), -EINVAL);
        cr_expect(strstr(xmem_error_str(&err), "must lie in the arena"), "%s",
                  xmem_error_str(&err));
        cr_expect_eq(arena_alias_op(a, "pin", ALIAS + 1, 0, PG, &err), -EINVAL);
        cr_expect_eq(atomic_load(&a->n_aliases), 1);
        cr_expect_eq(arena_chunk_addr(a, 9), BASE + 9 * PG);
}
