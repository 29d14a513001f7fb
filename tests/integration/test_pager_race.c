/* test_pager_race.c: writes racing with eviction in the paging engine with
 * state per 4 KiB page, the test playing memd (paged.c) over a real appliance
 * (shm and tcp) with the default pager options. The store is wrapped by a spy
 * that sees every fill and write-back, so the test proves that 2 MiB stream
 * fills and dirty-page write-backs really happened, and it reads the store
 * back at the end: every write a writer made must be there. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdio.h"
#include "harness.h"
#include "paged.h"
#include "residency.h"
#include "store.h"

#define MiB (1ULL << 20)
#define PAGE 4096ULL
#define WORDS 512 /* per page */
#define ARENA_BASE 0x500000000000ULL
#define U(x) ((unsigned long long)(x))

static struct harness_proc app;

static void setup(void)
{
        harness_require_uffd();
        harness_appliance_setup(&app, "1G");
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(pager_race, .init = setup, .fini = teardown, .timeout = 120);

/* ---- the spy: counts what the engine asks of the store ---- */

/* The store's own ops table, copied with fills and write-backs wrapped (ops
 * not wrapped run as they are, on the same store; its free stays the store's
 * own). One test at a time. */
static struct spy {
        const struct store_ops *orig;
        struct store_ops ops;
        _Atomic uint64_t fills, big_fills, max_fill, fill_bytes;
        _Atomic uint64_t wb_calls, wb_bytes;
        _Atomic uint8_t *wb_page; /* per page: written back at least once */
} spy;

static void spy_fill(uint64_t len)
{
        uint64_t m = atomic_load(&spy.max_fill);

        atomic_fetch_add(&spy.fills, 1);
        atomic_fetch_add(&spy.fill_bytes, len);
        if (len >= 2 * MiB)
                atomic_fetch_add(&spy.big_fills, 1);
        while (len > m && !atomic_compare_exchange_weak(&spy.max_fill, &m, len))
                ;
}

static void spy_wb(uint64_t off, uint64_t len)
{
        atomic_fetch_add(&spy.wb_calls, 1);
        atomic_fetch_add(&spy.wb_bytes, len);
        for (uint64_t p = off / PAGE; p < (off + len) / PAGE; p++)
                atomic_store(&spy.wb_page[p], 1);
}

static int spy_fetch(struct store *s, uint64_t off, void *buf, size_t len)
{
        int r = spy.orig->fetch(s, off, buf, len);
        if (r >= 0)
                spy_fill(len);
        return r;
}

static int spy_writeback(struct store *s, uint64_t off, const void *buf, size_t len)
{
        int r = spy.orig->writeback(s, off, buf, len);
        if (r >= 0)
                spy_wb(off, len);
        return r;
}

static int spy_writeback_v(struct store *s, const struct store_seg *segs, size_t n, const void *buf)
{
        int r = spy.orig->writeback_v(s, segs, n, buf);
        for (size_t i = 0; r >= 0 && i < n; i++)
                spy_wb(segs[i].offset, segs[i].len);
        return r;
}

static int spy_direct(struct store *s, uint64_t off, uint64_t len, bool write, store_direct_fn fn,
                      void *ctx)
{
        int r = spy.orig->direct(s, off, len, write, fn, ctx);
        if (r >= 0 && write)
                spy_wb(off, len);
        else if (r >= 0)
                spy_fill(len);
        return r;
}

static void spy_on(struct store *s)
{
        free(spy.wb_page); /* the last test's */
        spy = (struct spy){.orig = s->ops, .ops = *s->ops, .wb_page = calloc(s->size / PAGE, 1)};
        cr_assert_not_null(spy.wb_page);
        spy.ops.fetch = spy_fetch;
        spy.ops.writeback = spy_writeback;
        if (spy.orig->writeback_v)
                spy.ops.writeback_v = spy_writeback_v;
        if (spy.orig->direct)
                spy.ops.direct = spy_direct;
        s->ops = &spy.ops;
}

/* ---- the parent: plays memd ---- */

typedef int (*race_child_fn)(volatile uint64_t *m, uint64_t pages, int sock);

static int run_child(char *m, uint64_t size, int sock, void *arg)
{
        return ((race_child_fn)arg)((volatile uint64_t *)m, size / PAGE, sock);
}

/* The engine with 4 KiB pages and default pager options over URI, the arena
 * its store watched by the spy; the child runs FN. */
static void start(struct paged *p, const char *uri, uint64_t size, uint64_t budget,
                  race_child_fn fn)
{
        struct xmem_error err = {};
        const struct paged_opts o = {
            .uri = uri, .size = size, .budget = budget, .chunk = PAGE, .base = ARENA_BASE};
        int r = paged_open(p, &o, &err);

        cr_assert_eq(r, 0, "engine over %s: %s (%s)", uri, xmem_error_str(&err), strerror(-r));
        cr_assert_eq(p->arena->chunk_size, PAGE);
        spy_on(p->store); /* before any fill or eviction */
        r = paged_spawn(p, &o, NULL, run_child, (void *)fn);
        cr_assert_eq(r, 0, "child failed to attach: %s", strerror(-r));
        r = paged_serve(p);
        cr_assert_eq(r, 0, "serve the child: %s", strerror(-r));
}

static void report(struct paged *p, const char *what)
{
        struct xmem_counters *c = &p->res->counters;

        cr_log_info("%s: faults %llu (missing %llu, wp %llu), fetched %llu KiB, zero-filled %llu "
                    "KiB, prefetched %llu KiB, written back %llu KiB, evictions %llu, sync "
                    "evictions %llu, inline fills %llu, store errors %llu; store saw %llu fills "
                    "(%llu of 2 MiB, largest %llu KiB, %llu KiB), %llu write-backs (%llu KiB)",
                    what, U(c->faults), U(c->missing_faults), U(c->wp_faults),
                    U(c->fetched_bytes >> 10), U(c->zero_filled_bytes >> 10),
                    U(c->prefetched_bytes >> 10), U(c->written_back_bytes >> 10), U(c->evictions),
                    U(c->sync_evictions), U(c->inline_fills), U(c->store_errors), U(spy.fills),
                    U(spy.big_fills), U(spy.max_fill >> 10), U(spy.fill_bytes >> 10),
                    U(spy.wb_calls), U(spy.wb_bytes >> 10));
}

/* Evict everything (the child alive and idle): every dirty page goes to the
 * store and the books must balance. */
static void evict_all(struct paged *p)
{
        /* fills the child's last reads started (tcp: in the transport's
         * receiver) land first: a busy machine may still be installing them */
        for (int i = 0; i < 300 && atomic_load(&p->res->inflight); i++)
                usleep(10000);
        int64_t n = residency_evict_to(p->res, 0);

        cr_assert_geq(n, 0, "evict everything: %s", strerror((int)-n));
        cr_assert_eq(atomic_load(&p->res->resident), 0,
                     "resident bytes left after eviction: %llu (evicted %lld, chunks %llu, "
                     "in flight %llu)",
                     U(atomic_load(&p->res->resident)), (long long)n,
                     U(p->arena->resident_chunks), U(atomic_load(&p->res->inflight)));
        cr_assert_eq(atomic_load(&p->res->inflight), 0, "fills still in flight");
        cr_assert_eq(p->arena->resident_chunks, 0);
        for (uint64_t c = 0; c < p->arena->n_chunks; c++)
                cr_assert_eq(p->arena->state[c], CHUNK_FREE, "page %llu is in state %d", U(c),
                             p->arena->state[c]);
}

/* Compare the whole store with WANT (SIZE bytes). */
static void verify_store(struct paged *p, const uint64_t *want, uint64_t size)
{
        uint64_t *buf = malloc(MiB);

        cr_assert_not_null(buf);
        for (uint64_t off = 0; off < size; off += MiB) {
                int r = store_fetch(p->store, off, buf, MiB);
                cr_assert_eq(r, 0, "read the store at %llu: %s", U(off), strerror(-r));
                for (uint64_t i = 0, w = off / 8; i < MiB / 8; i++, w++)
                        if (buf[i] != want[w])
                                cr_assert_fail("store word %llu (page %llu) is %llx, want %llx",
                                               U(w), U(w / WORDS), U(buf[i]), U(want[w]));
        }
        free(buf);
}

static int child_status(struct paged *p)
{
        int status = 0;
        return paged_wait(p, &status) == 0 ? status : -1;
}

/* ---- 1. a write un-protects and dirties only its own 4 KiB page ---- */

#define DIRTY_SIZE (8 * MiB)
#define DIRTY_WORD 7

static bool dirty_page(uint64_t pg)
{
        return pg % 3 != 2; /* pairs of written neighbours, then a clean one */
}

static uint64_t dirty_tag(uint64_t pg)
{
        return 0xD1D1000000000000ULL | pg;
}

static int dirty_child(volatile uint64_t *m, uint64_t pages, int sock)
{
        uint64_t sum = 0;
        char c;

        for (uint64_t pg = 0; pg < pages; pg++) /* every page resident, clean, protected */
                sum += m[pg * WORDS];
        if (sum != 0)
                return 20;
        for (uint64_t pg = 0; pg < pages; pg++)
                if (dirty_page(pg))
                        m[pg * WORDS + DIRTY_WORD] = dirty_tag(pg);
        if (write_full(sock, "w", 1) < 0 || read_full(sock, &c, 1) < 0)
                return 21;
        /* the parent evicted everything: each page comes back from the store */
        for (uint64_t pg = 0; pg < pages; pg++)
                for (uint64_t i = 0; i < WORDS; i++) {
                        uint64_t want = i == DIRTY_WORD && dirty_page(pg) ? dirty_tag(pg) : 0;
                        if (m[pg * WORDS + i] != want) {
                                fprintf(stderr, "child: page %llu word %llu is %llx\n", U(pg), U(i),
                                        U(m[pg * WORDS + i]));
                                return 22;
                        }
                }
        return 0;
}

static void dirty_pages(const char *uri, const char *what)
{
        struct paged p = PAGED_INIT;
        uint64_t pages = DIRTY_SIZE / PAGE, n_dirty = 0;
        char c;

        /* budget: all of it; only the test evicts */
        start(&p, uri, DIRTY_SIZE, 4 * DIRTY_SIZE, dirty_child);
        cr_assert_eq(read_full(p.sock, &c, 1), 0, "the child died before writing");
        for (uint64_t pg = 0; pg < pages; pg++) {
                enum chunk_state want = dirty_page(pg) ? CHUNK_DIRTY : CHUNK_PRESENT;
                n_dirty += dirty_page(pg);
                cr_assert_eq(p.arena->state[pg], want, "page %llu is in state %d, want %d", U(pg),
                             p.arena->state[pg], want);
        }
        cr_assert_eq(p.res->counters.wp_faults, n_dirty, "one WP fault per written page");
        cr_assert_eq(p.res->counters.written_back_bytes, 0);
        evict_all(&p);
        report(&p, what);
        cr_assert_eq(p.res->counters.evictions, pages);
        cr_assert_eq(p.res->counters.written_back_bytes, n_dirty * PAGE,
                     "write-back sends the dirty pages only");
        cr_assert_eq(spy.wb_bytes, n_dirty * PAGE);
        for (uint64_t pg = 0; pg < pages; pg++)
                cr_assert_eq(spy.wb_page[pg], dirty_page(pg), "page %llu written back: %d", U(pg),
                             spy.wb_page[pg]);
        cr_assert_eq(write_full(p.sock, "v", 1), 0);
        int status = child_status(&p);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status 0x%x (exit %d: 20 read, 21 sync, 22 a word read back wrong)",
                  status, WEXITSTATUS(status));

        uint64_t *want = calloc(DIRTY_SIZE / 8, 8);
        cr_assert_not_null(want);
        for (uint64_t pg = 0; pg < pages; pg++)
                if (dirty_page(pg))
                        want[pg * WORDS + DIRTY_WORD] = dirty_tag(pg);
        evict_all(&p); /* the child's read-back filled pages again */
        verify_store(&p, want, DIRTY_SIZE);
        free(want);
        paged_free(&p);
}

