/* manager.h: the appliance's state (pool, chunks, regions, journal, stats)
 * and its connections. manager.c serves sockets, handlers.c and copy.c the ops. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <xmem/wire.h>

#include "auth.h"
#include "chunk.h"
#include "error.h"
#include "journal.h"
#include "pool.h"
#include "region.h"
#include "uri.h"

#define MANAGER_MAX_LISTEN 16
#define MANAGER_MAX_UIDS 32
#define MANAGER_MAX_PEERS 16

/* Who may do what, and how much (access.c, docs/appliance.md "Authentication"). */
struct manager_limits {
        unsigned max_connections;        /* open at once, in all */
        unsigned max_client_connections; /* per uid (unix) or peer address (tcp) */
        uint64_t max_client_regions;     /* regions and snapshots a client made, alive */
        uint64_t max_io;                 /* data bytes of one request, announced in HELLO */
        uint64_t max_buffers;            /* request/reply buffers of all connections */
};

struct manager_config {
        struct xmem_uri listen[MANAGER_MAX_LISTEN];
        size_t nlisten;
        uint64_t pool_size;
        uint64_t chunk_size;
        const char *pool_file; /* NULL: anonymous memfd */
        uid_t allow_uid[MANAGER_MAX_UIDS]; /* unix clients (SO_PEERCRED) */
        size_t nallow_uid;
        struct xmem_uri peers[MANAGER_MAX_PEERS]; /* COPY destinations */
        size_t npeers;
        const struct xmem_secret *secret; /* tcp clients must prove it; NULL: none */
        struct manager_limits limits;
};

/* One client: a uid on unix sockets, a peer address on tcp. Counted while it
 * has connections or regions. */
struct client {
        struct client *next;
        char id[64]; /* "uid 1000", "10.0.0.5" */
        unsigned conns;
        uint64_t regions;
};

struct listener {
        int fd;
        struct xmem_uri uri;
};

struct conn {
        struct manager *m;
        int fd;
        bool is_unix;
        char name[128];
        struct client *client; /* NULL while refused */
        int refuse;            /* -errno: answer the first request with it, then close */
        char refuse_why[96];
        bool authed;           /* may send requests other than AUTH */
        bool challenged;       /* AUTH step 1 done: NONCE is ours */
        uint8_t nonce[XMEM_AUTH_NONCE_SIZE];
        pthread_t thread;
        atomic_bool done;
        struct conn *next;
        uint8_t *in, *out; /* request payload, reply payload */
        size_t in_cap, out_cap;
};

struct manager_stats {
        atomic_uint_fast64_t bytes_read, bytes_written, ops, connections_total;
        atomic_uint_fast64_t connections; /* open now */
        atomic_uint_fast64_t refused;     /* connections and requests turned away */
};

struct manager {
        struct pool pool;
        struct chunk_pool chunks;
        struct region_table regions;
        struct journal *journal;      /* NULL without --pool-file */
        pthread_rwlock_t lock;        /* guards chunks, regions, journal */
        struct listener listeners[MANAGER_MAX_LISTEN];
        size_t nlisteners;
        pthread_mutex_t conns_lock;
        struct conn *conns;
        int reap_fd;                  /* eventfd: a connection thread ended */
        int signal_fd;
        struct manager_stats stats;
        /* access.c */
        uid_t allow_uid[MANAGER_MAX_UIDS];
        size_t nallow_uid;
        struct xmem_uri peers[MANAGER_MAX_PEERS];
        size_t npeers;
        struct xmem_secret secret;
        struct manager_limits limits;
        pthread_mutex_t clients_lock; /* innermost: taken under LOCK or CONNS_LOCK */
        struct client *clients;
        atomic_uint refusing;          /* threads answering a refused connection */
        atomic_uint_fast64_t buffered; /* bytes of connection buffers */
};

int manager_new(const struct manager_config *cfg, struct manager **ret, struct xmem_error *err);
int manager_start(struct manager *m, struct xmem_error *err);
/* Serve until SIGTERM/SIGINT. */
int manager_run(struct manager *m);
/* Close every connection, write the journal compactly, sync and free. */
void manager_free(struct manager *m);

/* For handlers: send a reply (header + payload, optionally with one fd). */
int conn_reply(struct conn *c, struct xmem_wire_hdr *rep, const void *payload, uint32_t len,
               int fd);
/* Reply buffer of at least LEN bytes, or NULL (also past --max-buffers). */
uint8_t *conn_out(struct conn *c, size_t len);

/* Handle one decoded request and send its reply. Returns 0 to go on, or
 * -errno to close the connection (malformed payload, or the reply failed). */
int handle_request(struct conn *c, const struct xmem_wire_hdr *h, const uint8_t *payload);

/* handlers.c, for copy.c: under the lock, copy region bytes out / in. */
void region_read_locked(struct manager *m, const struct region *r, uint64_t off, uint8_t *buf,
                        uint64_t len);
/* Under the write lock: make [off, off+len) of R exclusive (allocate holes,
 * break copy-on-write keeping the chunk's bytes), appending changed map
 * entries to *E (grown). Contents read the same afterwards, also on failure. */
struct entries {
        struct journal_entry *e;
        size_t n, cap;
};
int region_prepare_locked(struct manager *m, struct region *r, uint64_t off, uint64_t len,
                          struct entries *e);
void region_write_locked(struct manager *m, const struct region *r, uint64_t off,
                         const uint8_t *buf, uint64_t len);
int entries_add(struct entries *e, uint64_t idx, chunk_id c);
/* After a metadata change under the write lock: punch freed chunks. */
void manager_reclaim_locked(struct manager *m);

/* access.c: the uid check, authentication, peers and bounds. */
/* At accept: identify the client behind C (SO_PEERCRED, peer address SA) and
 * admit it, or set C->refuse. Under no lock; counts C's client. */
void access_admit(struct conn *c, const struct sockaddr_storage *sa);
/* A refused connection gets a thread to answer it if fewer than 16 do. */
bool access_refuse_slot(struct manager *m);
/* After a request: give big buffers back when --max-buffers runs short. */
void access_trim(struct conn *c);
/* C ends: drop it from its client's count. */
void access_release(struct conn *c);
/* A refused connection's thread: answer its first request with C->refuse. */
void access_refuse(struct conn *c);
/* Before a request's payload is read: 0 go on; 1 refused and answered (the
 * caller drains the payload and goes on); -errno refused, close. */
int access_check_frame(struct conn *c, const struct xmem_wire_hdr *h);
/* The AUTH op (handlers.c dispatches it). */
int access_auth(struct conn *c, const struct xmem_wire_hdr *h, const uint8_t *payload,
                struct xmem_wire_hdr *rep);
/* Under the write lock: may C make another region? Then record R as its. */
int access_region_quota(struct conn *c);
void access_region_made(struct conn *c, struct region *r);
void access_region_gone(struct manager *m, struct region *r);
/* May COPY go to URI? -EPERM (ERR says why) unless it is a --peer. */
int access_peer_check(const struct manager *m, const char *uri, struct xmem_error *err);
/* Charge or release connection buffer bytes against --max-buffers. */
bool access_buf_charge(struct manager *m, size_t n);
void access_buf_release(struct manager *m, size_t n);
void access_free(struct manager *m);

/* copy.c */
int handle_copy(struct conn *c, const struct xmem_wire_hdr *h, const struct xmem_wire_copy *dst,
                uint64_t *ret_copied);

/* shm.c */
int op_shm_map(struct conn *c, const struct xmem_wire_hdr *h, struct xmem_wire_hdr *rep);
