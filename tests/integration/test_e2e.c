/* test_e2e.c: issue 3 end to end, no containers: a real appliance, a real
 * memd, the real shim. A process in a memory cgroup (v1 or v2) limited to
 * 64 MiB works through 512 MiB (malloc and mmap, sequential and random order,
 * 1 and 4 threads; realloc growth) and exits 0 with every word verified; the
 * same process without the shim is OOM-killed. Root and a memory cgroup. */
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

#define LIMIT_MIB 64

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

/* Run ARGV to completion; its stdout into OUT. Returns the wait status. */
static int run(const char *const *argv, const char *const *envp, const char *cg, char *out,
               size_t len)
{
        int pfd[2], st = 0;
        ssize_t n, got = 0;
        pid_t pid;

        cr_assert(pipe2(pfd, O_CLOEXEC) == 0);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                if (cg) {
                        char p[200];
                        snprintf(p, sizeof(p), "%s/cgroup.procs", cg);
                        FILE *f = fopen(p, "w");
                        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
                                _exit(126);
                }
                dup2(pfd[1], 1);
                for (; envp && *envp; envp++)
                        putenv((char *)*envp);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(pfd[1]);
        while ((size_t)got < len - 1 && (n = read(pfd[0], out + got, len - 1 - (size_t)got)) > 0)
                got += n;
        out[got] = 0;
        close(pfd[0]);
        waitpid(pid, &st, 0);
        return st;
}

static void setup(void)
{
        if (!harness_is_root() || !harness_cg_version())
                return; /* the test skips */
        harness_init(&e.app);
        /* room for the realloc test's 2G arena (the pool is thin: untouched
         * pages cost nothing) */
        harness_appliance_start(&e.app, (const char *const[]){ "--pool-size", "4G", NULL });
        char name[64];
        snprintf(name, sizeof(name), "xmem-e2e-%d", (int)getpid());
        cr_assert(harness_cg_create(&e.cg, name));
        harness_memd_start(&e.md, "/tmp/xmem-e2e.XXXXXX",
                           (const char *const[]){ "--appliance", e.app.tcp_uri, NULL });
}

static void teardown(void)
{
        harness_memd_stop(&e.md);
        if (e.app.pid > 0)
                harness_cleanup(&e.app);
        harness_cg_remove(&e.cg);
        memset(&e, 0, sizeof(e));
}

static void need_root_cg(void)
{
        if (!harness_is_root())
                cr_skip_test("needs root");
        if (!e.cg.version)
                cr_skip_test("%s", HARNESS_CG_NONE);
}

static void attach(const char *external)
{
        char out[512];
        int st = run((const char *const[]){ need_env("XMEM_CTL"), "--socket", e.md.sock, "attach",
                                            "e2e", "--cgroup", e.cg.path, "--local-limit", "64M",
                                            "--external", external, NULL },
                     NULL, NULL, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "attach: %s (see %s)", out, e.md.log);
}

/* Run e2e_prog ARGS with the shim in the 64 MiB cgroup: exit 0, verified,
 * paged (write-backs and evictions), the peak kept under limit - headroom/2. */
static void paged_run(const char *const *args, const char *external)
{
        const char *argv[8] = { need_env("XMEM_E2E_PROG") };
        char pre[300], sockenv[200], out[4096], stats[8192], ctr[160];
        uint64_t peak, limit = (uint64_t)LIMIT_MIB << 20, headroom = limit / 8;
        int st;

        need_root_cg();
        attach(external);
        for (int i = 0; args[i] && i < 6; i++)
                argv[i + 1] = args[i];
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", need_env("XMEM_SHIM"));
        snprintf(sockenv, sizeof(sockenv), "XMEM_SOCKET=%s",
                 harness_memd_ctr_socket(&e.md, "e2e", ctr, sizeof(ctr)));
        st = run(argv, (const char *const[]){ pre, sockenv, NULL }, e.cg.path, out, sizeof(out));
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, "e2e-ok"),
                  "status %#x: %s (memd log %s)", st, out, e.md.log);
        run((const char *const[]){ need_env("XMEM_CTL"), "--socket", e.md.sock, "--json", "stats",
                                   "e2e", NULL },
            NULL, NULL, stats, sizeof(stats));
        if (harness_cg_peak(&e.cg, &peak)) {
                cr_log_info("%s peak %.1f MiB; memd: %s", out, peak / 1048576.0, stats);
                cr_expect_lt(peak, limit - headroom / 2, "peak usage %.1f MiB", peak / 1048576.0);
        } else {
                cr_log_warn("%s; no peak kept (v2 memory.peak needs Linux 5.19): peak check "
                            "skipped; memd: %s",
                            out, stats);
        }
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0);
        cr_expect_gt(harness_json_u64(stats, "written_back_bytes"), 64ULL << 20, "nothing paged out");
        cr_expect_gt(harness_json_u64(stats, "evictions"), 0);
        cr_expect_eq(harness_json_u64(stats, "store_errors"), 0);
}

#define PAGED(name, ...)                                                                      \
        Test(e2e, name, .init = setup, .fini = teardown, .timeout = 240)                      \
        {                                                                                     \
                paged_run((const char *const[]){ __VA_ARGS__, NULL }, "1G");                  \
        }

PAGED(malloc_seq_1_thread, "malloc", "512", "1", "seq")
PAGED(malloc_seq_4_threads, "malloc", "512", "4", "seq")
/* Random order: 4 KiB pages once (about 40 s here: each miss moves a 64 KiB
 * chunk in and usually a dirty one out), 64 KiB units for the others. */
PAGED(malloc_random_1_thread, "malloc", "512", "1", "random", "64")
PAGED(malloc_random_4_threads_4k_pages, "malloc", "512", "4", "random", "4")
PAGED(mmap_seq_1_thread, "mmap", "512", "1", "seq")
PAGED(mmap_seq_4_threads, "mmap", "512", "4", "seq")
PAGED(mmap_random_1_thread, "mmap", "512", "1", "random", "64")
PAGED(mmap_random_4_threads, "mmap", "512", "4", "random", "64")

/* Growth by realloc keeps the old and the new block at once (and jemalloc
 * keeps freed address space): 512 MiB needs more than a 1G arena. */
Test(e2e, realloc_growth, .init = setup, .fini = teardown, .timeout = 240)
{
        paged_run((const char *const[]){ "realloc", "512", NULL }, "2G");
}

Test(e2e, without_the_shim_oom_killed, .init = setup, .fini = teardown, .timeout = 120)
{
        char out[1024];
        int st;

        need_root_cg();
        attach("1G");
        st = run((const char *const[]){ need_env("XMEM_E2E_PROG"), "malloc", "512", "1", "seq",
                                        NULL },
                 NULL, e.cg.path, out, sizeof(out));
        cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %#x: %s", st, out);
        cr_expect(!strstr(out, "e2e-ok"));
        cr_expect_geq(harness_cg_oom_kills(&e.cg), 1);
}
