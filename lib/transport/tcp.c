/* tcp.c: the tcp:// (and unix://) transport: several connections, each with a
 * send lock and one receiver thread that matches tagged replies to pending
 * requests, so any number of requests are in flight (pipelined). */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#include "fdio.h"
#include "transport-internal.h"
#include "uri.h"
#include "wire.h"

struct tcp_req {
        struct tcp_req *next;
        uint32_t tag;
        uint16_t op;
        uint64_t deadline_ns;
        void *rbuf; /* READ/READV: where the reply data goes, exactly RLEN bytes */
        size_t rlen;
        struct xmem_wire_hdr reply; /* calls: the reply and its malloc'd payload */
        void *payload;
        int result;
        bool done;
        struct xmem_io *io; /* async: completes onto CQ; else the waiter sleeps on CQ's cond */
        struct xmem_cq *cq;
};

struct tcp_transport;

struct tcp_conn {
        struct tcp_transport *t;
        int fd;
        pthread_mutex_t send_lock; /* one frame at a time; also guards reconnects */
        pthread_mutex_t lock;      /* pending list, tag counter, dead */
        struct tcp_req *head, *tail;
        uint32_t next_tag;
        bool dead;       /* no receiver running: the next send reconnects */
        bool has_thread; /* a receiver was started and is not joined yet */
        pthread_t thread;
        /* under send_lock: after a failed connect, the next one waits (10 ms
         * doubling up to 500 ms), so a restarting appliance is not flooded */
        uint64_t retry_at_ns;
        unsigned backoff_ms;
        int connect_err;
};

#define TCP_BACKOFF_MIN_MS 10u
#define TCP_BACKOFF_MAX_MS 500u

struct tcp_transport {
        struct xmem_transport base;
        struct xmem_uri uri;
        struct xmem_secret secret; /* len 0: no authentication */
        unsigned timeout_ms;
        atomic_uint rr;
        atomic_bool closing;
        unsigned nconn;
        struct tcp_conn conns[];
};

static void req_complete(struct tcp_transport *t, struct tcp_req *q, int result)
{
        if (q->io) {
                struct xmem_io *io = q->io;
                struct xmem_cq *cq = q->cq;
                free(q);
                transport_io_done(&t->base, cq, io, result);
                return;
        }
        pthread_mutex_lock(&t->base.cq_lock);
        q->result = result;
        q->done = true;
        pthread_cond_signal(&q->cq->cond);
        pthread_mutex_unlock(&t->base.cq_lock);
}

/* The connection is broken: fail every pending request with CODE. */
static void conn_fail(struct tcp_conn *c, int code)
{
        struct tcp_req *list;

        pthread_mutex_lock(&c->lock);
        c->dead = true;
        list = c->head;
        c->head = c->tail = NULL;
        pthread_mutex_unlock(&c->lock);
        shutdown(c->fd, SHUT_RDWR); /* senders blocked in write return at once */
        while (list) {
                struct tcp_req *q = list;
                list = q->next;
                req_complete(c->t, q, code);
        }
}

static struct tcp_req *conn_take(struct tcp_conn *c, uint32_t tag)
{
        struct tcp_req *prev = NULL, *q;

