/* pager.c: the fault reader of one container (see pager.h). It reads faults
 * in batches from the container's userfaultfds, de-duplicates them, serves
 * write-protect faults and holes itself (a few µs under the arena lock),
 * chooses the fill unit from the access pattern (stream.c), claims the run
 * (FILLING) and either installs it itself when that costs no I/O (zeros, or
 * straight from the appliance's pool over shm, with room under the budget)
 * or hands it to the container's fill workers (fill.c). It never waits for
 * the store, for eviction or for write-back. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fill.h"
#include "macro.h"
#include "pager.h"
#include "pages.h"
#include "store.h"
#include "uffd.h"

#define MSG_BATCH 64
#define INLINE_MAX_BYTES (256U << 10) /* larger fills go to the workers */

struct pager {
        struct pager_opts opts;
        struct fill_pool *fill;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct fill_slot *slots;
        size_t n_slots;
        uint64_t gen, seen_gen;
        int efd;
        bool stop, running, reader_started;
        pthread_t thread;
        _Atomic uint64_t async_inflight; /* fetches started by the reader (tcp) */
};

/* A page missing in a resident chunk: the process punched it itself (e.g. an
 * allocator's purge), which reads as zeros; or a stale message (-EEXIST). */
static void fill_hole(struct fill_slot *s, uint64_t addr, bool wp)
{
        static const char zero_page[ARENA_PAGE_SIZE];
        uint64_t page = addr & ~(uint64_t)(ARENA_PAGE_SIZE - 1);

        (void)uffd_copy(s->a->uffd, page, zero_page, ARENA_PAGE_SIZE, wp, false, NULL, NULL);
}

static bool prefetch_room(struct residency *r, uint64_t len)
{
        return atomic_load(&r->resident) + atomic_load(&r->inflight) + len <=
               residency_high(atomic_load(&r->budget));
}

/* Claim and queue the FREE runs of [FROM, TO) as prefetch. False when the
 * budget has no room (prefetch never evicts). */
static bool prefetch_range(struct pager *p, struct fill_slot *s, uint64_t from, uint64_t to,
                           bool writable)
{
        struct arena *a = s->a;

        for (uint64_t c = from; c < to && c < a->n_chunks; c++) {
                struct fill_job j = {.s = *s, .writable = writable, .prefetch = true};

                pthread_mutex_lock(&a->lock);
                if (a->state[c] != CHUNK_FREE) {
                        pthread_mutex_unlock(&a->lock);
                        continue;
                }
                if (!prefetch_room(s->r, (MIN(to, a->n_chunks) - c) * a->chunk_size)) {
                        pthread_mutex_unlock(&a->lock);
                        return false;
                }
                claim_run(a, c, MIN(to, a->n_chunks), c, &j);
                if (arena_alias_held(a, c))
                        writable = j.writable = false;
                /* a prefetch over the quota is installed read-only: its
                 * writes come as faults and are charged one by one */
                for (uint64_t k = j.first; writable && k < j.first + j.n; k++)
                        if (!pages_charge(a, k, PAGE_CHARGING))
                                j.writable = false;
                for (uint64_t k = j.first; !j.writable && k < j.first + j.n; k++)
                        if (a->charge[k] == PAGE_CHARGING)
                                pages_uncharge(a, k);
                pthread_mutex_unlock(&a->lock);
                atomic_fetch_add(&s->r->inflight, fill_job_bytes(&j));
                fill_pool_dispatch(p->fill, &j);
                c = j.first + j.n - 1;
        }
        return true;
}

/* The plan's prefetch: units ahead of a sequential stream, or pages along a
 * stride. */
static void prefetch(struct pager *p, struct fill_slot *s, const struct stream_plan *pl,
                     bool writable)
{
        uint64_t n = s->a->n_chunks;

        for (unsigned k = 1; k <= pl->ahead; k++) {
                uint64_t from, to;

                if (pl->stride == 1) {
                        from = pl->start + pl->count + (k - 1) * pl->unit;
                        to = MIN(from + pl->unit, n);
                } else if (pl->stride == -1) {
                        if (pl->start < k * pl->unit)
                                break;
                        from = pl->start - k * pl->unit;
                        to = from + pl->unit;
                } else {
                        int64_t c = (int64_t)pl->start + (int64_t)k * pl->stride;
                        if (c < 0 || (uint64_t)c >= n)
                                break;
                        from = (uint64_t)c;
                        to = from + 1;
                }
                if (from >= n || !prefetch_range(p, s, from, to, writable))
                        break;
        }
}

