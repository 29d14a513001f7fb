/* manager.h: the appliance's state (pool, chunks, regions, journal, stats)
 * and its connections. manager.c serves sockets, handlers.c and copy.c the ops. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <xmem/wire.h>

#include "chunk.h"
#include "error.h"
#include "journal.h"
#include "pool.h"
#include "region.h"
#include "uri.h"

#define MANAGER_MAX_LISTEN 16

struct manager_config {
        struct xmem_uri listen[MANAGER_MAX_LISTEN];
        size_t nlisten;
        uint64_t pool_size;
        uint64_t chunk_size;
        const char *pool_file; /* NULL: anonymous memfd */
};

struct listener {
        int fd;
        struct xmem_uri uri;
};

struct conn {
        struct manager *m;
        int fd;
        bool is_unix;
        char name[80];
        pthread_t thread;
        atomic_bool done;
        struct conn *next;
        uint8_t *in, *out; /* request payload, reply payload */
        size_t in_cap, out_cap;
};

struct manager_stats {
        atomic_uint_fast64_t bytes_read, bytes_written, ops, connections_total;
        atomic_uint_fast64_t connections; /* open now */
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
/* Reply buffer of at least LEN bytes, or NULL. */
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

/* copy.c */
int handle_copy(struct manager *m, const struct xmem_wire_hdr *h, const struct xmem_wire_copy *dst,
                uint64_t *ret_copied);

/* shm.c */
int op_shm_map(struct conn *c, const struct xmem_wire_hdr *h, struct xmem_wire_hdr *rep);
