/* test_appliance_restart.c: memd and its containers across an appliance's
 * death (issue 9, "Nothing lost"). A tcp appliance on a pool file killed
 * with SIGKILL while a container pages and restarted on the same file: the
 * container stalls, then finishes with every word verified. An appliance
 * gone for good: the process faulting on it gets SIGBUS within memd's
 * --appliance-timeout (never a zero page), a second container on another
 * appliance finishes verified, and memd's control plane answers within a
 * second while the first appliance is stopped. The embedded appliance
 * outlives memd: a restarted memd finds it again. A fork whose snapshot
 * waits for a stopped appliance waits off memd's event loop: the control
 * plane and another container run on, and the fork completes once the
 * appliance is back. Root, /dev/userfaultfd, a
 * memory cgroup controller (v1 or v2). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WORK_MIB "128" /* each container's working set: 4 x its local limit */

static struct {
        struct harness_proc app[2];
        struct harness_memd md;
        struct harness_cg cg[3]; /* cg[2]: attached and detached meanwhile */
        struct harness_child prog[2];
        char pool[2][128]; /* app[i]'s pool file */
        bool stopped;      /* app[0] is SIGSTOPped */
} e;

static const char *const ids[2] = {"ar-a", "ar-b"};

static void setup(void)
{
        char name[64];

        memset(&e, 0, sizeof(e));
        for (int i = 0; i < 2; i++)
                e.prog[i].pid = e.app[i].pid = -1;
        if (!harness_is_root() || access("/dev/userfaultfd", F_OK) != 0)
                return; /* the test skips */
        for (int i = 0; i < 3; i++) {
                snprintf(name, sizeof(name), "ar-test-%d-%c", (int)getpid(), 'a' + i);
                if (!harness_cg_create(&e.cg[i], name))
                        return; /* no memory controller: the test skips */
        }
}

static void teardown(void)
{
        for (int i = 0; i < 2; i++)
                harness_child_kill(&e.prog[i]);
        if (e.stopped && e.app[0].pid > 0)
                kill(e.app[0].pid, SIGCONT); /* a stopped process ignores SIGTERM */
        if (e.md.pid > 0 || e.md.dir[0])
                harness_memd_stop(&e.md);
        for (int i = 0; i < 2; i++)
                if (e.app[i].dir[0])
                        harness_cleanup(&e.app[i]);
        for (int i = 0; i < 3; i++)
                harness_cg_remove(&e.cg[i]);
}

static void need_everything(void)
{
        harness_require_uffd();
        if (!e.cg[0].version || !e.cg[1].version)
                harness_skip(teardown, "needs a memory cgroup controller (v1 or v2)");
}

/* Appliance I on a pool file in its temp dir (a restart reuses both). */
static void appliance_start(int i)
{
        if (!e.app[i].dir[0]) {
                char dir[sizeof(e.app[i].dir)];
                harness_init(&e.app[i]);
                memcpy(dir, e.app[i].dir, sizeof(dir));
                snprintf(e.pool[i], sizeof(e.pool[i]), "%s/pool", dir);
        }
        harness_appliance_start(
            &e.app[i], (const char *const[]){"--pool-size", "1G", "--pool-file", e.pool[i], NULL});
}

static void attach(int i, int app)
{
        char out[1024];

        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"attach", ids[i], "--cgroup", e.cg[i].path,
                                                    "--local-limit", "32M", "--external", "512M",
                                                    "--appliance", e.app[app].tcp_uri, NULL}),
                  "attach %s: %s (see %s)", ids[i], out, e.md.log);
}

static void run_prog(int i, const char *const *args)
{
        const char *argv[8] = {getenv("XMEM_PAGING_PROG")};
        int n = 1;

        cr_assert_not_null(argv[0], "XMEM_PAGING_PROG is not set (run through meson test)");
        for (; *args && n < 7; args++)
                argv[n++] = *args;
        harness_memd_spawn(&e.md, ids[i], &e.prog[i], argv, &e.cg[i], false);
}

/* Does memd's log hold WHAT? */
static bool memd_logged(const char *what)
{
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "grep -q '%s' '%s'", what, e.md.log);
        return system(cmd) == 0;
}

