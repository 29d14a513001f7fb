/* harness-system.c: what the integration tests set up and read on the host
 * itself: memory cgroups (v1 or v2), /proc status fields and the kernel's
 * seccomp audit records (harness.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "privilege.h"

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

bool harness_cg_create(struct harness_cg *cg, const char *name)
{
        char ctl[256];
        FILE *f;
        bool v2 = false;

        memset(cg, 0, sizeof(*cg));
        if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0) {
                cg->version = 1;
                snprintf(cg->path, sizeof(cg->path), "/sys/fs/cgroup/memory/%s", name);
        } else {
                /* v2: the root must hand the memory controller to its children */
                f = fopen("/sys/fs/cgroup/cgroup.subtree_control", "r");
                if (f) {
                        v2 = fgets(ctl, sizeof(ctl), f) && strstr(ctl, "memory");
                        fclose(f);
                }
                if (!v2)
                        return false;
                cg->version = 2;
                snprintf(cg->path, sizeof(cg->path), "/sys/fs/cgroup/%s", name);
        }
        if (mkdir(cg->path, 0755) < 0) {
                int e = errno;
                cg->version = 0;
                cr_assert_fail("mkdir %s: %s", cg->path, strerror(e));
        }
        return true;
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

void harness_cg_remove(struct harness_cg *cg)
{
        if (!cg->version)
                return;
        harness_cg_kill_all(cg->path);
        for (int i = 0; i < 500 && rmdir(cg->path) < 0 && errno == EBUSY; i++)
                usleep(10000); /* a killed process leaves its cgroup a little later */
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

int harness_audit_records(pid_t pid)
{
        char line[1024], needle[32];
        FILE *f = popen("dmesg 2>/dev/null", "r");
        int n = 0;

        cr_assert_not_null(f, "dmesg: %s", strerror(errno));
        snprintf(needle, sizeof(needle), " pid=%d ", (int)pid);
        while (fgets(line, sizeof(line), f))
                if (strstr(line, "type=1326") && strstr(line, needle))
                        n++;
        pclose(f);
        return n;
}

bool harness_violation_reaches_dmesg(int mode)
{
        const int small[] = {SCMP_SYS(exit_group), SCMP_SYS(getpid)};
        struct xmem_error err = {};
        int status;
        pid_t pid = fork();

        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                if (privilege_seccomp_install(small, 2, (enum privilege_violation)mode, &err) < 0)
                        _exit(1);
                (void)syscall(SYS_getppid);
                /* not _exit(): a sanitizer's exit-time work (the leak check
                 * stops the world) would loop on refused calls for ever */
                syscall(SYS_exit_group, 0);
        }
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert_eq(status, 0, "the seccomp probe ended with status %#x", status);
        for (int i = 0; i < 50; i++) {
                if (harness_audit_records(pid) > 0)
                        return true;
                usleep(20000);
        }
        return false;
}

void harness_status_field(const char *path, const char *field, char *out, size_t len)
{
        size_t n = strlen(field);
        char line[256];
        FILE *f = fopen(path, "re");

        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        out[0] = 0;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, n) == 0 && line[n] == ':') {
                        snprintf(out, len, "%s", line + n + 1 + strspn(line + n + 1, " \t"));
                        out[strcspn(out, "\n")] = 0;
                        for (size_t e = strlen(out); e > 0 && out[e - 1] == ' '; e--)
                                out[e - 1] = 0;
                }
        fclose(f);
}