        pthread_mutex_lock(&c->lock);
        for (q = c->head; q; prev = q, q = q->next)
                if (q->tag == tag)
                        break;
        if (q) {
                if (prev)
                        prev->next = q->next;
                else
                        c->head = q->next;
                if (c->tail == q)
                        c->tail = prev;
                q->next = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        return q;
}

/* Wait for the next header, failing with -ETIMEDOUT when the oldest pending
 * request has waited longer than the timeout. */
static int wait_readable(struct tcp_conn *c)
{
        int period = (int)MIN(1000u, c->t->timeout_ms / 4 + 1);

        for (;;) {
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                uint64_t oldest = 0;
                int k = poll(&p, 1, period);

                if (k < 0 && errno != EINTR)
                        return -errno;
                if (k > 0)
                        return 0;
                if (atomic_load(&c->t->closing))
                        return -ECONNABORTED;
                pthread_mutex_lock(&c->lock);
                if (c->head)
                        oldest = c->head->deadline_ns;
                pthread_mutex_unlock(&c->lock);
                if (oldest && transport_now_ns() > oldest)
                        return -ETIMEDOUT;
        }
}

/* Read one reply and complete its request. Returns 0, or the code that breaks the connection. */
static int conn_recv_one(struct tcp_conn *c)
{
        uint8_t raw[XMEM_WIRE_HDR_SIZE];
        struct xmem_wire_hdr h;
        struct tcp_req *q;
        int r;

        r = wait_readable(c);
        if (r < 0)
                return r;
        r = read_full(c->fd, raw, sizeof(raw));
        if (r < 0)
                return r == -EAGAIN ? -ETIMEDOUT : r;
        if (wire_hdr_decode(raw, true, &h, NULL) < 0)
                return -EPROTO;
        q = conn_take(c, h.tag);
        if (!q)
                return -EPROTO; /* a reply nobody asked for */
        if (h.op != (q->op | XMEM_OP_REPLY)) {
                req_complete(c->t, q, -EPROTO);
                return -EPROTO;
        }
        if (h.status < 0) {
                q->reply = h;
                req_complete(c->t, q, h.status);
                return 0;
        }
        if (q->op == XMEM_OP_READ || q->op == XMEM_OP_READV) {
                if (h.payload_len != q->rlen) {
                        req_complete(c->t, q, -EPROTO);
                        return -EPROTO;
                }
                r = read_full(c->fd, q->rbuf, q->rlen);
        } else if (q->op == XMEM_OP_WRITE || q->op == XMEM_OP_WRITEV) {
                r = h.payload_len == 0 ? 0 : -EPROTO;
        } else if (h.payload_len > 0) {
                q->payload = malloc(h.payload_len);
                r = q->payload ? read_full(c->fd, q->payload, h.payload_len) : -ENOMEM;
        }
        if (r < 0) {
                free(q->payload);
                q->payload = NULL;
                r = r == -EAGAIN ? -ETIMEDOUT : r;
                req_complete(c->t, q, r);
                return r;
        }
        q->reply = h;
        req_complete(c->t, q, 0);
        return 0;
}

static void *conn_receiver(void *arg)
{
        struct tcp_conn *c = arg;
        int r;

        do
                r = conn_recv_one(c);
        while (r == 0);
        if (r == -EPIPE)
                r = -ECONNRESET;
        conn_fail(c, r);
        return NULL;
}

/* Called with send_lock held: (re)connect C if its receiver is gone. */
static int conn_ensure(struct tcp_conn *c, struct xmem_error *err)
{
        bool dead;
        int r, fd = -1;

        pthread_mutex_lock(&c->lock);
        dead = c->dead;
        pthread_mutex_unlock(&c->lock);
        if (!dead)
                return 0;
        if (atomic_load(&c->t->closing))
                return -ESHUTDOWN;
        if (c->has_thread) {
                pthread_join(c->thread, NULL);
                c->has_thread = false;
        }
        c->fd = safe_close(c->fd);
        if (c->retry_at_ns && transport_now_ns() < c->retry_at_ns)
                return xmem_error_set(err, c->connect_err, "connect: %s (retrying later)",
                                      strerror(-c->connect_err));
        r = tcp_sock_connect(&c->t->uri, c->t->timeout_ms, &c->t->secret, &fd, err);
        if (r < 0) {
                c->backoff_ms = c->backoff_ms ? MIN(2 * c->backoff_ms, TCP_BACKOFF_MAX_MS)
                                              : TCP_BACKOFF_MIN_MS;
                c->retry_at_ns = transport_now_ns() + c->backoff_ms * 1000000ull;
                c->connect_err = r;
                return r;
        }
        c->backoff_ms = 0;
        c->retry_at_ns = 0;
        c->fd = fd;
        c->dead = false; /* no receiver yet: nobody else touches it */
        r = -pthread_create(&c->thread, NULL, conn_receiver, c);
        if (r < 0) {
                c->dead = true;
                return r;
        }
        c->has_thread = true;
        return 0;
}

/* Queue Q as pending on C and send its frame. Returns <0 only if nothing was
 * queued (then the caller completes Q); later failures complete Q through the
 * receiver. */
static int conn_send_locked(struct tcp_conn *c, struct tcp_req *q, struct xmem_wire_hdr *h,
                            struct iovec *iov, int iovcnt);

static int conn_send(struct tcp_conn *c, struct tcp_req *q, struct xmem_wire_hdr *h,
                     struct iovec *iov, int iovcnt)
{
        int r;

