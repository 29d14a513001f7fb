/* store-xmem.c: a store on appliance regions through lib/transport, striped
 * chunk by chunk over one or more appliances. */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "store.h"
#include "transport/transport.h"

struct store_xmem {
        struct store base;
        size_t n;
        size_t n_alloc; /* regions allocated so far (freed by xmem_free) */
        uint32_t stripe;
        struct xmem_transport **t;
        struct xmem_region_ref *region;
};

#define XMEM_PIPELINE 64 /* pieces in flight per call */

static void piece_of(const struct store_xmem *x, uint64_t offset, size_t len, size_t *ret_i,
                     uint64_t *ret_roff, size_t *ret_piece)
{
        uint64_t stripe_no = offset / x->stripe, in = offset % x->stripe;

        *ret_i = stripe_no % x->n;
        *ret_piece = MIN(len, x->stripe - in);
        *ret_roff = (stripe_no / x->n) * x->stripe + in;
}

/* Cut the N stretches SEGS (data concatenated in BUF) at stripe boundaries;
 * submit up to XMEM_PIPELINE pieces at once (asynchronously, each to its
 * appliance) and reap them, so a large fill or a batch of write-backs has
 * many requests in flight. */
static int xmem_segs(struct store_xmem *x, const struct store_seg *segs, size_t nseg, void *buf,
                     bool write)
{
        size_t si = 0;
        uint64_t in_seg = 0;

        for (size_t i = 0; i < nseg; i++)
                if (!store_in_range(&x->base, segs[i].offset, segs[i].len))
                        return -ERANGE;
        while (si < nseg) {
                struct xmem_io io[XMEM_PIPELINE], *per[XMEM_PIPELINE];
                size_t n = 0, n_on[XMEM_PIPELINE] = {0};
                int ret = 0;

                for (; si < nseg && n < XMEM_PIPELINE; n++) {
                        uint64_t offset = segs[si].offset + in_seg, roff;
                        size_t i, piece;
                        piece_of(x, offset, segs[si].len - in_seg, &i, &roff, &piece);
                        piece = MIN(piece, (size_t)xmem_transport_hello(x->t[i])->max_io);
                        io[n] = (struct xmem_io){.op = write ? XMEM_OP_WRITE : XMEM_OP_READ,
                                                 .region = x->region[i],
                                                 .offset = roff,
                                                 .buf = buf,
                                                 .len = piece,
                                                 .user = (void *)(uintptr_t)i};
                        buf = (char *)buf + piece;
                        in_seg += piece;
                        if (in_seg == segs[si].len) {
                                si++;
                                in_seg = 0;
                        }
                }
                /* one submit per appliance, then reap each appliance's count */
                for (size_t i = 0; i < x->n && i < XMEM_PIPELINE; i++) {
                        size_t k = 0;
                        for (size_t j = 0; j < n; j++)
                                if ((uintptr_t)io[j].user == i)
                                        per[k++] = &io[j];
                        if (k && xmem_transport_submit(x->t[i], per, k) >= 0)
                                n_on[i] = k;
                        else if (k)
                                ret = -EIO;
                }
                for (size_t i = 0; i < x->n && i < XMEM_PIPELINE; i++)
                        while (n_on[i] > 0) {
                                int got =
                                    xmem_transport_reap(x->t[i], per, n_on[i], (int)n_on[i], -1);
                                if (got < 0) {
                                        ret = ret ?: got;
                                        break;
                                }
                                for (int j = 0; j < got; j++)
                                        ret = ret ?: per[j]->result;
                                n_on[i] -= (size_t)got;
                        }
                if (ret < 0)
                        return ret;
        }
        return 0;
}

static int xmem_writeback_v(struct store *s, const struct store_seg *segs, size_t n,
                            const void *buf)
{
        return xmem_segs((struct store_xmem *)s, segs, n, (void *)buf, true);
}

static int xmem_fetch(struct store *s, uint64_t offset, void *buf, size_t len)
{
        struct store_seg seg = {offset, len};

        return xmem_segs((struct store_xmem *)s, &seg, 1, buf, false);
}

static int xmem_writeback(struct store *s, uint64_t offset, const void *buf, size_t len)
{
        struct store_seg seg = {offset, len};

        return xmem_segs((struct store_xmem *)s, &seg, 1, (void *)buf, true);
}

struct nowait_io {
        struct xmem_io io;
        void (*done)(void *ctx, int result);
        void *ctx;
};

static void nowait_complete(struct xmem_io *io)
{
        struct nowait_io *w = (struct nowait_io *)io;
        void (*done)(void *, int) = w->done;
        void *ctx = w->ctx;
        int result = io->result;

        free(w);
        done(ctx, result);
}

