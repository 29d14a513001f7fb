/* test_shim_attached.c: libxmem-shim.so attached for real, in a real child
 * process, to a small memd stand-in served by this test (the socket API of
 * docs/api.md: shim.hello / register / fork / discard, a real memfd and a
 * real userfaultfd whose faults a thread here fills with zero pages). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdio.h"
#include "harness.h"

#define MIB (1ULL << 20)
#define ARENA_SIZE (512 * MIB)
#define MAX_ARENAS 8

struct fake_arena {
        int memfd, uffd;
        uint64_t base;
        pthread_t fault_thread;
        bool serving;
};

static struct {
        char dir[64], path[108];
        int listen_fd;
        pthread_t accept_thread;
        atomic_bool stop;
        bool attach;        /* answer attached:true */
        uint64_t local_alloc_limit;
        const char *policy;
        pthread_mutex_t lock;
        struct fake_arena arenas[MAX_ARENAS];
        int n_arenas;
        int clone_memfd[MAX_ARENAS]; /* by token number */
        int n_tokens;
        atomic_ulong faults;
} fake;

static void *fault_main(void *arg)
{
        struct fake_arena *a = arg;
        static char zeros[4096];

        while (!atomic_load(&fake.stop)) {
                struct pollfd p = { .fd = a->uffd, .events = POLLIN };
                struct uffd_msg msg;
                if (poll(&p, 1, 50) <= 0)
                        continue;
                if (p.revents & (POLLERR | POLLHUP))
                        break; /* the process is gone */
                ssize_t n = read(a->uffd, &msg, sizeof(msg));
                if (n < 0 && errno == EAGAIN)
                        continue;
                if (n != sizeof(msg))
                        break;
                if (msg.event != UFFD_EVENT_PAGEFAULT)
                        continue;
                uint64_t page = msg.arg.pagefault.address & ~4095ULL;
                atomic_fetch_add(&fake.faults, 1);
                if (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
                        struct uffdio_writeprotect wp = { .range = { page, 4096 }, .mode = 0 };
                        ioctl(a->uffd, UFFDIO_WRITEPROTECT, &wp);
                        continue;
                }
                struct uffdio_copy c = { .dst = page, .src = (uint64_t)zeros, .len = 4096 };
                if (ioctl(a->uffd, UFFDIO_COPY, &c) < 0 && errno == EEXIST) {
                        struct uffdio_range r = { page, 4096 };
                        ioctl(a->uffd, UFFDIO_WAKE, &r);
                }
        }
        return NULL;
}

static void reply(int sock, const char *result, const int *fds, size_t n_fds)
{
        char buf[1024];
        snprintf(buf, sizeof(buf), "{\"xmem\":1,\"ok\":true,\"result\":%s}", result);
        cr_assert_eq(send_with_fds(sock, buf, strlen(buf), fds, n_fds), 0);
}

/* A copy of MEMFD's data (holes stay holes): the fork-time view. */
static int clone_memfd(int memfd)
{
        int c = memfd_create("fake-clone", MFD_CLOEXEC);
        static char buf[MIB];
        off_t off = 0;

        cr_assert(c >= 0 && ftruncate(c, ARENA_SIZE) == 0);
        for (;;) {
                off_t d = lseek(memfd, off, SEEK_DATA), h;
                if (d < 0)
                        break;
                h = lseek(memfd, d, SEEK_HOLE);
                for (off = d; off < h;) {
                        ssize_t n = pread(memfd, buf, (size_t)(h - off < (off_t)MIB ? h - off : (off_t)MIB), off);
                        cr_assert(n > 0 && pwrite(c, buf, (size_t)n, off) == n);
                        off += n;
                }
        }
        return c;
}

