/* test_oci.c: oci/: state JSON, config.json (parse, edit, atomic save),
 * io.xmem.* annotations, runc/crun argv reading; happy and sad side by side. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../oci/annotations.h"
#include "fdio.h"
#include "json-util.h"
#include "../../oci/oci.h"
#include "../../oci/runtime-args.h"

static char *fixture(const char *name, size_t *ret_len)
{
        char f[PATH_MAX], path[PATH_MAX * 2];
        const char *cands[] = { NULL, "tests/unit", "../tests/unit", "../../tests/unit" };
        struct stat st;

        snprintf(f, sizeof(f), "%s", __FILE__);
        cands[0] = dirname(f);
        for (size_t i = 0; i < ELEMENTSOF(cands); i++) {
                snprintf(path, sizeof(path), "%s/fixtures/oci/%s", cands[i], name);
                if (stat(path, &st) == 0) {
                        char *buf = malloc((size_t)st.st_size + 1);
                        int fd = open(path, O_RDONLY | O_CLOEXEC);
                        cr_assert(fd >= 0 && buf);
                        cr_assert_eq(read_full(fd, buf, (size_t)st.st_size), 0);
                        close(fd);
                        buf[st.st_size] = 0;
                        *ret_len = (size_t)st.st_size;
                        return buf;
                }
        }
        cr_assert_fail("fixture %s not found", name);
        return NULL;
}

/* ---- annotations ---- */

static int annotate(const char *json, struct xmem_annotations *x, struct xmem_error *err)
{
        json_object *o = NULL;
        int r;

        cr_assert_eq(json_parse(json, strlen(json), &o, NULL), 0, "bad test JSON %s", json);
        r = xmem_annotations_parse(o, 0, x, err);
        json_object_put(o);
        return r;
}

Test(annotations, happy)
{
        struct xmem_annotations x;
        struct xmem_error err = {};

        cr_assert_eq(annotate("{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.external\":\"1G\",\"io.xmem.policy\":\"ratio:3\","
                              "\"io.xmem.appliance\":\"tcp://127.0.0.1:7070\",\"other\":\"1\","
                              "\"io.xmem.file-dir\":\"/var/lib/xmem/files\"}",
                              &x, &err),
                     0, "%s", err.msg);
        cr_expect_str_eq(x.file_dir, "/var/lib/xmem/files");
        cr_expect(x.enable && x.any);
        cr_expect_eq(x.local_limit, 64ULL << 20);
        cr_expect_eq(x.external, 1ULL << 30);
        cr_expect_str_eq(x.policy, "ratio:3");
        cr_expect_str_eq(x.appliance, "tcp://127.0.0.1:7070");
        cr_expect(x.required, "io.xmem.required defaults to true");
        cr_assert_eq(annotate("{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.required\":\"false\"}", &x, &err),
                     0, "%s", err.msg);
        cr_expect(x.enable && !x.required);
        cr_expect_str_eq(x.restore, "");
        cr_assert_eq(annotate("{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                              "\"io.xmem.restore\":\"web-1.snap_2\"}",
                              &x, &err),
                     0, "%s", err.msg);
        cr_expect_str_eq(x.restore, "web-1.snap_2");
}

Test(annotations, defaults)
{
        struct xmem_annotations x;
        json_object *o = json_tokener_parse("{\"io.xmem.enable\":\"true\"}");

        /* local limit from the container's memory limit, external 4x, local-first */
        cr_assert_eq(xmem_annotations_parse(o, 256ULL << 20, &x, NULL), 0);
        cr_expect_eq(x.local_limit, 256ULL << 20);
        cr_expect_eq(x.external, 1ULL << 30);
        cr_expect_str_eq(x.policy, "local-first");
        cr_expect_str_eq(x.appliance, "");
        json_object_put(o);
        /* none at all: not an xmem container */
        cr_assert_eq(annotate("{\"a\":\"b\"}", &x, NULL), 0);
        cr_expect(!x.enable && !x.any);
        cr_assert_eq(xmem_annotations_parse(NULL, 0, &x, NULL), 0);
        cr_expect(!x.enable);
        /* disabled: forms still checked, no cross checks */
        cr_assert_eq(annotate("{\"io.xmem.enable\":\"false\",\"io.xmem.external\":\"1M\"}", &x,
                              NULL),
                     0);
        cr_expect(!x.enable && x.any);
}

