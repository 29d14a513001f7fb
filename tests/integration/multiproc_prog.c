/* multiproc_prog.c: the payload of test_multiproc.c (run under the shim in a
 * memory cgroup, never instrumented). Talks to the test over stdin/stdout.
 *   multiproc_prog fork N MIB
 *       forks N children; each mallocs MIB MiB in 1 MiB blocks and writes a
 *       pattern of its own. When all have written, prints "written" and waits
 *       for a line on stdin; then each verifies every word. Prints
 *       "multiproc-ok" when all children exited 0 (a child: 2 on a wrong word,
 *       3 when memory cannot be had).
 *   multiproc_prog hold MIB
 *       mallocs up to MIB MiB in 1 MiB blocks until malloc fails, writes a
 *       pattern, prints "got G errno E" (G MiB had), waits for a line on
 *       stdin, verifies, prints "hold-ok G" (exit 0) or exits 2. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK (1UL << 20)
#define MAX_BLOCKS 4096

static void say(const char *fmt, long a, long b)
{
        char buf[128];
        int n = snprintf(buf, sizeof(buf), fmt, a, b);

        if (write(STDOUT_FILENO, buf, (size_t)n) != n)
                _exit(4);
}

static uint64_t word(uint64_t seed, uint64_t off)
{
        return ((off + seed * 0x1000193ULL) * 0x9e3779b97f4a7c15ULL) ^ (seed << 48);
}

static void fill(uint64_t **b, size_t n, uint64_t seed)
{
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < BLOCK / 8; k++)
                        b[i][k] = word(seed, i * BLOCK + k * 8);
}

static uint64_t verify(uint64_t **b, size_t n, uint64_t seed)
{
        uint64_t bad = 0;

        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < BLOCK / 8; k++)
                        bad += b[i][k] != word(seed, i * BLOCK + k * 8);
        return bad;
}

/* Up to N blocks; returns how many malloc gave. */
static size_t take(uint64_t **b, size_t n, int *ret_errno)
{
        size_t i;

        *ret_errno = 0;
        for (i = 0; i < n; i++) {
                errno = 0;
                b[i] = malloc(BLOCK);
                if (!b[i]) {
                        *ret_errno = errno;
                        break;
                }
        }
        return i;
}

static void wait_line(int fd)
{
        char c;

        while (read(fd, &c, 1) == 1 && c != '\n')
                ;
}

static int worker(size_t n, uint64_t seed, int ready_fd, int go_fd)
{
        static uint64_t *b[MAX_BLOCKS];
        int e;

        if (take(b, n, &e) != n)
                return 3;
        fill(b, n, seed);
        if (write(ready_fd, "r", 1) != 1)
                return 4;
        wait_line(go_fd);
        return verify(b, n, seed) ? 2 : 0;
}

/* Wait for N ready bytes, or for a child to die first (then it is reaped and
 * counted as failed). */
static int wait_ready(int fd, int n, pid_t *pids, int *status)
{
        int got = 0, failed = 0;
        char c;

        while (got + failed < n) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                if (poll(&pfd, 1, 100) == 1 && read(fd, &c, 1) == 1) {
                        got++;
                        continue;
                }
                for (int i = 0; i < n; i++)
                        if (pids[i] > 0 && waitpid(pids[i], &status[i], WNOHANG) == pids[i]) {
                                say("child %ld died early: status %#lx\n", i, status[i]);
                                pids[i] = -pids[i];
                                failed++;
                        }
        }
        return failed;
}

static int run_fork(int n, size_t mib)
{
        int ready[2], go[2], failed, status[64];
        pid_t pids[64];

        if (n < 1 || n > 64 || pipe(ready) < 0 || pipe(go) < 0)
                return 1;
        for (int i = 0; i < n; i++) {
                pids[i] = fork();
                if (pids[i] < 0)
                        return 1;
                if (pids[i] == 0) {
                        close(ready[0]);
                        close(go[1]);
                        _exit(worker(mib, (uint64_t)i + 1, ready[1], go[0]));
                }
        }
        close(ready[1]);
        close(go[0]);
        failed = wait_ready(ready[0], n, pids, status);
        say("written\n", 0, 0);
        wait_line(STDIN_FILENO);
        close(go[1]); /* EOF: the children verify */
        for (int i = 0; i < n; i++) {
                if (pids[i] < 0)
                        continue;
                waitpid(pids[i], &status[i], 0);
                if (!WIFEXITED(status[i]) || WEXITSTATUS(status[i]) != 0) {
                        say("child %ld: status %#lx\n", i, status[i]);
                        failed++;
                }
        }
        if (failed)
                return 1;
        say("multiproc-ok %ld x %ld MiB\n", n, (long)mib);
        return 0;
}

static int run_hold(size_t mib)
{
        static uint64_t *b[MAX_BLOCKS];
        int e;
        size_t got = take(b, mib, &e);

        fill(b, got, 7);
        say("got %ld errno %ld\n", (long)got, e);
        wait_line(STDIN_FILENO);
        if (verify(b, got, 7))
                return 2;
        say("hold-ok %ld\n", (long)got, 0);
        return 0;
}

int main(int argc, char **argv)
{
        if (argc == 4 && strcmp(argv[1], "fork") == 0 && atoi(argv[3]) > 0 &&
            atoi(argv[3]) <= MAX_BLOCKS)
                return run_fork(atoi(argv[2]), (size_t)atoi(argv[3]));
        if (argc == 3 && strcmp(argv[1], "hold") == 0 && atoi(argv[2]) > 0 &&
            atoi(argv[2]) <= MAX_BLOCKS)
                return run_hold((size_t)atoi(argv[2]));
        fprintf(stderr, "usage: multiproc_prog fork N MIB | hold MIB\n");
        return 1;
}
