/* resize.c: the admin method resize (docs/api.md): a running container's
 * external quota, up to its arenas' size (external_max, fixed at attach) and
 * down to what its processes use (hot add and remove of external memory,
 * seed 003 claims 2 and 3). Every process's arena spans external_max, so a
 * change is a change of the quota the shims (the accounting page) and memd
 * (its count of written pages) enforce: nothing is mapped or moved. */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "memd.h"
#include "parse.h"
#include "state.h"

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
        struct container *c = call_container(call, p->resize.id, err);
        uint64_t before;
        int r;

        if (!c)
                return err->code;
        before = c->external;
        r = resize_external(c, p->resize.external, err);
        if (r < 0)
                return r;
        /* recorded before the reply: a restarted memd keeps the new quota */
        r = state_save(call->m, c, err);
        if (r < 0) {
                (void)resize_external(c, before, &(struct xmem_error){});
                return r;
        }
        log_info("container %s: external %llu -> %llu bytes", c->id, (unsigned long long)before,
                 (unsigned long long)c->external);
        call->result = json_object_new_object();
        json_object_object_add(call->result, "id", json_object_new_string(c->id));
        json_object_object_add(call->result, "external",
                               json_object_new_int64((int64_t)c->external));
        json_object_object_add(call->result, "external_max",
                               json_object_new_int64((int64_t)c->arena_size));
        json_object_object_add(call->result, "external_in_use",
                               json_object_new_int64((int64_t)external_in_use(c)));
        return 0;
}
