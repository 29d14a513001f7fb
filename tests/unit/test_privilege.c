/* test_privilege.c: capability dropping, user switching and the seccomp
 * wrappers, each in a forked child (they are irreversible), checked from
 * inside (capget, prctl, errno) and from the parent (exit status, signal). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privilege.h"

/* Under ASan the sanitizer runtime itself makes syscalls outside a small
 * allow-list (sigaltstack for new threads, ...): those filters are tested in
 * plain builds only. */
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define SKIP_IF_SANITIZED() cr_skip_test("sanitizer build: its runtime needs syscalls outside the filter")
#else
#define SKIP_IF_SANITIZED() do { } while (0)
#endif

/* Run FN in a child; returns its wait status. FN returns the exit code. */
static int in_child(int (*fn)(void))
{
        int status;
        pid_t pid = fork();

        cr_assert_geq(pid, 0);
        if (pid == 0)
                _exit(fn());
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        return status;
}

static void assert_exit_ok(int status, const char *what)
{
        cr_assert(WIFEXITED(status), "%s: child died of signal %d", what,
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        cr_assert_eq(WEXITSTATUS(status), 0, "%s: child failed at check %d", what,
                     WEXITSTATUS(status));
}

static void need_root(void)
{
        if (geteuid() != 0 || prctl(PR_CAPBSET_READ, CAP_SETPCAP) != 1)
                cr_skip_test("needs root with CAP_SETPCAP in the bounding set");
}

/* "CapEff:\t0000..." from /proc/self/status, as a number. */
static unsigned long long status_caps(const char *field)
{
        char line[256];
        unsigned long long v = ~0ULL;
        size_t n = strlen(field);
        FILE *f = fopen("/proc/self/status", "re");

        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, field, n) == 0 && line[n] == ':')
                        v = strtoull(line + n + 1, NULL, 16);
        if (f)
                fclose(f);
        return v;
}

Test(privilege, violation_names)
{
        enum privilege_violation v = PRIVILEGE_VIOLATION_LOG;

        cr_assert_eq(privilege_violation_from_string("kill", &v), 0);
        cr_assert_eq(v, PRIVILEGE_VIOLATION_KILL);
        cr_assert_eq(privilege_violation_from_string("errno", &v), 0);
        cr_assert_eq(v, PRIVILEGE_VIOLATION_ERRNO);
        cr_assert_eq(privilege_violation_from_string("log", &v), 0);
        cr_assert_eq(v, PRIVILEGE_VIOLATION_LOG);
        cr_assert_eq(privilege_violation_from_string("KILL", &v), -EINVAL);
        cr_assert_eq(privilege_violation_from_string("", &v), -EINVAL);
        cr_assert_eq(privilege_violation_from_string(NULL, &v), -EINVAL);
        cr_assert_eq(v, PRIVILEGE_VIOLATION_LOG, "untouched on failure");
        cr_assert_str_eq(privilege_violation_to_string(PRIVILEGE_VIOLATION_ERRNO), "errno");
}

static int drop_keep_one(void)
{
        const cap_value_t keep[] = { CAP_NET_BIND_SERVICE };
        struct xmem_error err = {};
        unsigned long long bit = 1ULL << CAP_NET_BIND_SERVICE;

        if (privilege_drop_caps(keep, 1, &err) < 0)
                return 1;
        if (status_caps("CapEff") != bit || status_caps("CapPrm") != bit)
                return 2;
        if (status_caps("CapInh") != 0 || status_caps("CapAmb") != 0)
                return 3;
        if (status_caps("CapBnd") != bit)
                return 4;
        if (prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN) != 0 || prctl(PR_CAPBSET_READ, CAP_NET_BIND_SERVICE) != 1)
                return 5;
        if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
                return 6;
        return 0;
}

Test(privilege, drop_caps_keeps_only_what_is_asked)
{
        need_root();
        assert_exit_ok(in_child(drop_keep_one), "keep CAP_NET_BIND_SERVICE");
}

