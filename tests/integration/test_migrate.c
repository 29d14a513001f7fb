/* test_migrate.c: a container's memory elsewhere, on real runc containers
 * (lifecycle.c): a new container from a snapshot (io.xmem.restore, xmemctl
 * restore --new; its data found by a named root), ten clones of a 1 GiB
 * snapshot that add nothing to the pool, a move to another appliance while
 * the workload runs, and a second memd in its own network namespace reading
 * the first host's data without a copy. Root; skips without runc. */
#include "lifecycle.c"

Test(migrate, restore_into_new_containers, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, b = {.pid = -1}, n = {.pid = -1};
        char na[64], nb[64], nn[64], snap[80], line[256];
        struct harness_cg *cg;
        struct cmd_result r;
        unsigned ext = 0, local = 0;

        need_root_runc();
        snprintf(na, sizeof(na), "lc-%d-src", (int)getpid());
        snprintf(nb, sizeof(nb), "lc-%d-dst", (int)getpid());
        snprintf(nn, sizeof(nn), "lc-%d-new", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-snap", (int)getpid());
        start_workload(&a, na, 64);
        ask(&a, "write 7", "wrote 7");
        ask(&a, "root", "root 0");
        cr_assert(ctl(&r, (const char *const[]){"checkpoint", na, "--name", snap, NULL}), "%s",
                  r.err);

        /* a new container from it: the data at the same addresses, found by its root */
        start_container(&b, nb, "restored", restore_annotations(snap, "1G"), "restored", line,
                        sizeof(line));
        cr_assert(sscanf(line, "restored ext=%u local=%u", &ext, &local) == 2 && ext >= 62, "%s",
                  line);
        ask(&b, "xcheck 7", "ok 7");
        /* its own copy: its writes are not the source's, nor the source's its */
        ask(&b, "write 8", "wrote 8");
        ask(&a, "write 9", "wrote 9");
        ask(&b, "xcheck 8", "ok 8");
        ask(&a, "xcheck 9", "ok 9");
        stop_workload(&b, nb);

        /* an unknown snapshot stops the container with memd's error */
        {
                char bundle[256];
                ctr_bundle(&env, "lc-nosnap",
                           (const char *const[]){"/bin/lifecycle_prog", "restored", NULL},
                           restore_annotations("lc-nosuch", "1G"), env.sock, bundle,
                           sizeof(bundle));
                ctr_runc_run(&env, NULL, bundle, "lc-nosnap", 60, &r);
                cr_expect(!ctr_exited(&r, 0), "started without its snapshot: %s", r.out);
                cr_expect(strstr(r.err, "no snapshot named lc-nosuch"), "%s", r.err);
        }

        /* xmemctl restore --new: an attached container's next process */
        cg = test_cg(nn);
        cr_assert(ctl(&r, (const char *const[]){"attach", nn, "--cgroup", cg->path, "--local-limit",
                                                "64M", "--external", "1G", "--policy",
                                                "external-first", NULL}),
                  "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"restore", snap, "--new", "lc-nosuch", NULL}));
        cr_expect(strstr(r.err, "no container lc-nosuch"), "%s", r.err);
        cr_expect(
            !ctl(&r, (const char *const[]){"restore", snap, "--new", nn, "--rollback", na, NULL}));
        cr_expect(strstr(r.err, "params.new: not with params.rollback"), "%s", r.err);
        cr_assert(ctl(&r, (const char *const[]){"restore", snap, "--new", nn, NULL}), "%s", r.err);
        cr_expect(strstr(r.out, nn) && strstr(r.out, "start from snapshot"), "%s", r.out);
        spawn_attached(&n, cg, nn, "restored");
        cr_assert(harness_child_follow(&n, "restored", 30000, line, sizeof(line)) >= 0, "%s", line);
        ask(&n, "xcheck 7", "ok 7");
        cr_expect(!ctl(&r, (const char *const[]){"restore", snap, "--new", nn, NULL}));
        cr_expect(strstr(r.err, "EBUSY"), "%s", r.err);
        harness_child_kill(&n);
        (void)ctl(&r, (const char *const[]){"detach", nn, "--force", NULL});
        stop_workload(&a, na);
        cr_expect(ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL}), "%s", r.err);
}

