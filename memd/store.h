/* store.h: where arena chunks live when they are not resident. The pager and
 * the residency manager see only fetch/writeback at arena offsets; behind them
 * sit appliance regions (striped by chunk over one or more transports) or a
 * local file. Implementations are thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct store;

struct store_ops {
        int (*fetch)(struct store *s, uint64_t offset, void *buf, size_t len);
        int (*writeback)(struct store *s, uint64_t offset, const void *buf, size_t len);
        void (*free)(struct store *s);
        /* Optional: a new store of the same geometry whose contents are a
         * copy-on-write copy of S's as they are now (see store_clone). */
        int (*clone)(struct store *s, struct store **ret, struct xmem_error *err);
};

struct store {
        const struct store_ops *ops;
        uint64_t size;
};

static inline int store_fetch(struct store *s, uint64_t offset, void *buf, size_t len)
{
        return s->ops->fetch(s, offset, buf, len);
}
static inline int store_writeback(struct store *s, uint64_t offset, const void *buf, size_t len)
{
        return s->ops->writeback(s, offset, buf, len);
}
void store_free(struct store *s);

/* A copy of S as it is now: same size and geometry, its own storage, owned by
 * *RET (store_free frees it). Later writes to either never show in the other.
 * On appliances a metadata operation (xmem_region_clone of each region, the
 * chunks shared copy-on-write); -EOPNOTSUPP for stores that cannot (a file).
 * The caller makes sure nothing writes to S meanwhile (residency_flush_arena). */
int store_clone(struct store *s, struct store **ret, struct xmem_error *err);

/* A store on a local file descriptor (a file, a memfd): pread/pwrite. FD is
 * taken over. For the memory-mapped-file external type and for tests of the
 * engine alone. */
int store_file_new(int fd, uint64_t size, struct store **ret);

struct xmem_transport;

/* SIZE bytes on appliances: one region of SIZE/N (chunk-striped) per
 * transport, allocated with xmem_region_alloc and freed by store_free. Chunk
 * I of the arena lives on transport I % N at offset (I / N) * STRIPE.
 * Transports are borrowed (they must outlive the store). */
int store_xmem_new(struct xmem_transport *const *transports, size_t n, uint64_t size,
                   uint32_t stripe, struct store **ret, struct xmem_error *err);
