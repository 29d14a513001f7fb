/* bench/appliance.c: bench-appliance: throughput and latency of the tcp and
 * shm transports against a real appliance, each beside plain memcpy of the
 * same sizes measured in the same run; --demo writes 1 GiB and verifies it. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spawn.h"
#include "transport/transport.h"

#define MIB (1ull << 20)
#define MAX_LAT 200000

struct bench {
        const char *uris[4];
        size_t nuris;
        const char *appliance;
        uint64_t region_size;
        double seconds; /* per measurement */
        unsigned depth; /* pipelined ios in flight */
        pid_t child;
        char dir[64];
        bool demo;
        uint64_t demo_bytes;
};

struct result {
        double mib_s, p50_us, p99_us;
};

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static void finish(struct result *res, double *lat, size_t n, uint64_t bytes, double secs)
{
        res->mib_s = (double)bytes / (double)MIB / secs;
        res->p50_us = res->p99_us = 0;
        if (n == 0)
                return;
        qsort(lat, n, sizeof(*lat), cmp_double);
        res->p50_us = lat[n / 2] * 1e6;
        res->p99_us = lat[MIN(n - 1, n * 99 / 100)] * 1e6;
}

static uint64_t next_off(uint64_t *seed, uint64_t *seq, uint64_t size, uint64_t span, bool rand)
{
        uint64_t off;
        if (rand)
                return rnd(seed) % (span / size) * size;
        off = *seq;
        *seq = (*seq + size) % (span / size * size);
        return off;
}

/* Plain memcpy between a local "far" buffer and a local page, same pattern. */
static void bench_memcpy(uint8_t *far, uint64_t span, uint8_t *buf, size_t size, bool write,
                         bool rand, double secs, double *lat, struct result *res)
{
        uint64_t seed = 1, seq = 0, bytes = 0;
        size_t n = 0;
        double start = now_s(), t;

        do {
                uint64_t off = next_off(&seed, &seq, size, span, rand);
                double a = now_s();
                if (write)
                        memcpy(far + off, buf, size);
                else
                        memcpy(buf, far + off, size);
                __asm__ volatile("" ::: "memory");
                t = now_s();
                if (n < MAX_LAT)
                        lat[n++] = t - a;
                bytes += size;
        } while (t - start < secs);
        finish(res, lat, n, bytes, t - start);
}

static int bench_sync(struct xmem_transport *tr, const struct xmem_region_ref *r, uint64_t span,
                      uint8_t *buf, size_t size, bool write, bool rand, double secs, double *lat,
                      struct result *res)
{
        uint64_t seed = 1, seq = 0, bytes = 0;
        size_t n = 0;
        double start = now_s(), t;

        do {
                uint64_t off = next_off(&seed, &seq, size, span, rand);
                double a = now_s();
                int k = write ? xmem_write(tr, r, off, buf, size) : xmem_read(tr, r, off, buf, size);
                if (k < 0)
                        return k;
                t = now_s();
                if (n < MAX_LAT)
                        lat[n++] = t - a;
                bytes += size;
        } while (t - start < secs);
        finish(res, lat, n, bytes, t - start);
        return 0;
}

/* DEPTH random ios kept in flight with submit/reap. */
static int bench_async(struct xmem_transport *tr, const struct xmem_region_ref *r, uint64_t span,
                       uint8_t *bufs, size_t size, bool write, unsigned depth, double secs,
                       struct result *res)
{
        struct xmem_io ios[256], *done[256];
        uint64_t seed = 7, seq = 0, bytes = 0;
        unsigned inflight = 0;
        double start = now_s(), t = start;
        bool stop = false;

        depth = MIN(depth, 256u);
        for (unsigned i = 0; i < depth; i++)
                ios[i] = (struct xmem_io){ .op = write ? XMEM_OP_WRITE : XMEM_OP_READ,
                                           .region = *r, .buf = bufs + i * size, .len = size };
        for (unsigned i = 0; i < depth; i++) {
                struct xmem_io *p = &ios[i];
                p->offset = next_off(&seed, &seq, size, span, true);
                if (xmem_transport_submit(tr, &p, 1) < 0)
                        return -EIO;
                inflight++;
        }
        while (inflight > 0) {
                int k = xmem_transport_reap(tr, done, 256, 1, 10000);
                if (k < 0)
                        return k;
                t = now_s();
                stop = stop || t - start >= secs;
                for (int i = 0; i < k; i++) {
                        if (done[i]->result < 0)
                                return done[i]->result;
                        bytes += size;
                        inflight--;
                        if (stop)
                                continue;
                        done[i]->offset = next_off(&seed, &seq, size, span, true);
                        if (xmem_transport_submit(tr, &done[i], 1) < 0)
                                return -EIO;
                        inflight++;
                }
        }
        finish(res, NULL, 0, bytes, t - start);
        return 0;
}

