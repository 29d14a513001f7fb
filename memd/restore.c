/* restore.c: the admin method restore (docs/api.md): --rollback freezes a
 * running container, drops its arenas' resident pages, reverts their regions
 * to the snapshot on the appliances and thaws it, so its processes see the
 * snapshot's contents; --new (and attach's restore, io.xmem.restore) gives a
 * container's next processes copy-on-write clones of the snapshot's regions,
 * to be mapped at the snapshot's virtual bases. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "memd.h"
#include "residency.h"
#include "state.h"
#include "store.h"

/* The process of C whose regions the snapshot arena MA was taken of. */
static struct process *process_of(struct container *c, const struct manifest_arena *ma)
{
        for (struct process *p = c->processes; p; p = p->next) {
                struct xmem_transport *const *ts;
                const struct xmem_region_ref *refs;
                size_t n;

                if (p->pending || !p->store)
                        continue;
                n = store_xmem_regions(p->store, &ts, &refs);
                if (n != ma->n_regions || p->store->size != ma->size)
                        continue;
                bool same = true;
                for (size_t i = 0; i < n && same; i++)
                        same = refs[i].id == ma->regions[i].source;
                if (same)
                        return p;
        }
        return NULL;
}

/* A bit per page: the extents of MA. */
static uint8_t *extent_bits(const struct manifest_arena *ma)
{
        uint64_t pages = ma->size / ARENA_PAGE_SIZE;
        uint8_t *bits = calloc((pages + 7) / 8, 1);

        for (size_t i = 0; bits && i < ma->n_extents; i++)
                for (uint64_t c = ma->extents[i].offset / ARENA_PAGE_SIZE;
                     c < (ma->extents[i].offset + ma->extents[i].len) / ARENA_PAGE_SIZE; c++)
                        bits[c / 8] |= (uint8_t)(1u << (c % 8));
        return bits;
}

struct revert {
        struct process *p;
        const struct manifest_arena *ma;
        struct xmem_error *err;
};

static int revert_then(struct arena *a, void *data)
{
        struct revert *v = data;
        struct xmem_region_ref snaps[MANAGER_MAX_APPLIANCES];

        (void)a;
        for (size_t i = 0; i < v->ma->n_regions; i++)
                snaps[i] = v->ma->regions[i].snap;
        return store_xmem_revert(v->p->store, snaps, v->err);
}

static int rollback_arenas(struct container *c, const struct manifest *mf, struct process **procs,
                           struct xmem_error *err)
{
        for (size_t i = 0; i < mf->n_arenas; i++) {
                struct revert v = {.p = procs[i], .ma = &mf->arenas[i], .err = err};
                _cleanup_free_ uint8_t *bits = extent_bits(&mf->arenas[i]);
                int r;

                if (!bits)
                        return xmem_error_set(err, -ENOMEM, "out of memory");
                r = residency_drop_arena(c->residency, procs[i]->arena, bits, revert_then, &v);
                if (r < 0) {
                        if (!err->msg[0])
                                xmem_error_set(err, r, "%s", strerror(-r));
                        return xmem_error_prefix(
                            err, "container %s: process %d%s", c->id, (int)procs[i]->pid,
                            i ? " (the arenas before it were rolled back)" : "");
                }
        }
        return 0;
}

/* A rollback on the container's worker, like a checkpoint (checkpoint.c):
 * the drops and reverts wait for the appliances. */
static void rollback_run(struct job *j)
{
        struct lifecycle_job *lj = (struct lifecycle_job *)j;
        struct container *c = j->container;
        struct cgroup_freezer f = {};
        struct timespec t0, t1;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        lj->r = checkpoint_freeze(lj->m, c, lj->procs[0]->pid, &f, &lj->err);
        if (lj->r < 0)
                return;
        lj->r = rollback_arenas(c, &lj->mf, lj->procs, &lj->err);
        checkpoint_thaw(c, &f);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        lj->pause_us =
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
}

static int rollback_done(struct job *j, struct api_call *call, struct xmem_error *err)
{
        struct lifecycle_job *lj = (struct lifecycle_job *)j;
        int r = lifecycle_job_end(j, err);

        if (r >= 0) {
                call->result = json_object_new_object();
                json_object_object_add(call->result, "name", json_object_new_string(lj->mf.name));
                json_object_object_add(call->result, "rolled_back",
                                       json_object_new_string(j->container->id));
                json_object_object_add(call->result, "arenas",
                                       json_object_new_int64((int64_t)lj->mf.n_arenas));
                json_object_object_add(call->result, "pause_us",
                                       json_object_new_int64((int64_t)lj->pause_us));
                log_info("container %s: rolled back to snapshot %s", j->container->id,
                         lj->mf.name);
        }
        lifecycle_job_abandon(j);
        return r;
}

