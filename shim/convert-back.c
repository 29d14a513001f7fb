/* convert-back.c: converted memory back to local memory at the same
 * addresses (docs/shim.md "Conversion", seed 000 claim 15).
 *
 * From file memory: an empty anonymous mapping registered for missing faults
 * replaces the file mapping in one mremap; every access faults and the
 * handler fills the page from the file (UFFDIO_COPY), while this thread fills
 * the rest; then the range is unregistered and the file pages punched. No
 * writer waits for more than its own page.
 *
 * From appliance memory: memd holds every write to the range (shim.alias
 * hold: its pages write-protected, a write fault left unanswered), this
 * thread copies the pages into a fresh anonymous mapping (reads go on; pages
 * not resident are fetched), which then replaces the range in one mremap;
 * shim.alias drop wakes the held writers, who retry on the local pages. The
 * writers wait for one piece's copy (16 MiB at most). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "convert.h"
#include "uffd-compat.h"

/* Fill page ADDR of the range being converted back from the file. */
void conv_fill_page(uint64_t addr)
{
        struct uffdio_copy c = {.dst = addr, .src = conv.src + (addr - conv.start), .len = SHIM_PAGE};
        int r;

        /* EAGAIN: the address space changed under the copy: again */
        while ((r = ioctl(conv.uffd, UFFDIO_COPY, &c)) < 0 && errno == EAGAIN)
                c.copy = 0;
        if (r < 0 && errno == EEXIST)
                conv_wake(addr, SHIM_PAGE);
}

/* Fill [A, A+LEN) of the range from the file (already-filled pages stay). */
static void fill_run(uint64_t a, uint64_t len)
{
        for (uint64_t at = a; at < a + len;) {
                uint64_t n = MIN_U64(a + len - at, CONV_BATCH * SHIM_PAGE);
                struct uffdio_copy c = {.dst = at, .src = conv.src + (at - conv.start), .len = n};
                if (ioctl(conv.uffd, UFFDIO_COPY, &c) < 0 && c.copy <= 0) {
                        conv_fill_page(at); /* a page a fault filled first: one by one */
                        at += SHIM_PAGE;
                        continue;
                }
                at += c.copy > 0 ? (uint64_t)c.copy : n;
        }
}

/* Holes of the file read as zeros: the zero page, no memory. */
static void zero_run(uint64_t a, uint64_t len)
{
        for (uint64_t at = a; at < a + len; at += SHIM_PAGE) {
                struct uffdio_zeropage z = {.range = {at, SHIM_PAGE}};
                while (ioctl(conv.uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno == EAGAIN)
                        z.zeropage = 0;
        }
}

/* Every page of the range, data runs copied, holes zero pages. */
static void fill_all(uint64_t off)
{
        int fd = shim_state.file.fd;
        uint64_t end = off + conv.len;

        for (uint64_t at = off; at < end;) {
                off_t d = lseek(fd, (off_t)at, SEEK_DATA);
                uint64_t data = d < 0 || (uint64_t)d > end ? end : (uint64_t)d;
                if (data > at)
                        zero_run(conv.start + (at - off), data - at);
                if (data >= end)
                        break;
                off_t h = lseek(fd, (off_t)data, SEEK_HOLE);
                uint64_t hole = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
                fill_run(conv.start + (data - off), hole - data);
                at = hole;
        }
}

int conv_file_to_local(const struct shim_local *l)
{
        struct shim_zone *z = &shim_state.file;
        struct uffdio_register reg = {.range = {0, l->len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
        char *t = shim_sys_mmap(NULL, l->len, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        uint64_t t0;

        if (t == MAP_FAILED)
                return -errno;
        reg.range.start = (uint64_t)t;
        if (ioctl(conv.uffd, UFFDIO_REGISTER, &reg) < 0) {
                int r = -errno;
                shim_sys_munmap(t, l->len);
                return r;
        }
        pthread_mutex_lock(&conv.mu);
        conv.start = l->start;
        conv.len = l->len;
        conv.src = z->base + l->off;
        conv.to_file = false;
        pthread_mutex_unlock(&conv.mu);
        /* the file's page-table entries out of the way first, under the
         * read lock (faults go on meanwhile and refault the same file pages),
         * so the swap below has next to nothing to tear down */
        (void)shim_sys_madvise((void *)l->start, l->len, MADV_DONTNEED);
        /* one step: the file mapping goes, the empty registered range takes
         * its place; from here every access faults until its page is in */
        t0 = conv_now_ns();
        void *p =
            shim_sys_mremap(t, l->len, l->len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)l->start);
        if (p == MAP_FAILED) {
                int r = -errno;
                pthread_mutex_lock(&conv.mu);
                conv.start = conv.len = 0;
                pthread_mutex_unlock(&conv.mu);
                shim_sys_munmap(t, l->len);
                return r;
        }
        uint64_t swapped = conv_now_ns();
        fill_all(l->off);
        reg.range.start = l->start;
        (void)ioctl(conv.uffd, UFFDIO_UNREGISTER, &reg.range);
        pthread_mutex_lock(&conv.mu);
        conv.start = conv.len = 0;
        pthread_mutex_unlock(&conv.mu);
        conv_stats.last_window_ns = swapped - t0; /* the mremap; no writer is held */
        if (conv_stats.last_window_ns > conv_stats.max_window_ns)
                conv_stats.max_window_ns = conv_stats.last_window_ns;
        (void)shim_charge(SHIM_LOCAL, l->len, false);
        (void)shim_locals_set(l->start, l->len, SHIM_LOCAL, 0);
        shim_zone_release(z, (void *)(z->base + l->off), l->len);
        return 0;
}


int conv_app_to_local(const struct shim_local *l)
{
        struct shim_zone *z = &shim_state.arena;
        char *t = shim_sys_mmap(NULL, l->len, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        uint64_t t0;
        int r;

        if (t == MAP_FAILED)
                return -errno;
        if (!shim_charge(SHIM_LOCAL, l->len, true)) {
                shim_sys_munmap(t, l->len);
                return -ENOMEM;
        }
        r = shim_alias("hold", l->start, l->off, l->len);
        if (r < 0) {
                shim_uncharge(SHIM_LOCAL, l->len);
                shim_sys_munmap(t, l->len);
                return r;
        }
        t0 = conv_now_ns();
        for (uint64_t at = 0; at < l->len; at += SHIM_PAGE) {
                const uint64_t *s = (const uint64_t *)(l->start + at);
                if (!conv_page_zero(s))
                        memcpy(t + at, s, SHIM_PAGE);
        }
        void *p =
            shim_sys_mremap(t, l->len, l->len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)l->start);
        r = p == MAP_FAILED ? -errno : 0;
        /* the writers held meanwhile retry: on the local pages, or (the
         * mremap failed) on the appliance's again; memd gone: the new one
         * never knew the alias */
        (void)shim_alias(r < 0 ? "live" : "drop", l->start, l->off, l->len);
        conv_window(conv_now_ns() - t0);
        if (r < 0) {
                shim_uncharge(SHIM_LOCAL, l->len);
                shim_sys_munmap(t, l->len);
                return r;
        }
        (void)shim_locals_set(l->start, l->len, SHIM_LOCAL, 0);
        shim_zone_release(z, (void *)(z->base + l->off), l->len);
        return 0;
}
