/* methods.c: memd's method table (docs/api.md: name, typed fields, who may
 * call, descriptors, handler) and the admin methods: attach, detach, list,
 * stats. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "memd.h"
#include "parse.h"
#include "pager.h"
#include "state.h"
#include "transport/transport.h"

static int method_attach(struct api_call *call, union api_params *p, struct xmem_error *err);
static int method_detach(struct api_call *call, union api_params *p, struct xmem_error *err);
static int method_list(struct api_call *call, union api_params *p, struct xmem_error *err);
static int method_stats(struct api_call *call, union api_params *p, struct xmem_error *err);
static int method_convert(struct api_call *call, union api_params *p, struct xmem_error *err);

#define ADMIN API_CALLER_ADMIN
#define CONTAINER API_CALLER_CONTAINER

const struct api_method api_methods[] = {
    {"attach", api_attach_fields, api_check_attach, ADMIN, 0, method_attach, 0},
    {"detach", api_detach_fields, api_check_id, ADMIN, 0, method_detach, 0},
    {"list", api_no_fields, NULL, ADMIN, 0, method_list, 0},
    {"stats", api_stats_fields, api_check_id, ADMIN | CONTAINER, 0, method_stats, 0},
    {"convert", api_convert_fields, api_check_convert, ADMIN, 0, method_convert, 0},
    {"resize", api_resize_fields, api_check_resize, ADMIN, 0, method_resize, 0},
    {"move", api_move_fields, api_check_move, ADMIN, 0, method_move, 0},
    {"checkpoint", api_checkpoint_fields, api_check_snapshot, ADMIN, 0, method_checkpoint, 0},
    {"snapshots", api_snapshots_fields, api_check_snapshot, ADMIN, 0, method_snapshots, 0},
    {"delete-snapshot", api_delete_snapshot_fields, api_check_snapshot, ADMIN, 0,
     method_delete_snapshot, 0},
    {"restore", api_restore_fields, api_check_snapshot, ADMIN, 0, method_restore, 0},
    {"shim.hello", api_hello_fields, api_check_hello, CONTAINER, 0, method_hello, 0},
    {"shim.register", api_register_fields, api_check_register, CONTAINER, 1, method_register, 0},
    {"shim.fork", api_no_fields, NULL, CONTAINER, 0, method_fork, 0},
    {"shim.discard", api_discard_fields, api_check_discard, CONTAINER, 0, method_discard, 0},
    {"shim.file", api_no_fields, NULL, CONTAINER, 0, method_file, 0},
    {"shim.alias", api_alias_fields, api_check_alias, CONTAINER, 0, method_alias, 0},
    /* after a memd restart: the arena memfd and the userfaultfd again, and
     * the accounting page the shim charges (adopt.c) */
    {"shim.resume", api_register_fields, api_check_register, CONTAINER, 2, method_resume, 1},
};
const size_t api_methods_n = ELEMENTSOF(api_methods);

static json_object *attach_result(const struct manager *m, const struct container *c)
{
        json_object *o = container_to_json(c);
        char path[4096];

        ctrsock_path(m, c, path, sizeof(path));
        json_object_object_add(o, "socket", json_object_new_string(path));
        return o;
}

