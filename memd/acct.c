/* acct.c: memd's side of a container's accounting page (xmem/acct.h,
 * docs/memd.md "Container-wide accounting"): creating it, the processes'
 * slots, and taking the last memd's page back after a restart (the resumed
 * shims hand it over with shim.resume and keep charging it). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "container.h"
#include "log.h"
#include "macro.h"
#include "residency.h"

#define ACCT_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* The accounting page: a sealed shmem memfd of XMEM_ACCT_SIZE, the header
 * written before the magic. The shims write it; memd trusts nothing in it
 * beyond counters of this container. */
int acct_create(struct container *c, struct xmem_error *err)
{
        struct xmem_acct *a;
        struct stat st;
        int fd = memfd_create("xmem-acct", MFD_CLOEXEC | MFD_ALLOW_SEALING), r;

        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "accounting page: memfd: %m");
        if (ftruncate(fd, (off_t)XMEM_ACCT_SIZE) < 0 || fcntl(fd, F_ADD_SEALS, ACCT_SEALS) < 0 ||
            fstat(fd, &st) < 0 ||
            (a = mmap(NULL, XMEM_ACCT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
                MAP_FAILED) {
                r = negative_errno();
                close(fd);
                return xmem_error_set(err, r, "accounting page: %s", strerror(-r));
        }
        a->h.version = XMEM_ACCT_VERSION;
        a->h.n_slots = XMEM_ACCT_SLOTS;
        a->h.local_alloc_limit = c->local_alloc_limit;
        a->h.external_quota = c->external;
        __atomic_store_n(&a->h.magic, XMEM_ACCT_MAGIC, __ATOMIC_RELEASE);
        c->acct = a;
        c->acct_fd = fd;
        c->acct_ino = (uint64_t)st.st_ino;
        return 0;
}

void acct_free(struct container *c)
{
        if (c->acct)
                munmap(c->acct, XMEM_ACCT_SIZE);
        if (c->acct_spare)
                munmap(c->acct_spare, XMEM_ACCT_SIZE);
        safe_close(c->acct_fd);
}

/* *V -= min(N, *V) (the shims change *V concurrently). */
static void acct_sub(uint64_t *v, uint64_t n)
{
        uint64_t old = __atomic_load_n(v, __ATOMIC_RELAXED);

        while (!__atomic_compare_exchange_n(v, &old, old - MIN(old, n), false, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                ;
}

/* Take SLOT's charges out of A's totals and clear it. Only for a slot no
 * live process writes any more. */
static void acct_clear_slot(struct xmem_acct *a, uint32_t slot)
{
        struct xmem_acct_slot *s = &a->slots[slot];

        acct_sub(&a->h.local_bytes, __atomic_exchange_n(&s->local_bytes, 0, __ATOMIC_RELAXED));
        acct_sub(&a->h.external_bytes,
                 __atomic_exchange_n(&s->external_bytes, 0, __ATOMIC_RELAXED));
        __atomic_store_n(&s->file_bytes, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->convert_done, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->convert_failed, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->convert_errno, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->pid, 0, __ATOMIC_RELAXED);
}

void acct_take_slot(struct container *c, struct process *p)
{
        for (uint32_t i = 1; i < XMEM_ACCT_SLOTS; i++)
                if (!c->acct_used[i]) {
                        c->acct_used[i] = true;
                        p->acct_slot = i;
                        __atomic_store_n(&c->acct->slots[i].pid, (uint64_t)p->pid,
                                         __ATOMIC_RELAXED);
                        return;
                }
        p->acct_slot = 0; /* all taken: shared, cleared when its last user is gone */
        c->acct_overflow++;
}

void acct_mark_slot(struct container *c, uint32_t slot)
{
        if (slot == 0)
                c->acct_overflow++;
        else
                c->acct_used[slot] = true;
}

void acct_release_slot(struct container *c, struct process *p)
{
        if (p->acct_slot == 0) {
                if (--c->acct_overflow == 0)
                        acct_clear_slot(c->acct, 0);
                return;
        }
        acct_clear_slot(c->acct, p->acct_slot);
        c->acct_used[p->acct_slot] = false;
}

/* Is FD the page the last memd made for C: that memfd (inode), sealed at
 * its size, with a header of this version? Its mapping then. */
static int acct_check(struct container *c, int fd, struct xmem_acct **ret)
{
        struct xmem_acct *a;
        struct stat st;
        int seals = fcntl(fd, F_GET_SEALS);

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if ((uint64_t)st.st_ino != c->acct_awaiting_ino || st.st_size != (off_t)XMEM_ACCT_SIZE ||
            seals < 0 || (seals & ACCT_SEALS) != ACCT_SEALS)
                return -EPERM;
        a = mmap(NULL, XMEM_ACCT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (a == MAP_FAILED)
                return negative_errno();
        if (__atomic_load_n(&a->h.magic, __ATOMIC_ACQUIRE) != XMEM_ACCT_MAGIC ||
            a->h.version != XMEM_ACCT_VERSION || a->h.n_slots != XMEM_ACCT_SLOTS) {
                munmap(a, XMEM_ACCT_SIZE);
                return -EPROTO;
        }
        *ret = a;
        return 0;
}

int acct_adopt(struct container *c, int fd)
{
        struct xmem_acct *a = NULL;
        int r, keep;

        if (!c->acct_awaiting_ino)
                return 0;         /* taken back already (or a page of this memd's) */
        if (c->acct_fresh_used) { /* a new process charges the fresh page already */
                c->acct_awaiting_ino = 0;
                return -EBUSY;
        }
        r = acct_check(c, fd, &a);
        if (r < 0)
                return r;
        keep = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (keep < 0) {
                r = negative_errno();
                munmap(a, XMEM_ACCT_SIZE);
                return r;
        }
        /* memd owns the limits; the slots of processes that did not come
         * back are cleared (their charges out of the totals, saturating) */
        a->h.local_alloc_limit = c->local_alloc_limit;
        a->h.external_quota = c->external;
        for (uint32_t i = 0; i < XMEM_ACCT_SLOTS; i++)
                if (i == 0 ? c->acct_overflow == 0 : !c->acct_used[i])
                        acct_clear_slot(a, i);
        for (struct process *p = c->processes; p; p = p->next)
                if (p->acct_slot)
                        __atomic_store_n(&a->slots[p->acct_slot].pid, (uint64_t)p->pid,
                                         __ATOMIC_RELAXED);
        /* a conversion asked for since the restart went into the fresh page,
         * which no shim reads: ask again in this one, as its next request */
        uint64_t asked = __atomic_load_n(&c->acct->h.convert, __ATOMIC_ACQUIRE);
        if (asked) {
                uint64_t seq = (__atomic_load_n(&a->h.convert, __ATOMIC_ACQUIRE) >> 8) + 1;
                __atomic_store_n(&a->h.convert, (seq << 8) | (asked & 0xff), __ATOMIC_RELEASE);
        }
        /* the fresh page stays mapped: the residency manager may still be
         * reading it */
        c->acct_spare = c->acct;
        c->acct = a;
        safe_close(c->acct_fd);
        c->acct_fd = keep;
        c->acct_ino = c->acct_awaiting_ino;
        c->acct_awaiting_ino = 0;
        residency_set_local_live(c->residency, &a->h.local_bytes);
        return 0;
}
