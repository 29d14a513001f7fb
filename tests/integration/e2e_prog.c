/* e2e_prog.c: the payload of test_e2e.c (run with and without the shim):
 * works through MIB MiB of memory and verifies every word it wrote.
 *   e2e_prog malloc|mmap MIB THREADS seq|random [UNIT_KIB]
 *       malloc: 1 MiB blocks from malloc; mmap: one anonymous mapping. THREADS
 *       threads write a pattern over every unit (default 4 KiB page), in
 *       address order or in a random permutation of the units, then read it
 *       all back verified in the same kind of order (another permutation).
 *   e2e_prog realloc MIB
 *       one buffer grown by realloc (x1.5 per step) to MIB; each step checks
 *       the old contents survived and patterns the new part.
 * Prints "e2e-ok ..." with throughput and exits 0; 2 on a wrong word, 3 when
 * memory cannot be had. Never instrumented (it runs under LD_PRELOAD). */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static unsigned long PAGE = 4096; /* the unit of access order */
#define BLOCK (1UL << 20)
#define PAGES_PER_BLOCK (BLOCK / PAGE)

static uint64_t word(uint64_t off)
{
        return (off * 0x9e3779b97f4a7c15ULL) ^ 0x5bd1e9955bd1e995ULL;
}

struct job {
        uint64_t **blocks; /* page p is at blocks[p / PAGES_PER_BLOCK] + ... */
        uint64_t *order;   /* page indices to visit (NULL: address order) */
        uint64_t n_pages;
        unsigned id, n_threads;
        bool verify;
        uint64_t bad;
};

static uint64_t *page_at(const struct job *j, uint64_t p)
{
        return (uint64_t *)((char *)j->blocks[p / PAGES_PER_BLOCK] + (p % PAGES_PER_BLOCK) * PAGE);
}

static void *worker(void *arg)
{
        struct job *j = arg;

        /* Thread T takes every N-th entry: with 4 threads all touch all of it. */
        for (uint64_t i = j->id; i < j->n_pages; i += j->n_threads) {
                uint64_t p = j->order ? j->order[i] : i, *w = page_at(j, p), base = p * PAGE;
                for (uint64_t k = 0; k < PAGE / 8; k++) {
                        uint64_t want = word(base + k * 8);
                        if (!j->verify)
                                w[k] = want;
                        else if (w[k] != want && j->bad++ == 0)
                                fprintf(stderr, "e2e_prog: page %llu word %llu: %llx, want %llx\n",
                                        (unsigned long long)p, (unsigned long long)k,
                                        (unsigned long long)w[k], (unsigned long long)want);
                }
        }
        return NULL;
}

static double now_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void shuffle(uint64_t *v, uint64_t n, uint64_t seed)
{
        for (uint64_t i = 0; i < n; i++)
                v[i] = i;
        for (uint64_t i = n - 1; i > 0; i--) {
                seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
                uint64_t k = seed % (i + 1), t = v[i];
                v[i] = v[k], v[k] = t;
        }
}

/* One pass (write or verify) with THREADS threads; returns wrong words. */
static uint64_t pass(struct job *proto, unsigned threads, bool verify)
{
        pthread_t t[64];
        struct job j[64];
        uint64_t bad = 0;

        for (unsigned i = 0; i < threads; i++) {
                j[i] = *proto;
                j[i].id = i, j[i].n_threads = threads, j[i].verify = verify, j[i].bad = 0;
                if (pthread_create(&t[i], NULL, worker, &j[i]) != 0)
                        exit(3);
        }
        for (unsigned i = 0; i < threads; i++) {
                pthread_join(t[i], NULL);
                bad += j[i].bad;
        }
        return bad;
}

