/* fill.c: chunk fills and the fill worker pool (see fill.h). Chunk states and
 * the rules for who moves them are in arena.h. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fill.h"
#include "store.h"
#include "uffd.h"

struct fill_worker {
        struct fill_pool *fp;
        pthread_t thread;
        struct arena *busy; /* the arena of the job in hand (under qlock) */
        void *buf;
        bool started;
};

struct fill_pool {
        uint32_t max_chunk;
        bool stop;
        /* Fill queue: demand jobs at the front, prefetch at the back (a ring). */
        pthread_mutex_t qlock;
        pthread_cond_t qcond, qdone;
        struct fill_job *q;
        size_t q_cap, q_head, q_len;
        struct fill_worker *workers;
        size_t n_workers;
        void *zero; /* max_chunk bytes of zeros (read-only anonymous mapping) */
};

static bool fill_stopping(struct fill_pool *fp)
{
        return __atomic_load_n(&fp->stop, __ATOMIC_RELAXED);
}

/* Get the chunk's data into a buffer: zeros if the store never held it. */
static const void *chunk_source(struct fill_pool *fp, struct fill_slot *s, uint64_t chunk,
                                bool stored, bool give_up_on_error, void *buf)
{
        struct arena *a = s->a;

        if (!stored) {
                atomic_fetch_add(&s->r->counters.zero_filled_bytes, a->chunk_size);
                return fp->zero;
        }
        for (;;) {
                int r = store_fetch(a->store, chunk * a->chunk_size, buf, a->chunk_size);
                if (r >= 0) {
                        atomic_fetch_add(&s->r->counters.fetched_bytes, a->chunk_size);
                        return buf;
                }
                atomic_fetch_add(&s->r->counters.store_errors, 1);
                if (give_up_on_error || fill_stopping(fp))
                        return NULL;
                usleep(10000); /* the appliance may come back; the faulter waits */
        }
}

int fill_chunk(struct fill_pool *fp, struct fill_slot *s, uint64_t chunk, bool writable,
               bool stored, bool prefetch, void *buf)
{
        struct arena *a = s->a;
        struct residency *res = s->r;
        uint64_t addr = arena_chunk_addr(a, chunk), done = 0;
        const char *src = chunk_source(fp, s, chunk, stored, prefetch, buf);
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
                if (fill_stopping(fp))
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

/* ---- the fill queue ---- */

bool fill_pool_has_workers(const struct fill_pool *fp)
{
        return fp->n_workers > 0;
}

/* Queue a job: demand at the front, prefetch at the back. */
int fill_pool_push(struct fill_pool *fp, const struct fill_job *j)
{
        pthread_mutex_lock(&fp->qlock);
        if (fp->q_len == fp->q_cap) {
                size_t cap = fp->q_cap ? 2 * fp->q_cap : 64;
                struct fill_job *v = malloc(cap * sizeof(*v));
                if (!v) {
                        pthread_mutex_unlock(&fp->qlock);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < fp->q_len; i++)
                        v[i] = fp->q[(fp->q_head + i) % fp->q_cap];
                free(fp->q);
                fp->q = v;
                fp->q_cap = cap;
                fp->q_head = 0;
        }
        if (j->prefetch) {
                fp->q[(fp->q_head + fp->q_len) % fp->q_cap] = *j;
        } else {
                fp->q_head = (fp->q_head + fp->q_cap - 1) % fp->q_cap;
                fp->q[fp->q_head] = *j;
        }
        fp->q_len++;
        pthread_cond_signal(&fp->qcond);
        pthread_mutex_unlock(&fp->qlock);
        return 0;
}

void fill_pool_dispatch(struct fill_pool *fp, struct fill_job *j, void *buf)
{
        if (fill_pool_has_workers(fp) && fill_pool_push(fp, j) == 0)
                return;
        (void)fill_chunk(fp, &j->s, j->chunk, j->writable, j->stored, j->prefetch, buf);
        if (j->t_read)
                lat_hist_add(&j->s.r->counters.fault_latency, fill_now_ns() - j->t_read);
}

static void run_job(struct fill_pool *fp, struct fill_job *j, void *buf)
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
        (void)fill_chunk(fp, &j->s, j->chunk, j->writable, j->stored, j->prefetch, buf);
        if (j->t_read)
                lat_hist_add(&r->counters.fault_latency, fill_now_ns() - j->t_read);
}

