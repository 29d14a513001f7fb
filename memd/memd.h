/* memd.h: memd's own state, shared by the files that make up the daemon:
 * manager.c (start, event loop, containers), conn.c (sockets, callers,
 * bounds), ctrsock.c (each container's socket directory), methods.c (the
 * method table and the admin methods), methods-shim.c (the shim methods). */
#pragma once

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "api.h"
#include "cgroup.h"
#include "container.h"
#include "manager.h"

struct embedded;
struct xmem_transport;

/* One connection, on the admin socket (container NULL) or a container's. */
struct conn {
        struct manager *m;
        sd_event_source *src;
        int fd;
        struct container *container; /* whose socket it came in on; NULL: admin */
        int pidfd;                   /* the peer process (SO_PEERPIDFD), -1: none */
        pid_t pid;                   /* its pid in memd's namespace, at connect */
        uid_t uid;
        /* A method's job on the container's worker (memd/worker.c): the
         * connection is not read until its reply is sent. */
        struct job *job;
        struct conn *next;
};

#define FORK_TOKEN_TTL_USEC (30 * 1000000ULL) /* a token unused this long expires */

struct fork_token {
        char token[API_TOKEN_LEN + 1];
        struct container *container;
        struct store *store;
        uint8_t *written;      /* the parent's written pages (container_fork_store) */
        uint64_t created_usec; /* manager_now_usec */
        uint64_t size;
        struct fork_token *next;
};

struct manager {
        struct manager_config cfg;
        sd_event *event;
        int listen_fd;
        bool listen_activated; /* the admin socket came from systemd */
        sd_event_source *listen_src, *embedded_src, *timer_src, *accept_retry_src;
        struct xmem_transport *transports[MANAGER_MAX_APPLIANCES];
        size_t n_transports;
        struct embedded *embedded;
        enum cgroup_version cg_version;
        char *cg_mount;
        char *run_dir;        /* the admin socket's directory */
        char *containers_dir; /* RUN_DIR/containers, or cfg.container_dir */
        int containers_dirfd;
        struct container *containers;
        struct conn *conns;
        size_t n_conns;
        struct fork_token *tokens;
        int exit_code;
        int state_dirfd, state_lockfd; /* memd/state.c */
        int snap_dirfd;                /* STATE_DIR/snapshots: manifests (memd/manifest.c) */
        bool keep; /* stopping by signal: live containers' regions stay (container_keep) */
        struct metrics *metrics; /* memd/metrics.c; NULL: off */
        /* The containers' worker threads (memd/worker.c) and the jobs they
         * finished, for the event loop (JOBS_EFD says there are some). */
        pthread_mutex_t work_lock;
        pthread_cond_t work_cond;
        unsigned n_workers;
        pthread_mutex_t jobs_lock;
        struct job *jobs_done, **jobs_tail;
        struct loop_call *loop_calls; /* worker_call_loop's, under work_lock */
        int jobs_efd;
        sd_event_source *jobs_src;
};

/* A method handler's return: its job runs on the container's worker and
 * the reply is sent when it is done (memd/worker.c). */
#define API_DEFERRED 1

/* What a method handler gets: the caller and the reply it builds. */
struct api_call {
        struct manager *m;
        struct conn *conn;
        int *fds; /* received; a handler that keeps fds[i] sets it to -1 */
        size_t n_fds;
        json_object *result;
        int reply_fds[3];
        size_t n_reply_fds;
        int close_after; /* a descriptor of reply_fds[] memd does not keep (-1) */
};

/* The calling container: the socket's, or for an admin caller params.id's.
 * ERR set (ENOENT, EPERM) when there is none it may act on. */
struct container *call_container(struct api_call *call, const char *id, struct xmem_error *err);

/* manager.c */
/* The event loop's monotonic clock, in µs (one reading per iteration). */
uint64_t manager_now_usec(struct manager *m);
struct container *manager_find_container(struct manager *m, const char *id);
void manager_remove_container(struct manager *m, struct container *c);
/* Watch P's pidfd: it leaves when the process exits. */
int manager_watch_process(struct manager *m, struct process *p);

