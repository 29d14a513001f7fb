/* embedded.h: the embedded appliance: an xmem-appliance process that memd
 * starts on a private unix socket in its runtime directory, with its pool in
 * a file in memd's state directory, and reaches over the shm transport. It
 * outlives memd: a restarted memd finds it again by its pid file, or starts
 * it again on the same pool file (docs/memd.md "The embedded appliance"). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define EMBEDDED_DEFAULT_SIZE (1ULL << 30)

struct embedded {
        pid_t pid;
        int pidfd;      /* readable when the appliance exits */
        bool child;     /* started by this memd (reaped by it) */
        char *socket;   /* DIR/embedded.sock */
        char *pidfile;  /* DIR/embedded.pid */
        char *pool;     /* STATE_DIR/embedded-pool (its journal: .meta beside it) */
        char uri[160];  /* shm://SOCKET */
        char *binary;
};

/* The xmem-appliance binary: $XMEM_APPLIANCE_BIN, else beside memd's own
 * executable, else ../appliance/ beside it (a build tree), else PATH. */
char *embedded_find_binary(void);

/* The appliance listening on DIR/embedded.sock: the one already running (its
 * pid file in DIR, its command line naming that socket), else a new one with
 * a POOL_SIZE pool in STATE_DIR/embedded-pool (created 0700 if missing) and
 * CHUNK_SIZE chunks, in its own session, started and waited for (up to 10 s)
 * until it accepts connections. */
int embedded_start(const char *dir, const char *state_dir, uint64_t pool_size,
                   uint32_t chunk_size, struct embedded **ret, struct xmem_error *err);
/* Let go of it: it keeps running (memd's exit, SIGTERM included). NULL is fine. */
void embedded_release(struct embedded *e);
/* Stop the appliance running on DIR/embedded.sock (memd --stop-embedded):
 * SIGTERM, SIGKILL after 10 s; removes its socket and pid file. 0 when it
 * stopped, 1 when none was running, -errno (ERR says why). */
int embedded_stop_running(const char *dir, struct xmem_error *err);
