/* move.c: the admin method move (docs/api.md): a running container's
 * regions copied to another of memd's appliances by the appliances
 * themselves (server-side COPY to a --peer, only the extents with data),
 * then each arena switched over to the copy at once, the old regions freed. */
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

struct move {
        struct process *p;
        const char *to_uri;
        struct store *to; /* the new regions (taken by the arena on success) */
        uint64_t copied;
        struct xmem_error *err;
};

/* Under the flush (every dirty page in the old store, no write-back until
 * the swap): copy the extents with data, then swap the store. */
static int move_then(struct arena *a, void *data)
{
        struct move *mv = data;
        struct manifest_arena ma = {};
        struct xmem_transport *const *ts, *const *tt;
        const struct xmem_region_ref *from, *to;
        int r = manifest_extents_of(a, &ma);

        (void)store_xmem_regions(mv->p->store, &ts, &from);
        (void)store_xmem_regions(mv->to, &tt, &to);
        for (size_t i = 0; r >= 0 && i < ma.n_extents; i++)
                for (uint64_t off = 0; r >= 0 && off < ma.extents[i].len; off += MOVE_PIECE) {
                        uint64_t at = ma.extents[i].offset + off,
                                 n = MIN(MOVE_PIECE, ma.extents[i].len - off);
                        r = xmem_region_copy(ts[0], &from[0], at, mv->to_uri, &to[0], at, n);
                        if (r < 0)
                                xmem_error_set(mv->err, r,
                                               "%s copying region %llu to %s (is it one of the "
                                               "appliance's --peer?): %s",
                                               xmem_transport_uri(ts[0]),
                                               (unsigned long long)from[0].id, mv->to_uri,
                                               strerror(-r));
                        else
                                mv->copied += n;
                }
        free(ma.extents);
        if (r == -ENOMEM && !mv->err->msg[0])
                return xmem_error_set(mv->err, r, "out of memory");
        if (r >= 0)
                residency_swap_store(a, mv->to);
        return r;
}

static int move_process(struct api_call *call, struct container *c, struct process *p,
                        struct xmem_transport *to, const char *to_uri, uint64_t *copied,
                        struct xmem_error *err)
{
        struct move mv = {.p = p, .to_uri = to_uri, .err = err};
        struct store *old = p->store;
        int r;

        r = store_xmem_new(&to, 1, old->size, c->chunk_size, &mv.to, err);
        if (r < 0)
                return xmem_error_prefix(err, "process %d", (int)p->pid);
        r = residency_flush_arena(c->residency, p->arena, move_then, &mv);
        if (r < 0) {
                store_free(mv.to); /* the copy's regions: the arena still uses the old ones */
                if (!err->msg[0])
                        xmem_error_set(err, r, "writing back: %s", strerror(-r));
                return xmem_error_prefix(err, "process %d", (int)p->pid);
        }
        p->store = mv.to;
        *copied += mv.copied;
        /* on disk before the old regions go (a crash in between leaks them) */
        if (state_save(call->m, c, err) < 0) {
                log_error("container %s: %s: the old regions are left on %s", c->id,
                          xmem_error_str(err), xmem_transport_uri(c->transports[0]));
                store_xmem_keep(old);
                *err = (struct xmem_error){};
        }
        /* a fill that started before the swap may still read the old
         * regions (it may have waited for the flush to make room) */
        if (residency_wait_fills(p->arena, MOVE_FILL_WAIT_MS) < 0) {
                log_error("container %s: process %d: fills still use its old regions on %s after "
                          "%d s: they are left there",
                          c->id, (int)p->pid, xmem_transport_uri(c->transports[0]),
                          MOVE_FILL_WAIT_MS / 1000);
                return 0; /* the old store stays allocated: never freed under a fill */
        }
        store_free(old);
        return 0;
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
        size_t moved = 0, i;
        uint64_t copied = 0;
        int r = 0;

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
        for (struct process *pr = c->processes; pr && r >= 0; pr = pr->next) {
                r = move_process(call, c, pr, to, p->move.to, &copied, err);
                moved += r >= 0;
        }
        if (r < 0)
                return xmem_error_prefix(err, "container %s%s", c->id,
                                         moved ? " (the processes before it were moved)" : "");
        /* its next processes' arenas on the new appliance too */
        i = transport_index(m, to);
        free(c->appliance);
        c->appliance = strdup(m->cfg.appliances[i]);
        c->transports = &m->transports[i];
        (void)state_save(m, c, err);
        log_info("container %s: moved to %s (%zu arena(s), %llu bytes copied)", c->id, p->move.to,
                 moved, (unsigned long long)copied);
        call->result = json_object_new_object();
        json_object_object_add(call->result, "id", json_object_new_string(c->id));
        json_object_object_add(call->result, "appliance", json_object_new_string(p->move.to));
        json_object_object_add(call->result, "arenas", json_object_new_int64((int64_t)moved));
        json_object_object_add(call->result, "copied_bytes",
                               json_object_new_int64((int64_t)copied));
        return 0;
}
