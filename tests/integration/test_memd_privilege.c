/* test_memd_privilege.c: a serving memd keeps only CAP_DAC_OVERRIDE and CAP_KILL, has
 * no-new-privs and its seccomp filter on every thread (/proc/PID/task/N/status),
 * and still does its job under it: attach a cgroup, page a shim process
 * through it, detach, stop cleanly; the filter refuses nothing on the way (no
 * seccomp audit record of memd). Also in kill mode, without the filter, and
 * a bad XMEM_SECCOMP refused. Root and a memory cgroup. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <seccomp.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "privilege.h"

static struct {
        struct harness_proc app;
        struct harness_memd md;
        struct harness_cg cg;
} t;

static void setup(void)
{
        if (!harness_is_root())
                return;
        harness_init(&t.app);
        harness_appliance_start(&t.app, (const char *const[]){"--pool-size", "1G", NULL});
}

static void teardown(void)
{
        harness_memd_stop(&t.md);
        harness_cg_remove(&t.cg);
        if (t.app.pid > 0)
                harness_cleanup(&t.app);
        unsetenv("XMEM_SECCOMP");
        memset(&t, 0, sizeof(t));
}

TestSuite(memd_privilege, .init = setup, .fini = teardown, .timeout = 180);

static void need_root_cgroup(void)
{
        char name[64];

        if (!harness_is_root())
                harness_skip(teardown, "needs root");
        harness_require_uffd();
        snprintf(name, sizeof(name), "xmem-test-memd-priv-%d", (int)getpid());
        if (!harness_cg_create(&t.cg, name))
                harness_skip(teardown, "needs a memory cgroup controller");
}

/* memd over tcp: the transport's receiver threads exist before it serves. */
static void start_memd(const char *extra)
{
        harness_memd_start(&t.md, "/tmp/xmem-memd-priv.XXXXXX",
                           (const char *const[]){"--appliance", t.app.tcp_uri, extra, NULL});
}

/* Every thread of memd shows WANT_SECCOMP and only CAP_DAC_OVERRIDE and CAP_KILL (bits 1, 5).
 * Returns the number of threads. */
static int assert_threads_unprivileged(const char *want_seccomp)
{
        static const struct {
                const char *field, *want;
        } caps[] = {
            {"CapInh", "0000000000000000"}, {"CapPrm", "0000000000000022"},
            {"CapEff", "0000000000000022"}, {"CapBnd", "0000000000000022"},
            {"CapAmb", "0000000000000000"}, {"NoNewPrivs", "1"},
        };
        char dir[64], path[128], v[64];
        struct dirent *de;
        int n = 0;
        DIR *d;

        snprintf(dir, sizeof(dir), "/proc/%d/task", (int)t.md.pid);
        d = opendir(dir);
        cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s/status", dir, de->d_name);
                for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
                        harness_status_field(path, caps[i].field, v, sizeof(v));
                        cr_expect_str_eq(v, caps[i].want, "memd thread %s: %s %s, want %s",
                                         de->d_name, caps[i].field, v, caps[i].want);
                }
                harness_status_field(path, "Seccomp", v, sizeof(v));
                cr_expect_str_eq(v, want_seccomp, "memd thread %s: Seccomp %s, want %s", de->d_name,
                                 v, want_seccomp);
                n++;
        }
        closedir(d);
        return n;
}

