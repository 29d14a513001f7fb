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
        /* 1 + its arena's index in the snapshot it was restored from (0: none):
         * after an exec (a wrapper, a shell) the new image gets it again */
        size_t restore_slot;
        struct container *container;
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
        uint64_t arena_size;      /* each new process's arena: external_max (resize within it) */
        struct arena_quota quota; /* external, in pages: what its arenas have written */
        struct api_policy policy;
        char *appliance;   /* NULL: striped over all of memd's appliances */
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

/* The attach result / list entry, and the stats object. */
json_object *container_to_json(const struct container *c);
json_object *container_stats_json(const struct container *c);
