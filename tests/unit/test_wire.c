/* test_wire.c: the appliance frame codec: round trips and every refusal. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "wire.h"

static struct xmem_wire_hdr req(uint16_t op)
{
        struct xmem_wire_hdr h = {
                .magic = XMEM_WIRE_MAGIC,
                .version = XMEM_WIRE_VERSION,
                .op = op,
                .tag = 0xdeadbeef,
                .region = 0x0102030405060708ULL,
                .offset = 4096,
                .length = 8192,
        };
        for (int i = 0; i < XMEM_KEY_SIZE; i++)
                h.key[i] = (uint8_t)(0xa0 + i);
        return h;
}

static int roundtrip(const struct xmem_wire_hdr *in, bool is_reply, struct xmem_wire_hdr *out,
                     struct xmem_error *err)
{
        uint8_t buf[XMEM_WIRE_HDR_SIZE];

        wire_hdr_encode(in, buf);
        return wire_hdr_decode(buf, is_reply, out, err);
}

Test(wire, header_layout_is_little_endian)
{
        struct xmem_wire_hdr h = req(XMEM_OP_READ);
        uint8_t buf[XMEM_WIRE_HDR_SIZE];

        wire_hdr_encode(&h, buf);
        cr_assert_eq(memcmp(buf, "XMEM", 4), 0);
        cr_assert_eq(buf[4], 1);
        cr_assert_eq(buf[6], XMEM_OP_READ);
        cr_assert_eq(buf[8], 0xef);
        cr_assert_eq(buf[16], 0x08);
        cr_assert_eq(buf[24], 0xa0);
        cr_assert_eq(buf[41], 0x10); /* offset 4096 */
}

Test(wire, roundtrip_read_write)
{
        struct xmem_wire_hdr h = req(XMEM_OP_WRITE), out;
        struct xmem_error err = { 0 };

        h.payload_len = (uint32_t)h.length;
        cr_assert_eq(roundtrip(&h, false, &out, &err), 0, "%s", err.msg);
        cr_assert_eq(memcmp(&h, &out, sizeof(h)), 0);
        h = req(XMEM_OP_READ);
        cr_assert_eq(roundtrip(&h, false, &out, &err), 0, "%s", err.msg);
}

Test(wire, reply_rules)
{
        struct xmem_wire_hdr h = req(XMEM_OP_READ | XMEM_OP_REPLY), out;
        struct xmem_error err = { 0 };

        h.status = -EACCES;
        cr_assert_eq(roundtrip(&h, true, &out, &err), 0, "%s", err.msg);
        cr_assert_eq(out.status, -EACCES);
        h.payload_len = 4;
        cr_assert_eq(roundtrip(&h, true, &out, &err), -EBADMSG);
        h = req(XMEM_OP_READ | XMEM_OP_REPLY);
        h.status = 5;
        cr_assert_eq(roundtrip(&h, true, &out, &err), -EBADMSG);
        /* a reply where a request is expected and the reverse */
        h = req(XMEM_OP_READ | XMEM_OP_REPLY);
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EBADMSG);
        h = req(XMEM_OP_READ);
        cr_assert_eq(roundtrip(&h, true, &out, &err), -EBADMSG);
}

static void mutate(struct xmem_wire_hdr *h, int which)
{
        switch (which) {
        case 0: h->magic = 0x12345678; break;
        case 1: h->version = 2; break;
        case 2: h->op = 0; break;
        case 3: h->op = 999; break;
        case 4: h->reserved = 1; break;
        case 5: h->payload_len = 0xffffffff; break;
        case 6: h->length = 0; break;
        case 7: h->length = XMEM_WIRE_MAX_IO + 1; break;
        case 8: h->offset = UINT64_MAX - 1; break;
        case 9: h->payload_len = 1; break;
        case 10: h->status = -1; break;
        }
}

Test(wire, malformed_headers_refused)
{
        static const struct {
                int code;
                const char *why;
        } cases[] = {
                { -EBADMSG, "bad magic" },       { -EPROTONOSUPPORT, "version" },
                { -EBADMSG, "unknown op" },      { -EBADMSG, "unknown op" },
                { -EBADMSG, "reserved" },        { -EMSGSIZE, "payload_len" },
                { -EMSGSIZE, "length" },         { -EMSGSIZE, "length" },
                { -ERANGE, "overflow" },         { -EBADMSG, "payload_len" },
                { -EBADMSG, "status" },
        };
        for (int i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])); i++) {
                struct xmem_wire_hdr h = req(XMEM_OP_READ), out = { .tag = 7 };
                struct xmem_error err = { 0 };
                mutate(&h, i);
                cr_assert_eq(roundtrip(&h, false, &out, &err), cases[i].code, "case %d: %s", i,
                             err.msg);
                cr_assert_not_null(strstr(err.msg, cases[i].why), "case %d: '%s' lacks '%s'", i,
                                   err.msg, cases[i].why);
                cr_assert_eq(out.tag, 7, "output touched on failure");
        }
}

