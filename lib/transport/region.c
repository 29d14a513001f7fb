/* region.c: region management (alloc, free, resize, snapshot, clone, revert,
 * copy, stats) and HELLO, built on ops->call for every transport. */
#include <errno.h>
#include <string.h>

#include "transport-internal.h"
#include "json-util.h"
#include "wire.h"

/* One control call with no reply payload expected unless RET_PAYLOAD. */
static int call(struct xmem_transport *t, const struct xmem_wire_hdr *req, const void *payload,
                struct xmem_wire_hdr *ret_reply, void **ret_payload)
{
        struct xmem_wire_hdr reply;
        void *p = NULL;
        int r;

        r = t->ops->call(t, req, payload, &reply, &p);
        if (r < 0)
                return transport_count_error(t, r);
        if (reply.status < 0) {
                free(p);
                return reply.status;
        }
        if (ret_payload)
                *ret_payload = p;
        else
                free(p);
        if (ret_reply)
                *ret_reply = reply;
        return 0;
}

/* Run a call that changes regions' mappings, with the invalidation hook around it. */
static int call_invalidating(struct xmem_transport *t, const uint64_t *regions, size_t n,
                             const struct xmem_wire_hdr *req, const void *payload,
                             struct xmem_wire_hdr *ret_reply)
{
        int r;

        if (t->invalidate)
                t->invalidate(t, regions, n, true);
        r = call(t, req, payload, ret_reply, NULL);
        if (t->invalidate)
                t->invalidate(t, regions, n, false);
        return r;
}

int transport_hello(struct xmem_transport *t, struct xmem_error *err)
{
        struct xmem_wire_hdr req, reply;
        _cleanup_free_ void *p = NULL;
        int r;

        transport_req_init(&req, XMEM_OP_HELLO, NULL);
        r = t->ops->call(t, &req, NULL, &reply, &p);
        if (r < 0)
                return xmem_error_set(err, r, "%s: hello: %s", t->uri, strerror(-r));
        if (reply.status < 0)
                return xmem_error_set(err, reply.status, "%s: hello refused: %s", t->uri,
                                      strerror(-reply.status));
        r = wire_hello_decode(p, reply.payload_len, &t->hello, err);
        if (r < 0)
                return xmem_error_prefix(err, "%s", t->uri);
        return 0;
}

int xmem_region_alloc(struct xmem_transport *t, uint64_t size, struct xmem_region_ref *ret,
                      uint64_t *ret_size)
{
        struct xmem_wire_hdr req, reply;
        int r;

        if (!t || !ret || size == 0 || size > XMEM_WIRE_MAX_REGION_SIZE)
                return -EINVAL;
        transport_req_init(&req, XMEM_OP_ALLOC, NULL);
        req.arg = size;
        r = call(t, &req, NULL, &reply, NULL);
        if (r < 0)
                return r;
        if (reply.region == 0 || reply.arg < size)
                return -EPROTO;
        ret->id = reply.region;
        memcpy(ret->key, reply.key, XMEM_KEY_SIZE);
        if (ret_size)
                *ret_size = reply.arg;
        return 0;
}

int xmem_region_free(struct xmem_transport *t, const struct xmem_region_ref *r)
{
        struct xmem_wire_hdr req;

        if (!t || !r)
                return -EINVAL;
        transport_req_init(&req, XMEM_OP_FREE, r);
        return call_invalidating(t, &r->id, 1, &req, NULL, NULL);
}

int xmem_region_resize(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t size,
                       uint64_t *ret_size)
{
        struct xmem_wire_hdr req, reply;
        int k;

        if (!t || !r || size > XMEM_WIRE_MAX_REGION_SIZE)
                return -EINVAL;
        transport_req_init(&req, XMEM_OP_RESIZE, r);
        req.arg = size;
        k = call_invalidating(t, &r->id, 1, &req, NULL, &reply);
        if (k < 0)
                return k;
        if (ret_size)
                *ret_size = reply.arg;
        return 0;
}

static int new_region(struct xmem_transport *t, uint16_t op, const struct xmem_region_ref *r,
                      struct xmem_region_ref *ret)
{
        struct xmem_wire_hdr req, reply;
        int k;

