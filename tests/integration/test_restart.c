/* test_restart.c: issue 9, "memd restart and crash lose nothing". A real
 * appliance, a real memd with its state directory, and a process paging a
 * verifying workload through the real shim in a 64 MiB memory cgroup (v1 or v2):
 * memd is SIGKILLed (or SIGTERMed) mid-run and a new memd is started on the
 * same state directory; the shim hands its arena over again (shim.resume)
 * and the workload finishes with every word verified. A corrupt state file
 * gets one error line, is moved aside, and the other containers are served. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "memd-client.h"

static struct {
        struct harness_proc app;
        struct harness_memd md;
        struct harness_cg cg;
        struct harness_child prog, prog2;
        const char *memd_args[4];
} e;

static void setup(void)
{
        if (!harness_is_root() || !harness_cg_version() || access("/dev/userfaultfd", F_OK) != 0 ||
            !getenv("XMEM_SHIM"))
                return; /* the test skips */
        char name[64];

        e.prog.pid = e.prog2.pid = -1;
        harness_appliance_setup(&e.app, "1G");
        snprintf(name, sizeof(name), "sd-restart-%d", (int)getpid());
        cr_assert(harness_cg_create(&e.cg, name));
        e.memd_args[0] = "--appliance";
        e.memd_args[1] = e.app.tcp_uri;
        harness_memd_start(&e.md, "/tmp/sd-restart.XXXXXX", e.memd_args);
}

static void teardown(void)
{
        harness_child_kill(&e.prog);
        harness_child_kill(&e.prog2);
        if (e.cg.version)
                harness_cg_kill_all(e.cg.path);
        if (e.md.dir[0])
                harness_memd_stop(&e.md);
        harness_cg_remove(&e.cg);
        if (e.app.pid > 0 || e.app.dir[0])
                harness_cleanup(&e.app);
        memset(&e, 0, sizeof(e));
}

static void need_setup(void)
{
        if (!e.md.dir[0])
                harness_skip(teardown, "needs root, a memory cgroup, /dev/userfaultfd, the shim");
}

static void attach(const char *id, const char *cg)
{
        char out[1024];

        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"attach", id, "--cgroup", cg, "--local-limit",
                                                    "64M", "--external", "1G", NULL}),
                  "attach %s: %s (see %s)", id, out, e.md.log);
}

/* paging_prog verify MIB PASSES under the shim on container ID's socket. */
static void start_prog(struct harness_child *c, const char *id, const char *mib, const char *passes)
{
        harness_memd_spawn(
            &e.md, id, c,
            (const char *const[]){getenv("XMEM_PAGING_PROG"), "verify", mib, passes, NULL}, &e.cg,
            true);
}

/* Read lines until one starts with WANT (within TIMEOUT_MS in all). */
static void expect_line(struct harness_child *c, const char *want, int timeout_ms)
{
        char line[512];

        for (;;) {
                int r = harness_child_line(c, line, sizeof(line), timeout_ms);
                cr_assert_eq(r, 1, "waiting for '%s': %s (last: '%s'; memd log %s)", want,
                             r == 0 ? "EOF" : "timed out", line, e.md.log);
                if (strncmp(line, want, strlen(want)) == 0)
                        return;
                cr_assert(!strstr(line, "block"), "a wrong word: %s", line);
        }
}

static bool log_has(const char *what)
{
        char cmd[512];

        snprintf(cmd, sizeof(cmd), "grep -q -- '%s' '%s'", what, e.md.log);
        return system(cmd) == 0;
}

