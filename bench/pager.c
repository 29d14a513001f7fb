/* bench/pager.c: bench-pager: the paging engine under load. Like test_pager
 * it plays memd: a child in a fresh memory cgroup maps an arena memfd and
 * hands its userfaultfd over; this process serves it with the pager and the
 * residency manager against a real xmem-appliance (shm and tcp). Sequential,
 * uniform and zipfian 4 KiB reads and writes over a working set several times
 * the local limit, next to the same workload on plain anonymous memory with
 * no limit (same run), and 4 KiB fault latency. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "fdio.h"
#include "paged.h"
#include "pager.h"
#include "parse.h"
#include "residency.h"
#include "spawn.h"
#include "store.h"
#include "transport/transport.h"
#include "uffd.h"

#define MIB (1ULL << 20)
#define PAGE 4096ULL
#define WORDS (PAGE / 8)
#define ARENA_BASE 0x500000000000ULL
#define MAX_LAT_PAGES (1U << 16)

enum phase { SEQ_WRITE, SEQ_READ, UNI_READ, UNI_WRITE, ZIPF_READ, ZIPF_WRITE, N_PHASES };
static const char *const phase_name[N_PHASES] = {
        "seq write", "seq read", "uniform read", "uniform write", "zipf read", "zipf write",
};

struct bench {
        uint64_t limit, working_set, headroom, chunk, ops, lat_size;
        double zipf_theta;
        struct pager_opts popts;
        const char *appliance;
        const char *only; /* "shm" or "tcp"; NULL = both */
};

/* What a child reports back. */
struct phase_result {
        double secs;
        uint64_t ops, errors;
};
struct run_result {
        struct phase_result ph[N_PHASES];
};
struct lat_result {
        double read_p50, read_p99, write_p50, write_p99; /* microseconds */
        uint64_t errors;
};

/* What the engine saw (parent side). */
struct engine_stats {
        uint64_t faults, wp, fetched, written, evictions, enomem, oom_kills, usage_max;
        double svc_p50, svc_p99;
        int status;
};

/* ---- zipfian page picker (Gray et al., as in YCSB), hot pages scattered ---- */

struct zipf {
        uint64_t n;
        double theta, alpha, zetan, eta, half_pow;
};

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
        double zeta2 = 1.0 + pow(0.5, theta);

        z->n = n;
        z->theta = theta;
        z->zetan = 0;
        for (uint64_t i = 1; i <= n; i++)
                z->zetan += 1.0 / pow((double)i, theta);
        z->alpha = 1.0 / (1.0 - theta);
        z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / z->zetan);
        z->half_pow = 1.0 + pow(0.5, theta);
}

static uint64_t zipf_page(const struct zipf *z, uint64_t *rng)
{
        double u = (double)(paged_xorshift(rng) >> 11) / (double)(1ULL << 53), uz = u * z->zetan;
        uint64_t rank;

        if (uz < 1.0)
                rank = 0;
        else if (uz < z->half_pow)
                rank = 1;
        else
                rank = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
        if (rank >= z->n)
                rank = z->n - 1;
        /* Scatter the ranks so hot pages are not neighbours (FNV-like mix). */
        return (rank * 0x9E3779B97F4A7C15ULL >> 17) % z->n;
}

/* ---- the workload (runs in a child, on the arena or on anonymous memory) ---- */

static inline uint64_t tag_of(uint64_t page)
{
        return page * 0x100000001B3ULL + 1;
}

static void page_write(uint64_t *w, uint64_t page, uint64_t gen)
{
        w[0] = tag_of(page);
        for (uint64_t i = 1; i < WORDS; i++)
                w[i] = gen + i;
}

/* Reads the whole page; returns 1 if its tag is wrong (a lost write). */
static int page_read(const uint64_t *w, uint64_t page, uint64_t *sink)
{
        uint64_t s = 0;
        for (uint64_t i = 0; i < WORDS; i++)
                s += w[i];
        *sink += s;
        return w[0] != tag_of(page);
}

