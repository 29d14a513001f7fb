/* arena.c: the external arena in this process: the handshake with memd,
 * mapping the memfd and registering it with our userfaultfd, and fork
 * (docs/api.md "shim.fork"). Its page ranges are zone.c's. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "uffd-compat.h"

static pthread_mutex_t sock_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sock_back = PTHREAD_COND_INITIALIZER;

/* A fork waits this long for a memd that died to come back (watch.c). */
#define FORK_WAIT_MEMD_S 30

void shim_sock_lock(void)
{
        pthread_mutex_lock(&sock_lock);
}

void shim_sock_unlock(void)
{
        pthread_mutex_unlock(&sock_lock);
}

void shim_sock_back(void)
{
        pthread_cond_broadcast(&sock_back);
}

static int uffd_create_with(int devfd, uint64_t features, int *ret_uffd)
{
        struct uffdio_api api = { .api = UFFD_API, .features = features };
        int uffd = ioctl(devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC);

        if (uffd < 0)
                return -errno;
        if (ioctl(uffd, UFFDIO_API, &api) < 0) {
                int r = -errno;
                close(uffd);
                return r;
        }
        *ret_uffd = uffd;
        return 0;
}

/* With UFFD_FEATURE_POISON where the kernel has it (6.6): memd can then make
 * a fault whose appliance is gone for good get SIGBUS (docs/pager.md). */
static int uffd_create(int devfd, int *ret_uffd)
{
        const uint64_t need = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
        int r = uffd_create_with(devfd, need | UFFD_FEATURE_POISON, ret_uffd);

        return r == -EINVAL ? uffd_create_with(devfd, need, ret_uffd) : r;
}

