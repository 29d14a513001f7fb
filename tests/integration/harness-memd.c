/* harness-memd.c: memd for integration tests: start (and restart) it on its
 * own sockets and state directory, signal and stop it, xmemctl against it,
 * and programs attached to one of its containers through the shim. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static void memd_wait_ready(struct harness_memd *m, int nfd)
{
        char buf[256];

        for (int i = 0; i < 100; i++) {
                struct pollfd p = { .fd = nfd, .events = POLLIN };
                if (poll(&p, 1, 100) > 0) {
                        ssize_t n = recv(nfd, buf, sizeof(buf) - 1, 0);
                        buf[n > 0 ? n : 0] = 0;
                        if (strstr(buf, "READY=1")) {
                                close(nfd);
                                return;
                        }
                }
                cr_assert(waitpid(m->pid, NULL, WNOHANG) == 0, "memd exited, see %s", m->log);
        }
        cr_assert_fail("no READY=1 from memd within 10 s, see %s", m->log);
}

const char *harness_memd_ctr_socket(const struct harness_memd *m, const char *id, char *buf,
                                    size_t len)
{
        snprintf(buf, len, "%s/containers/%s/memd.sock", m->dir, id);
        return buf;
}

/* Start memd in M->dir (made already) with its state in DIR/state. */
static void memd_exec(struct harness_memd *m, const char *const *args)
{
        const char *bin = getenv("XMEM_MEMD");
        char notify[128], state[128];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *argv[32] = { bin, "--socket", m->sock, "--log-level", "debug" };
        bool has_state = false;
        int argc = 5, nfd;
        pid_t parent;

        cr_assert_not_null(bin, "XMEM_MEMD is not set (run through meson test)");
        snprintf(notify, sizeof(notify), "%s/notify", m->dir);
        (void)unlink(notify); /* a restart: the last memd's is still there */
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", notify);
        nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert(bind(nfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        for (; args && *args && argc < 29; args++) {
                has_state |= strcmp(*args, "--state-dir") == 0;
                argv[argc++] = *args;
        }
        if (!has_state) { /* never the host's /var/lib/xmem */
                snprintf(state, sizeof(state), "%s/state", m->dir);
                argv[argc++] = "--state-dir";
                argv[argc++] = state;
        }
        parent = getpid();
        m->pid = fork();
        cr_assert(m->pid >= 0);
        if (m->pid == 0) {
                int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                harness_die_with(parent);
                dup2(fd, 2);
                setenv("NOTIFY_SOCKET", notify, 1);
                execv(bin, (char *const *)argv);
                _exit(127);
        }
        harness_track(m->pid, m->dir);
        memd_wait_ready(m, nfd);
}

void harness_memd_stop_embedded(const struct harness_memd *m)
{
        char *argv[] = { getenv("XMEM_MEMD"), "--socket", (char *)m->sock, "--stop-embedded",
                         NULL };
        char out[512];
        int st = harness_run_output(argv, m->sock, NULL, out, sizeof(out));

        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fprintf(stderr, "harness: memd --stop-embedded failed (status %#x): %s\n", st, out);
}

void harness_memd_start(struct harness_memd *m, const char *dir_template,
                        const char *const *args)
{
        if (!dir_template) { /* a restart in M->dir */
                harness_memd_restart(m, args);
                return;
        }
        snprintf(m->dir, sizeof(m->dir), "%s", dir_template);
        cr_assert_not_null(mkdtemp(m->dir));
        chmod(m->dir, 0755); /* a non-root caller must reach the socket */
        snprintf(m->sock, sizeof(m->sock), "%s/memd.sock", m->dir);
        snprintf(m->log, sizeof(m->log), "%s/memd.log", m->dir);
        memd_exec(m, args);
}

void harness_memd_restart(struct harness_memd *m, const char *const *args)
{
        cr_assert(m->dir[0] && m->pid <= 0, "harness_memd_restart: memd still running");
        memd_exec(m, args);
}

int harness_memd_signal(struct harness_memd *m, int sig)
{
        int status = -1;
        pid_t got = 0;

        if (m->pid <= 0)
                return -1;
        kill(m->pid, sig);
        for (int i = 0; i < 3000 && (got = waitpid(m->pid, &status, WNOHANG)) == 0; i++)
                usleep(10000);
        if (got == 0) { /* hung for 30 s */
                fprintf(stderr, "harness: memd ignored signal %d for 30 s, killing it\n", sig);
                kill(m->pid, SIGKILL);
                waitpid(m->pid, &status, 0);
        }
        harness_untrack(m->pid);
        m->pid = -1;
        return status;
}

int harness_memd_stop(struct harness_memd *m)
{
        int status = harness_memd_signal(m, SIGTERM);

        if (m->dir[0])
                harness_memd_stop_embedded(m);
        if (m->dir[0] && !getenv("XMEM_KEEP_TMP")) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "harness: could not remove %s\n", m->dir);
                m->dir[0] = 0;
        }
        return status;
}

bool harness_ctl(const struct harness_memd *m, char *out, size_t len, const char *const *args)
{
        const char *argv[24] = { getenv("XMEM_CTL"), "--socket", m->sock };
        struct harness_child c;
        size_t got = 0;
        int i, st;

        cr_assert_not_null(argv[0], "XMEM_CTL is not set (run through meson test)");
        for (i = 0; args[i] && i < 20; i++)
                argv[3 + i] = args[i];
        harness_child_spawn(&c, argv, NULL, NULL, true);
        close(c.in);
        c.in = -1;
        out[0] = 0;
        /* its output is one JSON line or a few lines of text; 20 s in all */
        for (int tries = 0; tries < 20 && got + 1 < len; tries++) {
                int r = harness_child_line(&c, out + got, len - got, 1000);
                got += strlen(out + got);
                if (r == 0)
                        break;
                if (r == 1 && got + 1 < len)
                        out[got++] = '\n', out[got] = 0;
        }
        st = harness_child_wait(&c, 5000);
        harness_child_kill(&c);
        return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

void harness_memd_spawn(const struct harness_memd *m, const char *id, struct harness_child *c,
                        const char *const *argv, const struct harness_cg *cg, bool stderr_too)
{
        const char *shim = getenv("XMEM_SHIM");
        char pre[300], sockenv[200], ctr[160];

        cr_assert_not_null(shim, "XMEM_SHIM is not set (run through meson test)");
        snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", shim);
        snprintf(sockenv, sizeof(sockenv), "XMEM_SOCKET=%s",
                 harness_memd_ctr_socket(m, id, ctr, sizeof(ctr)));
        harness_child_spawn(c, argv, (const char *const[]){pre, sockenv, NULL}, cg, stderr_too);
}

pid_t harness_memd_embedded_pid(const struct harness_memd *m)
{
        char path[192];
        long pid = -1;
        FILE *f;

        snprintf(path, sizeof(path), "%s/appliance/embedded.pid", m->dir);
        f = fopen(path, "r");
        if (f) {
                if (fscanf(f, "%ld", &pid) != 1)
                        pid = -1;
                fclose(f);
        }
        return (pid_t)pid;
}
