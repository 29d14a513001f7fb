/* pages.h: every page (chunk) state transition of an arena, in one place;
 * the same table is in docs/pager.md. All of them run under arena->lock, and
 * each checks the state it leaves (a wrong one is a programming error).
 *
 *   FREE ----claim (fault, prefetch)----------------> FILLING
 *   FILLING --installed (UFFDIO_COPY, write-protected)-> PRESENT
 *   FILLING --installed (a write fault: writable)-----> DIRTY (then un-protected)
 *   FILLING --given back (prefetch refused, failure)--> FREE
 *   PRESENT --written (WP fault: un-protect the page)-> DIRTY
 *   PRESENT|DIRTY --held (victim, fork snapshot)------> EVICTING
 *   EVICTING --evicted (written back if dirty, punched)-> FREE
 *   EVICTING --kept (write-back/punch failed; snapshot done)-> PRESENT|DIRTY
 *
 * FILLING belongs to its fill, EVICTING to its evictor (or the fork
 * snapshot): only that owner moves the page on, and wakes it afterwards.
 *
 * Beside the state, each page's charge against the container's external
 * quota (enum page_charge): a page is charged when it is first written
 * (a write fault on a resident page, or a writable fill: CHARGING until it is
 * installed) and uncharged when the process gives it back (shim.discard) or
 * its arena is freed. A fork clone's pages the parent had written are
 * INHERITED: shared with the parent until written, as the shim counts them.
 * A page is writable only while DIRTY: a fill installs every run
 * write-protected and un-protects a writable one after pages_installed, under
 * the lock (fill.c finish), so no write lands in a FILLING page, which a fork
 * snapshot leaves out of its cut.
 * (residency_clock_pick in evict.c makes the "held" step on raw state arrays:
 * it is pure, for its unit tests.) */
#pragma once

#include <assert.h>
#include <errno.h>

#include "arena.h"

/* ---- the external quota ---- */

static inline bool quota_take(struct arena_quota *q, uint64_t n)
{
        uint64_t used = atomic_load(&q->used);

        do
                if (used + n > q->limit)
                        return false;
        while (!atomic_compare_exchange_weak(&q->used, &used, used + n));
        return true;
}

static inline void quota_put(struct arena_quota *q, uint64_t n)
{
        atomic_fetch_sub(&q->used, n);
}

/* Charge page C for a write (TO: CHARGED, or CHARGING for a fill in flight)
 * unless it holds data of its own already. False: over the quota. */
static inline bool pages_charge(struct arena *a, uint64_t c, uint8_t to)
{
        if (a->charge[c] != PAGE_UNCHARGED)
                return true;
        if (a->quota && !quota_take(a->quota, 1))
                return false;
        a->charge[c] = to;
        return true;
}

static inline void pages_uncharge(struct arena *a, uint64_t c)
{
        if (a->charge[c] == PAGE_CHARGED || a->charge[c] == PAGE_CHARGING) {
                if (a->quota)
                        quota_put(a->quota, 1);
        }
        a->charge[c] = PAGE_UNCHARGED;
}

/* ---- states ---- */

static inline void pages_claim(struct arena *a, uint64_t c)
{
        assert(a->state[c] == CHUNK_FREE);
        a->state[c] = CHUNK_FILLING;
}

/* CLOCK chances of a page installed by a fault: one, or PAGES_HOT when it
 * comes back sooner than the cache turns over (its refault distance, in
 * evictions, is below the resident size: with a little more cache it would
 * have stayed). Reads of a resident page never fault, so this is how pages
 * that are used all the time (an index, a hash table) stay resident while
 * the pages streamed past them go. Prefetched pages get none. */
#define PAGES_HOT 3

static inline uint8_t pages_chances(const struct arena *a, uint64_t c, bool demand)
{
        uint32_t at = a->evicted_at[c];

        if (!demand)
                return 0;
        return at && a->evict_clock - at <= a->resident_chunks ? PAGES_HOT : 1;
}

static inline void pages_installed(struct arena *a, uint64_t c, bool writable, bool demand)
{
        assert(a->state[c] == CHUNK_FILLING);
        a->state[c] = writable ? CHUNK_DIRTY : CHUNK_PRESENT;
        if (a->charge[c] == PAGE_CHARGING)
                a->charge[c] = PAGE_CHARGED;
        a->referenced[c] = pages_chances(a, c, demand);
        a->resident_chunks++;
}

static inline void pages_given_back(struct arena *a, uint64_t c)
{
        assert(a->state[c] == CHUNK_FILLING);
        a->state[c] = CHUNK_FREE;
        if (a->charge[c] == PAGE_CHARGING)
                pages_uncharge(a, c);
}

/* A write to a resident page: 1 when the caller must un-protect it, 0 when
 * it is not resident, -EDQUOT when the write would go over the quota. */
static inline int pages_written(struct arena *a, uint64_t c)
{
        if (a->state[c] != CHUNK_PRESENT && a->state[c] != CHUNK_DIRTY)
                return 0;
        if (!pages_charge(a, c, PAGE_CHARGED))
                return -EDQUOT;
        a->state[c] = CHUNK_DIRTY;
        if (!a->referenced[c])
                a->referenced[c] = 1;
        return 1;
}

/* Hold a resident page (a victim, or for a fork snapshot): its faults wait. */
static inline void pages_hold(struct arena *a, uint64_t c)
{
        assert(a->state[c] == CHUNK_PRESENT || a->state[c] == CHUNK_DIRTY);
        a->state[c] = CHUNK_EVICTING;
}

/* Evicted: WROTE_BACK when it was dirty and its data is in the store now. */
static inline void pages_evicted(struct arena *a, uint64_t c, bool wrote_back)
{
        assert(a->state[c] == CHUNK_EVICTING);
        a->state[c] = CHUNK_FREE;
        a->referenced[c] = 0;
        a->resident_chunks--;
        if (++a->evict_clock == 0) /* 0 means never */
                a->evict_clock = 1;
        a->evicted_at[c] = a->evict_clock;
        if (wrote_back)
                a->stored[c] = 1;
}

/* Still resident after all: DIRTY unless its data is in the store
 * (WROTE_BACK) or it never was dirty. */
static inline void pages_kept(struct arena *a, uint64_t c, bool dirty, bool wrote_back)
{
        assert(a->state[c] == CHUNK_EVICTING);
        a->state[c] = dirty && !wrote_back ? CHUNK_DIRTY : CHUNK_PRESENT;
        if (dirty && wrote_back)
                a->stored[c] = 1;
}

/* The process gave page C back (shim.discard): it punched the page from its
 * memfd, so a resident page is a hole now (it refaults as zeros: no write-back
 * is owed) and the store's copy is no longer needed. Pages in a fill or an
 * eviction keep their state: their owner finishes, and a later write charges
 * them again. */
static inline void pages_discarded(struct arena *a, uint64_t c)
{
        switch (a->state[c]) {
        case CHUNK_FREE:
                a->stored[c] = 0;
                break;
        case CHUNK_DIRTY:
                a->state[c] = CHUNK_PRESENT;
                a->stored[c] = 0;
                break;
        case CHUNK_PRESENT:
                a->stored[c] = 0;
                break;
        default:
                return;
        }
        pages_uncharge(a, c);
}
