/* conv_prog.c: the workload of test_convert and bench/convert, run under the
 * shim: `conv_prog MIB THREADS [one] [run SECONDS]` fills MIB MiB (4 MiB
 * mallocs; "one": a single malloc, one extent) with versioned
 * pages, then THREADS threads (0: none) rewrite random pages of their own without a
 * pause, each checking the page's whole content against the version it
 * wrote last before writing the next one (a lost or torn write is a
 * mismatch). stdin commands, one per line: "convert file|local" (converts in
 * this process through mallctl("xmem.convert"), prints its figures), "check"
 * (prints the writes so far), "baseline" (prints
 * how long a plain memcpy of all MIB takes: what a stop-the-world copy would
 * hold the writers for), "fork" (THREADS 0 only: a child checks every page,
 * rewrites each with the next version and checks again; prints "forked ok"
 * when it exited 0), "stop" (stops the writers, verifies every
 * page, prints "verified ...", exits 0). "run SECONDS": no stdin; it prints
 * the writes every 5 s and stops after SECONDS (inside a container). A
 * mismatch exits 2. */
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define BLOCK (4UL << 20)
#define WORDS (PAGE / 8)

/* the shim's (LD_PRELOAD); absent without it */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
    __attribute__((weak));

struct convert_stats { /* struct shim_convert_stats */
        uint64_t ranges, bytes, failed, rounds, held_faults;
        uint64_t last_window_ns, max_window_ns, total_ns;
        uint64_t error;
};

static uint64_t **blocks;
static size_t n_pages, n_threads;
static uint32_t *version; /* per page: the last version written */
static atomic_bool stop;
static atomic_ulong writes;

static uint64_t *page_at(size_t p)
{
        return blocks[p / (BLOCK / PAGE)] + (p % (BLOCK / PAGE)) * WORDS;
}

static uint64_t word(size_t p, uint32_t v, size_t i)
{
        return ((uint64_t)p << 40) ^ ((uint64_t)v * 0x9e3779b97f4a7c15ULL) ^
               (i * 0xff51afd7ed558ccdULL);
}

static void check(size_t p)
{
        const uint64_t *w = page_at(p);
        uint32_t v = version[p];

        for (size_t i = 0; i < WORDS; i++)
                if (w[i] != word(p, v, i)) {
                        printf("MISMATCH page %zu word %zu version %u: got %#llx want %#llx\n", p,
                               i, v, (unsigned long long)w[i], (unsigned long long)word(p, v, i));
                        fflush(stdout);
                        exit(2);
                }
}

static void put(size_t p, uint32_t v)
{
        uint64_t *w = page_at(p);

        for (size_t i = 0; i < WORDS; i++)
                w[i] = word(p, v, i);
        version[p] = v;
}

static void *writer(void *arg)
{
        size_t t = (size_t)arg, mine = (n_pages - t + n_threads - 1) / n_threads;
        uint64_t x = 0x2545f4914f6cdd1dULL * (t + 1);

        while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                size_t p = t + (x % mine) * n_threads;
                check(p);
                put(p, version[p] + 1);
                atomic_fetch_add_explicit(&writes, 1, memory_order_relaxed);
        }
        return NULL;
}

static void convert(const char *to)
{
        struct convert_stats st;
        size_t len = sizeof(st);
        int r = mallctl ? mallctl("xmem.convert", NULL, NULL, &to, sizeof(to)) : -1;

        if (r == 0)
                r = mallctl("xmem.convert_stats", &st, &len, NULL, 0);
        if (r != 0) {
                printf("convert %s: error %d\n", to, r);
        } else {
                printf("converted %s ranges %llu bytes %llu failed %llu rounds %llu held %llu "
                       "window_us %.1f max_window_us %.1f total_ms %.1f\n",
                       to, (unsigned long long)st.ranges, (unsigned long long)st.bytes,
                       (unsigned long long)st.failed, (unsigned long long)st.rounds,
                       (unsigned long long)st.held_faults, st.last_window_ns / 1e3,
                       st.max_window_ns / 1e3, st.total_ns / 1e6);
        }
        fflush(stdout);
}

