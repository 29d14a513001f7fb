/* test_multiproc.c: the container-wide accounting page (docs/shim.md
 * "Container-wide accounting") with a real appliance, a real memd and the
 * real shim. Several processes of one 64 MiB memory cgroup (v1 or v2)
 * together stay within local_alloc_limit (no OOM kill) and within the
 * external quota (the process that finds it used up gets ENOMEM); a killed
 * process's charges leave the counters. Root and a memory cgroup. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1ULL << 20)

static struct {
        struct harness_proc app;
        struct harness_memd md;
        struct harness_cg cg;
} e;

static const char *need_env(const char *name)
{
        const char *v = getenv(name);
        cr_assert(v && *v, "%s is not set (run through meson test)", name);
        return v;
}

/* A child of the test: ARGV in CG (NULL: here) with the shim when SHIM; its
 * stdin and stdout are pipes to us. */
struct proc {
        pid_t pid;
        int in, out; /* we write to in, read from out */
};

static void spawn(struct proc *p, const char *const *argv, bool shim, const char *cg)
{
        int to[2], from[2];

        cr_assert(pipe2(to, O_CLOEXEC) == 0 && pipe2(from, O_CLOEXEC) == 0);
        p->pid = fork();
        cr_assert(p->pid >= 0);
        if (p->pid == 0) {
                char pre[300], sockenv[200];
                if (cg) {
                        char path[200];
                        snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
                        FILE *f = fopen(path, "w");
                        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
                                _exit(126);
                }
                dup2(to[0], 0);
                dup2(from[1], 1);
                if (shim) {
                        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", need_env("XMEM_SHIM"));
                        char ctr[160];
                        snprintf(sockenv, sizeof(sockenv), "XMEM_SOCKET=%s",
                                 harness_memd_ctr_socket(&e.md, "mp", ctr, sizeof(ctr)));
                        putenv(pre);
                        putenv(sockenv);
                }
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(to[0]);
        close(from[1]);
        p->in = to[1];
        p->out = from[0];
}

/* One line of P's output into BUF ("" at EOF). */
static void read_line(struct proc *p, char *buf, size_t len)
{
        size_t n = 0;
        char c;

        while (n < len - 1 && read(p->out, &c, 1) == 1 && c != '\n')
                buf[n++] = c;
        buf[n] = 0;
}

/* Tell P to go on, collect the rest of its output, wait for it. */
static int finish(struct proc *p, char *buf, size_t len)
{
        ssize_t n, got = 0;
        int st = 0;

        (void)!write(p->in, "\n", 1);
        close(p->in);
        while ((size_t)got < len - 1 && (n = read(p->out, buf + got, len - 1 - (size_t)got)) > 0)
                got += n;
        buf[got] = 0;
        close(p->out);
        waitpid(p->pid, &st, 0);
        return st;
}

static void setup(void)
{
        signal(SIGPIPE, SIG_IGN); /* a program killed before we tell it to go on */
        if (!harness_is_root() || !harness_cg_version())
                return; /* the test skips */
        harness_init(&e.app);
        harness_appliance_start(&e.app, (const char *const[]){ "--pool-size", "4G", NULL });
        char name[64];
        snprintf(name, sizeof(name), "xmem-multiproc-%d", (int)getpid());
        cr_assert(harness_cg_create(&e.cg, name));
        harness_memd_start(&e.md, "/tmp/xmem-multiproc.XXXXXX",
                           (const char *const[]){ "--appliance", e.app.tcp_uri, NULL });
}

static void teardown(void)
{
        harness_memd_stop(&e.md);
        if (e.app.pid > 0)
                harness_cleanup(&e.app);
        harness_cg_remove(&e.cg); /* and what a failed test left running there */
        memset(&e, 0, sizeof(e));
}

static void need_root_cg(void)
{
        if (!harness_is_root())
                cr_skip_test("needs root");
        if (!e.cg.version)
                cr_skip_test("%s", HARNESS_CG_NONE);
}

/* xmemctl ARGS...: its stdout into OUT; asserts exit 0. */
static void ctl(char *out, size_t len, const char *const *args)
{
        const char *argv[16] = { need_env("XMEM_CTL"), "--socket", e.md.sock };
        struct proc p;
        int st, i;

        for (i = 0; args[i] && i < 12; i++)
                argv[3 + i] = args[i];
        spawn(&p, argv, false, NULL);
        st = finish(&p, out, len);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "xmemctl %s: %s (see %s)", args[0], out,
                  e.md.log);
}

static void attach(const char *external)
{
        char out[512];

        ctl(out, sizeof(out), (const char *const[]){ "attach", "mp", "--cgroup", e.cg.path,
                                                      "--local-limit", "64M", "--external",
                                                      external, NULL });
}