static void *conn_main(void *arg)
{
        int sock = (int)(intptr_t)arg, my_arena = -1;
        char buf[65536];

        for (;;) {
                int fds[2];
                size_t n_fds = 2;
                ssize_t n = recv_with_fds(sock, buf, sizeof(buf) - 1, fds, &n_fds);
                if (n <= 0)
                        break;
                buf[n] = '\0';
                json_object *req = json_tokener_parse(buf), *params, *m, *tok;
                cr_assert(req && json_object_object_get_ex(req, "method", &m) &&
                          json_object_object_get_ex(req, "params", &params));
                const char *method = json_object_get_string(m);
                pthread_mutex_lock(&fake.lock);
                if (strcmp(method, "shim.hello") == 0) {
                        if (!fake.attach) {
                                reply(sock, "{\"attached\":false}", NULL, 0);
                        } else {
                                int memfd;
                                if (json_object_object_get_ex(params, "fork_token", &tok)) {
                                        int t = atoi(json_object_get_string(tok) + 1);
                                        cr_assert(t >= 0 && t < fake.n_tokens);
                                        memfd = fake.clone_memfd[t];
                                } else {
                                        memfd = memfd_create("fake-arena", MFD_CLOEXEC);
                                        cr_assert(memfd >= 0 && ftruncate(memfd, ARENA_SIZE) == 0);
                                }
                                int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
                                cr_assert(dev >= 0);
                                my_arena = fake.n_arenas++;
                                cr_assert(my_arena < MAX_ARENAS);
                                fake.arenas[my_arena] = (struct fake_arena){ .memfd = memfd, .uffd = -1 };
                                char res[512];
                                snprintf(res, sizeof(res),
                                         "{\"attached\":true,\"container\":\"t\",\"arena_size\":%llu,"
                                         "\"policy\":\"%s\",\"local_alloc_limit\":%llu,\"ratio\":0,"
                                         "\"chunk_size\":65536}",
                                         (unsigned long long)ARENA_SIZE, fake.policy,
                                         (unsigned long long)fake.local_alloc_limit);
                                int out[2] = { memfd, dev };
                                reply(sock, res, out, 2);
                                close(dev);
                        }
                } else if (strcmp(method, "shim.register") == 0) {
                        cr_assert_eq(n_fds, 1);
                        cr_assert(my_arena >= 0);
                        struct fake_arena *a = &fake.arenas[my_arena];
                        json_object *b;
                        cr_assert(json_object_object_get_ex(params, "base", &b));
                        a->base = (uint64_t)json_object_get_int64(b);
                        a->uffd = fds[0];
                        fcntl(a->uffd, F_SETFL, O_NONBLOCK);
                        a->serving = true;
                        pthread_create(&a->fault_thread, NULL, fault_main, a);
                        reply(sock, "{}", NULL, 0);
                } else if (strcmp(method, "shim.fork") == 0) {
                        cr_assert(my_arena >= 0 && fake.n_tokens < MAX_ARENAS);
                        int t = fake.n_tokens++;
                        fake.clone_memfd[t] = clone_memfd(fake.arenas[my_arena].memfd);
                        char res[64];
                        snprintf(res, sizeof(res), "{\"token\":\"t%d\"}", t);
                        reply(sock, res, NULL, 0);
                } else if (strcmp(method, "shim.discard") == 0) {
                        /* pages the allocator gave back: within the caller's arena */
                        json_object *o, *l;
                        cr_assert(my_arena >= 0);
                        cr_assert(json_object_object_get_ex(params, "offset", &o) &&
                                  json_object_object_get_ex(params, "length", &l));
                        uint64_t off = (uint64_t)json_object_get_int64(o),
                                 len = (uint64_t)json_object_get_int64(l);
                        cr_assert(off % 4096 == 0 && len % 4096 == 0 && len > 0 &&
                                      off + len <= ARENA_SIZE,
                                  "shim.discard of [%llu, +%llu)", (unsigned long long)off,
                                  (unsigned long long)len);
                        reply(sock, "{\"uncharged\":0}", NULL, 0);
                } else {
                        cr_assert_fail("unexpected method %s", method);
                }
                pthread_mutex_unlock(&fake.lock);
                json_object_put(req);
        }
        close(sock);
        return NULL;
}

