/* container.h: one attached container: its cgroup and limits, its residency
 * manager (the local budget over all its processes' arenas) and its processes,
 * each with its own arena (memfd) backed by its own appliance region(s). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include <xmem/acct.h>

#include "api.h"
#include "arena.h"
#include "cgroup.h"
#include "error.h"

struct store;
struct pager;
struct residency;
struct xmem_transport;
struct manager;
struct worker;
struct conn;
struct api_call;

/* A piece of work for a container's worker thread (memd/worker.c, docs/memd.md
 * "Off the event loop"): a process's teardown, or the slow part of a shim
 * method whose caller waits for the reply meanwhile. */
struct job {
        /* On the worker: the part that may wait for an appliance. A job
         * without DONE belongs to RUN (it may be freed there). */
        void (*run)(struct job *j);
        /* On the event loop once RUN returned: the method's reply, as a
         * method handler builds it (CALL->conn NULL: nobody waits). */
        int (*done)(struct job *j, struct api_call *call, struct xmem_error *err);
        /* On the worker instead of DONE when the job was cancelled (its
         * container detached): free what J holds (not J). NULL: nothing. */
        void (*abandon)(struct job *j);
        const char *method; /* the reply's error prefix */
        struct container *container;
        /* The event loop's: the connection waiting for the reply and the
         * caller's process, each NULL once it is gone (closed, exited). */
        struct conn *conn;
        struct process *process;
        bool cancelled, finished; /* under the worker's lock / the manager's jobs_lock */
        struct job *next;         /* the worker's queue, then the completion queue */
        struct job *loop_next;    /* container.jobs (event loop only) */
};

struct process {
        pid_t pid;
        int pidfd;             /* readable when the process exits */
        void *exit_src;        /* the manager's sd_event_source on PIDFD */
        struct arena *arena;
        struct store *store;
        bool registered;       /* its faults are served (shim.register done) */
        bool registering;      /* shim.register/shim.resume is on the worker */
        bool served;           /* the worker's view: in the pager and residency */
        bool forked;           /* served from a fork clone */
        uint32_t acct_slot;    /* its slot in the accounting page (0: the shared overflow slot) */
        uint64_t convert_told; /* the last conversion outcome of its slot memd logged */
        /* The state directory's record (memd/state.h): the start time tells a
         * reused pid apart, the memfd's inode the arena shim.resume must send.
         * PENDING: re-adopted from the state directory by a restarted memd,
         * no arena yet: its shim has not said shim.resume (memd/adopt.c). */
        uint64_t start_time;
        uint64_t memfd_ino;
        bool pending;
        /* 1 + its arena's index in the snapshot it was restored from (0: none):
         * after an exec (a wrapper, a shell) the new image gets it again */
        size_t restore_slot;
        struct container *container;
        struct job teardown; /* its teardown on the worker (memd/reap.c) */
        struct process *next;
};

/* A snapshot's arena a new process of the container starts from (restore
 * --new, io.xmem.restore): a copy-on-write clone of its regions, the pages
 * with data (a bit each), where it was mapped and how much of it was used. */
struct restore_arena {
        struct store *store;
        uint8_t *written;
        uint64_t base, size, used;
        size_t index; /* its place in the snapshot's manifest */
};

struct restore_plan {
        char *name;
        size_t n, next; /* arenas, and the next one to hand out */
        struct restore_arena *arenas;
};

