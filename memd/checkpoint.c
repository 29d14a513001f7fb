/* checkpoint.c: the admin methods checkpoint, snapshots, delete-snapshot and
 * restore --rollback (docs/api.md, docs/memd.md "Checkpoints"): the container
 * frozen, each process's arena flushed and its regions snapshotted on their
 * appliances (a metadata copy), the manifest written, thawed; a rollback
 * drops the resident pages and reverts the regions to the snapshot. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "memd.h"
#include "pages.h"
#include "residency.h"
#include "state.h"
#include "store.h"
#include "transport/transport.h"

#define FREEZE_TIMEOUT_MS 5000

static uint64_t clock_us(clockid_t id)
{
        struct timespec t;

        clock_gettime(id, &t);
        return (uint64_t)t.tv_sec * 1000000 + (uint64_t)t.tv_nsec / 1000;
}

static json_object *u64(uint64_t v)
{
        return json_object_new_int64((int64_t)MIN(v, (uint64_t)INT64_MAX));
}

/* Freeze C's cgroup (found through its process PID). */
int checkpoint_freeze(struct manager *m, struct container *c, pid_t pid, struct cgroup_freezer *f,
                      struct xmem_error *err)
{
        int r = cgroup_freezer_find(m->cfg.cgroup_root, "/proc", c->cg, pid, f);

        if (r == -EPERM)
                return xmem_error_set(err, -EPERM,
                                      "container %s: process %d is in the root freezer cgroup: "
                                      "refusing to freeze the host",
                                      c->id, (int)pid);
        if (r < 0)
                return xmem_error_set(err, r, "container %s: no freezer cgroup for process %d: %s",
                                      c->id, (int)pid, strerror(-r));
        r = cgroup_freeze(f, FREEZE_TIMEOUT_MS);
        if (r < 0) {
                xmem_error_set(err, r, "container %s: freezing %s: %s", c->id, f->dir,
                               strerror(-r));
                cgroup_freezer_done(f);
        }
        return r;
}

void checkpoint_thaw(struct container *c, struct cgroup_freezer *f)
{
        int r = cgroup_thaw(f);

        if (r < 0)
                log_error("container %s: thawing %s: %s", c->id, f->dir, strerror(-r));
        cgroup_freezer_done(f);
}

/* The registered processes of C, all of them served (none waiting for
 * shim.resume); *RET_FIRST one of them. */
static int arenas_ready(struct container *c, size_t *ret_n, struct process **ret_first,
                        struct xmem_error *err)
{
        size_t n = 0;

        for (struct process *p = c->processes; p; p = p->next) {
                if (p->pending)
                        return xmem_error_set(err, -EBUSY,
                                              "container %s: process %d has not resumed after a "
                                              "memd restart yet",
                                              c->id, (int)p->pid);
                if (p->registered && !n++)
                        *ret_first = p;
        }
        if (n == 0)
                return xmem_error_set(err, -ENOENT, "container %s: no process uses external memory",
                                      c->id);
        *ret_n = n;
        return 0;
}

struct ckpt {
        struct manager *m;
        struct process *p;
        struct manifest_arena *ma;
        struct xmem_error *err;
};

/* Under the flush (nothing reaches the store until it returns): record the
 * extents and snapshot every region. */
static int ckpt_then(struct arena *a, void *data)
{
        struct ckpt *k = data;
        struct xmem_region_ref snaps[MANAGER_MAX_APPLIANCES];
        struct xmem_transport *const *ts;
        const struct xmem_region_ref *refs;
        size_t n = store_xmem_regions(k->p->store, &ts, &refs);
        int r;

        if (manifest_extents_of(a, k->ma) < 0)
                return xmem_error_set(k->err, -ENOMEM, "out of memory");
        r = store_xmem_snapshot(k->p->store, snaps, k->err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                k->ma->regions[i] = (struct manifest_region){
                    .appliance = state_appliance_name(k->m, ts[i]),
                    .snap = snaps[i],
                    .source = refs[i].id,
                };
        k->ma->n_regions = n;
        return 0;
}

/* Free the snapshot regions of the first N arenas of MF (a failed checkpoint,
 * delete-snapshot). -ENOENT: an appliance memd does not know (nothing freed
 * on it). */
static int free_snapshots(struct manager *m, const struct manifest *mf, size_t n)
{
        int ret = 0;

        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < mf->arenas[i].n_regions; k++) {
                        const struct manifest_region *mr = &mf->arenas[i].regions[k];
                        struct xmem_transport *t = state_transport_of(m, mr->appliance);
                        int r = t ? xmem_region_free(t, &mr->snap) : -ENOENT;
                        if (r < 0 && r != -ENOENT)
                                log_error("snapshot %s: freeing region %llu on %s: %s", mf->name,
                                          (unsigned long long)mr->snap.id, mr->appliance,
                                          strerror(-r));
                        if (!t)
                                ret = -ENOENT;
                }
        return ret;
}

