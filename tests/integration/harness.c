/* harness.c: process control for integration tests. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "transport/transport.h"

void harness_die_with(pid_t parent)
{
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
                _exit(125);
}

void harness_init(struct harness_proc *p)
{
        memset(p, 0, sizeof(*p));
        p->pid = -1;
        snprintf(p->dir, sizeof(p->dir), "/tmp/xmem-test.XXXXXX");
        cr_assert_not_null(mkdtemp(p->dir), "mkdtemp: %s", strerror(errno));
}

/* A free loopback port, never one this process handed out lately: a port
 * planned (harness_plan) but not yet bound is free to the kernel too, and
 * it would hand it out again. */
static uint16_t free_port(void)
{
        static uint16_t given[16];
        static unsigned n_given;
        uint16_t port;
        bool again;

        do {
                struct sockaddr_in sa = { .sin_family = AF_INET,
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                socklen_t len = sizeof(sa);
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

                cr_assert(fd >= 0);
                cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
                cr_assert(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
                close(fd);
                port = ntohs(sa.sin_port);
                again = false;
                for (unsigned i = 0; i < n_given && i < 16; i++)
                        again |= given[i] == port;
        } while (again);
        given[n_given++ % 16] = port;
        return port;
}

int harness_connect_tcp(const struct harness_proc *p)
{
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(p->port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int harness_connect_unix(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                if (fd >= 0)
                        close(fd);
                return r;
        }
        return fd;
}

void harness_good_client(const char *uri, const struct xmem_transport_opts *opts)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = {};
        struct xmem_region_ref r;
        uint8_t in[8192], out[8192];

        cr_assert_eq(xmem_transport_open(uri, opts, &t, &err), 0, "%s: %s", uri,
                     xmem_error_str(&err));
        harness_pattern(in, sizeof(in), 3, 0);
        cr_assert_eq(xmem_region_alloc(t, 1 << 20, &r, NULL), 0);
        cr_assert_eq(xmem_write(t, &r, 4096, in, sizeof(in)), 0);
        cr_assert_eq(xmem_read(t, &r, 4096, out, sizeof(out)), 0);
        cr_assert_arr_eq(in, out, sizeof(in));
        cr_assert_eq(xmem_region_free(t, &r), 0);
        xmem_transport_close(t);
}

/* Does the log file at PATH contain NEEDLE after byte FROM? */
static bool log_says(const char *path, off_t from, const char *needle)
{
        char buf[65536];
        ssize_t n;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return false;
        n = pread(fd, buf, sizeof(buf) - 1, from);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = 0;
        return strstr(buf, needle) != NULL;
}

static bool unix_ready(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
                close(fd);
        return ok;
}

void harness_plan(struct harness_proc *p)
{
        if (!p->port)
                p->port = free_port();
        snprintf(p->tcp_uri, sizeof(p->tcp_uri), "tcp://127.0.0.1:%u", p->port);
        snprintf(p->unix_uri, sizeof(p->unix_uri), "unix://%s/appliance.sock", p->dir);
        snprintf(p->shm_uri, sizeof(p->shm_uri), "shm://%s/appliance.sock", p->dir);
}

void harness_appliance_start(struct harness_proc *p, const char *const *extra_args)
{
        struct stat st;
        off_t log_start = 0;
        const char *bin = getenv("XMEM_APPLIANCE");
        char listen_tcp[64], listen_unix[160], sock[128];
        const char *argv[64];
        int argc = 0;
        pid_t parent;

        cr_assert_not_null(bin, "XMEM_APPLIANCE is not set (run through meson test)");
        harness_plan(p);
        snprintf(sock, sizeof(sock), "%s/appliance.sock", p->dir);
        snprintf(listen_tcp, sizeof(listen_tcp), "tcp://127.0.0.1:%u", p->port);
        snprintf(listen_unix, sizeof(listen_unix), "unix://%s", sock);
        snprintf(p->log_path, sizeof(p->log_path), "%s/appliance.log", p->dir);

        argv[argc++] = bin;
        argv[argc++] = "--listen";
        argv[argc++] = listen_tcp;
        argv[argc++] = "--listen";
        argv[argc++] = listen_unix;
        for (; extra_args && *extra_args && argc < 62; extra_args++)
                argv[argc++] = *extra_args;
        argv[argc] = NULL;

        if (stat(p->log_path, &st) == 0)
                log_start = st.st_size; /* a restart appends to the same log */
        parent = getpid();
        p->pid = fork();
        cr_assert(p->pid >= 0);
        if (p->pid == 0) {
                int fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
                harness_die_with(parent);
                if (fd >= 0) {
                        dup2(fd, 2);
                        close(fd);
                }
                execv(bin, (char *const *)argv);
                _exit(127);
        }
        harness_track(p->pid, p->dir);
        for (int i = 0; i < 500; i++) { /* up to 10 s */
                int status, fd;
                if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
                        harness_untrack(p->pid);
                        p->pid = -1;
                        cr_assert_fail("appliance exited during start-up (status %d), see %s",
                                       status, p->log_path);
                }
                fd = harness_connect_tcp(p);
                if (fd >= 0) {
                        close(fd);
                        /* listening comes before dropping privileges; "ready:" after */
                        if (unix_ready(sock) && log_says(p->log_path, log_start, " ready: "))
                                return;
                }
                usleep(20000);
        }
        harness_kill(p);
        cr_assert_fail("appliance did not start listening within 10 s, see %s", p->log_path);
}

void harness_appliance_setup(struct harness_proc *p, const char *pool_size)
{
        const char *const args[] = { "--pool-size", pool_size, NULL };

        harness_init(p);
        harness_appliance_start(p, args);
}

int harness_stop(struct harness_proc *p)
{
        int status = -1;

        if (p->pid <= 0)
                return -1;
        kill(p->pid, SIGTERM);
        for (int i = 0; i < 1000; i++) { /* up to 10 s, then SIGKILL */
                if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
                        harness_untrack(p->pid);
                        p->pid = -1;
                        return status;
                }
                usleep(10000);
        }
        harness_kill(p);
        return -1;
}