static void run_phase(char *m, uint64_t pages, enum phase ph, uint64_t ops,
                      const struct zipf *z, struct phase_result *res)
{
        uint64_t rng = 0x2545F4914F6CDD1DULL + (uint64_t)ph, sink = 0, errors = 0;
        bool write = ph == SEQ_WRITE || ph == UNI_WRITE || ph == ZIPF_WRITE;
        double t0;

        if (ph == SEQ_WRITE || ph == SEQ_READ)
                ops = pages;
        t0 = paged_now_s();
        for (uint64_t k = 0; k < ops; k++) {
                uint64_t page = ph <= SEQ_READ              ? k
                                : ph <= UNI_WRITE           ? paged_xorshift(&rng) % pages
                                                            : zipf_page(z, &rng);
                uint64_t *w = (uint64_t *)(m + page * PAGE);
                if (write)
                        page_write(w, page, k);
                else
                        errors += (uint64_t)page_read(w, page, &sink);
        }
        res->secs = paged_now_s() - t0;
        res->ops = ops;
        res->errors = errors;
        __asm__ volatile("" : : "r"(sink));
}

static void workload(char *m, uint64_t size, const struct bench *b, struct run_result *out)
{
        uint64_t pages = size / PAGE;
        struct zipf z;

        zipf_init(&z, pages, b->zipf_theta);
        for (int ph = 0; ph < N_PHASES; ph++)
                run_phase(m, pages, (enum phase)ph, b->ops, &z, &out->ph[ph]);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static void quantiles(double *v, size_t n, double *p50, double *p99)
{
        qsort(v, n, sizeof(*v), cmp_double);
        *p50 = n ? v[n / 2] * 1e6 : 0;
        *p99 = n ? v[MIN(n - 1, n * 99 / 100)] * 1e6 : 0;
}

/* Touch every page once in random order: even ones read, odd ones written;
 * each touch is a 4 KiB MISSING fault that fetches from the store. */
static void latency_workload(char *m, uint64_t size, struct lat_result *out)
{
        uint64_t pages = MIN(size / PAGE, MAX_LAT_PAGES), rng = 0x9E3779B9;
        uint32_t *order = malloc(pages * sizeof(*order));
        double *rd = malloc(pages * sizeof(*rd)), *wr = malloc(pages * sizeof(*wr));
        size_t nr = 0, nw = 0;

        if (!order || !rd || !wr)
                _exit(40);
        for (uint64_t i = 0; i < pages; i++)
                order[i] = (uint32_t)i;
        for (uint64_t i = pages - 1; i > 0; i--) {
                uint64_t j = paged_xorshift(&rng) % (i + 1), x = order[i];
                order[i] = order[j];
                order[j] = (uint32_t)x;
        }
        *out = (struct lat_result){};
        for (uint64_t k = 0; k < pages; k++) {
                uint64_t page = order[k];
                volatile uint64_t *w = (volatile uint64_t *)(m + page * PAGE);
                double t0 = paged_now_s();
                if (page & 1) {
                        w[1] = k;
                        wr[nw++] = paged_now_s() - t0;
                } else {
                        uint64_t v = w[0];
                        rd[nr++] = paged_now_s() - t0;
                        out->errors += v != tag_of(page);
                }
        }
        quantiles(rd, nr, &out->read_p50, &out->read_p99);
        quantiles(wr, nw, &out->write_p50, &out->write_p99);
}

/* ---- the parent side: plays memd ---- */

struct session {
        const struct bench *b;
        uint64_t size, chunk;
        bool prewrite; /* store holds the page tags before the run (latency) */
        struct cgroup *cg;
};

static int prewrite_store(struct store *s, uint64_t size)
{
        uint64_t *buf = malloc(MIB);
        int r = 0;

        if (!buf)
                return -ENOMEM;
        for (uint64_t off = 0; r >= 0 && off < size; off += MIB) {
                for (uint64_t p = 0; p < MIB / PAGE; p++)
                        page_write(buf + p * WORDS, off / PAGE + p, 7);
                r = store_writeback(s, off, buf, MIN(MIB, size - off));
        }
        free(buf);
        return r;
}

static void collect(struct residency *res, struct cgroup *cg, struct engine_stats *st)
{
        struct xmem_counters *c = &res->counters;
        struct cgroup_mem m = {};

        st->faults = c->faults;
        st->wp = c->wp_faults;
        st->fetched = c->fetched_bytes;
        st->written = c->written_back_bytes;
        st->evictions = c->evictions;
        st->enomem = c->enomem_retries;
        st->svc_p50 = (double)lat_hist_quantile(&c->fault_latency, 0.5) / 1e3;
        st->svc_p99 = (double)lat_hist_quantile(&c->fault_latency, 0.99) / 1e3;
        if (cgroup_read_mem(cg, &m) >= 0)
                st->oom_kills = m.oom_kill;
        if (cg->version == CGROUP_V1)
                (void)cgroup_read_u64(cg, "memory.max_usage_in_bytes", &st->usage_max);
        else
                (void)cgroup_read_u64(cg, "memory.peak", &st->usage_max);
}

typedef void (*session_fn)(char *m, uint64_t size, const struct bench *b, void *out);

struct session_child {
        const struct bench *b;
        session_fn fn;
        size_t out_len;
};

/* In the child: run the workload, send its results to the parent. */
static int session_child_run(char *m, uint64_t size, int sock, void *arg)
{
        const struct session_child *c = arg;
        void *o = calloc(1, c->out_len);

        c->fn(m, size, c->b, o);
        return write_full(sock, o, c->out_len) < 0 ? 16 : 0;
}

/* One paged child from fork to exit (paged.c plays memd). FN runs in the
 * child on the arena and returns OUT_LEN bytes of results through the socket. */
static int session_run(struct session *s, const char *uri, session_fn fn, void *out,
                       size_t out_len, struct engine_stats *st)
{
        const struct bench *b = s->b;
        const struct paged_opts o = {
                .uri = uri, .size = s->size, .chunk = (uint32_t)s->chunk,
                .budget = b->limit - b->headroom, .pager = &b->popts, .base = ARENA_BASE,
                .prefill = s->prewrite ? prewrite_store : NULL,
        };
        struct session_child c = { .b = b, .fn = fn, .out_len = out_len };
        struct xmem_error err = {};
        struct paged p = PAGED_INIT;
        int r;

        r = paged_open(&p, &o, &err);
        if (r < 0 && err.msg[0])
                fprintf(stderr, "bench-pager: %s: %s\n", uri, xmem_error_str(&err));
        if (r >= 0)
                r = paged_spawn(&p, &o, s->cg, session_child_run, &c);
        if (r >= 0) {
                residency_track_cgroup(p.res, s->cg, b->limit, b->headroom);
                r = paged_serve(&p);
        }
        if (r >= 0)
                r = read_full(p.sock, out, out_len);
        if (p.pid > 0) {
                if (r < 0)
                        kill(p.pid, SIGKILL);
                (void)paged_wait(&p, &st->status);
        }
        if (p.res) {
                residency_stop(p.res);
                collect(p.res, s->cg, st);
        }
        paged_free(&p);
        return r < 0 ? r : 0;
}

static void throughput_fn(char *m, uint64_t size, const struct bench *b, void *out)
{
        workload(m, size, b, out);
}

static void latency_fn(char *m, uint64_t size, const struct bench *b, void *out)
{
        (void)b;
        latency_workload(m, size, out);
}

/* The same workload on plain anonymous memory, no limit, in a child. */
static int run_local(const struct bench *b, struct run_result *out)
{
        int p[2], status = 0, r;
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid == 0) {
                struct run_result res = {};
                char *m = mmap(NULL, b->working_set, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED)
                        _exit(1);
                workload(m, b->working_set, b, &res);
                _exit(write_full(p[1], &res, sizeof(res)) < 0);
        }
        close(p[1]);
        r = pid < 0 ? -errno : read_full(p[0], out, sizeof(*out));
        close(p[0]);
        if (pid > 0)
                waitpid(pid, &status, 0);
        return r;
}

