/* evict.c: choosing victims and evicting them (see residency.h). The order
 * that keeps every write, per run of contiguous victims:
 *   1. under the arena lock the victims become EVICTING: from now on a WP
 *      fault on them waits instead of un-protecting, a MISSING fault waits;
 *   2. UFFDIO_WRITEPROTECT over each stretch of DIRTY victims: when it
 *      returns the kernel has flushed the TLBs and no write can land (a
 *      writer blocks in its WP fault). PRESENT victims need nothing: a page
 *      is PRESENT only while it is write-protected (installed so, or
 *      re-protected by a write-back);
 *   3. the dirty stretches are read from the memfd (pread: a mapping would
 *      populate holes) and written back, only dirty pages, all of a batch
 *      pipelined (or pread straight into the appliance's pool over shm);
 *   4. fallocate(PUNCH_HOLE) over each stretch whose write-back succeeded;
 *   5. under the lock: FREE (or DIRTY if the write-back failed, PRESENT if the
 *      punch failed), then one wake over the run: waiting writers refault
 *      MISSING and refetch the page, which holds every write made before 2. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "macro.h"
#include "pages.h"
#include "residency.h"
#include "store.h"
#include "uffd.h"

#define EVICT_BATCH_BYTES (2U << 20) /* picked per batch; also the largest run */
#define EVICT_BATCH_MAX 512          /* victims per batch */

/* One sweep over all N chunks from *HAND. */
static size_t clock_sweep(uint8_t *state, uint8_t *referenced, const uint8_t *pinned, uint64_t n,
                          uint64_t *hand, uint64_t *out, bool *out_dirty, size_t max, size_t count,
                          bool want_dirty, bool clear_ref)
{
        uint64_t start = *hand;

        for (uint64_t step = 0; step < n && count < max; step++) {
                uint64_t i = (start + step) % n;
                bool dirty = state[i] == CHUNK_DIRTY;

                if ((state[i] != CHUNK_PRESENT && !dirty) || (pinned && pinned[i]))
                        continue;
                if (!referenced[i] && dirty == want_dirty) {
                        state[i] = CHUNK_EVICTING;
                        out[count] = i;
                        out_dirty[count] = dirty;
                        count++;
                        *hand = (i + 1) % n;
                } else if (clear_ref && referenced[i])
                        referenced[i]--; /* one chance used */
        }
        return count;
}

