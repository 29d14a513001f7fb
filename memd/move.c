/* move.c: the admin method move (docs/api.md, docs/memd.md "Move"): a
 * running container's regions copied to another of memd's appliances by the
 * appliances themselves (server-side COPY to a --peer, only the extents with
 * data), then each arena switched over to the copy at once, the old regions
 * freed. It runs on the container's worker, as a checkpoint does: the copies
 * wait for the appliances, and the event loop serves everything else. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "memd.h"
#include "residency.h"
#include "state.h"
#include "store.h"
#include "transport/transport.h"

#define MOVE_PIECE (64ULL << 20) /* per COPY request: well within a request's timeout */
#define MOVE_FILL_WAIT_MS 30000  /* the fills in flight on the old regions */

struct move_job {
        struct lifecycle_job lj;
        size_t to_index;  /* among memd's appliances */
        char to_uri[256]; /* as the caller named it (api_check_move) */
        size_t moved;
        uint64_t copied;
};

/* One process's move, while it runs. */
struct move {
        struct move_job *mj;
        struct process *p;
        struct store *to; /* the new regions (taken by the arena on success) */
        struct store *from;
        uint64_t copied;
};

static bool job_cancelled(const struct job *j)
{
        return j->cancelled; /* set by the event loop, which reads it here */
}

static bool process_listed(const struct container *c, const struct process *p)
{
        for (const struct process *q = c->processes; q; q = q->next)
                if (q == p)
                        return true;
        return false;
}

/* On the event loop, called from the worker between the copy and the swap:
 * the state file names the new regions before the arena writes back to
 * them. A crash after it finds the copy there and the pages written since
 * in the memfd (dirty again at adoption); a crash before it, the old
 * regions, untouched. */
static int move_record(struct manager *m, void *data)
{
        struct move *mv = data;
        struct container *c = mv->mj->lj.job.container;
        struct xmem_error *err = &mv->mj->lj.err;

        if (job_cancelled(&mv->mj->lj.job))
                return xmem_error_set(err, -ECANCELED, "detached meanwhile");
        if (!process_listed(c, mv->p))
                return xmem_error_set(err, -ESRCH, "process %d exited meanwhile", (int)mv->p->pid);
        mv->p->store = mv->to;
        if (state_save(m, c, err) < 0) {
                mv->p->store = mv->from;
                return xmem_error_prefix(err, "writing the state file");
        }
        return 0;
}

/* Under the flush (every dirty page in the old store, no write-back until
 * the swap): copy the extents with data, record, then swap the store. */
static int move_then(struct arena *a, void *data)
{
        struct move *mv = data;
        struct move_job *mj = mv->mj;
        struct xmem_error *err = &mj->lj.err;
        struct manifest_arena ma = {};
        struct xmem_transport *const *ts, *const *tt;
        const struct xmem_region_ref *from, *to;
        int r = manifest_extents_of(a, &ma);

        (void)store_xmem_regions(mv->from, &ts, &from);
        (void)store_xmem_regions(mv->to, &tt, &to);
        for (size_t i = 0; r >= 0 && i < ma.n_extents; i++)
                for (uint64_t off = 0; r >= 0 && off < ma.extents[i].len; off += MOVE_PIECE) {
                        uint64_t at = ma.extents[i].offset + off,
                                 n = MIN(MOVE_PIECE, ma.extents[i].len - off);
                        r = xmem_region_copy(ts[0], &from[0], at, mj->to_uri, &to[0], at, n);
                        if (r < 0)
                                xmem_error_set(err, r,
                                               "%s copying region %llu to %s (is it one of the "
                                               "appliance's --peer?): %s",
                                               xmem_transport_uri(ts[0]),
                                               (unsigned long long)from[0].id, mj->to_uri,
                                               strerror(-r));
                        else
                                mv->copied += n;
                }
        free(ma.extents);
        if (r == -ENOMEM && !err->msg[0])
                return xmem_error_set(err, r, "out of memory");
        if (r >= 0)
                r = worker_call_loop(mj->lj.m, move_record, mv);
        if (r >= 0)
                residency_swap_store(a, mv->to);
        return r;
}

static int move_process(struct move_job *mj, struct process *p)
{
        struct container *c = mj->lj.job.container;
        struct xmem_error *err = &mj->lj.err;
        struct move mv = {.mj = mj, .p = p, .from = p->store};
        int r;

        r = store_xmem_new(&mj->lj.m->transports[mj->to_index], 1, mv.from->size, c->chunk_size,
                           &mv.to, err);
        if (r < 0)
                return xmem_error_prefix(err, "process %d", (int)p->pid);
        r = residency_flush_arena(c->residency, p->arena, move_then, &mv);
        if (r < 0) {
                store_free(mv.to); /* the copy's regions: the arena still uses the old ones */
                if (!err->msg[0])
                        xmem_error_set(err, r, "writing back: %s", strerror(-r));
                return xmem_error_prefix(err, "process %d", (int)p->pid);
        }
        mj->copied += mv.copied;
        /* a fill that started before the swap may still read the old
         * regions (it may have waited for the flush to make room) */
        if (residency_wait_fills(p->arena, MOVE_FILL_WAIT_MS) < 0) {
                struct xmem_transport *const *ts;
                const struct xmem_region_ref *refs;

                (void)store_xmem_regions(mv.from, &ts, &refs);
                log_error("container %s: process %d: fills still use its old regions on %s after "
                          "%d s: they are left there",
                          c->id, (int)p->pid, xmem_transport_uri(ts[0]), MOVE_FILL_WAIT_MS / 1000);
                return 0; /* the old store stays allocated: never freed under a fill */
        }
        store_free(mv.from);
        return 0;
}

