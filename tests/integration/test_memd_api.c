/* test_memd_api.c: a real memd (embedded appliance, or a real tcp appliance)
 * driven through its socket: attach/list/stats/detach with real memory
 * cgroups (v1 or v2), refused messages that change nothing, caller identity, READY
 * notification, and a process served through shim.hello/shim.register. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <json-c/json.h>

#include "fdio.h"
#include "harness.h"
#include "uffd.h"

static struct harness_memd md;
static struct harness_proc app;
static char cg_dir[128];

/* Start memd with ARGS (NULL-terminated) and wait for READY=1 on our NOTIFY_SOCKET. */
static void memd_start(const char *const *args)
{
        harness_memd_start(&md, "/tmp/xmem-memd.XXXXXX", args);
}

static bool memd_alive(void)
{
        return md.pid > 0 && waitpid(md.pid, NULL, WNOHANG) == 0;
}

static void memd_stop(void)
{
        int status = 0;

        if (md.pid > 0) {
                kill(md.pid, SIGTERM);
                waitpid(md.pid, &status, 0);
                cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                          "memd did not exit cleanly (status %d), see %s", status, md.log);
                md.pid = -1;
        }
}

/* The admin socket. */
static int memd_connect(void)
{
        int fd = harness_connect_unix(md.sock);

        cr_assert(fd >= 0, "connect %s: %s", md.sock, strerror(-fd));
        return fd;
}

/* Send TEXT (LEN bytes) with FDS; the parsed reply, descriptors into RFDS. */
static json_object *call_raw(int fd, const char *text, size_t len, const int *fds, size_t nfds,
                             int *rfds, size_t *rn)
{
        static char buf[70000];
        size_t n_fds = rn ? *rn : 0;
        int tmp[8];
        ssize_t n;

        cr_assert(send_with_fds(fd, text, len, fds, nfds) == 0, "send: %s", strerror(errno));
        if (!rfds) {
                rfds = tmp;
                n_fds = 8;
        }
        n = recv_with_fds(fd, buf, sizeof(buf) - 1, rfds, &n_fds);
        cr_assert(n > 0, "no reply from memd (%zd), see %s", n, md.log);
        buf[n] = 0;
        if (rfds == tmp)
                for (size_t i = 0; i < n_fds; i++)
                        close(tmp[i]);
        if (rn)
                *rn = n_fds;
        return json_tokener_parse(buf);
}

static json_object *call(const char *text)
{
        int fd = memd_connect();
        json_object *r = call_raw(fd, text, strlen(text), NULL, 0, NULL, NULL);

        close(fd);
        cr_assert_not_null(r);
        return r;
}

static json_object *get(json_object *o, const char *path)
{
        char key[64];
        const char *dot;
        json_object *v = o;

        while (v && path) {
                dot = strchr(path, '.');
                snprintf(key, sizeof(key), "%.*s", dot ? (int)(dot - path) : (int)strlen(path),
                         path);
                if (!json_object_object_get_ex(v, key, &v))
                        return NULL;
                path = dot ? dot + 1 : NULL;
        }
        return v;
}

static bool ok(json_object *r)
{
        return json_object_get_boolean(get(r, "ok"));
}

static const char *errmsg(json_object *r)
{
        json_object *m = get(r, "error.message");

        return m ? json_object_get_string(m) : "";
}

static size_t n_containers(void)
{
        json_object *r = call("{\"xmem\":1,\"method\":\"list\",\"params\":{}}");
        size_t n = json_object_array_length(get(r, "result.containers"));

        json_object_put(r);
        return n;
}

