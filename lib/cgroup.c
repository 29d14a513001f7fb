/* cgroup.c: memory controller access for cgroup v1 and v2 (see cgroup.h).
 * Plain file reads and writes under a caller-given root; nothing prints. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "fdio.h"
#include "macro.h"
#include "parse.h"

static int read_text(const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read_upto(fd, buf, size - 1);
        if (n < 0)
                return (int)n;
        buf[n] = '\0';
        return (int)n;
}

static int write_text(const char *path, const char *text)
{
        /* O_TRUNC as a shell redirection does: a no-op on cgroupfs, right on fake trees. */
        _cleanup_close_ int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        /* cgroupfs takes one write per value; a short write is an error. */
        ssize_t n = write(fd, text, strlen(text));
        if (n < 0)
                return -errno;
        return (size_t)n == strlen(text) ? 0 : -EIO;
}

static bool controllers_have_memory(const char *mount)
{
        char path[4096], buf[1024];

        snprintf(path, sizeof(path), "%s/cgroup.controllers", mount);
        if (read_text(path, buf, sizeof(buf)) < 0)
                return false;
        for (char *save = NULL, *w = strtok_r(buf, " \n", &save); w;
             w = strtok_r(NULL, " \n", &save))
                if (strcmp(w, "memory") == 0)
                        return true;
        return false;
}

int cgroup_detect(const char *fs_root, enum cgroup_version *ret_version, char **ret_mount)
{
        static const char *const v2_dirs[] = { "", "/unified" };
        char path[4096];

        for (size_t i = 0; i < ELEMENTSOF(v2_dirs); i++) {
                snprintf(path, sizeof(path), "%s%s", fs_root, v2_dirs[i]);
                if (controllers_have_memory(path)) {
                        char *m = strdup(path);
                        if (!m)
                                return -ENOMEM;
                        *ret_version = CGROUP_V2;
                        *ret_mount = m;
                        return 0;
                }
        }
        snprintf(path, sizeof(path), "%s/memory/memory.limit_in_bytes", fs_root);
        if (access(path, F_OK) == 0) {
                char *m;
                if (asprintf(&m, "%s/memory", fs_root) < 0)
                        return -ENOMEM;
                *ret_version = CGROUP_V1;
                *ret_mount = m;
                return 0;
        }
        return -ENOENT;
}

/* One line "ID:CONTROLLERS:PATH": does it name CONTROLLER's v1 cgroup (NULL:
 * the v2 unified one)? */
static bool line_matches(const char *id, const char *ctrls, const char *controller)
{
        if (!controller)
                return strcmp(id, "0") == 0 && ctrls[0] == '\0';
        for (const char *p = ctrls; *p;) {
                size_t n = strcspn(p, ",");
                if (n == strlen(controller) && strncmp(p, controller, n) == 0)
                        return true;
                p += n;
                if (*p == ',')
                        p++;
        }
        return false;
}

int cgroup_parse_proc(const char *text, enum cgroup_version version, char **ret_path)
{
        return cgroup_parse_proc_controller(text, version == CGROUP_V2 ? NULL : "memory", ret_path);
}

int cgroup_parse_proc_controller(const char *text, const char *controller, char **ret_path)
{
        _cleanup_free_ char *copy = strdup(text);
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *c1 = strchr(line, ':'), *c2;
                if (!c1 || !(c2 = strchr(c1 + 1, ':')))
                        return -EINVAL;
                *c1 = *c2 = '\0';
                if (c2[1] != '/')
                        return -EINVAL;
                if (line_matches(line, c1 + 1, controller)) {
                        char *p = strdup(c2 + 1);
                        if (!p)
                                return -ENOMEM;
                        *ret_path = p;
                        return 0;
                }
        }
        return -ENOENT;
}

int cgroup_pid_path(const char *proc_root, pid_t pid, enum cgroup_version version,
                    char **ret_path)
{
        char path[4096], buf[8192];
        int r;

        snprintf(path, sizeof(path), "%s/%d/cgroup", proc_root, (int)pid);
        r = read_text(path, buf, sizeof(buf));
        if (r < 0)
                return r;
        return cgroup_parse_proc(buf, version, ret_path);
}

