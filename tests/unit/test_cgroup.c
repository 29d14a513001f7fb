/* test_cgroup.c: lib/cgroup on fake cgroupfs trees (fixtures/cgroup/v1, v2),
 * copied to a temp dir so writes never touch the fixtures. */
#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "unit-files.h"

static char tmp[] = "/tmp/xmem-cgroup-XXXXXX";
static char v1[PATH_MAX], v2[PATH_MAX];

static void fixtures_dir(char *buf, size_t size)
{
        /* __FILE__ is relative to the build dir meson compiles in; tests may run
         * from there or from the source tree. */
        char f[PATH_MAX];
        snprintf(f, sizeof(f), "%s", __FILE__);
        const char *d = dirname(f);
        const char *cands[] = { d, "tests/unit", "../tests/unit", "../../tests/unit",
                                "../../../tests/unit" };
        for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
                snprintf(buf, size, "%s/fixtures/cgroup", cands[i]);
                if (access(buf, F_OK) == 0)
                        return;
        }
        cr_assert_fail("fixtures/cgroup not found (cwd and %s)", __FILE__);
}

static void setup(void)
{
        char fx[PATH_MAX], cmd[PATH_MAX * 2 + 32];

        fixtures_dir(fx, sizeof(fx));
        cr_assert_not_null(mkdtemp(tmp));
        snprintf(cmd, sizeof(cmd), "cp -a '%s/.' '%s/'", fx, tmp);
        cr_assert_eq(system(cmd), 0);
        snprintf(v1, sizeof(v1), "%s/v1", tmp);
        snprintf(v2, sizeof(v2), "%s/v2", tmp);
}

static void teardown(void)
{
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
        (void)!system(cmd);
}

TestSuite(cgroup, .init = setup, .fini = teardown);

static struct cgroup *open_web(const char *tree, enum cgroup_version want)
{
        char fs[PATH_MAX], proc[PATH_MAX], *mount = NULL, *path = NULL;
        enum cgroup_version v = 0;
        struct cgroup *cg = NULL;

        snprintf(fs, sizeof(fs), "%s/fs", tree);
        snprintf(proc, sizeof(proc), "%s/proc", tree);
        cr_assert_eq(cgroup_detect(fs, &v, &mount), 0);
        cr_assert_eq(v, want);
        cr_assert_eq(cgroup_pid_path(proc, 4242, v, &path), 0);
        cr_assert_str_eq(path, "/web");
        cr_assert_eq(cgroup_new(v, mount, path, &cg), 0);
        free(mount);
        free(path);
        return cg;
}

Test(cgroup, detect_v1_hybrid)
{
        char fs[PATH_MAX], *mount = NULL;
        enum cgroup_version v = 0;

        snprintf(fs, sizeof(fs), "%s/fs", v1);
        cr_assert_eq(cgroup_detect(fs, &v, &mount), 0);
        cr_assert_eq(v, CGROUP_V1, "unified without memory must not count as v2");
        cr_assert(strstr(mount, "/fs/memory") != NULL);
        free(mount);
        cr_assert_eq(cgroup_detect("/nonexistent-xmem", &v, &mount), -ENOENT);
}

Test(cgroup, detect_v2)
{
        char fs[PATH_MAX], *mount = NULL;
        enum cgroup_version v = 0;

        snprintf(fs, sizeof(fs), "%s/fs", v2);
        cr_assert_eq(cgroup_detect(fs, &v, &mount), 0);
        cr_assert_eq(v, CGROUP_V2);
        cr_assert_str_eq(mount, fs);
        free(mount);
}

Test(cgroup, parse_proc)
{
        char *p = NULL;

        cr_assert_eq(cgroup_parse_proc("5:cpu,memory:/a/b\n0::/u\n", CGROUP_V1, &p), 0);
        cr_assert_str_eq(p, "/a/b");
        free(p);
        cr_assert_eq(cgroup_parse_proc("5:cpu,memory:/a/b\n0::/u\n", CGROUP_V2, &p), 0);
        cr_assert_str_eq(p, "/u");
        free(p);
        cr_assert_eq(cgroup_parse_proc("4:memoryx:/a\n", CGROUP_V1, &p), -ENOENT);
        cr_assert_eq(cgroup_parse_proc("1:name=systemd:/\n", CGROUP_V2, &p), -ENOENT);
        cr_assert_eq(cgroup_parse_proc("garbage\n", CGROUP_V1, &p), -EINVAL);
        cr_assert_eq(cgroup_parse_proc("4:memory:relative\n", CGROUP_V1, &p), -EINVAL);
        cr_assert_eq(cgroup_pid_path(v1, 1, CGROUP_V1, &p), -ENOENT);
}

