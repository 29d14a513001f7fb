/* snapshot.c: the fork and checkpoint snapshot (residency_flush_arena, see
 * residency.h): a consistent cut of one arena, every dirty page written back
 * to its store, with nothing written back to that store until the caller has
 * cloned it; and its reverse for a rollback (residency_drop_arena). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <unistd.h>

#include "macro.h"
#include "pages.h"
#include "residency.h"
#include "uffd.h"

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
                        continue; /* FREE: lives in the store; FILLING: not written yet
                                   * (installed protected until it is DIRTY, fill.c) */
                pages_hold(a, c);
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
                                     : arena_uffd_wp(a, c, k, true, false);
                if (wr < 0 && wr != -ESRCH) /* -ESRCH: the process is gone */
                        return wr;
                c += k;
        }
        return 0;
}

/* Write the held dirty chunks back in runs of up to buf_size bytes; a failed
 * run's chunks, and every dirty chunk after it, get FL_FAILED: the first
 * failure ends the flush (an appliance that does not answer costs one
 * timeout, not one per run). */
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
                int rr = ret < 0 ? ret
                                 : residency_write_back(r, a, c * a->chunk_size,
                                                        k * (uint64_t)a->chunk_size);
                if (rr < 0) {
                        for (uint64_t j = c; j < c + k; j++)
                                fl[j] |= FL_FAILED;
                        ret = rr;
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
                pages_kept(a, c, fl[c] & FL_DIRTY,
                           (fl[c] & (FL_FAILED | FL_PROTECTED)) == FL_PROTECTED);
        }
        pthread_mutex_unlock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks;) {
                uint64_t k = 0;
                while (c + k < a->n_chunks && (fl[c + k] & FL_HELD))
                        k++;
                if (k && a->uffd >= 0)
                        arena_uffd_wake(a, c, k);
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
        ret = residency_ensure_buf(r, a->chunk_size);
        /* Catch and protect until a pass finds nothing new: chunks filled
         * meanwhile (a write to a FREE chunk) are caught by the next pass. The
         * last pass is the snapshot's instant T: every write that landed before
         * it is in a held, protected chunk; every later one waits on a held
         * chunk or lands in a chunk filled after T (whose store copy is older).
         * A chunk still FILLING at T holds no write: a fill installs its pages
         * write-protected and un-protects them only once they are DIRTY. */
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

/* Any chunk of A in a fill right now? */
static bool any_filling(struct arena *a)
{
        bool found = false;

        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks && !found; c++)
                found = a->state[c] == CHUNK_FILLING;
        pthread_mutex_unlock(&a->lock);
        return found;
}

#define DROP_WAIT_MS 5000 /* fills in flight finish within the appliance timeout */

int residency_drop_arena(struct residency *r, struct arena *a, const uint8_t *has_data,
                         int (*then)(struct arena *a, void *data), void *data)
{
        uint8_t *fl = calloc(a->n_chunks, 1);
        int ret = 0;

        if (!fl)
                return -ENOMEM;
        pthread_mutex_lock(&r->evict_lock);
        /* Hold every resident chunk, and wait out the fills in flight: one that
         * read the store before THEN must not install its data after it. */
        for (unsigned waited = 0;;) {
                uint64_t caught = flush_catch(a, fl);
                if (caught == 0 && !any_filling(a))
                        break;
                if (caught == 0 && ++waited > DROP_WAIT_MS) {
                        ret = -EBUSY;
                        break;
                }
                if (caught == 0)
                        usleep(1000);
        }
        if (ret == 0)
                ret = then(a, data);
        if (ret < 0) {
                flush_release(a, fl); /* as it was: dirty pages stay dirty */
                pthread_mutex_unlock(&r->evict_lock);
                free(fl);
                return ret;
        }
        /* The old contents leave the memfd (and the process's page tables) */
        if (fallocate(a->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)a->size) < 0)
                ret = negative_errno();
        uint64_t dropped = 0;
        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks; c++) {
                bool data_here = has_data[c / 8] >> (c % 8) & 1;
                if (fl[c] & FL_HELD) {
                        pages_evicted(a, c, false);
                        dropped++;
                }
                a->stored[c] = data_here;
                if (!data_here)
                        pages_uncharge(a, c);
                else if (a->charge[c] == PAGE_UNCHARGED) {
                        if (a->quota) /* the snapshot's data counts again, even over */
                                atomic_fetch_add(&a->quota->used, 1);
                        a->charge[c] = PAGE_CHARGED;
                }
        }
        pthread_mutex_unlock(&a->lock);
        atomic_fetch_sub(&r->resident, dropped * a->chunk_size);
        if (a->uffd >= 0)
                arena_uffd_wake_all(a);
        pthread_mutex_unlock(&r->evict_lock);
        free(fl);
        return ret;
}

void residency_swap_store(struct arena *a, struct store *s)
{
        pthread_mutex_lock(&a->lock);
        a->store = s; /* fills claimed from now on read S */
        pthread_mutex_unlock(&a->lock);
}

int residency_wait_fills(struct arena *a, unsigned ms)
{
        for (unsigned waited = 0;; waited++) {
                bool quiet = atomic_load(&a->async_inflight) == 0;
                pthread_mutex_lock(&a->lock);
                for (uint64_t c = 0; c < a->n_chunks && quiet; c++)
                        quiet = a->state[c] != CHUNK_FILLING;
                pthread_mutex_unlock(&a->lock);
                if (quiet)
                        return 0;
                if (waited >= ms)
                        return -EBUSY;
                usleep(1000);
        }
}
