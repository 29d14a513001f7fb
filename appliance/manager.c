/* manager.c: the appliance's life cycle: pool and metadata set-up, listeners,
 * one thread per connection (blocking I/O; no lock is ever held while a
 * socket blocks), signal handling and clean shutdown. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdio.h"
#include "log.h"
#include "manager.h"
#include "wire.h"

int manager_new(const struct manager_config *cfg, struct manager **ret, struct xmem_error *err)
{
        struct manager *m;
        pthread_rwlockattr_t attr;
        uint64_t nchunks = cfg->pool_size / cfg->chunk_size;
        int r;

        if (nchunks == 0 || nchunks > CHUNK_MAX_COUNT || cfg->pool_size % cfg->chunk_size)
                return xmem_error_set(err, -EINVAL,
                                      "pool size must be a multiple of the chunk size, 1..%u chunks",
                                      CHUNK_MAX_COUNT);
        m = calloc(1, sizeof(*m));
        if (!m)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        m->pool.fd = m->reap_fd = m->signal_fd = -1;
        pthread_rwlockattr_init(&attr);
        /* a stream of readers must not starve snapshots and allocations */
        pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&m->lock, &attr);
        pthread_rwlockattr_destroy(&attr);
        pthread_mutex_init(&m->conns_lock, NULL);
        pthread_mutex_init(&m->clients_lock, NULL);
        memcpy(m->allow_uid, cfg->allow_uid, sizeof(m->allow_uid));
        m->nallow_uid = MIN(cfg->nallow_uid, (size_t)MANAGER_MAX_UIDS);
        memcpy(m->peers, cfg->peers, sizeof(m->peers));
        m->npeers = MIN(cfg->npeers, (size_t)MANAGER_MAX_PEERS);
        if (cfg->secret)
                m->secret = *cfg->secret;
        m->limits = cfg->limits;
        for (size_t i = 0; i < cfg->nlisten && i < MANAGER_MAX_LISTEN; i++)
                m->listeners[m->nlisteners++] = (struct listener){ .fd = -1, .uri = cfg->listen[i] };

        r = pool_open(&m->pool, cfg->pool_file, cfg->pool_size, cfg->chunk_size, err);
        if (r >= 0 && chunk_pool_init(&m->chunks, (uint32_t)nchunks) < 0)
                r = xmem_error_set(err, -ENOMEM, "chunk table: out of memory");
        if (r >= 0 && region_table_init(&m->regions, &m->chunks, cfg->chunk_size) < 0)
                r = xmem_error_set(err, -ENOMEM, "region table: out of memory");
        if (r >= 0 && cfg->pool_file) {
                r = journal_open(cfg->pool_file, &m->regions, cfg->pool_size, &m->journal, err);
                /* chunks nobody references (freed, or written but never journaled) read as zero */
                if (r >= 0)
                        manager_reclaim_locked(m);
        }
        if (r >= 0) {
                m->reap_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (m->reap_fd < 0)
                        r = xmem_error_set(err, negative_errno(), "eventfd: %s", strerror(errno));
        }
        if (r < 0) {
                manager_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

static int listen_tcp(const struct xmem_uri *u, struct xmem_error *err)
{
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE };
        struct addrinfo *ai = NULL;
        char port[8];
        int fd, one = 1, r;

        snprintf(port, sizeof(port), "%u", u->port);
        r = getaddrinfo(u->host, port, &hints, &ai);
        if (r != 0)
                return xmem_error_set(err, -EADDRNOTAVAIL, "%s: %s", u->host, gai_strerror(r));
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
                r = negative_errno();
                freeaddrinfo(ai);
                safe_close(fd);
                return xmem_error_set(err, r, "%s:%u: %s", u->host, u->port, strerror(-r));
        }
        freeaddrinfo(ai);
        return fd;
}

static void mkdir_parents(const char *path)
{
        char dir[sizeof(((struct xmem_uri *)0)->path)];

        snprintf(dir, sizeof(dir), "%s", path);
        for (char *p = dir + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                (void)mkdir(dir, 0755);
                *p = '/';
        }
}

static int listen_unix(const struct xmem_uri *u, struct xmem_error *err)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, r;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->path);
        mkdir_parents(u->path);
        (void)unlink(u->path); /* a stale socket of an earlier run */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
                r = negative_errno();
                safe_close(fd);
                return xmem_error_set(err, r, "%s: %s", u->path, strerror(-r));
        }
        return fd;
}

/* A host name or address that only this machine reaches. */
static bool loopback(const char *host)
{
        return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
               strcmp(host, "::1") == 0;
}