int cgroup_new(enum cgroup_version version, const char *mount, const char *path,
               struct cgroup **ret)
{
        struct cgroup *cg;

        if (version != CGROUP_V1 && version != CGROUP_V2)
                return -EINVAL;
        if (path[0] == '/')
                path++;
        cg = calloc(1, sizeof(*cg));
        if (!cg)
                return -ENOMEM;
        cg->version = version;
        if (asprintf(&cg->dir, "%s%s%s", mount, path[0] ? "/" : "", path) < 0) {
                free(cg);
                return -ENOMEM;
        }
        /* Keep "/a/b" not "/a/b/" so paths compare and print cleanly. */
        size_t n = strlen(cg->dir);
        while (n > 1 && cg->dir[n - 1] == '/')
                cg->dir[--n] = '\0';
        *ret = cg;
        return 0;
}

void cgroup_free(struct cgroup *cg)
{
        if (!cg)
                return;
        free(cg->dir);
        free(cg);
}

static int cg_path(const struct cgroup *cg, const char *file, char *buf, size_t size)
{
        int n = snprintf(buf, size, "%s/%s", cg->dir, file);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int cgroup_create_child(const struct cgroup *parent, const char *name, struct cgroup **ret)
{
        _cleanup_(cgroup_freep) struct cgroup *child = NULL;
        char path[4096];
        int r;

        if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                return -EINVAL;
        if (parent->version == CGROUP_V2) {
                r = cg_path(parent, "cgroup.subtree_control", path, sizeof(path));
                if (r < 0)
                        return r;
                /* Already enabled is fine; a failure shows when limits are set. */
                (void)write_text(path, "+memory");
        }
        r = cgroup_new(parent->version, parent->dir, name, &child);
        if (r < 0)
                return r;
        if (mkdir(child->dir, 0755) < 0)
                return -errno;
        *ret = TAKE_PTR(child);
        return 0;
}

int cgroup_remove(const struct cgroup *cg)
{
        return rmdir(cg->dir) < 0 ? -errno : 0;
}

bool cgroup_exists(const struct cgroup *cg)
{
        char path[4096];

        if (cg_path(cg, "cgroup.procs", path, sizeof(path)) < 0)
                return false;
        return access(path, F_OK) == 0;
}

int cgroup_move_pid(const struct cgroup *cg, pid_t pid)
{
        char path[4096], buf[32];
        int r = cg_path(cg, "cgroup.procs", path, sizeof(path));

        if (r < 0)
                return r;
        snprintf(buf, sizeof(buf), "%d\n", (int)pid);
        return write_text(path, buf);
}

int cgroup_read_u64(const struct cgroup *cg, const char *file, uint64_t *ret)
{
        char path[4096], buf[64];
        uint64_t v;
        int r = cg_path(cg, file, path, sizeof(path));

        if (r < 0)
                return r;
        r = read_text(path, buf, sizeof(buf));
        if (r < 0)
                return r;
        buf[strcspn(buf, "\n")] = '\0';
        if (strcmp(buf, "max") == 0) {
                *ret = CGROUP_NO_LIMIT;
                return 0;
        }
        r = parse_u64(buf, &v);
        if (r < 0)
                return r;
        /* v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (~2^63). */
        *ret = v >= (UINT64_C(1) << 62) ? CGROUP_NO_LIMIT : v;
        return 0;
}

int cgroup_read_keyed(const struct cgroup *cg, const char *file, const char *key, uint64_t *ret)
{
        char path[4096];
        _cleanup_free_ char *buf = malloc(65536);
        size_t klen = strlen(key);
        int r;

        if (!buf)
                return -ENOMEM;
        r = cg_path(cg, file, path, sizeof(path));
        if (r < 0)
                return r;
        r = read_text(path, buf, 65536);
        if (r < 0)
                return r;
        for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
                        return parse_u64(line + klen + 1, ret);
        }
        return -ENOENT;
}

