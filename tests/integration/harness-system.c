/* harness-system.c: what the integration tests read on the host itself:
 * /proc status fields and the kernel's seccomp audit records (harness.h);
 * memory cgroups are harness-cgroup.c's. */
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
