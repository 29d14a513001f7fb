/* stream.h: choosing the fill unit from the access pattern (pure logic, no
 * kernel). Each arena keeps a few streams; a missing fault either continues
 * one (forward or backward sequential, or a constant stride) or starts a new
 * one. A random miss is filled one page (two where objects cross page
 * boundaries: the next page is missed right after); a sequential stream grows its unit
 * from 64 KiB to 2 MiB and keeps a window of further units fetched ahead; a
 * strided stream prefetches the next pages of its stride. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define STREAM_SLOTS 8       /* streams tracked per arena (threads, directions) */
#define STREAM_MAX_STRIDE 64 /* pages: larger jumps are random access */

struct stream {
        uint64_t last;  /* the last page this stream faulted on */
        uint64_t next;  /* first page not yet planned (forward) / last+1 not planned (backward) */
        int64_t stride; /* pages between faults: 0 unknown, +-1 sequential */
        unsigned run;   /* faults in a row that matched */
        uint64_t used;  /* LRU stamp */
};

struct stream_table {
        struct stream s[STREAM_SLOTS];
        uint64_t clock;
        /* Objects across a page boundary: how often a random miss filled
         * with one page (a probe) was followed by a miss on the next page,
         * 1024 = always. Above STREAM_PAIR_ON random misses fill two pages
         * (every STREAM_PAIR_PROBE-th still one, to keep measuring). */
        uint32_t pair_score;
        uint32_t since_probe;
        uint64_t probe_page;
};

/* What to fill for one missing fault, in pages of the arena's unit: the
 * demand run [start, start + count) holding the faulting page, and AHEAD
 * prefetch runs of UNIT pages each continuing in direction DIR (+1/-1) after
 * it (or, for a stride, AHEAD single pages STRIDE apart). */
struct stream_plan {
        uint64_t start, count;
        int64_t stride; /* 0: no prefetch; +-1: sequential; else a stride */
        unsigned ahead; /* prefetch units */
        uint64_t unit;  /* pages per prefetch unit */
};

struct stream_opts {
        uint64_t max_unit; /* pages in the largest unit (2 MiB / page) */
        unsigned window;   /* prefetch units kept in flight on a stream */
};

void stream_table_init(struct stream_table *t);
/* Are objects seen to cross page boundaries (random misses fill two pages)? */
bool stream_pairs(const struct stream_table *t);
/* A missing fault on PAGE of an arena of N_PAGES: update the streams and
 * plan the fill. Runs are clipped to the arena. */
void stream_plan(struct stream_table *t, const struct stream_opts *o, uint64_t page,
                 uint64_t n_pages, struct stream_plan *ret);
