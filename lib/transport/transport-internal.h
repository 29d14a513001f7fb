/* transport-internal.h: what every transport implementation shares: the base
 * object that transport.h keeps opaque, and the completion queues that carry
 * finished asynchronous ios back to the thread that submitted them. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "transport.h"
#include "uri.h"

/* One queue of completed ios. Asynchronous submits use the submitting thread's
 * queue (found by pthread_self()); the synchronous helpers use a private one on
 * their stack so they never steal an async caller's completions. All queues of
 * a transport share the base's cq_lock. */
struct xmem_cq {
        pthread_t owner;
        pthread_cond_t cond;
        struct xmem_io *head, *tail;
        size_t queued;   /* completed, not yet reaped */
        size_t inflight; /* submitted, not yet completed */
        struct xmem_cq *next;
};

struct xmem_transport {
        const struct xmem_transport_ops *ops;
        /* submit N ios whose completions go to CQ; never fails part-way: an io
         * that cannot be sent completes with its error */
        void (*submit_cq)(struct xmem_transport *t, struct xmem_io *const *ios, size_t n,
                          struct xmem_cq *cq);
        /* Called with BEGIN before and !BEGIN after this transport changes REGION's
         * mapping (snapshot, clone, revert, resize, free, copy): shm drops its cached
         * extents and keeps data copies out in between. May be NULL. */
        void (*invalidate)(struct xmem_transport *t, const uint64_t *regions, size_t n,
                           bool begin);
        char uri[XMEM_URI_MAX];
        struct xmem_wire_hello hello;
        pthread_mutex_t cq_lock;
        struct xmem_cq *cqs; /* per-thread async queues */
        _Atomic uint64_t errors; /* xmem_transport_health */
};

void transport_base_init(struct xmem_transport *t, const struct xmem_transport_ops *ops,
                         const char *uri);
void transport_base_fini(struct xmem_transport *t);
/* Count a failed request (R < 0) in the transport's health; returns R. */
int transport_count_error(struct xmem_transport *t, int r);

void transport_cq_init(struct xmem_cq *cq);
void transport_cq_fini(struct xmem_cq *cq);
/* Mark IO complete with RESULT and queue it on CQ. Never touches IO afterwards. */
void transport_io_done(struct xmem_transport *t, struct xmem_cq *cq, struct xmem_io *io,
                       int result);
/* Account N ios as in flight on CQ (before they are sent). */
void transport_cq_add_inflight(struct xmem_transport *t, struct xmem_cq *cq, size_t n);

/* ops->submit and ops->reap for every implementation: validate, then
 * submit_cq on the calling thread's queue; reap from that queue. */
int transport_generic_submit(struct xmem_transport *t, struct xmem_io *const *ios, size_t n);
int transport_generic_reap(struct xmem_transport *t, struct xmem_io **ret, size_t max,
                           int min_wait, int timeout_ms);
/* Send HELLO through ops->call and store the answer in t->hello. */
int transport_hello(struct xmem_transport *t, struct xmem_error *err);

/* Check an io before submission: op, length within max_io, buffer. */
int transport_io_check(const struct xmem_transport *t, const struct xmem_io *io);

/* Monotonic clock in nanoseconds, and an absolute CLOCK_MONOTONIC timespec
 * TIMEOUT_MS from now (for pthread_cond_timedwait on monotonic conds). */
uint64_t transport_now_ns(void);
void transport_deadline(struct timespec *ts, int timeout_ms);
void transport_cond_init_monotonic(pthread_cond_t *c);

/* Fill a request header (magic, version, op, region and key from R if non-NULL). */
void transport_req_init(struct xmem_wire_hdr *h, uint16_t op, const struct xmem_region_ref *r);

/* tcp-connect.c: connect to U (tcp:// or unix://) with TIMEOUT_MS on send and
 * receive; for tcp:// with a secret S (len > 0) authenticate before returning. */
int tcp_sock_connect(const struct xmem_uri *u, unsigned timeout_ms, const struct xmem_secret *s,
                     int *ret_fd, struct xmem_error *err);
