/* test_residency.c: the residency manager's pure parts: victim choice
 * (enhanced CLOCK, clean before dirty), the budget formula, the latency
 * histogram, the pages' charges against the quota. No kernel involved. */
#include <criterion/criterion.h>
#include <string.h>

#include "pages.h"
#include "residency.h"

#define P CHUNK_PRESENT
#define D CHUNK_DIRTY
#define F CHUNK_FREE
#define E CHUNK_EVICTING
#define L CHUNK_FILLING

Test(residency, clean_unreferenced_first)
{
        uint8_t st[] = { D, P, F, P, D, L, P };
        uint8_t ref[] = { 0, 1, 0, 0, 0, 0, 0 };
        uint64_t out[8], hand = 0;
        bool dirty[8];

        size_t n = residency_clock_pick(st, ref, NULL, 7, &hand, out, dirty, 2);
        cr_assert_eq(n, 2);
        cr_assert_eq(out[0], 3);
        cr_assert_eq(out[1], 6);
        cr_assert(!dirty[0] && !dirty[1]);
        cr_assert_eq(st[3], E);
        cr_assert_eq(st[6], E);
        cr_assert_eq(hand, 0); /* past index 6, wrapped */
        cr_assert_eq(ref[1], 1, "first sweep clears nothing");
}

Test(residency, dirty_before_referenced_clean_and_second_chance)
{
        uint8_t st[] = { P, D, P };
        uint8_t ref[] = { 1, 0, 1 };
        uint64_t out[8], hand = 0;
        bool dirty[8];

        /* (0,0) none -> (0,1) chunk 1, clearing the referenced bits passed. */
        size_t n = residency_clock_pick(st, ref, NULL, 3, &hand, out, dirty, 1);
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0], 1);
        cr_assert(dirty[0]);
        cr_assert_eq(ref[0], 0, "passed: second chance used");
        cr_assert_eq(ref[2], 1, "not reached: the sweep stops at MAX");
        cr_assert_eq(hand, 2);
        /* Chunk 0 lost its second chance; chunk 2 loses it on this sweep. */
        n = residency_clock_pick(st, ref, NULL, 3, &hand, out, dirty, 4);
        cr_assert_eq(n, 2);
        cr_assert_eq(out[0], 0);
        cr_assert_eq(out[1], 2);
}

Test(residency, never_picks_busy_or_free)
{
        uint8_t st[] = { F, E, L, F };
        uint8_t ref[] = { 0, 0, 0, 0 };
        uint64_t out[4], hand = 2;
        bool dirty[4];

        cr_assert_eq(residency_clock_pick(st, ref, NULL, 4, &hand, out, dirty, 4), 0);
        cr_assert_eq(hand, 2);
        cr_assert_eq(residency_clock_pick(st, ref, NULL, 0, &hand, out, dirty, 4), 0);
}

Test(residency, all_referenced_still_finds_victims)
{
        uint8_t st[64], ref[64];
        uint64_t out[64], hand = 10;
        bool dirty[64];

        for (int i = 0; i < 64; i++) {
                st[i] = i % 2 ? D : P;
                ref[i] = 1;
        }
        size_t n = residency_clock_pick(st, ref, NULL, 64, &hand, out, dirty, 64);
        cr_assert_eq(n, 64);
        /* The 32 clean ones come before the 32 dirty ones. */
        for (int i = 0; i < 32; i++)
                cr_assert(!dirty[i], "victim %d dirty", i);
        for (int i = 32; i < 64; i++)
                cr_assert(dirty[i]);
        cr_assert_eq(out[0], 10);
}

