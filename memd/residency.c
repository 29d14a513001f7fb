/* residency.c: eviction (see residency.h). The order that keeps every write:
 * under the arena lock the victim becomes EVICTING (a WP fault on it now waits
 * instead of un-protecting); UFFDIO_WRITEPROTECT stops all writers (the kernel
 * flushes the TLBs); the data is read with pread() from the memfd (a mapping
 * would populate holes) and written back; the range is punched; the chunk
 * becomes FREE and waiting faulters are woken, refault MISSING and refetch. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "macro.h"
#include "residency.h"
#include "store.h"
#include "uffd.h"

#define EVICT_BATCH 32
#define EVICT_MERGE_BYTES (1U << 20) /* largest merged write-back */

void lat_hist_add(struct lat_hist *h, uint64_t ns)
{
        unsigned idx = 0;

        if (ns >= 4) {
                unsigned lg = 63 - (unsigned)__builtin_clzll(ns);
                idx = lg * 4 + (unsigned)((ns >> (lg - 2)) & 3);
        }
        atomic_fetch_add_explicit(&h->bucket[MIN(idx, LAT_BUCKETS - 1)], 1, memory_order_relaxed);
}

static uint64_t bucket_upper(unsigned idx)
{
        unsigned lg = idx / 4, sub = idx % 4;

        if (lg < 2)
                return 4;
        if (lg >= 62)
                return UINT64_MAX;
        return ((uint64_t)(4 + sub + 1)) << (lg - 2);
}

uint64_t lat_hist_count(const struct lat_hist *h)
{
        uint64_t total = 0;

        for (unsigned i = 0; i < LAT_BUCKETS; i++)
                total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        return total;
}

uint64_t lat_hist_quantile(const struct lat_hist *h, double q)
{
        uint64_t total = lat_hist_count(h), seen = 0, want;

        if (total == 0)
                return 0;
        want = (uint64_t)(q * (double)total);
        if (want >= total)
                want = total - 1;
        for (unsigned i = 0; i < LAT_BUCKETS; i++) {
                seen += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
                if (seen > want)
                        return bucket_upper(i);
        }
        return UINT64_MAX;
}

/* One sweep over all N chunks from *HAND. */
static size_t clock_sweep(uint8_t *state, uint8_t *referenced, uint64_t n, uint64_t *hand,
                          uint64_t *out, bool *out_dirty, size_t max, size_t count,
                          bool want_dirty, bool clear_ref)
{
        uint64_t start = *hand;

        for (uint64_t step = 0; step < n && count < max; step++) {
                uint64_t i = (start + step) % n;
                bool dirty = state[i] == CHUNK_DIRTY;

                if (state[i] != CHUNK_PRESENT && !dirty)
                        continue;
                if (!referenced[i] && dirty == want_dirty) {
                        state[i] = CHUNK_EVICTING;
                        out[count] = i;
                        out_dirty[count] = dirty;
                        count++;
                        *hand = (i + 1) % n;
                } else if (clear_ref)
                        referenced[i] = 0;
        }
        return count;
}

size_t residency_clock_pick(uint8_t *state, uint8_t *referenced, uint64_t n, uint64_t *hand,
                            uint64_t *out, bool *out_dirty, size_t max)
{
        size_t count = 0;

        if (n == 0)
                return 0;
        *hand %= n;
        for (int pass = 0; pass < 2 && count < max; pass++) {
                count = clock_sweep(state, referenced, n, hand, out, out_dirty, max, count,
                                    false, false);
                if (count < max)
                        count = clock_sweep(state, referenced, n, hand, out, out_dirty, max,
                                            count, true, true);
        }
        return count;
}

uint64_t residency_budget_reserved(uint64_t limit, uint64_t usage, uint64_t resident,
                                   uint64_t headroom, uint64_t reserve)
{
        /* usage includes the arena pages (UFFDIO_COPY charges the faulting cgroup). */
        uint64_t other = usage > resident ? usage - resident : 0;

        other = MAX(other, reserve);
        if (limit == UINT64_MAX)
                return UINT64_MAX;
        if (other >= limit || headroom >= limit - other)
                return 0;
        return limit - other - headroom;
}

