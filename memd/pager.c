/* pager.c: the fault reader (see pager.h). Chunk states and the rules for who
 * moves them are in arena.h; fills and the fill workers are fill.c, the
 * eviction side is residency.c. */
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
#include "uffd.h"

#define MSG_BATCH 64

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
        void *buf; /* fetch buffer (fault thread only) */
};

/* A page missing in a resident chunk: the process punched it itself (e.g. an
 * allocator's purge), which reads as zeros; or a stale message (-EEXIST). */
static void fill_hole(struct fill_slot *s, uint64_t addr, bool wp)
{
        static const char zero_page[ARENA_PAGE_SIZE];
        uint64_t page = addr & ~(uint64_t)(ARENA_PAGE_SIZE - 1);

        (void)uffd_copy(s->a->uffd, page, zero_page, ARENA_PAGE_SIZE, wp, false, NULL, NULL);
}

/* ---- serving faults (reader thread) ---- */

/* After a demand fill of CHUNK: extend the arena's sequential stream and
 * fill up to min(run, prefetch_max) following FREE chunks. */
static void prefetch(struct pager *p, struct fill_slot *s, uint64_t chunk, bool writable)
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
                if (fill_pool_has_workers(p->fill)) {
                        if (fill_pool_push(p->fill, &j) < 0) {
                                pthread_mutex_lock(&a->lock);
                                a->state[j.chunk] = CHUNK_FREE; /* not left FILLING */
                                pthread_mutex_unlock(&a->lock);
                                (void)uffd_wake(a->uffd, arena_chunk_addr(a, j.chunk),
                                                a->chunk_size);
                                break;
                        }
                } else if (fill_chunk(p->fill, s, j.chunk, writable, j.stored, true, p->buf) < 0)
                        break;
        }
        a->seq_next = chunk + depth + 1;
}

/* A MISSING fault. Returns true when it started a fill (the caller may
 * prefetch after it). *INLINE_LEFT: fills the reader may still do itself in
 * this batch; the others go to the workers. */
static bool serve_missing(struct pager *p, struct fill_slot *s, uint64_t addr, bool write,
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
                if (*inline_left > 0 || !fill_pool_has_workers(p->fill)) {
                        if (*inline_left > 0)
                                (*inline_left)--;
                        (void)fill_chunk(p->fill, s, j.chunk, write, j.stored, false, p->buf);
                        lat_hist_add(&s->r->counters.fault_latency, fill_now_ns() - t_read);
                } else
                        fill_pool_dispatch(p->fill, &j, p->buf);
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
        lat_hist_add(&s->r->counters.fault_latency, fill_now_ns() - t_read);
        return false;
}

static void serve_wp(struct fill_slot *s, uint64_t addr)
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
                } else if (serve_missing(p, s, addr, write, t_read, &inline_left))
                        prefetch(p, s, arena_chunk_of(s->a, addr), write);
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
        if (!p->opts.prefetch_max)
                p->opts.prefetch_max = 8;
        if (!p->opts.max_chunk)
                p->opts.max_chunk = 2U << 20;
        if (!p->opts.workers)
                p->opts.workers = 1;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        p->buf = malloc(p->opts.max_chunk);
        r = fill_pool_new(p->opts.max_chunk, p->opts.workers > 0 ? (size_t)p->opts.workers : 0,
                          &p->fill);
        if (p->efd < 0 || !p->buf || r < 0) {
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
        p->slots[p->n_slots++] = (struct fill_slot){ .a = a, .r = r };
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
        fill_pool_cancel(p->fill); /* also ends the reader's own fill retries */
        pager_notify(p);
        if (p->reader_started)
                pthread_join(p->thread, NULL);
        p->reader_started = false;
        fill_pool_join(p->fill);
        p->running = false;
}

void pager_free(struct pager *p)
{
        if (!p)
                return;
        pager_stop(p);
        safe_close(p->efd);
        free(p->buf);
        fill_pool_free(p->fill);
        free(p->slots);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        free(p);
}
