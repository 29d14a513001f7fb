/* pager.c: the fault thread (see pager.h). Chunk states and the rules for who
 * moves them are in arena.h; the eviction side is residency.c. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "pager.h"
#include "store.h"
#include "uffd.h"

#define MSG_BATCH 64

struct pager_slot {
        struct arena *a;
        struct residency *r;
};

/* A fill handed to a worker: the chunk is FILLING and belongs to the job. */
struct fill_job {
        struct pager_slot s;
        uint64_t chunk;
        uint64_t t_read; /* demand: when the fault was read (latency); 0 = prefetch */
        bool writable, stored, prefetch;
};

struct fill_worker {
        struct pager *p;
        pthread_t thread;
        struct arena *busy; /* the arena of the job in hand (under qlock) */
        void *buf;
        bool started;
};

struct pager {
        struct pager_opts opts;
        /* Fill queue: demand jobs at the front, prefetch at the back (a ring). */
        pthread_mutex_t qlock;
        pthread_cond_t qcond, qdone;
        struct fill_job *q;
        size_t q_cap, q_head, q_len;
        struct fill_worker *workers;
        size_t n_workers;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct pager_slot *slots;
        size_t n_slots;
        uint64_t gen, seen_gen;
        int efd;
        bool stop, running, reader_started;
        pthread_t thread;
        void *buf;  /* fetch buffer (fault thread only) */
        void *zero; /* max_chunk bytes of zeros (read-only anonymous mapping) */
};

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool pager_stopping(struct pager *p)
{
        return __atomic_load_n(&p->stop, __ATOMIC_RELAXED);
}

/* Get the chunk's data into a buffer: zeros if the store never held it. */
static const void *chunk_source(struct pager *p, struct pager_slot *s, uint64_t chunk,
                                bool stored, bool give_up_on_error, void *buf)
{
        struct arena *a = s->a;

        if (!stored) {
                atomic_fetch_add(&s->r->counters.zero_filled_bytes, a->chunk_size);
                return p->zero;
        }
        for (;;) {
                int r = store_fetch(a->store, chunk * a->chunk_size, buf, a->chunk_size);
                if (r >= 0) {
                        atomic_fetch_add(&s->r->counters.fetched_bytes, a->chunk_size);
                        return buf;
                }
                atomic_fetch_add(&s->r->counters.store_errors, 1);
                if (give_up_on_error || pager_stopping(p))
                        return NULL;
                usleep(10000); /* the appliance may come back; the faulter waits */
        }
}

/* Install a FILLING chunk through BUF (max_chunk bytes). Returns 0, or -errno
 * when the process is gone (or a prefetch failed): the chunk is then FREE
 * again and threads that faulted on it meanwhile are woken (they refault). */
static int fill_chunk(struct pager *p, struct pager_slot *s, uint64_t chunk, bool writable,
                      bool stored, bool prefetch, void *buf)
{
        struct arena *a = s->a;
        struct residency *res = s->r;
        uint64_t addr = arena_chunk_addr(a, chunk), done = 0;
        const char *src = chunk_source(p, s, chunk, stored, prefetch, buf);
        int r = src ? 0 : -EIO;

        if (src && !prefetch)
                (void)residency_make_room(res, a->chunk_size); /* evict before filling */
        while (src && done < a->chunk_size) {
                uint64_t d = 0;
                r = uffd_copy(a->uffd, addr + done, src + done, a->chunk_size - done, !writable,
                              false, &d, NULL);
                done += d;
                if (r != -ENOMEM)
                        break;
                /* At the cgroup limit: evict now and retry; never give the fault up
                 * (nor a prefetch half done: its other pages would read as holes). */
                atomic_fetch_add(&res->counters.enomem_retries, 1);
                if (pager_stopping(p))
                        break;
                uint64_t resident = atomic_load(&res->resident);
                if (residency_evict_to(res, resident > 4 * (uint64_t)a->chunk_size
                                                    ? resident - 4 * (uint64_t)a->chunk_size
                                                    : 0) < 0)
                        usleep(1000); /* nothing evictable: other usage must shrink */
        }

        pthread_mutex_lock(&a->lock);
        if (r < 0 && done == 0) {
                a->state[chunk] = CHUNK_FREE;
        } else {
                /* Partly installed (the process died meanwhile) counts as resident so
                 * the pages are punched with the chunk. */
                a->state[chunk] = writable ? CHUNK_DIRTY : CHUNK_PRESENT;
                a->referenced[chunk] = !prefetch;
                a->resident_chunks++;
        }
        pthread_mutex_unlock(&a->lock);
        /* Always wake after the state change: a thread that faulted while the
         * chunk was FILLING (e.g. a write to a page this copy had already
         * installed protected, after the copy's own wake) was left waiting for
         * the owner; without this wake it would wait forever. */
        (void)uffd_wake(a->uffd, addr, a->chunk_size);
        if (r < 0 && done == 0)
                return r;
        atomic_fetch_add(&res->resident, a->chunk_size);
        if (prefetch)
                atomic_fetch_add(&res->counters.prefetched_bytes, a->chunk_size);
        if (atomic_load(&res->resident) > residency_high(atomic_load(&res->budget)))
                residency_kick(res);
        return r;
}

