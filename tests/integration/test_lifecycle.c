/* test_lifecycle.c: a container's life cycle through xmemctl, on real runc
 * containers attached by the hook to a real memd and appliance: checkpoint
 * (frozen, flushed, snapshotted on the appliance, manifest written, thawed),
 * snapshots, delete-snapshot, restore --rollback (a verifying workload sees
 * the snapshot's contents again), top, and bad input (unknown container or
 * snapshot, a snapshot of another container, bad names, an appliance that
 * does not answer: clear error, container thawed, nothing changed). Root;
 * skips without runc. */
#include "containers.c"

static struct ctr_env env;

static const char *pool_size; /* the appliance's, for the tests that need more */

static void setup(void)
{
        if (!harness_is_root())
                return;
        ctr_env_init(&env);
        if (pool_size)
                snprintf(env.pool_size, sizeof(env.pool_size), "%s", pool_size);
        /* the workload beside container_fill in the rootfs */
        ctr_env_setup_with(&env, (const char *const[]){need_env("XMEM_FILL"),
                                                       need_env("XMEM_LIFECYCLE_PROG"), NULL});
}

static void teardown(void)
{
        if (env.dir[0])
                ctr_env_cleanup(&env);
}

static void need_root_runc(void)
{
        struct cmd_result r;

        if (!harness_is_root())
                harness_skip(teardown, "container tests need root");
        ctr_run((const char *const[]){"runc", "--version", NULL}, NULL, 10, &r);
        if (!ctr_exited(&r, 0))
                harness_skip(teardown, "runc is not installed");
        if (access("/sys/fs/cgroup/freezer/freezer.state", F_OK) != 0 &&
            access("/sys/fs/cgroup/freezer", F_OK) != 0 &&
            access("/sys/fs/cgroup/cgroup.freeze", F_OK) != 0 &&
            access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0)
                harness_skip(teardown, "no cgroup freezer on this host");
}

/* external-first: the workload's data is in its arena, which is what a
 * checkpoint holds (local memory is not in it: docs/memd.md "Checkpoints") */
static const char *xmem_64m = "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.external\":\"1G\",\"io.xmem.policy\":\"external-first\"}";

/* runc's path (harness_child_spawn does not search PATH). */
static const char *runc_path(void)
{
        static char found[256];
        const char *path = getenv("PATH") ?: "/usr/sbin:/usr/bin:/sbin:/bin";

        while (!found[0] && *path) {
                size_t n = strcspn(path, ":");
                snprintf(found, sizeof(found), "%.*s/runc", (int)n, path);
                if (access(found, X_OK) != 0)
                        found[0] = 0;
                path += n + (path[n] == ':');
        }
        return found[0] ? found : "runc";
}

/* Start container NAME running the workload with ARG ("MIB", or "restored")
 * and ANNOTATIONS; wait for its first line, starting with WANT. */
static void start_container(struct harness_child *c, const char *name, const char *arg,
                            const char *annotations, const char *want, char *line, size_t len)
{
        char bundle[256];

        ctr_bundle(&env, name, (const char *const[]){"/bin/lifecycle_prog", arg, NULL}, annotations,
                   env.sock, bundle, sizeof(bundle));
        harness_child_spawn(c,
                            (const char *const[]){runc_path(), "--root", env.runc_root, "run",
                                                  "--bundle", bundle, name, NULL},
                            NULL, NULL, true);
        cr_assert_eq(harness_child_follow(c, want, 60000, line, len) >= 0, true, "%s: not %s: %s",
                     name, want, line);
}

/* A running container NAME with the workload over MIB MiB, "ready"; nearly
 * all of it in the arena (the allocator's first block may be local). */
static void start_workload(struct harness_child *c, const char *name, unsigned mib)
{
        char arg[16], line[256];
        unsigned ext = 0, local = 0;

        snprintf(arg, sizeof(arg), "%u", mib);
        start_container(c, name, arg, xmem_64m, "ready", line, sizeof(line));
        cr_assert(sscanf(line, "ready ext=%u local=%u", &ext, &local) == 2 && local <= 2, "%s",
                  line);
}

static void stop_workload(struct harness_child *c, const char *name)
{
        if (c->pid > 0) {
                harness_child_say(c, "exit");
                (void)harness_child_wait(c, 10000);
        }
        harness_child_kill(c);
        ctr_run(
            (const char *const[]){"runc", "--root", env.runc_root, "delete", "--force", name, NULL},
            NULL, 10, &(struct cmd_result){});
}

