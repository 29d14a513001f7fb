/* test_appliance_bounds.c: per-client bounds of the appliance: connections
 * in all and per client, regions per client, request size (--max-io) and
 * buffer memory (--max-buffers). Each is refused with a clear error and the
 * appliance keeps serving a good client. Real appliance, real sockets. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <time.h>

#include "harness.h"
#include "rawwire.h"
#include "transport/transport.h"

static struct harness_proc app;

static void setup(void)
{
        harness_init(&app);
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(appliance_bounds, .init = setup, .fini = teardown, .timeout = 60);

static void start(const char *const *extra)
{
        const char *args[16] = {"--pool-size", "64M"};
        int n = 2;

        for (; *extra && n < 15; extra++)
                args[n++] = *extra;
        harness_appliance_start(&app, args);
}

/* HELLO as the first request of a new tcp connection: its status; the
 * connection is closed after a refusal (else returned in *RET_FD). */
static int hello(int *ret_fd)
{
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_HELLO, 1), rep;
        int fd = harness_connect_tcp(&app), st;

        cr_assert_geq(fd, 0);
        st = raw_call(fd, &req, NULL, &rep, NULL, 0);
        if (st < 0) {
                cr_assert(raw_closed(fd, 2000), "refused connection left open");
                close(fd);
                fd = -1;
        }
        if (ret_fd)
                *ret_fd = fd;
        else if (fd >= 0)
                close(fd);
        return st;
}

/* A good client over unix (another client than 127.0.0.1): served. */
static void good_client(void)
{
        struct xmem_transport_opts opts = {.connections = 1};

        harness_good_client(app.unix_uri, &opts);
}

/* HELLO on a new connection until it is served (the appliance has seen an
 * earlier close), up to 2 s. */
static int hello_retry(int *ret_fd)
{
        int st = -1;

        for (int i = 0; i < 100 && (st = hello(ret_fd)) < 0; i++)
                usleep(20000);
        return st;
}

/* HELLO until the refusal is answered rather than the connection dropped
 * (the flood's refusals pending may fill every answering slot), up to 3 s. */
static int hello_retry_refused(void)
{
        for (int i = 0; i < 150; i++) {
                struct xmem_wire_hdr req = raw_hdr(XMEM_OP_HELLO, 1), rep;
                uint8_t buf[XMEM_WIRE_HDR_SIZE];
                int fd = harness_connect_tcp(&app);

                cr_assert_geq(fd, 0);
                if (raw_send(fd, &req, NULL) == 0 && read_full(fd, buf, sizeof(buf)) == 0) {
                        cr_assert_eq(wire_hdr_decode(buf, true, &rep, NULL), 0);
                        close(fd);
                        return rep.status;
                }
                close(fd);
                usleep(20000);
        }
        return 0;
}

Test(appliance_bounds, connections_per_client)
{
        const char *args[] = {"--max-client-connections", "2", NULL};
        int a, b, c;

        start(args);
        /* (the harness's own readiness probe may not be closed there yet) */
        cr_assert_eq(hello_retry(&a), 0);
        cr_assert_eq(hello_retry(&b), 0);
        cr_assert_eq(hello(&c), -EUSERS, "a third connection of 127.0.0.1");
        cr_assert_eq(hello(NULL), -EUSERS);
        good_client(); /* uid 0 over unix is another client */
        close(a);
        cr_assert_eq(hello_retry(&c), 0, "room again once one closed");
        cr_assert_eq(hello(NULL), -EUSERS);
        close(b);
        close(c);
}

Test(appliance_bounds, connections_in_all)
{
        const char *args[] = {"--max-connections", "3", NULL};
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_HELLO, 2), rep;
        int fds[3], flood[40];

        start(args);
        for (int i = 0; i < 3; i++) /* (the harness's readiness probe may linger) */
                cr_assert_eq(hello_retry(&fds[i]), 0);
        /* a flood of silent connections, more than the refusals answered at once */
        for (int i = 0; i < 40; i++)
                cr_assert_geq(flood[i] = harness_connect_tcp(&app), 0);
        cr_assert_eq(raw_call(fds[1], &req, NULL, &rep, NULL, 0), 0, "admitted ones still served");
        for (int i = 0; i < 40; i++)
                close(flood[i]);
        cr_assert_eq(hello_retry_refused(), -EUSERS);
        close(fds[0]);
        cr_assert_eq(hello_retry(&fds[0]), 0);
        for (int i = 0; i < 3; i++)
                close(fds[i]);
}

Test(appliance_bounds, regions_per_client)
{
        const char *args[] = {"--max-client-regions", "3", NULL};
        struct xmem_wire_hdr rep;
        uint8_t k1[XMEM_KEY_SIZE], k2[XMEM_KEY_SIZE];
        uint64_t id1, id2;
        int fd, other;

        start(args);
        cr_assert_eq(hello(&fd), 0);
        raw_alloc(fd, 1 << 16, &id1, k1);
        raw_alloc(fd, 1 << 16, &id2, k2);
        cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, id1, k1, 0, &rep), 0, "a snapshot counts");
        {
                struct xmem_wire_hdr req = raw_hdr(XMEM_OP_ALLOC, 2);
                req.arg = 1 << 16;
                cr_assert_eq(raw_call(fd, &req, NULL, &rep, NULL, 0), -EDQUOT);
        }
        cr_assert_eq(raw_op(fd, XMEM_OP_CLONE, id1, k1, 0, &rep), -EDQUOT);
        /* the quota is the client's, not the connection's */
        cr_assert_eq(hello(&other), 0);
        cr_assert_eq(raw_op(other, XMEM_OP_CLONE, id1, k1, 0, &rep), -EDQUOT);
        good_client(); /* another client has its own */
        cr_assert_eq(raw_op(fd, XMEM_OP_FREE, id2, k2, 0, &rep), 0);
        raw_alloc(other, 1 << 16, &id2, k2);
        close(fd);
        close(other);
}