/* A page missing in a resident chunk: the process punched it itself (e.g. an
 * allocator's purge), which reads as zeros; or a stale message (-EEXIST). */
static void fill_hole(struct pager_slot *s, uint64_t addr, bool wp)
{
        static const char zero_page[ARENA_PAGE_SIZE];
        uint64_t page = addr & ~(uint64_t)(ARENA_PAGE_SIZE - 1);

        (void)uffd_copy(s->a->uffd, page, zero_page, ARENA_PAGE_SIZE, wp, false, NULL, NULL);
}

/* ---- the fill queue ---- */

static bool pager_has_workers(const struct pager *p)
{
        return p->n_workers > 0;
}

/* Queue a job: demand at the front, prefetch at the back. */
static int queue_push(struct pager *p, const struct fill_job *j)
{
        pthread_mutex_lock(&p->qlock);
        if (p->q_len == p->q_cap) {
                size_t cap = p->q_cap ? 2 * p->q_cap : 64;
                struct fill_job *v = malloc(cap * sizeof(*v));
                if (!v) {
                        pthread_mutex_unlock(&p->qlock);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < p->q_len; i++)
                        v[i] = p->q[(p->q_head + i) % p->q_cap];
                free(p->q);
                p->q = v;
                p->q_cap = cap;
                p->q_head = 0;
        }
        if (j->prefetch) {
                p->q[(p->q_head + p->q_len) % p->q_cap] = *j;
        } else {
                p->q_head = (p->q_head + p->q_cap - 1) % p->q_cap;
                p->q[p->q_head] = *j;
        }
        p->q_len++;
        pthread_cond_signal(&p->qcond);
        pthread_mutex_unlock(&p->qlock);
        return 0;
}

/* Hand chunk J (FILLING) to a worker, or fill it here (no workers, or no
 * memory for the queue). */
static void dispatch(struct pager *p, struct fill_job *j)
{
        if (pager_has_workers(p) && queue_push(p, j) == 0)
                return;
        (void)fill_chunk(p, &j->s, j->chunk, j->writable, j->stored,
                         j->prefetch, p->buf);
        if (j->t_read)
                lat_hist_add(&j->s.r->counters.fault_latency, now_ns() - j->t_read);
}

static void run_job(struct pager *p, struct fill_job *j, void *buf)
{
        struct arena *a = j->s.a;
        struct residency *r = j->s.r;

        if (j->prefetch)
                residency_refresh(r);
        if (j->prefetch &&
            atomic_load(&r->resident) + a->chunk_size > residency_high(atomic_load(&r->budget))) {
                /* Prefetch never evicts: give the chunk back. */
                pthread_mutex_lock(&a->lock);
                a->state[j->chunk] = CHUNK_FREE;
                pthread_mutex_unlock(&a->lock);
                (void)uffd_wake(a->uffd, arena_chunk_addr(a, j->chunk), a->chunk_size);
                return;
        }
        (void)fill_chunk(p, &j->s, j->chunk, j->writable, j->stored, j->prefetch, buf);
        if (j->t_read)
                lat_hist_add(&r->counters.fault_latency, now_ns() - j->t_read);
}

