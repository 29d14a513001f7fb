/* harness-cgroup.c: the memory cgroups of the integration tests, cgroup v1 or
 * v2 alike: the host's version, a test's own cgroups, a container's, their
 * usage, limit, peak and freezer state, and the teardown of what a failed
 * test left (harness.h). File names and formats are the kernel's
 * (Documentation/admin-guide/cgroup-v1/memory.rst, cgroup-v2.rst). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "harness.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

bool harness_is_cgroup2(const char *path)
{
        struct statfs fs;

        return statfs(path, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

int harness_cg_version(void)
{
        char ctl[256];
        bool memory = false;
        FILE *f;

        if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0)
                return 1;
        if (!harness_is_cgroup2("/sys/fs/cgroup"))
                return 0;
        /* the root must hand the memory controller to its children */
        f = fopen("/sys/fs/cgroup/cgroup.subtree_control", "re");
        if (f) {
                memory = fgets(ctl, sizeof(ctl), f) && strstr(ctl, "memory");
                fclose(f);
        }
        return memory ? 2 : 0;
}

uint64_t harness_cg_u64(const char *cgroup, const char *file, const char *key)
{
        char p[256], line[256];
        unsigned long long v = 0;
        FILE *f;

        snprintf(p, sizeof(p), "%s/%s", cgroup, file);
        f = fopen(p, "r");
        cr_assert_not_null(f, "%s", p);
        while (fgets(line, sizeof(line), f)) {
                size_t k = key ? strlen(key) : 0;
                if (!key || (strncmp(line, key, k) == 0 && line[k] == ' ')) {
                        v = strtoull(line + k, NULL, 10);
                        break;
                }
        }
        fclose(f);
        return v;
}

/* Write TEXT to DIR/FILE in one write: 0 or -errno. */
static int cg_write(const char *dir, const char *file, const char *text)
{
        char p[300];
        int fd, r = 0;
        ssize_t n;

        snprintf(p, sizeof(p), "%s/%s", dir, file);
        fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = write(fd, text, strlen(text));
        if (n < 0)
                r = -errno;
        else if ((size_t)n != strlen(text))
                r = -EIO;
        close(fd);
        return r;
}

bool harness_cg_at(struct harness_cg *cg, const char *rel)
{
        memset(cg, 0, sizeof(*cg));
        cg->version = harness_cg_version();
        if (!cg->version)
                return false;
        snprintf(cg->path, sizeof(cg->path), "%s%s%s",
                 cg->version == 1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup",
                 rel[0] == '/' ? "" : "/", rel);
        return true;
}

bool harness_cg_create(struct harness_cg *cg, const char *name)
{
        if (!harness_cg_at(cg, name))
                return false;
        if (mkdir(cg->path, 0755) < 0) {
                int e = errno;
                cg->version = 0;
                cr_assert_fail("mkdir %s: %s", cg->path, strerror(e));
        }
        return true;
}

