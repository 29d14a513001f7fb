/* test_fork.c: fork snapshots, from the engine up. store_clone on a real
 * appliance (two transports, striped); residency_flush_arena on an arena a
 * real child process writes through its userfaultfd (dirty chunks written
 * back and left clean and protected; snapshots taken while four threads write
 * and pages are evicted are consistent cuts, and no write is lost); and the
 * whole path: a real memd, a real appliance, the real shim and fork_prog (the
 * Redis BGSAVE pattern: a 256 MiB heap under a 64 MiB limit, parent and child
 * each rewriting and verifying their own version). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdio.h"
#include "harness.h"
#include "paged.h"
#include "pager.h"
#include "residency.h"
#include "store.h"
#include "transport/transport.h"
#include "uffd.h"

#define MiB (1ULL << 20)
#define CHUNK 65536U
#define ARENA_BASE 0x510000000000ULL

static struct harness_proc app;
static pid_t served_pid; /* a child whose faults we serve: killed if a test fails */

static void setup(void)
{
        harness_require_uffd();
        harness_appliance_setup(&app, "1G");
}

static void teardown(void)
{
        if (served_pid > 0) { /* its faults would wait for us forever */
                kill(served_pid, SIGKILL);
                waitpid(served_pid, NULL, 0);
                served_pid = 0;
        }
        harness_cleanup(&app);
}

TestSuite(fork, .init = setup, .fini = teardown, .timeout = 300);

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pattern_check(struct store *s, uint64_t off, uint64_t len, uint64_t seed,
                          const char *what)
{
        static uint8_t got[1 << 20], want[1 << 20];

        for (uint64_t o = off; o < off + len; o += sizeof(got)) {
                cr_assert_eq(store_fetch(s, o, got, sizeof(got)), 0);
                harness_pattern(want, sizeof(want), seed, o);
                cr_assert(memcmp(got, want, sizeof(got)) == 0, "%s: wrong data at %llu", what,
                          (unsigned long long)o);
        }
}

static void pattern_write(struct store *s, uint64_t off, uint64_t len, uint64_t seed)
{
        static uint8_t buf[1 << 20];

        for (uint64_t o = off; o < off + len; o += sizeof(buf)) {
                harness_pattern(buf, sizeof(buf), seed, o);
                cr_assert_eq(store_writeback(s, o, buf, sizeof(buf)), 0);
        }
}

/* ---- store_clone ---- */

