/* conn.c: memd's connections. Who is calling comes from the socket: the
 * admin socket (host root only) or a container's own socket, and within a
 * container the peer process by pidfd (SO_PEERPIDFD), never a pid looked up
 * later. Every connection is bounded: in number (in all and per container),
 * in message size, and in rate per container (a container over its rate is
 * not read until it is back under it). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "memd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define ACCEPT_RETRY_USEC 100000ULL /* after EMFILE: wait, do not spin */

static int on_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata);

struct container *call_container(struct api_call *call, const char *id, struct xmem_error *err)
{
        struct container *c = call->conn->container;

        if (c && id && strcmp(id, c->id) != 0) {
                xmem_error_set(err, -EPERM,
                               "params.id: permission denied: this socket acts on "
                               "its own container only");
                return NULL;
        }
        if (c)
                return c;
        if (!id) {
                xmem_error_set(err, -EINVAL, "params.id: required on the admin socket");
                return NULL;
        }
        c = manager_find_container(call->m, id);
        if (!c)
                xmem_error_set(err, -ENOENT, "params.id: no container %s", id);
        return c;
}

bool conn_peer_gone(const struct conn *cn)
{
        return pidfd_exited(cn->pidfd);
}

static void conn_free(struct manager *m, struct conn *cn)
{
        for (struct conn **cp = &m->conns; *cp; cp = &(*cp)->next)
                if (*cp == cn) {
                        *cp = cn->next;
                        break;
                }
        m->n_conns--;
        if (cn->container)
                cn->container->n_conns--;
        jobs_forget_conn(cn);
        sd_event_source_disable_unref(cn->src);
        safe_close(cn->pidfd);
        safe_close(cn->fd);
        free(cn);
}

void conn_close_all(struct manager *m, struct container *c)
{
        for (struct conn *cn = m->conns, *next; cn; cn = next) {
                next = cn->next;
                if (!c || cn->container == c)
                        conn_free(m, cn);
        }
}

/* Refuse FD with one reply, then close it. */
static void refuse(int fd, int code, const char *msg)
{
        _cleanup_json_ json_object *o = api_reply_error(code, msg);

        (void)api_send(fd, o, NULL, 0);
        safe_close(fd);
}

/* The peer of FD: uid, pid and a pidfd that pins the process (SO_PEERPIDFD,
 * kernel 6.5; before it, pidfd_open of SO_PEERCRED's pid, checked alive). */
static int peer_identify(int fd, struct conn *cn)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        int pidfd = -1;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return negative_errno();
        len = sizeof(pidfd);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
                if (errno != ENOPROTOOPT)
                        return negative_errno();
                pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
                if (pidfd < 0)
                        return -ESRCH;
        }
        (void)fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        cn->pidfd = pidfd;
        cn->pid = cred.pid;
        cn->uid = cred.uid;
        return conn_peer_gone(cn) ? -ESRCH : 0;
}

/* Is the peer of a container's socket a process of that container? */
static bool peer_in_container(struct manager *m, const struct conn *cn)
{
        _cleanup_free_ char *path = NULL;

        if (cgroup_pid_path("/proc", cn->pid, m->cg_version, &path) < 0)
                return false;
        /* read after the pidfd was taken: a pid reused since reads "gone" */
        return container_owns_path(cn->container, path) && !conn_peer_gone(cn);
}

static int on_accept_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct manager *m = userdata;

        (void)sd_event_source_set_enabled(m->listen_src, SD_EVENT_ON);
        for (struct container *c = m->containers; c; c = c->next)
                (void)sd_event_source_set_enabled(c->sock_src, SD_EVENT_ON);
        return 0;
}

/* Out of descriptors: stop accepting everywhere for a moment (the pending
 * connections stay queued) instead of spinning on a readable socket. */
static void accept_pause(struct manager *m, int r)
{
        log_warning_errno(r, "accept: %m: not accepting for %llu ms", ACCEPT_RETRY_USEC / 1000);
        (void)sd_event_source_set_enabled(m->listen_src, SD_EVENT_OFF);
        for (struct container *c = m->containers; c; c = c->next)
                (void)sd_event_source_set_enabled(c->sock_src, SD_EVENT_OFF);
        sd_event_source_disable_unref(m->accept_retry_src);
        m->accept_retry_src = NULL;
        (void)sd_event_add_time_relative(m->event, &m->accept_retry_src, CLOCK_MONOTONIC,
                                         ACCEPT_RETRY_USEC, 0, on_accept_retry, m);
}

