/* handlers.c: one function per wire op. Data moves under the read lock when
 * every chunk touched is already exclusive; allocation, copy-on-write and all
 * metadata changes happen under the write lock and are journaled before the reply. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fdio.h"
#include "json-util.h"
#include "log.h"
#include "manager.h"
#include "wire.h"

#define CS(m) ((m)->regions.chunk_size)

/* Walk [off, off+len) of a region chunk by chunk. */
#define FOREACH_PIECE(m, off, len, pos, idx, in, n)                                                 \
        for (uint64_t pos = (off), idx, in, n;                                                     \
             pos < (off) + (len) && (idx = pos / CS(m), in = pos % CS(m),                          \
                                     n = MIN(CS(m) - in, (off) + (len)-pos), 1);                   \
             pos += n)

int entries_add(struct entries *e, uint64_t idx, chunk_id c)
{
        if (e->n == e->cap) {
                size_t cap = e->cap ? e->cap * 2 : 64;
                struct journal_entry *ne = realloc(e->e, cap * sizeof(*ne));
                if (!ne)
                        return -ENOMEM;
                e->e = ne;
                e->cap = cap;
        }
        e->e[e->n++] = (struct journal_entry){ .idx = idx, .chunk = c };
        return 0;
}

void manager_reclaim_locked(struct manager *m)
{
        chunk_pool_reclaim(&m->chunks, pool_punch, &m->pool);
}

static bool range_ok(const struct region *r, uint64_t off, uint64_t len)
{
        return off <= r->size && len <= r->size - off;
}

void region_read_locked(struct manager *m, const struct region *r, uint64_t off, uint8_t *buf,
                        uint64_t len)
{
        FOREACH_PIECE(m, off, len, pos, idx, in, n) {
                chunk_id c = r->map.c[idx];
                if (c == CHUNK_NONE)
                        memset(buf + (pos - off), 0, n);
                else
                        memcpy(buf + (pos - off), pool_chunk(&m->pool, c) + in, n);
        }
}

void region_write_locked(struct manager *m, const struct region *r, uint64_t off,
                         const uint8_t *buf, uint64_t len)
{
        FOREACH_PIECE(m, off, len, pos, idx, in, n)
                memcpy(pool_chunk(&m->pool, r->map.c[idx]) + in, buf + (pos - off), n);
}

static bool range_exclusive(struct manager *m, const struct region *r, uint64_t off, uint64_t len)
{
        FOREACH_PIECE(m, off, len, pos, idx, in, n)
                if (!chunk_map_exclusive(&m->chunks, &r->map, idx))
                        return false;
        return true;
}

int region_prepare_locked(struct manager *m, struct region *r, uint64_t off, uint64_t len,
                          struct entries *e)
{
        FOREACH_PIECE(m, off, len, pos, idx, in, n) {
                chunk_id from;
                int rc = chunk_map_prepare_write(&m->chunks, &r->map, idx, &from);
                if (rc < 0)
                        return rc;
                if (rc == 0)
                        continue;
                /* copy-on-write keeps the old bytes even where the caller will
                 * overwrite them: SHM_MAP writers write only part, and a write
                 * failing later (-ENOSPC) must leave the contents as they were */
                if (from != CHUNK_NONE)
                        memcpy(pool_chunk(&m->pool, r->map.c[idx]), pool_chunk(&m->pool, from),
                               CS(m));
                rc = entries_add(e, idx, r->map.c[idx]);
                if (rc < 0)
                        return rc;
        }
        return 0;
}

static void new_key(uint8_t key[XMEM_KEY_SIZE])
{
        auth_random(key, XMEM_KEY_SIZE);
}

static int do_read(struct manager *m, const struct xmem_wire_hdr *h, const struct xmem_wire_seg *segs,
                   size_t nseg, uint8_t *buf)
{
        struct region *r;
        uint64_t done = 0;
        int rc;

        pthread_rwlock_rdlock(&m->lock);
        rc = region_lookup(&m->regions, h->region, h->key, &r);
        for (size_t i = 0; rc == 0 && i < nseg; i++)
                if (!range_ok(r, segs[i].offset, segs[i].length))
                        rc = -ERANGE;
        for (size_t i = 0; rc == 0 && i < nseg; i++) {
                region_read_locked(m, r, segs[i].offset, buf + done, segs[i].length);
                done += segs[i].length;
        }
        pthread_rwlock_unlock(&m->lock);
        if (rc == 0)
                m->stats.bytes_read += done;
        return rc;
}