static void *worker_thread(void *arg)
{
        struct fill_worker *w = arg;
        struct pager *p = w->p;

        pthread_mutex_lock(&p->qlock);
        for (;;) {
                while (!p->q_len && !pager_stopping(p))
                        pthread_cond_wait(&p->qcond, &p->qlock);
                if (pager_stopping(p))
                        break;
                struct fill_job j = p->q[p->q_head];
                p->q_head = (p->q_head + 1) % p->q_cap;
                p->q_len--;
                w->busy = j.s.a;
                pthread_mutex_unlock(&p->qlock);
                run_job(p, &j, w->buf);
                pthread_mutex_lock(&p->qlock);
                w->busy = NULL;
                pthread_cond_broadcast(&p->qdone);
        }
        pthread_mutex_unlock(&p->qlock);
        return NULL;
}

/* Drop A's queued jobs (their chunks go FREE, waiters refault) and wait until
 * no worker holds a job of A. */
static void queue_forget_arena(struct pager *p, struct arena *a)
{
        size_t keep = 0;

        pthread_mutex_lock(&p->qlock);
        for (size_t i = 0; i < p->q_len; i++) {
                struct fill_job *j = &p->q[(p->q_head + i) % p->q_cap];
                if (j->s.a == a) {
                        pthread_mutex_lock(&a->lock);
                        a->state[j->chunk] = CHUNK_FREE;
                        pthread_mutex_unlock(&a->lock);
                        (void)uffd_wake(a->uffd, arena_chunk_addr(a, j->chunk), a->chunk_size);
                } else
                        p->q[(p->q_head + keep++) % p->q_cap] = *j;
        }
        p->q_len = keep;
        for (;;) {
                bool busy = false;
                for (size_t i = 0; i < p->n_workers; i++)
                        busy |= p->workers[i].busy == a;
                if (!busy)
                        break;
                pthread_cond_wait(&p->qdone, &p->qlock);
        }
        pthread_mutex_unlock(&p->qlock);
}

/* ---- serving faults (reader thread) ---- */

/* After a demand fill of CHUNK: extend the arena's sequential stream and
 * fill up to min(run, prefetch_max) following FREE chunks. */
static void prefetch(struct pager *p, struct pager_slot *s, uint64_t chunk, bool writable)
{
        struct arena *a = s->a;
        unsigned depth = 0;

        if (chunk == a->seq_next)
                a->seq_run++;
        else
                a->seq_run = 0;
        if (a->seq_run > 0)
                depth = MIN(a->seq_run, p->opts.prefetch_max);
        for (unsigned k = 1; k <= depth && chunk + k < a->n_chunks; k++) {
                struct fill_job j = { .s = *s, .chunk = chunk + k, .writable = writable,
                                      .prefetch = true };
                uint64_t budget = atomic_load(&s->r->budget);

                if (atomic_load(&s->r->resident) + a->chunk_size > residency_high(budget))
                        break; /* prefetch never evicts */
                pthread_mutex_lock(&a->lock);
                if (a->state[j.chunk] != CHUNK_FREE) {
                        pthread_mutex_unlock(&a->lock);
                        continue;
                }
                a->state[j.chunk] = CHUNK_FILLING;
                j.stored = a->stored[j.chunk];
                pthread_mutex_unlock(&a->lock);
                if (pager_has_workers(p)) {
                        if (queue_push(p, &j) < 0) {
                                pthread_mutex_lock(&a->lock);
                                a->state[j.chunk] = CHUNK_FREE; /* not left FILLING */
                                pthread_mutex_unlock(&a->lock);
                                (void)uffd_wake(a->uffd, arena_chunk_addr(a, j.chunk),
                                                a->chunk_size);
                                break;
                        }
                } else if (fill_chunk(p, s, j.chunk, writable, j.stored, true, p->buf) < 0)
                        break;
        }
        a->seq_next = chunk + depth + 1;
}

