/* test_containers.c: real runc (and podman) containers with xmem: the hook
 * and xmem-runtime refusing bad annotations and a missing memd, the hook
 * attaching and exposing the shim, and containers working through 512 MiB
 * under a 64 MiB local limit (containers_attached.c; with crun:
 * containers_crun.c). Root; skips without runc (crun). */
#include "containers.c"

#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>

static struct ctr_env env;

static void setup(void)
{
        if (!harness_is_root())
                return;
        ctr_env_init(&env);
}

static void setup_memd(void)
{
        ctr_env_start(&env);
}

static void teardown(void)
{
        if (env.dir[0])
                ctr_env_cleanup(&env);
}

static const char *fill_args[] = { "/bin/container_fill", "512", NULL };

Test(containers, runtime_passes_other_containers_through, .init = setup, .fini = teardown,
     .timeout = 120)
{
        char bundle[256], path[300], before[16384], after[16384];
        struct cmd_result r;

        ctr_need_root_runc();
        ctr_bundle(&env, "plain", (const char *const[]){ "/bin/sh", "-c", "echo plain-ok", NULL },
                   "{\"org.example\":\"x\"}", NULL, bundle, sizeof(bundle));
        snprintf(path, sizeof(path), "%s/config.json", bundle);
        cr_assert(ctr_read_file(path, before, sizeof(before)));
        ctr_runtime_run(&env, bundle, "plain", 60, &r);
        cr_expect(ctr_exited(&r, 0), "status %d: %s", r.status, r.err);
        cr_expect(strstr(r.out, "plain-ok"), "%s", r.out);
        cr_assert(ctr_read_file(path, after, sizeof(after)));
        cr_expect_str_eq(after, before, "config.json of a plain container was changed");
        ctr_run((const char *const[]){ getenv("XMEM_RUNTIME_EXE"), "--version", NULL }, NULL, 10,
                &r);
        cr_expect(ctr_exited(&r, 0) && strstr(r.out, "runc version"), "%s", r.out);
}

struct bad {
        const char *annotations;
        const char *line;
};

static const struct bad bad_cases[] = {
        { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64Q\"}",
          "io.xmem.local-limit: \"64Q\" is not a size (use e.g. 64M, 8G)" },
        { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"-64M\"}",
          "io.xmem.local-limit: \"-64M\" is not a size (use e.g. 64M, 8G)" },
        { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"1G\",\"io.xmem.external\":"
          "\"64M\"}",
          "io.xmem.external: 64M must be larger than io.xmem.local-limit 1G (it holds the whole "
          "heap; local memory caches it)" },
        { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\",\"io.xmem.policy\":"
          "\"nonsense\"}",
          "io.xmem.policy: \"nonsense\" is not a policy (use local-first, external-first or "
          "ratio:N with N 1..1000)" },
        { "{\"io.xmem.enable\":\"true\",\"io.xmem.locall-limit\":\"64M\"}",
          "io.xmem.locall-limit: unknown annotation (known: enable, local-limit, external, "
          "policy, appliance, file-dir, restore, required under io.xmem.)" },
};

Test(containers, runtime_refuses_bad_annotations, .init = setup_memd, .fini = teardown,
     .timeout = 180)
{
        ctr_need_root_runc();
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                char bundle[256], path[300], before[16384], after[16384], name[32], want[512];
                struct cmd_result r;

                snprintf(name, sizeof(name), "bad%zu", i);
                ctr_bundle(&env, name, fill_args, bad_cases[i].annotations, NULL, bundle,
                           sizeof(bundle));
                snprintf(path, sizeof(path), "%s/config.json", bundle);
                cr_assert(ctr_read_file(path, before, sizeof(before)));
                ctr_runtime_run(&env, bundle, name, 30, &r);
                snprintf(want, sizeof(want), "xmem-runtime: %s\n", bad_cases[i].line);
                cr_expect(ctr_exited(&r, 1), "%s: status %d", name, r.status);
                cr_expect_str_eq(r.err, want, "%s", bad_cases[i].annotations);
                cr_assert(ctr_read_file(path, after, sizeof(after)));
                cr_expect_str_eq(after, before, "config.json changed by a refusal");
                cr_expect(!ctr_cgroup_exists(&env, name), "cgroup of %s left behind", name);
                cr_expect_eq(ctr_memd_count(&env), 0, "memd has containers after a refusal");
        }
}

