/* residency.c: the budget and the background evictor (see residency.h). The
 * budget is re-read from the cgroup continuously; the evictor keeps
 * resident + inflight under the high watermark by evicting (evict.c) down to
 * the low one less the fills in flight, so fills find room without waiting. */
#include <assert.h>
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
#include "log.h"
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
        atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

uint64_t lat_hist_below_pow2(const uint64_t bucket[LAT_BUCKETS], unsigned k)
{
        uint64_t n = 0;

        assert(k >= 2 && k <= 62);
        /* bucket 4*lg+sub holds [(4+sub) << (lg-2), (5+sub) << (lg-2)): the
         * last one of lg = K-1 ends at 2^K */
        for (unsigned i = 0; i <= 4 * (k - 1) + 3 && i < LAT_BUCKETS; i++)
                n += bucket[i];
        return n;
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
        r->oom_fd = -1;
        r->oom_ctl_fd = -1;
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
        safe_close(r->oom_fd);
        safe_close(r->oom_ctl_fd);
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

/* v1: an eventfd the kernel signals for FILE_FD's event (cgroup.event_control
 * "EFD FD ARGS": a usage threshold, or an OOM on memory.oom_control); -1 if
 * the kernel refuses (the interval alone then drives the evictor). */
static int v1_event(const struct cgroup *cg, int file_fd, const char *args)
{
        char path[PATH_MAX], line[64];
        int efd, ctl, n;

        if (file_fd < 0)
                return -1;
        snprintf(path, sizeof(path), "%s/cgroup.event_control", cg->dir);
        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ctl = open(path, O_WRONLY | O_CLOEXEC);
        n = snprintf(line, sizeof(line), "%d %d %s", efd, file_fd, args);
        if (efd < 0 || ctl < 0 || write(ctl, line, (size_t)n) != n) {
                safe_close(ctl);
                safe_close(efd);
                return -1;
        }
        close(ctl);
        return efd;
}

static int open_at(const struct cgroup *cg, const char *file)
{
        char path[PATH_MAX];

        snprintf(path, sizeof(path), "%s/%s", cg->dir, file);
        return open(path, O_RDONLY | O_CLOEXEC);
}

void residency_track_cgroup(struct residency *r, const struct cgroup *cg, uint64_t limit,
                            uint64_t headroom)
{
        bool v1 = cg->version == CGROUP_V1;
        int fd = open_at(cg, v1 ? "memory.usage_in_bytes" : "memory.current"), ev, oom_ctl = -1,
            oom_ev = -1;
        char thr[32];

        if (v1) {
                /* usage past the budget line (limit - headroom) by half the
                 * headroom: the container's own memory grew, shrink the cache now */
                snprintf(thr, sizeof(thr), "%llu", (unsigned long long)(limit - headroom / 2));
                ev = v1_event(cg, fd, thr);
                oom_ctl = open_at(cg, "memory.oom_control");
                oom_ev = v1_event(cg, oom_ctl, "");
        } else /* memory.events signals POLLPRI when it changes (a "high" event) */
                ev = open_at(cg, "memory.events");
        pthread_mutex_lock(&r->kick_lock);
        r->cg = cg;
        r->cg_limit = limit;
        r->cg_headroom = headroom;
        safe_close(r->usage_fd);
        safe_close(r->event_fd);
        safe_close(r->oom_ctl_fd);
        safe_close(r->oom_fd);
        r->usage_fd = fd; /* -1: fall back to cgroup_read_mem() */
        r->event_fd = ev;
        r->oom_ctl_fd = oom_ctl;
        r->oom_fd = oom_ev;
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
        uint64_t usage = 0, resident, local, budget;
        struct cgroup_mem m;

        if (!r->cg)
                return;
        /* resident first: a fill finishing in between makes usage larger, not
         * smaller, so the other usage is over-estimated (the safe side). */
        resident = atomic_load(&r->resident);
        if (read_usage(r, &usage) < 0)
                return;
        /* written by the container's shims: clamped before it steers anything */
        local = live ? MIN(__atomic_load_n(live, __ATOMIC_RELAXED), r->cg_limit) : 0;
        budget = residency_budget_from(r->cg_limit, usage, resident, r->cg_headroom, local);
        /* No room at all: if page cache fills the limit (file memory, the
         * container's files), it is the kernel's to drop as the arena's
         * fills charge, so it is room too; else no fault would ever be
         * served (docs/memd.md "Resize and conversion"). Read only then:
         * memory.stat is dearer than the usage. */
        if (budget == 0 && cgroup_read_mem(r->cg, &m) == 0 && m.file > m.shmem) {
                uint64_t cache = m.file - m.shmem;
                budget = residency_budget_from(r->cg_limit, usage > cache ? usage - cache : 0,
                                               resident, r->cg_headroom, local);
        }
        atomic_store(&r->budget, budget);
}

/* Sleep until a kick, a cgroup event or the interval; drain what woke us.
 * Returns true when the cgroup reported an OOM (v1). */
static bool wait_for_work(struct residency *r)
{
        struct pollfd p[3] = {{.fd = r->wake_fd, .events = POLLIN},
                              {.fd = r->event_fd, .events = POLLIN | POLLPRI},
                              {.fd = r->oom_fd, .events = POLLIN}};
        uint64_t x;
        char buf[256];

        if (poll(p, 3, (int)r->interval_ms) <= 0) /* poll ignores fds of -1 */
                return false;
        if (p[0].revents)
                (void)!read(r->wake_fd, &x, sizeof(x));
        if (r->event_fd >= 0 && p[1].revents) {
                if (r->cg && r->cg->version == CGROUP_V2)
                        (void)!pread(r->event_fd, buf, sizeof(buf), 0); /* re-arms */
                else
                        (void)!read(r->event_fd, &x, sizeof(x));
        }
        if (r->oom_fd >= 0 && p[2].revents) {
                (void)!read(r->oom_fd, &x, sizeof(x));
                return true;
        }
        return false;
}

/* Room lent above the limit while a restarted memd awaits the container's
 * shims, a step at a time, at most this much in all. */
#define RESUME_ROOM_STEP (4ULL << 20)
#define RESUME_ROOM_MAX (32ULL << 20)

/* v1 with the OOM killer paused (container.c): a task of the container waits
 * at the limit. Evict a quarter of the cache (at least 4 MiB): the uncharge
 * wakes it. With nothing left to evict the container itself is over its
 * limit: the kernel's OOM killer decides, as it would without xmem. Not
 * while arenas are awaited after a memd restart: their pages fill the usage
 * and only their shims can hand them over, and a shim's shim.resume needs
 * memory of the cgroup too (its sendmsg got ENOMEM at the limit). So the
 * limit is raised a step (up to RESUME_ROOM_MAX) and given back once they
 * resumed (repay_room); a restarted memd used to lift the pause at once,
 * and the kernel killed a process of the container. True: look again at
 * the next interval. */
static bool relieve_oom(struct residency *r)
{
        uint64_t resident = atomic_load(&r->resident), step = MAX(resident / 4, 4ULL << 20);

        atomic_fetch_add(&r->counters.oom_waits, 1);
        if (residency_evict_to(r, resident > step ? resident - step : 0) > 0 ||
            !cgroup_under_oom(r->cg))
                return false;
        if (atomic_load(&r->awaiting) > 0 && r->lent < RESUME_ROOM_MAX &&
            cgroup_set_limit(r->cg, r->cg_limit + r->lent + RESUME_ROOM_STEP) == 0) {
                r->lent += RESUME_ROOM_STEP;
                log_full_errno(r->lent == RESUME_ROOM_STEP ? LOG_INFO : LOG_DEBUG, 0, "cgroup %s: at its limit before its processes resumed: %llu MiB lent "
                         "above the limit until they have",
                         r->cg->dir, (unsigned long long)(r->lent >> 20));
                return true;
        }
        if (cgroup_set_oom_pause(r->cg, false) == 0) {
                r->oom_released = true;
                atomic_fetch_add(&r->counters.oom_released, 1);
        }
        return false;
}

/* The room lent by relieve_oom back, once every awaited shim resumed and
 * the usage is under the limit again (the evictor's doing). */
static void repay_room(struct residency *r)
{
        uint64_t usage;

        if (!r->lent || atomic_load(&r->awaiting) > 0 || read_usage(r, &usage) < 0 ||
            usage > r->cg_limit || cgroup_set_limit(r->cg, r->cg_limit) < 0)
                return;
        log_info("cgroup %s: its processes resumed, the %llu MiB lent given back", r->cg->dir,
                 (unsigned long long)(r->lent >> 20));
        r->lent = 0;
}

static void *residency_thread(void *arg)
{
        struct residency *r = arg;
        bool oom = false, again = false;

        while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
                uint64_t budget, inflight, low;

                residency_refresh(r);
                if (oom || (r->oom_released && !cgroup_under_oom(r->cg))) {
                        if (r->oom_released && cgroup_set_oom_pause(r->cg, true) == 0)
                                r->oom_released = false; /* the kernel settled it */
                        else if (oom)
                                again = relieve_oom(r);
                        oom = false;
                        continue;
                }
                budget = atomic_load(&r->budget);
                inflight = atomic_load(&r->inflight);
                if (atomic_load(&r->resident) + inflight > residency_high(budget)) {
                        /* room for every fill in flight below the low watermark */
                        low = residency_low(budget);
                        if (residency_evict_to(r, low > inflight ? low - inflight : 0) > 0)
                                continue;
                }
                repay_room(r);
                oom = wait_for_work(r);
                if (!oom && again) /* an OOM left for the awaited arenas */
                        oom = cgroup_under_oom(r->cg);
                again = again && oom;
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
