/* harness-track.c: the processes the harness started (appliances, memd),
 * stopped when the test's process exits if its teardown did not. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

/* Every appliance and memd the harness started and has not reaped yet. A
 * test that skips (cr_skip_test exits: no .fini) or fails before its
 * teardown would leave them to the parent-death signal alone; the worker's
 * exit stops them (atexit), and a test killed by its timeout is left to the
 * parent-death signal. */
#define TRACKED_MAX 64
static struct tracked {
        pid_t pid;
        char dir[64];
} tracked[TRACKED_MAX];

/* A memd's embedded appliance outlives it (its own session): the one whose
 * pid file is in DIR/appliance and whose command line names DIR. */
static void stop_embedded(const char *dir)
{
        char path[160], cmdline[512] = "";
        int pid = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/appliance/embedded.pid", dir);
        f = fopen(path, "r");
        if (!f)
                return;
        if (fscanf(f, "%d", &pid) != 1)
                pid = 0;
        fclose(f);
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        f = pid > 1 ? fopen(path, "r") : NULL;
        if (!f)
                return;
        size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
                cmdline[i] = cmdline[i] ? cmdline[i] : ' ';
        if (strstr(cmdline, dir)) {
                fprintf(stderr, "harness: embedded appliance %d (%s) left running: killed\n",
                        pid, dir);
                kill(pid, SIGKILL);
        }
}

static void stop_tracked(void)
{
        for (size_t i = 0; i < TRACKED_MAX; i++) {
                struct tracked *t = &tracked[i];
                char cmd[128];

                /* only a child of ours still running (not one reaped elsewhere) */
                if (t->pid <= 0 || waitpid(t->pid, NULL, WNOHANG) != 0) {
                        t->pid = 0;
                        continue;
                }
                fprintf(stderr, "harness: pid %d (%s) left running by the test: killed\n",
                        (int)t->pid, t->dir);
                kill(t->pid, SIGKILL);
                waitpid(t->pid, NULL, 0);
                t->pid = 0;
                if (t->dir[0])
                        stop_embedded(t->dir);
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
                if (t->dir[0] && !getenv("XMEM_KEEP_TMP") && system(cmd) != 0)
                        fprintf(stderr, "harness: could not remove %s\n", t->dir);
        }
}

void harness_track(pid_t pid, const char *dir)
{
        static bool registered;

        if (!registered)
                registered = atexit(stop_tracked) == 0;
        for (size_t i = 0; i < TRACKED_MAX; i++)
                if (tracked[i].pid <= 0) {
                        tracked[i].pid = pid;
                        snprintf(tracked[i].dir, sizeof(tracked[i].dir), "%s", dir);
                        return;
                }
}

void harness_untrack(pid_t pid)
{
        for (size_t i = 0; i < TRACKED_MAX; i++)
                if (tracked[i].pid == pid)
                        tracked[i].pid = 0;
}