Test(appliance_restart, sigkill_and_restart_on_pool_file, .init = setup, .fini = teardown,
     .timeout = 420)
{
        char last[256];
        int st;

        need_everything();
        appliance_start(0);
        harness_memd_start(&e.md, "/tmp/ar-restart.XXXXXX",
                           (const char *const[]){"--appliance", e.app[0].tcp_uri,
                                                 "--appliance-timeout", "300s", NULL});
        attach(0, 0);
        run_prog(0, (const char *const[]){"verify", WORK_MIB, "6", NULL});
        cr_assert(harness_child_follow(&e.prog[0], "pass 1", 120000, last, sizeof(last)) > 0,
                  "no first pass within 120 s (last line '%s', see %s)", last, e.md.log);

        /* the appliance dies mid-run: pages in flight, dirty pages waiting */
        harness_kill(&e.app[0]);
        cr_expect(harness_child_follow(&e.prog[0], "paging-ok", 2000, last, sizeof(last)) < 0 &&
                      harness_child_alive(&e.prog[0]),
                  "the workload finished or died without its appliance (last line '%s')", last);
        appliance_start(0); /* same port, same pool file */

        cr_assert(harness_child_follow(&e.prog[0], "paging-ok", 300000, last, sizeof(last)) > 0,
                  "the workload did not finish after the restart (last line '%s', see %s)", last,
                  e.md.log);
        st = harness_child_wait(&e.prog[0], 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "paging_prog status %#x", st);
        cr_expect(memd_logged("store failed"), "memd did not log the outage (see %s)", e.md.log);
        cr_expect(memd_logged("store answers again"), "memd did not log the recovery (see %s)",
                  e.md.log);
}

/* xmemctl ARGS, timed: true when it succeeded within a second. */
static bool ctl_fast(const char *const *args, long *ret_ms)
{
        char out[4096];
        long t0 = harness_now_ms();
        bool ok = harness_ctl(&e.md, out, sizeof(out), args);

        *ret_ms = harness_now_ms() - t0;
        if (!ok)
                cr_log_error("xmemctl %s: %s", args[0], out);
        return ok && *ret_ms < 1000;
}

/* xmemctl list, timed: true when it answered within a second. */
static bool list_fast(long *ret_ms)
{
        return ctl_fast((const char *const[]){"list", NULL}, ret_ms);
}

/* A on appliance 0, B on appliance 1, memd with --appliance-timeout TIMEOUT. */
static void two_containers(const char *dir_template, const char *timeout)
{
        need_everything();
        appliance_start(0);
        appliance_start(1);
        harness_memd_start(&e.md, dir_template,
                           (const char *const[]){"--appliance", e.app[0].tcp_uri, "--appliance",
                                                 e.app[1].tcp_uri, "--appliance-timeout", timeout,
                                                 NULL});
        attach(0, 0);
        attach(1, 1);
}

Test(appliance_restart, gone_for_good_sigbus_others_unaffected, .init = setup, .fini = teardown,
     .timeout = 420)
{
        char last[256];
        long ms;
        int st;

        two_containers("/tmp/ar-gone.XXXXXX", "3s");
        run_prog(0, (const char *const[]){"sigbus", WORK_MIB, NULL});
        cr_assert(harness_child_follow(&e.prog[0], "written", 120000, last, sizeof(last)) > 0,
                  "A did not write within 120 s (last line '%s', see %s)", last, e.md.log);

        /* A's appliance stops answering while A reads its data back */
        e.stopped = true; /* before: a failed stop still gets its SIGCONT */
        harness_sigstop(&e.app[0]);
        harness_child_say(&e.prog[0], "go");
        run_prog(1, (const char *const[]){"verify", WORK_MIB, "2", NULL});
        sleep(1);
        for (int i = 0; i < 5; i++, usleep(200000))
                cr_expect(list_fast(&ms), "xmemctl list took %ld ms with an appliance stopped", ms);

        /* ... and never comes back */
        harness_kill(&e.app[0]);
        e.stopped = false;
        cr_assert(harness_child_follow(&e.prog[0], "sigbus", 60000, last, sizeof(last)) > 0,
                  "A got no SIGBUS within 60 s of its appliance's death (last line '%s', see %s)",
                  last, e.md.log);
        st = harness_child_wait(&e.prog[0], 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 5, "A's status %#x, want exit 5", st);
        cr_expect(memd_logged("SIGBUS"), "memd did not log why (see %s)", e.md.log);

        cr_assert(harness_child_follow(&e.prog[1], "paging-ok", 180000, last, sizeof(last)) > 0,
                  "B did not finish (last line '%s', see %s)", last, e.md.log);
        st = harness_child_wait(&e.prog[1], 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "B's status %#x", st);
        cr_expect(list_fast(&ms), "xmemctl list took %ld ms after the appliance died", ms);
}


