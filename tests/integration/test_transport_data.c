/* test_transport_data.c: the data path of the tcp, unix and shm transports
 * against a real xmem-appliance: integrity with random offsets and lengths,
 * multi-MiB ios across max_io, scatter-gather, async pipelining, threads,
 * cross-transport visibility; and tcp against a broken peer (no hang). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "transport/transport.h"
#include "wire.h"

static struct harness_proc app;

static void setup(void)
{
        harness_appliance_setup(&app, "512M");
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(data, .init = setup, .fini = teardown, .timeout = 120);

static const char *uri_of(const char *kind)
{
        if (!strcmp(kind, "tcp"))
                return app.tcp_uri;
        if (!strcmp(kind, "unix"))
                return app.unix_uri;
        return app.shm_uri;
}

static struct xmem_transport *open_kind(const char *kind)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };
        int r = xmem_transport_open(uri_of(kind), NULL, &t, &err);
        cr_assert_eq(r, 0, "open %s: %s", uri_of(kind), xmem_error_str(&err));
        return t;
}

static struct xmem_region_ref alloc_region(struct xmem_transport *t, uint64_t size)
{
        struct xmem_region_ref r;
        uint64_t got = 0;
        cr_assert_eq(xmem_region_alloc(t, size, &r, &got), 0);
        cr_assert_geq(got, size);
        return r;
}

static uint64_t rnd(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* Random writes mirrored into a local model; random reads compared to it. */
static void integrity(const char *kind)
{
        const size_t size = 8 << 20;
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = alloc_region(t, size);
        uint8_t *model = calloc(1, size), *buf = malloc(512 << 10);
        uint64_t seed = 0x5eed0001;

        for (int i = 0; i < 300; i++) {
                uint64_t len = 1 + rnd(&seed) % (256 << 10), off = rnd(&seed) % (size - len);
                if (rnd(&seed) % 3) {
                        harness_pattern(buf, len, seed, off);
                        cr_assert_eq(xmem_write(t, &r, off, buf, len), 0, "write %lu+%lu", off, len);
                        memcpy(model + off, buf, len);
                } else {
                        cr_assert_eq(xmem_read(t, &r, off, buf, len), 0);
                        cr_assert(!memcmp(buf, model + off, len), "%s: read %lu+%lu differs",
                                  kind, off, len);
                }
        }
        free(buf);
        buf = malloc(size);
        cr_assert_eq(xmem_read(t, &r, 0, buf, size), 0);
        cr_assert(!memcmp(buf, model, size), "%s: final image differs", kind);
        free(buf);
        free(model);
        xmem_transport_close(t);
}

Test(data, integrity_tcp) { integrity("tcp"); }
Test(data, integrity_unix) { integrity("unix"); }
Test(data, integrity_shm) { integrity("shm"); }

/* 40 MiB in one call: split at max_io (16 MiB) and pipelined. */
static void large(const char *kind)
{
        const size_t size = 40 << 20, off = 12345;
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = alloc_region(t, size + off);
        uint8_t *w = malloc(size), *rd = malloc(size);

        cr_assert_leq(xmem_transport_hello(t)->max_io, XMEM_WIRE_MAX_IO);
        harness_pattern(w, size, 7, off);
        cr_assert_eq(xmem_write(t, &r, off, w, size), 0);
        memset(rd, 0xAA, size);
        cr_assert_eq(xmem_read(t, &r, off, rd, size), 0);
        cr_assert(!memcmp(w, rd, size), "%s: 40 MiB read back differs", kind);
        /* past the end of the region: refused, not truncated */
        cr_assert_lt(xmem_read(t, &r, size + off, rd, 1 << 20), 0);
        free(w);
        free(rd);
        xmem_transport_close(t);
}

Test(data, large_tcp) { large("tcp"); }
Test(data, large_shm) { large("shm"); }

static void vec(const char *kind)
{
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = alloc_region(t, 4 << 20);
        struct xmem_wire_seg segs[50];
        uint8_t *w = malloc(50 * 8192), *rd = malloc(50 * 8192), one[8192];
        size_t total = 0;
        uint64_t seed = 99;

        for (int i = 0; i < 50; i++) {
                segs[i].offset = (uint64_t)i * 80000 + rnd(&seed) % 1000;
                segs[i].length = 1 + rnd(&seed) % 8192;
                harness_pattern(w + total, segs[i].length, 3, segs[i].offset);
                total += segs[i].length;
        }
        cr_assert_eq(xmem_writev(t, &r, segs, 50, w), 0);
        cr_assert_eq(xmem_readv(t, &r, segs, 50, rd), 0);
        cr_assert(!memcmp(w, rd, total), "%s: readv differs from writev", kind);
        /* each segment landed at its own offset */
        total = 0;
        for (int i = 0; i < 50; i++) {
                cr_assert_eq(xmem_read(t, &r, segs[i].offset, one, segs[i].length), 0);
                cr_assert(!memcmp(one, w + total, segs[i].length), "segment %d misplaced", i);
                total += segs[i].length;
        }
        free(w);
        free(rd);
        xmem_transport_close(t);
}

