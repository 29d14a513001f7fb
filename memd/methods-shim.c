/* methods-shim.c: the shim's methods, on a container's own socket and for
 * the calling process alone (docs/api.md): shim.hello (an arena, or a fork
 * clone's by token), shim.register (its userfaultfd), shim.fork (a token
 * for the child) and shim.discard (pages its allocator gave back). Bounded per container: processes and outstanding tokens. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "arena.h"
#include "filedir.h"
#include "log.h"
#include "memd.h"
#include "state.h"
#include "store.h"
#include "uffd.h"

static void token_free(struct manager *m, struct fork_token **tp)
{
        struct fork_token *t = *tp;

        *tp = t->next;
        t->container->n_fork_tokens--;
        if (t->store) /* the clone's regions: freed off the event loop */
                reaper_queue_store(t->container, t->store);
        free(t->written);
        free(t);
}

/* C's state file without the clones of its tokens gone: before their
 * regions are freed (else a restarted memd would free them a second time,
 * harmless, or find them missing). */
static void tokens_saved(struct manager *m, struct container *c)
{
        struct xmem_error err = {};

        if (c->saved && state_save(m, c, &err) < 0)
                log_error("container %s: %s", c->id, xmem_error_str(&err));
}

void fork_tokens_free(struct manager *m, const struct container *c, uint64_t before_usec)
{
        struct fork_token *gone = NULL;

        for (struct fork_token **tp = &m->tokens; *tp;)
                if ((!c || (*tp)->container == c) && (*tp)->created_usec < before_usec) {
                        struct fork_token *t = *tp;
                        *tp = t->next;
                        t->next = gone;
                        gone = t;
                } else
                        tp = &(*tp)->next;
        for (struct fork_token *t = gone; t; t = t->next) {
                bool first = true;
                for (struct fork_token *u = gone; u != t; u = u->next)
                        first = first && u->container != t->container;
                if (first)
                        tokens_saved(m, t->container);
        }
        while (gone)
                token_free(m, &gone);
}

/* The clone a token of C stands for (taken over), NULL when unknown. */
static struct store *token_take(struct manager *m, const char *token, struct container *c,
                                uint64_t *ret_size, uint8_t **ret_written)
{
        for (struct fork_token **tp = &m->tokens; *tp; tp = &(*tp)->next)
                if ((*tp)->container == c && strcmp((*tp)->token, token) == 0) {
                        struct store *s = (*tp)->store;
                        *ret_size = (*tp)->size;
                        *ret_written = TAKE_PTR((*tp)->written);
                        (*tp)->store = NULL;
                        token_free(m, tp);
                        return s;
                }
        return NULL;
}

static void hello_result(json_object *o, const struct container *c, const struct process *p,
                         uint64_t version)
{
        char pol[32];

        json_object_object_add(o, "attached", json_object_new_boolean(true));
        json_object_object_add(o, "container", json_object_new_string(c->id));
        json_object_object_add(o, "arena_size", json_object_new_int64((int64_t)p->arena->size));
        json_object_object_add(
            o, "policy", json_object_new_string(api_policy_format(&c->policy, pol, sizeof(pol))));
        json_object_object_add(o, "local_alloc_limit",
                               json_object_new_int64((int64_t)c->local_alloc_limit));
        json_object_object_add(
            o, "ratio",
            json_object_new_int(c->policy.kind == API_POLICY_RATIO ? (int)c->policy.ratio : 0));
        json_object_object_add(o, "chunk_size", json_object_new_int64(c->chunk_size));
        if (c->file_dirfd >= 0) /* file memory: docs/api.md "shim.file" */
                json_object_object_add(o, "file_size", json_object_new_int64((int64_t)FILEDIR_FILE_SIZE));
        if (version >= 2) { /* the accounting page: docs/api.md "shim.hello" */
                json_object_object_add(o, "external_quota",
                                       json_object_new_int64((int64_t)c->external));
                json_object_object_add(o, "acct_slot", json_object_new_int((int)p->acct_slot));
        }
}