static int method_attach(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct api_attach *a = &p->attach;
        struct manager *m = call->m;
        struct xmem_transport **ts = m->transports;
        size_t n = m->n_transports;
        struct container *c = manager_find_container(m, a->id);
        int r;

        if (!a->file_dir) /* memd's default directory, if it has one */
                a->file_dir = m->cfg.file_dir;
        if (c) {
                if (!container_same(c, a))
                        return xmem_error_set(err, -EEXIST,
                                              "container %s is attached with other "
                                              "parameters (detach it first)",
                                              a->id);
                call->result = attach_result(m, c);
                return 0;
        }
        if (n == 0)
                return xmem_error_set(err, -ENODEV, "memd has no appliance to give memory from");
        for (c = m->containers; c; c = c->next)
                if (strcmp(c->cgroup_dir, a->cgroup) == 0)
                        return xmem_error_set(err, -EEXIST,
                                              "params.cgroup: %s belongs to "
                                              "container %s",
                                              a->cgroup, c->id);
        if (a->appliance) {
                size_t i;
                for (i = 0; i < m->n_transports; i++)
                        if (strcmp(a->appliance, m->cfg.appliances[i]) == 0 ||
                            strcmp(a->appliance, xmem_transport_uri(m->transports[i])) == 0)
                                break;
                if (i == m->n_transports)
                        return xmem_error_set(err, -ENOENT,
                                              "params.appliance: %s is not one of "
                                              "memd's appliances",
                                              a->appliance);
                ts = &m->transports[i];
                n = 1;
        }
        struct pager_opts po = {.workers = (int)m->cfg.fill_workers,
                                .poll_us = m->cfg.poll_us,
                                .give_up_ms = m->cfg.appliance_timeout_ms};
        r = container_new(a, m->cg_version, m->cg_mount, ts, n, m->cfg.chunk_size, &po, &c, err);
        if (r < 0)
                return r;
        /* on disk before memd answers: a restarted memd re-adopts it */
        c->manager = m;
        c->saved = true;
        r = a->restore ? restore_plan_make(m, c, a->restore, err) : 0;
        if (r >= 0)
                r = state_save(m, c, err);
        if (r >= 0)
                r = ctrsock_open(m, c, err);
        if (r < 0) {
                if (c->saved)
                        (void)state_remove(m, c);
                c->saved = false;
                ctrsock_close(m, c);
                container_free(c);
                return r;
        }
        container_ready(c);
        c->next = m->containers;
        m->containers = c;
        /* overcommit is the operator's to choose (pages are taken as they
         * are written), but one container's quota beyond every pool is
         * worth a line: its writes past the pools get ENOSPC from them */
        uint64_t pools = 0;
        for (size_t i = 0; i < n; i++)
                pools += xmem_transport_hello(ts[i])->pool_size;
        if (c->external > pools) {
                char want[32], have[32];
                log_warning("container %s: external quota %s is more than its appliances' "
                            "pools hold (%s)",
                            c->id, format_size(want, sizeof(want), c->external),
                            format_size(have, sizeof(have), pools));
        }
        log_info("container %s: attached (cgroup %s, local %llu, external %llu)", c->id,
                 c->cgroup_dir, (unsigned long long)c->local_limit,
                 (unsigned long long)c->external);
        call->result = attach_result(m, c);
        return 0;
}

static int method_detach(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct container *c = call_container(call, p->id.id, err);
        size_t live = 0;

        if (!c)
                return err->code;
        for (struct process *pr = c->processes, *next; pr; pr = next) {
                next = pr->next;
                if (pidfd_exited(pr->pidfd))
                        container_remove_process(c, pr);
                else if (pr->registered || pr->registering || pr->pending)
                        live++;
        }
        if (live && !p->id.force)
                return xmem_error_set(err, -EBUSY,
                                      "container %s has %zu live process(es) using "
                                      "external memory: stop them first, or pass force",
                                      c->id, live);
        call->result = json_object_new_object();
        json_object_object_add(call->result, "id", json_object_new_string(c->id));
        json_object_object_add(call->result, "detached", json_object_new_boolean(true));
        log_info("container %s: detached", c->id);
        manager_remove_container(call->m, c);
        return 0;
}

static int method_list(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        json_object *arr = json_object_new_array();

        for (struct container *c = call->m->containers; c; c = c->next)
                json_object_array_add(arr, attach_result(call->m, c));
        call->result = json_object_new_object();
        json_object_object_add(call->result, "containers", arr);
        return 0;
}

static int method_stats(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct container *c = call_container(call, p->id.id, err);

        if (!c)
                return err->code;
        call->result = container_stats_json(c);
        return 0;
}

/* Ask every shim of the container to convert (docs/shim.md "Conversion"):
 * a new request in the accounting page, which their watcher threads poll. */
static int method_convert(struct api_call *call, union api_params *p, struct xmem_error *err)
{
        struct api_convert *cv = &p->convert;
        struct container *c = manager_find_container(call->m, cv->id);

        if (!c)
                return xmem_error_set(err, -ENOENT, "no container %s", cv->id);
        if (cv->target == XMEM_CONVERT_FILE && c->file_dirfd < 0)
                return xmem_error_set(err, -EOPNOTSUPP,
                                      "container %s has no file directory (io.xmem.file-dir, "
                                      "memd --file-dir)",
                                      c->id);
        container_convert_request(c, cv->target);
        c->convert_pinned = cv->target != XMEM_CONVERT_LOCAL;
        uint64_t seq = __atomic_load_n(&c->acct->h.convert, __ATOMIC_RELAXED) >> 8;
        call->result = json_object_new_object();
        json_object_object_add(call->result, "id", json_object_new_string(c->id));
        json_object_object_add(call->result, "to", json_object_new_string(cv->to));
        json_object_object_add(call->result, "request", json_object_new_int64((int64_t)seq));
        return 0;
}