static void setup_big(void)
{
        pool_size = "3G";
        setup();
}

Test(migrate, ten_clones_share_the_snapshot, .init = setup_big, .fini = teardown, .timeout = 480)
{
        enum { CLONES = 10 };
        struct harness_child src = {.pid = -1}, c[CLONES];
        char name[CLONES][64], ns[64], snap[80], line[256];
        int64_t used0, used1, chunk = ctr_appliance_stat(&env, "chunk_size");
        struct cmd_result r;

        need_root_runc();
        snprintf(ns, sizeof(ns), "lc-%d-big", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-big-snap", (int)getpid());
        /* the source: 1000 MiB of data, checkpointed, then gone */
        start_container(&src, ns, "1000",
                        "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                        "\"io.xmem.external\":\"2G\",\"io.xmem.policy\":\"external-first\"}",
                        "ready", line, sizeof(line));
        ask(&src, "root", "root 0");
        cr_assert(ctl(&r, (const char *const[]){"--json", "checkpoint", ns, "--name", snap, NULL}),
                  "%s", r.err);
        cr_expect(harness_json_u64(r.out, "data_bytes") >= 990ULL << 20, "%s", r.out);
        stop_workload(&src, ns);
        used0 = ctr_appliance_stat(&env, "chunks_used");
        for (int i = 0; i < CLONES; i++) {
                c[i] = (struct harness_child){.pid = -1};
                snprintf(name[i], sizeof(name[i]), "lc-%d-clone%d", (int)getpid(), i);
                start_container(&c[i], name[i], "restored", restore_annotations(snap, "2G"),
                                "restored", line, sizeof(line));
                ask(&c[i], "sample 0", "ok 0");
        }
        /* ten live containers, each reading its 1000 MiB snapshot: the pool
         * holds the snapshot once, and what the clones wrote of their own */
        used1 = ctr_appliance_stat(&env, "chunks_used");
        cr_log_info(
            "pool: %lld chunks of %lld bytes before the clones, %lld with 10 clones running",
            (long long)used0, (long long)chunk, (long long)used1);
        printf("# ten clones of a %lld MiB snapshot: pool +%lld MiB (a copy each: +%d MiB)\n",
               (long long)(used0 * chunk >> 20), (long long)((used1 - used0) * chunk >> 20),
               CLONES * 1000);
        cr_expect_lt((used1 - used0) * chunk, 256LL << 20, "the clones copied: %lld -> %lld chunks",
                     (long long)used0, (long long)used1);
        for (int i = 0; i < CLONES; i++)
                stop_workload(&c[i], name[i]);
        cr_expect(ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL}), "%s", r.err);
}

static void setup_two(void)
{
        if (!harness_is_root())
                return;
        ctr_env_init(&env);
        env.want_second = true;
        ctr_env_setup_with(&env, (const char *const[]){need_env("XMEM_LIFECYCLE_PROG"), NULL});
}

/* xmemctl move ID --to-appliance TO in MV, not waited for. */
static void move_async(struct harness_child *mv, const char *id, const char *to)
{
        harness_child_spawn(mv,
                            (const char *const[]){need_env("XMEM_CTL"), "--socket", env.sock,
                                                  "move", id, "--to-appliance", to, NULL},
                            NULL, NULL, true);
}