/* A keyed value that may be absent (older kernels, other layouts): 0 then. */
static int keyed_or_zero(const struct cgroup *cg, const char *file, const char *key,
                         uint64_t *ret)
{
        int r = cgroup_read_keyed(cg, file, key, ret);
        if (r == -ENOENT) {
                *ret = 0;
                return 0;
        }
        return r;
}

static int read_mem_v1(const struct cgroup *cg, struct cgroup_mem *m)
{
        uint64_t huge = 0;
        int r;

        if ((r = cgroup_read_u64(cg, "memory.usage_in_bytes", &m->usage)) < 0 ||
            (r = cgroup_read_u64(cg, "memory.limit_in_bytes", &m->limit)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "total_rss", &m->anon)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "total_rss_huge", &huge)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "total_cache", &m->file)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "total_shmem", &m->shmem)) < 0 ||
            (r = keyed_or_zero(cg, "memory.oom_control", "oom_kill", &m->oom_kill)) < 0)
                return r;
        m->anon += huge;
        m->high = CGROUP_NO_LIMIT;
        m->high_events = 0;
        return 0;
}

static int read_mem_v2(const struct cgroup *cg, struct cgroup_mem *m)
{
        int r;

        if ((r = cgroup_read_u64(cg, "memory.current", &m->usage)) < 0 ||
            (r = cgroup_read_u64(cg, "memory.max", &m->limit)) < 0 ||
            (r = cgroup_read_u64(cg, "memory.high", &m->high)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "anon", &m->anon)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "file", &m->file)) < 0 ||
            (r = keyed_or_zero(cg, "memory.stat", "shmem", &m->shmem)) < 0 ||
            (r = keyed_or_zero(cg, "memory.events", "oom_kill", &m->oom_kill)) < 0 ||
            (r = keyed_or_zero(cg, "memory.events", "high", &m->high_events)) < 0)
                return r;
        return 0;
}

int cgroup_read_mem(const struct cgroup *cg, struct cgroup_mem *ret)
{
        struct cgroup_mem m = {};
        int r = cg->version == CGROUP_V1 ? read_mem_v1(cg, &m) : read_mem_v2(cg, &m);

        if (r < 0)
                return r;
        *ret = m;
        return 0;
}

uint64_t cgroup_high_for(uint64_t limit)
{
        uint64_t gap;

        if (limit == CGROUP_NO_LIMIT)
                return CGROUP_NO_LIMIT;
        gap = MIN(MAX(limit / 16, UINT64_C(1) << 20), UINT64_C(64) << 20);
        return limit > gap ? limit - gap : limit;
}

static void format_limit(char *buf, size_t size, uint64_t v, enum cgroup_version version)
{
        if (v == CGROUP_NO_LIMIT)
                snprintf(buf, size, version == CGROUP_V1 ? "-1" : "max");
        else
                snprintf(buf, size, "%" PRIu64, v);
}

int cgroup_set_oom_pause(const struct cgroup *cg, bool pause)
{
        char path[4096];
        int r;

        if (cg->version != CGROUP_V1)
                return -EOPNOTSUPP;
        r = cg_path(cg, "memory.oom_control", path, sizeof(path));
        return r < 0 ? r : write_text(path, pause ? "1" : "0");
}

bool cgroup_under_oom(const struct cgroup *cg)
{
        uint64_t v = 0;

        return cg->version == CGROUP_V1 &&
               cgroup_read_keyed(cg, "memory.oom_control", "under_oom", &v) == 0 && v;
}