/* On the event loop once every process moved: the container's next
 * processes get their arenas on the new appliance too. A process that
 * arrived during the move got its arena on the old one: LJ's processes
 * become those, for another pass. */
static int move_switch(struct manager *m, void *data)
{
        struct move_job *mj = data;
        struct lifecycle_job *lj = &mj->lj;
        struct container *c = lj->job.container;
        struct process **left;
        size_t n = 0;
        char *name;

        if (job_cancelled(&lj->job))
                return xmem_error_set(&lj->err, -ECANCELED, "detached meanwhile");
        left = calloc(c->n_processes ?: 1, sizeof(*left));
        name = strdup(m->cfg.appliances[mj->to_index]);
        if (!left || !name) {
                free(left);
                free(name);
                return xmem_error_set(&lj->err, -ENOMEM, "out of memory");
        }
        for (struct process *p = c->processes; p; p = p->next) {
                struct xmem_transport *const *ts;
                const struct xmem_region_ref *refs;

                if (!p->pending && store_xmem_regions(p->store, &ts, &refs) &&
                    ts[0] != m->transports[mj->to_index])
                        left[n++] = p;
        }
        free(lj->procs);
        lj->procs = left;
        lj->n = n;
        free(c->appliance);
        c->appliance = name;
        c->transports = &m->transports[mj->to_index];
        return state_save(m, c, &lj->err);
}

#define MOVE_PASSES 4 /* the arrivals during a pass are moved by the next */

static void move_run(struct job *j)
{
        struct move_job *mj = (struct move_job *)j;
        struct lifecycle_job *lj = &mj->lj;

        for (int pass = 0; pass < MOVE_PASSES && lj->r >= 0 && (pass == 0 || lj->n > 0); pass++) {
                for (size_t i = 0; i < lj->n && lj->r >= 0; i++) {
                        lj->r = move_process(mj, lj->procs[i]);
                        mj->moved += lj->r >= 0;
                        if (lj->r == -ESRCH) { /* exited: its regions go with it */
                                lj->r = 0;
                                lj->err = (struct xmem_error){};
                        }
                }
                if (lj->r >= 0)
                        lj->r = worker_call_loop(lj->m, move_switch, mj);
        }
        if (lj->r >= 0 && lj->n > 0)
                log_warning("container %s: %zu process(es) that started during the move stay on "
                            "their appliance",
                            j->container->id, lj->n);
}

static int move_done(struct job *j, struct api_call *call, struct xmem_error *err)
{
        struct move_job *mj = (struct move_job *)j;
        struct container *c = j->container;
        int r = lifecycle_job_end(j, err);

        if (r < 0)
                xmem_error_prefix(err, "container %s%s", c->id,
                                  mj->moved ? " (the processes before it were moved)" : "");
        else {
                log_info("container %s: moved to %s (%zu arena(s), %llu bytes copied)", c->id,
                         mj->to_uri, mj->moved, (unsigned long long)mj->copied);
                call->result = json_object_new_object();
                json_object_object_add(call->result, "id", json_object_new_string(c->id));
                json_object_object_add(call->result, "appliance",
                                       json_object_new_string(mj->to_uri));
                json_object_object_add(call->result, "arenas",
                                       json_object_new_int64((int64_t)mj->moved));
                json_object_object_add(call->result, "copied_bytes",
                                       json_object_new_int64((int64_t)mj->copied));
        }
        lifecycle_job_abandon(j);
        return r;
}

/* The index of T among memd's appliances. */
static size_t transport_index(const struct manager *m, const struct xmem_transport *t)
{
        size_t i = 0;

        while (i < m->n_transports && m->transports[i] != t)
                i++;
        return i;
}

int method_move(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct manager *m = call->m;
        struct container *c = call_container(call, p->move.id, err);
        struct xmem_transport *to = state_transport_of(m, p->move.to);
        struct move_job *mj;
        int r;

        if (!c)
                return err->code;
        if ((r = container_lifecycle_check(c, err)) < 0)
                return r;
        if (!to)
                return xmem_error_set(err, -ENOENT, "params.to: %s is not one of memd's appliances",
                                      p->move.to);
        if (c->n_transports != 1)
                return xmem_error_set(err, -EINVAL,
                                      "container %s is striped over %zu appliances: move takes a "
                                      "container on one (attach it with appliance)",
                                      c->id, c->n_transports);
        if (c->transports[0] == to)
                return xmem_error_set(err, -EINVAL, "params.to: container %s is on %s already",
                                      c->id, p->move.to);
        for (struct process *pr = c->processes; pr; pr = pr->next)
                if (pr->pending)
                        return xmem_error_set(err, -EBUSY,
                                              "container %s: process %d has not resumed after a "
                                              "memd restart yet",
                                              c->id, (int)pr->pid);
        mj = (struct move_job *)lifecycle_job_new(m, c, sizeof(*mj), c->n_processes, move_run,
                                                  move_done, "move");
        if (!mj)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        mj->to_index = transport_index(m, to);
        snprintf(mj->to_uri, sizeof(mj->to_uri), "%s", p->move.to);
        for (struct process *pr = c->processes; pr; pr = pr->next)
                mj->lj.procs[mj->lj.n++] = pr;
        return lifecycle_job_defer(call, &mj->lj);
}
