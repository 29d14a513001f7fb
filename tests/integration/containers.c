/* containers.c: helpers of test_containers.c (see containers.h). Included by
 * it: the integration meson loop builds one source file per test. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "containers.h"
#include "fdio.h"
#include "macro.h"
#include "transport/transport.h"

static void slurp(int fd, char *buf, size_t len)
{
        ssize_t n = pread(fd, buf, len - 1, 0);
        buf[n > 0 ? n : 0] = 0;
}

void ctr_run(const char *const *argv, const char *const *env, int timeout_s,
             struct cmd_result *ret)
{
        char out[] = "/tmp/xmem-ctr-out.XXXXXX", err[] = "/tmp/xmem-ctr-err.XXXXXX";
        int ofd = mkostemp(out, O_CLOEXEC), efd = mkostemp(err, O_CLOEXEC), status = 0;
        struct timespec t0, now;
        pid_t pid;

        cr_assert(ofd >= 0 && efd >= 0);
        unlink(out), unlink(err);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                int nul = open("/dev/null", O_RDONLY);
                setpgid(0, 0);
                dup2(nul, 0), dup2(ofd, 1), dup2(efd, 2);
                for (; env && *env; env++)
                        putenv((char *)*env);
                execvp(argv[0], (char *const *)argv);
                _exit(127);
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        break;
                clock_gettime(CLOCK_MONOTONIC, &now);
                if (now.tv_sec - t0.tv_sec > timeout_s) {
                        kill(-pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        status = -1;
                        break;
                }
                usleep(10000);
        }
        ret->status = status;
        slurp(ofd, ret->out, sizeof(ret->out));
        slurp(efd, ret->err, sizeof(ret->err));
        close(ofd), close(efd);
}

bool ctr_exited(const struct cmd_result *r, int code)
{
        return r->status >= 0 && WIFEXITED(r->status) && WEXITSTATUS(r->status) == code;
}

bool ctr_read_file(const char *path, char *buf, size_t len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return false;
        n = read(fd, buf, len - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        return n >= 0;
}

static const char *need_env(const char *name)
{
        const char *v = getenv(name);
        cr_assert(v && *v, "%s is not set (run through meson test)", name);
        return v;
}

void ctr_env_init(struct ctr_env *e)
{
        const char *mkrootfs = need_env("XMEM_MKROOTFS"), *fill = need_env("XMEM_FILL");
        struct cmd_result r;

        memset(e, 0, sizeof(*e));
        snprintf(e->dir, sizeof(e->dir), "/tmp/xmem-ctr.XXXXXX");
        cr_assert_not_null(mkdtemp(e->dir));
        chmod(e->dir, 0755);
        snprintf(e->rootfs, sizeof(e->rootfs), "%s/rootfs", e->dir);
        snprintf(e->runc_root, sizeof(e->runc_root), "%s/runc", e->dir);
        snprintf(e->cgroup_parent, sizeof(e->cgroup_parent), "/xmem-test-%d", (int)getpid());
        ctr_run((const char *const[]){ mkrootfs, e->rootfs, fill, NULL },
                NULL, 60, &r);
        cr_assert(ctr_exited(&r, 0), "mkrootfs: %s", r.err);
}

static void ctr_memd_spawn(struct ctr_env *e, const char *dir);

void ctr_memd_start(struct ctr_env *e)
{
        char dir[128];
        const char *app_args[8] = {NULL};
        size_t n = 0;

        if (e->want_second) {
                harness_init(&e->second);
                harness_appliance_start(&e->second, NULL);
        }
        harness_init(&e->app);
        if (e->pool_size[0]) {
                app_args[n++] = "--pool-size";
                app_args[n++] = e->pool_size;
        }
        if (e->want_second) {
                app_args[n++] = "--peer";
                app_args[n++] = e->second.tcp_uri;
        }
        if (e->appliance_uri[0]) {
                app_args[n++] = "--listen";
                app_args[n++] = e->appliance_uri;
        }
        harness_appliance_start(&e->app, app_args);
        snprintf(dir, sizeof(dir), "%s/memd", e->dir);
        mkdir(dir, 0755);
        snprintf(e->sock, sizeof(e->sock), "%s/memd.sock", dir);
        snprintf(e->memd_log, sizeof(e->memd_log), "%s/memd.log", e->dir);
        ctr_memd_spawn(e, dir);
}

void ctr_memd_restart(struct ctr_env *e, int sig)
{
        char dir[128];

        cr_assert(e->memd_pid > 0);
        kill(e->memd_pid, sig);
        cr_assert_eq(waitpid(e->memd_pid, NULL, 0), e->memd_pid);
        harness_untrack(e->memd_pid);
        e->memd_pid = 0;
        snprintf(dir, sizeof(dir), "%s/memd", e->dir);
        ctr_memd_spawn(e, dir);
}

/* memd on E's appliances, its socket, log and state in DIR; returns once
 * it listens. */
