/* adopt.c: a restarted memd re-adopts what the last one left in the state
 * directory (docs/memd.md "State directory"): each container attached again
 * with its socket re-created in its existing directory, each live process's
 * regions re-opened on their appliances, and its arena served again once its
 * shim reconnects and says shim.resume with the arena memfd and userfaultfd
 * it kept. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arena.h"
#include "log.h"
#include "memd.h"
#include "pager.h"
#include "residency.h"
#include "state.h"
#include "store.h"
#include "transport/transport.h"
#include "uffd.h"

/* The transports of S: all of memd's, or the one it was attached to. */
static int adopt_transports(struct manager *m, const struct state_container *s,
                            struct xmem_transport ***ret, size_t *ret_n, struct xmem_error *err)
{
        if (!s->attach.appliance) {
                *ret = m->transports;
                *ret_n = m->n_transports;
                return 0;
        }
        for (size_t i = 0; i < m->n_transports; i++)
                if (strcmp(s->attach.appliance, m->cfg.appliances[i]) == 0 ||
                    strcmp(s->attach.appliance, xmem_transport_uri(m->transports[i])) == 0) {
                        *ret = &m->transports[i];
                        *ret_n = 1;
                        return 0;
                }
        return xmem_error_set(err, -ENOENT, "appliance %s is not one of memd's",
                              s->attach.appliance);
}

/* Do SP's regions lie on exactly the transports TS, in order? */
static bool regions_match(struct manager *m, const struct state_process *sp,
                          struct xmem_transport **ts, size_t n)
{
        if (sp->n_regions != n)
                return false;
        for (size_t i = 0; i < n; i++) {
                const char *uri = xmem_transport_uri(ts[i]), *cfg = NULL;
                for (size_t k = 0; k < m->n_transports; k++)
                        if (m->transports[k] == ts[i])
                                cfg = m->cfg.appliances[k];
                if (strcmp(sp->regions[i].appliance, uri) != 0 &&
                    (!cfg || strcmp(sp->regions[i].appliance, cfg) != 0))
                        return false;
        }
        return true;
}

static int open_store(const struct state_container *s, const struct state_process *sp,
                      struct xmem_transport **ts, size_t n, struct store **ret,
                      struct xmem_error *err)
{
        struct xmem_region_ref refs[MANAGER_MAX_APPLIANCES];

        for (size_t i = 0; i < n; i++)
                refs[i] = sp->regions[i].ref;
        return store_xmem_open(ts, n, sp->arena_size, s->chunk_size, refs, ret, err);
}

/* Is SP's process still the one recorded (alive, same start time)? Its
 * pidfd then. */
static int live_pidfd(const struct state_process *sp)
{
        uint64_t start;
        int fd = (int)syscall(SYS_pidfd_open, sp->pid, 0);

        if (fd < 0)
                return -ESRCH;
        if (state_proc_start_time(sp->pid, &start) < 0 || start != sp->start_time) {
                close(fd);
                return -ESRCH;
        }
        return fd;
}