        if (!t || !r || !ret)
                return -EINVAL;
        transport_req_init(&req, op, r);
        k = call_invalidating(t, &r->id, 1, &req, NULL, &reply);
        if (k < 0)
                return k;
        if (reply.region == 0)
                return -EPROTO;
        ret->id = reply.region;
        memcpy(ret->key, reply.key, XMEM_KEY_SIZE);
        return 0;
}

int xmem_region_snapshot(struct xmem_transport *t, const struct xmem_region_ref *r,
                         struct xmem_region_ref *ret_snapshot)
{
        return new_region(t, XMEM_OP_SNAPSHOT, r, ret_snapshot);
}

int xmem_region_clone(struct xmem_transport *t, const struct xmem_region_ref *r,
                      struct xmem_region_ref *ret_clone)
{
        return new_region(t, XMEM_OP_CLONE, r, ret_clone);
}

int xmem_region_revert(struct xmem_transport *t, const struct xmem_region_ref *r,
                       const struct xmem_region_ref *snapshot)
{
        struct xmem_wire_hdr req;

        if (!t || !r || !snapshot)
                return -EINVAL;
        transport_req_init(&req, XMEM_OP_REVERT, r);
        req.arg = snapshot->id;
        req.payload_len = XMEM_KEY_SIZE;
        return call_invalidating(t, &r->id, 1, &req, snapshot->key, NULL);
}

int xmem_region_copy(struct xmem_transport *t, const struct xmem_region_ref *src,
                     uint64_t src_off, const char *dst_uri, const struct xmem_region_ref *dst,
                     uint64_t dst_off, uint64_t len)
{
        struct xmem_wire_copy c = { 0 };
        uint8_t payload[XMEM_WIRE_COPY_SIZE];
        struct xmem_wire_hdr req;
        uint64_t regions[2];
        bool local = !dst_uri || !*dst_uri;

        if (!t || !src || !dst || len == 0)
                return -EINVAL;
        if (!local && strlen(dst_uri) >= XMEM_WIRE_URI_MAX)
                return -ENAMETOOLONG;
        c.dst_region = dst->id;
        memcpy(c.dst_key, dst->key, XMEM_KEY_SIZE);
        c.dst_offset = dst_off;
        if (!local)
                snprintf(c.dst_uri, sizeof(c.dst_uri), "%s", dst_uri);
        wire_copy_encode(&c, payload);
        transport_req_init(&req, XMEM_OP_COPY, src);
        req.offset = src_off;
        req.length = len;
        req.payload_len = XMEM_WIRE_COPY_SIZE;
        /* a local copy may share chunks with the source: both mappings change */
        regions[0] = src->id;
        regions[1] = dst->id;
        return call_invalidating(t, regions, local ? 2 : 1, &req, payload, NULL);
}

int xmem_stats(struct xmem_transport *t, const struct xmem_region_ref *r, char **ret_json)
{
        struct xmem_wire_hdr req, reply;
        _cleanup_free_ char *p = NULL;
        char *s;
        int k;

        if (!t || !ret_json)
                return -EINVAL;
        transport_req_init(&req, XMEM_OP_STATS, r);
        k = call(t, &req, NULL, &reply, (void **)&p);
        if (k < 0)
                return k;
        s = malloc(reply.payload_len + 1);
        if (!s)
                return -ENOMEM;
        if (reply.payload_len)
                memcpy(s, p, reply.payload_len);
        s[reply.payload_len] = 0;
        *ret_json = s;
        return 0;
}

/* A region that exists already (a restarted memd re-adopting it): the
 * appliance checks its id and key and says its size (the region's STATS). */
int xmem_region_open(struct xmem_transport *t, const struct xmem_region_ref *r,
                     uint64_t *ret_size)
{
        _cleanup_free_ char *text = NULL;
        struct xmem_error err = {};
        json_object *o = NULL, *size;
        int k;

        if (!t || !r || r->id == 0)
                return -EINVAL;
        k = xmem_stats(t, r, &text);
        if (k < 0)
                return k;
        k = json_parse(text, strlen(text), &o, &err);
        if (k < 0)
                return -EPROTO;
        if (!json_object_object_get_ex(o, "size", &size) ||
            !json_object_is_type(size, json_type_int) || json_object_get_int64(size) <= 0)
                k = -EPROTO;
        else if (ret_size)
                *ret_size = (uint64_t)json_object_get_int64(size);
        json_object_put(o);
        return k;
}
