/* store.h: where arena chunks live when they are not resident. The pager and
 * the residency manager see only fetch/writeback at arena offsets; behind them
 * sit appliance regions (striped by chunk over one or more transports) or a
 * local file. Implementations are thread-safe. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct store;

/* A piece of a direct access: AT bytes into it, LEN bytes of the store's own
 * memory at MEM (NULL: the store holds no data there, it reads as zeros). */
typedef int (*store_direct_fn)(void *ctx, uint64_t at, void *mem, uint64_t len);

/* One stretch of a scatter-gather write-back. */
struct store_seg {
        uint64_t offset, len;
};

struct store_ops {
        int (*fetch)(struct store *s, uint64_t offset, void *buf, size_t len);
        int (*writeback)(struct store *s, uint64_t offset, const void *buf, size_t len);
        void (*free)(struct store *s);
        /* Optional: a new store of the same geometry whose contents are a
         * copy-on-write copy of S's as they are now (see store_clone). */
        int (*clone)(struct store *s, struct store **ret, struct xmem_error *err);
        /* Optional: zero-copy access (see store_direct); NULL or -EOPNOTSUPP
         * where the data crosses a wire. */
        int (*direct)(struct store *s, uint64_t offset, uint64_t len, bool write,
                      store_direct_fn fn, void *ctx);
        bool (*has_direct)(const struct store *s);
        /* Optional: see store_fetch_nowait. */
        int (*fetch_nowait)(struct store *s, uint64_t offset, void *buf, size_t len,
                            void (*done)(void *ctx, int result), void *ctx);
        /* Optional: several stretches in one pipelined call (else one by one). */
        int (*writeback_v)(struct store *s, const struct store_seg *segs, size_t n,
                           const void *buf);
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

/* Does [OFFSET, OFFSET+LEN) lie within S? */
static inline bool store_in_range(const struct store *s, uint64_t offset, uint64_t len)
{
        return offset <= s->size && len <= s->size - offset;
}
/* Write N stretches whose data lie concatenated in BUF, with every request in
 * flight at once where the store can. */
int store_writeback_v(struct store *s, const struct store_seg *segs, size_t n, const void *buf);

/* Where the store's memory is mapped in memd (an appliance on the same host,
 * shm://): FN gets [OFFSET, OFFSET+LEN) piece by piece as pointers into it, so
 * a fill is one UFFDIO_COPY from the appliance's pool and a write-back one
 * pread() from the arena's memfd into it. FN must not call the store. Returns
 * FN's first error, -EOPNOTSUPP when the store has no direct access. */
static inline int store_direct(struct store *s, uint64_t offset, uint64_t len, bool write,
                               store_direct_fn fn, void *ctx)
{
        return s->ops->direct ? s->ops->direct(s, offset, len, write, fn, ctx) : -EOPNOTSUPP;
}
bool store_has_direct(const struct store *s);

/* Start fetching [OFFSET, OFFSET+LEN) into BUF only if that cannot block (a
 * connection up and free, one request): DONE(CTX, 0 or -errno) is then called
 * exactly once from the transport's thread, where it must not block. Returns
 * -EAGAIN or -EOPNOTSUPP when nothing was started. */
static inline int store_fetch_nowait(struct store *s, uint64_t offset, void *buf, size_t len,
                                     void (*done)(void *ctx, int result), void *ctx)
{
        return s->ops->fetch_nowait ? s->ops->fetch_nowait(s, offset, buf, len, done, ctx)
                                    : -EOPNOTSUPP;
}

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

struct xmem_region_ref;
/* A store_xmem_new store's regions: N transports and refs (borrowed). */
size_t store_xmem_regions(const struct store *s, struct xmem_transport *const **ret_t,
                          const struct xmem_region_ref **ret_refs);
/* store_free will leave S's regions on their appliances (a clean stop: a
 * restarted memd re-adopts them). No-op on other stores. */
void store_xmem_keep(struct store *s);
/* A store on existing regions REFS (one per transport, as store_xmem_new
 * made them), each checked on its appliance (xmem_region_open). */
int store_xmem_open(struct xmem_transport *const *transports, size_t n, uint64_t size,
                    uint32_t stripe, const struct xmem_region_ref *refs, struct store **ret,
                    struct xmem_error *err);

/* Checkpoints (memd/checkpoint.c): a read-only snapshot of each of S's
 * regions on its appliance (a metadata copy), into RET_SNAPS (one per
 * region, store_xmem_regions' order); none is left behind on failure. */
int store_xmem_snapshot(struct store *s, struct xmem_region_ref *ret_snaps, struct xmem_error *err);
/* Rollback: each of S's regions takes the contents of its snapshot SNAPS[i]
 * (the appliance's REVERT; the snapshot must be of that region). */
int store_xmem_revert(struct store *s, const struct xmem_region_ref *snaps, struct xmem_error *err);
/* A new store of SIZE over TRANSPORTS whose regions are copy-on-write
 * clones of SNAPS (one per transport): restore --new. */
int store_xmem_clone_of(struct xmem_transport *const *transports, size_t n, uint64_t size,
                        uint32_t stripe, const struct xmem_region_ref *snaps, struct store **ret,
                        struct xmem_error *err);