/* Takes MF (left empty) when the rollback is queued. */
static int rollback(struct api_call *call, struct manifest *mf, const char *id,
                    struct xmem_error *err)
{
        struct container *c = manager_find_container(call->m, id);
        struct lifecycle_job *lj;
        int r;

        if (!c)
                return xmem_error_set(err, -ENOENT, "params.rollback: no container %s", id);
        if (strcmp(mf->attach.id, id) != 0)
                return xmem_error_set(err, -EINVAL,
                                      "params.rollback: snapshot %s is of container %s, not %s",
                                      mf->name, mf->attach.id, id);
        r = container_lifecycle_check(c, err);
        if (r < 0)
                return r;
        lj = lifecycle_job_new(call->m, c, sizeof(*lj), mf->n_arenas, rollback_run, rollback_done,
                               "restore");
        if (!lj)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < mf->n_arenas; i++) {
                lj->procs[i] = process_of(c, &mf->arenas[i]);
                if (!lj->procs[i]) {
                        lifecycle_job_abandon(&lj->job); /* MF is not its yet */
                        free(lj);
                        return xmem_error_set(err, -ESTALE,
                                              "snapshot %s: process %d of container %s has "
                                              "exited (or not resumed): nothing to roll back",
                                              mf->name, (int)mf->arenas[i].pid, id);
                }
        }
        lj->n = mf->n_arenas;
        lj->mf = *mf;
        *mf = (struct manifest){};
        return lifecycle_job_defer(call, lj);
}

void restore_plan_free(struct restore_plan *p)
{
        if (!p)
                return;
        for (size_t i = p->next; i < p->n; i++) {
                store_free(p->arenas[i].store);
                free(p->arenas[i].written);
        }
        free(p->arenas);
        free(p->name);
        free(p);
}

bool restore_plan_take(struct container *c, struct restore_arena *ret)
{
        struct restore_plan *p = c->restore;

        if (!p)
                return false;
        *ret = p->arenas[p->next++];
        if (p->next == p->n) {
                c->restore = NULL;
                restore_plan_free(p);
        }
        return true;
}

/* Are MA's regions on C's appliances, in C's order? */
static int same_appliances(struct manager *m, const struct container *c, const struct manifest *mf,
                           const struct manifest_arena *ma, struct xmem_error *err)
{
        if (mf->chunk_size != c->chunk_size || ma->n_regions != c->n_transports)
                return xmem_error_set(err, -EINVAL,
                                      "snapshot %s: striped over %zu appliance(s) by %u bytes, "
                                      "container %s over %zu by %u",
                                      mf->name, ma->n_regions, mf->chunk_size, c->id,
                                      c->n_transports, c->chunk_size);
        for (size_t i = 0; i < ma->n_regions; i++)
                if (state_transport_of(m, ma->regions[i].appliance) != c->transports[i])
                        return xmem_error_set(err, -EINVAL,
                                              "snapshot %s: its region %zu is on %s, not on "
                                              "container %s's appliance %s",
                                              mf->name, i, ma->regions[i].appliance, c->id,
                                              state_appliance_name(m, c->transports[i]));
        return 0;
}

static int plan_arena(struct manager *m, struct container *c, const struct manifest *mf,
                      const struct manifest_arena *ma, struct restore_arena *ra,
                      struct xmem_error *err)
{
        struct xmem_region_ref snaps[MANAGER_MAX_APPLIANCES];
        int r = same_appliances(m, c, mf, ma, err);

        if (r < 0)
                return r;
        for (size_t i = 0; i < ma->n_regions; i++)
                snaps[i] = ma->regions[i].snap;
        ra->written = extent_bits(ma);
        if (!ra->written)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        /* a metadata copy on each appliance: the chunks stay shared */
        r = store_xmem_clone_of(c->transports, c->n_transports, ma->size, c->chunk_size, snaps,
                                &ra->store, err);
        if (r < 0)
                return xmem_error_prefix(err, "snapshot %s", mf->name);
        ra->base = ma->base;
        ra->size = ma->size;
        /* the data the allocator must not hand out again; the arena's last
         * page is the shim's root table (shim/root.c), kept apart */
        ra->used = 0;
        for (size_t i = 0; i < ma->n_extents; i++)
                ra->used = MAX(ra->used, MIN(ma->extents[i].offset + ma->extents[i].len,
                                             ma->size - ARENA_PAGE_SIZE));
        return 0;
}