static void make_cgroup(void)
{
        struct harness_cg cg;
        char name[64];

        snprintf(name, sizeof(name), "xmem-test-%d", (int)getpid());
        if (!harness_cg_at(&cg, name))
                cr_skip_test("%s", HARNESS_CG_NONE);
        snprintf(cg_dir, sizeof(cg_dir), "%s", cg.path);
        cr_assert(mkdir(cg_dir, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", cg_dir,
                  strerror(errno));
}

static json_object *attach(const char *local, const char *external, const char *extra)
{
        char req[512];

        snprintf(req, sizeof(req),
                 "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"web-1\",\"cgroup\":\"%s\","
                 "\"local_limit\":\"%s\",\"external\":\"%s\"%s}}",
                 cg_dir, local, external, extra ? extra : "");
        return call(req);
}

static void setup_embedded(void)
{
        cr_assert(harness_is_root(), "memd tests need root");
        setenv("XMEM_APPLIANCE_BIN", getenv("XMEM_APPLIANCE"), 1);
        memd_start((const char *const[]){ "--embedded-appliance", "64M", NULL });
        make_cgroup();
}

static void setup_tcp(void)
{
        cr_assert(harness_is_root(), "memd tests need root");
        harness_init(&app);
        harness_appliance_start(&app, NULL);
        memd_start((const char *const[]){ "--appliance", app.tcp_uri, NULL });
        make_cgroup();
}

static void teardown(void)
{
        memd_stop();
        harness_cleanup(&app);
        if (cg_dir[0])
                rmdir(cg_dir);
        if (md.dir[0]) {
                char cmd[128];
                harness_memd_stop_embedded(&md); /* it outlives memd */
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", md.dir);
                (void)!system(cmd);
        }
}

static uint64_t read_limit(void)
{
        struct harness_cg cg = {.version = harness_cg_version()};

        snprintf(cg.path, sizeof(cg.path), "%s", cg_dir);
        return harness_cg_limit(&cg);
}

/* POOLS_SMALL: the appliance's pool is below the 256 MiB quota. */
static void round_trip(bool pools_small)
{
        json_object *r = attach("64M", "256M", ",\"policy\":\"ratio:4\"");

        cr_assert(ok(r), "attach: %s", errmsg(r));
        cr_expect_eq(json_object_get_int64(get(r, "result.local_limit")), 64 << 20);
        json_object_put(r);
        cr_expect_eq(read_limit(), 64ULL << 20, "the limit reached the cgroup file");
        char tail[4096];
        bool over = strstr(harness_file_tail(md.log, tail, sizeof(tail)),
                           "external quota 256M is more than its appliances' pools hold");
        /* the embedded appliance's pool is 64 MiB, the tcp one's larger */
        cr_expect_eq(over, pools_small, "the warning (or its absence) is wrong: %s", tail);
        r = attach("64M", "256M", ",\"policy\":\"ratio:4\"");
        cr_expect(ok(r), "re-attach with the same parameters is idempotent: %s", errmsg(r));
        json_object_put(r);
        r = attach("32M", "256M", NULL);
        cr_expect_str_eq(json_object_get_string(get(r, "error.errno")), "EEXIST");
        json_object_put(r);
        cr_expect_eq(n_containers(), 1);
        r = call("{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":\"web-1\"}}");
        cr_assert(ok(r), "stats: %s", errmsg(r));
        cr_expect_not_null(get(r, "result.fault_latency_us.p99"));
        cr_expect_gt(json_object_get_int64(get(r, "result.budget_bytes")), 0);
        json_object_put(r);
        r = call("{\"xmem\":1,\"method\":\"detach\",\"params\":{\"id\":\"web-1\"}}");
        cr_assert(ok(r), "detach: %s", errmsg(r));
        json_object_put(r);
        cr_expect_eq(n_containers(), 0);
        r = call("{\"xmem\":1,\"method\":\"detach\",\"params\":{\"id\":\"web-1\"}}");
        cr_expect_str_eq(json_object_get_string(get(r, "error.errno")), "ENOENT");
        json_object_put(r);
}

Test(memd_api, round_trip_embedded, .init = setup_embedded, .fini = teardown, .timeout = 60)
{
        round_trip(true);
}

Test(memd_api, round_trip_tcp, .init = setup_tcp, .fini = teardown, .timeout = 60)
{
        round_trip(false);
}

struct bad_case {
        const char *msg;
        const char *errno_name;
        const char *expect; /* substring of the message */
};

Test(memd_api, bad_messages_change_nothing, .init = setup_embedded, .fini = teardown,
     .timeout = 60)
{
        char valid_cg[256];
        snprintf(valid_cg, sizeof(valid_cg), "\"cgroup\":\"%s\"", cg_dir);
        const struct bad_case cases[] = {
                { "{\"xmem\":1,\"method\":\"frobnicate\",\"params\":{}}", "EOPNOTSUPP",
                  "request: method: unknown method 'frobnicate'" },
                { "{\"xmem\":2,\"method\":\"list\",\"params\":{}}", "EPROTONOSUPPORT",
                  "request: xmem: unsupported API version 2" },
                { "{\"method\":\"list\",\"params\":{}}", "EINVAL", "request: xmem: missing" },
                { "{\"xmem\":1,\"method\":\"list\",\"params\":{},\"extra\":1}", "EINVAL",
                  "request: extra: unknown field" },
                { "{\"xmem\":1,\"method\":\"list\"", "EBADMSG", "request: invalid JSON" },
                { "not json at all", "EBADMSG", "request: invalid JSON" },
                { "[1,2,3]", "EINVAL", "request: " },
                { "{\"xmem\":1,\"method\":7,\"params\":{}}", "EINVAL",
                  "request: method: must be a string" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\"}}", "EINVAL",
                  "attach: params.cgroup: missing" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a b\",\"cgroup\":\"/x\","
                  "\"local_limit\":\"64M\",\"external\":\"1G\"}}", "EINVAL", "attach: params.id:" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\",\"cgroup\":\"/x\","
                  "\"local_limit\":\"64Q\",\"external\":\"1G\"}}", "EINVAL",
                  "attach: params.local_limit: must be a size like 64M, 8G" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\",\"cgroup\":\"/x\","
                  "\"local_limit\":\"64M\",\"external\":true}}", "EINVAL",
                  "attach: params.external: must be" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\",\"cgroup\":\"/x\","
                  "\"local_limit\":\"64M\",\"external\":\"1G\",\"policy\":\"ratio:0\"}}", "EINVAL",
                  "attach: params.policy: must be local-first, external-first or ratio:N" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\",\"cgroup\":\"/x\","
                  "\"local_limit\":\"64M\",\"external\":\"1G\",\"colour\":\"red\"}}", "EINVAL",
                  "attach: params.colour: unknown field" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\",\"cgroup\":\"/tmp\","
                  "\"local_limit\":\"64M\",\"external\":\"1G\"}}", "EINVAL",
                  "attach: params.cgroup: /tmp is not a cgroup below" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"a\",\"cgroup\":"
                  "\"/sys/fs/cgroup/memory/xmem-no-such\",\"local_limit\":\"64M\",\"external\":\"1G\"}}",
                  "ENOENT", "attach: params.cgroup: /sys/fs/cgroup/memory/xmem-no-such: no such" },
                { "{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":-1}}", "EINVAL",
                  "stats: params.id: must be a string" },
                { "{\"xmem\":1,\"method\":\"detach\",\"params\":{}}", "EINVAL",
                  "detach: params.id: missing" },
                { "{\"xmem\":1,\"method\":\"shim.register\",\"params\":{\"base\":4096,\"size\":4096}}",
                  "EPERM", "shim.register: permission denied: a shim calls it on its container's "
                  "own socket" },
                { "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":9}}",
                  "EPROTONOSUPPORT", "shim.hello: params.version: unsupported" },
        };
        int fd = memd_connect(); /* one connection carries them all */

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                json_object *r = call_raw(fd, cases[i].msg, strlen(cases[i].msg), NULL, 0, NULL,
                                          NULL);
                cr_assert_not_null(r, "case %zu: reply is not JSON", i);
                cr_expect(!ok(r), "case %zu accepted: %s", i, cases[i].msg);
                cr_expect_str_eq(json_object_get_string(get(r, "error.errno")),
                                 cases[i].errno_name, "case %zu: %s", i, errmsg(r));
                cr_expect(strstr(errmsg(r), cases[i].expect) != NULL,
                          "case %zu: message '%s' lacks '%s'", i, errmsg(r), cases[i].expect);
                cr_expect(!strchr(errmsg(r), '\n'), "case %zu: one line", i);
                json_object_put(r);
        }
        close(fd);
        (void)valid_cg;
        cr_expect_eq(n_containers(), 0, "nothing was attached");
        cr_expect(memd_alive());
}