static int count_threads(void)
{
        char dir[64];
        DIR *d;
        int n = 0;

        snprintf(dir, sizeof(dir), "/proc/%d/task", (int)t.md.pid);
        d = opendir(dir);
        cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* memd's job under its privileges: attach, a shim process pages 96 MiB
 * through a 32 MiB cgroup (faults, fills, write-backs, evictions), detach. */
static void do_the_job(void)
{
        char out[8192], line[512];
        char pre[300], sockenv[200], ctr[200];
        struct harness_child c = {.pid = -1};
        const char *prog = getenv("XMEM_E2E_PROG"), *shim = getenv("XMEM_SHIM");
        int st;

        cr_assert(prog && shim, "XMEM_E2E_PROG and XMEM_SHIM are not set (run through meson)");
        cr_assert(
            harness_ctl(&t.md, out, sizeof(out),
                        (const char *const[]){"attach", "priv", "--cgroup", t.cg.path,
                                              "--local-limit", "32M", "--external", "512M", NULL}),
            "xmemctl attach: %s (memd log %s)", out, t.md.log);
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", shim);
        snprintf(sockenv, sizeof(sockenv), "XMEM_SOCKET=%s",
                 harness_memd_ctr_socket(&t.md, "priv", ctr, sizeof(ctr)));
        harness_child_spawn(&c,
                            (const char *const[]){prog, "malloc", "96", "2", "random", "16", NULL},
                            (const char *const[]){pre, sockenv, NULL}, &t.cg, true);
        st = harness_child_line(&c, line, sizeof(line), 120000);
        cr_expect(st == 1 && strstr(line, "e2e-ok"), "the shim process said '%s' (memd log %s)",
                  line, t.md.log);
        st = harness_child_wait(&c, 30000);
        harness_child_kill(&c);
        cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "the shim process ended with status %#x", st);
        cr_assert(harness_ctl(&t.md, out, sizeof(out),
                              (const char *const[]){"--json", "stats", "priv", NULL}),
                  "xmemctl stats: %s", out);
        cr_expect_gt(harness_json_u64(out, "written_back_bytes"), 0, "nothing paged out: %s", out);
        cr_expect_gt(harness_json_u64(out, "evictions"), 0, "nothing evicted: %s", out);
        cr_expect_eq(harness_json_u64(out, "store_errors"), 0, "store errors: %s", out);
        cr_assert(
            harness_ctl(&t.md, out, sizeof(out), (const char *const[]){"detach", "priv", NULL}),
            "xmemctl detach: %s", out);
        /* the detached container's threads (its worker frees it, joining
         * its pager and residency threads) leave after the reply: a thread
         * gone mid-scan has no status file */
        for (int i = 0, prev = -1, n; i < 50 && (n = count_threads()) != prev; i++) {
                prev = n;
                usleep(200000);
        }
}

/* A sanitizer's runtime makes syscalls memd never makes (sanitized builds
 * log them instead of refusing): the allow-list is proved by release builds. */
static bool sanitized(void)
{
        const char *s = getenv("XMEM_SANITIZED");

        return s && strcmp(s, "none") != 0;
}

Test(memd_privilege, serving_memd_keeps_only_what_it_needs)
{
        int before, after, st;

        need_root_cgroup();
        start_memd(NULL);
        before = assert_threads_unprivileged("2");
        cr_expect_geq(before, 2, "memd has %d threads: no transport receiver before serving",
                      before);
        do_the_job();
        after = assert_threads_unprivileged("2");
        cr_log_info("memd threads: %d serving, %d after a container paged", before, after);
        if (sanitized())
                cr_log_info("sanitizer build: its runtime's syscalls are logged, not checked");
        else if (harness_violation_reaches_dmesg(PRIVILEGE_VIOLATION_ERRNO))
                cr_expect_eq(harness_audit_records(t.md.pid), 0,
                             "the filter refused memd a syscall: dmesg | grep 'type=1326.*pid=%d'",
                             (int)t.md.pid);
        else
                cr_log_info("seccomp audit records do not reach dmesg: refusals not checked");
        st = harness_memd_stop(&t.md);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "memd stopped with status %#x", st);
}

Test(memd_privilege, errno_mode_refusals_are_logged)
{
        if (!harness_is_root())
                harness_skip(teardown, "needs root (dmesg)");
        if (!harness_violation_reaches_dmesg(PRIVILEGE_VIOLATION_ERRNO))
                harness_skip(teardown, "seccomp audit records do not reach dmesg here (auditd?): "
                                       "the serving test's no-refusal check proves nothing");
}

Test(memd_privilege, kill_mode_serves_too)
{
        int st;

        need_root_cgroup();
        if (sanitized())
                harness_skip(teardown,
                             "sanitizer build: its runtime's own syscalls would kill memd");
        setenv("XMEM_SECCOMP", "kill", 1);
        start_memd(NULL);
        assert_threads_unprivileged("2");
        do_the_job();
        st = harness_memd_stop(&t.md);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "memd in kill mode ended with status %#x (31 = SIGSYS)", st);
}

Test(memd_privilege, no_seccomp_still_drops_capabilities)
{
        need_root_cgroup();
        start_memd("--no-seccomp");
        assert_threads_unprivileged("0");
        do_the_job();
}

Test(memd_privilege, bad_seccomp_setting_refused)
{
        char *argv[] = {getenv("XMEM_MEMD"), "--socket", "/nonexistent/memd.sock", NULL};
        char out[1024];
        int st;

        cr_assert(argv[0], "XMEM_MEMD is not set (run through meson)");
        setenv("XMEM_SECCOMP", "bogus", 1);
        st = harness_run_output(argv, "/nonexistent/memd.sock", NULL, out, sizeof(out));
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "memd with XMEM_SECCOMP=bogus: %#x", st);
}
