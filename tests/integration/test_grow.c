/* test_grow.c: a container whose own anonymous usage grows after its cache of
 * external pages filled is not OOM-killed (issue 7, "The whole local limit
 * works for the container"). A real appliance, memd and shim; one process in
 * a 64 MiB memory cgroup (external-first, a small local allocation share)
 * works through 256 MiB of external memory so memd's cache fills to its
 * budget, then maps 40 MiB of its own anonymous memory behind the shim's
 * back (raw SYS_mmap) and touches it page by page; memd must shrink the
 * cache to make room, and the process then verifies all of it. v1 or v2.
 * Root, /dev/userfaultfd, a memory cgroup controller. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1ULL << 20)
#define LIMIT_MIB 64
#define EXT_MIB "256"
#define OWN_MIB 40 /* well above half the limit (the old up-front reserve) */
/* The growth is not paced: page after page as fast as the CPU touches them
 * (GB/s), far faster than memd looks at the usage. On v1 a task at the limit
 * waits for memd's eviction (the OOM killer is paused while memd has cache to
 * give back); on v2 memory.high throttles it. */
#define STEP_US "0"

static struct {
        struct harness_proc app;
        struct harness_memd md;
        struct harness_cg cg;
        struct harness_child prog;
} e;

static void setup(void)
{
        char name[64];

        memset(&e, 0, sizeof(e));
        e.prog.pid = e.app.pid = -1;
        if (!harness_is_root() || access("/dev/userfaultfd", F_OK) != 0)
                return; /* the test skips */
        snprintf(name, sizeof(name), "xmem-test-grow-%d", (int)getpid());
        if (!harness_cg_create(&e.cg, name))
                return; /* no memory controller: the test skips */
        harness_appliance_setup(&e.app, "1G");
        harness_memd_start(&e.md, "/tmp/xmem-test-grow.XXXXXX",
                           (const char *const[]){"--appliance", e.app.tcp_uri, NULL});
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

/* memd's stats of the container (JSON) into OUT. */
static void stats(char *out, size_t len)
{
        cr_assert(
            harness_ctl(&e.md, out, len, (const char *const[]){"--json", "stats", "grow", NULL}),
            "stats: %s (see %s)", out, e.md.log);
}

/* Wait for the program's line starting with WANT; on anything else say why
 * (an OOM kill above all) and stop the test. */
static void expect_step(const char *want, int timeout_ms)
{
        char line[256], s[16384];
        int r, st;

        r = harness_child_line(&e.prog, line, sizeof(line), timeout_ms);
        if (r == 1 && strncmp(line, want, strlen(want)) == 0)
                return;
        st = harness_child_wait(&e.prog, 2000);
        stats(s, sizeof(s));
        cr_assert_fail("waiting for '%s': %s '%s'; the process %s (status %#x); cgroup "
                       "oom_kill %llu; memd: %s (log %s)",
                       want, r == -ETIME ? "timed out after" : "got", line,
                       st == -ETIME ? "still runs" : "is gone", st,
                       (unsigned long long)harness_cg_oom_kills(&e.cg), s, e.md.log);
}

/* Peak usage where the kernel keeps one (harness_cg_peak), else -1. */
static double peak_mib(void)
{
        uint64_t peak;

        return harness_cg_peak(&e.cg, &peak) ? peak / 1048576.0 : -1;
}

Test(grow, own_usage_grows_after_the_cache_filled, .init = setup, .fini = teardown, .timeout = 300)
{
        static char s1[16384], s2[16384], s3[16384];
        char out[1024], pre[300], sockenv[200], own_arg[16], ctr[160];
        const char *prog = getenv("XMEM_PAGING_PROG"), *shim = getenv("XMEM_SHIM");
        uint64_t limit = (uint64_t)LIMIT_MIB * MIB, own = (uint64_t)OWN_MIB * MIB;
        uint64_t cached, grown, after;
        int st;

        harness_require_uffd();
        if (!e.cg.version)
                cr_skip_test("needs a memory cgroup controller (v1 or v2)");
        cr_assert(prog && shim, "XMEM_PAGING_PROG and XMEM_SHIM must be set (meson test)");
        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"attach", "grow", "--cgroup", e.cg.path,
                                                    "--local-limit", "64M", "--external", "512M",
                                                    "--policy", "external-first",
                                                    "--local-alloc-limit", "4M", NULL}),
                  "attach: %s (see %s)", out, e.md.log);

        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", shim);
        snprintf(sockenv, sizeof(sockenv), "XMEM_SOCKET=%s",
                 harness_memd_ctr_socket(&e.md, "grow", ctr, sizeof(ctr)));
        snprintf(own_arg, sizeof(own_arg), "%d", OWN_MIB);
        harness_child_spawn(&e.prog,
                            (const char *const[]){prog, "grow", EXT_MIB, own_arg, STEP_US, NULL},
                            (const char *const[]){pre, sockenv, NULL}, &e.cg, false);

        /* 1: the cache of external pages is full */
        expect_step("cached", 120000);
        usleep(200000); /* the evictor settles between its watermarks */
        stats(s1, sizeof(s1));
        cached = harness_json_u64(s1, "resident_bytes");
        cr_assert_gt(harness_json_u64(s1, "faults"), 0, "no faults: %s", s1);
        cr_assert_gt(harness_json_u64(s1, "written_back_bytes"), 64 * MIB, "no paging: %s", s1);
        cr_assert_gt(cached, limit - own,
                     "the cache held only %.1f MiB before the growth, no more than limit - own "
                     "usage (%llu MiB): it never had to shrink, the test proves nothing (%s)",
                     cached / 1048576.0, (unsigned long long)(LIMIT_MIB - OWN_MIB), s1);

        /* 2: the process's own memory grows behind the shim's back */
        harness_child_say(&e.prog, "go");
        expect_step("grown", 60000);
        stats(s2, sizeof(s2));
        grown = harness_json_u64(s2, "resident_bytes");

        /* 3: the external data comes back through the smaller cache */
        harness_child_say(&e.prog, "go");
        expect_step("verified", 120000);
        stats(s3, sizeof(s3));
        after = harness_json_u64(s3, "resident_bytes");
        harness_child_say(&e.prog, "go");
        expect_step("grow-ok", 10000);
        st = harness_child_wait(&e.prog, 10000);

        cr_log_info("resident external: %.1f MiB cached, %.1f MiB after the growth, %.1f MiB "
                    "after the check; peak usage %.1f MiB",
                    cached / 1048576.0, grown / 1048576.0, after / 1048576.0, peak_mib());
        cr_log_info("memd after the check: %s", s3);
        cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0, "the container was OOM-killed");
        cr_expect_leq(grown, limit - own,
                      "the cache did not shrink for the own usage: %.1f MiB resident with "
                      "%d MiB own in a %d MiB limit",
                      grown / 1048576.0, OWN_MIB, LIMIT_MIB);
        cr_expect_leq(after, limit - own,
                      "the cache grew back over limit - own usage: %.1f MiB resident",
                      after / 1048576.0);
        cr_expect_lt(grown, cached, "the cache did not shrink");
        cr_expect_gt(harness_json_u64(s3, "fetched_bytes"), harness_json_u64(s2, "fetched_bytes"),
                     "the check fetched nothing: the data never left the cache");
        cr_expect_eq(harness_json_u64(s3, "store_errors"), 0, "store errors: %s", s3);
}
