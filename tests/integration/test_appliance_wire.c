/* test_appliance_wire.c: xmem-appliance over raw TCP frames: a valid round
 * trip, malformed frames closing only their own connection, error statuses,
 * SHM attach/map over the unix socket, and command-line refusals. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "harness.h"
#include "rawwire.h"

static struct harness_proc app;

static void setup(void)
{
        harness_appliance_setup(&app, "64M");
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(appliance_wire, .init = setup, .fini = teardown, .timeout = 60);

static int connect_ok(void)
{
        int fd = harness_connect_tcp(&app);
        cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
        return fd;
}

/* Allocate, write a pattern, read it back: the connection works. */
static void check_works(int fd, uint64_t seed)
{
        uint8_t key[XMEM_KEY_SIZE], in[5000], out[5000];
        uint64_t id;

        raw_alloc(fd, 100000, &id, key);
        harness_pattern(in, sizeof(in), seed, 777);
        cr_assert_eq(raw_write(fd, id, key, 777, in, sizeof(in)), 0);
        cr_assert_eq(raw_read(fd, id, key, 777, out, sizeof(out)), 0);
        cr_assert_arr_eq(in, out, sizeof(in));
}

static bool log_contains(const char *needle)
{
        char buf[65536];
        FILE *f = fopen(app.log_path, "r");
        size_t n;

        cr_assert_not_null(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        return strstr(buf, needle) != NULL;
}

Test(appliance_wire, round_trip)
{
        int fd = connect_ok();
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_HELLO, 42), rep;
        struct xmem_wire_hello hello;
        struct xmem_error err = {};
        uint8_t buf[512], key[XMEM_KEY_SIZE], data[70000], back[70000];
        uint64_t id;

        cr_assert_eq(raw_call(fd, &req, NULL, &rep, buf, sizeof(buf)), 0);
        cr_assert_eq(wire_hello_decode(buf, rep.payload_len, &hello, &err), 0, "%s",
                     xmem_error_str(&err));
        cr_assert_eq(hello.version, XMEM_WIRE_VERSION);
        cr_assert_eq(hello.chunk_size, 65536);
        cr_assert_eq(hello.pool_size, 64 << 20);
        cr_assert_eq(hello.max_io, XMEM_WIRE_MAX_IO);
        cr_assert(hello.features & XMEM_FEAT_REMOTE_COPY);
        cr_assert_not(hello.features & XMEM_FEAT_SHM, "no shm over tcp");
        cr_assert_not(hello.features & XMEM_FEAT_PERSISTENT);

        req = raw_hdr(XMEM_OP_ALLOC, 43);
        req.arg = 100000;
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, NULL, 0), 0);
        cr_assert_eq(rep.arg, 131072, "rounded to 64K chunks");
        cr_assert_gt(rep.region, 0);
        id = rep.region;
        memcpy(key, rep.key, sizeof(key));

        harness_pattern(data, sizeof(data), 1, 1000);
        cr_assert_eq(raw_write(fd, id, key, 1000, data, sizeof(data)), 0);
        cr_assert_eq(raw_read(fd, id, key, 1000, back, sizeof(back)), 0);
        cr_assert_arr_eq(data, back, sizeof(data));
        /* never written: zeros */
        memset(back, 0xaa, 4096);
        cr_assert_eq(raw_read(fd, id, key, 131072 - 4096, back, 4096), 0);
        for (int i = 0; i < 4096; i++)
                cr_assert_eq(back[i], 0);

        req = raw_hdr(XMEM_OP_STATS, 44);
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, buf, sizeof(buf) - 1), 0);
        buf[rep.payload_len] = 0;
        json_object *o = json_tokener_parse((char *)buf), *v;
        cr_assert_not_null(o, "stats JSON: %s", buf);
        cr_assert(json_object_object_get_ex(o, "bytes_written", &v));
        cr_assert_eq(json_object_get_uint64(v), sizeof(data));
        cr_assert(json_object_object_get_ex(o, "chunks_used", &v));
        cr_assert_eq(json_object_get_uint64(v), 2, "70000 bytes at 1000 touch two chunks");
        json_object_put(o);
        close(fd);
}