static double now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The child sees the parent's pages as they were and writes its own copy. */
static void fork_check(void)
{
        int st = -1;
        pid_t c = n_threads ? -1 : fork();

        if (c == 0) {
                for (size_t p = 0; p < n_pages; p++)
                        check(p);
                for (size_t p = 0; p < n_pages; p++)
                        put(p, version[p] + 1);
                for (size_t p = 0; p < n_pages; p++)
                        check(p);
                _exit(0);
        }
        if (c > 0)
                waitpid(c, &st, 0);
        printf("forked %s (status %#x)\n", st == 0 ? "ok" : "failed", st);
        fflush(stdout);
}

/* A plain copy of every block (through one block-sized buffer). */
static void baseline(size_t n_blocks)
{
        static char buf[BLOCK];
        double t0 = now_ms();

        for (size_t b = 0; b < n_blocks; b++) {
                memcpy(buf, blocks[b], BLOCK);
                __asm__ volatile("" : : "r"(buf) : "memory"); /* the copy is used */
        }
        printf("baseline memcpy_ms %.1f\n", now_ms() - t0);
        fflush(stdout);
}

int main(int argc, char **argv)
{
        size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
        char line[64];
        pthread_t th[64];

        n_threads = argc > 2 ? strtoul(argv[2], NULL, 10) : 4;
        if (n_threads > 64 || mib < 4)
                return 3;
        n_pages = mib * (1UL << 20) / PAGE;
        blocks = calloc(mib / 4, sizeof(*blocks));
        version = calloc(n_pages, sizeof(*version));
        if (!blocks || !version)
                return 3;
        bool one = false;
        long run_s = -1;
        for (int i = 3; i < argc; i++)
                if (strcmp(argv[i], "one") == 0)
                        one = true;
                else if (strcmp(argv[i], "run") == 0 && i + 1 < argc)
                        run_s = strtol(argv[++i], NULL, 10);
        char *all = one ? malloc(mib / 4 * BLOCK) : NULL;
        if (one && !all)
                return 3;
        for (size_t b = 0; b < mib / 4; b++)
                if (!(blocks[b] = one ? (uint64_t *)(all + b * BLOCK) : malloc(BLOCK)))
                        return 3;
        n_pages = mib / 4 * (BLOCK / PAGE);
        for (size_t p = 0; p < n_pages; p++)
                put(p, 1);
        for (size_t t = 0; t < n_threads; t++)
                if (pthread_create(&th[t], NULL, writer, (void *)t) != 0)
                        return 3;
        printf("ready %zu pages %zu threads\n", n_pages, n_threads);
        fflush(stdout);
        for (long t = 0; run_s >= 0 && t < run_s; t++) {
                struct timespec one_s = {1, 0};
                nanosleep(&one_s, NULL);
                if (t % 5 == 4) {
                        printf("writes %lu\n", atomic_load(&writes));
                        fflush(stdout);
                }
        }
        while (run_s < 0 && fgets(line, sizeof(line), stdin)) {
                if (strncmp(line, "convert ", 8) == 0) {
                        line[strcspn(line, "\n")] = 0;
                        convert(line + 8);
                } else if (strncmp(line, "fork", 4) == 0) {
                        fork_check();
                } else if (strncmp(line, "baseline", 8) == 0) {
                        baseline(mib / 4);
                } else if (strncmp(line, "check", 5) == 0) {
                        printf("writes %lu\n", atomic_load(&writes));
                        fflush(stdout);
                } else if (strncmp(line, "stop", 4) == 0) {
                        break;
                }
        }
        atomic_store(&stop, true);
        for (size_t t = 0; t < n_threads; t++)
                pthread_join(th[t], NULL);
        for (size_t p = 0; p < n_pages; p++)
                check(p);
        printf("verified %zu pages, %lu writes\n", n_pages, atomic_load(&writes));
        return 0;
}
