/* test_pager.c: the paging engine end to end, the test playing memd. A child
 * process in a fresh memory cgroup limited to 64 MiB maps an arena memfd,
 * makes its own userfaultfd from the inherited /dev/userfaultfd fd, registers
 * the arena and hands the uffd over (SCM_RIGHTS); the parent serves it with
 * the pager and the residency manager over a real appliance (tcp and shm).
 * The child writes and verifies 512 MiB; an eviction hammer checks that no
 * write racing with eviction is lost; without the pager the same child is
 * OOM-killed. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "fdio.h"
#include "harness.h"
#include "pager.h"
#include "residency.h"
#include "store.h"
#include "transport/transport.h"
#include "uffd.h"

#define MiB (1ULL << 20)
#define LIMIT (64 * MiB)
#define ARENA_BASE 0x500000000000ULL

static struct harness_proc app;
static struct cgroup *cg;

static void setup(void)
{
        static const char *const args[] = { "--pool-size", "1G", NULL };

        if (!harness_is_root())
                cr_skip_test("needs root (cgroups, /dev/userfaultfd)");
        if (access("/dev/userfaultfd", F_OK) < 0)
                cr_skip_test("/dev/userfaultfd is missing");
        harness_init(&app);
        harness_appliance_start(&app, args);
}

static void teardown(void)
{
        if (cg) {
                (void)cgroup_remove(cg);
                cgroup_free(cg);
                cg = NULL;
        }
        harness_cleanup(&app);
}

TestSuite(pager, .init = setup, .fini = teardown, .timeout = 300);

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A fresh child of our own memory cgroup, limited to LIMIT (v1 limit_in_bytes,
 * v2 memory.max + memory.high). */
static void make_cgroup(const char *tag)
{
        enum cgroup_version v;
        char *mount = NULL, *self = NULL, name[64];
        struct cgroup *parent = NULL;

        cr_assert_eq(cgroup_detect(CGROUP_FS_ROOT, &v, &mount), 0, "no memory cgroup");
        cr_assert_eq(cgroup_pid_path("/proc", getpid(), v, &self), 0);
        cr_assert_eq(cgroup_new(v, mount, self, &parent), 0);
        snprintf(name, sizeof(name), "xmem-test-%s-%d", tag, (int)getpid());
        int r = cgroup_create_child(parent, name, &cg);
        cr_assert_eq(r, 0, "create cgroup %s/%s: %s", parent->dir, name, strerror(-r));
        r = cgroup_set_limit(cg, LIMIT);
        cr_assert_eq(r, 0, "set limit: %s", strerror(-r));
        cr_log_info("cgroup v%d %s limited to 64 MiB", (int)v, cg->dir);
        cgroup_free(parent);
        free(mount);
        free(self);
}

/* ---- the child: plays the shim ---- */

struct child_hello {
        uint64_t base;
};

/* Map the memfd at ARENA_BASE, create and register our uffd, send it. */
static char *child_attach(int sock, int dev_fd, int memfd, uint64_t size)
{
        char go;
        int uffd = -1;

        if (read_full(sock, &go, 1) < 0) /* moved into the cgroup */
                _exit(10);
        char *m = mmap((void *)ARENA_BASE, size, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED_NOREPLACE, memfd, 0);
        if (m == MAP_FAILED)
                _exit(11);
        if (uffd_open_with(dev_fd, O_CLOEXEC | O_NONBLOCK, UFFD_PAGER_FEATURES, 0, NULL,
                           &uffd) < 0)
                _exit(12);
        if (uffd_register(uffd, (uint64_t)(uintptr_t)m, size,
                          UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, NULL) < 0)
                _exit(13);
        struct child_hello h = { .base = (uint64_t)(uintptr_t)m };
        /* We keep our own uffd reference: faults wait if the server dies. */
        if (send_with_fds(sock, &h, sizeof(h), &uffd, 1) < 0)
                _exit(14);
        if (read_full(sock, &go, 1) < 0) /* the pager runs */
                _exit(15);
        return m;
}

static inline uint64_t word_of(uint64_t seed, uint64_t i)
{
        return (i * 0x9E3779B97F4A7C15ULL) ^ seed;
}