static void escape_quotes(char *s, size_t len)
{
        char tmp[512];
        size_t n = 0;

        for (const char *c = s; *c && n + 2 < sizeof(tmp); c++) {
                if (*c == '"')
                        tmp[n++] = '\\';
                tmp[n++] = *c;
        }
        tmp[n] = 0;
        snprintf(s, len, "%s", tmp);
}

Test(containers, hook_refuses_bad_annotations, .init = setup_memd, .fini = teardown,
     .timeout = 180)
{
        ctr_need_root_runc();
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                char bundle[256], name[32], want[512];
                struct cmd_result r;

                snprintf(name, sizeof(name), "hbad%zu", i);
                ctr_bundle(&env, name, fill_args, bad_cases[i].annotations, env.sock, bundle,
                           sizeof(bundle));
                ctr_runc_run(&env, NULL, bundle, name, 30, &r);
                /* runc quotes the hook's stderr: " becomes \" */
                snprintf(want, sizeof(want), "xmem-hook: %s", bad_cases[i].line);
                escape_quotes(want, sizeof(want));
                cr_expect(!ctr_exited(&r, 0), "%s started", name);
                cr_expect(strstr(r.err, want), "%s: want '%s' in: %s", name, want, r.err);
                cr_expect(!strstr(r.out, "fill-ok"), "the payload ran");
                cr_expect(!ctr_cgroup_exists(&env, name), "cgroup of %s left behind", name);
                cr_expect_eq(ctr_memd_count(&env), 0, "memd has containers after a refusal");
        }
}

Test(containers, hook_fails_the_container_when_memd_is_down, .init = setup, .fini = teardown,
     .timeout = 120)
{
        char bundle[256], sock[200], want[400];
        struct cmd_result r;

        ctr_need_root_runc();
        snprintf(sock, sizeof(sock), "%s/no-memd/memd.sock", env.dir);
        ctr_bundle(&env, "down", fill_args,
                   "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\"}", sock, bundle,
                   sizeof(bundle));
        ctr_runc_run(&env, NULL, bundle, "down", 30, &r);
        snprintf(want, sizeof(want),
                 "xmem-hook: attach container down: memd at %s: No such file or directory (is "
                 "memd running?)",
                 sock);
        cr_expect(!ctr_exited(&r, 0), "the container started without memd");
        cr_expect(strstr(r.err, want), "want '%s' in: %s", want, r.err);
        cr_expect(!strstr(r.out, "fill-ok"), "the payload ran");
        cr_expect(!ctr_cgroup_exists(&env, "down"), "cgroup left behind");
}

Test(containers, without_xmem_a_container_is_oom_killed, .init = setup, .fini = teardown,
     .timeout = 120)
{
        char bundle[256], path[300];
        json_object *c, *lx;
        struct cmd_result r;

        ctr_need_root_runc();
        ctr_bundle(&env, "noxmem", fill_args, NULL, NULL, bundle, sizeof(bundle));
        snprintf(path, sizeof(path), "%s/config.json", bundle);
        c = json_object_from_file(path);
        json_object_object_get_ex(c, "linux", &lx);
        json_object_object_add(lx, "resources",
                               json_tokener_parse("{\"memory\":{\"limit\":67108864,"
                                                  "\"swap\":67108864}}"));
        cr_assert_eq(json_object_to_file(path, c), 0);
        json_object_put(c);
        ctr_runc_run(&env, NULL, bundle, "noxmem", 60, &r);
        cr_expect(r.status >= 0 && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 137,
                  "want exit 137 (OOM kill), status %d out %s err %s", r.status, r.out, r.err);
        cr_expect(!strstr(r.out, "fill-ok"));
}

#include "containers_attached.c"
#include "containers_crun.c"
#include "containers_resize.c"
