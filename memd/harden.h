/* harden.h: memd gives up what it does not need once started: more open
 * files, fewer capabilities, a seccomp allow-list (docs/security.md). */
#pragma once

#include <stdbool.h>

#include "privilege.h"

/* The hard RLIMIT_NOFILE memd asks for when it is lower: every container
 * holds sockets, pidfds, userfaultfds, memfds and eventfds open in memd. */
#define MEMD_NOFILE_MIN 65536UL

/* What memd keeps and allows (memd/harden.c says why, entry by entry). */
extern const cap_value_t memd_kept_caps[];
extern const size_t memd_kept_caps_n;
extern const int memd_syscalls[]; /* beside privilege_server_syscalls */
extern const size_t memd_syscalls_n;
extern const unsigned long memd_ioctls[];
extern const size_t memd_ioctls_n;

/* Before any thread exists (capabilities are per thread; threads started
 * later inherit the cut sets): raise RLIMIT_NOFILE (soft to hard, hard to
 * MEMD_NOFILE_MIN if lower), then keep only memd_kept_caps and set
 * no-new-privs. The resulting open-file limit in *RET_NOFILE. */
int memd_harden_caps(unsigned long *ret_nofile, struct xmem_error *err);

/* Once started (appliances connected, sockets bound, the embedded appliance
 * exec'd): the server allow-list, memd's own syscalls, and ioctl only for
 * memd_ioctls, on every thread. */
int memd_harden_seccomp(enum privilege_violation on_violation, struct xmem_error *err);