/* One piece on one appliance only: a fault's page, never a stream's unit. */
static int xmem_fetch_nowait(struct store *s, uint64_t offset, void *buf, size_t len,
                             void (*done)(void *ctx, int result), void *ctx)
{
        struct store_xmem *x = (struct store_xmem *)s;
        struct nowait_io *w;
        uint64_t roff;
        size_t i, piece;
        int r;

        if (!store_in_range(&x->base, offset, len))
                return -ERANGE;
        piece_of(x, offset, len, &i, &roff, &piece);
        if (piece != len || len > xmem_transport_hello(x->t[i])->max_io)
                return -EOPNOTSUPP;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -EAGAIN;
        w->io = (struct xmem_io){ .op = XMEM_OP_READ, .region = x->region[i], .offset = roff,
                                  .buf = buf, .len = len, .complete = nowait_complete };
        w->done = done;
        w->ctx = ctx;
        r = xmem_transport_submit_nowait(x->t[i], &w->io);
        if (r < 0)
                free(w);
        return r;
}

struct direct_ctx {
        store_direct_fn fn;
        void *ctx;
        uint64_t at;
};

static int direct_piece(void *ctx, uint64_t at, void *pool, uint64_t len)
{
        struct direct_ctx *d = ctx;

        return d->fn(d->ctx, d->at + at, pool, len);
}

static int xmem_direct_each(struct store *s, uint64_t offset, uint64_t len, bool write,
                            store_direct_fn fn, void *ctx)
{
        struct store_xmem *x = (struct store_xmem *)s;
        struct direct_ctx d = {fn, ctx, 0};

        if (!store_in_range(&x->base, offset, len))
                return -ERANGE;
        while (d.at < len) {
                size_t i, piece;
                uint64_t roff;
                int r;

                piece_of(x, offset + d.at, len - d.at, &i, &roff, &piece);
                r = xmem_direct(x->t[i], &x->region[i], roff, piece, write, direct_piece, &d);
                if (r < 0)
                        return r;
                d.at += piece;
        }
        return 0;
}

/* A free that timed out or lost its connection is sent again (freeing a
 * freed region answers ENOENT): an appliance stopped for a while still gets
 * it. Bounded: STORE_FREE_TRIES requests, each within the transport's timeout.
 * memd calls this off its event loop (memd/reap.c). */
#define STORE_FREE_TRIES 4

static void region_free_retrying(struct xmem_transport *t, const struct xmem_region_ref *ref)
{
        for (int i = 0; i < STORE_FREE_TRIES; i++) {
                int r = xmem_region_free(t, ref);
                if (r != -ETIMEDOUT && r != -ECONNRESET && r != -EPIPE && r != -ENOTCONN &&
                    r != -ECONNREFUSED && r != -EAGAIN)
                        return;
                usleep(100000U << i);
        }
}

static void xmem_free(struct store *s)
{
        struct store_xmem *x = (struct store_xmem *)s;

        for (size_t i = 0; i < x->n_alloc; i++)
                region_free_retrying(x->t[i], &x->region[i]);
        free(x->t);
        free(x->region);
        free(x);
}

static int xmem_clone(struct store *s, struct store **ret, struct xmem_error *err);

static bool xmem_has_direct(const struct store *s)
{
        const struct store_xmem *x = (const struct store_xmem *)s;

        for (size_t i = 0; i < x->n; i++)
                if (!xmem_transport_has_direct(x->t[i]))
                        return false;
        return true;
}

static const struct store_ops store_xmem_ops = {
    .fetch = xmem_fetch,
    .writeback = xmem_writeback,
    .free = xmem_free,
    .clone = xmem_clone,
    .direct = xmem_direct_each,
    .has_direct = xmem_has_direct,
    .writeback_v = xmem_writeback_v,
    .fetch_nowait = xmem_fetch_nowait,
};

static struct store_xmem *xmem_alloc(uint64_t size, size_t n, uint32_t stripe)
{
        struct store_xmem *x = calloc(1, sizeof(*x));

        if (!x)
                return NULL;
        x->base.ops = &store_xmem_ops;
        x->base.size = size;
        x->n = n;
        x->stripe = stripe;
        x->t = calloc(n, sizeof(*x->t));
        x->region = calloc(n, sizeof(*x->region));
        if (!x->t || !x->region) {
                xmem_free(&x->base);
                return NULL;
        }
        return x;
}

/* Each region cloned on its own appliance (a metadata copy, chunks shared
 * copy-on-write); the new store owns the clones. */
static int xmem_clone(struct store *s, struct store **ret, struct xmem_error *err)
{
        struct store_xmem *x = (struct store_xmem *)s;

        return store_xmem_clone_of(x->t, x->n, x->base.size, x->stripe, x->region, ret, err);
}

/* Regions for SIZE bytes over N transports: allocated anew (REFS NULL) or
 * the existing REFS re-opened (never freed by this store's failure). */
static int xmem_regions(struct xmem_transport *const *transports, size_t n, uint64_t size,
                        uint32_t stripe, const struct xmem_region_ref *refs, struct store **ret,
                        struct xmem_error *err)
{
        struct store_xmem *x;
        uint64_t per;