static uint64_t xorshift(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* Write SEED's pattern over [0, SIZE) chunk by chunk in ORDER (NULL = sequential). */
static void fill(uint64_t *w, uint64_t size, const uint32_t *order, uint64_t seed)
{
        uint64_t per = 65536 / 8, n = size / 65536;
        for (uint64_t k = 0; k < n; k++) {
                uint64_t c = order ? order[k] : k;
                for (uint64_t i = c * per; i < (c + 1) * per; i++)
                        w[i] = word_of(seed, i);
        }
}

static int verify(const uint64_t *w, uint64_t size, const uint32_t *order, uint64_t seed)
{
        uint64_t per = 65536 / 8, n = size / 65536;
        for (uint64_t k = 0; k < n; k++) {
                uint64_t c = order ? order[k] : k;
                for (uint64_t i = c * per; i < (c + 1) * per; i++)
                        if (w[i] != word_of(seed, i)) {
                                fprintf(stderr, "child: word %llu is %llx, want %llx\n",
                                        (unsigned long long)i, (unsigned long long)w[i],
                                        (unsigned long long)word_of(seed, i));
                                return -1;
                        }
        }
        return 0;
}

static _Noreturn void child_workload(char *m, uint64_t size)
{
        uint64_t n = size / 65536, rng = 0x1234567;
        uint32_t *order = malloc(n * sizeof(*order));
        double t[5];

        for (uint64_t i = 0; i < n; i++)
                order[i] = (uint32_t)i;
        for (uint64_t i = n - 1; i > 0; i--) {
                uint64_t j = xorshift(&rng) % (i + 1);
                uint32_t x = order[i];
                order[i] = order[j];
                order[j] = x;
        }
        t[0] = now_s();
        fill((uint64_t *)m, size, NULL, 1);
        t[1] = now_s();
        if (verify((uint64_t *)m, size, NULL, 1) < 0)
                _exit(20);
        t[2] = now_s();
        fill((uint64_t *)m, size, order, 2);
        t[3] = now_s();
        if (verify((uint64_t *)m, size, order, 2) < 0)
                _exit(21);
        t[4] = now_s();
        fprintf(stderr,
                "child: %llu MiB: seq write %.0f MiB/s, seq verify %.0f MiB/s, "
                "random write %.0f MiB/s, random verify %.0f MiB/s\n",
                (unsigned long long)(size / MiB), size / MiB / (t[1] - t[0]),
                size / MiB / (t[2] - t[1]), size / MiB / (t[3] - t[2]),
                size / MiB / (t[4] - t[3]));
        _exit(0);
}

/* ---- the parent: plays memd ---- */

struct paged {
        struct xmem_transport *t;
        struct store *store;
        struct arena *arena;
        struct residency *res;
        struct pager *pager;
        pid_t pid;
        int sock;
};

typedef void (*child_fn)(char *m, uint64_t size);

static void paged_start_opts(struct paged *p, const char *uri, uint64_t size, uint64_t budget,
                             bool in_cgroup, child_fn fn, const struct pager_opts *opts)
{
        struct xmem_error err = {};
        int sv[2], dev_fd, r;

        if (!uri) { /* a local file store: the engine alone */
                int fd = memfd_create("store", MFD_CLOEXEC);
                cr_assert_geq(fd, 0);
                cr_assert_eq(ftruncate(fd, (off_t)size), 0);
                cr_assert_eq(store_file_new(fd, size, &p->store), 0);
        } else {
                r = xmem_transport_open(uri, NULL, &p->t, &err);
                cr_assert_eq(r, 0, "open %s: %s", uri, xmem_error_str(&err));
                r = store_xmem_new(&p->t, 1, size, 65536, &p->store, &err);
                cr_assert_eq(r, 0, "%s", xmem_error_str(&err));
        }
        cr_assert_eq(arena_new(size, 65536, p->store, true, &p->arena), 0);
        cr_assert_eq(residency_new(budget, &p->res), 0);
        cr_assert_eq(residency_add_arena(p->res, p->arena), 0);
        cr_assert_eq(pager_new(opts, &p->pager), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        dev_fd = uffd_dev_open();
        cr_assert_geq(dev_fd, 0);

        p->pid = fork();
        cr_assert_geq(p->pid, 0);
        if (p->pid == 0) {
                close(sv[0]);
                char *m = child_attach(sv[1], dev_fd, p->arena->memfd, p->arena->size);
                fn(m, p->arena->size);
                _exit(0);
        }
        close(sv[1]);
        close(dev_fd);
        p->sock = sv[0];
        if (in_cgroup)
                cr_assert_eq(cgroup_move_pid(cg, p->pid), 0);
        cr_assert_eq(write_full(p->sock, "g", 1), 0);

        struct child_hello h;
        int fds[1];
        size_t nfds = 1;
        cr_assert_eq(recv_with_fds(p->sock, &h, sizeof(h), fds, &nfds), (ssize_t)sizeof(h),
                     "child failed to attach");
        cr_assert_eq(nfds, 1);
        arena_attach(p->arena, fds[0], h.base);
        cr_assert_eq(pager_add(p->pager, p->arena, p->res), 0);
        cr_assert_eq(pager_start(p->pager), 0);
        cr_assert_eq(residency_start(p->res), 0);
        cr_assert_eq(write_full(p->sock, "r", 1), 0);
}

static void paged_start(struct paged *p, const char *uri, uint64_t size, uint64_t budget,
                        bool in_cgroup, child_fn fn)
{
        paged_start_opts(p, uri, size, budget, in_cgroup, fn, NULL);
}

static int paged_wait(struct paged *p)
{
        int status = 0;

        cr_assert_eq(waitpid(p->pid, &status, 0), p->pid);
        return status;
}

static void paged_report(struct paged *p, const char *what)
{
        struct xmem_counters *c = &p->res->counters;
        struct lat_hist *h = &c->fault_latency;

        cr_log_info("%s: faults %llu (missing %llu, wp %llu), fetched %llu MiB, zero-filled "
                    "%llu MiB, prefetched %llu MiB, written back %llu MiB, evictions %llu, "
                    "ENOMEM retries %llu, store errors %llu; fault service p50 %.1f us p99 "
                    "%.1f us p999 %.1f us",
                    what, (unsigned long long)c->faults, (unsigned long long)c->missing_faults,
                    (unsigned long long)c->wp_faults,
                    (unsigned long long)(c->fetched_bytes / MiB),
                    (unsigned long long)(c->zero_filled_bytes / MiB),
                    (unsigned long long)(c->prefetched_bytes / MiB),
                    (unsigned long long)(c->written_back_bytes / MiB),
                    (unsigned long long)c->evictions, (unsigned long long)c->enomem_retries,
                    (unsigned long long)c->store_errors, lat_hist_quantile(h, 0.5) / 1e3,
                    lat_hist_quantile(h, 0.99) / 1e3, lat_hist_quantile(h, 0.999) / 1e3);
}

static void paged_free(struct paged *p)
{
        residency_stop(p->res);
        pager_remove(p->pager, p->arena);
        pager_free(p->pager);
        residency_free(p->res);
        arena_free(p->arena);
        store_free(p->store);
        if (p->t)
                xmem_transport_close(p->t);
        close(p->sock);
}

static void run_512m(const char *uri, const char *what)
{
        struct paged p = {};
        struct cgroup_mem m;

        make_cgroup(what);
        paged_start(&p, uri, 512 * MiB, 32 * MiB, true, (child_fn)child_workload);
        residency_track_cgroup(p.res, cg, LIMIT, 16 * MiB);
        int status = paged_wait(&p);
        paged_report(&p, what);
        cr_assert_eq(cgroup_read_mem(cg, &m), 0);
        cr_log_info("%s: cgroup usage at exit %llu MiB, oom kills %llu", what,
                    (unsigned long long)(m.usage / MiB), (unsigned long long)m.oom_kill);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status 0x%x (exit %d, signal %d)", status, WEXITSTATUS(status),
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        cr_assert_eq(m.oom_kill, 0);
        cr_assert_gt(p.res->counters.evictions, 0);
        cr_assert_geq(p.res->counters.written_back_bytes, 400 * MiB);
        cr_assert_geq(p.res->counters.fetched_bytes, 400 * MiB);
        paged_free(&p);
}

Test(pager, paged_512m_tcp)
{
        run_512m(app.tcp_uri, "tcp");
}

Test(pager, paged_512m_shm)
{
        run_512m(app.shm_uri, "shm");
}

/* ---- writes racing with eviction ---- */

#define RACE_THREADS 4
#define RACE_ROUNDS 20
#define WORDS_PER_PAGE 512

struct race_arg {
        uint64_t *w;
        uint64_t pages;
        int t;
        _Atomic int *bad;
};

static void *race_thread(void *arg)
{
        struct race_arg *a = arg;

        for (uint64_t r = 1; r <= RACE_ROUNDS; r++)
                for (uint64_t pg = (uint64_t)a->t; pg < a->pages; pg += RACE_THREADS) {
                        uint64_t *p = a->w + pg * WORDS_PER_PAGE;
                        if (p[0] != r - 1) { /* the last write must survive eviction */
                                fprintf(stderr, "child: page %llu round %llu reads %llu\n",
                                        (unsigned long long)pg, (unsigned long long)r,
                                        (unsigned long long)p[0]);
                                (*a->bad)++;
                                return NULL;
                        }
                        p[1 + r % (WORDS_PER_PAGE - 1)] = r;
                        p[0] = r;
                }
        return NULL;
}

static void race_child(char *m, uint64_t size)
{
        pthread_t th[RACE_THREADS];
        struct race_arg args[RACE_THREADS];
        _Atomic int bad = 0;
        uint64_t pages = size / 4096;

        for (int i = 0; i < RACE_THREADS; i++) {
                args[i] = (struct race_arg){ .w = (uint64_t *)m, .pages = pages, .t = i,
                                             .bad = &bad };
                pthread_create(&th[i], NULL, race_thread, &args[i]);
        }
        for (int i = 0; i < RACE_THREADS; i++)
                pthread_join(th[i], NULL);
        if (bad)
                _exit(30);
        for (uint64_t pg = 0; pg < pages; pg++) {
                uint64_t *p = (uint64_t *)m + pg * WORDS_PER_PAGE;
                if (p[0] != RACE_ROUNDS)
                        _exit(31);
                for (uint64_t r = 1; r <= RACE_ROUNDS; r++)
                        if (p[1 + r % (WORDS_PER_PAGE - 1)] != r)
                                _exit(32);
        }
        _exit(0);
}

struct hammer {
        struct residency *res;
        _Atomic bool stop;
        uint64_t rounds;
};

static void *hammer_thread(void *arg)
{
        struct hammer *h = arg;

        while (!h->stop) {
                (void)residency_evict_to(h->res, 0);
                h->rounds++;
        }
        return NULL;
}

static void race(const struct pager_opts *opts)
{
        struct paged p = {};
        struct hammer h = {};
        pthread_t th;

        const char *uri = getenv("RACE_FILE") ? NULL : app.tcp_uri;
        paged_start_opts(&p, uri, 16 * MiB, 2 * MiB, false, race_child, opts);
        h.res = p.res;
        pthread_create(&th, NULL, hammer_thread, &h);
        int status = paged_wait(&p);
        h.stop = true;
        pthread_join(th, NULL);
        paged_report(&p, "race");
        cr_log_info("race: %llu evict-everything sweeps while %d threads wrote",
                    (unsigned long long)h.rounds, RACE_THREADS);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status 0x%x (exit %d: 30 lost write seen live, 31/32 at the end)",
                  status, WEXITSTATUS(status));
        cr_assert_gt(p.res->counters.evictions, 1000);
        cr_assert_gt(p.res->counters.wp_faults, 0);
        paged_free(&p);
}

/* Default engine: the reader fills one chunk per batch, one fill worker. */
Test(pager, writes_racing_eviction_are_kept)
{
        race(NULL);
}

/* No workers: the reader fills everything itself. */
Test(pager, writes_racing_eviction_are_kept_inline)
{
        race(&(struct pager_opts){ .workers = -1 });
}

/* Three fill workers and a busy-polling reader. */
Test(pager, writes_racing_eviction_are_kept_workers_poll)
{
        race(&(struct pager_opts){ .workers = 3, .poll_us = 100 });
}

/* ---- the same child without the pager: plain anonymous memory ---- */

Test(pager, oom_killed_without_pager)
{
        struct cgroup_mem m;
        int go[2], status;

        make_cgroup("oom");
        cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                char c;
                close(go[1]);
                if (read_full(go[0], &c, 1) < 0)
                        _exit(10);
                char *b = mmap(NULL, 512 * MiB, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (b == MAP_FAILED)
                        _exit(11);
                for (uint64_t i = 0; i < 512 * MiB; i += 4096)
                        b[i] = 1;
                _exit(0);
        }
        close(go[0]);
        cr_assert_eq(cgroup_move_pid(cg, pid), 0);
        cr_assert_eq(write_full(go[1], "g", 1), 0);
        close(go[1]);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert_eq(cgroup_read_mem(cg, &m), 0);
        cr_log_info("without pager: status 0x%x, oom kills %llu", status,
                    (unsigned long long)m.oom_kill);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "512 MiB of anonymous memory under a 64 MiB limit must be OOM-killed");
        cr_assert_geq(m.oom_kill, 1);
}
