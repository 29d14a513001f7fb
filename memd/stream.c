/* stream.c: fill units from the access pattern (see stream.h). */
#include <string.h>

#include "macro.h"
#include "stream.h"

#define STREAM_PAIR_ON 384 /* 3/8 of probes followed by the next page */
#define STREAM_PAIR_PROBE 8

void stream_table_init(struct stream_table *t)
{
        memset(t, 0, sizeof(*t));
        t->probe_page = UINT64_MAX;
        for (size_t i = 0; i < STREAM_SLOTS; i++)
                t->s[i].last = UINT64_MAX;
}

static int64_t delta(uint64_t from, uint64_t to)
{
        return (int64_t)(to - from);
}

/* The sequential unit after RUN matching faults: 1, 4, 16, 64, 256 pages,
 * then the largest (4 KiB ... 1 MiB, 2 MiB with 4 KiB pages): two pages in a
 * row are common in random access (an object across a page boundary), three
 * start a stream. */
static uint64_t seq_unit(unsigned run, uint64_t max_unit)
{
        uint64_t u = run <= 1   ? 1
                     : run == 2 ? 4
                     : run == 3 ? 16
                     : run == 4 ? 64
                     : run == 5 ? 256
                                : max_unit;

        return MAX(MIN(u, max_unit), (uint64_t)1);
}

#define STREAM_SLACK 8 /* pages: threads sharing a stream fault a little out of order */

static bool near(uint64_t a, uint64_t b, int64_t slack)
{
        int64_t d = delta(a, b);

        return d >= -slack && d <= slack;
}

/* Does a missing PAGE continue S? A sequential stream faults just after its
 * last fault (its prefetch was cut short) or about where its prefetch window
 * ends; anywhere else inside the window is a random access that happens to
 * land there (the window's pages are being filled or resident). */
static bool matches(const struct stream *s, uint64_t page)
{
        int64_t d;

        if (s->last == UINT64_MAX)
                return false;
        d = delta(s->last, page);
        if (s->stride == 1)
                return (d > 0 && d <= STREAM_SLACK) || near(s->next, page, STREAM_SLACK);
        if (s->stride == -1)
                return (d < 0 && d >= -STREAM_SLACK) || near(s->next, page, STREAM_SLACK);
        if (s->stride != 0)
                return d == s->stride;
        return d != 0 && near(s->last, page, STREAM_MAX_STRIDE);
}

#define STREAM_STALE 64 /* misses elsewhere after which a stream is over */

/* An established stream is not pushed out by random misses of other threads
 * (they replace each other) until it has been idle for STREAM_STALE misses. */
static bool replaceable(const struct stream_table *t, const struct stream *s)
{
        return s->run < 3 || t->clock - s->used > STREAM_STALE;
}

static struct stream *find_or_replace(struct stream_table *t, uint64_t page, bool *ret_hit)
{
        struct stream *lru = NULL, *any = &t->s[0];

        for (size_t i = 0; i < STREAM_SLOTS; i++) {
                struct stream *s = &t->s[i];
                if (matches(s, page)) {
                        *ret_hit = true;
                        return s;
                }
                if (s->used < any->used)
                        any = s;
                if (replaceable(t, s) && (!lru || s->used < lru->used))
                        lru = s;
        }
        *ret_hit = false;
        return lru ? lru : any;
}

bool stream_pairs(const struct stream_table *t)
{
        return t->pair_score > STREAM_PAIR_ON;
}

/* A miss no stream continues: one page, or two while objects are seen to
 * cross page boundaries. A one-page fill is a probe: its score decays by
 * 1/16 and grows by 1024/16 if the next page is missed soon after, so the
 * score settles at 1024 times the share of probes followed. */
static void random_miss(struct stream_table *t, uint64_t page, uint64_t n_pages,
                        struct stream_plan *p)
{
        if (stream_pairs(t) && ++t->since_probe % STREAM_PAIR_PROBE && page + 1 < n_pages) {
                p->count = 2;
                return;
        }
        t->pair_score -= t->pair_score / 16;
        t->probe_page = page;
}

void stream_plan(struct stream_table *t, const struct stream_opts *o, uint64_t page,
                 uint64_t n_pages, struct stream_plan *ret)
{
        bool hit;
        struct stream *s = find_or_replace(t, page, &hit);
        struct stream_plan p = {.start = page, .count = 1};

        if (t->probe_page != UINT64_MAX && page == t->probe_page + 1) {
                t->pair_score += 1024 / 16; /* the probe's next page was missed */
                t->probe_page = UINT64_MAX;
        }
        s->used = ++t->clock;
        if (!hit) {
                random_miss(t, page, n_pages, &p);
                *s = (struct stream){
                    .last = p.start + p.count - 1, .next = p.start + p.count, .used = t->clock};
                *ret = p;
                return;
        }
        if (s->stride == 0) /* the second fault fixes the direction or stride */
                s->stride = delta(s->last, page);
        s->run++;
        s->last = page;
        if (s->stride == 1 || s->stride == -1) {
                uint64_t unit = seq_unit(s->run, o->max_unit);
                p.stride = s->stride;
                p.unit = unit;
                p.ahead = s->run >= 4 ? o->window : s->run >= 2 ? 1 : 0;
                if (s->stride == 1) {
                        p.count = MIN(unit, n_pages - page);
                        s->next = page + p.count + p.ahead * unit;
                } else {
                        uint64_t first = page + 1 >= unit ? page + 1 - unit : 0;
                        p.start = first;
                        p.count = page + 1 - first;
                        s->next = first >= p.ahead * unit ? first - p.ahead * unit : 0;
                }
        } else if (s->run >= 2) { /* a stride seen three times in a row */
                p.stride = s->stride;
                p.unit = 1;
                p.ahead = MIN(o->window * 4, 16u);
        }
        *ret = p;
}
