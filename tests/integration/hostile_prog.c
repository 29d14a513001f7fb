/* hostile_prog.c: runs inside container A (test_hostile.c) and attacks
 * memd from there: every method against A and against B with valid and
 * forged ids and tokens, every socket it can find, and floods. It prints one
 * line per finding and "HOSTILE-DONE N" at the end, N the number of attacks
 * that got through (0 is the only passing result).
 *
 *   hostile_prog methods VICTIM_ID
 *   hostile_prog sockets PATH...   (host paths that must stay out of reach)
 *   hostile_prog flood SECONDS
 *   hostile_prog quota MIB [SOCKET]
 *       bypasses the shim: its own shim.hello and shim.register, then writes
 *       MIB MiB of its arena, prints "wrote MIB", waits for a line on stdin,
 *       verifies and prints "quota-ok" (memd's quota check ends it with
 *       SIGBUS first when the container's quota is used up)
 *
 * (run as uid 0 or another uid: the test sets the bundle's process.user)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define OWN_SOCKET "/run/xmem/memd.sock"

static int breaches;

static void breach(const char *fmt, const char *a, const char *b)
{
        printf("BREACH: ");
        printf(fmt, a, b);
        printf("\n");
        breaches++;
}

static int connect_path(const char *path, int type)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct timeval tv = {.tv_sec = 5};
        int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* Send MSG (with FD unless < 0); the reply in BUF. */