Test(migrate, move_between_appliances, .init = setup_two, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, mv = {.pid = -1}, late = {.pid = -1};
        char na[64], ann[512], line[256];
        const char *to = env.second.tcp_uri;
        int64_t a0, b0, b1;
        struct cmd_result r;
        int st;

        need_root_runc();
        snprintf(na, sizeof(na), "lc-%d-mv", (int)getpid());
        snprintf(ann, sizeof(ann),
                 "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                 "\"io.xmem.external\":\"1G\",\"io.xmem.policy\":\"external-first\","
                 "\"io.xmem.appliance\":\"%s\"}",
                 env.app.tcp_uri);
        start_container(&a, na, "128", ann, "ready", line, sizeof(line));
        ask(&a, "write 1", "wrote 1");
        a0 = ctr_appliance_stat(&env, "chunks_used");

        cr_expect(!ctl(&r, (const char *const[]){"move", na, "--to-appliance", "tcp://x:1", NULL}));
        cr_expect(strstr(r.err, "not one of memd's appliances"), "%s", r.err);
        cr_expect(
            !ctl(&r, (const char *const[]){"move", na, "--to-appliance", env.app.tcp_uri, NULL}));
        cr_expect(strstr(r.err, "already"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"move", na, NULL}));
        cr_expect(strstr(r.err, "move: --to-appliance is required"), "%s", r.err);

        /* the new appliance does not answer: the move waits on the
         * container's worker, memd serves on and refuses another lifecycle
         * change of the container; the failed move changes nothing */
        harness_sigstop(&env.second);
        move_async(&mv, na, to);
        usleep(500000);
        long t0 = harness_now_ms();
        cr_expect(ctl(&r, (const char *const[]){"list", NULL}), "%s", r.err);
        cr_expect_lt(harness_now_ms() - t0, 3000, "list waited for a move on a stopped appliance");
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", na, NULL}));
        cr_expect(strstr(r.err, "a move is in progress") && strstr(r.err, "EBUSY"), "%s", r.err);
        st = harness_child_wait(&mv, 60000);
        (void)harness_child_line(&mv, line, sizeof(line), 1000);
        kill(env.second.pid, SIGCONT);
        harness_child_kill(&mv);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) != 0, "a move to a stopped appliance: %s",
                  line);
        cr_expect(strstr(line, "ETIMEDOUT"), "%s", line);
        ask(&a, "xcheck 1", "ok 1");
        b0 = ctr_proc_stat(&env.second, "chunks_used");

        /* the move runs while the workload writes and verifies; a second
         * process starts in the container while the move waits for the new
         * appliance (its arena is made on the old one): moved too */
        harness_sigstop(&env.second);
        move_async(&mv, na, to);
        usleep(300000);
        harness_child_spawn(&late,
                            (const char *const[]){runc_path(), "--root", env.runc_root, "exec", na,
                                                  "/bin/lifecycle_prog", "16", NULL},
                            NULL, NULL, true);
        usleep(1000000);
        kill(env.second.pid, SIGCONT);
        ask(&a, "write 2", "wrote 2");
        ask(&a, "xcheck 2", "ok 2");
        st = harness_child_wait(&mv, 120000);
        (void)harness_child_line(&mv, line, sizeof(line), 1000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "move failed: %s", line);
        cr_expect(strstr(line, "2 arena(s)"), "not both processes moved: %s", line);
        harness_child_kill(&mv);
        cr_assert_eq(harness_child_follow(&late, "ready", 60000, line, sizeof(line)) >= 0, true,
                     "the process started during the move: %s", line);
        ask(&late, "write 5", "wrote 5");
        ask(&late, "xcheck 5", "ok 5");
        harness_child_say(&late, "exit");
        (void)harness_child_wait(&late, 10000);
        harness_child_kill(&late);
        ask(&a, "xcheck 2", "ok 2");
        ask(&a, "write 3", "wrote 3");
        ask(&a, "xcheck 3", "ok 3");
        /* the data went appliance to appliance: the second holds it now, the
         * first has let its regions go */
        b1 = ctr_proc_stat(&env.second, "chunks_used");
        cr_expect_geq(b1 - b0, 64 * 16, "the second appliance got %lld chunks",
                      (long long)(b1 - b0));
        cr_expect_lt(ctr_appliance_stat(&env, "chunks_used"), a0 / 4, "the first kept %lld chunks",
                     (long long)ctr_appliance_stat(&env, "chunks_used"));
        cr_assert(ctl(&r, (const char *const[]){"list", NULL}), "%s", r.err);
        /* back again: the second appliance has no --peer, so it refuses to copy */
        cr_expect(
            !ctl(&r, (const char *const[]){"move", na, "--to-appliance", env.app.tcp_uri, NULL}));
        cr_expect(strstr(r.err, "--peer"), "%s", r.err);
        ask(&a, "xcheck 3", "ok 3");
        /* a memd killed now finds the container on the new regions (the
         * state file named them before the first write-back to them) */
        ctr_memd_restart(&env, SIGKILL);
        ask(&a, "xcheck 3", "ok 3");
        ask(&a, "write 4", "wrote 4");
        ask(&a, "xcheck 4", "ok 4");
        cr_assert(ctl(&r, (const char *const[]){"--json", "list", NULL}), "%s", r.err);
        cr_expect(strstr(r.out, strrchr(to, '/') + 1), /* JSON escapes the slashes */
                  "list after the restart: %s", r.out);
        stop_workload(&a, na);
}

