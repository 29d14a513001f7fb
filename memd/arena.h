/* arena.h: one process's external arena: a memfd mapped MAP_SHARED at BASE in
 * the faulting process, registered with that process's userfaultfd, and the
 * per-chunk state the pager and the residency manager share. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "alias.h"
#include "stream.h"

#define ARENA_PAGE_SIZE 4096U

/* The state of each chunk (memd: each 4 KiB page; fills and evictions span
 * runs of them). The transitions and who owns a page in each state are in
 * pages.h, the only place that changes them. */
enum chunk_state {
        CHUNK_FREE = 0, /* not resident: the next access faults MISSING */
        CHUNK_FILLING,
        CHUNK_PRESENT,  /* resident, clean, write-protected */
        CHUNK_DIRTY,    /* resident, written since the last write-back */
        CHUNK_EVICTING,
};

struct store;

/* What a page counts against the container's external quota (docs/memd.md
 * "The external quota"): pages.h moves it with the page states. */
enum page_charge {
        PAGE_UNCHARGED = 0, /* holds no data of this arena's own */
        PAGE_CHARGED,       /* written here: counted against the quota */
        PAGE_CHARGING,      /* counted for a writable fill still in flight */
        PAGE_INHERITED,     /* a fork clone's copy of the parent's page: not counted */
};

/* A container's external quota in pages, shared by its arenas. */
struct arena_quota {
        _Atomic uint64_t used;
        uint64_t limit;
        _Atomic uint64_t refused; /* writes refused over the quota */
        uint64_t discards;        /* shim.discard requests (event loop) */
};

struct arena {
        int memfd;
        int uffd;           /* the faulting process's userfaultfd (-1 until attached) */
        uint64_t base;      /* start of the mapping in the faulting process */
        uint64_t size;      /* bytes, a multiple of chunk_size */
        uint32_t chunk_size;
        uint64_t n_chunks;
        struct store *store; /* arena offset X lives at store offset X */

        pthread_mutex_t lock;
        uint8_t *state;      /* enum chunk_state per chunk */
        uint8_t *referenced; /* CLOCK: chances left per chunk (0..PAGES_HOT) */
        uint32_t *evicted_at; /* evict_clock when the chunk was last evicted (0: never) */
        uint32_t evict_clock; /* chunks evicted so far (wraps) */
        uint8_t *stored;     /* the store holds data for the chunk (else it reads as zeros) */
        uint64_t resident_chunks;
        uint8_t *charge;     /* enum page_charge per chunk */
        struct arena_quota *quota; /* NULL: unlimited */
        int pidfd;           /* the process signalled over the quota (borrowed; -1: none) */
        bool quota_signalled; /* logged once (pager reader only) */

        struct stream_table streams; /* fill units from the access pattern (reader only) */
        uint64_t clock_hand; /* eviction only, under lock */
        bool gone;           /* no longer served (atomic): retries give up */
        _Atomic uint64_t async_inflight; /* fetches the pager started without waiting */

        /* Pages the process also maps elsewhere (alias.h): the table, sorted
         * by chunk, under alias_lock; n_aliases is read without it (0: none,
         * the usual case). pinned: per chunk, in a PINNED or HELD alias (the
         * evictor leaves it), NULL until the first alias. */
        pthread_rwlock_t alias_lock;
        struct arena_alias *aliases;
        _Atomic size_t n_aliases;
        uint8_t *pinned;
};

/* A memfd ("xmem-arena", MFD_CLOEXEC) of SIZE bytes (rounded up to CHUNK_SIZE,
 * a power of two multiple of the page size) backed by STORE (not owned).
 * FRESH: the store's range is known to be all zeros (a new region), so
 * never-written chunks are filled with zeros without asking the store. */
int arena_new(uint64_t size, uint32_t chunk_size, struct store *store, bool fresh,
              struct arena **ret);
void arena_free(struct arena *a);
/* The arena of a process that kept its MEMFD (taken over) across a memd
 * restart: every page with data in the memfd is resident and DIRTY (it may
 * hold writes never written back), every other page is read from STORE
 * (never-written ones come back as zeros). */
int arena_adopt(int memfd, uint64_t size, uint32_t chunk_size, struct store *store,
                struct arena **ret);

/* Attach the faulting process's userfaultfd (taken over: closed by arena_free)
 * and the address where that process mapped the memfd. */
void arena_attach(struct arena *a, int uffd, uint64_t base);

static inline bool arena_contains(const struct arena *a, uint64_t addr)
{
        return addr >= a->base && addr - a->base < a->size;
}
/* The chunk at ADDR: in the arena's own range, or in an alias served there
 * (UINT64_MAX: neither). */
static inline uint64_t arena_chunk_of(const struct arena *a, uint64_t addr)
{
        uint64_t c;

        if (arena_contains(a, addr))
                return (addr - a->base) / a->chunk_size;
        return atomic_load(&a->n_aliases) && arena_alias_chunk(a, addr, &c) ? c : UINT64_MAX;
}
/* ADDR is an address memd serves for A (its range, a live or held alias). */
static inline bool arena_owns(const struct arena *a, uint64_t addr)
{
        return arena_chunk_of(a, addr) != UINT64_MAX;
}
/* Where the process maps CHUNK (an alias's address for an aliased one). */
static inline uint64_t arena_chunk_addr(const struct arena *a, uint64_t chunk)
{
        if (atomic_load(&a->n_aliases))
                return arena_alias_addr(a, chunk);
        return a->base + chunk * a->chunk_size;
}
/* The arena is no longer served (pager_remove): fills retrying give up. */
static inline void arena_set_gone(struct arena *a)
{
        __atomic_store_n(&a->gone, true, __ATOMIC_RELEASE);
}
static inline bool arena_gone(struct arena *a)
{
        return __atomic_load_n(&a->gone, __ATOMIC_ACQUIRE);
}
static inline uint64_t arena_resident_bytes(const struct arena *a)
{
        return a->resident_chunks * a->chunk_size;
}
