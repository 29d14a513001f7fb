/* work.c: the benchmark's workloads (sequential read and write, uniform random
 * 64 B reads and 4 KiB writes, zipfian 64 B reads) over one memory range,
 * every read verified: word k of page p holds tag(p, gen[p]) + k, where gen
 * counts the page's writes, so a lost write or a wrong page shows at once. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "work.h"

#define PAGE 4096UL
#define WORDS (PAGE / 8)
#define LINE_WORDS 8
#define CLOCK_EVERY 256

static const char *const kind_names[WORK_N_KINDS] = {
    "seq_write", "seq_read", "rand_read", "rand_write", "zipf_read",
};

struct work {
        uint64_t *base;
        uint64_t n_pages;
        uint8_t *gen;
        uint64_t rng;
        uint64_t bad_page, bad_word, bad_got, bad_want;
        int bad;
};

int work_kind_parse(const char *name, enum work_kind *ret_kind)
{
        for (int i = 0; i < WORK_N_KINDS; i++)
                if (strcmp(name, kind_names[i]) == 0) {
                        *ret_kind = (enum work_kind)i;
                        return 0;
                }
        return -EINVAL;
}

const char *work_kind_name(enum work_kind kind)
{
        return kind < WORK_N_KINDS ? kind_names[kind] : "?";
}

static double now_s(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t mix(uint64_t x)
{
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        return x ^ (x >> 33);
}

static uint64_t tag(uint64_t page, uint8_t gen)
{
        return mix(page * 256 + gen + 0x5bd1e995ULL);
}

static uint64_t rnd(struct work *w)
{
        w->rng ^= w->rng >> 12;
        w->rng ^= w->rng << 25;
        w->rng ^= w->rng >> 27;
        return w->rng * 0x2545f4914f6cdd1dULL;
}

static uint64_t *page_at(struct work *w, uint64_t p)
{
        return w->base + p * WORDS;
}

static void write_page(struct work *w, uint64_t p)
{
        uint64_t *v = page_at(w, p), t = tag(p, w->gen[p]);

        for (uint64_t k = 0; k < WORDS; k++)
                v[k] = t + k;
}

/* Check words [FIRST, FIRST + N) of page P; the first wrong word is kept. */
static void verify(struct work *w, uint64_t p, uint64_t first, uint64_t n)
{
        const volatile uint64_t *v = page_at(w, p);
        uint64_t t = tag(p, w->gen[p]), diff = 0;

        for (uint64_t k = first; k < first + n; k++)
                diff |= v[k] ^ (t + k);
        if (diff == 0 || w->bad++)
                return;
        for (uint64_t k = first; k < first + n; k++)
                if (v[k] != t + k) {
                        w->bad_page = p, w->bad_word = k, w->bad_got = v[k], w->bad_want = t + k;
                        break;
                }
}

static void report(const char *figure, double value, const char *unit, uint64_t bytes, uint64_t ops,
                   double secs)
{
        printf("{\"figure\":\"%s\",\"value\":%.3f,\"unit\":\"%s\",\"bytes\":%llu,\"ops\":%llu,"
               "\"secs\":%.4f}\n",
               figure, value, unit, (unsigned long long)bytes, (unsigned long long)ops, secs);
        fflush(stdout);
}

/* One pass writing (or verifying) pages in address order, stopped after
 * SECONDS (0: no cap). Returns the pages done. */
static uint64_t seq_pass(struct work *w, bool write, double seconds, double *ret_secs)
{
        double t0 = now_s(), t = t0;
        uint64_t p;

        for (p = 0; p < w->n_pages; p++) {
                if (write) {
                        w->gen[p] = (uint8_t)(w->gen[p] + 1);
                        write_page(w, p);
                } else {
                        verify(w, p, 0, WORDS);
                }
                if (p % CLOCK_EVERY == CLOCK_EVERY - 1 && seconds > 0 &&
                    (t = now_s()) - t0 > seconds) {
                        p++;
                        break;
                }
        }
        *ret_secs = now_s() - t0;
        return p;
}

/* YCSB's zipfian generator (Gray et al.) over [0, N): rank 0 the hottest. */
struct zipf {
        double theta, zetan, alpha, eta, half_pow;
        uint64_t n;
};

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
        double zeta2 = 1.0 + pow(0.5, theta);

        z->n = n, z->theta = theta, z->zetan = 0;
        for (uint64_t i = 1; i <= n; i++)
                z->zetan += 1.0 / pow((double)i, theta);
        z->alpha = 1.0 / (1.0 - theta);
        z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / z->zetan);
        z->half_pow = 1.0 + pow(0.5, theta);
}

