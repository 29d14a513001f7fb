/* harness.c: process control for integration tests. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
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
uint16_t harness_free_port(void)
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
                p->port = harness_free_port();
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

/* Has every thread of PID stopped (or exited)? */
static bool all_stopped(pid_t pid)
{
        char path[64], buf[512], *paren;
        struct dirent *d;
        bool ok = true;
        DIR *dir;

        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        dir = opendir(path);
        if (!dir)
                return false;
        while (ok && (d = readdir(dir))) {
                FILE *f;
                if (d->d_name[0] == '.')
                        continue;
                snprintf(buf, sizeof(buf), "/proc/%d/task/%s/stat", (int)pid, d->d_name);
                f = fopen(buf, "r");
                if (!f)
                        continue; /* the thread is gone */
                ok = fgets(buf, sizeof(buf), f) && (paren = strrchr(buf, ')')) && paren[1] == ' ' &&
                     paren[2] && strchr("TZX", paren[2]);
                fclose(f);
        }
        closedir(dir);
        return ok;
}

void harness_sigstop(struct harness_proc *p)
{
        cr_assert(p->pid > 0 && kill(p->pid, SIGSTOP) == 0, "SIGSTOP %d: %s", (int)p->pid,
                  strerror(errno));
        /* the thread that takes the signal stops the others only once it
         * runs: until then they answer requests */
        for (int i = 0; i < 10000; i++) {
                if (all_stopped(p->pid))
                        return;
                usleep(1000);
        }
        cr_assert_fail("pid %d did not stop within 10 s of SIGSTOP", (int)p->pid);
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

long harness_now_ms(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

const char *harness_file_tail(const char *path, char *buf, size_t len)
{
        FILE *f = fopen(path, "r");

        buf[0] = 0;
        if (!f)
                return buf;
        if (fseek(f, -(long)len + 1, SEEK_END) != 0)
                rewind(f);
        buf[fread(buf, 1, len - 1, f)] = 0;
        fclose(f);
        return buf;
}

int harness_child_follow(struct harness_child *c, const char *want, int timeout_ms, char *last,
                         size_t len)
{
        long deadline = harness_now_ms() + timeout_ms;
        char line[256];
        int n = 0;

        last[0] = 0;
        while (harness_child_line(c, line, sizeof(line), (int)(deadline - harness_now_ms())) == 1) {
                n++;
                snprintf(last, len, "%s", line);
                if (strncmp(line, want, strlen(want)) == 0)
                        return n;
        }
        return -1;
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


int64_t harness_appliance_regions(const char *uri)
{
        struct xmem_transport *t = NULL;
        char *json = NULL;
        int64_t n = -1;

        if (xmem_transport_open(uri, NULL, &t, NULL) < 0)
                return -1;
        if (xmem_stats(t, NULL, &json) == 0)
                n = (int64_t)harness_json_u64(json, "regions");
        free(json);
        xmem_transport_close(t);
        return n;
}
