/* uri.h: endpoints as operators write them: tcp://HOST:PORT, unix:///PATH,
 * shm:///PATH (same-host appliance, pool shared by memfd), rdma://HOST:PORT. */
#pragma once

#include <stdint.h>
#include "error.h"

enum xmem_uri_scheme {
        XMEM_URI_TCP,
        XMEM_URI_UNIX,
        XMEM_URI_SHM,
        XMEM_URI_RDMA,
};

#define XMEM_URI_MAX 256

struct xmem_uri {
        enum xmem_uri_scheme scheme;
        char host[128];    /* tcp/rdma: host name or address ("[::1]" brackets stripped) */
        uint16_t port;     /* tcp/rdma */
        char path[108];    /* unix/shm: socket path (sun_path size) */
};

/* Parse S strictly; on failure ERR says what is wrong (e.g. "tcp://x: missing port"). */
int xmem_uri_parse(const char *s, struct xmem_uri *ret, struct xmem_error *err);
const char *xmem_uri_scheme_name(enum xmem_uri_scheme s);
/* Canonical text form into BUF (XMEM_URI_MAX). */
const char *xmem_uri_format(const struct xmem_uri *u, char *buf, size_t len);
