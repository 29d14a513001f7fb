/* residency.h: the residency manager. Keeps the resident bytes of a
 * container's arenas under its budget (local limit - other usage - headroom)
 * by evicting chunks between watermarks: CLOCK/second chance, clean before
 * dirty; victims are write-protected, written back, then punched out of the
 * memfd. Also the container's counters (faults, bytes, latency). */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

struct cgroup;

/* Latency histogram: 4 buckets per power of two of nanoseconds. */
#define LAT_BUCKETS 256
struct lat_hist {
        _Atomic uint64_t bucket[LAT_BUCKETS];
};
void lat_hist_add(struct lat_hist *h, uint64_t ns);
/* The upper bound (ns) of the bucket holding quantile Q (0..1); 0 if empty. */
uint64_t lat_hist_quantile(const struct lat_hist *h, double q);
uint64_t lat_hist_count(const struct lat_hist *h);

struct xmem_counters {
        _Atomic uint64_t faults;          /* fault messages served (after de-duplication) */
        _Atomic uint64_t missing_faults;
        _Atomic uint64_t wp_faults;
        _Atomic uint64_t fetched_bytes;   /* read from the store */
        _Atomic uint64_t zero_filled_bytes; /* never-stored chunks installed as zeros */
        _Atomic uint64_t prefetched_bytes;
        _Atomic uint64_t written_back_bytes;
        _Atomic uint64_t evictions;       /* chunks punched out */
        _Atomic uint64_t enomem_retries;  /* UFFDIO_COPY hit the cgroup limit */
        _Atomic uint64_t store_errors;    /* failed fetch/writeback (retried) */
        struct lat_hist fault_latency;    /* fault message read -> thread woken */
};

struct residency {
        pthread_mutex_t evict_lock; /* one evictor at a time; guards arenas[] too */
        struct arena **arenas;
        size_t n_arenas;
        size_t arena_hand;
        _Atomic uint64_t resident; /* bytes over all arenas */
        _Atomic uint64_t budget;
        void *buf; /* write-back bounce buffer, one chunk */
        size_t buf_size;
        struct xmem_counters counters;

        /* Background evictor and optional cgroup tracking. */
        pthread_t thread;
        bool running;
        bool stop;
        pthread_mutex_t kick_lock;
        pthread_cond_t kick;
        const struct cgroup *cg;
        uint64_t cg_limit, cg_headroom, cg_reserve;
        const uint64_t *cg_reserve_live; /* the container's local bytes (or NULL) */
        int usage_fd; /* v1 memory.usage_in_bytes / v2 memory.current, or -1 */
        unsigned interval_ms; /* background refresh period */
};

int residency_new(uint64_t budget, struct residency **ret);
/* Stops the thread; the arenas are not freed (their owner frees them). */
void residency_free(struct residency *r);

int residency_add_arena(struct residency *r, struct arena *a);
/* Forget A (waits for a running eviction to finish). */
void residency_remove_arena(struct residency *r, struct arena *a);

void residency_set_budget(struct residency *r, uint64_t bytes);
static inline uint64_t residency_high(uint64_t budget)
{
        return budget - budget / 16;
}
static inline uint64_t residency_low(uint64_t budget)
{
        return budget - budget / 8;
}

/* Follow CG: the budget becomes residency_budget_reserved(LIMIT, usage,
 * resident, HEADROOM, reserve) from a fresh read of the cgroup's usage (one
 * pread of memory.usage_in_bytes / memory.current) before every fill and
 * every 10 ms in the background thread. */
void residency_track_cgroup(struct residency *r, const struct cgroup *cg, uint64_t limit,
                            uint64_t headroom);
/* Local memory the container may grow to without asking memd (the shim's
 * local_alloc_limit): the budget leaves room for it even before it is used. */
void residency_set_reserve(struct residency *r, uint64_t reserve);
/* The reserve becomes max(reserve, *LIVE) at every refresh: LIVE is the
 * container's charged local bytes (its accounting page), which a fork can
 * push above local_alloc_limit. */
void residency_set_reserve_live(struct residency *r, const uint64_t *live);
/* Re-read the tracked cgroup's usage and recompute the budget (no-op when
 * not tracking). Cheap: one pread. */
void residency_refresh(struct residency *r);
/* limit - headroom - (usage - resident): resident arena pages are charged to
 * the container, so usage includes them. */
uint64_t residency_budget_from(uint64_t limit, uint64_t usage, uint64_t resident,
                               uint64_t headroom);
/* The same with the container's other usage counted as at least RESERVE:
 * limit - headroom - max(usage - resident, reserve). Whenever other usage is
 * above RESERVE, resident + need <= budget is exactly usage + need <= limit -
 * headroom, whatever the resident count's error. */
uint64_t residency_budget_reserved(uint64_t limit, uint64_t usage, uint64_t resident,
                                   uint64_t headroom, uint64_t reserve);

/* The background evictor: evicts from the high down to the low watermark. */
int residency_start(struct residency *r);
void residency_stop(struct residency *r);
void residency_kick(struct residency *r);

/* Make room for NEED more bytes: refresh the budget, and if resident + NEED
 * would pass it, evict synchronously until resident + NEED <= low watermark
 * (or nothing is evictable: -EAGAIN). */
int residency_make_room(struct residency *r, uint64_t need);
/* Evict until resident <= TARGET. Returns bytes evicted, or -EAGAIN when
 * nothing more could be evicted before reaching TARGET. */
int64_t residency_evict_to(struct residency *r, uint64_t target);

/* Pure victim choice (enhanced CLOCK) over N chunks, for unit tests and the
 * evictor: picks up to MAX chunks in CHUNK_PRESENT or CHUNK_DIRTY, preferring
 * (not referenced, clean), then (not referenced, dirty) while clearing the
 * referenced bits it passes, then again. Each pick is moved to CHUNK_EVICTING;
 * OUT[i] gets its index, OUT_DIRTY[i] whether it was dirty. *HAND moves past
 * the last pick. Returns the number picked. */
size_t residency_clock_pick(uint8_t *state, uint8_t *referenced, uint64_t n, uint64_t *hand,
                            uint64_t *out, bool *out_dirty, size_t max);

/* Eviction merges contiguous victims: sort the N picks by chunk (DIRTY
 * follows), then the run starting at I is the contiguous chunks after it (at
 * most MAX_RUN; with SAME_DIRTY only those whose DIRTY equals DIRTY[I]). */
void residency_sort_picks(uint64_t *chunk, bool *dirty, size_t n);
size_t residency_run_len(const uint64_t *chunk, const bool *dirty, size_t n, size_t i,
                         size_t max_run, bool same_dirty);

/* A consistent copy of A's contents for a fork (shim.fork). Holds A's
 * resident chunks (their WP and MISSING faults wait), write-protects the dirty
 * ones, repeats for chunks filled meanwhile until none is new (that instant
 * is the snapshot), writes every dirty chunk back to A's store, then runs
 * THEN(A, DATA) (may be NULL) while nothing can be written back to the store
 * (evictions wait): the place to store_clone(A->store). Then the chunks are
 * left PRESENT (clean, write-protected) and the held writers are woken: their
 * writes, and writes into chunks filled after the snapshot, come after it and
 * reach only A. Returns 0, THEN's result, or -errno (a failed write-back or
 * write-protect: those chunks stay DIRTY, nothing is lost, no snapshot). */
int residency_flush_arena(struct residency *r, struct arena *a,
                          int (*then)(struct arena *a, void *data), void *data);
