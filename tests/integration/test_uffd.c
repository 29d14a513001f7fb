/* test_uffd.c: the userfaultfd facts the pager relies on, checked on this
 * kernel through lib/uffd: creation from /dev/userfaultfd, features, MISSING +
 * WP on a MAP_SHARED memfd, and that a punched page faults MISSING again. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "macro.h"
#include "uffd.h"

#define PG 4096

struct server {
        int uffd;
        _Atomic int missing, wp, stop;
        _Atomic unsigned char fill; /* byte installed on the next MISSING fault */
        pthread_t thread;
};

static void *serve(void *arg)
{
        struct server *s = arg;
        static char page[PG];
        struct uffd_msg m[16];

        while (!s->stop) {
                struct pollfd pfd = { .fd = s->uffd, .events = POLLIN };
                if (poll(&pfd, 1, 50) <= 0)
                        continue;
                int n = uffd_read_msgs(s->uffd, m, 16);
                for (int i = 0; i < n; i++) {
                        uint64_t a = m[i].arg.pagefault.address & ~(uint64_t)(PG - 1);
                        if (m[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
                                s->wp++;
                                cr_assert_eq(uffd_writeprotect(s->uffd, a, PG, false, false), 0);
                        } else {
                                s->missing++;
                                memset(page, s->fill, PG);
                                cr_assert_eq(uffd_copy(s->uffd, a, page, PG, true, false, NULL,
                                                       NULL), 0);
                        }
                }
        }
        return NULL;
}

static int dev_fd = -1;

static void setup(void)
{
        if (access("/dev/userfaultfd", F_OK) < 0)
                cr_skip_test("/dev/userfaultfd is missing");
        if (!harness_is_root())
                cr_skip_test("needs root to open /dev/userfaultfd");
        dev_fd = uffd_dev_open();
        cr_assert_geq(dev_fd, 0, "open /dev/userfaultfd: %s", strerror(-dev_fd));
}

static void teardown(void)
{
        dev_fd = safe_close(dev_fd);
}

TestSuite(uffd, .init = setup, .fini = teardown);

Test(uffd, features)
{
        uint64_t f = 0;

        cr_assert_eq(uffd_probe_features(dev_fd, &f), 0);
        cr_log_info("uffd features 0x%llx: MISSING_SHMEM=%d WP_SHMEM=%d WP_UNPOPULATED=%d "
                    "WP_ASYNC=%d MOVE=%d POISON=%d",
                    (unsigned long long)f, !!(f & UFFD_FEATURE_MISSING_SHMEM),
                    !!(f & UFFD_FEATURE_WP_HUGETLBFS_SHMEM), !!(f & UFFD_FEATURE_WP_UNPOPULATED),
                    !!(f & UFFD_FEATURE_WP_ASYNC), !!(f & UFFD_FEATURE_MOVE),
                    !!(f & UFFD_FEATURE_POISON));
        cr_assert((f & UFFD_PAGER_FEATURES) == UFFD_PAGER_FEATURES);

        /* Asking for something unknown is refused, and an fd takes API once. */
        int fd = uffd_new(dev_fd, O_CLOEXEC | O_NONBLOCK);
        cr_assert_geq(fd, 0);
        cr_assert_eq(uffd_api(fd, UINT64_C(1) << 62, NULL), -EINVAL);
        close(fd);

        int u = -1;
        uint64_t got = 0;
        cr_assert_eq(uffd_open_with(dev_fd, O_CLOEXEC, UINT64_C(1) << 62, 0, NULL, &u),
                     -EOPNOTSUPP);
        cr_assert_eq(uffd_open_with(dev_fd, O_CLOEXEC | O_NONBLOCK, UFFD_PAGER_FEATURES, 0, &got,
                                    &u),
                     0);
        cr_assert((got & UFFD_PAGER_FEATURES) == UFFD_PAGER_FEATURES);
        cr_assert_eq(uffd_api(u, UFFD_PAGER_FEATURES, NULL), -EINVAL);
        close(u);
}

Test(uffd, missing_wp_punch)
{
        struct server s = { .fill = 0xAA };
        int memfd = memfd_create("t", MFD_CLOEXEC);
        size_t len = 4 * PG;

        cr_assert_geq(memfd, 0);
        cr_assert_eq(ftruncate(memfd, (off_t)len), 0);
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
        cr_assert_neq(m, MAP_FAILED);
        cr_assert_eq(uffd_open_with(dev_fd, O_CLOEXEC | O_NONBLOCK, UFFD_PAGER_FEATURES, 0, NULL,
                                    &s.uffd),
                     0);
        uint64_t ioctls = 0;
        cr_assert_eq(uffd_register(s.uffd, (uint64_t)(uintptr_t)m, len,
                                   UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
                                   &ioctls),
                     0);
        cr_assert(ioctls & (UINT64_C(1) << _UFFDIO_COPY));
        cr_assert(ioctls & (UINT64_C(1) << _UFFDIO_WRITEPROTECT));
        pthread_create(&s.thread, NULL, serve, &s);

        cr_assert_eq((unsigned char)m[100], 0xAA);
        cr_assert_eq(s.missing, 1);
        cr_assert_eq(s.wp, 0);
        m[100] = 1; /* installed write-protected: the first write faults WP */
        cr_assert_eq(s.wp, 1);
        m[101] = 2;
        cr_assert_eq(s.wp, 1);

        /* Re-arm: the next write faults again. */
        cr_assert_eq(uffd_writeprotect(s.uffd, (uint64_t)(uintptr_t)m, PG, true, false), 0);
        m[102] = 3;
        cr_assert_eq(s.wp, 2);

        /* pread of the memfd sees the data and does not populate holes. */
        char b[PG];
        cr_assert_eq(pread(memfd, b, PG, 0), PG);
        cr_assert_eq(b[100], 1);
        cr_assert_eq(pread(memfd, b, PG, PG), PG);
        cr_assert_eq(s.missing, 1);

        /* Punch: the next access faults MISSING again and sees the new fill, never zeros. */
        s.fill = 0xBB;
        cr_assert_eq(fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PG), 0);
        cr_assert_eq((unsigned char)m[100], 0xBB);
        cr_assert_eq(s.missing, 2);

        /* EEXIST is skipped, not an error. */
        uint64_t existing = 0;
        memset(b, 0xCC, PG);
        cr_assert_eq(uffd_copy(s.uffd, (uint64_t)(uintptr_t)m, b, PG, true, false, NULL,
                               &existing),
                     0);
        cr_assert_eq(existing, PG);
        cr_assert_eq((unsigned char)m[100], 0xBB);

        s.stop = 1;
        pthread_join(s.thread, NULL);
        munmap(m, len);
        close(s.uffd);
        close(memfd);
}
