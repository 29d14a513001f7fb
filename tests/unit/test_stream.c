/* test_stream.c: the fill unit follows the access (memd/stream.c): random
 * misses fill one page, sequential streams (forward, backward, several at
 * once) grow to the largest unit with a window ahead, strides prefetch along
 * the stride. Pure logic. */
#include <criterion/criterion.h>

#include "stream.h"

static const struct stream_opts opts = {.max_unit = 512, .window = 2};

/* Pages a plan fills or prefetches. */
static uint64_t planned(const struct stream_plan *p)
{
        return p->count + (uint64_t)p->ahead * (p->unit ? p->unit : 0);
}

/* Random objects of two pages (a redis value of 5 KiB): the first miss of
 * each is soon followed by one on the next page, until the table learns to
 * fill both at once. Never a stream, never more than the two pages. */
Test(stream, objects_across_page_boundaries_fill_two_pages)
{
        struct stream_table t;
        struct stream_plan p;
        uint64_t n = 65536, pages = 0, faults = 0, objects = 10000, x = 88172645463325252ULL;

        stream_table_init(&t);
        for (uint64_t i = 0; i < objects; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                uint64_t q = x % (n - 1);
                stream_plan(&t, &opts, q, n, &p);
                faults++;
                pages += planned(&p);
                if (!(p.start <= q + 1 && q + 1 < p.start + p.count)) {
                        stream_plan(&t, &opts, q + 1, n, &p);
                        faults++;
                        pages += planned(&p);
                }
        }
        cr_assert_lt(faults, objects + objects / 4, "%llu faults for %llu objects",
                     (unsigned long long)faults, (unsigned long long)objects);
        cr_assert_lt(pages, 2 * objects + objects / 10, "%llu pages planned",
                     (unsigned long long)pages);
}

Test(stream, random_misses_fill_one_page)
{
        struct stream_table t;
        struct stream_plan p;
        uint64_t n = 65536, total = 0, misses = 200000, x = 88172645463325252ULL;

        stream_table_init(&t);
        for (uint64_t i = 0; i < misses; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                stream_plan(&t, &opts, x % n, n, &p);
                cr_assert_geq(p.count, 1);
                cr_assert(p.start <= x % n && x % n < p.start + p.count);
                total += planned(&p);
        }
        cr_assert_lt(total, misses + misses / 20,
                     "random access planned %llu pages for %llu misses", (unsigned long long)total,
                     (unsigned long long)misses);
}

Test(stream, forward_stream_grows_to_the_largest_unit)
{
        struct stream_table t;
        struct stream_plan p;
        uint64_t page = 1000;

        stream_table_init(&t);
        stream_plan(&t, &opts, page, 1 << 20, &p);
        cr_assert_eq(p.count, 1);
        cr_assert_eq(p.ahead, 0);
        for (int i = 0; i < 7; i++) {
                page = p.start + p.count + (uint64_t)p.ahead * p.unit; /* where prefetch ends */
                stream_plan(&t, &opts, page, 1 << 20, &p);
                cr_assert_eq(p.start, page);
                cr_assert_eq(p.stride, 1);
        }
        cr_assert_eq(p.count, 512);
        cr_assert_eq(p.unit, 512);
        cr_assert_eq(p.ahead, 2);
}

Test(stream, next_page_after_a_cut_prefetch_still_matches)
{
        struct stream_table t;
        struct stream_plan p;

        stream_table_init(&t);
        stream_plan(&t, &opts, 10, 1000, &p);
        stream_plan(&t, &opts, 11, 1000, &p);
        cr_assert_eq(p.stride, 1);
        cr_assert_eq(p.count, 1, "two pages in a row are not a stream yet");
        stream_plan(&t, &opts, 12, 1000, &p);
        stream_plan(&t, &opts, 11 + p.count, 1000, &p);
        stream_plan(&t, &opts, p.start + 2, 1000, &p); /* its prefetch was given back */
        cr_assert_eq(p.stride, 1);
        cr_assert_gt(p.count, 1);
}

Test(stream, backward_stream)
{
        struct stream_table t;
        struct stream_plan p;

        stream_table_init(&t);
        stream_plan(&t, &opts, 5000, 10000, &p);
        stream_plan(&t, &opts, 4999, 10000, &p);
        stream_plan(&t, &opts, 4998, 10000, &p);
        cr_assert_eq(p.stride, -1);
        cr_assert_eq(p.start + p.count, 4999, "the run ends at the faulting page");
        for (int i = 0; i < 5; i++) {
                uint64_t next = p.start - 1 - (uint64_t)p.ahead * p.unit;
                stream_plan(&t, &opts, next, 10000, &p);
                cr_assert_eq(p.stride, -1);
                cr_assert_eq(p.start + p.count, next + 1);
        }
        cr_assert_geq(p.count, 256);
}

Test(stream, two_interleaved_streams)
{
        struct stream_table t;
        struct stream_plan p;
        uint64_t a = 0, b = 500000;

        stream_table_init(&t);
        for (int i = 0; i < 8; i++) {
                stream_plan(&t, &opts, a, 1 << 20, &p);
                a = p.start + p.count + (uint64_t)p.ahead * p.unit;
                stream_plan(&t, &opts, b, 1 << 20, &p);
                b = p.start + p.count + (uint64_t)p.ahead * p.unit;
        }
        cr_assert_eq(p.count, 512, "the second stream kept its own state");
}

Test(stream, a_stream_survives_other_threads_random_misses)
{
        struct stream_table t;
        struct stream_plan p;
        uint64_t page = 0, x = 88172645463325252ULL;

        stream_table_init(&t);
        for (int i = 0; i < 40; i++) {
                stream_plan(&t, &opts, page, 1 << 24, &p);
                page = p.start + p.count + (uint64_t)p.ahead * p.unit;
                for (int k = 0; k < (i < 4 ? 0 : 20); k++) { /* then writers miss at random */
                        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                        stream_plan(&t, &opts, (1 << 23) + x % (1 << 23), 1 << 24, &p);
                }
        }
        stream_plan(&t, &opts, page, 1 << 24, &p);
        cr_assert_eq(p.count, 512, "the stream lost its state: unit %llu",
                     (unsigned long long)p.count);
}

Test(stream, stride_prefetches_along_it)
{
        struct stream_table t;
        struct stream_plan p;

        stream_table_init(&t);
        for (uint64_t i = 0; i < 4; i++)
                stream_plan(&t, &opts, 100 + 8 * i, 10000, &p);
        cr_assert_eq(p.stride, 8);
        cr_assert_eq(p.count, 1);
        cr_assert_gt(p.ahead, 0);
        cr_assert_eq(p.unit, 1);
}

Test(stream, clipped_to_the_arena)
{
        struct stream_table t;
        struct stream_plan p;

        stream_table_init(&t);
        for (uint64_t pg = 90; pg < 100; pg++)
                stream_plan(&t, &opts, pg, 100, &p);
        cr_assert_leq(p.start + p.count, 100);
}
