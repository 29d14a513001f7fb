/* fork_prog.c: the Redis BGSAVE fork pattern, run by test_fork under
 * LD_PRELOAD=libxmem-shim.so against a real memd. `fork_prog MIB`:
 * the parent fills a MIB MiB heap (1 MiB mallocs), forks; parent and child
 * each rewrite the heap with their own pattern while the other verifies its
 * own version, twice over; the child then mallocs and frees heavily and
 * exits; the parent prints "child-exited", waits for a byte on stdin (the
 * test looks at memd meanwhile), verifies its heap is intact and exits 0.
 * `fork_prog MIB wait`: the same, but after the heap is filled it prints
 * "ready" and waits for a line on stdin before it forks (test_appliance_restart
 * stops the appliance there).
 * Every failure exits non-zero with a line on stderr. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fork_prog %d: %s:%d: check failed: %s\n",                 \
                                (int)getpid(), __FILE__, __LINE__, #cond);                         \
                        _exit(2);                                                                  \
                }                                                                                  \
        } while (0)

static char **blocks;
static size_t n_blocks;

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t word(uint64_t seed, size_t b, size_t i)
{
        return (seed << 56) ^ (((uint64_t)b << 20) + i) * 0x9e3779b97f4a7c15ULL;
}

static void heap_fill(uint64_t seed)
{
        for (size_t b = 0; b < n_blocks; b++) {
                uint64_t *w = (uint64_t *)blocks[b];
                for (size_t i = 0; i < MIB / 8; i++)
                        w[i] = word(seed, b, i);
        }
}

static void heap_verify(uint64_t seed, const char *what)
{
        for (size_t b = 0; b < n_blocks; b++) {
                const uint64_t *w = (const uint64_t *)blocks[b];
                for (size_t i = 0; i < MIB / 8; i++)
                        if (w[i] != word(seed, b, i)) {
                                fprintf(stderr,
                                        "fork_prog %d: %s: block %zu word %zu: %#llx, want "
                                        "version %llu (%#llx)\n",
                                        (int)getpid(), what, b, i, (unsigned long long)w[i],
                                        (unsigned long long)seed,
                                        (unsigned long long)word(seed, b, i));
                                _exit(3);
                        }
        }
}

static void wait_byte(int fd)
{
        char c;
        CHECK(read(fd, &c, 1) == 1);
}

static void wait_line(int fd)
{
        char c;
        do
                CHECK(read(fd, &c, 1) == 1);
        while (c != '\n');
}

static void send_byte(int fd)
{
        CHECK(write(fd, "x", 1) == 1);
}

/* A child that allocates and frees heavily (it must never touch the parent's heap). */
static void churn(void)
{
        void *keep[512] = { 0 };
        uint64_t rng = 88172645463325252ULL;

        for (int i = 0; i < 20000; i++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                size_t slot = rng % 512, n = 16 + (size_t)(rng >> 20) % (i % 256 ? 4096 : 2 * MIB);
                free(keep[slot]);
                keep[slot] = malloc(n);
                CHECK(keep[slot]);
                memset(keep[slot], (int)(i & 0xff), n);
        }
        for (int i = 0; i < 512; i++)
                free(keep[i]);
        char *big = malloc(64 * MIB); /* external in the child's own arena */
        CHECK(big);
        for (size_t i = 0; i < 64 * MIB; i += 4096)
                big[i] = (char)(i >> 12);
        for (size_t i = 0; i < 64 * MIB; i += 4096)
                CHECK(big[i] == (char)(i >> 12));
        free(big);
}

int main(int argc, char **argv)
{
        int to_child[2], to_parent[2], st;
        double t0, t_fork;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc != 2 && !(argc == 3 && strcmp(argv[2], "wait") == 0)) {
                fprintf(stderr, "usage: fork_prog MIB [wait]\n");
                return 64;
        }
        n_blocks = strtoul(argv[1], NULL, 10);
        blocks = calloc(n_blocks, sizeof(*blocks));
        CHECK(blocks);
        for (size_t b = 0; b < n_blocks; b++)
                CHECK((blocks[b] = malloc(MIB)));
        printf("first %p last %p\n", (void *)blocks[0], (void *)blocks[n_blocks - 1]);
        heap_fill(1);
        heap_verify(1, "parent before fork");
        CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
        if (argc == 3) {
                printf("ready\n");
                wait_line(0);
        }

        t0 = now_s();
        pid_t pid = fork();
        t_fork = now_s() - t0;
        CHECK(pid >= 0);
        if (pid == 0) {
                /* round 1: verify version 1 while the parent rewrites to 2 */
                heap_verify(1, "child round 1 (parent rewriting)");
                send_byte(to_parent[1]);
                wait_byte(to_child[0]); /* the parent's rewrite is complete */
                heap_verify(1, "child after the parent's rewrite");
                /* round 2: rewrite to 3 while the parent verifies 2 */
                heap_fill(3);
                heap_verify(3, "child round 2");
                send_byte(to_parent[1]);
                churn();
                heap_verify(3, "child after churn");
                _exit(0);
        }
        printf("fork %.1f ms\n", t_fork * 1e3);
        heap_fill(2);
        heap_verify(2, "parent round 1 (child verifying)");
        wait_byte(to_parent[0]);
        send_byte(to_child[1]);
        heap_verify(2, "parent round 2 (child rewriting)");
        wait_byte(to_parent[0]);
        heap_verify(2, "parent after the child's rewrite");
        CHECK(waitpid(pid, &st, 0) == pid);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "fork_prog: child status %#x\n", st);
                return 4;
        }
        printf("child-exited\n");
        wait_byte(0);
        heap_verify(2, "parent after the child's churn and exit");
        for (size_t b = 0; b < n_blocks; b++)
                free(blocks[b]);
        free(blocks);
        printf("OK\n");
        return 0;
}
