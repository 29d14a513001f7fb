/* paged.h: play memd for one child process (test_pager, test_fork and
 * bench-pager): an arena over a store, its residency manager and a pager in
 * this process; a forked child, moved into a memory cgroup first if asked,
 * maps the arena's memfd at a fixed address, registers its own userfaultfd on
 * it and hands that over (SCM_RIGHTS), as the shim does with memd. Returns
 * -errno; no Criterion here, so the benchmark links it too. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "error.h"
#include "pager.h"
#include "residency.h"
#include "store.h"
#include "transport/transport.h"

struct cgroup;

struct paged {
        struct xmem_transport *t; /* NULL with a local file store */
        struct store *store;
        struct arena *arena;
        struct residency *res;
        struct pager *pager;
        pid_t pid; /* the child; 0: none (or reaped) */
        int sock;  /* to the child (in the child: to the parent); -1: none */
};
#define PAGED_INIT { .sock = -1 }

struct paged_opts {
        const char *uri; /* the appliance; NULL: a memfd file store (the engine alone) */
        uint64_t size, budget;
        uint32_t chunk;                /* store and arena chunk */
        const struct pager_opts *pager; /* NULL: defaults */
        uint64_t base;                 /* where the child maps the arena */
        bool blocking_uffd;            /* hand over a blocking uffd (a shim may) */
        /* Called on the new store before the arena exists; the arena then asks
         * the store for every chunk (not fresh). */
        int (*prefill)(struct store *s, uint64_t size);
};

/* Runs in the child on the mapped arena once the pager serves it; SOCK talks
 * to the parent. Returns the child's exit status. */
typedef int (*paged_child_fn)(char *m, uint64_t size, int sock, void *arg);

/* A fresh child PREFIX-TAG-PID of our own memory cgroup, limited to LIMIT
 * (v1 limit_in_bytes, v2 memory.max + memory.high); a leftover of a killed
 * run is reused. */
int paged_cgroup_new(const char *prefix, const char *tag, uint64_t limit, struct cgroup **ret);

/* The store (and transport), arena, residency manager and pager. */
int paged_open(struct paged *p, const struct paged_opts *o, struct xmem_error *err);
/* Fork the child, move it into CG (NULL: stay), receive its uffd and attach
 * it to the arena. The child waits for paged_serve before running FN. On
 * failure the child is killed and reaped. */
int paged_spawn(struct paged *p, const struct paged_opts *o, const struct cgroup *cg,
                paged_child_fn fn, void *arg);
/* Start the pager and the evictor on the arena and let the child run. */
int paged_serve(struct paged *p);
/* Reap the child: its status in *RET_STATUS. */
int paged_wait(struct paged *p, int *ret_status);
/* Kill a child still running, stop and free everything. */
void paged_free(struct paged *p);

/* Helpers of the children and drivers: a monotonic clock in seconds, and a
 * xorshift64 step (reproducible pseudo-random pages). */
static inline double paged_now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t paged_xorshift(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}
