/* chunk.h: the pure chunk bookkeeping of the appliance: a pool of fixed-size
 * chunks with reference counts, and chunk maps (region offset -> chunk) with
 * copy-on-write. No I/O here: the caller moves the bytes and punches holes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint32_t chunk_id;
#define CHUNK_NONE UINT32_MAX /* a hole: never written, reads as zeros */
#define CHUNK_MAX_COUNT (UINT32_MAX - 1)

struct chunk_pool {
        uint32_t nchunks;
        uint32_t *refs;       /* reference count per chunk */
        uint32_t *free_stack; /* reclaimed (punched) chunks, ready for reuse */
        uint32_t nfree;
        uint32_t next_fresh;  /* chunks [next_fresh, nchunks) were never handed out */
        uint32_t *pending;    /* dropped to zero refs, waiting to be punched */
        uint32_t npending;
        uint32_t used;        /* chunks with refs > 0 */
        bool rebuilding;      /* journal replay: references only, no free lists */
};

int chunk_pool_init(struct chunk_pool *p, uint32_t nchunks);
void chunk_pool_done(struct chunk_pool *p);
/* A zeroed chunk with one reference; -ENOSPC when every chunk is in use. */
int chunk_alloc(struct chunk_pool *p, chunk_id *ret);
void chunk_ref(struct chunk_pool *p, chunk_id c);
/* Drop a reference; at zero the chunk waits for chunk_pool_reclaim. */
void chunk_unref(struct chunk_pool *p, chunk_id c);
static inline bool chunk_shared(const struct chunk_pool *p, chunk_id c)
{
        return c != CHUNK_NONE && p->refs[c] > 1;
}
/* Hand every pending chunk to PUNCH (runs of consecutive ids coalesced), then
 * make them allocatable again. Returns how many were reclaimed. */
typedef void (*chunk_punch_fn)(void *userdata, chunk_id first, uint32_t n);
uint32_t chunk_pool_reclaim(struct chunk_pool *p, chunk_punch_fn punch, void *userdata);
/* Journal replay sets REBUILDING, rebuilds references with the map calls,
 * then calls this: every chunk with no reference becomes pending, so the
 * next reclaim punches it, and REBUILDING is cleared. */
void chunk_pool_rebuild_free(struct chunk_pool *p);
uint32_t chunk_pool_free_count(const struct chunk_pool *p);

struct chunk_map {
        uint64_t n;  /* entries (region size / chunk size) */
        chunk_id *c; /* CHUNK_NONE for holes */
};

/* Grow (new entries are holes) or shrink (dropped entries are unref'd). */
int chunk_map_resize(struct chunk_pool *p, struct chunk_map *m, uint64_t n);
/* DST becomes a copy of SRC sharing its chunks (refs taken, DST's old ones dropped). */
int chunk_map_share(struct chunk_pool *p, struct chunk_map *dst, const struct chunk_map *src);
void chunk_map_clear(struct chunk_pool *p, struct chunk_map *m);
/* Point entry IDX at C (a new reference on C; the old entry's is dropped). */
void chunk_map_set(struct chunk_pool *p, struct chunk_map *m, uint64_t idx, chunk_id c);
/* True if entry IDX is backed by a chunk that only this map references. */
static inline bool chunk_map_exclusive(const struct chunk_pool *p, const struct chunk_map *m,
                                       uint64_t idx)
{
        return m->c[idx] != CHUNK_NONE && p->refs[m->c[idx]] == 1;
}
/* Make entry IDX exclusive before a write: allocate a hole, or break
 * copy-on-write of a shared chunk. *RET_COPY_FROM is the chunk whose bytes
 * the caller must copy into the new one (CHUNK_NONE: the new chunk is zero
 * or nothing changed). Returns 1 if the entry changed, 0 if it already was
 * exclusive, -ENOSPC. */
int chunk_map_prepare_write(struct chunk_pool *p, struct chunk_map *m, uint64_t idx,
                            chunk_id *ret_copy_from);
/* Entries that are mapped, and mapped to shared chunks. */
void chunk_map_count(const struct chunk_pool *p, const struct chunk_map *m, uint64_t *ret_mapped,
                     uint64_t *ret_shared);
