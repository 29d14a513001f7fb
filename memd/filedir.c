/* filedir.c: the memory-mapped-file type's directory (docs/memd.md "File
 * memory"): memd checks it at attach and makes each process's files there,
 * unnamed (O_TMPFILE), so that they vanish with the last descriptor or
 * mapping of the process that holds them: nothing to clean up after a crash. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "filedir.h"
#include "macro.h"

int filedir_open(const char *dir, int *ret_dirfd, struct xmem_error *err)
{
        _cleanup_close_ int dfd = -1;
        struct stat st;
        int fd;

        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return xmem_error_set(err, negative_errno(), "params.file_dir: %s: %m", dir);
        if (fstat(dfd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "params.file_dir: %s: %m", dir);
        /* a directory anyone may swap files in is no place for a heap */
        if (st.st_mode & (S_IWGRP | S_IWOTH))
                return xmem_error_set(err, -EPERM,
                                      "params.file_dir: %s is writable by group or others", dir);
        fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EROFS) /* the usual cause: memd.service's ProtectSystem=strict */
                return xmem_error_set(err, -EROFS,
                                      "params.file_dir: %s is read-only for memd (under systemd, "
                                      "add it to memd.service's ReadWritePaths=)",
                                      dir);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(),
                                      "params.file_dir: %s: unnamed files (O_TMPFILE): %m", dir);
        close(fd);
        *ret_dirfd = TAKE_FD(dfd);
        return 0;
}

int filedir_new_file(int dirfd, uint64_t size, int *ret_fd)
{
        int fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

        if (fd < 0)
                return -errno;
        /* sparse: blocks are taken when the shim reserves an extent */
        if (ftruncate(fd, (off_t)size) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}