static int drop_all(void)
{
        struct xmem_error err = {};
        cap_t c;
        cap_flag_value_t v = CAP_SET;

        if (privilege_drop_caps(NULL, 0, &err) < 0)
                return 1;
        c = cap_get_proc();
        if (!c || cap_get_flag(c, CAP_SYS_ADMIN, CAP_EFFECTIVE, &v) < 0 || v != CAP_CLEAR)
                return 2;
        cap_free(c);
        if (status_caps("CapEff") != 0 || status_caps("CapPrm") != 0 || status_caps("CapBnd") != 0)
                return 3;
        /* root without capabilities: changing uid is refused */
        if (setuid(1) == 0 || errno != EPERM)
                return 4;
        /* and nothing can be raised back */
        c = cap_get_proc();
        cap_value_t admin = CAP_SYS_ADMIN;
        if (!c || cap_set_flag(c, CAP_EFFECTIVE, 1, &admin, CAP_SET) < 0 || cap_set_proc(c) == 0)
                return 5;
        cap_free(c);
        return 0;
}

Test(privilege, drop_all_caps)
{
        need_root();
        assert_exit_ok(in_child(drop_all), "drop all");
}

static int switch_then_drop(void)
{
        struct xmem_error err = {};

        if (privilege_switch_user(65534, 65534, &err) < 0)
                return 1;
        if (getuid() != 65534 || geteuid() != 65534 || getgid() != 65534)
                return 2;
        if (privilege_drop_caps(NULL, 0, &err) < 0)
                return 3;
        if (status_caps("CapEff") != 0 || status_caps("CapPrm") != 0 || status_caps("CapBnd") != 0)
                return 4;
        if (setuid(0) == 0)
                return 5;
        return 0;
}

Test(privilege, switch_user_then_drop)
{
        need_root();
        assert_exit_ok(in_child(switch_then_drop), "switch to 65534");
}

static int unprivileged_drop(void)
{
        struct xmem_error err = {};

        if (geteuid() == 0 && privilege_switch_user(65534, 65534, &err) < 0)
                return 1;
        /* a plain user: the bounding set cannot be cut, the call still succeeds */
        if (privilege_drop_caps(NULL, 0, &err) < 0)
                return 2;
        if (status_caps("CapEff") != 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
                return 3;
        return 0;
}

Test(privilege, drop_caps_unprivileged)
{
        if (geteuid() == 0)
                need_root();
        assert_exit_ok(in_child(unprivileged_drop), "unprivileged");
}

Test(privilege, lookup_user)
{
        struct xmem_error err = {};
        uid_t uid = 1;
        gid_t gid = 1;

        cr_assert_eq(privilege_lookup_user("root", &uid, &gid, &err), 0);
        cr_assert_eq(uid, 0);
        cr_assert_eq(gid, 0);
        cr_assert_eq(privilege_lookup_user("4242", &uid, &gid, &err), 0);
        cr_assert_eq(uid, 4242);
        cr_assert_eq(privilege_lookup_user("no-such-user-xmem", &uid, &gid, &err), -ESRCH);
        cr_assert(strstr(xmem_error_str(&err), "no-such-user-xmem"));
        cr_assert_eq(uid, 4242, "untouched on failure");
        cr_assert_lt(privilege_lookup_user("12x", &uid, &gid, &err), 0);
        cr_assert_lt(privilege_lookup_user("", &uid, &gid, &err), 0);
}

/* Just enough to return from a function and exit. */
static const int small_set[] = {
        SCMP_SYS(exit_group), SCMP_SYS(exit), SCMP_SYS(rt_sigreturn), SCMP_SYS(getpid),
        SCMP_SYS(write),
};

static int install(enum privilege_violation v)
{
        struct xmem_error err = {};
        return privilege_seccomp_install(small_set, ELEMENTSOF(small_set), v, &err);
}

static int errno_mode(void)
{
        if (install(PRIVILEGE_VIOLATION_ERRNO) < 0)
                return 1;
        if (syscall(SYS_getpid) <= 0)
                return 2; /* allowed */
        errno = 0;
        if (syscall(SYS_getppid) != -1 || errno != EPERM)
                return 3; /* not on the list */
        errno = 0;
        if (syscall(SYS_getuid) != -1 || errno != EPERM)
                return 4;
        if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != -1)
                return 5; /* prctl is not on the list either */
        return 0;
}