Test(fork, store_clone_is_an_independent_copy)
{
        struct xmem_transport *t[2];
        struct store *s, *c;
        struct xmem_error err = {};
        const uint64_t size = 8 * MiB;

        cr_assert_eq(xmem_transport_open(app.tcp_uri, NULL, &t[0], &err), 0, "%s", err.msg);
        cr_assert_eq(xmem_transport_open(app.shm_uri, NULL, &t[1], &err), 0, "%s", err.msg);
        cr_assert_eq(store_xmem_new(t, 2, size, CHUNK, &s, &err), 0, "%s", err.msg);
        pattern_write(s, 0, size, 1);
        cr_assert_eq(store_clone(s, &c, &err), 0, "%s", err.msg);
        cr_assert_eq(c->size, size);
        pattern_check(c, 0, size, 1, "clone as taken");
        pattern_write(s, 0, size / 2, 2);     /* the original's first half */
        pattern_write(c, size / 2, size / 2, 3); /* the clone's second half */
        pattern_check(s, 0, size / 2, 2, "original, rewritten half");
        pattern_check(s, size / 2, size / 2, 1, "original, half the clone rewrote");
        pattern_check(c, 0, size / 2, 1, "clone, half the original rewrote");
        pattern_check(c, size / 2, size / 2, 3, "clone, rewritten half");
        store_free(s); /* the clone outlives its origin */
        pattern_check(c, 0, size / 2, 1, "clone after the original was freed");
        store_free(c);

        int fd = memfd_create("store", MFD_CLOEXEC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(store_file_new(fd, size, &s), 0);
        err = (struct xmem_error){};
        cr_assert_eq(store_clone(s, &c, &err), -EOPNOTSUPP);
        cr_assert(err.msg[0]);
        store_free(s);
        xmem_transport_close(t[0]);
        xmem_transport_close(t[1]);
}

/* ---- residency_flush_arena: a child writes, the test serves it ---- */

struct served {
        struct paged p; /* paged.c plays memd */
        _Atomic int *shared; /* a MAP_SHARED page: [0] = stop flag */
};

typedef void (*child_fn)(struct served *sv, uint64_t *m, uint64_t size);

struct child_call {
        struct served *sv;
        child_fn fn;
};

static int run_child_fn(char *m, uint64_t size, int sock, void *arg)
{
        struct child_call *c = arg;

        (void)sock; /* c->sv->p.sock in the child */
        c->fn(c->sv, (uint64_t *)m, size);
        return 0;
}

static void serve_start(struct served *sv, uint64_t size, uint64_t budget, child_fn fn)
{
        struct xmem_error err = {};
        /* a blocking uffd, as a shim may hand over: the pager makes it non-blocking */
        const struct paged_opts o = { .uri = app.tcp_uri, .size = size, .budget = budget,
                                      .chunk = CHUNK, .base = ARENA_BASE,
                                      .blocking_uffd = true };
        struct child_call call = { .sv = sv, .fn = fn };
        int r;

        sv->p = (struct paged)PAGED_INIT;
        sv->shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(sv->shared, MAP_FAILED);
        r = paged_open(&sv->p, &o, &err);
        cr_assert_eq(r, 0, "%s (%s)", err.msg, strerror(-r));
        r = paged_spawn(&sv->p, &o, NULL, run_child_fn, &call);
        cr_assert_eq(r, 0, "the child failed to attach: %s", strerror(-r));
        served_pid = sv->p.pid;
        r = paged_serve(&sv->p);
        cr_assert_eq(r, 0, "serve the child: %s", strerror(-r));
}

static int serve_wait(struct served *sv)
{
        int status = 0;
        cr_assert_eq(paged_wait(&sv->p, &status), 0);
        served_pid = 0;
        return status;
}

static void serve_free(struct served *sv)
{
        paged_free(&sv->p);
        munmap(sv->shared, 4096);
}

static void step(int sock) /* child: tell the test, wait for its answer */
{
        char c = 's';
        if (write_full(sock, &c, 1) < 0 || read_full(sock, &c, 1) < 0)
                _exit(12);
}

static void fill_words(uint64_t *m, uint64_t bytes, uint64_t seed)
{
        harness_pattern(m, bytes, seed, 0);
}

static bool check_words(const uint64_t *m, uint64_t bytes, uint64_t seed)
{
        static uint8_t want[CHUNK];
        for (uint64_t o = 0; o < bytes; o += CHUNK) {
                harness_pattern(want, CHUNK, seed, o);
                if (memcmp((const char *)m + o, want, CHUNK) != 0)
                        return false;
        }
        return true;
}

/* Writes 8 MiB (pattern 1), waits for the flush, rewrites 4 MiB (pattern 2). */
static void flush_child(struct served *sv, uint64_t *m, uint64_t size)
{
        (void)size;
        fill_words(m, 8 * MiB, 1);
        step(sv->p.sock); /* the test flushes and clones */
        if (!check_words(m, 8 * MiB, 1))
                _exit(20);
        fill_words(m, 4 * MiB, 2);
        if (!check_words(m, 4 * MiB, 2))
                _exit(21);
        step(sv->p.sock);
}

static size_t count_state(struct arena *a, enum chunk_state st)
{
        size_t n = 0;
        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks; c++)
                n += a->state[c] == st;
        pthread_mutex_unlock(&a->lock);
        return n;
}

static int clone_cb(struct arena *a, void *data)
{
        struct xmem_error err = {};
        return store_clone(a->store, (struct store **)data, &err);
}