static void print_row(const char *uri, const char *name, const struct result *x,
                      const struct result *m)
{
        char p50[16] = "-", p99[16] = "-"; /* pipelined runs have no per-op latency */

        if (x->p50_us > 0) {
                snprintf(p50, sizeof(p50), "%.1f", x->p50_us);
                snprintf(p99, sizeof(p99), "%.1f", x->p99_us);
        }
        printf("%-6s %-22s %10.1f %9s %9s | memcpy %10.1f %8.2f %8.2f | ratio %7.4f\n", uri,
               name, x->mib_s, p50, p99, m->mib_s, m->p50_us, m->p99_us,
               m->mib_s > 0 ? x->mib_s / m->mib_s : 0);
}

static int bench_uri(struct bench *b, const char *uri, uint8_t *far, double *lat)
{
        static const size_t sizes[] = { 4096, 65536 };
        struct xmem_transport *tr = NULL;
        struct xmem_error err = { 0 };
        struct xmem_region_ref r;
        uint8_t *bufs = malloc(256 * 65536);
        const char *kind = strstr(uri, "shm://") ? "shm" : strstr(uri, "unix://") ? "unix" : "tcp";
        int k;

        k = xmem_transport_open(uri, NULL, &tr, &err);
        if (k < 0) {
                fprintf(stderr, "bench: %s\n", xmem_error_str(&err));
                return k;
        }
        k = xmem_region_alloc(tr, b->region_size, &r, NULL);
        /* touch every chunk so reads measure data, not holes */
        for (uint64_t off = 0; k == 0 && off < b->region_size; off += 16 * MIB)
                k = xmem_write(tr, &r, off, far + off, MIN(16 * MIB, b->region_size - off));
        for (size_t s = 0; k == 0 && s < ELEMENTSOF(sizes); s++) {
                for (int mode = 0; k == 0 && mode < 4; mode++) {
                        bool write = mode & 1, rand = mode & 2;
                        struct result x, m;
                        char name[64];
                        snprintf(name, sizeof(name), "%s %s %zuK", rand ? "rand" : "seq",
                                 write ? "write" : "read", sizes[s] / 1024);
                        k = bench_sync(tr, &r, b->region_size, bufs, sizes[s], write, rand,
                                       b->seconds, lat, &x);
                        bench_memcpy(far, b->region_size, bufs, sizes[s], write, rand, b->seconds,
                                     lat, &m);
                        if (k == 0)
                                print_row(kind, name, &x, &m);
                }
                for (int write = 0; k == 0 && write < 2; write++) {
                        struct result x, m;
                        char name[64];
                        snprintf(name, sizeof(name), "rand %s %zuK qd%u", write ? "write" : "read",
                                 sizes[s] / 1024, b->depth);
                        k = bench_async(tr, &r, b->region_size, bufs, sizes[s], write, b->depth,
                                        b->seconds, &x);
                        bench_memcpy(far, b->region_size, bufs, sizes[s], write, true, b->seconds,
                                     lat, &m);
                        if (k == 0)
                                print_row(kind, name, &x, &m);
                }
        }
        if (k < 0)
                fprintf(stderr, "bench: %s: %s\n", uri, strerror(-k));
        xmem_region_free(tr, &r);
        xmem_transport_close(tr);
        free(bufs);
        return k;
}

static void fill(uint8_t *p, size_t len, uint64_t off)
{
        for (size_t i = 0; i < len; i += 8) {
                uint64_t v = (off + i) * 0x9e3779b97f4a7c15ULL;
                memcpy(p + i, &v, 8);
        }
}

