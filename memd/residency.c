/* residency.c: the budget and the background evictor (see residency.h). The
 * budget is re-read from the cgroup continuously; the evictor keeps
 * resident + inflight under the high watermark by evicting (evict.c) down to
 * the low one less the fills in flight, so fills find room without waiting. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cgroup.h"
#include "macro.h"
#include "residency.h"

void lat_hist_add(struct lat_hist *h, uint64_t ns)
{
        unsigned idx = 0;

        if (ns >= 4) {
                unsigned lg = 63 - (unsigned)__builtin_clzll(ns);
                idx = lg * 4 + (unsigned)((ns >> (lg - 2)) & 3);
        }
        atomic_fetch_add_explicit(&h->bucket[MIN(idx, LAT_BUCKETS - 1)], 1, memory_order_relaxed);
}

static uint64_t bucket_upper(unsigned idx)
{
        unsigned lg = idx / 4, sub = idx % 4;

        if (lg < 2)
                return 4;
        if (lg >= 62)
                return UINT64_MAX;
        return ((uint64_t)(4 + sub + 1)) << (lg - 2);
}

uint64_t lat_hist_count(const struct lat_hist *h)
{
        uint64_t total = 0;

        for (unsigned i = 0; i < LAT_BUCKETS; i++)
                total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        return total;
}

uint64_t lat_hist_quantile(const struct lat_hist *h, double q)
{
        uint64_t total = lat_hist_count(h), seen = 0, want;

        if (total == 0)
                return 0;
        want = (uint64_t)(q * (double)total);
        if (want >= total)
                want = total - 1;
        for (unsigned i = 0; i < LAT_BUCKETS; i++) {
                seen += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
                if (seen > want)
                        return bucket_upper(i);
        }
        return UINT64_MAX;
}

uint64_t residency_budget_from(uint64_t limit, uint64_t usage, uint64_t resident, uint64_t headroom,
                               uint64_t local)
{
        /* usage includes the arena pages (UFFDIO_COPY charges the faulting cgroup). */
        uint64_t other = usage > resident ? usage - resident : 0;

        other = MAX(other, local);
        if (limit == UINT64_MAX)
                return UINT64_MAX;
        if (other >= limit || headroom >= limit - other)
                return 0;
        return limit - other - headroom;
}

int residency_new(uint64_t budget, struct residency **ret)
{
        struct residency *r = calloc(1, sizeof(*r));

        if (!r)
                return -ENOMEM;
        pthread_mutex_init(&r->evict_lock, NULL);
        pthread_mutex_init(&r->kick_lock, NULL);
        atomic_store(&r->budget, budget);
        r->usage_fd = -1;
        r->event_fd = -1;
        r->interval_ms = 5;
        r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r->wake_fd < 0) {
                int e = -errno;
                residency_free(r);
                return e;
        }
        *ret = r;
        return 0;
}

void residency_free(struct residency *r)
{
        if (!r)
                return;
        residency_stop(r);
        safe_close(r->usage_fd);
        safe_close(r->event_fd);
        safe_close(r->wake_fd);
        free(r->arenas);
        free(r->buf);
        pthread_mutex_destroy(&r->evict_lock);
        pthread_mutex_destroy(&r->kick_lock);
        free(r);
}

int residency_add_arena(struct residency *r, struct arena *a)
{
        struct arena **v;
        int ret;

        pthread_mutex_lock(&r->evict_lock);
        ret = residency_ensure_buf(r, a->chunk_size);
        if (ret == 0) {
                v = realloc(r->arenas, (r->n_arenas + 1) * sizeof(*v));
                if (v) {
                        r->arenas = v;
                        r->arenas[r->n_arenas++] = a;
                } else
                        ret = -ENOMEM;
        }
        pthread_mutex_unlock(&r->evict_lock);
        return ret;
}

void residency_remove_arena(struct residency *r, struct arena *a)
{
        pthread_mutex_lock(&r->evict_lock);
        for (size_t i = 0; i < r->n_arenas; i++)
                if (r->arenas[i] == a) {
                        r->arenas[i] = r->arenas[--r->n_arenas];
                        atomic_fetch_sub(&r->resident, arena_resident_bytes(a));
                        break;
                }
        r->arena_hand = 0;
        pthread_mutex_unlock(&r->evict_lock);
}

void residency_set_budget(struct residency *r, uint64_t bytes)
{
        atomic_store(&r->budget, bytes);
        residency_kick(r);
}

int residency_make_room(struct residency *r, uint64_t need)
{
        uint64_t budget, low;
        int64_t n;

        if (atomic_load(&r->resident) + need <= residency_high(atomic_load(&r->budget)))
                return 0; /* the evictor keeps this true; the usual case */
        residency_refresh(r);
        budget = atomic_load(&r->budget);
        if (atomic_load(&r->resident) + need <= budget) {
                residency_kick(r);
                return 0;
        }
        atomic_fetch_add(&r->counters.sync_evictions, 1);
        low = residency_low(budget);
        n = residency_evict_to(r, low > need ? low - need : 0);
        return n < 0 ? (int)n : 0;
}

/* v1: an eventfd signalled when usage crosses THRESHOLD (cgroup.event_control);
 * v2: memory.events, which signals POLLPRI when it changes (a "high" event
 * when the container's own growth passes memory.high). -1 if neither works:
 * the interval alone drives the evictor. */