struct container {
        char *id;
        char *cgroup_dir;  /* as attached: the absolute directory */
        char *cgroup_path; /* the same relative to the memory hierarchy ("/xmem/web-1") */
        struct cgroup *cg;
        uint64_t local_limit, external, local_alloc_limit, headroom;
        /* resize (memd/resize.c): the limit the cgroup has now, and a lowered
         * one waiting for the shims' conversion */
        uint64_t applied_limit;
        bool resize_pending;
        uint64_t resize_since_usec;
        uint64_t resize_local_seen; /* the shims' local bytes at the last check */
        /* conversion (memd/resize.c): the last request's time, and an
         * operator's "convert --to file" that automatic conversion back
         * leaves alone until a resize or "convert --to local" */
        uint64_t convert_at_usec;
        bool convert_pinned;
        /* A checkpoint, rollback or move on its worker (memd/checkpoint.c):
         * its method while it runs (another one is EBUSY); a checkpoint's name */
        const char *lifecycle_busy;
        const char *checkpoint_name;
        /* A lowered limit's write on the worker (it reclaims: seconds) */
        struct {
                struct job job;
                uint64_t target;
                int r;      /* its result, once BUSY is false again */
                bool busy;  /* queued or running (atomic) */
                bool ready; /* a result the event loop has not looked at */
        } step;
        uint64_t arena_size;      /* each new process's arena: external_max (resize within it) */
        struct arena_quota quota; /* external, in pages: what its arenas have written */
        struct api_policy policy;
        char *appliance;   /* NULL: striped over all of memd's appliances */
        char *file_dir;    /* file memory's directory (NULL: none) and its fd (O_PATH) */
        int file_dirfd;
        struct xmem_transport **transports; /* borrowed from the manager */
        size_t n_transports;
        uint32_t chunk_size; /* the stripe over appliances (the arena's state is per page) */
        struct residency *residency;
        struct pager *pager; /* its own fault reader and fill workers */
        struct restore_plan *restore; /* NULL: its processes start with fresh arenas */
        char *restore_name;           /* the snapshot it was started from (NULL: none) */
        struct process *processes;
        size_t n_processes;
        /* The accounting page (xmem/acct.h, docs/memd.md "Container-wide
         * accounting"): memd's mapping, the memfd handed to every shim, which
         * slots are taken and how many processes share the overflow slot 0. */
        int acct_fd;
        struct xmem_acct *acct;
        bool acct_used[XMEM_ACCT_SLOTS];
        size_t acct_overflow;
        /* Across a restart (memd/acct.c): the page's memfd inode (in the
         * state file), the last memd's page's while shim.resume may still
         * hand it back, whether a new process got this memd's page already
         * (then the old one is not taken back), and the page replaced. */
        uint64_t acct_ino, acct_awaiting_ino;
        bool acct_fresh_used;
        struct xmem_acct *acct_spare;
        /* Its worker thread (memd/worker.c): teardowns and slow methods
         * off the event loop; at detach it frees the container. JOBS: the
         * method jobs whose replies are not sent yet (event loop only). */
        struct worker *worker;
        struct job *jobs;
        /* Its own API socket (memd/ctrsock.c) and the bounds on its callers
         * (memd/conn.c). */
        int sock_dirfd, sock_fd;
        void *sock_src, *throttle_src; /* sd_event_source */
        size_t n_conns, n_fork_tokens;
        double rate_tokens;
        uint64_t rate_at_usec;
        struct manager *manager;
        /* Its state file exists: every change of its processes rewrites it
         * (memd/state.c) before memd acts on the change. */
        bool saved;
        bool oom_unpaused; /* detached: the OOM pause is off again (memd/manager.c) */
        struct container *next;
};

/* acct.c: the accounting page (docs/memd.md "Container-wide accounting") */
int acct_create(struct container *c, struct xmem_error *err);
void acct_free(struct container *c);
void acct_take_slot(struct container *c, struct process *p);
/* SLOT is taken by a re-adopted process. */
void acct_mark_slot(struct container *c, uint32_t slot);
void acct_release_slot(struct container *c, struct process *p);
/* shim.resume handed FD back: if it is the page the last memd made for C
 * (its inode, sealed, this version) and no new process uses C's fresh page
 * yet, it becomes C's page again (limits rewritten, the slots of processes
 * that did not come back cleared). -EPERM, -EPROTO: not that page; -EBUSY:
 * the fresh page is in use. */
int acct_adopt(struct container *c, int fd);

/* worker.c: C's worker thread (docs/memd.md "Off the event loop"). Run J
 * there (J->container C), after what is queued; inline when there can be no
 * thread. */
void worker_queue(struct container *c, struct job *j);
/* C is unlinked from memd: its worker runs what is queued, then frees C
 * (container_free's work). */
void worker_detach(struct container *c);
/* Wait (C's thread) until what is queued is done and the thread is gone. */
void worker_stop(struct container *c);
/* Wait up to TIMEOUT_MS for every worker to finish: false when some still run. */
bool workers_wait(struct manager *m, unsigned timeout_ms);
/* P leaves C: C's method jobs forget it (their DONE sees process NULL). */
void jobs_forget_process(struct container *c, struct process *p);

/* reap.c: teardown off the event loop. P, unlinked from C, is torn down
 * (pager, residency, arena, regions) on C's worker. */
void reaper_queue(struct container *c, struct process *p);
/* The same for a store alone (a fork token's clone). */
void reaper_queue_store(struct container *c, struct store *s);
/* Tear P down now (its pager entry, residency, arena, regions, pidfd). */
void process_teardown(struct container *c, struct process *p);

/* restore.c: the clones of snapshot NAME for C's next processes (ERR: an
 * unknown snapshot, appliances or stripe that are not C's); taken one per
 * shim.hello, in order (false: none left, the plan is freed). */
int restore_plan_make(struct manager *m, struct container *c, const char *name,
                      struct xmem_error *err);
bool restore_plan_take(struct container *c, struct restore_arena *ret);
/* The arena INDEX of C's snapshot cloned again, first in line (a process
 * that had it exec'd: its new image takes it). */
