/* pager.h: the fault-reader thread (UMap-like, in C). It polls a set of
 * userfaultfds plus an eventfd for changes and shutdown, reads faults in
 * batches, de-duplicates them per chunk, and serves them:
 *   MISSING -> fetch the chunk from the store (zeros if never stored) and
 *              UFFDIO_COPY it write-protected (writable and DIRTY at once for
 *              a write fault), then prefetch ahead on sequential streams;
 *   WP      -> mark the chunk DIRTY and un-protect it (unless it is being
 *              evicted: then the writer waits for the eviction's wake).
 * The reader fills the first missing chunk of a batch itself (no hand-off:
 * lowest latency); further missing chunks of the batch and all prefetch go
 * to a pool of fill workers (demand before prefetch), so fetches overlap and
 * the reader goes back to reading faults. With poll_us the reader busy-polls
 * the uffds that long after each fault before sleeping in poll() again.
 * A fill that hits the cgroup limit (-ENOMEM) evicts synchronously and
 * retries; a fault is never given up while its process lives. */
#pragma once

#include <stdint.h>

#include "arena.h"
#include "residency.h"

struct pager_opts {
        unsigned prefetch_max; /* chunks ahead on a sequential stream; 0 = default (8) */
        uint32_t max_chunk;    /* largest arena chunk served; 0 = default (2 MiB) */
        int workers;           /* fill workers: 0 = default (1), -1 = none (reader fills all) */
        unsigned poll_us;      /* busy-poll this long after a fault; 0 = sleep in poll() */
};

struct pager;

int pager_new(const struct pager_opts *opts, struct pager **ret);
/* Stops the thread. Arenas and residency managers are not freed. */
void pager_free(struct pager *p);

/* Serve A's faults (A->uffd attached) and account them to R. */
int pager_add(struct pager *p, struct arena *a, struct residency *r);
/* Stop serving A; when it returns no pager thread (reader or worker) touches
 * A any more. Fills of A still queued are dropped (their chunks go FREE). */
void pager_remove(struct pager *p, struct arena *a);

int pager_start(struct pager *p);
void pager_stop(struct pager *p);
