/* containers_attached.c (included by test_containers.c): containers
 * attached in memd: the hook exposing the shim, its timing and idempotence,
 * and the end-to-end runs, which first probe that memd and the shim keep a
 * process under its local limit, and skip saying so when they do not yet. */

static const char *xmem_64m = "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.external\":\"1G\"}";

Test(containers, hook_attaches_and_exposes_the_shim, .init = setup_memd, .fini = teardown,
     .timeout = 120)
{
        char bundle[256];
        struct cmd_result r;

        need_root_runc();
        ctr_bundle(&env, "expose",
                   (const char *const[]){ "/bin/sh", "-c",
                                          "cat /etc/ld.so.preload; test -S /run/xmem/memd.sock "
                                          "&& echo sock-ok; cat /sys/fs/cgroup/memory/"
                                          "memory.limit_in_bytes; /bin/container_fill 8",
                                          NULL },
                   xmem_64m, env.sock, bundle, sizeof(bundle));
        ctr_runc_run(&env, NULL, bundle, "expose", 60, &r);
        cr_expect(ctr_exited(&r, 0), "status %d: %s", r.status, r.err);
        cr_expect(strstr(r.out, "/run/xmem-shim/libxmem-shim.so\n"), "no preload: %s", r.out);
        cr_expect(strstr(r.out, "sock-ok"), "no memd socket in the container: %s", r.out);
        cr_expect(strstr(r.out, "67108864"), "local limit not set: %s", r.out);
        cr_expect(strstr(r.out, "fill-ok 8 MiB"), "%s", r.out);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
}

Test(containers, runtime_attaches_and_exposes_the_shim, .init = setup_memd, .fini = teardown,
     .timeout = 120)
{
        char bundle[256], path[300], text[16384];
        struct cmd_result r;

        need_root_runc();
        ctr_bundle(&env, "rtexpose",
                   (const char *const[]){ "/bin/sh", "-c",
                                          "echo $LD_PRELOAD $XMEM_SOCKET; test -S $XMEM_SOCKET "
                                          "&& echo sock-ok; cat /sys/fs/cgroup/memory/"
                                          "memory.limit_in_bytes; /bin/container_fill 8 1 & "
                                          "sleep 0.5; grep -c xmem-arena /proc/$!/maps; wait",
                                          NULL },
                   xmem_64m, NULL, bundle, sizeof(bundle));
        runtime_run(bundle, "rtexpose", 60, &r);
        cr_expect(ctr_exited(&r, 0), "status %d: %s", r.status, r.err);
        cr_expect(strstr(r.out, "/run/xmem-shim/libxmem-shim.so /run/xmem/memd.sock\n"), "%s",
                  r.out);
        cr_expect(strstr(r.out, "sock-ok") && strstr(r.out, "67108864"), "%s", r.out);
        cr_expect(strstr(r.out, "fill-ok 8 MiB"), "%s", r.out);
        cr_expect(strstr(r.out, "\n1\n"), "the shim mapped no arena (not attached): %s", r.out);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
        /* a second run of the same bundle adds nothing twice */
        snprintf(path, sizeof(path), "%s/config.json", bundle);
        runtime_run(bundle, "rtexpose", 60, &r);
        cr_assert(ctr_read_file(path, text, sizeof(text)));
        {
                const char *m = "\"destination\":\"/run/xmem-shim/libxmem-shim.so\"", *p = text;
                int n = 0;
                while ((p = strstr(p, m)))
                        n++, p++;
                cr_expect_eq(n, 1, "shim mount listed %d times", n);
        }
}