Test(privilege, seccomp_errno_mode_refuses_unlisted)
{
        SKIP_IF_SANITIZED();
        assert_exit_ok(in_child(errno_mode), "errno mode");
}

static int kill_mode(void)
{
        if (install(PRIVILEGE_VIOLATION_KILL) < 0)
                return 1;
        (void)syscall(SYS_getpid);
        (void)syscall(SYS_getppid); /* kills the whole process */
        return 2;
}

Test(privilege, seccomp_kill_mode_kills)
{
        int status = in_child(kill_mode);

        cr_assert(WIFSIGNALED(status), "child exited with %d instead of dying",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        cr_assert_eq(WTERMSIG(status), SIGSYS);
}

static int log_mode(void)
{
        if (install(PRIVILEGE_VIOLATION_LOG) < 0)
                return 1;
        if (syscall(SYS_getppid) <= 0)
                return 2; /* logged, but allowed */
        return 0;
}

Test(privilege, seccomp_log_mode_allows)
{
        assert_exit_ok(in_child(log_mode), "log mode");
}

/* Shared with the child: its stage, and a thread's result (TSYNC check). */
struct shared {
        atomic_int stage, thread_started, thread_go, thread_result;
};
static struct shared *sh;

static void *thread_main(void *arg)
{
        atomic_store(&sh->thread_started, 1);
        while (!atomic_load(&sh->thread_go))
                ; /* no syscall: the filter may not allow any */
        atomic_store(&sh->thread_result, syscall(SYS_getppid) == -1 && errno == EPERM ? 1 : 2);
        return NULL; /* glibc's unlisted calls on the way out fail with EPERM, harmlessly */
}

static int tsync_child(void)
{
        pthread_t t;

        /* a thread made before the filter is covered by it too (TSYNC) */
        if (pthread_create(&t, NULL, thread_main, NULL) != 0)
                return 1;
        /* running: a thread still starting would meet the filter in glibc's
         * own start-up (rseq, set_robust_list) and die of it */
        while (!atomic_load(&sh->thread_started))
                ;
        if (install(PRIVILEGE_VIOLATION_ERRNO) < 0)
                return 2;
        atomic_store(&sh->thread_go, 1);
        while (atomic_load(&sh->thread_result) == 0)
                ;
        if (atomic_load(&sh->thread_result) != 1)
                return 3;
        atomic_store(&sh->stage, 1);
        while (atomic_load(&sh->stage) != 2)
                ;
        return 0;
}

static bool status_has(pid_t pid, const char *line_prefix)
{
        char path[64], line[256];
        bool found = false;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, line_prefix, strlen(line_prefix)) == 0)
                        found = true;
        if (f)
                fclose(f);
        return found;
}

Test(privilege, seccomp_covers_threads_and_shows_in_status)
{
        int status;
        pid_t pid;

        SKIP_IF_SANITIZED();
        sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(sh, MAP_FAILED);
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                _exit(tsync_child());
        while (atomic_load(&sh->stage) != 1 && waitpid(pid, &status, WNOHANG) == 0)
                usleep(1000);
        cr_assert_eq(atomic_load(&sh->stage), 1, "child ended early: status 0x%x", status);
        cr_assert(status_has(pid, "Seccomp:\t2"), "Seccomp: 2 (filter mode)");
        cr_assert(status_has(pid, "NoNewPrivs:\t1"));
        atomic_store(&sh->stage, 2);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        assert_exit_ok(status, "tsync");
        munmap(sh, sizeof(*sh));
}

