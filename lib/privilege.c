/* privilege.c: drop capabilities (libcap), switch user, install a seccomp
 * allow-list (libseccomp). libcap's -1 + errno and libseccomp's -errno are
 * converted here, once. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "privilege.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release);

static inline void cap_freep(cap_t *c)
{
        if (*c)
                cap_free(*c);
}
#define _cleanup_cap_ _cleanup_(cap_freep)

/* The allow-list. Derived with strace -f over the appliance's integration
 * suites (only what follows the seccomp() call counts), plus journald and
 * sd_notify in a private mount namespace, then checked with the filter in log
 * mode (no audit record of type 1326): docs/security.md. The few entries no
 * run showed are marked (*) and say why they stay. */
const int privilege_server_syscalls[] = {
        /* memory: malloc arenas, thread stacks, the pool, a remote shm pool */
        SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
        SCMP_SYS(madvise), SCMP_SYS(msync),
        /* threads: one per connection, tcp transport receivers; (*) clone is
         * glibc's fallback where clone3 is missing, tgkill lets abort() raise
         * SIGABRT (a clear report) instead of dying of SIGSYS */
        SCMP_SYS(clone3), SCMP_SYS(clone), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
        SCMP_SYS(futex), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(getpid),
        SCMP_SYS(gettid), SCMP_SYS(tgkill), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity),
        /* identity, read-only: logging, sd_notify, sd_journal_send; uname:
         * name resolution of a remote appliance */
        SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid),
        SCMP_SYS(uname),
        /* signals: glibc masks them around clone; (*) restart_syscall after a
         * stop/continue */
        SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigreturn),
        SCMP_SYS(restart_syscall),
        /* (*) time: the vDSO answers; these are its fallback (clocksource
         * without vDSO support), and the transports' sleeps */
        SCMP_SYS(clock_gettime), SCMP_SYS(gettimeofday), SCMP_SYS(time),
        SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
        /* waiting: poll (appliance, transports); (*) epoll for memd's loop */
        SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl),
        SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait),
        /* fd I/O: frames, eventfd, signalfd, journal appends, /etc/hosts */
        SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(pread64),
        SCMP_SYS(pwrite64), SCMP_SYS(lseek), SCMP_SYS(close), SCMP_SYS(fcntl),
        /* files: journal compaction (tmp file, fsync, rename, directory fsync),
         * pool punching and msync, unix socket removal at exit; (*) fdatasync
         * and ftruncate for flushing and growing, fstat/statx and the *at
         * forms where an architecture or libc uses them instead */
        SCMP_SYS(openat), SCMP_SYS(newfstatat), SCMP_SYS(fstat), SCMP_SYS(statx),
        SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
        SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(unlink),
        SCMP_SYS(unlinkat),
        /* sockets: serving (accept4, setsockopt, shutdown, send/sendmsg),
         * remote copy (socket, connect, recvmsg with SCM_RIGHTS for shm://),
         * journald and sd_notify (datagrams, getsockopt); (*) a name with
         * several addresses is sorted through a netlink query (bind,
         * getsockname), DNS uses sendmmsg and recvfrom */
        SCMP_SYS(socket), SCMP_SYS(connect), SCMP_SYS(accept4), SCMP_SYS(setsockopt),
        SCMP_SYS(getsockopt), SCMP_SYS(shutdown), SCMP_SYS(sendto), SCMP_SYS(sendmsg),
        SCMP_SYS(recvmsg), SCMP_SYS(recvfrom), SCMP_SYS(sendmmsg), SCMP_SYS(bind),
        SCMP_SYS(getsockname),
        /* region keys */
        SCMP_SYS(getrandom),
        /* (*) sd_journal_send hands a large entry over in a sealed memfd */
        SCMP_SYS(memfd_create),
};
const size_t privilege_server_syscalls_n = ELEMENTSOF(privilege_server_syscalls);

static const char *const violation_names[] = {
        [PRIVILEGE_VIOLATION_KILL] = "kill",
        [PRIVILEGE_VIOLATION_ERRNO] = "errno",
        [PRIVILEGE_VIOLATION_LOG] = "log",
};

int privilege_violation_from_string(const char *s, enum privilege_violation *ret)
{
        for (size_t i = 0; s && i < ELEMENTSOF(violation_names); i++)
                if (strcmp(s, violation_names[i]) == 0) {
                        *ret = (enum privilege_violation)i;
                        return 0;
                }
        return -EINVAL;
}

const char *privilege_violation_to_string(enum privilege_violation v)
{
        return (size_t)v < ELEMENTSOF(violation_names) ? violation_names[v] : "?";
}

static bool cap_in(cap_value_t c, const cap_value_t *keep, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (keep[i] == c)
                        return true;
        return false;
}

/* Raise effective to permitted: after a uid switch the kernel cleared
 * effective, and cutting the bounding set needs CAP_SETPCAP there. */
