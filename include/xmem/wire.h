/* xmem/wire.h: the appliance wire format (version 1), shared by the appliance
 * and every transport. All integers are little-endian on the wire; the structs
 * below are the decoded, host-order form. Documented in docs/wire.md. */
#pragma once

#include <stdint.h>
#include <stddef.h>

#define XMEM_WIRE_MAGIC 0x4d454d58u /* "XMEM" as little-endian bytes 'X','M','E','M' */
#define XMEM_WIRE_VERSION 1
#define XMEM_WIRE_HDR_SIZE 72
#define XMEM_KEY_SIZE 16

/* Limits: a frame outside them is malformed and closes the connection. */
#define XMEM_WIRE_MAX_IO (16u << 20)         /* data bytes of one READ/WRITE/READV/WRITEV */
#define XMEM_WIRE_MAX_SEGS 4096u             /* segments of one READV/WRITEV */
#define XMEM_WIRE_SEG_SIZE 16u               /* le64 offset, le64 length */
#define XMEM_WIRE_MAX_PAYLOAD (XMEM_WIRE_MAX_IO + XMEM_WIRE_MAX_SEGS * XMEM_WIRE_SEG_SIZE)
#define XMEM_WIRE_MAX_REGION_SIZE (1ULL << 46) /* 64 TiB */

/* Requests carry the op; replies carry op | XMEM_OP_REPLY and the request's tag. */
enum xmem_wire_op {
        XMEM_OP_HELLO = 1,      /* -> reply payload: struct xmem_wire_hello */
        XMEM_OP_ALLOC = 2,      /* arg = size -> region, key; arg = size rounded to chunks */
        XMEM_OP_FREE = 3,       /* region, key */
        XMEM_OP_RESIZE = 4,     /* region, key, arg = new size -> arg = size rounded */
        XMEM_OP_READ = 5,       /* region, key, offset, length -> payload: length bytes */
        XMEM_OP_WRITE = 6,      /* region, key, offset, length, payload: length bytes */
        XMEM_OP_READV = 7,      /* region, key, arg = nseg, length = sum of segment lengths,
                                 * payload: nseg segments -> payload: the data, concatenated */
        XMEM_OP_WRITEV = 8,     /* region, key, arg = nseg, length = sum, payload: segments
                                 * then the data, concatenated */
        XMEM_OP_SNAPSHOT = 9,   /* region, key -> region, key of a new read-only region */
        XMEM_OP_CLONE = 10,     /* region, key -> region, key of a new writable region */
        XMEM_OP_REVERT = 11,    /* region, key, arg = snapshot id, payload: snapshot key (16) */
        XMEM_OP_COPY = 12,      /* region, key (source), offset, length, payload:
                                 * struct xmem_wire_copy (destination) */
        XMEM_OP_STATS = 13,     /* region = 0: appliance; else region, key -> payload: JSON */
        XMEM_OP_SHM_ATTACH = 14, /* unix sockets only -> payload: struct xmem_wire_hello, and
                                 * the pool's fd attached to the reply (SCM_RIGHTS) */
        XMEM_OP_SHM_MAP = 15,   /* region, key, offset, length, arg = XMEM_MAP_* flags ->
                                 * payload: struct xmem_wire_extent[] covering the range */
        XMEM_OP_AUTH = 16,      /* tcp with a secret, before anything else (docs/appliance.md):
                                 * arg = XMEM_AUTH_CHALLENGE -> payload: server nonce;
                                 * arg = XMEM_AUTH_PROVE, payload: client nonce, client mac
                                 * -> payload: server mac */
        XMEM_OP_MAX_,
        XMEM_OP_REPLY = 0x8000,
};

/* XMEM_OP_SHM_MAP flags */
#define XMEM_MAP_WRITE 0x1u /* break copy-on-write and allocate chunks before replying */

/* XMEM_OP_AUTH steps (arg) and sizes. mac = HMAC-SHA256(secret, label |
 * server nonce | client nonce), label "xmem-auth-v1 client" or "... server". */
#define XMEM_AUTH_CHALLENGE 1
#define XMEM_AUTH_PROVE 2
#define XMEM_AUTH_NONCE_SIZE 32
#define XMEM_AUTH_MAC_SIZE 32

/* struct xmem_wire_hello.features */
#define XMEM_FEAT_SHM 0x1u         /* SHM_ATTACH/SHM_MAP served on this connection */
#define XMEM_FEAT_REMOTE_COPY 0x2u /* COPY to another appliance */
#define XMEM_FEAT_PERSISTENT 0x4u  /* pool backed by a file, metadata journaled */

struct xmem_wire_hdr {
        uint32_t magic;
        uint16_t version;
        uint16_t op;
        uint32_t tag;
        int32_t status; /* replies: 0 or -errno; requests: 0 */
        uint64_t region;
        uint8_t key[XMEM_KEY_SIZE];
        uint64_t offset;
        uint64_t length;
        uint64_t arg;
        uint32_t payload_len; /* bytes that follow the header */
        uint32_t reserved;    /* 0 */
};

struct xmem_wire_hello { /* 32 bytes on the wire */
        uint32_t version;
        uint32_t features;
        uint64_t chunk_size;
        uint64_t pool_size;
        uint64_t max_io;
};
#define XMEM_WIRE_HELLO_SIZE 32

struct xmem_wire_seg { /* 16 bytes on the wire */
        uint64_t offset;
        uint64_t length;
};

#define XMEM_WIRE_NO_POOL_OFFSET UINT64_MAX /* extent is a hole: reads as zeros */
struct xmem_wire_extent { /* 24 bytes on the wire */
        uint64_t region_offset;
        uint64_t pool_offset;
        uint64_t length;
};
#define XMEM_WIRE_EXTENT_SIZE 24

#define XMEM_WIRE_URI_MAX 256
struct xmem_wire_copy { /* 288 bytes on the wire */
        uint64_t dst_region;
        uint8_t dst_key[XMEM_KEY_SIZE];
        uint64_t dst_offset;
        char dst_uri[XMEM_WIRE_URI_MAX]; /* NUL-terminated; "" = this appliance */
};
#define XMEM_WIRE_COPY_SIZE (8 + XMEM_KEY_SIZE + 8 + XMEM_WIRE_URI_MAX)