Test(memd_api, oversized_message_refused, .init = setup_embedded, .fini = teardown,
     .timeout = 60)
{
        size_t len = 70000;
        char *big = malloc(len);
        int fd = memd_connect(), sz = 1 << 20;
        json_object *r;

        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        memset(big, ' ', len);
        memcpy(big, "{\"xmem\":1,\"method\":\"list\",\"params\":{}}", 38);
        r = call_raw(fd, big, len, NULL, 0, NULL, NULL);
        cr_expect(!ok(r));
        cr_expect_str_eq(json_object_get_string(get(r, "error.errno")), "EMSGSIZE");
        cr_expect(strstr(errmsg(r), "larger than 65536") != NULL, "%s", errmsg(r));
        json_object_put(r);
        /* the same connection still works */
        r = call_raw(fd, "{\"xmem\":1,\"method\":\"list\",\"params\":{}}", 38, NULL, 0, NULL, NULL);
        cr_expect(ok(r));
        json_object_put(r);
        close(fd);
        free(big);
        cr_expect(memd_alive());
}

Test(memd_api, non_root_refused, .init = setup_embedded, .fini = teardown, .timeout = 60)
{
        int status;
        json_object *r = attach("64M", "256M", NULL);
        json_object_put(r);
        pid_t pid = fork();

        cr_assert(pid >= 0);
        if (pid == 0) {
                if (setgid(65534) || setuid(65534))
                        _exit(10);
                /* the admin socket is root's (0600) */
                int fd = harness_connect_unix(md.sock);
                if (fd != -EACCES)
                        _exit(11);
                /* web-1's socket: any uid may connect, but a process not in
                 * web-1's cgroup is turned away at once */
                char ctr[160], buf[512];
                fd = harness_connect_unix(harness_memd_ctr_socket(&md, "web-1", ctr, sizeof(ctr)));
                if (fd < 0)
                        _exit(12);
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
                buf[n > 0 ? n : 0] = 0;
                _exit(n > 0 && strstr(buf, "EPERM") && strstr(buf, "not in this socket's "
                                                                    "container") &&
                                      recv(fd, buf, 1, 0) == 0
                              ? 0
                              : 13);
        }
        cr_assert(waitpid(pid, &status, 0) == pid);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the uid 65534 caller was not refused (status %d)", status);
        cr_expect_eq(n_containers(), 1, "only root's attach happened");
        cr_expect(memd_alive());
}