Test(fork, flush_writes_back_and_leaves_clean_protected)
{
        struct served sv;
        struct store *clone = NULL;
        char c;

        serve_start(&sv, 32 * MiB, 64 * MiB, flush_child);
        cr_assert_eq(read_full(sv.p.sock, &c, 1), 0);
        for (int i = 0; i < 200 && count_state(sv.p.arena, CHUNK_FILLING); i++)
                usleep(5000); /* prefetches still in flight */
        cr_assert_eq(count_state(sv.p.arena, CHUNK_FILLING), 0);
        size_t dirty = count_state(sv.p.arena, CHUNK_DIRTY);
        /* written chunks, and the ones prefetched writable after them */
        cr_assert_geq(dirty, 8 * MiB / CHUNK, "the child's writes made %zu chunks dirty", dirty);
        uint64_t wb = sv.p.res->counters.written_back_bytes, wp = sv.p.res->counters.wp_faults;

        double t0 = now_s();
        cr_assert_eq(residency_flush_arena(sv.p.res, sv.p.arena, clone_cb, &clone), 0);
        cr_log_info("flush + clone of 8 MiB dirty: %.1f ms", (now_s() - t0) * 1e3);
        cr_assert_eq(count_state(sv.p.arena, CHUNK_DIRTY), 0);
        cr_assert_eq(count_state(sv.p.arena, CHUNK_EVICTING), 0);
        cr_assert_eq(count_state(sv.p.arena, CHUNK_PRESENT), dirty);
        cr_assert_eq(sv.p.res->counters.written_back_bytes - wb, dirty * CHUNK);
        cr_assert_not_null(clone);
        pattern_check(sv.p.store, 0, 8 * MiB, 1, "store after the flush");
        pattern_check(clone, 0, 8 * MiB, 1, "clone");

        cr_assert_eq(write_full(sv.p.sock, "g", 1), 0);
        cr_assert_eq(read_full(sv.p.sock, &c, 1), 0);
        /* protected again: the rewrite raised WP faults, the clone kept version 1 */
        cr_assert_geq(sv.p.res->counters.wp_faults - wp, 4 * MiB / CHUNK);
        cr_assert_eq(count_state(sv.p.arena, CHUNK_DIRTY), 4 * MiB / CHUNK,
                     "only the rewritten chunks are dirty again");
        pattern_check(clone, 0, 8 * MiB, 1, "clone after the child rewrote");
        cr_assert_eq(write_full(sv.p.sock, "g", 1), 0);
        int status = serve_wait(&sv);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
        store_free(clone);
        serve_free(&sv);
}

/* ---- snapshots while threads write and chunks are evicted ---- */

#define W_THREADS 4
#define PAGE_WORDS 512

struct writer {
        uint64_t *m;
        uint32_t *order; /* this thread's pages, shuffled */
        uint64_t n;
        _Atomic int *stop;
        uint64_t rounds;
};

static uint32_t *thread_order(int t, uint64_t pages, uint64_t *ret_n)
{
        uint64_t n = 0, rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1);
        uint32_t *o = malloc(pages / W_THREADS * sizeof(*o) + sizeof(*o));

        for (uint64_t p = (uint64_t)t; p < pages; p += W_THREADS)
                o[n++] = (uint32_t)p;
        for (uint64_t i = n - 1; i > 0; i--) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                uint64_t j = rng % (i + 1);
                uint32_t x = o[i];
                o[i] = o[j];
                o[j] = x;
        }
        *ret_n = n;
        return o;
}

static void *writer_main(void *arg)
{
        struct writer *w = arg;

        while (!atomic_load(w->stop)) {
                uint64_t r = ++w->rounds;
                for (uint64_t k = 0; k < w->n; k++)
                        w->m[(uint64_t)w->order[k] * PAGE_WORDS] = r;
        }
        return NULL;
}

static void writers_child(struct served *sv, uint64_t *m, uint64_t size)
{
        pthread_t th[W_THREADS];
        struct writer w[W_THREADS];
        uint64_t pages = size / 4096;

        for (int t = 0; t < W_THREADS; t++) {
                w[t] = (struct writer){ .m = m, .stop = sv->shared };
                w[t].order = thread_order(t, pages, &w[t].n);
                pthread_create(&th[t], NULL, writer_main, &w[t]);
        }
        for (int t = 0; t < W_THREADS; t++)
                pthread_join(th[t], NULL);
        for (int t = 0; t < W_THREADS; t++) /* no write lost: each page holds the last round */
                for (uint64_t k = 0; k < w[t].n; k++)
                        if (m[(uint64_t)w[t].order[k] * PAGE_WORDS] != w[t].rounds)
                                _exit(30);
        _exit(0);
}

/* Thread T's pages in its write order must read r...r, r-1...r-1: a prefix of
 * round r and the rest of round r-1 (r = the first). Returns 1 if the cut
 * falls inside a round, 0 if it is between rounds, -1 if inconsistent. */
