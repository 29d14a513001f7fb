/* shm.c: the shm:// transport: the appliance's pool memfd (received over its
 * unix socket with SHM_ATTACH) is mapped here and data moves by memcpy; the
 * appliance only resolves region ranges to pool extents (SHM_MAP), cached per
 * region until this transport changes that region's mapping. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "extmap.h"
#include "fdio.h"
#include "transport-internal.h"
#include "uri.h"
#include "wire.h"

#define SHM_BUCKETS 64
#define SHM_READ_WINDOW (1u << 20) /* a read miss maps at least this much ahead */
#define SHM_MAX_EXTENTS (XMEM_WIRE_MAX_PAYLOAD / XMEM_WIRE_EXTENT_SIZE)

struct shm_region {
        uint64_t id;
        uint8_t key[XMEM_KEY_SIZE];
        struct extmap map;
        struct shm_region *next;
};

struct shm_transport {
        struct xmem_transport base;
        struct xmem_uri uri;
        unsigned timeout_ms;
        /* ctl_lock: the control socket, one request at a time. Recursive, and
         * taken before `lock`: an SHM_MAP answer is put into the cache before
         * the next request goes out, so the cache learns mappings in the order
         * the appliance made them, and an invalidating operation holds both. */
        pthread_mutex_t ctl_lock;
        int ctl_fd;
        uint32_t tag;
        dev_t pool_dev;
        ino_t pool_ino;
        bool stale; /* reconnected to a different pool: data ops refused */
        /* lock: cache (w) and data copies (r). Held shared during memcpy so that
         * a snapshot/clone/revert from this transport waits for copies in flight. */
        pthread_rwlock_t lock;
        uint8_t *pool;
        uint64_t pool_size;
        uint64_t invalidations; /* under lock (w): a miss after one is no protocol error */
        struct shm_region *buckets[SHM_BUCKETS];
};

static int ctl_connect(struct shm_transport *t, int *ret_fd)
{
        struct timeval tv = { .tv_sec = t->timeout_ms / 1000,
                              .tv_usec = (t->timeout_ms % 1000) * 1000 };
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->uri.path);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Read a reply header, with the descriptor that may come with its first byte. */
static int ctl_recv_hdr(int fd, uint8_t raw[XMEM_WIRE_HDR_SIZE], int *ret_fd)
{
        size_t nfds = 1, got;
        int pfd = -1;
        ssize_t n;

        n = recv_with_fds(fd, raw, XMEM_WIRE_HDR_SIZE, &pfd, &nfds);
        if (n < 0)
                return n == -EAGAIN ? -ETIMEDOUT : (int)n;
        if (n == 0)
                return -ECONNRESET;
        got = (size_t)n;
        if (nfds == 1) {
                if (!ret_fd) {
                        close(pfd);
                        return -EPROTO;
                }
                *ret_fd = pfd;
        }
        if (got < XMEM_WIRE_HDR_SIZE) {
                int r = read_full(fd, raw + got, XMEM_WIRE_HDR_SIZE - got);
                if (r < 0)
                        return r == -EAGAIN ? -ETIMEDOUT : r;
        }
        return 0;
}

/* One request/reply on the control socket, ctl_lock held. An error reply is
 * returned in *RET_REPLY with 0; transport failures close the socket. */
static int ctl_call_locked(struct shm_transport *t, const struct xmem_wire_hdr *req,
                           const void *payload, struct xmem_wire_hdr *ret_reply,
                           void **ret_payload, int *ret_fd)
{
        uint8_t raw[XMEM_WIRE_HDR_SIZE];
        struct xmem_wire_hdr h = *req, reply;
        struct iovec iov[2] = { { raw, sizeof(raw) }, { (void *)payload, req->payload_len } };
        _cleanup_free_ void *p = NULL;
        _cleanup_close_ int pfd = -1;
        int r;

        if (t->ctl_fd < 0)
                return -ENOTCONN;
        h.tag = ++t->tag;
        wire_hdr_encode(&h, raw);
        r = writev_full(t->ctl_fd, iov, req->payload_len ? 2 : 1);
        if (r < 0)
                goto broken;
        r = ctl_recv_hdr(t->ctl_fd, raw, &pfd);
        if (r < 0)
                goto broken;
        r = -EPROTO;
        if (wire_hdr_decode(raw, true, &reply, NULL) < 0 || reply.tag != h.tag ||
            reply.op != (h.op | XMEM_OP_REPLY) || (pfd >= 0 && !ret_fd))
                goto broken;
        if (reply.payload_len) {
                p = malloc(reply.payload_len);
                if (!p) {
                        r = -ENOMEM;
                        goto broken;
                }
                r = read_full(t->ctl_fd, p, reply.payload_len);
                if (r < 0)
                        goto broken;
        }
        *ret_reply = reply;
        if (ret_payload)
                *ret_payload = TAKE_PTR(p);
        if (ret_fd)
                *ret_fd = TAKE_FD(pfd);
        return 0;
broken:
        t->ctl_fd = safe_close(t->ctl_fd);
        return r == -EAGAIN ? -ETIMEDOUT : r;
}