/* Writes are all-or-nothing for range and space errors. */
static int do_write(struct manager *m, const struct xmem_wire_hdr *h,
                    const struct xmem_wire_seg *segs, size_t nseg, const uint8_t *data)
{
        struct entries e = {};
        struct region *r;
        bool exclusive = true;
        uint64_t done = 0;
        int rc;

        pthread_rwlock_rdlock(&m->lock);
        rc = region_lookup(&m->regions, h->region, h->key, &r);
        if (rc == 0 && r->snapshot)
                rc = -EROFS;
        for (size_t i = 0; rc == 0 && i < nseg; i++) {
                if (!range_ok(r, segs[i].offset, segs[i].length))
                        rc = -ERANGE;
                else if (exclusive)
                        exclusive = range_exclusive(m, r, segs[i].offset, segs[i].length);
        }
        if (rc == 0 && exclusive) {
                for (size_t i = 0; i < nseg; done += segs[i].length, i++)
                        region_write_locked(m, r, segs[i].offset, data + done, segs[i].length);
                pthread_rwlock_unlock(&m->lock);
                m->stats.bytes_written += done;
                return 0;
        }
        pthread_rwlock_unlock(&m->lock);
        if (rc < 0)
                return rc;

        pthread_rwlock_wrlock(&m->lock);
        /* the region may have changed while unlocked: check again */
        rc = region_lookup(&m->regions, h->region, h->key, &r);
        if (rc == 0 && r->snapshot)
                rc = -EROFS;
        for (size_t i = 0; rc == 0 && i < nseg; i++)
                if (!range_ok(r, segs[i].offset, segs[i].length))
                        rc = -ERANGE;
        for (size_t i = 0; rc == 0 && i < nseg; i++)
                rc = region_prepare_locked(m, r, segs[i].offset, segs[i].length, &e);
        if (rc == 0)
                for (size_t i = 0; i < nseg; done += segs[i].length, i++)
                        region_write_locked(m, r, segs[i].offset, data + done, segs[i].length);
        if (e.n > 0) { /* chunks that changed are recorded even when the write failed */
                int jr = journal_set(m->journal, r->id, e.e, e.n);
                if (rc == 0)
                        rc = jr < 0 ? -EIO : 0;
        }
        manager_reclaim_locked(m);
        pthread_rwlock_unlock(&m->lock);
        free(e.e);
        if (rc == 0)
                m->stats.bytes_written += done;
        return rc;
}

static int op_data(struct conn *c, const struct xmem_wire_hdr *h, const uint8_t *payload,
                   struct xmem_wire_hdr *rep)
{
        struct xmem_wire_seg one = { .offset = h->offset, .length = h->length }, *segs = &one;
        _cleanup_free_ struct xmem_wire_seg *many = NULL;
        struct xmem_error err = {};
        size_t nseg = 1;
        uint8_t *buf;
        int rc;

        if (h->op == XMEM_OP_READV || h->op == XMEM_OP_WRITEV) {
                nseg = h->arg;
                many = malloc(nseg * sizeof(*many));
                if (!many)
                        return -ENOMEM;
                rc = wire_segs_decode(payload, nseg, h->length, many, &err);
                if (rc < 0) {
                        log_warning("%s: malformed %s segments: %s, closing", c->name,
                                    wire_op_name(h->op), xmem_error_str(&err));
                        return rc;
                }
                segs = many;
                payload += nseg * XMEM_WIRE_SEG_SIZE;
        }
        if (h->op == XMEM_OP_WRITE || h->op == XMEM_OP_WRITEV) {
                rep->status = do_write(c->m, h, segs, nseg, payload);
                return conn_reply(c, rep, NULL, 0, -1);
        }
        buf = conn_out(c, h->length);
        rep->status = buf ? do_read(c->m, h, segs, nseg, buf) : -ENOMEM;
        return conn_reply(c, rep, buf, rep->status == 0 ? (uint32_t)h->length : 0, -1);
}

static void hello_fill(struct conn *c, uint8_t out[XMEM_WIRE_HELLO_SIZE])
{
        struct xmem_wire_hello hello = {
                .version = XMEM_WIRE_VERSION,
                .features = XMEM_FEAT_REMOTE_COPY | (c->is_unix ? XMEM_FEAT_SHM : 0) |
                            (c->m->pool.persistent ? XMEM_FEAT_PERSISTENT : 0),
                .chunk_size = c->m->pool.chunk_size,
                .pool_size = c->m->pool.size,
                .max_io = c->m->limits.max_io,
        };
        wire_hello_encode(&hello, out);
}

