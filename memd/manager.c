/* manager.c: memd's state, its event loop (epoll over the API socket, the
 * connections, signals, a 1 s timer, process pidfds) and the API methods. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "api.h"
#include "arena.h"
#include "container.h"
#include "embedded.h"
#include "json-util.h"
#include "log.h"
#include "manager.h"
#include "pager.h"
#include "store.h"
#include "transport/transport.h"
#include "uffd.h"

enum watch_kind { WATCH_LISTEN = 1, WATCH_SIGNAL, WATCH_TIMER, WATCH_EMBEDDED, WATCH_CONN,
                  WATCH_PROCESS };

struct conn {
        int watch_kind; /* first, like struct process */
        int fd;
        pid_t pid;
        uid_t uid;
        struct conn *next;
};

struct fork_token {
        char token[33];
        struct container *container;
        struct store *store;
        uint64_t size;
        uint64_t created_s;
        struct fork_token *next;
};

struct manager {
        struct manager_config cfg;
        int listen_fd, epoll_fd, signal_fd, timer_fd;
        int watch_listen, watch_signal, watch_timer, watch_embedded; /* epoll tags */
        struct xmem_transport *transports[MANAGER_MAX_APPLIANCES];
        size_t n_transports;
        struct embedded *embedded;
        enum cgroup_version cg_version;
        char *cg_mount;
        struct container *containers;
        struct conn *conns;
        struct fork_token *tokens;
        bool stop;
        int exit_code;
};

/* Results of one method: a JSON result and descriptors to send with it. */
struct reply {
        json_object *result;
        int fds[3];
        size_t n_fds;
        int close_after; /* a descriptor of fds[] memd does not keep (-1) */
};

