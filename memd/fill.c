/* fill.c: fills and the fill workers (see fill.h). Page states and the
 * rules for who moves them are in pages.h and docs/pager.md. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fill.h"
#include "log.h"
#include "macro.h"
#include "pages.h"
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
        uint32_t max_bytes;
        bool stop;
        /* Fill queue: demand jobs at the front, prefetch at the back (a ring). */
        pthread_mutex_t qlock;
        pthread_cond_t qcond, qdone;
        struct fill_job *q;
        size_t q_cap, q_head, q_len;
        struct fill_worker *workers;
        size_t n_workers;
        void *zero; /* max_bytes of zeros (read-only anonymous mapping) */
        uint64_t give_up_ns; /* a demand fill's store unreachable this long: SIGBUS */
        atomic_bool unreachable; /* an outage is going on (logged once) */
};

/* Retries of a demand fill whose store fails: 10 ms, doubling up to 200 ms
 * (short enough that pager_remove's wait for the fill stays short). */
#define FILL_BACKOFF_MIN_MS 10U
#define FILL_BACKOFF_MAX_MS 200U

static bool fill_stopping(struct fill_pool *fp)
{
        return __atomic_load_n(&fp->stop, __ATOMIC_RELAXED);
}

bool fill_is_cheap(const struct fill_job *j)
{
        return !j->stored || store_has_direct(j->s.a->store);
}

struct copy_ctx {
        struct fill_job *j;
        const void *zero;
        uint64_t addr; /* where the direct access starts */
        int err;       /* the UFFDIO_COPY's error, not the store's */
};

/* One piece of a direct fill: UFFDIO_COPY straight from the store's memory
 * (or zeros where it holds none), write-protected like every install (see
 * finish); one wake for the whole run comes later. */
static int copy_piece(void *ctx, uint64_t at, void *mem, uint64_t len)
{
        struct copy_ctx *c = ctx;
        uint64_t d = 0;
        int r = uffd_copy(c->j->s.a->uffd, c->addr + at, mem ? mem : c->zero, len, true, true, &d,
                          NULL);

        c->j->done += d;
        if (r < 0)
                c->err = r;
        return r;
}

/* Get the run's data into BUF over the wire, once per job. */
static int fetch(struct fill_job *j, void *buf)
{
        struct arena *a = j->s.a;
        int r = store_fetch(a->store, j->first * a->chunk_size, buf, fill_job_bytes(j));

        if (r >= 0)
                j->fetched = true;
        return r;
}

/* The store failed J (an appliance restarting, or gone). A demand fill
 * waits and retries: 0 after the backoff (*BACKOFF_MS, doubled), -ETIMEDOUT
 * once it has failed for the pool's bound since *SINCE (set at the first
 * failure). A prefetch, a stopping pool or a removed arena give up: -EIO. */
static int store_failed(struct fill_pool *fp, struct fill_job *j, int err, uint64_t *since,
                        unsigned *backoff_ms)
{
        uint64_t now = fill_now_ns(), left;

        atomic_fetch_add(&j->s.r->counters.store_errors, 1);
        if (j->prefetch || fill_stopping(fp) || arena_gone(j->s.a))
                return -EIO;
        if (!*since) {
                *since = now;
                if (!atomic_exchange(&fp->unreachable, true))
                        log_warning("arena at 0x%llx: store failed (%s): faults wait, retried "
                                    "for up to %llu ms",
                                    (unsigned long long)j->s.a->base, strerror(-err),
                                    (unsigned long long)(fp->give_up_ns / 1000000));
        }
        if (now - *since >= fp->give_up_ns)
                return -ETIMEDOUT;
        left = (fp->give_up_ns - (now - *since)) / 1000;
        usleep((useconds_t)MIN((uint64_t)*backoff_ms * 1000, left));
        *backoff_ms = MIN(*backoff_ms * 2, FILL_BACKOFF_MAX_MS);
        return 0;
}

