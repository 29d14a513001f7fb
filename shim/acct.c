/* acct.c: the shim's side of the container accounting page (xmem/acct.h):
 * placement decisions over the container-wide counters, charged with atomic
 * compare-and-swap so that all processes of a container together stay within
 * local_alloc_limit and the external quota. Each charge also goes to this
 * process's slot, which memd subtracts from the totals when the process is
 * gone. Order: totals first on a charge, slot first on an uncharge, so a
 * process killed between the two leaves the totals too high, never too low. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"

#define PLACE_TRIES 16

/* Before attach, without a page from memd, or in a fresh child. */
static struct {
        struct xmem_acct_header h;
        struct xmem_acct_slot slots[1];
} acct_private;

static uint64_t ld(const uint64_t *v)
{
        return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static void add(uint64_t *v, uint64_t n)
{
        __atomic_fetch_add(v, n, __ATOMIC_RELAXED);
}

/* *V -= min(N, *V); returns what was taken. */
static uint64_t sub_sat(uint64_t *v, uint64_t n)
{
        uint64_t old = ld(v), take;

        do
                take = old < n ? old : n;
        while (!__atomic_compare_exchange_n(v, &old, old - take, false, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED));
        return take;
}

/* *V += N if the result stays <= LIMIT. */
static bool add_within(uint64_t *v, uint64_t n, uint64_t limit)
{
        uint64_t old = ld(v);

        do
                if (n > limit || old > limit - n)
                        return false;
        while (!__atomic_compare_exchange_n(v, &old, old + n, false, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED));
        return true;
}

static bool attached(void)
{
        return atomic_load_explicit(&shim_state.attached, memory_order_acquire);
}

bool shim_charge(enum shim_placement where, uint64_t size, bool limited)
{
        struct xmem_acct *a = shim_state.acct;

        if (where == SHIM_FILE) { /* bounded by the file system (shim_zone_room) */
                add(&shim_state.slot->file_bytes, size);
                add(&shim_state.file_bytes, size);
                return true;
        }
        bool local = where == SHIM_LOCAL;
        uint64_t *total = local ? &a->h.local_bytes : &a->h.external_bytes;
        /* both allowances from the page: memd changes them on a resize */
        uint64_t limit = !limited || !attached() ? UINT64_MAX
                         : local                 ? ld(&a->h.local_alloc_limit)
                                                 : ld(&a->h.external_quota);

        if (!add_within(total, size, limit))
                return false;
        add(local ? &shim_state.slot->local_bytes : &shim_state.slot->external_bytes, size);
        add(local ? &shim_state.local_bytes : &shim_state.external_bytes, size);
        return true;
}

void shim_uncharge(enum shim_placement where, uint64_t size)
{
        struct xmem_acct *a = shim_state.acct;
        uint64_t n;

        if (where == SHIM_FILE) {
                sub_sat(&shim_state.slot->file_bytes, sub_sat(&shim_state.file_bytes, size));
                return;
        }
        if (where == SHIM_LOCAL) {
                n = sub_sat(&shim_state.local_bytes, size);
                sub_sat(&shim_state.slot->local_bytes, n);
                sub_sat(&a->h.local_bytes, n);
                return;
        }
        /* a child's inherited external bytes were never charged */
        size -= sub_sat(&shim_state.external_credit, size);
        n = sub_sat(&shim_state.external_bytes, size);
        sub_sat(&shim_state.slot->external_bytes, n);
        sub_sat(&a->h.external_bytes, n);
}

enum shim_placement shim_place(uint64_t size, bool try_external)
{
        struct xmem_acct *a = shim_state.acct;
        bool room;

        if (!attached()) {
                (void)shim_charge(SHIM_LOCAL, size, false);
                return SHIM_LOCAL;
        }
        uint64_t file_room = shim_zone_room(&shim_state.file, size) ? size : 0;
        /* memd away (restarting; its appliances may be unreachable too): file
         * memory first where there is some, else the arena, whose pages wait
         * for the next memd like every other page of it (ENOMEM here killed
         * a container across a memd restart) */
        room = try_external && shim_zone_room(&shim_state.arena, size) &&
               !(file_room && __atomic_load_n(&shim_state.memd_away, __ATOMIC_RELAXED));
        /* another process may take the room between the decision and the
         * charge: decide again on the new counters */
        for (int i = 0; i < PLACE_TRIES; i++) {
                uint64_t ext = ld(&a->h.external_bytes);
                struct shim_usage u = {
                        .local_bytes = ld(&a->h.local_bytes),
                        .external_bytes = ext,
                        /* the shim cannot see residency: what is in use is an upper bound */
                        .resident_cache = ext,
                        .file_room = file_room,
                };
                struct shim_policy pol = shim_state.policy;
                /* resize: both allowances live from the page */
                pol.local_alloc_limit = ld(&a->h.local_alloc_limit);
                pol.external_quota = ld(&a->h.external_quota);
                enum shim_placement where = shim_policy_place(&pol, &u, size, room);

                if (where == SHIM_NONE)
                        break;
                if (shim_charge(where, size, true))
                        return where;
        }
        add(&a->h.refused, 1);
        return SHIM_NONE;
}

/* Carry this process's charged bytes over to the page now in use: local ones
 * are charged again (a forked child's copies are its own memory), external
 * ones become credit (a child's clone shares the parent's chunks); file ones
 * are the child's own copy. */
static void acct_adopt(void)
{
        uint64_t local = ld(&shim_state.local_bytes);
        uint64_t ext = __atomic_exchange_n(&shim_state.external_bytes, 0, __ATOMIC_RELAXED);

        add(&shim_state.external_credit, ext);
        __atomic_store_n(&shim_state.slot->external_bytes, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&shim_state.slot->local_bytes, local, __ATOMIC_RELAXED);
        __atomic_store_n(&shim_state.slot->file_bytes, ld(&shim_state.file_bytes),
                         __ATOMIC_RELAXED);
        add(&shim_state.acct->h.local_bytes, local);
}

/* The page's memfd stays open for shim.resume (watch.c): a restarted memd
 * takes the page back and the container's counters stay one. */
static void acct_keep_fd(int fd)
{
        if (shim_state.acctfd >= 0)
                close(shim_state.acctfd);
        shim_state.acctfd = fd;
}

void shim_acct_use_private(void)
{
        acct_keep_fd(-1);
        memset(&acct_private, 0, sizeof(acct_private));
        acct_private.h.magic = XMEM_ACCT_MAGIC;
        acct_private.h.version = XMEM_ACCT_VERSION;
        acct_private.h.n_slots = 1;
        acct_private.h.local_alloc_limit = shim_state.policy.local_alloc_limit;
        acct_private.h.external_quota = shim_state.policy.external_quota;
        shim_state.acct = (struct xmem_acct *)&acct_private;
        shim_state.slot = &acct_private.slots[0];
        acct_adopt();
}

int shim_acct_use_page(int fd, uint32_t slot)
{
        struct xmem_acct *a = shim_sys_mmap(NULL, XMEM_ACCT_SIZE, PROT_READ | PROT_WRITE,
                                            MAP_SHARED, fd, 0);
        int r = 0;

        if (a == MAP_FAILED) {
                r = -errno;
                close(fd);
                return r;
        }
        if (ld(&a->h.magic) != XMEM_ACCT_MAGIC || a->h.version != XMEM_ACCT_VERSION ||
            a->h.n_slots > XMEM_ACCT_SLOTS || slot >= a->h.n_slots)
                r = -EPROTO;
        /* a child gets its own slot from memd (shim.hello again) */
        else if (shim_sys_madvise(a, XMEM_ACCT_SIZE, MADV_DONTFORK) < 0)
                r = -errno;
        if (r < 0) {
                shim_sys_munmap(a, XMEM_ACCT_SIZE);
                close(fd);
                return r;
        }
        acct_keep_fd(fd);
        shim_state.acct = a;
        shim_state.slot = &a->slots[slot];
        acct_adopt();
        return 0;
}