static ssize_t call(int s, const char *msg, int fd, char *buf, size_t len)
{
        char cbuf[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {.iov_base = (void *)msg, .iov_len = strlen(msg)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n;

        if (fd >= 0) {
                mh.msg_control = cbuf;
                mh.msg_controllen = sizeof(cbuf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        if (sendmsg(s, &mh, MSG_NOSIGNAL) < 0)
                return -errno;
        n = recv(s, buf, len - 1,
                 0); /* descriptors in a reply are closed by the kernel (no cmsg buffer) */
        buf[n > 0 ? n : 0] = 0;
        return n;
}

/* Call METHOD with PARAMS on a fresh connection and expect ERRNO_NAME. */
static void expect_refused(const char *method, const char *params, const char *errno_name)
{
        char msg[1024], buf[4096];
        int s = connect_path(OWN_SOCKET, SOCK_SEQPACKET);

        if (s < 0) {
                breach("%s: cannot reach own socket (%s)", method, strerror(-s));
                return;
        }
        snprintf(msg, sizeof(msg), "{\"xmem\":1,\"method\":\"%s\",\"params\":%s}", method, params);
        if (call(s, msg, -1, buf, sizeof(buf)) <= 0)
                breach("%s %s: no reply", method, params);
        else if (!strstr(buf, "\"ok\":false") || !strstr(buf, errno_name))
                breach("%s: not refused as expected: %s", method, buf);
        else
                printf("refused: %s %s -> %s\n", method, params, errno_name);
        close(s);
}

/* Its own arena: shim.hello's first descriptor must be sealed at its size. */
static void attack_arena(void)
{
        const char *hello = "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":2}}";
        char buf[4096], cbuf[CMSG_SPACE(4 * sizeof(int))];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        int s = connect_path(OWN_SOCKET, SOCK_SEQPACKET), fds[4] = {-1, -1, -1, -1};
        struct cmsghdr *c;
        struct stat st;

        if (s < 0 || send(s, hello, strlen(hello), MSG_NOSIGNAL) < 0 || recvmsg(s, &mh, 0) <= 0) {
                breach("shim.hello on its own socket failed%s%s", "", "");
                return;
        }
        c = CMSG_FIRSTHDR(&mh);
        if (c && c->cmsg_type == SCM_RIGHTS)
                memcpy(fds, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0));
        if (fds[0] < 0 || fstat(fds[0], &st) < 0)
                breach("shim.hello gave no arena%s%s", "", "");
        else if (ftruncate(fds[0], st.st_size * 2) == 0 || ftruncate(fds[0], 4096) == 0)
                breach("the arena memfd can be resized past its quota%s%s", "", "");
        else
                printf("refused: resizing the arena (%lld bytes)\n", (long long)st.st_size);
        for (int i = 0; i < 4; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        close(s);
}

static int attack_methods(const char *victim)
{
        char p[512], buf[4096];
        int s;

        /* the admin methods, on A's own and on B */
        const char *ids[] = {victim, "nonexistent", "..", "a"};
        for (size_t i = 0; i < sizeof(ids) / sizeof(*ids); i++) {
                /* a malformed id is refused before anything else */
                const char *e = strcmp(ids[i], "..") ? "EPERM" : "EINVAL";
                snprintf(p, sizeof(p), "{\"id\":\"%s\",\"force\":true}", ids[i]);
                expect_refused("detach", p, e);
                snprintf(p, sizeof(p),
                         "{\"id\":\"%s\",\"cgroup\":\"/sys/fs/cgroup/memory/x\","
                         "\"local_limit\":\"64M\",\"external\":\"1G\"}",
                         ids[i]);
                expect_refused("attach", p, e);
        }
        expect_refused("list", "{}", "EPERM");
        snprintf(p, sizeof(p), "{\"id\":\"%s\"}", victim);
        expect_refused("stats", p, "EPERM");
        expect_refused("stats", "{\"id\":\"nonexistent\"}", "EPERM");
        /* forged and malformed tokens, calls out of order, a fake uffd */
        expect_refused("shim.hello",
                       "{\"version\":2,\"fork_token\":\"0123456789abcdef0123456789abcdef\"}",
                       "ENOENT");
        expect_refused("shim.hello", "{\"version\":2,\"fork_token\":\"../../x\"}", "EINVAL");
        expect_refused("shim.fork", "{}", "ENOENT");
        expect_refused("shim.register", "{\"base\":4096,\"size\":4096}", "EINVAL");
        s = connect_path(OWN_SOCKET, SOCK_SEQPACKET);
        if (s >= 0) {
                int pipefd[2];
                if (pipe(pipefd) == 0) {
                        call(s, "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":2}}",
                             -1, buf, sizeof(buf));
                        call(s,
                             "{\"xmem\":1,\"method\":\"shim.register\",\"params\":{\"base\":4096,"
                             "\"size\":4096}}",
                             pipefd[0], buf, sizeof(buf));
                        if (!strstr(buf, "not a userfaultfd"))
                                breach("a pipe passed as a userfaultfd: %s%s", buf, "");
                        else
                                printf("refused: a pipe as userfaultfd\n");
                }
                close(s);
        }
        attack_arena();
        /* what it may do: its own stats */
        s = connect_path(OWN_SOCKET, SOCK_SEQPACKET);
        if (s < 0 ||
            call(s, "{\"xmem\":1,\"method\":\"stats\",\"params\":{}}", -1, buf, sizeof(buf)) <= 0 ||
            !strstr(buf, "\"ok\":true"))
                breach("its own stats were refused: %s%s", s < 0 ? "no socket" : buf, "");
        if (s >= 0)
                close(s);
        return breaches;
}

/* Every socket file in the tree under DIR (not /proc, /sys, /dev). */
static void walk(const char *dir, int depth)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        char path[4096];
        struct stat st;

        if (!d || depth > 12)
                return;
        while ((e = readdir(d))) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", strcmp(dir, "/") ? dir : "", e->d_name);
                if (!strcmp(path, "/proc") || !strcmp(path, "/sys") || lstat(path, &st) < 0)
                        continue;
                if (S_ISDIR(st.st_mode))
                        walk(path, depth + 1);
                else if (S_ISSOCK(st.st_mode) && strcmp(path, OWN_SOCKET) != 0) {
                        int s1 = connect_path(path, SOCK_STREAM),
                            s2 = connect_path(path, SOCK_SEQPACKET);
                        if (s1 >= 0 || s2 >= 0)
                                breach("a socket that is not its own answers: %s%s", path, "");
                        else
                                printf("found, unreachable: %s\n", path);
                        if (s1 >= 0)
                                close(s1);
                        if (s2 >= 0)
                                close(s2);
                }
        }
        closedir(d);
}