Test(appliance_wire, pipelined_replies_keep_tags)
{
        int fd = connect_ok();
        uint8_t key[XMEM_KEY_SIZE], data[256], back[256];
        struct xmem_wire_hdr req, rep;
        uint64_t id;

        raw_alloc(fd, 1 << 20, &id, key);
        for (uint32_t i = 0; i < 100; i++) { /* 100 writes, then 100 reads, no waiting */
                req = raw_hdr(XMEM_OP_WRITE, 1000 + i);
                req.region = id;
                memcpy(req.key, key, sizeof(key));
                req.offset = i * 4096;
                req.length = req.payload_len = sizeof(data);
                harness_pattern(data, sizeof(data), i, req.offset);
                cr_assert_eq(raw_send(fd, &req, data), 0);
        }
        for (uint32_t i = 0; i < 100; i++) {
                req = raw_hdr(XMEM_OP_READ, 2000 + i);
                req.region = id;
                memcpy(req.key, key, sizeof(key));
                req.offset = i * 4096;
                req.length = sizeof(back);
                cr_assert_eq(raw_send(fd, &req, NULL), 0);
        }
        for (uint32_t i = 0; i < 100; i++) {
                cr_assert_eq(raw_recv(fd, &rep, back, sizeof(back)), 0);
                cr_assert_eq(rep.tag, 1000 + i);
                cr_assert_eq(rep.status, 0);
        }
        for (uint32_t i = 0; i < 100; i++) {
                cr_assert_eq(raw_recv(fd, &rep, back, sizeof(back)), 0);
                cr_assert_eq(rep.tag, 2000 + i);
                harness_pattern(data, sizeof(data), i, i * 4096);
                cr_assert_arr_eq(back, data, sizeof(data));
        }
        close(fd);
}

enum bad_kind {
        BAD_HALF_HEADER,
        BAD_TRUNCATED_PAYLOAD,
        BAD_OVERSIZED,
        BAD_MAGIC,
        BAD_VERSION,
        BAD_OP,
        BAD_RESERVED,
        BAD_REPLY_AS_REQUEST,
        BAD_SEGMENTS,
};

/* A second connection, opened before, keeps working after BAD closed its own. */
static void malformed(enum bad_kind kind, const char *logged)
{
        int good = connect_ok(), bad = connect_ok();
        struct xmem_wire_hdr h = raw_hdr(XMEM_OP_HELLO, 5);
        uint8_t frame[XMEM_WIRE_HDR_SIZE], payload[64] = {};

        check_works(good, 1);
        switch (kind) {
        case BAD_HALF_HEADER:
                wire_hdr_encode(&h, frame);
                cr_assert_eq(write_full(bad, frame, 30), 0);
                shutdown(bad, SHUT_WR);
                break;
        case BAD_TRUNCATED_PAYLOAD:
                h = raw_hdr(XMEM_OP_WRITE, 5);
                h.region = 1;
                h.length = h.payload_len = 4096;
                wire_hdr_encode(&h, frame);
                cr_assert_eq(write_full(bad, frame, sizeof(frame)), 0);
                cr_assert_eq(write_full(bad, payload, 10), 0);
                shutdown(bad, SHUT_WR);
                break;
        case BAD_OVERSIZED:
                h.payload_len = XMEM_WIRE_MAX_PAYLOAD + 1;
                break;
        case BAD_MAGIC:
                h.magic = 0x12345678;
                break;
        case BAD_VERSION:
                h.version = 2;
                break;
        case BAD_OP:
                h.op = 77;
                break;
        case BAD_RESERVED:
                h.reserved = 1;
                break;
        case BAD_REPLY_AS_REQUEST:
                h.op = XMEM_OP_HELLO | XMEM_OP_REPLY;
                break;
        case BAD_SEGMENTS: /* segments add up to 10, header says 20 */
                h = raw_hdr(XMEM_OP_READV, 5);
                h.region = 1;
                h.arg = 1;
                h.length = 20;
                h.payload_len = XMEM_WIRE_SEG_SIZE;
                wire_put_u64(payload, 0);
                wire_put_u64(payload + 8, 10);
                break;
        }
        if (kind != BAD_HALF_HEADER && kind != BAD_TRUNCATED_PAYLOAD) {
                /* the header alone must be enough to refuse the frame */
                wire_hdr_encode(&h, frame);
                cr_assert_eq(write_full(bad, frame, sizeof(frame)), 0);
                if (h.payload_len <= sizeof(payload))
                        cr_assert_eq(write_full(bad, payload, h.payload_len), 0);
        }
        cr_assert(raw_closed(bad, 5000), "the appliance must close the bad connection");
        close(bad);
        check_works(good, 2);
        /* and a new connection works too */
        bad = connect_ok();
        check_works(bad, 3);
        close(bad);
        close(good);
        usleep(100000);
        cr_assert(log_contains(logged), "log should say '%s'", logged);
}