/* The workload runs across a memd stop (signal SIG) and restart. */
static void across_restart(int sig)
{
        char stats[8192];
        int st;

        need_setup();
        attach("sd-r", e.cg.path);
        /* 160 MiB through a 64 MiB limit: every pass pages it all out and in */
        start_prog(&e.prog, "sd-r", "160", "12");
        expect_line(&e.prog, "pass 2 ok", 120000);
        harness_memd_signal(&e.md, sig);
        /* memd away: the process waits on its faults, it is not killed */
        usleep(500000);
        cr_assert(harness_child_alive(&e.prog), "the workload died with memd");
        harness_memd_restart(&e.md, e.memd_args);
        expect_line(&e.prog, "paging-ok", 180000);
        st = harness_child_wait(&e.prog, 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x (memd log %s)", st, e.md.log);
        cr_assert(log_has("re-adopted from the state directory"), "see %s", e.md.log);
        cr_assert(log_has("resumed ("), "the shim did not resume, see %s", e.md.log);
        cr_assert(harness_ctl(&e.md, stats, sizeof(stats),
                              (const char *const[]){"--json", "stats", "sd-r", NULL}),
                  "stats: %s", stats);
        cr_expect_gt(harness_json_u64(stats, "fetched_bytes"), 0, "the new memd served nothing");
        cr_expect_eq(harness_json_u64(stats, "store_errors"), 0);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0);
}

Test(restart, memd_sigkill_mid_paging, .init = setup, .fini = teardown, .timeout = 360)
{
        across_restart(SIGKILL);
}

/* A clean stop writes back, frees nothing: the regions are still there for
 * the next memd (else re-opening them fails and the process is not resumed). */
Test(restart, memd_sigterm_keeps_regions, .init = setup, .fini = teardown, .timeout = 360)
{
        across_restart(SIGTERM);
        cr_expect(log_has("signal 15: stopping"), "see %s", e.md.log);
        cr_expect(!log_has("its regions are left"), "see %s", e.md.log);
}

Test(restart, corrupt_state_file_moved_aside, .init = setup, .fini = teardown, .timeout = 240)
{
        char path[300], aside[300], out[4096];
        struct stat st;
        int fd, status;

        need_setup();
        attach("sd-good", e.cg.path);
        harness_memd_signal(&e.md, SIGTERM);
        snprintf(path, sizeof(path), "%s/state/containers/sd-bad.json", e.md.dir);
        snprintf(aside, sizeof(aside), "%s.bad", path);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        cr_assert(fd >= 0);
        cr_assert(write(fd, "{\"xmem_state\":1,\"id\":\"sd-bad\",\"cgroup\":", 39) == 39);
        close(fd);
        harness_memd_restart(&e.md, e.memd_args);
        /* one line naming the file and what is wrong, the file moved aside */
        cr_expect(log_has("state file .*/sd-bad.json: .*; moved aside to sd-bad.json.bad"),
                  "see %s", e.md.log);
        cr_expect(stat(path, &st) < 0, "the bad file is still in place");
        cr_expect(stat(aside, &st) == 0, "the bad file was not moved aside");
        /* the other container is served */
        cr_assert(harness_ctl(&e.md, out, sizeof(out), (const char *const[]){"list", NULL}), "%s",
                  out);
        cr_expect(strstr(out, "sd-good"), "sd-good was not re-adopted: %s", out);
        cr_expect(!strstr(out, "sd-bad"), "%s", out);
        start_prog(&e.prog, "sd-good", "96", "2");
        expect_line(&e.prog, "paging-ok", 120000);
        status = harness_child_wait(&e.prog, 10000);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
}

/* paging_prog sigbus MIB: writes MIB and holds it until told "go". */
static void start_holder(struct harness_child *c, const char *id, const char *mib)
{
        harness_memd_spawn(&e.md, id, c,
                           (const char *const[]){getenv("XMEM_PAGING_PROG"), "sigbus", mib, NULL},
                           &e.cg, true);
        expect_line(c, "written", 120000);
}

static uint64_t stat_of(const char *id, const char *field)
{
        char stats[16384];

        cr_assert(harness_ctl(&e.md, stats, sizeof(stats),
                              (const char *const[]){"--json", "stats", id, NULL}),
                  "stats: %s", stats);
        return harness_json_u64(stats, field);
}