/* ALLOC, SNAPSHOT, CLONE: a new region with a new key. */
static int op_new_region(struct conn *c, const struct xmem_wire_hdr *h, struct xmem_wire_hdr *rep)
{
        struct manager *m = c->m;
        uint8_t key[XMEM_KEY_SIZE];
        struct region *src, *r;
        int rc = 0;

        new_key(key);
        pthread_rwlock_wrlock(&m->lock);
        rc = access_region_quota(c); /* over it, nothing is made */
        if (rc == 0 && h->op == XMEM_OP_ALLOC) {
                if (region_round(&m->regions, h->arg) > m->pool.size)
                        rc = -ENOSPC;
                else
                        rc = region_create(&m->regions, 0, h->arg, key, false, 0, &r);
                if (rc == 0 && journal_create(m->journal, r) < 0)
                        rc = -EIO;
        } else if (rc == 0) {
                rc = region_lookup(&m->regions, h->region, h->key, &src);
                if (rc == 0)
                        rc = h->op == XMEM_OP_SNAPSHOT ? region_snapshot(&m->regions, src, key, &r)
                                                       : region_clone(&m->regions, src, key, &r);
                if (rc == 0 && (journal_create(m->journal, r) < 0 ||
                                journal_share(m->journal, r->id, src->id) < 0))
                        rc = -EIO;
        }
        if (rc == 0) {
                access_region_made(c, r);
                rep->region = r->id;
                memcpy(rep->key, r->key, XMEM_KEY_SIZE);
                rep->arg = r->size;
        }
        pthread_rwlock_unlock(&m->lock);
        return rc;
}

/* FREE, RESIZE, REVERT */
static int op_change(struct manager *m, const struct xmem_wire_hdr *h, const uint8_t *payload,
                     struct xmem_wire_hdr *rep)
{
        struct region *r, *snap;
        uint64_t size;
        int rc;

        pthread_rwlock_wrlock(&m->lock);
        rc = region_lookup(&m->regions, h->region, h->key, &r);
        if (rc < 0)
                goto out;
        switch (h->op) {
        case XMEM_OP_FREE:
                access_region_gone(m, r);
                region_free(&m->regions, r);
                rc = journal_free(m->journal, h->region);
                break;
        case XMEM_OP_RESIZE:
                if (!r->snapshot && region_round(&m->regions, h->arg) > m->pool.size)
                        rc = -ENOSPC;
                else
                        rc = region_resize(&m->regions, r, h->arg, &size);
                if (rc == 0) {
                        rep->arg = size;
                        rc = journal_resize(m->journal, r->id, size);
                }
                break;
        case XMEM_OP_REVERT:
                rc = region_lookup(&m->regions, h->arg, payload, &snap);
                if (rc == 0)
                        rc = region_revert(&m->regions, r, snap);
                if (rc == 0) {
                        rep->arg = r->size;
                        rc = journal_share(m->journal, r->id, snap->id);
                }
                break;
        }
        manager_reclaim_locked(m);
out:
        pthread_rwlock_unlock(&m->lock);
        return rc;
}

static int add_u64(json_object *o, const char *name, uint64_t v)
{
        json_object *val = json_object_new_uint64(v);
        if (!val || json_object_object_add(o, name, val) < 0) {
                json_object_put(val);
                return -ENOMEM;
        }
        return 0;
}

static int add_bool(json_object *o, const char *name, bool v)
{
        return json_object_object_add(o, name, json_object_new_boolean(v)) < 0 ? -ENOMEM : 0;
}

static int stats_appliance(struct manager *m, json_object *o)
{
        const struct { const char *name; uint64_t v; } f[] = {
                { "pool_size", m->pool.size },
                { "chunk_size", m->pool.chunk_size },
                { "chunks_total", m->chunks.nchunks },
                { "chunks_used", m->chunks.used },
                { "chunks_free", chunk_pool_free_count(&m->chunks) },
                { "regions", m->regions.count - m->regions.nsnapshots },
                { "snapshots", m->regions.nsnapshots },
                { "bytes_read", m->stats.bytes_read },
                { "bytes_written", m->stats.bytes_written },
                { "ops", m->stats.ops },
                { "connections", m->stats.connections },
                { "connections_total", m->stats.connections_total },
                { "refused", m->stats.refused },
                { "buffered_bytes", atomic_load(&m->buffered) },
        };
        for (size_t i = 0; i < ELEMENTSOF(f); i++)
                if (add_u64(o, f[i].name, f[i].v) < 0)
                        return -ENOMEM;
        return add_bool(o, "persistent", m->pool.persistent);
}