static int ckpt_arenas(struct manager *m, struct container *c, struct process *const *procs,
                       size_t n, struct manifest *mf, struct xmem_error *err)
{
        size_t i = 0;
        int r = 0;

        for (size_t j = 0; j < n && r >= 0; j++) {
                struct process *p = procs[j];
                struct ckpt k = {.m = m, .p = p, .ma = &mf->arenas[i], .err = err};

                k.ma->pid = p->pid;
                k.ma->base = p->arena->base;
                k.ma->size = p->arena->size;
                r = residency_flush_arena(c->residency, p->arena, ckpt_then, &k);
                if (r < 0 && !err->msg[0])
                        xmem_error_set(err, r, "writing back process %d's pages: %s", (int)p->pid,
                                       strerror(-r));
                if (r < 0)
                        xmem_error_prefix(err, "container %s", c->id);
                else
                        i++;
        }
        mf->n_arenas = i;
        return r;
}

static void manifest_of(const struct container *c, const char *name, struct manifest *mf)
{
        mf->name = name;
        mf->created_ms = clock_us(CLOCK_REALTIME) / 1000;
        mf->chunk_size = c->chunk_size;
        mf->attach = (struct api_attach){.id = c->id,
                                         .cgroup = c->cgroup_dir,
                                         .local_limit = c->local_limit,
                                         .external = c->external,
                                         .local_alloc_limit = c->local_alloc_limit,
                                         .appliance = c->appliance,
                                         .policy = c->policy};
}

/* A checkpoint on the container's worker (docs/memd.md "Checkpoints"): the
 * freeze, the flush and the snapshots may wait for an appliance (a transport
 * timeout, 10 s, when it does not answer), and the event loop serves every
 * other container meanwhile. The processes are the ones registered when it
 * was asked for: one that exits meanwhile is torn down on the same worker,
 * after this job, so its arena stays until then. */
struct ckpt_job {
        struct lifecycle_job lj;
        char name[API_ID_MAX + 1];
        pid_t freeze_pid;
        uint64_t wrote;
};

struct lifecycle_job *lifecycle_job_new(struct manager *m, struct container *c, size_t size,
                                        size_t n, void (*run)(struct job *),
                                        int (*done)(struct job *, struct api_call *,
                                                    struct xmem_error *),
                                        const char *method)
{
        struct lifecycle_job *lj = calloc(1, size);

        if (!lj)
                return NULL;
        lj->procs = calloc(n ? n : 1, sizeof(*lj->procs));
        if (!lj->procs) {
                free(lj);
                return NULL;
        }
        lj->m = m;
        lj->job = (struct job){.run = run,
                               .done = done,
                               .abandon = lifecycle_job_abandon,
                               .method = method,
                               .container = c};
        return lj;
}

void lifecycle_job_abandon(struct job *j)
{
        struct lifecycle_job *lj = (struct lifecycle_job *)j;

        manifest_done(&lj->mf);
        free(lj->procs);
        lj->procs = NULL;
}

int lifecycle_job_end(struct job *j, struct xmem_error *err)
{
        struct lifecycle_job *lj = (struct lifecycle_job *)j;

        j->container->lifecycle_busy = NULL;
        j->container->checkpoint_name = NULL;
        if (lj->r < 0)
                *err = lj->err;
        return lj->r;
}

int lifecycle_job_defer(struct api_call *call, struct lifecycle_job *lj)
{
        lj->job.container->lifecycle_busy = lj->job.method;
        return job_defer(call, &lj->job);
}

static void ckpt_run(struct job *j)
{
        struct ckpt_job *cj = (struct ckpt_job *)j;
        struct lifecycle_job *lj = &cj->lj;
        struct container *c = j->container;
        const struct xmem_counters *k = &c->residency->counters;
        struct cgroup_freezer f = {};
        uint64_t t0 = clock_us(CLOCK_MONOTONIC);

        cj->wrote = atomic_load(&k->written_back_bytes);
        lj->r = checkpoint_freeze(lj->m, c, cj->freeze_pid, &f, &lj->err);
        if (lj->r < 0)
                return;
        lj->r = ckpt_arenas(lj->m, c, lj->procs, lj->n, &lj->mf, &lj->err);
        checkpoint_thaw(c, &f);
        lj->pause_us = clock_us(CLOCK_MONOTONIC) - t0;
        cj->wrote = atomic_load(&k->written_back_bytes) - cj->wrote;
        /* The manifest only names the snapshots, which exist now: written
         * after the thaw, so its size (the extents) is not in the pause. A
         * crash right here leaks the snapshot regions, never a manifest
         * without them. */
        if (lj->r >= 0)
                lj->r = manifest_save(lj->m, &lj->mf, &lj->err);
        if (lj->r < 0)
                (void)free_snapshots(lj->m, &lj->mf, lj->mf.n_arenas);
}