/* A second "host": a network namespace reached over a veth pair. */
static char netns[64], veth[16];
static int subnet;

static void netns_down(void)
{
        char cmd[256];

        if (!netns[0])
                return;
        /* the veth pair goes with the namespace */
        snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null; ip link del %sa 2>/dev/null",
                 netns, veth);
        (void)!system(cmd);
        netns[0] = 0;
}

static void setup_hosts(void)
{
        char cmd[1024];

        if (!harness_is_root())
                return;
        subnet = 10 + getpid() % 240;
        snprintf(netns, sizeof(netns), "lc-%d-host2", (int)getpid());
        snprintf(veth, sizeof(veth), "lc%d", (int)getpid() % 10000000);
        snprintf(cmd, sizeof(cmd),
                 "set -e; ip netns add %1$s; ip link add %2$sa type veth peer name %2$sb; "
                 "ip link set %2$sb netns %1$s; ip addr add 10.231.%3$d.1/24 dev %2$sa; "
                 "ip link set %2$sa up; ip -n %1$s addr add 10.231.%3$d.2/24 dev %2$sb; "
                 "ip -n %1$s link set %2$sb up; ip -n %1$s link set lo up",
                 netns, veth, subnet);
        if (system(cmd) != 0) {
                netns_down();
                return; /* the test skips */
        }
        ctr_env_init(&env);
        snprintf(env.appliance_uri, sizeof(env.appliance_uri), "tcp://10.231.%d.1:%u", subnet,
                 (unsigned)harness_free_port());
        ctr_env_setup_with(&env, (const char *const[]){need_env("XMEM_LIFECYCLE_PROG"), NULL});
}

static void teardown_hosts(void)
{
        teardown();
        netns_down();
}

/* A second memd in NETNS, with its own sockets and state directory in DIR,
 * on the same appliance by its address there. */
static pid_t memd2_start(const char *dir, char *sock, size_t len)
{
        char cmd[1024];
        pid_t pid;

        snprintf(sock, len, "%s/memd.sock", dir);
        snprintf(cmd, sizeof(cmd),
                 /* nsenter, not ip netns exec: that one mounts a sysfs of the new
                  * namespace over /sys, without the cgroup hierarchies */
                 "exec nsenter --net=/run/netns/%s %s --socket %s --state-dir %s/state "
                 "--appliance %s "
                 "--log-level debug 2>%s/memd.log",
                 netns, need_env("XMEM_MEMD"), sock, dir, env.appliance_uri, dir);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                execl("/bin/sh", "sh", "-c", cmd, NULL);
                _exit(127);
        }
        for (int i = 0; i < 200; i++) {
                int fd = harness_connect_unix(sock);
                if (fd >= 0) {
                        close(fd);
                        return pid;
                }
                cr_assert(waitpid(pid, NULL, WNOHANG) == 0, "memd in %s exited, see %s/memd.log",
                          netns, dir);
                usleep(50000);
        }
        cr_assert_fail("memd in %s did not listen", netns);
        return -1;
}