Test(pager_race, write_dirties_only_its_page_shm)
{
        dirty_pages(app.shm_uri, "4k dirty shm");
}

Test(pager_race, write_dirties_only_its_page_tcp)
{
        dirty_pages(app.tcp_uri, "4k dirty tcp");
}

/* ---- 2+3. stream fills and writers racing with write-back ---- */

/* Thread T owns the words K * RACE_THREADS + T of every page and keeps what
 * it wrote; thread 0 streams over the arena in passes (read-modify-write of
 * STREAM_WORDS of its words per page), the others write at random, 15 of
 * 16 times into a small hot set (the first HOT_PAGES) that stays resident and
 * dirty while eviction keeps taking it away. Each word holds its owner, its index and a count, so a
 * lost, stale or misplaced write shows at the next read-modify-write and at the end. The streamer
 * stops after RACE_SECONDS (where it is), the writers with it. */
#define RACE_SIZE (32 * MiB)
#define RACE_BUDGET (8 * MiB)
#define RACE_THREADS 4
#define OWN (WORDS / RACE_THREADS) /* words per page per thread */
#define STREAM_WORDS 8
#define HOT_PAGES 256
#define RACE_SECONDS 8.0

static uint64_t race_word(uint64_t pg, uint64_t k, int t)
{
        return pg * WORDS + k * RACE_THREADS + (uint64_t)t;
}

