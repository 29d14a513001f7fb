/* pager.h: serving the page faults of one container (UMap-like, in C): a fault
 * reader thread polls the container's userfaultfds plus an eventfd for
 * changes and shutdown, reads faults in batches, de-duplicates them per page,
 * and serves them:
 *   MISSING -> choose the unit from the access pattern (one page for a random
 *              miss, up to 2 MiB on a sequential stream, with a window of
 *              units prefetched ahead), claim it, and install it write-
 *              protected (writable and DIRTY at once for a write fault);
 *   WP      -> mark the page DIRTY and un-protect it, only that page (unless
 *              it is being evicted: then the writer waits for the eviction).
 * The reader installs a fill itself only when that costs no I/O and no
 * eviction (zeros, or straight from the appliance's pool over shm); every
 * other fill goes to the container's own fill workers, so a slow appliance or
 * another container never delays these faults. With poll_us the reader
 * busy-polls that long after each fault before sleeping in poll() again. */
#pragma once

#include <stdint.h>

#include "arena.h"
#include "residency.h"

struct pager_opts {
        unsigned window;    /* prefetch units in flight on a stream; 0 = default (2) */
        uint32_t max_chunk; /* largest fill in bytes; 0 = default (2 MiB) */
        int workers;        /* fill workers: 0 = default (2); -1 = the fewest (1) */
        unsigned poll_us;   /* busy-poll this long after a fault; 0 = sleep in poll() */
        unsigned give_up_ms; /* a fault's store unreachable this long: SIGBUS (0 = 30 s) */
};

struct pager;

int pager_new(const struct pager_opts *opts, struct pager **ret);
/* Stops the threads. Arenas and residency managers are not freed. */
void pager_free(struct pager *p);

/* Serve A's faults (A->uffd attached) and account them to R. */
int pager_add(struct pager *p, struct arena *a, struct residency *r);
/* Stop serving A; when it returns no pager thread (reader or worker) touches
 * A any more. Fills of A still queued are dropped (their chunks go FREE). */
void pager_remove(struct pager *p, struct arena *a);

int pager_start(struct pager *p);
void pager_stop(struct pager *p);