/* Running, not a zombie (an orphan waits for whoever adopted it to reap it). */
static bool alive(pid_t pid)
{
        char path[64], buf[256], *paren;
        FILE *f;
        bool ok = false;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        f = fopen(path, "r");
        if (f) {
                ok = fgets(buf, sizeof(buf), f) && (paren = strrchr(buf, ')')) && paren[1] == ' ' &&
                     paren[2] != 'Z' && paren[2] != 'X';
                fclose(f);
        }
        return ok;
}

static void sigkill_memd(void)
{
        kill(e.md.pid, SIGKILL);
        waitpid(e.md.pid, NULL, 0);
        e.md.pid = -1;
}

Test(appliance_restart, embedded_outlives_memd, .init = setup, .fini = teardown, .timeout = 120)
{
        const char *const args[] = {"--embedded-appliance", "64M", NULL};
        char pool[192];
        struct stat st;
        pid_t pid;

        if (!harness_is_root())
                harness_skip(teardown, "needs root");
        harness_memd_start(&e.md, "/tmp/ar-embedded.XXXXXX", args);
        pid = harness_memd_embedded_pid(&e.md);
        cr_assert_gt(pid, 1, "no pid file for the embedded appliance (see %s)", e.md.log);
        snprintf(pool, sizeof(pool), "%s/state/embedded-pool", e.md.dir);
        cr_assert_eq(stat(pool, &st), 0, "no pool file %s", pool);

        /* SIGTERM and SIGKILL of memd leave it running; a new memd takes it */
        kill(e.md.pid, SIGTERM);
        waitpid(e.md.pid, NULL, 0);
        e.md.pid = -1;
        cr_assert(alive(pid), "memd's SIGTERM stopped the embedded appliance");
        harness_memd_start(&e.md, NULL, args);
        cr_assert_eq(harness_memd_embedded_pid(&e.md), pid, "a restarted memd started another appliance");
        sigkill_memd();
        cr_assert(alive(pid), "memd's death killed the embedded appliance");

        /* dead appliance: the next memd starts one on the same pool file */
        kill(pid, SIGKILL);
        for (int i = 0; i < 100 && alive(pid); i++)
                usleep(10000);
        harness_memd_start(&e.md, NULL, args);
        cr_assert(harness_memd_embedded_pid(&e.md) > 1 && harness_memd_embedded_pid(&e.md) != pid && alive(harness_memd_embedded_pid(&e.md)),
                  "no new embedded appliance after the old one died (see %s)", e.md.log);

        /* --stop-embedded stops it, and says so */
        pid = harness_memd_embedded_pid(&e.md);
        harness_memd_stop(&e.md); /* SIGTERM, then --stop-embedded */
        for (int i = 0; i < 100 && alive(pid); i++)
                usleep(10000);
        cr_assert(!alive(pid), "--stop-embedded left the appliance running");
}