Test(wire, per_op_payload_rules)
{
        struct xmem_wire_hdr h, out;
        struct xmem_error err = { 0 };

        h = req(XMEM_OP_READV);
        h.arg = 2;
        h.payload_len = 2 * XMEM_WIRE_SEG_SIZE;
        cr_assert_eq(roundtrip(&h, false, &out, &err), 0, "%s", err.msg);
        h.arg = XMEM_WIRE_MAX_SEGS + 1;
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EMSGSIZE);
        h = req(XMEM_OP_WRITEV);
        h.arg = 1;
        h.payload_len = XMEM_WIRE_SEG_SIZE; /* data missing */
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EBADMSG);
        h.payload_len = XMEM_WIRE_SEG_SIZE + (uint32_t)h.length;
        cr_assert_eq(roundtrip(&h, false, &out, &err), 0, "%s", err.msg);

        h = req(XMEM_OP_REVERT);
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EBADMSG);
        h.payload_len = XMEM_KEY_SIZE;
        cr_assert_eq(roundtrip(&h, false, &out, &err), 0);

        h = req(XMEM_OP_COPY);
        h.payload_len = XMEM_WIRE_COPY_SIZE;
        cr_assert_eq(roundtrip(&h, false, &out, &err), 0, "%s", err.msg);
        h.payload_len = 10;
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EBADMSG);

        h = req(XMEM_OP_ALLOC);
        h.arg = XMEM_WIRE_MAX_REGION_SIZE + 1;
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EMSGSIZE);
        h.arg = 1 << 20;
        h.payload_len = 3;
        cr_assert_eq(roundtrip(&h, false, &out, &err), -EBADMSG);
}

Test(wire, segments)
{
        struct xmem_wire_seg in[3] = { { 0, 10 }, { 100, 20 }, { 4096, 30 } }, out[3];
        uint8_t buf[3 * XMEM_WIRE_SEG_SIZE];
        struct xmem_error err = { 0 };

        wire_segs_encode(in, 3, buf);
        cr_assert_eq(wire_segs_decode(buf, 3, 60, out, &err), 0, "%s", err.msg);
        cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
        cr_assert_eq(wire_segs_decode(buf, 3, 59, out, &err), -EBADMSG);
        cr_assert_eq(wire_segs_decode(buf, 3, 61, out, &err), -EBADMSG);
        in[1].length = 0;
        wire_segs_encode(in, 3, buf);
        cr_assert_eq(wire_segs_decode(buf, 3, 40, out, &err), -EBADMSG);
        cr_assert_not_null(strstr(err.msg, "segment 1 is empty"));
        in[1].length = 20;
        in[2].offset = UINT64_MAX - 5;
        wire_segs_encode(in, 3, buf);
        cr_assert_eq(wire_segs_decode(buf, 3, 60, out, &err), -ERANGE);
}

Test(wire, hello_extents_copy)
{
        struct xmem_wire_hello h = { 1, XMEM_FEAT_SHM, 65536, 1ULL << 32, XMEM_WIRE_MAX_IO }, ho;
        struct xmem_wire_extent e[2] = { { 0, 65536, 4096 }, { 4096, XMEM_WIRE_NO_POOL_OFFSET, 100 } };
        struct xmem_wire_extent eo[2];
        struct xmem_wire_copy c = { .dst_region = 9, .dst_offset = 12 }, co;
        uint8_t buf[XMEM_WIRE_COPY_SIZE];
        struct xmem_error err = { 0 };
        size_t n = 0;

        wire_hello_encode(&h, buf);
        cr_assert_eq(wire_hello_decode(buf, XMEM_WIRE_HELLO_SIZE, &ho, &err), 0, "%s", err.msg);
        cr_assert_eq(memcmp(&h, &ho, sizeof(h)), 0);
        h.chunk_size = 3000;
        wire_hello_encode(&h, buf);
        cr_assert_eq(wire_hello_decode(buf, XMEM_WIRE_HELLO_SIZE, &ho, &err), -EBADMSG);
        cr_assert_eq(wire_hello_decode(buf, 5, &ho, &err), -EBADMSG);

        wire_extents_encode(e, 2, buf);
        cr_assert_eq(wire_extents_decode(buf, 2 * XMEM_WIRE_EXTENT_SIZE, eo, 2, &n, &err), 0);
        cr_assert_eq(n, 2);
        cr_assert_eq(memcmp(e, eo, sizeof(e)), 0);
        cr_assert_eq(wire_extents_decode(buf, 2 * XMEM_WIRE_EXTENT_SIZE, eo, 1, &n, &err),
                     -EMSGSIZE);
        cr_assert_eq(wire_extents_decode(buf, 7, eo, 2, &n, &err), -EBADMSG);

        strcpy(c.dst_uri, "tcp://127.0.0.1:7071");
        wire_copy_encode(&c, buf);
        cr_assert_eq(wire_copy_decode(buf, XMEM_WIRE_COPY_SIZE, &co, &err), 0, "%s", err.msg);
        cr_assert_str_eq(co.dst_uri, c.dst_uri);
        cr_assert_eq(co.dst_region, 9);
        memset(buf + 16 + XMEM_KEY_SIZE, 'a', XMEM_WIRE_URI_MAX);
        cr_assert_eq(wire_copy_decode(buf, XMEM_WIRE_COPY_SIZE, &co, &err), -EBADMSG);
        cr_assert_not_null(strstr(err.msg, "not terminated"));
}

Test(wire, op_names)
{
        cr_assert_str_eq(wire_op_name(XMEM_OP_SHM_MAP), "shm-map");
        cr_assert_str_eq(wire_op_name(XMEM_OP_READ | XMEM_OP_REPLY), "read");
        cr_assert_str_eq(wire_op_name(0), "unknown");
        cr_assert_str_eq(wire_op_name(500), "unknown");
}
