/* mmap.c: the application's anonymous mmap/munmap/mremap/madvise. Plain
 * large private anonymous read-write requests follow the policy (local or a
 * range of the external arena); everything else goes to the kernel as is.
 * Ranges inside the arena are never unmapped: their pages are punched out and
 * the range made inaccessible until it is handed out again. */
/* mmap and mmap64 are two exported names here: no off_t redirection */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"
#include "shim.h"

#define _export_ __attribute__((visibility("default")))
#define LOCAL_TRACK_MAX 1024

/* The application's local mappings charged against local_alloc_limit, so a
 * munmap gives their bytes back (untracked ones stay charged: errs towards
 * external, never towards the local limit). Under shim_state.lock. */
static struct {
        uint64_t start, len;
} local_maps[LOCAL_TRACK_MAX];
static unsigned n_local_maps;

/* Remember a mapping whose bytes the caller charged. */
static void local_track(uint64_t start, uint64_t len)
{
        pthread_mutex_lock(&shim_state.lock);
        if (n_local_maps < LOCAL_TRACK_MAX)
                local_maps[n_local_maps++] = (typeof(local_maps[0])){ start, len };
        pthread_mutex_unlock(&shim_state.lock);
}

/* [START, START+LEN) is gone: drop it from the tracked mappings. */
static void local_untrack(uint64_t start, uint64_t len)
{
        uint64_t end = start + len, freed = 0;

        pthread_mutex_lock(&shim_state.lock);
        for (unsigned i = 0; i < n_local_maps; i++) {
                uint64_t s = local_maps[i].start, e = s + local_maps[i].len;
                if (e <= start || s >= end)
                        continue;
                uint64_t os = MAX(s, start), oe = MIN(e, end);
                freed += oe - os;
                if (os == s && oe == e) {
                        local_maps[i--] = local_maps[--n_local_maps];
                } else if (os == s) {
                        local_maps[i] = (typeof(local_maps[0])){ oe, e - oe };
                } else if (oe == e) {
                        local_maps[i].len = os - s;
                } else {
                        local_maps[i].len = os - s;
                        if (n_local_maps < LOCAL_TRACK_MAX)
                                local_maps[n_local_maps++] =
                                        (typeof(local_maps[0])){ oe, e - oe };
                        else
                                freed -= e - oe; /* stays charged */
                }
        }
        pthread_mutex_unlock(&shim_state.lock);
        shim_uncharge(SHIM_LOCAL, freed);
}

static bool plain_anonymous(void *addr, size_t len, int prot, int flags, off_t off)
{
        return addr == NULL && off == 0 && prot == (PROT_READ | PROT_WRITE) &&
               flags == (MAP_PRIVATE | MAP_ANONYMOUS) && len >= SHIM_MMAP_THRESHOLD &&
               len <= (1ULL << 46);
}

static void *arena_mmap(size_t len)
{
        size_t alen = ALIGN_UP(len, SHIM_PAGE);
        bool zero;
        char *p = shim_arena_alloc(alen, SHIM_PAGE, &zero);

        if (!p)
                return NULL;
        if (!zero)
                memset(p, 0, alen); /* mmap promises zeros; memd may refill old data */
        return p;
}

_export_ void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
        void *p;

        if (atomic_load_explicit(&shim_state.attached, memory_order_acquire) &&
            plain_anonymous(addr, len, prot, flags, off)) {
                size_t alen = ALIGN_UP(len, SHIM_PAGE);
                enum shim_placement where = shim_place(alen, true);

                if (where == SHIM_EXTERNAL) {
                        if ((p = arena_mmap(len)))
                                return p;
                        shim_uncharge(SHIM_EXTERNAL, alen);
                        where = shim_place(alen, false);
                }
                if (where == SHIM_NONE) {
                        /* the container's local limit and external quota are used up */
                        errno = ENOMEM;
                        return MAP_FAILED;
                }
                p = shim_sys_mmap(addr, len, prot, flags, fd, off);
                if (p != MAP_FAILED)
                        local_track((uint64_t)p, alen);
                else
                        shim_uncharge(SHIM_LOCAL, alen);
                return p;
        }
        if ((flags & MAP_FIXED) && shim_overlaps_arena(addr, len)) {
                /* replacing part of the arena would lose its registration */
                errno = EINVAL;
                return MAP_FAILED;
        }
        return shim_sys_mmap(addr, len, prot, flags, fd, off);
}

_export_ void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
        __attribute__((alias("mmap")));

