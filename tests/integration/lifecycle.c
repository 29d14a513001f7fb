/* lifecycle.c: helpers of test_lifecycle.c and test_migrate.c (included by
 * them: the integration meson loop builds one source file per test): real
 * runc containers attached by the hook to a real memd and appliance, running
 * the verifying workload (lifecycle_prog), driven through xmemctl. */
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

/* Memory (and freezer) cgroups of processes a test runs outside runc:
 * killed and removed at teardown, also after a failed assertion. */
static struct harness_cg test_cgs[4];
static char test_freezers[4][200];

/* A memory cgroup NAME for a test's own processes (removed at teardown). */
static struct harness_cg *test_cg(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(test_cgs); i++)
                if (!test_cgs[i].version) {
                        cr_assert(harness_cg_create(&test_cgs[i], name), "no memory cgroup");
                        return &test_cgs[i];
                }
        cr_assert_fail("more than %zu test cgroups", ELEMENTSOF(test_cgs));
        return NULL;
}

/* Put PID into a freezer cgroup of its own, NAME (a checkpoint freezes the
 * process's freezer cgroup and never the root one); removed at teardown. On
 * cgroup v2 nothing to do: the freezer is the unified cgroup's, and PID is
 * in its test_cg already, which memd freezes (cgroup.freeze). */
static __attribute__((unused)) void test_freezer(const char *name, pid_t pid)
{
        char procs[300], text[32], *dir = NULL;
        int fd;

        if (harness_cg_version() == 2)
                return;
        for (size_t i = 0; i < ELEMENTSOF(test_freezers) && !dir; i++)
                if (!test_freezers[i][0])
                        dir = test_freezers[i];
        cr_assert(dir, "too many test freezer cgroups");
        snprintf(dir, sizeof(test_freezers[0]), "/sys/fs/cgroup/freezer/%s", name);
        cr_assert(mkdir(dir, 0755) == 0 || errno == EEXIST, "%s: %m", dir);
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
        snprintf(text, sizeof(text), "%d", (int)pid);
        fd = open(procs, O_WRONLY | O_CLOEXEC);
        cr_assert(fd >= 0 && write(fd, text, strlen(text)) > 0, "%s: %m", procs);
        close(fd);
}

static void teardown(void)
{
        for (size_t i = 0; i < ELEMENTSOF(test_cgs); i++)
                if (test_cgs[i].version) {
                        harness_cg_kill_all(test_cgs[i].path);
                        harness_cg_remove(&test_cgs[i]);
                        test_cgs[i] = (struct harness_cg){};
                }
        for (size_t i = 0; i < ELEMENTSOF(test_freezers); i++)
                if (test_freezers[i][0]) {
                        (void)rmdir(test_freezers[i]);
                        test_freezers[i][0] = 0;
                }
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

/* Container NAME's freezer state in v1's words (THAWED, FROZEN, ...). */
static __attribute__((unused)) void freezer_state(const char *name, char *buf, size_t len)
{
        char rel[256];

        snprintf(rel, sizeof(rel), "%s/%s", env.cgroup_parent, name);
        harness_cg_freezer_state(rel, buf, len);
}

/* The workload with ARG under the shim, in CG, on memd's socket of container
 * ID (attached with xmemctl, not a runc container). */
/* The same with the libraries FIRST (NULL: none) preloaded before the shim,
 * and with NO_ASLR under `setarch -R` (the same address layout every run). */
static void spawn_attached_with(struct harness_child *c, const struct harness_cg *cg,
                                const char *id, const char *arg, const char *first, bool no_aslr)
{
        char dir[200], sock[320], pre[600];
        const char *prog = need_env("XMEM_LIFECYCLE_PROG");

        snprintf(dir, sizeof(dir), "%.199s", env.sock);
        *strrchr(dir, '/') = 0;
        snprintf(sock, sizeof(sock), "XMEM_SOCKET=%s/containers/%s/memd.sock", dir, id);
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s%s%s", first ?: "", first ? ":" : "",
                 need_env("XMEM_SHIM"));
        harness_child_spawn(
            c,
            no_aslr ? (const char *const[]){"/usr/bin/setarch", "x86_64", "-R", prog, arg, NULL}
                    : (const char *const[]){prog, arg, NULL},
            (const char *const[]){pre, sock, NULL}, cg, true);
}

static void spawn_attached(struct harness_child *c, const struct harness_cg *cg, const char *id,
                           const char *arg)
{
        spawn_attached_with(c, cg, id, arg, NULL, false);
}

/* The annotations of a container started from snapshot SNAP. */
static __attribute__((unused)) const char *restore_annotations(const char *snap,
                                                               const char *external)
{
        static char buf[512];

        snprintf(buf, sizeof(buf),
                 "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                 "\"io.xmem.external\":\"%s\",\"io.xmem.policy\":\"external-first\","
                 "\"io.xmem.restore\":\"%s\"}",
                 external, snap);
        return buf;
}