Test(migrate, reattach_on_another_host_without_copying, .init = setup_hosts, .fini = teardown_hosts,
     .timeout = 240)
{
        struct harness_child a = {.pid = -1}, b = {.pid = -1};
        char na[64], nb[64], snap[80], line[256], dir2[200], sock2[256], from[512], to[512];
        char bundle[256], ns1[64], ns2[64];
        struct cmd_result r;
        int64_t used0, used1;
        unsigned ext = 0, local = 0;
        pid_t memd2;

        need_root_runc();
        if (!netns[0])
                harness_skip(teardown_hosts, "cannot make a network namespace and veth pair here");
        snprintf(na, sizeof(na), "lc-%d-h1", (int)getpid());
        snprintf(nb, sizeof(nb), "lc-%d-h2", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-h1-snap", (int)getpid());
        /* host 1: a container writes, names its data, is checkpointed, and ends */
        start_workload(&a, na, 64);
        ask(&a, "write 7", "wrote 7");
        ask(&a, "root", "root 0");
        cr_assert(ctl(&r, (const char *const[]){"checkpoint", na, "--name", snap, NULL}), "%s",
                  r.err);
        stop_workload(&a, na);

        /* host 2: its own memd, network namespace, sockets and state directory;
         * the manifest is all that travels */
        snprintf(dir2, sizeof(dir2), "%s/host2", env.dir);
        cr_assert_eq(mkdir(dir2, 0755), 0);
        memd2 = memd2_start(dir2, sock2, sizeof(sock2));
        snprintf(ns1, sizeof(ns1), "/proc/%d/ns/net", (int)env.memd_pid);
        snprintf(ns2, sizeof(ns2), "/proc/%d/ns/net", (int)memd2);
        {
                char l1[64] = "", l2[64] = "";
                cr_assert(readlink(ns1, l1, sizeof(l1) - 1) > 0);
                /* memd2 is sh's exec of nsenter's exec: the same pid */
                for (int i = 0;
                     i < 100 && readlink(ns2, l2, sizeof(l2) - 1) > 0 && strcmp(l1, l2) == 0; i++)
                        usleep(20000);
                cr_expect_str_neq(l1, l2, "the second memd shares the first's network namespace");
        }
        snprintf(from, sizeof(from), "%s/memd/state/snapshots/%s.json", env.dir, snap);
        snprintf(to, sizeof(to), "%s/state/snapshots/%s.json", dir2, snap);
        {
                char cmd[1200];
                snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
                cr_assert_eq(system(cmd), 0);
        }
        used0 = ctr_appliance_stat(&env, "chunks_used");
        ctr_bundle(&env, nb, (const char *const[]){"/bin/lifecycle_prog", "restored", NULL},
                   restore_annotations(snap, "1G"), sock2, bundle, sizeof(bundle));
        harness_child_spawn(&b,
                            (const char *const[]){runc_path(), "--root", env.runc_root, "run",
                                                  "--bundle", bundle, nb, NULL},
                            NULL, NULL, true);
        cr_assert(harness_child_follow(&b, "restored", 60000, line, sizeof(line)) >= 0, "%s", line);
        cr_assert(sscanf(line, "restored ext=%u local=%u", &ext, &local) == 2 && ext >= 62, "%s",
                  line);
        ask(&b, "xcheck 7", "ok 7");
        used1 = ctr_appliance_stat(&env, "chunks_used");
        printf("# host 2 read host 1's %u MiB: the pool went from %lld to %lld chunks\n", ext,
               (long long)used0, (long long)used1);
        cr_expect_lt(used1 - used0, 64, "data was copied: %lld -> %lld chunks", (long long)used0,
                     (long long)used1);
        stop_workload(&b, nb);
        kill(memd2, SIGTERM);
        waitpid(memd2, NULL, 0);
}

/* Attach container ID in CG, starting from snapshot SNAP. */
static void attach_restored(const char *id, const struct harness_cg *cg, const char *snap)
{
        struct cmd_result r;

        cr_assert(ctl(&r, (const char *const[]){"attach", id, "--cgroup", cg->path, "--local-limit",
                                                "64M", "--external", "256M", "--policy",
                                                "external-first", "--restore", snap, NULL}),
                  "%s", r.err);
}

Test(migrate, through_an_exec_and_at_a_taken_address, .init = setup, .fini = teardown,
     .timeout = 120)
{
        struct harness_child src = {.pid = -1}, dst = {.pid = -1}, via = {.pid = -1};
        char ns[64], nd[64], nv[64], snap[80], line[256];
        struct harness_cg *cs, *cd, *cv;
        const char *crypto = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";
        struct cmd_result r;
        int st;

        need_root_runc();
        if (access("/usr/bin/setarch", X_OK) != 0 || access(crypto, R_OK) != 0 ||
            (harness_cg_version() != 2 && access("/sys/fs/cgroup/freezer", F_OK) != 0))
                harness_skip(teardown, "needs setarch, %s and a cgroup freezer (v1 or v2)", crypto);
        snprintf(ns, sizeof(ns), "lc-%d-fixsrc", (int)getpid());
        snprintf(nd, sizeof(nd), "lc-%d-fixdst", (int)getpid());
        snprintf(nv, sizeof(nv), "lc-%d-fixvia", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-fix-snap", (int)getpid());
        cs = test_cg(ns);
        cd = test_cg(nd);
        cv = test_cg(nv);
        /* the source, with the same layout every run (no ASLR) */
        cr_assert(ctl(&r, (const char *const[]){"attach", ns, "--cgroup", cs->path, "--local-limit",
                                                "64M", "--external", "256M", "--policy",
                                                "external-first", NULL}),
                  "%s", r.err);
        spawn_attached_with(&src, cs, ns, "8", NULL, true);
        cr_assert(harness_child_follow(&src, "ready", 30000, line, sizeof(line)) >= 0, "%s", line);
        ask(&src, "root", "root 0");
        test_freezer(ns, src.pid);
        cr_assert(ctl(&r, (const char *const[]){"checkpoint", ns, "--name", snap, NULL}), "%s",
                  r.err);
        harness_child_kill(&src);
        /* through a wrapper: setarch (under the shim too) takes the
         * snapshot's arena first, then execs the program, which gets it again */
        attach_restored(nv, cv, snap);
        spawn_attached_with(&via, cv, nv, "restored", NULL, true);
        cr_assert(harness_child_follow(&via, "restored", 30000, line, sizeof(line)) >= 0, "%s",
                  line);
        ask(&via, "xcheck 0", "ok 0");
        harness_child_kill(&via);
        /* the restored process loads a large library first: with the same
         * layout, it lies where the snapshot's arena was */
        attach_restored(nd, cd, snap);
        spawn_attached_with(&dst, cd, nd, "restored", crypto, true);
        (void)harness_child_follow(&dst, "xmem-shim", 30000, line, sizeof(line));
        st = harness_child_wait(&dst, 30000);
        cr_expect(strstr(line, "the snapshot's arena cannot be mapped at its address") &&
                      strstr(line, "the address is taken"),
                  "%s", line);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 127, "status %d", st);
        harness_child_kill(&dst);
        (void)ctl(&r, (const char *const[]){"detach", nd, "--force", NULL});
        (void)ctl(&r, (const char *const[]){"detach", nv, "--force", NULL});
        (void)ctl(&r, (const char *const[]){"detach", ns, "--force", NULL});
        (void)ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL});
}