int restore_plan_again(struct manager *m, struct container *c, size_t index,
                       struct xmem_error *err);
void restore_plan_free(struct restore_plan *p);

/* Headroom kept free under the local limit: limit/8, from 4 MiB to 64 MiB. */
uint64_t container_headroom(uint64_t local_limit);

struct pager_opts;

/* Write the limit to CG_DIR (which must be a memory cgroup under MOUNT) and
 * start the container's residency manager and pager (PAGER_OPTS may be
 * NULL). Its regions are striped over TRANSPORTS in STRIPE bytes. ERR says
 * what failed. */
int container_new(const struct api_attach *a, enum cgroup_version version, const char *mount,
                  struct xmem_transport **transports, size_t n_transports, uint32_t stripe,
                  const struct pager_opts *pager_opts, struct container **ret,
                  struct xmem_error *err);
/* Frees every process's arena and regions, stops the residency manager. */
void container_free(struct container *c);

/* Same parameters as at attach (idempotent re-attach)? */
bool container_same(const struct container *c, const struct api_attach *a);
/* Is the cgroup PATH (relative to the hierarchy) this container's or below it? */
bool container_owns_path(const struct container *c, const char *path);

/* A new process (PIDFD taken over): an arena of SIZE on fresh region(s), or,
 * with FROM_STORE (taken over), on a clone made at a fork, where WRITTEN (a
 * bit per page) says which pages the parent had written (not charged to the
 * child until it writes them itself). */
int container_add_process(struct container *c, pid_t pid, int pidfd, struct store *from_store,
                          const uint8_t *written, uint64_t size, struct process **ret,
                          struct xmem_error *err);
struct process *container_find_process(struct container *c, pid_t pid);
/* P's start time and its arena memfd's inode, for the state file. */
int container_process_record(struct process *p, struct xmem_error *err);
/* shim.register's checks on the event loop: P's uffd (taken over, also on
 * failure) and where it mapped the arena; P is registering from then on. */
int container_register_prepare(struct process *p, int uffd, uint64_t base, uint64_t size,
                               struct xmem_error *err);
/* On C's worker: serve P's faults (residency, pager; may wait for the
 * evictor's lock during a write-back). */
int container_serve(struct container *c, struct process *p, struct xmem_error *err);
/* C's processes are all known (attached, or re-adopted with theirs): from
 * here an OOM with nothing to evict is the container's own. Once. */
void container_ready(struct container *c);
/* P is no longer a re-adopted process awaiting shim.resume (resumed, or gone). */
void process_pending_end(struct container *c, struct process *p);
void container_remove_process(struct container *c, struct process *p);
/* A clean stop (SIGTERM): write back every dirty page of C's arenas and leave
 * its regions and state file for the next memd (container_free then frees
 * nothing on the appliances). */
void container_keep(struct container *c);

/* Fork support: write back P's dirty pages and clone its store; *RET_WRITTEN
 * (malloc'd) is the bitmap container_add_process takes for the child. */
int container_fork_store(struct container *c, struct process *p, struct store **ret,
                         uint8_t **ret_written, struct xmem_error *err);
/* Process P gave [OFFSET, OFFSET+LEN) of its arena back (shim.discard); the
 * number of pages uncharged. */
/* shim.alias pin: P's arena pages [OFF, OFF+LEN) resident and dirty at once
 * (zeros where nothing was written: one fallocate, not a fault per page of
 * the shim's copy), charged to the quota (-EDQUOT, ERR set: no room). */
int container_alias_fill(struct process *p, uint64_t off, uint64_t len, struct xmem_error *err);
uint64_t container_discard(struct process *p, uint64_t offset, uint64_t len);

/* resize.c: a new local limit (the allowance keeps its share), applied now
 * when raised (then a conversion back if everything fits), after the shims
 * converted when lowered. */
int container_resize(struct container *c, uint64_t local_limit, uint64_t now_usec,
                     struct xmem_error *err);
/* Every second: apply a lowered limit once it fits (or give up after 30 s). */
void container_resize_tick(struct container *c, uint64_t now_usec);
/* checkpoint.c: EBUSY while a checkpoint of C runs on its worker. */
int container_lifecycle_check(const struct container *c, struct xmem_error *err);
/* Ask every shim of C to convert to TARGET (XMEM_CONVERT_*). */
void container_convert_request(struct container *c, int target);
/* Every second: memd's own conversion decision (docs/memd.md "Automatic
 * conversion"). */
void container_convert_tick(struct container *c, uint64_t now_usec);

/* The attach result / list entry, and the stats object. */
json_object *container_to_json(const struct container *c);
json_object *container_stats_json(const struct container *c);