/* A fill whose fetch the reader started over the wire; it ends in the
 * transport's thread (async_done). */
struct async_fill {
        struct pager *p;
        struct fill_job j;
        char buf[];
};

static void async_end(struct async_fill *f)
{
        atomic_fetch_sub(&f->j.s.a->async_inflight, 1);
        atomic_fetch_sub(&f->p->async_inflight, 1);
        free(f);
}

/* The data arrived (transport thread): install it from the receive buffer;
 * anything that would wait (a failed fetch, the cgroup limit) goes to the
 * workers, which refetch. */
static void async_done(void *ctx, int result)
{
        struct async_fill *f = ctx;
        struct residency *r = f->j.s.r;

        if (result == 0) {
                f->j.fetched = true;
                if (fill_run(f->p->fill, &f->j, f->buf, false) != -EAGAIN) {
                        atomic_fetch_add(&r->counters.async_fills, 1);
                        lat_hist_add(&r->counters.fault_latency, fill_now_ns() - f->j.t_read);
                        async_end(f);
                        return;
                }
        } else
                atomic_fetch_add(&r->counters.store_errors, 1);
        f->j.fetched = false;
        fill_pool_dispatch(f->p->fill, &f->j);
        async_end(f);
}

/* Start the fetch of J without waiting: the receive buffer is the one the
 * page is installed from, and the transport's thread installs it. */
static bool fill_async(struct pager *p, struct fill_job *j)
{
        uint64_t len = fill_job_bytes(j);
        struct async_fill *f = malloc(sizeof(*f) + len);
        struct arena *a = j->s.a;

        if (!f)
                return false;
        f->p = p;
        f->j = *j;
        atomic_fetch_add(&p->async_inflight, 1);
        atomic_fetch_add(&a->async_inflight, 1);
        if (store_fetch_nowait(a->store, j->first * a->chunk_size, f->buf, len, async_done, f) == 0)
                return true;
        atomic_fetch_sub(&a->async_inflight, 1);
        atomic_fetch_sub(&p->async_inflight, 1);
        free(f);
        return false;
}

/* Fill a claimed demand run without waiting for anything: installed here
 * when it is cheap and the budget has room (once per batch), started over
 * the wire when the connection is free, else handed to a worker. */
static void fill_demand(struct pager *p, struct fill_job *j, unsigned *inline_left)
{
        struct residency *r = j->s.r;
        uint64_t len = fill_job_bytes(j);
        bool room =
            atomic_load(&r->resident) + atomic_load(&r->inflight) <= atomic_load(&r->budget);

        bool cheap = fill_is_cheap(j);

        if (len <= INLINE_MAX_BYTES && room && cheap && *inline_left > 0) {
                (*inline_left)--;
                if (fill_run(p->fill, j, NULL, false) != -EAGAIN) {
                        atomic_fetch_add(&r->counters.inline_fills, 1);
                        lat_hist_add(&r->counters.fault_latency, fill_now_ns() - j->t_read);
                        return;
                }
        } else if (len <= INLINE_MAX_BYTES && room && !cheap && fill_async(p, j))
                return;
        fill_pool_dispatch(p->fill, j);
}