Test(residency, budget_formula)
{
        /* 64 MiB limit, 40 MiB used of which 30 MiB arena, 8 MiB headroom. */
        cr_assert_eq(residency_budget_from(64 << 20, 40 << 20, 30 << 20, 8 << 20, 0), 46 << 20);
        cr_assert_eq(residency_budget_from(64 << 20, 70 << 20, 0, 8 << 20, 0), 0);
        cr_assert_eq(residency_budget_from(UINT64_MAX, 1, 0, 1, 0), UINT64_MAX);
        cr_assert_eq(residency_budget_from(64 << 20, 1 << 20, 2 << 20, 0, 0), 64 << 20);
        /* no reserve: the whole limit less the headroom caches external pages */
        cr_assert_eq(residency_budget_from(64 << 20, 2 << 20, 0, 8 << 20, 0), 54 << 20);
        /* the container's charged local allocations count before they are touched */
        cr_assert_eq(residency_budget_from(64 << 20, 10 << 20, 8 << 20, 8 << 20, 32 << 20),
                     24 << 20);
        cr_assert_eq(residency_budget_from(64 << 20, 48 << 20, 8 << 20, 8 << 20, 32 << 20),
                     16 << 20);
        cr_assert_eq(residency_budget_from(64 << 20, 0, 0, 8 << 20, 60 << 20), 0);
        cr_assert_lt(residency_low(100), residency_high(100));
        cr_assert_leq(residency_high(100), 100);
}

Test(residency, latency_histogram)
{
        static struct lat_hist h;

        cr_assert_eq(lat_hist_quantile(&h, 0.5), 0);
        for (int i = 0; i < 990; i++)
                lat_hist_add(&h, 10000); /* 10 us */
        for (int i = 0; i < 10; i++)
                lat_hist_add(&h, 1000000); /* 1 ms */
        cr_assert_eq(lat_hist_count(&h), 1000);
        uint64_t p50 = lat_hist_quantile(&h, 0.5), p999 = lat_hist_quantile(&h, 0.999);
        cr_assert(p50 >= 10000 && p50 <= 12500, "p50 %lu", (unsigned long)p50);
        cr_assert(p999 >= 1000000 && p999 <= 1250000, "p999 %lu", (unsigned long)p999);
}

Test(residency, eviction_runs_merge_contiguous_picks)
{
        uint64_t c[] = { 9, 3, 4, 10, 5, 20 };
        bool d[] = { true, false, true, true, true, false };

        residency_sort_picks(c, d, 6);
        uint64_t want[] = { 3, 4, 5, 9, 10, 20 };
        bool want_d[] = { false, true, true, true, true, false };
        for (int i = 0; i < 6; i++) {
                cr_assert_eq(c[i], want[i]);
                cr_assert_eq(d[i], want_d[i], "dirty flag follows its chunk (%d)", i);
        }
        cr_assert_eq(residency_run_len(c, d, 6, 0, 32, false), 3);  /* 3,4,5 */
        cr_assert_eq(residency_run_len(c, d, 6, 0, 2, false), 2);   /* capped */
        cr_assert_eq(residency_run_len(c, d, 6, 0, 32, true), 1);   /* 3 clean, 4 dirty */
        cr_assert_eq(residency_run_len(c, d, 6, 1, 32, true), 2);   /* 4,5 dirty */
        cr_assert_eq(residency_run_len(c, d, 6, 3, 32, false), 2);  /* 9,10 */
        cr_assert_eq(residency_run_len(c, d, 6, 5, 32, false), 1);  /* 20 alone */
}

Test(residency, pages_back_soon_are_hot)
{
        uint32_t at[4] = { 95, 50, 0, 95 };
        struct arena a = { .evicted_at = at, .evict_clock = 100, .resident_chunks = 10 };

        cr_assert_eq(pages_chances(&a, 0, true), PAGES_HOT, "back after 5 evictions, cache 10");
        cr_assert_eq(pages_chances(&a, 1, true), 1, "back after 50: the cache turned over");
        cr_assert_eq(pages_chances(&a, 2, true), 1, "never evicted");
        cr_assert_eq(pages_chances(&a, 3, false), 0, "prefetched");
}