Test(appliance_restart, teardown_on_stopped_appliance_never_blocks, .init = setup,
     .fini = teardown, .timeout = 420)
{
        char last[256];
        long ms;
        int st;

        two_containers("/tmp/nf-teardown.XXXXXX", "300s");
        run_prog(0, (const char *const[]){"verify", WORK_MIB, "50", NULL});
        cr_assert(harness_child_follow(&e.prog[0], "pass 1", 120000, last, sizeof(last)) > 0,
                  "A did not page within 120 s (last line '%s', see %s)", last, e.md.log);
        cr_assert_geq(harness_appliance_regions(e.app[0].tcp_uri), 1, "A's arena has no region on its appliance");

        /* A's appliance stops answering while A pages: fetches in flight */
        e.stopped = true; /* before: a failed stop still gets its SIGCONT */
        harness_sigstop(&e.app[0]);
        run_prog(1, (const char *const[]){"verify", WORK_MIB, "3", NULL});
        sleep(1);
        /* A dies: its arena and regions are torn down (waiting for the
         * appliance), never on memd's event loop */
        harness_child_kill(&e.prog[0]);
        for (int i = 0; i < 5; i++, usleep(200000)) {
                cr_expect(list_fast(&ms), "xmemctl list took %ld ms while A's process is torn "
                                          "down on a stopped appliance", ms);
                cr_expect(ctl_fast((const char *const[]){"stats", ids[1], NULL}, &ms),
                          "xmemctl stats %s took %ld ms", ids[1], ms);
        }
        /* ... and its container is detached; a new one attaches meanwhile */
        cr_expect(ctl_fast((const char *const[]){"detach", ids[0], NULL}, &ms),
                  "xmemctl detach %s took %ld ms", ids[0], ms);
        for (int i = 0; i < 3; i++, usleep(200000))
                cr_expect(list_fast(&ms), "xmemctl list took %ld ms after the detach", ms);
        cr_expect(ctl_fast((const char *const[]){"attach", ids[0], "--cgroup", e.cg[0].path,
                                                 "--local-limit", "32M", "--external", "64M",
                                                 "--appliance", e.app[1].tcp_uri, NULL},
                           &ms),
                  "attaching %s again took %ld ms", ids[0], ms);
        cr_expect(ctl_fast((const char *const[]){"detach", ids[0], NULL}, &ms),
                  "detaching %s again took %ld ms", ids[0], ms);

        /* B, on the other appliance, ran on */
        cr_assert(harness_child_follow(&e.prog[1], "paging-ok", 180000, last, sizeof(last)) > 0,
                  "B did not finish (last line '%s', see %s)", last, e.md.log);
        st = harness_child_wait(&e.prog[1], 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "B's status %#x", st);

        /* the appliance comes back: A's regions are freed, nothing leaks */
        cr_assert_eq(kill(e.app[0].pid, SIGCONT), 0);
        e.stopped = false;
        for (int i = 0; i < 600 && harness_appliance_regions(e.app[0].tcp_uri) != 0; i++)
                usleep(100000);
        cr_assert_eq(harness_appliance_regions(e.app[0].tcp_uri), 0, "A's regions are left on its appliance (see %s)",
                     e.md.log);
        cr_expect(list_fast(&ms), "xmemctl list took %ld ms at the end", ms);
}

/* A (on appliance 0, stopped now) forks with dirty external memory: its
 * fork waits for the snapshot's write-back (checked for a second). Returns
 * when it was told to fork. */
static long fork_waiting(const char *dir_template)
{
        const char *prog = getenv("XMEM_FORK_PROG");
        char last[256];
        long t_go;

        cr_assert_not_null(prog, "XMEM_FORK_PROG is not set (run through meson test)");
        two_containers(dir_template, "300s");
        /* 96 MiB at a 32 MiB limit: on the appliance, and dirty resident */
        harness_memd_spawn(&e.md, ids[0], &e.prog[0], (const char *const[]){prog, "96", "wait", NULL},
                           &e.cg[0], true);
        cr_assert(harness_child_follow(&e.prog[0], "ready", 120000, last, sizeof(last)) > 0,
                  "A did not fill its heap within 120 s (last line '%s', see %s)", last, e.md.log);
        e.stopped = true; /* before: a failed stop still gets its SIGCONT */
        harness_sigstop(&e.app[0]);
        t_go = harness_now_ms();
        harness_child_say(&e.prog[0], "go");
        cr_assert(harness_child_follow(&e.prog[0], "fork ", 1000, last, sizeof(last)) < 0,
                  "A forked with its appliance stopped: its snapshot wrote nothing back?");
        return t_go;
}

/* A's process forks while its appliance is stopped: the snapshot's write-back
 * waits (off memd's event loop, on A's worker), and meanwhile memd answers,
 * another container is attached and detached, and B pages on the other
 * appliance and finishes verified. Within the shim's and the transport's
 * 10 s: the appliance comes back, the fork completes and parent and child
 * each verify their own version of the heap. */
