/* wire.c: the appliance frame codec. Decoders never trust their input. */
#include <errno.h>
#include <string.h>

#include "wire.h"

static const char *const op_names[] = {
        [XMEM_OP_HELLO] = "hello",       [XMEM_OP_ALLOC] = "alloc",
        [XMEM_OP_FREE] = "free",         [XMEM_OP_RESIZE] = "resize",
        [XMEM_OP_READ] = "read",         [XMEM_OP_WRITE] = "write",
        [XMEM_OP_READV] = "readv",       [XMEM_OP_WRITEV] = "writev",
        [XMEM_OP_SNAPSHOT] = "snapshot", [XMEM_OP_CLONE] = "clone",
        [XMEM_OP_REVERT] = "revert",     [XMEM_OP_COPY] = "copy",
        [XMEM_OP_STATS] = "stats",       [XMEM_OP_SHM_ATTACH] = "shm-attach",
        [XMEM_OP_SHM_MAP] = "shm-map",   [XMEM_OP_AUTH] = "auth",
};

const char *wire_op_name(uint16_t op)
{
        op &= (uint16_t)~XMEM_OP_REPLY;
        if (op == 0 || op >= XMEM_OP_MAX_)
                return "unknown";
        return op_names[op];
}

void wire_hdr_encode(const struct xmem_wire_hdr *h, uint8_t out[XMEM_WIRE_HDR_SIZE])
{
        wire_put_u32(out + 0, h->magic);
        wire_put_u16(out + 4, h->version);
        wire_put_u16(out + 6, h->op);
        wire_put_u32(out + 8, h->tag);
        wire_put_u32(out + 12, (uint32_t)h->status);
        wire_put_u64(out + 16, h->region);
        memcpy(out + 24, h->key, XMEM_KEY_SIZE);
        wire_put_u64(out + 40, h->offset);
        wire_put_u64(out + 48, h->length);
        wire_put_u64(out + 56, h->arg);
        wire_put_u32(out + 64, h->payload_len);
        wire_put_u32(out + 68, h->reserved);
}

/* Request payload rules per op; replies are checked by the caller that knows
 * what it asked for, beyond the global limit. */
