/* test_containerd.c: xmem under containerd (issue 12). Debian's containerd
 * 1.6 accepts packaging/containerd/xmem-runtime.toml (`containerd config
 * dump` shows the xmem handler and its BinaryName), and a private containerd
 * (own root, state, socket, namespace and config) runs `ctr run
 * --runc-binary xmem-runtime` of an annotated container that pages 256 MiB
 * through its 64 MiB local limit (4x) with no OOM kill, then detaches.
 * Everything it started is stopped and removed. Root, runc, containerd and
 * ctr; skips without them. */
#include "containers.c"

#include <dirent.h>

static struct ctr_env env;
static struct {
        pid_t pid;
        char dir[160], address[200], ns[64], cgroup[128];
        bool had_run_dir; /* /run/containerd was there before (ctr and the shim use it) */
} cd;

static void need_containerd(void)
{
        ctr_need_tool("containerd");
        ctr_need_tool("runc");
}

static const char *snippet(void)
{
        static char path[512];

        snprintf(path, sizeof(path), "%s/packaging/containerd/xmem-runtime.toml",
                 need_env("XMEM_SOURCE_ROOT"));
        return path;
}

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");

        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

static void setup(void)
{
        if (!harness_is_root())
                return;
        ctr_env_init(&env);
        snprintf(cd.dir, sizeof(cd.dir), "%s/containerd", env.dir);
        snprintf(cd.address, sizeof(cd.address), "%s/containerd.sock", cd.dir);
        snprintf(cd.ns, sizeof(cd.ns), "xmem-test-%d", (int)getpid());
        snprintf(cd.cgroup, sizeof(cd.cgroup), "%s/paging", env.cgroup_parent);
        mkdir(cd.dir, 0700);
        cd.had_run_dir = access("/run/containerd", F_OK) == 0;
}

/* Processes whose command line names our namespace (a shim left behind):
 * SIGKILL by pid. */
static void kill_our_shims(void)
{
        DIR *d = opendir("/proc");
        struct dirent *de;
        char path[300], cmd[4096];

        while (d && (de = readdir(d))) {
                int pid = atoi(de->d_name);
                bool ours = false;
                size_t n;
                FILE *f;

                if (pid <= 0 || pid == getpid())
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
                if (!(f = fopen(path, "r")))
                        continue;
                n = fread(cmd, 1, sizeof(cmd) - 1, f);
                fclose(f);
                for (size_t i = 0; i + 1 < n; i++)
                        if (cmd[i] == 0 && strcmp(cmd + i + 1, cd.ns) == 0 &&
                            strstr(cmd, "containerd-shim"))
                                ours = true;
                if (ours)
                        kill(pid, SIGKILL);
        }
        if (d)
                closedir(d);
}

static void ctr_cmd(const char *const *args, int timeout_s, struct cmd_result *r)
{
        const char *argv[32] = {"ctr", "--address", cd.address, "--namespace", cd.ns};
        size_t n = 5;

        for (; *args && n < 31; args++)
                argv[n++] = *args;
        argv[n] = NULL;
        ctr_run(argv, NULL, timeout_s, r);
}

static void teardown(void)
{
        char cmd[600];

        if (cd.pid > 0) {
                struct cmd_result r;
                ctr_cmd((const char *const[]){"tasks", "kill", "-s", "KILL", "paging", NULL}, 10,
                        &r);
                ctr_cmd((const char *const[]){"tasks", "delete", "-f", "paging", NULL}, 10, &r);
                ctr_cmd((const char *const[]){"containers", "delete", "paging", NULL}, 10, &r);
                kill(cd.pid, SIGTERM);
                waitpid(cd.pid, NULL, 0);
                cd.pid = 0;
        }
        kill_our_shims();
        /* the shim's runc root and the container's cgroups */
        snprintf(cmd, sizeof(cmd),
                 "rm -rf /run/containerd/runc/%s; rmdir /run/containerd/runc /run/containerd "
                 "2>/dev/null; rmdir /sys/fs/cgroup/*%s /sys/fs/cgroup%s 2>/dev/null",
                 cd.ns, cd.cgroup, cd.cgroup);
        (void)!system(cmd);
        /* ctr's fifos and the shim's sockets live under /run/containerd
         * whatever the config says: gone with it when it was ours */
        if (!cd.had_run_dir)
                (void)!system("rm -rf /run/containerd");
        if (env.dir[0]) {
                snprintf(cmd, sizeof(cmd), "umount -R %s/root 2>/dev/null", cd.dir);
                (void)!system(cmd);
                ctr_env_cleanup(&env);
        }
}

Test(containerd, config_snippet_is_accepted, .init = setup, .fini = teardown, .timeout = 60)
{
        char cfg[300], text[8192], body[4096];
        struct cmd_result r;

        need_containerd();
        cr_assert(ctr_read_file(snippet(), body, sizeof(body)), "%s", snippet());
        snprintf(cfg, sizeof(cfg), "%s/with-snippet.toml", cd.dir);
        snprintf(text, sizeof(text), "version = 2\nroot = \"%s/root\"\nstate = \"%s/state\"\n%s",
                 cd.dir, cd.dir, body);
        write_file(cfg, text);
        ctr_run((const char *const[]){"containerd", "--config", cfg, "config", "dump", NULL}, NULL,
                30, &r);
        cr_assert(ctr_exited(&r, 0), "containerd config dump: %s", r.err);
        cr_expect(strstr(r.out, "runtimes.xmem]"), "no xmem handler in:\n%s", r.out);
        cr_expect(strstr(r.out, "BinaryName = \"/usr/local/bin/xmem-runtime\""), "%s", r.out);
        cr_expect(strstr(r.out, "runtime_type = \"io.containerd.runc.v2\""), "%s", r.out);
        cr_expect(strstr(r.out, "container_annotations = [\"io.xmem.*\"]"), "%s", r.out);
        /* and a broken snippet is refused */
        write_file(cfg, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes."
                        "xmem\n");
        ctr_run((const char *const[]){"containerd", "--config", cfg, "config", "dump", NULL}, NULL,
                30, &r);
        cr_expect(!ctr_exited(&r, 0), "a broken config was accepted");
}

