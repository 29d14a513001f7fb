/* hooks.c: jemalloc extent hooks on every arena. The alloc hook is where
 * jemalloc asks the system for memory, so it is where local (anonymous mmap)
 * or external (a range of the arena memfd) is chosen; the other hooks route
 * by address. jemalloc's own metadata (base blocks) always stays local. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <jemalloc/jemalloc.h>

#include "shim.h"

/* jemalloc 5.3's base_map() asks for its metadata blocks with HUGEPAGE
 * alignment; user extents (extent_grow_retained) come with PAGE alignment.
 * Metadata must stay local: jemalloc's postfork_child handler touches it
 * before ours has mapped the child's arena. */
#define JE_HUGEPAGE (2ULL << 20)

static void *local_map(void *hint, size_t size, size_t align)
{
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        char *p, *a;

        if (hint) {
                p = shim_sys_mmap(hint, size, PROT_READ | PROT_WRITE,
                                  flags | MAP_FIXED_NOREPLACE, -1, 0);
                if (p == MAP_FAILED)
                        return NULL;
                if (p != hint) {
                        shim_sys_munmap(p, size);
                        return NULL;
                }
                return p;
        }
        if (align <= SHIM_PAGE) {
                p = shim_sys_mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
                return p == MAP_FAILED ? NULL : p;
        }
        p = shim_sys_mmap(NULL, size + align - SHIM_PAGE, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        a = (char *)(((uint64_t)p + align - 1) & ~(uint64_t)(align - 1));
        if (a > p)
                shim_sys_munmap(p, (size_t)(a - p));
        if (p + size + align - SHIM_PAGE > a + size)
                shim_sys_munmap(a + size, (size_t)(p + align - SHIM_PAGE - a));
        return a;
}

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t align,
                        bool *zero, bool *commit, unsigned arena_ind)
{
        bool metadata = align >= JE_HUGEPAGE;
        bool zeroed = true;
        void *p = NULL;

        if (size == 0 || size % SHIM_PAGE)
                return NULL;
        struct shim_zone *z = new_addr ? shim_zone_of(new_addr, size) : NULL;

        if (z) {
                if (shim_zone_claim(z, new_addr, size, &zeroed) == 0)
                        p = new_addr;
        } else if (new_addr) {
                /* growing in place: only within the local limit (jemalloc
                 * allocates anew and copies otherwise) */
                if (shim_charge(SHIM_LOCAL, size, true)) {
                        p = local_map(new_addr, size, align);
                        if (!p)
                                shim_uncharge(SHIM_LOCAL, size);
                        else
                                shim_locals_track((uint64_t)p, size);
                }
        } else if (metadata) {
                /* metadata blocks are 2 MiB of address space each but mostly
                 * untouched: not counted as allocations */
                p = local_map(NULL, size, align);
        } else {
                enum shim_placement where;

                p = shim_zone_place(size, align, &zeroed, &where);
                if (where == SHIM_LOCAL) {
                        zeroed = true;
                        p = local_map(NULL, size, align);
                        if (!p)
                                shim_uncharge(SHIM_LOCAL, size);
                        else
                                shim_locals_track((uint64_t)p, size);
                }
                /* SHIM_NONE: the container's local limit, external quota and
                 * file space are all used up: malloc fails with ENOMEM */
        }
        if (!p)
                return NULL;
        if (*zero && !zeroed)
                memset(p, 0, size);
        else
                *zero = zeroed;
        *commit = true;
        return p;
}

/* Like jemalloc's default with opt.retain: keep the address space, reuse it. */
static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
                        unsigned arena_ind)
{
        return true;
}

static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
                         unsigned arena_ind)
{
        struct shim_zone *z = shim_zone_of(addr, size);

        if (z) {
                shim_zone_release(z, addr, size);
                return;
        }
        /* not while a conversion works on it; a converted piece gives its
         * file pages back */
        shim_locals_busy(true);
        shim_sys_munmap(addr, size);
        shim_locals_untrack((uint64_t)addr, size, true);
        shim_locals_busy(false);
}

/* Memory is always committed (Linux overcommits), as jemalloc's default. */
static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t off, size_t len,
                        unsigned arena_ind)
{
        return true;
}

/* Purge local [P, P+LEN) (true: failed). A part converted to file memory is
 * punched out of the file (zeros, as DONTNEED gives); not while a conversion
 * works on it. */
static bool local_purge(char *p, size_t len, int advice)
{
        bool failed;

        shim_locals_busy(true);
        if (shim_locals_converted((uint64_t)p, len) && shim_locals_purge(p, len) < 0) {
                shim_locals_busy(false);
                return true;
        }
        failed = shim_sys_madvise(p, len, advice) < 0 &&
                 shim_sys_madvise(p, len, MADV_DONTNEED) < 0;
        shim_locals_busy(false);
        return failed;
}

static bool hook_purge_lazy(extent_hooks_t *h, void *addr, size_t size, size_t off,
                            size_t len, unsigned arena_ind)
{
        char *p = (char *)addr + off;
        struct shim_zone *z = shim_zone_of(p, len);

        if (z)
                /* free the pages; arena contents are undefined afterwards
                 * (memd may refill stale data), hence lazy, never forced */
                return shim_zone_discard(z, p, len) < 0;
        return local_purge(p, len, MADV_FREE);
}

static bool hook_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t off,
                              size_t len, unsigned arena_ind)
{
        char *p = (char *)addr + off;

        /* forced purge promises zeros: not on the arena, where only memd knows
         * whether a punched page comes back as zeros; a punched file reads
         * zeros */
        if (shim_zone_has(&shim_state.file, p, len))
                return shim_zone_discard(&shim_state.file, p, len) < 0;
        if (shim_overlaps_zone(p, len))
                return true;
        return local_purge(p, len, MADV_DONTNEED);
}

static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a,
                       size_t size_b, bool committed, unsigned arena_ind)
{
        return false;
}

static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b,
                       size_t size_b, bool committed, unsigned arena_ind)
{
        /* never join a local mapping with an arena range next to it */
        return shim_zone_of(addr_a, size_a) != shim_zone_of(addr_b, size_b);
}

static extent_hooks_t shim_hooks = {
        .alloc = hook_alloc,
        .dalloc = hook_dalloc,
        .destroy = hook_destroy,
        .commit = hook_commit,
        .decommit = hook_commit,
        .purge_lazy = hook_purge_lazy,
        .purge_forced = hook_purge_forced,
        .split = hook_split,
        .merge = hook_merge,
};

/* Install the hooks on arena IND (initialising it when it is not yet). */
int shim_hooks_install_one(unsigned ind);
int shim_hooks_install_one(unsigned ind)
{
        extent_hooks_t *hooks = &shim_hooks;
        char name[64];

        snprintf(name, sizeof(name), "arena.%u.extent_hooks", ind);
        return -xmem_je_mallctl(name, NULL, NULL, &hooks, sizeof(hooks));
}

int shim_hooks_install(void)
{
        unsigned n;
        size_t sz = sizeof(n);
        int r, installed = 0;

        r = xmem_je_mallctl("arenas.narenas", &n, &sz, NULL, 0);
        if (r != 0)
                return -r;
        for (unsigned i = 0; i < n; i++)
                /* EFAULT: jemalloc's huge arena, not created (oversize_threshold:0) */
                if (shim_hooks_install_one(i) == 0)
                        installed++;
        return installed;
}
