/* test_pager_fill.c: a page being filled is never writable. A fork snapshot
 * (snapshot.c) leaves FILLING pages out of its cut, so a write must not land
 * in one before its fill has made it DIRTY under the arena lock. The test
 * plays memd (paged.c) for a child whose threads write all over an arena
 * four times its budget (random 4 KiB fills, 2 MiB stream fills written
 * while they are installed), and samples the child's page table
 * (/proc/PID/pagemap) under the arena lock: every present page of a FILLING
 * run must be write-protected (uffd-wp). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "paged.h"
#include "residency.h"

#define MiB (1ULL << 20)
#define PAGE 4096ULL
#define ARENA_BASE 0x520000000000ULL
#define PM_PRESENT (1ULL << 63)
#define PM_UFFD_WP (1ULL << 57) /* Documentation/admin-guide/mm/pagemap.rst */
#define U(x) ((unsigned long long)(x))

static struct harness_proc app;
static struct paged served = PAGED_INIT; /* killed and freed if a test fails */
static _Atomic int *stop;                /* MAP_SHARED with the child: [0] = stop */

static void setup(void)
{
        harness_require_uffd();
        harness_appliance_setup(&app, "1G");
}

static void teardown(void)
{
        paged_free(&served); /* kills a child still running */
        if (stop)
                munmap(stop, PAGE);
        stop = NULL;
        harness_cleanup(&app);
}

TestSuite(pager_fill, .init = setup, .fini = teardown, .timeout = 120);

struct writer {
        volatile uint64_t *m;
        uint64_t pages, seed;
        bool sequential;
};

/* Write one word per page until told to stop: at random, or sweeping the
 * arena (a stream: its fills grow to 2 MiB and are prefetched writable). */
static void *writer_main(void *arg)
{
        struct writer *w = arg;

        for (uint64_t k = 0; !atomic_load(stop); k++) {
                uint64_t pg = w->sequential ? k % w->pages : paged_xorshift(&w->seed) % w->pages;
                w->m[pg * (PAGE / 8)] = k;
        }
        return NULL;
}

static int writers_child(char *m, uint64_t size, int sock, void *arg)
{
        pthread_t th[4];
        struct writer w[4];

        (void)sock;
        (void)arg;
        for (int t = 0; t < 4; t++) {
                w[t] =
                    (struct writer){(volatile uint64_t *)m, size / PAGE, 0x9E3779B9ULL + t, t == 0};
                if (pthread_create(&th[t], NULL, writer_main, &w[t]) != 0)
                        return 20;
        }
        for (int t = 0; t < 4; t++)
                pthread_join(th[t], NULL);
        return 0;
}

/* One look at the child's page table with the arena's states frozen: counts
 * the present pages of FILLING runs, and those of them a write would reach
 * without a fault (not write-protected). */
static void sample(struct arena *a, int pagemap, uint64_t *pm, uint64_t *ret_present,
                   uint64_t *ret_writable)
{
        uint64_t n = a->size / PAGE;
        off_t at = (off_t)(a->base / PAGE * sizeof(*pm));

        pthread_mutex_lock(&a->lock);
        cr_assert_eq(pread(pagemap, pm, n * sizeof(*pm), at), (ssize_t)(n * sizeof(*pm)));
        for (uint64_t c = 0; c < a->n_chunks; c++) {
                if (a->state[c] != CHUNK_FILLING)
                        continue;
                for (uint64_t p = c * (a->chunk_size / PAGE); p < (c + 1) * (a->chunk_size / PAGE);
                     p++) {
                        if (!(pm[p] & PM_PRESENT))
                                continue;
                        (*ret_present)++;
                        *ret_writable += !(pm[p] & PM_UFFD_WP);
                }
        }
        pthread_mutex_unlock(&a->lock);
}

static void filling_is_never_writable(const char *uri)
{
        const uint64_t size = 32 * MiB;
        const struct paged_opts o = {
            .uri = uri, .size = size, .budget = 8 * MiB, .chunk = PAGE, .base = ARENA_BASE};
        struct xmem_error err = {};
        uint64_t present = 0, writable = 0, samples = 0, *pm = malloc(size / PAGE * sizeof(*pm));
        char path[64];
        int r, status;

        cr_assert_not_null(pm);
        stop = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(stop, MAP_FAILED);
        r = paged_open(&served, &o, &err);
        cr_assert_eq(r, 0, "engine over %s: %s (%s)", uri, xmem_error_str(&err), strerror(-r));
        r = paged_spawn(&served, &o, NULL, writers_child, NULL);
        cr_assert_eq(r, 0, "the child failed to attach: %s", strerror(-r));
        cr_assert_eq(paged_serve(&served), 0);
        snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)served.pid);
        int pagemap = open(path, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(pagemap, 0, "%s: %s", path, strerror(errno));

        for (double end = paged_now_s() + 2; paged_now_s() < end && !writable; samples++) {
                sample(served.arena, pagemap, pm, &present, &writable);
                usleep(100);
        }
        close(pagemap);
        atomic_store(stop, 1);
        cr_assert_eq(paged_wait(&served, &status), 0);
        struct xmem_counters *k = &served.res->counters;
        cr_log_info("%s: %llu samples, %llu present pages of FILLING runs (%llu writable); faults "
                    "%llu, prefetched %llu MiB, evictions %llu",
                    uri, U(samples), U(present), U(writable), U(k->faults),
                    U(k->prefetched_bytes / MiB), U(k->evictions));
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
        cr_assert_eq(writable, 0,
                     "%llu pages of FILLING runs were writable: a write could land "
                     "before the fill is done, outside a fork snapshot's cut",
                     U(writable));
        cr_assert_gt(present, 0, "no fill was caught while installing: the test proved nothing");
        free(pm);
}

Test(pager_fill, filling_pages_are_never_writable_tcp)
{
        filling_is_never_writable(app.tcp_uri);
}

Test(pager_fill, filling_pages_are_never_writable_shm)
{
        filling_is_never_writable(app.shm_uri);
}
