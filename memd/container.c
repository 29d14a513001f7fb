/* container.c: attached containers and their processes' arenas (container.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-event.h>

#include "arena.h"
#include "container.h"
#include "errno-name.h"
#include "filedir.h"
#include "log.h"
#include "macro.h"
#include "pages.h"
#include "pager.h"
#include "residency.h"
#include "state.h"
#include "store.h"
#include "transport/transport.h"

uint64_t container_headroom(uint64_t local_limit)
{
        return MIN(MAX(local_limit / 8, 4ULL << 20), 64ULL << 20);
}

/* CG_DIR must be a directory strictly below MOUNT; *RET_REL is the rest. */
static int cgroup_relative(const char *cg_dir, const char *mount, char **ret_rel,
                           struct xmem_error *err)
{
        size_t n = strlen(mount);
        struct stat st;
        char *rel;

        if (strncmp(cg_dir, mount, n) != 0 || cg_dir[n] != '/' || cg_dir[n + 1] == 0)
                return xmem_error_set(err, -EINVAL,
                                      "params.cgroup: %s is not a cgroup below the memory "
                                      "hierarchy %s", cg_dir, mount);
        if (stat(cg_dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return xmem_error_set(err, -ENOENT, "params.cgroup: %s: no such cgroup", cg_dir);
        rel = strdup(cg_dir + n);
        if (!rel)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        for (size_t l = strlen(rel); l > 1 && rel[l - 1] == '/'; l--)
                rel[l - 1] = 0;
        *ret_rel = rel;
        return 0;
}

static int container_start(struct container *c, const struct pager_opts *pager_opts,
                           struct xmem_error *err)
{
        struct cgroup_mem m = {};
        int r;

        r = cgroup_set_limit(c->cg, c->local_limit);
        if (r < 0)
                return xmem_error_set(err, r, "params.cgroup: writing the limit to %s: %s%s",
                                      c->cgroup_dir, strerror(-r),
                                      r == -EBUSY ? " (usage above the new limit)" : "");
        r = acct_create(c, err);
        if (r < 0)
                return r;
        /* v1: a task at the limit waits for memd's eviction instead of being
         * OOM-killed (the residency manager gives the OOM killer the container
         * back when nothing is left to evict); v2 throttles at memory.high. */
        (void)cgroup_set_oom_pause(c->cg, true);
        (void)cgroup_read_mem(c->cg, &m);
        r = residency_new(residency_budget_from(c->local_limit, m.usage, 0, c->headroom, 0),
                          &c->residency);
        if (r < 0)
                return xmem_error_set(err, r, "residency manager: %s", strerror(-r));
        /* No share is reserved up front: the container's own memory and the
         * cache of external pages share the local limit. The shims charge a
         * local allocation to the accounting page before touching it, so the
         * budget shrinks as soon as the container's own memory grows. */
        residency_set_local_live(c->residency, &c->acct->h.local_bytes);
        residency_track_cgroup(c->residency, c->cg, c->local_limit, c->headroom);
        /* an OOM is not the container's own until memd knows every process
         * it serves: container_ready, once the caller has re-adopted them */
        atomic_store(&c->residency->awaiting, 1);
        r = residency_start(c->residency);
        if (r < 0)
                return xmem_error_set(err, r, "residency manager: %s", strerror(-r));
        /* Its own fault reader and fill workers: one container's slow
         * appliance or thrashing never delays another's faults. */
        r = pager_new(pager_opts, &c->pager);
        if (r >= 0)
                r = pager_start(c->pager);
        if (r < 0)
                return xmem_error_set(err, r, "pager: %s", strerror(-r));
        return 0;
}

int container_new(const struct api_attach *a, enum cgroup_version version, const char *mount,
                  struct xmem_transport **transports, size_t n_transports, uint32_t stripe,
                  const struct pager_opts *pager_opts, struct container **ret,
                  struct xmem_error *err)
{
        struct container *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        c->acct_fd = c->sock_dirfd = c->sock_fd = c->file_dirfd = -1;
        c->local_limit = c->applied_limit = a->local_limit;
        c->external = ALIGN_UP(a->external, (uint64_t)stripe * n_transports);
        c->arena_size =
            MAX(c->external, ALIGN_UP(a->external_max, (uint64_t)stripe * n_transports));
        c->quota.limit = c->external / ARENA_PAGE_SIZE;
        c->local_alloc_limit = a->local_alloc_limit;
        c->headroom = container_headroom(a->local_limit);
        c->policy = a->policy;
        c->transports = transports;
        c->n_transports = n_transports;
        c->chunk_size = stripe;
        c->id = strdup(a->id);
        c->cgroup_dir = strdup(a->cgroup);
        c->appliance = a->appliance ? strdup(a->appliance) : NULL;
        c->file_dir = a->file_dir ? strdup(a->file_dir) : NULL;
        if (!c->id || !c->cgroup_dir || (a->appliance && !c->appliance) ||
            (a->file_dir && !c->file_dir)) {
                container_free(c);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        if (a->file_dir && (r = filedir_open(a->file_dir, &c->file_dirfd, err)) < 0) {
                container_free(c);
                return r;
        }
        r = cgroup_relative(a->cgroup, mount, &c->cgroup_path, err);
        if (r >= 0 && (r = cgroup_new(version, mount, c->cgroup_path, &c->cg)) < 0)
                xmem_error_set(err, r, "params.cgroup: %s", strerror(-r));
        if (r >= 0)
                r = container_start(c, pager_opts, err);
        if (r < 0) {
                container_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void container_free(struct container *c)
{
        if (!c)
                return;
        worker_stop(c); /* what it has queued is done first */
        while (c->processes) {
                struct process *p = c->processes;
                c->processes = p->next;
                sd_event_source_disable_unref(p->exit_src);
                process_teardown(c, p);
        }
        restore_plan_free(c->restore);
        free(c->restore_name);
        pager_free(c->pager);
        residency_free(c->residency);
        if (c->cg && !c->oom_unpaused) /* also after an attach that failed half way */
                (void)cgroup_set_oom_pause(c->cg, false);
        acct_free(c);
        cgroup_free(c->cg);
        free(c->id);
        free(c->cgroup_dir);
        free(c->cgroup_path);
        free(c->appliance);
        free(c->file_dir);
        safe_close(c->file_dirfd);
        free(c);
}

bool container_same(const struct container *c, const struct api_attach *a)
{
        const char *app = a->appliance ? a->appliance : "";

        return strcmp(c->cgroup_dir, a->cgroup) == 0 && c->local_limit == a->local_limit &&
               c->external == ALIGN_UP(a->external, (uint64_t)c->chunk_size * c->n_transports) &&
               c->arena_size == MAX(c->external, ALIGN_UP(a->external_max, (uint64_t)c->chunk_size *
                                                                               c->n_transports)) &&
               c->local_alloc_limit == a->local_alloc_limit && c->policy.kind == a->policy.kind &&
               c->policy.ratio == a->policy.ratio &&
               strcmp(c->appliance ? c->appliance : "", app) == 0 &&
               strcmp(c->file_dir ? c->file_dir : "", a->file_dir ? a->file_dir : "") == 0;
}

bool container_owns_path(const struct container *c, const char *path)
{
        size_t n = strlen(c->cgroup_path);

        return strncmp(path, c->cgroup_path, n) == 0 && (path[n] == 0 || path[n] == '/');
}

int container_add_process(struct container *c, pid_t pid, int pidfd, struct store *from_store,
                          const uint8_t *written, uint64_t size, struct process **ret,
                          struct xmem_error *err)
{
        _cleanup_free_ struct process *p = calloc(1, sizeof(*p));
        struct store *store = from_store;
        int r;

        if (!p) {
                reaper_queue_store(c, from_store);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        if (!store && c->n_transports == 0)
                return xmem_error_set(err, -ENODEV, "no appliance to hold an arena");
        if (!store) {
                r = store_xmem_new(c->transports, c->n_transports, size, c->chunk_size, &store,
                                   err);
                if (r < 0)
                        return xmem_error_prefix(err, "arena of %llu bytes",
                                                 (unsigned long long)size);
        }
        r = arena_new(size, ARENA_PAGE_SIZE, store, !from_store, &p->arena);
        if (r < 0) {
                reaper_queue_store(c, store);
                return xmem_error_set(err, r, "arena memfd: %s", strerror(-r));
        }
        /* the container's external quota counts its arenas' written pages
         * (pages.h); a fork clone's copies of the parent's are not counted */
        p->arena->quota = &c->quota;
        p->arena->pidfd = pidfd;
        for (uint64_t i = 0; written && i < p->arena->n_chunks; i++)
                if (written[i / 8] & (1u << (i % 8)))
                        p->arena->charge[i] = PAGE_INHERITED;
        p->store = store;
        p->pid = pid;
        p->pidfd = pidfd;
        p->forked = from_store != NULL;
        p->container = c;
        r = container_process_record(p, err);
        if (r < 0) {
                safe_close(pidfd);
                arena_free(p->arena);
                reaper_queue_store(c, store);
                return r;
        }
        acct_take_slot(c, p);
        p->next = c->processes;
        c->processes = p;
        c->n_processes++;
        /* on disk before the process gets its arena: a restarted memd finds it */
        if (c->saved && (r = state_save(c->manager, c, err)) < 0) {
                container_remove_process(c, p);
                p = NULL; /* freed there */
                return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

int container_process_record(struct process *p, struct xmem_error *err)
{
        struct stat st;
        int r;

        r = state_proc_start_time(p->pid, &p->start_time);
        if (r < 0)
                return xmem_error_set(err, r, "process %d: start time: %s", (int)p->pid,
                                      strerror(-r));
        if (p->arena) {
                if (fstat(p->arena->memfd, &st) < 0)
                        return xmem_error_set(err, negative_errno(), "arena memfd: %m");
                p->memfd_ino = st.st_ino;
        }
        return 0;
}

struct process *container_find_process(struct container *c, pid_t pid)
{
        for (struct process *p = c->processes; p; p = p->next)
                if (p->pid == pid)
                        return p;
        return NULL;
}

int container_register_prepare(struct process *p, int uffd, uint64_t base, uint64_t size,
                               struct xmem_error *err)
{
        int r;

        if (p->registered || p->registering) {
                safe_close(uffd);
                return xmem_error_set(err, -EBUSY, "already registered");
        }
        if (size != p->arena->size) {
                safe_close(uffd);
                return xmem_error_set(err, -EINVAL, "params.size: must be the arena size %llu",
                                      (unsigned long long)p->arena->size);
        }
        /* poll() on a blocking userfaultfd answers EPOLLERR: the pager needs it
         * non-blocking (the flag is shared with the shim's copy, which never reads it). */
        if (fcntl(uffd, F_SETFL, fcntl(uffd, F_GETFL) | O_NONBLOCK) < 0) {
                r = negative_errno();
                safe_close(uffd);
                return xmem_error_set(err, r, "userfaultfd: %s", strerror(-r));
        }
        arena_attach(p->arena, uffd, base);
        p->registering = true;
        return 0;
}

int container_serve(struct container *c, struct process *p, struct xmem_error *err)
{
        int r = residency_add_arena(c->residency, p->arena);

        if (r < 0)
                return xmem_error_set(err, r, "residency: %s", strerror(-r));
        r = pager_add(c->pager, p->arena, c->residency);
        if (r < 0) {
                residency_remove_arena(c->residency, p->arena);
                return xmem_error_set(err, r, "pager: %s", strerror(-r));
        }
        p->served = true;
        return 0;
}

void container_ready(struct container *c)
{
        atomic_fetch_sub(&c->residency->awaiting, 1);
}

void process_pending_end(struct container *c, struct process *p)
{
        if (p->pending)
                atomic_fetch_sub(&c->residency->awaiting, 1);
        p->pending = false;
}

void container_remove_process(struct container *c, struct process *p)
{
        struct xmem_error err = {};

        for (struct process **pp = &c->processes; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                        *pp = p->next;
                        c->n_processes--;
                        break;
                }
        /* off the disk before its regions go; if that fails they stay on the
         * appliance (leaked rather than a later memd finding them gone) */
        if (c->saved && state_save(c->manager, c, &err) < 0) {
                log_error("container %s: process %d: %s: its regions are left on the appliance",
                          c->id, (int)p->pid, xmem_error_str(&err));
                store_xmem_keep(p->store);
        }
        p->exit_src = sd_event_source_disable_unref(p->exit_src);
        process_pending_end(c, p); /* no longer awaited */
        jobs_forget_process(c, p); /* a job of it on the worker finishes without it */
        /* it exited or exec'd: whatever it charged is gone with it */
        acct_release_slot(c, p);
        /* its fetches in flight and the regions' free may wait for an
         * appliance: never on the event loop */
        reaper_queue(c, p);
}

void container_keep(struct container *c)
{
        c->saved = false; /* the file stays as it is for the next memd */
        for (struct process *p = c->processes; p; p = p->next) {
                if (p->registered) {
                        int r = residency_flush_arena(c->residency, p->arena, NULL, NULL);
                        if (r < 0) /* still resident in the process's memfd: not lost */
                                log_error("container %s: process %d: writing back: %s", c->id,
                                          (int)p->pid, strerror(-r));
                }
                store_xmem_keep(p->store);
        }
}

struct fork_clone {
        struct store *clone;
        uint8_t *written; /* a bit per page the parent holds data of its own in */
        struct xmem_error *err;
};

static int fork_clone_store(struct arena *a, void *data)
{
        struct fork_clone *f = data;

        f->written = calloc((a->n_chunks + 7) / 8, 1);
        if (!f->written)
                return xmem_error_set(f->err, -ENOMEM, "out of memory");
        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks; c++)
                if (a->charge[c] != PAGE_UNCHARGED)
                        f->written[c / 8] |= (uint8_t)(1u << (c % 8));
        pthread_mutex_unlock(&a->lock);
        return store_clone(a->store, &f->clone, f->err);
}

/* The fork snapshot: P's arena is held and flushed (residency_flush_arena),
 * and its store is cloned (a metadata copy on the appliance) before any
 * write of P reaches its store again. */
int container_fork_store(struct container *c, struct process *p, struct store **ret,
                         uint8_t **ret_written, struct xmem_error *err)
{
        struct fork_clone f = { .err = err };
        int r;

        if (!p->served) /* nothing resident: the store is the whole truth */
                r = fork_clone_store(p->arena, &f);
        else
                r = residency_flush_arena(c->residency, p->arena, fork_clone_store, &f);
        if (r < 0) {
                store_free(f.clone);
                free(f.written);
                if (!err->msg[0])
                        xmem_error_set(err, r, "flushing the arena: %s", strerror(-r));
                return r;
        }
        *ret = f.clone;
        *ret_written = f.written;
        return 0;
}

int container_alias_fill(struct process *p, uint64_t off, uint64_t len, struct xmem_error *err)
{
        struct arena *a = p->arena;
        uint64_t n = 0, c, end = (off + len) / a->chunk_size;

        if (fallocate(a->memfd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
                return xmem_error_set(err, -errno, "arena pages at %llu: %s",
                                      (unsigned long long)off, strerror(errno));
        pthread_mutex_lock(&a->lock);
        for (c = off / a->chunk_size; c < end; c++) {
                if (a->state[c] != CHUNK_FREE)
                        continue; /* resident already: the copy writes it */
                if (!pages_charge(a, c, PAGE_CHARGED))
                        break;
                pages_claim(a, c);
                pages_installed(a, c, true, false);
                n++;
        }
        pthread_mutex_unlock(&a->lock);
        atomic_fetch_add(&p->container->residency->resident, n * a->chunk_size);
        if (c < end) {
                /* over the quota: what was allocated for the rest goes again */
                (void)fallocate(a->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                (off_t)(c * a->chunk_size), (off_t)((end - c) * a->chunk_size));
                return xmem_error_set(err, -EDQUOT,
                                      "container %s: its external quota has no room for %llu "
                                      "bytes more",
                                      p->container->id, (unsigned long long)len);
        }
        return 0;
}

uint64_t container_discard(struct process *p, uint64_t offset, uint64_t len)
{
        struct arena *a = p->arena;
        uint64_t n = 0;

        pthread_mutex_lock(&a->lock);
        for (uint64_t c = offset / a->chunk_size; c < (offset + len) / a->chunk_size; c++) {
                bool charged = a->charge[c] == PAGE_CHARGED;
                pages_discarded(a, c);
                n += charged && a->charge[c] == PAGE_UNCHARGED;
        }
        pthread_mutex_unlock(&a->lock);
        return n;
}

static json_object *u64(uint64_t v)
{
        return json_object_new_int64((int64_t)MIN(v, (uint64_t)INT64_MAX));
}

json_object *container_to_json(const struct container *c)
{
        json_object *o = json_object_new_object();
        char pol[32];

        json_object_object_add(o, "id", json_object_new_string(c->id));
        json_object_object_add(o, "cgroup", json_object_new_string(c->cgroup_dir));
        json_object_object_add(o, "local_limit", u64(c->local_limit));
        json_object_object_add(o, "external", u64(c->external));
        json_object_object_add(o, "external_max", u64(c->arena_size));
        json_object_object_add(o, "local_alloc_limit", u64(c->local_alloc_limit));
        json_object_object_add(o, "policy",
                               json_object_new_string(api_policy_format(&c->policy, pol,
                                                                        sizeof(pol))));
        if (c->appliance)
                json_object_object_add(o, "appliance", json_object_new_string(c->appliance));
        if (c->file_dir)
                json_object_object_add(o, "file_dir", json_object_new_string(c->file_dir));
        json_object_object_add(o, "processes", u64(c->n_processes));
        return o;
}

static json_object *process_json(const struct container *c, const struct process *p)
{
        const struct xmem_acct_slot *s = &c->acct->slots[p->acct_slot];
        json_object *o = json_object_new_object();

        json_object_object_add(o, "pid", json_object_new_int(p->pid));
        json_object_object_add(o, "arena_size", u64(p->store->size));
        json_object_object_add(o, "base", u64(p->arena ? p->arena->base : 0));
        if (p->pending)
                json_object_object_add(o, "pending", json_object_new_boolean(true));
        json_object_object_add(o, "registered", json_object_new_boolean(p->registered));
        json_object_object_add(o, "resident_bytes",
                               u64(p->arena ? arena_resident_bytes(p->arena) : 0));
        json_object_object_add(o, "acct_slot", json_object_new_int((int)p->acct_slot));
        json_object_object_add(o, "local_bytes",
                               u64(__atomic_load_n(&s->local_bytes, __ATOMIC_RELAXED)));
        json_object_object_add(o, "external_bytes",
                               u64(__atomic_load_n(&s->external_bytes, __ATOMIC_RELAXED)));
        json_object_object_add(o, "file_bytes",
                               u64(__atomic_load_n(&s->file_bytes, __ATOMIC_RELAXED)));
        /* its last conversion: which request, and what it left behind */
        uint64_t done = __atomic_load_n(&s->convert_done, __ATOMIC_ACQUIRE);
        json_object_object_add(o, "convert_done", u64(done >> 8));
        json_object_object_add(o, "convert_failed",
                               u64(__atomic_load_n(&s->convert_failed, __ATOMIC_RELAXED)));
        uint64_t e = __atomic_load_n(&s->convert_errno, __ATOMIC_RELAXED);
        if (e)
                json_object_object_add(o, "convert_error",
                                       json_object_new_string(errno_name((int)e)));
        return o;
}

json_object *container_stats_json(const struct container *c)
{
        const struct xmem_counters *k = &c->residency->counters;
        json_object *o = json_object_new_object(), *lat = json_object_new_object(),
                    *procs = json_object_new_array();

        json_object_object_add(o, "id", json_object_new_string(c->id));
        json_object_object_add(o, "faults", u64(atomic_load(&k->faults)));
        json_object_object_add(o, "missing_faults", u64(atomic_load(&k->missing_faults)));
        json_object_object_add(o, "wp_faults", u64(atomic_load(&k->wp_faults)));
        json_object_object_add(o, "fetched_bytes", u64(atomic_load(&k->fetched_bytes)));
        json_object_object_add(o, "zero_filled_bytes", u64(atomic_load(&k->zero_filled_bytes)));
        json_object_object_add(o, "prefetched_bytes", u64(atomic_load(&k->prefetched_bytes)));
        json_object_object_add(o, "written_back_bytes",
                               u64(atomic_load(&k->written_back_bytes)));
        json_object_object_add(o, "evictions", u64(atomic_load(&k->evictions)));
        json_object_object_add(o, "enomem_retries", u64(atomic_load(&k->enomem_retries)));
        json_object_object_add(o, "store_errors", u64(atomic_load(&k->store_errors)));
        json_object_object_add(o, "sync_evictions", u64(atomic_load(&k->sync_evictions)));
        json_object_object_add(o, "inline_fills", u64(atomic_load(&k->inline_fills)));
        json_object_object_add(o, "async_fills", u64(atomic_load(&k->async_fills)));
        json_object_object_add(o, "oom_waits", u64(atomic_load(&k->oom_waits)));
        json_object_object_add(o, "oom_released", u64(atomic_load(&k->oom_released)));
        json_object_object_add(o, "resident_bytes", u64(atomic_load(&c->residency->resident)));
        json_object_object_add(o, "budget_bytes", u64(atomic_load(&c->residency->budget)));
        json_object_object_add(o, "local_limit", u64(c->local_limit));
        json_object_object_add(o, "headroom", u64(c->headroom));
        /* the accounting page: what all the container's shims charged */
        json_object_object_add(o, "local_alloc_limit", u64(c->local_alloc_limit));
        json_object_object_add(o, "external_quota", u64(c->external));
        json_object_object_add(o, "local_bytes",
                               u64(__atomic_load_n(&c->acct->h.local_bytes, __ATOMIC_RELAXED)));
        json_object_object_add(o, "external_bytes",
                               u64(__atomic_load_n(&c->acct->h.external_bytes,
                                                   __ATOMIC_RELAXED)));
        uint64_t file = 0;
        for (uint32_t i = 0; i < XMEM_ACCT_SLOTS; i++)
                file += __atomic_load_n(&c->acct->slots[i].file_bytes, __ATOMIC_RELAXED);
        json_object_object_add(o, "file_bytes", u64(file));
        json_object_object_add(o, "convert_requested",
                               u64(__atomic_load_n(&c->acct->h.convert, __ATOMIC_RELAXED) >> 8));
        json_object_object_add(o, "refused_allocations",
                               u64(__atomic_load_n(&c->acct->h.refused, __ATOMIC_RELAXED)));
        /* memd's own count: the pages its arenas have written (pages.h) */
        json_object_object_add(o, "external_written_bytes",
                               u64(atomic_load(&c->quota.used) * ARENA_PAGE_SIZE));
        json_object_object_add(o, "quota_refused_writes", u64(atomic_load(&c->quota.refused)));
        json_object_object_add(o, "discard_requests", u64(c->quota.discards));
        json_object_object_add(lat, "count", u64(lat_hist_count(&k->fault_latency)));
        json_object_object_add(lat, "p50", u64(lat_hist_quantile(&k->fault_latency, 0.5) / 1000));
        json_object_object_add(lat, "p99", u64(lat_hist_quantile(&k->fault_latency, 0.99) / 1000));
        json_object_object_add(lat, "p999",
                               u64(lat_hist_quantile(&k->fault_latency, 0.999) / 1000));
        json_object_object_add(o, "fault_latency_us", lat);
        for (const struct process *p = c->processes; p; p = p->next)
                json_object_array_add(procs, process_json(c, p));
        json_object_object_add(o, "processes", procs);
        return o;
}