/* Say CMD, expect the answer WANT (prefix) within 60 s. */
static void ask(struct harness_child *c, const char *cmd, const char *want)
{
        char line[256];

        harness_child_say(c, cmd);
        cr_assert(harness_child_line(c, line, sizeof(line), 60000) == 1, "%s: no answer", cmd);
        cr_assert(strncmp(line, want, strlen(want)) == 0, "%s: '%s', want '%s'", cmd, line, want);
}

/* xmemctl --socket SOCK ARGS...: true when it exited 0. */
static bool ctl(struct cmd_result *r, const char *const *args)
{
        const char *argv[16] = {getenv("XMEM_CTL"), "--socket", env.sock};
        size_t n = 3;

        for (; *args && n < 15; args++)
                argv[n++] = *args;
        argv[n] = NULL;
        ctr_run(argv, NULL, 60, r);
        return ctr_exited(r, 0);
}

static void freezer_state(const char *name, char *buf, size_t len)
{
        char path[256];

        snprintf(path, sizeof(path), "/sys/fs/cgroup/freezer%s/%s/freezer.state", env.cgroup_parent,
                 name);
        if (!ctr_read_file(path, buf, len))
                snprintf(buf, len, "(none)");
}

Test(lifecycle, checkpoint_rollback_and_snapshots, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child c = {.pid = -1};
        char name[64], snap[80], state[64];
        struct cmd_result r;
        int64_t snaps0;

        need_root_runc();
        snprintf(name, sizeof(name), "lc-%d-a", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-snap", (int)getpid());
        start_workload(&c, name, 128);
        snaps0 = ctr_appliance_stat(&env, "snapshots");

        cr_assert(
            ctl(&r, (const char *const[]){"--json", "checkpoint", name, "--name", snap, NULL}),
            "checkpoint: %s%s", r.out, r.err);
        cr_expect(strstr(r.out, "\"ok\":true") && strstr(r.out, "\"arenas\":1"), "%s", r.out);
        cr_expect(harness_json_u64(r.out, "data_bytes") >= 126ULL << 20, "%s", r.out);
        cr_expect(ctr_appliance_stat(&env, "snapshots") > snaps0, "no snapshot on the appliance");
        freezer_state(name, state, sizeof(state));
        cr_expect(strncmp(state, "THAWED", 6) == 0, "left %s", state);
        /* the workload runs on: a new generation everywhere, verified */
        ask(&c, "write 1", "wrote 1");
        ask(&c, "check 1", "ok 1");

        /* listed, for this container and for all */
        cr_assert(ctl(&r, (const char *const[]){"snapshots", name, NULL}), "%s", r.err);
        cr_expect(strstr(r.out, snap), "%s", r.out);
        cr_assert(ctl(&r, (const char *const[]){"--json", "snapshots", NULL}), "%s", r.err);
        cr_expect(strstr(r.out, snap), "%s", r.out);

        /* rolled back: the running process sees generation 0 again */
        cr_assert(ctl(&r, (const char *const[]){"restore", snap, "--rollback", name, NULL}),
                  "restore: %s%s", r.out, r.err);
        cr_expect(strstr(r.out, "rolled"), "%s", r.out);
        ask(&c, "xcheck 0", "ok 0");
        freezer_state(name, state, sizeof(state));
        cr_expect(strncmp(state, "THAWED", 6) == 0, "left %s", state);
        /* and it keeps working: write, and roll back a second time */
        ask(&c, "write 2", "wrote 2");
        ask(&c, "check 2", "ok 2");
        cr_assert(ctl(&r, (const char *const[]){"restore", snap, "--rollback", name, NULL}), "%s",
                  r.err);
        ask(&c, "xcheck 0", "ok 0");

        /* deleted: gone from the list and from the appliance */
        cr_assert(ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL}), "%s", r.err);
        cr_assert(ctl(&r, (const char *const[]){"snapshots", NULL}), "%s", r.err);
        cr_expect(!strstr(r.out, snap), "%s", r.out);
        cr_expect_eq(ctr_appliance_stat(&env, "snapshots"), snaps0, "snapshot regions left");
        cr_expect(!ctl(&r, (const char *const[]){"restore", snap, "--rollback", name, NULL}));
        cr_expect(strstr(r.err, "no snapshot named"), "%s", r.err);
        stop_workload(&c, name);
}