static int attack_sockets(char **paths, int n)
{
        char line[512];
        FILE *f;

        walk("/", 0);
        /* the unix sockets of this network namespace (abstract ones included) */
        f = fopen("/proc/net/unix", "r");
        while (f && fgets(line, sizeof(line), f)) {
                char *name = strrchr(line, ' ');
                if (!name || name[1] != '@')
                        continue;
                name[strcspn(name, "\n")] = 0;
                breach("an abstract socket is visible: %s%s", name + 1, "");
        }
        if (f)
                fclose(f);
        for (int i = 0; i < n; i++) {
                int s = connect_path(paths[i], SOCK_SEQPACKET);
                int t = connect_path(paths[i], SOCK_STREAM);
                if (s >= 0 || t >= 0)
                        breach("host socket %s reachable%s", paths[i], "");
                else
                        printf("unreachable: %s\n", paths[i]);
        }
        return breaches;
}

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Connections until refused, then messages of every kind for SECONDS (never
 * waiting to send: memd stops reading a container over its message rate). */
static int flood(double seconds)
{
        static char big[200 * 1024];
        static int conns[2048];
        char buf[4096];
        size_t n = 0, msgs = 0, refused_conns = 0, tokens = 0, token_refused = 0;
        double end = now() + seconds;

        for (; n < sizeof(conns) / sizeof(*conns); n++) {
                conns[n] = connect_path(OWN_SOCKET, SOCK_SEQPACKET);
                if (conns[n] < 0)
                        break;
                /* a refused connection gets one reply and is closed */
                struct timeval tv = {.tv_usec = 20000};
                setsockopt(conns[n], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                if (recv(conns[n], buf, sizeof(buf) - 1, MSG_PEEK) > 0) {
                        refused_conns++;
                        close(conns[n]);
                        break;
                }
                tv.tv_sec = 5, tv.tv_usec = 0;
                setsockopt(conns[n], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        printf("flood: %zu connections accepted, %zu refused\n", n, refused_conns);
        if (!refused_conns)
                breach("no bound on connections (%s%s)", "", "");
        memset(big, '{', sizeof(big));
        call(conns[0], "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":2}}", -1, buf,
             sizeof(buf));
        while (now() < end) {
                int s = conns[msgs % (n ? n : 1)];
                switch (msgs % 5) {
                case 0:
                        send(s, big, sizeof(big), MSG_NOSIGNAL | MSG_DONTWAIT);
                        break;
                case 1:
                        send(s, "not json", 8, MSG_NOSIGNAL | MSG_DONTWAIT);
                        break;
                case 2:
                        send(s, "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":2}}",
                             58, MSG_NOSIGNAL | MSG_DONTWAIT);
                        break;
                case 3:
                        /* fork tokens pile up until refused */
                        if (call(conns[0], "{\"xmem\":1,\"method\":\"shim.fork\",\"params\":{}}",
                                 -1, buf, sizeof(buf)) > 0) {
                                if (strstr(buf, "\"token\""))
                                        tokens++;
                                else if (strstr(buf, "EAGAIN"))
                                        token_refused++;
                        }
                        break;
                default:
                        send(s, "{\"xmem\":1,\"method\":\"list\"}", 27,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
                }
                /* read what came back so far without waiting */
                while (recv(s, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                        ;
                msgs++;
        }
        printf("flood: %zu messages, %zu fork tokens granted, %zu refused\n", msgs, tokens,
               token_refused);
        if (!token_refused)
                breach("no bound on fork tokens (%s%s)", "", "");
        for (size_t i = 0; i < n; i++)
                close(conns[i]);
        return breaches;
}

/* shim.hello's reply descriptors (memfd, /dev/userfaultfd, accounting page). */
static int hello_fds(int s, int fds[3])
{
        const char *hello = "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":2}}";
        char buf[4096], cbuf[CMSG_SPACE(3 * sizeof(int))];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        struct cmsghdr *c;

        if (send(s, hello, strlen(hello), MSG_NOSIGNAL) < 0 || recvmsg(s, &mh, 0) <= 0)
                return -1;
        c = CMSG_FIRSTHDR(&mh);
        if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(3 * sizeof(int)))
                return -1;
        memcpy(fds, CMSG_DATA(c), 3 * sizeof(int));
        return 0;
}