static void *accept_main(void *arg)
{
        while (!atomic_load(&fake.stop)) {
                struct pollfd p = { .fd = fake.listen_fd, .events = POLLIN };
                if (poll(&p, 1, 50) <= 0)
                        continue;
                int s = accept4(fake.listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (s < 0)
                        continue;
                pthread_t t;
                pthread_create(&t, NULL, conn_main, (void *)(intptr_t)s);
                pthread_detach(t);
        }
        return NULL;
}

static void fake_start(bool attach, const char *policy, uint64_t local_alloc_limit)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (access("/dev/userfaultfd", R_OK | W_OK) != 0)
                cr_skip_test("/dev/userfaultfd not usable here");
        if (!getenv("XMEM_SHIM"))
                cr_skip_test("the shim was not built (no libjemalloc_pic.a)");
        memset(&fake, 0, sizeof(fake));
        pthread_mutex_init(&fake.lock, NULL);
        fake.attach = attach;
        fake.policy = policy;
        fake.local_alloc_limit = local_alloc_limit;
        strcpy(fake.dir, "/tmp/xmem-shim-test-XXXXXX");
        cr_assert(mkdtemp(fake.dir));
        snprintf(fake.path, sizeof(fake.path), "%s/memd.sock", fake.dir);
        strcpy(sa.sun_path, fake.path);
        fake.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        cr_assert(fake.listen_fd >= 0);
        cr_assert_eq(bind(fake.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(listen(fake.listen_fd, 16), 0);
        pthread_create(&fake.accept_thread, NULL, accept_main, NULL);
}

static void fake_stop(void)
{
        atomic_store(&fake.stop, true);
        pthread_join(fake.accept_thread, NULL);
        for (int i = 0; i < fake.n_arenas; i++)
                if (fake.arenas[i].serving)
                        pthread_join(fake.arenas[i].fault_thread, NULL);
        close(fake.listen_fd);
        unlink(fake.path);
        rmdir(fake.dir);
}

/* Run shim_prog ARGS under the shim against the fake; stdout into OUT. */
static int run_prog(char *const args[], char *out, size_t out_len)
{
        char *argv[8] = { getenv("XMEM_SHIM_PROG") };

        for (int i = 0; args[i] && i < 6; i++)
                argv[i + 1] = args[i];
        return harness_run_output(argv, fake.path, getenv("XMEM_SHIM"), out, out_len);
}

static bool in_arena(uint64_t a, int arena)
{
        return a >= fake.arenas[arena].base && a < fake.arenas[arena].base + ARENA_SIZE;
}

static char out[1 << 20];

Test(shim_attached, beyond_local_limit_goes_external, .fini = fake_stop)
{
        fake_start(true, "local-first", 16 * MIB);
        char *args[] = { "alloc", "128", NULL };
        int st = run_prog(args, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        cr_assert(strstr(out, "\nOK\n"));
        cr_assert_eq(fake.n_arenas, 1);
        cr_assert_neq(fake.arenas[0].base, 0, "the shim registered its arena");

        unsigned local = 0, external = 0;
        bool mmap_external = false;
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                unsigned long long a;
                if (sscanf(line, "malloc %llx", &a) == 1)
                        in_arena(a, 0) ? external++ : local++;
                if (sscanf(line, "mmap %llx", &a) == 1)
                        mmap_external = in_arena(a, 0);
        }
        cr_expect(local >= 4, "the first MiBs stay local (%u)", local);
        cr_expect(external >= 64, "beyond 16 MiB they go external (%u of 128)", external);
        cr_expect(mmap_external, "a 128 MiB mmap past the limit is external");
        cr_expect(atomic_load(&fake.faults) >= 128 * MIB / 4096, "faults: %lu",
                  atomic_load(&fake.faults));
}

Test(shim_attached, external_first, .fini = fake_stop)
{
        fake_start(true, "external-first", 1024 * MIB);
        char *args[] = { "alloc", "16", NULL };
        int st = run_prog(args, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        unsigned external = 0;
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                unsigned long long a;
                if (sscanf(line, "malloc %llx", &a) == 1 && in_arena(a, 0))
                        external++;
        }
        /* only what jemalloc had mapped before the handshake may stay local */
        cr_expect(external >= 12, "large mallocs are external from the start (%u of 16)",
                  external);
}

Test(shim_attached, fork_keeps_two_views, .fini = fake_stop)
{
        fake_start(true, "external-first", 1024 * MIB);
        char *args[] = { "fork", "256", NULL }; /* the issue asks for a 256 MiB heap */
        int st = run_prog(args, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        cr_assert(strstr(out, "\nOK\n"));
        unsigned long long heap;
        cr_assert(sscanf(out, "heap %llx", &heap) == 1);
        cr_expect(in_arena(heap, 0), "the heap region is in the arena");
        cr_assert_eq(fake.n_tokens, 1, "one shim.fork");
        cr_assert_eq(fake.n_arenas, 2, "the child said hello with the token");
        cr_expect_eq(fake.arenas[1].base, fake.arenas[0].base, "the child maps the same base");
}

Test(shim_attached, basic_program_attached, .fini = fake_stop)
{
        fake_start(true, "local-first", 4 * MIB);
        char *args[] = { "basic", NULL };
        int st = run_prog(args, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        cr_expect_str_eq(out, "OK\n");
        cr_expect_eq(fake.n_tokens, 1, "basic forks once");
}

Test(shim_attached, not_attached_is_passthrough, .fini = fake_stop)
{
        fake_start(false, "local-first", 0);
        char *args[] = { "basic", NULL };
        int st = run_prog(args, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        cr_expect_str_eq(out, "OK\n");
        cr_expect_eq(fake.n_arenas, 0);
}