/* The end of a fill whose store stayed unreachable past the bound: what was
 * installed stays, the rest is poisoned (every thread that touches it gets
 * SIGBUS, never a zero page) and goes FREE; the reason is logged. */
static int give_up(struct fill_pool *fp, struct fill_job *j, uint64_t since)
{
        struct arena *a = j->s.a;
        struct residency *res = j->s.r;
        uint64_t len = fill_job_bytes(j), addr = arena_chunk_addr(a, j->first);
        int r;

        /* an evicted page keeps a write-protect marker (it was protected
         * before the punch), and the kernel poisons only empty entries */
        (void)uffd_writeprotect(a->uffd, addr + j->done, len - j->done, false, true);
        r = uffd_poison(a->uffd, addr + j->done, len - j->done);

        if (r == 0 || r == -ESRCH)
                log_error("arena at 0x%llx: store unreachable for %llu ms: SIGBUS to the threads "
                          "that access [0x%llx, 0x%llx)",
                          (unsigned long long)a->base,
                          (unsigned long long)((fill_now_ns() - since) / 1000000),
                          (unsigned long long)(addr + j->done), (unsigned long long)(addr + len));
        else /* no UFFD_FEATURE_POISON (Linux < 6.6): they fault again and wait again */
                log_error("arena at 0x%llx: store unreachable for %llu ms; cannot poison "
                          "[0x%llx, 0x%llx): %s: the faults wait on",
                          (unsigned long long)a->base,
                          (unsigned long long)((fill_now_ns() - since) / 1000000),
                          (unsigned long long)(addr + j->done), (unsigned long long)(addr + len),
                          strerror(-r));
        pthread_mutex_lock(&a->lock);
        for (uint64_t c = j->first; c < j->first + j->n; c++)
                if ((c - j->first) * a->chunk_size < j->done)
                        pages_installed(a, c, j->writable, true);
                else
                        pages_given_back(a, c);
        pthread_mutex_unlock(&a->lock);
        (void)uffd_wake(a->uffd, addr, len);
        atomic_fetch_add(&res->resident, j->done);
        atomic_fetch_sub(&res->inflight, len);
        atomic_store(&fp->unreachable, false); /* the next outage is logged again */
        return -EIO;
}

/* One attempt to install the rest of J (from J->done on). *RET_STORE_ERR:
 * the store failed (not the copy into the arena). */
static int install(struct fill_pool *fp, struct fill_job *j, void *buf, bool may_fetch,
                   bool *ret_store_err)
{
        struct arena *a = j->s.a;
        uint64_t len = fill_job_bytes(j), addr = arena_chunk_addr(a, j->first);
        const char *src = fp->zero;
        uint64_t d = 0;
        int r;

        if (j->stored && !j->fetched) {
                struct copy_ctx c = {j, fp->zero, addr + j->done, 0};
                r = store_direct(a->store, j->first * a->chunk_size + j->done, len - j->done, false,
                                 copy_piece, &c);
                if (r != -EOPNOTSUPP) {
                        *ret_store_err = r < 0 && c.err == 0;
                        return r;
                }
                if (!may_fetch)
                        return -EAGAIN;
                r = fetch(j, buf);
                if (r < 0) {
                        *ret_store_err = true;
                        return r;
                }
        }
        if (j->fetched)
                src = buf;
        r = uffd_copy(a->uffd, addr + j->done, src + j->done, len - j->done, true, true, &d, NULL);
        j->done += d;
        return r;
}