static void ctr_memd_spawn(struct ctr_env *e, const char *dir)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        pid_t parent = getpid();

        e->memd_pid = fork();
        cr_assert(e->memd_pid >= 0);
        if (e->memd_pid == 0) {
                int fd = open(e->memd_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                harness_die_with(parent); /* a skip or timeout runs no ctr_env_cleanup */
                dup2(fd, 2);
                char state[300];
                snprintf(state, sizeof(state), "%s/state", dir);
                if (e->want_second)
                        execl(need_env("XMEM_MEMD"), "memd", "--socket", e->sock, "--appliance",
                              e->app.tcp_uri, "--appliance", e->second.tcp_uri, "--log-level",
                              "debug", "--state-dir", state, NULL);
                execl(need_env("XMEM_MEMD"), "memd", "--socket", e->sock, "--appliance",
                      e->appliance_uri[0] ? e->appliance_uri : e->app.tcp_uri, "--log-level",
                      "debug", "--state-dir", state, NULL);
                _exit(127);
        }
        harness_track(e->memd_pid, ""); /* DIR holds the containers' bundles: kept */
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e->sock);
        for (int i = 0; i < 200; i++) {
                int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
                close(fd);
                if (ok)
                        return;
                cr_assert(waitpid(e->memd_pid, NULL, WNOHANG) == 0, "memd exited, see %s",
                          e->memd_log);
                usleep(50000);
        }
        cr_assert_fail("memd did not listen on %s within 10 s", e->sock);
}

void ctr_env_setup_with(struct ctr_env *e, const char *const *progs)
{
        const char *argv[16] = {need_env("XMEM_MKROOTFS"), e->rootfs};
        struct cmd_result r;
        size_t n = 2;

        for (; *progs && n < 15; progs++)
                argv[n++] = *progs;
        argv[n] = NULL;
        ctr_run(argv, NULL, 60, &r);
        cr_assert(ctr_exited(&r, 0), "mkrootfs: %s", r.err);
        ctr_memd_start(e);
}

/* Containers a failed test left under the parent: thawed (a checkpoint cut
 * short), their processes killed, their cgroups removed in every controller. */
static void ctr_cgroups_reap(const struct ctr_env *e)
{
        char cmd[1024];

        if (harness_cg_version() == 2) {
                /* one tree: every controller's files in each container's cgroup */
                snprintf(cmd, sizeof(cmd), "/sys/fs/cgroup%s", e->cgroup_parent);
                harness_cg_reap_below(cmd);
                return;
        }
        snprintf(cmd, sizeof(cmd),
                 "(for d in /sys/fs/cgroup/freezer%1$s/*/; do echo THAWED > $d/freezer.state; "
                 "done; for d in /sys/fs/cgroup/memory%1$s/*/; do kill -9 $(cat $d/cgroup.procs) "
                 "; done; sleep 0.2; rmdir /sys/fs/cgroup/*%1$s/*/) >/dev/null 2>&1",
                 e->cgroup_parent);
        (void)!system(cmd);
}

void ctr_env_cleanup(struct ctr_env *e)
{
        char cmd[512];

        ctr_cgroups_reap(e);
        if (e->memd_pid > 0) {
                kill(e->memd_pid, SIGTERM);
                waitpid(e->memd_pid, NULL, 0);
                harness_untrack(e->memd_pid);
                e->memd_pid = 0;
        }
        if (e->app.pid > 0)
                harness_cleanup(&e->app);
        e->app.pid = 0;
        if (e->second.pid > 0)
                harness_cleanup(&e->second);
        e->second.pid = 0;
        /* XMEM_KEEP_TMP=1 keeps DIR (memd's log, bundles) for a look after a failure */
        /* runc's cgroupfs manager made the parent in every v1 controller (v2:
         * the one /sys/fs/cgroup PARENT) */
        snprintf(cmd, sizeof(cmd),
                 "rmdir /sys/fs/cgroup/*%s /sys/fs/cgroup%s 2>/dev/null; %s %s",
                 e->cgroup_parent, e->cgroup_parent,
                 getenv("XMEM_KEEP_TMP") ? ": keep" : "rm -rf", e->dir);
        (void)!system(cmd);
        e->dir[0] = 0;
}

