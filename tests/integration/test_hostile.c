/* test_hostile.c: the isolation boundary, attacked for real (docs/security.md).
 * Container A (runc, attached by the hook) runs hostile_prog as uid 0 and as
 * an unprivileged uid while container B runs a verifying workload: every memd
 * method against A and B with real and forged ids and tokens, every socket it
 * can find, and floods. Nothing but A's own business gets through, B's data
 * verifies at the end, and memd keeps answering the admin. Also a pid reused
 * by another container's process cannot act through a connection it
 * inherited. */
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

#include <criterion/criterion.h>

#include "containers.c"

static struct ctr_env env;
static const char *xmem_64m = "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.external\":\"1G\"}";

static void setup(void)
{
        if (!harness_is_root() || !harness_cg_version())
                return;
        ctr_env_init(&env);
        ctr_env_setup_with(&env, (const char *const[]){need_env("XMEM_HOSTILE_PROG"), NULL});
}

static void teardown(void)
{
        if (env.dir[0])
                ctr_env_cleanup(&env);
        memset(&env, 0, sizeof(env)); /* idempotent: also called before a skip */
}

static void need_root_runc(void)
{
        if (!env.dir[0])
                cr_skip_test("needs root, runc and a memory cgroup (v1 or v2)");
}

/* B: 192 MiB through 64 MiB, held HOLD s, then read back again. */
static pid_t victim_start(const char *hold)
{
        char bundle[256];
        pid_t p;

        ctr_bundle(&env, "victim",
                   (const char *const[]){"/bin/container_fill", "192", hold, "verify", NULL},
                   xmem_64m, env.sock, bundle, sizeof(bundle));
        p = ctr_run_async(&env, bundle, "victim", "fill-ok again");
        /* attached and paging before the attacks start */
        for (int i = 0; i < 200 && ctr_memd_stat(&env, "victim", "written_back_bytes") <= 0; i++)
                usleep(50000);
        cr_assert_gt(ctr_memd_stat(&env, "victim", "written_back_bytes"), 0,
                     "the victim did not start paging");
        return p;
}

static void victim_expect_ok(pid_t p)
{
        char path[300], out[16384] = "";
        int st;

        cr_assert_eq(waitpid(p, &st, 0), p);
        snprintf(path, sizeof(path), "%s/victim.out", env.dir);
        ctr_read_file(path, out, sizeof(out));
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "the victim's data did not verify after the attack: %s", out);
}

/* The container's processes run as UID (config.json process.user). */
static void bundle_set_user(const char *bundle, int uid)
{
        char path[300];
        json_object *cfg, *proc, *user;

        snprintf(path, sizeof(path), "%s/config.json", bundle);
        cfg = json_object_from_file(path);
        cr_assert(cfg && json_object_object_get_ex(cfg, "process", &proc), "%s", path);
        user = json_object_new_object();
        json_object_object_add(user, "uid", json_object_new_int(uid));
        json_object_object_add(user, "gid", json_object_new_int(uid));
        json_object_object_add(proc, "user", user);
        cr_assert_eq(json_object_to_file(path, cfg), 0);
        json_object_put(cfg);
}

/* The bundle of a fresh attached container NAME running hostile_prog ARGS as UID. */
static void attack_bundle(const char *name, int uid, const char *const *args, char *bundle,
                          size_t len)
{
        const char *argv[16] = {"/bin/hostile_prog"};

        for (int i = 0; args[i] && i < 14; i++)
                argv[i + 1] = args[i];
        ctr_bundle(&env, name, argv, xmem_64m, env.sock, bundle, len);
        bundle_set_user(bundle, uid);
}

static void attack(const char *name, int uid, const char *const *args, struct cmd_result *r)
{
        char bundle[256];

        attack_bundle(name, uid, args, bundle, sizeof(bundle));
        ctr_runc_run(&env, NULL, bundle, name, 120, r);
        cr_log_info("%s: %s", name, r->out);
}

static void expect_no_breach(const char *name, const struct cmd_result *r)
{
        cr_expect(strstr(r->out, "HOSTILE-DONE 0\n") && ctr_exited(r, 0),
                  "%s got through (status %d): %s%s", name, r->status, r->out, r->err);
}

Test(hostile, every_method_from_inside, .init = setup, .fini = teardown, .timeout = 300)
{
        struct cmd_result r;
        pid_t victim;

        need_root_runc();
        victim = victim_start("8");
        attack("hostile-root", 0, (const char *const[]){"methods", "victim", NULL}, &r);
        expect_no_breach("uid 0 in the container", &r);
        cr_expect(strstr(r.out, "refused: detach {\"id\":\"victim\",\"force\":true} -> EPERM"),
                  "the attack did not run: %s", r.out);
        attack("hostile-user", 65534, (const char *const[]){"methods", "victim", NULL}, &r);
        expect_no_breach("uid 65534 in the container", &r);
        cr_expect_gt(ctr_memd_stat(&env, "victim", "resident_bytes"), 0,
                     "the victim is no longer attached");
        victim_expect_ok(victim);
}

