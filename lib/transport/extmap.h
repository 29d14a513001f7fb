/* extmap.h: the shm transport's cache of one region's extents (region range ->
 * pool offset or hole, writable or not): a sorted array of disjoint ranges
 * where a newer mapping replaces whatever it overlaps. Pure logic, unit tested. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct extmap_ext {
        uint64_t off;  /* region offset */
        uint64_t len;
        uint64_t pool; /* pool offset, or UINT64_MAX (XMEM_WIRE_NO_POOL_OFFSET) for a hole */
        bool writable; /* mapped with XMEM_MAP_WRITE: exclusive to the region */
};

struct extmap {
        struct extmap_ext *v;
        size_t n, cap;
};

void extmap_clear(struct extmap *m);
/* Insert E, trimming or splitting what it overlaps; neighbours that continue
 * each other (same writability, contiguous in the pool) are merged. */
int extmap_insert(struct extmap *m, const struct extmap_ext *e);
/* Insert E except where a writable extent is cached: a read-only answer never
 * takes writability away (only this transport's own snapshot/clone/... can, and
 * those clear the map), so concurrent read windows cannot undo a write mapping. */
int extmap_insert_keep_writable(struct extmap *m, const struct extmap_ext *e);
/* The extent containing OFF, or NULL. */
const struct extmap_ext *extmap_find(const struct extmap *m, uint64_t off);