int method_hello(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct api_hello *h = &params->hello;
        struct conn *cn = call->conn;
        struct container *c = cn->container;
        _cleanup_close_ int pidfd = -1, devfd = -1;
        _cleanup_free_ uint8_t *written = NULL;
        struct store *from = NULL;
        struct restore_arena ra = {};
        struct process *p;
        uint64_t size = c->arena_size;
        int r;

        if ((p = container_find_process(c, cn->pid))) {
                /* exec, or a pid reused: the old arena is gone; one from a
                 * snapshot goes to the new image (a wrapper or a shell took it) */
                size_t again = p->restore_slot;
                container_remove_process(c, p);
                if (again && restore_plan_again(call->m, c, again - 1, err) < 0) {
                        log_error("container %s: process %d: %s", c->id, (int)cn->pid,
                                  xmem_error_str(err));
                        *err = (struct xmem_error){};
                }
        }
        if (c->n_processes >= call->m->cfg.bounds.processes)
                return xmem_error_set(err, -EUSERS,
                                      "container %s: %zu processes use external "
                                      "memory, the most memd serves per container",
                                      c->id, c->n_processes);
        if (h->fork_token) {
                from = token_take(call->m, h->fork_token, c, &size, &written);
                if (!from)
                        return xmem_error_set(err, -ENOENT,
                                              "params.fork_token: unknown or "
                                              "expired token");
        } else if (restore_plan_take(c, &ra)) { /* a snapshot's arena, at its base */
                from = ra.store;
                written = ra.written;
                size = ra.size;
        }
        pidfd = fcntl(cn->pidfd, F_DUPFD_CLOEXEC, 3);
        devfd = uffd_dev_open();
        if (pidfd < 0 || devfd < 0) {
                if (from)
                        reaper_queue_store(c, from);
                return xmem_error_set(err, pidfd < 0 ? negative_errno() : devfd,
                                      pidfd < 0 ? "pidfd: %m" : "/dev/userfaultfd: %s",
                                      strerror(-devfd));
        }
        r = container_add_process(c, cn->pid, TAKE_FD(pidfd), from, written, size, &p, err);
        if (r < 0)
                return r;
        r = manager_watch_process(call->m, p);
        if (r < 0) {
                container_remove_process(c, p);
                return xmem_error_set(err, r, "sd-event: %s", strerror(-r));
        }
        call->result = json_object_new_object();
        hello_result(call->result, c, p, h->version);
        if (ra.store) { /* docs/api.md "shim.hello": map it there, keep [0, used) */
                p->restore_slot = ra.index + 1;
                json_object_object_add(call->result, "restore_base",
                                       json_object_new_int64((int64_t)ra.base));
                json_object_object_add(call->result, "restore_used",
                                       json_object_new_int64((int64_t)ra.used));
        }
        call->reply_fds[0] = p->arena->memfd;
        call->reply_fds[1] = devfd;
        call->n_reply_fds = 2;
        if (h->version >= 2) {
                call->reply_fds[call->n_reply_fds++] = c->acct_fd;
                c->acct_fresh_used |= c->acct_awaiting_ino != 0;
        }
        call->close_after = TAKE_FD(devfd);
        log_debug("container %s: process %d: arena of %llu bytes%s", c->id, (int)cn->pid,
                  (unsigned long long)size,
                  ra.store ? " from a snapshot" : from ? " from a fork clone" : "");
        return 0;
}

/* The caller's own arena: the connection's process, by pid while its pidfd
 * shows it alive (so never a later process that reused the pid). */
static int caller_process(struct api_call *call, struct process **ret, struct xmem_error *err)
{
        struct conn *cn = call->conn;
        struct process *p = container_find_process(cn->container, cn->pid);

        if (!p)
                return xmem_error_set(err, -ENOENT, "no arena for pid %d (shim.hello first)",
                                      (int)cn->pid);
        if (p->pending) /* re-adopted, no arena until it says shim.resume */
                return xmem_error_set(err, -ENOENT, "no arena for pid %d (shim.resume first)",
                                      (int)cn->pid);
        *ret = p;
        return 0;
}