Test(appliance_restart, fork_on_stopped_appliance_never_blocks, .init = setup, .fini = teardown,
     .timeout = 420)
{
        char last[256];
        double fork_ms = 0;
        long ms, t_go;
        int st;

        if (!e.cg[2].version)
                harness_skip(teardown, "needs a memory cgroup controller (v1 or v2)");
        t_go = fork_waiting("/tmp/af-fork.XXXXXX");
        run_prog(1, (const char *const[]){"verify", "48", "1", NULL});
        for (int i = 0; i < 3; i++) {
                cr_expect(list_fast(&ms), "xmemctl list took %ld ms while A's fork waits", ms);
                cr_expect(ctl_fast((const char *const[]){"stats", ids[1], NULL}, &ms),
                          "xmemctl stats %s took %ld ms while A's fork waits", ids[1], ms);
        }
        cr_expect(ctl_fast((const char *const[]){"attach", "ar-c", "--cgroup", e.cg[2].path,
                                                 "--local-limit", "32M", "--external", "64M",
                                                 "--appliance", e.app[1].tcp_uri, NULL},
                           &ms),
                  "attaching ar-c took %ld ms while A's fork waits", ms);
        cr_expect(ctl_fast((const char *const[]){"detach", "ar-c", NULL}, &ms),
                  "detaching ar-c took %ld ms while A's fork waits", ms);
        /* B's faults are served meanwhile: it finishes verified before the
         * shim's 10 s for A's fork are up */
        cr_expect(harness_child_follow(&e.prog[1], "paging-ok", 7500 - (int)(harness_now_ms() - t_go),
                                       last, sizeof(last)) > 0,
                  "B did not finish while A's fork waited (last line '%s', see %s)", last,
                  e.md.log);
        cr_expect(harness_child_alive(&e.prog[0]), "A died while its fork waited");

        /* the appliance is back: the snapshot is written, the fork returns */
        cr_assert_eq(kill(e.app[0].pid, SIGCONT), 0);
        e.stopped = false;
        cr_assert(harness_child_follow(&e.prog[0], "fork ", 30000, last, sizeof(last)) > 0,
                  "A's fork did not return after SIGCONT (last line '%s', see %s)", last, e.md.log);
        cr_expect(sscanf(last, "fork %lf ms", &fork_ms) == 1 && fork_ms >= 1000,
                  "A's fork took %.1f ms: it did not wait for the stopped appliance", fork_ms);
        cr_log_info("A's fork took %.1f ms (the appliance stopped for %ld ms)", fork_ms,
                    harness_now_ms() - t_go);
        cr_assert(harness_child_follow(&e.prog[0], "child-exited", 120000, last, sizeof(last)) > 0,
                  "A's child did not verify its snapshot (last line '%s', see %s)", last, e.md.log);
        harness_child_say(&e.prog[0], "x");
        cr_assert(harness_child_follow(&e.prog[0], "OK", 60000, last, sizeof(last)) > 0,
                  "A's parent did not verify its heap (last line '%s', see %s)", last, e.md.log);
        st = harness_child_wait(&e.prog[0], 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "A's status %#x", st);
        st = harness_child_wait(&e.prog[1], 60000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "B's status %#x", st);
        cr_expect(list_fast(&ms), "xmemctl list took %ld ms at the end", ms);
        /* a clean stop: no sanitizer report, no leak (the ASan build) */
        st = harness_memd_stop(&e.md);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "memd's stop status %#x", st);
}

/* The same fork waits, and then its process is killed and its container
 * detached under it: the job is cancelled on A's worker, memd answers on,
 * and once the appliance is back nothing is left on it (the clone and the
 * arena freed) and memd stops clean (the ASan build: no use after free). */
Test(appliance_restart, fork_cancelled_by_exit_and_detach, .init = setup, .fini = teardown,
     .timeout = 420)
{
        long ms;
        int st;

        (void)fork_waiting("/tmp/af-cancel.XXXXXX");
        harness_child_kill(&e.prog[0]); /* its process exits while its job runs */
        usleep(200000);
        cr_expect(list_fast(&ms), "xmemctl list took %ld ms after A's exit", ms);
        cr_expect(ctl_fast((const char *const[]){"detach", ids[0], NULL}, &ms),
                  "xmemctl detach %s took %ld ms while its fork job runs", ids[0], ms);
        cr_expect(list_fast(&ms), "xmemctl list took %ld ms after the detach", ms);

        cr_assert_eq(kill(e.app[0].pid, SIGCONT), 0);
        e.stopped = false;
        for (int i = 0; i < 600 && harness_appliance_regions(e.app[0].tcp_uri) != 0; i++)
                usleep(100000);
        cr_assert_eq(harness_appliance_regions(e.app[0].tcp_uri), 0,
                     "A's regions (arena or fork clone) are left on its appliance (see %s)",
                     e.md.log);
        st = harness_memd_stop(&e.md);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "memd's stop status %#x", st);
}