        pthread_mutex_lock(&c->send_lock);
        r = conn_ensure(c, NULL);
        if (r < 0) {
                pthread_mutex_unlock(&c->send_lock);
                return r;
        }
        return conn_send_locked(c, q, h, iov, iovcnt);
}

/* conn_send with send_lock held and the connection up; unlocks send_lock. */
static int conn_send_locked(struct tcp_conn *c, struct tcp_req *q, struct xmem_wire_hdr *h,
                            struct iovec *iov, int iovcnt)
{
        uint8_t raw[XMEM_WIRE_HDR_SIZE];

        pthread_mutex_lock(&c->lock);
        if (c->dead) { /* the receiver failed between ensure and now */
                pthread_mutex_unlock(&c->lock);
                pthread_mutex_unlock(&c->send_lock);
                return -ECONNRESET;
        }
        if (++c->next_tag == 0)
                c->next_tag = 1;
        q->tag = h->tag = c->next_tag;
        q->op = h->op;
        q->deadline_ns = transport_now_ns() + (uint64_t)c->t->timeout_ms * 1000000ull;
        q->next = NULL;
        if (c->tail)
                c->tail->next = q;
        else
                c->head = q;
        c->tail = q;
        pthread_mutex_unlock(&c->lock);

        wire_hdr_encode(h, raw);
        iov[0] = (struct iovec){ raw, sizeof(raw) };
        if (writev_full(c->fd, iov, iovcnt) < 0)
                shutdown(c->fd, SHUT_RDWR); /* the receiver fails Q and its peers */
        pthread_mutex_unlock(&c->send_lock);
        return 0;
}

static struct tcp_conn *pick_conn(struct tcp_transport *t)
{
        return &t->conns[atomic_fetch_add(&t->rr, 1) % t->nconn];
}

/* The request, header and data vector of an async IO; returns the iov count. */
static int io_req(struct xmem_io *io, struct xmem_cq *cq, struct tcp_req *q,
                  struct xmem_wire_hdr *h, struct iovec *iov)
{
        q->io = io;
        q->cq = cq;
        transport_req_init(h, io->op, &io->region);
        h->offset = io->offset;
        h->length = io->len;
        if (io->op == XMEM_OP_READ) {
                q->rbuf = io->buf;
                q->rlen = io->len;
                return 1;
        }
        h->payload_len = (uint32_t)io->len;
        iov[1] = (struct iovec){ io->buf, io->len };
        return 2;
}

static void tcp_submit_cq(struct xmem_transport *base, struct xmem_io *const *ios, size_t n,
                          struct xmem_cq *cq)
{
        struct tcp_transport *t = (struct tcp_transport *)base;

        transport_cq_add_inflight(base, cq, n);
        for (size_t i = 0; i < n; i++) {
                struct xmem_io *io = ios[i];
                struct tcp_req *q = calloc(1, sizeof(*q));
                struct xmem_wire_hdr h;
                struct iovec iov[2];
                int r;

                if (!q) {
                        transport_io_done(base, cq, io, -ENOMEM);
                        continue;
                }
                r = conn_send(pick_conn(t), q, &h, iov, io_req(io, cq, q, &h, iov));
                if (r < 0) {
                        free(q);
                        transport_io_done(base, cq, io, r);
                }
        }
}

/* A connection that is up and free to send on now, or -EAGAIN. */
static int tcp_submit_nowait(struct xmem_transport *base, struct xmem_io *io)
{
        struct tcp_transport *t = (struct tcp_transport *)base;
        struct xmem_wire_hdr h;
        struct iovec iov[2];
        struct tcp_req *q;

        for (unsigned k = 0; k < t->nconn; k++) {
                struct tcp_conn *c = pick_conn(t);

                if (pthread_mutex_trylock(&c->send_lock) != 0)
                        continue;
                if (!(q = calloc(1, sizeof(*q)))) {
                        pthread_mutex_unlock(&c->send_lock);
                        return -EAGAIN;
                }
                /* a dead connection is refused there (no reconnect here) */
                if (conn_send_locked(c, q, &h, iov, io_req(io, NULL, q, &h, iov)) < 0) {
                        free(q);
                        return -EAGAIN;
                }
                return 0;
        }
        return -EAGAIN;
}

/* Send one request and sleep until the receiver completes it. */
static int send_wait(struct tcp_transport *t, struct tcp_req *q, struct xmem_wire_hdr *h,
                     struct iovec *iov, int iovcnt)
{
        struct xmem_cq cq;
        int r;

