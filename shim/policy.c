/* policy.c: local, external or file placement (see policy.h). Pure: no state, no
 * system calls; the shim's extent hook and mmap wrapper call it. */
#include <errno.h>
#include <string.h>

#include "policy.h"

int shim_policy_parse(const char *name, uint64_t ratio, uint64_t local_alloc_limit,
                      struct shim_policy *ret)
{
        struct shim_policy p = {
                .local_alloc_limit = local_alloc_limit,
                .external_quota = UINT64_MAX,
                .large_threshold = SHIM_POLICY_DEFAULT_LARGE,
                .local_floor = SHIM_POLICY_DEFAULT_FLOOR,
        };

        if (!name)
                return -EINVAL;
        if (strcmp(name, "local-first") == 0)
                p.kind = SHIM_POLICY_LOCAL_FIRST;
        else if (strcmp(name, "external-first") == 0)
                p.kind = SHIM_POLICY_EXTERNAL_FIRST;
        else if (strncmp(name, "ratio:", 6) == 0) {
                const char *s = name + 6;
                uint64_t n = 0;

                if (*s < '1' || *s > '9')
                        return -EINVAL;
                for (; *s; s++) {
                        if (*s < '0' || *s > '9')
                                return -EINVAL;
                        n = n * 10 + (uint64_t)(*s - '0');
                        if (n > SHIM_POLICY_MAX_RATIO)
                                return -EINVAL;
                }
                /* memd sends the number twice ("ratio:N" and "ratio"): they must agree */
                if (ratio != 0 && ratio != n)
                        return -EINVAL;
                p.kind = SHIM_POLICY_RATIO;
                p.ratio = (uint32_t)n;
        } else
                return -EINVAL;
        *ret = p;
        return 0;
}

static bool fits(uint64_t used, uint64_t size, uint64_t limit)
{
        return size <= limit && used <= limit - size;
}

/* PREFER if it fits, else the other side if it fits, else file memory if it
 * has room, else none. */
static enum shim_placement pick(enum shim_placement prefer, bool local_ok, bool external_ok,
                                bool file_ok)
{
        if (prefer == SHIM_EXTERNAL && external_ok)
                return SHIM_EXTERNAL;
        if (local_ok)
                return SHIM_LOCAL;
        if (external_ok)
                return SHIM_EXTERNAL;
        return file_ok ? SHIM_FILE : SHIM_NONE;
}

enum shim_placement shim_policy_place(const struct shim_policy *p, const struct shim_usage *u,
                                      uint64_t size, bool external_available)
{
        bool local_ok = fits(u->local_bytes, size, p->local_alloc_limit);
        bool external_ok = external_available && fits(u->external_bytes, size, p->external_quota);
        bool file_ok = size <= u->file_room;

        switch (p->kind) {
        case SHIM_POLICY_EXTERNAL_FIRST:
                if (size >= p->large_threshold)
                        return pick(SHIM_EXTERNAL, local_ok, external_ok, file_ok);
                break;
        case SHIM_POLICY_RATIO: {
                /* local allocations stay within N x the arena's resident cache,
                 * with a floor so that small processes never touch the arena */
                uint64_t cap = u->resident_cache > UINT64_MAX / p->ratio
                                       ? UINT64_MAX
                                       : u->resident_cache * p->ratio;
                if (cap < p->local_floor)
                        cap = p->local_floor;
                if (!fits(u->local_bytes, size, cap))
                        return pick(SHIM_EXTERNAL, local_ok, external_ok, file_ok);
                break;
        }
        case SHIM_POLICY_LOCAL_FIRST:
                break;
        }
        return pick(SHIM_LOCAL, local_ok, external_ok, file_ok);
}