/* SHM_ATTACH on a fresh socket: hello and the pool fd. */
static int ctl_attach(struct shm_transport *t, struct xmem_wire_hello *ret_hello, int *ret_pool_fd,
                      struct xmem_error *err)
{
        struct xmem_wire_hdr req, reply;
        _cleanup_free_ void *p = NULL;
        _cleanup_close_ int pfd = -1;
        int r, fd = -1;

        r = ctl_connect(t, &fd);
        if (r < 0)
                return xmem_error_set(err, r, "%s: connect: %s", t->base.uri, strerror(-r));
        t->ctl_fd = fd;
        transport_req_init(&req, XMEM_OP_SHM_ATTACH, NULL);
        r = ctl_call_locked(t, &req, NULL, &reply, &p, &pfd);
        if (r < 0)
                return xmem_error_set(err, r, "%s: shm attach: %s", t->base.uri, strerror(-r));
        if (reply.status < 0)
                return xmem_error_set(err, reply.status, "%s: shm attach refused: %s",
                                      t->base.uri, strerror(-reply.status));
        if (pfd < 0)
                return xmem_error_set(err, -EPROTO, "%s: shm attach: no pool fd", t->base.uri);
        r = wire_hello_decode(p, reply.payload_len, ret_hello, err);
        if (r < 0)
                return xmem_error_prefix(err, "%s: shm attach", t->base.uri);
        *ret_pool_fd = TAKE_FD(pfd);
        return 0;
}

/* ctl_lock held: reconnect after a broken control socket. A restarted
 * appliance has a new pool; then this transport's mapping is stale for good. */
static int ctl_ensure(struct shm_transport *t)
{
        struct xmem_wire_hello hello;
        struct stat st;
        int pfd, r;

        if (t->ctl_fd >= 0)
                return 0;
        r = ctl_attach(t, &hello, &pfd, NULL);
        if (r < 0)
                return r;
        if (fstat(pfd, &st) < 0 || st.st_dev != t->pool_dev || st.st_ino != t->pool_ino)
                t->stale = true;
        close(pfd);
        return t->stale ? -ESTALE : 0;
}

static int shm_call(struct xmem_transport *base, const struct xmem_wire_hdr *req,
                    const void *payload, struct xmem_wire_hdr *ret_reply, void **ret_payload)
{
        struct shm_transport *t = (struct shm_transport *)base;
        void *p = NULL;
        int r;

        if (req->op == XMEM_OP_SHM_ATTACH || (req->payload_len && !payload))
                return -EINVAL;
        pthread_mutex_lock(&t->ctl_lock);
        r = ctl_ensure(t);
        if (r == 0)
                r = ctl_call_locked(t, req, payload, ret_reply, &p, NULL);
        pthread_mutex_unlock(&t->ctl_lock);
        if (r < 0)
                return r;
        if (ret_payload)
                *ret_payload = p;
        else
                free(p);
        return 0;
}

static struct shm_region **region_slot(struct shm_transport *t, uint64_t id)
{
        struct shm_region **s = &t->buckets[id % SHM_BUCKETS];

        while (*s && (*s)->id != id)
                s = &(*s)->next;
        return s;
}

static void region_drop(struct shm_transport *t, uint64_t id)
{
        struct shm_region **s = region_slot(t, id), *g = *s;

        if (!g)
                return;
        *s = g->next;
        extmap_clear(&g->map);
        free(g);
}