struct sad {
        const char *json;
        const char *msg;
};

Test(annotations, sad_one_line_naming_the_key)
{
        static const struct sad cases[] = {
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64Q\"}",
                  "io.xmem.local-limit: \"64Q\" is not a size (use e.g. 64M, 8G)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"-64M\"}",
                  "io.xmem.local-limit: \"-64M\" is not a size (use e.g. 64M, 8G)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"1M\"}",
                  "io.xmem.local-limit: \"1M\" is out of range (use a size from 4M to 1P)" },
                { "{\"io.xmem.enable\":\"true\"}",
                  "io.xmem.local-limit: missing (use e.g. 64M, 8G, or give the container a "
                  "memory limit of at least 4M)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"1G\","
                  "\"io.xmem.external\":\"512M\"}",
                  "io.xmem.external: 512M must be larger than io.xmem.local-limit 1G (it holds "
                  "the whole heap; local memory caches it)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.external\":\"lots\"}",
                  "io.xmem.external: \"lots\" is not a size (use e.g. 64M, 8G)" },
                { "{\"io.xmem.enable\":\"yes\"}",
                  "io.xmem.enable: \"yes\" is not a boolean (use true or false)" },
                { "{\"io.xmem.local-limit\":\"64M\"}",
                  "io.xmem.enable: missing while other io.xmem.* annotations are set (use "
                  "io.xmem.enable=true or false)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.policy\":\"ratio:0\"}",
                  "io.xmem.policy: \"ratio:0\" is not a policy (use local-first, external-first "
                  "or ratio:N with N 1..1000)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.appliance\":\"tcp://x\"}",
                  "io.xmem.appliance: \"tcp://x\" is not an endpoint (use tcp://HOST:PORT, "
                  "unix:///PATH, shm:///PATH or rdma://HOST:PORT)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.file-dir\":\"rel/dir\"}",
                  "io.xmem.file-dir: \"rel/dir\" is not an absolute, normalised path (use e.g. "
                  "/var/lib/xmem/files)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.file-dir\":\"/var/lib/xmem/..\"}",
                  "io.xmem.file-dir: \"/var/lib/xmem/..\" is not an absolute, normalised path "
                  "(use e.g. /var/lib/xmem/files)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.restore\":\"../x\"}",
                  "io.xmem.restore: \"../x\" is not a snapshot name (use [A-Za-z0-9_.-]{1,128})" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.locallimit\":\"64M\"}",
                  "io.xmem.locallimit: unknown annotation (known: enable, local-limit, external, "
                  "policy, appliance, file-dir, restore, required under io.xmem.)" },
                { "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"64M\","
                  "\"io.xmem.required\":\"no\"}",
                  "io.xmem.required: \"no\" is not a boolean (use true or false)" },
                { "{\"io.xmem.enable\":true}", "io.xmem.enable: must be a string" },
                { "[]", "annotations: must be an object of strings" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct xmem_annotations x;
                struct xmem_error err = {};
                memset(&x, 0xaa, sizeof(x));
                cr_expect_lt(annotate(cases[i].json, &x, &err), 0, "%s accepted", cases[i].json);
                cr_expect_str_eq(err.msg, cases[i].msg, "for %s", cases[i].json);
                cr_expect(!strchr(err.msg, '\n'));
                cr_expect_eq(((unsigned char *)&x)[0], 0xaa, "ret touched on failure");
        }
}

Test(annotations, quoting_keeps_one_line)
{
        struct xmem_annotations x;
        struct xmem_error err = {};

        cr_assert_lt(annotate("{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":"
                              "\"6\\n4\\u0001MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM"
                              "MMMMMMMMMMMMMMMM\"}",
                              &x, &err),
                     0);
        cr_expect(!strchr(err.msg, '\n'));
        cr_expect(strstr(err.msg, "\"6?4?MMMM") && strstr(err.msg, "...\" is not a size"), "%s",
                  err.msg);
}

