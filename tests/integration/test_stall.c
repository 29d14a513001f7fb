/* test_stall.c: one container stalled on a dead appliance does not stop
 * another container's faults (issue 7, "Faults never wait behind other
 * work"). Two tcp appliances on loopback, one memd with both, container A on
 * appliance 1 and container B on appliance 2, each a 32 MiB memory cgroup
 * paging a 128 MiB verified workload (paging_prog verify) under the real
 * shim. Appliance 1 is stopped (SIGSTOP) while A pages: B must still run its
 * whole workload, verified, while A waits; after SIGCONT A finishes too.
 * Root, /dev/userfaultfd, a memory cgroup controller (v1 or v2). */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1ULL << 20)
#define WORK_MIB "128"    /* each container's working set: 4 x its local limit */
#define A_PASSES "4"      /* A must still be paging when appliance 1 stops */
#define B_PASSES "2"      /* B: write, 2 check-and-rewrite passes, a last check */
#define B_BOUND_MS 60000  /* B alone takes a few seconds; generous for a busy VM */
#define A_BOUND_MS 180000 /* A's rest after SIGCONT (a transport may reconnect) */

static struct {
        struct harness_proc app[2];
        struct harness_memd md;
        struct harness_cg cg[2];
        struct harness_child prog[2]; /* A, B */
        bool stopped;                 /* appliance 1 is SIGSTOPped */
} e;

static const char *const ids[2] = {"stall-a", "stall-b"};

static void setup(void)
{
        char name[64];

        memset(&e, 0, sizeof(e));
        e.prog[0].pid = e.prog[1].pid = -1;
        e.app[0].pid = e.app[1].pid = -1;
        if (!harness_is_root() || access("/dev/userfaultfd", F_OK) != 0)
                return; /* the test skips */
        for (int i = 0; i < 2; i++) {
                snprintf(name, sizeof(name), "xmem-test-stall-%d-%c", (int)getpid(), 'a' + i);
                if (!harness_cg_create(&e.cg[i], name))
                        return; /* no memory controller: the test skips */
        }
        for (int i = 0; i < 2; i++)
                harness_appliance_setup(&e.app[i], "1G");
        harness_memd_start(&e.md, "/tmp/xmem-test-stall.XXXXXX",
                           (const char *const[]){"--appliance", e.app[0].tcp_uri, "--appliance",
                                                 e.app[1].tcp_uri,
                                                 /* A waits, it never gives up (SIGBUS) */
                                                 "--appliance-timeout", "600s", NULL});
}

static void teardown(void)
{
        for (int i = 0; i < 2; i++)
                harness_child_kill(&e.prog[i]);
        if (e.stopped)
                kill(e.app[0].pid, SIGCONT); /* a stopped process ignores SIGTERM */
        if (e.md.pid > 0)
                harness_memd_stop(&e.md);
        for (int i = 0; i < 2; i++) {
                if (e.app[i].dir[0])
                        harness_cleanup(&e.app[i]);
                harness_cg_remove(&e.cg[i]);
        }
}

static void need_everything(void)
{
        harness_require_uffd();
        if (!e.cg[0].version || !e.cg[1].version)
                cr_skip_test("needs a memory cgroup controller (v1 or v2)");
}

static void attach(int i)
{
        char out[1024];

        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"attach", ids[i], "--cgroup", e.cg[i].path,
                                                    "--local-limit", "32M", "--external", "512M",
                                                    "--appliance", e.app[i].tcp_uri, NULL}),
                  "attach %s: %s (see %s)", ids[i], out, e.md.log);
}

/* memd's stats of container I (JSON) into OUT; false (and a failed
 * expectation naming WHEN) if memd did not answer within 20 s. */
static bool stats(int i, char *out, size_t len, const char *when)
{
        bool ok =
            harness_ctl(&e.md, out, len, (const char *const[]){"--json", "stats", ids[i], NULL});

        cr_expect(ok, "%s: memd did not answer stats for %s within 20 s: '%s' (see %s)", when,
                  ids[i], out, e.md.log);
        return ok;
}

/* FIELD of container I's stats; UINT64_MAX when memd did not answer. */
static uint64_t stat_of(int i, const char *field, const char *when)
{
        static char s[16384];

        return stats(i, s, sizeof(s), when) ? harness_json_u64(s, field) : UINT64_MAX;
}

static void run_prog(int i, const char *passes)
{
        const char *prog = getenv("XMEM_PAGING_PROG");

        cr_assert_not_null(prog, "XMEM_PAGING_PROG is not set (run through meson test)");
        harness_memd_spawn(&e.md, ids[i], &e.prog[i],
                           (const char *const[]){prog, "verify", WORK_MIB, passes, NULL},
                           &e.cg[i], false);
}

