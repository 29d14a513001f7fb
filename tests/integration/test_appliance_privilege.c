/* test_appliance_privilege.c: the real appliance once serving has no
 * capabilities, no-new-privs and a seccomp filter (/proc/PID/status), and
 * every operation still works under it: tcp, unix and shm, snapshots,
 * clones, revert, local and remote copy, stats, persistence, clean SIGTERM.
 * In log mode the same work leaves no seccomp audit record. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "privilege.h"
#include "transport/transport.h"

#define SIZE (1u << 20)

static struct harness_proc app, other;
static char pool_path[128];

static void setup(void)
{
        harness_init(&app);
        harness_init(&other);
        snprintf(pool_path, sizeof(pool_path), "%s/pool", app.dir);
}

static void teardown(void)
{
        harness_cleanup(&app);
        harness_cleanup(&other);
        unsetenv("XMEM_SECCOMP");
}

TestSuite(appliance_privilege, .init = setup, .fini = teardown, .timeout = 120);

/* APP copies to OTHER through each of its addresses (exercise_remote_copy):
 * they are APP's --peers. */
static void start(struct harness_proc *p, const char *extra)
{
        static char by_name[64];
        const char *args[] = { "--pool-size", "64M", "--chunk-size", "16K", "--pool-file",
                               pool_path, "--peer", other.tcp_uri, "--peer", other.unix_uri,
                               "--peer", by_name, extra, NULL };
        harness_plan(&other);
        snprintf(by_name, sizeof(by_name), "tcp://localhost:%u", other.port);
        if (p != &app) /* the second appliance: anonymous pool */
                args[4] = extra, args[5] = NULL;
        harness_appliance_start(p, args);
}

/* The value of FIELD in /proc/PID/status, or "" if absent. */
static void status_field(pid_t pid, const char *field, char *out, size_t len)
{
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        harness_status_field(path, field, out, len);
}

static void assert_field(pid_t pid, const char *field, const char *want)
{
        char v[128];

        status_field(pid, field, v, sizeof(v));
        cr_assert_str_eq(v, want, "%s: %s, want %s", field, v, want);
}

static void assert_unprivileged(pid_t pid, const char *seccomp)
{
        static const char *const caps[] = { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" };

        for (size_t i = 0; i < ELEMENTSOF(caps); i++)
                assert_field(pid, caps[i], "0000000000000000");
        assert_field(pid, "NoNewPrivs", "1");
        assert_field(pid, "Seccomp", seccomp);
}

static struct xmem_transport *open_uri(const char *uri)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = {};

        cr_assert_eq(xmem_transport_open(uri, NULL, &t, &err), 0, "open %s: %s", uri,
                     xmem_error_str(&err));
        return t;
}

static void pattern(uint8_t *buf, uint64_t seed)
{
        harness_pattern(buf, SIZE, seed, 0);
}

/* Every region operation through URI, data checked after each. */
static void exercise(const char *uri, uint64_t seed)
{
        struct xmem_transport *t = open_uri(uri);
        struct xmem_region_ref r, snap, clone, copy;
        uint8_t *a = malloc(SIZE), *b = malloc(SIZE), *got = malloc(SIZE);
        uint64_t size = 0;
        char *json = NULL;

        pattern(a, seed);
        pattern(b, seed + 1);
        cr_assert_eq(xmem_region_alloc(t, SIZE, &r, &size), 0, "%s: alloc", uri);
        cr_assert_eq(size, SIZE);
        cr_assert_eq(xmem_write(t, &r, 0, a, SIZE), 0, "%s: write", uri);
        cr_assert_eq(xmem_read(t, &r, 0, got, SIZE), 0, "%s: read", uri);
        cr_assert_arr_eq(got, a, SIZE, "%s: read back", uri);

        cr_assert_eq(xmem_region_snapshot(t, &r, &snap), 0, "%s: snapshot", uri);
        cr_assert_eq(xmem_write(t, &r, 0, b, SIZE), 0);
        cr_assert_eq(xmem_read(t, &snap, 0, got, SIZE), 0);
        cr_assert_arr_eq(got, a, SIZE, "%s: snapshot kept the old data", uri);
        cr_assert_eq(xmem_region_clone(t, &snap, &clone), 0, "%s: clone", uri);
        cr_assert_eq(xmem_read(t, &clone, 0, got, SIZE), 0);
        cr_assert_arr_eq(got, a, SIZE, "%s: clone", uri);
        cr_assert_eq(xmem_region_revert(t, &r, &snap), 0, "%s: revert", uri);
        cr_assert_eq(xmem_read(t, &r, 0, got, SIZE), 0);
        cr_assert_arr_eq(got, a, SIZE, "%s: reverted", uri);

        cr_assert_eq(xmem_region_alloc(t, SIZE, &copy, NULL), 0);
        cr_assert_eq(xmem_region_copy(t, &clone, 0, NULL, &copy, 0, SIZE), 0, "%s: copy", uri);
        cr_assert_eq(xmem_read(t, &copy, 0, got, SIZE), 0);
        cr_assert_arr_eq(got, a, SIZE, "%s: local copy", uri);
        cr_assert_eq(xmem_region_resize(t, &copy, 2 * SIZE, &size), 0);
        cr_assert_eq(size, 2 * SIZE);

        cr_assert_eq(xmem_stats(t, NULL, &json), 0, "%s: stats", uri);
        cr_assert(strstr(json, "\"chunks_used\""), "%s", json);
        free(json);
        cr_assert_eq(xmem_stats(t, &clone, &json), 0);
        cr_assert(strstr(json, "\"chunks_shared\""), "%s", json);
        free(json);
        cr_assert_eq(xmem_region_free(t, &copy), 0, "%s: free", uri);
        xmem_transport_close(t);
        free(a);
        free(b);
        free(got);
}