static void stats(char *out, size_t len)
{
        ctl(out, len, (const char *const[]){ "--json", "stats", "mp", NULL });
}

/* memd forgets exited processes when their pidfd fires, and uncounts their
 * written pages when their teardown (off its event loop) has run: wait for
 * both, then the totals must be back to zero (nothing drifts). */
static void expect_counters_drained(void)
{
        static char s[16384];

        for (int i = 0; i < 100; i++) {
                stats(s, sizeof(s));
                if (!strstr(s, "\"pid\"") && harness_json_u64(s, "external_written_bytes") == 0)
                        break;
                usleep(50000);
        }
        cr_expect_eq(harness_json_u64(s, "local_bytes"), 0, "local bytes left: %s", s);
        cr_expect_eq(harness_json_u64(s, "external_bytes"), 0, "external bytes left: %s", s);
        cr_expect_eq(harness_json_u64(s, "external_written_bytes"), 0, "written pages left: %s",
                     s);
}

/* Four processes (forked by one) each write and verify 128 MiB at once in a
 * 64 MiB cgroup: 4 x local_alloc_limit (32M) of local memory would be
 * 128 MiB, so without the shared counter the cgroup OOM-kills them. */
Test(multiproc, four_processes_share_the_local_limit, .init = setup, .fini = teardown,
     .timeout = 300)
{
        static char s[16384];
        char line[256], out[1024];
        struct proc p;
        uint64_t local, lal;
        int st;

        need_root_cg();
        attach("2G");
        spawn(&p, (const char *const[]){ need_env("XMEM_MULTIPROC_PROG"), "fork", "4", "128",
                                         NULL },
              true, e.cg.path);
        read_line(&p, line, sizeof(line));
        stats(s, sizeof(s)); /* all 4 x 128 MiB written and live */
        st = finish(&p, out, sizeof(out));
        uint64_t peak = 0;
        (void)harness_cg_peak(&e.cg, &peak); /* 0: none kept (v2 before Linux 5.19) */
        /* times the limit was hit: v1 memory.failcnt, v2 memory.events max */
        uint64_t hits = e.cg.version == 2 ? harness_cg_u64(e.cg.path, "memory.events", "max")
                                          : harness_cg_u64(e.cg.path, "memory.failcnt", NULL);
        cr_log_info("fork 4 x 128 MiB: %s / %s; peak %.1f MiB, failcnt %llu; memd: %s", line, out,
                    peak / 1048576.0, (unsigned long long)hits, s);
        cr_expect_str_eq(line, "written", "%s", out);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, "multiproc-ok"),
                  "status %#x: %s (memd log %s)", st, out, e.md.log);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0, "OOM kills in the cgroup");
        local = harness_json_u64(s, "local_bytes");
        lal = harness_json_u64(s, "local_alloc_limit");
        cr_expect_eq(lal, 32 * MIB);
        cr_expect_leq(local, lal, "container local bytes %llu over the limit",
                      (unsigned long long)local);
        cr_expect_gt(harness_json_u64(s, "external_bytes"), 400 * MIB, "the rest went external");
        expect_counters_drained();
}

/* external 256M: A holds 200 MiB; B then asks for 200 MiB and gets what is
 * left of the quota (plus the local share A left) before malloc fails with
 * ENOMEM; both verify their data. Per-process quotas would give B 200 MiB. */
Test(multiproc, external_quota_spans_processes, .init = setup, .fini = teardown, .timeout = 300)
{
        static char s[16384];
        char la[256], lb[256], oa[256], ob[256];
        long got_a = -1, got_b = -1, err_a = -1, err_b = -1;
        struct proc a, b;
        int st_a, st_b;

        need_root_cg();
        attach("256M");
        spawn(&a, (const char *const[]){ need_env("XMEM_MULTIPROC_PROG"), "hold", "200", NULL },
              true, e.cg.path);
        read_line(&a, la, sizeof(la));
        spawn(&b, (const char *const[]){ need_env("XMEM_MULTIPROC_PROG"), "hold", "200", NULL },
              true, e.cg.path);
        read_line(&b, lb, sizeof(lb));
        stats(s, sizeof(s));
        st_b = finish(&b, ob, sizeof(ob));
        st_a = finish(&a, oa, sizeof(oa));
        sscanf(la, "got %ld errno %ld", &got_a, &err_a);
        sscanf(lb, "got %ld errno %ld", &got_b, &err_b);
        cr_log_info("quota 256M: A '%s' '%s', B '%s' '%s'; memd: %s", la, oa, lb, ob, s);
        cr_expect_eq(got_a, 200, "A: %s", la);
        cr_expect(got_b >= 0 && got_b < 200, "B got %ld MiB", got_b);
        cr_expect_eq(err_b, ENOMEM, "B's malloc fails with ENOMEM: %s", lb);
        /* what both hold fits in the quota plus the local share (1 MiB blocks
         * take a little more than 1 MiB each) */
        cr_expect_leq((uint64_t)(got_a + got_b) * MIB, 256 * MIB + 32 * MIB);
        cr_expect_leq(harness_json_u64(s, "external_bytes"), 256 * MIB);
        cr_expect_leq(harness_json_u64(s, "local_bytes"), 32 * MIB);
        cr_expect_geq(harness_json_u64(s, "refused_allocations"), 1);
        cr_expect(WIFEXITED(st_a) && WEXITSTATUS(st_a) == 0 && strstr(oa, "hold-ok"),
                  "A %#x: %s", st_a, oa);
        cr_expect(WIFEXITED(st_b) && WEXITSTATUS(st_b) == 0 && strstr(ob, "hold-ok"),
                  "B %#x: %s", st_b, ob);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0);
        expect_counters_drained();
}