static int open_cgroup_event(const struct cgroup *cg, int usage_fd, uint64_t threshold)
{
        char path[PATH_MAX], line[64];
        int efd, ctl, n;

        if (cg->version == CGROUP_V2) {
                snprintf(path, sizeof(path), "%s/memory.events", cg->dir);
                return open(path, O_RDONLY | O_CLOEXEC);
        }
        if (usage_fd < 0)
                return -1;
        snprintf(path, sizeof(path), "%s/cgroup.event_control", cg->dir);
        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ctl = open(path, O_WRONLY | O_CLOEXEC);
        n = snprintf(line, sizeof(line), "%d %d %llu", efd, usage_fd,
                     (unsigned long long)threshold);
        if (efd < 0 || ctl < 0 || write(ctl, line, (size_t)n) != n) {
                safe_close(ctl);
                safe_close(efd);
                return -1;
        }
        close(ctl);
        return efd;
}

void residency_track_cgroup(struct residency *r, const struct cgroup *cg, uint64_t limit,
                            uint64_t headroom)
{
        char path[PATH_MAX];
        int fd, ev;

        snprintf(path, sizeof(path), "%s/%s", cg->dir,
                 cg->version == CGROUP_V1 ? "memory.usage_in_bytes" : "memory.current");
        fd = open(path, O_RDONLY | O_CLOEXEC);
        /* usage past the budget line (limit - headroom) by half the headroom:
         * the container's own memory grew, the cache must shrink now */
        ev = open_cgroup_event(cg, fd, limit - headroom / 2);
        pthread_mutex_lock(&r->kick_lock);
        r->cg = cg;
        r->cg_limit = limit;
        r->cg_headroom = headroom;
        safe_close(r->usage_fd);
        safe_close(r->event_fd);
        r->usage_fd = fd; /* -1: fall back to cgroup_read_mem() */
        r->event_fd = ev;
        pthread_mutex_unlock(&r->kick_lock);
        residency_refresh(r);
        residency_kick(r);
}

void residency_set_local_live(struct residency *r, const uint64_t *live)
{
        __atomic_store_n(&r->cg_local_live, live, __ATOMIC_RELEASE);
        residency_refresh(r);
}

void residency_kick(struct residency *r)
{
        uint64_t one = 1;

        (void)!write(r->wake_fd, &one, sizeof(one));
}

static int read_usage(struct residency *r, uint64_t *ret)
{
        char buf[32];
        ssize_t n;
        struct cgroup_mem m;

        if (r->usage_fd < 0) {
                int e = cgroup_read_mem(r->cg, &m);
                if (e < 0)
                        return e;
                *ret = m.usage;
                return 0;
        }
        n = pread(r->usage_fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
                return n < 0 ? -errno : -EIO;
        buf[n] = 0;
        *ret = strtoull(buf, NULL, 10);
        return 0;
}

void residency_refresh(struct residency *r)
{
        const uint64_t *live = __atomic_load_n(&r->cg_local_live, __ATOMIC_ACQUIRE);
        uint64_t usage = 0, resident;

        if (!r->cg)
                return;
        /* resident first: a fill finishing in between makes usage larger, not
         * smaller, so the other usage is over-estimated (the safe side). */
        resident = atomic_load(&r->resident);
        if (read_usage(r, &usage) < 0)
                return;
        atomic_store(&r->budget,
                     residency_budget_from(r->cg_limit, usage, resident, r->cg_headroom,
                                           live ? __atomic_load_n(live, __ATOMIC_RELAXED) : 0));
}

/* Sleep until a kick, a cgroup event or the interval; drain what woke us. */
static void wait_for_work(struct residency *r)
{
        struct pollfd p[2] = {{.fd = r->wake_fd, .events = POLLIN},
                              {.fd = r->event_fd, .events = POLLIN | POLLPRI}};
        uint64_t x;
        char buf[256];

        if (poll(p, r->event_fd >= 0 ? 2 : 1, (int)r->interval_ms) <= 0)
                return;
        if (p[0].revents)
                (void)!read(r->wake_fd, &x, sizeof(x));
        if (r->event_fd >= 0 && p[1].revents) {
                if (r->cg && r->cg->version == CGROUP_V2)
                        (void)!pread(r->event_fd, buf, sizeof(buf), 0); /* re-arms */
                else
                        (void)!read(r->event_fd, &x, sizeof(x));
        }
}

static void *residency_thread(void *arg)
{
        struct residency *r = arg;

        while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
                uint64_t budget, inflight, low;

                residency_refresh(r);
                budget = atomic_load(&r->budget);
                inflight = atomic_load(&r->inflight);
                if (atomic_load(&r->resident) + inflight > residency_high(budget)) {
                        /* room for every fill in flight below the low watermark */
                        low = residency_low(budget);
                        if (residency_evict_to(r, low > inflight ? low - inflight : 0) > 0)
                                continue;
                }
                wait_for_work(r);
        }
        return NULL;
}

int residency_start(struct residency *r)
{
        int e;

        if (r->running)
                return 0;
        __atomic_store_n(&r->stop, false, __ATOMIC_RELEASE);
        e = pthread_create(&r->thread, NULL, residency_thread, r);
        if (e)
                return -e;
        r->running = true;
        return 0;
}

void residency_stop(struct residency *r)
{
        if (!r->running)
                return;
        __atomic_store_n(&r->stop, true, __ATOMIC_RELEASE);
        residency_kick(r);
        pthread_join(r->thread, NULL);
        r->running = false;
}