static void start_containerd(void)
{
        char cfg[300], text[2048], shim_env[400], sock_env[300], hook_env[400];
        struct cmd_result r;

        snprintf(cfg, sizeof(cfg), "%s/config.toml", cd.dir);
        snprintf(text, sizeof(text),
                 "version = 2\nroot = \"%s/root\"\nstate = \"%s/state\"\n"
                 "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                 "[grpc]\n  address = \"%s\"\n",
                 cd.dir, cd.dir, cd.address);
        write_file(cfg, text);
        /* xmem-runtime (run by the shim) finds memd, the shim and the hook
         * of the build through containerd's environment */
        snprintf(sock_env, sizeof(sock_env), "XMEM_SOCKET=%s", env.sock);
        snprintf(shim_env, sizeof(shim_env), "XMEM_SHIM=%s", need_env("XMEM_SHIM"));
        snprintf(hook_env, sizeof(hook_env), "XMEM_HOOK=%s", need_env("XMEM_HOOK"));
        cd.pid = fork();
        cr_assert(cd.pid >= 0);
        if (cd.pid == 0) {
                char log[300];
                snprintf(log, sizeof(log), "%s/containerd.log", cd.dir);
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                dup2(fd, 1), dup2(fd, 2);
                putenv(sock_env), putenv(shim_env), putenv(hook_env);
                execlp("containerd", "containerd", "--config", cfg, NULL);
                _exit(127);
        }
        for (int i = 0; i < 300; i++) {
                ctr_cmd((const char *const[]){"version", NULL}, 10, &r);
                if (ctr_exited(&r, 0))
                        return;
                cr_assert_eq(waitpid(cd.pid, NULL, WNOHANG), 0, "containerd exited, see %s",
                             cd.dir);
                usleep(100000);
        }
        cr_assert_fail("containerd did not answer within 30 s");
}

/* KEY's number (the whole file when NULL) in FILE of the container's memory
 * cgroup CG on the host; false until runc made it, and after. */
static bool host_cgroup_u64(const struct harness_cg *cg, const char *file, const char *key,
                            unsigned long long *ret)
{
        char path[300], text[4096], *p;

        snprintf(path, sizeof(path), "%s/%s", cg->path, file);
        if (!ctr_read_file(path, text, sizeof(text)))
                return false;
        p = key ? strstr(text, key) : text;
        return p && sscanf(p + (key ? strlen(key) : 0), "%llu", ret) == 1;
}

Test(containerd, ctr_run_pages_4x_its_local_limit, .init = setup, .fini = teardown, .timeout = 300)
{
        unsigned long long lim = 0, max = 0, oom = 99, v;
        char out_path[300], out[8192], report[200], peak[24] = "none";
        struct harness_cg cg;
        int st = -1;
        pid_t p;

        need_containerd();
        if (!harness_cg_at(&cg, cd.cgroup))
                cr_skip_test("reads the container's memory cgroup from the host: %s",
                             HARNESS_CG_NONE);
        bool v2 = cg.version == 2;
        ctr_memd_start(&env);
        start_containerd();
        snprintf(out_path, sizeof(out_path), "%s/ctr.out", cd.dir);
        /* ctr in a child (no Criterion call there); the cgroup is read from
         * the host meanwhile: ctr's default spec shows the container none */
        p = fork();
        cr_assert(p >= 0);
        if (p == 0) {
                struct cmd_result r;
                ctr_cmd((const char *const[]){"run",
                                              "--rm",
                                              "--runtime",
                                              "io.containerd.runc.v2",
                                              "--runc-binary",
                                              getenv("XMEM_RUNTIME_EXE"),
                                              "--cgroup",
                                              cd.cgroup,
                                              "--annotation",
                                              "io.xmem.enable=true",
                                              "--annotation",
                                              "io.xmem.local-limit=64M",
                                              "--annotation",
                                              "io.xmem.external=1G",
                                              "--rootfs",
                                              env.rootfs,
                                              "paging",
                                              "/bin/sh",
                                              "-c",
                                              "/bin/container_fill 256 && sleep 1",
                                              NULL},
                        240, &r);
                FILE *f = fopen(out_path, "w");
                if (f)
                        fprintf(f, "status %d\n%s\n%s", r.status, r.out, r.err), fclose(f);
                _exit(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 256 MiB") ? 0 : 1);
        }
        while (waitpid(p, &st, WNOHANG) == 0) {
                /* v2: memory.max reads "max" until memd set it; memory.peak
                 * needs Linux 5.19 */
                if (host_cgroup_u64(&cg, v2 ? "memory.max" : "memory.limit_in_bytes", NULL, &v))
                        lim = v;
                if (host_cgroup_u64(&cg, v2 ? "memory.peak" : "memory.max_usage_in_bytes", NULL,
                                    &v))
                        max = v, snprintf(peak, sizeof(peak), "%llu", max);
                if (host_cgroup_u64(&cg, v2 ? "memory.events" : "memory.oom_control", "oom_kill ",
                                    &v))
                        oom = v;
                usleep(50000);
        }
        ctr_read_file(out_path, out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "ctr run: %s (see %s)", out, cd.dir);
        snprintf(report, sizeof(report), "limit %llu max %s oom_kill %llu", lim, peak, oom);
        expect_within(report, 64 << 20);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
}