size_t residency_clock_pick(uint8_t *state, uint8_t *referenced, const uint8_t *pinned, uint64_t n,
                            uint64_t *hand, uint64_t *out, bool *out_dirty, size_t max)
{
        size_t count = 0;

        if (n == 0)
                return 0;
        *hand %= n;
        for (int pass = 0; pass < 2 && count < max; pass++) {
                count = clock_sweep(state, referenced, pinned, n, hand, out, out_dirty, max, count, false,
                                    false);
                if (count < max)
                        count = clock_sweep(state, referenced, pinned, n, hand, out, out_dirty, max, count,
                                            true, true);
        }
        return count;
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

int residency_ensure_buf(struct residency *r, size_t want)
{
        want = MAX(want, (size_t)EVICT_BATCH_BYTES);
        if (r->buf_size >= want)
                return 0;
        void *b = realloc(r->buf, want);
        if (!b)
                return -ENOMEM;
        r->buf = b;
        r->buf_size = want;
        return 0;
}

struct direct_wb {
        int memfd;
        uint64_t off;
};

/* One piece of a direct write-back: the memfd's bytes straight into the
 * store's memory. */
static int pread_piece(void *ctx, uint64_t at, void *mem, uint64_t len)
{
        struct direct_wb *d = ctx;
        ssize_t got;

        if (!mem)
                return -EIO; /* a write is always mapped */
        got = pread(d->memfd, mem, len, (off_t)(d->off + at));
        return got == (ssize_t)len ? 0 : got < 0 ? -errno : -EIO;
}

/* Over a wire: read the stretches SEGS of A's memfd (at most buf_size in all)
 * into the buffer and send them in one pipelined call. */
static int write_back_buffered(struct residency *r, struct arena *a, const struct store_seg *segs,
                               size_t n)
{
        uint64_t at = 0;

        for (size_t i = 0; i < n; i++) {
                ssize_t got =
                    pread(a->memfd, (char *)r->buf + at, segs[i].len, (off_t)segs[i].offset);
                if (got != (ssize_t)segs[i].len)
                        return got < 0 ? -errno : -EIO;
                at += segs[i].len;
        }
        return store_writeback_v(a->store, segs, n, r->buf);
}

/* Count BYTES written back, or one store error; returns RR. */
static int counted(struct residency *r, int rr, uint64_t bytes)
{
        if (rr == 0)
                atomic_fetch_add(&r->counters.written_back_bytes, bytes);
        else
                atomic_fetch_add(&r->counters.store_errors, 1);
        return rr;
}

int residency_write_back(struct residency *r, struct arena *a, uint64_t off, uint64_t len)
{
        struct direct_wb d = {a->memfd, off};
        int rr = store_direct(a->store, off, len, true, pread_piece, &d);

        if (rr != -EOPNOTSUPP)
                return counted(r, rr, len);
        rr = 0; /* over a wire: through the buffer, a buffer at a time */
        for (uint64_t done = 0; rr == 0 && done < len;) {
                struct store_seg seg = {off + done, MIN(len - done, (uint64_t)r->buf_size)};
                rr = write_back_buffered(r, a, &seg, 1);
                done += seg.len;
        }
        return counted(r, rr, len);
}

/* Steps 2 and 3 for the dirty stretches of the sorted victims: protect each
 * stretch, then write them back (directly, or batched over the wire).
 * FAILED[i] is set for victims that must not be punched. */
static void protect_and_write_back(struct residency *r, struct arena *a, const uint64_t *v,
                                   const bool *dirty, size_t n, bool *failed)
{
        struct store_seg segs[EVICT_BATCH_MAX];
        size_t n_segs = 0;
        uint64_t bytes = 0;
        bool direct = store_has_direct(a->store);

        for (size_t i = 0; i < n;) {
                size_t k = residency_run_len(v, dirty, n, i, n, true);
                uint64_t len = k * (uint64_t)a->chunk_size;
                int rr = 0;

                if (dirty[i]) {
                        rr = arena_uffd_wp(a, v[i], k, true, false);
                        if (rr == -ESRCH) /* the process is gone: nobody writes any more */
                                rr = 0;
                        if (rr < 0)
                                atomic_fetch_add(&r->counters.store_errors, 1);
                        else if (direct)
                                rr = residency_write_back(r, a, v[i] * a->chunk_size, len);
                        else {
                                segs[n_segs++] = (struct store_seg){v[i] * a->chunk_size, len};
                                bytes += len;
                        }
                }
                for (size_t j = i; j < i + k; j++)
                        failed[j] = rr < 0;
                i += k;
        }
        /* every dirty victim not refused above is in the batch: all or none */
        if (n_segs && counted(r, write_back_buffered(r, a, segs, n_segs), bytes) < 0)
                for (size_t j = 0; j < n; j++)
                        failed[j] |= dirty[j];
}

/* Steps 4 and 5 for one run of contiguous victims [I, I+K). */
static size_t punch_and_release(struct residency *r, struct arena *a, const uint64_t *v,
                                const bool *dirty, const bool *failed, size_t i, size_t k)
{
        bool punched[EVICT_BATCH_MAX];
        size_t freed = 0, punch_failed = 0;

        for (size_t j = i; j < i + k;) {
                size_t m = residency_run_len(v, failed, i + k, j, k, true);
                bool ok = false;
                if (!failed[j])
                        ok = fallocate(a->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                       (off_t)(v[j] * a->chunk_size),
                                       (off_t)(m * (uint64_t)a->chunk_size)) == 0;
                for (size_t x = j; x < j + m; x++)
                        punched[x - i] = ok;
                j += m;
        }
        pthread_mutex_lock(&a->lock);
        for (size_t j = i; j < i + k; j++) {
                uint64_t c = v[j];
                if (punched[j - i]) {
                        pages_evicted(a, c, dirty[j]);
                        freed++;
                } else {
                        /* failed write-back: still dirty (and protected: a write
                         * re-faults and is un-protected); failed punch: clean */
                        pages_kept(a, c, dirty[j], dirty[j] && !failed[j]);
                        punch_failed += !failed[j];
                }
        }
        pthread_mutex_unlock(&a->lock);
        atomic_fetch_sub(&r->resident, freed * a->chunk_size);
        atomic_fetch_add(&r->counters.evictions, freed);
        if (punch_failed)
                atomic_fetch_add(&r->counters.store_errors, punch_failed);
        /* Faults that arrived while EVICTING wait for this: they refault MISSING
         * (punched) or WP (kept: the pager un-protects or marks it dirty). */
        arena_uffd_wake(a, v[i], k);
        return freed;
}

/* Evict one batch of A's victims (up to EVICT_BATCH_BYTES), contiguous
 * victims merged into runs. Caller holds evict_lock. */
static size_t evict_batch_arena(struct residency *r, struct arena *a)
{
        uint64_t victims[EVICT_BATCH_MAX], hand;
        bool dirty[EVICT_BATCH_MAX], failed[EVICT_BATCH_MAX];
        size_t n,
            done = 0,
            max = MAX(MIN(EVICT_BATCH_BYTES / a->chunk_size, (size_t)EVICT_BATCH_MAX), (size_t)1);

        pthread_mutex_lock(&a->lock);
        hand = a->clock_hand;
        n = residency_clock_pick(a->state, a->referenced, a->pinned, a->n_chunks, &hand, victims, dirty, max);
        a->clock_hand = hand;
        pthread_mutex_unlock(&a->lock);
        residency_sort_picks(victims, dirty, n);

        protect_and_write_back(r, a, victims, dirty, n, failed);
        for (size_t i = 0; i < n;) {
                size_t k = residency_run_len(victims, dirty, n, i, n, false);
                done += punch_and_release(r, a, victims, dirty, failed, i, k);
                i += k;
        }
        return done;
}

int64_t residency_evict_to(struct residency *r, uint64_t target)
{
        int64_t evicted = 0;
        unsigned empty = 0;

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
                /* a round that picked nothing still took chances from the
                 * hot pages (PAGES_HOT): only give up once they are spent */
                empty = got ? 0 : empty + 1;
                if (empty > PAGES_HOT) {
                        pthread_mutex_unlock(&r->evict_lock);
                        return evicted > 0 ? evicted : -EAGAIN;
                }
        }
        pthread_mutex_unlock(&r->evict_lock);
        return evicted;
}
