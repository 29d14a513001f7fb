/* embedded.c: start, find again and stop the embedded xmem-appliance. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "embedded.h"
#include "log.h"
#include "macro.h"

#define EMBEDDED_STOP_MS 10000 /* SIGTERM, then SIGKILL: it compacts its journal */

static bool executable(const char *p)
{
        return access(p, X_OK) == 0;
}

char *embedded_find_binary(void)
{
        const char *env = getenv("XMEM_APPLIANCE_BIN");
        char self[PATH_MAX], cand[PATH_MAX + 64];
        ssize_t n;

        if (env && *env)
                return strdup(env);
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = 0;
                char *dir = dirname(self);
                snprintf(cand, sizeof(cand), "%s/xmem-appliance", dir);
                if (executable(cand))
                        return strdup(cand);
                snprintf(cand, sizeof(cand), "%s/../appliance/xmem-appliance", dir);
                if (executable(cand))
                        return strdup(cand);
        }
        return strdup("xmem-appliance"); /* execvp searches PATH */
}

static bool socket_ready(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        return fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

static int pidfd_of(pid_t pid)
{
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);

        if (fd >= 0)
                (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Is PID an appliance listening on SOCKET (its command line says so)? Guards
 * against a pid file whose process is gone and whose pid was reused. */
static bool is_our_appliance(pid_t pid, const char *socket)
{
        char path[64], cmd[4096], want[PATH_MAX + 16];
        _cleanup_close_ int fd = -1;
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        n = read(fd, cmd, sizeof(cmd) - 1);
        if (n <= 0)
                return false;
        cmd[n] = 0;
        snprintf(want, sizeof(want), "unix://%s", socket);
        for (ssize_t at = 0; at < n; at += (ssize_t)strlen(cmd + at) + 1)
                if (strcmp(cmd + at, want) == 0)
                        return true;
        return false;
}

/* The pid in PIDFILE if that process is our appliance on SOCKET, else 0. */
static pid_t running_pid(const char *pidfile, const char *socket)
{
        _cleanup_close_ int fd = open(pidfile, O_RDONLY | O_CLOEXEC);
        char buf[32];
        ssize_t n;
        long pid;

        if (fd < 0)
                return 0;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        pid = strtol(buf, NULL, 10);
        if (pid <= 1 || pid > INT_MAX || !is_our_appliance((pid_t)pid, socket))
                return 0;
        return (pid_t)pid;
}

static int write_pidfile(const char *pidfile, pid_t pid)
{
        char tmp[PATH_MAX], buf[32];
        _cleanup_close_ int fd = -1;
        int len = snprintf(buf, sizeof(buf), "%d\n", (int)pid);

        snprintf(tmp, sizeof(tmp), "%s.tmp", pidfile);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, buf, (size_t)len) != len || rename(tmp, pidfile) < 0)
                return -errno;
        return 0;
}

static void child_exec(const struct embedded *e, uint64_t pool_size, uint32_t chunk_size)
{
        char listen[200], pool[32], chunk[32];
        /* --no-config: appliance.conf is the xmem-appliance service's */
        const char *argv[] = {e->binary,   "--no-config",  "--listen",    listen,  "--pool-size",
                              pool,        "--chunk-size", chunk,         "--pool-file", e->pool,
                              NULL};
        sigset_t all;

        /* its own session: neither memd's exit nor a signal to memd's
         * process group (a terminal's ^C) reaches it */
        (void)setsid();
        umask(077); /* the socket is memd's alone */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        snprintf(listen, sizeof(listen), "unix://%s", e->socket);
        snprintf(pool, sizeof(pool), "%llu", (unsigned long long)pool_size);
        snprintf(chunk, sizeof(chunk), "%u", chunk_size);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        execvp(e->binary, (char *const *)argv);
        fprintf(stderr, "memd: embedded appliance: exec %s: %s\n", e->binary, strerror(errno));
        _exit(127);
}

static int wait_ready(struct embedded *e, struct xmem_error *err)
{
        for (int i = 0; i < 500; i++) { /* 10 s */
                struct pollfd pfd = {.fd = e->pidfd, .events = POLLIN};

                if (poll(&pfd, 1, 20) > 0) {
                        int status = 0;
                        (void)waitpid(e->pid, &status, 0);
                        e->pid = -1;
                        return xmem_error_set(err, -ECHILD,
                                              "embedded appliance %s exited during start-up "
                                              "(status %d; pool file %s)",
                                              e->binary, status, e->pool);
                }
                if (socket_ready(e->socket))
                        return 0;
        }
        return xmem_error_set(err, -ETIMEDOUT,
                              "embedded appliance %s: not listening on %s after 10 s", e->binary,
                              e->socket);
}

static int spawn(struct embedded *e, const char *state_dir, uint64_t pool_size, uint32_t chunk_size,
                 struct xmem_error *err)
{
        int r;