static void accept_one(struct manager *m, int listen_fd, struct container *c)
{
        struct conn *cn;
        char msg[160];
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), r;

        if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                        accept_pause(m, negative_errno());
                return;
        }
        if (m->n_conns >= m->cfg.bounds.conns ||
            (c && c->n_conns >= m->cfg.bounds.conns_per_container)) {
                snprintf(msg, sizeof(msg), "memd: too many connections (%u%s)",
                         c ? m->cfg.bounds.conns_per_container : m->cfg.bounds.conns,
                         c ? " for this container" : "");
                refuse(fd, -EUSERS, msg);
                return;
        }
        cn = calloc(1, sizeof(*cn));
        if (!cn) {
                refuse(fd, -ENOMEM, "memd: out of memory");
                return;
        }
        cn->m = m;
        cn->fd = fd;
        cn->container = c;
        r = peer_identify(fd, cn);
        if (r >= 0 && !c && cn->uid != 0 && cn->uid != geteuid())
                r = -EPERM;
        if (r >= 0 && c && !peer_in_container(m, cn))
                r = -EACCES;
        if (r >= 0)
                r = sd_event_add_io(m->event, &cn->src, fd, EPOLLIN, on_conn, cn);
        if (r < 0) {
                snprintf(msg, sizeof(msg), "memd: %s",
                         r == -EPERM    ? "permission denied: the admin socket is root's"
                         : r == -EACCES ? "permission denied: the caller is not in this "
                                          "socket's container"
                                        : strerror(-r));
                log_debug("refused a connection from pid %d uid %u%s%s: %s", (int)cn->pid,
                          (unsigned)cn->uid, c ? " on the socket of " : "", c ? c->id : "", msg);
                safe_close(cn->pidfd);
                free(cn);
                refuse(fd, r == -EACCES ? -EPERM : r, msg);
                return;
        }
        cn->next = m->conns;
        m->conns = cn;
        m->n_conns++;
        if (c)
                c->n_conns++;
}

static int on_accept_admin(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        accept_one(userdata, fd, NULL);
        return 0;
}

static int on_accept_container(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct container *c = userdata;

        accept_one(c->manager, fd, c);
        return 0;
}

int conn_listen_admin(struct manager *m, struct xmem_error *err)
{
        int r = api_listen(m->cfg.socket_path, &m->listen_fd, &m->listen_activated, err);

        if (r < 0)
                return r;
        r = sd_event_add_io(m->event, &m->listen_src, m->listen_fd, EPOLLIN, on_accept_admin, m);
        return r < 0 ? xmem_error_set(err, r, "sd-event: %s", strerror(-r)) : 0;
}

int conn_listen_container(struct manager *m, struct container *c, struct xmem_error *err)
{
        sd_event_source *s = NULL;
        int r = sd_event_add_io(m->event, &s, c->sock_fd, EPOLLIN, on_accept_container, c);

        if (r < 0)
                return xmem_error_set(err, r, "sd-event: %s", strerror(-r));
        c->sock_src = s;
        return 0;
}

static void set_container_conns(struct manager *m, struct container *c, int enabled)
{
        for (struct conn *cn = m->conns; cn; cn = cn->next)
                if (cn->container == c && !cn->job) /* one waiting for a job stays paused */
                        (void)sd_event_source_set_enabled(cn->src, enabled);
}

static int on_unthrottle(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct container *c = userdata;

        set_container_conns(c->manager, c, SD_EVENT_ON);
        return 0;
}

/* Take one message from C's token bucket. Empty: C's connections are not
 * read until a message's worth has come back (nothing is refused or lost). */
static bool rate_take(struct manager *m, struct container *c)
{
        const struct manager_bounds *b = &m->cfg.bounds;
        uint64_t now = manager_now_usec(m), wait;

        c->rate_tokens += (double)(now - c->rate_at_usec) * b->rate / 1e6;
        if (c->rate_tokens > b->burst || c->rate_at_usec == 0)
                c->rate_tokens = b->burst;
        c->rate_at_usec = now;
        if (c->rate_tokens >= 1) {
                c->rate_tokens -= 1;
                return true;
        }
        wait = (uint64_t)((1 - c->rate_tokens) * 1e6 / b->rate) + 1;
        set_container_conns(m, c, SD_EVENT_OFF);
        sd_event_source_disable_unref(c->throttle_src);
        c->throttle_src = NULL;
        (void)sd_event_add_time_relative(m->event, (sd_event_source **)&c->throttle_src,
                                         CLOCK_MONOTONIC, wait, 0, on_unthrottle, c);
        return false;
}

