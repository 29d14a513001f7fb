/* uffd.c: userfaultfd wrappers (see uffd.h). Every call returns 0 or -errno;
 * nothing prints. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "macro.h"
#include "uffd.h"

#define PAGE_SZ 4096ULL

int uffd_dev_open(void)
{
        int fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int uffd_new(int dev_fd, int flags)
{
        int fd = ioctl(dev_fd, USERFAULTFD_IOC_NEW, flags & (O_CLOEXEC | O_NONBLOCK));
        return fd < 0 ? -errno : fd;
}

int uffd_api(int uffd, uint64_t want, uint64_t *ret_features)
{
        struct uffdio_api api = { .api = UFFD_API, .features = want };

        if (ioctl(uffd, UFFDIO_API, &api) < 0)
                return -errno;
        if (ret_features)
                *ret_features = api.features;
        return 0;
}

int uffd_probe_features(int dev_fd, uint64_t *ret_features)
{
        _cleanup_close_ int fd = -1;
        uint64_t f;
        int r;

        fd = uffd_new(dev_fd, O_CLOEXEC);
        if (fd < 0)
                return fd;
        r = uffd_api(fd, 0, &f);
        if (r < 0)
                return r;
        *ret_features = f;
        return 0;
}

int uffd_open_with(int dev_fd, int flags, uint64_t required, uint64_t optional,
                   uint64_t *ret_features, int *ret_uffd)
{
        _cleanup_close_ int fd = -1;
        uint64_t avail, got;
        int r;

        r = uffd_probe_features(dev_fd, &avail);
        if (r < 0)
                return r;
        if ((avail & required) != required)
                return -EOPNOTSUPP;
        fd = uffd_new(dev_fd, flags);
        if (fd < 0)
                return fd;
        r = uffd_api(fd, required | (optional & avail), &got);
        if (r < 0)
                return r;
        if (ret_features)
                *ret_features = got;
        *ret_uffd = TAKE_FD(fd);
        return 0;
}

int uffd_register(int uffd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ret_ioctls)
{
        struct uffdio_register reg = { .range = { .start = start, .len = len }, .mode = mode };

        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
                return -errno;
        if (ret_ioctls)
                *ret_ioctls = reg.ioctls;
        return 0;
}

int uffd_unregister(int uffd, uint64_t start, uint64_t len)
{
        struct uffdio_range range = { .start = start, .len = len };

        return ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, bool wp, bool dontwake,
              uint64_t *ret_done, uint64_t *ret_existing)
{
        uint64_t done = 0, existing = 0;
        int r = 0;

        while (done < len) {
                struct uffdio_copy c = {
                        .dst = dst + done,
                        .src = (uint64_t)(uintptr_t)src + done,
                        .len = len - done,
                        .mode = (wp ? UFFDIO_COPY_MODE_WP : 0) |
                                (dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0),
                };

                if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
                        done = len;
                        break;
                }
                r = -errno;
                /* c.copy: bytes copied (>0) or -errno of the page that stopped it. */
                if (c.copy > 0) {
                        done += (uint64_t)c.copy;
                        r = 0;
                        continue;
                }
                if (r == -EAGAIN || r == -EINTR) {
                        r = 0;
                        continue;
                }
                if (r == -EEXIST) {
                        /* The page at dst+done is already there: leave it, go on. */
                        existing += PAGE_SZ;
                        done += PAGE_SZ;
                        r = 0;
                        continue;
                }
                break;
        }
        if (r == 0 && existing && !dontwake)
                (void)uffd_wake(uffd, dst, len); /* skipped pages may have waiters */
        if (ret_done)
                *ret_done = done;
        if (ret_existing)
                *ret_existing = existing;
        return r;
}

int uffd_writeprotect(int uffd, uint64_t start, uint64_t len, bool wp, bool dontwake)
{
        struct uffdio_writeprotect w = {
                .range = { .start = start, .len = len },
                .mode = (wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0) |
                        /* The kernel refuses DONTWAKE with WP (protecting wakes nobody). */
                        (dontwake && !wp ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0),
        };

        for (;;) {
                if (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0)
                        return 0;
                if (errno != EAGAIN && errno != EINTR)
                        return -errno;
        }
}

int uffd_wake(int uffd, uint64_t start, uint64_t len)
{
        struct uffdio_range range = { .start = start, .len = len };

        return ioctl(uffd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

int uffd_poison(int uffd, uint64_t start, uint64_t len)
{
        struct uffdio_poison p = { .range = { .start = start, .len = len } };

        for (;;) { /* -EAGAIN: the mapping changed meanwhile, part is done */
                if (ioctl(uffd, UFFDIO_POISON, &p) == 0)
                        return 0;
                if (errno != EAGAIN || p.updated <= 0)
                        return -errno;
                p.range.start += (uint64_t)p.updated;
                p.range.len -= (uint64_t)p.updated;
                p.updated = 0;
        }
}

int uffd_read_msgs(int uffd, struct uffd_msg *msgs, size_t max)
{
        for (;;) {
                ssize_t n = read(uffd, msgs, max * sizeof(*msgs));
                if (n >= 0)
                        return (int)((size_t)n / sizeof(*msgs));
                if (errno == EINTR)
                        continue;
                return errno == EAGAIN ? 0 : -errno;
        }
}

int uffd_scan_written(int pagemap_fd, uint64_t start, uint64_t end, bool rearm,
                      struct page_region *vec, size_t vec_len, uint64_t *ret_walk_end)
{
        struct pm_scan_arg arg = {
                .size = sizeof(arg),
                .flags = rearm ? (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC) : 0,
                .start = start,
                .end = end,
                .vec = (uint64_t)(uintptr_t)vec,
                .vec_len = vec_len,
                .category_mask = PAGE_IS_WRITTEN,
                .return_mask = PAGE_IS_WRITTEN,
        };
        int n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);

        if (n < 0)
                return -errno;
        if (ret_walk_end)
                *ret_walk_end = arg.walk_end;
        return n;
}
