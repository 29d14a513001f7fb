/* mmap.c: the application's anonymous mmap/munmap/mremap/madvise. Plain
 * large private anonymous read-write requests follow the policy (local, a
 * range of the external arena or of the file memory); everything else goes to
 * the kernel as is. Ranges inside the zones are never unmapped: their pages are punched out and
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
static bool plain_anonymous(void *addr, size_t len, int prot, int flags, off_t off)
{
        return addr == NULL && off == 0 && prot == (PROT_READ | PROT_WRITE) &&
               flags == (MAP_PRIVATE | MAP_ANONYMOUS) && len >= SHIM_MMAP_THRESHOLD &&
               len <= (1ULL << 46);
}

_export_ void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
        void *p;

        if (atomic_load_explicit(&shim_state.attached, memory_order_acquire) &&
            plain_anonymous(addr, len, prot, flags, off)) {
                size_t alen = ALIGN_UP(len, SHIM_PAGE);
                enum shim_placement where;
                bool zero;

                p = shim_zone_place(alen, SHIM_PAGE, &zero, &where);
                if (p) {
                        if (!zero) /* mmap promises zeros; memd may refill old data */
                                memset(p, 0, alen);
                        return p;
                }
                if (where == SHIM_NONE) {
                        /* the container's local limit, external quota and file
                         * space are used up */
                        errno = ENOMEM;
                        return MAP_FAILED;
                }
                p = shim_sys_mmap(addr, len, prot, flags, fd, off);
                if (p != MAP_FAILED)
                        shim_locals_track((uint64_t)p, alen);
                else
                        shim_uncharge(SHIM_LOCAL, alen);
                return p;
        }
        if ((flags & MAP_FIXED) && shim_overlaps_zone(addr, len)) {
                /* replacing part of a zone would lose its registration */
                errno = EINVAL;
                return MAP_FAILED;
        }
        return shim_sys_mmap(addr, len, prot, flags, fd, off);
}

_export_ void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
        __attribute__((alias("mmap")));

/* Give back the part in Z of a range the application unmaps. */
static void zone_unmap(struct shim_zone *z, uint64_t start, uint64_t end)
{
        uint64_t s = MAX(start, z->base);
        uint64_t e = MIN(end, z->base + z->size);

        if (s >= e)
                return;
        shim_zone_release(z, (void *)s, e - s);
        (void)shim_sys_mprotect((void *)s, e - s, PROT_NONE);
}

/* munmap of [START, END) outside the zones (which may lie inside it). */
static int unmap_outside(uint64_t start, uint64_t end)
{
        const struct shim_zone *zs[2] = {&shim_state.arena, &shim_state.file};
        int r = 0;

        if (zs[0]->base > zs[1]->base) {
                zs[0] = &shim_state.file;
                zs[1] = &shim_state.arena;
        }
        for (int i = 0; i < 2 && r == 0 && start < end; i++) {
                const struct shim_zone *z = zs[i];
                if (!z->size || z->base + z->size <= start || z->base >= end)
                        continue;
                if (start < z->base)
                        r = shim_sys_munmap((void *)start, z->base - start);
                start = z->base + z->size;
        }
        if (r == 0 && start < end)
                r = shim_sys_munmap((void *)start, end - start);
        return r;
}

_export_ int munmap(void *addr, size_t len)
{
        uint64_t start = (uint64_t)addr, end;

        if (!shim_overlaps_zone(addr, len) ||
            (start % SHIM_PAGE) || len == 0 || len > UINT64_MAX - start) {
                bool attached = atomic_load_explicit(&shim_state.attached, memory_order_acquire);
                /* not while a conversion works on it (locals.c) */
                if (attached)
                        shim_locals_busy(true);
                int r = shim_sys_munmap(addr, len);
                if (r == 0 && attached)
                        shim_locals_untrack(start, ALIGN_UP(len, SHIM_PAGE), false);
                if (attached)
                        shim_locals_busy(false);
                return r;
        }
        end = start + ALIGN_UP(len, SHIM_PAGE);
        zone_unmap(&shim_state.arena, start, end);
        zone_unmap(&shim_state.file, start, end);
        return unmap_outside(start, end);
}

/* mremap's move when it cannot grow in place: a new mapping (placed by the
 * policy) with OLD's contents; the caller gives OLD back. */