        if (n == 0 || stripe == 0 || size % stripe)
                return xmem_error_set(err, -EINVAL, "store: bad geometry");
        x = xmem_alloc(size, n, stripe);
        if (!x)
                return xmem_error_set(err, -ENOMEM, "store: out of memory");
        per = DIV_ROUND_UP(size / stripe, n) * stripe;
        for (size_t i = 0; i < n; i++) {
                uint64_t got = 0;
                int r;

                x->t[i] = transports[i];
                if (refs) {
                        x->region[i] = refs[i];
                        r = xmem_region_open(transports[i], &refs[i], &got);
                } else if ((r = xmem_region_alloc(transports[i], per, &x->region[i], &got)) >= 0)
                        x->n_alloc++;
                if (r >= 0 && got < per)
                        r = refs ? -ERANGE : -ENOSPC;
                if (r < 0) {
                        xmem_error_set(err, r, "store: region %llu (%llu bytes) on %s: %s",
                                       (unsigned long long)x->region[i].id,
                                       (unsigned long long)per, xmem_transport_uri(transports[i]),
                                       strerror(-r));
                        xmem_free(&x->base); /* after the message, which reads X */
                        return r;
                }
        }
        x->n_alloc = n; /* re-opened ones are this store's to free too */
        *ret = &x->base;
        return 0;
}

int store_xmem_new(struct xmem_transport *const *transports, size_t n, uint64_t size,
                   uint32_t stripe, struct store **ret, struct xmem_error *err)
{
        return xmem_regions(transports, n, size, stripe, NULL, ret, err);
}

size_t store_xmem_regions(const struct store *s, struct xmem_transport *const **ret_t,
                          const struct xmem_region_ref **ret_refs)
{
        const struct store_xmem *x = (const struct store_xmem *)s;

        assert(s->ops == &store_xmem_ops);
        *ret_t = x->t;
        *ret_refs = x->region;
        return x->n;
}

void store_xmem_keep(struct store *s)
{
        struct store_xmem *x = (struct store_xmem *)s;

        if (s && s->ops == &store_xmem_ops)
                x->n_alloc = 0; /* xmem_free leaves the regions on their appliances */
}

int store_xmem_open(struct xmem_transport *const *transports, size_t n, uint64_t size,
                    uint32_t stripe, const struct xmem_region_ref *refs, struct store **ret,
                    struct xmem_error *err)
{
        return xmem_regions(transports, n, size, stripe, refs, ret, err);
}

int store_xmem_snapshot(struct store *s, struct xmem_region_ref *ret_snaps, struct xmem_error *err)
{
        struct store_xmem *x = (struct store_xmem *)s;

        assert(s->ops == &store_xmem_ops);
        for (size_t i = 0; i < x->n; i++) {
                int r = xmem_region_snapshot(x->t[i], &x->region[i], &ret_snaps[i]);
                if (r < 0) {
                        while (i-- > 0)
                                (void)xmem_region_free(x->t[i], &ret_snaps[i]);
                        return xmem_error_set(err, r, "snapshot of region %llu on %s: %s",
                                              (unsigned long long)x->region[i].id,
                                              xmem_transport_uri(x->t[i]), strerror(-r));
                }
        }
        return 0;
}

int store_xmem_revert(struct store *s, const struct xmem_region_ref *snaps, struct xmem_error *err)
{
        struct store_xmem *x = (struct store_xmem *)s;

        assert(s->ops == &store_xmem_ops);
        for (size_t i = 0; i < x->n; i++) {
                int r = xmem_region_revert(x->t[i], &x->region[i], &snaps[i]);
                if (r < 0)
                        return xmem_error_set(err, r, "reverting region %llu on %s: %s",
                                              (unsigned long long)x->region[i].id,
                                              xmem_transport_uri(x->t[i]), strerror(-r));
        }
        return 0;
}

int store_xmem_clone_of(struct xmem_transport *const *transports, size_t n, uint64_t size,
                        uint32_t stripe, const struct xmem_region_ref *snaps, struct store **ret,
                        struct xmem_error *err)
{
        struct store_xmem *c;

        if (n == 0 || stripe == 0 || size % stripe)
                return xmem_error_set(err, -EINVAL, "store: bad geometry");
        c = xmem_alloc(size, n, stripe);
        if (!c)
                return xmem_error_set(err, -ENOMEM, "store: out of memory");
        for (size_t i = 0; i < n; i++) {
                int r;

                c->t[i] = transports[i];
                r = xmem_region_clone(transports[i], &snaps[i], &c->region[i]);
                if (r < 0) {
                        xmem_free(&c->base);
                        return xmem_error_set(err, r, "store: cloning region %llu on %s: %s",
                                              (unsigned long long)snaps[i].id,
                                              xmem_transport_uri(transports[i]), strerror(-r));
                }
                c->n_alloc++;
        }
        *ret = &c->base;
        return 0;
}
