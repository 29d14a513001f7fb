/* test_images.c: container images other than the test's own rootfs: a
 * debootstrapped Debian bullseye (glibc 2.31; buster too where the registry
 * serves it) whose own python3 pages through 4x its local limit under the
 * shim, and images the shim cannot serve (static binaries only, musl) that
 * xmem-runtime and xmem-hook refuse in one line, or run unattached when
 * io.xmem.required=false. Root; skips without runc. */
#include "containers.c"

#include <sys/mount.h>

static struct ctr_env env;
static char overlay[160]; /* the Debian image's writable overlay, when mounted */

static void setup_memd(void)
{
        ctr_env_start(&env);
}

static void teardown(void)
{
        if (overlay[0] && umount2(overlay, MNT_DETACH) < 0)
                cr_log_warn("umount %s: %m", overlay);
        overlay[0] = 0;
        if (env.dir[0])
                ctr_env_cleanup(&env);
}

/* E with its rootfs at E->dir/NAME holding busybox-static alone, plus a file
 * named EXTRA (relative, e.g. a fake musl loader) when set. */
static void static_rootfs(struct ctr_env *e, const char *name, const char *extra)
{
        char cmd[1024];

        *e = env;
        snprintf(e->rootfs, sizeof(e->rootfs), "%s/%s", env.dir, name);
        snprintf(cmd, sizeof(cmd),
                 "set -e; mkdir -p %s/bin %s/proc %s/dev %s/sys %s/tmp; cp \"$(command -v "
                 "busybox)\" %s/bin/busybox; ln -s busybox %s/bin/sh; ln -s busybox %s/bin/echo",
                 e->rootfs, e->rootfs, e->rootfs, e->rootfs, e->rootfs, e->rootfs, e->rootfs,
                 e->rootfs);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        if (extra) {
                snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname %s/%s)\" && echo fake > %s/%s",
                         e->rootfs, extra, e->rootfs, extra);
                cr_assert_eq(system(cmd), 0, "%s", cmd);
        }
}

static const char *const say_ok[] = {"/bin/sh", "-c", "echo static-ok", NULL};
static const char *xmem_64m = "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.external\":\"1G\"}";
static const char *xmem_64m_optional =
    "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\",\"io.xmem.external\":"
    "\"1G\",\"io.xmem.required\":\"false\"}";

/* Refused by xmem-runtime (WHY in its one line) and by the hook, nothing
 * attached; run unattached with io.xmem.required=false. */
static void expect_refused(const struct ctr_env *e, const char *name, const char *why)
{
        char bundle[256], want[512], n[64];
        struct cmd_result r;

        snprintf(n, sizeof(n), "%s-rt", name);
        ctr_bundle(e, n, say_ok, xmem_64m, NULL, bundle, sizeof(bundle));
        ctr_runtime_run(e, bundle, n, 30, &r);
        snprintf(want, sizeof(want),
                 "xmem-runtime: the xmem shim cannot serve this image: %s (set "
                 "io.xmem.required=false to run it without external memory)\n",
                 why);
        cr_expect(ctr_exited(&r, 1), "%s: status %d", n, r.status);
        cr_expect_str_eq(r.err, want);
        cr_expect(!ctr_cgroup_exists(e, n), "cgroup of %s left behind", n);

        snprintf(n, sizeof(n), "%s-hook", name);
        ctr_bundle(e, n, say_ok, xmem_64m, e->sock, bundle, sizeof(bundle));
        ctr_runc_run(e, NULL, bundle, n, 30, &r);
        snprintf(want, sizeof(want),
                 "xmem-hook: attach container %s: the xmem shim cannot serve "
                 "this image: %s",
                 n, why);
        cr_expect(!ctr_exited(&r, 0) && !strstr(r.out, "static-ok"), "%s ran: %s", n, r.out);
        cr_expect(strstr(r.err, want), "%s: %s", n, r.err);
        cr_expect_eq(ctr_memd_count(e), 0, "memd has containers after a refusal");

        snprintf(n, sizeof(n), "%s-opt", name);
        ctr_bundle(e, n, say_ok, xmem_64m_optional, NULL, bundle, sizeof(bundle));
        ctr_runtime_run(e, bundle, n, 30, &r);
        cr_expect(ctr_exited(&r, 0) && strstr(r.out, "static-ok"), "%s: %d %s %s", n, r.status,
                  r.out, r.err);
        cr_expect(strstr(r.err, "xmem-runtime: not attached: the xmem shim cannot serve this "
                                "image: ") &&
                      strstr(r.err, why),
                  "%s: %s", n, r.err);

        snprintf(n, sizeof(n), "%s-hopt", name);
        ctr_bundle(e, n, say_ok, xmem_64m_optional, e->sock, bundle, sizeof(bundle));
        ctr_runc_run(e, NULL, bundle, n, 30, &r);
        cr_expect(ctr_exited(&r, 0) && strstr(r.out, "static-ok"), "%s: %d %s %s", n, r.status,
                  r.out, r.err);
        cr_expect_eq(ctr_memd_count(e), 0, "an unattachable container was attached");
}

