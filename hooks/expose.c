/* expose.c: make the shim and memd's socket visible in a container that is
 * being created: a child process enters the container's mount namespace
 * (/proc/PID/ns/mnt) and, under config.json's root.path (every path resolved
 * inside the rootfs, never through its symlinks to the host), mounts a small
 * tmpfs holding the shim and a preload list, binds that list onto
 * /etc/ld.so.preload and memd's socket directory onto /run/xmem. On a failed
 * step it undoes the earlier ones (libnvidia-container style). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "expose.h"
#include "fdio.h"
#include "paths.h"

#define FDPATH_MAX 32
#define PRELOAD_MAX (64 * 1024)

static const char *fdpath(int fd, char buf[FDPATH_MAX])
{
        snprintf(buf, FDPATH_MAX, "/proc/self/fd/%d", fd);
        return buf;
}

/* mkdir -p REL under the rootfs; an O_PATH fd on the directory. */
static int mkdir_in_root(int rootfd, const char *rel)
{
        char part[256];
        int r = -EINVAL;

        if (strlen(rel) >= sizeof(part))
                return -ENAMETOOLONG;
        for (const char *slash = rel;; slash++) {
                slash = strchrnul(slash, '/');
                memcpy(part, rel, (size_t)(slash - rel));
                part[slash - rel] = 0;
                r = open_in_root(rootfd, part, O_PATH | O_DIRECTORY, 0);
                if (r == -ENOENT) {
                        _cleanup_close_ int parent = -1;
                        char *last = strrchr(part, '/');
                        if (last) {
                                *last = 0;
                                parent = open_in_root(rootfd, part, O_PATH | O_DIRECTORY, 0);
                                if (parent < 0)
                                        return parent;
                                *last = '/';
                        }
                        if (mkdirat(last ? parent : rootfd, last ? last + 1 : part, 0755) < 0 &&
                            errno != EEXIST)
                                return negative_errno();
                        r = open_in_root(rootfd, part, O_PATH | O_DIRECTORY, 0);
                }
                if (r < 0 || *slash == 0)
                        return r;
                safe_close(r);
        }
}

static void umount_in_root(int rootfd, const char *rel)
{
        _cleanup_close_ int fd = open_in_root(rootfd, rel, O_PATH, 0);
        char p[FDPATH_MAX];

        if (fd >= 0)
                (void)umount2(fdpath(fd, p), MNT_DETACH);
}

/* The rootfs's preload list (may be absent) with the shim's line first. */
static int preload_text(int rootfd, char *buf, size_t len, size_t *ret_len, bool *ret_present)
{
        _cleanup_close_ int fd = open_in_root(rootfd, "etc/ld.so.preload", O_RDONLY, 0);
        size_t head = strlen(XMEM_CONTAINER_SHIM "\n");
        ssize_t n = 0;

        memcpy(buf, XMEM_CONTAINER_SHIM "\n", head);
        if (fd >= 0) {
                n = read(fd, buf + head, len - head - 1);
                if (n < 0)
                        return negative_errno();
        }
        buf[head + (size_t)n] = 0;
        *ret_present = strstr(buf + head, XMEM_CONTAINER_SHIM) != NULL;
        *ret_len = head + (size_t)n;
        return 0;
}

static int write_file_at(int dirfd, const char *name, mode_t mode, const void *data, size_t len,
                         int from_fd, size_t from_len)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        off_t off = 0;

        if (fd < 0)
                return negative_errno();
        if (data)
                return write_full(fd, data, len);
        while ((size_t)off < from_len)
                if (sendfile(fd, from_fd, &off, from_len - (size_t)off) <= 0)
                        return errno ? negative_errno() : -EIO;
        return 0;
}

