/* paths.h: where xmem's pieces are on the host (environment first, then the
 * install locations meson compiles in) and where they appear in a container. */
#pragma once

#include <stdlib.h>

#include "xmem-config.h"

/* Inside the container. */
#define XMEM_CONTAINER_SHIM_DIR "/run/xmem-shim"
#define XMEM_CONTAINER_SHIM XMEM_CONTAINER_SHIM_DIR "/libxmem-shim.so"
#define XMEM_CONTAINER_SOCKET_DIR "/run/xmem"
#define XMEM_SOCKET_NAME "memd.sock"

static inline const char *xmem_env_or(const char *name, const char *fallback)
{
        const char *v = getenv(name);

        return v && *v ? v : fallback;
}

/* memd's socket on the host: $XMEM_SOCKET, else RUNDIR/memd.sock. */
static inline const char *xmem_host_socket(void)
{
        return xmem_env_or("XMEM_SOCKET", XMEM_RUNDIR "/" XMEM_SOCKET_NAME);
}

/* The shim on the host: $XMEM_SHIM, else the installed library. */
static inline const char *xmem_host_shim(void)
{
        return xmem_env_or("XMEM_SHIM", XMEM_SHIM_PATH);
}