int manager_start(struct manager *m, struct xmem_error *err)
{
        sigset_t mask;

        for (size_t i = 0; i < m->nlisteners; i++) {
                struct listener *l = &m->listeners[i];
                char buf[XMEM_URI_MAX];
                l->fd = l->uri.scheme == XMEM_URI_TCP ? listen_tcp(&l->uri, err)
                                                      : listen_unix(&l->uri, err);
                if (l->fd < 0)
                        return xmem_error_prefix(err, "listen");
                log_info("listening on %s", xmem_uri_format(&l->uri, buf, sizeof(buf)));
                if (l->uri.scheme == XMEM_URI_TCP && m->secret.len == 0 && !loopback(l->uri.host))
                        log_warning("%s: no --secret-file, tcp clients are not authenticated: "
                                    "anyone who reaches this port can use every region op", buf);
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        m->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (m->signal_fd < 0)
                return xmem_error_set(err, negative_errno(), "signalfd: %s", strerror(errno));
        return 0;
}

uint8_t *conn_out(struct conn *c, size_t len)
{
        if (len > c->out_cap) {
                uint8_t *p = NULL;
                if (access_buf_charge(c->m, len - c->out_cap) && !(p = realloc(c->out, len)))
                        access_buf_release(c->m, len - c->out_cap);
                if (!p)
                        return NULL;
                c->out = p;
                c->out_cap = len;
        }
        return c->out ? c->out : conn_out(c, 1);
}

int conn_reply(struct conn *c, struct xmem_wire_hdr *rep, const void *payload, uint32_t len,
               int fd)
{
        uint8_t hdr[XMEM_WIRE_HDR_SIZE];
        struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)payload, len } };
        int r;

        rep->payload_len = rep->status < 0 ? 0 : len;
        wire_hdr_encode(rep, hdr);
        if (fd >= 0 && rep->status == 0) {
                uint8_t msg[XMEM_WIRE_HDR_SIZE + XMEM_WIRE_HELLO_SIZE];
                if (len > XMEM_WIRE_HELLO_SIZE)
                        return -EINVAL;
                memcpy(msg, hdr, sizeof(hdr));
                memcpy(msg + sizeof(hdr), payload, len);
                r = send_with_fds(c->fd, msg, sizeof(hdr) + len, &fd, 1);
        } else {
                r = writev_full(c->fd, iov, rep->payload_len ? 2 : 1);
        }
        if (r < 0)
                log_info("%s: reply failed, closing: %s", c->name, strerror(-r));
        return r;
}

/* Read what is left of a refused request's payload, so the next frame is found. */
static int conn_drain(struct conn *c, uint32_t len)
{
        uint8_t buf[65536];
        int r = 0;

        while (r >= 0 && len > 0) {
                uint32_t n = MIN(len, (uint32_t)sizeof(buf));
                r = read_full(c->fd, buf, n);
                len -= n;
        }
        return r;
}

/* Read one request; returns 0, or -errno to close (logged here). */
static int conn_read_request(struct conn *c, struct xmem_wire_hdr *h)
{
        uint8_t hdr[XMEM_WIRE_HDR_SIZE];
        struct xmem_error err = {};
        int r;

        for (;;) {
                r = read_full(c->fd, hdr, sizeof(hdr));
                if (r == -EPIPE) {
                        log_info("%s: closed by peer", c->name);
                        return r;
                }
                if (r == -EAGAIN && !c->authed) {
                        log_warning("%s: did not authenticate in time, closing", c->name);
                        return r;
                }
                if (r < 0) {
                        log_warning("%s: truncated frame header, closing: %s", c->name,
                                    strerror(-r));
                        return r;
                }
                r = wire_hdr_decode(hdr, false, h, &err);
                if (r < 0) {
                        log_warning("%s: malformed frame, closing: %s", c->name,
                                    xmem_error_str(&err));
                        return r;
                }
                r = access_check_frame(c, h); /* also makes room for the payload */
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (conn_drain(c, h->payload_len) < 0)
                        return -EPIPE;
        }
        r = read_full(c->fd, c->in, h->payload_len);
        if (r < 0)
                log_warning("%s: truncated %s payload (%u bytes expected), closing: %s", c->name,
                            wire_op_name(h->op), h->payload_len, strerror(-r));
        return r;
}

static void *conn_thread(void *arg)
{
        struct conn *c = arg;
        struct xmem_wire_hdr h;
        uint64_t one = 1;

        if (c->refuse)
                access_refuse(c);
        else
                while (conn_read_request(c, &h) >= 0 && handle_request(c, &h, c->in) >= 0)
                        access_trim(c);
        shutdown(c->fd, SHUT_RDWR);
        if (c->refuse)
                c->m->refusing--;
        else
                c->m->stats.connections--;
        access_release(c);
        atomic_store(&c->done, true);
        if (write(c->m->reap_fd, &one, sizeof(one)) < 0)
                log_debug_errno(negative_errno(), "reap eventfd");
        return NULL;
}

static void conn_free(struct conn *c)
{
        access_buf_release(c->m, c->in_cap + c->out_cap);
        safe_close(c->fd);
        free(c->in);
        free(c->out);
        free(c);
}