void harness_kill(struct harness_proc *p)
{
        if (p->pid <= 0)
                return;
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        harness_untrack(p->pid);
        p->pid = -1;
}

void harness_cleanup(struct harness_proc *p)
{
        char cmd[128];

        harness_stop(p);
        if (p->dir[0]) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "harness: could not remove %s\n", p->dir);
                p->dir[0] = 0; /* idempotent */
        }
}

bool harness_is_root(void)
{
        return geteuid() == 0;
}

void harness_require_uffd(void)
{
        if (!harness_is_root())
                cr_skip_test("needs root (/dev/userfaultfd, cgroups)");
        if (access("/dev/userfaultfd", F_OK) < 0)
                cr_skip_test("/dev/userfaultfd is missing");
}

/* Wait up to 10 s for READY=1 on NFD (closed when it came). */
static void memd_wait_ready(struct harness_memd *m, int nfd)
{
        char buf[256];

        for (int i = 0; i < 100; i++) {
                struct pollfd p = { .fd = nfd, .events = POLLIN };
                if (poll(&p, 1, 100) > 0) {
                        ssize_t n = recv(nfd, buf, sizeof(buf) - 1, 0);
                        buf[n > 0 ? n : 0] = 0;
                        if (strstr(buf, "READY=1")) {
                                close(nfd);
                                return;
                        }
                }
                cr_assert(waitpid(m->pid, NULL, WNOHANG) == 0, "memd exited, see %s", m->log);
        }
        cr_assert_fail("no READY=1 from memd within 10 s, see %s", m->log);
}

const char *harness_memd_ctr_socket(const struct harness_memd *m, const char *id, char *buf,
                                    size_t len)
{
        snprintf(buf, len, "%s/containers/%s/memd.sock", m->dir, id);
        return buf;
}

