/* paged.c: one paged child served by the engine, as memd would (see paged.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "fdio.h"
#include "macro.h"
#include "paged.h"
#include "uffd.h"

struct paged_hello {
        uint64_t base;
};

int paged_cgroup_new(const char *prefix, const char *tag, uint64_t limit, struct cgroup **ret)
{
        enum cgroup_version v;
        _cleanup_free_ char *mount = NULL, *self = NULL;
        _cleanup_(cgroup_freep) struct cgroup *parent = NULL, *cg = NULL;
        char name[64];
        int r;

        r = cgroup_detect(CGROUP_FS_ROOT, &v, &mount);
        if (r >= 0)
                r = cgroup_pid_path("/proc", getpid(), v, &self);
        if (r >= 0)
                r = cgroup_new(v, mount, self, &parent);
        if (r < 0)
                return r;
        snprintf(name, sizeof(name), "%s-%s-%d", prefix, tag, (int)getpid());
        r = cgroup_create_child(parent, name, &cg);
        if (r == -EEXIST) { /* a leftover of a killed run: reuse it */
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/%s", self, name) < 0)
                        return -ENOMEM;
                r = cgroup_new(v, mount, path, &cg);
        }
        if (r >= 0)
                r = cgroup_set_limit(cg, limit);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(cg);
        return 0;
}

static int open_store(struct paged *p, const struct paged_opts *o, struct xmem_error *err)
{
        int fd, r;

        if (o->uri) {
                r = xmem_transport_open(o->uri, NULL, &p->t, err);
                return r < 0 ? r : store_xmem_new(&p->t, 1, o->size, o->chunk, &p->store, err);
        }
        fd = memfd_create("store", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)o->size) < 0) {
                r = -errno;
                safe_close(fd);
                return r;
        }
        r = store_file_new(fd, o->size, &p->store);
        if (r < 0)
                close(fd);
        return r;
}

int paged_open(struct paged *p, const struct paged_opts *o, struct xmem_error *err)
{
        int r = open_store(p, o, err);

        if (r >= 0 && o->prefill)
                r = o->prefill(p->store, o->size);
        if (r >= 0)
                r = arena_new(o->size, o->chunk, p->store, !o->prefill, &p->arena);
        if (r >= 0)
                r = residency_new(o->budget, &p->res);
        if (r >= 0)
                r = residency_add_arena(p->res, p->arena);
        if (r >= 0)
                r = pager_new(o->pager, &p->pager);
        return r;
}

/* The child: plays the shim. Map the memfd, create and register our own
 * uffd, send it, wait until it is served, run FN. */
static _Noreturn void child_main(struct paged *p, const struct paged_opts *o, pid_t parent,
                                 int sock, int dev_fd, paged_child_fn fn, void *arg)
{
        uint64_t size = p->arena->size;
        char go;
        int uffd = -1;

        /* Never outlive the server: a child whose pager died waits in its
         * faults for ever (it keeps its own uffd). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(9);
        if (read_full(sock, &go, 1) < 0) /* moved into the cgroup */
                _exit(10);
        char *m = mmap((void *)(uintptr_t)o->base, size, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED_NOREPLACE, p->arena->memfd, 0);
        if (m == MAP_FAILED)
                _exit(11);
        if (uffd_open_with(dev_fd, O_CLOEXEC | (o->blocking_uffd ? 0 : O_NONBLOCK),
                           UFFD_PAGER_FEATURES, 0, NULL, &uffd) < 0)
                _exit(12);
        if (uffd_register(uffd, (uint64_t)(uintptr_t)m, size,
                          UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, NULL) < 0)
                _exit(13);
        struct paged_hello h = { .base = (uint64_t)(uintptr_t)m };
        /* We keep our own uffd reference: faults wait if the server dies. */
        if (send_with_fds(sock, &h, sizeof(h), &uffd, 1) < 0)
                _exit(14);
        if (read_full(sock, &go, 1) < 0) /* the pager runs */
                _exit(15);
        p->sock = sock;
        _exit(fn(m, size, sock, arg));
}

static void kill_child(struct paged *p)
{
        if (p->pid <= 0)
                return;
        kill(p->pid, SIGKILL);
        (void)waitpid(p->pid, NULL, 0);
        p->pid = 0;
}

static int receive_uffd(struct paged *p)
{
        struct paged_hello h;
        int fds[1];
        size_t nfds = 1;
        ssize_t n = recv_with_fds(p->sock, &h, sizeof(h), fds, &nfds);

        if (n < 0)
                return (int)n;
        if (n != (ssize_t)sizeof(h) || nfds != 1) {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
                return -EPROTO;
        }
        arena_attach(p->arena, fds[0], h.base);
        return 0;
}

int paged_spawn(struct paged *p, const struct paged_opts *o, const struct cgroup *cg,
                paged_child_fn fn, void *arg)
{
        pid_t parent = getpid();
        int sv[2], dev_fd, r;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        dev_fd = uffd_dev_open();
        if (dev_fd < 0) {
                close(sv[0]);
                close(sv[1]);
                return dev_fd;
        }
        p->pid = fork();
        if (p->pid == 0) {
                close(sv[0]);
                child_main(p, o, parent, sv[1], dev_fd, fn, arg);
        }
        r = p->pid < 0 ? -errno : 0;
        if (p->pid < 0)
                p->pid = 0;
        close(sv[1]);
        close(dev_fd);
        p->sock = sv[0];
        if (r >= 0 && cg)
                r = cgroup_move_pid(cg, p->pid);
        if (r >= 0)
                r = write_full(p->sock, "g", 1);
        if (r >= 0)
                r = receive_uffd(p);
        if (r < 0)
                kill_child(p);
        return r;
}

int paged_serve(struct paged *p)
{
        int r = pager_add(p->pager, p->arena, p->res);

        if (r >= 0)
                r = pager_start(p->pager);
        if (r >= 0)
                r = residency_start(p->res);
        if (r >= 0)
                r = write_full(p->sock, "r", 1);
        return r;
}

int paged_wait(struct paged *p, int *ret_status)
{
        int status = 0;

        if (p->pid <= 0)
                return -ECHILD;
        if (waitpid(p->pid, &status, 0) != p->pid)
                return -errno;
        p->pid = 0;
        *ret_status = status;
        return 0;
}

void paged_free(struct paged *p)
{
        kill_child(p);
        if (p->res)
                residency_stop(p->res);
        if (p->pager) {
                if (p->arena)
                        pager_remove(p->pager, p->arena);
                pager_free(p->pager);
        }
        residency_free(p->res);
        arena_free(p->arena);
        store_free(p->store);
        if (p->t)
                xmem_transport_close(p->t);
        safe_close(p->sock);
        *p = (struct paged)PAGED_INIT;
}