Test(hostile, no_other_socket_reachable, .init = setup, .fini = teardown, .timeout = 300)
{
        char other[300], app[300];
        struct cmd_result r;
        pid_t victim;

        need_root_runc();
        victim = victim_start("4");
        snprintf(other, sizeof(other), "%s/memd/containers/victim/memd.sock", env.dir);
        snprintf(app, sizeof(app), "%s/appliance.sock", env.app.dir);
        const char *const paths[] = {"sockets", env.sock, other, app, NULL};
        attack("hostile-walk", 0, paths, &r);
        expect_no_breach("the socket walk as uid 0", &r);
        cr_expect(strstr(r.out, "unreachable: ") != NULL, "the walk did not run: %s", r.out);
        attack("hostile-walk-user", 65534, paths, &r);
        expect_no_breach("the socket walk as uid 65534", &r);
        victim_expect_ok(victim);
}

static long memd_rss_kib(void)
{
        char path[64], buf[4096], *p;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)env.memd_pid);
        if (!ctr_read_file(path, buf, sizeof(buf)) || !(p = strstr(buf, "VmRSS:")))
                return -1;
        return strtol(p + 6, NULL, 10);
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(hostile, flood_leaves_memd_responsive, .init = setup, .fini = teardown, .timeout = 300)
{
        double worst = 0, t;
        long rss0, rss1;
        pid_t victim, attacker;
        int st, n_lists = 0;

        need_root_runc();
        victim = victim_start("12");
        rss0 = memd_rss_kib();
        char bundle[256];
        attack_bundle("hostile-flood", 0, (const char *const[]){"flood", "8", NULL}, bundle,
                      sizeof(bundle));
        attacker = ctr_run_async(&env, bundle, "hostile-flood", "HOSTILE-DONE 0\n");
        /* the admin is answered within a second all along */
        while (waitpid(attacker, &st, WNOHANG) == 0) {
                struct cmd_result l;
                t = now_s();
                ctr_run(
                    (const char *const[]){need_env("XMEM_CTL"), "--socket", env.sock, "list", NULL},
                    NULL, 10, &l);
                t = now_s() - t;
                cr_expect(ctr_exited(&l, 0) && strstr(l.out, "victim"),
                          "xmemctl list during the flood: %s%s", l.out, l.err);
                worst = t > worst ? t : worst;
                n_lists++;
                usleep(100000);
        }
        rss1 = memd_rss_kib();
        char path[300], out[16384] = "";
        snprintf(path, sizeof(path), "%s/hostile-flood.out", env.dir);
        ctr_read_file(path, out, sizeof(out));
        cr_log_info("flood: %d admin lists, the slowest %.3f s; memd RSS %ld -> %ld KiB; %s",
                    n_lists, worst, rss0, rss1, out);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the flood got through: %s", out);
        cr_expect(strstr(out, "flood:") != NULL, "the flood did not run: %s", out);
        cr_expect_lt(worst, 1.0, "an admin list took %.3f s during the flood", worst);
        /* AddressSanitizer's quarantine keeps what memd freed (256 MiB) */
        const char *san = getenv("XMEM_SANITIZED");
        long bound = san && strcmp(san, "none") != 0 ? 320 * 1024 : 64 * 1024;
        fprintf(stderr,
                "flood: memd RSS %ld -> %ld KiB (bound +%ld KiB), slowest admin list "
                "%.3f s of %d\n",
                rss0, rss1, bound, worst, n_lists);
        cr_expect_lt(rss1 - rss0, bound, "memd grew from %ld to %ld KiB", rss0, rss1);
        victim_expect_ok(victim);
}

static void memd_call_quiet(const char *req)
{
        json_object_put(memd_call(&env, req));
}

/* memd's stats of ID as text, in BUF. */
static const char *memd_stats_text(const char *id, char *buf, size_t len)
{
        char req[256];
        json_object *r;

        snprintf(req, sizeof(req), "{\"xmem\":1,\"method\":\"stats\",\"params\":{\"id\":\"%s\"}}",
                 id);
        r = memd_call(&env, req);
        snprintf(buf, len, "%s", r ? json_object_to_json_string(r) : "no reply");
        json_object_put(r);
        return buf;
}

/* CG: a fresh memory cgroup for NAME, attached in memd. */
static void attach_cgroup(const char *name, char *cg, size_t len)
{
        char req[512], rel[96];
        struct harness_cg hcg;
        json_object *r;

        snprintf(rel, sizeof(rel), "xmem-hostile-%d-%s", (int)getpid(), name);
        cr_assert(harness_cg_at(&hcg, rel), HARNESS_CG_NONE);
        snprintf(cg, len, "%s", hcg.path);
        cr_assert(mkdir(cg, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", cg, strerror(errno));
        snprintf(req, sizeof(req),
                 "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"%s\",\"cgroup\":\"%s\","
                 "\"local_limit\":\"64M\",\"external\":\"256M\"}}",
                 name, cg);
        r = memd_call(&env, req);
        cr_assert(r && json_object_get_boolean(json_object_object_get(r, "ok")), "attach %s: %s",
                  name, r ? json_object_to_json_string(r) : "no reply");
        json_object_put(r);
}

static void join_cgroup(const char *cg)
{
        char path[300], me[16];
        int fd;

        snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
        snprintf(me, sizeof(me), "%d\n", (int)getpid());
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, me, strlen(me)) < 0)
                _exit(120);
        close(fd);
}

