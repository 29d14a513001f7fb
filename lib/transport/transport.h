/* transport.h: the one client interface to a memory appliance. Implementations:
 * tcp (tcp://, also unix:// which speaks the same frames over a unix socket),
 * shm (shm:///PATH: same-host appliance, data moved by memcpy in the shared
 * pool) and, later, rdma. memd, the CLI, tests, benchmarks and the appliance
 * itself (appliance-to-appliance copy) reach appliances only through here.
 *
 * Thread safety: a transport may be used from many threads at once. The
 * synchronous calls block only their caller. The asynchronous pair
 * (xmem_transport_submit / xmem_transport_reap) lets one thread keep many
 * reads and writes in flight (pipelined, tagged); completions are reaped by
 * the thread that submitted them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xmem/wire.h>

#include "auth.h"
#include "error.h"

struct xmem_region_ref {
        uint64_t id;
        uint8_t key[XMEM_KEY_SIZE];
};

struct xmem_transport_opts {
        unsigned connections; /* tcp: parallel connections, 0 = default (4) */
        unsigned timeout_ms;  /* connect and per-request timeout, 0 = default (10000) */
        /* tcp:// to an appliance started with --secret-file: every connection
         * proves the secret and checks the appliance's proof (docs/transports.md).
         * Either a file, read at open with the appliance's rules (mode 0600 or
         * 0400, 16..4095 bytes), or a secret already loaded with
         * xmem_secret_load (copied; SECRET wins). Both NULL: no authentication.
         * Not used for unix:// and shm://, where the appliance checks the uid. */
        const char *secret_file;
        const struct xmem_secret *secret;
};

struct xmem_transport; /* opaque */

/* One read or write. The caller owns it and BUF until it is reaped. */
struct xmem_io {
        uint16_t op; /* XMEM_OP_READ or XMEM_OP_WRITE */
        struct xmem_region_ref region;
        uint64_t offset;
        void *buf;
        size_t len;  /* up to the appliance's max_io (XMEM_WIRE_MAX_IO) */
        void *user;  /* caller's cookie */
        int result;  /* on completion: 0 or -errno */
        /* xmem_transport_submit_nowait only: called on completion, in the
         * transport's own thread (it must not block nor call the transport
         * synchronously); the io is never queued for reap. */
        void (*complete)(struct xmem_io *io);
        /* private to the transport */
        uint32_t tag_;
        struct xmem_io *next_;
};

/* A piece of a direct access (xmem_direct): AT bytes into the request, LEN
 * bytes at POOL in the appliance's pool mapped here, or POOL NULL where the
 * region holds no data (reads as zeros; never for a write). A negative return
 * stops the access and is returned by it. */
typedef int (*xmem_direct_fn)(void *ctx, uint64_t at, void *pool, uint64_t len);

struct xmem_transport_ops {
        const char *scheme;
        int (*open)(const char *uri, const struct xmem_transport_opts *opts,
                    struct xmem_transport **ret, struct xmem_error *err);
        void (*close)(struct xmem_transport *t);
        /* Send one control request (any op but READ/WRITE handled by submit) and
         * wait for its reply. *RET_PAYLOAD (malloc'd) receives the reply payload. */
        int (*call)(struct xmem_transport *t, const struct xmem_wire_hdr *req,
                    const void *payload, struct xmem_wire_hdr *ret_reply, void **ret_payload);
        int (*submit)(struct xmem_transport *t, struct xmem_io *const *ios, size_t n);
        int (*reap)(struct xmem_transport *t, struct xmem_io **ret, size_t max, int min_wait,
                    int timeout_ms);
        /* Optional (tcp): see xmem_transport_submit_nowait. */
        int (*submit_nowait)(struct xmem_transport *t, struct xmem_io *io);
        int (*readv)(struct xmem_transport *t, const struct xmem_region_ref *r,
                     const struct xmem_wire_seg *segs, size_t nseg, void *buf);
        int (*writev)(struct xmem_transport *t, const struct xmem_region_ref *r,
                      const struct xmem_wire_seg *segs, size_t nseg, const void *buf);
        /* Optional (shm): hand the region's memory itself to a callback. */
        int (*direct)(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t off,
                      uint64_t len, bool write, xmem_direct_fn fn, void *ctx);
        /* Optional: how many of its connections are up now (*RET_TOTAL: how
         * many it keeps); without it the transport counts as one connection,
         * always up. Never blocks on the network. */
        unsigned (*conns_up)(struct xmem_transport *t, unsigned *ret_total);
};

/* Open a transport for URI (tcp://, unix://, shm://, rdma://). ERR explains failures. */
int xmem_transport_open(const char *uri, const struct xmem_transport_opts *opts,
                        struct xmem_transport **ret, struct xmem_error *err);