static int run_pages(const char *mode, uint64_t mib, unsigned threads, bool random_order)
{
        struct job job = { .n_pages = mib * PAGES_PER_BLOCK };
        uint64_t bad;
        double t0, t1, t2;

        job.blocks = calloc(mib, sizeof(*job.blocks));
        if (!job.blocks)
                return 3;
        if (strcmp(mode, "mmap") == 0) {
                char *m = mmap(NULL, mib * BLOCK, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED)
                        return 3;
                for (uint64_t b = 0; b < mib; b++)
                        job.blocks[b] = (uint64_t *)(m + b * BLOCK);
        } else
                for (uint64_t b = 0; b < mib; b++)
                        if (!(job.blocks[b] = malloc(BLOCK)))
                                return 3;
        if (random_order) {
                job.order = malloc(job.n_pages * sizeof(*job.order));
                if (!job.order)
                        return 3;
                shuffle(job.order, job.n_pages, 0x2545f4914f6cdd1dULL);
        }
        t0 = now_s();
        pass(&job, threads, false);
        t1 = now_s();
        if (random_order)
                shuffle(job.order, job.n_pages, 0x9e3779b97f4a7c15ULL);
        bad = pass(&job, threads, true);
        t2 = now_s();
        if (bad) {
                printf("MISMATCH %llu words\n", (unsigned long long)bad);
                return 2;
        }
        printf("e2e-ok %s %llu MiB threads %u %s unit %luK write %.0f MiB/s verify %.0f MiB/s\n", mode,
               (unsigned long long)mib, threads, random_order ? "random" : "seq", PAGE / 1024,
               (double)mib / (t1 - t0), (double)mib / (t2 - t1));
        return 0;
}

static int run_realloc(uint64_t mib)
{
        uint64_t *buf = NULL, have = 0, want = BLOCK, steps = 0;
        double t0 = now_s();

        for (;;) {
                uint64_t *nb = realloc(buf, want);
                if (!nb)
                        return 3;
                buf = nb;
                for (uint64_t i = 0; i < have / 8; i++)
                        if (buf[i] != word(i * 8)) {
                                printf("MISMATCH after realloc to %llu at word %llu\n",
                                       (unsigned long long)want, (unsigned long long)i);
                                return 2;
                        }
                for (uint64_t i = have / 8; i < want / 8; i++)
                        buf[i] = word(i * 8);
                have = want, steps++;
                if (have == mib * BLOCK)
                        break;
                want = have + have / 2;
                want = want > mib * BLOCK ? mib * BLOCK : (want + BLOCK - 1) & ~(BLOCK - 1);
        }
        for (uint64_t i = 0; i < have / 8; i++)
                if (buf[i] != word(i * 8)) {
                        printf("MISMATCH at the end, word %llu\n", (unsigned long long)i);
                        return 2;
                }
        printf("e2e-ok realloc %llu MiB in %llu steps, %.2f s\n", (unsigned long long)mib,
               (unsigned long long)steps, now_s() - t0);
        free(buf);
        return 0;
}

int main(int argc, char **argv)
{
        uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
        unsigned threads = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 1;
        int r;

        if (argc == 6)
                PAGE = strtoul(argv[5], NULL, 10) * 1024;
        if (PAGE < 4096 || BLOCK % PAGE) {
                fprintf(stderr, "e2e_prog: UNIT_KIB must divide 1024\n");
                return 64;
        }
        if (argc > 1 && strcmp(argv[1], "realloc") == 0 && mib)
                r = run_realloc(mib);
        else if ((argc == 5 || argc == 6) && (strcmp(argv[1], "malloc") == 0 || strcmp(argv[1], "mmap") == 0) &&
                 mib && threads >= 1 && threads <= 64)
                r = run_pages(argv[1], mib, threads, strcmp(argv[4], "random") == 0);
        else {
                fprintf(stderr, "usage: e2e_prog malloc|mmap MIB THREADS seq|random [UNIT_KIB] | "
                                "e2e_prog realloc MIB\n");
                return 64;
        }
        fflush(stdout);
        return r;
}