/* The end of a fill: states, counters, one wake over the run. */
static int finish(struct fill_job *j, int r)
{
        struct arena *a = j->s.a;
        struct residency *res = j->s.r;
        uint64_t len = fill_job_bytes(j);

        if (r < 0 && j->done == 0) {
                fill_give_back(j);
                return r;
        }
        pthread_mutex_lock(&a->lock);
        /* Partly installed (the process died meanwhile) counts as resident so
         * the pages are punched with the run. */
        for (uint64_t c = j->first; c < j->first + j->n; c++)
                pages_installed(a, c, j->writable, !j->prefetch);
        /* A FILLING page is never writable: a write must not land before the
         * page is DIRTY, or a fork snapshot that passed it over as FILLING
         * misses a write made before its cut. So every run is installed
         * protected and a writable one is un-protected here, once DIRTY, under
         * the lock (an evictor that picks it later protects it first); the
         * un-protect also wakes the run. */
        bool woken = j->writable && uffd_writeprotect(a->uffd, arena_chunk_addr(a, j->first), len,
                                                      false, false) == 0;
        pthread_mutex_unlock(&a->lock);
        /* Always wake after the state change: a thread that faulted while the
         * run was FILLING (a write to a page this copy had installed
         * protected, too) was told to wait for the owner. A failed un-protect
         * leaves DIRTY pages protected: a write faults and un-protects. */
        if (!woken)
                (void)uffd_wake(a->uffd, arena_chunk_addr(a, j->first), len);
        atomic_fetch_add(&res->resident, len);
        atomic_fetch_sub(&res->inflight, len);
        if (!j->stored)
                atomic_fetch_add(&res->counters.zero_filled_bytes, len);
        else
                atomic_fetch_add(&res->counters.fetched_bytes, len);
        if (j->prefetch)
                atomic_fetch_add(&res->counters.prefetched_bytes, len);
        if (atomic_load(&res->resident) + atomic_load(&res->inflight) >
            residency_high(atomic_load(&res->budget)))
                residency_kick(res);
        return r;
}

int fill_run(struct fill_pool *fp, struct fill_job *j, void *buf, bool may_evict)
{
        struct residency *res = j->s.r;
        uint64_t len = fill_job_bytes(j), since = 0;
        unsigned backoff_ms = FILL_BACKOFF_MIN_MS;
        int r = 0;

        if (may_evict && !j->prefetch)
                (void)residency_make_room(res, len - j->done); /* only at the hard limit */
        while (j->done < len) {
                bool store_err = false;

                r = install(fp, j, buf, may_evict, &store_err);
                if (store_err) {
                        if (!may_evict)
                                return -EAGAIN; /* the reader never waits: a worker retries */
                        r = store_failed(fp, j, r, &since, &backoff_ms);
                        if (r == -ETIMEDOUT)
                                return give_up(fp, j, since);
                        if (r == 0)
                                continue;
                        break;
                }
                if (since && atomic_exchange(&fp->unreachable, false))
                        log_info("arena at 0x%llx: store answers again after %llu ms",
                                 (unsigned long long)j->s.a->base,
                                 (unsigned long long)((fill_now_ns() - since) / 1000000));
                since = 0;
                if (r != -ENOMEM)
                        break;
                /* At the cgroup limit: evict now and retry; never give the fault up
                 * (nor a prefetch half done: its other pages would read as holes). */
                atomic_fetch_add(&res->counters.enomem_retries, 1);
                if (!may_evict)
                        return -EAGAIN;
                if (fill_stopping(fp) || arena_gone(j->s.a))
                        break;
                uint64_t resident = atomic_load(&res->resident), step = MAX(len, 256ULL << 10);
                if (residency_evict_to(res, resident > step ? resident - step : 0) < 0)
                        usleep(1000); /* nothing evictable: other usage must shrink */
        }
        if (r == -EAGAIN)
                return r;
        return finish(j, j->done == len ? 0 : r < 0 ? r : -EIO);
}

void fill_give_back(struct fill_job *j)
{
        struct arena *a = j->s.a;

        pthread_mutex_lock(&a->lock);
        for (uint64_t c = j->first; c < j->first + j->n; c++)
                pages_given_back(a, c);
        pthread_mutex_unlock(&a->lock);
        (void)uffd_wake(a->uffd, arena_chunk_addr(a, j->first), fill_job_bytes(j));
        atomic_fetch_sub(&j->s.r->inflight, fill_job_bytes(j));
}

