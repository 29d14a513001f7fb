/* zone.c: the page ranges the shim hands out of its two zones: the external
 * arena (a memfd memd serves, docs/api.md) and the file memory (a file in the
 * container's file directory that the kernel pages itself, docs/shim.md "File
 * memory"). Both are mapped MAP_SHARED at a 2 MiB aligned base; offset X of
 * the descriptor is at BASE + X. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "shim.h"

#define ZONE_ALIGN (2ULL << 20)

int shim_zone_map(int fd, uint64_t size, uint64_t fixed_base, uint64_t *ret_base)
{
        void *p;

        if (fixed_base) {
                p = shim_sys_mmap((void *)fixed_base, size, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
                if (p == MAP_FAILED)
                        return -errno;
                if ((uint64_t)p != fixed_base) {
                        shim_sys_munmap(p, size);
                        return -EEXIST;
                }
        } else {
                char *res = shim_sys_mmap(NULL, size + ZONE_ALIGN, PROT_NONE,
                                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (res == MAP_FAILED)
                        return -errno;
                char *base = (char *)(((uint64_t)res + ZONE_ALIGN - 1) & ~(ZONE_ALIGN - 1));
                p = shim_sys_mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                                  0);
                if (p == MAP_FAILED) {
                        int r = -errno;
                        shim_sys_munmap(res, size + ZONE_ALIGN);
                        return r;
                }
                if (base > res)
                        shim_sys_munmap(res, (size_t)(base - res));
                if (res + size + ZONE_ALIGN > base + size)
                        shim_sys_munmap(base + size, (size_t)(res + ZONE_ALIGN - base));
        }
        /* a child must not share our heap: it gets its own view (shim.fork,
         * shim.file) */
        if (shim_sys_madvise(p, size, MADV_DONTFORK) < 0) {
                int r = -errno;
                shim_sys_munmap(p, size);
                return r;
        }
        *ret_base = (uint64_t)p;
        return 0;
}

