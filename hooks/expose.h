/* expose.h: bind the shim and memd's socket into a container being created
 * (entering its mount namespace), undoing partial work on failure. */
#pragma once

#include <sys/types.h>

#include "error.h"

/* In the mount namespace of PID, under ROOTFS (host path of config.json's
 * root.path): /run/xmem-shim (tmpfs: the shim, a preload list) and
 * /etc/ld.so.preload (bind of that list), unless SHIM is NULL (xmem-runtime
 * put them in config.json); and /run/xmem: a read-only bind of SOCKET_DIR,
 * the container's own socket directory (never one shared with another
 * container). Idempotent; all or nothing. */
int container_expose(pid_t pid, const char *rootfs, const char *shim, const char *socket_dir,
                     struct xmem_error *err);