Test(lifecycle, bad_input_changes_nothing, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, b = {.pid = -1};
        char na[64], nb[64], snap[80], longname[200], state[64];
        struct cmd_result r;

        need_root_runc();
        snprintf(na, sizeof(na), "lc-%d-a", (int)getpid());
        snprintf(nb, sizeof(nb), "lc-%d-b", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-snap", (int)getpid());
        memset(longname, 'x', 129);
        longname[129] = 0;
        start_workload(&a, na, 16);
        start_workload(&b, nb, 16);

        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", "lc-nosuch", NULL}));
        cr_expect(strstr(r.err, "no container lc-nosuch") && strstr(r.err, "ENOENT"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", na, "--name", "a/b", NULL}));
        cr_expect(strstr(r.err, "params.name") && strstr(r.err, "no slashes"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", na, "--name", longname, NULL}));
        cr_expect(strstr(r.err, "params.name"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", NULL}));
        cr_expect(strstr(r.err, "checkpoint: missing operand"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"restore", "x", NULL}));
        cr_expect(strstr(r.err, "--rollback ID or --new ID is required"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"delete-snapshot", "lc-nosuch", NULL}));
        cr_expect(strstr(r.err, "no snapshot named lc-nosuch"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"delete-snapshot", "../../etc/passwd", NULL}));
        cr_expect(strstr(r.err, "params.name"), "%s", r.err);

        /* a snapshot of A cannot roll B back; a second one of the same name is refused */
        cr_assert(ctl(&r, (const char *const[]){"checkpoint", na, "--name", snap, NULL}), "%s",
                  r.err);
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", nb, "--name", snap, NULL}));
        cr_expect(strstr(r.err, "exists already") && strstr(r.err, "EEXIST"), "%s", r.err);
        ask(&b, "write 3", "wrote 3");
        cr_expect(!ctl(&r, (const char *const[]){"restore", snap, "--rollback", nb, NULL}));
        cr_expect(strstr(r.err, "is of container") && strstr(r.err, na), "%s", r.err);
        ask(&b, "check 3", "ok 3");

        /* the appliance stops answering: the checkpoint fails, A is thawed, no
         * snapshot is recorded */
        ask(&a, "write 4", "wrote 4");
        kill(env.app.pid, SIGSTOP);
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", na, "--name", "lc-down", NULL}));
        kill(env.app.pid, SIGCONT);
        cr_expect(strstr(r.err, "writing back process") && strstr(r.err, "ETIMEDOUT"), "%s", r.err);
        freezer_state(na, state, sizeof(state));
        cr_expect(strncmp(state, "THAWED", 6) == 0, "left %s", state);
        cr_assert(ctl(&r, (const char *const[]){"snapshots", na, NULL}), "%s", r.err);
        cr_expect(!strstr(r.out, "lc-down") && strstr(r.out, snap), "%s", r.out);
        ask(&a, "check 4", "ok 4");
        cr_expect(ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL}), "%s", r.err);
        stop_workload(&a, na);
        stop_workload(&b, nb);
}

Test(lifecycle, top_shows_every_container, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child c = {.pid = -1};
        struct cmd_result r;
        char name[64];

        need_root_runc();
        snprintf(name, sizeof(name), "lc-%d-top", (int)getpid());
        start_workload(&c, name, 128);
        harness_child_say(&c, "write 5"); /* faults while top samples */
        cr_assert(ctl(&r, (const char *const[]){"--json", "top", "--interval", "0.5", "--count",
                                                "3", NULL}),
                  "%s", r.err);
        {
                int lines = 0;
                for (const char *p = r.out; (p = strchr(p, '\n')); p++)
                        lines++;
                cr_expect_eq(lines, 3, "one JSON object per interval: %s", r.out);
        }
        cr_expect(strstr(r.out, name) && strstr(r.out, "\"faults_per_s\"") &&
                      strstr(r.out, "\"p99_fault_us\"") && strstr(r.out, "\"in_mb_per_s\""),
                  "%s", r.out);
        cr_expect(ctl(&r, (const char *const[]){"top", "--count", "1", "--interval", "0.1", NULL}),
                  "%s", r.err);
        cr_expect(strstr(r.out, "FAULTS/s") && strstr(r.out, name), "%s", r.out);
        cr_expect(!ctl(&r, (const char *const[]){"top", "--interval", "0", NULL}));
        cr_expect(strstr(r.err, "--interval"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"top", "--count", "x", NULL}));
        cr_expect(strstr(r.err, "--count"), "%s", r.err);
        stop_workload(&c, name);
}

/* The workload with ARG under the shim, in CG, on memd's socket of container
 * ID (attached with xmemctl, not a runc container). */
static void spawn_attached(struct harness_child *c, const struct harness_cg *cg, const char *id,
                           const char *arg)
{
        char dir[200], sock[320], pre[300];

        snprintf(dir, sizeof(dir), "%.199s", env.sock);
        *strrchr(dir, '/') = 0;
        snprintf(sock, sizeof(sock), "XMEM_SOCKET=%s/containers/%s/memd.sock", dir, id);
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", need_env("XMEM_SHIM"));
        harness_child_spawn(c, (const char *const[]){need_env("XMEM_LIFECYCLE_PROG"), arg, NULL},
                            (const char *const[]){pre, sock, NULL}, cg, true);
}

/* The annotations of a container started from snapshot SNAP. */
static const char *restore_annotations(const char *snap, const char *external)
{
        static char buf[512];

        snprintf(buf, sizeof(buf),
                 "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                 "\"io.xmem.external\":\"%s\",\"io.xmem.policy\":\"external-first\","
                 "\"io.xmem.restore\":\"%s\"}",
                 external, snap);
        return buf;
}

Test(lifecycle, restore_into_new_containers, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, b = {.pid = -1}, n = {.pid = -1};
        char na[64], nb[64], nn[64], snap[80], line[256];
        struct harness_cg cg = {};
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
        cr_assert(harness_cg_create(&cg, nn));
        cr_assert(
            ctl(&r, (const char *const[]){"attach", nn, "--cgroup", cg.path, "--local-limit", "64M",
                                          "--external", "1G", "--policy", "external-first", NULL}),
            "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"restore", snap, "--new", "lc-nosuch", NULL}));
        cr_expect(strstr(r.err, "no container lc-nosuch"), "%s", r.err);
        cr_expect(
            !ctl(&r, (const char *const[]){"restore", snap, "--new", nn, "--rollback", na, NULL}));
        cr_expect(strstr(r.err, "params.new: not with params.rollback"), "%s", r.err);
        cr_assert(ctl(&r, (const char *const[]){"restore", snap, "--new", nn, NULL}), "%s", r.err);
        cr_expect(strstr(r.out, nn) && strstr(r.out, "start from snapshot"), "%s", r.out);
        spawn_attached(&n, &cg, nn, "restored");
        cr_assert(harness_child_follow(&n, "restored", 30000, line, sizeof(line)) >= 0, "%s", line);
        ask(&n, "xcheck 7", "ok 7");
        cr_expect(!ctl(&r, (const char *const[]){"restore", snap, "--new", nn, NULL}));
        cr_expect(strstr(r.err, "EBUSY"), "%s", r.err);
        harness_child_kill(&n);
        (void)ctl(&r, (const char *const[]){"detach", nn, "--force", NULL});
        harness_cg_remove(&cg);
        stop_workload(&a, na);
        cr_expect(ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL}), "%s", r.err);
}