static void shm_invalidate(struct xmem_transport *base, const uint64_t *regions, size_t n,
                           bool begin)
{
        struct shm_transport *t = (struct shm_transport *)base;

        if (begin) {
                pthread_mutex_lock(&t->ctl_lock);
                pthread_rwlock_wrlock(&t->lock);
        }
        for (size_t i = 0; i < n; i++)
                region_drop(t, regions[i]);
        t->invalidations++;
        if (!begin) {
                pthread_rwlock_unlock(&t->lock);
                pthread_mutex_unlock(&t->ctl_lock);
        }
}

static int shm_map_locked(struct shm_transport *t, const struct xmem_region_ref *r, uint64_t off,
                          uint64_t len, bool write);

/* Ask the appliance for R's extents over [OFF, OFF+LEN) and cache them. */
static int shm_map(struct shm_transport *t, const struct xmem_region_ref *r, uint64_t off,
                   uint64_t len, bool write)
{
        int k;

        pthread_mutex_lock(&t->ctl_lock);
        k = shm_map_locked(t, r, off, len, write);
        pthread_mutex_unlock(&t->ctl_lock);
        return k;
}

static int shm_map_locked(struct shm_transport *t, const struct xmem_region_ref *r, uint64_t off,
                   uint64_t len, bool write)
{
        struct xmem_wire_hdr req, reply;
        _cleanup_free_ struct xmem_wire_extent *ext = NULL;
        _cleanup_free_ void *p = NULL;
        struct shm_region **s, *g;
        size_t n;
        int k;

        transport_req_init(&req, XMEM_OP_SHM_MAP, r);
        req.offset = off;
        req.length = len;
        req.arg = write ? XMEM_MAP_WRITE : 0;
        k = shm_call(&t->base, &req, NULL, &reply, &p);
        if (k < 0)
                return k;
        if (reply.status < 0)
                return reply.status;
        ext = malloc(MAX(reply.payload_len, 1u));
        if (!ext)
                return -ENOMEM;
        if (wire_extents_decode(p, reply.payload_len, ext, reply.payload_len / XMEM_WIRE_EXTENT_SIZE,
                                &n, NULL) < 0 || n == 0)
                return -EPROTO;
        for (size_t i = 0; i < n; i++)
                if (ext[i].pool_offset != XMEM_WIRE_NO_POOL_OFFSET &&
                    (ext[i].pool_offset > t->pool_size ||
                     ext[i].length > t->pool_size - ext[i].pool_offset))
                        return -EPROTO;
        pthread_rwlock_wrlock(&t->lock);
        s = region_slot(t, r->id);
        if (*s && memcmp((*s)->key, r->key, XMEM_KEY_SIZE) != 0)
                region_drop(t, r->id);
        s = region_slot(t, r->id);
        if (!*s) {
                *s = calloc(1, sizeof(**s));
                if (*s) {
                        (*s)->id = r->id;
                        memcpy((*s)->key, r->key, XMEM_KEY_SIZE);
                }
        }
        g = *s;
        for (size_t i = 0; g && i < n; i++) {
                struct extmap_ext e = { ext[i].region_offset, ext[i].length, ext[i].pool_offset,
                                        write && ext[i].pool_offset != XMEM_WIRE_NO_POOL_OFFSET };
                if ((write ? extmap_insert(&g->map, &e)
                           : extmap_insert_keep_writable(&g->map, &e)) < 0)
                        g = NULL;
        }
        pthread_rwlock_unlock(&t->lock);
        return g ? 0 : -ENOMEM;
}

/* Hand as much of [OFF, OFF+LEN) as the cache covers to FN, piece by piece
 * (the pool address, or NULL where the region holds no data: zeros), read lock
 * held. Returns the bytes done before the first miss, or FN's error. */
static int64_t each_cached(struct shm_transport *t, const struct xmem_region_ref *r, uint64_t off,
                           uint64_t at, uint64_t len, bool write, xmem_direct_fn fn, void *ctx)
{
        struct shm_region *g = *region_slot(t, r->id);
        uint64_t done = 0;

        if (!g || memcmp(g->key, r->key, XMEM_KEY_SIZE) != 0)
                return 0;
        while (done < len) {
                const struct extmap_ext *e = extmap_find(&g->map, off + done);
                uint64_t in, piece;
                int k;

                if (!e || (write && !e->writable))
                        break;
                in = off + done - e->off;
                piece = MIN(e->len - in, len - done);
                k = fn(ctx, at + done,
                       e->pool == XMEM_WIRE_NO_POOL_OFFSET ? NULL : t->pool + e->pool + in, piece);
                if (k < 0)
                        return k;
                done += piece;
        }
        return (int64_t)done;
}

