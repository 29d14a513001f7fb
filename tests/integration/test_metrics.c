/* test_metrics.c: memd --metrics (issue 12). A real memd on a tcp appliance
 * serves the Prometheus text format on a loopback port; a container (a 32
 * MiB memory cgroup running paging_prog under the shim) pages 128 MiB while
 * the test scrapes over a real socket. Every scrape passes `promtool check
 * metrics` (a corrupted copy does not), and the values move: faults, bytes
 * in and out, evictions and the latency histogram grow while it pages; the
 * appliance is up with no errors. Scrapers that never send a request hold
 * at most METRICS_MAX_CLIENTS sockets for a few seconds and never block
 * memd. Bad --metrics values stop memd with one line. Root,
 * /dev/userfaultfd, a memory cgroup controller and promtool (scripts/deps.sh
 * installs Debian's prometheus). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1ULL << 20)
#define ID "metrics-a"
#define MAX_CLIENTS 8 /* memd/metrics.h METRICS_MAX_CLIENTS */

static struct {
        struct harness_proc app;
        struct harness_memd md;
        struct harness_cg cg;
        struct harness_child prog;
        uint16_t port;
        char metrics[64];
} e;

static void setup(void)
{
        char name[64];

        memset(&e, 0, sizeof(e));
        e.prog.pid = e.app.pid = -1;
        if (!harness_is_root() || access("/dev/userfaultfd", F_OK) != 0)
                return; /* the test skips */
        snprintf(name, sizeof(name), "xmem-test-metrics-%d", (int)getpid());
        if (!harness_cg_create(&e.cg, name))
                return;
        harness_appliance_setup(&e.app, "1G");
        e.port = harness_free_port();
        snprintf(e.metrics, sizeof(e.metrics), "tcp://127.0.0.1:%u", e.port);
        harness_memd_start(
            &e.md, "/tmp/xmem-test-metrics.XXXXXX",
            (const char *const[]){"--appliance", e.app.tcp_uri, "--metrics", e.metrics, NULL});
}

static void teardown(void)
{
        harness_child_kill(&e.prog);
        if (e.md.pid > 0)
                harness_memd_stop(&e.md);
        if (e.app.dir[0])
                harness_cleanup(&e.app);
        harness_cg_remove(&e.cg);
}

static int connect_metrics(void)
{
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(e.port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        cr_assert(fd >= 0);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect %s: %s",
                     e.metrics, strerror(errno));
        return fd;
}

/* Read FD to EOF within 10 s into BUF; the bytes read. */
static size_t read_all(int fd, char *buf, size_t len)
{
        size_t got = 0;
        long until = harness_now_ms() + 10000;

        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t n;

                cr_assert(harness_now_ms() < until, "no EOF from memd's metrics within 10 s");
                if (poll(&p, 1, 1000) <= 0)
                        continue;
                n = read(fd, buf + got, len - 1 - got);
                cr_assert(n >= 0, "read: %s", strerror(errno));
                if (n == 0)
                        break;
                got += (size_t)n;
                cr_assert(got < len - 1, "response over %zu bytes", len);
        }
        buf[got] = 0;
        return got;
}

/* GET /metrics over a new connection: the body into BODY (static). */
static const char *scrape(void)
{
        static char resp[1 << 20];
        const char *req = "GET /metrics HTTP/1.1\r\nHost: memd\r\n\r\n", *body;
        int fd = connect_metrics();

        cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
        read_all(fd, resp, sizeof(resp));
        close(fd);
        cr_assert(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0, "answer: %.200s", resp);
        cr_assert(strstr(resp, "Content-Type: text/plain; version=0.0.4"), "%.300s", resp);
        body = strstr(resp, "\r\n\r\n");
        cr_assert_not_null(body);
        return body + 4;
}