static void serve_missing(struct pager *p, struct fill_slot *s, uint64_t addr, bool write,
                          uint64_t t_read, unsigned *inline_left)
{
        struct arena *a = s->a;
        uint64_t page = arena_chunk_of(a, addr);
        struct fill_job j = {.s = *s, .writable = write, .t_read = t_read};
        struct stream_opts so = {.max_unit = MAX(p->opts.max_chunk / a->chunk_size, 1u),
                                 .window = p->opts.window};
        struct stream_plan pl = {0};
        bool filling = false, refused = false;

        atomic_fetch_add(&s->r->counters.missing_faults, 1);
        if (write && arena_alias_held(a, page))
                j.writable = write = false; /* read-only: the write waits (alias.h) */
        pthread_mutex_lock(&a->lock);
        switch (a->state[page]) {
        case CHUNK_FREE:
                /* only misses shape the streams: a fault on a page being filled
                 * says nothing about where the access goes next */
                stream_plan(&a->streams, &so, page, a->n_chunks, &pl);
                claim_run(a, pl.start, pl.start + pl.count, page, &j);
                filling = !write || claim_charge(a, &j, page);
                refused = !filling;
                break;
        case CHUNK_PRESENT:
        case CHUNK_DIRTY:
                /* Under the lock, so the page cannot be evicted meanwhile. */
                fill_hole(s, addr, a->state[page] == CHUNK_PRESENT);
                break;
        case CHUNK_FILLING:
                /* its owner wakes the range; hurry it if it is queued prefetch */
                pthread_mutex_unlock(&a->lock);
                fill_pool_promote(p->fill, a, page);
                pthread_mutex_lock(&a->lock);
                break;
        default: /* EVICTING: the evictor wakes it after the punch */
                break;
        }
        pthread_mutex_unlock(&a->lock);
        if (refused) {
                claim_over_quota(a, addr);
                return;
        }
        if (filling) {
                atomic_fetch_add(&s->r->inflight, fill_job_bytes(&j));
                fill_demand(p, &j, inline_left);
        } else
                lat_hist_add(&s->r->counters.fault_latency, fill_now_ns() - t_read);
        if (pl.ahead)
                prefetch(p, s, &pl, write);
}

static void serve_wp(struct fill_slot *s, uint64_t addr)
{
        struct arena *a = s->a;
        uint64_t chunk = arena_chunk_of(a, addr), start = arena_chunk_addr(a, chunk);
        int w;

        atomic_fetch_add(&s->r->counters.wp_faults, 1);
        if (arena_alias_held(a, chunk))
                return; /* going back to local memory: the write waits (alias.h) */
        pthread_mutex_lock(&a->lock);
        w = pages_written(a, chunk);
        if (w > 0) {
                /* Un-protect under the lock: an evictor that picks the page
                 * after this sees DIRTY and protects it again first. Only this
                 * page, or with the next one where objects cross page
                 * boundaries and the next is clean too (the write goes on). */
                uint64_t n = stream_pairs(&a->streams) && chunk + 1 < a->n_chunks &&
                                     a->state[chunk + 1] == CHUNK_PRESENT &&
                                     pages_written(a, chunk + 1) > 0
                                 ? 2
                                 : 1;
                (void)arena_uffd_wp(a, chunk, n, false, false);
        } else if (w == 0 && a->state[chunk] == CHUNK_FREE)
                /* Evicted since: the writer refaults MISSING. */
                (void)uffd_wake(a->uffd, start, a->chunk_size);
        /* FILLING/EVICTING: the owner wakes it; a write after an eviction
         * refaults MISSING and refetches. */
        pthread_mutex_unlock(&a->lock);
        if (w < 0)
                claim_over_quota(a, addr);
}

/* De-duplicate a batch: one entry per (chunk, kind); write flags merged. */
static size_t dedup(const struct arena *a, struct uffd_msg *m, size_t n)
{
        size_t out = 0;

        for (size_t i = 0; i < n; i++) {
                if (m[i].event != UFFD_EVENT_PAGEFAULT ||
                    !arena_owns(a, m[i].arg.pagefault.address))
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

static void serve_batch(struct pager *p, struct fill_slot *s, struct uffd_msg *m, size_t n,
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
                        lat_hist_add(&s->r->counters.fault_latency, fill_now_ns() - t_read);
                } else
                        serve_missing(p, s, addr, write, t_read, &inline_left);
        }
}

