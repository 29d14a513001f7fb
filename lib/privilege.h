/* privilege.h: give up privileges after start-up: capabilities (libcap),
 * an optional switch to an unprivileged user, and a seccomp allow-list
 * (libseccomp). Library code: returns -errno with ERR explaining, never prints. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/capability.h>
#include <sys/types.h>

#include "error.h"

/* Built with AddressSanitizer? Its runtime makes syscalls no server makes
 * (sigaltstack at thread start, ptrace to stop the world for the exit-time
 * leak check): the servers log violations there instead of acting on them. */
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define PRIVILEGE_SANITIZED 1
#else
#define PRIVILEGE_SANITIZED 0
#endif

/* What the kernel does when a syscall outside the allow-list is made. */
enum privilege_violation {
        PRIVILEGE_VIOLATION_KILL,  /* SCMP_ACT_KILL_PROCESS: production (audit-logged) */
        PRIVILEGE_VIOLATION_ERRNO, /* SCMP_ACT_ERRNO(EPERM): the call fails, the process goes on */
        PRIVILEGE_VIOLATION_LOG,   /* SCMP_ACT_LOG: allowed, but logged (debugging) */
};

/* "kill", "errno" or "log" (case-sensitive); -EINVAL for anything else. */
int privilege_violation_from_string(const char *s, enum privilege_violation *ret);
const char *privilege_violation_to_string(enum privilege_violation v);

/* Drop every capability except the N in KEEP from the effective, permitted,
 * inheritable, bounding and ambient sets (KEEP stays in effective, permitted
 * and bounding only), and set PR_SET_NO_NEW_PRIVS. The bounding set can be
 * cut only while CAP_SETPCAP is held: without it (an unprivileged caller) it
 * is left as it is, which no-new-privs makes harmless. Works before or after
 * privilege_switch_user. Capabilities belong to each thread and a thread
 * cannot change another's: with more than one thread alive it refuses
 * (-EBUSY) rather than leave the others privileged. Threads started after
 * it inherit the reduced sets. Entries of KEEP the caller does not hold are
 * not gained (and are no error). */
int privilege_drop_caps(const cap_value_t *keep, size_t n, struct xmem_error *err);

/* Raise (RAISE true) or lower the N capabilities in CAPS in the effective
 * set of the calling thread; raising needs them in the permitted set (else
 * -EPERM). For a program that keeps a few capabilities permitted and makes
 * them effective only for the steps that need them. */
int privilege_caps_effective(const cap_value_t *caps, size_t n, bool raise, struct xmem_error *err);

/* Become UID/GID for good (real, effective, saved; supplementary groups =
 * just GID). Permitted capabilities survive (PR_SET_KEEPCAPS) so that
 * privilege_drop_caps can still cut the bounding set and keep what is asked;
 * call it right after. The parent-death signal, which the kernel clears on
 * the switch, is set again. Needs CAP_SETUID and CAP_SETGID. */
int privilege_switch_user(uid_t uid, gid_t gid, struct xmem_error *err);

/* Look NAME up (a user name or a numeric uid) and return its uid and
 * primary gid. -ESRCH for an unknown user. Call before seccomp is installed. */
int privilege_lookup_user(const char *name, uid_t *ret_uid, gid_t *ret_gid,
                          struct xmem_error *err);

/* Raise the RLIMIT_NOFILE soft limit to the hard limit; first raise the hard
 * limit to HARD_MIN when it is lower and CAP_SYS_RESOURCE allows it (else it
 * stays). The resulting soft limit in *RET_LIMIT (may be NULL). Call before
 * dropping CAP_SYS_RESOURCE. */
int privilege_raise_nofile(unsigned long hard_min, unsigned long *ret_limit,
                           struct xmem_error *err);

/* Install a seccomp filter that allows the N syscalls in ALLOWED (native
 * syscall numbers; negative entries, libseccomp's pseudo-numbers for calls
 * this architecture lacks, are skipped) and applies ON_VIOLATION to every
 * other syscall, and to every other architecture's ABI. It covers every
 * thread of the process (TSYNC) and sets no-new-privs. Irreversible. */
int privilege_seccomp_install(const int *allowed, size_t n, enum privilege_violation on_violation,
                              struct xmem_error *err);
/* The same, and ioctl(2) is allowed with the N_IOCTLS request numbers in
 * IOCTLS only (compared on their low 32 bits, as the kernel reads them).
 * ioctl itself must not be in ALLOWED. Violations are also written to the
 * audit log in errno mode (SECCOMP_FILTER_FLAG_LOG), so that a refused call
 * can be found. */
int privilege_seccomp_install_ioctls(const int *allowed, size_t n, const unsigned long *ioctls,
                                     size_t n_ioctls, enum privilege_violation on_violation,
                                     struct xmem_error *err);

/* The syscalls an xmem server (the appliance, later memd) makes once it is
 * serving: threads, memory, sockets (incl. remote copy and journald
 * logging), file I/O for journal compaction and pool sync. See
 * docs/security.md for how the list was derived. */
extern const int privilege_server_syscalls[];
extern const size_t privilege_server_syscalls_n;