bool harness_cg_create_path(struct harness_cg *cg, const char *rel)
{
        size_t root;
        char *slash;

        if (!harness_cg_at(cg, rel))
                return false;
        root = strlen(cg->version == 1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup");
        for (char *p = cg->path + root + 1;; p = slash + 1) {
                slash = strchr(p, '/');
                if (slash)
                        *slash = 0;
                int r = mkdir(cg->path, 0755) < 0 && errno != EEXIST ? -errno : 0;
                if (r == 0 && slash && cg->version == 2)
                        r = cg_write(cg->path, "cgroup.subtree_control", "+memory");
                cr_assert_eq(r, 0, "%s: %s", cg->path, strerror(-r));
                if (slash)
                        *slash = '/';
                if (!slash)
                        return true;
        }
}

uint64_t harness_cg_usage(const struct harness_cg *cg)
{
        return harness_cg_u64(cg->path,
                              cg->version == 2 ? "memory.current" : "memory.usage_in_bytes", NULL);
}

uint64_t harness_cg_limit(const struct harness_cg *cg)
{
        char p[256], text[64] = "";

        if (cg->version != 2)
                return harness_cg_u64(cg->path, "memory.limit_in_bytes", NULL);
        snprintf(p, sizeof(p), "%s/memory.max", cg->path);
        FILE *f = fopen(p, "re");
        cr_assert_not_null(f, "%s: %s", p, strerror(errno));
        cr_assert_not_null(fgets(text, sizeof(text), f), "%s: empty", p);
        fclose(f);
        return strncmp(text, "max", 3) == 0 ? UINT64_MAX : strtoull(text, NULL, 10);
}

bool harness_cg_peak(const struct harness_cg *cg, uint64_t *ret)
{
        const char *file = cg->version == 2 ? "memory.peak" : "memory.max_usage_in_bytes";
        char p[256];

        snprintf(p, sizeof(p), "%s/%s", cg->path, file);
        if (access(p, F_OK) != 0)
                return false;
        *ret = harness_cg_u64(cg->path, file, NULL);
        return true;
}

void harness_cg_set_limit(const struct harness_cg *cg, uint64_t limit)
{
        const char *file = cg->version == 2 ? "memory.max" : "memory.limit_in_bytes";
        char text[32];
        int r;

        snprintf(text, sizeof(text), "%llu\n", (unsigned long long)limit);
        r = cg_write(cg->path, file, text);
        cr_assert_eq(r, 0, "%s/%s: %s", cg->path, file, strerror(-r));
}

void harness_cg_freezer_state(const char *rel, char *buf, size_t len)
{
        char p[300];
        int fd;
        ssize_t n;

        if (harness_cg_version() != 2) {
                snprintf(p, sizeof(p), "/sys/fs/cgroup/freezer%s/freezer.state", rel);
                fd = open(p, O_RDONLY | O_CLOEXEC);
                n = fd < 0 ? -1 : read(fd, buf, len - 1);
                if (fd >= 0)
                        close(fd);
                if (n < 0)
                        snprintf(buf, len, "(none)");
                else
                        buf[n] = 0;
                return;
        }
        snprintf(p, sizeof(p), "/sys/fs/cgroup%s", rel);
        if (access(p, F_OK) != 0) {
                snprintf(buf, len, "(none)");
                return;
        }
        /* cgroup.events "frozen 1": every task frozen; cgroup.freeze "1":
         * asked for, on its way */
        if (harness_cg_u64(p, "cgroup.events", "frozen") == 1)
                snprintf(buf, len, "FROZEN");
        else if (harness_cg_u64(p, "cgroup.freeze", NULL) == 1)
                snprintf(buf, len, "FREEZING");
        else
                snprintf(buf, len, "THAWED");
}

void harness_cg_kill_all(const char *path)
{
        char procs[256];

        snprintf(procs, sizeof(procs), "%s/cgroup.procs", path);
        for (int i = 0; i < 500; i++) {
                FILE *f = fopen(procs, "re");
                int pid, n = 0;
                while (f && fscanf(f, "%d", &pid) == 1) {
                        kill(pid, SIGKILL);
                        n++;
                }
                if (f)
                        fclose(f);
                if (!f || n == 0)
                        return;
                usleep(10000);
        }
}

/* rmdir DIR, retrying for up to 5 s while its last processes leave it. */
static void cg_rmdir(const char *dir)
{
        for (int i = 0; i < 500 && rmdir(dir) < 0 && errno == EBUSY; i++)
                usleep(10000);
}

/* harness_cg_reap_below of DIR, then DIR itself removed when REMOVE. */
static void reap_tree(const char *dir, bool remove)
{
        char sub[512];
        DIR *d;
        struct dirent *de;

        (void)cg_write(dir, "cgroup.freeze", "0"); /* a checkpoint cut short */
        if (cg_write(dir, "cgroup.kill", "1") < 0) /* Linux 5.14+: the whole subtree */
                harness_cg_kill_all(dir);
        d = opendir(dir);
        while (d && (de = readdir(d))) {
                if (de->d_type != DT_DIR || de->d_name[0] == '.')
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
                reap_tree(sub, true);
        }
        if (d)
                closedir(d);
        harness_cg_kill_all(dir); /* and wait until its processes have left */
        if (remove)
                cg_rmdir(dir);
}

void harness_cg_reap_below(const char *path)
{
        if (access(path, F_OK) == 0)
                reap_tree(path, false);
}

void harness_cg_remove(struct harness_cg *cg)
{
        if (!cg->version)
                return;
        harness_cg_kill_all(cg->path);
        cg_rmdir(cg->path); /* a killed process leaves its cgroup a little later */
        if (access(cg->path, F_OK) == 0)
                fprintf(stderr, "harness: could not remove cgroup %s\n", cg->path);
        cg->version = 0;
}

int harness_cg_enter(const struct harness_cg *cg)
{
        char path[200], pid[24];
        int fd, n, r = 0;

        snprintf(path, sizeof(path), "%s/cgroup.procs", cg->path);
        n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (write(fd, pid, (size_t)n) != n)
                r = -errno;
        close(fd);
        return r;
}

uint64_t harness_cg_oom_kills(const struct harness_cg *cg)
{
        if (cg->version == 2)
                return harness_cg_u64(cg->path, "memory.events", "oom_kill");
        return harness_cg_u64(cg->path, "memory.oom_control", "oom_kill");
}
