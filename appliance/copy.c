/* copy.c: server-side COPY. Within this appliance whole aligned chunks are
 * shared by reference count and the rest is copied; to another appliance the
 * data goes out through lib/transport, never through the requesting client. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager.h"
#include "transport/transport.h"

#define COPY_BATCH 64                 /* pieces per write-lock hold */
#define COPY_REMOTE_PIECE (1u << 20)  /* bytes per remote write */

struct copy_job {
        uint64_t src_id, dst_id;
        const uint8_t *src_key, *dst_key;
        uint64_t src_off, dst_off, len;
        bool backward; /* same region, destination after an overlapping source */
};

/* One piece: at most one chunk on each side. */
static int copy_piece(struct manager *m, struct region *src, struct region *dst, uint64_t s,
                      uint64_t d, uint64_t n, uint8_t *bounce, struct entries *e)
{
        uint64_t cs = m->regions.chunk_size;

        if (s % cs == 0 && d % cs == 0 && n == cs) {
                chunk_id c = src->map.c[s / cs];
                if (dst->map.c[d / cs] == c)
                        return 0;
                chunk_map_set(&m->chunks, &dst->map, d / cs, c);
                return entries_add(e, d / cs, c);
        }
        region_read_locked(m, src, s, bounce, n);
        int r = region_prepare_locked(m, dst, d, n, e);
        if (r < 0)
                return r;
        region_write_locked(m, dst, d, bounce, n);
        return 0;
}

/* Copy up to COPY_BATCH pieces from *DONE on, under the write lock. */
static int copy_batch(struct manager *m, const struct copy_job *j, uint64_t *done, uint8_t *bounce)
{
        uint64_t cs = m->regions.chunk_size;
        struct entries e = {};
        struct region *src, *dst;
        int r, jr = 0;

        pthread_rwlock_wrlock(&m->lock);
        r = region_lookup(&m->regions, j->src_id, j->src_key, &src);
        if (r == 0)
                r = region_lookup(&m->regions, j->dst_id, j->dst_key, &dst);
        if (r == 0 && dst->snapshot)
                r = -EROFS;
        if (r == 0 && (j->src_off > src->size || j->len > src->size - j->src_off ||
                       j->dst_off > dst->size || j->len > dst->size - j->dst_off))
                r = -ERANGE;
        for (int i = 0; r == 0 && i < COPY_BATCH && *done < j->len; i++) {
                uint64_t left = j->len - *done, s, d, n;
                if (!j->backward) {
                        s = j->src_off + *done;
                        d = j->dst_off + *done;
                        n = MIN(left, MIN(cs - s % cs, cs - d % cs));
                } else {
                        uint64_t se = j->src_off + left, de = j->dst_off + left;
                        n = MIN(left, MIN(se % cs ? se % cs : cs, de % cs ? de % cs : cs));
                        s = se - n;
                        d = de - n;
                }
                r = copy_piece(m, src, dst, s, d, n, bounce, &e);
                if (r == 0)
                        *done += n;
        }
        if (e.n > 0)
                jr = journal_set(m->journal, dst->id, e.e, e.n);
        manager_reclaim_locked(m);
        pthread_rwlock_unlock(&m->lock);
        free(e.e);
        return r < 0 ? r : jr < 0 ? -EIO : 0;
}

static int copy_local(struct manager *m, struct copy_job *j, uint64_t *ret_copied)
{
        _cleanup_free_ uint8_t *bounce = malloc(m->regions.chunk_size);
        uint64_t done = 0;
        int r = 0;

        if (!bounce)
                return -ENOMEM;
        j->backward = j->src_id == j->dst_id && j->dst_off > j->src_off &&
                      j->dst_off < j->src_off + j->len;
        while (r == 0 && done < j->len)
                r = copy_batch(m, j, &done, bounce);
        *ret_copied = done;
        return r;
}

static int read_source(struct manager *m, const struct copy_job *j, uint64_t off, uint8_t *buf,
                       uint64_t n)
{
        struct region *src;
        int r;

        pthread_rwlock_rdlock(&m->lock);
        r = region_lookup(&m->regions, j->src_id, j->src_key, &src);
        if (r == 0 && (j->src_off > src->size || j->len > src->size - j->src_off))
                r = -ERANGE;
        if (r == 0)
                region_read_locked(m, src, j->src_off + off, buf, n);
        pthread_rwlock_unlock(&m->lock);
        return r;
}

static int copy_remote(struct manager *m, const struct copy_job *j, const char *uri,
                       uint64_t *ret_copied)
{
        /* the peer is an appliance of this deployment: the same secret over tcp */
        struct xmem_transport_opts opts = { .connections = 1,
                                            .secret = m->secret.len ? &m->secret : NULL };
        struct xmem_region_ref dst = { .id = j->dst_id };
        struct xmem_transport *t = NULL;
        struct xmem_error err = {};
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t done = 0;
        int r;

        r = read_source(m, j, 0, NULL, 0); /* key and range, before connecting */
        if (r < 0)
                return r;
        buf = malloc(MIN(j->len, (uint64_t)COPY_REMOTE_PIECE));
        if (!buf)
                return -ENOMEM;
        r = xmem_transport_open(uri, &opts, &t, &err);
        if (r < 0) {
                log_warning("copy to %s: %s", uri, xmem_error_str(&err));
                return r;
        }
        memcpy(dst.key, j->dst_key, XMEM_KEY_SIZE);
        while (r == 0 && done < j->len) {
                uint64_t n = MIN(j->len - done, (uint64_t)COPY_REMOTE_PIECE);
                r = read_source(m, j, done, buf, n);
                if (r == 0)
                        r = xmem_write(t, &dst, j->dst_off + done, buf, n);
                if (r == 0)
                        done += n;
        }
        xmem_transport_close(t);
        if (r < 0)
                log_info("copy to %s region %llu: %s after %llu bytes", uri,
                         (unsigned long long)j->dst_id, strerror(-r), (unsigned long long)done);
        *ret_copied = done;
        return r;
}

int handle_copy(struct conn *c, const struct xmem_wire_hdr *h, const struct xmem_wire_copy *dst,
                uint64_t *ret_copied)
{
        struct manager *m = c->m;
        struct xmem_error err = {};
        int r;
        struct copy_job j = {
                .src_id = h->region,
                .dst_id = dst->dst_region,
                .src_key = h->key,
                .dst_key = dst->dst_key,
                .src_off = h->offset,
                .dst_off = dst->dst_offset,
                .len = h->length,
        };

        *ret_copied = 0;
        if (dst->dst_uri[0] == 0)
                return copy_local(m, &j, ret_copied);
        /* only to the appliances this one was told about, before dialling anything */
        r = access_peer_check(m, dst->dst_uri, &err);
        if (r < 0) {
                m->stats.refused++;
                log_warning("%s: %s", c->name, xmem_error_str(&err));
                return r;
        }
        return copy_remote(m, &j, dst->dst_uri, ret_copied);
}