static bool listed(int nr)
{
        for (size_t i = 0; i < privilege_server_syscalls_n; i++)
                if (privilege_server_syscalls[i] == nr)
                        return true;
        return false;
}

Test(privilege, server_table)
{
        const int needed[] = { SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(futex),
                               SCMP_SYS(exit_group), SCMP_SYS(accept4), SCMP_SYS(sendmsg),
                               SCMP_SYS(recvmsg), SCMP_SYS(fallocate), SCMP_SYS(getrandom),
                               SCMP_SYS(clone3), SCMP_SYS(rename), SCMP_SYS(fsync) };
        const int never[] = { SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(ptrace),
                              SCMP_SYS(setuid), SCMP_SYS(mount), SCMP_SYS(bpf),
                              SCMP_SYS(init_module), SCMP_SYS(process_vm_writev),
                              SCMP_SYS(unshare), SCMP_SYS(setns), SCMP_SYS(kexec_load),
                              SCMP_SYS(prctl), SCMP_SYS(seccomp), SCMP_SYS(capset),
                              SCMP_SYS(userfaultfd) };

        cr_assert_gt(privilege_server_syscalls_n, 40);
        for (size_t i = 0; i < ELEMENTSOF(needed); i++)
                cr_assert(listed(needed[i]), "needed syscall %d missing", needed[i]);
        for (size_t i = 0; i < ELEMENTSOF(never); i++)
                cr_assert(!listed(never[i]), "syscall %d must not be allowed", never[i]);
}

static int server_table_errno(void)
{
        struct xmem_error err = {};

        if (privilege_seccomp_install(privilege_server_syscalls, privilege_server_syscalls_n,
                                      PRIVILEGE_VIOLATION_ERRNO, &err) < 0)
                return 1;
        if (getpid() <= 0 || write(2, "", 0) != 0)
                return 2;
        errno = 0;
        if (syscall(SYS_execve, "/bin/true", NULL, NULL) != -1 || errno != EPERM)
                return 3;
        errno = 0;
        if (syscall(SYS_setuid, 0) != -1 || errno != EPERM)
                return 4;
        return 0;
}

Test(privilege, server_table_loads_and_refuses_exec)
{
        SKIP_IF_SANITIZED();
        assert_exit_ok(in_child(server_table_errno), "server table");
}

static void *idle_thread(void *arg)
{
        pause();
        return arg;
}

static int drop_with_a_thread(void)
{
        struct xmem_error err = {};
        pthread_t t;

        if (pthread_create(&t, NULL, idle_thread, NULL) != 0)
                return 1;
        /* the thread would keep every capability: refused, nothing changed */
        if (privilege_drop_caps(NULL, 0, &err) != -EBUSY || !strstr(err.msg, "2 threads"))
                return 2;
        if (status_caps("CapEff") == 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0)
                return 3;
        return 0;
}

Test(privilege, drop_caps_refuses_with_threads_alive)
{
        need_root();
        assert_exit_ok(in_child(drop_with_a_thread), "drop with a second thread");
}

/* The hook's shape: keep a few permitted, effective only around one step. */
static int effective_per_step(void)
{
        const cap_value_t keep[] = {CAP_SYS_ADMIN, CAP_SYS_CHROOT};
        const unsigned long long bits = (1ULL << CAP_SYS_ADMIN) | (1ULL << CAP_SYS_CHROOT);
        const cap_value_t other = CAP_NET_ADMIN;
        struct xmem_error err = {};

        if (privilege_drop_caps(keep, 2, &err) < 0 ||
            privilege_caps_effective(keep, 2, false, &err) < 0)
                return 1;
        if (status_caps("CapEff") != 0 || status_caps("CapPrm") != bits ||
            status_caps("CapBnd") != bits)
                return 2;
        if (unshare(CLONE_NEWNS) == 0 || errno != EPERM)
                return 3; /* not effective: refused */
        if (privilege_caps_effective(keep, 2, true, &err) < 0 || status_caps("CapEff") != bits)
                return 4;
        if (unshare(CLONE_NEWNS) != 0)
                return 5; /* effective: allowed */
        if (privilege_caps_effective(&other, 1, true, &err) != -EPERM)
                return 6; /* what was dropped cannot be raised */
        return 0;
}

