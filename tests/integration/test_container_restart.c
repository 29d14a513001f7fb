/* test_container_restart.c: issue 9's own scenario. A runc container (64 MiB
 * local, a 384 MiB verifying working set, so it pages) attached through the
 * OCI hook to a memd on its embedded appliance (the default): memd is
 * SIGKILLed mid-run and a new memd started on the same state directory; the
 * container finishes with every word verified. Then the same with SIGTERM
 * (a clean stop frees no region and leaves the container's state file).
 * At the end the embedded appliance is stopped and nothing is left. Root,
 * runc, /dev/userfaultfd. */
#include "containers.c"

#include <signal.h>

static struct ctr_env env;
static struct harness_memd md;
static pid_t runner = -1;
static char name[64];

static const char *xmem_64m = "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.external\":\"512M\"}";

static void setup(void)
{
        memset(&md, 0, sizeof(md));
        md.pid = -1;
        runner = -1;
        if (harness_is_root())
                ctr_env_init(&env);
}

static void teardown(void)
{
        if (runner > 0) {
                kill(runner, SIGKILL);
                waitpid(runner, NULL, 0);
                runner = -1;
        }
        if (name[0] && env.dir[0])
                ctr_run((const char *const[]){"runc", "--root", env.runc_root, "delete", "--force",
                                              name, NULL},
                        NULL, 10, &(struct cmd_result){});
        if (md.pid > 0 || md.dir[0])
                harness_memd_stop(&md); /* and --stop-embedded */
        if (env.dir[0])
                ctr_env_cleanup(&env);
}

static void need_root_runc(void)
{
        struct cmd_result r;

        if (!harness_is_root() || access("/dev/userfaultfd", F_OK) != 0)
                harness_skip(teardown, "needs root and /dev/userfaultfd");
        ctr_run((const char *const[]){"runc", "--version", NULL}, NULL, 10, &r);
        if (!ctr_exited(&r, 0))
                harness_skip(teardown, "runc is not installed");
}

/* The container runs across memd's death by SIG and a new memd. */
static void across_memd_restart(int sig, const char *id)
{
        char bundle[256], path[300], out[16384];
        struct stat st;
        pid_t appliance;
        int status = -1;

        need_root_runc();
        snprintf(name, sizeof(name), "%s", id);
        harness_memd_start(&md, "/tmp/nf-ctr-restart.XXXXXX", NULL); /* embedded appliance */
        snprintf(env.sock, sizeof(env.sock), "%s", md.sock);
        appliance = harness_memd_embedded_pid(&md);
        cr_assert_gt(appliance, 1, "no embedded appliance (see %s)", md.log);
        ctr_bundle(&env, name,
                   (const char *const[]){"/bin/container_fill", "384", "3", "verify", NULL},
                   xmem_64m, md.sock, bundle, sizeof(bundle));
        runner = ctr_run_async(&env, bundle, name, "fill-ok again 384 MiB");

        /* mid-run: memd has written pages back (the container pages) */
        for (int i = 0; i < 1200 && ctr_memd_stat(&env, name, "written_back_bytes") <= 0; i++)
                usleep(100000);
        cr_assert_gt(ctr_memd_stat(&env, name, "written_back_bytes"), 0,
                     "the container did not page within 120 s (see %s)", md.log);
        harness_memd_signal(&md, sig);
        snprintf(path, sizeof(path), "%s/state/containers/%s.json", md.dir, name);
        cr_assert_eq(stat(path, &st), 0, "memd's %s left no state file for %s", strsignal(sig),
                     name);
        cr_assert_eq(kill(appliance, 0), 0, "the embedded appliance died with memd");
        usleep(300000); /* memd away: the container waits */
        harness_memd_restart(&md, NULL);
        cr_expect_eq(harness_memd_embedded_pid(&md), appliance,
                     "a restarted memd started another appliance");

        for (int i = 0; i < 2400 && waitpid(runner, &status, WNOHANG) == 0; i++)
                usleep(100000);
        snprintf(path, sizeof(path), "%s/%s.out", env.dir, name);
        if (!ctr_read_file(path, out, sizeof(out)))
                out[0] = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                /* the log goes with the test's directory: its end, here */
                char tail[2048];
                cr_assert_fail("the container did not finish verified (status %#x): %s\n"
                               "memd.log ends:\n%s",
                               status, out, harness_file_tail(md.log, tail, sizeof(tail)));
        }
        runner = -1;
        cr_expect(strstr(out, "fill-ok again 384 MiB") && !strstr(out, "MISMATCH"), "%s", out);
        /* the poststop hook detached it: nothing left in memd or on disk */
        cr_expect_eq(ctr_memd_count(&env), 0);
        snprintf(path, sizeof(path), "%s/state/containers/%s.json", md.dir, name);
        cr_expect_neq(stat(path, &st), 0, "the detached container's state file is still there");

        /* memd stops and stops its embedded appliance: nothing left running */
        harness_memd_stop(&md);
        for (int i = 0; i < 100 && kill(appliance, 0) == 0; i++)
                usleep(50000);
        cr_expect_neq(kill(appliance, 0), 0, "the embedded appliance is still running");
}

Test(container_restart, runc_across_memd_sigkill_embedded, .init = setup, .fini = teardown,
     .timeout = 420)
{
        across_memd_restart(SIGKILL, "nf-kill");
}

Test(container_restart, runc_across_memd_sigterm_embedded, .init = setup, .fini = teardown,
     .timeout = 420)
{
        across_memd_restart(SIGTERM, "nf-term");
}
