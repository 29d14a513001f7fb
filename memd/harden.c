/* harden.c: memd's kept capabilities and its seccomp allow-list. memd
 * serves containers: it writes their cgroup files, opens /dev/userfaultfd,
 * works on userfaultfds and memfds, watches processes by pidfd and talks to
 * appliances and clients over sockets. Everything else is refused. */
#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>

#include "harden.h"
#include "uffd-compat.h"

const cap_value_t memd_kept_caps[] = {
    /* cgroup files of a container whose cgroup is delegated to another
     * uid (rootless or user-namespaced runtimes chown it): memd stays
     * uid 0, so root-owned cgroup files, /dev/userfaultfd (0600 root)
     * and its runtime directory need no capability at all. Not kept:
     * CAP_SYS_ADMIN (uffds come from /dev/userfaultfd and the shims),
     * CAP_SYS_PTRACE (no pagemap or process_vm_* on other processes),
     * CAP_SYS_RESOURCE (the fd limit is raised before). */
    CAP_DAC_OVERRIDE,
    /* SIGBUS to a container process whose write goes over the external
     * quota (memd/pager.c), whatever uid it runs as: always by its pidfd,
     * so never a process that reused its pid */
    CAP_KILL,
};
const size_t memd_kept_caps_n = ELEMENTSOF(memd_kept_caps);

/* On top of privilege_server_syscalls (memory, threads, time, signals, fd
 * and socket I/O, files, getrandom, memfd_create: lib/privilege.c). Entries
 * no test run showed are marked (*) and say why they stay. */
const int memd_syscalls[] = {
    /* shim.hello: a pidfd on the caller to see it exit */
    SCMP_SYS(pidfd_open),
    /* pager and residency wake-ups, per container at attach */
    SCMP_SYS(eventfd2),
    /* (*) the event loop's timer and signals are made at start-up; a
     * new loop (sd-event) rearms timers and may create them later */
    SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime),
    SCMP_SYS(signalfd4),
    /* (*) reaping an embedded appliance that died while memd ran (it
     * outlives memd otherwise: memd --stop-embedded stops it) */
    SCMP_SYS(kill),
    /* SIGBUS over the external quota */
    SCMP_SYS(pidfd_send_signal),
    SCMP_SYS(wait4),
    SCMP_SYS(waitid),
    /* API sockets and the peer's identity (SO_PEERCRED); (*) one socket
     * per container under the runtime directory (being added): mkdir,
     * bind, listen, chmod, removal at detach */
    SCMP_SYS(listen),
    /* a socket is bound under a umask of its final mode (never wider for
     * a moment), then chmod'ed */
    SCMP_SYS(umask),
    SCMP_SYS(getpeername),
    SCMP_SYS(mkdir),
    SCMP_SYS(mkdirat),
    SCMP_SYS(rmdir),
    SCMP_SYS(chmod),
    SCMP_SYS(fchmod),
    SCMP_SYS(fchmodat),
    /* cgroup checks (does the container's cgroup still exist), reading
     * /proc/PID/cgroup; (*) directory listings and access checks */
    SCMP_SYS(stat),
    SCMP_SYS(lstat),
    SCMP_SYS(access),
    SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2),
    SCMP_SYS(getdents64),
    SCMP_SYS(readlink),
    SCMP_SYS(readlinkat),
    SCMP_SYS(open),
    /* (*) fds: a dup where a descriptor is handed on; pipes none */
    SCMP_SYS(dup),
    SCMP_SYS(dup3),
    /* (*) time and sleeping with an absolute deadline (pthread timed waits) */
    SCMP_SYS(clock_getres),
    /* (*) copying between memfds without a buffer */
    SCMP_SYS(copy_file_range),
};

const size_t memd_syscalls_n = ELEMENTSOF(memd_syscalls);

/* ioctl(2) is allowed with these requests only. */
const unsigned long memd_ioctls[] = {
    /* the fault path on the shims' userfaultfds: fill (write-protected
     * for dirty tracking), protect before write-back, wake waiters.
     * Not REGISTER, API or USERFAULTFD_IOC_NEW: the shims do those on
     * their own fds; not PAGEMAP_SCAN (memd reads no pagemap) */
    UFFDIO_COPY,
    UFFDIO_WRITEPROTECT,
    UFFDIO_WAKE,
    /* a fault whose appliance is gone for good: SIGBUS, not a zero page */
    UFFDIO_POISON,
};
const size_t memd_ioctls_n = ELEMENTSOF(memd_ioctls);

int memd_harden_caps(unsigned long *ret_nofile, struct xmem_error *err)
{
        int r;

        r = privilege_raise_nofile(MEMD_NOFILE_MIN, ret_nofile, err);
        if (r < 0)
                return r;
        return privilege_drop_caps(memd_kept_caps, memd_kept_caps_n, err);
}

int memd_harden_seccomp(enum privilege_violation on_violation, struct xmem_error *err)
{
        size_t n = privilege_server_syscalls_n + memd_syscalls_n;
        _cleanup_free_ int *all = calloc(n, sizeof(int));

        if (!all)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        memcpy(all, privilege_server_syscalls, privilege_server_syscalls_n * sizeof(int));
        memcpy(all + privilege_server_syscalls_n, memd_syscalls, memd_syscalls_n * sizeof(int));
        return privilege_seccomp_install_ioctls(all, n, memd_ioctls, memd_ioctls_n, on_violation,
                                                err);
}