/* ---- the fill queue ---- */

/* Queue a job: demand at the front, prefetch at the back. */
static int fill_pool_push(struct fill_pool *fp, const struct fill_job *j)
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

static void run_job(struct fill_pool *fp, struct fill_job *j, void *buf)
{
        struct residency *r = j->s.r;

        if (j->prefetch && atomic_load(&r->resident) + atomic_load(&r->inflight) >
                               residency_high(atomic_load(&r->budget))) {
                fill_give_back(j); /* prefetch never evicts */
                return;
        }
        (void)fill_run(fp, j, buf, true);
        if (j->t_read)
                lat_hist_add(&r->counters.fault_latency, fill_now_ns() - j->t_read);
}

void fill_pool_dispatch(struct fill_pool *fp, struct fill_job *j)
{
        if (fp->n_workers > 0 && fill_pool_push(fp, j) == 0)
                return;
        fill_give_back(j); /* the faulting threads refault and try again */
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

void fill_pool_promote(struct fill_pool *fp, struct arena *a, uint64_t chunk)
{
        pthread_mutex_lock(&fp->qlock);
        for (size_t i = 0; i < fp->q_len; i++) {
                size_t at = (fp->q_head + i) % fp->q_cap;
                struct fill_job j = fp->q[at];
                if (j.s.a != a || chunk < j.first || chunk >= j.first + j.n || !j.prefetch)
                        continue;
                /* move it to the front: a thread waits on it now */
                for (size_t k = i; k > 0; k--)
                        fp->q[(fp->q_head + k) % fp->q_cap] =
                            fp->q[(fp->q_head + k - 1) % fp->q_cap];
                fp->q[fp->q_head] = j;
                break;
        }
        pthread_mutex_unlock(&fp->qlock);
}

void fill_pool_forget_arena(struct fill_pool *fp, struct arena *a)
{
        size_t keep = 0;

        pthread_mutex_lock(&fp->qlock);
        for (size_t i = 0; i < fp->q_len; i++) {
                struct fill_job *j = &fp->q[(fp->q_head + i) % fp->q_cap];
                if (j->s.a == a)
                        fill_give_back(j);
                else
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

void fill_pool_set_give_up(struct fill_pool *fp, unsigned ms)
{
        fp->give_up_ns = (uint64_t)(ms ?: FILL_GIVE_UP_DEFAULT_MS) * 1000000ULL;
}

int fill_pool_new(uint32_t max_bytes, size_t n_workers, struct fill_pool **ret)
{
        struct fill_pool *fp = calloc(1, sizeof(*fp));
        bool ok = true;

        if (!fp)
                return -ENOMEM;
        fp->max_bytes = max_bytes;
        fill_pool_set_give_up(fp, 0);
        pthread_mutex_init(&fp->qlock, NULL);
        pthread_cond_init(&fp->qcond, NULL);
        pthread_cond_init(&fp->qdone, NULL);
        fp->zero = mmap(NULL, max_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fp->zero == MAP_FAILED)
                fp->zero = NULL;
        if (n_workers > 0) {
                fp->n_workers = n_workers;
                fp->workers = calloc(n_workers, sizeof(*fp->workers));
                ok = fp->workers != NULL;
                for (size_t i = 0; ok && i < n_workers; i++) {
                        fp->workers[i].fp = fp;
                        fp->workers[i].buf = malloc(max_bytes);
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
                int e =
                    pthread_create(&fp->workers[i].thread, NULL, worker_thread, &fp->workers[i]);
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
                munmap(fp->zero, fp->max_bytes);
        for (size_t i = 0; fp->workers && i < fp->n_workers; i++)
                free(fp->workers[i].buf);
        free(fp->workers);
        free(fp->q);
        pthread_mutex_destroy(&fp->qlock);
        pthread_cond_destroy(&fp->qcond);
        pthread_cond_destroy(&fp->qdone);
        free(fp);
}