Test(appliance_wire, half_header) { malformed(BAD_HALF_HEADER, "truncated frame header"); }
Test(appliance_wire, truncated_payload) { malformed(BAD_TRUNCATED_PAYLOAD, "truncated write payload"); }
Test(appliance_wire, oversized_payload) { malformed(BAD_OVERSIZED, "over the"); }
Test(appliance_wire, bad_magic) { malformed(BAD_MAGIC, "bad magic"); }
Test(appliance_wire, bad_version) { malformed(BAD_VERSION, "unsupported version 2"); }
Test(appliance_wire, unknown_op) { malformed(BAD_OP, "unknown op 77"); }
Test(appliance_wire, reserved_nonzero) { malformed(BAD_RESERVED, "reserved field"); }
Test(appliance_wire, reply_as_request) { malformed(BAD_REPLY_AS_REQUEST, "reply where a request"); }
Test(appliance_wire, bad_segments) { malformed(BAD_SEGMENTS, "malformed readv segments"); }

Test(appliance_wire, error_statuses)
{
        int fd = connect_ok();
        uint8_t key[XMEM_KEY_SIZE], wrong[XMEM_KEY_SIZE], buf[64] = { 1 };
        struct xmem_wire_hdr req, rep;
        uint64_t id, snap;
        uint8_t snap_key[XMEM_KEY_SIZE];

        raw_alloc(fd, 65536, &id, key);
        memcpy(wrong, key, sizeof(wrong));
        wrong[15] ^= 1;
        cr_assert_eq(raw_write(fd, id, wrong, 0, buf, sizeof(buf)), -EACCES);
        cr_assert_eq(raw_read(fd, id, wrong, 0, buf, sizeof(buf)), -EACCES);
        cr_assert_eq(raw_op(fd, XMEM_OP_FREE, id, wrong, 0, NULL), -EACCES);
        cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, id, wrong, 0, NULL), -EACCES);
        cr_assert_eq(raw_read(fd, id + 1000, key, 0, buf, sizeof(buf)), -ENOENT);
        cr_assert_eq(raw_read(fd, id, key, 65536 - 10, buf, sizeof(buf)), -ERANGE);
        cr_assert_eq(raw_write(fd, id, key, 65536, buf, 1), -ERANGE);
        cr_assert_eq(raw_op(fd, XMEM_OP_ALLOC, 0, NULL, 1ULL << 40, NULL), -ENOSPC);

        cr_assert_eq(raw_write(fd, id, key, 0, buf, sizeof(buf)), 0);
        cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, id, key, 0, &rep), 0);
        snap = rep.region;
        memcpy(snap_key, rep.key, sizeof(snap_key));
        cr_assert_neq(snap, id);
        cr_assert_eq(raw_write(fd, snap, snap_key, 0, buf, sizeof(buf)), -EROFS);
        cr_assert_eq(raw_op(fd, XMEM_OP_RESIZE, snap, snap_key, 1 << 20, NULL), -EROFS);
        cr_assert_eq(raw_read(fd, snap, snap_key, 0, buf, sizeof(buf)), 0);
        cr_assert_eq(buf[0], 1);

        /* revert: only to a snapshot of that region, with the snapshot's key */
        req = raw_hdr(XMEM_OP_REVERT, 3);
        req.region = id;
        memcpy(req.key, key, sizeof(key));
        req.arg = snap;
        req.payload_len = XMEM_KEY_SIZE;
        cr_assert_eq(raw_call(fd, &req, wrong, &rep, NULL, 0), -EACCES);
        req.arg = id;
        cr_assert_eq(raw_call(fd, &req, key, &rep, NULL, 0), -EINVAL);
        req.arg = snap;
        cr_assert_eq(raw_call(fd, &req, snap_key, &rep, NULL, 0), 0);

        cr_assert_eq(raw_op(fd, XMEM_OP_SHM_ATTACH, 0, NULL, 0, NULL), -EOPNOTSUPP);
        cr_assert_eq(raw_op(fd, XMEM_OP_FREE, id, key, 0, NULL), 0);
        cr_assert_eq(raw_read(fd, id, key, 0, buf, sizeof(buf)), -ENOENT);
        cr_assert_eq(raw_read(fd, snap, snap_key, 0, buf, sizeof(buf)), 0, "snapshot outlives its parent");
        cr_assert_eq(buf[0], 1);
        close(fd);
}


static int connect_unix(void)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/appliance.sock", app.dir);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        return fd;
}