/* Join connection threads that ended (ALL: shut every connection down first). */
static void conns_reap(struct manager *m, bool all)
{
        struct conn **pp, *c;

        pthread_mutex_lock(&m->conns_lock);
        if (all)
                for (c = m->conns; c; c = c->next)
                        shutdown(c->fd, SHUT_RDWR);
        pp = &m->conns;
        while ((c = *pp)) {
                if (!all && !atomic_load(&c->done)) {
                        pp = &c->next;
                        continue;
                }
                *pp = c->next;
                pthread_join(c->thread, NULL);
                conn_free(c);
        }
        pthread_mutex_unlock(&m->conns_lock);
}

static void conn_name(struct conn *c, const struct listener *l, const struct sockaddr_storage *sa)
{
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (c->is_unix) {
                snprintf(c->name, sizeof(c->name), "conn unix:%s#%llu", l->uri.path,
                         (unsigned long long)c->m->stats.connections_total + 1);
                return;
        }
        if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
                inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
                port = ntohs(in4->sin_port);
        } else if (sa->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                port = ntohs(in6->sin6_port);
        }
        snprintf(c->name, sizeof(c->name), "conn tcp:%s:%u", host, port);
}

static void conn_accept(struct manager *m, struct listener *l)
{
        struct sockaddr_storage sa = {};
        socklen_t salen = sizeof(sa);
        struct conn *c;
        int fd, one = 1, r;

        fd = accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                log_warning_errno(r, "accept");
                /* out of fds or memory: the listener stays readable, do not spin on it */
                if (r == -EMFILE || r == -ENFILE || r == -ENOBUFS || r == -ENOMEM)
                        usleep(100000);
                return;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return;
        }
        c->m = m;
        c->fd = fd;
        c->is_unix = l->uri.scheme == XMEM_URI_UNIX;
        if (!c->is_unix)
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_name(c, l, &sa);
        access_admit(c, &sa);
        if (c->refuse && !access_refuse_slot(m)) {
                log_warning("%s: refused, closing at once (too many refusals pending): %s",
                            c->name, c->refuse_why);
                m->stats.refused++;
                conn_free(c);
                return;
        }
        if (!c->refuse) {
                m->stats.connections_total++;
                m->stats.connections++;
        }
        pthread_mutex_lock(&m->conns_lock);
        r = pthread_create(&c->thread, NULL, conn_thread, c);
        if (r == 0) {
                c->next = m->conns;
                m->conns = c;
        }
        pthread_mutex_unlock(&m->conns_lock);
        if (r != 0) {
                log_error_errno(-r, "%s: no thread, closing", c->name);
                if (c->refuse)
                        m->refusing--;
                else
                        m->stats.connections--;
                access_release(c);
                conn_free(c);
                return;
        }
        if (!c->refuse)
                log_info("%s: connected", c->name);
}

int manager_run(struct manager *m)
{
        struct pollfd pfd[MANAGER_MAX_LISTEN + 2];
        size_t n = m->nlisteners;

        for (size_t i = 0; i < n; i++)
                pfd[i] = (struct pollfd){ .fd = m->listeners[i].fd, .events = POLLIN };
        pfd[n] = (struct pollfd){ .fd = m->reap_fd, .events = POLLIN };
        pfd[n + 1] = (struct pollfd){ .fd = m->signal_fd, .events = POLLIN };
        for (;;) {
                if (poll(pfd, n + 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(negative_errno(), "poll");
                }
                if (pfd[n + 1].revents) {
                        struct signalfd_siginfo si;
                        if (read(m->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                                log_info("signal %u: shutting down", si.ssi_signo);
                                return 0;
                        }
                }
                if (pfd[n].revents) {
                        uint64_t v;
                        if (read(m->reap_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                                log_debug_errno(negative_errno(), "reap eventfd");
                        conns_reap(m, false);
                }
                for (size_t i = 0; i < n; i++)
                        if (pfd[i].revents & POLLIN)
                                conn_accept(m, &m->listeners[i]);
        }
}

void manager_free(struct manager *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->nlisteners; i++) {
                m->listeners[i].fd = safe_close(m->listeners[i].fd);
                if (m->listeners[i].uri.scheme == XMEM_URI_UNIX)
                        (void)unlink(m->listeners[i].uri.path);
        }
        conns_reap(m, true);
        if (m->journal) {
                /* clean shutdown: compact metadata, then put data and metadata on disk */
                int r = journal_compact(m->journal, &m->regions);
                if (r >= 0)
                        r = pool_sync(&m->pool);
                if (r < 0)
                        log_error_errno(r, "shutdown: flushing the pool");
                else
                        log_info("shutdown: metadata compacted and pool synced");
                journal_close(m->journal);
        }
        if (m->regions.buckets)
                region_table_done(&m->regions);
        chunk_pool_done(&m->chunks);
        pool_close(&m->pool);
        safe_close(m->reap_fd);
        safe_close(m->signal_fd);
        pthread_rwlock_destroy(&m->lock);
        pthread_mutex_destroy(&m->conns_lock);
        access_free(m);
        free(m);
}
