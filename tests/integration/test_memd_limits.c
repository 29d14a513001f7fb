/* test_memd_limits.c: memd at its limits and at its appliances' (a real memd,
 * real appliances): out of descriptors it pauses accepting instead of
 * spinning and serves again afterwards; a tcp appliance that demands a
 * secret serves a memd that has it and refuses one that has not. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"
#include "memd-client.h"

static struct harness_memd md;
static struct harness_proc app;

static void teardown(void)
{
        harness_memd_stop(&md);
        harness_cleanup(&app);
}

TestSuite(memd_limits, .fini = teardown, .timeout = 60);

/* memd's list over the admin socket: 0, or -errno with ERR. */
static int list(struct xmem_error *err)
{
        _cleanup_close_ int fd = -1;
        int r = memd_connect(md.sock, 5, &fd, err);

        return r < 0 ? r : memd_call(fd, "list", NULL, NULL, err);
}

static double cpu_s(pid_t pid)
{
        char path[64], buf[1024], *p;
        unsigned long ut = 0, st = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        f = fopen(path, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        p = strrchr(buf, ')');
        cr_assert(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                              &st) == 2);
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Out of descriptors, memd stops accepting for a moment instead of spinning
 * on a readable socket, and serves again once descriptors come back. */
Test(memd_limits, out_of_descriptors_does_not_spin)
{
        struct xmem_error err = {};
        struct rlimit low, old;
        char log[65536] = "";
        int fds[120], n = 0, lfd;
        double cpu;
        ssize_t ln;

        cr_assert(harness_is_root(), "memd tests need root");
        setenv("XMEM_APPLIANCE_BIN", getenv("XMEM_APPLIANCE"), 1);
        harness_memd_start(&md, "/tmp/xmem-limits.XXXXXX",
                           (const char *const[]){"--embedded-appliance", "64M", NULL});
        /* the soft limit only: raising a hard limit back needs CAP_SYS_RESOURCE */
        cr_assert_eq(prlimit(md.pid, RLIMIT_NOFILE, NULL, &old), 0);
        low = (struct rlimit){64, old.rlim_max};
        cr_assert_eq(prlimit(md.pid, RLIMIT_NOFILE, &low, NULL), 0, "prlimit: %s", strerror(errno));
        for (; n < 120; n++)
                if ((fds[n] = harness_connect_unix(md.sock)) < 0)
                        break;
        usleep(300000);
        cpu = cpu_s(md.pid);
        sleep(1);
        cpu = cpu_s(md.pid) - cpu;
        cr_log_info("%d connections at 64 descriptors: memd used %.2f s of CPU in 1 s", n, cpu);
        cr_expect_lt(cpu, 0.3, "memd spun at EMFILE: %.2f s of CPU in 1 s", cpu);
        lfd = open(md.log, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(lfd, 0);
        ln = read(lfd, log, sizeof(log) - 1);
        log[ln > 0 ? ln : 0] = 0;
        close(lfd);
        cr_expect(strstr(log, "Too many open files: not accepting for 100 ms"),
                  "memd never ran out of descriptors (the test proves nothing): %s", md.log);
        for (int i = 0; i < n; i++)
                close(fds[i]);
        cr_assert_eq(prlimit(md.pid, RLIMIT_NOFILE, &old, NULL), 0);
        usleep(300000);
        cr_expect_eq(list(&err), 0, "memd does not answer after EMFILE: %s", xmem_error_str(&err));
}

/* A tcp appliance with --secret-file serves a memd that has the secret, and
 * a memd without it does not start (one line saying why). */
Test(memd_limits, tcp_appliance_with_a_secret)
{
        char secret[192], sock[200], log[200], text[4096] = "";
        struct xmem_error err = {};
        int status = -1, fd;
        pid_t pid;

        cr_assert(harness_is_root(), "memd tests need root");
        harness_init(&app);
        snprintf(secret, sizeof(secret), "%s/secret", app.dir);
        fd = open(secret, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        cr_assert(fd >= 0 && write(fd, "a deployment secret of 32 bytes!", 32) == 32);
        close(fd);
        harness_appliance_start(&app, (const char *const[]){"--secret-file", secret, NULL});
        harness_memd_start(&md, "/tmp/xmem-limits.XXXXXX",
                           (const char *const[]){"--appliance", app.tcp_uri,
                                                 "--appliance-secret-file", secret, NULL});
        cr_expect_eq(list(&err), 0, "memd through an authenticated appliance: %s",
                     xmem_error_str(&err));
        snprintf(sock, sizeof(sock), "%s/other.sock", md.dir);
        snprintf(log, sizeof(log), "%s/other.log", md.dir);
        pid_t parent = getpid();
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                harness_die_with(parent);
                dup2(fd, 2);
                char state[300];
                snprintf(state, sizeof(state), "%s/other-state", md.dir);
                execl(getenv("XMEM_MEMD"), "memd", "--socket", sock, "--appliance", app.tcp_uri,
                      "--log-level", "err", "--state-dir", state, (char *)NULL);
                _exit(127);
        }
        for (int i = 0; i < 200 && waitpid(pid, &status, WNOHANG) == 0; i++)
                usleep(50000);
        if (status == -1) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                cr_assert_fail("a memd without the secret kept running");
        }
        fd = open(log, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t n = read(fd, text, sizeof(text) - 1);
                text[n > 0 ? n : 0] = 0;
                close(fd);
        }
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %#x", status);
        cr_expect(strstr(text, app.tcp_uri) != NULL, "the error does not name the appliance: %s",
                  text);
}