Test(data, vec_tcp) { vec("tcp"); }
Test(data, vec_shm) { vec("shm"); }

static void async64(const char *kind)
{
        enum { N = 64, SZ = 16384 };
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = alloc_region(t, N * SZ);
        static struct xmem_io ios[N];
        struct xmem_io *ptrs[N], *done[N];
        uint8_t *w = malloc(N * SZ), *rd = calloc(1, N * SZ);
        int seen[N] = { 0 }, got = 0;

        harness_pattern(w, N * SZ, 11, 0);
        for (int phase = 0; phase < 2; phase++) {
                for (int i = 0; i < N; i++) {
                        ios[i] = (struct xmem_io){
                                .op = phase ? XMEM_OP_READ : XMEM_OP_WRITE, .region = r,
                                .offset = (uint64_t)i * SZ, .buf = (phase ? rd : w) + i * SZ,
                                .len = SZ, .user = (void *)(intptr_t)i, .result = 1 };
                        ptrs[i] = &ios[i];
                }
                cr_assert_eq(xmem_transport_submit(t, ptrs, N), N);
                for (got = 0; got < N;) {
                        int k = xmem_transport_reap(t, done, N, 1, 10000);
                        cr_assert_gt(k, 0, "reap: %d after %d", k, got);
                        for (int j = 0; j < k; j++) {
                                int idx = (int)(intptr_t)done[j]->user;
                                cr_assert_eq(done[j]->result, 0, "io %d: %d", idx, done[j]->result);
                                cr_assert_eq(seen[idx], phase, "io %d reaped twice", idx);
                                seen[idx]++;
                        }
                        got += k;
                }
                /* nothing left: a reap with nothing in flight returns at once */
                cr_assert_eq(xmem_transport_reap(t, done, N, 0, 0), 0);
        }
        cr_assert(!memcmp(w, rd, N * SZ), "%s: async read-back differs", kind);
        free(w);
        free(rd);
        xmem_transport_close(t);
}

Test(data, async_tcp) { async64("tcp"); }
Test(data, async_shm) { async64("shm"); }

struct worker {
        struct xmem_transport *t;
        struct xmem_region_ref r;
        int id, failures;
};

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        uint8_t a[20000], b[20000];
        uint64_t seed = 1000 + (uint64_t)w->id;

        for (int i = 0; i < 200; i++) {
                uint64_t len = 1 + rnd(&seed) % sizeof(a);
                uint64_t off = (uint64_t)w->id * (1 << 20) + rnd(&seed) % ((1 << 20) - len);
                harness_pattern(a, len, seed, off);
                if (xmem_write(w->t, &w->r, off, a, len) < 0 ||
                    xmem_read(w->t, &w->r, off, b, len) < 0 || memcmp(a, b, len))
                        w->failures++;
        }
        return NULL;
}

static void threads(const char *kind)
{
        enum { NT = 8 };
        struct xmem_transport *t = open_kind(kind);
        struct xmem_region_ref r = alloc_region(t, NT << 20);
        struct worker w[NT];
        pthread_t th[NT];

        for (int i = 0; i < NT; i++) {
                w[i] = (struct worker){ .t = t, .r = r, .id = i };
                cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
        }
        /* snapshots taken meanwhile move the region's chunks under the workers
         * (copy-on-write): no write may be lost or land in a snapshot */
        for (int i = 0; i < 20; i++) {
                struct xmem_region_ref s;
                cr_assert_eq(xmem_region_snapshot(t, &r, &s), 0);
                cr_assert_eq(xmem_region_free(t, &s), 0);
        }
        for (int i = 0; i < NT; i++) {
                pthread_join(th[i], NULL);
                cr_expect_eq(w[i].failures, 0, "%s: thread %d: %d failures", kind, i,
                             w[i].failures);
        }
        xmem_transport_close(t);
}

Test(data, threads_tcp) { threads("tcp"); }
Test(data, threads_shm) { threads("shm"); }

Test(data, shm_and_tcp_see_each_other)
{
        struct xmem_transport *tcp = open_kind("tcp"), *shm = open_kind("shm");
        struct xmem_region_ref r = alloc_region(tcp, 2 << 20);
        uint8_t a[100000], b[100000];

        cr_assert(xmem_transport_hello(shm)->features & XMEM_FEAT_SHM);
        harness_pattern(a, sizeof(a), 21, 5000);
        cr_assert_eq(xmem_write(shm, &r, 5000, a, sizeof(a)), 0);
        cr_assert_eq(xmem_read(tcp, &r, 5000, b, sizeof(b)), 0);
        cr_assert(!memcmp(a, b, sizeof(a)), "tcp does not see the shm write");

        harness_pattern(a, sizeof(a), 22, 1 << 20);
        cr_assert_eq(xmem_write(tcp, &r, 1 << 20, a, sizeof(a)), 0);
        cr_assert_eq(xmem_read(shm, &r, 1 << 20, b, sizeof(b)), 0);
        cr_assert(!memcmp(a, b, sizeof(a)), "shm does not see the tcp write");
        /* never-written ranges read as zeros through both */
        cr_assert_eq(xmem_read(shm, &r, 1600000, b, 4096), 0);
        for (int i = 0; i < 4096; i++)
                cr_assert_eq(b[i], 0);
        xmem_transport_close(tcp);
        xmem_transport_close(shm);
}