static json_object *hook(const char *sock, const char *stage)
{
        const char *bin = need_env("XMEM_HOOK");
        json_object *h = json_object_new_object(), *a = json_object_new_array();

        json_object_array_add(a, json_object_new_string(bin));
        json_object_array_add(a, json_object_new_string("--socket"));
        json_object_array_add(a, json_object_new_string(sock));
        json_object_array_add(a, json_object_new_string("--shim"));
        json_object_array_add(a, json_object_new_string(need_env("XMEM_SHIM")));
        json_object_array_add(a, json_object_new_string(stage));
        json_object_object_add(h, "path", json_object_new_string(bin));
        json_object_object_add(h, "args", a);
        return h;
}

void ctr_bundle(const struct ctr_env *e, const char *name, const char *const *args,
                const char *annotations, const char *hook_socket, char *ret_bundle, size_t len)
{
        char path[256], cg[128];
        json_object *c, *proc, *a = json_object_new_array(), *lx;
        struct cmd_result r;

        snprintf(ret_bundle, len, "%s/%s", e->dir, name);
        mkdir(ret_bundle, 0755);
        ctr_run((const char *const[]){ "runc", "spec", "--bundle", ret_bundle, NULL }, NULL, 10,
                &r);
        cr_assert(ctr_exited(&r, 0), "runc spec: %s", r.err);
        snprintf(path, sizeof(path), "%s/config.json", ret_bundle);
        c = json_object_from_file(path);
        cr_assert_not_null(c);
        json_object_object_get_ex(c, "process", &proc);
        json_object_object_add(proc, "terminal", json_object_new_boolean(0));
        for (; *args; args++)
                json_object_array_add(a, json_object_new_string(*args));
        json_object_object_add(proc, "args", a);
        json_object_object_add(json_object_object_get(c, "root"), "path",
                               json_object_new_string(e->rootfs));
        json_object_object_add(json_object_object_get(c, "root"), "readonly",
                               json_object_new_boolean(1));
        json_object_object_get_ex(c, "linux", &lx);
        snprintf(cg, sizeof(cg), "%s/%s", e->cgroup_parent, name);
        json_object_object_add(lx, "cgroupsPath", json_object_new_string(cg));
        if (annotations)
                json_object_object_add(c, "annotations", json_tokener_parse(annotations));
        if (hook_socket) {
                json_object *h = json_object_new_object(), *l1 = json_object_new_array(),
                            *l2 = json_object_new_array();
                json_object_array_add(l1, hook(hook_socket, "createRuntime"));
                json_object_array_add(l2, hook(hook_socket, "poststop"));
                json_object_object_add(h, "createRuntime", l1);
                json_object_object_add(h, "poststop", l2);
                json_object_object_add(c, "hooks", h);
        }
        cr_assert_eq(json_object_to_file_ext(path, c, JSON_C_TO_STRING_PRETTY), 0);
        json_object_put(c);
}

void ctr_runc_run(const struct ctr_env *e, const char *via, const char *bundle, const char *name,
                  int timeout_s, struct cmd_result *ret)
{
        const char *runc = via ?: "runc";

        ctr_run((const char *const[]){ runc, "--root", e->runc_root, "run", "--bundle", bundle,
                                       name, NULL },
                NULL, timeout_s, ret);
        /* a timed-out or failed run may leave the container: clean up */
        ctr_run((const char *const[]){ runc, "--root", e->runc_root, "delete", "--force", name,
                                       NULL },
                NULL, 10, &(struct cmd_result){});
}