Test(cgroup, read_v1)
{
        struct cgroup *cg = open_web(v1, CGROUP_V1);
        struct cgroup_mem m;

        cr_assert(cgroup_exists(cg));
        cr_assert_eq(cgroup_read_mem(cg, &m), 0);
        cr_assert_eq(m.usage, 50331648);
        cr_assert_eq(m.limit, 67108864);
        cr_assert_eq(m.high, CGROUP_NO_LIMIT);
        cr_assert_eq(m.anon, 8388608 + 2097152);
        cr_assert_eq(m.file, 41943040);
        cr_assert_eq(m.shmem, 33554432);
        cr_assert_eq(m.oom_kill, 3);
        cgroup_free(cg);
}

Test(cgroup, read_v2)
{
        struct cgroup *cg = open_web(v2, CGROUP_V2);
        struct cgroup_mem m;

        cr_assert_eq(cgroup_read_mem(cg, &m), 0);
        cr_assert_eq(m.usage, 50331648);
        cr_assert_eq(m.limit, CGROUP_NO_LIMIT);
        cr_assert_eq(m.high, CGROUP_NO_LIMIT);
        cr_assert_eq(m.anon, 8388608);
        cr_assert_eq(m.shmem, 33554432);
        cr_assert_eq(m.oom_kill, 1);
        cr_assert_eq(m.high_events, 17);
        cgroup_free(cg);
}

Test(cgroup, set_limit)
{
        struct cgroup *c1 = open_web(v1, CGROUP_V1), *c2 = open_web(v2, CGROUP_V2);
        uint64_t v;

        cr_assert_eq(cgroup_set_limit(c1, 64ULL << 20), 0);
        cr_assert_eq(cgroup_read_u64(c1, "memory.limit_in_bytes", &v), 0);
        cr_assert_eq(v, 64ULL << 20);
        cr_assert_eq(cgroup_set_limit(c2, 256ULL << 20), 0);
        cr_assert_eq(cgroup_read_u64(c2, "memory.max", &v), 0);
        cr_assert_eq(v, 256ULL << 20);
        cr_assert_eq(cgroup_read_u64(c2, "memory.high", &v), 0);
        cr_assert_eq(v, (256ULL << 20) - (16ULL << 20));
        cr_assert_eq(cgroup_set_limit(c2, CGROUP_NO_LIMIT), 0);
        cr_assert_eq(cgroup_read_u64(c2, "memory.max", &v), 0);
        cr_assert_eq(v, CGROUP_NO_LIMIT);
        cr_assert_eq(cgroup_read_u64(c2, "nonexistent", &v), -ENOENT);
        cr_assert_eq(cgroup_read_keyed(c2, "memory.stat", "nokey", &v), -ENOENT);
        cgroup_free(c1);
        cgroup_free(c2);
}

Test(cgroup, high_for)
{
        cr_assert_eq(cgroup_high_for(CGROUP_NO_LIMIT), CGROUP_NO_LIMIT);
        cr_assert_eq(cgroup_high_for(8ULL << 20), 7ULL << 20);              /* 1 MiB floor */
        cr_assert_eq(cgroup_high_for(8ULL << 30), (8ULL << 30) - (64ULL << 20)); /* cap */
}

