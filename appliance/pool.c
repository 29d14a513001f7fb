/* pool.c: create, map and punch the pool (memfd or --pool-file). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"

static int pool_open_fd(const char *path, uint64_t size, struct xmem_error *err)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (!path) {
                fd = memfd_create("xmem-pool", MFD_CLOEXEC);
                if (fd < 0)
                        return xmem_error_set(err, negative_errno(), "memfd_create: %s",
                                              strerror(errno));
        } else {
                fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
                if (fd < 0)
                        return xmem_error_set(err, negative_errno(), "pool file %s: %s", path,
                                              strerror(errno));
                if (fstat(fd, &st) < 0)
                        return xmem_error_set(err, negative_errno(), "pool file %s: %s", path,
                                              strerror(errno));
                if ((uint64_t)st.st_size > size)
                        return xmem_error_set(err, -EINVAL,
                                              "pool file %s is %llu bytes, larger than --pool-size",
                                              path, (unsigned long long)st.st_size);
                if ((uint64_t)st.st_size == size)
                        return TAKE_FD(fd);
        }
        if (ftruncate(fd, (off_t)size) < 0)
                return xmem_error_set(err, negative_errno(), "size pool to %llu bytes: %s",
                                      (unsigned long long)size, strerror(errno));
        return TAKE_FD(fd);
}

int pool_open(struct pool *p, const char *path, uint64_t size, uint64_t chunk_size,
              struct xmem_error *err)
{
        int fd;
        void *base;

        if (size == 0 || size % chunk_size)
                return xmem_error_set(err, -EINVAL, "pool size must be a multiple of the chunk size");
        fd = pool_open_fd(path, size, err);
        if (fd < 0)
                return fd;
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
        if (base == MAP_FAILED) {
                int r = negative_errno();
                close(fd);
                return xmem_error_set(err, r, "mmap pool of %llu bytes: %s",
                                      (unsigned long long)size, strerror(-r));
        }
        p->fd = fd;
        p->base = base;
        p->size = size;
        p->chunk_size = chunk_size;
        p->persistent = path != NULL;
        return 0;
}

void pool_close(struct pool *p)
{
        if (p->base)
                munmap(p->base, p->size);
        safe_close(p->fd);
        p->base = NULL;
        p->fd = -1;
}

void pool_punch(void *pool, chunk_id first, uint32_t n)
{
        struct pool *p = pool;
        uint64_t off = (uint64_t)first * p->chunk_size, len = (uint64_t)n * p->chunk_size;

        if (fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                      (off_t)len) < 0) {
                /* no hole punching (odd filesystem): zero by hand so reuse reads zeros */
                log_debug_errno(negative_errno(), "punch pool [%llu, +%llu), zeroing instead",
                                (unsigned long long)off, (unsigned long long)len);
                memset(p->base + off, 0, len);
        }
}

int pool_sync(struct pool *p)
{
        if (!p->persistent)
                return 0;
        if (msync(p->base, p->size, MS_SYNC) < 0)
                return negative_errno();
        if (fsync(p->fd) < 0)
                return negative_errno();
        return 0;
}