static void setup_big(void)
{
        pool_size = "3G";
        setup();
}

Test(lifecycle, ten_clones_share_the_snapshot, .init = setup_big, .fini = teardown, .timeout = 480)
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

/* The container NAME's external quota as memd reports it. */
static int64_t quota_of(const char *name)
{
        return ctr_memd_stat(&env, name, "external_quota");
}

Test(lifecycle, resize_external_while_running, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, g = {.pid = -1}, race[2];
        char na[64], ng[64], snap[80], state[64], line[256];
        struct harness_cg cg = {};
        struct cmd_result r;

        need_root_runc();
        snprintf(na, sizeof(na), "lc-%d-rs", (int)getpid());
        snprintf(ng, sizeof(ng), "lc-%d-grow", (int)getpid());
        snprintf(snap, sizeof(snap), "lc-%d-rs-snap", (int)getpid());
        start_workload(&a, na, 128);

        /* hot remove: not below what is in use; down to 512M while it runs */
        cr_expect(!ctl(&r, (const char *const[]){"resize", na, "--external", "64M", NULL}));
        cr_expect(strstr(r.err, "more than 64M: free it first") && strstr(r.err, "EBUSY"), "%s",
                  r.err);
        cr_expect_eq(quota_of(na), 1LL << 30, "a refused resize changed the quota");
        cr_assert(ctl(&r, (const char *const[]){"resize", na, "--external", "512M", NULL}), "%s",
                  r.err);
        cr_expect(strstr(r.out, "external 512M"), "%s", r.out);
        cr_expect_eq(quota_of(na), 512LL << 20);
        ask(&a, "write 1", "wrote 1");
        ask(&a, "xcheck 1", "ok 1");
        /* hot add: back up to its arenas' size, not beyond */
        cr_expect(!ctl(&r, (const char *const[]){"resize", na, "--external", "2G", NULL}));
        cr_expect(strstr(r.err, "beyond container") && strstr(r.err, "external_max"), "%s", r.err);
        cr_assert(ctl(&r, (const char *const[]){"resize", na, "--external", "1G", NULL}), "%s",
                  r.err);
        ask(&a, "xcheck 1", "ok 1");

        /* bad input */
        cr_expect(!ctl(&r, (const char *const[]){"resize", "lc-nosuch", "--external", "1G", NULL}));
        cr_expect(strstr(r.err, "no container lc-nosuch"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"resize", na, "--external", "12Q", NULL}));
        cr_expect(strstr(r.err, "params.external"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"resize", na, NULL}));
        cr_expect(strstr(r.err, "resize: --external is required"), "%s", r.err);

        /* a rollback racing a resize: both are served (one after the other),
         * the container ends thawed with the snapshot's data */
        cr_assert(ctl(&r, (const char *const[]){"checkpoint", na, "--name", snap, NULL}), "%s",
                  r.err);
        ask(&a, "write 2", "wrote 2");
        for (int i = 0; i < 2; i++) {
                const char *rs[] = {"restore", snap, "--rollback", na, NULL};
                const char *rz[] = {"resize", na, "--external", "768M", NULL};
                const char *const *args = i ? rz : rs;
                const char *argv[8] = {need_env("XMEM_CTL"), "--socket", env.sock};
                for (int k = 0; args[k]; k++)
                        argv[3 + k] = args[k];
                race[i] = (struct harness_child){.pid = -1};
                harness_child_spawn(&race[i], argv, NULL, NULL, true);
        }
        for (int i = 0; i < 2; i++) {
                int st = harness_child_wait(&race[i], 60000);
                cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed: %d",
                          i ? "resize" : "rollback", st);
                harness_child_kill(&race[i]);
        }
        freezer_state(na, state, sizeof(state));
        cr_expect(strncmp(state, "THAWED", 6) == 0, "left %s", state);
        cr_expect_eq(quota_of(na), 768LL << 20);
        ask(&a, "xcheck 1", "ok 1");
        cr_expect(ctl(&r, (const char *const[]){"delete-snapshot", snap, NULL}), "%s", r.err);
        stop_workload(&a, na);

        /* growing past the first quota: an arena of 512M, a quota of 64M */
        cr_assert(harness_cg_create(&cg, ng));
        cr_assert(
            ctl(&r, (const char *const[]){"attach", ng, "--cgroup", cg.path, "--local-limit", "64M",
                                          "--external", "64M", "--external-max", "512M", "--policy",
                                          "external-first", "--local-alloc-limit", "4M", NULL}),
            "%s", r.err);
        spawn_attached(&g, &cg, ng, "32");
        cr_assert(harness_child_follow(&g, "ready", 30000, line, sizeof(line)) >= 0, "%s", line);
        ask(&g, "grow 64", "grow refused after");
        cr_assert(ctl(&r, (const char *const[]){"resize", ng, "--external", "256M", NULL}), "%s",
                  r.err);
        ask(&g, "grow 64", "grew 64");
        ask(&g, "write 3", "wrote 3");
        ask(&g, "xcheck 3", "ok 3");
        cr_expect(!ctl(&r, (const char *const[]){"resize", ng, "--external", "64M", NULL}));
        cr_expect(strstr(r.err, "EBUSY"), "%s", r.err);
        harness_child_kill(&g);
        (void)ctl(&r, (const char *const[]){"detach", ng, "--force", NULL});
        harness_cg_remove(&cg);
}