void harness_memd_start(struct harness_memd *m, const char *dir_template,
                        const char *const *args)
{
        const char *bin = getenv("XMEM_MEMD");
        char notify[128];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *argv[32] = { bin, "--socket", m->sock, "--log-level", "debug" };
        int argc = 5, nfd;
        pid_t parent;

        cr_assert_not_null(bin, "XMEM_MEMD is not set (run through meson test)");
        snprintf(m->dir, sizeof(m->dir), "%s", dir_template);
        cr_assert_not_null(mkdtemp(m->dir));
        chmod(m->dir, 0755); /* a non-root caller must reach the socket */
        snprintf(m->sock, sizeof(m->sock), "%s/memd.sock", m->dir);
        snprintf(m->log, sizeof(m->log), "%s/memd.log", m->dir);
        snprintf(notify, sizeof(notify), "%s/notify", m->dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", notify);
        nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert(bind(nfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        for (; args && *args && argc < 31; args++)
                argv[argc++] = *args;
        parent = getpid();
        m->pid = fork();
        cr_assert(m->pid >= 0);
        if (m->pid == 0) {
                int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                harness_die_with(parent);
                dup2(fd, 2);
                setenv("NOTIFY_SOCKET", notify, 1);
                execv(bin, (char *const *)argv);
                _exit(127);
        }
        harness_track(m->pid, m->dir);
        memd_wait_ready(m, nfd);
}

int harness_memd_stop(struct harness_memd *m)
{
        int status = -1;

        if (m->pid > 0) {
                pid_t got = 0;

                kill(m->pid, SIGTERM);
                for (int i = 0; i < 3000 && (got = waitpid(m->pid, &status, WNOHANG)) == 0; i++)
                        usleep(10000);
                if (got == 0) { /* hung for 30 s */
                        fprintf(stderr, "harness: memd ignored SIGTERM for 30 s, killing it\n");
                        kill(m->pid, SIGKILL);
                        waitpid(m->pid, &status, 0);
                }
                harness_untrack(m->pid);
                m->pid = -1;
        }
        if (m->dir[0] && !getenv("XMEM_KEEP_TMP")) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "harness: could not remove %s\n", m->dir);
                m->dir[0] = 0;
        }
        return status;
}

int harness_run_output(char *const argv[], const char *socket, const char *preload, char *out,
                       size_t out_len)
{
        int pfd[2], st;
        size_t got = 0;
        ssize_t n;

        cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(pfd[1], 1);
                setenv("XMEM_SOCKET", socket, 1);
                if (preload)
                        setenv("LD_PRELOAD", preload, 1);
                else
                        unsetenv("LD_PRELOAD");
                execvp(argv[0], argv);
                _exit(127);
        }
        close(pfd[1]);
        while (got + 1 < out_len && (n = read(pfd[0], out + got, out_len - 1 - got)) > 0)
                got += (size_t)n;
        out[got] = '\0';
        close(pfd[0]);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        return st;
}

void harness_pattern(void *buf, size_t len, uint64_t seed, uint64_t offset)
{
        uint8_t *b = buf;

        /* each 8-byte word depends on seed and its absolute offset: misplaced
         * or stale data never matches by accident */
        for (size_t i = 0; i < len; i++) {
                uint64_t pos = offset + i;
                uint64_t x = (pos >> 3) * 0x9e3779b97f4a7c15ULL ^ seed;
                x ^= x >> 29;
                x *= 0xbf58476d1ce4e5b9ULL;
                x ^= x >> 32;
                b[i] = (uint8_t)(x >> (8 * (pos & 7)));
        }
}