/* One request to memd; the parsed reply (NULL when memd is down). */
static json_object *memd_call(const struct ctr_env *e, const char *req)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char buf[65536];
        ssize_t len = -1;
        int fd;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e->sock);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            send(fd, req, strlen(req), 0) >= 0)
                len = recv(fd, buf, sizeof(buf) - 1, 0);
        close(fd);
        if (len <= 0)
                return NULL;
        buf[len] = 0;
        return json_tokener_parse(buf);
}

int ctr_memd_count(const struct ctr_env *e)
{
        json_object *o = memd_call(e, "{\"xmem\":1,\"method\":\"list\",\"params\":{}}"), *res,
                    *list;
        int n = -1;

        if (json_object_object_get_ex(o, "result", &res) &&
            json_object_object_get_ex(res, "containers", &list))
                n = (int)json_object_array_length(list);
        json_object_put(o);
        return n;
}

int64_t ctr_memd_stat(const struct ctr_env *e, const char *id, const char *field)
{
        char req[256];
        json_object *o, *res, *v;
        int64_t n = -1;

        snprintf(req, sizeof(req), "{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":\"%s\"}}",
                 id);
        o = memd_call(e, req);
        if (json_object_object_get_ex(o, "result", &res) &&
            json_object_object_get_ex(res, field, &v))
                n = json_object_get_int64(v);
        json_object_put(o);
        return n;
}

int64_t ctr_appliance_stat(const struct ctr_env *e, const char *field)
{
        return ctr_proc_stat(&e->app, field);
}

int64_t ctr_proc_stat(const struct harness_proc *app, const char *field)
{
        struct xmem_transport *t = NULL;
        char *text = NULL;
        json_object *o, *v;
        int64_t n = -1;

        if (xmem_transport_open(app->tcp_uri, NULL, &t, NULL) < 0)
                return -1;
        if (xmem_stats(t, NULL, &text) == 0 && (o = json_tokener_parse(text))) {
                if (json_object_object_get_ex(o, field, &v))
                        n = json_object_get_int64(v);
                json_object_put(o);
        }
        free(text);
        xmem_transport_close(t);
        return n;
}

bool ctr_cgroup(const struct ctr_env *e, const char *name, struct harness_cg *ret)
{
        char rel[200];

        snprintf(rel, sizeof(rel), "%s/%s", e->cgroup_parent, name);
        return harness_cg_at(ret, rel);
}

bool ctr_cgroup_exists(const struct ctr_env *e, const char *name)
{
        struct harness_cg cg;
        struct stat st;

        return ctr_cgroup(e, name, &cg) && stat(cg.path, &st) == 0;
}

pid_t ctr_run_async(const struct ctr_env *e, const char *bundle, const char *name,
                    const char *expect)
{
        pid_t p = fork();

        cr_assert(p >= 0);
        if (p == 0) {
                struct cmd_result r;
                char path[300];
                FILE *f;

                ctr_runc_run(e, NULL, bundle, name, 240, &r);
                snprintf(path, sizeof(path), "%s/%s.out", e->dir, name);
                if ((f = fopen(path, "w"))) {
                        fprintf(f, "%s%s", r.out, r.err);
                        if (!ctr_exited(&r, 0)) /* a signal, a timeout: say which */
                                fprintf(f, "(runc run: wait status %#x)\n", r.status);
                        fclose(f);
                }
                _exit(ctr_exited(&r, 0) && strstr(r.out, expect) ? 0 : 1);
        }
        return p;
}

/* sh -c: container_fill MIB, then the cgroup's limit, peak and OOM kills
 * (expect_within reads them). */
_unused_ static const char *const *fill_and_report(const char *mib)
{
        static char cmd[2][512];
        static const char *argv[2][4];
        static int k;

        k ^= 1;
        snprintf(cmd[k], sizeof(cmd[k]), "/bin/container_fill %s && " CTR_SH_REPORT, mib);
        argv[k][0] = "/bin/sh", argv[k][1] = "-c", argv[k][2] = cmd[k], argv[k][3] = NULL;
        return argv[k];
}

bool ctr_report_parse(const char *out, unsigned long long *ret_limit, unsigned long long *ret_peak,
                      bool *ret_has_peak, unsigned long long *ret_oom)
{
        const char *p = strstr(out, "limit ");
        unsigned long long lim, max = 0, oom;
        char peak[24];

        if (!p || sscanf(p, "limit %llu max %23s oom_kill %llu", &lim, peak, &oom) != 3)
                return false;
        if (strcmp(peak, "none") != 0 && sscanf(peak, "%llu", &max) != 1)
                return false;
        *ret_limit = lim, *ret_peak = max, *ret_oom = oom;
        *ret_has_peak = strcmp(peak, "none") != 0;
        return true;
}