static int check_request(const struct xmem_wire_hdr *h, struct xmem_error *err)
{
        const char *name = wire_op_name(h->op);

        switch (h->op) {
        case XMEM_OP_READ:
        case XMEM_OP_WRITE:
        case XMEM_OP_SHM_MAP:
                if (h->length == 0 || (h->op != XMEM_OP_SHM_MAP && h->length > XMEM_WIRE_MAX_IO))
                        return xmem_error_set(err, -EMSGSIZE, "%s: length %llu outside 1..%u",
                                              name, (unsigned long long)h->length,
                                              XMEM_WIRE_MAX_IO);
                if (h->offset > XMEM_WIRE_MAX_REGION_SIZE ||
                    h->length > XMEM_WIRE_MAX_REGION_SIZE - h->offset)
                        return xmem_error_set(err, -ERANGE, "%s: offset+length overflow", name);
                if (h->payload_len != (h->op == XMEM_OP_WRITE ? h->length : 0))
                        return xmem_error_set(err, -EBADMSG,
                                              "%s: payload_len %u does not match length %llu",
                                              name, h->payload_len,
                                              (unsigned long long)h->length);
                return 0;
        case XMEM_OP_READV:
        case XMEM_OP_WRITEV: {
                uint64_t segs_len;
                if (h->arg == 0 || h->arg > XMEM_WIRE_MAX_SEGS)
                        return xmem_error_set(err, -EMSGSIZE, "%s: segment count %llu outside 1..%u",
                                              name, (unsigned long long)h->arg,
                                              XMEM_WIRE_MAX_SEGS);
                if (h->length == 0 || h->length > XMEM_WIRE_MAX_IO)
                        return xmem_error_set(err, -EMSGSIZE, "%s: length %llu outside 1..%u",
                                              name, (unsigned long long)h->length,
                                              XMEM_WIRE_MAX_IO);
                segs_len = h->arg * XMEM_WIRE_SEG_SIZE;
                if (h->payload_len != segs_len + (h->op == XMEM_OP_WRITEV ? h->length : 0))
                        return xmem_error_set(err, -EBADMSG,
                                              "%s: payload_len %u does not match %llu segments",
                                              name, h->payload_len, (unsigned long long)h->arg);
                return 0;
        }
        case XMEM_OP_REVERT:
                if (h->payload_len != XMEM_KEY_SIZE)
                        return xmem_error_set(err, -EBADMSG, "revert: payload must be a %d-byte key",
                                              XMEM_KEY_SIZE);
                return 0;
        case XMEM_OP_COPY:
                if (h->payload_len != XMEM_WIRE_COPY_SIZE)
                        return xmem_error_set(err, -EBADMSG, "copy: payload must be %d bytes",
                                              XMEM_WIRE_COPY_SIZE);
                if (h->length == 0 || h->offset > XMEM_WIRE_MAX_REGION_SIZE ||
                    h->length > XMEM_WIRE_MAX_REGION_SIZE - h->offset)
                        return xmem_error_set(err, -ERANGE, "copy: bad offset/length");
                return 0;
        case XMEM_OP_AUTH:
                if (h->arg != XMEM_AUTH_CHALLENGE && h->arg != XMEM_AUTH_PROVE)
                        return xmem_error_set(err, -EBADMSG, "auth: unknown step %llu",
                                              (unsigned long long)h->arg);
                if (h->payload_len !=
                    (h->arg == XMEM_AUTH_PROVE ? XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE : 0))
                        return xmem_error_set(err, -EBADMSG, "auth: payload_len %u wrong for step %llu",
                                              h->payload_len, (unsigned long long)h->arg);
                return 0;
        case XMEM_OP_ALLOC:
        case XMEM_OP_RESIZE:
                if (h->arg > XMEM_WIRE_MAX_REGION_SIZE)
                        return xmem_error_set(err, -EMSGSIZE, "%s: size %llu over the %llu limit",
                                              name, (unsigned long long)h->arg,
                                              (unsigned long long)XMEM_WIRE_MAX_REGION_SIZE);
                __attribute__((fallthrough));
        default:
                if (h->payload_len != 0)
                        return xmem_error_set(err, -EBADMSG, "%s: unexpected payload", name);
                return 0;
        }
}

int wire_hdr_decode(const uint8_t in[XMEM_WIRE_HDR_SIZE], bool is_reply,
                    struct xmem_wire_hdr *ret, struct xmem_error *err)
{
        struct xmem_wire_hdr h;
        uint16_t base;

        h.magic = wire_get_u32(in + 0);
        h.version = wire_get_u16(in + 4);
        h.op = wire_get_u16(in + 6);
        h.tag = wire_get_u32(in + 8);
        h.status = (int32_t)wire_get_u32(in + 12);
        h.region = wire_get_u64(in + 16);
        memcpy(h.key, in + 24, XMEM_KEY_SIZE);
        h.offset = wire_get_u64(in + 40);
        h.length = wire_get_u64(in + 48);
        h.arg = wire_get_u64(in + 56);
        h.payload_len = wire_get_u32(in + 64);
        h.reserved = wire_get_u32(in + 68);