static void *move_by_copy(void *old, size_t old_len, size_t new_len, int flags)
{
        if (!(flags & MREMAP_MAYMOVE)) {
                errno = ENOMEM;
                return MAP_FAILED;
        }
        void *q = mmap(NULL, ALIGN_UP(new_len, SHIM_PAGE), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q != MAP_FAILED)
                memcpy(q, old, MIN(old_len, new_len));
        return q;
}

/* mremap of a zone's range: shrink in place, grow in place when the pages
 * after it are free, else move (copy) when allowed. */
static void *zone_mremap(void *old, size_t old_len, size_t new_len, int flags)
{
        uint64_t o = ALIGN_UP(old_len, SHIM_PAGE), n = ALIGN_UP(new_len, SHIM_PAGE);
        struct shim_zone *z = shim_zone_of(old, o);
        char *p = old;
        bool zero;

        if ((flags & ~MREMAP_MAYMOVE) || !z || new_len == 0) {
                errno = EINVAL;
                return MAP_FAILED;
        }
        if (n <= o) {
                if (n < o)
                        zone_unmap(z, (uint64_t)p + n, (uint64_t)p + o);
                return old;
        }
        if (shim_zone_has(z, p + o, n - o) && shim_zone_claim(z, p + o, n - o, &zero) == 0) {
                if (!zero)
                        memset(p + o, 0, n - o);
                return old;
        }
        void *q = move_by_copy(old, old_len, new_len, flags);
        if (q != MAP_FAILED)
                zone_unmap(z, (uint64_t)p, (uint64_t)p + o);
        return q;
}

static void *converted_mremap(void *old, size_t old_len, size_t new_len, int flags)
{
        uint64_t o = ALIGN_UP(old_len, SHIM_PAGE), n = ALIGN_UP(new_len, SHIM_PAGE);

        if (n <= o) {
                if (n < o)
                        (void)munmap((char *)old + n, o - n);
                return old;
        }
        void *q = move_by_copy(old, old_len, new_len, flags);
        if (q != MAP_FAILED)
                (void)munmap(old, o);
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
        if (shim_overlaps_zone(old, old_len ? old_len : 1))
                return zone_mremap(old, old_len, new_len, flags);
        if ((flags & MREMAP_FIXED) && shim_overlaps_zone(new_addr, new_len)) {
                errno = EINVAL;
                return MAP_FAILED;
        }
        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                return shim_sys_mremap(old, old_len, new_len, flags, new_addr);
        /* a converted range is a mapping of our file: growing it would reach
         * other extents' pages, so it moves by copying like a zone range */
        if (shim_locals_converted((uint64_t)old, old_len) && !(flags & MREMAP_FIXED))
                return converted_mremap(old, old_len, new_len, flags);
        shim_locals_busy(true);
        p = shim_sys_mremap(old, old_len, new_len, flags, new_addr);
        if (p != MAP_FAILED && shim_locals_tracked((uint64_t)old)) {
                /* a tracked local mapping moved or changed size: already done
                 * by the kernel, charged whatever the limit */
                shim_locals_untrack((uint64_t)old, ALIGN_UP(old_len, SHIM_PAGE), false);
                (void)shim_charge(SHIM_LOCAL, ALIGN_UP(new_len, SHIM_PAGE), false);
                shim_locals_track((uint64_t)p, ALIGN_UP(new_len, SHIM_PAGE));
        }
        shim_locals_busy(false);
        return p;
}

_export_ int madvise(void *addr, size_t len, int advice)
{
        /* a private anonymous mapping reads zeros after DONTNEED; an arena
         * range gets the same by zeroing (a punched page could come back with
         * old data from the appliance) */
        if (shim_zone_of(addr, len) && (advice == MADV_DONTNEED || advice == MADV_REMOVE)) {
                memset(addr, 0, len);
                return 0;
        }
        if (shim_zone_of(addr, len) && advice == MADV_FREE)
                return 0; /* contents may stay: a valid MADV_FREE */
        if ((advice == MADV_DONTNEED || advice == MADV_REMOVE || advice == MADV_FREE) &&
            atomic_load_explicit(&shim_state.attached, memory_order_acquire) &&
            shim_locals_converted((uint64_t)addr, len)) {
                /* a converted range maps our file: its pages read zeros once
                 * punched, as anonymous memory would after DONTNEED */
                shim_locals_busy(true);
                int r = shim_locals_purge(addr, len);
                if (r == 0)
                        r = shim_sys_madvise(addr, len, MADV_DONTNEED);
                shim_locals_busy(false);
                return r;
        }
        return shim_sys_madvise(addr, len, advice);
}