static void *worker_thread(void *arg)
{
        struct fill_worker *w = arg;
        struct fill_pool *fp = w->fp;

        pthread_mutex_lock(&fp->qlock);
        for (;;) {
                while (!fp->q_len && !fill_stopping(fp))
                        pthread_cond_wait(&fp->qcond, &fp->qlock);
                if (fill_stopping(fp))
                        break;
                struct fill_job j = fp->q[fp->q_head];
                fp->q_head = (fp->q_head + 1) % fp->q_cap;
                fp->q_len--;
                w->busy = j.s.a;
                pthread_mutex_unlock(&fp->qlock);
                run_job(fp, &j, w->buf);
                pthread_mutex_lock(&fp->qlock);
                w->busy = NULL;
                pthread_cond_broadcast(&fp->qdone);
        }
        pthread_mutex_unlock(&fp->qlock);
        return NULL;
}

void fill_pool_forget_arena(struct fill_pool *fp, struct arena *a)
{
        size_t keep = 0;

        pthread_mutex_lock(&fp->qlock);
        for (size_t i = 0; i < fp->q_len; i++) {
                struct fill_job *j = &fp->q[(fp->q_head + i) % fp->q_cap];
                if (j->s.a == a) {
                        pthread_mutex_lock(&a->lock);
                        a->state[j->chunk] = CHUNK_FREE;
                        pthread_mutex_unlock(&a->lock);
                        (void)uffd_wake(a->uffd, arena_chunk_addr(a, j->chunk), a->chunk_size);
                } else
                        fp->q[(fp->q_head + keep++) % fp->q_cap] = *j;
        }
        fp->q_len = keep;
        for (;;) {
                bool busy = false;
                for (size_t i = 0; i < fp->n_workers; i++)
                        busy |= fp->workers[i].busy == a;
                if (!busy)
                        break;
                pthread_cond_wait(&fp->qdone, &fp->qlock);
        }
        pthread_mutex_unlock(&fp->qlock);
}

/* ---- life cycle ---- */

int fill_pool_new(uint32_t max_chunk, size_t n_workers, struct fill_pool **ret)
{
        struct fill_pool *fp = calloc(1, sizeof(*fp));
        bool ok = true;

        if (!fp)
                return -ENOMEM;
        fp->max_chunk = max_chunk;
        pthread_mutex_init(&fp->qlock, NULL);
        pthread_cond_init(&fp->qcond, NULL);
        pthread_cond_init(&fp->qdone, NULL);
        fp->zero = mmap(NULL, max_chunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fp->zero == MAP_FAILED)
                fp->zero = NULL;
        if (n_workers > 0) {
                fp->n_workers = n_workers;
                fp->workers = calloc(n_workers, sizeof(*fp->workers));
                ok = fp->workers != NULL;
                for (size_t i = 0; ok && i < n_workers; i++) {
                        fp->workers[i].fp = fp;
                        fp->workers[i].buf = malloc(max_chunk);
                        ok = fp->workers[i].buf != NULL;
                }
        }
        if (!fp->zero || !ok) {
                fill_pool_free(fp);
                return -ENOMEM;
        }
        *ret = fp;
        return 0;
}

int fill_pool_start(struct fill_pool *fp)
{
        fp->stop = false;
        for (size_t i = 0; i < fp->n_workers; i++) {
                int e = pthread_create(&fp->workers[i].thread, NULL, worker_thread,
                                       &fp->workers[i]);
                if (e) {
                        fill_pool_cancel(fp);
                        fill_pool_join(fp);
                        return -e;
                }
                fp->workers[i].started = true;
        }
        return 0;
}

void fill_pool_cancel(struct fill_pool *fp)
{
        pthread_mutex_lock(&fp->qlock);
        __atomic_store_n(&fp->stop, true, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&fp->qcond);
        pthread_mutex_unlock(&fp->qlock);
}

void fill_pool_join(struct fill_pool *fp)
{
        for (size_t i = 0; i < fp->n_workers; i++)
                if (fp->workers[i].started) {
                        pthread_join(fp->workers[i].thread, NULL);
                        fp->workers[i].started = false;
                }
}

void fill_pool_free(struct fill_pool *fp)
{
        if (!fp)
                return;
        fill_pool_cancel(fp);
        fill_pool_join(fp);
        if (fp->zero)
                munmap(fp->zero, fp->max_chunk);
        for (size_t i = 0; fp->workers && i < fp->n_workers; i++)
                free(fp->workers[i].buf);
        free(fp->workers);
        free(fp->q);
        pthread_mutex_destroy(&fp->qlock);
        pthread_cond_destroy(&fp->qcond);
        pthread_cond_destroy(&fp->qdone);
        free(fp);
}