static int cut_check(const uint64_t *words, const uint32_t *order, uint64_t n, uint64_t *ret_r)
{
        uint64_t r = words[order[0]];
        bool split = false;

        for (uint64_t k = 0; k < n; k++) {
                uint64_t v = words[order[k]];
                if (v == r && !split)
                        continue;
                if (r > 0 && v == r - 1) {
                        split = true;
                        continue;
                }
                cr_log_error("page %u (write #%llu) reads round %llu after round %llu%s",
                             order[k], (unsigned long long)k, (unsigned long long)v,
                             (unsigned long long)r, split ? " and a split" : "");
                return -1;
        }
        *ret_r = r;
        return split;
}

static void snapshot_check(struct store *clone, uint64_t size, unsigned *splits,
                           uint64_t *max_round)
{
        uint64_t pages = size / 4096;
        uint64_t *words = malloc(pages * sizeof(*words));
        static uint64_t buf[CHUNK / 8];

        for (uint64_t c = 0; c < size / CHUNK; c++) {
                cr_assert_eq(store_fetch(clone, c * CHUNK, buf, CHUNK), 0);
                for (uint64_t p = 0; p < CHUNK / 4096; p++)
                        words[c * (CHUNK / 4096) + p] = buf[p * PAGE_WORDS];
        }
        for (int t = 0; t < W_THREADS; t++) {
                uint64_t n, r = 0;
                uint32_t *o = thread_order(t, pages, &n);
                int k = cut_check(words, o, n, &r);
                cr_assert_geq(k, 0, "thread %d: the snapshot is not a consistent cut", t);
                *splits += (unsigned)k;
                *max_round = r > *max_round ? r : *max_round;
                free(o);
        }
        free(words);
}

static void snapshots_under_writers(uint64_t budget, unsigned n_snaps)
{
        const uint64_t size = 32 * MiB;
        struct served sv;
        unsigned splits = 0, snaps = 0;
        uint64_t max_round = 0;
        double flush_ms = 0;

        serve_start(&sv, size, budget, writers_child);
        for (; snaps < n_snaps; snaps++) {
                struct store *clone = NULL;
                usleep(50000);
                /* a first snapshot leaves every chunk clean and protected: the
                 * next one then races with writers taking WP faults everywhere */
                cr_assert_eq(residency_flush_arena(sv.p.res, sv.p.arena, NULL, NULL), 0);
                usleep(200);
                double t0 = now_s();
                cr_assert_eq(residency_flush_arena(sv.p.res, sv.p.arena, clone_cb, &clone), 0);
                flush_ms += (now_s() - t0) * 1e3;
                snapshot_check(clone, size, &splits, &max_round);
                store_free(clone);
        }
        atomic_store(sv.shared, 1);
        int status = serve_wait(&sv);
        struct xmem_counters *k = &sv.p.res->counters;
        cr_log_info("budget %llu MiB: %u snapshots (mean flush+clone %.1f ms), %u thread cuts "
                    "inside a round, last round %llu; faults %llu (wp %llu), evictions %llu, "
                    "written back %llu MiB", (unsigned long long)(budget / MiB), snaps,
                    flush_ms / snaps, splits, (unsigned long long)max_round,
                    (unsigned long long)k->faults, (unsigned long long)k->wp_faults,
                    (unsigned long long)k->evictions,
                    (unsigned long long)(k->written_back_bytes / MiB));
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x (exit 30: a write was lost)", status);
        cr_assert_gt(splits, 0, "no snapshot fell inside a round: the test proved nothing");
        serve_free(&sv);
}

/* All resident: writers run at memory speed between snapshots, and every
 * snapshot re-protects chunks they are writing (WP faults race with it). */
Test(fork, snapshots_under_writers_are_consistent_resident)
{
        snapshots_under_writers(64 * MiB, 30);
}

/* 32 MiB written over and over through an 8 MiB budget: fills of free
 * chunks, WP faults and evictions all race with the snapshots. (A page being
 * filled was writable before its fill ended, outside the cut: see
 * test_pager_fill.) */
Test(fork, snapshots_under_writers_are_consistent_paged)
{
        snapshots_under_writers(8 * MiB, 12);
}

/* ---- the whole path: memd, the appliance, the shim, fork_prog ---- */

static struct harness_memd md;
static char md_cg[128];

static void memd_start(void)
{
        harness_memd_start(&md, "/tmp/xmem-fork.XXXXXX",
                           (const char *const[]){ "--appliance", app.tcp_uri, NULL });
}

static void e2e_teardown(void)
{
        harness_memd_stop(&md);
        if (md_cg[0])
                rmdir(md_cg);
        teardown();
}