static int adopt_process(struct manager *m, struct container *c, const struct state_container *s,
                         const struct state_process *sp, struct xmem_error *err)
{
        struct process *p;
        int pidfd = live_pidfd(sp), r;

        if (pidfd < 0)
                return pidfd;
        p = calloc(1, sizeof(*p));
        if (!p) {
                close(pidfd);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        r = open_store(s, sp, c->transports, c->n_transports, &p->store, err);
        if (r < 0) {
                close(pidfd);
                free(p);
                return r;
        }
        p->pid = sp->pid;
        p->pidfd = pidfd;
        p->start_time = sp->start_time;
        p->memfd_ino = sp->memfd_ino;
        p->acct_slot = sp->acct_slot;
        p->pending = true;
        atomic_fetch_add(&c->residency->awaiting, 1);
        p->container = c;
        acct_mark_slot(c, p->acct_slot);
        p->next = c->processes;
        c->processes = p;
        c->n_processes++;
        r = manager_watch_process(m, p);
        if (r < 0)
                log_error("container %s: process %d: sd-event: %s", c->id, (int)p->pid,
                          strerror(-r));
        return 0;
}

/* Free the regions of records (processes that are gone, where GONE says
 * so, or fork clones whose tokens died with the last memd: GONE NULL): only
 * once the state file no longer names them. */
static void free_records(const struct state_container *s, const struct state_process *recs,
                         size_t n_recs, const bool *gone, struct xmem_transport **ts, size_t n)
{
        for (size_t i = 0; i < n_recs; i++) {
                struct xmem_error err = {};
                struct store *st = NULL;

                if (gone && !gone[i])
                        continue;
                if (open_store(s, &recs[i], ts, n, &st, &err) >= 0)
                        store_free(st);
                if (gone)
                        log_info("container %s: process %d is gone, its regions freed",
                                 s->attach.id, (int)recs[i].pid);
                else
                        log_info("container %s: a fork clone never claimed, its regions freed",
                                 s->attach.id);
        }
}

static void free_gone(const struct state_container *s, const bool *gone,
                      struct xmem_transport **ts, size_t n)
{
        free_records(s, s->processes, s->n_processes, gone, ts, n);
        free_records(s, s->clones, s->n_clones, NULL, ts, n);
}

/* One parsed file NAME: -EINVAL when it cannot stand for a container (ERR
 * says why; the caller moves it aside), other errors leave it in place. */
static int adopt_container(struct manager *m, struct state_container *s, const char *name,
                           struct xmem_error *err)
{
        struct pager_opts po = {.workers = (int)m->cfg.fill_workers, .poll_us = m->cfg.poll_us};
        struct xmem_transport **ts = NULL;
        struct container *c;
        _cleanup_free_ bool *gone = calloc(s->n_processes ?: 1, sizeof(bool));
        size_t n = 0;
        int r;

        if (!gone)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        if (strlen(name) != strlen(s->attach.id) + 5 ||
            strncmp(name, s->attach.id, strlen(s->attach.id)) != 0)
                return xmem_error_set(err, -EINVAL, "id: %s is not the file's name", s->attach.id);
        if (manager_find_container(m, s->attach.id))
                return xmem_error_set(err, -EINVAL, "id: %s is attached already", s->attach.id);
        r = adopt_transports(m, s, &ts, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n_processes; i++)
                if (!regions_match(m, &s->processes[i], ts, n))
                        return xmem_error_set(err, -ENOENT,
                                              "processes[%zu]: its regions are on other "
                                              "appliances than memd's",
                                              i);
        for (size_t i = 0; i < s->n_clones; i++)
                if (!regions_match(m, &s->clones[i], ts, n))
                        return xmem_error_set(err, -ENOENT,
                                              "fork_clones[%zu]: its regions are on other "
                                              "appliances than memd's",
                                              i);
        r = container_new(&s->attach, m->cg_version, m->cg_mount, ts, n, s->chunk_size, &po, &c,
                          err);
        if (r == -ENOENT) { /* the cgroup is gone: the container with it */
                for (size_t i = 0; i < s->n_processes; i++)
                        gone[i] = true;
                r = state_remove(m, &(struct container){.id = (char *)s->attach.id});
                if (r >= 0)
                        free_gone(s, gone, ts, n);
                log_info("container %s: cgroup %s is gone, detached", s->attach.id,
                         s->attach.cgroup);
                return 0;
        }
        if (r < 0)
                return r;
        c->manager = m;
        for (size_t i = 0; i < s->n_processes; i++) {
                struct xmem_error perr = {};
                r = adopt_process(m, c, s, &s->processes[i], &perr);
                if (r == -ESRCH)
                        gone[i] = true;
                else if (r < 0) /* its regions are not on the appliance: nothing to serve */
                        log_error("container %s: process %d: %s", c->id, (int)s->processes[i].pid,
                                  xmem_error_str(&perr));
        }
        /* the resumed shims still charge the last memd's accounting page:
         * shim.resume hands it back (memd/acct.c) */
        if (c->n_processes)
                c->acct_awaiting_ino = s->acct_ino;
        c->saved = true;
        r = state_save(m, c, err);
        if (r >= 0)
                r = ctrsock_open(m, c, err);
        if (r < 0) {
                c->saved = false;
                for (struct process *p = c->processes; p; p = p->next)
                        store_xmem_keep(p->store);
                ctrsock_close(m, c);
                container_free(c);
                return r;
        }
        container_ready(c); /* its processes are awaited one by one now */
        c->next = m->containers;
        m->containers = c;
        free_gone(s, gone, ts, n);
        log_info("container %s: re-adopted from the state directory, %zu process(es) to resume",
                 c->id, c->n_processes);
        return 0;
}

static void adopt_file(struct manager *m, const char *name)
{
        struct state_container s = {};
        struct xmem_error err = {};
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r;

        r = state_read_file(m->state_dirfd, name, &buf, &len, &err);
        if (r == -EINVAL) {
                state_move_aside(m, name, xmem_error_str(&err));
                return;
        }
        if (r >= 0 && (r = state_parse(buf, len, &s, &err)) < 0) {
                state_move_aside(m, name, xmem_error_str(&err));
                return;
        }
        if (r >= 0 && (r = adopt_container(m, &s, name, &err)) == -EINVAL)
                state_move_aside(m, name, xmem_error_str(&err));
        else if (r < 0)
                log_error("state file %s: %s (left in place)", name, xmem_error_str(&err));
        state_container_done(&s);
}

int adopt_all(struct manager *m, struct xmem_error *err)
{
        int fd = fcntl(m->state_dirfd, F_DUPFD_CLOEXEC, 3);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *de;

        if (!d) {
                safe_close(fd);
                return xmem_error_set(err, negative_errno(), "state directory: %m");
        }
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
                        continue;
                adopt_file(m, de->d_name);
        }
        closedir(d);
        return 0;
}

/* shim.resume's job (memd/worker.c): the registration on the container's
 * worker; P valid there until its teardown, queued after the job. */
struct resume_job {
        struct job job;
        struct process *p;
        int acct_fd; /* the accounting page it sent, -1: none */
        int r;
        struct xmem_error err;
};