/* Copy the slot list if it changed; acknowledge the generation. */
static int sync_slots(struct pager *p, struct fill_slot **slots, size_t *n, uint64_t *gen)
{
        int r = 0;

        pthread_mutex_lock(&p->lock);
        if (*gen != p->gen) {
                struct fill_slot *v = malloc((p->n_slots + 1) * sizeof(*v));
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
        struct fill_slot *slots = NULL;
        struct pollfd *pfd = NULL;
        struct uffd_msg msgs[MSG_BATCH];
        size_t n = 0;
        uint64_t gen = UINT64_MAX, last_fault = 0, spin_ns = p->opts.poll_us * 1000ULL;

        for (;;) {
                int timeout = -1;

                /* the slot list and the poll set change only with the generation
                 * (or stop): the busy-polling loop below stays two syscalls */
                if (__atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) != gen ||
                    __atomic_load_n(&p->stop, __ATOMIC_RELAXED)) {
                        int r = sync_slots(p, &slots, &n, &gen);
                        struct pollfd *v = r < 0 ? NULL : realloc(pfd, (n + 1) * sizeof(*v));
                        if (r == -ECANCELED)
                                break;
                        if (!v) {
                                gen = UINT64_MAX; /* try again */
                                usleep(1000);
                                continue;
                        }
                        pfd = v;
                        pfd[0] = (struct pollfd){.fd = p->efd, .events = POLLIN};
                        for (size_t i = 0; i < n; i++)
                                pfd[i + 1] =
                                    (struct pollfd){.fd = slots[i].a->uffd, .events = POLLIN};
                }
                /* Busy-poll for a while after a fault: the next one is served
                 * without a wake-up of this thread. */
                if (spin_ns && fill_now_ns() - last_fault < spin_ns)
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
                                last_fault = fill_now_ns();
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
        int r;

        if (!p)
                return -ENOMEM;
        if (opts)
                p->opts = *opts;
        if (!p->opts.window)
                p->opts.window = 2;
        if (!p->opts.max_chunk)
                p->opts.max_chunk = 2U << 20;
        if (!p->opts.workers)
                p->opts.workers = 2;
        else if (p->opts.workers < 0)
                p->opts.workers = 1; /* the fewest: the reader never fetches itself */
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        r = fill_pool_new(p->opts.max_chunk, (size_t)p->opts.workers, &p->fill);
        if (r >= 0)
                fill_pool_set_give_up(p->fill, p->opts.give_up_ms);
        if (p->efd < 0 || r < 0) {
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
        struct fill_slot *v;

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
        p->slots[p->n_slots++] = (struct fill_slot){.a = a, .r = r};
        __atomic_add_fetch(&p->gen, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&p->lock);
        pager_notify(p);
        return 0;
}

void pager_remove(struct pager *p, struct arena *a)
{
        uint64_t want;

        /* a fill of A waiting for an unreachable appliance gives up now */
        arena_set_gone(a);
        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < p->n_slots; i++)
                if (p->slots[i].a == a) {
                        p->slots[i] = p->slots[--p->n_slots];
                        break;
                }
        want = __atomic_add_fetch(&p->gen, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&p->lock);
        pager_notify(p);
        pthread_mutex_lock(&p->lock);
        while (p->running && !p->stop && p->seen_gen < want)
                pthread_cond_wait(&p->cond, &p->lock);
        pthread_mutex_unlock(&p->lock);
        /* The reader queues nothing more for A; its fetches in flight end
         * (at the latest at the transport's timeout), then drain the workers. */
        while (atomic_load(&a->async_inflight) > 0)
                usleep(1000);
        fill_pool_forget_arena(p->fill, a);
}

int pager_start(struct pager *p)
{
        int e;

        if (p->running)
                return 0;
        p->stop = false;
        e = fill_pool_start(p->fill);
        if (e < 0)
                return e;
        e = pthread_create(&p->thread, NULL, pager_thread, p);
        if (e) {
                p->running = true; /* so that pager_stop joins the workers */
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
        pager_notify(p);
        if (p->reader_started)
                pthread_join(p->thread, NULL);
        p->reader_started = false;
        while (atomic_load(&p->async_inflight) > 0) /* they may still queue jobs */
                usleep(1000);
        fill_pool_cancel(p->fill);
        fill_pool_join(p->fill);
        p->running = false;
}

void pager_free(struct pager *p)
{
        if (!p)
                return;
        pager_stop(p);
        safe_close(p->efd);
        fill_pool_free(p->fill);
        free(p->slots);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        free(p);
}