/* A MISSING fault. Returns true when it started a fill (the caller may
 * prefetch after it). *INLINE_LEFT: fills the reader may still do itself in
 * this batch; the others go to the workers. */
static bool serve_missing(struct pager *p, struct pager_slot *s, uint64_t addr, bool write,
                          uint64_t t_read, unsigned *inline_left)
{
        struct arena *a = s->a;
        struct fill_job j = { .s = *s, .chunk = arena_chunk_of(a, addr), .writable = write,
                              .t_read = t_read };

        atomic_fetch_add(&s->r->counters.missing_faults, 1);
        pthread_mutex_lock(&a->lock);
        switch (a->state[j.chunk]) {
        case CHUNK_FREE:
                a->state[j.chunk] = CHUNK_FILLING;
                j.stored = a->stored[j.chunk];
                pthread_mutex_unlock(&a->lock);
                if (*inline_left > 0 || !pager_has_workers(p)) {
                        if (*inline_left > 0)
                                (*inline_left)--;
                        (void)fill_chunk(p, s, j.chunk, write, j.stored, false, p->buf);
                        lat_hist_add(&s->r->counters.fault_latency, now_ns() - t_read);
                } else
                        dispatch(p, &j);
                return true;
        case CHUNK_PRESENT:
        case CHUNK_DIRTY:
                /* Under the lock, so the chunk cannot be evicted meanwhile. */
                fill_hole(s, addr, a->state[j.chunk] == CHUNK_PRESENT);
                break;
        default:
                /* FILLING/EVICTING: their owner wakes the range when done. */
                break;
        }
        pthread_mutex_unlock(&a->lock);
        lat_hist_add(&s->r->counters.fault_latency, now_ns() - t_read);
        return false;
}

static void serve_wp(struct pager_slot *s, uint64_t addr)
{
        struct arena *a = s->a;
        uint64_t chunk = arena_chunk_of(a, addr), start = arena_chunk_addr(a, chunk);

        atomic_fetch_add(&s->r->counters.wp_faults, 1);
        pthread_mutex_lock(&a->lock);
        switch (a->state[chunk]) {
        case CHUNK_PRESENT:
                a->state[chunk] = CHUNK_DIRTY;
                /* fall through */
        case CHUNK_DIRTY:
                a->referenced[chunk] = 1;
                /* Un-protect under the lock: an evictor that picks the chunk after
                 * this sees DIRTY and protects it again before reading it. */
                (void)uffd_writeprotect(a->uffd, start, a->chunk_size, false, false);
                break;
        case CHUNK_FREE:
                /* Evicted since: the writer refaults MISSING. */
                (void)uffd_wake(a->uffd, start, a->chunk_size);
                break;
        default:
                /* EVICTING: the writer waits until the punch, then refetches. */
                break;
        }
        pthread_mutex_unlock(&a->lock);
}

