/* ctrsock.c: each attached container's own API socket,
 * CONTAINERS_DIR/ID/memd.sock. The directory is the container's alone: the
 * hook or xmem-runtime bind-mounts it read-only onto /run/xmem in that
 * container (a directory, so a later memd can create the socket again where
 * the container sees it). memd never follows a symlink on the way and uses
 * only directories owned by itself that nobody else may write. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "memd.h"

#define CTRSOCK_NAME "memd.sock"

/* DIRFD must be a directory owned by memd's uid, not writable by others. */
static int check_dir(int dirfd, const char *path, struct xmem_error *err)
{
        struct stat st;

        if (fstat(dirfd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "%s: %m", path);
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
                return xmem_error_set(err, -EPERM,
                                      "%s: must be a directory owned by uid %u "
                                      "that only it may write (mode %03o, owner %u)",
                                      path, (unsigned)geteuid(), (unsigned)(st.st_mode & 0777),
                                      (unsigned)st.st_uid);
        return 0;
}

static int open_dir(int atfd, const char *name, const char *shown, int *ret, struct xmem_error *err)
{
        int fd, r;

        if (mkdirat(atfd, name, 0755) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "mkdir %s: %m", shown);
        fd = openat(atfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "%s: %m", shown);
        r = check_dir(fd, shown, err);
        if (r < 0) {
                close(fd);
                return r;
        }
        *ret = fd;
        return 0;
}

int ctrsock_open_root(struct manager *m, struct xmem_error *err)
{
        if (m->cfg.container_dir)
                m->containers_dir = strdup(m->cfg.container_dir);
        else if (asprintf(&m->containers_dir, "%s/containers", m->run_dir) < 0)
                m->containers_dir = NULL;
        if (!m->containers_dir)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        return open_dir(AT_FDCWD, m->containers_dir, m->containers_dir, &m->containers_dirfd, err);
}

int ctrsock_path(const struct manager *m, const struct container *c, char *buf, size_t len)
{
        return snprintf(buf, len, "%s/%s/" CTRSOCK_NAME, m->containers_dir, c->id);
}

int ctrsock_open(struct manager *m, struct container *c, struct xmem_error *err)
{
        char shown[4096];
        int r;

        c->manager = m; /* its socket's callbacks find memd through it */
        ctrsock_path(m, c, shown, sizeof(shown));
        r = open_dir(m->containers_dirfd, c->id, shown, &c->sock_dirfd, err);
        if (r >= 0)
                r = api_listen_at(c->sock_dirfd, CTRSOCK_NAME, shown, &c->sock_fd, err);
        return r < 0 ? r : conn_listen_container(m, c, err);
}

void ctrsock_close(struct manager *m, struct container *c)
{
        sd_event_source_disable_unref(c->sock_src);
        sd_event_source_disable_unref(c->throttle_src);
        c->sock_src = c->throttle_src = NULL;
        if (c->sock_fd >= 0)
                (void)unlinkat(c->sock_dirfd, CTRSOCK_NAME, 0);
        c->sock_fd = safe_close(c->sock_fd);
        /* memd stopping: the directory stays (bind-mounted into the
         * container: the next memd's socket appears there) */
        if (c->sock_dirfd >= 0 && !m->keep &&
            unlinkat(m->containers_dirfd, c->id, AT_REMOVEDIR) < 0 &&
            errno != ENOENT)
                log_debug("container %s: rmdir %s/%s: %m", c->id, m->containers_dir, c->id);
        c->sock_dirfd = safe_close(c->sock_dirfd);
}