/* What a shim does at attach, without the shim's accounting. */
static uint64_t *raw_arena(const char *path, size_t *ret_size)
{
        struct uffdio_api api = {.api = UFFD_API,
                                 .features = UFFD_FEATURE_MISSING_SHMEM |
                                             UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
        struct uffdio_register reg = {.mode = UFFDIO_REGISTER_MODE_MISSING |
                                              UFFDIO_REGISTER_MODE_WP};
        char msg[256], buf[4096];
        int s = connect_path(path, SOCK_SEQPACKET), fds[3], uffd;
        struct stat st;
        void *p;

        if (s < 0 || hello_fds(s, fds) < 0 || fstat(fds[0], &st) < 0)
                return NULL;
        uffd = ioctl(fds[1], USERFAULTFD_IOC_NEW, O_CLOEXEC);
        p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
        if (uffd < 0 || p == MAP_FAILED || ioctl(uffd, UFFDIO_API, &api) < 0)
                return NULL;
        reg.range.start = (uint64_t)p;
        reg.range.len = (uint64_t)st.st_size;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
                return NULL;
        snprintf(msg, sizeof(msg),
                 "{\"xmem\":1,\"method\":\"shim.register\",\"params\":{\"base\":%llu,"
                 "\"size\":%llu}}",
                 (unsigned long long)(uintptr_t)p, (unsigned long long)st.st_size);
        if (call(s, msg, uffd, buf, sizeof(buf)) <= 0 || !strstr(buf, "\"ok\":true"))
                return NULL;
        *ret_size = (size_t)st.st_size; /* the connection stays open: memd serves while it lives */
        return p;
}

static int quota(size_t mib, const char *path)
{
        size_t size = 0, words = mib << 17;
        uint64_t *p = raw_arena(path, &size), bad = 0;
        char line[16];

        if (!p || mib << 20 > size) {
                printf("no arena of %zu MiB\n", mib);
                return 1;
        }
        for (size_t i = 0; i < words; i++)
                p[i] = i * 0x9e3779b97f4a7c15ULL + (uint64_t)getpid();
        printf("wrote %zu\n", mib);
        if (!fgets(line, sizeof(line), stdin))
                return 1;
        for (size_t i = 0; i < words; i++)
                bad += p[i] != i * 0x9e3779b97f4a7c15ULL + (uint64_t)getpid();
        printf(bad ? "quota-bad %llu\n" : "quota-ok\n", (unsigned long long)bad);
        return bad != 0;
}

int main(int argc, char **argv)
{
        int i = 1;

        setvbuf(stdout, NULL, _IOLBF, 0);
        printf("uid %u\n", (unsigned)getuid());
        if (argc > i + 1 && strcmp(argv[i], "methods") == 0)
                attack_methods(argv[i + 1]);
        else if (argc > i && strcmp(argv[i], "sockets") == 0)
                attack_sockets(argv + i + 1, argc - i - 1);
        else if (argc > i + 1 && strcmp(argv[i], "flood") == 0)
                flood(atof(argv[i + 1]));
        else if (argc > i + 1 && strcmp(argv[i], "quota") == 0)
                return quota((size_t)atoi(argv[i + 1]), argc > i + 2 ? argv[i + 2] : OWN_SOCKET);
        else {
                fprintf(stderr, "usage: hostile_prog methods ID | sockets PATH... | flood SECONDS "
                                "| quota MIB [SOCKET]\n");
                return 2;
        }
        printf("HOSTILE-DONE %d\n", breaches);
        return breaches ? 1 : 0;
}
