/* pager.c: the fault thread (see pager.h). Chunk states and the rules for who
 * moves them are in arena.h; the eviction side is residency.c. */
#include <errno.h>
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

struct pager {
        struct pager_opts opts;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct pager_slot *slots;
        size_t n_slots;
        uint64_t gen, seen_gen;
        int efd;
        bool stop, running;
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
                                bool stored, bool give_up_on_error)
{
        struct arena *a = s->a;

        if (!stored) {
                atomic_fetch_add(&s->r->counters.zero_filled_bytes, a->chunk_size);
                return p->zero;
        }
        for (;;) {
                int r = store_fetch(a->store, chunk * a->chunk_size, p->buf, a->chunk_size);
                if (r >= 0) {
                        atomic_fetch_add(&s->r->counters.fetched_bytes, a->chunk_size);
                        return p->buf;
                }
                atomic_fetch_add(&s->r->counters.store_errors, 1);
                if (give_up_on_error || pager_stopping(p))
                        return NULL;
                usleep(10000); /* the appliance may come back; the faulter waits */
        }
}

/* Install a FILLING chunk. Returns 0, or -errno when the process is gone (or
 * a prefetch failed): the chunk is then FREE again. */
static int fill_chunk(struct pager *p, struct pager_slot *s, uint64_t chunk, bool writable,
                      bool stored, bool prefetch)
{
        struct arena *a = s->a;
        struct residency *res = s->r;
        uint64_t addr = arena_chunk_addr(a, chunk), done = 0;
        const char *src = chunk_source(p, s, chunk, stored, prefetch);
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
                /* At the cgroup limit: evict now and retry; never give the fault up. */
                atomic_fetch_add(&res->counters.enomem_retries, 1);
                if (prefetch || pager_stopping(p))
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
                uint64_t c = chunk + k, budget = atomic_load(&s->r->budget);
                bool stored;

                if (atomic_load(&s->r->resident) + a->chunk_size > residency_high(budget))
                        break; /* prefetch never evicts */
                pthread_mutex_lock(&a->lock);
                if (a->state[c] != CHUNK_FREE) {
                        pthread_mutex_unlock(&a->lock);
                        continue;
                }
                a->state[c] = CHUNK_FILLING;
                stored = a->stored[c];
                pthread_mutex_unlock(&a->lock);
                if (fill_chunk(p, s, c, writable, stored, true) < 0)
                        break;
        }
        a->seq_next = chunk + depth + 1;
}

/* Returns true when a fill happened (the caller may prefetch after it). */
static bool serve_missing(struct pager *p, struct pager_slot *s, uint64_t addr, bool write)
{
        struct arena *a = s->a;
        uint64_t chunk = arena_chunk_of(a, addr);
        bool stored;

        atomic_fetch_add(&s->r->counters.missing_faults, 1);
        pthread_mutex_lock(&a->lock);
        switch (a->state[chunk]) {
        case CHUNK_FREE:
                a->state[chunk] = CHUNK_FILLING;
                stored = a->stored[chunk];
                pthread_mutex_unlock(&a->lock);
                return fill_chunk(p, s, chunk, write, stored, false) >= 0;
        case CHUNK_PRESENT:
        case CHUNK_DIRTY:
                /* Under the lock, so the chunk cannot be evicted meanwhile. */
                fill_hole(s, addr, a->state[chunk] == CHUNK_PRESENT);
                break;
        default:
                /* FILLING/EVICTING: their owner wakes the range when done. */
                break;
        }
        pthread_mutex_unlock(&a->lock);
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
        n = dedup(s->a, m, n);
        for (size_t i = 0; i < n; i++) {
                uint64_t addr = m[i].arg.pagefault.address, flags = m[i].arg.pagefault.flags;
                bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE, filled = false;

                if (flags & UFFD_PAGEFAULT_FLAG_WP)
                        serve_wp(s, addr);
                else
                        filled = serve_missing(p, s, addr, write);
                atomic_fetch_add(&s->r->counters.faults, 1);
                lat_hist_add(&s->r->counters.fault_latency, now_ns() - t_read);
                if (filled)
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
        uint64_t gen = UINT64_MAX;

        for (;;) {
                int r = sync_slots(p, &slots, &n, &gen);
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
                if (poll(pfd, n + 1, -1) < 0)
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
                        if (k > 0)
                                serve_batch(p, &slots[i], msgs, (size_t)k, now_ns());
                }
        }
        free(slots);
        free(pfd);
        return NULL;
}

int pager_new(const struct pager_opts *opts, struct pager **ret)
{
        struct pager *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        if (opts)
                p->opts = *opts;
        if (!p->opts.prefetch_max)
                p->opts.prefetch_max = 8;
        if (!p->opts.max_chunk)
                p->opts.max_chunk = 2U << 20;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        p->buf = malloc(p->opts.max_chunk);
        p->zero = mmap(NULL, p->opts.max_chunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p->efd < 0 || !p->buf || p->zero == MAP_FAILED) {
                if (p->zero == MAP_FAILED)
                        p->zero = NULL;
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
}

int pager_start(struct pager *p)
{
        int e;

        if (p->running)
                return 0;
        p->stop = false;
        e = pthread_create(&p->thread, NULL, pager_thread, p);
        if (e)
                return -e;
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
        pthread_join(p->thread, NULL);
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
        free(p->slots);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        free(p);
}