static uint64_t race_tag(int t, uint64_t w, uint64_t n)
{
        return n ? (uint64_t)(t + 1) << 56 | (w & 0xffffff) << 32 | n : 0;
}

struct race_result {
        uint64_t passes, page; /* the streamer: full passes, pages into the next */
        uint64_t ops[RACE_THREADS];
};

/* The streamer's count in page PG. */
static uint64_t stream_count(const struct race_result *res, uint64_t pg, uint64_t k)
{
        return k >= STREAM_WORDS ? 0 : res->passes + (pg < res->page);
}

struct writer {
        volatile uint64_t *m;
        uint64_t pages;
        int t;
        uint32_t *count; /* per owned word: writes made */
        uint64_t rng, ops;
        _Atomic bool *done;
        _Atomic int *bad;
};

static uint64_t writer_seed(int t)
{
        return 0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1);
}

static void writer_init(struct writer *w, volatile uint64_t *m, uint64_t pages, int t)
{
        *w = (struct writer){.m = m, .pages = pages, .t = t, .rng = writer_seed(t)};
        w->count = calloc(pages * OWN, sizeof(uint32_t));
}

/* One op of a random writer: a read-modify-write of 1-4 of its words in one
 * page. LIVE: check each word first (in the child). */
static bool writer_op(struct writer *w, bool live)
{
        uint64_t r = paged_xorshift(&w->rng), pg;

        if (r & 15)
                pg = (r >> 4) % HOT_PAGES;
        else
                pg = (r >> 4) % w->pages;
        for (uint64_t j = 0, n = 1 + (r >> 60) % 4; j < n; j++) {
                uint64_t k = paged_xorshift(&w->rng) % OWN, wd = race_word(pg, k, w->t);
                uint32_t *c = &w->count[pg * OWN + k];
                uint64_t v = w->m[wd];
                if (live && v != race_tag(w->t, wd, *c)) {
                        fprintf(stderr,
                                "child: writer %d: page %llu word %llu reads %llx, "
                                "want %llx\n",
                                w->t, U(pg), U(wd), U(v), U(race_tag(w->t, wd, *c)));
                        return false;
                }
                w->m[wd] = race_tag(w->t, wd, ++*c);
        }
        return true;
}