static int ckpt_done(struct job *j, struct api_call *call, struct xmem_error *err)
{
        struct ckpt_job *cj = (struct ckpt_job *)j;
        int r = lifecycle_job_end(j, err);

        if (r >= 0) {
                call->result = manifest_summary_json(&cj->lj.mf);
                json_object_object_add(call->result, "written_back_bytes", u64(cj->wrote));
                json_object_object_add(call->result, "pause_us", u64(cj->lj.pause_us));
                log_info("container %s: checkpoint %s (%zu arena(s), paused %llu us)",
                         j->container->id, cj->name, cj->lj.mf.n_arenas,
                         (unsigned long long)cj->lj.pause_us);
        }
        lifecycle_job_abandon(j);
        return r;
}

static bool checkpoint_in_progress(struct manager *m, const char *name)
{
        for (struct container *c = m->containers; c; c = c->next)
                if (c->checkpoint_name && strcmp(c->checkpoint_name, name) == 0)
                        return true;
        return false;
}

int container_lifecycle_check(const struct container *c, struct xmem_error *err)
{
        if (c->lifecycle_busy)
                return xmem_error_set(err, -EBUSY,
                                      "container %s: a %s is in progress: try again when it is "
                                      "done",
                                      c->id, c->lifecycle_busy);
        return 0;
}

int method_checkpoint(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct container *c = call_container(call, p->snapshot.id, err);
        struct process *first = NULL;
        struct ckpt_job *cj;
        size_t n = 0;
        int r;

        if (!c)
                return err->code;
        r = container_lifecycle_check(c, err);
        if (r < 0)
                return r;
        r = arenas_ready(c, &n, &first, err);
        if (r < 0)
                return r;
        cj = (struct ckpt_job *)lifecycle_job_new(call->m, c, sizeof(*cj), n, ckpt_run, ckpt_done,
                                                  "checkpoint");
        if (cj)
                cj->lj.mf.arenas = calloc(n, sizeof(*cj->lj.mf.arenas));
        if (!cj || !cj->lj.mf.arenas) {
                if (cj)
                        lifecycle_job_abandon(&cj->lj.job);
                free(cj);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        if (p->snapshot.name)
                snprintf(cj->name, sizeof(cj->name), "%s", p->snapshot.name);
        else
                snprintf(cj->name, sizeof(cj->name), "%.100s-%llu", c->id,
                         (unsigned long long)(clock_us(CLOCK_REALTIME) / 1000));
        /* a manifest, or one being made for another container */
        if (manifest_exists(call->m, cj->name) || checkpoint_in_progress(call->m, cj->name)) {
                xmem_error_set(err, -EEXIST, "params.name: a snapshot %s exists already",
                               cj->name);
                lifecycle_job_abandon(&cj->lj.job);
                free(cj);
                return -EEXIST;
        }
        for (struct process *pr = c->processes; pr; pr = pr->next)
                if (pr->registered) /* never mapped: it holds no data */
                        cj->lj.procs[cj->lj.n++] = pr;
        manifest_of(c, cj->name, &cj->lj.mf);
        cj->freeze_pid = first->pid;
        c->checkpoint_name = cj->name;
        return lifecycle_job_defer(call, &cj->lj);
}

struct list_ctx {
        const char *id;
        json_object *arr;
};

static int list_one(const struct manifest *mf, void *data)
{
        struct list_ctx *l = data;

        if (!l->id || strcmp(l->id, mf->attach.id) == 0)
                json_object_array_add(l->arr, manifest_summary_json(mf));
        return 0;
}

int method_snapshots(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct list_ctx l = {.id = p->snapshot.id, .arr = json_object_new_array()};
        int r = manifest_each(call->m, list_one, &l);

        if (r < 0) {
                json_object_put(l.arr);
                return xmem_error_set(err, r, "reading the snapshots: %s", strerror(-r));
        }
        call->result = json_object_new_object();
        json_object_object_add(call->result, "snapshots", l.arr);
        return 0;
}

int method_delete_snapshot(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct manifest mf = {};
        int r = manifest_load(call->m, p->snapshot.name, &mf, err);

        if (r < 0)
                return r;
        for (size_t i = 0; i < mf.n_arenas; i++)
                for (size_t k = 0; k < mf.arenas[i].n_regions; k++)
                        if (!state_transport_of(call->m, mf.arenas[i].regions[k].appliance)) {
                                r = xmem_error_set(err, -ENOENT,
                                                   "snapshot %s: appliance %s is not one of "
                                                   "memd's",
                                                   mf.name, mf.arenas[i].regions[k].appliance);
                                manifest_done(&mf);
                                return r;
                        }
        (void)free_snapshots(call->m, &mf, mf.n_arenas);
        r = manifest_remove(call->m, p->snapshot.name);
        if (r < 0)
                xmem_error_set(err, r, "snapshot %s: removing its manifest: %s", mf.name,
                               strerror(-r));
        else {
                call->result = json_object_new_object();
                json_object_object_add(call->result, "name", json_object_new_string(mf.name));
                json_object_object_add(call->result, "deleted", json_object_new_boolean(true));
                log_info("snapshot %s: deleted", mf.name);
        }
        manifest_done(&mf);
        return r;
}