Test(privilege, caps_effective_only_for_a_step)
{
        need_root();
        assert_exit_ok(in_child(effective_per_step), "effective per step");
}

static int keep_not_held(void)
{
        const cap_value_t keep[] = {CAP_SYS_ADMIN};
        struct xmem_error err = {};

        if (geteuid() == 0 && privilege_switch_user(65534, 65534, &err) < 0)
                return 1;
        if (privilege_drop_caps(NULL, 0, &err) < 0)
                return 2;
        /* asking to keep what is not held is no error, and gains nothing */
        if (privilege_drop_caps(keep, 1, &err) < 0)
                return 3;
        if (status_caps("CapEff") != 0 || status_caps("CapPrm") != 0)
                return 4;
        return 0;
}

Test(privilege, keep_what_is_not_held_gains_nothing)
{
        if (geteuid() == 0)
                need_root();
        assert_exit_ok(in_child(keep_not_held), "keep what is not held");
}

static int nofile(void)
{
        struct xmem_error err = {};
        struct rlimit before, after;
        unsigned long limit = 0;

        if (getrlimit(RLIMIT_NOFILE, &before) < 0 || before.rlim_max < 64)
                return 1;
        before.rlim_cur = 64;
        if (setrlimit(RLIMIT_NOFILE, &before) < 0)
                return 2;
        /* a minimum below the hard limit: only the soft limit moves up */
        if (privilege_raise_nofile(32, &limit, &err) < 0)
                return 3;
        if (getrlimit(RLIMIT_NOFILE, &after) < 0 || after.rlim_cur != before.rlim_max ||
            after.rlim_max != before.rlim_max || limit != after.rlim_cur)
                return 4;
        /* without CAP_SYS_RESOURCE a higher minimum leaves the hard limit */
        if (privilege_drop_caps(NULL, 0, &err) < 0 ||
            privilege_raise_nofile(after.rlim_max + 1, &limit, &err) < 0 || limit != after.rlim_max)
                return 5;
        return 0;
}

Test(privilege, raise_nofile)
{
        assert_exit_ok(in_child(nofile), "raise RLIMIT_NOFILE");
}

/* ioctl allowed with listed requests only; the request is compared on 32 bits. */
static int ioctl_filter(void)
{
        const int small[] = {SCMP_SYS(exit_group), SCMP_SYS(close), SCMP_SYS(pipe2)};
        const unsigned long allowed[] = {FIONREAD};
        struct xmem_error err = {};
        int fds[2], n = -1;

        if (pipe2(fds, 0) < 0)
                return 1;
        if (privilege_seccomp_install_ioctls(small, 3, allowed, 1, PRIVILEGE_VIOLATION_ERRNO,
                                             &err) < 0)
                return 2;
        if (ioctl(fds[0], FIONREAD, &n) != 0 || n != 0)
                return 3;
        if (syscall(SYS_ioctl, fds[0], 0xffffffff00000000UL | FIONREAD, &n) != 0)
                return 4; /* the kernel reads 32 bits: so does the filter */
        if (ioctl(fds[0], FIONBIO, &n) != -1 || errno != EPERM)
                return 5;
        return 0;
}

Test(privilege, seccomp_ioctl_by_request)
{
        SKIP_IF_SANITIZED();
        assert_exit_ok(in_child(ioctl_filter), "ioctl filter");
}