/* conn.c */
int conn_listen_admin(struct manager *m, struct xmem_error *err);
/* Accept on C's socket (its listen_fd set by ctrsock_open). */
int conn_listen_container(struct manager *m, struct container *c, struct xmem_error *err);
/* Close every connection of C (NULL: all). */
void conn_close_all(struct manager *m, struct container *c);
/* One request of CN (N bytes of BUF, or -EMSGSIZE/-EBADMSG as api_recv
 * said; FDS taken over): check the caller, run the method, send the reply on
 * CN->fd. Returns the method's result (0 or -errno). */
int conn_dispatch(struct manager *m, struct conn *cn, const char *buf, ssize_t n, int *fds,
                  size_t n_fds);
/* CN's reply: R < 0: ERR; else CALL's result and descriptors. */
void conn_reply(struct conn *cn, int r, struct api_call *call, const struct xmem_error *err);
/* CN waits for J: not read until conn_resume. */
void conn_pause(struct conn *cn, struct job *j);
void conn_resume(struct conn *cn);
/* Has the process behind PIDFD exited (or can it not be told: -1)? */
static inline bool pidfd_exited(int pidfd)
{
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};

        return pidfd < 0 || poll(&pfd, 1, 0) != 0;
}
/* Has the process behind CN exited (its pid may be reused)? */
bool conn_peer_gone(const struct conn *cn);

/* ctrsock.c: RUN_DIR/containers/ID/memd.sock, mode 0666 in a 0755 directory
 * of its own (bind-mounted read-only into the container at /run/xmem). */
int ctrsock_open_root(struct manager *m, struct xmem_error *err);
int ctrsock_open(struct manager *m, struct container *c, struct xmem_error *err);
/* Its path on the host (snprintf's return). */
int ctrsock_path(const struct manager *m, const struct container *c, char *buf, size_t len);
void ctrsock_close(struct manager *m, struct container *c);

/* methods-shim.c */
/* Free the fork tokens of C (NULL: of every container) made before
 * BEFORE_USEC (UINT64_MAX: all of them). */
void fork_tokens_free(struct manager *m, const struct container *c, uint64_t before_usec);
int method_hello(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_register(struct api_call *call, union api_params *p, struct xmem_error *err);
/* Is FD a userfaultfd? */
bool is_userfaultfd(int fd);
int method_fork(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_discard(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_alias(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_file(struct api_call *call, union api_params *p, struct xmem_error *err);

/* worker.c, the event loop's side: finished jobs come back through an
 * eventfd. job_defer queues J (a method's, J->run/done/method set) on the
 * caller's container's worker with the caller's connection paused: a method
 * returns what it returns. jobs_cancel: C is detached; its jobs finished are
 * finished now, the others are cancelled (the worker abandons them). */
int jobs_start(struct manager *m, struct xmem_error *err);
void jobs_stop(struct manager *m);
int job_defer(struct api_call *call, struct job *j);
void jobs_cancel(struct manager *m, struct container *c);
/* CN is closed: a job of it replies to nobody. */
void jobs_forget_conn(struct conn *cn);
/* From a worker: FN(M, DATA) run on the event loop (or in workers_wait
 * while memd stops), its return returned. FN must not wait for a worker. */
int worker_call_loop(struct manager *m, int (*fn)(struct manager *m, void *data), void *data);

/* adopt.c: re-adoption after a restart (docs/memd.md "State directory") */
/* Read the state directory: every container in it attached again, its live
 * processes waiting for shim.resume; a bad file moved aside. */
int adopt_all(struct manager *m, struct xmem_error *err);
int method_resume(struct api_call *call, union api_params *p, struct xmem_error *err);

/* resize.c: the limits of a running container */
int method_resize(struct api_call *call, union api_params *p, struct xmem_error *err);
/* move.c: a running container's regions to another appliance */
int method_move(struct api_call *call, union api_params *p, struct xmem_error *err);
/* checkpoint.c, restore.c: checkpoints (docs/memd.md "Checkpoints") */
int method_checkpoint(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_snapshots(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_delete_snapshot(struct api_call *call, union api_params *p, struct xmem_error *err);
int method_restore(struct api_call *call, union api_params *p, struct xmem_error *err);
/* Freeze C's cgroup (its freezer found through its process PID) until every
 * task is frozen; thaw it (always, after a freeze that succeeded). */
int checkpoint_freeze(struct manager *m, struct container *c, pid_t pid, struct cgroup_freezer *f,
                      struct xmem_error *err);
void checkpoint_thaw(struct container *c, struct cgroup_freezer *f);
