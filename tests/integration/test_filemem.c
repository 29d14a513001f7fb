/* test_filemem.c: the memory-mapped-file type (docs/shim.md "File memory")
 * with a real memd and the real shim: a process in a 64 MiB memory cgroup
 * (v1 or v2) works through 512 MiB, most of it file memory in the container's
 * file directory (no OOM kill, every byte verified); file space used up (a
 * small loop-mounted ext4) gives malloc's ENOMEM, never a crash; a forked
 * child sees its own copy of file memory. Root and a memory cgroup. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct {
        struct harness_memd md;
        struct harness_cg cg;
        char files[64]; /* the file directory */
        bool mounted;
} e;

static void setup(void)
{
        signal(SIGPIPE, SIG_IGN);
        if (!harness_is_root() || !harness_cg_version())
                return; /* the test skips */
        snprintf(e.files, sizeof(e.files), "/tmp/cv-filemem.XXXXXX");
        cr_assert(mkdtemp(e.files), "mkdtemp: %m");
        char name[64];
        snprintf(name, sizeof(name), "cv-filemem-%d", (int)getpid());
        cr_assert(harness_cg_create(&e.cg, name));
        harness_memd_start(&e.md, "/tmp/cv-filemem-memd.XXXXXX", NULL);
}

static void teardown(void)
{
        if (e.md.pid > 0)
                harness_memd_stop(&e.md);
        if (e.cg.version) {
                harness_cg_kill_all(e.cg.path);
                harness_cg_remove(&e.cg);
        }
        if (e.mounted) {
                char img[80];
                umount2(e.files, 0);
                snprintf(img, sizeof(img), "%s.img", e.files);
                unlink(img);
        }
        if (e.files[0])
                rmdir(e.files);
        memset(&e, 0, sizeof(e));
}

static void need_root_cg(void)
{
        if (!harness_is_root())
                harness_skip(teardown, "needs root");
        if (!e.cg.version)
                harness_skip(teardown, "%s", HARNESS_CG_NONE);
}

static void attach(const char *external)
{
        char out[1024];

        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"attach", "fm", "--cgroup", e.cg.path,
                                                    "--local-limit", "64M", "--external", external,
                                                    "--file-dir", e.files, NULL}),
                  "attach: %s", out);
}

/* Run XMEM_FILL ARGS in the cgroup under the shim; its output into OUT;
 * returns its wait status. */
static int fill(const char *const *args, char *out, size_t len, int timeout_ms)
{
        const char *argv[8] = {getenv("XMEM_FILL")};
        struct harness_child c;
        size_t got = 0;
        char line[256];
        int st, i;

        cr_assert(argv[0], "XMEM_FILL is not set (run through meson test)");
        for (i = 0; args[i] && i < 6; i++)
                argv[1 + i] = args[i];
        harness_memd_spawn(&e.md, "fm", &c, argv, &e.cg, true);
        out[0] = 0;
        while (harness_child_line(&c, line, sizeof(line), timeout_ms) == 1 && got < len - 1)
                got += (size_t)snprintf(out + got, len - got, "%s\n", line);
        st = harness_child_wait(&c, timeout_ms);
        harness_child_kill(&c);
        return st;
}

Test(filemem, a_64M_container_works_through_512M_of_file_memory, .init = setup, .fini = teardown,
     .timeout = 300)
{
        static char s[16384];
        int st;

        need_root_cg();
        attach("16M");
        /* 32M local (local_alloc_limit), 16M external, the rest file memory;
         * it stays alive 3 s so we can see where its memory went */
        const char *const argv[] = {getenv("XMEM_FILL"), "512", "3", NULL};
        struct harness_child c;
        char line[256];
        harness_memd_spawn(&e.md, "fm", &c, argv, &e.cg, true);
        cr_assert_eq(harness_child_line(&c, line, sizeof(line), 120000), 1, "no output");
        cr_expect_str_eq(line, "fill-ok 512 MiB");
        cr_assert(
            harness_ctl(&e.md, s, sizeof(s), (const char *const[]){"--json", "stats", "fm", NULL}),
            "%s", s);
        uint64_t file = harness_json_u64(s, "file_bytes");
        cr_expect_geq(file, 400ULL << 20, "file memory in use: %llu (%s)", (unsigned long long)file,
                      s);
        st = harness_child_wait(&c, 60000);
        harness_child_kill(&c);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0, "OOM kills in the 64 MiB cgroup");
        /* the process's files vanish with it (O_TMPFILE): the directory is empty */
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s)\"", e.files);
        cr_expect_eq(system(cmd), 0, "files left in %s", e.files);
}