/* The next fork gets PID (ns_last_pid), or -1. The child runs FN. */
static pid_t fork_as(pid_t pid, void (*fn)(const char *), const char *arg)
{
        for (int i = 0; i < 20; i++) {
                char v[16];
                int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
                snprintf(v, sizeof(v), "%d", (int)pid - 1);
                if (fd < 0 || write(fd, v, strlen(v)) < 0)
                        return -1;
                close(fd);
                pid_t c = fork();
                if (c == 0) {
                        if (getpid() == pid)
                                fn(arg);
                        _exit(0);
                }
                if (c == pid)
                        return c;
                waitpid(c, NULL, 0);
        }
        return -1;
}

static void sit_in(const char *cg)
{
        join_cgroup(cg);
        pause();
        _exit(0);
}

static void reuse_cleanup(pid_t y, pid_t z, const char *cg_a, const char *cg_b)
{
        if (z > 0)
                kill(z, SIGKILL), waitpid(z, NULL, 0);
        kill(y, SIGKILL);
        waitpid(y, NULL, 0);
        memd_call_quiet("{\"xmem\":1,\"method\":\"detach\",\"params\":{\"id\":\"reuse-a\"}}");
        memd_call_quiet("{\"xmem\":1,\"method\":\"detach\",\"params\":{\"id\":\"reuse-b\"}}");
        harness_cg_kill_all(cg_a);
        harness_cg_kill_all(cg_b);
        rmdir(cg_a);
        rmdir(cg_b);
}

Test(hostile, reused_pid_cannot_act_for_another_container, .init = setup, .fini = teardown,
     .timeout = 120)
{
        char cg_a[200], cg_b[200], sock_a[300], buf[1024] = "";
        int go[2], res[2], st;
        pid_t x, z = -1, y = -1;
        ssize_t n;

        need_root_runc();
        attach_cgroup("reuse-a", cg_a, sizeof(cg_a));
        attach_cgroup("reuse-b", cg_b, sizeof(cg_b));
        snprintf(sock_a, sizeof(sock_a), "%s/memd/containers/reuse-a/memd.sock", env.dir);
        cr_assert(pipe(go) == 0 && pipe(res) == 0);
        x = fork();
        cr_assert(x >= 0);
        if (x == 0) {
                /* X, in A, connects; Y inherits the connection; X exits */
                join_cgroup(cg_a);
                int s = harness_connect_unix(sock_a);
                char r0[4096];
                const char *st0 = "{\"xmem\":1,\"method\":\"stats\",\"params\":{}}";
                /* memd has taken X as the peer of the connection (a round trip) */
                if (s < 0 || send(s, st0, strlen(st0), 0) < 0 || recv(s, r0, sizeof(r0), 0) <= 0 ||
                    !strstr(r0, "\"ok\":true"))
                        _exit(121);
                pid_t yy = fork();
                if (yy == 0) {
                        char c, reply[1024];
                        const char *hello = "{\"xmem\":1,\"method\":\"shim.hello\","
                                            "\"params\":{\"version\":2}}";
                        if (read(go[0], &c, 1) != 1)
                                _exit(122);
                        (void)!send(s, hello, strlen(hello), MSG_NOSIGNAL);
                        ssize_t k = recv(s, reply, sizeof(reply) - 1, 0);
                        (void)!write(res[1], reply, k > 0 ? (size_t)k : 0);
                        _exit(0);
                }
                /* Y's pid for the test, then X is gone */
                (void)!write(res[1], &yy, sizeof(yy));
                _exit(0);
        }
        cr_assert_eq(read(res[0], &y, sizeof(y)), (ssize_t)sizeof(y));
        cr_assert_eq(waitpid(x, &st, 0), x);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "X failed: %#x", st);
        /* Z: a process of B under X's pid */
        z = fork_as(x, sit_in, cg_b);
        if (z < 0) {
                reuse_cleanup(y, z, cg_a, cg_b);
                harness_skip(teardown, "could not get pid %d again for the reuse (ns_last_pid)",
                             (int)x);
        }
        usleep(100000); /* Z is in B's cgroup */
        cr_assert_eq(write(go[1], "g", 1), 1);
        n = read(res[0], buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = 0;
        cr_log_info("Y's hello through X's connection, with pid %d now B's: %s", (int)x, buf);
        cr_expect(strstr(buf, "\"ok\":false") && strstr(buf, "ESRCH") &&
                      strstr(buf, "the calling process is gone"),
                  "a connection whose process is gone was served: %s", buf);
        /* nothing of either container changed: no arena was made */
        cr_expect(!strstr(memd_stats_text("reuse-a", buf, sizeof(buf)), "\"pid\""),
                  "A gained a process: %s", buf);
        cr_expect(!strstr(memd_stats_text("reuse-b", buf, sizeof(buf)), "\"pid\""),
                  "B gained a process: %s", buf);
        reuse_cleanup(y, z, cg_a, cg_b);
}