/* Step 1: tmpfs on /run/xmem-shim with the shim and the preload list. */
static int expose_tmpfs(int rootfd, int shim_fd, size_t shim_size, const char *preload,
                        size_t preload_len, struct xmem_error *err)
{
        _cleanup_close_ int mp = mkdir_in_root(rootfd, &XMEM_CONTAINER_SHIM_DIR[1]), dir = -1;
        char p[FDPATH_MAX], opts[64];
        int r;

        if (mp < 0)
                return xmem_error_set(err, mp, "mkdir %s in the rootfs: %s",
                                      XMEM_CONTAINER_SHIM_DIR, strerror(-mp));
        snprintf(opts, sizeof(opts), "mode=0755,size=%zu", shim_size + preload_len + (1 << 20));
        if (mount("tmpfs", fdpath(mp, p), "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
                return xmem_error_set(err, negative_errno(), "mount tmpfs on %s: %m",
                                      XMEM_CONTAINER_SHIM_DIR);
        dir = open_in_root(rootfd, &XMEM_CONTAINER_SHIM_DIR[1], O_PATH | O_DIRECTORY, 0);
        r = dir < 0 ? dir
                    : write_file_at(dir, "libxmem-shim.so", 0755, NULL, 0, shim_fd, shim_size);
        if (r == 0)
                r = write_file_at(dir, "ld.so.preload", 0644, preload, preload_len, -1, 0);
        if (r == 0 && mount(NULL, fdpath(dir, p), NULL,
                            MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
                r = negative_errno();
        if (r < 0) {
                umount_in_root(rootfd, &XMEM_CONTAINER_SHIM_DIR[1]);
                return xmem_error_set(err, r, "fill %s: %s", XMEM_CONTAINER_SHIM_DIR,
                                      strerror(-r));
        }
        return 0;
}

/* Step 2: bind the preload list onto /etc/ld.so.preload (created if absent). */
static int expose_preload(int rootfd, struct xmem_error *err)
{
        _cleanup_close_ int etc = mkdir_in_root(rootfd, "etc"), target = -1, src = -1;
        char p[FDPATH_MAX], q[FDPATH_MAX];

        if (etc >= 0) {
                target = open_in_root(rootfd, "etc/ld.so.preload", O_PATH, 0);
                if (target == -ENOENT) {
                        safe_close(open_in_root(rootfd, "etc/ld.so.preload",
                                                O_WRONLY | O_CREAT, 0644));
                        target = open_in_root(rootfd, "etc/ld.so.preload", O_PATH, 0);
                }
        }
        src = open_in_root(rootfd, &XMEM_CONTAINER_SHIM_DIR "/ld.so.preload"[1], O_PATH, 0);
        if (etc < 0 || target < 0 || src < 0)
                return xmem_error_set(err, etc < 0 ? etc : target < 0 ? target : src,
                                      "/etc/ld.so.preload in the rootfs: %s",
                                      strerror(-(etc < 0 ? etc : target < 0 ? target : src)));
        if (mount(fdpath(src, p), fdpath(target, q), NULL, MS_BIND, NULL) < 0)
                return xmem_error_set(err, negative_errno(), "bind /etc/ld.so.preload: %m");
        return 0;
}

/* Step 3: the container's own socket directory onto /run/xmem, read-only
 * (a socket in it can still be connected to). */
static int expose_socket(int rootfd, const char *socket_dir, struct xmem_error *err)
{
        _cleanup_close_ int mp = mkdir_in_root(rootfd, &XMEM_CONTAINER_SOCKET_DIR[1]);
        char p[FDPATH_MAX];

        if (mp < 0)
                return xmem_error_set(err, mp, "mkdir %s in the rootfs: %s",
                                      XMEM_CONTAINER_SOCKET_DIR, strerror(-mp));
        if (mount(socket_dir, fdpath(mp, p), NULL, MS_BIND, NULL) < 0)
                return xmem_error_set(err, negative_errno(), "bind %s onto %s: %m", socket_dir,
                                      XMEM_CONTAINER_SOCKET_DIR);
        safe_close(mp); /* the mount point now: reopen to reach the bind */
        mp = open_in_root(rootfd, &XMEM_CONTAINER_SOCKET_DIR[1], O_PATH | O_DIRECTORY, 0);
        if (mp < 0 || mount(NULL, fdpath(mp, p), NULL,
                            MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            NULL) < 0) {
                int r = mp < 0 ? mp : negative_errno();
                umount_in_root(rootfd, &XMEM_CONTAINER_SOCKET_DIR[1]);
                return xmem_error_set(err, r, "make %s read-only: %s", XMEM_CONTAINER_SOCKET_DIR,
                                      strerror(-r));
        }
        return 0;
}

static int expose_in_ns(const char *rootfs, int shim_fd, size_t shim_size,
                        const char *socket_dir, struct xmem_error *err)
{
        _cleanup_close_ int rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC), done = -1;
        char preload[PRELOAD_MAX];
        size_t len;
        bool present;
        int r;

        if (rootfd < 0)
                return xmem_error_set(err, negative_errno(), "rootfs %s: %m", rootfs);
        if (shim_fd < 0) /* xmem-runtime put the shim in config.json */
                return expose_socket(rootfd, socket_dir, err);
        r = preload_text(rootfd, preload, sizeof(preload), &len, &present);
        if (r < 0)
                return xmem_error_set(err, r, "read /etc/ld.so.preload: %s", strerror(-r));
        done = open_in_root(rootfd, &XMEM_CONTAINER_SHIM[1], O_PATH, 0);
        if (present && done >= 0)
                return 0; /* a previous run did it all: idempotent */
        r = expose_tmpfs(rootfd, shim_fd, shim_size, preload, len, err);
        if (r < 0)
                return r;
        r = expose_preload(rootfd, err);
        if (r == 0) {
                r = expose_socket(rootfd, socket_dir, err);
                if (r < 0)
                        umount_in_root(rootfd, "etc/ld.so.preload");
        }
        if (r < 0)
                umount_in_root(rootfd, &XMEM_CONTAINER_SHIM_DIR[1]);
        return r;
}

int container_expose(pid_t pid, const char *rootfs, const char *shim, const char *socket_dir,
                     struct xmem_error *err)
{
        _cleanup_close_ int shim_fd = shim ? open(shim, O_RDONLY | O_CLOEXEC) : -1, ns = -1;
        int pipefd[2], status;
        char msg[XMEM_ERROR_MAX] = "";
        struct stat st = {};
        char path[64];
        ssize_t n;
        pid_t child;

        if (shim && (shim_fd < 0 || fstat(shim_fd, &st) < 0))
                return xmem_error_set(err, negative_errno(), "shim %s: %m", shim);
        snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)pid);
        ns = open(path, O_RDONLY | O_CLOEXEC);
        if (ns < 0)
                return xmem_error_set(err, negative_errno(), "%s: %m", path);
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return xmem_error_set(err, negative_errno(), "pipe: %m");
        child = fork();
        if (child < 0) {
                safe_close(pipefd[0]), safe_close(pipefd[1]);
                return xmem_error_set(err, negative_errno(), "fork: %m");
        }
        if (child == 0) {
                struct xmem_error e = {};
                int r = setns(ns, CLONE_NEWNS) < 0
                            ? xmem_error_set(&e, negative_errno(), "enter %s: %m", path)
                            : expose_in_ns(rootfs, shim_fd, (size_t)st.st_size, socket_dir, &e);
                if (r < 0)
                        (void)write_full(pipefd[1], e.msg, strlen(e.msg));
                _exit(r < 0 ? -r : 0);
        }
        safe_close(pipefd[1]);
        n = read(pipefd[0], msg, sizeof(msg) - 1);
        msg[n > 0 ? n : 0] = 0;
        safe_close(pipefd[0]);
        if (waitpid(child, &status, 0) < 0)
                return xmem_error_set(err, negative_errno(), "waitpid: %m");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return xmem_error_set(err, WIFEXITED(status) ? -WEXITSTATUS(status) : -EIO,
                                      "%s", msg[0] ? msg : "mount helper failed");
        return 0;
}