/* Run FN over [OFF, OFF+LEN) of R in the pool, asking the appliance for the
 * extents the cache lacks (whole chunks; a read maps a window ahead). */
static int shm_each(struct shm_transport *t, const struct xmem_region_ref *r, uint64_t off,
                    uint64_t len, bool write, xmem_direct_fn fn, void *ctx)
{
        uint64_t chunk = t->base.hello.chunk_size, done = 0, last_miss = UINT64_MAX, gen = 0;

        if (t->stale)
                return -ESTALE;
        while (done < len) {
                uint64_t start, end;
                int64_t got;
                int k;

                pthread_rwlock_rdlock(&t->lock);
                got = each_cached(t, r, off + done, done, len - done, write, fn, ctx);
                if (got < 0) {
                        pthread_rwlock_unlock(&t->lock);
                        return (int)got;
                }
                done += (uint64_t)got;
                if (last_miss == off + done && gen == t->invalidations) {
                        pthread_rwlock_unlock(&t->lock);
                        return -EPROTO; /* the appliance's extents did not cover the range */
                }
                gen = t->invalidations;
                pthread_rwlock_unlock(&t->lock);
                if (done == len)
                        break;
                last_miss = off + done;
                start = (off + done) / chunk * chunk;
                end = ALIGN_UP(off + len, chunk);
                if (!write && end - start < SHM_READ_WINDOW) {
                        k = shm_map(t, r, start, ALIGN_UP(start + SHM_READ_WINDOW, chunk) - start,
                                    false);
                        if (k != -ERANGE)
                                goto mapped;
                }
                /* whole chunks: the appliance keeps a chunk's old bytes when it
                 * breaks copy-on-write for SHM_MAP, so later small writes into
                 * the same chunks hit the cache */
                k = shm_map(t, r, start, end - start, write);
mapped:
                if (k < 0)
                        return k;
        }
        return 0;
}

struct copy_ctx {
        uint8_t *buf;
        bool write;
};

static int copy_piece(void *ctx, uint64_t at, void *pool, uint64_t len)
{
        struct copy_ctx *c = ctx;

        if (c->write)
                memcpy(pool, c->buf + at, len);
        else if (!pool)
                memset(c->buf + at, 0, len);
        else
                memcpy(c->buf + at, pool, len);
        return 0;
}

static int shm_rw(struct shm_transport *t, const struct xmem_region_ref *r, uint64_t off,
                  uint8_t *buf, uint64_t len, bool write)
{
        struct copy_ctx c = { buf, write };

        return shm_each(t, r, off, len, write, copy_piece, &c);
}

static int shm_direct(struct xmem_transport *base, const struct xmem_region_ref *r, uint64_t off,
                      uint64_t len, bool write, xmem_direct_fn fn, void *ctx)
{
        return shm_each((struct shm_transport *)base, r, off, len, write, fn, ctx);
}

static void shm_submit_cq(struct xmem_transport *base, struct xmem_io *const *ios, size_t n,
                          struct xmem_cq *cq)
{
        struct shm_transport *t = (struct shm_transport *)base;

        transport_cq_add_inflight(base, cq, n);
        for (size_t i = 0; i < n; i++) {
                struct xmem_io *io = ios[i];
                int r = shm_rw(t, &io->region, io->offset, io->buf, io->len,
                               io->op == XMEM_OP_WRITE);
                transport_io_done(base, cq, io, r);
        }
}

static int shm_vec(struct xmem_transport *base, const struct xmem_region_ref *r,
                   const struct xmem_wire_seg *segs, size_t nseg, uint8_t *buf, bool write)
{
        struct shm_transport *t = (struct shm_transport *)base;

        for (size_t i = 0; i < nseg; i++) {
                int k = shm_rw(t, r, segs[i].offset, buf, segs[i].length, write);
                if (k < 0)
                        return k;
                buf += segs[i].length;
        }
        return 0;
}

