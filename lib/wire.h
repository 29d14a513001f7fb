/* wire.h (lib): encoding and strict decoding of appliance frames. Every
 * decoder validates against the limits of xmem/wire.h and explains a refusal
 * in one line through struct xmem_error. */
#pragma once

#include <stdbool.h>
#include <xmem/wire.h>

#include "error.h"

void wire_hdr_encode(const struct xmem_wire_hdr *h, uint8_t out[XMEM_WIRE_HDR_SIZE]);

/* Decode and validate a header: magic, version, known op, reserved = 0,
 * payload_len within limits and consistent with the op (see docs/wire.md).
 * IS_REPLY selects which direction is expected. */
int wire_hdr_decode(const uint8_t in[XMEM_WIRE_HDR_SIZE], bool is_reply,
                    struct xmem_wire_hdr *ret, struct xmem_error *err);

const char *wire_op_name(uint16_t op);

void wire_hello_encode(const struct xmem_wire_hello *h, uint8_t out[XMEM_WIRE_HELLO_SIZE]);
int wire_hello_decode(const uint8_t *in, size_t len, struct xmem_wire_hello *ret,
                      struct xmem_error *err);

/* Segments of READV/WRITEV: NSEG segments at IN; each must be non-empty, the
 * sum must equal TOTAL (the header's length) and no segment may overflow. */
void wire_segs_encode(const struct xmem_wire_seg *segs, size_t nseg, uint8_t *out);
int wire_segs_decode(const uint8_t *in, size_t nseg, uint64_t total, struct xmem_wire_seg *ret,
                     struct xmem_error *err);

void wire_extents_encode(const struct xmem_wire_extent *ext, size_t n, uint8_t *out);
int wire_extents_decode(const uint8_t *in, size_t len, struct xmem_wire_extent *ret,
                        size_t max, size_t *ret_n, struct xmem_error *err);

void wire_copy_encode(const struct xmem_wire_copy *c, uint8_t out[XMEM_WIRE_COPY_SIZE]);
int wire_copy_decode(const uint8_t *in, size_t len, struct xmem_wire_copy *ret,
                     struct xmem_error *err);

/* Little-endian helpers. */
static inline void wire_put_u16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}
static inline void wire_put_u32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}
static inline void wire_put_u64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t wire_get_u16(const uint8_t *p)
{
        return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t wire_get_u32(const uint8_t *p)
{
        uint32_t v = 0;
        for (int i = 3; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}
static inline uint64_t wire_get_u64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}
