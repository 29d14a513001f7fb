/* test_appliance_clients.c: many clients at once: a dead client and a slow
 * client never stall the others; 16 pipelining connections keep their data. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <time.h>

#include "harness.h"
#include "rawwire.h"

static struct harness_proc app;

static void setup(void)
{
        harness_appliance_setup(&app, "256M");
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(appliance_clients, .init = setup, .fini = teardown, .timeout = 120);

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int conn(void)
{
        int fd = harness_connect_tcp(&app);
        cr_assert_geq(fd, 0);
        return fd;
}

/* Alloc, write, snapshot (takes the write lock), write, read: all within a second. */
static void quick_round(uint64_t seed)
{
        int fd = conn();
        uint8_t key[XMEM_KEY_SIZE], in[65536], out[65536];
        struct xmem_wire_hdr rep;
        double t0 = now_s();
        uint64_t id;

        raw_alloc(fd, 1 << 20, &id, key);
        harness_pattern(in, sizeof(in), seed, 0);
        cr_assert_eq(raw_write(fd, id, key, 0, in, sizeof(in)), 0);
        cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, id, key, 0, &rep), 0);
        cr_assert_eq(raw_write(fd, id, key, 100, in, 1000), 0);
        cr_assert_eq(raw_read(fd, rep.region, rep.key, 0, out, sizeof(out)), 0);
        cr_assert_arr_eq(in, out, sizeof(in));
        cr_assert_lt(now_s() - t0, 1.0, "another client was stalled");
        close(fd);
}

Test(appliance_clients, dead_client_does_not_stall_others)
{
        int dead = conn(), idle = conn();
        struct xmem_wire_hdr h = raw_hdr(XMEM_OP_WRITE, 1);
        uint8_t frame[XMEM_WIRE_HDR_SIZE];

        h.region = 1;
        h.length = h.payload_len = 4096;
        wire_hdr_encode(&h, frame);
        cr_assert_eq(write_full(dead, frame, XMEM_WIRE_HDR_SIZE / 2), 0); /* then sits */
        usleep(50000);
        for (int i = 0; i < 5; i++)
                quick_round((uint64_t)i);
        cr_assert_not(raw_closed(dead, 10), "a silent client is waited for, not dropped");
        close(dead);
        close(idle);
}

struct slow_arg {
        int fd;
        uint8_t *data;
        size_t len;
        volatile bool stop;
};

static void *slow_writer(void *p)
{
        struct slow_arg *a = p;
        size_t sent = 0;

        /* the payload trickles in 1 KiB every 5 ms */
        while (!a->stop && sent < a->len) {
                if (write_full(a->fd, a->data + sent, 1024) < 0)
                        break;
                sent += 1024;
                usleep(5000);
        }
        return NULL;
}

Test(appliance_clients, slow_client_does_not_stall_others)
{
        int slow = conn();
        uint8_t key[XMEM_KEY_SIZE];
        struct slow_arg a = { .fd = slow, .len = 8 << 20 };
        struct xmem_wire_hdr h = raw_hdr(XMEM_OP_WRITE, 1);
        pthread_t t;
        uint64_t id;

        raw_alloc(slow, 16 << 20, &id, key);
        a.data = malloc(a.len);
        harness_pattern(a.data, a.len, 99, 0);
        h.region = id;
        memcpy(h.key, key, XMEM_KEY_SIZE);
        h.length = h.payload_len = (uint32_t)a.len;
        {
                uint8_t frame[XMEM_WIRE_HDR_SIZE];
                wire_hdr_encode(&h, frame);
                cr_assert_eq(write_full(slow, frame, sizeof(frame)), 0);
        }
        cr_assert_eq(pthread_create(&t, NULL, slow_writer, &a), 0);
        usleep(50000);
        for (int i = 0; i < 10; i++) /* a snapshot needs the write lock: nobody may hold it */
                quick_round(100 + (uint64_t)i);
        a.stop = true;
        pthread_join(t, NULL);
        close(slow);
        free(a.data);
}

#define NCONN 16
#define NIO 64
#define IOSZ 16384

struct pipe_arg {
        int index;
        uint64_t id; /* shared region: each connection owns a disjoint slice */
        uint8_t key[XMEM_KEY_SIZE];
        int errors;
};

static void *pipeliner(void *p)
{
        struct pipe_arg *a = p;
        int fd = harness_connect_tcp(&app);
        uint8_t *data = malloc(IOSZ), *back = malloc(IOSZ);
        uint64_t base = (uint64_t)a->index * NIO * IOSZ;
        struct xmem_wire_hdr req, rep;

        if (fd < 0)
                return (void *)(intptr_t)++a->errors;
        for (int round = 0; round < 3; round++) {
                for (uint32_t i = 0; i < NIO; i++) {
                        req = raw_hdr(XMEM_OP_WRITE, i);
                        req.region = a->id;
                        memcpy(req.key, a->key, XMEM_KEY_SIZE);
                        req.offset = base + (uint64_t)i * IOSZ;
                        req.length = req.payload_len = IOSZ;
                        harness_pattern(data, IOSZ, (uint64_t)round, req.offset);
                        if (raw_send(fd, &req, data) < 0)
                                a->errors++;
                }
                for (uint32_t i = 0; i < NIO; i++) {
                        req = raw_hdr(XMEM_OP_READ, NIO + i);
                        req.region = a->id;
                        memcpy(req.key, a->key, XMEM_KEY_SIZE);
                        req.offset = base + (uint64_t)i * IOSZ;
                        req.length = IOSZ;
                        if (raw_send(fd, &req, NULL) < 0)
                                a->errors++;
                }
                for (uint32_t i = 0; i < 2 * NIO; i++) {
                        if (raw_recv(fd, &rep, back, IOSZ) < 0 || rep.status != 0 || rep.tag != i) {
                                a->errors++;
                                continue;
                        }
                        if (i < NIO)
                                continue;
                        harness_pattern(data, IOSZ, (uint64_t)round, base + (uint64_t)(i - NIO) * IOSZ);
                        if (memcmp(data, back, IOSZ) != 0)
                                a->errors++;
                }
        }
        close(fd);
        free(data);
        free(back);
        return NULL;
}

Test(appliance_clients, sixteen_pipelining_connections)
{
        struct pipe_arg args[NCONN];
        pthread_t t[NCONN];
        uint8_t key[XMEM_KEY_SIZE];
        uint64_t id;
        int fd = conn(), errors = 0;
        struct xmem_wire_hdr rep;

        raw_alloc(fd, (uint64_t)NCONN * NIO * IOSZ, &id, key);
        for (int i = 0; i < NCONN; i++) {
                args[i] = (struct pipe_arg){ .index = i, .id = id };
                memcpy(args[i].key, key, XMEM_KEY_SIZE);
                cr_assert_eq(pthread_create(&t[i], NULL, pipeliner, &args[i]), 0);
        }
        /* snapshots meanwhile make every chunk shared again: writes must copy-on-write */
        for (int i = 0; i < 20; i++) {
                cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, id, key, 0, &rep), 0);
                usleep(5000);
        }
        for (int i = 0; i < NCONN; i++) {
                pthread_join(t[i], NULL);
                errors += args[i].errors;
        }
        cr_assert_eq(errors, 0, "%d failed or wrong replies", errors);
        close(fd);
}