static int shm_readv(struct xmem_transport *t, const struct xmem_region_ref *r,
                     const struct xmem_wire_seg *segs, size_t nseg, void *buf)
{
        return shm_vec(t, r, segs, nseg, buf, false);
}

static int shm_writev(struct xmem_transport *t, const struct xmem_region_ref *r,
                      const struct xmem_wire_seg *segs, size_t nseg, const void *buf)
{
        return shm_vec(t, r, segs, nseg, (uint8_t *)buf, true);
}

/* ops->conns_up: the control socket (closed when it broke, opened again by
 * the next call); read without ctl_lock, which a slow call may hold. */
static unsigned shm_conns_up(struct xmem_transport *base, unsigned *ret_total)
{
        struct shm_transport *t = (struct shm_transport *)base;

        *ret_total = 1;
        return __atomic_load_n(&t->ctl_fd, __ATOMIC_RELAXED) >= 0 &&
               !__atomic_load_n(&t->stale, __ATOMIC_RELAXED);
}

static void shm_close(struct xmem_transport *base)
{
        struct shm_transport *t = (struct shm_transport *)base;

        for (uint64_t i = 0; i < SHM_BUCKETS; i++)
                while (t->buckets[i])
                        region_drop(t, t->buckets[i]->id);
        if (t->pool && t->pool != MAP_FAILED)
                munmap(t->pool, t->pool_size);
        safe_close(t->ctl_fd);
        pthread_rwlock_destroy(&t->lock);
        pthread_mutex_destroy(&t->ctl_lock);
        transport_base_fini(base);
        free(t);
}

static int shm_open_pool(struct shm_transport *t, struct xmem_error *err)
{
        _cleanup_close_ int pfd = -1;
        struct stat st;
        int r;

        r = ctl_attach(t, &t->base.hello, &pfd, err);
        if (r < 0)
                return r;
        if (fstat(pfd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "%s: pool fd: %m", t->base.uri);
        t->pool_dev = st.st_dev;
        t->pool_ino = st.st_ino;
        t->pool_size = t->base.hello.pool_size;
        if (t->pool_size == 0 || (uint64_t)st.st_size < t->pool_size)
                return xmem_error_set(err, -EPROTO, "%s: pool fd is %lld bytes, hello says %llu",
                                      t->base.uri, (long long)st.st_size,
                                      (unsigned long long)t->pool_size);
        t->pool = mmap(NULL, t->pool_size, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
        if (t->pool == MAP_FAILED) {
                t->pool = NULL;
                return xmem_error_set(err, negative_errno(), "%s: mmap pool: %m", t->base.uri);
        }
        return 0;
}

static int shm_transport_open(const char *uri, const struct xmem_transport_opts *opts,
                    struct xmem_transport **ret, struct xmem_error *err)
{
        struct shm_transport *t;
        pthread_rwlockattr_t a;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return xmem_error_set(err, -ENOMEM, "%s: out of memory", uri);
        transport_base_init(&t->base, &xmem_transport_shm_ops, uri);
        t->base.submit_cq = shm_submit_cq;
        t->base.invalidate = shm_invalidate;
        t->ctl_fd = -1;
        t->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : 10000;
        {
                pthread_mutexattr_t ma;
                pthread_mutexattr_init(&ma);
                pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
                pthread_mutex_init(&t->ctl_lock, &ma);
                pthread_mutexattr_destroy(&ma);
        }
        /* writer preference: an invalidation is not starved by a stream of copies */
        pthread_rwlockattr_init(&a);
        pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&t->lock, &a);
        pthread_rwlockattr_destroy(&a);
        r = xmem_uri_parse(uri, &t->uri, err);
        if (r == 0 && t->uri.scheme != XMEM_URI_SHM)
                r = xmem_error_set(err, -EINVAL, "%s: not a shm:// uri", uri);
        if (r == 0)
                r = shm_open_pool(t, err);
        if (r < 0) {
                shm_close(&t->base);
                return r;
        }
        *ret = &t->base;
        return 0;
}

const struct xmem_transport_ops xmem_transport_shm_ops = {
        .scheme = "shm",
        .open = shm_transport_open,
        .close = shm_close,
        .call = shm_call,
        .submit = transport_generic_submit,
        .reap = transport_generic_reap,
        .readv = shm_readv,
        .writev = shm_writev,
        .direct = shm_direct,
        .conns_up = shm_conns_up,
};