/* De-duplicate a batch: one entry per (chunk, kind); write flags merged. */
static size_t dedup(const struct arena *a, struct uffd_msg *m, size_t n)
{
        size_t out = 0;

        for (size_t i = 0; i < n; i++) {
                if (m[i].event != UFFD_EVENT_PAGEFAULT ||
                    !arena_contains(a, m[i].arg.pagefault.address))
                        continue;
                uint64_t c = arena_chunk_of(a, m[i].arg.pagefault.address);
                bool wp = m[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
                size_t j;
                for (j = 0; j < out; j++) {
                        bool wpj = m[j].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
                        if (wpj == wp && arena_chunk_of(a, m[j].arg.pagefault.address) == c)
                                break;
                }
                if (j < out)
                        m[j].arg.pagefault.flags |= m[i].arg.pagefault.flags;
                else
                        m[out++] = m[i];
        }
        return out;
}

static void serve_batch(struct pager *p, struct pager_slot *s, struct uffd_msg *m, size_t n,
                        uint64_t t_read)
{
        unsigned inline_left = 1;

        n = dedup(s->a, m, n);
        for (size_t i = 0; i < n; i++) {
                uint64_t addr = m[i].arg.pagefault.address, flags = m[i].arg.pagefault.flags;
                bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;

                atomic_fetch_add(&s->r->counters.faults, 1);
                if (flags & UFFD_PAGEFAULT_FLAG_WP) {
                        serve_wp(s, addr);
                        lat_hist_add(&s->r->counters.fault_latency, now_ns() - t_read);
                } else if (serve_missing(p, s, addr, write, t_read, &inline_left))
                        prefetch(p, s, arena_chunk_of(s->a, addr), write);
        }
}

/* Copy the slot list if it changed; acknowledge the generation. */
static int sync_slots(struct pager *p, struct pager_slot **slots, size_t *n, uint64_t *gen)
{
        int r = 0;

        pthread_mutex_lock(&p->lock);
        if (*gen != p->gen) {
                struct pager_slot *v = malloc((p->n_slots + 1) * sizeof(*v));
                if (v) {
                        if (p->n_slots)
                                memcpy(v, p->slots, p->n_slots * sizeof(*v));
                        free(*slots);
                        *slots = v;
                        *n = p->n_slots;
                        *gen = p->gen;
                } else
                        r = -ENOMEM;
                p->seen_gen = *gen;
                pthread_cond_broadcast(&p->cond);
        }
        if (p->stop)
                r = -ECANCELED;
        pthread_mutex_unlock(&p->lock);
        return r;
}

static void *pager_thread(void *arg)
{
        struct pager *p = arg;
        struct pager_slot *slots = NULL;
        struct pollfd *pfd = NULL;
        struct uffd_msg msgs[MSG_BATCH];
        size_t n = 0;
        uint64_t gen = UINT64_MAX, last_fault = 0, spin_ns = p->opts.poll_us * 1000ULL;

        for (;;) {
                int r = sync_slots(p, &slots, &n, &gen), timeout = -1;
                if (r == -ECANCELED)
                        break;
                struct pollfd *v = realloc(pfd, (n + 1) * sizeof(*v));
                if (!v || r < 0) {
                        if (v)
                                pfd = v;
                        usleep(1000);
                        continue;
                }
                pfd = v;
                pfd[0] = (struct pollfd){ .fd = p->efd, .events = POLLIN };
                for (size_t i = 0; i < n; i++)
                        pfd[i + 1] = (struct pollfd){ .fd = slots[i].a->uffd, .events = POLLIN };
                /* Busy-poll for a while after a fault: the next one is served
                 * without a wake-up of this thread. */
                if (spin_ns && now_ns() - last_fault < spin_ns)
                        timeout = 0;
                if (poll(pfd, n + 1, timeout) <= 0)
                        continue;
                if (pfd[0].revents) {
                        uint64_t x;
                        (void)!read(p->efd, &x, sizeof(x));
                        continue;
                }
                for (size_t i = 0; i < n; i++) {
                        if (!(pfd[i + 1].revents & POLLIN))
                                continue;
                        int k = uffd_read_msgs(slots[i].a->uffd, msgs, MSG_BATCH);
                        if (k > 0) {
                                last_fault = now_ns();
                                serve_batch(p, &slots[i], msgs, (size_t)k, last_fault);
                        }
                }
        }
        free(slots);
        free(pfd);
        return NULL;
}

int pager_new(const struct pager_opts *opts, struct pager **ret)
{
        struct pager *p = calloc(1, sizeof(*p));
        bool ok = true;

        if (!p)
                return -ENOMEM;
        if (opts)
                p->opts = *opts;
        if (!p->opts.prefetch_max)
                p->opts.prefetch_max = 8;
        if (!p->opts.max_chunk)
                p->opts.max_chunk = 2U << 20;
        if (!p->opts.workers)
                p->opts.workers = 1;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        pthread_mutex_init(&p->qlock, NULL);
        pthread_cond_init(&p->qcond, NULL);
        pthread_cond_init(&p->qdone, NULL);
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        p->buf = malloc(p->opts.max_chunk);
        p->zero = mmap(NULL, p->opts.max_chunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p->zero == MAP_FAILED)
                p->zero = NULL;
        if (p->opts.workers > 0) {
                p->n_workers = (size_t)p->opts.workers;
                p->workers = calloc(p->n_workers, sizeof(*p->workers));
                ok = p->workers != NULL;
                for (size_t i = 0; ok && i < p->n_workers; i++) {
                        p->workers[i].p = p;
                        p->workers[i].buf = malloc(p->opts.max_chunk);
                        ok = p->workers[i].buf != NULL;
                }
        }
        if (p->efd < 0 || !p->buf || !p->zero || !ok) {
                pager_free(p);
                return -ENOMEM;
        }
        *ret = p;
        return 0;
}

static void pager_notify(struct pager *p)
{
        uint64_t one = 1;
        (void)!write(p->efd, &one, sizeof(one));
}

int pager_add(struct pager *p, struct arena *a, struct residency *r)
{
        struct pager_slot *v;

        if (a->chunk_size > p->opts.max_chunk || a->uffd < 0)
                return -EINVAL;
        /* poll() on a blocking userfaultfd reports EPOLLERR at once: the reader
         * needs it non-blocking (a shim may hand over a blocking one). */
        int fl = fcntl(a->uffd, F_GETFL);
        if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(a->uffd, F_SETFL, fl | O_NONBLOCK) < 0))
                return -errno;
        pthread_mutex_lock(&p->lock);
        v = realloc(p->slots, (p->n_slots + 1) * sizeof(*v));
        if (!v) {
                pthread_mutex_unlock(&p->lock);
                return -ENOMEM;
        }
        p->slots = v;
        p->slots[p->n_slots++] = (struct pager_slot){ .a = a, .r = r };
        p->gen++;
        pthread_mutex_unlock(&p->lock);
        pager_notify(p);
        return 0;
}