        transport_cq_init(&cq);
        q->cq = &cq;
        r = conn_send(pick_conn(t), q, h, iov, iovcnt);
        if (r == 0) {
                pthread_mutex_lock(&t->base.cq_lock);
                while (!q->done)
                        pthread_cond_wait(&cq.cond, &t->base.cq_lock);
                pthread_mutex_unlock(&t->base.cq_lock);
                r = q->result;
        }
        transport_cq_fini(&cq);
        return r;
}

static int tcp_call(struct xmem_transport *base, const struct xmem_wire_hdr *req,
                    const void *payload, struct xmem_wire_hdr *ret_reply, void **ret_payload)
{
        struct tcp_transport *t = (struct tcp_transport *)base;
        struct xmem_wire_hdr h = *req;
        struct tcp_req q = { 0 };
        struct iovec iov[2];
        int r;

        if (h.op == XMEM_OP_READ || h.op == XMEM_OP_READV || h.op == XMEM_OP_WRITE ||
            h.op == XMEM_OP_WRITEV || (h.payload_len && !payload))
                return -EINVAL;
        iov[1] = (struct iovec){ (void *)payload, h.payload_len };
        r = send_wait(t, &q, &h, iov, h.payload_len ? 2 : 1);
        if (r < 0 && !(q.done && q.reply.status < 0)) {
                free(q.payload);
                return r;
        }
        *ret_reply = q.reply;
        if (ret_payload)
                *ret_payload = q.payload;
        else
                free(q.payload);
        return 0;
}

static int tcp_vec(struct xmem_transport *base, uint16_t op, const struct xmem_region_ref *r,
                   const struct xmem_wire_seg *segs, size_t nseg, void *buf)
{
        struct tcp_transport *t = (struct tcp_transport *)base;
        _cleanup_free_ uint8_t *raw = NULL;
        struct tcp_req q = { 0 };
        struct xmem_wire_hdr h;
        struct iovec iov[3];
        uint64_t total = 0;

        if (nseg == 0 || nseg > XMEM_WIRE_MAX_SEGS)
                return -EINVAL;
        for (size_t i = 0; i < nseg; i++)
                total += segs[i].length;
        if (total == 0 || total > base->hello.max_io)
                return -EINVAL;
        raw = malloc(nseg * XMEM_WIRE_SEG_SIZE);
        if (!raw)
                return -ENOMEM;
        wire_segs_encode(segs, nseg, raw);
        transport_req_init(&h, op, r);
        h.arg = nseg;
        h.length = total;
        h.payload_len = (uint32_t)(nseg * XMEM_WIRE_SEG_SIZE);
        iov[1] = (struct iovec){ raw, nseg * XMEM_WIRE_SEG_SIZE };
        if (op == XMEM_OP_READV) {
                q.rbuf = buf;
                q.rlen = total;
        } else {
                h.payload_len += (uint32_t)total;
                iov[2] = (struct iovec){ buf, total };
        }
        return send_wait(t, &q, &h, iov, op == XMEM_OP_READV ? 2 : 3);
}

static int tcp_readv(struct xmem_transport *t, const struct xmem_region_ref *r,
                     const struct xmem_wire_seg *segs, size_t nseg, void *buf)
{
        return tcp_vec(t, XMEM_OP_READV, r, segs, nseg, buf);
}

static int tcp_writev(struct xmem_transport *t, const struct xmem_region_ref *r,
                      const struct xmem_wire_seg *segs, size_t nseg, const void *buf)
{
        return tcp_vec(t, XMEM_OP_WRITEV, r, segs, nseg, (void *)buf);
}

/* ops->conns_up: connections with a receiver running (not dead). */
static unsigned tcp_conns_up(struct xmem_transport *base, unsigned *ret_total)
{
        struct tcp_transport *t = (struct tcp_transport *)base;
        unsigned up = 0;

        for (unsigned i = 0; i < t->nconn; i++) {
                pthread_mutex_lock(&t->conns[i].lock);
                up += !t->conns[i].dead;
                pthread_mutex_unlock(&t->conns[i].lock);
        }
        *ret_total = t->nconn;
        return up;
}

static void tcp_close(struct xmem_transport *base)
{
        struct tcp_transport *t = (struct tcp_transport *)base;

        atomic_store(&t->closing, true);
        for (unsigned i = 0; i < t->nconn; i++) {
                struct tcp_conn *c = &t->conns[i];
                pthread_mutex_lock(&c->send_lock);
                if (c->fd >= 0)
                        shutdown(c->fd, SHUT_RDWR);
                if (c->has_thread)
                        pthread_join(c->thread, NULL);
                c->fd = safe_close(c->fd);
                pthread_mutex_unlock(&c->send_lock);
                pthread_mutex_destroy(&c->send_lock);
                pthread_mutex_destroy(&c->lock);
        }
        transport_base_fini(base);
        xmem_secret_wipe(&t->secret);
        free(t);
}

static int tcp_open(const char *uri, const struct xmem_transport_opts *opts,
                    struct xmem_transport **ret, struct xmem_error *err)
{
        unsigned n = opts && opts->connections ? opts->connections : 4;
        struct tcp_transport *t;
        struct xmem_uri u;
        int r;