void harness_child_spawn(struct harness_child *c, const char *const *argv, const char *const *envp,
                         const struct harness_cg *cg, bool stderr_too)
{
        int to[2], from[2];
        pid_t parent;

        cr_assert(pipe2(to, O_CLOEXEC) == 0 && pipe2(from, O_CLOEXEC) == 0);
        parent = getpid();
        c->pid = fork();
        cr_assert(c->pid >= 0);
        if (c->pid == 0) {
                harness_die_with(parent);
                if (cg && harness_cg_enter(cg) < 0)
                        _exit(126);
                dup2(to[0], 0);
                dup2(from[1], 1);
                if (stderr_too)
                        dup2(from[1], 2);
                for (; envp && *envp; envp++)
                        putenv((char *)*envp);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(to[0]);
        close(from[1]);
        c->in = to[1];
        c->out = from[0];
        c->status = -1;
}

int harness_child_line(struct harness_child *c, char *buf, size_t len, int timeout_ms)
{
        struct timespec t0, t;
        size_t n = 0;
        int r = 0;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        buf[0] = 0;
        while (c->out >= 0 && n < len - 1) {
                struct pollfd p = { .fd = c->out, .events = POLLIN };
                long left;
                char ch;

                clock_gettime(CLOCK_MONOTONIC, &t);
                left = timeout_ms -
                       ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
                if (left <= 0) {
                        r = -ETIME;
                        break;
                }
                if (poll(&p, 1, (int)left) <= 0)
                        continue; /* EINTR or the time ran out: checked above */
                if (read(c->out, &ch, 1) != 1) {
                        r = n ? 1 : 0; /* EOF */
                        break;
                }
                if (ch == '\n') {
                        r = 1;
                        break;
                }
                buf[n++] = ch;
        }
        if (n == len - 1)
                r = 1;
        buf[n] = 0;
        return r;
}

void harness_child_say(struct harness_child *c, const char *line)
{
        signal(SIGPIPE, SIG_IGN); /* a child that died before it read */
        if (c->in >= 0) {
                (void)!write(c->in, line, strlen(line));
                (void)!write(c->in, "\n", 1);
        }
}

bool harness_child_alive(struct harness_child *c)
{
        if (c->pid <= 0)
                return false;
        if (waitpid(c->pid, &c->status, WNOHANG) == c->pid) {
                c->pid = -1;
                return false;
        }
        return true;
}

int harness_child_wait(struct harness_child *c, int timeout_ms)
{
        for (int waited = 0; harness_child_alive(c); waited += 10) {
                if (waited >= timeout_ms)
                        return -ETIME;
                usleep(10000);
        }
        return c->status;
}

void harness_child_kill(struct harness_child *c)
{
        if (c->pid > 0) {
                kill(c->pid, SIGKILL);
                waitpid(c->pid, &c->status, 0);
        }
        c->pid = -1;
        if (c->in > 0)
                close(c->in);
        if (c->out > 0)
                close(c->out);
        c->in = c->out = -1;
}

bool harness_ctl(const struct harness_memd *m, char *out, size_t len, const char *const *args)
{
        const char *argv[24] = { getenv("XMEM_CTL"), "--socket", m->sock };
        struct harness_child c;
        size_t got = 0;
        int i, st;

        cr_assert_not_null(argv[0], "XMEM_CTL is not set (run through meson test)");
        for (i = 0; args[i] && i < 20; i++)
                argv[3 + i] = args[i];
        harness_child_spawn(&c, argv, NULL, NULL, true);
        close(c.in);
        c.in = -1;
        out[0] = 0;
        /* its output is one JSON line or a few lines of text; 20 s in all */
        for (int tries = 0; tries < 20 && got + 1 < len; tries++) {
                int r = harness_child_line(&c, out + got, len - got, 1000);
                got += strlen(out + got);
                if (r == 0)
                        break;
                if (r == 1 && got + 1 < len)
                        out[got++] = '\n', out[got] = 0;
        }
        st = harness_child_wait(&c, 5000);
        harness_child_kill(&c);
        return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

uint64_t harness_json_u64(const char *json, const char *field)
{
        char key[64];
        const char *p;

        snprintf(key, sizeof(key), "\"%s\":", field);
        p = strstr(json, key);
        cr_assert_not_null(p, "no %s in %s", field, json);
        p += strlen(key);
        while (*p == ' ')
                p++;
        return strtoull(p, NULL, 10);
}

