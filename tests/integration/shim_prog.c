/* shim_prog.c: the program tests/integration/test_shim_*.c run under
 * LD_PRELOAD=libxmem-shim.so. Each mode exercises the interposed allocator
 * and mmap, verifies every byte it wrote, and exits 0 only if all was right.
 *   basic          malloc family, threads, fork, mmap/mremap (pass-through)
 *   alloc MIB      MIB one-MiB mallocs and one MIB mmap, patterned, verified;
 *                  prints "malloc ADDR" / "mmap ADDR" for the large ones
 *   fork MIB       a MIB heap region; parent and child each rewrite it while
 *                  the other verifies its own version; the child churns malloc */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "shim_prog: %s:%d: check failed: %s\n", __FILE__,         \
                                __LINE__, #cond);                                                  \
                        exit(2);                                                                   \
                }                                                                                  \
        } while (0)

static void fill(void *p, size_t n, uint64_t seed)
{
        uint64_t *w = p;
        for (size_t i = 0; i < n / 8; i++)
                w[i] = seed ^ (i * 0x9e3779b97f4a7c15ULL);
}

static int verify(const void *p, size_t n, uint64_t seed)
{
        const uint64_t *w = p;
        for (size_t i = 0; i < n / 8; i++)
                if (w[i] != (seed ^ (i * 0x9e3779b97f4a7c15ULL)))
                        return 0;
        return 1;
}

static void *thread_main(void *arg)
{
        uintptr_t id = (uintptr_t)arg;
        for (int round = 0; round < 200; round++) {
                size_t n = 16 + (size_t)((round * 7919 + id * 104729) % 70000);
                char *p = malloc(n);
                if (!p)
                        return (void *)1;
                memset(p, (int)(id + round), n);
                p = realloc(p, n * 2);
                if (!p)
                        return (void *)1;
                for (size_t i = 0; i < n; i++)
                        if (p[i] != (char)(id + round))
                                return (void *)1;
                free(p);
        }
        return NULL;
}

static int mode_basic(void)
{
        char *p = malloc(100), *q;
        void *a;
        size_t k;

        CHECK(p);
        strcpy(p, "hello");
        p = realloc(p, 100000);
        CHECK(p && strcmp(p, "hello") == 0);
        CHECK(malloc_usable_size(p) >= 100000);
        free(p);
        q = calloc(1000, 1000);
        CHECK(q);
        for (k = 0; k < 1000000; k++)
                CHECK(q[k] == 0);
        free(q);
        CHECK(posix_memalign(&a, 4096, 12345) == 0 && ((uintptr_t)a & 4095) == 0);
        free(a);
        a = aligned_alloc(1 << 16, 1 << 16);
        CHECK(a && ((uintptr_t)a & 0xffff) == 0);
        free(a);
        a = memalign(256, 1000);
        CHECK(a && ((uintptr_t)a & 255) == 0);
        free(a);
        a = valloc(10);
        CHECK(a && ((uintptr_t)a & 4095) == 0);
        free(a);
        a = pvalloc(10);
        CHECK(a && ((uintptr_t)a & 4095) == 0 && malloc_usable_size(a) >= 4096);
        free(a);
        errno = 0;
        size_t huge = SIZE_MAX / 2;
        __asm__ volatile("" : "+r"(huge));
        CHECK(reallocarray(NULL, huge, 4) == NULL && errno == ENOMEM);
        a = reallocarray(NULL, 10, 10);
        CHECK(a);
        free(a);

        pthread_t t[4];
        for (uintptr_t i = 0; i < 4; i++)
                CHECK(pthread_create(&t[i], NULL, thread_main, (void *)i) == 0);
        for (int i = 0; i < 4; i++) {
                void *ret;
                CHECK(pthread_join(t[i], &ret) == 0 && ret == NULL);
        }

        char *m = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(m != MAP_FAILED);
        fill(m, 4 * MIB, 7);
        m = mremap(m, 4 * MIB, 8 * MIB, MREMAP_MAYMOVE);
        CHECK(m != MAP_FAILED && verify(m, 4 * MIB, 7));
        CHECK(munmap(m, 8 * MIB) == 0);

        p = malloc(3 * MIB);
        fill(p, 3 * MIB, 11);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                fill(p, 3 * MIB, 12);
                _exit(verify(p, 3 * MIB, 12) ? 0 : 3);
        }
        int st;
        CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(verify(p, 3 * MIB, 11));
        free(p);
        printf("OK\n");
        return 0;
}