/* Copy from APP to OTHER through each of OTHER's addresses: the appliance
 * connects out (tcp, unix, a host name to resolve, shm with SCM_RIGHTS). */
static void exercise_remote_copy(void)
{
        struct xmem_transport *ta = open_uri(app.tcp_uri), *tb = open_uri(other.tcp_uri);
        struct xmem_region_ref src, dst;
        uint8_t *a = malloc(SIZE), *got = malloc(SIZE);
        char by_name[160];
        const char *dsts[] = { other.tcp_uri, other.unix_uri, other.shm_uri, by_name };

        snprintf(by_name, sizeof(by_name), "tcp://localhost:%u", other.port);
        cr_assert_eq(xmem_region_alloc(ta, SIZE, &src, NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(dsts); i++) {
                pattern(a, 100 + i);
                cr_assert_eq(xmem_write(ta, &src, 0, a, SIZE), 0);
                cr_assert_eq(xmem_region_alloc(tb, SIZE, &dst, NULL), 0);
                cr_assert_eq(xmem_region_copy(ta, &src, 0, dsts[i], &dst, 0, SIZE), 0,
                             "remote copy to %s", dsts[i]);
                cr_assert_eq(xmem_read(tb, &dst, 0, got, SIZE), 0);
                cr_assert_arr_eq(got, a, SIZE, "remote copy to %s", dsts[i]);
        }
        xmem_transport_close(ta);
        xmem_transport_close(tb);
        free(a);
        free(got);
}

/* Alloc + write through tcp, then SIGTERM (exit 0), restart on the same pool
 * file and find the data; returns nothing, asserts. */
static void exercise_persistence(const char *extra)
{
        struct xmem_transport *t = open_uri(app.tcp_uri);
        struct xmem_region_ref r;
        uint8_t *a = malloc(SIZE), *got = malloc(SIZE);
        int status;

        pattern(a, 7);
        cr_assert_eq(xmem_region_alloc(t, SIZE, &r, NULL), 0);
        cr_assert_eq(xmem_write(t, &r, 0, a, SIZE), 0);
        xmem_transport_close(t);
        status = harness_stop(&app);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "SIGTERM: status 0x%x (a seccomp kill is SIGSYS = 31), see %s", status,
                  app.log_path);
        start(&app, extra);
        t = open_uri(app.shm_uri);
        cr_assert_eq(xmem_read(t, &r, 0, got, SIZE), 0, "region after restart");
        cr_assert_arr_eq(got, a, SIZE, "data after restart");
        xmem_transport_close(t);
        free(a);
        free(got);
}

static void exercise_all(const char *extra)
{
        exercise(app.tcp_uri, 1);
        exercise(app.unix_uri, 2);
        exercise(app.shm_uri, 3);
        exercise_remote_copy();
        exercise_persistence(extra);
}

Test(appliance_privilege, serving_without_privileges)
{
        int status;

        start(&app, NULL);
        start(&other, NULL);
        assert_unprivileged(app.pid, "2");
        assert_unprivileged(other.pid, "2");
        assert_field(app.pid, "Uid", "0\t0\t0\t0");
        exercise_all(NULL);
        assert_unprivileged(app.pid, "2");
        status = harness_stop(&app);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x, see %s",
                  status, app.log_path);
        status = harness_stop(&other);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "other: status 0x%x", status);
}

Test(appliance_privilege, log_mode_logs_no_violation)
{
        pid_t pids[3];

        if (getenv("XMEM_SANITIZED") && strcmp(getenv("XMEM_SANITIZED"), "none") != 0)
                harness_skip(teardown,
                             "sanitizer build: its runtime makes syscalls outside the allow-list");
        if (!harness_violation_reaches_dmesg(PRIVILEGE_VIOLATION_LOG))
                harness_skip(teardown, "seccomp audit records do not reach dmesg here (auditd?)");
        setenv("XMEM_SECCOMP", "log", 1);
        start(&app, NULL);
        start(&other, NULL);
        pids[0] = app.pid;
        pids[1] = other.pid;
        assert_unprivileged(app.pid, "2");
        exercise_all(NULL);
        pids[2] = app.pid;
        cr_assert_eq(WEXITSTATUS(harness_stop(&app)), 0);
        cr_assert_eq(WEXITSTATUS(harness_stop(&other)), 0);
        for (size_t i = 0; i < ELEMENTSOF(pids); i++)
                cr_assert_eq(harness_audit_records(pids[i]), 0,
                             "appliance %d made syscalls outside the allow-list: "
                             "dmesg | grep 'type=1326.*pid=%d'",
                             (int)pids[i], (int)pids[i]);
}

