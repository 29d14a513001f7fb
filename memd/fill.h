/* fill.h: installing chunks into an arena (fetch from the store or zeros,
 * UFFDIO_COPY, evict-and-retry at the cgroup limit) and the pool of fill
 * workers the fault reader hands jobs to, with their queue (demand jobs at
 * the front, prefetch at the back). The reader is pager.c. */
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

/* A fill handed to a worker: the chunk is FILLING and belongs to the job. */
struct fill_job {
        struct fill_slot s;
        uint64_t chunk;
        uint64_t t_read; /* demand: when the fault was read (latency); 0 = prefetch */
        bool writable, stored, prefetch;
};

struct fill_pool;

static inline uint64_t fill_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* N_WORKERS threads (0: none, the caller fills everything itself), each with
 * a MAX_CHUNK bounce buffer. */
int fill_pool_new(uint32_t max_chunk, size_t n_workers, struct fill_pool **ret);
void fill_pool_free(struct fill_pool *fp);
bool fill_pool_has_workers(const struct fill_pool *fp);

/* Start the workers; on failure none runs and -errno is returned. */
int fill_pool_start(struct fill_pool *fp);
/* Two steps, so the reader can be joined in between: cancel makes every
 * running and future fill give up (no more retries) and wakes the workers;
 * join waits for them. */
void fill_pool_cancel(struct fill_pool *fp);
void fill_pool_join(struct fill_pool *fp);

/* Install a FILLING chunk through BUF (max_chunk bytes). Returns 0, or -errno
 * when the process is gone (or a prefetch failed): the chunk is then FREE
 * again and threads that faulted on it meanwhile are woken (they refault). */
int fill_chunk(struct fill_pool *fp, struct fill_slot *s, uint64_t chunk, bool writable,
               bool stored, bool prefetch, void *buf);

/* Queue a job for the workers (-ENOMEM: not queued). */
int fill_pool_push(struct fill_pool *fp, const struct fill_job *j);
/* Hand J to a worker, or fill it here through BUF (no workers, or no memory
 * for the queue). */
void fill_pool_dispatch(struct fill_pool *fp, struct fill_job *j, void *buf);
/* Drop A's queued jobs (their chunks go FREE, waiters refault) and wait until
 * no worker holds a job of A. */
void fill_pool_forget_arena(struct fill_pool *fp, struct arena *a);
