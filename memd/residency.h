/* residency.h: the residency manager of one container. It keeps the resident
 * bytes of the container's arenas under its budget (local limit - the
 * container's own usage - headroom, re-read continuously) ahead of need: a
 * background evictor keeps free room for the fills in flight between a high
 * and a low watermark (evict.c picks and evicts victims), and a fill waits
 * for eviction only at the hard limit. Also the container's counters (faults,
 * bytes, latency histogram). Fork snapshots are snapshot.c. */
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
        _Atomic uint64_t sum_ns; /* of every latency added (memd's metrics) */
};
void lat_hist_add(struct lat_hist *h, uint64_t ns);
/* Of a copy of the buckets: how many latencies were below 2^K ns (K from 2
 * to 62). A power of two is a bucket boundary, so the count is exact. */
uint64_t lat_hist_below_pow2(const uint64_t bucket[LAT_BUCKETS], unsigned k);
/* The upper bound (ns) of the bucket holding quantile Q (0..1); 0 if empty. */
uint64_t lat_hist_quantile(const struct lat_hist *h, double q);
uint64_t lat_hist_count(const struct lat_hist *h);

struct xmem_counters {
        _Atomic uint64_t faults; /* fault messages served (after de-duplication) */
        _Atomic uint64_t missing_faults;
        _Atomic uint64_t wp_faults;
        _Atomic uint64_t fetched_bytes;     /* read from the store */
        _Atomic uint64_t zero_filled_bytes; /* never-stored pages installed as zeros */
        _Atomic uint64_t prefetched_bytes;
        _Atomic uint64_t written_back_bytes;
        _Atomic uint64_t evictions;      /* chunks (pages) punched out */
        _Atomic uint64_t enomem_retries; /* UFFDIO_COPY hit the cgroup limit */
        _Atomic uint64_t store_errors;   /* failed fetch/writeback (retried) */
        _Atomic uint64_t sync_evictions; /* a fill had to evict first (hard limit) */
        _Atomic uint64_t inline_fills;   /* fills the fault reader did itself (shm, zeros) */
        _Atomic uint64_t oom_waits;       /* v1: a task waited at the limit (OOM paused) */
        _Atomic uint64_t oom_released;    /* nothing left to evict: the OOM killer decides */
        _Atomic uint64_t async_fills;       /* fetched without waiting, installed on arrival (tcp) */
        struct lat_hist fault_latency;   /* fault message read -> thread woken */
};

struct residency {
        pthread_mutex_t evict_lock; /* one evictor at a time; guards arenas[] too */
        struct arena **arenas;
        size_t n_arenas;
        size_t arena_hand;
        _Atomic uint64_t resident; /* bytes over all arenas */
        _Atomic uint64_t inflight; /* bytes being filled (FILLING) */
        _Atomic uint64_t budget;
        void *buf; /* write-back buffer, one eviction batch (evict_lock) */
        size_t buf_size;
        struct xmem_counters counters;

        /* Background evictor and optional cgroup tracking. */
        pthread_t thread;
        bool running;
        bool stop;
        pthread_mutex_t kick_lock;
        pthread_cond_t kick;
        const struct cgroup *cg;
        uint64_t cg_limit, cg_headroom;
        const uint64_t *cg_local_live; /* the container's charged local bytes (or NULL) */
        int usage_fd;                  /* v1 memory.usage_in_bytes / v2 memory.current, or -1 */
        int event_fd;                  /* v1 usage threshold eventfd / v2 memory.events, or -1 */
        int wake_fd;                   /* eventfd: kicks and shutdown */
        int oom_fd;         /* v1: eventfd signalled at an OOM of the cgroup, or -1 */
        int oom_ctl_fd;     /* v1: memory.oom_control (the event's file) */
        bool oom_released;  /* nothing was left to evict: the OOM killer decides */
        /* arenas of re-adopted processes that have not said shim.resume yet
         * (memd/adopt.c): their pages are the container's too, so an OOM is
         * not the container's own while any is awaited */
        _Atomic unsigned awaiting;
        uint64_t lent; /* bytes the limit was raised by meanwhile (the thread's) */
        unsigned interval_ms;          /* background refresh period */
};

int residency_new(uint64_t budget, struct residency **ret);
/* Stops the thread; the arenas are not freed (their owner frees them). */
void residency_free(struct residency *r);

int residency_add_arena(struct residency *r, struct arena *a);
/* Forget A (waits for a running eviction to finish). */
void residency_remove_arena(struct residency *r, struct arena *a);

void residency_set_budget(struct residency *r, uint64_t bytes);
/* Watermarks: the background evictor starts when resident + inflight passes
 * high and stops at low; prefetch never fills past high. */