Test(cgroup, create_move_remove)
{
        struct cgroup *web = open_web(v2, CGROUP_V2), *child = NULL;
        char buf[64] = "";
        FILE *f;

        cr_assert_eq(cgroup_create_child(web, "../x", &child), -EINVAL);
        cr_assert_eq(cgroup_create_child(web, "job", &child), 0);
        cr_assert(strstr(child->dir, "/web/job") != NULL);
        cr_assert_eq(cgroup_create_child(web, "job", &child), -EEXIST);
        /* The fake tree has no kernel: the files appear only on a real cgroupfs. */
        cr_assert(!cgroup_exists(child));
        cr_assert_eq(cgroup_move_pid(child, 1), -ENOENT);
        cr_assert_eq(cgroup_remove(child), 0);
        /* v2: memory was enabled for the children. */
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/cgroup.subtree_control", web->dir);
        f = fopen(p, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        cr_assert_str_eq(buf, "+memory");
        cr_assert_eq(cgroup_move_pid(web, 77), 0);
        cgroup_free(child);
        cgroup_free(web);
}

/* FILE under the test's temp dir, with TEXT (parents created). */
static void put(const char *file, const char *text)
{
        unit_put_file(tmp, file, text, 0644);
}

static void get(const char *file, char *buf, size_t len)
{
        char path[PATH_MAX];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", tmp, file);
        f = fopen(path, "r");
        cr_assert_not_null(f);
        buf[fread(buf, 1, len - 1, f)] = 0;
        fclose(f);
}

Test(cgroup, parse_proc_controller)
{
        char *p = NULL;

        cr_assert_eq(cgroup_parse_proc_controller("9:freezer:/x/y\n4:memory:/a\n", "freezer", &p),
                     0);
        cr_expect_str_eq(p, "/x/y");
        free(p);
        cr_assert_eq(cgroup_parse_proc_controller("4:memory:/a\n", "freezer", &p), -ENOENT);
        cr_assert_eq(cgroup_parse_proc_controller("4:freezerx:/a\n", "freezer", &p), -ENOENT);
}

Test(cgroup, freezer_v1_from_the_process)
{
        struct cgroup_freezer f = {};
        struct cgroup cg = {.version = CGROUP_V1, .dir = (char *)"/unused"};
        char fs[PATH_MAX], proc[PATH_MAX], buf[64];

        snprintf(fs, sizeof(fs), "%s/fz", tmp);
        snprintf(proc, sizeof(proc), "%s/proc", tmp);
        put("proc/42/cgroup", "11:freezer:/xmem/web-1\n4:memory:/xmem/web-1\n");
        put("proc/43/cgroup", "11:freezer:/\n4:memory:/xmem/web-1\n");
        put("proc/44/cgroup", "4:memory:/xmem/web-1\n");
        put("fz/freezer/xmem/web-1/freezer.state", "THAWED\n");
        cr_assert_eq(cgroup_freezer_find(fs, proc, &cg, 43, &f), -EPERM, "the root freezer");
        cr_assert_eq(cgroup_freezer_find(fs, proc, &cg, 44, &f), -ENOENT);
        cr_assert_eq(cgroup_freezer_find(fs, proc, &cg, 45, &f), -ESRCH);
        cr_assert_eq(cgroup_freezer_find(fs, proc, &cg, 42, &f), 0);
        cr_assert_eq(cgroup_freeze(&f, 100), 0); /* a plain file reads back FROZEN at once */
        get("fz/freezer/xmem/web-1/freezer.state", buf, sizeof(buf));
        cr_expect_str_eq(buf, "FROZEN");
        cr_assert_eq(cgroup_thaw(&f), 0);
        get("fz/freezer/xmem/web-1/freezer.state", buf, sizeof(buf));
        cr_expect_str_eq(buf, "THAWED");
        cgroup_freezer_done(&f);
}

Test(cgroup, freezer_v2_times_out_and_thaws)
{
        struct cgroup_freezer f = {};
        char dir[PATH_MAX], buf[64];
        struct cgroup cg = {.version = CGROUP_V2, .dir = dir};

        snprintf(dir, sizeof(dir), "%s/u/web-1", tmp);
        put("u/web-1/cgroup.freeze", "0\n");
        put("u/web-1/cgroup.events", "populated 1\nfrozen 0\n");
        cr_assert_eq(cgroup_freezer_find("/unused", "/unused", &cg, 1, &f), 0);
        /* never frozen: a timeout, and thawed again */
        cr_assert_eq(cgroup_freeze(&f, 20), -ETIMEDOUT);
        get("u/web-1/cgroup.freeze", buf, sizeof(buf));
        cr_expect_str_eq(buf, "0");
        put("u/web-1/cgroup.events", "populated 1\nfrozen 1\n");
        cr_assert_eq(cgroup_freeze(&f, 20), 0);
        get("u/web-1/cgroup.freeze", buf, sizeof(buf));
        cr_expect_str_eq(buf, "1");
        cgroup_freezer_done(&f);
        snprintf(dir, sizeof(dir), "%s/u", tmp); /* the root: no cgroup.freeze */
        cr_assert_eq(cgroup_freezer_find("/unused", "/unused", &cg, 1, &f), -EPERM);
}
