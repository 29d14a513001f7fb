/* embedded.h: the embedded appliance: an xmem-appliance child process that
 * memd starts on a private unix socket in its runtime directory, reaches over
 * the shm transport, and stops with itself (docs/memd.md). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define EMBEDDED_DEFAULT_SIZE (1ULL << 30)

struct embedded {
        pid_t pid;
        int pidfd;      /* readable when the child exits */
        char *socket;   /* its unix socket */
        char uri[160];  /* shm://SOCKET */
        char *binary;
};

/* The xmem-appliance binary: $XMEM_APPLIANCE_BIN, else beside memd's own
 * executable, else ../appliance/ beside it (a build tree), else PATH. */
char *embedded_find_binary(void);

/* Start the child with a pool of POOL_SIZE bytes and CHUNK_SIZE chunks,
 * listening on RUNTIME_DIR/embedded-appliance.PID.sock; waits (up to 10 s)
 * until it accepts connections. */
int embedded_start(const char *runtime_dir, uint64_t pool_size, uint32_t chunk_size,
                   struct embedded **ret, struct xmem_error *err);
/* SIGTERM, wait up to 5 s, then SIGKILL; removes the socket. NULL is fine. */
void embedded_stop(struct embedded *e);