/* OUT (from fill_and_report) says: limit LIMIT, a peak under LIMIT minus
 * half memd's headroom (limit/8, at least 4M), no OOM kill. */
_unused_ static void expect_within(const char *out, uint64_t limit)
{
        unsigned long long lim = 0, max = 0, oom = 99;
        uint64_t headroom = limit / 8 > (4 << 20) ? limit / 8 : 4 << 20;
        bool has_peak = false;

        cr_assert(ctr_report_parse(out, &lim, &max, &has_peak, &oom), "no report in: '%s'", out);
        cr_expect_eq(lim, limit, "cgroup limit %llu, want %llu", lim, (unsigned long long)limit);
        if (has_peak)
                cr_expect_lt(max, limit - headroom / 2,
                             "peak usage %llu too close to the limit %llu", max, lim);
        else
                cr_log_warn("no peak usage kept (cgroup v2 memory.peak needs Linux 5.19): "
                            "the peak check is skipped");
        cr_expect_eq(oom, 0, "oom_kill %llu", oom);
        cr_log_info("limit %llu MiB, peak usage %.1f MiB", lim >> 20, max / 1048576.0);
}

/* Why a test that needs TOOL cannot run here (not root, `TOOL --version`
 * fails; static text), or NULL. */
_unused_ static const char *ctr_tool_missing(const char *tool)
{
        static char why[128];
        struct cmd_result r;

        if (!harness_is_root())
                return "container tests need root";
        ctr_run((const char *const[]){tool, "--version", NULL}, NULL, 10, &r);
        if (ctr_exited(&r, 0))
                return NULL;
        snprintf(why, sizeof(why), "%s is not installed (scripts/deps.sh installs it)", tool);
        return why;
}

/* A fill_and_report("512") run R under a 64 MiB local limit: exited 0, all
 * 512 MiB verified, the limit in its cgroup, peak and OOM kills in bounds
 * (expect_within), detached after. */
_unused_ static void expect_512m_through_64m(const struct ctr_env *e, const struct cmd_result *r)
{
        cr_assert(ctr_exited(r, 0) && strstr(r->out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r->status, r->out, r->err);
        expect_within(r->out, 64 << 20);
        cr_expect_eq(ctr_memd_count(e), 0, "poststop did not detach");
}

/* Skip the test unless root and `TOOL --version` runs (e.g. podman). */
_unused_ static void ctr_need_tool(const char *tool)
{
        const char *why = ctr_tool_missing(tool);

        if (why)
                cr_skip_test("%s", why);
}

void ctr_need_root_runc(void)
{
        ctr_need_tool("runc");
}

void ctr_runtime_run(const struct ctr_env *e, const char *bundle, const char *name, int timeout_s,
                     struct cmd_result *r)
{
        ctr_runtime_run_with(e, NULL, bundle, name, timeout_s, r);
}

void ctr_runtime_run_with(const struct ctr_env *e, const char *runtime, const char *bundle,
                          const char *name, int timeout_s, struct cmd_result *r)
{
        char sock[200], rt[200];

        snprintf(sock, sizeof(sock), "XMEM_SOCKET=%s", e->sock[0] ? e->sock : "/nonexistent/memd.sock");
        snprintf(rt, sizeof(rt), "XMEM_RUNTIME=%s", runtime ?: "");
        ctr_run((const char *const[]){ getenv("XMEM_RUNTIME_EXE"), "--root", e->runc_root, "run",
                                       "--bundle", bundle, name, NULL },
                (const char *const[]){ sock, runtime ? rt : NULL, NULL }, timeout_s, r);
        ctr_run((const char *const[]){ runtime ?: "runc", "--root", e->runc_root, "delete",
                                       "--force", name, NULL },
                NULL, 10, &(struct cmd_result){});
}

void ctr_env_start(struct ctr_env *e)
{
        if (!harness_is_root())
                return; /* the tests skip (ctr_need_root_runc) */
        ctr_env_init(e);
        ctr_memd_start(e);
}