int shim_zone_range_setup(struct shim_zone *z, uint64_t size)
{
        uint64_t n = size / SHIM_PAGE;
        void *bits = shim_sys_mmap(NULL, range_bitmap_bytes(n), PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (bits == MAP_FAILED)
                return -errno;
        range_init(&z->range, bits, n);
        return 0;
}

/* Discard [ADDR, ADDR+LEN) and free its pages; returns the bytes that were in use. */
static uint64_t zone_give_back(struct shim_zone *z, void *addr, size_t len)
{
        uint64_t first = ((uint64_t)addr - z->base) / SHIM_PAGE;

        (void)shim_zone_discard(z, addr, len);
        pthread_mutex_lock(&shim_state.lock);
        uint64_t before = z->range.used;
        range_free(&z->range, first, len / SHIM_PAGE);
        uint64_t freed = (before - z->range.used) * SHIM_PAGE;
        pthread_mutex_unlock(&shim_state.lock);
        return freed;
}

/* File memory: reserve the blocks now, so a full file system is an ENOMEM
 * here and never a SIGBUS at the first write. */
static int zone_reserve(struct shim_zone *z, void *p, size_t len)
{
        if (z->kind != SHIM_FILE)
                return 0;
        return fallocate(z->fd, FALLOC_FL_KEEP_SIZE, (off_t)((uint64_t)p - z->base), (off_t)len) < 0
                   ? -errno
                   : 0;
}

void *shim_zone_alloc(struct shim_zone *z, size_t len, size_t align, bool *ret_zero)
{
        uint64_t first;
        bool pristine;
        int r;

        if (align < SHIM_PAGE)
                align = SHIM_PAGE;
        pthread_mutex_lock(&shim_state.lock);
        r = range_alloc(&z->range, len / SHIM_PAGE, align / SHIM_PAGE, &first, &pristine);
        pthread_mutex_unlock(&shim_state.lock);
        if (r < 0)
                return NULL;
        void *p = (void *)(z->base + first * SHIM_PAGE);
        /* pages given back by munmap were made inaccessible */
        if ((!pristine && shim_sys_mprotect(p, len, PROT_READ | PROT_WRITE) < 0) ||
            zone_reserve(z, p, len) < 0) {
                (void)zone_give_back(z, p, len);
                return NULL;
        }
        /* a new arena reads as zeros (memd's contract); a fork child's clone
         * keeps that true above the parent's high-water mark */
        *ret_zero = pristine;
        return p;
}

int shim_zone_claim(struct shim_zone *z, void *addr, size_t len, bool *ret_zero)
{
        uint64_t first = ((uint64_t)addr - z->base) / SHIM_PAGE;
        int r;

        /* growing in place is a new allocation: within the limit */
        if (!shim_charge(z->kind, len, true))
                return -ENOMEM;
        pthread_mutex_lock(&shim_state.lock);
        r = range_claim(&z->range, first, len / SHIM_PAGE, ret_zero);
        pthread_mutex_unlock(&shim_state.lock);
        if (r < 0) {
                shim_uncharge(z->kind, len);
                return r;
        }
        if ((!*ret_zero && shim_sys_mprotect(addr, len, PROT_READ | PROT_WRITE) < 0) ||
            (r = zone_reserve(z, addr, len)) < 0) {
                r = r < 0 ? r : -errno;
                shim_zone_release(z, addr, len);
        }
        return r;
}

int shim_zone_discard(struct shim_zone *z, void *addr, size_t len)
{
        off_t off = (off_t)((uint64_t)addr - z->base);

        /* on the descriptor rather than MADV_REMOVE: works whatever the
         * mapping's protection is now */
        if (fallocate(z->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, (off_t)len) < 0)
                return -errno;
        if (z->kind != SHIM_EXTERNAL)
                return 0;
        /* memd counts the pages this process wrote against the container's
         * quota until it hears they were given back (docs/memd.md) */
        shim_sock_lock();
        (void)shim_proto_discard(shim_state.sock, (uint64_t)off, len);
        shim_sock_unlock();
        return 0;
}

void shim_zone_release(struct shim_zone *z, void *addr, size_t len)
{
        shim_uncharge(z->kind, zone_give_back(z, addr, len));
}

/* What the file system may still give file memory: a 1/64 reserve is kept
 * for everything else on it. */
static uint64_t fs_room(int fd)
{
        struct statvfs st;

        if (fstatvfs(fd, &st) < 0)
                return 0;
        uint64_t avail = (uint64_t)st.f_bavail * st.f_frsize;
        uint64_t reserve = (uint64_t)st.f_blocks * st.f_frsize / 64;
        return avail > reserve ? avail - reserve : 0;
}

bool shim_zone_room(struct shim_zone *z, uint64_t size)
{
        if (!shim_zone_has(z, (void *)z->base, z->size))
                return false;
        pthread_mutex_lock(&shim_state.lock);
        bool room = (z->range.n_pages - z->range.used) * SHIM_PAGE >= size;
        pthread_mutex_unlock(&shim_state.lock);
        return room && (z->kind != SHIM_FILE || fs_room(z->fd) >= size);
}

void *shim_zone_place(uint64_t size, size_t align, bool *ret_zero, enum shim_placement *ret_where)
{
        enum shim_placement where = shim_place(size, true);
        void *p = NULL;

        if (where == SHIM_EXTERNAL) {
                p = shim_zone_alloc(&shim_state.arena, size, align, ret_zero);
                if (!p) { /* no aligned room after all */
                        shim_uncharge(SHIM_EXTERNAL, size);
                        where = shim_place(size, false);
                }
        }
        if (where == SHIM_FILE) {
                p = shim_zone_alloc(&shim_state.file, size, align, ret_zero);
                if (!p) { /* no aligned room, or the file system filled up */
                        shim_uncharge(SHIM_FILE, size);
                        where = SHIM_NONE;
                }
        }
        *ret_where = where;
        return p;
}