/* ---- output ---- */

static double mib_s(const struct phase_result *p)
{
        return p->secs > 0 ? (double)p->ops * PAGE / MIB / p->secs : 0;
}

static double ops_s(const struct phase_result *p)
{
        return p->secs > 0 ? (double)p->ops / p->secs : 0;
}

struct transport_result {
        const char *name;
        bool ok;
        struct run_result run;
        struct lat_result lat;
        struct engine_stats run_st, lat_st;
};

static void print_table(const struct bench *b, const struct run_result *local,
                        const struct transport_result *tr, size_t n)
{
        printf("\n%-14s %10s %10s", "workload", "local MiB/s", "ops/s");
        for (size_t i = 0; i < n; i++)
                printf(" | %3s MiB/s %9s %7s", tr[i].name, "ops/s", "ratio");
        printf("\n");
        for (int ph = 0; ph < N_PHASES; ph++) {
                printf("%-14s %10.0f %10.0f", phase_name[ph], mib_s(&local->ph[ph]),
                       ops_s(&local->ph[ph]));
                for (size_t i = 0; i < n; i++) {
                        const struct phase_result *p = &tr[i].run.ph[ph];
                        if (!tr[i].ok) {
                                printf(" | %9s %9s %7s", "-", "-", "-");
                                continue;
                        }
                        printf(" | %9.0f %9.0f %6.3fx", mib_s(p), ops_s(p),
                               mib_s(p) / mib_s(&local->ph[ph]));
                }
                printf("\n");
        }
        printf("\n4 KiB fault latency (arena chunk 4 KiB, %llu MiB store-backed, random "
               "order, as seen by the faulting thread; service = engine's histogram):\n",
               (unsigned long long)(b->lat_size / MIB));
        printf("%-5s %12s %12s %13s %13s %14s %14s\n", "", "read p50 us", "read p99 us",
               "write p50 us", "write p99 us", "service p50 us", "service p99 us");
        for (size_t i = 0; i < n; i++)
                if (tr[i].ok)
                        printf("%-5s %12.1f %12.1f %13.1f %13.1f %14.1f %14.1f\n", tr[i].name,
                               tr[i].lat.read_p50, tr[i].lat.read_p99, tr[i].lat.write_p50,
                               tr[i].lat.write_p99, tr[i].lat_st.svc_p50, tr[i].lat_st.svc_p99);
        printf("\nengine counters of the throughput run:\n");
        for (size_t i = 0; i < n; i++) {
                const struct engine_stats *s = &tr[i].run_st;
                uint64_t errors = 0;
                for (int ph = 0; ph < N_PHASES; ph++)
                        errors += tr[i].run.ph[ph].errors;
                printf("%-5s faults %llu (wp %llu), fetched %llu MiB, written back %llu MiB, "
                       "evictions %llu, ENOMEM retries %llu, cgroup peak %llu MiB, "
                       "oom kills %llu, wrong pages %llu\n",
                       tr[i].name, (unsigned long long)s->faults, (unsigned long long)s->wp,
                       (unsigned long long)(s->fetched / MIB),
                       (unsigned long long)(s->written / MIB), (unsigned long long)s->evictions,
                       (unsigned long long)s->enomem, (unsigned long long)(s->usage_max / MIB),
                       (unsigned long long)s->oom_kills, (unsigned long long)errors);
        }
}

