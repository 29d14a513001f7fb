/* paging_prog.c: the payload of test_stall.c and test_grow.c (run under the
 * shim, never instrumented). Prints a line at each step, flushed, so the test
 * can follow it; exits 0 with every word verified, 2 on a wrong word, 3 when
 * memory cannot be had.
 *   paging_prog verify MIB PASSES
 *       MIB 1 MiB blocks from malloc: write generation 0, print "written";
 *       then PASSES passes that each check every word of the last generation
 *       and write the next (so pages are fetched and written back every
 *       pass), printing "pass N ok"; a last read-only check; "paging-ok".
 *   paging_prog grow EXT_MIB OWN_MIB STEP_US
 *       EXT_MIB 1 MiB blocks from malloc (external-first: the arena): write,
 *       then check-and-rewrite once (the cache ends full and dirty), print
 *       "cached", wait for a line on stdin. Then OWN_MIB of its own anonymous
 *       memory by raw syscall(SYS_mmap) (the shim never sees it), touched
 *       page by page, STEP_US µs of sleep after each MiB; print "grown", wait.
 *       Check the external data and the own memory, print "verified", wait;
 *       "grow-ok".
 *   paging_prog sigbus MIB
 *       MIB 1 MiB blocks from malloc: write, print "written", wait for a
 *       line on stdin, then check every word. A SIGBUS (an appliance gone
 *       for good) prints "sigbus code N" and exits 5; "read-ok" (exit 0)
 *       when every word came back, "MISMATCH" (exit 2) on a wrong one. */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCK (1UL << 20)
#define PAGE 4096UL

static uint64_t word(uint64_t off, uint64_t gen)
{
        uint64_t x = (off * 0x9e3779b97f4a7c15ULL) ^ (gen * 0xbf58476d1ce4e5b9ULL);
        return x ^ (x >> 31) ^ 0x5bd1e9955bd1e995ULL;
}

static uint64_t bad_words;

/* Check block B of generation GEN (unless GEN < 0) and write generation
 * NEXT (unless NEXT < 0). */
static void block_pass(uint64_t *blk, uint64_t b, int64_t gen, int64_t next)
{
        for (uint64_t k = 0; k < BLOCK / 8; k++) {
                uint64_t off = b * BLOCK + k * 8;
                if (gen >= 0 && blk[k] != word(off, (uint64_t)gen) && bad_words++ == 0)
                        fprintf(stderr, "paging_prog: block %llu word %llu: %llx, want %llx\n",
                                (unsigned long long)b, (unsigned long long)k,
                                (unsigned long long)blk[k],
                                (unsigned long long)word(off, (uint64_t)gen));
                if (next >= 0)
                        blk[k] = word(off, (uint64_t)next);
        }
}

static void all_blocks(uint64_t **blocks, uint64_t n, int64_t gen, int64_t next)
{
        for (uint64_t b = 0; b < n; b++)
                block_pass(blocks[b], b, gen, next);
}

static uint64_t **alloc_blocks(uint64_t n)
{
        uint64_t **blocks = calloc(n, sizeof(*blocks));

        if (!blocks)
                exit(3);
        for (uint64_t b = 0; b < n; b++)
                if (!(blocks[b] = malloc(BLOCK))) {
                        printf("malloc failed at block %llu\n", (unsigned long long)b);
                        exit(3);
                }
        return blocks;
}

static void say(const char *what)
{
        printf("%s\n", what);
        fflush(stdout);
}

static void wait_go(void)
{
        char line[64];

        if (!fgets(line, sizeof(line), stdin))
                exit(4); /* the test went away */
}

static int verify_run(uint64_t mib, unsigned passes)
{
        uint64_t **blocks = alloc_blocks(mib);
        unsigned p;

        all_blocks(blocks, mib, -1, 0);
        say("written");
        for (p = 0; p < passes && !bad_words; p++) {
                all_blocks(blocks, mib, p, p + 1);
                printf("pass %u %s\n", p + 1, bad_words ? "MISMATCH" : "ok");
                fflush(stdout);
        }
        all_blocks(blocks, mib, p, -1);
        if (bad_words) {
                printf("MISMATCH %llu words\n", (unsigned long long)bad_words);
                return 2;
        }
        printf("paging-ok %llu MiB %u passes\n", (unsigned long long)mib, passes);
        return 0;
}

static int grow_run(uint64_t ext_mib, uint64_t own_mib, unsigned step_us)
{
        uint64_t **blocks = alloc_blocks(ext_mib);
        size_t own_len = own_mib * BLOCK;
        long m;
        uint64_t *own;

        all_blocks(blocks, ext_mib, -1, 0);
        all_blocks(blocks, ext_mib, 0, 1);
        say(bad_words ? "MISMATCH before growing" : "cached");
        wait_go();
        /* raw mmap: not the shim's (interposed) mmap, so this memory is the
         * process's own and the shim neither places nor counts it */
        m = syscall(SYS_mmap, NULL, own_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
        if (m < 0 && m > -4096)
                return 3;
        own = (uint64_t *)m;
        for (size_t off = 0; off < own_len; off += PAGE) {
                own[off / 8] = word(off, 7);
                if (step_us && (off + PAGE) % BLOCK == 0)
                        usleep(step_us);
        }
        say("grown");
        wait_go();
        all_blocks(blocks, ext_mib, 1, -1);
        for (size_t off = 0; off < own_len; off += PAGE)
                if (own[off / 8] != word(off, 7))
                        bad_words++;
        if (bad_words) {
                printf("MISMATCH %llu words\n", (unsigned long long)bad_words);
                return 2;
        }
        say("verified");
        wait_go();
        printf("grow-ok external %llu MiB own %llu MiB\n", (unsigned long long)ext_mib,
               (unsigned long long)own_mib);
        return 0;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
        char line[64];
        int n = snprintf(line, sizeof(line), "sigbus code %d\n", si->si_code);

        (void)sig;
        (void)uc;
        (void)!write(1, line, (size_t)n);
        _exit(5);
}

static int sigbus_run(uint64_t mib)
{
        struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
        uint64_t **blocks = alloc_blocks(mib);

        sigaction(SIGBUS, &sa, NULL);
        all_blocks(blocks, mib, -1, 0);
        say("written");
        wait_go();
        all_blocks(blocks, mib, 0, -1);
        say(bad_words ? "MISMATCH" : "read-ok");
        return bad_words ? 2 : 0;
}

int main(int argc, char **argv)
{
        int r;

        if (argc == 4 && strcmp(argv[1], "verify") == 0 && atoi(argv[2]) > 0)
                r = verify_run(strtoull(argv[2], NULL, 10), (unsigned)atoi(argv[3]));
        else if (argc == 5 && strcmp(argv[1], "grow") == 0 && atoi(argv[2]) > 0)
                r = grow_run(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                             (unsigned)atoi(argv[4]));
        else if (argc == 3 && strcmp(argv[1], "sigbus") == 0 && atoi(argv[2]) > 0)
                r = sigbus_run(strtoull(argv[2], NULL, 10));
        else {
                fprintf(stderr, "usage: paging_prog verify MIB PASSES | "
                                "paging_prog grow EXT_MIB OWN_MIB STEP_US | "
                                "paging_prog sigbus MIB\n");
                return 64;
        }
        fflush(stdout);
        return r;
}