static void wait_logged(const char *what, int timeout_ms)
{
        for (int i = 0; i < timeout_ms / 100 && !log_has(what); i++)
                usleep(100000);
        cr_assert(log_has(what), "memd did not log '%s' (see %s)", what, e.md.log);
}

/* The container-wide accounting stays one across a restart: the resumed
 * shim hands its page back, and a new process charges the same page. */
Test(restart, accounting_page_survives_sigkill, .init = setup, .fini = teardown, .timeout = 300)
{
        uint64_t local0, ext0;

        need_setup();
        attach("sd-a", e.cg.path);
        start_holder(&e.prog, "sd-a", "96");
        local0 = stat_of("sd-a", "local_bytes");
        ext0 = stat_of("sd-a", "external_bytes");
        cr_assert_gt(ext0, 0, "96 MiB in a 64 MiB container charged nothing external");

        harness_memd_signal(&e.md, SIGKILL);
        harness_memd_restart(&e.md, e.memd_args);
        wait_logged("resumed (", 10000);
        cr_expect_eq(stat_of("sd-a", "external_bytes"), ext0,
                     "after the restart memd counts other external bytes (see %s)", e.md.log);
        cr_expect_eq(stat_of("sd-a", "local_bytes"), local0,
                     "after the restart memd counts other local bytes (see %s)", e.md.log);
        cr_expect(!log_has("the accounting page it sent"), "see %s", e.md.log);

        /* a new process charges the same page: the totals grow from there */
        start_holder(&e.prog2, "sd-a", "16");
        cr_expect_geq(stat_of("sd-a", "local_bytes") + stat_of("sd-a", "external_bytes"),
                      local0 + ext0 + (16ULL << 20),
                      "the new process's charges are not on top of the resumed one's");
        cr_expect_geq(stat_of("sd-a", "external_bytes"), ext0);
        for (int i = 0; i < 2; i++) {
                struct harness_child *c = i ? &e.prog2 : &e.prog;
                harness_child_say(c, "go");
                expect_line(c, "read-ok", 120000);
        }
}


static bool state_file_has(const char *id, const char *what)
{
        char cmd[512];

        snprintf(cmd, sizeof(cmd), "grep -q -- '%s' '%s/state/containers/%s.json'", what,
                 e.md.dir, id);
        return system(cmd) == 0;
}

/* A fork token handed out but never claimed when memd dies: its clone is in
 * the state file, and the next memd frees it (nothing left on the appliance). */
Test(restart, unclaimed_fork_clone_freed_after_crash, .init = setup, .fini = teardown,
     .timeout = 120)
{
        char out[1024], line[64];
        pid_t test = getpid();
        int pfd[2];

        need_setup();
        attach("sd-f", e.cg.path);
        cr_assert_eq(harness_appliance_regions(e.app.tcp_uri), 0);
        /* a process of the container says shim.hello and shim.fork itself,
         * then waits (it never resumes: its arena stays pending) */
        cr_assert_eq(pipe(pfd), 0);
        e.prog.pid = fork();
        cr_assert_geq(e.prog.pid, 0);
        if (e.prog.pid == 0) {
                struct xmem_error err = {};
                json_object *res = NULL;
                char sock[160];
                int fd = -1;

                harness_die_with(test);
                if (harness_cg_enter(&e.cg) < 0 ||
                    memd_connect(harness_memd_ctr_socket(&e.md, "sd-f", sock, sizeof(sock)), 10,
                                 &fd, &err) < 0 ||
                    memd_call(fd, "shim.hello", json_tokener_parse("{\"version\":2}"), &res,
                              &err) < 0 ||
                    memd_call(fd, "shim.fork", NULL, &res, &err) < 0)
                        dprintf(pfd[1], "failed: %s\n", xmem_error_str(&err));
                else
                        dprintf(pfd[1], "forked\n");
                for (;;)
                        pause();
        }
        close(pfd[1]);
        e.prog.out = pfd[0];
        e.prog.in = -1;
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 20000), 1);
        cr_assert_str_eq(line, "forked", "the container's process: %s (see %s)", line, e.md.log);
        cr_assert_eq(harness_appliance_regions(e.app.tcp_uri), 2, "an arena and its fork clone");
        cr_assert(state_file_has("sd-f", "\"fork_clones\":\\[{"),
                  "the clone is not in the state file");

        /* memd dies before any child claims the token */
        harness_memd_signal(&e.md, SIGKILL);
        harness_memd_restart(&e.md, e.memd_args);
        wait_logged("a fork clone never claimed, its regions freed", 10000);
        cr_expect_eq(harness_appliance_regions(e.app.tcp_uri), 1, "the clone is left on the appliance (see %s)",
                     e.md.log);
        cr_expect(state_file_has("sd-f", "\"fork_clones\":\\[\\]"),
                  "the freed clone is still in the state file");
        /* detach frees the arena of the process that never resumed, too */
        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"detach", "sd-f", "--force", NULL}),
                  "%s", out);
        for (int i = 0; i < 100 && harness_appliance_regions(e.app.tcp_uri) != 0; i++)
                usleep(100000);
        cr_expect_eq(harness_appliance_regions(e.app.tcp_uri), 0, "detach left regions on the appliance");
}

