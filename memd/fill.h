/* fill.h: installing runs of pages into an arena and the fill workers. A fill
 * owns a run of FILLING chunks [first, first + n) and installs it with as few
 * UFFDIO_COPYs and one wake: from the store's memory itself where it is
 * mapped here (shm: straight from the appliance's pool), from a buffer the
 * store filled (tcp: pipelined requests), or from zeros for pages never
 * stored. At the cgroup limit (-ENOMEM) it evicts and retries; a demand fill
 * is given up only when its store stays unreachable past a bound (SIGBUS). The fault reader (pager.c) does
 * cheap fills itself and hands the rest to the workers. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "arena.h"
#include "residency.h"

/* An arena the pager serves and the residency manager it is accounted to. */
struct fill_slot {
        struct arena *a;
        struct residency *r;
};

/* A fill: chunks [first, first + n) are FILLING and belong to it; their bytes
 * are counted in r->inflight until it ends. */
struct fill_job {
        struct fill_slot s;
        uint64_t first, n;
        uint64_t done;   /* bytes installed so far (a fill cut short and handed on) */
        uint64_t t_read; /* demand: when the fault was read (latency); 0 = prefetch */
        bool writable, stored, prefetch;
        bool fetched; /* BUF holds the run's data already */
};

struct fill_pool;

static inline uint64_t fill_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t fill_job_bytes(const struct fill_job *j)
{
        return j->n * (uint64_t)j->s.a->chunk_size;
}

/* N_WORKERS threads, each with a MAX_BYTES buffer (the largest fill). */
int fill_pool_new(uint32_t max_bytes, size_t n_workers, struct fill_pool **ret);
void fill_pool_free(struct fill_pool *fp);

/* A demand fill whose store fails for MS (0: FILL_GIVE_UP_DEFAULT_MS) gives
 * up: the pages not installed are poisoned, so the threads that fault on
 * them get SIGBUS (never a zero page), and the reason is logged. Until then
 * it retries with a backoff (10 ms doubling to 200 ms). */
#define FILL_GIVE_UP_DEFAULT_MS 30000U
void fill_pool_set_give_up(struct fill_pool *fp, unsigned ms);

/* Start the workers; on failure none runs and -errno is returned. */
int fill_pool_start(struct fill_pool *fp);
/* Two steps, so the reader can be joined in between: cancel makes every
 * running and future fill give up (no more retries) and wakes the workers;
 * join waits for them. */
void fill_pool_cancel(struct fill_pool *fp);
void fill_pool_join(struct fill_pool *fp);

/* Install J. MAY_EVICT false (the fault reader): never evicts nor fetches
 * over a wire; returns -EAGAIN when it would have to (J->done says how far it
 * got; J still owns its chunks, hand it to a worker). Otherwise returns 0, or
 * -errno when the process is gone (or a prefetch failed): the chunks not
 * installed are then FREE again and their waiters woken (they refault). */
int fill_run(struct fill_pool *fp, struct fill_job *j, void *buf, bool may_evict);
/* Can the reader install J itself (no wire I/O: zeros or a direct store)? */
bool fill_is_cheap(const struct fill_job *j);

/* Queue J for the workers: demand at the front, prefetch at the back. If it
 * cannot be queued (no memory, no workers) it is given back: the faulting
 * threads refault. Never blocks. */
void fill_pool_dispatch(struct fill_pool *fp, struct fill_job *j);
/* A thread waits on CHUNK of A: if a queued prefetch job holds it, it goes
 * to the front of the queue. */
void fill_pool_promote(struct fill_pool *fp, struct arena *a, uint64_t chunk);
/* Give J's chunks back (FREE, waiters woken) without filling them. */
void fill_give_back(struct fill_job *j);
/* Drop A's queued jobs (their chunks go FREE, waiters refault) and wait until
 * no worker holds a job of A. */
void fill_pool_forget_arena(struct fill_pool *fp, struct arena *a);

/* claim.c: claim the FREE pages of [FROM, TO) contiguous with AT (AT itself
 * FREE) as J's FILLING run. Arena lock held. */
void claim_run(struct arena *a, uint64_t from, uint64_t to, uint64_t at, struct fill_job *j);
/* Charge J's pages for a writable fill. Over the quota J shrinks to the
 * faulting page AT; false when even that does not fit (J given back). Arena
 * lock held; nobody waits on J's pages yet. */
bool claim_charge(struct arena *a, struct fill_job *j, uint64_t at);
/* A write at ADDR over the container's external quota: SIGBUS to the
 * process by its pidfd (logged once per arena). No lock needed. */
void claim_over_quota(struct arena *a, uint64_t addr);