int cgroup_set_limit(const struct cgroup *cg, uint64_t limit)
{
        char path[4096], val[32];
        int r;

        if (cg->version == CGROUP_V1) {
                r = cg_path(cg, "memory.limit_in_bytes", path, sizeof(path));
                if (r < 0)
                        return r;
                format_limit(val, sizeof(val), limit, CGROUP_V1);
                return write_text(path, val);
        }
        /* high first: it is advisory, so it is in place before max starts reclaiming. */
        char hpath[4096], hval[32];
        r = cg_path(cg, "memory.max", path, sizeof(path));
        if (r < 0 || (r = cg_path(cg, "memory.high", hpath, sizeof(hpath))) < 0)
                return r;
        format_limit(val, sizeof(val), limit, CGROUP_V2);
        format_limit(hval, sizeof(hval), cgroup_high_for(limit), CGROUP_V2);
        r = write_text(hpath, hval);
        if (r < 0)
                return r;
        return write_text(path, val);
}

int cgroup_freezer_find(const char *fs_root, const char *proc_root, const struct cgroup *cg,
                        pid_t pid, struct cgroup_freezer *ret)
{
        _cleanup_free_ char *rel = NULL;
        char path[4096], buf[8192];
        int r;

        if (cg->version == CGROUP_V2) {
                r = cg_path(cg, "cgroup.freeze", path, sizeof(path));
                if (r < 0)
                        return r;
                if (access(path, F_OK) < 0)
                        return errno == ENOENT ? -EPERM : -errno; /* the root has none */
                ret->dir = strdup(cg->dir);
                ret->version = CGROUP_V2;
                return ret->dir ? 0 : -ENOMEM;
        }
        snprintf(path, sizeof(path), "%s/%d/cgroup", proc_root, (int)pid);
        r = read_text(path, buf, sizeof(buf));
        if (r < 0)
                return r == -ENOENT ? -ESRCH : r;
        r = cgroup_parse_proc_controller(buf, "freezer", &rel);
        if (r < 0)
                return r;
        if (strcmp(rel, "/") == 0 || strstr(rel, "/.."))
                return -EPERM;
        if (asprintf(&ret->dir, "%s/freezer%s", fs_root, rel) < 0)
                return -ENOMEM;
        ret->version = CGROUP_V1;
        return 0;
}

void cgroup_freezer_done(struct cgroup_freezer *f)
{
        free(f->dir);
        f->dir = NULL;
}

static int freezer_file(const struct cgroup_freezer *f, const char *name, char *buf, size_t len)
{
        int n = snprintf(buf, len, "%s/%s", f->dir, name);
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Frozen yet? v1 freezer.state "FROZEN", v2 cgroup.events "frozen 1". */
static int freezer_frozen(const struct cgroup_freezer *f)
{
        char path[4096], buf[4096];
        int r;

        if (f->version == CGROUP_V1) {
                r = freezer_file(f, "freezer.state", path, sizeof(path));
                if (r >= 0)
                        r = read_text(path, buf, sizeof(buf));
                return r < 0 ? r : strncmp(buf, "FROZEN", 6) == 0;
        }
        r = freezer_file(f, "cgroup.events", path, sizeof(path));
        if (r >= 0)
                r = read_text(path, buf, sizeof(buf));
        return r < 0 ? r : strstr(buf, "frozen 1") != NULL;
}

int cgroup_freeze(const struct cgroup_freezer *f, unsigned timeout_ms)
{
        char path[4096];
        int r;

        r = freezer_file(f, f->version == CGROUP_V1 ? "freezer.state" : "cgroup.freeze", path,
                         sizeof(path));
        if (r >= 0)
                r = write_text(path, f->version == CGROUP_V1 ? "FROZEN" : "1");
        for (unsigned waited = 0; r >= 0; waited++) {
                r = freezer_frozen(f);
                if (r != 0)
                        break;
                if (waited >= timeout_ms) {
                        r = -ETIMEDOUT;
                        break;
                }
                usleep(1000);
        }
        if (r < 0) {
                (void)cgroup_thaw(f);
                return r;
        }
        return 0;
}

int cgroup_thaw(const struct cgroup_freezer *f)
{
        char path[4096];
        int r;

        r = freezer_file(f, f->version == CGROUP_V1 ? "freezer.state" : "cgroup.freeze", path,
                         sizeof(path));
        return r < 0 ? r : write_text(path, f->version == CGROUP_V1 ? "THAWED" : "0");
}
