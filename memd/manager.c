/* manager.c: memd's life cycle on an sd-event loop: start (appliances, the
 * embedded one, the admin socket, the containers' socket directory), signals,
 * the 1 s check of containers and fork tokens, process exits, and stop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embedded.h"
#include "log.h"
#include "memd.h"
#include "metrics.h"
#include "state.h"
#include "store.h"
#include "transport/transport.h"

#define CHECK_INTERVAL_USEC 1000000ULL
#define RESIZE_CHECK_INTERVAL_USEC 100000ULL
#define WORKERS_WAIT_MS 30000

int manager_new(const struct manager_config *cfg, struct manager **ret, struct xmem_error *err)
{
        struct manager *m = calloc(1, sizeof(*m));
        char *slash;
        int r;

        if (!m)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        m->cfg = *cfg;
        pthread_mutex_init(&m->work_lock, NULL);
        pthread_cond_init(&m->work_cond, NULL);
        pthread_mutex_init(&m->jobs_lock, NULL);
        m->jobs_tail = &m->jobs_done;
        m->listen_fd = m->containers_dirfd = m->state_dirfd = m->state_lockfd = m->jobs_efd = -1;
        m->snap_dirfd = -1;
        if (!m->cfg.cgroup_root)
                m->cfg.cgroup_root = CGROUP_FS_ROOT;
        if (!m->cfg.bounds.conns)
                m->cfg.bounds = MANAGER_BOUNDS_DEFAULT;
        m->run_dir = strdup(m->cfg.socket_path);
        if (!m->run_dir) {
                free(m);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        slash = strrchr(m->run_dir, '/');
        *(slash == m->run_dir ? slash + 1 : slash) = 0;
        r = cgroup_detect(m->cfg.cgroup_root, &m->cg_version, &m->cg_mount);
        if (r < 0) {
                xmem_error_set(err, r, "no memory cgroup hierarchy under %s", m->cfg.cgroup_root);
                manager_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

static int on_embedded_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct manager *m = userdata;

        /* memd cannot start it again itself once hardened (no exec): it
         * stops, and its restart starts the appliance on the same pool file */
        log_error("embedded appliance exited: memd stops so that its restart starts it again "
                  "on its pool file (faults wait, none reads zeros)");
        return sd_event_exit(m->event, -ECHILD);
}

/* The embedded appliance's socket lives in RUN_DIR/appliance (0700): never in
 * a directory a container sees. */
static int start_embedded(struct manager *m, struct xmem_error *err)
{
        _cleanup_free_ char *dir = NULL;
        int r;

        if (asprintf(&dir, "%s/appliance", m->run_dir) < 0)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        /* before the API socket makes it: memd started by hand on a fresh
         * boot (systemd's RuntimeDirectory= makes it for the unit) */
        if (mkdir(m->run_dir, 0755) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "mkdir %s: %m", m->run_dir);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "mkdir %s: %m", dir);
        if (chmod(dir, 0700) < 0)
                return xmem_error_set(err, negative_errno(), "chmod %s: %m", dir);
        r = embedded_start(dir, m->cfg.state_dir ?: MANAGER_DEFAULT_STATE_DIR,
                           m->cfg.embedded_size ?: EMBEDDED_DEFAULT_SIZE, m->cfg.chunk_size,
                           &m->embedded, err);
        if (r < 0)
                return r;
        r = sd_event_add_io(m->event, &m->embedded_src, m->embedded->pidfd, EPOLLIN,
                            on_embedded_exit, m);
        return r < 0 ? xmem_error_set(err, r, "sd-event: %s", strerror(-r)) : 0;
}

static int start_appliances(struct manager *m, struct xmem_error *err)
{
        size_t n = m->cfg.n_appliances;
        int r;

        if (n == 0 || m->cfg.embedded_size) {
                r = start_embedded(m, err);
                if (r < 0)
                        return r;
                m->cfg.appliances[n++] = m->embedded->uri;
        }
        struct xmem_transport_opts opts = {.secret_file = m->cfg.secret_file};
        for (size_t i = 0; i < n; i++) {
                r = xmem_transport_open(m->cfg.appliances[i], &opts, &m->transports[i], err);
                if (r < 0)
                        return xmem_error_prefix(err, "appliance %s", m->cfg.appliances[i]);
                m->n_transports++;
                log_info("appliance %s: connected", m->cfg.appliances[i]);
        }
        m->cfg.n_appliances = n;
        return 0;
}

uint64_t manager_now_usec(struct manager *m)
{
        uint64_t usec = 0;

        (void)sd_event_now(m->event, CLOCK_MONOTONIC, &usec);
        return usec;
}

static int on_check(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct manager *m = userdata;

        for (struct container *c = m->containers, *next; c; c = next) {
                next = c->next;
                if (!cgroup_exists(c->cg)) {
                        log_info("container %s: cgroup %s is gone, detaching", c->id,
                                 c->cgroup_dir);
                        manager_remove_container(m, c);
                }
        }
        usec = manager_now_usec(m);
        bool resizing = false;
        for (struct container *c = m->containers; c; c = c->next) {
                container_resize_tick(c, usec);
                container_convert_tick(c, usec);
                resizing |= c->resize_pending;
        }
        fork_tokens_free(m, NULL, usec > FORK_TOKEN_TTL_USEC ? usec - FORK_TOKEN_TTL_USEC : 0);
        /* a lowered limit comes down a step per check: faster while one does */
        (void)sd_event_source_set_time_relative(s, resizing ? RESIZE_CHECK_INTERVAL_USEC
                                                             : CHECK_INTERVAL_USEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        struct manager *m = userdata;

        log_info("signal %u: stopping", si->ssi_signo);
        return sd_event_exit(m->event, 0);
}

static int start_events(struct manager *m, struct xmem_error *err)
{
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        r = sd_event_new(&m->event);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &m->timer_src, CLOCK_MONOTONIC,
                                               CHECK_INTERVAL_USEC, 0, on_check, m);
        /* WATCHDOG_USEC from systemd: the loop pings it (no-op without) */
        if (r >= 0)
                r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return xmem_error_set(err, r, "event loop: %s", strerror(-r));
        return jobs_start(m, err); /* the workers' finished jobs */
}

