/* embedded.c: start, watch and stop the embedded xmem-appliance child. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "embedded.h"
#include "macro.h"

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
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        return fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

static void child_exec(const struct embedded *e, uint64_t pool_size, uint32_t chunk_size)
{
        char listen[200], pool[32], chunk[32];
        const char *argv[] = { e->binary, "--listen", listen, "--pool-size", pool,
                               "--chunk-size", chunk, NULL };

        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1)
                _exit(1);
        umask(077); /* the socket is memd's alone */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        snprintf(listen, sizeof(listen), "unix://%s", e->socket);
        snprintf(pool, sizeof(pool), "%llu", (unsigned long long)pool_size);
        snprintf(chunk, sizeof(chunk), "%u", chunk_size);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        execvp(e->binary, (char *const *)argv);
        fprintf(stderr, "memd: embedded appliance: exec %s: %s\n", e->binary, strerror(errno));
        _exit(127);
}

static int wait_ready(struct embedded *e, struct xmem_error *err)
{
        for (int i = 0; i < 500; i++) { /* 10 s */
                struct pollfd pfd = { .fd = e->pidfd, .events = POLLIN };

                if (poll(&pfd, 1, 20) > 0) {
                        int status = 0;
                        (void)waitpid(e->pid, &status, 0);
                        e->pid = -1;
                        return xmem_error_set(err, -ECHILD,
                                              "embedded appliance %s exited during start-up "
                                              "(status %d)", e->binary, status);
                }
                if (socket_ready(e->socket))
                        return 0;
        }
        return xmem_error_set(err, -ETIMEDOUT, "embedded appliance %s: not listening on %s "
                              "after 10 s", e->binary, e->socket);
}

int embedded_start(const char *runtime_dir, uint64_t pool_size, uint32_t chunk_size,
                   struct embedded **ret, struct xmem_error *err)
{
        struct embedded *e = calloc(1, sizeof(*e));
        int r;

        if (!e)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        e->pid = -1;
        e->pidfd = -1;
        e->binary = embedded_find_binary();
        if (!e->binary || asprintf(&e->socket, "%s/embedded-appliance.%d.sock", runtime_dir,
                                   (int)getpid()) < 0) {
                embedded_stop(e);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        if (strlen(e->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
                embedded_stop(e);
                return xmem_error_set(err, -ENAMETOOLONG, "embedded appliance socket path "
                                      "too long under %s", runtime_dir);
        }
        (void)unlink(e->socket);
        snprintf(e->uri, sizeof(e->uri), "shm://%s", e->socket);
        e->pid = fork();
        if (e->pid < 0) {
                r = -errno;
                embedded_stop(e);
                return xmem_error_set(err, r, "fork: %s", strerror(-r));
        }
        if (e->pid == 0)
                child_exec(e, pool_size, chunk_size);
        e->pidfd = (int)syscall(SYS_pidfd_open, e->pid, 0);
        if (e->pidfd < 0) {
                r = -errno;
                embedded_stop(e);
                return xmem_error_set(err, r, "pidfd_open: %s", strerror(-r));
        }
        (void)fcntl(e->pidfd, F_SETFD, FD_CLOEXEC);
        r = wait_ready(e, err);
        if (r < 0) {
                embedded_stop(e);
                return r;
        }
        *ret = e;
        return 0;
}

void embedded_stop(struct embedded *e)
{
        if (!e)
                return;
        if (e->pid > 0) {
                struct pollfd pfd = { .fd = e->pidfd, .events = POLLIN };
                kill(e->pid, SIGTERM);
                if (e->pidfd < 0 || poll(&pfd, 1, 5000) <= 0)
                        kill(e->pid, SIGKILL);
                (void)waitpid(e->pid, NULL, 0);
        }
        safe_close(e->pidfd);
        if (e->socket)
                (void)unlink(e->socket);
        free(e->socket);
        free(e->binary);
        free(e);
}