/* ---- state ---- */

Test(state, runc_create_and_stopped)
{
        _cleanup_(oci_state_freep) struct oci_state *s = NULL, *t = NULL;
        size_t len;
        _cleanup_free_ char *text = fixture("state-create.json", &len);
        _cleanup_free_ char *stopped = fixture("state-stopped.json", &len);

        cr_assert_eq(oci_state_parse(text, strlen(text), &s, NULL), 0);
        cr_expect_str_eq(s->id, "web-1");
        cr_expect_str_eq(s->status, "creating");
        cr_expect_eq(s->pid, 4242);
        cr_expect_str_eq(s->bundle, "/run/containers/web-1");
        cr_expect_str_eq(xmem_annotation_get(s->annotations, "io.xmem.local-limit"), "64M");
        cr_assert_eq(oci_state_parse(stopped, len, &t, NULL), 0);
        cr_expect_eq(t->pid, 0);
        cr_expect_null(t->annotations);
}

Test(state, sad)
{
        static const struct sad cases[] = {
                { "", "state: invalid JSON: unexpected end" },
                { "{\"ociVersion\":\"1\",\"id\":\"a\",\"status\":\"creating\"}",
                  "state.bundle: missing" },
                { "{\"ociVersion\":\"1\",\"id\":\"a\",\"status\":\"x\",\"bundle\":\"rel\"}",
                  "state.bundle: must be an absolute path" },
                { "{\"ociVersion\":\"1\",\"id\":\"a/b\",\"status\":\"x\",\"bundle\":\"/b\"}",
                  "state.id: must be a non-empty name" },
                { "{\"ociVersion\":\"1\",\"id\":\"a\",\"status\":\"x\",\"bundle\":\"/b\","
                  "\"pid\":-1}",
                  "state.pid: out of range" },
                { "{\"ociVersion\":\"1\",\"id\":\"a\",\"status\":\"x\",\"bundle\":\"/b\","
                  "\"pid\":4294967296}",
                  "state.pid: out of range" },
                { "{\"ociVersion\":\"1\",\"id\":\"a\",\"status\":\"x\",\"bundle\":\"/b\","
                  "\"annotations\":{\"k\":1}}",
                  "state.annotations: every value must be a string" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct oci_state *s = (void *)0x1;
                struct xmem_error err = {};
                cr_expect_lt(oci_state_parse(cases[i].json, strlen(cases[i].json), &s, &err), 0);
                cr_expect_str_eq(err.msg, cases[i].msg, "for %s", cases[i].json);
                cr_expect_eq(s, (void *)0x1);
        }
}

/* ---- config.json ---- */

Test(config, runc_spec_fields)
{
        _cleanup_(oci_config_freep) struct oci_config *c = NULL;
        _cleanup_free_ char *root = NULL;
        size_t len;
        _cleanup_free_ char *text = fixture("config-runc.json", &len);

        cr_assert_eq(oci_config_parse(text, len, &c, NULL), 0);
        cr_expect_str_eq(c->root_path, "rootfs");
        cr_expect(c->root_readonly);
        cr_expect_str_eq(c->cgroups_path, "/xmem-test/web-1");
        cr_expect_eq(c->memory_limit, 256ULL << 20);
        cr_expect_str_eq(oci_config_getenv(c, "TERM"), "xterm");
        cr_expect_null(oci_config_getenv(c, "TER"));
        cr_expect(oci_config_has_mount(c, "/proc"));
        cr_expect(!oci_config_has_mount(c, "/run/xmem"));
        cr_assert_eq(oci_config_rootfs(c, "/b", &root), 0);
        cr_expect_str_eq(root, "/b/rootfs");
}

Test(config, sad)
{
        static const struct sad cases[] = {
                { "{}", "config.json: root.path: must be a string" },
                { "{\"root\":{\"path\":\"r\",\"readonly\":1}}",
                  "config.json: root.readonly: must be true or false" },
                { "{\"root\":{\"path\":\"r\"},\"process\":{\"env\":[\"A=1\",2]}}",
                  "config.json: process.env: must be an array of strings" },
                { "{\"root\":{\"path\":\"r\"},\"mounts\":[{\"type\":\"bind\"}]}",
                  "config.json: mounts[0]: must be an object with a string \"destination\"" },
                { "{\"root\":{\"path\":\"r\"},\"hooks\":{\"poststop\":[{\"args\":[]}]}}",
                  "config.json: hooks.poststop[0]: must be an object with a string \"path\"" },
                { "{\"root\":{\"path\":\"r\"},\"annotations\":{\"io.xmem.enable\":true}}",
                  "config.json: annotations: every value must be a string" },
                { "{\"root\":{\"path\":\"r\"},\"linux\":{\"resources\":{\"memory\":{\"limit\":"
                  "\"1G\"}}}}",
                  "config.json: linux.resources.memory.limit: must be an integer" },
                { "{\"root\":{\"path\":\"r\"}} x", "config.json: invalid JSON: unexpected character" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct oci_config *c = (void *)0x1;
                struct xmem_error err = {};
                cr_expect_lt(oci_config_parse(cases[i].json, strlen(cases[i].json), &c, &err), 0);
                cr_expect_str_eq(err.msg, cases[i].msg, "for %s", cases[i].json);
                cr_expect_eq(c, (void *)0x1);
        }
}

static char bundle[] = "/tmp/xmem-oci-XXXXXX";

static void bundle_setup(void)
{
        size_t len;
        _cleanup_free_ char *text = fixture("config-runc.json", &len);
        char path[64];
        int fd;

        cr_assert_not_null(mkdtemp(bundle));
        snprintf(path, sizeof(path), "%s/config.json", bundle);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        cr_assert(fd >= 0);
        cr_assert_eq(write_full(fd, text, len), 0);
        close(fd);
}

static void bundle_teardown(void)
{
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", bundle);
        cr_expect_eq(system(cmd), 0);
}

Test(config, edit_save_reload_idempotent, .init = bundle_setup, .fini = bundle_teardown)
{
        _cleanup_(oci_config_freep) struct oci_config *c = NULL, *d = NULL;
        const char *args[] = { "/h", "createRuntime", NULL };
        struct stat st;
        char path[64];

        cr_assert_eq(oci_config_load(bundle, &c, NULL), 0);
        cr_assert_eq(oci_config_setenv(c, "TERM", "dumb"), 0);
        cr_assert_eq(oci_config_setenv(c, "XMEM_SOCKET", "/run/xmem/memd.sock"), 0);
        cr_assert_eq(oci_config_add_bind(c, "/host/shim.so", "/run/xmem-shim/libxmem-shim.so", true), 0);
        cr_assert_eq(oci_config_add_hook(c, "createRuntime", "/h", args), 0);
        cr_assert_eq(oci_config_add_hook(c, "createRuntime", "/h", args), 0); /* no duplicate */
        cr_assert_eq(oci_config_save(c, bundle, NULL), 0);
        snprintf(path, sizeof(path), "%s/config.json", bundle);
        cr_assert_eq(stat(path, &st), 0);
        cr_expect_eq(st.st_mode & 0777, 0600, "mode kept");

        cr_assert_eq(oci_config_load(bundle, &d, NULL), 0);
        cr_expect_str_eq(oci_config_getenv(d, "TERM"), "dumb");
        cr_expect_str_eq(oci_config_getenv(d, "XMEM_SOCKET"), "/run/xmem/memd.sock");
        cr_expect(oci_config_has_mount(d, "/run/xmem-shim/libxmem-shim.so"));
        cr_expect_eq(json_object_array_length(json_object_object_get(d->hooks, "createRuntime")), 1);
        cr_expect_str_eq(d->cgroups_path, "/xmem-test/web-1", "other fields kept");
        cr_expect_eq(json_object_array_length(d->env), 3);
}

Test(config, load_sad, .init = bundle_setup, .fini = bundle_teardown)
{
        struct oci_config *c = NULL;
        struct xmem_error err = {};

        cr_expect_eq(oci_config_load("/nonexistent-bundle", &c, &err), -ENOENT);
        cr_expect_str_eq(err.msg, "/nonexistent-bundle/config.json: No such file or directory");
        cr_expect_null(c);
}

/* ---- runtime argv ---- */

static struct runtime_args args_of(char **argv)
{
        struct runtime_args a;
        int argc = 0;

        while (argv[argc])
                argc++;
        cr_assert_eq(runtime_args_parse(argc, argv, &a, NULL), 0);
        return a;
}

static void expect_argv(const struct runtime_args *a, const char *const *want)
{
        int i;
        for (i = 0; want[i]; i++)
                cr_expect_str_eq(a->argv[i], want[i], "argv[%d]", i);
        cr_expect_eq(a->argc, i);
        cr_expect_null(a->argv[i]);
}

Test(runtime_args, podman_create)
{
        char *argv[] = { "xmem-runtime", "--systemd-cgroup", "--root", "/run/runc", "--log=/l",
                         "create", "--bundle", "/b", "--pid-file", "/p", "ctr", NULL };
        struct runtime_args a = args_of(argv);

        cr_expect_str_eq(a.command, "create");
        cr_expect(a.creates);
        cr_expect_str_eq(a.bundle, "/b");
        cr_expect_null(a.runtime_path);
        expect_argv(&a, (const char *const *)argv);
        runtime_args_done(&a);
}

Test(runtime_args, runtime_path_removed_and_run_short_bundle)
{
        char *argv[] = { "xmem-runtime", "--runtime-path", "/usr/bin/crun", "-debug", "run",
                         "-b=/b2", "-d", "ctr", NULL };
        struct runtime_args a = args_of(argv);

        cr_expect_str_eq(a.runtime_path, "/usr/bin/crun");
        cr_expect_str_eq(a.command, "run");
        cr_expect_str_eq(a.bundle, "/b2");
        expect_argv(&a, (const char *const[]){ "xmem-runtime", "-debug", "run", "-b=/b2", "-d",
                                               "ctr", NULL });
        runtime_args_done(&a);
}

Test(runtime_args, checkpoint_and_restore)
{
        char *ck[] = {"xmem-runtime", "--root", "/r", "checkpoint", "--leave-running",
                      "--image-path", "/img", "--work-path=/w", "ctr", NULL};
        char *rs[] = {"xmem-runtime", "restore", "-b", "/b", "--detach", "ctr2", NULL};
        struct runtime_args a = args_of(ck), b = args_of(rs);

        cr_expect_str_eq(a.command, "checkpoint");
        cr_expect(!a.creates);
        cr_expect_str_eq(a.image_path, "/img");
        cr_expect_str_eq(a.id, "ctr");
        expect_argv(&a, (const char *const *)ck);
        cr_expect_str_eq(b.bundle, "/b");
        cr_expect_str_eq(b.id, "ctr2");
        cr_expect_null(b.image_path);
        runtime_args_done(&a);
        runtime_args_done(&b);
}

Test(runtime_args, other_commands_and_sad)
{
        char *kill[] = { "xmem-runtime", "--root", "create", "kill", "create", NULL };
        char *bare[] = { "xmem-runtime", "--version", NULL };
        char *bad[] = { "xmem-runtime", "--runtime-path", NULL };
        struct runtime_args a = args_of(kill), b = args_of(bare);
        struct xmem_error err = {};

        /* "--root create": create is --root's value, kill is the command */
        cr_expect_str_eq(a.command, "kill");
        cr_expect(!a.creates);
        cr_expect_null(b.command);
        expect_argv(&b, (const char *const *)bare);
        cr_expect_eq(runtime_args_parse(2, bad, &a, &err), -EINVAL);
        cr_expect_str_eq(err.msg, "--runtime-path: missing value");
        runtime_args_done(&a);
        runtime_args_done(&b);
}