static void setup_two(void)
{
        if (!harness_is_root())
                return;
        ctr_env_init(&env);
        env.want_second = true;
        ctr_env_setup_with(&env, (const char *const[]){need_env("XMEM_LIFECYCLE_PROG"), NULL});
}

Test(lifecycle, move_between_appliances, .init = setup_two, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, mv = {.pid = -1};
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
        b0 = ctr_proc_stat(&env.second, "chunks_used");

        cr_expect(!ctl(&r, (const char *const[]){"move", na, "--to-appliance", "tcp://x:1", NULL}));
        cr_expect(strstr(r.err, "not one of memd's appliances"), "%s", r.err);
        cr_expect(
            !ctl(&r, (const char *const[]){"move", na, "--to-appliance", env.app.tcp_uri, NULL}));
        cr_expect(strstr(r.err, "already"), "%s", r.err);
        cr_expect(!ctl(&r, (const char *const[]){"move", na, NULL}));
        cr_expect(strstr(r.err, "move: --to-appliance is required"), "%s", r.err);

        /* the move runs while the workload writes and verifies */
        harness_child_spawn(&mv,
                            (const char *const[]){need_env("XMEM_CTL"), "--socket", env.sock,
                                                  "move", na, "--to-appliance", to, NULL},
                            NULL, NULL, true);
        ask(&a, "write 2", "wrote 2");
        ask(&a, "xcheck 2", "ok 2");
        st = harness_child_wait(&mv, 120000);
        (void)harness_child_line(&mv, line, sizeof(line), 1000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "move failed: %s", line);
        cr_expect(strstr(line, "copied by the appliances"), "%s", line);
        harness_child_kill(&mv);
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

Test(lifecycle, reattach_on_another_host_without_copying, .init = setup_hosts,
     .fini = teardown_hosts, .timeout = 240)
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

/* xmem-runtime ARGS... with XMEM_SOCKET on the test's memd. */
static void runtime(struct cmd_result *r, const char *const *args)
{
        const char *argv[16] = {need_env("XMEM_RUNTIME_EXE"), "--root", env.runc_root};
        char sock[200];
        size_t n = 3;

        for (; *args && n < 15; args++)
                argv[n++] = *args;
        argv[n] = NULL;
        snprintf(sock, sizeof(sock), "XMEM_SOCKET=%s", env.sock);
        ctr_run(argv, (const char *const[]){sock, NULL}, 120, r);
}

Test(lifecycle, criu_checkpoint_takes_the_external_memory, .init = setup, .fini = teardown,
     .timeout = 240)
{
        struct harness_child a = {.pid = -1};
        char na[64], img[200], marker[300], name[200] = "", state[64];
        struct cmd_result r, check;

        need_root_runc();
        snprintf(na, sizeof(na), "lc-%d-criu", (int)getpid());
        snprintf(img, sizeof(img), "%s/criu-image", env.dir);
        start_workload(&a, na, 32);
        ask(&a, "write 4", "wrote 4");
        /* the external memory is snapshotted by memd beside CRIU's image,
         * whatever CRIU then does */
        runtime(&r, (const char *const[]){"checkpoint", "--leave-running", "--image-path", img, na,
                                          NULL});
        snprintf(marker, sizeof(marker), "%s/xmem-snapshot", img);
        cr_assert(ctr_read_file(marker, name, sizeof(name)), "no %s: %s", marker, r.err);
        name[strcspn(name, "\n")] = 0;
        cr_assert(ctl(&check, (const char *const[]){"snapshots", na, NULL}), "%s", check.err);
        cr_expect(strstr(check.out, name), "%s not in %s", name, check.out);
        freezer_state(na, state, sizeof(state));
        cr_expect(strncmp(state, "THAWED", 6) == 0, "left %s", state);
        ask(&a, "xcheck 4", "ok 4");
        /* restoring such an image is refused with what to do instead */
        {
                struct cmd_result rr;
                runtime(&rr, (const char *const[]){"restore", "--image-path", img, "--bundle",
                                                   env.dir, "lc-criu-restored", NULL});
                cr_expect(!ctr_exited(&rr, 0));
                cr_expect(strstr(rr.err, "io.xmem.restore=") && strstr(rr.err, name), "%s", rr.err);
        }
        cr_expect(ctl(&check, (const char *const[]){"delete-snapshot", name, NULL}), "%s",
                  check.err);
        stop_workload(&a, na);
        /* CRIU itself: where it works it dumped the process state too; here it
         * cannot, and says why */
        if (ctr_exited(&r, 0))
                return;
        {
                struct cmd_result c;
                char why[200];
                ctr_run((const char *const[]){"criu", "check", NULL}, NULL, 30, &c);
                snprintf(why, sizeof(why), "%s",
                         strstr(ctr_exited(&c, 0) ? r.err : c.err, "Error") ?: r.err);
                why[strcspn(why, "\n")] = 0;
                if (!ctr_exited(&c, 0))
                        harness_skip(teardown,
                                     "CRIU does not work on this kernel (criu check: %s): only "
                                     "the external memory was checkpointed",
                                     why);
                harness_skip(teardown, "CRIU cannot dump a process holding a userfaultfd: %s", why);
        }
}