uint64_t residency_budget_from(uint64_t limit, uint64_t usage, uint64_t resident,
                               uint64_t headroom)
{
        return residency_budget_reserved(limit, usage, resident, headroom, 0);
}

int residency_new(uint64_t budget, struct residency **ret)
{
        struct residency *r = calloc(1, sizeof(*r));

        if (!r)
                return -ENOMEM;
        pthread_mutex_init(&r->evict_lock, NULL);
        pthread_mutex_init(&r->kick_lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&r->kick, &ca);
        pthread_condattr_destroy(&ca);
        atomic_store(&r->budget, budget);
        r->usage_fd = -1;
        r->interval_ms = 10;
        *ret = r;
        return 0;
}

void residency_free(struct residency *r)
{
        if (!r)
                return;
        residency_stop(r);
        safe_close(r->usage_fd);
        free(r->arenas);
        free(r->buf);
        pthread_mutex_destroy(&r->evict_lock);
        pthread_mutex_destroy(&r->kick_lock);
        pthread_cond_destroy(&r->kick);
        free(r);
}

int residency_add_arena(struct residency *r, struct arena *a)
{
        int ret = 0;

        pthread_mutex_lock(&r->evict_lock);
        if (MAX(a->chunk_size, EVICT_MERGE_BYTES) > r->buf_size) {
                size_t want = MAX(a->chunk_size, EVICT_MERGE_BYTES);
                void *b = realloc(r->buf, want);
                if (!b) {
                        ret = -ENOMEM;
                        goto out;
                }
                r->buf = b;
                r->buf_size = want;
        }
        struct arena **v = realloc(r->arenas, (r->n_arenas + 1) * sizeof(*v));
        if (!v) {
                ret = -ENOMEM;
                goto out;
        }
        r->arenas = v;
        r->arenas[r->n_arenas++] = a;
out:
        pthread_mutex_unlock(&r->evict_lock);
        return ret;
}

void residency_remove_arena(struct residency *r, struct arena *a)
{
        pthread_mutex_lock(&r->evict_lock);
        for (size_t i = 0; i < r->n_arenas; i++)
                if (r->arenas[i] == a) {
                        r->arenas[i] = r->arenas[--r->n_arenas];
                        atomic_fetch_sub(&r->resident, arena_resident_bytes(a));
                        break;
                }
        r->arena_hand = 0;
        pthread_mutex_unlock(&r->evict_lock);
}

void residency_set_budget(struct residency *r, uint64_t bytes)
{
        atomic_store(&r->budget, bytes);
        residency_kick(r);
}

void residency_sort_picks(uint64_t *chunk, bool *dirty, size_t n)
{
        /* Insertion sort: N is at most EVICT_BATCH and picks come mostly in order. */
        for (size_t i = 1; i < n; i++) {
                uint64_t c = chunk[i];
                bool d = dirty[i];
                size_t j = i;
                for (; j > 0 && chunk[j - 1] > c; j--) {
                        chunk[j] = chunk[j - 1];
                        dirty[j] = dirty[j - 1];
                }
                chunk[j] = c;
                dirty[j] = d;
        }
}

size_t residency_run_len(const uint64_t *chunk, const bool *dirty, size_t n, size_t i,
                         size_t max_run, bool same_dirty)
{
        size_t k = 1;

        while (i + k < n && k < max_run && chunk[i + k] == chunk[i] + k &&
               (!same_dirty || dirty[i + k] == dirty[i]))
                k++;
        return k;
}

/* Read the dirty chunks of a protected run from the memfd (pread: a mapping
 * would populate holes) and write each contiguous dirty stretch back in one
 * store call. KEEP[k] is set for chunks whose write-back failed. */
