/* test_lifecycle.c: a container's life cycle through xmemctl on real runc
 * containers (lifecycle.c): checkpoint (frozen, flushed, snapshotted on the
 * appliance, manifest written, thawed), snapshots, delete-snapshot, restore
 * --rollback (the verifying workload sees the snapshot's contents again),
 * top, resize --external while it runs, CRIU's checkpoint beside the
 * external memory's, and bad input (unknown container or snapshot, a
 * snapshot of another container, bad names, an appliance that does not
 * answer: clear error, container thawed, nothing changed). Root; skips
 * without runc. */
#include "lifecycle.c"

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
        cr_expect(!strstr(r.err, "..."), "a progress line on a pipe: %s", r.err);
        ask(&c, "xcheck 0", "ok 0");
        freezer_state(name, state, sizeof(state));
        cr_expect(strncmp(state, "THAWED", 6) == 0, "left %s", state);
        /* and it keeps working: write, and roll back a second time */
        ask(&c, "write 2", "wrote 2");
        ask(&c, "check 2", "ok 2");
        /* on a terminal: a progress line while memd works, erased at the end */
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "%s --socket %s restore %s --rollback %s", need_env("XMEM_CTL"),
                 env.sock, snap, name);
        ctr_run((const char *const[]){"script", "-qec", cmd, "/dev/null", NULL}, NULL, 60, &r);
        cr_assert(ctr_exited(&r, 0), "%s%s", r.out, r.err);
        cr_expect(strstr(r.out, "xmemctl: restore ") && strstr(r.out, " s\r\033[K"), "%s", r.out);
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
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t slow = fork();
        cr_assert_geq(slow, 0);
        if (slow == 0) { /* the checkpoint that waits for the appliance */
                close(fds[0]);
                bool ok = ctl(&r, (const char *const[]){"checkpoint", na, "--name", "lc-down", NULL});
                if (write(fds[1], r.err, strlen(r.err)) < 0)
                        _exit(3);
                _exit(ok ? 0 : 1);
        }
        close(fds[1]);
        usleep(500000);
        /* meanwhile memd serves everything else (the checkpoint is on A's
         * worker), and refuses a second lifecycle change of A */
        long t0 = harness_now_ms();
        cr_expect(ctl(&r, (const char *const[]){"list", NULL}), "%s", r.err);
        long took = harness_now_ms() - t0;
        cr_expect_lt(took, 3000, "list took %ld ms during a checkpoint on a stopped appliance", took);
        cr_expect(!ctl(&r, (const char *const[]){"checkpoint", na, "--name", "lc-again", NULL}));
        cr_expect(strstr(r.err, "in progress") && strstr(r.err, "EBUSY"), "%s", r.err);
        int st = -1;
        cr_assert_eq(waitpid(slow, &st, 0), slow);
        ssize_t got = read(fds[0], r.err, sizeof(r.err) - 1);
        r.err[got > 0 ? got : 0] = 0;
        close(fds[0]);
        kill(env.app.pid, SIGCONT);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "the checkpoint ended %#x", st);
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

/* The container NAME's external quota as memd reports it. */
static int64_t quota_of(const char *name)
{
        return ctr_memd_stat(&env, name, "external_quota");
}

Test(lifecycle, resize_external_while_running, .init = setup, .fini = teardown, .timeout = 240)
{
        struct harness_child a = {.pid = -1}, g = {.pid = -1}, race[2];
        char na[64], ng[64], snap[80], state[64], line[256];
        struct harness_cg *cg;
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
        cr_expect(strstr(r.err, "resize: --local-limit or --external is required"), "%s", r.err);

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
        cg = test_cg(ng);
        cr_assert(ctl(&r, (const char *const[]){"attach", ng, "--cgroup", cg->path, "--local-limit",
                                                "64M", "--external", "64M", "--external-max",
                                                "512M", "--policy", "external-first",
                                                "--local-alloc-limit", "4M", NULL}),
                  "%s", r.err);
        spawn_attached(&g, cg, ng, "32");
        cr_assert(harness_child_follow(&g, "ready", 30000, line, sizeof(line)) >= 0, "%s", line);
        ask(&g, "grow 64", "grow refused after");
        cr_assert(ctl(&r, (const char *const[]){"resize", ng, "--external", "256M", NULL}), "%s",
                  r.err);
        ask(&g, "grow 64", "grew 64");
        ask(&g, "write 3", "wrote 3");
        ask(&g, "xcheck 3", "ok 3");
        /* both limits in one resize (issue 10's local limit beside the
         * quota); a refused external changes neither */
        cr_assert(ctl(&r, (const char *const[]){"resize", ng, "--local-limit", "96M", "--external",
                                                "384M", NULL}),
                  "%s", r.err);
        cr_expect(strstr(r.out, "local limit 96M") && strstr(r.out, "external 384M"), "%s", r.out);
        cr_expect_eq(quota_of(ng), 384LL << 20);
        cr_expect_eq(harness_cg_limit(cg), 96ULL << 20);
        cr_expect(!ctl(&r, (const char *const[]){"resize", ng, "--local-limit", "128M",
                                                 "--external", "1G", NULL}));
        cr_expect(strstr(r.err, "external_max"), "%s", r.err);
        cr_expect_eq(quota_of(ng), 384LL << 20);
        cr_expect_eq(harness_cg_limit(cg), 96ULL << 20);
        ask(&g, "xcheck 3", "ok 3");
        cr_expect(!ctl(&r, (const char *const[]){"resize", ng, "--external", "64M", NULL}));
        cr_expect(strstr(r.err, "EBUSY"), "%s", r.err);
        harness_child_kill(&g);
        (void)ctl(&r, (const char *const[]){"detach", ng, "--force", NULL});
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