static json_object *memd_call(const char *text)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        static char buf[70000];
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", md.sock);
        cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        cr_assert(n > 0, "no reply from memd, see %s", md.log);
        buf[n] = 0;
        json_object *o = json_tokener_parse(buf);
        cr_assert_not_null(o);
        return o;
}

static json_object *jget(json_object *o, const char *a, const char *b)
{
        json_object *v = NULL;
        if (o && json_object_object_get_ex(o, a, &v) && b)
                json_object_object_get_ex(v, b, &v);
        return v;
}

static int64_t memd_processes(void)
{
        json_object *r = memd_call("{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":\"fork-1\"}}");
        int64_t n = (int64_t)json_object_array_length(jget(r, "result", "processes"));
        json_object_put(r);
        return n;
}

Test(fork, bgsave_pattern_through_memd_and_shim, .fini = e2e_teardown,
     .timeout = 300)
{
        const char *prog = getenv("XMEM_FORK_PROG"), *shim = getenv("XMEM_SHIM");
        char req[512], line[256];
        int in[2], out[2], st;

        struct harness_cg cg;
        char name[64];

        snprintf(name, sizeof(name), "xmem-fork-%d", (int)getpid());
        if (!prog || !shim || !getenv("XMEM_MEMD") || !harness_cg_at(&cg, name))
                harness_skip(teardown, "needs the shim (libjemalloc_pic.a) and a memory cgroup "
                                       "(v1 or v2)");
        memd_start();
        snprintf(md_cg, sizeof(md_cg), "%s", cg.path);
        cr_assert(mkdir(md_cg, 0755) == 0 || errno == EEXIST);
        snprintf(req, sizeof(req),
                 "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"fork-1\",\"cgroup\":\"%s\","
                 "\"local_limit\":\"64M\",\"external\":\"1G\",\"local_alloc_limit\":\"8M\"}}",
                 md_cg);
        json_object *r = memd_call(req);
        cr_assert(json_object_get_boolean(jget(r, "ok", NULL)), "attach: %s",
                  json_object_to_json_string(r));
        json_object_put(r);

        cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                char path[192], me[16];
                snprintf(path, sizeof(path), "%s/cgroup.procs", md_cg);
                int fd = open(path, O_WRONLY);
                snprintf(me, sizeof(me), "%d\n", (int)getpid());
                if (fd < 0 || write(fd, me, strlen(me)) < 0)
                        _exit(126);
                dup2(in[0], 0);
                dup2(out[1], 1);
                char ctr[160];
                setenv("XMEM_SOCKET", harness_memd_ctr_socket(&md, "fork-1", ctr, sizeof(ctr)), 1);
                setenv("LD_PRELOAD", shim, 1);
                execl(prog, prog, "256", (char *)NULL);
                _exit(127);
        }
        close(in[0]);
        close(out[1]);
        FILE *f = fdopen(out[0], "r");
        bool exited = false, ok = false;
        int64_t during = -1, after_child = -1;
        while (fgets(line, sizeof(line), f)) {
                cr_log_info("fork_prog: %s", strtok(line, "\n") ?: "");
                if (strncmp(line, "fork ", 5) == 0) /* the child said hello in its atfork handler */
                        for (int i = 0; i < 50 && (during = memd_processes()) != 2; i++)
                                usleep(100000);
                if (strcmp(line, "child-exited") == 0) {
                        exited = true;
                        /* the child's arena and region go once memd sees it exit */
                        for (int i = 0; i < 50 && (after_child = memd_processes()) != 1; i++)
                                usleep(100000);
                        cr_assert_eq(write(in[1], "c", 1), 1);
                }
                if (strcmp(line, "OK") == 0)
                        ok = true;
        }
        fclose(f);
        close(in[1]);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        r = memd_call("{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":\"fork-1\"}}");
        cr_log_info("memd: %s", json_object_to_json_string(r));
        json_object_put(r);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork_prog status %#x, see %s", st,
                  md.log);
        cr_assert(exited && ok);
        cr_expect_eq(during, 2, "parent and child each had an arena (%lld)", (long long)during);
        cr_expect_eq(after_child, 1, "the child's arena was freed at its exit");
        for (int i = 0; i < 50 && memd_processes() != 0; i++)
                usleep(100000);
        cr_expect_eq(memd_processes(), 0, "the parent's arena was freed at its exit");
}