        if (h.magic != XMEM_WIRE_MAGIC)
                return xmem_error_set(err, -EBADMSG, "bad magic 0x%08x", h.magic);
        if (h.version != XMEM_WIRE_VERSION)
                return xmem_error_set(err, -EPROTONOSUPPORT, "unsupported version %u", h.version);
        if (!!(h.op & XMEM_OP_REPLY) != is_reply)
                return xmem_error_set(err, -EBADMSG, "%s where a %s was expected",
                                      is_reply ? "request" : "reply",
                                      is_reply ? "reply" : "request");
        base = h.op & (uint16_t)~XMEM_OP_REPLY;
        if (base == 0 || base >= XMEM_OP_MAX_)
                return xmem_error_set(err, -EBADMSG, "unknown op %u", base);
        if (h.reserved != 0)
                return xmem_error_set(err, -EBADMSG, "reserved field is %u, must be 0", h.reserved);
        if (h.payload_len > XMEM_WIRE_MAX_PAYLOAD)
                return xmem_error_set(err, -EMSGSIZE, "payload_len %u over the %u limit",
                                      h.payload_len, XMEM_WIRE_MAX_PAYLOAD);
        if (is_reply) {
                if (h.status > 0 || h.status < -4095)
                        return xmem_error_set(err, -EBADMSG, "bad status %d", h.status);
                if (h.status < 0 && h.payload_len != 0)
                        return xmem_error_set(err, -EBADMSG, "error reply carries a payload");
        } else {
                int r;
                if (h.status != 0)
                        return xmem_error_set(err, -EBADMSG, "request with status %d", h.status);
                r = check_request(&h, err);
                if (r < 0)
                        return r;
        }
        *ret = h;
        return 0;
}

void wire_hello_encode(const struct xmem_wire_hello *h, uint8_t out[XMEM_WIRE_HELLO_SIZE])
{
        wire_put_u32(out + 0, h->version);
        wire_put_u32(out + 4, h->features);
        wire_put_u64(out + 8, h->chunk_size);
        wire_put_u64(out + 16, h->pool_size);
        wire_put_u64(out + 24, h->max_io);
}

int wire_hello_decode(const uint8_t *in, size_t len, struct xmem_wire_hello *ret,
                      struct xmem_error *err)
{
        struct xmem_wire_hello h;

        if (len != XMEM_WIRE_HELLO_SIZE)
                return xmem_error_set(err, -EBADMSG, "hello: %zu bytes, expected %d", len,
                                      XMEM_WIRE_HELLO_SIZE);
        h.version = wire_get_u32(in + 0);
        h.features = wire_get_u32(in + 4);
        h.chunk_size = wire_get_u64(in + 8);
        h.pool_size = wire_get_u64(in + 16);
        h.max_io = wire_get_u64(in + 24);
        if (h.chunk_size < 4096 || (h.chunk_size & (h.chunk_size - 1)) ||
            h.chunk_size > XMEM_WIRE_MAX_IO)
                return xmem_error_set(err, -EBADMSG, "hello: bad chunk size %llu",
                                      (unsigned long long)h.chunk_size);
        if (h.max_io == 0 || h.max_io > XMEM_WIRE_MAX_IO)
                return xmem_error_set(err, -EBADMSG, "hello: bad max_io %llu",
                                      (unsigned long long)h.max_io);
        *ret = h;
        return 0;
}

void wire_segs_encode(const struct xmem_wire_seg *segs, size_t nseg, uint8_t *out)
{
        for (size_t i = 0; i < nseg; i++) {
                wire_put_u64(out + i * XMEM_WIRE_SEG_SIZE, segs[i].offset);
                wire_put_u64(out + i * XMEM_WIRE_SEG_SIZE + 8, segs[i].length);
        }
}

int wire_segs_decode(const uint8_t *in, size_t nseg, uint64_t total, struct xmem_wire_seg *ret,
                     struct xmem_error *err)
{
        uint64_t sum = 0;

        for (size_t i = 0; i < nseg; i++) {
                uint64_t off = wire_get_u64(in + i * XMEM_WIRE_SEG_SIZE);
                uint64_t len = wire_get_u64(in + i * XMEM_WIRE_SEG_SIZE + 8);
                if (len == 0)
                        return xmem_error_set(err, -EBADMSG, "segment %zu is empty", i);
                if (off > XMEM_WIRE_MAX_REGION_SIZE || len > XMEM_WIRE_MAX_REGION_SIZE - off)
                        return xmem_error_set(err, -ERANGE, "segment %zu overflows", i);
                if (len > total - sum)
                        return xmem_error_set(err, -EBADMSG,
                                              "segments add up to more than length %llu",
                                              (unsigned long long)total);
                sum += len;
                ret[i].offset = off;
                ret[i].length = len;
        }
        if (sum != total)
                return xmem_error_set(err, -EBADMSG, "segments add up to %llu, length is %llu",
                                      (unsigned long long)sum, (unsigned long long)total);
        return 0;
}

