/* expose.h: bind the shim and memd's socket into a container being created
 * (entering its mount namespace), undoing partial work on failure. */
#pragma once

#include <sys/types.h>

#include "error.h"

/* In the mount namespace of PID, under ROOTFS (host path of config.json's
 * root.path): /run/xmem-shim (tmpfs: the shim, a preload list),
 * /etc/ld.so.preload (bind of that list), /run/xmem (bind of SOCKET_DIR).
 * Idempotent; all or nothing. */
int container_expose(pid_t pid, const char *rootfs, const char *shim, const char *socket_dir,
                     struct xmem_error *err);