void pager_remove(struct pager *p, struct arena *a)
{
        uint64_t want;

        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < p->n_slots; i++)
                if (p->slots[i].a == a) {
                        p->slots[i] = p->slots[--p->n_slots];
                        break;
                }
        want = ++p->gen;
        pthread_mutex_unlock(&p->lock);
        pager_notify(p);
        pthread_mutex_lock(&p->lock);
        while (p->running && !p->stop && p->seen_gen < want)
                pthread_cond_wait(&p->cond, &p->lock);
        pthread_mutex_unlock(&p->lock);
        /* The reader queues nothing more for A; now drain the workers. */
        queue_forget_arena(p, a);
}

int pager_start(struct pager *p)
{
        int e;

        if (p->running)
                return 0;
        p->stop = false;
        for (size_t i = 0; i < p->n_workers; i++) {
                e = pthread_create(&p->workers[i].thread, NULL, worker_thread, &p->workers[i]);
                if (e) {
                        p->running = true; /* so that pager_stop joins the started ones */
                        pager_stop(p);
                        return -e;
                }
                p->workers[i].started = true;
        }
        e = pthread_create(&p->thread, NULL, pager_thread, p);
        if (e) {
                p->running = true;
                pager_stop(p);
                return -e;
        }
        p->reader_started = true;
        p->running = true;
        return 0;
}

void pager_stop(struct pager *p)
{
        if (!p->running)
                return;
        pthread_mutex_lock(&p->lock);
        __atomic_store_n(&p->stop, true, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&p->lock);
        pthread_mutex_lock(&p->qlock);
        pthread_cond_broadcast(&p->qcond);
        pthread_mutex_unlock(&p->qlock);
        pager_notify(p);
        if (p->reader_started)
                pthread_join(p->thread, NULL);
        p->reader_started = false;
        for (size_t i = 0; i < p->n_workers; i++)
                if (p->workers[i].started) {
                        pthread_join(p->workers[i].thread, NULL);
                        p->workers[i].started = false;
                }
        p->running = false;
}

void pager_free(struct pager *p)
{
        if (!p)
                return;
        pager_stop(p);
        safe_close(p->efd);
        free(p->buf);
        if (p->zero)
                munmap(p->zero, p->opts.max_chunk);
        for (size_t i = 0; p->workers && i < p->n_workers; i++)
                free(p->workers[i].buf);
        free(p->workers);
        free(p->q);
        free(p->slots);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->qlock);
        pthread_cond_destroy(&p->qcond);
        pthread_cond_destroy(&p->qdone);
        free(p);
}