/* The streamer: passes of read-modify-write of its first words, page after
 * page (each page read first: a stream of read faults, then a WP fault)
 * until the time is up. */
static bool stream(volatile uint64_t *m, uint64_t pages, struct race_result *res)
{
        double end = paged_now_s() + RACE_SECONDS;

        for (;; res->passes++)
                for (res->page = 0; res->page < pages; res->page++) {
                        if ((res->page & 63) == 0 && paged_now_s() > end)
                                return true;
                        for (uint64_t k = 0; k < STREAM_WORDS; k++) {
                                uint64_t wd = race_word(res->page, k, 0), v = m[wd];
                                uint64_t want = race_tag(0, wd, res->passes);
                                if (v != want) {
                                        fprintf(stderr,
                                                "child: streamer: page %llu word %llu "
                                                "reads %llx, want %llx\n",
                                                U(res->page), U(wd), U(v), U(want));
                                        return false;
                                }
                                m[wd] = race_tag(0, wd, res->passes + 1);
                        }
                }
}

static void *writer_thread(void *arg)
{
        struct writer *w = arg;

        while (!atomic_load(w->done) && !atomic_load(w->bad)) {
                if (!writer_op(w, true))
                        atomic_fetch_add(w->bad, 1);
                w->ops++;
        }
        return NULL;
}