static uint64_t zipf_next(struct zipf *z, struct work *w)
{
        double u = (double)(rnd(w) >> 11) / 9007199254740992.0, uz = u * z->zetan;
        uint64_t r;

        if (uz < 1.0)
                return 0;
        if (uz < z->half_pow)
                return 1;
        r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
        return r < z->n ? r : z->n - 1;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
        while (b) {
                uint64_t t = a % b;
                a = b, b = t;
        }
        return a;
}

/* Random operations until OPS or SECONDS; returns the ops done. */
static uint64_t random_ops(struct work *w, enum work_kind kind, const struct work_opts *o,
                           double *ret_secs)
{
        struct zipf z = {0};
        uint64_t scatter = 0x9e3779b97f4a7c15ULL % w->n_pages, i;
        double t0;

        if (kind == WORK_ZIPF_READ) {
                zipf_init(&z, w->n_pages, o->zipf_theta);
                /* hot ranks land on pages spread over the whole range */
                scatter |= 1;
                while (gcd(scatter, w->n_pages) != 1)
                        scatter += 2;
        }
        if (o->on_measure)
                o->on_measure(o->ctx);
        t0 = now_s();
        for (i = 0; i < o->ops; i++) {
                uint64_t p;

                if (kind == WORK_ZIPF_READ)
                        p = (uint64_t)(((unsigned __int128)zipf_next(&z, w) * scatter) %
                                       w->n_pages);
                else
                        p = rnd(w) % w->n_pages;
                if (kind == WORK_RAND_WRITE) {
                        w->gen[p] = (uint8_t)(w->gen[p] + 1);
                        write_page(w, p);
                } else {
                        verify(w, p, (rnd(w) % (WORDS / LINE_WORDS)) * LINE_WORDS, LINE_WORDS);
                }
                if (i % CLOCK_EVERY == CLOCK_EVERY - 1 && o->seconds > 0 &&
                    now_s() - t0 > o->seconds) {
                        i++;
                        break;
                }
        }
        *ret_secs = now_s() - t0;
        return i;
}

static int run_kind(struct work *w, const struct work_opts *o)
{
        const char *name = work_kind_name(o->kind);
        uint64_t done, bytes = w->n_pages * PAGE;
        double secs;

        if (o->kind == WORK_SEQ_WRITE) {
                if (o->on_measure)
                        o->on_measure(o->ctx);
                done = seq_pass(w, true, 0, &secs);
                report("seq_write_first", bytes / 1e6 / secs, "MB/s", bytes, done, secs);
                done = seq_pass(w, true, o->seconds, &secs);
                report("seq_write_rewrite", done * PAGE / 1e6 / secs, "MB/s", done * PAGE, done,
                       secs);
                /* a last check that every page holds its last write */
                seq_pass(w, false, 0, &secs);
                return 0;
        }
        seq_pass(w, true, 0, &secs); /* setup: first touch, not measured */
        if (o->kind == WORK_SEQ_READ) {
                if (o->on_measure)
                        o->on_measure(o->ctx);
                done = seq_pass(w, false, o->seconds, &secs);
                report(name, done * PAGE / 1e6 / secs, "MB/s", done * PAGE, done, secs);
                return 0;
        }
        done = random_ops(w, o->kind, o, &secs);
        report(name, done / 1e3 / secs, "kops/s",
               done * (o->kind == WORK_RAND_WRITE ? PAGE : LINE_WORDS * 8), done, secs);
        if (o->kind == WORK_RAND_WRITE)
                seq_pass(w, false, 0, &secs); /* every write found afterwards */
        return 0;
}

int work_run(void *base, size_t size, const struct work_opts *opts)
{
        struct work w = {
            .base = base,
            .n_pages = size / PAGE,
            .rng = opts->seed ? opts->seed : 0x853c49e6748fea9bULL,
        };

        if (w.n_pages < 2 || opts->kind >= WORK_N_KINDS)
                return -EINVAL;
        w.gen = calloc(w.n_pages, 1);
        if (!w.gen)
                return -ENOMEM;
        run_kind(&w, opts);
        free(w.gen);
        if (w.bad) {
                printf("{\"error\":\"verify: %d wrong reads; first: page %llu word %llu holds "
                       "%#llx, want %#llx\"}\n",
                       w.bad, (unsigned long long)w.bad_page, (unsigned long long)w.bad_word,
                       (unsigned long long)w.bad_got, (unsigned long long)w.bad_want);
                fflush(stdout);
                return -EIO;
        }
        return 0;
}