/* A fake peer: answers HELLO properly, then misbehaves per MODE. */
struct fake_peer {
        int lfd, port, mode; /* mode 0: bad magic reply; 1: silence */
        pthread_t th;
};

static void *fake_main(void *arg)
{
        struct fake_peer *f = arg;
        int fd = accept(f->lfd, NULL, NULL);
        uint8_t raw[XMEM_WIRE_HDR_SIZE + XMEM_WIRE_HELLO_SIZE + 65536];
        struct xmem_wire_hdr h;

        while (fd >= 0 && recv(fd, raw, XMEM_WIRE_HDR_SIZE, MSG_WAITALL) == XMEM_WIRE_HDR_SIZE) {
                if (wire_hdr_decode(raw, false, &h, NULL) < 0)
                        break;
                if (h.payload_len && recv(fd, raw, h.payload_len, MSG_WAITALL) <= 0)
                        break;
                if (h.op == XMEM_OP_HELLO) {
                        struct xmem_wire_hello hello = { 1, 0, 65536, 1 << 30, 1 << 20 };
                        h.op |= XMEM_OP_REPLY;
                        h.payload_len = XMEM_WIRE_HELLO_SIZE;
                        wire_hdr_encode(&h, raw);
                        wire_hello_encode(&hello, raw + XMEM_WIRE_HDR_SIZE);
                        if (send(fd, raw, XMEM_WIRE_HDR_SIZE + XMEM_WIRE_HELLO_SIZE, 0) < 0)
                                break;
                } else if (f->mode == 0) {
                        h.op |= XMEM_OP_REPLY;
                        h.magic = 0xdeadbeef;
                        wire_hdr_encode(&h, raw);
                        if (send(fd, raw, XMEM_WIRE_HDR_SIZE, 0) < 0)
                                break;
                }
        }
        sleep(1);
        if (fd >= 0)
                close(fd);
        return NULL;
}

static struct xmem_transport *open_fake(struct fake_peer *f, int mode)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        struct xmem_transport_opts o = { .connections = 1, .timeout_ms = 300 };
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };
        char uri[64];

        f->mode = mode;
        f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(listen(f->lfd, 4), 0);
        getsockname(f->lfd, (struct sockaddr *)&sa, &len);
        cr_assert_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
        snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%u", ntohs(sa.sin_port));
        cr_assert_eq(xmem_transport_open(uri, &o, &t, &err), 0, "%s", xmem_error_str(&err));
        return t;
}

static void close_fake(struct fake_peer *f, struct xmem_transport *t)
{
        xmem_transport_close(t);
        pthread_join(f->th, NULL);
        close(f->lfd);
}

Test(data, malformed_reply_fails_with_eproto)
{
        struct fake_peer f;
        struct xmem_transport *t = open_fake(&f, 0);
        struct xmem_region_ref r = { .id = 1 };
        uint8_t buf[4096];

        cr_assert_eq(xmem_read(t, &r, 0, buf, sizeof(buf)), -EPROTO);
        close_fake(&f, t);
}

Test(data, silent_peer_times_out)
{
        struct fake_peer f;
        struct xmem_transport *t = open_fake(&f, 1);
        struct xmem_region_ref r = { .id = 1 };
        struct timespec a, b;
        uint8_t buf[4096];

        clock_gettime(CLOCK_MONOTONIC, &a);
        cr_assert_eq(xmem_read(t, &r, 0, buf, sizeof(buf)), -ETIMEDOUT);
        clock_gettime(CLOCK_MONOTONIC, &b);
        cr_assert_lt(b.tv_sec - a.tv_sec, 3, "timeout took too long");
        close_fake(&f, t);
}

/* A restarted appliance: the connections fail, the next requests reconnect. */
Test(data, tcp_reconnects_after_restart)
{
        struct xmem_transport *t = open_kind("tcp");
        struct xmem_region_ref r = alloc_region(t, 1 << 20), r2;
        uint8_t buf[4096] = { 1 };
        int k = 0;

        cr_assert_eq(xmem_write(t, &r, 0, buf, sizeof(buf)), 0);
        harness_stop(&app);
        cr_assert_lt(xmem_read(t, &r, 0, buf, sizeof(buf)), 0, "read from a stopped appliance");
        harness_appliance_start(&app, NULL);
        /* the anonymous pool is gone: the region is unknown to the new appliance */
        for (int i = 0; i < 8 && k != -ENOENT; i++)
                k = xmem_read(t, &r, 0, buf, sizeof(buf));
        cr_assert_eq(k, -ENOENT, "after restart: %d", k);
        r2 = alloc_region(t, 1 << 20);
        cr_assert_eq(xmem_write(t, &r2, 0, buf, sizeof(buf)), 0);
        xmem_transport_close(t);
}
