/* fuzz_api.c: memd's API dispatch, a whole message to its reply
 * (memd/conn.c conn_dispatch): the first byte picks the socket it arrives on
 * (the admin socket, or a container's) and the descriptors sent with it; the
 * rest is the datagram. The reply, read back from the other end of the
 * connection, must be one JSON object saying ok or not. memd here has a real
 * method table, a real container (on a fake cgroup v2 tree in a temp dir) and
 * no appliance, so nothing reaches a real cgroup or appliance. */
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "json-util.h"
#include "log.h"
#include "memd.h"

static struct manager *m;
static struct container *ctr;
static struct conn admin, inside;
static int peer[2][2]; /* [admin|inside][memd end, our end] */

static void put(const char *dir, const char *name, const char *text)
{
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
                abort();
}

static char root[] = "/tmp/xmem-fuzz-api-XXXXXX";

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)remove(path);
        return 0;
}

/* The fake cgroup tree goes with the process (the manager and container
 * stay: they are what every input runs against). */
static void remove_root(void)
{
        (void)nftw(root, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void init(void)
{
        char web[600], sock[600];
        struct xmem_error err = {};
        struct api_attach a = {.id = "web",
                               .local_limit = 64 << 20,
                               .external = 1 << 30,
                               .local_alloc_limit = 32 << 20};
        struct manager_config cfg = {.cgroup_root = root, .chunk_size = 65536};

        log_set_max_level(LOG_CRIT);
        if (!mkdtemp(root))
                abort();
        atexit(remove_root);
        put(root, "cgroup.controllers", "memory\n");
        put(root, "cgroup.subtree_control", "memory\n");
        snprintf(web, sizeof(web), "%s/web", root);
        mkdir(web, 0755);
        put(web, "memory.current", "1048576\n");
        put(web, "memory.max", "max\n");
        put(web, "memory.high", "max\n");
        put(web, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
        put(web, "memory.stat", "anon 0\nfile 0\n");
        put(web, "cgroup.procs", "");
        snprintf(sock, sizeof(sock), "%s/memd.sock", root);
        cfg.socket_path = sock;
        a.cgroup = web;
        static struct xmem_transport *none[1];
        if (manager_new(&cfg, &m, &err) < 0 ||
            container_new(&a, CGROUP_V2, root, none, 1, 65536, NULL, &ctr, &err) < 0) {
                fprintf(stderr, "fuzz_api: %s\n", xmem_error_str(&err));
                abort();
        }
        /* no appliance behind it: an arena is refused (ENODEV) before any
         * transport is used */
        ctr->n_transports = 0;
        for (int i = 0; i < 2; i++)
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, peer[i]) < 0)
                        abort();
        admin = (struct conn){.m = m, .fd = peer[0][0], .pidfd = -1};
        inside = (struct conn){.m = m,
                               .fd = peer[1][0],
                               .container = ctr,
                               .pid = getpid(),
                               .pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0)};
}

/* Up to 4 descriptors of kinds memd may be sent: a pipe, a memfd, an eventfd. */
static size_t make_fds(uint8_t sel, int *fds)
{
        size_t n = sel & 3;

        for (size_t i = 0; i < n; i++) {
                int p[2];
                switch ((sel >> (2 + 2 * i)) & 3) {
                case 0:
                        if (pipe2(p, O_CLOEXEC) < 0)
                                abort();
                        close(p[1]);
                        fds[i] = p[0];
                        break;
                case 1:
                        fds[i] = memfd_create("fuzz", MFD_CLOEXEC);
                        break;
                default:
                        fds[i] = eventfd(0, EFD_CLOEXEC);
                }
                if (fds[i] < 0)
                        abort();
        }
        return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char reply[API_MAX_MESSAGE + 1];
        _cleanup_json_ json_object *o = NULL;
        struct xmem_error err = {};
        int fds[API_MAX_FDS], code;
        struct conn *cn;
        size_t n_fds;
        ssize_t n;

        if (!m)
                init();
        if (size < 1 || size > API_MAX_MESSAGE + 1)
                return 0;
        cn = data[0] & 0x80 ? &inside : &admin;
        n_fds = make_fds(data[0], fds);
        code = conn_dispatch(m, cn, (const char *)data + 1, (ssize_t)size - 1, fds, n_fds);
        n = recv(peer[cn == &inside][1], reply, sizeof(reply) - 1, MSG_DONTWAIT);
        if (n <= 0 || json_parse(reply, (size_t)n, &o, &err) < 0)
                abort(); /* every request gets one well-formed reply */
        json_object *ok = json_object_object_get(o, "ok");
        if (!ok || json_object_get_boolean(ok) != (code >= 0))
                abort();
        /* nothing it sent changes who is attached: memd has no appliance */
        if (m->containers)
                abort();
        return 0;
}
