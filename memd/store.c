/* store.c: the store interface and its local-file implementation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdio.h"
#include "macro.h"
#include "store.h"

struct store_file {
        struct store base;
        int fd;
};

void store_free(struct store *s)
{
        if (s)
                s->ops->free(s);
}

int store_writeback_v(struct store *s, const struct store_seg *segs, size_t n, const void *buf)
{
        const char *p = buf;

        if (s->ops->writeback_v)
                return s->ops->writeback_v(s, segs, n, buf);
        for (size_t i = 0; i < n; i++) {
                int r = store_writeback(s, segs[i].offset, p, segs[i].len);
                if (r < 0)
                        return r;
                p += segs[i].len;
        }
        return 0;
}

bool store_has_direct(const struct store *s)
{
        return s->ops->has_direct ? s->ops->has_direct(s) : false;
}

int store_clone(struct store *s, struct store **ret, struct xmem_error *err)
{
        if (!s->ops->clone)
                return xmem_error_set(err, -EOPNOTSUPP, "store: this store cannot be cloned");
        return s->ops->clone(s, ret, err);
}

static int file_fetch(struct store *s, uint64_t offset, void *buf, size_t len)
{
        struct store_file *f = (struct store_file *)s;
        ssize_t n;

        if (!store_in_range(s, offset, len))
                return -ERANGE;
        n = pread_full(f->fd, buf, len, (off_t)offset);
        if (n < 0)
                return (int)n;
        memset((char *)buf + n, 0, len - (size_t)n); /* past the end of a short file: zeros */
        return 0;
}

static int file_writeback(struct store *s, uint64_t offset, const void *buf, size_t len)
{
        struct store_file *f = (struct store_file *)s;

        if (!store_in_range(s, offset, len))
                return -ERANGE;
        return pwrite_full(f->fd, buf, len, (off_t)offset);
}

static void file_free(struct store *s)
{
        struct store_file *f = (struct store_file *)s;

        safe_close(f->fd);
        free(f);
}

static const struct store_ops store_file_ops = {
        .fetch = file_fetch,
        .writeback = file_writeback,
        .free = file_free,
};

int store_file_new(int fd, uint64_t size, struct store **ret)
{
        struct store_file *f = calloc(1, sizeof(*f));

        if (!f)
                return -ENOMEM;
        f->base.ops = &store_file_ops;
        f->base.size = size;
        f->fd = fd;
        *ret = &f->base;
        return 0;
}