int manager_new(const struct manager_config *cfg, struct manager **ret, struct xmem_error *err)
{
        struct manager *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        m->cfg = *cfg;
        m->listen_fd = m->epoll_fd = m->signal_fd = m->timer_fd = -1;
        m->watch_listen = WATCH_LISTEN;
        m->watch_signal = WATCH_SIGNAL;
        m->watch_timer = WATCH_TIMER;
        m->watch_embedded = WATCH_EMBEDDED;
        if (!m->cfg.cgroup_root)
                m->cfg.cgroup_root = CGROUP_FS_ROOT;
        r = cgroup_detect(m->cfg.cgroup_root, &m->cg_version, &m->cg_mount);
        if (r < 0) {
                xmem_error_set(err, r, "no memory cgroup hierarchy under %s", m->cfg.cgroup_root);
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

static int epoll_watch(struct manager *m, int fd, void *tag)
{
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

        return epoll_ctl(m->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? negative_errno() : 0;
}

static int start_appliances(struct manager *m, struct xmem_error *err)
{
        size_t n = m->cfg.n_appliances;
        int r;

        if (n == 0 || m->cfg.embedded_size) {
                _cleanup_free_ char *sock = strdup(m->cfg.socket_path);
                const char *rt = getenv("RUNTIME_DIRECTORY");

                if (!sock)
                        return xmem_error_set(err, -ENOMEM, "out of memory");
                r = embedded_start(rt && *rt && !strchr(rt, ':') ? rt : dirname(sock),
                                   m->cfg.embedded_size ?: EMBEDDED_DEFAULT_SIZE,
                                   m->cfg.chunk_size, &m->embedded, err);
                if (r < 0)
                        return r;
                r = epoll_watch(m, m->embedded->pidfd, &m->watch_embedded);
                if (r < 0)
                        return xmem_error_set(err, r, "epoll: %s", strerror(-r));
                m->cfg.appliances[n++] = m->embedded->uri;
        }
        for (size_t i = 0; i < n; i++) {
                r = xmem_transport_open(m->cfg.appliances[i], NULL, &m->transports[i], err);
                if (r < 0)
                        return xmem_error_prefix(err, "appliance %s", m->cfg.appliances[i]);
                m->n_transports++;
                log_info("appliance %s: connected", m->cfg.appliances[i]);
        }
        m->cfg.n_appliances = n;
        return 0;
}

static int start_events(struct manager *m, struct xmem_error *err)
{
        struct itimerspec its = { .it_interval.tv_sec = 1, .it_value.tv_sec = 1 };
        sigset_t mask;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        m->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        m->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        m->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (m->epoll_fd < 0 || m->signal_fd < 0 || m->timer_fd < 0 ||
            timerfd_settime(m->timer_fd, 0, &its, NULL) < 0)
                return xmem_error_set(err, negative_errno(), "event loop: %m");
        if (epoll_watch(m, m->signal_fd, &m->watch_signal) < 0 ||
            epoll_watch(m, m->timer_fd, &m->watch_timer) < 0)
                return xmem_error_set(err, negative_errno(), "epoll: %m");
        return 0;
}

int manager_start(struct manager *m, struct xmem_error *err)
{
        bool activated;
        int r;

        r = start_events(m, err);
        if (r >= 0)
                r = start_appliances(m, err);
        if (r < 0)
                return r;
        r = api_listen(m->cfg.socket_path, &m->listen_fd, &activated, err);
        if (r < 0)
                return r;
        r = epoll_watch(m, m->listen_fd, &m->watch_listen);
        if (r < 0)
                return xmem_error_set(err, r, "epoll: %s", strerror(-r));
        log_info("listening on %s%s, cgroup v%d at %s, chunk %u", m->cfg.socket_path,
                 activated ? " (socket from systemd)" : "", (int)m->cg_version, m->cg_mount,
                 m->cfg.chunk_size);
        return 0;
}

static struct container *find_container(struct manager *m, const char *id)
{
        for (struct container *c = m->containers; c; c = c->next)
                if (strcmp(c->id, id) == 0)
                        return c;
        return NULL;
}

static void remove_container(struct manager *m, struct container *c)
{
        for (struct fork_token **tp = &m->tokens; *tp;) {
                struct fork_token *t = *tp;
                if (t->container == c) {
                        *tp = t->next;
                        store_free(t->store);
                        free(t);
                } else
                        tp = &t->next;
        }
        for (struct container **cp = &m->containers; *cp; cp = &(*cp)->next)
                if (*cp == c) {
                        *cp = c->next;
                        break;
                }
        container_free(c);
}

/* The container whose cgroup holds PID (or below), NULL if none. */
static struct container *container_of_pid(struct manager *m, pid_t pid)
{
        _cleanup_free_ char *path = NULL;

        if (cgroup_pid_path("/proc", pid, m->cg_version, &path) < 0)
                return NULL;
        for (struct container *c = m->containers; c; c = c->next)
                if (container_owns_path(c, path))
                        return c;
        return NULL;
}

static bool process_exited(const struct process *p)
{
        struct pollfd pfd = { .fd = p->pidfd, .events = POLLIN };

        return poll(&pfd, 1, 0) > 0;
}

static int method_attach(struct manager *m, struct api_attach *a, struct reply *rep,
                         struct xmem_error *err)
{
        struct xmem_transport **ts = m->transports;
        size_t n = m->n_transports;
        struct container *c = find_container(m, a->id);
        int r;

        if (c) {
                if (!container_same(c, a))
                        return xmem_error_set(err, -EEXIST, "container %s is attached with other "
                                              "parameters (detach it first)", a->id);
                rep->result = container_to_json(c);
                return 0;
        }
        for (c = m->containers; c; c = c->next)
                if (strcmp(c->cgroup_dir, a->cgroup) == 0)
                        return xmem_error_set(err, -EEXIST, "params.cgroup: %s belongs to "
                                              "container %s", a->cgroup, c->id);
        if (a->appliance) {
                size_t i;
                for (i = 0; i < m->n_transports; i++)
                        if (strcmp(a->appliance, m->cfg.appliances[i]) == 0 ||
                            strcmp(a->appliance, xmem_transport_uri(m->transports[i])) == 0)
                                break;
                if (i == m->n_transports)
                        return xmem_error_set(err, -ENOENT, "params.appliance: %s is not one of "
                                              "memd's appliances", a->appliance);
                ts = &m->transports[i];
                n = 1;
        }
        struct pager_opts po = { .workers = (int)m->cfg.fill_workers,
                                 .poll_us = m->cfg.poll_us };
        r = container_new(a, m->cg_version, m->cg_mount, ts, n, m->cfg.chunk_size, &po, &c, err);
        if (r < 0)
                return r;
        c->next = m->containers;
        m->containers = c;
        log_info("container %s: attached (cgroup %s, local %llu, external %llu)", c->id,
                 c->cgroup_dir, (unsigned long long)c->local_limit,
                 (unsigned long long)c->external);
        rep->result = container_to_json(c);
        return 0;
}

static int method_detach(struct manager *m, struct api_id *a, struct reply *rep,
                         struct xmem_error *err)
{
        struct container *c = find_container(m, a->id);
        size_t live = 0;

        if (!c)
                return xmem_error_set(err, -ENOENT, "params.id: no container %s", a->id);
        for (struct process *p = c->processes, *next; p; p = next) {
                next = p->next;
                if (process_exited(p))
                        container_remove_process(c, p);
                else if (p->registered)
                        live++;
        }
        if (live && !a->force)
                return xmem_error_set(err, -EBUSY, "container %s has %zu live process(es) using "
                                      "external memory: stop them first, or pass force", a->id,
                                      live);
        rep->result = json_object_new_object();
        json_object_object_add(rep->result, "id", json_object_new_string(c->id));
        json_object_object_add(rep->result, "detached", json_object_new_boolean(true));
        log_info("container %s: detached", c->id);
        remove_container(m, c);
        return 0;
}

static int method_list(struct manager *m, struct reply *rep)
{
        json_object *arr = json_object_new_array();

        for (struct container *c = m->containers; c; c = c->next)
                json_object_array_add(arr, container_to_json(c));
        rep->result = json_object_new_object();
        json_object_object_add(rep->result, "containers", arr);
        return 0;
}

static int method_stats(struct manager *m, struct conn *cn, struct api_id *a, struct reply *rep,
                        struct xmem_error *err)
{
        struct container *c = find_container(m, a->id);

        if (cn->uid != 0 && (!c || container_of_pid(m, cn->pid) != c))
                return xmem_error_set(err, -EPERM, "container %s: permission denied: the caller "
                                      "is not in it", a->id);
        if (!c)
                return xmem_error_set(err, -ENOENT, "params.id: no container %s", a->id);
        rep->result = container_stats_json(c);
        return 0;
}

static struct fork_token *take_token(struct manager *m, const char *token, struct container *c)
{
        for (struct fork_token **tp = &m->tokens; *tp; tp = &(*tp)->next)
                if (strcmp((*tp)->token, token) == 0 && (*tp)->container == c) {
                        struct fork_token *t = *tp;
                        *tp = t->next;
                        return t;
                }
        return NULL;
}

static int method_hello(struct manager *m, struct conn *cn, struct api_hello *h,
                        struct reply *rep, struct xmem_error *err)
{
        struct container *c = container_of_pid(m, cn->pid);
        _cleanup_close_ int pidfd = -1, devfd = -1;
        struct store *from = NULL;
        struct process *p;
        uint64_t size;
        char pol[32];
        int r;

        rep->result = json_object_new_object();
        if (!c) {
                json_object_object_add(rep->result, "attached", json_object_new_boolean(false));
                return 0;
        }
        size = c->external;
        if (h->fork_token) {
                struct fork_token *t = take_token(m, h->fork_token, c);
                if (!t)
                        return xmem_error_set(err, -ENOENT, "params.fork_token: unknown or "
                                              "expired token");
                from = t->store;
                size = t->size;
                free(t);
        }
        if ((p = container_find_process(c, cn->pid))) /* exec: the old arena is gone */
                container_remove_process(c, p);
        pidfd = (int)syscall(SYS_pidfd_open, cn->pid, 0);
        devfd = uffd_dev_open();
        if (pidfd < 0 || devfd < 0) {
                store_free(from);
                return xmem_error_set(err, pidfd < 0 ? -ESRCH : devfd,
                                      pidfd < 0 ? "the caller is gone" : "/dev/userfaultfd: %s",
                                      strerror(-devfd));
        }
        (void)fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        r = container_add_process(c, cn->pid, TAKE_FD(pidfd), from, size, &p, err);
        if (r < 0)
                return r;
        p->watch_kind = WATCH_PROCESS;
        if (epoll_watch(m, p->pidfd, p) < 0) {
                container_remove_process(c, p);
                return xmem_error_set(err, negative_errno(), "epoll: %m");
        }
        json_object_object_add(rep->result, "attached", json_object_new_boolean(true));
        json_object_object_add(rep->result, "container", json_object_new_string(c->id));
        json_object_object_add(rep->result, "arena_size", json_object_new_int64((int64_t)p->arena->size));
        json_object_object_add(rep->result, "policy",
                               json_object_new_string(api_policy_format(&c->policy, pol,
                                                                        sizeof(pol))));
        json_object_object_add(rep->result, "local_alloc_limit",
                               json_object_new_int64((int64_t)c->local_alloc_limit));
        json_object_object_add(rep->result, "ratio", json_object_new_int(
                                       c->policy.kind == API_POLICY_RATIO ? (int)c->policy.ratio : 0));
        json_object_object_add(rep->result, "chunk_size", json_object_new_int64(c->chunk_size));
        rep->fds[0] = p->arena->memfd;
        rep->fds[1] = devfd;
        rep->n_fds = 2;
        if (h->version >= 2) { /* the accounting page: docs/api.md "shim.hello" */
                json_object_object_add(rep->result, "external_quota",
                                       json_object_new_int64((int64_t)c->external));
                json_object_object_add(rep->result, "acct_slot",
                                       json_object_new_int((int)p->acct_slot));
                rep->fds[rep->n_fds++] = c->acct_fd;
        }
        rep->close_after = TAKE_FD(devfd);
        log_debug("container %s: process %d: arena of %llu bytes%s", c->id, (int)cn->pid,
                  (unsigned long long)size, from ? " from a fork clone" : "");
        return 0;
}

static int caller_process(struct manager *m, struct conn *cn, struct process **ret,
                          struct xmem_error *err)
{
        struct container *c = container_of_pid(m, cn->pid);
        struct process *p = c ? container_find_process(c, cn->pid) : NULL;

        if (!p)
                return xmem_error_set(err, -ENOENT, "no arena for pid %d (shim.hello first)",
                                      (int)cn->pid);
        *ret = p;
        return 0;
}

static int method_register(struct manager *m, struct conn *cn, struct api_register *a,
                           int *fds, size_t *n_fds, struct reply *rep, struct xmem_error *err)
{
        struct process *p = NULL;
        int r = caller_process(m, cn, &p, err);

        if (r < 0)
                return r;
        *n_fds = 0; /* the uffd is taken over */
        r = container_register(p->container, p, fds[0], a->base, a->size, err);
        if (r < 0)
                return r;
        rep->result = json_object_new_object();
        json_object_object_add(rep->result, "registered", json_object_new_boolean(true));
        return 0;
}

static int method_fork(struct manager *m, struct conn *cn, struct reply *rep,
                       struct xmem_error *err)
{
        struct fork_token *t;
        struct process *p = NULL;
        struct timespec now;
        uint8_t rnd[16];
        int r = caller_process(m, cn, &p, err);

        if (r < 0)
                return r;
        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                return xmem_error_set(err, -EIO, "getrandom failed");
        t = calloc(1, sizeof(*t));
        if (!t)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        r = container_fork_store(p->container, p, &t->store, err);
        if (r < 0) {
                free(t);
                return r;
        }
        for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(t->token + 2 * i, 3, "%02x", rnd[i]);
        clock_gettime(CLOCK_MONOTONIC, &now);
        t->created_s = (uint64_t)now.tv_sec;
        t->container = p->container;
        t->size = p->arena->size;
        t->next = m->tokens;
        m->tokens = t;
        rep->result = json_object_new_object();
        json_object_object_add(rep->result, "token", json_object_new_string(t->token));
        return 0;
}

static int method_run(struct manager *m, struct conn *cn, struct api_request *req, int *fds,
                      size_t *n_fds, struct reply *rep, struct xmem_error *err)
{
        switch (req->method) {
        case API_ATTACH: return method_attach(m, &req->p.attach, rep, err);
        case API_DETACH: return method_detach(m, &req->p.id, rep, err);
        case API_LIST: return method_list(m, rep);
        case API_STATS: return method_stats(m, cn, &req->p.id, rep, err);
        case API_SHIM_HELLO: return method_hello(m, cn, &req->p.hello, rep, err);
        case API_SHIM_REGISTER: return method_register(m, cn, &req->p.reg, fds, n_fds, rep, err);
        case API_SHIM_FORK: return method_fork(m, cn, rep, err);
        case _API_METHOD_MAX: break;
        }
        return -EOPNOTSUPP;
}

static void conn_close(struct manager *m, struct conn *c)
{
        for (struct conn **cp = &m->conns; *cp; cp = &(*cp)->next)
                if (*cp == c) {
                        *cp = c->next;
                        break;
                }
        safe_close(c->fd);
        free(c);
}

static void conn_accept(struct manager *m)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        struct conn *c;
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

        if (fd < 0)
                return;
        c = calloc(1, sizeof(*c));
        if (!c || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
            epoll_watch(m, fd, c) < 0) {
                free(c);
                close(fd);
                return;
        }
        c->watch_kind = WATCH_CONN;
        c->fd = fd;
        c->pid = cred.pid;
        c->uid = cred.uid;
        c->next = m->conns;
        m->conns = c;
}

static void conn_reply_error(struct conn *c, int code, const char *msg)
{
        _cleanup_json_ json_object *o = api_reply_error(code, msg);

        log_debug("pid %d uid %u: %s", (int)c->pid, (unsigned)c->uid, msg);
        (void)api_send(c->fd, o, NULL, 0);
}

/* One datagram: parse, check the caller, run, answer. */
static void conn_handle(struct manager *m, struct conn *c)
{
        static char buf[API_MAX_MESSAGE + 1];
        struct xmem_error err = {};
        struct api_request req;
        struct reply rep = { .close_after = -1 };
        int fds[API_MAX_FDS];
        size_t n_fds = 0;
        ssize_t n = api_recv(c->fd, buf, fds, &n_fds);
        bool parsed;
        int r;

        if (n == -EAGAIN)
                return;
        if (n == -EMSGSIZE || n == -EBADMSG) {
                conn_reply_error(c, (int)n, n == -EMSGSIZE ? "request: message larger than "
                                 "65536 bytes" : "request: too many file descriptors");
                return;
        }
        if (n <= 0) {
                conn_close(m, c);
                return;
        }
        r = api_request_parse(buf, (size_t)n, &req, &err);
        parsed = r >= 0;
        if (r >= 0 && c->uid != 0 && !api_method_unprivileged(req.method))
                r = xmem_error_set(&err, -EPERM, "%s: permission denied: only root may call it "
                                   "(caller uid %u)", api_method_name(req.method),
                                   (unsigned)c->uid);
        else if (r >= 0 && n_fds != api_method_fds(req.method))
                r = xmem_error_set(&err, -EINVAL, "%s: expected %zu file descriptor(s), got %zu",
                                   api_method_name(req.method), api_method_fds(req.method), n_fds);
        if (r >= 0) {
                r = method_run(m, c, &req, fds, &n_fds, &rep, &err);
                if (r < 0 && !err.msg[0])
                        xmem_error_set(&err, r, "%s", strerror(-r));
                if (r < 0)
                        xmem_error_prefix(&err, "%s", api_method_name(req.method));
        }
        for (size_t i = 0; i < n_fds; i++)
                safe_close(fds[i]);
        if (r < 0) {
                conn_reply_error(c, r, err.msg);
        } else {
                _cleanup_json_ json_object *o = api_reply_ok(rep.result);
                r = api_send(c->fd, o, rep.fds, rep.n_fds);
                if (r < 0)
                        log_warning_errno(r, "pid %d: sending the reply: %m", (int)c->pid);
        }
        safe_close(rep.close_after);
        if (parsed)
                api_request_done(&req);
}

static void on_timer(struct manager *m)
{
        uint64_t ticks;
        struct timespec now;

        (void)read(m->timer_fd, &ticks, sizeof(ticks));
        for (struct container *c = m->containers, *next; c; c = next) {
                next = c->next;
                if (!cgroup_exists(c->cg)) {
                        log_info("container %s: cgroup %s is gone, detaching", c->id,
                                 c->cgroup_dir);
                        remove_container(m, c);
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        for (struct fork_token **tp = &m->tokens; *tp;) {
                struct fork_token *t = *tp;
                if ((uint64_t)now.tv_sec - t->created_s > 30) {
                        *tp = t->next;
                        store_free(t->store);
                        free(t);
                } else
                        tp = &t->next;
        }
}

static void on_process_exit(struct manager *m, struct process *p)
{
        struct container *c = p->container;

        log_debug("container %s: process %d exited, freeing its arena", c->id, (int)p->pid);
        container_remove_process(c, p);
}

static void on_signal(struct manager *m)
{
        struct signalfd_siginfo si;

        if (read(m->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                log_info("signal %u: stopping", si.ssi_signo);
                m->stop = true;
        }
}

int manager_run(struct manager *m)
{
        struct epoll_event ev[32];

        while (!m->stop) {
                int n = epoll_wait(m->epoll_fd, ev, ELEMENTSOF(ev), -1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(negative_errno(), "epoll_wait: %m");
                }
                for (int i = 0; i < n && !m->stop; i++) {
                        int *kind = ev[i].data.ptr;
                        int what = *kind; /* KIND may be freed by its handler */
                        switch (what) {
                        case WATCH_LISTEN: conn_accept(m); break;
                        case WATCH_SIGNAL: on_signal(m); break;
                        case WATCH_TIMER: on_timer(m); break;
                        case WATCH_CONN: conn_handle(m, (struct conn *)kind); break;
                        case WATCH_PROCESS: on_process_exit(m, (struct process *)kind); break;
                        case WATCH_EMBEDDED:
                                log_error("embedded appliance exited: the external memory it held "
                                          "is lost; memd stops (faults wait, none reads zeros)");
                                m->exit_code = -ECHILD;
                                m->stop = true;
                                break;
                        }
                        if (what == WATCH_PROCESS || what == WATCH_CONN)
                                break; /* later events may name what was just freed */
                }
        }
        return m->exit_code;
}

void manager_free(struct manager *m)
{
        if (!m)
                return;
        while (m->containers)
                remove_container(m, m->containers);
        while (m->conns)
                conn_close(m, m->conns);
        for (size_t i = 0; i < m->n_transports; i++)
                xmem_transport_close(m->transports[i]);
        embedded_stop(m->embedded);
        safe_close(m->listen_fd);
        safe_close(m->epoll_fd);
        safe_close(m->signal_fd);
        safe_close(m->timer_fd);
        free(m->cg_mount);
        free(m);
}