/* ---- main ---- */

static void usage(void)
{
        printf("bench-pager [--limit 64M] [--working-set 4xLIMIT] [--headroom 16M]\n"
               "            [--chunk 64K] [--ops N] [--zipf-theta 0.99] [--lat-size 16M]\n"
               "            [--prefetch N] [--workers N|-1] [--poll USEC] [--only shm|tcp]\n"
               "            [--appliance BIN]\n"
               "  --workers: fill workers beside the fault reader (-1: none; default 1)\n"
               "  --poll: the fault reader busy-polls USEC after each fault (default 0)\n");
}

static int parse_args(struct bench *b, int argc, char **argv)
{
        static const struct option opts[] = {
                { "limit", required_argument, NULL, 'l' },
                { "working-set", required_argument, NULL, 'w' },
                { "headroom", required_argument, NULL, 'H' },
                { "chunk", required_argument, NULL, 'c' },
                { "ops", required_argument, NULL, 'o' },
                { "zipf-theta", required_argument, NULL, 'z' },
                { "lat-size", required_argument, NULL, 'L' },
                { "prefetch", required_argument, NULL, 'p' },
                { "workers", required_argument, NULL, 'W' },
                { "poll", required_argument, NULL, 'P' },
                { "only", required_argument, NULL, 'O' },
                { "appliance", required_argument, NULL, 'a' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        uint64_t v;
        int c, r = 0;

        while (r >= 0 && (c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 'l': r = parse_size(optarg, &b->limit); break;
                case 'w': r = parse_size(optarg, &b->working_set); break;
                case 'H': r = parse_size(optarg, &b->headroom); break;
                case 'c': r = parse_size(optarg, &b->chunk); break;
                case 'o': r = parse_u64(optarg, &b->ops); break;
                case 'z': b->zipf_theta = atof(optarg); break;
                case 'L': r = parse_size(optarg, &b->lat_size); break;
                case 'p': r = parse_u64(optarg, &v); b->popts.window = (unsigned)v; break;
                case 'W': b->popts.workers = atoi(optarg); break;
                case 'P': r = parse_u64(optarg, &v); b->popts.poll_us = (unsigned)v; break;
                case 'O': b->only = optarg; break;
                case 'a': b->appliance = optarg; break;
                case 'h': usage(); exit(0);
                default: usage(); return -EINVAL;
                }
        }
        if (r < 0) {
                fprintf(stderr, "bench-pager: bad value '%s'\n", optarg);
                return r;
        }
        if (!b->working_set)
                b->working_set = 4 * b->limit;
        b->working_set = ALIGN_UP(b->working_set, b->chunk);
        if (!b->ops)
                b->ops = b->working_set / PAGE / 2;
        if (b->headroom >= b->limit || b->chunk < PAGE || (b->chunk & (b->chunk - 1)) ||
            b->zipf_theta <= 0 || b->zipf_theta >= 1 || b->lat_size < PAGE) {
                fprintf(stderr, "bench-pager: need headroom < limit, a power-of-two chunk "
                                ">= 4K, 0 < zipf-theta < 1\n");
                return -EINVAL;
        }
        return 0;
}

static void run_transport(const struct bench *b, const char *name, const char *uri,
                          struct transport_result *tr)
{
        struct session s = { .b = b, .size = b->working_set, .chunk = b->chunk };
        int r;

        tr->name = name;
        if ((r = paged_cgroup_new("xmem-bench", name, b->limit, &s.cg)) < 0) {
                fprintf(stderr, "bench-pager: memory cgroup: %s\n", strerror(-r));
                return;
        }
        fprintf(stderr, "bench-pager: %s: throughput run...\n", name);
        r = session_run(&s, uri, throughput_fn, &tr->run, sizeof(tr->run), &tr->run_st);
        if (r >= 0) {
                fprintf(stderr, "bench-pager: %s: latency run...\n", name);
                s.size = b->lat_size;
                s.chunk = PAGE;
                s.prewrite = true;
                r = session_run(&s, uri, latency_fn, &tr->lat, sizeof(tr->lat), &tr->lat_st);
        }
        tr->ok = r >= 0;
        if (r < 0)
                fprintf(stderr, "bench-pager: %s: %s (child status 0x%x)\n", name,
                        strerror(-r), tr->run_st.status);
        (void)cgroup_remove(s.cg);
        cgroup_free(s.cg);
}

int main(int argc, char **argv)
{
        struct bench b = { .limit = 64 * MIB, .headroom = 16 * MIB, .chunk = 64 * 1024,
                           .zipf_theta = 0.99, .lat_size = 16 * MIB };
        struct transport_result tr[2] = {};
        struct run_result local = {};
        char tcp[64], shm[128], dir[64] = "";
        pid_t app = -1;
        size_t n = 0;
        int rc = 0;

        if (parse_args(&b, argc, argv) < 0)
                return 2;
        if (geteuid() != 0 || access("/dev/userfaultfd", F_OK) < 0) {
                fprintf(stderr, "bench-pager: needs root and /dev/userfaultfd\n");
                return 77;
        }
        printf("bench-pager: limit %llu MiB (headroom %llu MiB), working set %llu MiB "
               "(%.1fx), chunk %llu KiB, %llu random ops of 4 KiB per phase, window %u, "
               "workers %d, poll %u us\n",
               (unsigned long long)(b.limit / MIB), (unsigned long long)(b.headroom / MIB),
               (unsigned long long)(b.working_set / MIB), (double)b.working_set / b.limit,
               (unsigned long long)(b.chunk / 1024), (unsigned long long)b.ops,
               b.popts.window ? b.popts.window : 2,
               b.popts.workers ? b.popts.workers : 2, b.popts.poll_us);
        fflush(stdout);
        if (run_local(&b, &local) < 0) {
                fprintf(stderr, "bench-pager: local run failed\n");
                return 1;
        }
        if (spawn_appliance(b.appliance, b.working_set + b.lat_size + 64 * MIB, tcp, sizeof(tcp),
                            shm, sizeof(shm), &app, dir, sizeof(dir)) < 0)
                return 1;
        if (!b.only || strcmp(b.only, "shm") == 0)
                run_transport(&b, "shm", shm, &tr[n++]);
        if (!b.only || strcmp(b.only, "tcp") == 0)
                run_transport(&b, "tcp", tcp, &tr[n++]);
        spawn_stop(app, dir);
        print_table(&b, &local, tr, n);
        for (size_t i = 0; i < n; i++) {
                uint64_t errors = tr[i].lat.errors;
                for (int ph = 0; ph < N_PHASES; ph++)
                        errors += tr[i].run.ph[ph].errors;
                if (!tr[i].ok || errors || tr[i].run_st.oom_kills || tr[i].lat_st.oom_kills)
                        rc = 1;
        }
        return rc;
}