static int caps_raise_effective(struct xmem_error *err)
{
        _cleanup_cap_ cap_t c = cap_get_proc();

        if (!c)
                return xmem_error_set(err, negative_errno(), "cap_get_proc: %m");
        if (cap_fill(c, CAP_EFFECTIVE, CAP_PERMITTED) < 0 || cap_set_proc(c) < 0)
                return xmem_error_set(err, negative_errno(), "raise effective capabilities: %m");
        return 0;
}

static int caps_cut_bounding(const cap_value_t *keep, size_t n, struct xmem_error *err)
{
        _cleanup_cap_ cap_t c = cap_get_proc();
        cap_flag_value_t setpcap = CAP_CLEAR;
        unsigned max = cap_max_bits();

        if (!c)
                return xmem_error_set(err, negative_errno(), "cap_get_proc: %m");
        if (cap_get_flag(c, CAP_SETPCAP, CAP_EFFECTIVE, &setpcap) < 0)
                return xmem_error_set(err, negative_errno(), "cap_get_flag: %m");
        if (setpcap != CAP_SET)
                return 0; /* unprivileged: the bounding set cannot be cut, NNP covers exec */
        for (cap_value_t v = 0; v < (cap_value_t)max; v++) {
                if (cap_in(v, keep, n) || cap_get_bound(v) != 1)
                        continue;
                if (cap_drop_bound(v) < 0)
                        return xmem_error_set(err, negative_errno(),
                                              "drop capability %d from the bounding set: %m", v);
        }
        return 0;
}

/* Threads of this process (/proc/self/status), 0 when /proc cannot tell. */
static unsigned thread_count(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[128];
        unsigned n = 0;

        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "Threads: %u", &n) == 1)
                        break;
        return n;
}

int privilege_drop_caps(const cap_value_t *keep, size_t n, struct xmem_error *err)
{
        _cleanup_cap_ cap_t c = NULL, held = NULL;
        unsigned threads = thread_count();
        int r;

        if (threads > 1)
                return xmem_error_set(err, -EBUSY,
                                      "%u threads exist: capabilities are per thread, drop them "
                                      "before starting any",
                                      threads);

        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return xmem_error_set(err, negative_errno(), "PR_SET_NO_NEW_PRIVS: %m");
        r = caps_raise_effective(err);
        if (r >= 0)
                r = caps_cut_bounding(keep, n, err);
        if (r < 0)
                return r;
        if (cap_reset_ambient() < 0 && errno != EINVAL)
                return xmem_error_set(err, negative_errno(), "clear ambient capabilities: %m");
        held = cap_get_proc();
        c = cap_init(); /* every flag clear */
        if (!held || !c)
                return xmem_error_set(err, negative_errno(), "cap_get_proc: %m");
        for (size_t i = 0; i < n; i++) {
                cap_flag_value_t v = CAP_CLEAR;
                /* a capability not held is not gained (an unprivileged caller) */
                if (cap_get_flag(held, keep[i], CAP_PERMITTED, &v) < 0 || v != CAP_SET)
                        continue;
                if (cap_set_flag(c, CAP_EFFECTIVE, 1, &keep[i], CAP_SET) < 0 ||
                    cap_set_flag(c, CAP_PERMITTED, 1, &keep[i], CAP_SET) < 0)
                        return xmem_error_set(err, negative_errno(), "cap_set_flag: %m");
        }
        if (cap_set_proc(c) < 0)
                return xmem_error_set(err, negative_errno(), "set capabilities: %m");
        return 0;
}

int privilege_caps_effective(const cap_value_t *caps, size_t n, bool raise, struct xmem_error *err)
{
        _cleanup_cap_ cap_t c = cap_get_proc();

        if (!c)
                return xmem_error_set(err, negative_errno(), "cap_get_proc: %m");
        if (n == 0)
                return 0;
        if (cap_set_flag(c, CAP_EFFECTIVE, (int)n, caps, raise ? CAP_SET : CAP_CLEAR) < 0)
                return xmem_error_set(err, negative_errno(), "cap_set_flag: %m");
        if (cap_set_proc(c) < 0)
                return xmem_error_set(err, negative_errno(), "%s effective capabilities: %m",
                                      raise ? "raise" : "lower");
        return 0;
}

/* The kernel clears the parent-death signal when the effective ids change:
 * a supervised process (an appliance a test or memd started) would outlive
 * its supervisor. Set it again, and send it now if the parent died meanwhile. */
static void keep_pdeathsig(int sig, pid_t parent)
{
        if (sig <= 0)
                return;
        (void)prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0);
        if (getppid() != parent)
                (void)raise(sig);
}