/* Give back the arena part of a range the application unmaps. */
static void arena_unmap(uint64_t start, uint64_t end)
{
        uint64_t s = MAX(start, shim_state.base);
        uint64_t e = MIN(end, shim_state.base + shim_state.size);

        if (s >= e)
                return;
        shim_arena_release((void *)s, e - s);
        (void)shim_sys_mprotect((void *)s, e - s, PROT_NONE);
}

_export_ int munmap(void *addr, size_t len)
{
        uint64_t start = (uint64_t)addr, end;
        int r = 0;

        if (!shim_overlaps_arena(addr, len) ||
            (start % SHIM_PAGE) || len == 0 || len > UINT64_MAX - start) {
                r = shim_sys_munmap(addr, len);
                if (r == 0 && atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                        local_untrack(start, ALIGN_UP(len, SHIM_PAGE));
                return r;
        }
        end = start + ALIGN_UP(len, SHIM_PAGE);
        arena_unmap(start, end);
        /* the parts outside the arena */
        if (start < shim_state.base)
                r = shim_sys_munmap(addr, shim_state.base - start);
        if (r == 0 && end > shim_state.base + shim_state.size)
                r = shim_sys_munmap((void *)(shim_state.base + shim_state.size),
                                    end - shim_state.base - shim_state.size);
        return r;
}

/* mremap of an arena range: shrink in place, grow in place when the pages
 * after it are free, else move (copy) when allowed. */
static void *arena_mremap(void *old, size_t old_len, size_t new_len, int flags)
{
        uint64_t o = ALIGN_UP(old_len, SHIM_PAGE), n = ALIGN_UP(new_len, SHIM_PAGE);
        char *p = old;
        bool zero;

        if ((flags & ~MREMAP_MAYMOVE) || !shim_in_arena(old, o) || new_len == 0) {
                errno = EINVAL;
                return MAP_FAILED;
        }
        if (n <= o) {
                if (n < o)
                        arena_unmap((uint64_t)p + n, (uint64_t)p + o);
                return old;
        }
        if (shim_in_arena(p + o, n - o) && shim_arena_claim(p + o, n - o, &zero) == 0) {
                if (!zero)
                        memset(p + o, 0, n - o);
                return old;
        }
        if (!(flags & MREMAP_MAYMOVE)) {
                errno = ENOMEM;
                return MAP_FAILED;
        }
        void *q = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q == MAP_FAILED)
                return q;
        memcpy(q, old, MIN(old_len, new_len));
        arena_unmap((uint64_t)p, (uint64_t)p + o);
        return q;
}

_export_ void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
        void *new_addr = NULL, *p;

        if (flags & MREMAP_FIXED) {
                va_list ap;
                va_start(ap, flags);
                new_addr = va_arg(ap, void *);
                va_end(ap);
        }
        if (shim_overlaps_arena(old, old_len ? old_len : 1))
                return arena_mremap(old, old_len, new_len, flags);
        if ((flags & MREMAP_FIXED) && shim_overlaps_arena(new_addr, new_len)) {
                errno = EINVAL;
                return MAP_FAILED;
        }
        p = shim_sys_mremap(old, old_len, new_len, flags, new_addr);
        if (p != MAP_FAILED && atomic_load_explicit(&shim_state.attached, memory_order_acquire)) {
                /* a tracked local mapping moved or changed size */
                pthread_mutex_lock(&shim_state.lock);
                bool tracked = false;
                for (unsigned i = 0; i < n_local_maps; i++)
                        if (local_maps[i].start == (uint64_t)old) {
                                tracked = true;
                                break;
                        }
                pthread_mutex_unlock(&shim_state.lock);
                if (tracked) {
                        /* already done by the kernel: charged whatever the limit */
                        local_untrack((uint64_t)old, ALIGN_UP(old_len, SHIM_PAGE));
                        (void)shim_charge(SHIM_LOCAL, ALIGN_UP(new_len, SHIM_PAGE), false);
                        local_track((uint64_t)p, ALIGN_UP(new_len, SHIM_PAGE));
                }
        }
        return p;
}

_export_ int madvise(void *addr, size_t len, int advice)
{
        /* a private anonymous mapping reads zeros after DONTNEED; an arena
         * range gets the same by zeroing (a punched page could come back with
         * old data from the appliance) */
        if (shim_in_arena(addr, len) && (advice == MADV_DONTNEED || advice == MADV_REMOVE)) {
                memset(addr, 0, len);
                return 0;
        }
        if (shim_in_arena(addr, len) && advice == MADV_FREE)
                return 0; /* contents may stay: a valid MADV_FREE */
        return shim_sys_madvise(addr, len, advice);
}