static int mode_alloc(size_t mib)
{
        char **blocks = calloc(mib, sizeof(char *));
        CHECK(blocks);
        for (size_t i = 0; i < mib; i++) {
                blocks[i] = malloc(MIB);
                CHECK(blocks[i]);
                fill(blocks[i], MIB, i);
                printf("malloc %p\n", (void *)blocks[i]);
        }
        char *m = mmap(NULL, mib * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(m != MAP_FAILED);
        printf("mmap %p\n", (void *)m);
        fill(m, mib * MIB, 424242);
        for (size_t i = 0; i < mib; i++)
                CHECK(verify(blocks[i], MIB, i));
        CHECK(verify(m, mib * MIB, 424242));
        /* grow and shrink through realloc and mremap, data kept */
        blocks[0] = realloc(blocks[0], 8 * MIB);
        CHECK(blocks[0] && verify(blocks[0], MIB, 0));
        m = mremap(m, mib * MIB, (mib + 4) * MIB, MREMAP_MAYMOVE);
        CHECK(m != MAP_FAILED && verify(m, mib * MIB, 424242));
        CHECK(munmap(m, (mib + 4) * MIB) == 0);
        for (size_t i = 0; i < mib; i++)
                free(blocks[i]);
        free(blocks);
        fflush(stdout);
        printf("OK\n");
        return 0;
}

static void wait_byte(int fd)
{
        char c;
        CHECK(read(fd, &c, 1) == 1);
}

static void send_byte(int fd)
{
        CHECK(write(fd, "x", 1) == 1);
}

static int mode_fork(size_t mib)
{
        size_t n = mib * MIB;
        char *heap = malloc(n);
        int to_child[2], to_parent[2], st;

        CHECK(heap);
        fill(heap, n, 1);
        CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
        printf("heap %p\n", (void *)heap);
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                /* the child: verify the heap as of the fork while the parent
                 * rewrites its own, then rewrite ours and churn the allocator */
                wait_byte(to_child[0]);
                CHECK(verify(heap, n, 1));
                fill(heap, n, 3);
                for (int i = 0; i < 2000; i++) {
                        void *p = malloc((size_t)(i % 97) * 1000 + 1);
                        CHECK(p);
                        memset(p, 0x5a, (size_t)(i % 97) * 1000 + 1);
                        if (i % 3)
                                free(p);
                }
                void *big = malloc(16 * MIB);
                CHECK(big);
                fill(big, 16 * MIB, 9);
                CHECK(verify(big, 16 * MIB, 9));
                free(big);
                send_byte(to_parent[1]);
                wait_byte(to_child[0]);
                CHECK(verify(heap, n, 3));
                _exit(0);
        }
        fill(heap, n, 2);
        send_byte(to_child[1]);
        wait_byte(to_parent[0]);
        CHECK(verify(heap, n, 2));
        for (int i = 0; i < 2000; i++)
                free(malloc((size_t)(i % 89) * 1000 + 1));
        send_byte(to_child[1]);
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(verify(heap, n, 2));
        free(heap);
        printf("OK\n");
        return 0;
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc >= 2 && strcmp(argv[1], "basic") == 0)
                return mode_basic();
        if (argc >= 3 && strcmp(argv[1], "alloc") == 0)
                return mode_alloc(strtoul(argv[2], NULL, 10));
        if (argc >= 3 && strcmp(argv[1], "fork") == 0)
                return mode_fork(strtoul(argv[2], NULL, 10));
        fprintf(stderr, "usage: shim_prog basic | alloc MIB | fork MIB\n");
        return 64;
}
