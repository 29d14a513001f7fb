/* uffd.h: thin -errno wrappers over userfaultfd: creating one from an open
 * /dev/userfaultfd (USERFAULTFD_IOC_NEW, never the syscall), the API handshake
 * with run-time feature detection, register, copy, write-protect, wake, and
 * PAGEMAP_SCAN for bulk dirty queries. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uffd-compat.h"

/* Open /dev/userfaultfd (O_RDWR|O_CLOEXEC). The fd may be passed to another
 * process, which then creates its own userfaultfd from it. */
int uffd_dev_open(void);

/* Create a userfaultfd for the calling process's mm from DEV_FD
 * (USERFAULTFD_IOC_NEW). FLAGS: O_CLOEXEC, O_NONBLOCK. */
int uffd_new(int dev_fd, int flags);

/* Which features the running kernel offers (a throw-away userfaultfd answers
 * UFFDIO_API with no features requested). */
int uffd_probe_features(int dev_fd, uint64_t *ret_features);

/* UFFDIO_API on UFFD asking for WANT; the kernel refuses unknown features, so
 * WANT should be masked by uffd_probe_features() first. *RET_FEATURES gets
 * what the kernel reports (may be NULL). */
int uffd_api(int uffd, uint64_t want, uint64_t *ret_features);

/* Features the pager needs on a shmem arena (MISSING + sync WP). */
#define UFFD_PAGER_FEATURES (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)

/* uffd_new + uffd_probe_features + uffd_api(REQUIRED | (OPTIONAL & available)).
 * -EOPNOTSUPP when a REQUIRED feature is missing. */
int uffd_open_with(int dev_fd, int flags, uint64_t required, uint64_t optional,
                   uint64_t *ret_features, int *ret_uffd);

/* Register [START, START+LEN) with MODE (UFFDIO_REGISTER_MODE_*). *RET_IOCTLS
 * (may be NULL) receives the ioctls allowed on the range. */
int uffd_register(int uffd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ret_ioctls);
int uffd_unregister(int uffd, uint64_t start, uint64_t len);

/* UFFDIO_COPY LEN bytes from SRC to DST, write-protected when WP. Retries
 * partial copies; a page that already exists (-EEXIST) is skipped, its bytes
 * counted in *RET_EXISTING (may be NULL). Returns 0, or -errno (-ENOMEM at the
 * cgroup limit, -ESRCH/-EFAULT when the process is gone) with *RET_DONE (may
 * be NULL) holding the bytes handled before the failure. Wakes waiters unless
 * DONTWAKE. */
int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, bool wp, bool dontwake,
              uint64_t *ret_done, uint64_t *ret_existing);

/* Write-protect (WP true) or un-protect [START, START+LEN). Un-protecting wakes
 * the threads blocked on WP faults in the range unless DONTWAKE (ignored when
 * protecting: the kernel refuses WP|DONTWAKE with -EINVAL). When protecting
 * returns 0, no write to the range can land any more (TLBs are flushed). */
int uffd_writeprotect(int uffd, uint64_t start, uint64_t len, bool wp, bool dontwake);

/* Wake threads waiting on faults in [START, START+LEN); they retry the access. */
int uffd_wake(int uffd, uint64_t start, uint64_t len);
/* Install poison markers over the missing pages of [START, START+LEN) and
 * wake their waiters: every access there gets SIGBUS (BUS_MCEERR_AR) instead
 * of a fault. Needs UFFD_FEATURE_POISON on UFFD (Linux 6.6), else -EINVAL. */
int uffd_poison(int uffd, uint64_t start, uint64_t len);

/* Read up to MAX fault messages without blocking (UFFD opened O_NONBLOCK).
 * Returns the count, 0 when none is pending, -errno. */
int uffd_read_msgs(int uffd, struct uffd_msg *msgs, size_t max);

/* PAGEMAP_SCAN on PAGEMAP_FD (/proc/PID/pagemap) over [START, END): pages
 * written since the last scan (PAGE_IS_WRITTEN), re-protecting them when
 * REARM (PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC: needs a WP_ASYNC uffd).
 * Returns the number of regions stored in VEC, -ENOTTY if unsupported. */
int uffd_scan_written(int pagemap_fd, uint64_t start, uint64_t end, bool rearm,
                      struct page_region *vec, size_t vec_len, uint64_t *ret_walk_end);