/* A process killed with its memory charged: memd takes its slot's charges out
 * of the totals, and the next process gets the whole quota again. */
Test(multiproc, killed_process_charges_leave, .init = setup, .fini = teardown, .timeout = 300)
{
        static char s[16384];
        char line[256], out[256];
        long got = -1, err = -1;
        struct proc p;
        int st;

        need_root_cg();
        attach("256M");
        spawn(&p, (const char *const[]){ need_env("XMEM_MULTIPROC_PROG"), "hold", "200", NULL },
              true, e.cg.path);
        read_line(&p, line, sizeof(line));
        stats(s, sizeof(s));
        cr_expect_gt(harness_json_u64(s, "external_bytes"), 150 * MIB, "%s", s);
        kill(p.pid, SIGKILL);
        finish(&p, out, sizeof(out));
        expect_counters_drained();
        spawn(&p, (const char *const[]){ need_env("XMEM_MULTIPROC_PROG"), "hold", "200", NULL },
              true, e.cg.path);
        read_line(&p, line, sizeof(line));
        st = finish(&p, out, sizeof(out));
        sscanf(line, "got %ld errno %ld", &got, &err);
        cr_expect_eq(got, 200, "after the kill: %s", line);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%#x: %s", st, out);
}

/* Two processes that bypass the shim (their own shim.hello and shim.register,
 * no accounting page) each write 40 MiB under a 64M quota: memd's own count
 * of written pages stops the second with SIGBUS when the container's quota is
 * used up; the first keeps its data, and what they wrote leaves the count
 * when they exit. */
Test(multiproc, memd_enforces_the_quota_without_the_shim, .init = setup, .fini = teardown,
     .timeout = 300)
{
        static char s[16384];
        char sock[160], la[256], lb[256], oa[256], ob[256];
        struct proc a, b;
        int st_a, st_b;

        need_root_cg();
        attach("64M");
        harness_memd_ctr_socket(&e.md, "mp", sock, sizeof(sock));
        spawn(&a, (const char *const[]){ need_env("XMEM_HOSTILE_PROG"), "quota", "40", sock, NULL },
              false, e.cg.path);
        read_line(&a, la, sizeof(la)); /* "uid 0" */
        read_line(&a, la, sizeof(la));
        cr_assert_str_eq(la, "wrote 40", "A: %s (memd log %s)", la, e.md.log);
        spawn(&b, (const char *const[]){ need_env("XMEM_HOSTILE_PROG"), "quota", "40", sock, NULL },
              false, e.cg.path);
        read_line(&b, lb, sizeof(lb));
        read_line(&b, lb, sizeof(lb));
        st_b = finish(&b, ob, sizeof(ob));
        stats(s, sizeof(s));
        st_a = finish(&a, oa, sizeof(oa));
        cr_log_info("quota 64M without the shim: A '%s' '%s', B '%s' status %#x; memd: %s", la,
                    oa, lb, st_b, s);
        cr_expect(WIFSIGNALED(st_b) && WTERMSIG(st_b) == SIGBUS,
                  "B ends with SIGBUS: status %#x, '%s'", st_b, lb);
        cr_expect_leq(harness_json_u64(s, "external_written_bytes"), 64 * MIB, "%s", s);
        cr_expect_geq(harness_json_u64(s, "external_written_bytes"), 40 * MIB, "%s", s);
        cr_expect_geq(harness_json_u64(s, "quota_refused_writes"), 1, "%s", s);
        cr_expect(WIFEXITED(st_a) && WEXITSTATUS(st_a) == 0 && strstr(oa, "quota-ok"),
                  "A %#x: %s", st_a, oa);
        expect_counters_drained();
}
