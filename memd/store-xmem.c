/* store-xmem.c: a store on appliance regions through lib/transport, striped
 * chunk by chunk over one or more appliances. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* Split [OFFSET, OFFSET+LEN) at stripe boundaries and run OP on each piece. */
static int xmem_each(struct store_xmem *x, uint64_t offset, void *buf, size_t len, bool write)
{
        if (offset > x->base.size || len > x->base.size - offset)
                return -ERANGE;
        while (len > 0) {
                uint64_t stripe_no = offset / x->stripe, in = offset % x->stripe;
                size_t i = stripe_no % x->n, piece = MIN(len, x->stripe - in);
                uint64_t roff = (stripe_no / x->n) * x->stripe + in;
                int r = write ? xmem_write(x->t[i], &x->region[i], roff, buf, piece)
                              : xmem_read(x->t[i], &x->region[i], roff, buf, piece);
                if (r < 0)
                        return r;
                offset += piece;
                buf = (char *)buf + piece;
                len -= piece;
        }
        return 0;
}

static int xmem_fetch(struct store *s, uint64_t offset, void *buf, size_t len)
{
        return xmem_each((struct store_xmem *)s, offset, buf, len, false);
}

static int xmem_writeback(struct store *s, uint64_t offset, const void *buf, size_t len)
{
        return xmem_each((struct store_xmem *)s, offset, (void *)buf, len, true);
}

static void xmem_free(struct store *s)
{
        struct store_xmem *x = (struct store_xmem *)s;

        for (size_t i = 0; i < x->n_alloc; i++)
                (void)xmem_region_free(x->t[i], &x->region[i]);
        free(x->t);
        free(x->region);
        free(x);
}

static int xmem_clone(struct store *s, struct store **ret, struct xmem_error *err);

static const struct store_ops store_xmem_ops = {
        .fetch = xmem_fetch,
        .writeback = xmem_writeback,
        .free = xmem_free,
        .clone = xmem_clone,
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
        struct store_xmem *x = (struct store_xmem *)s, *c;

        c = xmem_alloc(x->base.size, x->n, x->stripe);
        if (!c)
                return xmem_error_set(err, -ENOMEM, "store: out of memory");
        for (size_t i = 0; i < x->n; i++) {
                int r;

                c->t[i] = x->t[i];
                r = xmem_region_clone(x->t[i], &x->region[i], &c->region[i]);
                if (r < 0) {
                        xmem_free(&c->base);
                        return xmem_error_set(err, r, "store: cloning region %llu on %s: %s",
                                              (unsigned long long)x->region[i].id,
                                              xmem_transport_uri(x->t[i]), strerror(-r));
                }
                c->n_alloc++;
        }
        *ret = &c->base;
        return 0;
}

int store_xmem_new(struct xmem_transport *const *transports, size_t n, uint64_t size,
                   uint32_t stripe, struct store **ret, struct xmem_error *err)
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
                r = xmem_region_alloc(transports[i], per, &x->region[i], &got);
                if (r >= 0) {
                        x->n_alloc++;
                        if (got < per)
                                r = -ENOSPC;
                }
                if (r < 0) {
                        xmem_free(&x->base);
                        return xmem_error_set(err, r, "store: region of %llu bytes on %s",
                                              (unsigned long long)per,
                                              xmem_transport_uri(transports[i]));
                }
        }
        *ret = &x->base;
        return 0;
}
