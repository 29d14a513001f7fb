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
#include "paged.h"
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
        harness_require_uffd();
        harness_appliance_setup(&app, "1G");
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

/* A fresh child of our own memory cgroup, limited to LIMIT. */
static void make_cgroup(const char *tag)
{
        int r = paged_cgroup_new("xmem-test", tag, LIMIT, &cg);

        cr_assert_eq(r, 0, "memory cgroup xmem-test-%s: %s", tag, strerror(-r));
        cr_log_info("cgroup v%d %s limited to 64 MiB", (int)cg->version, cg->dir);
}

/* ---- the child: the workloads ---- */

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

/* ---- the parent: plays memd (paged.c) ---- */

typedef void (*child_fn)(char *m, uint64_t size);

static int run_child_fn(char *m, uint64_t size, int sock, void *arg)
{
        (void)sock;
        ((child_fn)arg)(m, size);
        return 0;
}

static void paged_start_opts(struct paged *p, const char *uri, uint64_t size, uint64_t budget,
                             bool in_cgroup, child_fn fn, const struct pager_opts *opts)
{
        struct xmem_error err = {};
        const struct paged_opts o = { .uri = uri, .size = size, .budget = budget,
                                      .chunk = 65536, .pager = opts, .base = ARENA_BASE };
        int r;

        r = paged_open(p, &o, &err);
        cr_assert_eq(r, 0, "engine over %s: %s (%s)", uri ?: "a file", xmem_error_str(&err),
                     strerror(-r));
        r = paged_spawn(p, &o, in_cgroup ? cg : NULL, run_child_fn, (void *)fn);
        cr_assert_eq(r, 0, "child failed to attach: %s", strerror(-r));
        r = paged_serve(p);
        cr_assert_eq(r, 0, "serve the child: %s", strerror(-r));
}

static void paged_start(struct paged *p, const char *uri, uint64_t size, uint64_t budget,
                        bool in_cgroup, child_fn fn)
{
        paged_start_opts(p, uri, size, budget, in_cgroup, fn, NULL);
}

static int paged_status(struct paged *p)
{
        int status = 0;

        cr_assert_eq(paged_wait(p, &status), 0);
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

static void run_512m(const char *uri, const char *what)
{
        struct paged p = PAGED_INIT;
        struct cgroup_mem m;

        make_cgroup(what);
        paged_start(&p, uri, 512 * MiB, 32 * MiB, true, (child_fn)child_workload);
        residency_track_cgroup(p.res, cg, LIMIT, 16 * MiB);
        int status = paged_status(&p);
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
        struct paged p = PAGED_INIT;
        struct hammer h = {};
        pthread_t th;

        const char *uri = getenv("RACE_FILE") ? NULL : app.tcp_uri;
        paged_start_opts(&p, uri, 16 * MiB, 2 * MiB, false, race_child, opts);
        h.res = p.res;
        pthread_create(&th, NULL, hammer_thread, &h);
        int status = paged_status(&p);
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
