/* convert.c: converting the local ranges this shim owns (locals.c) into file
 * memory and back while the program runs, every virtual address kept
 * (docs/shim.md "Conversion", seed 000 claims 9, 11-15).
 *
 * To file: the range is registered write-protect (sync) with a userfaultfd of
 * our own and protected; its pages are copied into the file (reading a
 * swapped-out page brings it back first: claim 9) while a handler thread
 * un-protects each page a writer touches and marks it dirty; the dirty pages
 * are protected again and copied again (claim 13) until few are left. Then
 * the handler holds every write fault (claim 12), the rest is copied, and
 * mmap(MAP_FIXED|MAP_SHARED) of the file replaces the range in one step
 * (claim 14); the held writers are woken and retry on the file's pages.
 *
 * Back (claim 15): an empty anonymous mapping registered for missing faults
 * replaces the file mapping in one mremap; every access faults and the
 * handler fills the page from the file (UFFDIO_COPY), while this thread fills
 * the rest; then the range is unregistered and the file pages punched. No
 * writer waits for more than its own page. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "uffd-compat.h"

#define MIN_U64(a, b) ((a) < (b) ? (a) : (b))

#define CONV_ROUNDS 16      /* copy rounds before the writers are held anyway */
#define CONV_FINAL_PAGES 64 /* few enough dirty pages to hold the writers for */
#define CONV_BATCH 64
/* A range is converted in pieces of at most this much: a conversion needs
 * room for one piece's new pages beside its old ones, and a cgroup near its
 * limit has little (converting 100 MiB extents at a time took 30 s of
 * reclaim under a lowered limit, against 3 s in 16 MiB pieces). */
#define CONV_PIECE (16ULL << 20)