/* A container waiting at its limit while memd is away keeps waiting for the
 * next memd until the processes whose arena pages fill it have resumed: only
 * then is "nothing left to evict" the container's own doing. A new memd used
 * to lift the OOM pause as soon as it saw the OOM, before any shim resumed,
 * and the kernel killed a process of the container (container_restart's
 * SIGTERM case, runc status 137). Here the arena's holder is stopped so it
 * cannot resume, and a plain process (no shim) of the same cgroup waits at
 * the limit. */
Test(restart, oom_wait_kept_until_shims_resume, .init = setup, .fini = teardown, .timeout = 300)
{
        const char *prog = getenv("XMEM_PAGING_PROG");
        uint64_t kills;

        need_setup();
        if (e.cg.version != 1)
                harness_skip(teardown, "the OOM pause is cgroup v1's (memory.oom_control "
                                       "oom_kill_disable); on v2 memory.high throttles instead");
        attach("sd-o", e.cg.path);
        start_holder(&e.prog, "sd-o", "96"); /* its resident arena pages fill the budget */
        harness_memd_signal(&e.md, SIGKILL);
        cr_assert_eq(kill(e.prog.pid, SIGSTOP), 0);
        /* 40 MiB of plain local memory beside them: over 64 MiB, it waits */
        harness_child_spawn(&e.prog2, (const char *const[]){prog, "sigbus", "40", NULL}, NULL,
                            &e.cg, true);
        for (int i = 0; i < 100 && !harness_cg_u64(e.cg.path, "memory.oom_control", "under_oom");
             i++)
                usleep(100000);
        cr_assert_eq(harness_cg_u64(e.cg.path, "memory.oom_control", "under_oom"), 1,
                     "the plain process did not reach the limit");
        harness_memd_restart(&e.md, e.memd_args);
        wait_logged("re-adopted from the state directory", 10000);
        sleep(2); /* memd's residency thread sees the OOM within its interval */
        kills = harness_cg_oom_kills(&e.cg);
        cr_expect_eq(kills, 0, "the new memd let the OOM killer in before the shim resumed (see %s)",
                     e.md.log);
        cr_expect_eq(harness_cg_u64(e.cg.path, "memory.oom_control", "oom_kill_disable"), 1,
                     "the OOM pause was lifted");
        cr_assert(harness_child_alive(&e.prog2), "the waiting process was killed");
        /* the holder resumes: its pages go back to the appliance, the other
         * process gets its room, both finish */
        cr_assert_eq(kill(e.prog.pid, SIGCONT), 0);
        wait_logged("resumed (", 20000);
        expect_line(&e.prog2, "written", 60000);
        for (int i = 0; i < 2; i++) {
                struct harness_child *c = i ? &e.prog2 : &e.prog;
                harness_child_say(c, "go");
                expect_line(c, "read-ok", 120000);
        }
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0);
}