/* A plan of NAME's arenas (ONLY: that one alone; SIZE_MAX: all), followed
 * by what is left of C's plan (REST). */
static int plan_new(struct manager *m, struct container *c, const char *name, size_t only,
                    const struct restore_plan *rest, struct restore_plan **ret,
                    struct xmem_error *err)
{
        size_t left = rest ? rest->n - rest->next : 0, first, count;
        struct restore_plan *p;
        struct manifest mf = {};
        int r = manifest_load(m, name, &mf, err);

        if (r < 0)
                return r;
        if (only != SIZE_MAX && only >= mf.n_arenas) {
                manifest_done(&mf);
                return xmem_error_set(err, -ESTALE, "snapshot %s: no arena %zu", name, only);
        }
        first = only == SIZE_MAX ? 0 : only;
        count = only == SIZE_MAX ? mf.n_arenas : 1;
        p = calloc(1, sizeof(*p));
        if (p)
                p->arenas = calloc(count + left, sizeof(*p->arenas));
        if (p)
                p->name = strdup(name);
        if (!p || !p->arenas || !p->name) {
                restore_plan_free(p);
                manifest_done(&mf);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        for (; p->n < count; p->n++) {
                r = plan_arena(m, c, &mf, &mf.arenas[first + p->n], &p->arenas[p->n], err);
                p->arenas[p->n].index = first + p->n;
                if (r < 0) {
                        free(p->arenas[p->n].written);
                        break;
                }
        }
        manifest_done(&mf);
        if (r < 0) {
                restore_plan_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

/* C's plan becomes P (the arenas left in the old one are P's now). */
static void plan_set(struct container *c, struct restore_plan *p)
{
        struct restore_plan *old = c->restore;

        if (old) {
                memcpy(&p->arenas[p->n], &old->arenas[old->next],
                       (old->n - old->next) * sizeof(*p->arenas));
                p->n += old->n - old->next;
                old->next = old->n; /* handed over: nothing of it to free */
                restore_plan_free(old);
        }
        c->restore = p;
}

int restore_plan_make(struct manager *m, struct container *c, const char *name,
                      struct xmem_error *err)
{
        struct restore_plan *p;
        char *keep = strdup(name);
        int r = keep ? plan_new(m, c, name, SIZE_MAX, NULL, &p, err)
                     : xmem_error_set(err, -ENOMEM, "out of memory");

        if (r < 0) {
                free(keep);
                return r;
        }
        restore_plan_free(c->restore);
        c->restore = NULL;
        plan_set(c, p);
        free(c->restore_name);
        c->restore_name = keep;
        log_info("container %s: its next %zu process(es) start from snapshot %s", c->id, p->n,
                 name);
        return 0;
}

int restore_plan_again(struct manager *m, struct container *c, size_t index, struct xmem_error *err)
{
        struct restore_plan *p;
        int r;

        if (!c->restore_name)
                return 0;
        r = plan_new(m, c, c->restore_name, index, c->restore, &p, err);
        if (r < 0)
                return r;
        plan_set(c, p); /* first in line: the same pid's next image takes it */
        return 0;
}

static int restore_new(struct api_call *call, const char *name, const char *id,
                       struct xmem_error *err)
{
        struct container *c = manager_find_container(call->m, id);
        int r;

        if (!c)
                return xmem_error_set(err, -ENOENT,
                                      "params.new: no container %s (attach it first, or start "
                                      "it with io.xmem.restore=%s)",
                                      id, name);
        if (c->n_processes || c->restore)
                return xmem_error_set(err, -EBUSY,
                                      "params.new: container %s has processes or a restore "
                                      "already: only a new container starts from a snapshot",
                                      id);
        r = restore_plan_make(call->m, c, name, err);
        if (r < 0)
                return r;
        call->result = json_object_new_object();
        json_object_object_add(call->result, "name", json_object_new_string(name));
        json_object_object_add(call->result, "new", json_object_new_string(id));
        json_object_object_add(call->result, "arenas",
                               json_object_new_int64((int64_t)c->restore->n));
        return 0;
}

int method_restore(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct manifest mf = {};
        int r;

        if (!p->snapshot.rollback && !p->snapshot.new_id)
                return xmem_error_set(err, -EINVAL, "params.rollback: rollback or new is required");
        r = manifest_load(call->m, p->snapshot.name, &mf, err);
        if (r < 0)
                return r;
        if (p->snapshot.rollback)
                r = rollback(call, &mf, p->snapshot.rollback, err);
        manifest_done(&mf);
        if (r >= 0 && p->snapshot.new_id)
                r = restore_new(call, p->snapshot.name, p->snapshot.new_id, err);
        return r;
}