static int run_request(struct conn *cn, struct api_request *req, struct api_call *call,
                       struct xmem_error *err)
{
        const struct api_method *meth = req->method;
        unsigned caller = cn->container ? API_CALLER_CONTAINER : API_CALLER_ADMIN;
        int r;

        if (!(meth->callers & caller))
                return xmem_error_set(err, -EPERM, "permission denied: %s",
                                      cn->container
                                          ? "a container's socket serves only its own shim and "
                                            "stats"
                                          : "a shim calls it on its container's own socket");
        if (call->n_fds < meth->n_fds || call->n_fds > meth->n_fds + meth->n_fds_optional)
                return xmem_error_set(err, -EINVAL, "expected %zu file descriptor(s), got %zu",
                                      meth->n_fds + meth->n_fds_optional, call->n_fds);
        if (cn->container && conn_peer_gone(cn))
                return xmem_error_set(err, -ESRCH, "the calling process is gone");
        r = meth->run(call, &req->p, err);
        if (r < 0 && !err->msg[0])
                xmem_error_set(err, r, "%s", strerror(-r));
        return r;
}

int conn_dispatch(struct manager *m, struct conn *cn, const char *buf, ssize_t n, int *fds,
                  size_t n_fds)
{
        struct xmem_error err = {};
        struct api_request req;
        struct api_call call = {.m = m, .conn = cn, .fds = fds, .n_fds = n_fds, .close_after = -1};
        bool parsed = false;
        int r;

        if (n < 0) {
                r = (int)n;
                xmem_error_set(&err, r,
                               n == -EMSGSIZE ? "request: message larger than %d bytes"
                                              : "request: too many file descriptors",
                               API_MAX_MESSAGE);
        } else {
                r = api_request_parse(buf, (size_t)n, &req, &err);
                parsed = r >= 0;
                if (parsed && (r = run_request(cn, &req, &call, &err)) < 0)
                        xmem_error_prefix(&err, "%s", req.method->name);
        }
        for (size_t i = 0; i < call.n_fds; i++)
                safe_close(fds[i]);
        if (r != API_DEFERRED) /* else the job's completion replies */
                conn_reply(cn, r, &call, &err);
        safe_close(call.close_after);
        if (parsed)
                api_request_done(&req);
        return r == API_DEFERRED ? 0 : r;
}

void conn_reply(struct conn *cn, int r, struct api_call *call, const struct xmem_error *err)
{
        if (r < 0) {
                _cleanup_json_ json_object *o = api_reply_error(r, err->msg);
                log_debug("pid %d uid %u%s%s: %s", (int)cn->pid, (unsigned)cn->uid,
                          cn->container ? " of " : "", cn->container ? cn->container->id : "",
                          err->msg);
                json_object_put(call->result);
                call->result = NULL;
                (void)api_send(cn->fd, o, NULL, 0);
        } else {
                _cleanup_json_ json_object *o = api_reply_ok(call->result);
                int s = api_send(cn->fd, o, call->reply_fds, call->n_reply_fds);
                call->result = NULL; /* o's now */
                if (s < 0)
                        log_warning_errno(s, "pid %d: sending the reply: %m", (int)cn->pid);
        }
}

void conn_pause(struct conn *cn, struct job *j)
{
        cn->job = j;
        (void)sd_event_source_set_enabled(cn->src, SD_EVENT_OFF);
}

void conn_resume(struct conn *cn)
{
        cn->job = NULL;
        /* throttled meanwhile: on_conn pauses it again until the refill */
        (void)sd_event_source_set_enabled(cn->src, SD_EVENT_ON);
}

/* One datagram: receive it, then dispatch (which answers). */
static void conn_handle(struct manager *m, struct conn *cn)
{
        static char buf[API_MAX_MESSAGE + 1];
        int fds[API_MAX_FDS];
        size_t n_fds = 0;
        ssize_t n = api_recv(cn->fd, buf, fds, &n_fds);

        if (n == -EAGAIN || n == -EINTR)
                return;
        if (n == 0 || (n < 0 && n != -EMSGSIZE && n != -EBADMSG)) {
                conn_free(m, cn);
                return;
        }
        (void)conn_dispatch(m, cn, buf, n, fds, n_fds);
}

static int on_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct conn *cn = userdata;

        if (cn->container && !rate_take(cn->m, cn->container))
                return 0;
        conn_handle(cn->m, cn);
        return 0;
}
