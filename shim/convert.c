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
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "convert.h"
#include "uffd-compat.h"

#define CONV_ROUNDS 16      /* copy rounds before the writers are held anyway */
#define CONV_FINAL_PAGES 64 /* few enough dirty pages to hold the writers for */
/* A range is converted in pieces of at most this much: a conversion needs
 * room for one piece's new pages beside its old ones, and a cgroup near its
 * limit has little (converting 100 MiB extents at a time took 30 s of
 * reclaim under a lowered limit, against 3 s in 16 MiB pieces). */
#define CONV_PIECE (16ULL << 20)

struct conv_state conv = {.uffd = -1, .stopfd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

struct shim_convert_stats conv_stats;
static struct shim_convert_stats last_stats; /* the last conversion done */

uint64_t conv_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int wp(uint64_t start, uint64_t len, bool on)
{
        struct uffdio_writeprotect w = {.range = {start, len},
                                        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};

        return ioctl(conv.uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

void conv_wake(uint64_t start, uint64_t len)
{
        struct uffdio_range r = {start, len};

        (void)ioctl(conv.uffd, UFFDIO_WAKE, &r);
}

/* Faults whose fill met EAGAIN: the address space is changing under our
 * own mremap, whose UFFD_EVENT_REMAP this thread must read before any fill
 * can succeed (the mremap waits for that read). Retrying at once, as the
 * fills did, spun for ever while the conversion back waited in mremap. */
#define CONV_DEFER_MAX 256
static struct uffd_msg deferred[CONV_DEFER_MAX];
static unsigned n_deferred;
/* More refused fills at once than DEFERRED holds: those faults are left
 * unanswered, their threads asleep, and the whole range is woken once the
 * fills go through again (a woken thread retries its access and faults
 * anew). XMEM_CONV_DEFER_MAX (1 to 256) lowers the room: for tests. */
static unsigned defer_max = CONV_DEFER_MAX;
static bool defer_overflowed;

/* One UFFDIO_COPY of a page from SRC to ADDR: 0, or -EAGAIN (M deferred, or
 * left for the wake-up of the range: the caller returns at once). */
static int copy_or_defer(const struct uffd_msg *m, uint64_t addr, uint64_t src)
{
        struct uffdio_copy c = {.dst = addr, .src = src, .len = SHIM_PAGE};

        if (ioctl(conv.uffd, UFFDIO_COPY, &c) == 0 || errno != EAGAIN) {
                conv_wake(addr, SHIM_PAGE); /* EEXIST: filled meanwhile */
                return 0;
        }
        if (n_deferred < defer_max)
                deferred[n_deferred++] = *m;
        else
                defer_overflowed = true;
        return -EAGAIN;
}

static void on_fault(const struct uffd_msg *m)
{
        uint64_t page = m->arg.pagefault.address & ~(SHIM_PAGE - 1);

        pthread_mutex_lock(&conv.mu);
        if (page < conv.start || page - conv.start >= conv.len) {
                conv_wake(page, SHIM_PAGE); /* a stale fault of a range done */
        } else if (!conv.to_file && !(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
                (void)copy_or_defer(m, page, conv.src + (page - conv.start));
        } else if (conv.hold) {
                conv_stats.held_faults++; /* woken once the range is file memory */
        } else {
                uint64_t i = (page - conv.start) / SHIM_PAGE;
                conv.dirty[i / 64] |= 1ULL << (i % 64);
                if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
                        (void)wp(page, SHIM_PAGE, false);
                } else if (copy_or_defer(m, page, (uint64_t)conv.zeros) < 0) {
                        /* a page never touched: a writable zero page, copied
                         * next round (once the copy goes through) */
                        conv.dirty[i / 64] &= ~(1ULL << (i % 64));
                }
        }
        pthread_mutex_unlock(&conv.mu);
}

static void *handler_main(void *arg)
{
        struct uffd_msg msgs[CONV_BATCH];
        sigset_t all;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (;;) {
                struct pollfd p[2] = {{.fd = conv.uffd, .events = POLLIN},
                                      {.fd = conv.stopfd, .events = POLLIN}};
                /* deferred faults: looked at again within a millisecond */
                if (poll(p, 2, n_deferred || defer_overflowed ? 1 : -1) < 0)
                        continue;
                if (p[1].revents)
                        return NULL;
                ssize_t n = p[0].revents ? read(conv.uffd, msgs, sizeof(msgs)) : 0;
                for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++)
                        if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                                on_fault(&msgs[i]);
                /* UFFD_EVENT_REMAP (our own mremap): reading it was the answer */
                unsigned k = n_deferred;
                struct uffd_msg again[CONV_DEFER_MAX];
                memcpy(again, deferred, k * sizeof(again[0]));
                n_deferred = 0;
                for (unsigned i = 0; i < k; i++)
                        on_fault(&again[i]);
                if (defer_overflowed && n_deferred == 0) { /* fills go through again */
                        pthread_mutex_lock(&conv.mu);
                        defer_overflowed = false;
                        if (conv.len)
                                conv_wake(conv.start, conv.len);
                        pthread_mutex_unlock(&conv.mu);
                }
        }
}

/* The userfaultfd and handler thread conversions share (made once). */
static int conv_setup(void)
{
        struct uffdio_api api = {
            .api = UFFD_API, .features = UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_EVENT_REMAP};

        if (conv.uffd >= 0)
                return 0;
        if (shim_state.devfd < 0)
                return -ENOTSUP;
        const char *dm = secure_getenv("XMEM_CONV_DEFER_MAX");
        unsigned long v = dm ? strtoul(dm, NULL, 10) : 0;
        if (v >= 1 && v <= CONV_DEFER_MAX)
                defer_max = (unsigned)v;
        int uffd = ioctl(shim_state.devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        if (uffd < 0)
                return -errno;
        if (ioctl(uffd, UFFDIO_API, &api) < 0) {
                close(uffd);
                return -ENOTSUP; /* no write-protect of unpopulated anonymous pages */
        }
        conv.stopfd = eventfd(0, EFD_CLOEXEC);
        conv.uffd = uffd;
        if (!conv.zeros) {
                void *z =
                    shim_sys_mmap(NULL, SHIM_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                conv.zeros = z == MAP_FAILED ? NULL : z;
        }
        if (conv.stopfd < 0 || !conv.zeros ||
            pthread_create(&conv.handler, NULL, handler_main, NULL) != 0) {
                close(uffd);
                if (conv.stopfd >= 0)
                        close(conv.stopfd);
                conv.uffd = conv.stopfd = -1;
                return -EAGAIN;
        }
        return 0;
}

/* A bitmap for N_PAGES pages, zeroed. */
static int dirty_setup(uint64_t n_pages)
{
        uint64_t words = (n_pages + 63) / 64;

        if (words * 64 > conv.dirty_cap) {
                void *p = shim_sys_mmap(NULL, words * 8, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED)
                        return -errno;
                if (conv.dirty)
                        shim_sys_munmap(conv.dirty, conv.dirty_cap / 8);
                conv.dirty = p;
                conv.dirty_cap = words * 64;
        }
        memset(conv.dirty, 0, words * 8);
        return 0;
}

bool conv_page_zero(const uint64_t *p)
{
        for (size_t i = 0; i < SHIM_PAGE / 8; i++)
                if (p[i])
                        return false;
        return true;
}

/* Take the dirty pages (under conv.mu): protect them again and move their bits
 * into WORK. Returns how many. */
static uint64_t take_dirty(uint64_t *work, uint64_t words)
{
        uint64_t n = 0;

        for (uint64_t w = 0; w < words; w++) {
                work[w] = conv.dirty[w];
                conv.dirty[w] = 0;
                for (uint64_t b = work[w]; b; b &= b - 1) {
                        uint64_t i = w * 64 + (uint64_t)__builtin_ctzll(b);
                        (void)wp(conv.start + i * SHIM_PAGE, SHIM_PAGE, true);
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
                        memcpy((void *)(dst + i * SHIM_PAGE), (void *)(conv.start + i * SHIM_PAGE),
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

/* Map Z's pages at OFF over the range (the old pages moved aside already);
 * appliance memory is registered with memd's userfaultfd and served there
 * from now on (shim.alias live). MAP_FAILED with errno on failure. */
static void *swap_in(const struct shim_zone *z, uint64_t off)
{
        struct uffdio_register reg = {.range = {conv.start, conv.len},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING |
                                              UFFDIO_REGISTER_MODE_WP};
        void *p = shim_sys_mmap((void *)conv.start, conv.len, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_FIXED, z->fd, (off_t)off);
        int r = 0;

        if (p == MAP_FAILED || z->kind != SHIM_EXTERNAL)
                return p;
        if (ioctl(shim_state.uffd, UFFDIO_REGISTER, &reg) < 0)
                r = -errno;
        if (r == 0)
                r = shim_alias("live", conv.start, off, conv.len);
        if (r < 0) {
                errno = -r;
                return MAP_FAILED;
        }
        return p;
}

/* Copy the range into Z's pages at DST (offset OFF) and swap the mapping. 0,
 * or -errno with the range left local and writable. */
static int copy_and_swap(const struct shim_zone *z, uint64_t dst, uint64_t off, uint64_t *work)
{
        uint64_t n_pages = conv.len / SHIM_PAGE, words = (n_pages + 63) / 64, n, t0 = 0;
        int r = 0;

        /* round 0: every page there is (present or swapped out; the target
         * reads zeros where we copy nothing) */
        int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        for (uint64_t i = 0; i < n_pages; i++) {
                const uint64_t *s = (const uint64_t *)(conv.start + i * SHIM_PAGE);
                uint64_t e = ~0ULL;
                if (pm >= 0 && pread(pm, &e, 8, (off_t)((uint64_t)s / SHIM_PAGE * 8)) == 8 &&
                    !(e & (3ULL << 62)))
                        continue; /* never touched: its first touch faults */
                if (!conv_page_zero(s))
                        memcpy((void *)(dst + i * SHIM_PAGE), s, SHIM_PAGE);
        }
        if (pm >= 0)
                close(pm);
        conv_stats.rounds++;
        for (int round = 1;; round++) {
                pthread_mutex_lock(&conv.mu);
                if (round >= CONV_ROUNDS)
                        conv.hold = true;
                n = take_dirty(work, words);
                if (n <= CONV_FINAL_PAGES)
                        conv.hold = true; /* from here on writers wait */
                bool last = conv.hold;
                pthread_mutex_unlock(&conv.mu);
                if (last)
                        t0 = conv_now_ns();
                copy_pages(work, words, dst);
                conv_stats.rounds++;
                if (last)
                        break;
        }
        /* the old pages out of the way first (a page-table move: freeing
         * them here would make the window grow with the range); the empty
         * range left behind stays registered, its faults held */
        void *old = move_aside(conv.start, conv.len);
        void *p = old == MAP_FAILED ? MAP_FAILED : swap_in(z, off);
        if (p == MAP_FAILED && old != MAP_FAILED) {
                /* put the pages back where they were */
                if (shim_sys_mremap(old, conv.len, conv.len, MREMAP_MAYMOVE | MREMAP_FIXED,
                                    (void *)conv.start) == MAP_FAILED)
                        old = MAP_FAILED; /* cannot happen: the range is ours */
                else
                        old = NULL;
        }
        if (p == MAP_FAILED) {
                r = -errno;
                (void)wp(conv.start, conv.len, false);
        } else {
                /* a forked child maps its own copy there (filemem.c, arena.c) */
                (void)shim_sys_madvise(p, conv.len, MADV_DONTFORK);
        }
        pthread_mutex_lock(&conv.mu);
        conv.hold = false;
        conv.start = conv.len = 0;
        pthread_mutex_unlock(&conv.mu);
        uint64_t dt = conv_now_ns() - t0;
        if (old && old != MAP_FAILED)
                shim_sys_munmap(old, n_pages * SHIM_PAGE); /* outside the window */
        conv_window(dt);
        return r;
}

void conv_window(uint64_t ns)
{
        conv_stats.last_window_ns = ns;
        if (ns > conv_stats.max_window_ns)
                conv_stats.max_window_ns = ns;
}

/* memd told about Z's pages at OFF that L's range will map (appliance
 * memory: shim.alias OP; file memory: nothing to tell). */
static int tell(const struct shim_zone *z, const char *op, const struct shim_local *l,
                uint64_t off)
{
        return z->kind == SHIM_EXTERNAL ? shim_alias(op, l->start, off, l->len) : 0;
}

/* L (local) into Z: file memory, or appliance memory (the arena). */
static int to_target(const struct shim_local *l, struct shim_zone *z)
{
        struct uffdio_register reg = {.range = {l->start, l->len},
                                      .mode =
                                          UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MISSING};
        uint64_t *work = NULL, words = (l->len / SHIM_PAGE + 63) / 64, off;
        bool zero;
        int r;

        if (!shim_charge(z->kind, l->len, true))
                return -ENOMEM;
        char *dst = shim_zone_alloc(z, l->len, SHIM_PAGE, &zero);
        if (!dst) {
                shim_uncharge(z->kind, l->len);
                return -ENOSPC;
        }
        off = (uint64_t)dst - z->base;
        work = shim_sys_mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                             -1, 0);
        r = work == MAP_FAILED ? -ENOMEM : dirty_setup(l->len / SHIM_PAGE);
        if (r == 0)
                r = tell(z, "pin", l, off); /* its pages stay while we copy */
        if (r == 0 && ioctl(conv.uffd, UFFDIO_REGISTER, &reg) < 0) {
                r = -errno;
                (void)tell(z, "drop", l, off);
        }
        if (r == 0) {
                pthread_mutex_lock(&conv.mu);
                conv.start = l->start;
                conv.len = l->len;
                conv.to_file = true;
                r = wp(l->start, l->len, true);
                pthread_mutex_unlock(&conv.mu);
                if (r == 0)
                        r = copy_and_swap(z, (uint64_t)dst, off, work);
                /* held writers retry: on the new pages, or on the local
                 * range again after a failure */
                conv_wake(l->start, l->len);
                if (r < 0) {
                        (void)ioctl(conv.uffd, UFFDIO_UNREGISTER, &reg.range);
                        pthread_mutex_lock(&conv.mu);
                        conv.start = conv.len = 0;
                        pthread_mutex_unlock(&conv.mu);
                        (void)tell(z, "drop", l, off);
                }
        }
        if (work != MAP_FAILED && work)
                shim_sys_munmap(work, words * 8);
        if (r < 0) {
                shim_zone_release(z, dst, l->len);
                return r;
        }
        (void)shim_locals_set(l->start, l->len, z->kind, off);
        shim_uncharge(SHIM_LOCAL, l->len);
        /* start the write-back now: clean pages are what the kernel can drop
         * when memd lowers the cgroup's limit next */
        if (z->kind == SHIM_FILE)
                (void)sync_file_range(z->fd, (off_t)off, (off_t)l->len, SYNC_FILE_RANGE_WRITE);
        return 0;
}

static pthread_mutex_t convert_mu = PTHREAD_MUTEX_INITIALIZER; /* one conversion at a time */

/* Every range in FROM converted to TO, one piece at a time, each under the
 * busy lock (munmap, purge and fork wait for it). */
static void convert_all(enum shim_placement from, enum shim_placement to)
{
        struct shim_local l;
        uint64_t after = 0;
        int r;

        while (shim_locals_pick(from, after, &l)) {
                if (l.len > CONV_PIECE && shim_locals_split(l.start, CONV_PIECE))
                        l.len = CONV_PIECE;
                after = l.start + l.len;
                shim_locals_busy(true);
                if (!shim_locals_has(&l)) /* unmapped or moved since the pick */
                        r = 0;
                else if (to == SHIM_FILE)
                        r = to_target(&l, &shim_state.file);
                else if (to == SHIM_EXTERNAL)
                        r = to_target(&l, &shim_state.arena);
                else
                        r = from == SHIM_FILE ? conv_file_to_local(&l) : conv_app_to_local(&l);
                shim_locals_busy(false);
                if (r < 0) {
                        conv_stats.failed++;
                        conv_stats.error = (uint64_t)-r;
                        if (r == -ENOSPC || r == -ENOMEM)
                                break; /* no room in the target: the rest stays */
                        continue;
                }
                conv_stats.ranges++;
                conv_stats.bytes += l.len;
        }
}

int shim_convert(enum shim_placement to, struct shim_convert_stats *ret)
{
        uint64_t t0 = conv_now_ns();
        int r;

        if (to != SHIM_FILE && to != SHIM_EXTERNAL && to != SHIM_LOCAL)
                return -EINVAL;
        if (to == SHIM_FILE && !shim_state.file.size)
                return -ENOTSUP; /* the container has no file directory */
        if (to == SHIM_EXTERNAL && !atomic_load(&shim_state.attached))
                return -ENOTSUP; /* no arena */
        pthread_mutex_lock(&convert_mu);
        r = conv_setup();
        if (r < 0) {
                pthread_mutex_unlock(&convert_mu);
                return r;
        }
        memset(&conv_stats, 0, sizeof(conv_stats));
        if (to == SHIM_LOCAL) {
                convert_all(SHIM_FILE, SHIM_LOCAL);
                convert_all(SHIM_EXTERNAL, SHIM_LOCAL);
        } else
                convert_all(SHIM_LOCAL, to);
        conv_stats.total_ns = conv_now_ns() - t0;
        if (ret)
                *ret = conv_stats;
        last_stats = conv_stats;
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
        pthread_mutex_init(&conv.mu, NULL);
        pthread_mutex_init(&convert_mu, NULL);
        if (conv.uffd >= 0)
                close(conv.uffd);
        if (conv.stopfd >= 0)
                close(conv.stopfd);
        conv.uffd = conv.stopfd = -1;
        conv.start = conv.len = 0;
        conv.hold = false;
}