/* Is FD a userfaultfd? (fdinfo would do; the anon inode's name says it.) */
bool is_userfaultfd(int fd)
{
        char path[64], target[64];
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
                return false;
        target[n] = 0;
        return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

/* shim.register's and shim.fork's jobs (memd/worker.c): the slow part on
 * the container's worker, P (the caller's process) valid there until its
 * teardown, which is queued after the job. */
struct shim_job {
        struct job job;
        struct process *p;
        int r; /* the worker's result, ERR what failed */
        struct xmem_error err;
        struct store *clone; /* shim.fork: the snapshot */
        uint8_t *written;
};

static struct shim_job *shim_job_new(struct process *p, const char *method,
                                     void (*run)(struct job *),
                                     int (*done)(struct job *, struct api_call *,
                                                 struct xmem_error *))
{
        struct shim_job *sj = calloc(1, sizeof(*sj));

        if (sj)
                *sj = (struct shim_job){
                    .job = {.run = run, .done = done, .method = method, .process = p}, .p = p};
        return sj;
}

static void register_run(struct job *j)
{
        struct shim_job *sj = (struct shim_job *)j;

        sj->r = container_serve(j->container, sj->p, &sj->err);
}

static int register_done(struct job *j, struct api_call *call, struct xmem_error *err)
{
        struct shim_job *sj = (struct shim_job *)j;
        struct process *p = j->process;

        if (!p) /* exited meanwhile: its teardown undoes what the worker did */
                return xmem_error_set(err, -ESRCH, "the calling process is gone");
        p->registering = false;
        if (sj->r < 0) {
                *err = sj->err;
                return sj->r;
        }
        p->registered = true;
        call->result = json_object_new_object();
        json_object_object_add(call->result, "registered", json_object_new_boolean(true));
        return 0;
}

int method_register(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct process *p = NULL;
        struct shim_job *sj;
        int r = caller_process(call, &p, err), uffd;

        if (r < 0)
                return r;
        if (!is_userfaultfd(call->fds[0]))
                return xmem_error_set(err, -EINVAL, "the descriptor sent is not a userfaultfd");
        sj = shim_job_new(p, "shim.register", register_run, register_done);
        if (!sj)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        uffd = call->fds[0];
        call->fds[0] = -1; /* taken over, also on failure */
        r = container_register_prepare(p, uffd, params->reg.base, params->reg.size, err);
        if (r < 0) {
                free(sj);
                return r;
        }
        /* the residency manager's lock may be the evictor's, writing back */
        return job_defer(call, &sj->job);
}

static void fork_run(struct job *j)
{
        struct shim_job *sj = (struct shim_job *)j;

        sj->r = container_fork_store(j->container, sj->p, &sj->clone, &sj->written, &sj->err);
}

static void fork_abandon(struct job *j)
{
        struct shim_job *sj = (struct shim_job *)j;

        store_free(sj->clone); /* on the worker: it may wait */
        free(sj->written);
}

/* The snapshot is taken: a token for it, on disk before it is handed out
 * (a restarted memd frees the clone of a token nobody can claim any more). */
static int fork_done(struct job *j, struct api_call *call, struct xmem_error *err)
{
        struct shim_job *sj = (struct shim_job *)j;
        struct container *c = j->container;
        uint8_t rnd[API_TOKEN_LEN / 2];
        struct fork_token *t;
        int r;

        if (sj->r < 0) {
                *err = sj->err;
                return sj->r;
        }
        if (!j->process || !j->conn) {
                reaper_queue_store(c, sj->clone);
                free(sj->written);
                return xmem_error_set(err, -ESRCH, "the calling process is gone");
        }
        t = calloc(1, sizeof(*t));
        if (!t || getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
                free(t);
                reaper_queue_store(c, sj->clone);
                free(sj->written);
                return xmem_error_set(err, t ? -EIO : -ENOMEM, t ? "getrandom failed" : "out of memory");
        }
        for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(t->token + 2 * i, 3, "%02x", rnd[i]);
        t->store = sj->clone;
        t->written = sj->written;
        t->created_usec = manager_now_usec(call->m);
        t->container = c;
        t->size = j->process->arena->size;
        t->next = call->m->tokens;
        call->m->tokens = t;
        c->n_fork_tokens++;
        if (c->saved && (r = state_save(call->m, c, err)) < 0) {
                call->m->tokens = t->next;
                t->next = NULL;
                token_free(call->m, &t);
                return r;
        }
        call->result = json_object_new_object();
        json_object_object_add(call->result, "token", json_object_new_string(t->token));
        return 0;
}

int method_fork(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct container *c = call->conn->container;
        struct process *p = NULL;
        struct shim_job *sj;
        size_t forks = 0;
        int r = caller_process(call, &p, err);

        if (r < 0)
                return r;
        for (struct job *j = c->jobs; j; j = j->loop_next)
                forks += j->run == fork_run;
        if (c->n_fork_tokens + forks >= call->m->cfg.bounds.fork_tokens)
                return xmem_error_set(err, -EAGAIN,
                                      "container %s: %zu fork tokens outstanding, "
                                      "the most memd keeps per container",
                                      c->id, c->n_fork_tokens + forks);
        sj = shim_job_new(p, "shim.fork", fork_run, fork_done);
        if (!sj)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        sj->job.abandon = fork_abandon;
        /* the flush writes back every dirty page, the clone goes over the wire */
        return job_defer(call, &sj->job);
}

int method_discard(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct api_discard *d = &params->discard;
        struct process *p = NULL;
        int r = caller_process(call, &p, err);

        if (r < 0)
                return r;
        if (d->offset > p->arena->size || d->length > p->arena->size - d->offset)
                return xmem_error_set(err, -EINVAL,
                                      "params.length: [offset, offset+length) must lie in the "
                                      "arena of %llu bytes",
                                      (unsigned long long)p->arena->size);
        call->conn->container->quota.discards++;
        call->result = json_object_new_object();
        json_object_object_add(
            call->result, "uncharged",
            json_object_new_int64((int64_t)container_discard(p, d->offset, d->length)));
        return 0;
}

/* shim.alias: the caller maps pages of its arena at a second address (local
 * memory converted to appliance memory, memd/alias.h). Only its own arena,
 * only addresses of its own: the pages it can reach anyway. */
int method_alias(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct api_alias *al = &params->alias;
        struct process *p = NULL;
        int r = caller_process(call, &p, err);

        if (r < 0)
                return r;
        r = arena_alias_op(p->arena, al->op, al->addr, al->offset, al->length, err);
        if (r == 0 && strcmp(al->op, "pin") == 0 &&
            (r = container_alias_fill(p, al->offset, al->length, err)) < 0) {
                struct xmem_error ignored = {};
                (void)arena_alias_op(p->arena, "drop", al->addr, al->offset, al->length,
                                     &ignored);
        }
        if (r < 0)
                return r;
        call->result = json_object_new_object();
        return 0;
}

int method_file(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct container *c = call->conn->container;
        struct process *p = NULL;
        int r = caller_process(call, &p, err), fd;

        if (r < 0)
                return r;
        if (c->file_dirfd < 0)
                return xmem_error_set(err, -EOPNOTSUPP,
                                      "container %s has no file directory (io.xmem.file-dir, "
                                      "memd --file-dir)",
                                      c->id);
        r = filedir_new_file(c->file_dirfd, FILEDIR_FILE_SIZE, &fd);
        if (r < 0)
                return xmem_error_set(err, r, "container %s: a file in %s: %s", c->id, c->file_dir,
                                      strerror(-r));
        call->result = json_object_new_object();
        json_object_object_add(call->result, "file_size",
                               json_object_new_int64((int64_t)FILEDIR_FILE_SIZE));
        call->reply_fds[0] = fd;
        call->n_reply_fds = 1;
        call->close_after = fd;
        return 0;
}
