/* transport.c: opening a transport by URI scheme, the completion queues shared
 * by every implementation, and the synchronous data path built on submit. */
#include <errno.h>
#include <string.h>

#include "transport-internal.h"
#include "uri.h"
#include "xmem-config.h"

#define SYNC_WINDOW 16 /* ios of one synchronous read/write kept in flight */

uint64_t transport_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void transport_deadline(struct timespec *ts, int timeout_ms)
{
        clock_gettime(CLOCK_MONOTONIC, ts);
        ts->tv_sec += timeout_ms / 1000;
        ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

void transport_cond_init_monotonic(pthread_cond_t *c)
{
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_init(c, &a);
        pthread_condattr_destroy(&a);
}

void transport_req_init(struct xmem_wire_hdr *h, uint16_t op, const struct xmem_region_ref *r)
{
        memset(h, 0, sizeof(*h));
        h->magic = XMEM_WIRE_MAGIC;
        h->version = XMEM_WIRE_VERSION;
        h->op = op;
        if (r) {
                h->region = r->id;
                memcpy(h->key, r->key, XMEM_KEY_SIZE);
        }
}

void transport_base_init(struct xmem_transport *t, const struct xmem_transport_ops *ops,
                         const char *uri)
{
        t->ops = ops;
        snprintf(t->uri, sizeof(t->uri), "%s", uri);
        pthread_mutex_init(&t->cq_lock, NULL);
        t->cqs = NULL;
}

void transport_base_fini(struct xmem_transport *t)
{
        while (t->cqs) {
                struct xmem_cq *cq = t->cqs;
                t->cqs = cq->next;
                transport_cq_fini(cq);
                free(cq);
        }
        pthread_mutex_destroy(&t->cq_lock);
}

int transport_count_error(struct xmem_transport *t, int r)
{
        if (r < 0)
                atomic_fetch_add_explicit(&t->errors, 1, memory_order_relaxed);
        return r;
}

void xmem_transport_health(struct xmem_transport *t, struct xmem_transport_health *ret)
{
        unsigned total = 1, up = 1;

        if (t->ops->conns_up)
                up = t->ops->conns_up(t, &total);
        *ret = (struct xmem_transport_health){
                .conns = total,
                .conns_up = up,
                .errors = atomic_load_explicit(&t->errors, memory_order_relaxed),
        };
}

void transport_cq_init(struct xmem_cq *cq)
{
        memset(cq, 0, sizeof(*cq));
        cq->owner = pthread_self();
        transport_cond_init_monotonic(&cq->cond);
}

void transport_cq_fini(struct xmem_cq *cq)
{
        pthread_cond_destroy(&cq->cond);
}

void transport_cq_add_inflight(struct xmem_transport *t, struct xmem_cq *cq, size_t n)
{
        pthread_mutex_lock(&t->cq_lock);
        cq->inflight += n;
        pthread_mutex_unlock(&t->cq_lock);
}

void transport_io_done(struct xmem_transport *t, struct xmem_cq *cq, struct xmem_io *io,
                       int result)
{
        transport_count_error(t, result);
        if (io->complete) { /* submit_nowait: no queue involved */
                io->result = result;
                io->complete(io);
                return;
        }
        pthread_mutex_lock(&t->cq_lock);
        io->result = result;
        io->next_ = NULL;
        if (cq->tail)
                cq->tail->next_ = io;
        else
                cq->head = io;
        cq->tail = io;
        cq->queued++;
        cq->inflight--;
        pthread_cond_signal(&cq->cond);
        pthread_mutex_unlock(&t->cq_lock);
}

int transport_io_check(const struct xmem_transport *t, const struct xmem_io *io)
{
        if (!io || (io->op != XMEM_OP_READ && io->op != XMEM_OP_WRITE))
                return -EINVAL;
        if (io->len == 0 || io->len > t->hello.max_io || !io->buf)
                return -EINVAL;
        if (io->offset > XMEM_WIRE_MAX_REGION_SIZE ||
            io->len > XMEM_WIRE_MAX_REGION_SIZE - io->offset)
                return -ERANGE;
        return 0;
}

/* Wait until CQ holds MIN_WAIT completions (fewer if fewer can still come),
 * then hand out up to MAX. Called with cq_lock held. */
static int cq_wait_locked(struct xmem_transport *t, struct xmem_cq *cq, struct xmem_io **ret,
                          size_t max, size_t min_wait, int timeout_ms)
{
        struct timespec deadline;
        size_t n = 0;

        if (timeout_ms >= 0)
                transport_deadline(&deadline, timeout_ms);
        for (;;) {
                size_t want = MIN(MIN(min_wait, max), cq->queued + cq->inflight);
                if (cq->queued >= want)
                        break;
                if (timeout_ms < 0)
                        pthread_cond_wait(&cq->cond, &t->cq_lock);
                else if (pthread_cond_timedwait(&cq->cond, &t->cq_lock, &deadline) == ETIMEDOUT) {
                        if (cq->queued == 0)
                                return -ETIMEDOUT;
                        break;
                }
        }
        while (n < max && cq->head) {
                struct xmem_io *io = cq->head;
                cq->head = io->next_;
                if (!cq->head)
                        cq->tail = NULL;
                cq->queued--;
                io->next_ = NULL;
                ret[n++] = io;
        }
        return (int)n;
}

static struct xmem_cq *thread_cq(struct xmem_transport *t, bool create)
{
        pthread_t self = pthread_self();
        struct xmem_cq *cq;

        pthread_mutex_lock(&t->cq_lock);
        for (cq = t->cqs; cq; cq = cq->next)
                if (pthread_equal(cq->owner, self))
                        break;
        if (!cq && create) {
                cq = malloc(sizeof(*cq));
                if (cq) {
                        transport_cq_init(cq);
                        cq->next = t->cqs;
                        t->cqs = cq;
                }
        }
        pthread_mutex_unlock(&t->cq_lock);
        return cq;
}

int xmem_transport_submit(struct xmem_transport *t, struct xmem_io *const *ios, size_t n)
{
        return t->ops->submit(t, ios, n);
}

int xmem_transport_submit_nowait(struct xmem_transport *t, struct xmem_io *io)
{
        int r = transport_io_check(t, io);

        if (r < 0)
                return r;
        if (!io->complete)
                return -EINVAL;
        return t->ops->submit_nowait ? t->ops->submit_nowait(t, io) : -EOPNOTSUPP;
}

int xmem_transport_reap(struct xmem_transport *t, struct xmem_io **ret, size_t max, int min_wait,
                        int timeout_ms)
{
        return t->ops->reap(t, ret, max, min_wait, timeout_ms);
}

/* Generic ops->submit / ops->reap: the calling thread's queue. */
int transport_generic_submit(struct xmem_transport *t, struct xmem_io *const *ios, size_t n)
{
        struct xmem_cq *cq;

        for (size_t i = 0; i < n; i++) {
                int r = transport_io_check(t, ios[i]);
                if (r < 0)
                        return r;
                if (ios[i]->complete) /* only for submit_nowait */
                        return -EINVAL;
        }
        if (n == 0)
                return 0;
        cq = thread_cq(t, true);
        if (!cq)
                return -ENOMEM;
        t->submit_cq(t, ios, n, cq);
        return (int)n;
}

int transport_generic_reap(struct xmem_transport *t, struct xmem_io **ret, size_t max,
                           int min_wait, int timeout_ms)
{
        struct xmem_cq *cq;
        int r;

        if (min_wait < 0 || !ret)
                return -EINVAL;
        cq = thread_cq(t, false);
        if (!cq)
                return min_wait > 0 ? -ENOENT : 0; /* this thread never submitted */
        pthread_mutex_lock(&t->cq_lock);
        r = cq_wait_locked(t, cq, ret, max, (size_t)min_wait, timeout_ms);
        pthread_mutex_unlock(&t->cq_lock);
        return r;
}

/* Submit N ios on a private queue and wait for all; first error wins. */
static int sync_ios(struct xmem_transport *t, struct xmem_io *ios, size_t n)
{
        struct xmem_io *ptrs[SYNC_WINDOW], *done[SYNC_WINDOW];
        struct xmem_cq cq;
        size_t got = 0;
        int r = 0;

        transport_cq_init(&cq);
        for (size_t i = 0; i < n; i++)
                ptrs[i] = &ios[i];
        t->submit_cq(t, ptrs, n, &cq);
        pthread_mutex_lock(&t->cq_lock);
        while (got < n) {
                int k = cq_wait_locked(t, &cq, done, n - got, n - got, -1);
                for (int i = 0; i < k; i++)
                        if (done[i]->result < 0 && r == 0)
                                r = done[i]->result;
                got += (size_t)k;
        }
        pthread_mutex_unlock(&t->cq_lock);
        transport_cq_fini(&cq);
        return r;
}

static int sync_rw(struct xmem_transport *t, uint16_t op, const struct xmem_region_ref *r,
                   uint64_t offset, void *buf, size_t len)
{
        size_t max_io = t->hello.max_io, done = 0;

        if (!t || !r || (!buf && len))
                return -EINVAL;
        if (offset > XMEM_WIRE_MAX_REGION_SIZE || len > XMEM_WIRE_MAX_REGION_SIZE - offset)
                return -ERANGE;
        while (done < len) {
                struct xmem_io ios[SYNC_WINDOW];
                size_t n = 0;
                int k;

                for (; n < SYNC_WINDOW && done < len; n++) {
                        size_t piece = MIN(max_io, len - done);
                        ios[n] = (struct xmem_io){ .op = op, .region = *r, .offset = offset + done,
                                                   .buf = (char *)buf + done, .len = piece };
                        done += piece;
                }
                k = sync_ios(t, ios, n);
                if (k < 0)
                        return k;
        }
        return 0;
}

int xmem_read(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t offset,
              void *buf, size_t len)
{
        return sync_rw(t, XMEM_OP_READ, r, offset, buf, len);
}

int xmem_write(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t offset,
               const void *buf, size_t len)
{
        return sync_rw(t, XMEM_OP_WRITE, r, offset, (void *)buf, len);
}

int xmem_direct(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t offset,
                uint64_t len, bool write, xmem_direct_fn fn, void *ctx)
{
        if (!t || !r || !fn)
                return -EINVAL;
        if (!t->ops->direct)
                return -EOPNOTSUPP;
        return t->ops->direct(t, r, offset, len, write, fn, ctx);
}

bool xmem_transport_has_direct(const struct xmem_transport *t)
{
        return t && t->ops->direct;
}

/* Cut a segment list into batches the wire accepts (<= MAX_SEGS segments and
 * <= max_io bytes each; a segment longer than max_io is split). */
static int sg_batches(struct xmem_transport *t, const struct xmem_region_ref *r,
                      const struct xmem_wire_seg *segs, size_t nseg, char *buf, bool write)
{
        size_t max_io = t->hello.max_io, cap = MIN((size_t)XMEM_WIRE_MAX_SEGS, 1024);
        _cleanup_free_ struct xmem_wire_seg *batch = malloc(cap * sizeof(*batch));
        size_t i = 0, n = 0, bytes = 0;
        uint64_t seg_done = 0; /* bytes of segs[i] already batched */

        if (!batch)
                return -ENOMEM;
        while (i < nseg || n > 0) {
                if (i < nseg && segs[i].length == 0)
                        return -EINVAL;
                if (i < nseg && n < cap && bytes < max_io) {
                        uint64_t take = MIN(segs[i].length - seg_done, max_io - bytes);
                        batch[n++] = (struct xmem_wire_seg){ segs[i].offset + seg_done, take };
                        bytes += take;
                        seg_done += take;
                        if (seg_done == segs[i].length) {
                                i++;
                                seg_done = 0;
                        }
                        continue;
                }
                int k = write ? t->ops->writev(t, r, batch, n, buf) : t->ops->readv(t, r, batch, n, buf);
                if (k < 0)
                        return transport_count_error(t, k);
                buf += bytes;
                n = 0;
                bytes = 0;
        }
        return 0;
}

int xmem_readv(struct xmem_transport *t, const struct xmem_region_ref *r,
               const struct xmem_wire_seg *segs, size_t nseg, void *buf)
{
        if (!t || !r || (nseg && (!segs || !buf)))
                return -EINVAL;
        return sg_batches(t, r, segs, nseg, buf, false);
}

int xmem_writev(struct xmem_transport *t, const struct xmem_region_ref *r,
                const struct xmem_wire_seg *segs, size_t nseg, const void *buf)
{
        if (!t || !r || (nseg && (!segs || !buf)))
                return -EINVAL;
        return sg_batches(t, r, segs, nseg, (char *)buf, true);
}

int xmem_transport_open(const char *uri, const struct xmem_transport_opts *opts,
                        struct xmem_transport **ret, struct xmem_error *err)
{
        struct xmem_transport_opts o = opts ? *opts : (struct xmem_transport_opts){ 0 };
        const struct xmem_transport_ops *ops;
        struct xmem_uri u;
        int r;

        if (!uri || !ret)
                return xmem_error_set(err, -EINVAL, "transport: no uri");
        r = xmem_uri_parse(uri, &u, err);
        if (r < 0)
                return r;
        if (o.connections == 0)
                o.connections = 4;
        if (o.timeout_ms == 0)
                o.timeout_ms = 10000;
        switch (u.scheme) {
        case XMEM_URI_TCP:
        case XMEM_URI_UNIX:
                ops = &xmem_transport_tcp_ops;
                break;
        case XMEM_URI_SHM:
                ops = &xmem_transport_shm_ops;
                break;
        case XMEM_URI_RDMA:
        default:
                /* the seam for the rdma transport of a later issue */
                return xmem_error_set(err, -EPROTONOSUPPORT,
                                      "%s: rdma transport not built/no device", uri);
        }
        return ops->open(uri, &o, ret, err);
}

void xmem_transport_close(struct xmem_transport *t)
{
        if (t)
                t->ops->close(t);
}

const struct xmem_wire_hello *xmem_transport_hello(struct xmem_transport *t)
{
        return &t->hello;
}

const char *xmem_transport_uri(struct xmem_transport *t)
{
        return t->uri;
}
