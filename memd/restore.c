/* restore.c: the admin method restore (docs/api.md): --rollback freezes a
 * running container, drops its arenas' resident pages, reverts their regions
 * to the snapshot on the appliances and thaws it, so its processes see the
 * snapshot's contents. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "memd.h"
#include "residency.h"
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

static int rollback(struct api_call *call, const struct manifest *mf, const char *id,
                    struct xmem_error *err)
{
        struct container *c = manager_find_container(call->m, id);
        _cleanup_free_ struct process **procs = NULL;
        struct cgroup_freezer f = {};
        struct timespec t0, t1;
        int r;

        if (!c)
                return xmem_error_set(err, -ENOENT, "params.rollback: no container %s", id);
        if (strcmp(mf->attach.id, id) != 0)
                return xmem_error_set(err, -EINVAL,
                                      "params.rollback: snapshot %s is of container %s, not %s",
                                      mf->name, mf->attach.id, id);
        procs = calloc(mf->n_arenas, sizeof(*procs));
        if (!procs)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < mf->n_arenas; i++) {
                procs[i] = process_of(c, &mf->arenas[i]);
                if (!procs[i])
                        return xmem_error_set(err, -ESTALE,
                                              "snapshot %s: process %d of container %s has "
                                              "exited (or not resumed): nothing to roll back",
                                              mf->name, (int)mf->arenas[i].pid, id);
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = checkpoint_freeze(call->m, c, procs[0]->pid, &f, err);
        if (r < 0)
                return r;
        r = rollback_arenas(c, mf, procs, err);
        checkpoint_thaw(c, &f);
        if (r < 0)
                return r;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        call->result = json_object_new_object();
        json_object_object_add(call->result, "name", json_object_new_string(mf->name));
        json_object_object_add(call->result, "rolled_back", json_object_new_string(id));
        json_object_object_add(call->result, "arenas",
                               json_object_new_int64((int64_t)mf->n_arenas));
        json_object_object_add(call->result, "pause_us",
                               json_object_new_int64((t1.tv_sec - t0.tv_sec) * 1000000 +
                                                     (t1.tv_nsec - t0.tv_nsec) / 1000));
        log_info("container %s: rolled back to snapshot %s", id, mf->name);
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
        else
                r = xmem_error_set(err, -EOPNOTSUPP,
                                   "params.new: starting a new container from a snapshot is not "
                                   "supported yet");
        manifest_done(&mf);
        return r;
}