static void writeback_run(struct residency *r, struct arena *a, const uint64_t *chunk,
                          const bool *dirty, size_t n, bool *keep)
{
        for (size_t i = 0; i < n;) {
                size_t k = residency_run_len(chunk, dirty, n, i, n, true);
                uint64_t off = chunk[i] * a->chunk_size, len = k * (uint64_t)a->chunk_size;
                int rr = 0;

                if (dirty[i]) {
                        ssize_t got = pread(a->memfd, r->buf, len, (off_t)off);
                        rr = got == (ssize_t)len ? 0 : got < 0 ? -errno : -EIO;
                        if (rr == 0)
                                rr = store_writeback(a->store, off, r->buf, len);
                        if (rr == 0)
                                atomic_fetch_add(&r->counters.written_back_bytes, len);
                        else
                                atomic_fetch_add(&r->counters.store_errors, 1);
                }
                for (size_t j = i; j < i + k; j++)
                        keep[j] = rr < 0;
                i += k;
        }
}

/* Evict a run of contiguous EVICTING chunks that is already write-protected:
 * write back the dirty ones, punch the whole run (one fallocate per stretch
 * whose write-back succeeded), then set states and wake once. Never loses
 * data: a chunk whose write-back failed stays DIRTY (still protected: a write
 * re-faults), one whose punch failed stays PRESENT (written back, clean). */
static size_t evict_run(struct residency *r, struct arena *a, const uint64_t *chunk,
                        const bool *dirty, size_t n)
{
        bool keep[EVICT_BATCH], punched[EVICT_BATCH];
        size_t freed = 0, punch_failed = 0;

        writeback_run(r, a, chunk, dirty, n, keep);
        for (size_t i = 0; i < n;) {
                size_t k = residency_run_len(chunk, keep, n, i, n, true);
                bool ok = false;
                if (!keep[i])
                        ok = fallocate(a->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                       (off_t)(chunk[i] * a->chunk_size),
                                       (off_t)(k * (uint64_t)a->chunk_size)) == 0;
                for (size_t j = i; j < i + k; j++)
                        punched[j] = ok;
                i += k;
        }

        pthread_mutex_lock(&a->lock);
        for (size_t i = 0; i < n; i++) {
                uint64_t c = chunk[i];
                if (punched[i]) {
                        a->state[c] = CHUNK_FREE;
                        a->referenced[c] = 0;
                        a->resident_chunks--;
                        freed++;
                } else {
                        a->state[c] = keep[i] ? CHUNK_DIRTY : CHUNK_PRESENT;
                        punch_failed += !keep[i];
                }
                if (dirty[i] && !keep[i])
                        a->stored[c] = 1;
        }
        pthread_mutex_unlock(&a->lock);

        atomic_fetch_sub(&r->resident, freed * a->chunk_size);
        atomic_fetch_add(&r->counters.evictions, freed);
        if (punch_failed)
                atomic_fetch_add(&r->counters.store_errors, punch_failed);
        /* Faults that arrived while EVICTING wait for this: they refault MISSING
         * (punched) or WP (kept: the pager un-protects or marks it dirty). */
        (void)uffd_wake(a->uffd, arena_chunk_addr(a, chunk[0]), n * (uint64_t)a->chunk_size);
        return freed;
}

/* Evict up to EVICT_BATCH chunks from one arena, contiguous victims merged
 * into runs of up to buf_size bytes. Caller holds evict_lock. */
