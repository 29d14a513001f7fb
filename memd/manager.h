/* manager.h: memd's configuration and life cycle: the appliances it talks to
 * (or the embedded one), the attached containers (each with its own residency
 * manager, pager and API socket), the admin socket, signals and periodic
 * checks, on an sd-event loop (memd.h has the state). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cgroup.h"
#include "error.h"

#define MANAGER_MAX_APPLIANCES 16
#define MANAGER_DEFAULT_SOCKET "/run/xmem/memd.sock"
#define MANAGER_DEFAULT_STATE_DIR "/var/lib/xmem"
#define MANAGER_DEFAULT_APPLIANCE_TIMEOUT_MS 30000

struct manager_config {
        const char *socket_path;
        const char *appliances[MANAGER_MAX_APPLIANCES];
        size_t n_appliances;
        uint64_t embedded_size; /* 0: none (an embedded one is started when no appliance is given) */
        uint32_t chunk_size; /* the stripe of external memory over appliances */
        unsigned fill_workers; /* per container; 0 = the pager's default */
        unsigned poll_us;      /* fault readers busy-poll this long (0: sleep) */
        const char *secret_file; /* tcp appliances' secret (--appliance-secret-file) */
        const char *cgroup_root; /* CGROUP_FS_ROOT unless a test says otherwise */
        const char *container_dir; /* containers' socket dirs; NULL: SOCKET's dir/containers */
        const char *state_dir;     /* --state-dir; NULL: MANAGER_DEFAULT_STATE_DIR */
        const char *file_dir;      /* --file-dir: file memory of containers that name none */
        unsigned appliance_timeout_ms; /* a fill gives up (SIGBUS) after this; 0: default */
        const char *metrics; /* --metrics tcp://ADDRESS:PORT; NULL: no metrics endpoint */
        struct manager_bounds {
                unsigned conns;               /* connections in all */
                unsigned conns_per_container;
                unsigned processes;           /* arenas per container */
                unsigned fork_tokens;         /* outstanding, per container */
                unsigned rate;                /* messages per second per container */
                unsigned burst;               /* ... up to this many at once */
        } bounds;
};

#define MANAGER_BOUNDS_DEFAULT                                                                     \
        ((struct manager_bounds){ .conns = 4096, .conns_per_container = 256, .processes = 1024,    \
                                  .fork_tokens = 64, .rate = 2000, .burst = 4000 })

struct manager;

int manager_new(const struct manager_config *cfg, struct manager **ret, struct xmem_error *err);
/* Connect the appliances (start the embedded one), open the socket. */
int manager_start(struct manager *m, struct xmem_error *err);
/* Serve until SIGTERM/SIGINT (returns 0) or a fatal error (-errno, logged). */
int manager_run(struct manager *m);
/* Detach everything (regions freed), stop the embedded appliance. NULL is fine. */
void manager_free(struct manager *m);
