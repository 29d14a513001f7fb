/* resize.c: the admin method resize (docs/api.md): a running container's
 * limits, each field given a change.
 * local_limit (docs/memd.md "Resize and conversion"): lowered, the shims are
 * asked to convert their local memory to file memory (a second
 * available-memory determination, seed 000 claim 11), and the new cgroup
 * limit is written once their local allocations fit it (checked every
 * 100 ms, 30 s at most); raised, the limit is written at once and, when
 * everything converted fits the new allowance again, the shims are asked to
 * convert back.
 * external: the external quota, up to its arenas' size (external_max, fixed
 * at attach) and down to what its processes use (hot add and remove of
 * external memory, seed 003 claims 2 and 3). Every process's arena spans
 * external_max, so a change is a change of the quota the shims (the
 * accounting page) and memd (its count of written pages) enforce: nothing is
 * mapped or moved. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "container.h"
#include "errno-name.h"
#include "log.h"
#include "macro.h"
#include "memd.h"
#include "parse.h"
#include "residency.h"
#include "state.h"

#define RESIZE_GIVE_UP_USEC (120ULL * 1000000ULL)
/* A lowered limit is written in steps of this much below the usage: each
 * write reclaims a little (file pages, written back first), so a raise or a
 * detach waits for one step at most, not the whole way down. */
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

        c->convert_at_usec = c->manager ? manager_now_usec(c->manager) : 0;

        __atomic_store_n(&c->acct->h.convert, (seq << 8) | (uint64_t)target, __ATOMIC_RELEASE);
        log_info("container %s: conversion to %s requested (%llu)", c->id,
                 target == XMEM_CONVERT_FILE        ? "file"
                 : target == XMEM_CONVERT_APPLIANCE ? "appliance"
                                                    : "local",
                 (unsigned long long)seq);
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
        c->convert_pinned = false;
        c->headroom = container_headroom(local_limit);
        __atomic_store_n(&c->acct->h.local_alloc_limit, alloc, __ATOMIC_RELEASE);
        c->resize_pending = false;
        if (lower) {
                if (acct_ld(&c->acct->h.local_bytes) > alloc && c->file_dirfd >= 0)
                        container_convert_request(c, XMEM_CONVERT_FILE);
                c->resize_pending = true;
                c->resize_since_usec = now_usec;
                c->resize_local_seen = UINT64_MAX;
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

/* On C's worker: one step of a lowered limit. Writing memory.limit_in_bytes
 * below the usage reclaims first, and reclaiming file pages that are dirty
 * waits for their write-back: 20 s and more for 64 MiB of a file under
 * random writes (v1), which the event loop must not wait for. */
static void step_run(struct job *j)
{
        struct container *c = (struct container *)((char *)j - offsetof(struct container, step.job));

        c->step.r = cgroup_set_limit(c->cg, c->step.target);
        c->step.ready = true;
        __atomic_store_n(&c->step.busy, false, __ATOMIC_RELEASE);
}

/* The step that finished: true when the resize is over. */
static bool step_done(struct container *c, bool late)
{
        int r = c->step.r;

        c->step.ready = false;
        if (!c->resize_pending) { /* raised meanwhile: the step undone */
                (void)cgroup_set_limit(c->cg, c->applied_limit);
                return true;
        }
        if (r == 0)
                c->applied_limit = c->step.target;
        log_debug("container %s: local limit step to %llu: %s", c->id,
                  (unsigned long long)c->step.target, r < 0 ? strerror(-r) : "written");
        if (r == 0 && c->step.target == c->local_limit) {
                log_info("container %s: local limit %llu applied", c->id,
                         (unsigned long long)c->local_limit);
                return true;
        }
        if (late) {
                log_error("container %s: local limit %llu: %s; it stays at %llu", c->id,
                          (unsigned long long)c->local_limit,
                          r < 0 ? strerror(-r) : "usage stayed above it",
                          (unsigned long long)c->applied_limit);
                return true;
        }
        return false;
}

void container_resize_tick(struct container *c, uint64_t now_usec)
{
        struct cgroup_mem mem;
        bool late = now_usec - c->resize_since_usec > RESIZE_GIVE_UP_USEC;

        if (__atomic_load_n(&c->step.busy, __ATOMIC_ACQUIRE))
                return;
        if (c->step.ready && step_done(c, late))
                c->resize_pending = false;
        if (!c->resize_pending)
                return;
        /* the shims' local allocations fit the new allowance, and no longer
         * change (a conversion still running needs the room): the rest of the
         * usage is file memory the kernel can write back and drop */
        uint64_t local = acct_ld(&c->acct->h.local_bytes);
        bool fits = local <= c->local_alloc_limit && local == c->resize_local_seen;

        c->resize_local_seen = local;
        if (!fits && now_usec - c->resize_since_usec <= RESIZE_GIVE_UP_USEC / 2)
                return;
        uint64_t target = c->local_limit;
        if (cgroup_read_mem(c->cg, &mem) == 0 && mem.usage > target + RESIZE_STEP)
                target = mem.usage - RESIZE_STEP;
        if (target > c->applied_limit)
                target = c->applied_limit;
        c->step.target = target;
        c->step.job = (struct job){.run = step_run};
        __atomic_store_n(&c->step.busy, true, __ATOMIC_RELEASE);
        worker_queue(c, &c->step.job);
}

/* A conversion is asked for again at most this often: each pass walks every
 * range its shims own, and one that could not convert everything (file space
 * gone) would otherwise be asked every second. */
#define CONVERT_EVERY_USEC (5ULL * 1000000ULL)

/* The slack around the allowance: an allocation or two over it is not worth
 * moving 16 MiB pieces for, and a conversion back must leave room. */
static uint64_t convert_slack(const struct container *c)
{
        return MAX(c->local_alloc_limit / 16, 4ULL << 20);
}

/* Log each conversion a shim finished with ranges left where they were. */
static void convert_outcomes(struct container *c)
{
        for (struct process *p = c->processes; p; p = p->next) {
                const struct xmem_acct_slot *s = &c->acct->slots[p->acct_slot];
                uint64_t done = __atomic_load_n(&s->convert_done, __ATOMIC_ACQUIRE);
                uint64_t failed = acct_ld(&s->convert_failed);
                if (done == p->convert_told || !failed)
                        continue;
                p->convert_told = done;
                log_warning("container %s: process %d's conversion %llu left %llu ranges where they "
                         "were (%s)",
                         c->id, (int)p->pid, (unsigned long long)(done >> 8),
                         (unsigned long long)failed, errno_name((int)acct_ld(&s->convert_errno)));
        }
}

void container_convert_tick(struct container *c, uint64_t now_usec)
{
        convert_outcomes(c);
        if (c->file_dirfd < 0 || c->resize_pending ||
            now_usec - c->convert_at_usec < CONVERT_EVERY_USEC)
                return;
        uint64_t local = acct_ld(&c->acct->h.local_bytes), conv = file_bytes(c);
        uint64_t slack = convert_slack(c);

        /* local memory charged past its allowance (a forked child's copies,
         * a mapping grown with mremap, an allowance lowered): to file memory */
        if (local > c->local_alloc_limit + slack) {
                log_info("container %s: %llu bytes of local memory over its allowance of %llu",
                         c->id, (unsigned long long)local,
                         (unsigned long long)c->local_alloc_limit);
                container_convert_request(c, XMEM_CONVERT_FILE);
                return;
        }
        /* room again (memory freed, a limit raised): converted memory back */
        if (conv && !c->convert_pinned && local + conv + slack <= c->local_alloc_limit) {
                log_info("container %s: room for its %llu bytes of converted memory again",
                         c->id, (unsigned long long)conv);
                container_convert_request(c, XMEM_CONVERT_LOCAL);
        }
}

/* What C's processes hold of the quota: the larger of memd's count of
 * written pages and the shims' charged bytes. */
static uint64_t external_in_use(const struct container *c)
{
        uint64_t written = atomic_load(&c->quota.used) * ARENA_PAGE_SIZE;
        uint64_t charged = __atomic_load_n(&c->acct->h.external_bytes, __ATOMIC_RELAXED);

        return MAX(written, charged);
}

static int resize_external(struct container *c, uint64_t want, struct xmem_error *err)
{
        uint64_t stripe = (uint64_t)c->chunk_size * c->n_transports;
        uint64_t to = ALIGN_UP(want, stripe), used = external_in_use(c);
        char a[32], b[32];

        if (to > c->arena_size)
                return xmem_error_set(err, -EINVAL,
                                      "params.external: %s is beyond container %s's arenas (%s: "
                                      "attach with external_max to grow further)",
                                      format_size(a, sizeof(a), to), c->id,
                                      format_size(b, sizeof(b), c->arena_size));
        if (to < used)
                return xmem_error_set(err, -EBUSY,
                                      "params.external: container %s uses %s of external memory, "
                                      "more than %s: free it first",
                                      c->id, format_size(a, sizeof(a), used),
                                      format_size(b, sizeof(b), to));
        /* memd's count first when shrinking, the shims' page first when
         * growing: in between, the smaller of the two holds */
        if (to < c->external) {
                c->quota.limit = to / ARENA_PAGE_SIZE;
                __atomic_store_n(&c->acct->h.external_quota, to, __ATOMIC_RELEASE);
        } else {
                __atomic_store_n(&c->acct->h.external_quota, to, __ATOMIC_RELEASE);
                c->quota.limit = to / ARENA_PAGE_SIZE;
        }
        /* a write that raced past the check above stays, over the new quota:
         * it is refused from the next page on */
        c->external = to;
        return 0;
}

int method_resize(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct api_resize *rs = &p->resize;
        struct container *c = call_container(call, rs->id, err);
        uint64_t before;
        int r = 0;

        if (!c)
                return err->code;
        before = c->external;
        if (rs->external)
                r = resize_external(c, rs->external, err);
        if (r >= 0 && rs->local_limit)
                r = container_resize(c, rs->local_limit, manager_now_usec(call->m), err);
        /* recorded before the reply: a restarted memd keeps the new limits */
        if (r >= 0)
                r = state_save(call->m, c, err);
        if (r < 0) {
                if (c->external != before)
                        (void)resize_external(c, before, &(struct xmem_error){});
                return r;
        }
        if (rs->external)
                log_info("container %s: external %llu -> %llu bytes", c->id,
                         (unsigned long long)before, (unsigned long long)c->external);
        call->result = container_to_json(c);
        json_object_object_add(call->result, "pending",
                               json_object_new_boolean(c->resize_pending));
        if (rs->external)
                json_object_object_add(call->result, "external_in_use",
                                       json_object_new_int64((int64_t)external_in_use(c)));
        return 0;
}