/* A's lines that came without waiting: none may say it finished. */
static void expect_a_unfinished(const char *when)
{
        char last[256];

        harness_child_follow(&e.prog[0], "paging-ok", 100, last, sizeof(last));
        cr_expect(!strstr(last, "paging-ok") && harness_child_alive(&e.prog[0]),
                  "%s: A finished or died while its appliance was stopped (last line '%s', "
                  "status %#x): its faults were not waiting on appliance 1",
                  when, last, e.prog[0].status);
}

Test(stall, stopped_appliance_stalls_only_its_own_container, .init = setup, .fini = teardown,
     .timeout = 420)
{
        static char sa[16384], sb[16384];
        char last[256];
        uint64_t a_fetched, a_wb, f;
        bool b_stats;
        long t0, b_ms;
        int st, lines;

        need_everything();
        attach(0);
        attach(1);

        /* A pages: 128 MiB written through a 32 MiB cgroup */
        run_prog(0, A_PASSES);
        cr_assert_geq(harness_child_follow(&e.prog[0], "written", 60000, last, sizeof(last)), 1,
                      "A did not write its 128 MiB within 60 s (last line '%s', see %s)", last,
                      e.md.log);
        cr_assert(stats(0, sa, sizeof(sa), "A paging"));
        a_wb = harness_json_u64(sa, "written_back_bytes");
        cr_assert_gt(harness_json_u64(sa, "faults"), 0, "A took no faults: %s", sa);
        cr_assert_gt(a_wb, 64 * MIB, "A is not paging out: %s", sa);

        /* appliance 1 stops answering: A's next fetches wait on it */
        e.stopped = true; /* before: a failed stop still gets its SIGCONT */
        harness_sigstop(&e.app[0]);
        sleep(1); /* replies already on their way arrive */
        a_fetched = stat_of(0, "fetched_bytes", "A stopped");
        sleep(2);
        cr_assert(a_fetched != UINT64_MAX);
        cr_assert_eq(stat_of(0, "fetched_bytes", "A stopped"), a_fetched,
                     "A kept fetching with appliance 1 stopped: is attach's appliance honoured?");
        expect_a_unfinished("after the stop");

        /* B, on appliance 2, runs its whole workload meanwhile */
        t0 = harness_now_ms();
        run_prog(1, B_PASSES);
        lines = harness_child_follow(&e.prog[1], "paging-ok", B_BOUND_MS, last, sizeof(last));
        b_ms = harness_now_ms() - t0;
        b_stats = stats(1, sb, sizeof(sb), "B ran");
        if (lines < 0 && !last[0])
                cr_expect_fail("container B made no progress while appliance 1 was stopped: not "
                               "one step of its workload in %d s (B's memd stats: %s; memd log %s)",
                               B_BOUND_MS / 1000, sb, e.md.log);
        else if (lines < 0)
                cr_expect_fail("container B did not finish within %d s while appliance 1 was "
                               "stopped: last step '%s' (B's memd stats: %s)",
                               B_BOUND_MS / 1000, last, sb);
        else {
                st = harness_child_wait(&e.prog[1], 10000);
                cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                          "B said '%s' but exited with status %#x", last, st);
                cr_log_info("B finished in %.1f s with appliance 1 stopped: %s", b_ms / 1000.0,
                            last);
        }
        if (lines >= 0 && b_stats) { /* B's faults went through memd */
                cr_expect_gt(harness_json_u64(sb, "faults"), 0, "B took no faults: %s", sb);
                cr_expect_gt(harness_json_u64(sb, "fetched_bytes"), 64 * MIB,
                             "B fetched nothing: %s", sb);
                cr_expect_gt(harness_json_u64(sb, "written_back_bytes"), 64 * MIB,
                             "B wrote nothing back: %s", sb);
        }
        harness_child_kill(&e.prog[1]);

        /* A waited all along */
        expect_a_unfinished("after B");
        f = stat_of(0, "fetched_bytes", "after B");
        cr_expect(f == a_fetched || f == UINT64_MAX, "A fetched while appliance 1 was stopped");

        /* appliance 1 is back: A finishes, verified */
        cr_assert_eq(kill(e.app[0].pid, SIGCONT), 0);
        e.stopped = false;
        lines = harness_child_follow(&e.prog[0], "paging-ok", A_BOUND_MS, last, sizeof(last));
        if (!stats(0, sa, sizeof(sa), "A finished"))
                snprintf(sa, sizeof(sa), "{\"fetched_bytes\":0}");
        cr_expect_geq(lines, 1,
                      "A did not finish within %d s after appliance 1 came back: last line "
                      "'%s' (A's memd stats: %s; memd log %s)",
                      A_BOUND_MS / 1000, last, sa, e.md.log);
        st = harness_child_wait(&e.prog[0], 10000);
        cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "A exited with status %#x, last line '%s'", st, last);
        cr_expect_gt(harness_json_u64(sa, "fetched_bytes"), a_fetched, "A fetched nothing after");
        cr_log_info("A after SIGCONT: %s; A's memd stats: %s", last, sa);
}
