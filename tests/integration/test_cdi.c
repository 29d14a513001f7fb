/* test_cdi.c: `xmemctl cdi generate` and podman's CDI (issue 12). The
 * generated spec goes to /var/run/cdi under a name of this test's own
 * (podman 4.3 has no --cdi-spec-dir), removed after; `podman run --device
 * xmem.io/memory=small` (a 64M:1G variant) works through 512 MiB under its
 * 64 MiB local limit, and `--device xmem.io/memory=default --memory 64m`
 * through 192 MiB, both through xmem-hook from the spec alone (no hooks.d,
 * no annotations). Root, runc and podman; skips without them. */
#include "containers.c"

#include <dirent.h>

#define CDI_DIR "/var/run/cdi"

static struct ctr_env env;
static char spec_path[128];
static bool had_cdi_dir; /* /var/run/cdi was there before */

/* A spec an earlier run left (its test was killed): its kind would clash. */
static void remove_stale_specs(void)
{
        DIR *d = opendir(CDI_DIR);
        struct dirent *de;
        char path[400];
        int pid;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (sscanf(de->d_name, "xmem-test-%d.json", &pid) == 1 && pid != getpid() &&
                    kill(pid, 0) < 0 && errno == ESRCH) {
                        snprintf(path, sizeof(path), "%s/%s", CDI_DIR, de->d_name);
                        unlink(path);
                }
        closedir(d);
}

static void setup(void)
{
        if (!harness_is_root())
                return;
        ctr_env_init(&env);
        ctr_memd_start(&env);
        had_cdi_dir = access(CDI_DIR, F_OK) == 0;
        remove_stale_specs();
        snprintf(spec_path, sizeof(spec_path), CDI_DIR "/xmem-test-%d.json", (int)getpid());
}

static void teardown(void)
{
        if (spec_path[0])
                unlink(spec_path);
        if (spec_path[0] && !had_cdi_dir)
                rmdir(CDI_DIR); /* ours, when nothing else is in it */
        if (env.dir[0])
                ctr_env_cleanup(&env);
}

static void need_podman(void)
{
        ctr_need_tool("podman");
        ctr_need_tool("runc");
}

static void generate(void)
{
        struct cmd_result r;

        mkdir(CDI_DIR, 0755);
        ctr_run((const char *const[]){getenv("XMEM_CTL"), "--socket", env.sock, "cdi", "generate",
                                      "--output", spec_path, "--hook", getenv("XMEM_HOOK"),
                                      "--shim", getenv("XMEM_SHIM"), "--variant", "small=64M:1G",
                                      NULL},
                NULL, 10, &r);
        cr_assert(ctr_exited(&r, 0), "cdi generate: %s", r.err);
}

static void podman_run(const char *device, const char *memory, const char *mib,
                       struct cmd_result *r)
{
        const char *argv[40];
        size_t n = 0;
        const char *const head[] = {"podman",
                                    "--runtime",
                                    "runc",
                                    "--cgroup-manager",
                                    "cgroupfs",
                                    "--events-backend",
                                    "file",
                                    "run",
                                    "--rm",
                                    "--ulimit",
                                    "nofile=1024:1024",
                                    "--ulimit",
                                    "nproc=1024:1024",
                                    "--network",
                                    "none",
                                    "--device",
                                    device};

        for (size_t i = 0; i < ELEMENTSOF(head); i++)
                argv[n++] = head[i];
        if (memory) {
                argv[n++] = "--memory";
                argv[n++] = memory;
        }
        argv[n++] = "--rootfs";
        argv[n++] = env.rootfs;
        argv[n++] = "/bin/sh";
        argv[n++] = "-c";
        argv[n++] = fill_and_report(mib)[2];
        argv[n] = NULL;
        ctr_run(argv, NULL, 240, r);
}

Test(cdi, podman_device_small_512m_through_64m, .init = setup, .fini = teardown, .timeout = 300)
{
        struct cmd_result r;

        need_podman();
        generate();
        podman_run("xmem.io/memory=small", NULL, "512", &r);
        cr_assert(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        expect_within(r.out, 64 << 20);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
}

Test(cdi, podman_device_default_takes_the_memory_limit, .init = setup, .fini = teardown,
     .timeout = 300)
{
        struct cmd_result r;

        need_podman();
        generate();
        /* external defaults to 4 x the local limit: 256 MiB */
        podman_run("xmem.io/memory=default", "64m", "192", &r);
        cr_assert(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 192 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        expect_within(r.out, 64 << 20);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
        /* an unknown device is podman's error, nothing is attached */
        podman_run("xmem.io/memory=nosuch", NULL, "8", &r);
        cr_expect(!ctr_exited(&r, 0), "an unknown CDI device ran: %s", r.out);
        cr_expect_eq(ctr_memd_count(&env), 0);
}