Test(memd_api, cgroup_removed_detaches, .init = setup_embedded, .fini = teardown,
     .timeout = 60)
{
        json_object *r = attach("64M", "256M", NULL);

        cr_assert(ok(r), "attach: %s", errmsg(r));
        json_object_put(r);
        cr_assert(rmdir(cg_dir) == 0, "rmdir %s: %s", cg_dir, strerror(errno));
        for (int i = 0; i < 50 && n_containers() > 0; i++)
                usleep(100000);
        cr_expect_eq(n_containers(), 0, "memd noticed the cgroup disappeared");
        cr_expect(memd_alive());
}

/* What the shim does at load time, done by hand: hello, map, register. */
static uint8_t *serve_me(uint64_t *ret_size)
{
        const char *hello = "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":1}}";
        char ctr[160];
        int fd = harness_connect_unix(harness_memd_ctr_socket(&md, "web-1", ctr, sizeof(ctr))), fds[4], uffd;
        size_t n = 4;
        json_object *r = call_raw(fd, hello, strlen(hello), NULL, 0, fds, &n);
        char reg[160];
        uint64_t size;
        uint8_t *base;

        if (!ok(r) || !json_object_get_boolean(get(r, "result.attached")) || n != 2)
                _exit(20);
        size = (uint64_t)json_object_get_int64(get(r, "result.arena_size"));
        json_object_put(r);
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
        if (base == MAP_FAILED)
                _exit(21);
        if (uffd_open_with(fds[1], O_CLOEXEC, UFFD_PAGER_FEATURES, 0, NULL, &uffd) < 0)
                _exit(22);
        if (uffd_register(uffd, (uint64_t)base, size,
                          UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, NULL) < 0)
                _exit(23);
        snprintf(reg, sizeof(reg),
                 "{\"xmem\":1,\"method\":\"shim.register\",\"params\":{\"base\":%llu,\"size\":%llu}}",
                 (unsigned long long)(uintptr_t)base, (unsigned long long)size);
        n = 0;
        r = call_raw(fd, reg, strlen(reg), &uffd, 1, NULL, NULL); /* we keep our own uffd */
        if (!ok(r))
                _exit(24);
        json_object_put(r);
        *ret_size = size;
        return base;
}