        if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "state directory %s: %m", state_dir);
        (void)unlink(e->socket);
        e->pid = fork();
        if (e->pid < 0)
                return xmem_error_set(err, negative_errno(), "fork: %m");
        if (e->pid == 0)
                child_exec(e, pool_size, chunk_size);
        e->child = true;
        e->pidfd = pidfd_of(e->pid);
        if (e->pidfd < 0) {
                kill(e->pid, SIGKILL);
                (void)waitpid(e->pid, NULL, 0);
                e->pid = -1;
                return xmem_error_set(err, e->pidfd, "pidfd_open: %s", strerror(-e->pidfd));
        }
        r = wait_ready(e, err);
        if (r < 0)
                return r;
        r = write_pidfile(e->pidfile, e->pid);
        if (r < 0)
                return xmem_error_set(err, r, "pid file %s: %s", e->pidfile, strerror(-r));
        log_info("embedded appliance: started, pid %d, pool file %s", (int)e->pid, e->pool);
        return 0;
}

static struct embedded *embedded_new(const char *dir, const char *state_dir)
{
        struct embedded *e = calloc(1, sizeof(*e));

        if (!e)
                return NULL;
        e->pid = -1;
        e->pidfd = -1;
        e->binary = embedded_find_binary();
        if (!e->binary || asprintf(&e->socket, "%s/embedded.sock", dir) < 0 ||
            asprintf(&e->pidfile, "%s/embedded.pid", dir) < 0 ||
            (state_dir && asprintf(&e->pool, "%s/embedded-pool", state_dir) < 0)) {
                embedded_release(e);
                return NULL;
        }
        return e;
}

int embedded_start(const char *dir, const char *state_dir, uint64_t pool_size, uint32_t chunk_size,
                   struct embedded **ret, struct xmem_error *err)
{
        struct embedded *e = embedded_new(dir, state_dir);
        pid_t pid;
        int r;

        if (!e)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        if (strlen(e->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
                embedded_release(e);
                return xmem_error_set(err, -ENAMETOOLONG,
                                      "embedded appliance socket path too long under %s", dir);
        }
        snprintf(e->uri, sizeof(e->uri), "shm://%s", e->socket);
        pid = running_pid(e->pidfile, e->socket);
        if (pid > 0 && (e->pidfd = pidfd_of(pid)) >= 0 && socket_ready(e->socket)) {
                e->pid = pid;
                log_info("embedded appliance: found running, pid %d, pool file %s", (int)pid,
                         e->pool);
                *ret = e;
                return 0;
        }
        e->pidfd = safe_close(e->pidfd);
        if (pid > 0) { /* alive but not answering: it cannot serve us */
                embedded_release(e);
                return xmem_error_set(err, -EBUSY,
                                      "embedded appliance pid %d does not accept connections "
                                      "in %s; stop it with memd --stop-embedded",
                                      (int)pid, dir);
        }
        r = spawn(e, state_dir, pool_size, chunk_size, err);
        if (r < 0) {
                if (e->pid > 0) {
                        kill(e->pid, SIGKILL);
                        (void)waitpid(e->pid, NULL, 0);
                        e->pid = -1;
                }
                embedded_release(e);
                return r;
        }
        *ret = e;
        return 0;
}

void embedded_release(struct embedded *e)
{
        if (!e)
                return;
        if (e->child && e->pid > 0)
                (void)waitpid(e->pid, NULL, WNOHANG); /* reaped if it already exited */
        safe_close(e->pidfd);
        free(e->socket);
        free(e->pidfile);
        free(e->pool);
        free(e->binary);
        free(e);
}

/* Wait up to MS for PIDFD to say its process exited. */
static bool exited_within(int pidfd, int ms)
{
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};

        return poll(&pfd, 1, ms) > 0;
}

int embedded_stop_running(const char *dir, struct xmem_error *err)
{
        struct embedded *e = embedded_new(dir, NULL);
        _cleanup_close_ int pidfd = -1;
        pid_t pid;
        int r = 0;

        if (!e)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        pid = running_pid(e->pidfile, e->socket);
        if (pid <= 0) {
                r = 1;
        } else if ((pidfd = pidfd_of(pid)) < 0) {
                r = pidfd == -ESRCH ? 1
                                    : xmem_error_set(err, pidfd, "pidfd_open %d: %s", (int)pid,
                                                     strerror(-pidfd));
        } else {
                (void)kill(pid, SIGCONT); /* a stopped process never sees SIGTERM */
                (void)kill(pid, SIGTERM);
                if (!exited_within(pidfd, EMBEDDED_STOP_MS)) {
                        (void)kill(pid, SIGKILL);
                        if (!exited_within(pidfd, 5000))
                                r = xmem_error_set(err, -ETIMEDOUT,
                                                   "embedded appliance pid %d did not exit",
                                                   (int)pid);
                }
                (void)waitpid(pid, NULL, WNOHANG); /* ours if we are its parent */
        }
        if (r >= 0) {
                (void)unlink(e->socket);
                (void)unlink(e->pidfile);
        }
        embedded_release(e);
        return r;
}