Test(appliance_bounds, request_size)
{
        const char *args[] = {"--max-io", "64K", NULL};
        struct xmem_transport *t = NULL;
        struct xmem_error err = {};
        struct xmem_region_ref r;
        static uint8_t big[1 << 20], back[1 << 20];
        uint8_t key[XMEM_KEY_SIZE];
        uint64_t id;
        int fd;

        start(args);
        cr_assert_eq(xmem_transport_open(app.tcp_uri, NULL, &t, &err), 0, "%s",
                     xmem_error_str(&err));
        cr_assert_eq(xmem_transport_hello(t)->max_io, 64 << 10, "HELLO announces --max-io");
        /* a client that follows max_io is served in pieces */
        harness_pattern(big, sizeof(big), 4, 0);
        cr_assert_eq(xmem_region_alloc(t, sizeof(big), &r, NULL), 0);
        cr_assert_eq(xmem_write(t, &r, 0, big, sizeof(big)), 0);
        cr_assert_eq(xmem_read(t, &r, 0, back, sizeof(back)), 0);
        cr_assert_arr_eq(big, back, sizeof(big));
        xmem_transport_close(t);
        /* one that does not gets -EMSGSIZE for that request, and keeps its connection */
        cr_assert_eq(hello(&fd), 0);
        raw_alloc(fd, 1 << 20, &id, key);
        cr_assert_eq(raw_write(fd, id, key, 0, big, 128 << 10), -EMSGSIZE);
        cr_assert_eq(raw_read(fd, id, key, 0, back, 128 << 10), -EMSGSIZE);
        cr_assert_eq(raw_write(fd, id, key, 0, big, 64 << 10), 0, "the next request is served");
        close(fd);
}

/* Send a WRITE of LEN bytes of DATA but only its first PART: the appliance
 * holds the request's buffer while it waits for the rest. */
/* The appliance's buffered_bytes (its stats). */
static uint64_t buffered(int fd)
{
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_STATS, 9), rep;
        char buf[4096];
        json_object *o, *v;
        uint64_t n = 0;

        cr_assert_eq(raw_call(fd, &req, NULL, &rep, buf, sizeof(buf) - 1), 0);
        buf[rep.payload_len] = 0;
        o = json_tokener_parse(buf);
        if (o && json_object_object_get_ex(o, "buffered_bytes", &v))
                n = json_object_get_uint64(v);
        json_object_put(o);
        return n;
}

static void stalled_write(int fd, uint64_t id, const uint8_t *key, const uint8_t *data, size_t len,
                          size_t part)
{
        struct xmem_wire_hdr h = raw_hdr(XMEM_OP_WRITE, 3);

        h.region = id;
        memcpy(h.key, key, XMEM_KEY_SIZE);
        h.length = h.payload_len = (uint32_t)len;
        cr_assert_eq(raw_send(fd, &h, NULL), 0);
        cr_assert_eq(write_full(fd, data, part), 0);
}

static void finish_write(int fd, const uint8_t *data, size_t len, size_t part)
{
        struct xmem_wire_hdr rep;
        uint8_t none[8];

        cr_assert_eq(write_full(fd, data + part, len - part), 0);
        cr_assert_eq(raw_recv(fd, &rep, none, sizeof(none)), 0);
        cr_assert_eq(rep.status, 0);
}

Test(appliance_bounds, buffer_memory)
{
        const char *args[] = {"--max-io", "1M", "--max-buffers", "2M", NULL};
        static uint8_t data[1 << 20];
        uint8_t key[XMEM_KEY_SIZE];
        uint64_t id;
        int fd[3];

        start(args);
        harness_pattern(data, sizeof(data), 5, 0);
        for (int i = 0; i < 3; i++)
                cr_assert_eq(hello(&fd[i]), 0);
        raw_alloc(fd[2], 1 << 20, &id, key);
        /* two requests of 1 MiB in the middle of their payload hold all of 2M */
        stalled_write(fd[0], id, key, data, sizeof(data), 4096);
        stalled_write(fd[1], id, key, data, sizeof(data), 4096);
        /* wait (a busy machine may take a while) until the appliance has read
         * both headers: then more than 1.5 MiB is buffered */
        uint64_t held = 0;
        for (int i = 0; i < 200 && (held = buffered(fd[2])) <= (3u << 19); i++)
                usleep(10000);
        cr_assert_gt(held, 3u << 19, "the stalled writes hold %llu bytes",
                     (unsigned long long)held);
        cr_assert_eq(raw_write(fd[2], id, key, 0, data, sizeof(data)), -ENOBUFS);
        cr_assert_eq(raw_write(fd[2], id, key, 0, data, 4096), -ENOBUFS, "no room at all");
        int r;
        /* the first completes; under pressure its buffer is given back at once */
        finish_write(fd[0], data, sizeof(data), 4096);
        /* (the reply may reach us a moment before the buffer is given back) */
        for (int i = 0; i < 100 && (r = raw_write(fd[2], id, key, 0, data, sizeof(data))) ==
                                           -ENOBUFS; i++)
                usleep(20000);
        cr_assert_eq(r, 0, "the first write's buffer was not given back: %d", r);
        finish_write(fd[1], data, sizeof(data), 4096);
        for (int i = 0; i < 3; i++)
                close(fd[i]);
        good_client();
}