static void enter_cgroup(void)
{
        char path[192];
        FILE *f;

        snprintf(path, sizeof(path), "%s/cgroup.procs", cg_dir);
        f = fopen(path, "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
                _exit(19);
}

Test(memd_api, process_paged_within_budget, .init = setup_tcp, .fini = teardown,
     .timeout = 120)
{
        const uint64_t work = 192ULL << 20; /* 3x the 64M local limit */
        json_object *r = attach("64M", "512M", NULL);
        int status;
        pid_t pid;

        cr_assert(ok(r), "attach: %s", errmsg(r));
        json_object_put(r);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                uint64_t size;
                uint8_t *base, chunk[4096];

                enter_cgroup();
                base = serve_me(&size);
                if (size < work)
                        _exit(25);
                for (uint64_t off = 0; off < work; off += sizeof(chunk)) {
                        harness_pattern(chunk, sizeof(chunk), 7, off);
                        memcpy(base + off, chunk, sizeof(chunk));
                }
                for (uint64_t off = 0; off < work; off += sizeof(chunk)) {
                        harness_pattern(chunk, sizeof(chunk), 7, off);
                        if (memcmp(base + off, chunk, sizeof(chunk)) != 0)
                                _exit(26);
                }
                _exit(0);
        }
        cr_assert(waitpid(pid, &status, 0) == pid);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the served process failed (status 0x%x), see %s", status, md.log);
        r = call("{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":\"web-1\"}}");
        cr_assert(ok(r), "stats: %s", errmsg(r));
        cr_expect_gt(json_object_get_int64(get(r, "result.faults")), 0);
        cr_expect_gt(json_object_get_int64(get(r, "result.evictions")), 0, "paged out");
        cr_expect_gt(json_object_get_int64(get(r, "result.written_back_bytes")), 0);
        cr_expect_gt(json_object_get_int64(get(r, "result.fetched_bytes")), 0, "paged in");
        cr_log_info("faults %lld, p50 %lld us, p99 %lld us",
                    (long long)json_object_get_int64(get(r, "result.faults")),
                    (long long)json_object_get_int64(get(r, "result.fault_latency_us.p50")),
                    (long long)json_object_get_int64(get(r, "result.fault_latency_us.p99")));
        json_object_put(r);
        for (int i = 0; i < 50; i++) { /* the process's arena is freed once memd sees it exit */
                r = call("{\"xmem\":1,\"method\":\"list\",\"params\":{}}");
                int64_t np = json_object_get_int64(
                        get(json_object_array_get_idx(get(r, "result.containers"), 0), "processes"));
                json_object_put(r);
                if (np == 0)
                        break;
                cr_expect(i < 49, "the exited process's arena was not freed");
                usleep(100000);
        }
        cr_expect(memd_alive());
}