static size_t evict_batch_arena(struct residency *r, struct arena *a)
{
        uint64_t victims[EVICT_BATCH];
        bool dirty[EVICT_BATCH];
        size_t n, done = 0, max_run = MAX(r->buf_size / a->chunk_size, (size_t)1);
        uint64_t hand;

        pthread_mutex_lock(&a->lock);
        hand = a->clock_hand;
        n = residency_clock_pick(a->state, a->referenced, a->n_chunks, &hand, victims, dirty,
                                 EVICT_BATCH);
        a->clock_hand = hand;
        pthread_mutex_unlock(&a->lock);
        residency_sort_picks(victims, dirty, n);

        /* From here no WP fault un-protects a victim; after this no write lands. */
        for (size_t i = 0; i < n;) {
                size_t k = residency_run_len(victims, dirty, n, i, max_run, false);
                uint64_t addr = arena_chunk_addr(a, victims[i]), len = k * (uint64_t)a->chunk_size;
                int wr = uffd_writeprotect(a->uffd, addr, len, true, false);
                /* -ESRCH: the process is gone, nobody can write any more. */
                if (wr < 0 && wr != -ESRCH) {
                        /* Writers may still be running: it must not be punched. DIRTY
                         * is the safe belief (written back later); wake its waiters. */
                        pthread_mutex_lock(&a->lock);
                        for (size_t j = i; j < i + k; j++)
                                a->state[victims[j]] = CHUNK_DIRTY;
                        pthread_mutex_unlock(&a->lock);
                        atomic_fetch_add(&r->counters.store_errors, 1);
                        (void)uffd_wake(a->uffd, addr, len);
                } else
                        done += evict_run(r, a, victims + i, dirty + i, k);
                i += k;
        }
        return done;
}

int64_t residency_evict_to(struct residency *r, uint64_t target)
{
        int64_t evicted = 0;

        pthread_mutex_lock(&r->evict_lock);
        while (atomic_load(&r->resident) > target) {
                size_t got = 0;

                for (size_t tries = 0; tries < r->n_arenas && got == 0; tries++) {
                        struct arena *a = r->arenas[r->arena_hand % r->n_arenas];
                        r->arena_hand = (r->arena_hand + 1) % r->n_arenas;
                        size_t n = evict_batch_arena(r, a);
                        got += n;
                        evicted += (int64_t)n * a->chunk_size;
                }
                if (got == 0) {
                        pthread_mutex_unlock(&r->evict_lock);
                        return -EAGAIN;
                }
        }
        pthread_mutex_unlock(&r->evict_lock);
        return evicted;
}

int residency_make_room(struct residency *r, uint64_t need)
{
        uint64_t budget, low;
        int64_t n;

        residency_refresh(r);
        budget = atomic_load(&r->budget);
        if (atomic_load(&r->resident) + need <= budget)
                return 0;
        low = residency_low(budget);
        n = residency_evict_to(r, low > need ? low - need : 0);
        return n < 0 ? (int)n : 0;
}

void residency_track_cgroup(struct residency *r, const struct cgroup *cg, uint64_t limit,
                            uint64_t headroom)
{
        char path[PATH_MAX];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", cg->dir,
                 cg->version == CGROUP_V1 ? "memory.usage_in_bytes" : "memory.current");
        fd = open(path, O_RDONLY | O_CLOEXEC);
        pthread_mutex_lock(&r->kick_lock);
        r->cg = cg;
        r->cg_limit = limit;
        r->cg_headroom = headroom;
        safe_close(r->usage_fd);
        r->usage_fd = fd; /* -1: fall back to cgroup_read_mem() */
        pthread_mutex_unlock(&r->kick_lock);
        residency_refresh(r);
}

void residency_set_reserve(struct residency *r, uint64_t reserve)
{
        __atomic_store_n(&r->cg_reserve, reserve, __ATOMIC_RELAXED);
        residency_refresh(r);
}

void residency_set_reserve_live(struct residency *r, const uint64_t *live)
{
        __atomic_store_n(&r->cg_reserve_live, live, __ATOMIC_RELEASE);
        residency_refresh(r);
}

static uint64_t reserve_now(struct residency *r)
{
        const uint64_t *live = __atomic_load_n(&r->cg_reserve_live, __ATOMIC_ACQUIRE);
        uint64_t reserve = __atomic_load_n(&r->cg_reserve, __ATOMIC_RELAXED);

        return live ? MAX(reserve, __atomic_load_n(live, __ATOMIC_RELAXED)) : reserve;
}

void residency_kick(struct residency *r)
{
        pthread_mutex_lock(&r->kick_lock);
        pthread_cond_signal(&r->kick);
        pthread_mutex_unlock(&r->kick_lock);
}