/* Write DEMO_BYTES through the first uri, read them back verified. */
static int demo(struct bench *b)
{
        const size_t step = 64 * MIB;
        uint8_t *w = malloc(step), *rd = malloc(step);
        struct xmem_transport *tr = NULL;
        struct xmem_error err = { 0 };
        struct xmem_region_ref r;
        double t0, t1, t2;
        int k;

        k = xmem_transport_open(b->uris[0], NULL, &tr, &err);
        if (k < 0) {
                fprintf(stderr, "demo: %s\n", xmem_error_str(&err));
                return k;
        }
        k = xmem_region_alloc(tr, b->demo_bytes, &r, NULL);
        if (k < 0) {
                fprintf(stderr, "demo: alloc %llu bytes: %s\n",
                        (unsigned long long)b->demo_bytes, strerror(-k));
                return k;
        }
        t0 = now_s();
        for (uint64_t off = 0; k == 0 && off < b->demo_bytes; off += step) {
                fill(w, step, off);
                k = xmem_write(tr, &r, off, w, MIN(step, b->demo_bytes - off));
        }
        t1 = now_s();
        for (uint64_t off = 0; k == 0 && off < b->demo_bytes; off += step) {
                size_t n = MIN(step, b->demo_bytes - off);
                k = xmem_read(tr, &r, off, rd, n);
                fill(w, step, off);
                if (k == 0 && memcmp(w, rd, n)) {
                        fprintf(stderr, "demo: data differs in [%llu, +%zu)\n",
                                (unsigned long long)off, n);
                        k = -EIO;
                }
        }
        t2 = now_s();
        if (k == 0)
                printf("demo: %s: wrote %llu MiB in %.2f s (%.0f MiB/s), read back and verified "
                       "in %.2f s (%.0f MiB/s)\n",
                       b->uris[0], (unsigned long long)(b->demo_bytes / MIB), t1 - t0,
                       (double)b->demo_bytes / MIB / (t1 - t0), t2 - t1,
                       (double)b->demo_bytes / MIB / (t2 - t1));
        else
                fprintf(stderr, "demo: %s\n", strerror(-k));
        xmem_region_free(tr, &r);
        xmem_transport_close(tr);
        free(w);
        free(rd);
        return k;
}

static void usage(void)
{
        printf("bench-appliance [--uri URI]... [--appliance PATH] [--seconds S] [--depth N]\n"
               "                [--region-size MIB] [--demo [--demo-mib N]]\n"
               "Without --uri, starts xmem-appliance (--appliance or $XMEM_APPLIANCE) on a free\n"
               "loopback port and a unix socket and measures tcp and shm.\n");
}

static int parse_args(struct bench *b, int argc, char **argv)
{
        static const struct option opts[] = {
                { "uri", required_argument, NULL, 'u' },
                { "appliance", required_argument, NULL, 'a' },
                { "seconds", required_argument, NULL, 's' },
                { "depth", required_argument, NULL, 'd' },
                { "region-size", required_argument, NULL, 'r' },
                { "demo", no_argument, NULL, 'D' },
                { "demo-mib", required_argument, NULL, 'M' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 'u':
                        if (b->nuris < ELEMENTSOF(b->uris))
                                b->uris[b->nuris++] = optarg;
                        break;
                case 'a': b->appliance = optarg; break;
                case 's': b->seconds = atof(optarg); break;
                case 'd': b->depth = (unsigned)atoi(optarg); break;
                case 'r': b->region_size = strtoull(optarg, NULL, 10) * MIB; break;
                case 'D': b->demo = true; break;
                case 'M': b->demo_bytes = strtoull(optarg, NULL, 10) * MIB; break;
                case 'h': usage(); exit(0);
                default: usage(); return -EINVAL;
                }
        }
        if (b->seconds <= 0 || b->depth == 0 || b->region_size < MIB || b->demo_bytes < MIB) {
                fprintf(stderr, "bench: bad --seconds, --depth, --region-size or --demo-mib\n");
                return -EINVAL;
        }
        return 0;
}

int main(int argc, char **argv)
{
        struct bench b = { .seconds = 0.4, .depth = 32, .region_size = 256 * MIB,
                           .demo_bytes = 1024 * MIB, .child = -1 };
        uint8_t *far;
        double *lat;
        int k = 0;

        if (parse_args(&b, argc, argv) < 0)
                return 2;
        if (b.nuris == 0) {
                static char tcp[64], shm[128];
                uint64_t pool = MAX(b.region_size, b.demo ? b.demo_bytes : 0) + 64 * MIB;
                if (spawn_appliance(b.appliance, pool, tcp, sizeof(tcp), shm, sizeof(shm),
                                    &b.child, b.dir, sizeof(b.dir)) < 0)
                        return 1;
                b.uris[b.nuris++] = tcp;
                if (!b.demo)
                        b.uris[b.nuris++] = shm;
        }
        if (b.demo) {
                k = demo(&b);
        } else {
                far = malloc(b.region_size);
                lat = malloc(MAX_LAT * sizeof(*lat));
                fill(far, b.region_size, 0); /* fault the memcpy baseline's pages in */
                printf("%-6s %-22s %10s %9s %9s | %-6s %10s %8s %8s | %s\n", "", "test", "MiB/s",
                       "p50 us", "p99 us", "", "MiB/s", "p50 us", "p99 us", "xmem/memcpy");
                for (size_t i = 0; k == 0 && i < b.nuris; i++)
                        k = bench_uri(&b, b.uris[i], far, lat);
                free(far);
                free(lat);
        }
        spawn_stop(b.child, b.dir);
        return k < 0 ? 1 : 0;
}