void wire_extents_encode(const struct xmem_wire_extent *ext, size_t n, uint8_t *out)
{
        for (size_t i = 0; i < n; i++) {
                wire_put_u64(out + i * XMEM_WIRE_EXTENT_SIZE, ext[i].region_offset);
                wire_put_u64(out + i * XMEM_WIRE_EXTENT_SIZE + 8, ext[i].pool_offset);
                wire_put_u64(out + i * XMEM_WIRE_EXTENT_SIZE + 16, ext[i].length);
        }
}

int wire_extents_decode(const uint8_t *in, size_t len, struct xmem_wire_extent *ret, size_t max,
                        size_t *ret_n, struct xmem_error *err)
{
        size_t n;

        if (len % XMEM_WIRE_EXTENT_SIZE)
                return xmem_error_set(err, -EBADMSG, "extent list of %zu bytes", len);
        n = len / XMEM_WIRE_EXTENT_SIZE;
        if (n > max)
                return xmem_error_set(err, -EMSGSIZE, "%zu extents, room for %zu", n, max);
        for (size_t i = 0; i < n; i++) {
                const uint8_t *p = in + i * XMEM_WIRE_EXTENT_SIZE;
                struct xmem_wire_extent e = {
                        .region_offset = wire_get_u64(p),
                        .pool_offset = wire_get_u64(p + 8),
                        .length = wire_get_u64(p + 16),
                };
                if (e.length == 0 || e.length > XMEM_WIRE_MAX_REGION_SIZE ||
                    e.region_offset > XMEM_WIRE_MAX_REGION_SIZE - e.length)
                        return xmem_error_set(err, -EBADMSG, "extent %zu out of range", i);
                if (e.pool_offset != XMEM_WIRE_NO_POOL_OFFSET &&
                    e.pool_offset > UINT64_MAX - e.length)
                        return xmem_error_set(err, -EBADMSG, "extent %zu pool offset overflows", i);
                ret[i] = e;
        }
        *ret_n = n;
        return 0;
}

void wire_copy_encode(const struct xmem_wire_copy *c, uint8_t out[XMEM_WIRE_COPY_SIZE])
{
        wire_put_u64(out, c->dst_region);
        memcpy(out + 8, c->dst_key, XMEM_KEY_SIZE);
        wire_put_u64(out + 8 + XMEM_KEY_SIZE, c->dst_offset);
        memset(out + 16 + XMEM_KEY_SIZE, 0, XMEM_WIRE_URI_MAX);
        memcpy(out + 16 + XMEM_KEY_SIZE, c->dst_uri, strnlen(c->dst_uri, XMEM_WIRE_URI_MAX - 1));
}

int wire_copy_decode(const uint8_t *in, size_t len, struct xmem_wire_copy *ret,
                     struct xmem_error *err)
{
        struct xmem_wire_copy c;
        const uint8_t *uri = in + 16 + XMEM_KEY_SIZE;

        if (len != XMEM_WIRE_COPY_SIZE)
                return xmem_error_set(err, -EBADMSG, "copy: %zu bytes, expected %d", len,
                                      XMEM_WIRE_COPY_SIZE);
        if (!memchr(uri, 0, XMEM_WIRE_URI_MAX))
                return xmem_error_set(err, -EBADMSG, "copy: destination uri not terminated");
        c.dst_region = wire_get_u64(in);
        memcpy(c.dst_key, in + 8, XMEM_KEY_SIZE);
        c.dst_offset = wire_get_u64(in + 8 + XMEM_KEY_SIZE);
        memcpy(c.dst_uri, uri, XMEM_WIRE_URI_MAX);
        if (c.dst_offset > XMEM_WIRE_MAX_REGION_SIZE)
                return xmem_error_set(err, -ERANGE, "copy: destination offset out of range");
        *ret = c;
        return 0;
}