static void resume_run(struct job *j)
{
        struct resume_job *rj = (struct resume_job *)j;
        struct residency *res = j->container->residency;
        uint64_t bytes = arena_resident_bytes(rj->p->arena);

        /* its resident pages count against the budget from now on */
        atomic_fetch_add(&res->resident, bytes);
        rj->r = container_serve(j->container, rj->p, &rj->err);
        if (rj->r < 0)
                atomic_fetch_sub(&res->resident, bytes);
}

static void resume_abandon(struct job *j)
{
        safe_close(((struct resume_job *)j)->acct_fd);
}

static int resume_done(struct job *j, struct api_call *call, struct xmem_error *err)
{
        struct resume_job *rj = (struct resume_job *)j;
        struct container *c = j->container;
        struct process *p = j->process;
        int r;

        if (!p) { /* exited meanwhile: its teardown undoes what the worker did */
                resume_abandon(j);
                return xmem_error_set(err, -ESRCH, "the calling process is gone");
        }
        p->registering = false;
        if (rj->r < 0) {
                resume_abandon(j);
                arena_free(p->arena);
                p->arena = NULL;
                *err = rj->err;
                return rj->r;
        }
        p->registered = true;
        process_pending_end(c, p);
        /* the accounting page it charges: the container's again */
        if (rj->acct_fd >= 0 && (r = acct_adopt(c, rj->acct_fd)) < 0)
                log_error("container %s: process %d: the accounting page it sent: %s", c->id,
                          (int)p->pid,
                          r == -EBUSY ? "a new process uses this memd's page already, the "
                                        "resumed ones keep charging the old one"
                                      : strerror(-r));
        else if (rj->acct_fd >= 0 && !c->acct_awaiting_ino)
                log_debug("container %s: accounting page taken back", c->id);
        resume_abandon(j);
        /* faults the last memd read but never answered wait for a wake-up:
         * woken, they fault again and this memd serves them */
        arena_uffd_wake_all(p->arena);
        log_info("container %s: process %d resumed (%llu bytes resident)", c->id, (int)p->pid,
                 (unsigned long long)arena_resident_bytes(p->arena));
        call->result = json_object_new_object();
        json_object_object_add(call->result, "resumed", json_object_new_boolean(true));
        return 0;
}

/* shim.resume: the caller's arena memfd (fds[0]) and userfaultfd (fds[1])
 * after a memd restart. Only the process recorded (pid and start time), only
 * with its own arena (the memfd's inode). */
int method_resume(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct conn *cn = call->conn;
        struct container *c = cn->container;
        struct process *p = container_find_process(c, cn->pid);
        struct resume_job *rj;
        struct arena *a = NULL;
        uint64_t start = 0;
        struct stat st;
        int r, uffd;

        if (!p || !p->pending)
                return xmem_error_set(err, -ENOENT, "no arena of pid %d to resume", (int)cn->pid);
        if (p->registering)
                return xmem_error_set(err, -EBUSY, "pid %d is resuming already", (int)cn->pid);
        if (state_proc_start_time(cn->pid, &start) < 0 || start != p->start_time)
                return xmem_error_set(err, -EPERM, "pid %d is not the process memd recorded",
                                      (int)cn->pid);
        if (fstat(call->fds[0], &st) < 0 || (uint64_t)st.st_ino != p->memfd_ino ||
            (uint64_t)st.st_size != p->store->size)
                return xmem_error_set(err, -EPERM,
                                      "the descriptor sent is not this process's arena");
        if (!is_userfaultfd(call->fds[1]))
                return xmem_error_set(err, -EINVAL, "the second descriptor is not a userfaultfd");
        rj = calloc(1, sizeof(*rj));
        if (!rj)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        r = arena_adopt(call->fds[0], p->store->size, ARENA_PAGE_SIZE, p->store, &a);
        if (r < 0) {
                free(rj);
                return xmem_error_set(err, r, "arena: %s", strerror(-r));
        }
        call->fds[0] = -1; /* taken over */
        p->arena = a;
        /* its resident pages hold its writes: charged to the quota again
         * (pages.h), over it or not; the pages only on the appliance are
         * charged when next written */
        a->quota = &c->quota;
        a->pidfd = p->pidfd;
        for (uint64_t k = 0; k < a->n_chunks; k++)
                if (a->state[k] == CHUNK_DIRTY) {
                        a->charge[k] = PAGE_CHARGED;
                        atomic_fetch_add(&c->quota.used, 1);
                }
        uffd = call->fds[1];
        call->fds[1] = -1;
        r = container_register_prepare(p, uffd, params->reg.base, params->reg.size, err);
        if (r < 0) {
                free(rj);
                arena_free(a);
                p->arena = NULL;
                return r;
        }
        *rj = (struct resume_job){.job = {.run = resume_run,
                                          .done = resume_done,
                                          .abandon = resume_abandon,
                                          .method = "shim.resume",
                                          .process = p},
                                  .p = p,
                                  .acct_fd = -1};
        if (call->n_fds > 2) {
                rj->acct_fd = call->fds[2];
                call->fds[2] = -1;
        }
        /* the residency manager's lock may be the evictor's, writing back */
        return job_defer(call, &rj->job);
}