static int stats_region(struct manager *m, const struct region *r, json_object *o)
{
        uint64_t mapped, shared;

        chunk_map_count(&m->chunks, &r->map, &mapped, &shared);
        if (add_u64(o, "id", r->id) < 0 || add_u64(o, "size", r->size) < 0 ||
            add_u64(o, "chunks_mapped", mapped) < 0 || add_u64(o, "chunks_shared", shared) < 0 ||
            add_u64(o, "parent", r->parent) < 0 || add_bool(o, "snapshot", r->snapshot) < 0)
                return -ENOMEM;
        return 0;
}

static int op_stats(struct conn *c, const struct xmem_wire_hdr *h, struct xmem_wire_hdr *rep)
{
        _cleanup_json_ json_object *o = json_object_new_object();
        struct manager *m = c->m;
        struct region *r;
        const char *text;
        size_t len;
        int rc;

        if (!o)
                return -ENOMEM;
        pthread_rwlock_rdlock(&m->lock);
        if (h->region == 0)
                rc = stats_appliance(m, o);
        else if ((rc = region_lookup(&m->regions, h->region, h->key, &r)) == 0)
                rc = stats_region(m, r, o);
        pthread_rwlock_unlock(&m->lock);
        if (rc < 0) {
                rep->status = rc;
                return conn_reply(c, rep, NULL, 0, -1);
        }
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        len = strlen(text);
        return conn_reply(c, rep, text, (uint32_t)len, -1);
}

static int op_hello(struct conn *c, const struct xmem_wire_hdr *h, struct xmem_wire_hdr *rep)
{
        uint8_t hello[XMEM_WIRE_HELLO_SIZE];

        hello_fill(c, hello);
        if (h->op == XMEM_OP_HELLO)
                return conn_reply(c, rep, hello, sizeof(hello), -1);
        if (!c->is_unix) {
                rep->status = -EOPNOTSUPP;
                return conn_reply(c, rep, NULL, 0, -1);
        }
        return conn_reply(c, rep, hello, sizeof(hello), c->m->pool.fd);
}

static int op_copy(struct conn *c, const struct xmem_wire_hdr *h, const uint8_t *payload,
                   struct xmem_wire_hdr *rep)
{
        struct xmem_wire_copy dst;
        struct xmem_error err = {};
        int rc;

        rc = wire_copy_decode(payload, h->payload_len, &dst, &err);
        if (rc < 0) {
                log_warning("%s: malformed copy payload: %s, closing", c->name,
                            xmem_error_str(&err));
                return rc;
        }
        rep->status = handle_copy(c, h, &dst, &rep->arg);
        return conn_reply(c, rep, NULL, 0, -1);
}

int handle_request(struct conn *c, const struct xmem_wire_hdr *h, const uint8_t *payload)
{
        struct xmem_wire_hdr rep = *h;

        rep.op = h->op | XMEM_OP_REPLY;
        rep.status = 0;
        rep.payload_len = 0;
        memset(rep.key, 0, sizeof(rep.key));
        c->m->stats.ops++;
        switch (h->op) {
        case XMEM_OP_HELLO:
        case XMEM_OP_SHM_ATTACH:
                return op_hello(c, h, &rep);
        case XMEM_OP_ALLOC:
        case XMEM_OP_SNAPSHOT:
        case XMEM_OP_CLONE:
                rep.arg = 0;
                rep.status = op_new_region(c, h, &rep);
                break;
        case XMEM_OP_FREE:
        case XMEM_OP_RESIZE:
        case XMEM_OP_REVERT:
                rep.status = op_change(c->m, h, payload, &rep);
                break;
        case XMEM_OP_READ:
        case XMEM_OP_WRITE:
        case XMEM_OP_READV:
        case XMEM_OP_WRITEV:
                return op_data(c, h, payload, &rep);
        case XMEM_OP_COPY:
                return op_copy(c, h, payload, &rep);
        case XMEM_OP_STATS:
                return op_stats(c, h, &rep);
        case XMEM_OP_SHM_MAP:
                return op_shm_map(c, h, &rep);
        case XMEM_OP_AUTH:
                return access_auth(c, h, payload, &rep);
        default: /* wire_hdr_decode let it through: a bug, not the client's */
                rep.status = -EOPNOTSUPP;
                break;
        }
        return conn_reply(c, &rep, NULL, 0, -1);
}