Test(residency, hot_pages_survive_several_sweeps)
{
        uint8_t st[] = { P, P };
        uint8_t ref[] = { PAGES_HOT, 0 };
        uint64_t out[2], hand = 0;
        bool dirty[2];
        int calls = 0;

        for (int i = 0; i < 4; i++) { /* cold pages go first, however often */
                st[1] = P;
                ref[1] = 0;
                cr_assert_eq(residency_clock_pick(st, ref, NULL, 2, &hand, out, dirty, 1), 1);
                cr_assert_eq(out[0], 1, "round %d took the hot page", i);
        }
        cr_assert_eq(ref[0], PAGES_HOT, "cold victims cost the hot page nothing");
        /* Alone, it loses a chance per sweep and goes when they are spent. */
        st[1] = F;
        while (residency_clock_pick(st, ref, NULL, 2, &hand, out, dirty, 1) == 0)
                calls++;
        cr_assert_eq(out[0], 0);
        cr_assert_eq(calls, 1, "two sweeps per pick: %d picks came back empty", calls);
}

/* The charge against the external quota (pages.h) on a stack arena of 4. */
#define ARENA4(q)                                                                                 \
        uint8_t st[4] = {0}, ref[4] = {0}, stored[4] = {0}, charge[4] = {0};                     \
        uint32_t at[4] = {0};                                                                     \
        struct arena a = {.state = st, .referenced = ref, .stored = stored, .charge = charge,    \
                          .evicted_at = at, .n_chunks = 4, .quota = (q)}

Test(residency, writes_are_charged_up_to_the_quota)
{
        struct arena_quota q = {.limit = 2};
        ARENA4(&q);

        for (uint64_t c = 0; c < 3; c++) {
                pages_claim(&a, c);
                pages_installed(&a, c, false, true);
        }
        cr_assert_eq(atomic_load(&q.used), 0, "reads cost nothing");
        cr_assert_eq(pages_written(&a, 0), 1);
        cr_assert_eq(pages_written(&a, 0), 1, "a second write is not charged again");
        cr_assert_eq(pages_written(&a, 1), 1);
        cr_assert_eq(atomic_load(&q.used), 2);
        cr_assert_eq(pages_written(&a, 2), -EDQUOT, "over the quota");
        cr_assert_eq(st[2], P, "a refused write leaves the page clean");
        cr_assert_eq(pages_written(&a, 3), 0, "not resident");
        pages_discarded(&a, 0);
        cr_assert_eq(atomic_load(&q.used), 1, "given back");
        cr_assert_eq(st[0], P, "a discarded dirty page owes no write-back");
        cr_assert_eq(pages_written(&a, 2), 1, "room again");
}

Test(residency, a_failed_fill_returns_its_charge)
{
        struct arena_quota q = {.limit = 4};
        ARENA4(&q);

        pages_claim(&a, 0);
        pages_claim(&a, 1);
        cr_assert(pages_charge(&a, 0, PAGE_CHARGING) && pages_charge(&a, 1, PAGE_CHARGING));
        pages_installed(&a, 0, true, true);
        pages_given_back(&a, 1);
        cr_assert_eq(charge[0], PAGE_CHARGED);
        cr_assert_eq(charge[1], PAGE_UNCHARGED);
        cr_assert_eq(atomic_load(&q.used), 1);
        /* evicted with a write-back: still its own data, still charged */
        pages_hold(&a, 0);
        pages_evicted(&a, 0, true);
        cr_assert_eq(atomic_load(&q.used), 1);
        pages_discarded(&a, 0);
        cr_assert(!stored[0], "a discarded page is not fetched again");
        cr_assert_eq(atomic_load(&q.used), 0);
}

Test(residency, a_fork_clone_counts_its_own_writes_only)
{
        struct arena_quota q = {.limit = 1};
        ARENA4(&q);

        charge[0] = charge[1] = PAGE_INHERITED; /* the parent had written them */
        for (uint64_t c = 0; c < 3; c++) {
                pages_claim(&a, c);
                pages_installed(&a, c, false, true);
        }
        cr_assert_eq(pages_written(&a, 0), 1);
        cr_assert_eq(pages_written(&a, 1), 1);
        cr_assert_eq(atomic_load(&q.used), 0, "copies of the parent's pages");
        cr_assert_eq(pages_written(&a, 2), 1);
        cr_assert_eq(atomic_load(&q.used), 1, "a page of its own");
        pages_discarded(&a, 1);
        cr_assert_eq(atomic_load(&q.used), 1, "an inherited page was never counted");
}