int manager_start(struct manager *m, struct xmem_error *err)
{
        int r;

        r = start_events(m, err);
        if (r >= 0)
                r = start_appliances(m, err);
        if (r >= 0)
                r = conn_listen_admin(m, err);
        if (r >= 0 && m->cfg.metrics)
                r = metrics_start(m, m->cfg.metrics, &m->metrics, err);
        if (r >= 0)
                r = ctrsock_open_root(m, err);
        /* the containers the last memd left: attached again before the
         * admin socket answers anything (a retried attach finds them) */
        if (r >= 0)
                r = state_open(m, err);
        if (r >= 0)
                r = adopt_all(m, err);
        if (r < 0)
                return r;
        log_info("listening on %s, containers' sockets in %s, cgroup v%d at %s, chunk %u",
                 m->cfg.socket_path, m->containers_dir, (int)m->cg_version, m->cg_mount,
                 m->cfg.chunk_size);
        return 0;
}

struct container *manager_find_container(struct manager *m, const char *id)
{
        for (struct container *c = m->containers; c; c = c->next)
                if (strcmp(c->id, id) == 0)
                        return c;
        return NULL;
}

void manager_remove_container(struct manager *m, struct container *c)
{
        /* its jobs done are finished first (with the state file), the
         * others left to its worker, which abandons them */
        jobs_cancel(m, c);
        /* detached (or its cgroup gone): off the disk before its regions go */
        if (c->saved) {
                int r = state_remove(m, c);
                if (r < 0) {
                        log_error("container %s: removing its state file: %s: its regions are "
                                  "left on the appliance", c->id, strerror(-r));
                        container_keep(c);
                }
                c->saved = false;
        }
        fork_tokens_free(m, c, UINT64_MAX);
        conn_close_all(m, c);
        ctrsock_close(m, c);
        for (struct container **cp = &m->containers; *cp; cp = &(*cp)->next)
                if (*cp == c) {
                        *cp = c->next;
                        break;
                }
        /* detached (or its cgroup gone): it may be attached again at once,
         * its OOM pause off now. memd stopping leaves it on, as a crash
         * does: the container waits for the next memd (its arena pages
         * cannot be reclaimed without one) rather than meet the OOM killer;
         * container_restart's SIGTERM case was SIGKILLed that way */
        if (!m->keep)
                (void)cgroup_set_oom_pause(c->cg, false);
        c->oom_unpaused = true;
        /* everything that may wait for an appliance happens on C's worker
         * thread (memd/worker.c): the event loop answers on */
        while (c->processes)
                container_remove_process(c, c->processes);
        worker_detach(c);
}

static int on_process_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct process *p = userdata;
        struct container *c = p->container;

        log_debug("container %s: process %d exited, freeing its arena", c->id, (int)p->pid);
        container_remove_process(c, p); /* unrefs S: sd-event allows it in its own handler */
        return 0;
}

int manager_watch_process(struct manager *m, struct process *p)
{
        sd_event_source *s = NULL;
        int r = sd_event_add_io(m->event, &s, p->pidfd, EPOLLIN, on_process_exit, p);

        if (r >= 0)
                p->exit_src = s;
        return r;
}

int manager_run(struct manager *m)
{
        int r = sd_event_loop(m->event);

        if (r < 0)
                log_error_errno(r, "event loop: %m");
        return r;
}

void manager_free(struct manager *m)
{
        bool torn_down;

        if (!m)
                return;
        /* memd stops (SIGTERM, an upgrade, a fatal error): live containers
         * keep their regions, state files and socket directories for the
         * next memd; only detach and a vanished cgroup free them */
        m->keep = true;
        for (struct container *c = m->containers; c; c = c->next)
                container_keep(c);
        while (m->containers)
                manager_remove_container(m, m->containers);
        conn_close_all(m, NULL);
        metrics_free(m->metrics); /* before the transports its scrapes read */
        /* bounded: a teardown or a cancelled job still waiting for an
         * appliance then is left to the exit (with the transports and M it
         * uses: not freed) */
        torn_down = workers_wait(m, WORKERS_WAIT_MS);
        if (!torn_down)
                log_error("teardown of detached containers still waiting for an appliance "
                          "after %u ms: exiting without it", WORKERS_WAIT_MS);
        jobs_stop(m);
        for (size_t i = 0; torn_down && i < m->n_transports; i++)
                xmem_transport_close(m->transports[i]);
        sd_event_source_disable_unref(m->embedded_src);
        embedded_release(m->embedded); /* it outlives memd: docs/memd.md */
        sd_event_source_disable_unref(m->listen_src);
        sd_event_source_disable_unref(m->accept_retry_src);
        sd_event_source_disable_unref(m->timer_src);
        if (m->listen_fd >= 0 && !m->listen_activated)
                (void)unlink(m->cfg.socket_path);
        safe_close(m->listen_fd);
        safe_close(m->containers_dirfd);
        state_close(m);
        sd_event_unref(m->event);
        free(m->containers_dir);
        free(m->run_dir);
        free(m->cg_mount);
        if (!torn_down)
                return;
        pthread_mutex_destroy(&m->work_lock);
        pthread_cond_destroy(&m->work_cond);
        pthread_mutex_destroy(&m->jobs_lock);
        free(m);
}
