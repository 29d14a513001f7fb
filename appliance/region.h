/* region.h: the region table of the appliance: regions and snapshots, their
 * access keys and chunk maps, and the metadata operations on them (alloc,
 * resize, snapshot, clone, revert, free). Pure bookkeeping, no I/O. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <xmem/wire.h>

#include "chunk.h"

struct region {
        uint64_t id;
        uint8_t key[XMEM_KEY_SIZE];
        uint64_t size;   /* bytes, a multiple of the chunk size */
        bool snapshot;   /* read-only */
        uint64_t parent; /* snapshots: the region they were taken of; else 0 */
        struct chunk_map map;
        void *owner; /* the appliance's client that made it (quota), NULL if unknown */
        struct region *hash_next;
};

struct region_table {
        struct region **buckets;
        uint64_t nbuckets;
        uint64_t count;      /* regions and snapshots */
        uint64_t nsnapshots;
        uint64_t next_id;    /* never reused; starts at 1 */
        uint64_t chunk_size; /* power of two */
        struct chunk_pool *pool;
};

int region_table_init(struct region_table *t, struct chunk_pool *pool, uint64_t chunk_size);
/* Frees every region (dropping their chunk references). */
void region_table_done(struct region_table *t);
struct region *region_find(const struct region_table *t, uint64_t id);
/* Find ID and check KEY (constant time): -ENOENT, -EACCES. */
int region_lookup(const struct region_table *t, uint64_t id, const uint8_t key[XMEM_KEY_SIZE],
                  struct region **ret);
/* Iterate: pass NULL first. Order is arbitrary. */
struct region *region_next(const struct region_table *t, struct region *prev);

static inline uint64_t region_round(const struct region_table *t, uint64_t size)
{
        return (size + t->chunk_size - 1) & ~(t->chunk_size - 1);
}

/* Create a region of SIZE (rounded up to chunks) with KEY. ID 0 takes the
 * next id; journal replay passes the recorded id (next_id moves past it). */
int region_create(struct region_table *t, uint64_t id, uint64_t size,
                  const uint8_t key[XMEM_KEY_SIZE], bool snapshot, uint64_t parent,
                  struct region **ret);
/* New snapshot (read-only, parent = SRC) or clone (writable) of SRC, sharing its chunks. */
int region_snapshot(struct region_table *t, struct region *src, const uint8_t key[XMEM_KEY_SIZE],
                    struct region **ret);
int region_clone(struct region_table *t, struct region *src, const uint8_t key[XMEM_KEY_SIZE],
                 struct region **ret);
/* R takes SNAP's size and chunks: -EROFS if R is a snapshot, -EINVAL unless
 * SNAP is a snapshot taken of R. */
int region_revert(struct region_table *t, struct region *r, const struct region *snap);
/* New size (rounded up); -EROFS for snapshots. *RET_SIZE = rounded size. */
int region_resize(struct region_table *t, struct region *r, uint64_t size, uint64_t *ret_size);
void region_free(struct region_table *t, struct region *r);
