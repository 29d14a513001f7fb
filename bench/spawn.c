/* spawn.c: a private appliance for bench-appliance (see spawn.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"
#include "transport/transport.h"

static int free_port(void)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

        if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
                port = ntohs(sa.sin_port);
        if (fd >= 0)
                close(fd);
        return port;
}

static const char *find_bin(const char *bin, char *buf, size_t len)
{
        char self[PATH_MAX];
        ssize_t n;

        if (bin)
                return bin;
        if (getenv("XMEM_APPLIANCE"))
                return getenv("XMEM_APPLIANCE");
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                char *slash;
                self[n] = 0;
                slash = strrchr(self, '/');
                if (slash) {
                        *slash = 0;
                        snprintf(buf, len, "%s/../appliance/xmem-appliance", self);
                        if (access(buf, X_OK) == 0)
                                return buf;
                }
        }
        return "xmem-appliance";
}

int spawn_appliance(const char *bin, uint64_t pool_size, char *tcp_uri, size_t tcp_len,
                    char *shm_uri, size_t shm_len, pid_t *ret_pid, char *dir, size_t dir_len)
{
        char path[PATH_MAX], listen_unix[128], pool[32];
        int port = free_port();
        pid_t pid;

        snprintf(dir, dir_len, "/tmp/xmem-bench.XXXXXX");
        if (port < 0 || !mkdtemp(dir)) {
                fprintf(stderr, "bench: no free port or temp dir: %m\n");
                return -EIO;
        }
        bin = find_bin(bin, path, sizeof(path));
        snprintf(tcp_uri, tcp_len, "tcp://127.0.0.1:%d", port);
        snprintf(listen_unix, sizeof(listen_unix), "unix://%s/appliance.sock", dir);
        snprintf(shm_uri, shm_len, "shm://%s/appliance.sock", dir);
        snprintf(pool, sizeof(pool), "%lluM", (unsigned long long)(pool_size >> 20));
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                execlp(bin, bin, "--listen", tcp_uri, "--listen", listen_unix, "--pool-size",
                       pool, "--log-level", "warning", (char *)NULL);
                fprintf(stderr, "bench: exec %s: %m\n", bin);
                _exit(127);
        }
        *ret_pid = pid;
        for (int i = 0; i < 500; i++) { /* up to 10 s */
                struct xmem_transport *t = NULL;
                if (waitpid(pid, NULL, WNOHANG) == pid) {
                        fprintf(stderr, "bench: %s exited during start-up\n", bin);
                        *ret_pid = -1;
                        return -ECHILD;
                }
                if (xmem_transport_open(shm_uri, NULL, &t, NULL) == 0 &&
                    (xmem_transport_close(t), xmem_transport_open(tcp_uri, NULL, &t, NULL) == 0)) {
                        xmem_transport_close(t);
                        return 0;
                }
                usleep(20000);
        }
        fprintf(stderr, "bench: %s did not start listening\n", bin);
        return -ETIMEDOUT;
}

void spawn_stop(pid_t pid, const char *dir)
{
        char cmd[128];

        if (pid > 0) {
                kill(pid, SIGTERM);
                waitpid(pid, NULL, 0);
        }
        if (dir[0]) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "bench: could not remove %s\n", dir);
        }
}
