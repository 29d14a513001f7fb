/* shm.c: SHM_MAP, resolving a region range to pool extents for clients that
 * mapped the pool fd (SHM_ATTACH), breaking copy-on-write first for writers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager.h"
#include "wire.h"

/* one reply's extents: bounded by --max-io like every other reply */
#define SHM_MAX_EXTENTS(m) ((m)->limits.max_io / XMEM_WIRE_EXTENT_SIZE)

/* Coalesce [off, off+len) of R into extents: runs of pool-contiguous chunks, or of holes. */
static int shm_extents(struct manager *m, const struct region *r, uint64_t off, uint64_t len,
                       struct xmem_wire_extent *ext, size_t *ret_n)
{
        uint64_t cs = m->regions.chunk_size, pos = off, end = off + len;
        size_t n = 0;

        while (pos < end) {
                uint64_t idx = pos / cs, in = pos % cs, piece = MIN(cs - in, end - pos);
                chunk_id c = r->map.c[idx];
                uint64_t pool_off = c == CHUNK_NONE ? XMEM_WIRE_NO_POOL_OFFSET : (uint64_t)c * cs + in;
                struct xmem_wire_extent *last = n ? &ext[n - 1] : NULL;

                if (last && last->region_offset + last->length == pos &&
                    ((c == CHUNK_NONE && last->pool_offset == XMEM_WIRE_NO_POOL_OFFSET) ||
                     (c != CHUNK_NONE && last->pool_offset != XMEM_WIRE_NO_POOL_OFFSET &&
                      last->pool_offset + last->length == pool_off))) {
                        last->length += piece;
                } else {
                        if (n == SHM_MAX_EXTENTS(m))
                                return -E2BIG;
                        ext[n++] = (struct xmem_wire_extent){ pos, pool_off, piece };
                }
                pos += piece;
        }
        *ret_n = n;
        return 0;
}

static int shm_prepare(struct manager *m, const struct xmem_wire_hdr *h, struct region *r)
{
        struct entries e = {};
        int rc, jr = 0;

        if (r->snapshot)
                return -EROFS;
        rc = region_prepare_locked(m, r, h->offset, h->length, &e);
        if (e.n > 0)
                jr = journal_set(m->journal, r->id, e.e, e.n);
        free(e.e);
        manager_reclaim_locked(m);
        return rc < 0 ? rc : jr < 0 ? -EIO : 0;
}

int op_shm_map(struct conn *c, const struct xmem_wire_hdr *h, struct xmem_wire_hdr *rep)
{
        struct manager *m = c->m;
        _cleanup_free_ struct xmem_wire_extent *ext = NULL;
        bool writer = h->arg & XMEM_MAP_WRITE;
        struct region *r;
        size_t n = 0;
        uint8_t *out;
        int rc;

        if (!c->is_unix)
                rc = -EOPNOTSUPP;
        else if (h->arg & ~(uint64_t)XMEM_MAP_WRITE)
                rc = -EINVAL;
        else {
                uint64_t chunks = h->length / m->regions.chunk_size + 2;
                ext = malloc(MIN(chunks, (uint64_t)SHM_MAX_EXTENTS(m)) * sizeof(*ext));
                rc = ext ? 0 : -ENOMEM;
        }
        if (rc == 0) {
                if (writer)
                        pthread_rwlock_wrlock(&m->lock);
                else
                        pthread_rwlock_rdlock(&m->lock);
                rc = region_lookup(&m->regions, h->region, h->key, &r);
                if (rc == 0 && (h->offset > r->size || h->length > r->size - h->offset))
                        rc = -ERANGE;
                if (rc == 0 && writer)
                        rc = shm_prepare(m, h, r);
                if (rc == 0)
                        rc = shm_extents(m, r, h->offset, h->length, ext, &n);
                pthread_rwlock_unlock(&m->lock);
        }
        if (rc < 0) {
                rep->status = rc;
                return conn_reply(c, rep, NULL, 0, -1);
        }
        out = conn_out(c, n * XMEM_WIRE_EXTENT_SIZE);
        if (!out) {
                rep->status = -ENOMEM;
                return conn_reply(c, rep, NULL, 0, -1);
        }
        wire_extents_encode(ext, n, out);
        return conn_reply(c, rep, out, (uint32_t)(n * XMEM_WIRE_EXTENT_SIZE), -1);
}