static inline uint64_t residency_high(uint64_t budget)
{
        return budget - budget / 16;
}
static inline uint64_t residency_low(uint64_t budget)
{
        return budget - budget / 8;
}

/* Follow CG: the budget becomes residency_budget_from(LIMIT, usage, resident,
 * HEADROOM, local) from a fresh read of the cgroup's usage (one pread) every
 * interval, at every cgroup event (v1: a usage threshold just below the
 * limit; v2: memory.events) and before a fill that would pass the budget. */
void residency_track_cgroup(struct residency *r, const struct cgroup *cg, uint64_t limit,
                            uint64_t headroom);
/* *LIVE: the container's charged local bytes (its accounting page). The
 * shims charge an allocation before they touch it, so the budget makes room
 * for the container's own memory as soon as it is allocated; nothing is
 * reserved up front. */
void residency_set_local_live(struct residency *r, const uint64_t *live);
/* Re-read the tracked cgroup's usage and recompute the budget (no-op when
 * not tracking). Cheap: one pread. */
void residency_refresh(struct residency *r);
/* limit - headroom - max(usage - resident, local): resident arena pages are
 * charged to the container, so usage includes them; LOCAL (the charged local
 * allocations) counts memory the container is about to touch. */
uint64_t residency_budget_from(uint64_t limit, uint64_t usage, uint64_t resident, uint64_t headroom,
                               uint64_t local);

/* The background evictor. */
int residency_start(struct residency *r);
void residency_stop(struct residency *r);
void residency_kick(struct residency *r);

/* Make room for NEED more bytes: refresh the budget, and if resident + NEED
 * would pass it (the hard limit), evict synchronously until resident + NEED
 * <= low watermark (or nothing is evictable: -EAGAIN). */
int residency_make_room(struct residency *r, uint64_t need);

/* ---- evict.c ---- */

/* Evict until resident <= TARGET. Returns bytes evicted, or -EAGAIN when
 * nothing more could be evicted before reaching TARGET. */
int64_t residency_evict_to(struct residency *r, uint64_t target);
/* The write-back buffer: at least one eviction batch. evict_lock held. */
int residency_ensure_buf(struct residency *r, size_t want);

/* Pure victim choice (enhanced CLOCK) over N chunks, for unit tests and the
 * evictor: picks up to MAX chunks in CHUNK_PRESENT or CHUNK_DIRTY, preferring
 * (not referenced, clean), then (not referenced, dirty) while clearing the
 * referenced bits it passes, then again. Each pick is moved to CHUNK_EVICTING;
 * OUT[i] gets its index, OUT_DIRTY[i] whether it was dirty. *HAND moves past
 * the last pick. Returns the number picked. Chunks with PINNED[i] set (PINNED
 * may be NULL) are never picked: aliases being set up or taken back (alias.h). */
size_t residency_clock_pick(uint8_t *state, uint8_t *referenced, const uint8_t *pinned, uint64_t n,
                            uint64_t *hand, uint64_t *out, bool *out_dirty, size_t max);

/* Eviction merges contiguous victims: sort the N picks by chunk (DIRTY
 * follows), then the run starting at I is the contiguous chunks after it (at
 * most MAX_RUN; with SAME_DIRTY only those whose DIRTY equals DIRTY[I]). */
void residency_sort_picks(uint64_t *chunk, bool *dirty, size_t n);
size_t residency_run_len(const uint64_t *chunk, const bool *dirty, size_t n, size_t i,
                         size_t max_run, bool same_dirty);

/* Write [OFF, OFF+LEN) of A's memfd back to its store: straight from the
 * memfd into the store's memory where it is mapped here (pread into the
 * appliance's pool), else through R's buffer. evict_lock held. */
int residency_write_back(struct residency *r, struct arena *a, uint64_t off, uint64_t len);

/* ---- snapshot.c ---- */

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
/* A rollback: hold every resident chunk of A (their faults wait) and wait for
 * the fills in flight, run THEN(A, DATA) (the store takes older contents: a
 * revert on the appliance), then drop every page from A's memfd, so the
 * process refaults each page from the store. HAS_DATA (a bit per page) says
 * which pages the store now holds data for (the others read as zeros and
 * are not charged to the quota). When THEN fails nothing changed. */
int residency_drop_arena(struct residency *r, struct arena *a, const uint8_t *has_data,
                         int (*then)(struct arena *a, void *data), void *data);
/* Serve A from S from now on (a move: S holds the same data). Call it from
 * residency_flush_arena's THEN, so nothing is written back meanwhile. Fills
 * already in flight may still read the old store: free it only after
 * residency_wait_fills. */
void residency_swap_store(struct arena *a, struct store *s);
/* Wait (at most MS ms: -EBUSY) until no fill of A is in flight. */
int residency_wait_fills(struct arena *a, unsigned ms);