        r = xmem_uri_parse(uri, &u, err);
        if (r < 0)
                return r;
        if (u.scheme != XMEM_URI_TCP && u.scheme != XMEM_URI_UNIX)
                return xmem_error_set(err, -EINVAL, "%s: not a tcp:// or unix:// uri", uri);
        n = MIN(n, 64u);
        t = calloc(1, sizeof(*t) + n * sizeof(t->conns[0]));
        if (!t)
                return xmem_error_set(err, -ENOMEM, "%s: out of memory", uri);
        transport_base_init(&t->base, &xmem_transport_tcp_ops, uri);
        t->base.submit_cq = tcp_submit_cq;
        t->base.hello.max_io = XMEM_WIRE_MAX_IO; /* until HELLO answers */
        t->uri = u;
        t->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : 10000;
        t->nconn = n;
        if (opts && opts->secret)
                t->secret = *opts->secret;
        else if (opts && opts->secret_file &&
                 (r = xmem_secret_load(opts->secret_file, &t->secret, err)) < 0) {
                transport_base_fini(&t->base);
                free(t);
                return err ? xmem_error_prefix(err, "%s: secret", uri) : r;
        }
        for (unsigned i = 0; i < n; i++) {
                struct tcp_conn *c = &t->conns[i];
                c->t = t;
                c->fd = -1;
                c->dead = true;
                pthread_mutex_init(&c->send_lock, NULL);
                pthread_mutex_init(&c->lock, NULL);
        }
        for (unsigned i = 0; i < n; i++) {
                pthread_mutex_lock(&t->conns[i].send_lock);
                r = conn_ensure(&t->conns[i], err);
                pthread_mutex_unlock(&t->conns[i].send_lock);
                if (r < 0) {
                        tcp_close(&t->base);
                        return err ? xmem_error_prefix(err, "%s", uri) : r;
                }
        }
        r = transport_hello(&t->base, err);
        if (r < 0) {
                tcp_close(&t->base);
                return r;
        }
        *ret = &t->base;
        return 0;
}

const struct xmem_transport_ops xmem_transport_tcp_ops = {
        .scheme = "tcp",
        .open = tcp_open,
        .close = tcp_close,
        .call = tcp_call,
        .submit = transport_generic_submit,
        .submit_nowait = tcp_submit_nowait,
        .reap = transport_generic_reap,
        .readv = tcp_readv,
        .writev = tcp_writev,
        .conns_up = tcp_conns_up,
};