Test(filemem, file_space_used_up_is_enomem, .init = setup, .fini = teardown, .timeout = 300)
{
        char out[4096];
        int st;

        need_root_cg();
        /* a small file system of its own: an ext4 image on a loop device
         * (tmpfs would not do: its pages count against the cgroup, unswappable) */
        char cmd[256];
        snprintf(cmd, sizeof(cmd),
                 "truncate -s 64M %s.img && mkfs.ext4 -q -F %s.img && "
                 "mount -o loop %s.img %s && chmod 0700 %s",
                 e.files, e.files, e.files, e.files, e.files);
        e.mounted = true;
        if (system(cmd) != 0)
                harness_skip(teardown, "no loop-mounted ext4 here (%s)", cmd);
        attach("16M");
        /* 32M local + 16M external + at most ~56M of file: 200 MiB cannot fit */
        st = fill((const char *const[]){"200", NULL}, out, sizeof(out), 120000);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 3, "status %#x, output: %s", st, out);
        unsigned mib = 0;
        cr_expect(sscanf(out, "malloc failed at %u MiB", &mib) == 1, "output: %s", out);
        cr_expect(mib >= 60 && mib < 110, "malloc failed at %u MiB", mib);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0, "OOM kills");
}

Test(filemem, attach_refuses_a_bad_file_dir, .init = setup, .fini = teardown)
{
        char out[1024];

        need_root_cg();
        cr_assert(harness_ctl(&e.md, out, sizeof(out),
                              (const char *const[]){"attach", "fm", "--cgroup", e.cg.path,
                                                    "--local-limit", "64M", "--external", "16M",
                                                    "--file-dir", "/nonexistent/cv", NULL}) ==
                  false);
        cr_expect(strstr(out, "params.file_dir: /nonexistent/cv"), "%s", out);
        chmod(e.files, 0777);
        cr_assert(!harness_ctl(&e.md, out, sizeof(out),
                               (const char *const[]){"attach", "fm", "--cgroup", e.cg.path,
                                                     "--local-limit", "64M", "--external", "16M",
                                                     "--file-dir", e.files, NULL}));
        cr_expect(strstr(out, "writable by group or others"), "%s", out);
        /* read-only for memd (what memd.service's ProtectSystem=strict makes
         * of a directory not in its ReadWritePaths=): the message says so */
        chmod(e.files, 0700);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "mount --bind %s %s && mount -o remount,bind,ro %s", e.files,
                 e.files, e.files);
        e.mounted = true; /* unmounted at teardown */
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        cr_assert(!harness_ctl(&e.md, out, sizeof(out),
                               (const char *const[]){"attach", "fm", "--cgroup", e.cg.path,
                                                     "--local-limit", "64M", "--external", "16M",
                                                     "--file-dir", e.files, NULL}));
        cr_expect(strstr(out, "is read-only for memd") && strstr(out, "ReadWritePaths"), "%s",
                  out);
}

/* fork over file memory: fork_prog's parent and child each rewrite a 128 MiB
 * heap, mostly file memory, while the other verifies its own version (the
 * child maps its own copy of the parent's file at the same address). */
Test(filemem, fork_gives_the_child_its_own_copy, .init = setup, .fini = teardown, .timeout = 300)
{
        const char *prog = getenv("XMEM_FORK_PROG");
        static char s[16384];
        struct harness_child c;
        char line[256];
        bool ok = false;
        int st;

        need_root_cg();
        cr_assert(prog, "XMEM_FORK_PROG is not set");
        attach("8M");
        harness_memd_spawn(&e.md, "fm", &c, (const char *const[]){prog, "128", NULL}, &e.cg, true);
        while (harness_child_line(&c, line, sizeof(line), 120000) == 1) {
                cr_log_info("fork_prog: %s", line);
                if (strcmp(line, "child-exited") == 0) {
                        cr_assert(harness_ctl(&e.md, s, sizeof(s),
                                              (const char *const[]){"--json", "stats", "fm", NULL}),
                                  "%s", s);
                        cr_expect_geq(harness_json_u64(s, "file_bytes"), 64ULL << 20, "%s", s);
                        harness_child_say(&c, "c");
                }
                if (strcmp(line, "OK") == 0)
                        ok = true;
        }
        st = harness_child_wait(&c, 60000);
        harness_child_kill(&c);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0 && ok, "fork_prog status %#x", st);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0, "OOM kills");
}
