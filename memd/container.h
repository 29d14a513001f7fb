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

struct process {
        pid_t pid;
        int pidfd;             /* readable when the process exits */
        void *exit_src;        /* the manager's sd_event_source on PIDFD */
        struct arena *arena;
        struct store *store;
        bool registered;       /* its faults are served (shim.register done) */
        bool forked;           /* served from a fork clone */
        uint32_t acct_slot;    /* its slot in the accounting page (0: the shared overflow slot) */
        /* The state directory's record (memd/state.h): the start time tells a
         * reused pid apart, the memfd's inode the arena shim.resume must send.
         * PENDING: re-adopted from the state directory by a restarted memd,
         * no arena yet: its shim has not said shim.resume (memd/adopt.c). */
        uint64_t start_time;
        uint64_t memfd_ino;
        bool pending;
        struct container *container;
        struct process *next;
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
        struct process *processes;
        size_t n_processes;
        /* The accounting page (xmem/acct.h, docs/memd.md "Container-wide
         * accounting"): memd's mapping, the memfd handed to every shim, which
         * slots are taken and how many processes share the overflow slot 0. */
        int acct_fd;
        struct xmem_acct *acct;
        bool acct_used[XMEM_ACCT_SLOTS];
        size_t acct_overflow;
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
        struct container *next;
};

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
/* Serve P's faults: its uffd (taken over) and where it mapped the arena. */
int container_register(struct container *c, struct process *p, int uffd, uint64_t base,
                       uint64_t size, struct xmem_error *err);
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
uint64_t container_discard(struct process *p, uint64_t offset, uint64_t len);

/* resize.c: a new local limit (the allowance keeps its share), applied now
 * when raised (then a conversion back if everything fits), after the shims
 * converted when lowered. */
int container_resize(struct container *c, uint64_t local_limit, uint64_t now_usec,
                     struct xmem_error *err);
/* Every second: apply a lowered limit once it fits (or give up after 30 s). */
void container_resize_tick(struct container *c, uint64_t now_usec);
/* Ask every shim of C to convert to TARGET (XMEM_CONVERT_*). */
void container_convert_request(struct container *c, int target);

/* The attach result / list entry, and the stats object. */
json_object *container_to_json(const struct container *c);
json_object *container_stats_json(const struct container *c);