/* Does promtool accept TEXT? Its output into OUT. */
static bool promtool_ok(const char *text, char *out, size_t len)
{
        char path[128], cmd[300];
        FILE *f, *p;
        size_t n;
        int st;

        snprintf(path, sizeof(path), "%s/scrape.txt", e.md.dir);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        n = fread(out, 1, len - 1, p);
        out[n] = 0;
        st = pclose(p);
        cr_assert(!(WIFEXITED(st) && WEXITSTATUS(st) == 127), "promtool is not installed "
                                                              "(scripts/deps.sh installs it)");
        return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* The value of the sample NAME{LABELS} ("" for none); aborts when absent. */
static double value(const char *text, const char *name, const char *labels)
{
        char key[300];
        const char *p;

        snprintf(key, sizeof(key), "\n%s%s%s%s ", name, *labels ? "{" : "", labels,
                 *labels ? "}" : "");
        p = strstr(text, key);
        cr_assert_not_null(p, "no sample %s in:\n%s", key + 1, text);
        return strtod(p + strlen(key), NULL);
}

static double ctr(const char *text, const char *name)
{
        return value(text, name, "container=\"" ID "\"");
}

Test(metrics, scraped_while_a_container_pages, .init = setup, .fini = teardown, .timeout = 300)
{
        char out[4096], last[256], appl[200], *bad;
        const char *prog = getenv("XMEM_PAGING_PROG");
        const char *s;
        double faults1, fetched1, wb1, lat1, faults2;

        harness_require_uffd();
        if (!e.cg.version)
                cr_skip_test("needs a memory cgroup controller (v1 or v2)");
        cr_assert_not_null(prog, "XMEM_PAGING_PROG is not set (run through meson test)");

        /* before any container: valid, and the appliance is up */
        s = scrape();
        cr_assert(promtool_ok(s, out, sizeof(out)), "promtool: %s\n%s", out, s);
        cr_expect_eq(value(s, "xmem_containers", ""), 0);
        snprintf(appl, sizeof(appl), "appliance=\"%s\"", e.app.tcp_uri);
        cr_expect_eq(value(s, "xmem_appliance_up", appl), 1);
        cr_expect_gt(value(s, "xmem_appliance_connections", appl), 0);

        cr_assert(
            harness_ctl(&e.md, out, sizeof(out),
                        (const char *const[]){"attach", ID, "--cgroup", e.cg.path, "--local-limit",
                                              "32M", "--external", "512M", NULL}),
            "attach: %s", out);
        harness_memd_spawn(&e.md, ID, &e.prog,
                           (const char *const[]){prog, "verify", "128", "3", NULL}, &e.cg, false);
        cr_assert_geq(harness_child_follow(&e.prog, "written", 60000, last, sizeof(last)), 1,
                      "128 MiB not written within 60 s (last '%s', see %s)", last, e.md.log);

        s = scrape();
        cr_assert(promtool_ok(s, out, sizeof(out)), "promtool: %s\n%s", out, s);
        cr_expect_eq(value(s, "xmem_containers", ""), 1);
        cr_expect_eq(ctr(s, "xmem_container_local_limit_bytes"), 32 * MIB);
        cr_expect_eq(ctr(s, "xmem_container_external_quota_bytes"), 512 * MIB);
        cr_expect_leq(ctr(s, "xmem_container_resident_bytes"), 32 * MIB);
        cr_expect_gt(ctr(s, "xmem_container_external_written_bytes"), 64 * MIB);
        cr_expect_geq(ctr(s, "xmem_container_external_allocated_bytes"), 64 * MIB);
        faults1 = ctr(s, "xmem_container_faults_total");
        fetched1 = ctr(s, "xmem_container_fetched_bytes_total");
        wb1 = ctr(s, "xmem_container_written_back_bytes_total");
        lat1 = ctr(s, "xmem_container_fault_latency_seconds_count");
        cr_expect_gt(faults1, 0);
        cr_expect_gt(wb1, 64 * MIB, "not paging out");
        cr_expect_gt(ctr(s, "xmem_container_evictions_total"), 0);
        cr_expect_eq(value(s, "xmem_container_fault_latency_seconds_bucket",
                           "container=\"" ID "\",le=\"+Inf\""),
                     lat1, "+Inf bucket and _count differ");
        cr_expect_gt(ctr(s, "xmem_container_fault_latency_seconds_sum"), 0);

        /* a pass reads everything back: the counters move */
        cr_assert_geq(harness_child_follow(&e.prog, "pass 1 ok", 60000, last, sizeof(last)), 1,
                      "pass 1 not done within 60 s (last '%s')", last);
        s = scrape();
        cr_assert(promtool_ok(s, out, sizeof(out)), "promtool: %s\n%s", out, s);
        faults2 = ctr(s, "xmem_container_faults_total");
        cr_expect_gt(faults2, faults1, "faults did not increase while paging");
        cr_expect_gt(ctr(s, "xmem_container_fetched_bytes_total"), fetched1 + 32 * MIB);
        cr_expect_gt(ctr(s, "xmem_container_written_back_bytes_total"), wb1);
        cr_expect_gt(ctr(s, "xmem_container_fault_latency_seconds_count"), lat1);
        cr_expect_eq(value(s, "xmem_appliance_up", appl), 1);
        cr_expect_eq(value(s, "xmem_appliance_errors_total", appl), 0);

        /* the parser is real: a broken sample is refused */
        bad = malloc(strlen(s) + 64);
        cr_assert_not_null(bad);
        sprintf(bad, "%sxmem_broken{container=\"x\" 1\n", s);
        cr_expect(!promtool_ok(bad, out, sizeof(out)), "promtool accepted a broken sample");
        free(bad);

        cr_assert_geq(harness_child_follow(&e.prog, "paging-ok", 120000, last, sizeof(last)), 1,
                      "the workload did not finish (last '%s')", last);
        cr_expect_eq(harness_child_wait(&e.prog, 10000), 0);
}

Test(metrics, silent_scrapers_never_block_memd, .init = setup, .fini = teardown, .timeout = 120)
{
        int fds[MAX_CLIENTS + 2];
        char out[4096], buf[64];
        struct pollfd p;
        long t0;

        if (!harness_is_root() || !e.md.pid)
                cr_skip_test("needs root (memd)");
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                fds[i] = connect_metrics(); /* connected, never a request */
        usleep(200000);
        /* one more is closed at once: memd serves at most MAX_CLIENTS */
        fds[MAX_CLIENTS] = connect_metrics();
        p = (struct pollfd){.fd = fds[MAX_CLIENTS], .events = POLLIN};
        cr_expect_eq(poll(&p, 1, 2000), 1, "a scrape over the bound was not refused");
        cr_expect_leq(read(fds[MAX_CLIENTS], buf, sizeof(buf)), 0);
        /* memd's API answers meanwhile */
        t0 = harness_now_ms();
        cr_expect(harness_ctl(&e.md, out, sizeof(out), (const char *const[]){"list", NULL}),
                  "xmemctl list: %s", out);
        cr_expect_lt(harness_now_ms() - t0, 5000);
        /* the silent ones are closed after their time (5 s) */
        p = (struct pollfd){.fd = fds[0], .events = POLLIN};
        cr_expect_eq(poll(&p, 1, 10000), 1, "a silent scraper was never closed");
        cr_expect_eq(read(fds[0], buf, sizeof(buf)), 0);
        for (size_t i = 0; i <= MAX_CLIENTS; i++)
                close(fds[i]);
        /* and a real scrape works again; a POST is refused */
        cr_expect(strstr(scrape(), "xmem_containers 0\n"));
        fds[0] = connect_metrics();
        cr_assert_gt(write(fds[0], "POST /metrics HTTP/1.1\r\n\r\n", 26), 0);
        read_all(fds[0], out, sizeof(out));
        close(fds[0]);
        cr_expect(strncmp(out, "HTTP/1.1 405 ", 13) == 0, "%s", out);
}

/* memd ARGS...: its exit status and first line of stderr. */
static int memd_fails(const char *arg, char *line, size_t len)
{
        char cmd[512];
        FILE *p;

        snprintf(cmd, sizeof(cmd), "%s --socket /tmp/xmem-metrics-none.sock --metrics '%s' 2>&1",
                 getenv("XMEM_MEMD"), arg);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        line[0] = 0;
        if (!fgets(line, (int)len, p))
                line[0] = 0;
        return pclose(p);
}

Test(metrics, bad_addresses_are_refused)
{
        const char *bad[] = {"tcp://0.0.0.0:9464", "tcp://[::]:9464", "tcp://localhost:9464",
                             "unix:///tmp/m.sock", "tcp://127.0.0.1"};
        char line[512];

        cr_assert_not_null(getenv("XMEM_MEMD"), "XMEM_MEMD is not set (run through meson test)");
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int st = memd_fails(bad[i], line, sizeof(line));
                cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: status %#x", bad[i], st);
                cr_expect(strncmp(line, "memd: --metrics ", 16) == 0 && strchr(line, '\n'),
                          "%s: '%s'", bad[i], line);
        }
}