/* The end: every word as its owner left it. */
static bool race_verify(volatile uint64_t *m, uint64_t pages, const struct writer *w,
                        const struct race_result *res)
{
        for (uint64_t pg = 0; pg < pages; pg++)
                for (uint64_t k = 0; k < OWN; k++)
                        for (int t = 0; t < RACE_THREADS; t++) {
                                uint64_t wd = race_word(pg, k, t);
                                uint64_t n =
                                    t ? w[t].count[pg * OWN + k] : stream_count(res, pg, k);
                                if (m[wd] != race_tag(t, wd, n)) {
                                        fprintf(stderr, "child: word %llu is %llx, want %llx\n",
                                                U(wd), U(m[wd]), U(race_tag(t, wd, n)));
                                        return false;
                                }
                        }
        return true;
}

static int race_child(volatile uint64_t *m, uint64_t pages, int sock)
{
        struct writer w[RACE_THREADS];
        pthread_t th[RACE_THREADS];
        _Atomic bool done = false;
        _Atomic int bad = 0;
        struct race_result res = {};
        char c;

        for (int t = 1; t < RACE_THREADS; t++) {
                writer_init(&w[t], m, pages, t);
                w[t].done = &done;
                w[t].bad = &bad;
                if (!w[t].count || pthread_create(&th[t], NULL, writer_thread, &w[t]))
                        return 30;
        }
        if (!stream(m, pages, &res))
                bad++;
        atomic_store(&done, true);
        for (int t = 1; t < RACE_THREADS; t++) {
                pthread_join(th[t], NULL);
                res.ops[t] = w[t].ops;
        }
        if (bad)
                return 31;
        if (!race_verify(m, pages, w, &res))
                return 32;
        if (write_full(sock, &res, sizeof(res)) < 0 || read_full(sock, &c, 1) < 0)
                return 33;
        return 0;
}

