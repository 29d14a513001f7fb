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
#include "log.h"
#include "memd.h"
#include "store.h"
#include "uffd.h"

static void token_free(struct manager *m, struct fork_token **tp)
{
        struct fork_token *t = *tp;

        *tp = t->next;
        t->container->n_fork_tokens--;
        store_free(t->store);
        free(t->written);
        free(t);
}

void fork_tokens_free(struct manager *m, const struct container *c, uint64_t before_usec)
{
        for (struct fork_token **tp = &m->tokens; *tp;)
                if ((!c || (*tp)->container == c) && (*tp)->created_usec < before_usec)
                        token_free(m, tp);
                else
                        tp = &(*tp)->next;
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
                store_free(from);
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
        if (h->version >= 2)
                call->reply_fds[call->n_reply_fds++] = c->acct_fd;
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

int method_register(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct process *p = NULL;
        int r = caller_process(call, &p, err), uffd;

        if (r < 0)
                return r;
        if (!is_userfaultfd(call->fds[0]))
                return xmem_error_set(err, -EINVAL, "the descriptor sent is not a userfaultfd");
        uffd = call->fds[0];
        call->fds[0] = -1; /* taken over, also on failure */
        r = container_register(p->container, p, uffd, params->reg.base, params->reg.size, err);
        if (r < 0)
                return r;
        call->result = json_object_new_object();
        json_object_object_add(call->result, "registered", json_object_new_boolean(true));
        return 0;
}

int method_fork(struct api_call *call, union api_params *params, struct xmem_error *err)
{
        struct container *c = call->conn->container;
        struct fork_token *t;
        struct process *p = NULL;
        uint8_t rnd[API_TOKEN_LEN / 2];
        int r = caller_process(call, &p, err);

        if (r < 0)
                return r;
        if (c->n_fork_tokens >= call->m->cfg.bounds.fork_tokens)
                return xmem_error_set(err, -EAGAIN,
                                      "container %s: %zu fork tokens outstanding, "
                                      "the most memd keeps per container",
                                      c->id, c->n_fork_tokens);
        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                return xmem_error_set(err, -EIO, "getrandom failed");
        t = calloc(1, sizeof(*t));
        if (!t)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        r = container_fork_store(c, p, &t->store, &t->written, err);
        if (r < 0) {
                free(t);
                return r;
        }
        for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(t->token + 2 * i, 3, "%02x", rnd[i]);
        t->created_usec = manager_now_usec(call->m);
        t->container = c;
        t->size = p->arena->size;
        t->next = call->m->tokens;
        call->m->tokens = t;
        c->n_fork_tokens++;
        call->result = json_object_new_object();
        json_object_object_add(call->result, "token", json_object_new_string(t->token));
        return 0;
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
        call->result = json_object_new_object();
        json_object_object_add(
            call->result, "uncharged",
            json_object_new_int64((int64_t)container_discard(p, d->offset, d->length)));
        return 0;
}