Test(appliance_privilege, no_seccomp_flag)
{
        start(&app, "--no-seccomp");
        assert_field(app.pid, "Seccomp", "0");
        assert_field(app.pid, "CapEff", "0000000000000000");
        assert_field(app.pid, "NoNewPrivs", "1");
        exercise(app.tcp_uri, 9);
        cr_assert_eq(WEXITSTATUS(harness_stop(&app)), 0);
}

Test(appliance_privilege, user_switch)
{
        const char *args[] = { "--pool-size", "64M", "--user", "65534", NULL };
        int status;

        if (!harness_is_root())
                harness_skip(teardown, "needs root");
        harness_appliance_start(&app, args);
        assert_field(app.pid, "Uid", "65534\t65534\t65534\t65534");
        assert_field(app.pid, "Gid", "65534\t65534\t65534\t65534");
        assert_field(app.pid, "Groups", "65534");
        assert_unprivileged(app.pid, "2");
        exercise(app.tcp_uri, 11);
        exercise(app.shm_uri, 12);
        status = harness_stop(&app);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x", status);
}

/* Is PID gone (or a zombie nobody reaped yet)? */
static bool gone(pid_t pid)
{
        char path[64], state[16];

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        harness_status_field(path, "State", state, sizeof(state));
        return state[0] == 0 || state[0] == 'Z';
}

/* The kernel clears the parent-death signal when a process becomes another
 * user: the appliance sets it again, or it outlives whoever started it (a
 * test that was killed left it running). */
Test(appliance_privilege, user_switch_still_dies_with_its_parent)
{
        const char *bin = getenv("XMEM_APPLIANCE");
        char listen[160];
        pid_t mid, pid = -1;
        int pfd[2], status;

        if (!harness_is_root())
                harness_skip(teardown, "needs root");
        snprintf(listen, sizeof(listen), "unix://%s/appliance.sock", app.dir);
        cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
        mid = fork();
        cr_assert_geq(mid, 0);
        if (mid == 0) { /* the parent that dies once the appliance is uid 65534 */
                pid_t parent = getpid(), a = fork();
                char path[64], uid[64] = "";
                if (a == 0) {
                        prctl(PR_SET_PDEATHSIG, SIGKILL);
                        if (getppid() != parent)
                                _exit(125);
                        freopen("/dev/null", "w", stderr);
                        execl(bin, bin, "--listen", listen, "--pool-size", "16M", "--user", "65534",
                              (char *)NULL);
                        _exit(127);
                }
                if (a < 0 || write(pfd[1], &a, sizeof(a)) != sizeof(a))
                        _exit(1);
                snprintf(path, sizeof(path), "/proc/%d/status", (int)a);
                for (int i = 0; i < 500 && strncmp(uid, "65534", 5) != 0; i++) {
                        usleep(20000);
                        harness_status_field(path, "Uid", uid, sizeof(uid));
                }
                _exit(strncmp(uid, "65534", 5) == 0 ? 0 : 2);
        }
        close(pfd[1]);
        cr_assert_eq(read(pfd[0], &pid, sizeof(pid)), (ssize_t)sizeof(pid));
        close(pfd[0]);
        cr_assert_eq(waitpid(mid, &status, 0), mid);
        for (int i = 0; i < 250 && !gone(pid); i++)
                usleep(20000);
        bool survived = !gone(pid);
        if (survived)
                kill(pid, SIGKILL);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the appliance never became uid 65534 (status %#x)", status);
        cr_assert_not(survived, "the appliance (pid %d) outlived its parent", (int)pid);
}

static int run_appliance(const char *seccomp_env, const char *extra)
{
        const char *bin = getenv("XMEM_APPLIANCE");
        int status;
        pid_t pid = fork();

        cr_assert_geq(pid, 0);
        if (pid == 0) {
                setenv("XMEM_SECCOMP", seccomp_env, 1);
                freopen("/dev/null", "w", stderr);
                execl(bin, bin, "--listen", "tcp://127.0.0.1:1", extra, (char *)NULL);
                _exit(127);
        }
        for (int i = 0; i < 500; i++) { /* a refusal is immediate; 5 s means it started */
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return status;
                usleep(10000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("the appliance started (%s) instead of refusing", seccomp_env);
        return -1;
}

Test(appliance_privilege, bad_settings_refused)
{
        int status = run_appliance("bogus", NULL);

        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "XMEM_SECCOMP=bogus: 0x%x",
                  status);
        status = run_appliance("kill", "--user=no-such-user-xmem");
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "--user unknown: 0x%x", status);
}