/* What the child's writes leave in the arena, replayed from the counts. */
static uint64_t *race_expected(uint64_t pages, const struct race_result *res)
{
        uint64_t *want = calloc(pages * WORDS, 8);

        cr_assert_not_null(want);
        for (int t = 1; t < RACE_THREADS; t++) {
                struct writer w;
                writer_init(&w, want, pages, t);
                cr_assert_not_null(w.count);
                for (uint64_t i = 0; i < res->ops[t]; i++)
                        (void)writer_op(&w, false);
                free(w.count);
        }
        for (uint64_t pg = 0; pg < pages; pg++)
                for (uint64_t k = 0; k < STREAM_WORDS; k++)
                        want[race_word(pg, k, 0)] =
                            race_tag(0, race_word(pg, k, 0), stream_count(res, pg, k));
        return want;
}

/* The test's own evictor beside the background one: evicts down to half the
 * budget, or to nothing every eighth round, and kicks. */
struct hammer {
        struct residency *res;
        _Atomic bool stop;
        uint64_t rounds, evicted;
};

static void *hammer_thread(void *arg)
{
        struct hammer *h = arg;
        uint64_t rng = 0x5eed;

        while (!atomic_load(&h->stop)) {
                uint64_t r = paged_xorshift(&rng);
                int64_t n = residency_evict_to(h->res, r % 8 ? RACE_BUDGET / 2 : 0);
                if (n > 0)
                        h->evicted += (uint64_t)n;
                residency_kick(h->res);
                h->rounds++;
                usleep(500 + (useconds_t)(r >> 32) % 1500);
        }
        return NULL;
}

static void race(const char *uri, const char *what)
{
        struct paged p = PAGED_INIT;
        struct hammer h = {};
        struct race_result res;
        uint64_t pages = RACE_SIZE / PAGE;
        pthread_t th;
        double t0 = paged_now_s();

        start(&p, uri, RACE_SIZE, RACE_BUDGET, race_child);
        h.res = p.res;
        cr_assert_eq(pthread_create(&th, NULL, hammer_thread, &h), 0);
        int r = read_full(p.sock, &res, sizeof(res));
        atomic_store(&h.stop, true);
        pthread_join(th, NULL);
        report(&p, what);
        if (r < 0) {
                int status = child_status(&p);
                cr_assert_fail("child status 0x%x (exit %d: 31 a lost write seen live, 32 at "
                               "the end, 30/33 setup)",
                               status, WEXITSTATUS(status));
        }
        cr_log_info("%s: %.1f s, stream at pass %llu page %llu, writer ops %llu %llu %llu; "
                    "hammer: %llu rounds evicted %llu MiB",
                    what, paged_now_s() - t0, U(res.passes), U(res.page), U(res.ops[1]), U(res.ops[2]),
                    U(res.ops[3]), U(h.rounds), U(h.evicted / MiB));

        /* it was a race: all of it happened while the writers ran */
        struct xmem_counters *c = &p.res->counters;
        cr_assert_geq(c->evictions, pages, "the working set went through eviction");
        cr_assert_geq(c->written_back_bytes, RACE_SIZE / 2, "dirty pages were written back");
        cr_assert_geq(c->wp_faults, pages / 2, "writes to clean pages took WP faults");
        cr_assert_geq(c->prefetched_bytes, 4 * MiB, "the stream was prefetched");
        cr_assert_geq(spy.big_fills, 1, "a stream grew its fills to 2 MiB");
        cr_assert_eq(spy.max_fill, 2 * MiB, "the largest fill is 2 MiB");
        cr_assert_eq(spy.wb_bytes, c->written_back_bytes, "written-back bytes counted right");
        cr_assert_eq(c->store_errors, 0);

        /* every write made is in the store */
        uint64_t *want = race_expected(pages, &res);
        evict_all(&p);
        verify_store(&p, want, RACE_SIZE);
        free(want);
        cr_assert_eq(write_full(p.sock, "x", 1), 0);
        int status = child_status(&p);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);
        paged_free(&p);
}

Test(pager_race, stream_and_writers_racing_writeback_shm)
{
        race(app.shm_uri, "race shm");
}

Test(pager_race, stream_and_writers_racing_writeback_tcp)
{
        race(app.tcp_uri, "race tcp");
}