Test(appliance_wire, shm_attach_and_map)
{
        int fd = connect_unix(), pool_fd = -1;
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_SHM_ATTACH, 1), rep, map;
        struct xmem_wire_extent ext[8];
        struct xmem_error err = {};
        uint8_t msg[XMEM_WIRE_HDR_SIZE + XMEM_WIRE_HELLO_SIZE], key[XMEM_KEY_SIZE], buf[256];
        uint8_t data[4096], back[4096];
        size_t nfd = 1, next;
        struct xmem_wire_hello hello;
        uint64_t id;
        uint8_t *pool;

        cr_assert_eq(raw_send(fd, &req, NULL), 0);
        cr_assert_eq(recv_with_fds(fd, msg, sizeof(msg), &pool_fd, &nfd), (ssize_t)sizeof(msg));
        cr_assert_eq(nfd, 1, "the pool fd comes with the reply");
        cr_assert_eq(wire_hdr_decode(msg, true, &rep, &err), 0);
        cr_assert_eq(wire_hello_decode(msg + XMEM_WIRE_HDR_SIZE, rep.payload_len, &hello, &err), 0);
        cr_assert(hello.features & XMEM_FEAT_SHM);
        pool = mmap(NULL, hello.pool_size, PROT_READ | PROT_WRITE, MAP_SHARED, pool_fd, 0);
        cr_assert_neq(pool, MAP_FAILED);

        raw_alloc(fd, 4 * 65536, &id, key);
        harness_pattern(data, sizeof(data), 5, 0);
        cr_assert_eq(raw_write(fd, id, key, 65536 + 100, data, sizeof(data)), 0);
        /* read mapping: chunk 0 is a hole, chunk 1 is backed */
        map = raw_hdr(XMEM_OP_SHM_MAP, 2);
        map.region = id;
        memcpy(map.key, key, XMEM_KEY_SIZE);
        map.offset = 0;
        map.length = 2 * 65536;
        cr_assert_eq(raw_call(fd, &map, NULL, &rep, buf, sizeof(buf)), 0);
        cr_assert_eq(wire_extents_decode(buf, rep.payload_len, ext, 8, &next, &err), 0);
        cr_assert_eq(next, 2);
        cr_assert_eq(ext[0].pool_offset, XMEM_WIRE_NO_POOL_OFFSET);
        cr_assert_eq(ext[1].region_offset, 65536);
        cr_assert_arr_eq(pool + ext[1].pool_offset + 100, data, sizeof(data));

        /* write mapping after a snapshot: exclusive chunks, old bytes kept, snapshot unchanged */
        cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, id, key, 0, &req), 0);
        map.offset = 65536;
        map.length = 65536;
        map.arg = XMEM_MAP_WRITE;
        cr_assert_eq(raw_call(fd, &map, NULL, &rep, buf, sizeof(buf)), 0);
        cr_assert_eq(wire_extents_decode(buf, rep.payload_len, ext, 8, &next, &err), 0);
        cr_assert_eq(next, 1);
        cr_assert_neq(ext[0].pool_offset, XMEM_WIRE_NO_POOL_OFFSET);
        cr_assert_arr_eq(pool + ext[0].pool_offset + 100, data, sizeof(data), "CoW kept the bytes");
        memset(pool + ext[0].pool_offset + 100, 0x5a, 16);
        cr_assert_eq(raw_read(fd, id, key, 65536 + 100, back, sizeof(back)), 0);
        cr_assert_eq(back[0], 0x5a, "a direct write is what the region reads");
        cr_assert_eq(raw_read(fd, req.region, req.key, 65536 + 100, back, sizeof(back)), 0);
        cr_assert_arr_eq(back, data, sizeof(data), "the snapshot did not see it");
        /* a snapshot cannot be mapped for writing */
        map.region = req.region;
        memcpy(map.key, req.key, XMEM_KEY_SIZE);
        cr_assert_eq(raw_call(fd, &map, NULL, &rep, buf, sizeof(buf)), -EROFS);
        munmap(pool, hello.pool_size);
        close(pool_fd);
        close(fd);
}

static int run_appliance(const char *const *args)
{
        const char *argv[16] = { getenv("XMEM_APPLIANCE") };
        int status;
        pid_t pid;

        for (int i = 0; args[i]; i++)
                argv[i + 1] = args[i];
        pid_t parent = getpid();
        pid = fork();
        if (pid == 0) {
                int devnull = open("/dev/null", O_WRONLY);
                harness_die_with(parent); /* if it serves after all: the test times out */
                dup2(devnull, 2);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(appliance_wire, bad_arguments_exit_2)
{
        static const char *const cases[][6] = {
                { NULL },
                { "--listen", "http://x:1", NULL },
                { "--listen", "tcp://127.0.0.1:1", "--pool-size", "12Q", NULL },
                { "--listen", "tcp://127.0.0.1:1", "--chunk-size", "3K", NULL },
                { "--listen", "tcp://127.0.0.1:1", "--chunk-size", "32M", NULL },
                { "--listen", "tcp://127.0.0.1:1", "--pool-size", "100K", NULL },
                { "--listen", "tcp://127.0.0.1:1", "--log-level", "loud", NULL },
                { "--listen", "tcp://127.0.0.1:1", "--bogus", NULL },
                { "--listen", "tcp://127.0.0.1:1", "extra", NULL },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                cr_assert_eq(run_appliance(cases[i]), 2, "case %zu", i);
}