static int read_usage(struct residency *r, uint64_t *ret)
{
        char buf[32];
        ssize_t n;
        struct cgroup_mem m;

        if (r->usage_fd < 0) {
                int e = cgroup_read_mem(r->cg, &m);
                if (e < 0)
                        return e;
                *ret = m.usage;
                return 0;
        }
        n = pread(r->usage_fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
                return n < 0 ? -errno : -EIO;
        buf[n] = 0;
        *ret = strtoull(buf, NULL, 10);
        return 0;
}

void residency_refresh(struct residency *r)
{
        uint64_t usage = 0, resident;

        if (!r->cg)
                return;
        /* resident first: a fill finishing in between makes usage larger, not
         * smaller, so the other usage is over-estimated (the safe side). */
        resident = atomic_load(&r->resident);
        if (read_usage(r, &usage) < 0)
                return;
        atomic_store(&r->budget,
                     residency_budget_reserved(r->cg_limit, usage, resident, r->cg_headroom,
                                               reserve_now(r)));
}

static void *residency_thread(void *arg)
{
        struct residency *r = arg;

        pthread_mutex_lock(&r->kick_lock);
        while (!r->stop) {
                struct timespec ts;
                uint64_t budget;

                residency_refresh(r);
                budget = atomic_load(&r->budget);
                if (atomic_load(&r->resident) > residency_high(budget)) {
                        pthread_mutex_unlock(&r->kick_lock);
                        (void)residency_evict_to(r, residency_low(budget));
                        pthread_mutex_lock(&r->kick_lock);
                        continue;
                }
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += (long)r->interval_ms * 1000 * 1000;
                if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&r->kick, &r->kick_lock, &ts);
        }
        pthread_mutex_unlock(&r->kick_lock);
        return NULL;
}

int residency_start(struct residency *r)
{
        int e;

        if (r->running)
                return 0;
        r->stop = false;
        e = pthread_create(&r->thread, NULL, residency_thread, r);
        if (e)
                return -e;
        r->running = true;
        return 0;
}

void residency_stop(struct residency *r)
{
        if (!r->running)
                return;
        pthread_mutex_lock(&r->kick_lock);
        r->stop = true;
        pthread_cond_signal(&r->kick);
        pthread_mutex_unlock(&r->kick_lock);
        pthread_join(r->thread, NULL);
        r->running = false;
}

/* ---- fork snapshots (residency_flush_arena) ---- */

enum { FL_HELD = 1, FL_DIRTY = 2, FL_PROTECTED = 4, FL_FAILED = 8 };

/* Hold A's resident chunks not yet held: PRESENT/DIRTY -> EVICTING, so their
 * WP and MISSING faults wait (serve_wp/serve_missing leave EVICTING alone).
 * Returns how many were caught. Caller holds evict_lock (no eviction runs,
 * so every EVICTING chunk of A is ours). */
static uint64_t flush_catch(struct arena *a, uint8_t *fl)
{
        uint64_t n = 0;

        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks; c++) {
                if (fl[c] & FL_HELD)
                        continue;
                if (a->state[c] == CHUNK_DIRTY)
                        fl[c] |= FL_DIRTY;
                else if (a->state[c] != CHUNK_PRESENT)
                        continue; /* FREE: lives in the store; FILLING: not written yet */
                a->state[c] = CHUNK_EVICTING;
                fl[c] |= FL_HELD;
                n++;
        }
        pthread_mutex_unlock(&a->lock);
        return n;
}

/* Write-protect the held dirty chunks not yet protected (PRESENT ones are). */
static int flush_protect(struct arena *a, uint8_t *fl)
{
        for (uint64_t c = 0; c < a->n_chunks;) {
                uint64_t k = 0;
                while (c + k < a->n_chunks && (fl[c + k] & (FL_DIRTY | FL_PROTECTED)) == FL_DIRTY)
                        fl[c + k++] |= FL_PROTECTED;
                if (k == 0) {
                        c++;
                        continue;
                }
                int wr = a->uffd < 0 ? 0
                                     : uffd_writeprotect(a->uffd, arena_chunk_addr(a, c),
                                                         k * (uint64_t)a->chunk_size, true,
                                                         false);
                if (wr < 0 && wr != -ESRCH) /* -ESRCH: the process is gone */
                        return wr;
                c += k;
        }
        return 0;
}