static int arena_register(int uffd, uint64_t base, uint64_t size)
{
        struct uffdio_register reg = {
                .range = { .start = base, .len = size },
                .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
        };

        return ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

/* A restored arena that cannot be mapped where its pointers point: the
 * process would run without its data, so it stops, loudly. */
static void restore_fatal(uint64_t base, int r)
{
        char msg[200];
        int n = snprintf(msg, sizeof(msg),
                         "xmem-shim: process %d: the snapshot's arena cannot be mapped at its "
                         "address 0x%llx: %s\n",
                         (int)getpid(), (unsigned long long)base,
                         r == -EEXIST ? "the address is taken" : strerror(-r));
        if (write(STDERR_FILENO, msg, (size_t)n) < 0)
                _exit(127);
        _exit(127);
}

/* The allocator never hands out the snapshot's data [0, USED) nor the root
 * page (the arena's last page, xmem_root_set). */
static int range_reserve(uint64_t size, uint64_t used)
{
        bool pristine;
        int r = range_claim(&shim_state.arena.range, size / SHIM_PAGE - 1, 1, &pristine);

        if (r == 0)
                shim_state.reserved_pages = 1;
        if (r == 0 && used)
                r = range_claim(&shim_state.arena.range, 0, used / SHIM_PAGE, &pristine);
        return r;
}

/* ENOMEM from a syscall here is, as a rule, the container's cgroup at its
 * local limit: with v1's OOM killer paused (memd's choice), a kernel
 * allocation outside a page fault fails rather than waits until memd's
 * eviction makes room (a forked child attaching while its parent pages).
 * Sleeps a little and returns true while it is worth trying again. */
#define ENOMEM_WAIT_MS 10000
static bool enomem_wait(int *waited_ms)
{
        const struct timespec pause = { .tv_nsec = 10 * 1000 * 1000 };

        if (*waited_ms >= ENOMEM_WAIT_MS)
                return false;
        nanosleep(&pause, NULL);
        *waited_ms += 10;
        return true;
}

int shim_arena_attach(int sock, const char *token, const char **ret_step)
{
        struct shim_arena_info info;
        uint64_t base = 0;
        int uffd = -1, waited = 0, r;

        *ret_step = "shim.hello";
        r = shim_proto_hello(sock, token, &info);
        if (r < 0)
                return r;
        if (token && info.arena_size != shim_state.arena.size) {
                r = -EBADMSG; /* the child's heap must be the parent's, byte for byte */
        } else {
                *ret_step = "userfaultfd";
                while ((r = uffd_create(info.devfd, &uffd)) == -ENOMEM && enomem_wait(&waited))
                        ;
        }
        if (r == 0) {
                *ret_step = "mapping the arena";
                while ((r = shim_zone_map(info.memfd, info.arena_size,
                                          token ? shim_state.arena.base : info.restore_base,
                                          &base)) == -ENOMEM &&
                       enomem_wait(&waited))
                        ;
                if (r < 0 && !token && info.restore_base)
                        restore_fatal(info.restore_base, r);
        }
        if (r == 0) {
                *ret_step = "UFFDIO_REGISTER";
                while ((r = arena_register(uffd, base, info.arena_size)) == -ENOMEM &&
                       enomem_wait(&waited))
                        ;
                if (r == 0) {
                        *ret_step = "shim.register";
                        r = shim_proto_register(sock, base, info.arena_size, uffd);
                }
                if (r == 0 && !token) {
                        *ret_step = "the page bitmap";
                        r = shim_zone_range_setup(&shim_state.arena, info.arena_size);
                }
                if (r == 0 && !token) {
                        *ret_step = "reserving the snapshot's pages";
                        r = range_reserve(info.arena_size, info.restore_used);
                }
                if (r < 0)
                        shim_sys_munmap((void *)base, info.arena_size);
        }
        if (r < 0) {
                if (uffd >= 0)
                        close(uffd);
                close(info.devfd);
                close(info.memfd);
                if (info.acctfd >= 0)
                        close(info.acctfd);
                return r;
        }
        if (!token)
                shim_state.policy = info.policy;
        /* without memd's page (a version 1 memd, or a bad page) the limits
         * hold for this process alone, as they did before */
        if (info.acctfd < 0 || shim_acct_use_page(info.acctfd, info.acct_slot) < 0)
                shim_acct_use_private();
        shim_state.sock = sock;
        shim_state.uffd = uffd; /* never closed: faults wait if memd dies */
        shim_state.devfd = info.devfd; /* conversions make their own (convert.c) */
        shim_state.arena.kind = SHIM_EXTERNAL;
        shim_state.arena.fd = info.memfd;
        shim_state.arena.base = base;
        shim_state.arena.size = info.arena_size;
        atomic_store_explicit(&shim_state.attached, true, memory_order_release);
        return shim_file_attach(sock, info.file_size, token != NULL);
}

/* ---- appliance memory at a local range's address (convert.c) ---- */

static bool realias_child, realias_failed;

int shim_alias(const char *op, uint64_t addr, uint64_t off, uint64_t len)
{
        int r;

        shim_sock_lock();
        r = shim_proto_alias(shim_state.sock, op, addr, off, len);
        shim_sock_unlock();
        return r;
}

/* Tell memd about L's pages (shim.alias remap); in a forked child
 * first map this process's clone there (the parent's mapping is not
 * inherited: MADV_DONTFORK), registered like the arena. */
static void realias(const struct shim_local *l)
{
        struct uffdio_register reg = {.range = {l->start, l->len},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
        int r = 0;

        if (realias_child) {
                void *p = shim_sys_mmap((void *)l->start, l->len, PROT_READ | PROT_WRITE,
                                        MAP_SHARED | MAP_FIXED_NOREPLACE, shim_state.arena.fd,
                                        (off_t)l->off);
                if (p != (void *)l->start || shim_sys_madvise(p, l->len, MADV_DONTFORK) < 0 ||
                    ioctl(shim_state.uffd, UFFDIO_REGISTER, &reg) < 0)
                        r = -EIO;
        }
        if (r == 0)
                r = shim_alias("remap", l->start, l->off, l->len);
        realias_failed |= r < 0;
}

int shim_arena_realias(bool child)
{
        realias_child = child;
        realias_failed = false;
        shim_locals_each(SHIM_EXTERNAL, realias);
        return realias_failed ? -EIO : 0;
}

/* ---- fork ---- */

/* Wait (sock_lock held) until memd is back or the deadline passes. */
static bool wait_memd(const struct timespec *deadline, unsigned seen)
{
        while ((shim_state.memd_away || shim_state.resumed == seen) &&
               pthread_cond_timedwait(&sock_back, &sock_lock, deadline) == 0)
                ;
        return !shim_state.memd_away && shim_state.resumed != seen;
}

/* shim.fork, waiting up to FORK_WAIT_MEMD_S for a memd that died to come
 * back (a restart): the snapshot needs memd. */
static bool fork_snapshot(void)
{
        struct timespec deadline;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += FORK_WAIT_MEMD_S;
        for (;;) {
                unsigned seen = shim_state.resumed;
                int r;

                if (shim_state.memd_away && !wait_memd(&deadline, seen))
                        return false;
                seen = shim_state.resumed;
                r = shim_proto_fork(shim_state.sock, shim_state.fork_token,
                                    sizeof(shim_state.fork_token));
                if (r == 0)
                        return true;
                if (r != -ECONNRESET && r != -EPIPE && r != -ENOTCONN)
                        return false;
                /* memd died under us: the watcher notices and resumes */
                if (!wait_memd(&deadline, seen))
                        return false;
        }
}

void shim_arena_atfork_prepare(void)
{
        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                return;
        /* no conversion half done in the child (convert.c) */
        shim_locals_busy(true);
        /* held until the parent or child handler: concurrent forks queue here */
        pthread_mutex_lock(&sock_lock);
        shim_state.fork_prepared = fork_snapshot() && shim_file_fork_prepare() == 0;
}

void shim_arena_atfork_parent(void)
{
        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                return;
        shim_state.fork_prepared = false;
        shim_file_fork_parent();
        pthread_mutex_unlock(&sock_lock);
        shim_locals_busy(false);
}


static void child_fatal(const char *what, int r)
{
        char msg[160];
        int n = snprintf(msg, sizeof(msg),
                         "xmem-shim: forked child %d cannot map its external heap: %s: %s\n",
                         (int)getpid(), what, strerror(-r));
        /* the heap this child inherited is unreachable: stop loudly rather than
         * let it read garbage */
        if (write(STDERR_FILENO, msg, (size_t)n) < 0)
                _exit(127);
        _exit(127);
}

void shim_arena_atfork_child(void)
{
        const char *step;
        int sock = -1, r;

        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                return;
        /* this process is single-threaded now: locks held by other threads of
         * the parent are void */
        pthread_mutex_init(&sock_lock, NULL);
        pthread_cond_init(&sock_back, NULL);
        pthread_mutex_init(&shim_state.lock, NULL);
        shim_locals_atfork_child();
        shim_convert_atfork_child();
        shim_state.memd_away = false;
        atomic_store_explicit(&shim_state.attached, false, memory_order_release);
        /* the parent's accounting page is not mapped here (MADV_DONTFORK):
         * a private one until memd gives this child its own slot */
        shim_acct_use_private();
        /* the parent's connection, uffd and descriptors are the parent's */
        close(shim_state.sock);
        close(shim_state.uffd);
        close(shim_state.devfd);
        close(shim_state.arena.fd);
        shim_state.sock = shim_state.uffd = shim_state.devfd = shim_state.arena.fd = -1;

        if (!shim_state.fork_prepared) {
                if (shim_state.arena.range.used <= shim_state.reserved_pages &&
                    shim_state.file.range.used == 0)
                        return; /* nothing external was in use: carry on local only */
                child_fatal("shim.fork", -EPROTO);
        }
        shim_state.fork_prepared = false;
        r = shim_proto_connect(shim_socket_path(), &sock);
        if (r < 0)
                child_fatal("connect", r);
        r = shim_arena_attach(sock, shim_state.fork_token, &step);
        if (r < 0)
                child_fatal(step, r);
        r = shim_arena_realias(true);
        if (r < 0)
                child_fatal("appliance memory converted from local memory", r);
        shim_watch_start(); /* the parent's watcher is not here */
}
