/* resize.c: a container's local limit changed while it runs (the admin API's
 * resize, docs/memd.md "Resize and conversion"). Lowered: the shims are asked
 * to convert their local memory to file memory (a second available-memory
 * determination, seed 000 claim 11), and the new cgroup limit is written once
 * their local allocations fit it (checked every second, 30 s at most).
 * Raised: the limit is written at once and, when everything converted fits
 * the new allowance again, the shims are asked to convert back. */
#include <errno.h>
#include <string.h>

#include "container.h"
#include "log.h"
#include "macro.h"
#include "memd.h"
#include "residency.h"
#include "state.h"

#define RESIZE_GIVE_UP_USEC (60ULL * 1000000ULL)
/* A lowered limit is written in steps of this much below the usage: each
 * write then reclaims a little (file pages, written back first) and returns
 * soon, rather than holding memd's event loop for the whole way down. */
#define RESIZE_STEP (64ULL << 20)

static uint64_t acct_ld(const uint64_t *v)
{
        return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static uint64_t file_bytes(const struct container *c)
{
        uint64_t n = 0;

        for (uint32_t i = 0; i < XMEM_ACCT_SLOTS; i++)
                n += acct_ld(&c->acct->slots[i].file_bytes);
        return n;
}

void container_convert_request(struct container *c, int target)
{
        uint64_t seq = (acct_ld(&c->acct->h.convert) >> 8) + 1;

        __atomic_store_n(&c->acct->h.convert, (seq << 8) | (uint64_t)target, __ATOMIC_RELEASE);
        log_info("container %s: conversion to %s requested (%llu)", c->id,
                 target == XMEM_CONVERT_FILE ? "file" : "local", (unsigned long long)seq);
}

/* Write LIMIT to the cgroup and follow it in the residency manager. */
static int apply_limit(struct container *c, uint64_t limit)
{
        int r = cgroup_set_limit(c->cg, limit);

        if (r < 0)
                return r;
        residency_track_cgroup(c->residency, c->cg, limit, c->headroom);
        c->applied_limit = limit;
        return 0;
}

int container_resize(struct container *c, uint64_t local_limit, uint64_t now_usec,
                     struct xmem_error *err)
{
        /* the allowance keeps its share of the limit (half by default) */
        uint64_t alloc =
            (uint64_t)((double)c->local_alloc_limit / (double)c->local_limit * (double)local_limit);
        bool lower = local_limit < c->applied_limit;
        int r;

        alloc &= ~4095ULL;
        c->local_limit = local_limit;
        c->local_alloc_limit = alloc;
        c->headroom = container_headroom(local_limit);
        __atomic_store_n(&c->acct->h.local_alloc_limit, alloc, __ATOMIC_RELEASE);
        c->resize_pending = false;
        if (lower) {
                if (acct_ld(&c->acct->h.local_bytes) > alloc && c->file_dirfd >= 0)
                        container_convert_request(c, XMEM_CONVERT_FILE);
                c->resize_pending = true;
                c->resize_since_usec = now_usec;
                /* memd's own share first: the arena pages beyond the new
                 * budget go back to the appliance now */
                residency_track_cgroup(c->residency, c->cg, local_limit, c->headroom);
                container_resize_tick(c, now_usec);
                return 0;
        }
        r = apply_limit(c, local_limit);
        if (r < 0)
                return xmem_error_set(err, r, "container %s: cgroup limit %llu: %s", c->id,
                                      (unsigned long long)local_limit, strerror(-r));
        uint64_t conv = file_bytes(c);
        if (conv && acct_ld(&c->acct->h.local_bytes) + conv <= alloc)
                container_convert_request(c, XMEM_CONVERT_LOCAL);
        return 0;
}

void container_resize_tick(struct container *c, uint64_t now_usec)
{
        struct cgroup_mem mem;

        if (!c->resize_pending)
                return;
        /* the shims' local allocations fit the new allowance: the rest of the
         * usage is file memory the kernel can write back and drop */
        bool fits = acct_ld(&c->acct->h.local_bytes) <= c->local_alloc_limit;
        bool late = now_usec - c->resize_since_usec > RESIZE_GIVE_UP_USEC;

        if (!fits && now_usec - c->resize_since_usec <= RESIZE_GIVE_UP_USEC / 2)
                return;
        uint64_t target = c->local_limit;
        if (cgroup_read_mem(c->cg, &mem) == 0 && mem.usage > target + RESIZE_STEP)
                target = mem.usage - RESIZE_STEP;
        if (target > c->applied_limit)
                target = c->applied_limit;
        int r = cgroup_set_limit(c->cg, target);
        if (r == 0)
                c->applied_limit = target;
        if (r == 0 && target == c->local_limit) {
                c->resize_pending = false;
                log_info("container %s: local limit %llu applied", c->id,
                         (unsigned long long)c->local_limit);
        } else if (late) {
                c->resize_pending = false;
                log_error("container %s: local limit %llu: %s; it stays at %llu", c->id,
                          (unsigned long long)c->local_limit,
                          r < 0 ? strerror(-r) : "usage stayed above it",
                          (unsigned long long)c->applied_limit);
        }
}