void xmem_transport_close(struct xmem_transport *t);
/* The appliance's HELLO answer (chunk size, pool size, features, max_io). */
const struct xmem_wire_hello *xmem_transport_hello(struct xmem_transport *t);
const char *xmem_transport_uri(struct xmem_transport *t);

/* The connection's health, for memd's metrics: connections kept and up now,
 * and the failed requests so far: reads and writes that failed (a broken or
 * refused connection, a timeout, the appliance's refusal) and control calls
 * that failed in the transport (not the appliance's answers to them, such as
 * an unknown region). Cheap, never blocks on the network. */
struct xmem_transport_health {
        unsigned conns, conns_up;
        uint64_t errors;
};
void xmem_transport_health(struct xmem_transport *t, struct xmem_transport_health *ret);

/* Asynchronous I/O: queue N ios (pipelined); reap at least MIN_WAIT completions
 * (up to MAX) waiting at most TIMEOUT_MS (-1 = forever). Returns the number
 * reaped or -errno (-ETIMEDOUT). */
int xmem_transport_submit(struct xmem_transport *t, struct xmem_io *const *ios, size_t n);
int xmem_transport_reap(struct xmem_transport *t, struct xmem_io **ret, size_t max,
                        int min_wait, int timeout_ms);

/* Send IO (with IO->complete set) only if that cannot wait: the connection is
 * up and nobody else is sending on it. -EAGAIN: nothing was sent (use the
 * other calls); -EOPNOTSUPP: this transport has no such path. On 0 IO is in
 * flight and IO->complete runs exactly once (also on a timeout or a broken
 * connection). For a thread that must never block on an appliance (memd's
 * fault readers). */
int xmem_transport_submit_nowait(struct xmem_transport *t, struct xmem_io *io);

/* Synchronous data path; LEN may exceed max_io (split internally). */
int xmem_read(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t offset,
              void *buf, size_t len);
int xmem_write(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t offset,
               const void *buf, size_t len);
/* Scatter-gather: BUF holds the segments' data concatenated. */
int xmem_readv(struct xmem_transport *t, const struct xmem_region_ref *r,
               const struct xmem_wire_seg *segs, size_t nseg, void *buf);
int xmem_writev(struct xmem_transport *t, const struct xmem_region_ref *r,
                const struct xmem_wire_seg *segs, size_t nseg, const void *buf);

/* Zero-copy access where the appliance's memory is mapped here (shm): FN
 * gets [OFFSET, OFFSET+LEN) of R piece by piece, as pointers into the pool,
 * and reads (!WRITE) or writes them itself, e.g. UFFDIO_COPY straight from
 * the pool or pread() from a memfd straight into it. FN runs with the
 * transport's mapping cache held shared: it must not call this transport.
 * -EOPNOTSUPP where the transport moves data over a wire. */
int xmem_direct(struct xmem_transport *t, const struct xmem_region_ref *r, uint64_t offset,
                uint64_t len, bool write, xmem_direct_fn fn, void *ctx);
bool xmem_transport_has_direct(const struct xmem_transport *t);

/* Region management (metadata operations on the appliance). */
int xmem_region_alloc(struct xmem_transport *t, uint64_t size, struct xmem_region_ref *ret,
                      uint64_t *ret_size);
int xmem_region_free(struct xmem_transport *t, const struct xmem_region_ref *r);
/* An existing region by id and key (-ENOENT unknown, -EACCES wrong key):
 * its size. Nothing on the appliance changes. */
int xmem_region_open(struct xmem_transport *t, const struct xmem_region_ref *r,
                     uint64_t *ret_size);
int xmem_region_resize(struct xmem_transport *t, const struct xmem_region_ref *r,
                       uint64_t size, uint64_t *ret_size);
int xmem_region_snapshot(struct xmem_transport *t, const struct xmem_region_ref *r,
                         struct xmem_region_ref *ret_snapshot);
int xmem_region_clone(struct xmem_transport *t, const struct xmem_region_ref *r,
                      struct xmem_region_ref *ret_clone);
int xmem_region_revert(struct xmem_transport *t, const struct xmem_region_ref *r,
                       const struct xmem_region_ref *snapshot);
/* Server-side copy of LEN bytes from SRC@SRC_OFF to DST@DST_OFF on the appliance
 * at DST_URI (NULL or "" = the same appliance); the data never passes through
 * this client. */
int xmem_region_copy(struct xmem_transport *t, const struct xmem_region_ref *src,
                     uint64_t src_off, const char *dst_uri, const struct xmem_region_ref *dst,
                     uint64_t dst_off, uint64_t len);
/* Stats as JSON text (malloc'd); R = NULL for the appliance's own. */
int xmem_stats(struct xmem_transport *t, const struct xmem_region_ref *r, char **ret_json);

/* Registered implementations (rdma only when built with it). */
extern const struct xmem_transport_ops xmem_transport_tcp_ops;
extern const struct xmem_transport_ops xmem_transport_shm_ops;