/* Read the held dirty chunks from the memfd and write them back in runs of
 * up to buf_size bytes; a failed run's chunks get FL_FAILED. */
static int flush_writeback(struct residency *r, struct arena *a, uint8_t *fl)
{
        uint64_t max_run = MAX(r->buf_size / a->chunk_size, (size_t)1);
        int ret = 0;

        for (uint64_t c = 0; c < a->n_chunks;) {
                uint64_t k = 0;
                while (c + k < a->n_chunks && k < max_run && (fl[c + k] & FL_DIRTY))
                        k++;
                if (k == 0) {
                        c++;
                        continue;
                }
                uint64_t off = c * a->chunk_size, len = k * (uint64_t)a->chunk_size;
                ssize_t got = pread(a->memfd, r->buf, len, (off_t)off);
                int rr = got == (ssize_t)len ? 0 : got < 0 ? -errno : -EIO;
                if (rr == 0)
                        rr = store_writeback(a->store, off, r->buf, len);
                if (rr == 0)
                        atomic_fetch_add(&r->counters.written_back_bytes, len);
                else {
                        atomic_fetch_add(&r->counters.store_errors, 1);
                        for (uint64_t j = c; j < c + k; j++)
                                fl[j] |= FL_FAILED;
                        ret = ret ?: rr;
                }
                c += k;
        }
        return ret;
}

/* Give the held chunks back: PRESENT (clean, protected), or DIRTY when their
 * write-back failed or they may not be protected; then wake their waiters. */
static void flush_release(struct arena *a, const uint8_t *fl)
{
        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks; c++) {
                if (!(fl[c] & FL_HELD))
                        continue;
                bool dirty = (fl[c] & FL_DIRTY) &&
                             (fl[c] & (FL_FAILED | FL_PROTECTED)) != FL_PROTECTED;
                a->state[c] = dirty ? CHUNK_DIRTY : CHUNK_PRESENT;
                if ((fl[c] & FL_DIRTY) && !dirty)
                        a->stored[c] = 1;
        }
        pthread_mutex_unlock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks;) {
                uint64_t k = 0;
                while (c + k < a->n_chunks && (fl[c + k] & FL_HELD))
                        k++;
                if (k && a->uffd >= 0)
                        (void)uffd_wake(a->uffd, arena_chunk_addr(a, c),
                                        k * (uint64_t)a->chunk_size);
                c += k ? k : 1;
        }
}

int residency_flush_arena(struct residency *r, struct arena *a,
                          int (*then)(struct arena *a, void *data), void *data)
{
        uint8_t *fl = calloc(a->n_chunks, 1);
        int ret = 0;

        if (!fl)
                return -ENOMEM;
        /* No eviction (so no write-back to A's store) from here until THEN is done. */
        pthread_mutex_lock(&r->evict_lock);
        if (r->buf_size < a->chunk_size) {
                void *b = realloc(r->buf, MAX(a->chunk_size, EVICT_MERGE_BYTES));
                if (!b)
                        ret = -ENOMEM;
                else {
                        r->buf = b;
                        r->buf_size = MAX(a->chunk_size, EVICT_MERGE_BYTES);
                }
        }
        /* Catch and protect until a pass finds nothing new: chunks filled
         * meanwhile (a write to a FREE chunk) are caught by the next pass. The
         * last pass is the snapshot's instant T: every write that landed before
         * it is in a held, protected chunk; every later one waits on a held
         * chunk or lands in a chunk filled after T (whose store copy is older). */
        while (ret == 0 && flush_catch(a, fl) > 0)
                ret = flush_protect(a, fl);
        if (ret == 0)
                ret = flush_writeback(r, a, fl);
        if (ret == 0 && then)
                ret = then(a, data);
        flush_release(a, fl);
        pthread_mutex_unlock(&r->evict_lock);
        free(fl);
        return ret;
}
