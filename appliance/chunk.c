/* chunk.c: chunk reference counts, allocation and copy-on-write chunk maps.
 * Pure bookkeeping (no I/O), unit-tested in tests/unit/test_chunk.c. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"

int chunk_pool_init(struct chunk_pool *p, uint32_t nchunks)
{
        if (nchunks == 0 || nchunks > CHUNK_MAX_COUNT)
                return -EINVAL;
        memset(p, 0, sizeof(*p));
        p->nchunks = nchunks;
        p->refs = calloc(nchunks, sizeof(uint32_t));
        p->free_stack = malloc((size_t)nchunks * sizeof(uint32_t));
        p->pending = malloc((size_t)nchunks * sizeof(uint32_t));
        if (!p->refs || !p->free_stack || !p->pending) {
                chunk_pool_done(p);
                return -ENOMEM;
        }
        return 0;
}

void chunk_pool_done(struct chunk_pool *p)
{
        free(p->refs);
        free(p->free_stack);
        free(p->pending);
        memset(p, 0, sizeof(*p));
}

int chunk_alloc(struct chunk_pool *p, chunk_id *ret)
{
        chunk_id c;

        if (p->nfree > 0)
                c = p->free_stack[--p->nfree];
        else if (p->next_fresh < p->nchunks)
                c = p->next_fresh++;
        else
                return -ENOSPC;
        assert(p->refs[c] == 0 && !p->rebuilding);
        p->refs[c] = 1;
        p->used++;
        *ret = c;
        return 0;
}

void chunk_ref(struct chunk_pool *p, chunk_id c)
{
        assert(c < p->nchunks);
        if (p->refs[c]++ == 0)
                p->used++;
}

void chunk_unref(struct chunk_pool *p, chunk_id c)
{
        assert(c < p->nchunks && p->refs[c] > 0);
        if (--p->refs[c] == 0) {
                p->used--;
                if (!p->rebuilding)
                        p->pending[p->npending++] = c;
        }
}

uint32_t chunk_pool_reclaim(struct chunk_pool *p, chunk_punch_fn punch, void *userdata)
{
        uint32_t n = p->npending, i = 0;

        while (i < n) {
                uint32_t run = 1;
                while (i + run < n && p->pending[i + run] == p->pending[i] + run)
                        run++;
                if (punch)
                        punch(userdata, p->pending[i], run);
                i += run;
        }
        for (i = 0; i < n; i++)
                p->free_stack[p->nfree++] = p->pending[i];
        p->npending = 0;
        return n;
}

void chunk_pool_rebuild_free(struct chunk_pool *p)
{
        p->rebuilding = false;
        p->nfree = 0;
        p->npending = 0;
        p->next_fresh = p->nchunks;
        for (uint32_t c = 0; c < p->nchunks; c++)
                if (p->refs[c] == 0)
                        p->pending[p->npending++] = c;
}

uint32_t chunk_pool_free_count(const struct chunk_pool *p)
{
        return p->nchunks - p->used;
}

int chunk_map_resize(struct chunk_pool *p, struct chunk_map *m, uint64_t n)
{
        chunk_id *c;

        if (n == m->n)
                return 0;
        for (uint64_t i = n; i < m->n; i++)
                if (m->c[i] != CHUNK_NONE)
                        chunk_unref(p, m->c[i]);
        if (n == 0) {
                free(m->c);
                m->c = NULL;
                m->n = 0;
                return 0;
        }
        if (n > SIZE_MAX / sizeof(chunk_id))
                return -ENOMEM;
        c = realloc(m->c, (size_t)n * sizeof(chunk_id));
        if (!c) {
                if (n < m->n) { /* shrinking in place cannot fail for real */
                        m->n = n;
                        return 0;
                }
                return -ENOMEM;
        }
        for (uint64_t i = m->n; i < n; i++)
                c[i] = CHUNK_NONE;
        m->c = c;
        m->n = n;
        return 0;
}

int chunk_map_share(struct chunk_pool *p, struct chunk_map *dst, const struct chunk_map *src)
{
        chunk_id *c = NULL;

        if (dst == src)
                return 0;
        if (src->n > 0) {
                c = malloc((size_t)src->n * sizeof(chunk_id));
                if (!c)
                        return -ENOMEM;
                memcpy(c, src->c, (size_t)src->n * sizeof(chunk_id));
                for (uint64_t i = 0; i < src->n; i++)
                        if (c[i] != CHUNK_NONE)
                                chunk_ref(p, c[i]);
        }
        chunk_map_clear(p, dst);
        dst->c = c;
        dst->n = src->n;
        return 0;
}

void chunk_map_clear(struct chunk_pool *p, struct chunk_map *m)
{
        (void)chunk_map_resize(p, m, 0);
}

void chunk_map_set(struct chunk_pool *p, struct chunk_map *m, uint64_t idx, chunk_id c)
{
        chunk_id old;

        assert(idx < m->n);
        old = m->c[idx];
        if (c != CHUNK_NONE)
                chunk_ref(p, c);
        m->c[idx] = c;
        if (old != CHUNK_NONE)
                chunk_unref(p, old);
}

int chunk_map_prepare_write(struct chunk_pool *p, struct chunk_map *m, uint64_t idx,
                            chunk_id *ret_copy_from)
{
        chunk_id old, fresh;
        int r;

        assert(idx < m->n);
        old = m->c[idx];
        if (old != CHUNK_NONE && p->refs[old] == 1) {
                *ret_copy_from = CHUNK_NONE;
                return 0;
        }
        r = chunk_alloc(p, &fresh);
        if (r < 0)
                return r;
        m->c[idx] = fresh;
        if (old != CHUNK_NONE)
                chunk_unref(p, old); /* it was shared: still alive for the copy */
        *ret_copy_from = old;
        return 1;
}

void chunk_map_count(const struct chunk_pool *p, const struct chunk_map *m, uint64_t *ret_mapped,
                     uint64_t *ret_shared)
{
        uint64_t mapped = 0, shared = 0;

        for (uint64_t i = 0; i < m->n; i++) {
                if (m->c[i] == CHUNK_NONE)
                        continue;
                mapped++;
                if (p->refs[m->c[i]] > 1)
                        shared++;
        }
        *ret_mapped = mapped;
        *ret_shared = shared;
}
