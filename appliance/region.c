/* region.c: the region table (hash by id) and region metadata operations.
 * Pure bookkeeping on top of chunk.c, unit-tested in tests/unit/test_chunk.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "region.h"

int region_table_init(struct region_table *t, struct chunk_pool *pool, uint64_t chunk_size)
{
        if (chunk_size == 0 || (chunk_size & (chunk_size - 1)))
                return -EINVAL;
        memset(t, 0, sizeof(*t));
        t->nbuckets = 256;
        t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
        if (!t->buckets)
                return -ENOMEM;
        t->next_id = 1;
        t->chunk_size = chunk_size;
        t->pool = pool;
        return 0;
}

static void region_destroy(struct region_table *t, struct region *r)
{
        chunk_map_clear(t->pool, &r->map);
        free(r);
}

void region_table_done(struct region_table *t)
{
        for (uint64_t b = 0; t->buckets && b < t->nbuckets; b++) {
                struct region *r = t->buckets[b];
                while (r) {
                        struct region *next = r->hash_next;
                        region_destroy(t, r);
                        r = next;
                }
        }
        free(t->buckets);
        memset(t, 0, sizeof(*t));
}

static uint64_t bucket_of(const struct region_table *t, uint64_t id)
{
        return (id * 0x9e3779b97f4a7c15ULL) >> 32 & (t->nbuckets - 1);
}

struct region *region_find(const struct region_table *t, uint64_t id)
{
        for (struct region *r = t->buckets[bucket_of(t, id)]; r; r = r->hash_next)
                if (r->id == id)
                        return r;
        return NULL;
}

int region_lookup(const struct region_table *t, uint64_t id, const uint8_t key[XMEM_KEY_SIZE],
                  struct region **ret)
{
        struct region *r = id ? region_find(t, id) : NULL;
        uint8_t diff = 0;

        if (!r)
                return -ENOENT;
        for (int i = 0; i < XMEM_KEY_SIZE; i++)
                diff |= r->key[i] ^ key[i];
        if (diff)
                return -EACCES;
        *ret = r;
        return 0;
}

struct region *region_next(const struct region_table *t, struct region *prev)
{
        uint64_t b = 0;

        if (prev) {
                if (prev->hash_next)
                        return prev->hash_next;
                b = bucket_of(t, prev->id) + 1;
        }
        for (; b < t->nbuckets; b++)
                if (t->buckets[b])
                        return t->buckets[b];
        return NULL;
}

static void table_grow(struct region_table *t)
{
        uint64_t n = t->nbuckets * 2;
        struct region **nb = calloc(n, sizeof(*nb));
        struct region_table tmp = *t;

        if (!nb)
                return; /* longer chains, still correct */
        tmp.buckets = nb;
        tmp.nbuckets = n;
        for (uint64_t b = 0; b < t->nbuckets; b++) {
                struct region *r = t->buckets[b];
                while (r) {
                        struct region *next = r->hash_next;
                        uint64_t nbk = bucket_of(&tmp, r->id);
                        r->hash_next = nb[nbk];
                        nb[nbk] = r;
                        r = next;
                }
        }
        free(t->buckets);
        t->buckets = nb;
        t->nbuckets = n;
}

static void table_insert(struct region_table *t, struct region *r)
{
        uint64_t b;

        if (t->count >= t->nbuckets * 2)
                table_grow(t);
        b = bucket_of(t, r->id);
        r->hash_next = t->buckets[b];
        t->buckets[b] = r;
        t->count++;
        if (r->snapshot)
                t->nsnapshots++;
}

int region_create(struct region_table *t, uint64_t id, uint64_t size,
                  const uint8_t key[XMEM_KEY_SIZE], bool snapshot, uint64_t parent,
                  struct region **ret)
{
        struct region *r;
        uint64_t rounded = region_round(t, size);
        int rc;

        if (size > XMEM_WIRE_MAX_REGION_SIZE)
                return -EINVAL;
        if (id == 0)
                id = t->next_id;
        else if (region_find(t, id))
                return -EEXIST;
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->id = id;
        memcpy(r->key, key, XMEM_KEY_SIZE);
        r->snapshot = snapshot;
        r->parent = parent;
        rc = chunk_map_resize(t->pool, &r->map, rounded / t->chunk_size);
        if (rc < 0) {
                free(r);
                return rc;
        }
        r->size = rounded;
        if (id >= t->next_id)
                t->next_id = id + 1;
        table_insert(t, r);
        *ret = r;
        return 0;
}

static int region_copy_of(struct region_table *t, struct region *src,
                          const uint8_t key[XMEM_KEY_SIZE], bool snapshot, struct region **ret)
{
        struct region *r;
        int rc;

        rc = region_create(t, 0, 0, key, snapshot, snapshot ? src->id : 0, &r);
        if (rc < 0)
                return rc;
        rc = chunk_map_share(t->pool, &r->map, &src->map);
        if (rc < 0) {
                region_free(t, r);
                return rc;
        }
        r->size = src->size;
        *ret = r;
        return 0;
}

int region_snapshot(struct region_table *t, struct region *src, const uint8_t key[XMEM_KEY_SIZE],
                    struct region **ret)
{
        return region_copy_of(t, src, key, true, ret);
}

int region_clone(struct region_table *t, struct region *src, const uint8_t key[XMEM_KEY_SIZE],
                 struct region **ret)
{
        return region_copy_of(t, src, key, false, ret);
}

int region_revert(struct region_table *t, struct region *r, const struct region *snap)
{
        int rc;

        if (r->snapshot)
                return -EROFS;
        if (!snap->snapshot || snap->parent != r->id)
                return -EINVAL;
        rc = chunk_map_share(t->pool, &r->map, &snap->map);
        if (rc < 0)
                return rc;
        r->size = snap->size;
        return 0;
}

int region_resize(struct region_table *t, struct region *r, uint64_t size, uint64_t *ret_size)
{
        uint64_t rounded = region_round(t, size);
        int rc;

        if (r->snapshot)
                return -EROFS;
        if (size > XMEM_WIRE_MAX_REGION_SIZE)
                return -EINVAL;
        rc = chunk_map_resize(t->pool, &r->map, rounded / t->chunk_size);
        if (rc < 0)
                return rc;
        r->size = rounded;
        *ret_size = rounded;
        return 0;
}

void region_free(struct region_table *t, struct region *r)
{
        struct region **pp = &t->buckets[bucket_of(t, r->id)];

        while (*pp && *pp != r)
                pp = &(*pp)->hash_next;
        if (*pp) {
                *pp = r->hash_next;
                t->count--;
                if (r->snapshot)
                        t->nsnapshots--;
        }
        region_destroy(t, r);
}
