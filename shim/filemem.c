/* filemem.c: the memory-mapped-file zone of this process (docs/shim.md "File
 * memory"): a file memd creates in the container's file directory and hands
 * over (shim.file), mapped MAP_SHARED so that the kernel pages it itself
 * (page cache: readahead, LRU, write-back) under the cgroup's limit; and its
 * copy for a forked child (the child must never see the parent's later
 * writes): a reflink where the file system has them, else a copy of the
 * file's data extents. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

/* The child's copy, made in the parent's prepare handler (-1: none). */
static int fork_file_fd = -1;

static void file_close(int fd)
{
        if (fd >= 0)
                close(fd);
}

/* FD's data into the empty file TO: FICLONE (btrfs, xfs: a metadata copy),
 * else copy_file_range over the data extents only (holes stay holes). */
static int file_copy(int fd, int to)
{
        off_t at = 0, end;

        if (ioctl(to, FICLONE, fd) == 0)
                return 0;
        while ((at = lseek(fd, at, SEEK_DATA)) >= 0) {
                end = lseek(fd, at, SEEK_HOLE);
                if (end < 0)
                        return -errno;
                for (off_t in = at, out = at; in < end;) {
                        /* the system call: glibc's wrapper is GLIBC_2.27, newer
                         * than the shim may need (docs/shim.md "Any glibc image") */
                        ssize_t n = syscall(SYS_copy_file_range, fd, &in, to, &out,
                                            (size_t)(end - in), 0);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                return n < 0 ? -errno : -EIO;
                }
                at = end;
        }
        return errno == ENXIO ? 0 : -errno; /* ENXIO: no data beyond */
}

static bool remap_failed;

static void remap_converted(const struct shim_local *l)
{
        const struct shim_zone *z = &shim_state.file;
        void *p = shim_sys_mmap((void *)l->start, l->len, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_FIXED_NOREPLACE, z->fd, (off_t)l->off);

        if (p != (void *)l->start || shim_sys_madvise(p, l->len, MADV_DONTFORK) < 0)
                remap_failed = true;
}

int shim_file_attach(int sock, uint64_t file_size, bool forked)
{
        struct shim_zone *z = &shim_state.file;
        uint64_t size = 0, base = 0;
        int fd = -1, r;

        if (forked) {
                /* the parent's file is the parent's: map our copy where it was */
                file_close(z->fd);
                z->fd = -1;
                if (!z->size)
                        return 0;
                fd = fork_file_fd;
                fork_file_fd = -1;
                r = fd < 0 ? -EPROTO : shim_zone_map(fd, z->size, z->base, &base);
                if (r < 0) {
                        file_close(fd);
                        if (z->range.used)
                                return r;
                        z->size = 0; /* nothing was in use: the child goes without */
                        return 0;
                }
                z->fd = fd;
                /* ranges converted to file memory map the copy too */
                remap_failed = false;
                shim_locals_each(SHIM_FILE, remap_converted);
                return remap_failed ? -EIO : 0;
        }
        if (file_size == 0)
                return 0; /* the container has no file directory */
        /* no file memory is no failure: the process runs on local and external */
        if (shim_proto_file(sock, &fd, &size) < 0)
                return 0;
        if (size != file_size || shim_zone_map(fd, size, 0, &base) < 0 ||
            shim_zone_range_setup(z, size) < 0) {
                if (base)
                        shim_sys_munmap((void *)base, size);
                close(fd);
                return 0;
        }
        z->kind = SHIM_FILE;
        z->fd = fd;
        z->base = base;
        __atomic_store_n(&z->size, size, __ATOMIC_RELEASE);
        return 0;
}

int shim_file_fork_prepare(void)
{
        struct shim_zone *z = &shim_state.file;
        uint64_t size;
        int fd, r;

        file_close(fork_file_fd);
        fork_file_fd = -1;
        if (!z->size || z->fd < 0)
                return 0;
        r = shim_proto_file(shim_state.sock, &fd, &size);
        if (r == 0 && size != z->size)
                r = -EBADMSG;
        if (r == 0 && (r = file_copy(z->fd, fd)) < 0)
                close(fd);
        if (r < 0)
                return z->range.used ? r : 0; /* nothing to copy: the child goes without */
        fork_file_fd = fd;
        return 0;
}

void shim_file_fork_parent(void)
{
        file_close(fork_file_fd);
        fork_file_fd = -1;
}