int privilege_switch_user(uid_t uid, gid_t gid, struct xmem_error *err)
{
        int pdeathsig = 0;
        pid_t parent = getppid();

        (void)prctl(PR_GET_PDEATHSIG, &pdeathsig, 0, 0, 0);
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
                return xmem_error_set(err, negative_errno(), "PR_SET_KEEPCAPS: %m");
        if (setgroups(1, &gid) < 0)
                return xmem_error_set(err, negative_errno(), "setgroups(%u): %m", (unsigned)gid);
        if (setresgid(gid, gid, gid) < 0)
                return xmem_error_set(err, negative_errno(), "setresgid(%u): %m", (unsigned)gid);
        if (setresuid(uid, uid, uid) < 0)
                return xmem_error_set(err, negative_errno(), "setresuid(%u): %m", (unsigned)uid);
        keep_pdeathsig(pdeathsig, parent);
        if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
                return xmem_error_set(err, negative_errno(), "PR_SET_KEEPCAPS: %m");
        return 0;
}

int privilege_lookup_user(const char *name, uid_t *ret_uid, gid_t *ret_gid,
                          struct xmem_error *err)
{
        struct passwd *pw;
        char *end;
        unsigned long v;

        if (!name || !*name)
                return xmem_error_set(err, -EINVAL, "empty user name");
        errno = 0;
        pw = getpwnam(name);
        if (!pw && errno == 0 && name[0] >= '0' && name[0] <= '9') {
                v = strtoul(name, &end, 10);
                if (*end || v >= (uid_t)-1)
                        return xmem_error_set(err, -EINVAL, "invalid uid '%s'", name);
                pw = getpwuid((uid_t)v);
                if (!pw) { /* a bare uid without a passwd entry: its own group */
                        *ret_uid = (uid_t)v;
                        *ret_gid = (gid_t)v;
                        return 0;
                }
        }
        if (!pw)
                return xmem_error_set(err, errno ? -errno : -ESRCH, "unknown user '%s'", name);
        *ret_uid = pw->pw_uid;
        *ret_gid = pw->pw_gid;
        return 0;
}

int privilege_raise_nofile(unsigned long hard_min, unsigned long *ret_limit, struct xmem_error *err)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return xmem_error_set(err, negative_errno(), "getrlimit(RLIMIT_NOFILE): %m");
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < hard_min) {
                struct rlimit raised = {.rlim_cur = hard_min, .rlim_max = hard_min};
                /* EPERM: no CAP_SYS_RESOURCE, or above fs.nr_open; keep the hard limit */
                if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
                        rl = raised;
        }
        if (rl.rlim_cur != rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        return xmem_error_set(err, negative_errno(),
                                              "raise RLIMIT_NOFILE to %llu: %m",
                                              (unsigned long long)rl.rlim_max);
        }
        if (ret_limit)
                *ret_limit = (unsigned long)rl.rlim_cur;
        return 0;
}

static uint32_t violation_action(enum privilege_violation v)
{
        switch (v) {
        case PRIVILEGE_VIOLATION_ERRNO:
                return SCMP_ACT_ERRNO(EPERM);
        case PRIVILEGE_VIOLATION_LOG:
                return SCMP_ACT_LOG;
        case PRIVILEGE_VIOLATION_KILL:
        default:
                return SCMP_ACT_KILL_PROCESS;
        }
}

int privilege_seccomp_install(const int *allowed, size_t n, enum privilege_violation on_violation,
                              struct xmem_error *err)
{
        return privilege_seccomp_install_ioctls(allowed, n, NULL, 0, on_violation, err);
}

int privilege_seccomp_install_ioctls(const int *allowed, size_t n, const unsigned long *ioctls,
                                     size_t n_ioctls, enum privilege_violation on_violation,
                                     struct xmem_error *err)
{
        _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
        uint32_t action = violation_action(on_violation);
        int r;

        ctx = seccomp_init(action);
        if (!ctx)
                return xmem_error_set(err, -ENOMEM, "seccomp_init failed");
        /* a syscall through another ABI (int 0x80, x32) meets the same fate */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, action);
        if (r >= 0)
                r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
        if (r >= 0)
                r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
        if (r >= 0 && on_violation == PRIVILEGE_VIOLATION_ERRNO)
                r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1);
        if (r < 0)
                return xmem_error_set(err, r, "seccomp_attr_set: %s", strerror(-r));
        for (size_t i = 0; i < n; i++) {
                if (allowed[i] < 0)
                        continue; /* not a syscall on this architecture */
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0);
                /* -EEXIST: listed twice; harmless */
                if (r < 0 && r != -EEXIST) {
                        char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, allowed[i]);
                        xmem_error_set(err, r, "seccomp: allow %s (%d): %s", name ? name : "?",
                                       allowed[i], strerror(-r));
                        free(name);
                        return r;
                }
        }
        for (size_t i = 0; i < n_ioctls; i++) {
                r = seccomp_rule_add(
                    ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                    SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, (scmp_datum_t)(uint32_t)ioctls[i]));
                if (r < 0 && r != -EEXIST)
                        return xmem_error_set(err, r, "seccomp: allow ioctl 0x%lx: %s", ioctls[i],
                                              strerror(-r));
        }
        r = seccomp_load(ctx);
        if (r < 0)
                return xmem_error_set(err, r, "seccomp_load: %s", strerror(-r));
        return 0;
}