static struct {
        int uffd, stopfd;
        pthread_t handler;
        pthread_mutex_t mu;
        uint64_t start, len, src; /* the range; back: where its file pages are */
        uint64_t *dirty;          /* a bit per page written since its last copy */
        uint64_t dirty_cap;       /* bits the bitmap holds */
        bool hold;                /* the window: write faults wait */
        bool to_file;             /* missing faults: zero pages (to file) or the file's */
        const void *zeros;        /* a page of zeros */
} cv = {.uffd = -1, .stopfd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static struct shim_convert_stats stats, last_stats; /* the one running, the last done */

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int wp(uint64_t start, uint64_t len, bool on)
{
        struct uffdio_writeprotect w = {.range = {start, len},
                                        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};

        return ioctl(cv.uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

static void wake(uint64_t start, uint64_t len)
{
        struct uffdio_range r = {start, len};

        (void)ioctl(cv.uffd, UFFDIO_WAKE, &r);
}

/* Fill page ADDR of the range being converted back from the file. */
static void fill_page(uint64_t addr)
{
        struct uffdio_copy c = {.dst = addr, .src = cv.src + (addr - cv.start), .len = SHIM_PAGE};
        int r;

        /* EAGAIN: the address space changed under the copy: again */
        while ((r = ioctl(cv.uffd, UFFDIO_COPY, &c)) < 0 && errno == EAGAIN)
                c.copy = 0;
        if (r < 0 && errno == EEXIST)
                wake(addr, SHIM_PAGE);
}

static void on_fault(const struct uffd_msg *m)
{
        uint64_t page = m->arg.pagefault.address & ~(SHIM_PAGE - 1);

        pthread_mutex_lock(&cv.mu);
        if (page < cv.start || page - cv.start >= cv.len) {
                wake(page, SHIM_PAGE); /* a stale fault of a range done */
        } else if (!cv.to_file && !(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
                fill_page(page);
        } else if (cv.hold) {
                stats.held_faults++; /* woken once the range is file memory */
        } else {
                uint64_t i = (page - cv.start) / SHIM_PAGE;
                cv.dirty[i / 64] |= 1ULL << (i % 64);
                if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
                        (void)wp(page, SHIM_PAGE, false);
                } else { /* a page never touched: a writable zero page, copied next round */
                        struct uffdio_copy c = {
                            .dst = page, .src = (uint64_t)cv.zeros, .len = SHIM_PAGE};
                        while (ioctl(cv.uffd, UFFDIO_COPY, &c) < 0 && errno == EAGAIN)
                                c.copy = 0;
                        wake(page, SHIM_PAGE);
                }
        }
        pthread_mutex_unlock(&cv.mu);
}

static void *handler_main(void *arg)
{
        struct uffd_msg msgs[CONV_BATCH];
        sigset_t all;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (;;) {
                struct pollfd p[2] = {{.fd = cv.uffd, .events = POLLIN},
                                      {.fd = cv.stopfd, .events = POLLIN}};
                if (poll(p, 2, -1) < 0)
                        continue;
                if (p[1].revents)
                        return NULL;
                ssize_t n = read(cv.uffd, msgs, sizeof(msgs));
                for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++)
                        if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                                on_fault(&msgs[i]);
                /* UFFD_EVENT_REMAP (our own mremap): reading it was the answer */
        }
}

/* The userfaultfd and handler thread conversions share (made once). */
static int conv_setup(void)
{
        struct uffdio_api api = {
            .api = UFFD_API, .features = UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_EVENT_REMAP};

        if (cv.uffd >= 0)
                return 0;
        if (shim_state.devfd < 0)
                return -ENOTSUP;
        int uffd = ioctl(shim_state.devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        if (uffd < 0)
                return -errno;
        if (ioctl(uffd, UFFDIO_API, &api) < 0) {
                close(uffd);
                return -ENOTSUP; /* no write-protect of unpopulated anonymous pages */
        }
        cv.stopfd = eventfd(0, EFD_CLOEXEC);
        cv.uffd = uffd;
        if (!cv.zeros) {
                void *z =
                    shim_sys_mmap(NULL, SHIM_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                cv.zeros = z == MAP_FAILED ? NULL : z;
        }
        if (cv.stopfd < 0 || !cv.zeros ||
            pthread_create(&cv.handler, NULL, handler_main, NULL) != 0) {
                close(uffd);
                if (cv.stopfd >= 0)
                        close(cv.stopfd);
                cv.uffd = cv.stopfd = -1;
                return -EAGAIN;
        }
        return 0;
}

/* A bitmap for N_PAGES pages, zeroed. */
static int dirty_setup(uint64_t n_pages)
{
        uint64_t words = (n_pages + 63) / 64;

        if (words * 64 > cv.dirty_cap) {
                void *p = shim_sys_mmap(NULL, words * 8, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED)
                        return -errno;
                if (cv.dirty)
                        shim_sys_munmap(cv.dirty, cv.dirty_cap / 8);
                cv.dirty = p;
                cv.dirty_cap = words * 64;
        }
        memset(cv.dirty, 0, words * 8);
        return 0;
}

static bool page_zero(const uint64_t *p)
{
        for (size_t i = 0; i < SHIM_PAGE / 8; i++)
                if (p[i])
                        return false;
        return true;
}

/* Take the dirty pages (under cv.mu): protect them again and move their bits
 * into WORK. Returns how many. */
static uint64_t take_dirty(uint64_t *work, uint64_t words)
{
        uint64_t n = 0;

        for (uint64_t w = 0; w < words; w++) {
                work[w] = cv.dirty[w];
                cv.dirty[w] = 0;
                for (uint64_t b = work[w]; b; b &= b - 1) {
                        uint64_t i = w * 64 + (uint64_t)__builtin_ctzll(b);
                        (void)wp(cv.start + i * SHIM_PAGE, SHIM_PAGE, true);
                        n++;
                }
        }
        return n;
}

static void copy_pages(const uint64_t *work, uint64_t words, uint64_t dst)
{
        for (uint64_t w = 0; w < words; w++)
                for (uint64_t b = work[w]; b; b &= b - 1) {
                        uint64_t i = w * 64 + (uint64_t)__builtin_ctzll(b);
                        memcpy((void *)(dst + i * SHIM_PAGE), (void *)(cv.start + i * SHIM_PAGE),
                               SHIM_PAGE);
                }
}

/* Move the pages of [START, START+LEN) to a new place with MREMAP_DONTUNMAP
 * (the range stays, empty). The new place has START's offset within 2 MiB,
 * so the kernel moves whole page tables rather than each entry: the cost
 * grows with the range by 2 MiB steps, not 4 KiB ones. */
static void *move_aside(uint64_t start, uint64_t len)
{
        const uint64_t pmd = 2ULL << 20;
        char *res = shim_sys_mmap(NULL, len + pmd, PROT_NONE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

        if (res == MAP_FAILED)
                return MAP_FAILED;
        uint64_t dst = ((uint64_t)res & ~(pmd - 1)) + (start & (pmd - 1));
        if (dst < (uint64_t)res)
                dst += pmd;
        void *p = shim_sys_mremap((void *)start, len, len,
                                  MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, (void *)dst);
        if (p == MAP_FAILED) {
                shim_sys_munmap(res, len + pmd);
                return MAP_FAILED;
        }
        /* the rest of the reservation around it */
        if (dst > (uint64_t)res)
                shim_sys_munmap(res, dst - (uint64_t)res);
        if ((uint64_t)res + len + pmd > dst + len)
                shim_sys_munmap((void *)(dst + len), (uint64_t)res + len + pmd - dst - len);
        return p;
}

/* Copy the range into the file's pages at DST (its alias in the file zone)
 * and swap the mapping. 0, or -errno with the range left local and writable. */
static int copy_and_swap(uint64_t dst, uint64_t off, uint64_t *work)
{
        uint64_t n_pages = cv.len / SHIM_PAGE, words = (n_pages + 63) / 64, n, t0 = 0;
        int r = 0;

        /* round 0: every page there is (present or swapped out; the file
         * reads zeros where we copy nothing) */
        int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        for (uint64_t i = 0; i < n_pages; i++) {
                const uint64_t *s = (const uint64_t *)(cv.start + i * SHIM_PAGE);
                uint64_t e = ~0ULL;
                if (pm >= 0 && pread(pm, &e, 8, (off_t)((uint64_t)s / SHIM_PAGE * 8)) == 8 &&
                    !(e & (3ULL << 62)))
                        continue; /* never touched: its first touch faults */
                if (!page_zero(s))
                        memcpy((void *)(dst + i * SHIM_PAGE), s, SHIM_PAGE);
        }
        if (pm >= 0)
                close(pm);
        stats.rounds++;
        for (int round = 1;; round++) {
                pthread_mutex_lock(&cv.mu);
                if (round >= CONV_ROUNDS)
                        cv.hold = true;
                n = take_dirty(work, words);
                if (n <= CONV_FINAL_PAGES)
                        cv.hold = true; /* from here on writers wait */
                bool last = cv.hold;
                pthread_mutex_unlock(&cv.mu);
                if (last)
                        t0 = now_ns();
                copy_pages(work, words, dst);
                stats.rounds++;
                if (last)
                        break;
        }
        /* the old pages out of the way first (a page-table move: freeing
         * them here would make the window grow with the range); the empty
         * range left behind stays registered, its faults held */
        void *old = move_aside(cv.start, cv.len);
        void *p = shim_sys_mmap((void *)cv.start, cv.len, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_FIXED, shim_state.file.fd, (off_t)off);
        if (p == MAP_FAILED && old != MAP_FAILED) {
                /* put the pages back where they were */
                if (shim_sys_mremap(old, cv.len, cv.len, MREMAP_MAYMOVE | MREMAP_FIXED,
                                    (void *)cv.start) == MAP_FAILED)
                        old = MAP_FAILED; /* cannot happen: the range is ours */
                else
                        old = NULL;
        }
        if (p == MAP_FAILED) {
                r = -errno;
                (void)wp(cv.start, cv.len, false);
        } else {
                /* a forked child maps its own copy of the file there (filemem.c) */
                (void)shim_sys_madvise(p, cv.len, MADV_DONTFORK);
        }
        pthread_mutex_lock(&cv.mu);
        cv.hold = false;
        cv.start = cv.len = 0;
        pthread_mutex_unlock(&cv.mu);
        uint64_t dt = now_ns() - t0;
        if (old && old != MAP_FAILED)
                shim_sys_munmap(old, n_pages * SHIM_PAGE); /* outside the window */
        stats.last_window_ns = dt;
        if (dt > stats.max_window_ns)
                stats.max_window_ns = dt;
        return r;
}

static int to_file(const struct shim_local *l)
{
        struct shim_zone *z = &shim_state.file;
        struct uffdio_register reg = {.range = {l->start, l->len},
                                      .mode =
                                          UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MISSING};
        uint64_t *work = NULL, words = (l->len / SHIM_PAGE + 63) / 64;
        bool zero;
        int r;

        if (!shim_charge(SHIM_FILE, l->len, true))
                return -ENOMEM;
        char *dst = shim_zone_alloc(z, l->len, SHIM_PAGE, &zero);
        if (!dst) {
                shim_uncharge(SHIM_FILE, l->len);
                return -ENOSPC;
        }
        work = shim_sys_mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                             -1, 0);
        r = work == MAP_FAILED ? -ENOMEM : dirty_setup(l->len / SHIM_PAGE);
        if (r == 0 && ioctl(cv.uffd, UFFDIO_REGISTER, &reg) < 0)
                r = -errno;
        if (r == 0) {
                pthread_mutex_lock(&cv.mu);
                cv.start = l->start;
                cv.len = l->len;
                cv.to_file = true;
                r = wp(l->start, l->len, true);
                pthread_mutex_unlock(&cv.mu);
                if (r == 0)
                        r = copy_and_swap((uint64_t)dst, (uint64_t)dst - z->base, work);
                /* held writers retry: on the file's pages, or on the local
                 * range again after a failure */
                wake(l->start, l->len);
                if (r < 0) {
                        (void)ioctl(cv.uffd, UFFDIO_UNREGISTER, &reg.range);
                        pthread_mutex_lock(&cv.mu);
                        cv.start = cv.len = 0;
                        pthread_mutex_unlock(&cv.mu);
                }
        }
        if (work != MAP_FAILED && work)
                shim_sys_munmap(work, words * 8);
        if (r < 0) {
                shim_zone_release(z, dst, l->len);
                return r;
        }
        (void)shim_locals_set(l->start, l->len, SHIM_FILE, (uint64_t)dst - z->base);
        shim_uncharge(SHIM_LOCAL, l->len);
        /* start the write-back now: clean pages are what the kernel can drop
         * when memd lowers the cgroup's limit next */
        (void)sync_file_range(z->fd, (off_t)((uint64_t)dst - z->base), (off_t)l->len,
                              SYNC_FILE_RANGE_WRITE);
        return 0;
}

/* Fill [A, A+LEN) of the range from the file (already-filled pages stay). */
static void fill_run(uint64_t a, uint64_t len)
{
        for (uint64_t at = a; at < a + len;) {
                uint64_t n = MIN_U64(a + len - at, CONV_BATCH * SHIM_PAGE);
                struct uffdio_copy c = {.dst = at, .src = cv.src + (at - cv.start), .len = n};
                if (ioctl(cv.uffd, UFFDIO_COPY, &c) < 0 && c.copy <= 0) {
                        fill_page(at); /* a page a fault filled first: one by one */
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
                while (ioctl(cv.uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno == EAGAIN)
                        z.zeropage = 0;
        }
}

/* Every page of the range, data runs copied, holes zero pages. */
static void fill_all(uint64_t off)
{
        int fd = shim_state.file.fd;
        uint64_t end = off + cv.len;

        for (uint64_t at = off; at < end;) {
                off_t d = lseek(fd, (off_t)at, SEEK_DATA);
                uint64_t data = d < 0 || (uint64_t)d > end ? end : (uint64_t)d;
                if (data > at)
                        zero_run(cv.start + (at - off), data - at);
                if (data >= end)
                        break;
                off_t h = lseek(fd, (off_t)data, SEEK_HOLE);
                uint64_t hole = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
                fill_run(cv.start + (data - off), hole - data);
                at = hole;
        }
}

static int to_local(const struct shim_local *l)
{
        struct shim_zone *z = &shim_state.file;
        struct uffdio_register reg = {.range = {0, l->len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
        char *t = shim_sys_mmap(NULL, l->len, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        uint64_t t0;

        if (t == MAP_FAILED)
                return -errno;
        reg.range.start = (uint64_t)t;
        if (ioctl(cv.uffd, UFFDIO_REGISTER, &reg) < 0) {
                int r = -errno;
                shim_sys_munmap(t, l->len);
                return r;
        }
        pthread_mutex_lock(&cv.mu);
        cv.start = l->start;
        cv.len = l->len;
        cv.src = z->base + l->off;
        cv.to_file = false;
        pthread_mutex_unlock(&cv.mu);
        /* the file's page-table entries out of the way first, under the
         * read lock (faults go on meanwhile and refault the same file pages),
         * so the swap below has next to nothing to tear down */
        (void)shim_sys_madvise((void *)l->start, l->len, MADV_DONTNEED);
        /* one step: the file mapping goes, the empty registered range takes
         * its place; from here every access faults until its page is in */
        t0 = now_ns();
        void *p =
            shim_sys_mremap(t, l->len, l->len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)l->start);
        if (p == MAP_FAILED) {
                int r = -errno;
                pthread_mutex_lock(&cv.mu);
                cv.start = cv.len = 0;
                pthread_mutex_unlock(&cv.mu);
                shim_sys_munmap(t, l->len);
                return r;
        }
        uint64_t swapped = now_ns();
        fill_all(l->off);
        reg.range.start = l->start;
        (void)ioctl(cv.uffd, UFFDIO_UNREGISTER, &reg.range);
        pthread_mutex_lock(&cv.mu);
        cv.start = cv.len = 0;
        pthread_mutex_unlock(&cv.mu);
        stats.last_window_ns = swapped - t0; /* the mremap; no writer is held */
        if (stats.last_window_ns > stats.max_window_ns)
                stats.max_window_ns = stats.last_window_ns;
        (void)shim_charge(SHIM_LOCAL, l->len, false);
        (void)shim_locals_set(l->start, l->len, SHIM_LOCAL, 0);
        shim_zone_release(z, (void *)(z->base + l->off), l->len);
        return 0;
}

static pthread_mutex_t convert_mu = PTHREAD_MUTEX_INITIALIZER; /* one conversion at a time */

int shim_convert(enum shim_placement to, struct shim_convert_stats *ret)
{
        enum shim_placement from = to == SHIM_FILE ? SHIM_LOCAL : SHIM_FILE;
        struct shim_local l;
        uint64_t after = 0, t0 = now_ns();
        int r;

        if (to != SHIM_FILE && to != SHIM_LOCAL)
                return -EINVAL;
        if (to == SHIM_FILE && !shim_state.file.size)
                return -ENOTSUP; /* the container has no file directory */
        pthread_mutex_lock(&convert_mu);
        r = conv_setup();
        if (r < 0) {
                pthread_mutex_unlock(&convert_mu);
                return r;
        }
        memset(&stats, 0, sizeof(stats));
        /* one range at a time, each under the busy lock (munmap, purge and
         * fork wait for it) */
        while (shim_locals_pick(from, after, &l)) {
                if (l.len > CONV_PIECE && shim_locals_split(l.start, CONV_PIECE))
                        l.len = CONV_PIECE;
                after = l.start + l.len;
                shim_locals_busy(true);
                r = to == SHIM_FILE ? to_file(&l) : to_local(&l);
                shim_locals_busy(false);
                if (r < 0) {
                        stats.failed++;
                        stats.error = (uint64_t)-r;
                        if (r == -ENOSPC)
                                break; /* no file space: the rest stays */
                        continue;
                }
                stats.ranges++;
                stats.bytes += l.len;
        }
        stats.total_ns = now_ns() - t0;
        if (ret)
                *ret = stats;
        last_stats = stats;
        pthread_mutex_unlock(&convert_mu);
        return 0;
}

void shim_convert_last(struct shim_convert_stats *ret)
{
        *ret = last_stats;
}

void shim_convert_atfork_child(void)
{
        /* the parent's handler thread is not here; a conversion makes its own */
        pthread_mutex_init(&cv.mu, NULL);
        pthread_mutex_init(&convert_mu, NULL);
        if (cv.uffd >= 0)
                close(cv.uffd);
        if (cv.stopfd >= 0)
                close(cv.stopfd);
        cv.uffd = cv.stopfd = -1;
        cv.start = cv.len = 0;
        cv.hold = false;
}
