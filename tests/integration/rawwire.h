/* rawwire.h: raw appliance frames for tests that must control every byte
 * (malformed frames, pipelining, stalled clients). Test-local, header-only. */
#pragma once

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdio.h"
#include "wire.h"

static inline struct xmem_wire_hdr raw_hdr(uint16_t op, uint32_t tag)
{
        return (struct xmem_wire_hdr){ .magic = XMEM_WIRE_MAGIC, .version = XMEM_WIRE_VERSION,
                                       .op = op, .tag = tag };
}

static inline int raw_send(int fd, const struct xmem_wire_hdr *h, const void *payload)
{
        uint8_t buf[XMEM_WIRE_HDR_SIZE];
        int r;

        wire_hdr_encode(h, buf);
        r = write_full(fd, buf, sizeof(buf));
        if (r == 0 && h->payload_len && payload)
                r = write_full(fd, payload, h->payload_len);
        return r;
}

/* Read one reply; its payload (up to MAX bytes) into BUF. */
static inline int raw_recv(int fd, struct xmem_wire_hdr *rep, void *buf, size_t max)
{
        uint8_t hdr[XMEM_WIRE_HDR_SIZE];
        struct xmem_error err = {};
        int r;

        r = read_full(fd, hdr, sizeof(hdr));
        if (r < 0)
                return r;
        r = wire_hdr_decode(hdr, true, rep, &err);
        cr_assert_eq(r, 0, "reply does not decode: %s", xmem_error_str(&err));
        cr_assert_leq(rep->payload_len, max, "reply payload of %u bytes", rep->payload_len);
        return read_full(fd, buf, rep->payload_len);
}

/* One request, one reply (same tag); returns the reply status. */
static inline int raw_call(int fd, struct xmem_wire_hdr *req, const void *payload,
                           struct xmem_wire_hdr *rep, void *buf, size_t max)
{
        struct xmem_wire_hdr tmp;
        uint8_t scratch[64];

        if (!rep)
                rep = &tmp;
        if (!buf) {
                buf = scratch;
                max = sizeof(scratch);
        }
        cr_assert_eq(raw_send(fd, req, payload), 0);
        cr_assert_eq(raw_recv(fd, rep, buf, max), 0, "no reply to %s", wire_op_name(req->op));
        cr_assert_eq(rep->op, req->op | XMEM_OP_REPLY);
        cr_assert_eq(rep->tag, req->tag);
        return rep->status;
}

static inline void raw_alloc(int fd, uint64_t size, uint64_t *id, uint8_t key[XMEM_KEY_SIZE])
{
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_ALLOC, 1), rep;

        req.arg = size;
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, NULL, 0), 0, "alloc");
        cr_assert_geq(rep.arg, size);
        *id = rep.region;
        memcpy(key, rep.key, XMEM_KEY_SIZE);
}

static inline int raw_io(int fd, uint16_t op, uint64_t id, const uint8_t *key, uint64_t off,
                         void *buf, size_t len)
{
        struct xmem_wire_hdr req = raw_hdr(op, 7), rep;

        req.region = id;
        memcpy(req.key, key, XMEM_KEY_SIZE);
        req.offset = off;
        req.length = len;
        req.payload_len = op == XMEM_OP_WRITE ? (uint32_t)len : 0;
        return raw_call(fd, &req, buf, &rep, buf, len);
}
#define raw_write(fd, id, key, off, buf, len) raw_io(fd, XMEM_OP_WRITE, id, key, off, buf, len)
#define raw_read(fd, id, key, off, buf, len) raw_io(fd, XMEM_OP_READ, id, key, off, buf, len)

/* Region-level op with no payload (FREE, SNAPSHOT, CLONE, RESIZE, STATS). */
static inline int raw_op(int fd, uint16_t op, uint64_t id, const uint8_t *key, uint64_t arg,
                         struct xmem_wire_hdr *rep)
{
        struct xmem_wire_hdr req = raw_hdr(op, 9);

        req.region = id;
        if (key)
                memcpy(req.key, key, XMEM_KEY_SIZE);
        req.arg = arg;
        return raw_call(fd, &req, NULL, rep, NULL, 0);
}

/* True once the peer closed FD (EOF or reset) within TIMEOUT_MS; drains data. */
static inline bool raw_closed(int fd, int timeout_ms)
{
        struct pollfd p = { .fd = fd, .events = POLLIN };
        uint8_t buf[4096];

        for (;;) {
                if (poll(&p, 1, timeout_ms) <= 0)
                        return false;
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n == 0 || (n < 0 && errno == ECONNRESET))
                        return true;
                if (n < 0)
                        return false;
        }
}