static double now_ms(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* xmem-hook STAGE with STATE on stdin; returns milliseconds taken. */
static double hook_direct(const char *stage, const char *state, struct cmd_result *r)
{
        char in[] = "/tmp/xmem-ctr-state.XXXXXX", sh[1024];
        int fd = mkostemp(in, O_CLOEXEC);
        double t0;

        cr_assert(fd >= 0 && write_full(fd, state, strlen(state)) == 0);
        close(fd);
        snprintf(sh, sizeof(sh), "exec %s --socket %s --shim %s %s < %s", getenv("XMEM_HOOK"),
                 env.sock, getenv("XMEM_SHIM"), stage, in);
        t0 = now_ms();
        ctr_run((const char *const[]){ "/bin/sh", "-c", sh, NULL }, NULL, 10, r);
        t0 = now_ms() - t0;
        unlink(in);
        return t0;
}

Test(containers, hook_direct_quick_and_idempotent, .init = setup_memd, .fini = teardown,
     .timeout = 120)
{
        char bundle[256], state[1024], cg[256], path[512], text[1024];
        struct cmd_result r;
        int ready[2], fd;
        pid_t child;
        double ms;

        need_root_runc();
        ctr_bundle(&env, "direct", fill_args, xmem_64m, NULL, bundle, sizeof(bundle));
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/memory%s", env.cgroup_parent);
        mkdir(cg, 0755);
        strcat(cg, "/direct");
        cr_assert(mkdir(cg, 0755) == 0 || errno == EEXIST, "mkdir %s: %m", cg);
        cr_assert(pipe(ready) == 0);
        child = fork(); /* stands in for a container's init: own mount ns, own cgroup */
        if (child == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
                if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                        _exit(1);
                (void)!write(ready[1], "x", 1);
                pause();
                _exit(0);
        }
        cr_assert(read(ready[0], text, 1) == 1);
        snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
        snprintf(text, sizeof(text), "%d", (int)child);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        cr_assert(fd >= 0 && write_full(fd, text, strlen(text)) == 0, "%s: %m", path);
        close(fd);
        snprintf(state, sizeof(state),
                 "{\"ociVersion\":\"1.0.2\",\"id\":\"direct\",\"status\":\"creating\",\"pid\":%d,"
                 "\"bundle\":\"%s\"}", (int)child, bundle);
        for (int i = 0; i < 2; i++) { /* twice: idempotent */
                ms = hook_direct("createRuntime", state, &r);
                cr_expect(ctr_exited(&r, 0), "createRuntime #%d: %s", i, r.err);
                cr_expect_lt(ms, 200.0, "createRuntime took %.1f ms", ms);
                cr_log_info("xmem-hook createRuntime #%d: %.1f ms", i, ms);
        }
        cr_expect_eq(ctr_memd_count(&env), 1);
        snprintf(path, sizeof(path), "/proc/%d/root%s/etc/ld.so.preload", (int)child, env.rootfs);
        cr_expect(ctr_read_file(path, text, sizeof(text)) &&
                      strcmp(text, "/run/xmem-shim/libxmem-shim.so\n") == 0,
                  "preload in the container's mount ns: '%s'", text);
        snprintf(path, sizeof(path), "%s/etc/ld.so.preload", env.rootfs);
        cr_expect(ctr_read_file(path, text, sizeof(text)) && text[0] == 0,
                  "the host's view of the rootfs changed: '%s'", text);
        snprintf(path, sizeof(path), "/proc/%d/root%s/run/xmem/memd.sock", (int)child, env.rootfs);
        cr_expect_eq(access(path, F_OK), 0, "no memd socket in the container's mount ns");
        snprintf(state, sizeof(state),
                 "{\"ociVersion\":\"1.0.2\",\"id\":\"direct\",\"status\":\"stopped\","
                 "\"bundle\":\"%s\"}", bundle);
        for (int i = 0; i < 2; i++) {
                ms = hook_direct("poststop", state, &r);
                cr_expect(ctr_exited(&r, 0), "poststop #%d: %s", i, r.err);
        }
        cr_expect_eq(ctr_memd_count(&env), 0);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        rmdir(cg);
}

/* Do memd and the shim keep a process under its local limit yet? A container
 * at half the tests' scale, same 8x ratio: 256 MiB through a 32 MiB local
 * limit. NULL when they do, else why not. */
static const char *paging_probe(void)
{
        static char why[512];
        char bundle[256];
        struct cmd_result r;

        ctr_bundle(&env, "probe", (const char *const[]){ "/bin/container_fill", "256", NULL },
                   "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"32M\","
                   "\"io.xmem.external\":\"512M\"}",
                   env.sock, bundle, sizeof(bundle));
        ctr_runc_run(&env, NULL, bundle, "probe", 120, &r);
        if (ctr_exited(&r, 0) && strstr(r.out, "fill-ok 256 MiB"))
                return NULL;
        snprintf(why, sizeof(why),
                 "memd+shim do not yet keep a container under its local limit: probe (256 MiB "
                 "through 32M local) %s %d; see %s",
                 r.status >= 0 && WIFSIGNALED(r.status) ? "signal"
                 : r.status >= 0                        ? "exit"
                                                        : "timeout",
                 r.status >= 0 && WIFEXITED(r.status) ? WEXITSTATUS(r.status) : r.status,
                 env.memd_log);
        return why;
}

static void need_paging(void)
{
        const char *why;

        need_root_runc();
        why = paging_probe();
        if (why) {
                char msg[512];
                snprintf(msg, sizeof(msg), "%s", why);
                if (!getenv("XMEM_KEEP_TMP"))
                        strcat(msg, " (rerun with XMEM_KEEP_TMP=1 to keep it)");
                ctr_env_cleanup(&env); /* a skip does not run .fini */
                cr_skip_test("%s", msg);
        }
}

Test(containers, runc_512m_through_64m_local, .init = setup_memd, .fini = teardown, .timeout = 300)
{
        char bundle[256];
        struct cmd_result r;

        need_paging();
        ctr_bundle(&env, "big", fill_args, xmem_64m, env.sock, bundle, sizeof(bundle));
        ctr_runc_run(&env, NULL, bundle, "big", 240, &r);
        cr_expect(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        cr_expect_eq(ctr_memd_count(&env), 0);
}

Test(containers, runtime_512m_through_64m_local, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        char bundle[256];
        struct cmd_result r;

        need_paging();
        ctr_bundle(&env, "rt", fill_args, xmem_64m, NULL, bundle, sizeof(bundle));
        runtime_run(bundle, "rt", 240, &r);
        cr_expect(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        cr_expect_eq(ctr_memd_count(&env), 0);
}

Test(containers, podman_512m_through_64m_local, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        char hooks[256], path[300], ann[64];
        json_object *h, *hook, *args;
        struct cmd_result r;

        ctr_run((const char *const[]){ "podman", "--version", NULL }, NULL, 10, &r);
        if (!ctr_exited(&r, 0))
                cr_skip_test("podman is not installed");
        need_paging();
        /* the build's hooks.d file, given the test memd's socket */
        snprintf(hooks, sizeof(hooks), "%s/hooks.d", env.dir);
        mkdir(hooks, 0755);
        h = json_object_from_file(getenv("XMEM_HOOKS_D"));
        cr_assert_not_null(h, "%s", getenv("XMEM_HOOKS_D"));
        hook = json_object_object_get(h, "hook");
        args = json_object_object_get(hook, "args");
        json_object_array_add(args, json_object_new_string("--socket"));
        json_object_array_add(args, json_object_new_string(env.sock));
        json_object_array_add(args, json_object_new_string("--shim"));
        json_object_array_add(args, json_object_new_string(getenv("XMEM_SHIM")));
        snprintf(path, sizeof(path), "%s/xmem.json", hooks);
        cr_assert_eq(json_object_to_file(path, h), 0);
        json_object_put(h);
        snprintf(ann, sizeof(ann), "io.xmem.local-limit=64M");
        ctr_run((const char *const[]){ "podman", "--runtime", "runc", "--cgroup-manager",
                                       "cgroupfs", "--events-backend", "file", "run", "--rm",
                                       "--ulimit", "nofile=1024:1024", "--ulimit",
                                       "nproc=1024:1024", "--network", "none", "--hooks-dir",
                                       hooks, "--annotation", "io.xmem.enable=true",
                                       "--annotation", ann, "--annotation",
                                       "io.xmem.external=1G", "--rootfs", env.rootfs,
                                       "/bin/container_fill", "512", NULL },
                NULL, 240, &r);
        cr_expect(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        cr_expect_eq(ctr_memd_count(&env), 0);
}

static pid_t run_async(const char *bundle, const char *name)
{
        pid_t p = fork();

        if (p == 0) {
                struct cmd_result r;
                ctr_runc_run(&env, NULL, bundle, name, 240, &r);
                _exit(ctr_exited(&r, 0) && strstr(r.out, "fill-ok") ? 0 : 1);
        }
        return p;
}

Test(containers, two_containers_and_kill_frees, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        char b1[256], b2[256], b3[256];
        int s1, s2, n = -1;
        pid_t p1, p2, p3;

        need_paging();
        ctr_bundle(&env, "two-a", (const char *const[]){ "/bin/container_fill", "256", NULL },
                   "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"32M\"}", env.sock, b1,
                   sizeof(b1));
        ctr_bundle(&env, "two-b", (const char *const[]){ "/bin/container_fill", "256", NULL },
                   xmem_64m, env.sock, b2, sizeof(b2));
        p1 = run_async(b1, "two-a");
        p2 = run_async(b2, "two-b");
        waitpid(p1, &s1, 0), waitpid(p2, &s2, 0);
        cr_expect(WIFEXITED(s1) && WEXITSTATUS(s1) == 0, "two-a failed");
        cr_expect(WIFEXITED(s2) && WEXITSTATUS(s2) == 0, "two-b failed");
        cr_expect_eq(ctr_memd_count(&env), 0);

        /* a container killed while it holds external memory is detached */
        ctr_bundle(&env, "killed", (const char *const[]){ "/bin/container_fill", "128", "600", NULL },
                   xmem_64m, env.sock, b3, sizeof(b3));
        p3 = run_async(b3, "killed");
        for (int i = 0; i < 300 && ctr_memd_count(&env) != 1; i++)
                usleep(100000);
        cr_assert_eq(ctr_memd_count(&env), 1, "the container did not attach");
        sleep(2);
        ctr_run((const char *const[]){ "runc", "--root", env.runc_root, "kill", "killed", "KILL",
                                       NULL },
                NULL, 10, &(struct cmd_result){});
        waitpid(p3, NULL, 0);
        for (int i = 0; i < 100 && (n = ctr_memd_count(&env)) != 0; i++)
                usleep(100000);
        cr_expect_eq(n, 0, "memd still holds the killed container");
}