Test(images, static_image_refused_or_unattached, .init = setup_memd, .fini = teardown,
     .timeout = 180)
{
        struct ctr_env e;

        ctr_need_root_runc();
        static_rootfs(&e, "static-root", NULL);
        expect_refused(&e, "static",
                       "entrypoint /bin/sh is statically linked and the image has no glibc "
                       "loader (/lib64/ld-linux-x86-64.so.2)");
}

Test(images, musl_image_refused_or_unattached, .init = setup_memd, .fini = teardown, .timeout = 180)
{
        struct ctr_env e;

        ctr_need_root_runc();
        static_rootfs(&e, "musl-root", "lib/ld-musl-x86_64.so.1");
        expect_refused(&e, "musl", "the image uses musl (/lib/ld-musl-x86_64.so.1)");
}

/* python3 of the image: 256 x 1 MiB bytearrays, each filled with its own
 * byte, all read back twice; then the cgroup's peak and OOM count. */
static const char *py_pages =
    "python3 -c 'import sys\n"
    "n = 256\n"
    "bufs = [bytearray([i % 251]) * (1 << 20) for i in range(n)]\n"
    "for rnd in range(2):\n"
    "    for i, b in enumerate(bufs):\n"
    "        if b.count(i % 251) != len(b): sys.exit(\"bad page in buffer %d\" % i)\n"
    "arena = sum(\"xmem-arena\" in l for l in open(\"/proc/self/maps\"))\n"
    "print(\"py-ok\", n, \"MiB arena\", arena)' && " CTR_SH_REPORT;

static void debian_pages(const char *suite)
{
        char cmd[512], image[256], lower[300], bundle[256], name[32], want[64];
        struct cmd_result r;
        struct ctr_env e;
        unsigned long long lim = 0, max = 0, oom = 99;
        bool has_peak = false;

        ctr_need_root_runc();
        snprintf(cmd, sizeof(cmd), "%s %s", getenv("XMEM_DEBIAN_IMAGE"), suite);
        ctr_run((const char *const[]){"/bin/sh", "-c", cmd, NULL}, NULL, 900, &r);
        if (ctr_exited(&r, 77))
                harness_skip(teardown, "no %s image: %s", suite, r.err); /* runs no .fini */
        cr_assert(ctr_exited(&r, 0), "building the %s image: %s", suite, r.err);
        snprintf(image, sizeof(image), "%.*s", (int)strcspn(r.out, "\n"), r.out);

        /* the cached image stays pristine: containers write to an overlay */
        e = env;
        snprintf(e.rootfs, sizeof(e.rootfs), "%s/%s-root", env.dir, suite);
        snprintf(cmd, sizeof(cmd), "mkdir -p %s %s/%s-upper %s/%s-work", e.rootfs, env.dir, suite,
                 env.dir, suite);
        cr_assert_eq(system(cmd), 0);
        snprintf(lower, sizeof(lower), "lowerdir=%s,upperdir=%s/%s-upper,workdir=%s/%s-work", image,
                 env.dir, suite, env.dir, suite);
        cr_assert_eq(mount("overlay", e.rootfs, "overlay", 0, lower), 0, "overlay: %m");
        snprintf(overlay, sizeof(overlay), "%s", e.rootfs);

        snprintf(name, sizeof(name), "%s-py", suite);
        ctr_bundle(&e, name, (const char *const[]){"/bin/sh", "-c", py_pages, NULL}, xmem_64m, NULL,
                   bundle, sizeof(bundle));
        ctr_runtime_run(&e, bundle, name, 300, &r);
        cr_log_info("%s: %s", suite, r.out);
        snprintf(want, sizeof(want), "py-ok 256 MiB arena 1\n");
        cr_assert(ctr_exited(&r, 0) && strstr(r.out, want), "status %d: %s %s", r.status, r.out,
                  r.err);
        cr_assert(ctr_report_parse(r.out, &lim, &max, &has_peak, &oom), "%s", r.out);
        cr_expect_eq(lim, 64ULL << 20);
        if (has_peak)
                cr_expect_lt(max, 64ULL << 20, "peak %llu", max);
        else
                cr_log_warn("no peak usage kept (cgroup v2 memory.peak needs Linux 5.19)");
        cr_expect_eq(oom, 0);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
}

Test(images, bullseye_python_pages_through_4x_local, .init = setup_memd, .fini = teardown,
     .timeout = 1200)
{
        debian_pages("bullseye");
}

Test(images, buster_python_pages_through_4x_local, .init = setup_memd, .fini = teardown,
     .timeout = 1200)
{
        debian_pages("buster");
}
