/* worker.c: each container's worker thread and the event loop's side of it
 * (docs/memd.md "Off the event loop"). Whatever may wait for a container's
 * appliance (a teardown, the fork snapshot, a registration behind the
 * evictor's lock) runs there, in FIFO order, so that memd's event loop never
 * waits and one container never waits for another's appliance. A method's
 * job is finished on the event loop: the worker hands it back through a
 * completion queue and an eventfd, and the loop does what touches its own
 * state (the process list, fork tokens, the state file) and sends the reply
 * to the connection, which was paused meanwhile. At detach the container's
 * jobs still on the worker are cancelled and the thread frees the container
 * once its queue is empty. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "memd.h"

struct worker {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct job *head, **tail; /* FIFO through job.next */
        bool running;             /* the thread is there */
        bool detached;            /* free the container when the queue is empty */
        bool stopping;            /* worker_stop: leave when the queue is empty */
        struct manager *m;
};

static void workers_done(struct manager *m)
{
        pthread_mutex_lock(&m->work_lock);
        m->n_workers--;
        pthread_cond_broadcast(&m->work_cond);
        pthread_mutex_unlock(&m->work_lock);
}

/* J ran: to the event loop's completion queue. */
static void job_complete(struct manager *m, struct job *j)
{
        uint64_t one = 1;

        pthread_mutex_lock(&m->jobs_lock);
        j->finished = true;
        j->next = NULL;
        *m->jobs_tail = j;
        m->jobs_tail = &j->next;
        pthread_mutex_unlock(&m->jobs_lock);
        if (write(m->jobs_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_error_errno(-errno, "jobs eventfd: %m");
}

/* One job of W's queue (W->lock held, dropped while it runs). */
static void worker_run(struct worker *w, struct job *j)
{
        bool has_done = j->done != NULL, cancelled = j->cancelled;

        pthread_mutex_unlock(&w->lock);
        if (!cancelled || !has_done) /* a cancelled method job is not started */
                j->run(j);           /* a job without DONE may be gone now */
        pthread_mutex_lock(&w->lock);
        if (!has_done)
                return;
        if (j->cancelled) {
                pthread_mutex_unlock(&w->lock);
                if (j->abandon)
                        j->abandon(j);
                free(j);
                pthread_mutex_lock(&w->lock);
        } else
                job_complete(w->m, j); /* under W->lock: jobs_cancel sees it done or not */
}

static void *worker_main(void *arg)
{
        struct container *c = arg;
        struct worker *w = c->worker;
        struct manager *m = w->m;
        sigset_t all;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        pthread_mutex_lock(&w->lock);
        for (;;) {
                while (!w->head && !w->detached && !w->stopping)
                        pthread_cond_wait(&w->cond, &w->lock);
                if (!w->head)
                        break;
                struct job *j = w->head;
                w->head = j->next;
                if (!w->head)
                        w->tail = &w->head;
                worker_run(w, j);
        }
        w->running = false;
        if (!w->detached) { /* worker_stop waits for this, then frees W */
                pthread_cond_broadcast(&w->cond);
                pthread_mutex_unlock(&w->lock);
                workers_done(m);
                return NULL;
        }
        pthread_mutex_unlock(&w->lock);
        log_debug("container %s: torn down", c->id);
        container_free(c); /* worker_stop finds the thread gone */
        workers_done(m);
        return NULL;
}

/* C's worker, its thread started: false when there can be none. */
static bool worker_get(struct container *c)
{
        struct worker *w = c->worker;
        pthread_attr_t attr;
        pthread_t t;
        int e;

        if (w && w->running)
                return true;
        if (!c->manager)
                return false;
        if (!w) {
                w = calloc(1, sizeof(*w));
                if (!w)
                        return false;
                pthread_mutex_init(&w->lock, NULL);
                pthread_cond_init(&w->cond, NULL);
                w->tail = &w->head;
                w->m = c->manager;
                c->worker = w;
        }
        if (pthread_attr_init(&attr) != 0)
                return false;
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&w->m->work_lock);
        w->running = true;
        e = pthread_create(&t, &attr, worker_main, c);
        if (e) {
                w->running = false;
                log_error("container %s: worker thread: %s (working inline)", c->id, strerror(e));
        } else
                w->m->n_workers++;
        pthread_mutex_unlock(&w->m->work_lock);
        pthread_attr_destroy(&attr);
        return e == 0;
}

void worker_queue(struct container *c, struct job *j)
{
        struct worker *w;

        j->container = c;
        j->next = NULL;
        if (!worker_get(c)) {
                bool has_done = j->done != NULL;
                j->run(j);
                if (has_done) /* no worker without a manager: C->manager is set */
                        job_complete(c->manager, j);
                return;
        }
        w = c->worker;
        pthread_mutex_lock(&w->lock);
        *w->tail = j;
        w->tail = &j->next;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

void worker_detach(struct container *c)
{
        struct worker *w;

        if (!worker_get(c)) {
                container_free(c);
                return;
        }
        w = c->worker;
        pthread_mutex_lock(&w->lock);
        w->detached = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

void worker_stop(struct container *c)
{
        struct worker *w = c->worker;

        if (!w)
                return;
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        pthread_cond_signal(&w->cond);
        while (w->running)
                pthread_cond_wait(&w->cond, &w->lock);
        /* a queue left by a thread that never ran */
        while (w->head) {
                struct job *j = w->head;
                w->head = j->next;
                j->cancelled = true;
                worker_run(w, j);
        }
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w);
        c->worker = NULL;
}

/* ---- a worker's call into the event loop ---- */

struct loop_call {
        int (*fn)(struct manager *m, void *data);
        void *data;
        int r;
        bool done;
        struct loop_call *next;
};

int worker_call_loop(struct manager *m, int (*fn)(struct manager *m, void *data), void *data)
{
        struct loop_call lc = {.fn = fn, .data = data};
        uint64_t one = 1;

        pthread_mutex_lock(&m->work_lock);
        lc.next = m->loop_calls;
        m->loop_calls = &lc;
        pthread_cond_broadcast(&m->work_cond); /* workers_wait runs it while memd stops */
        pthread_mutex_unlock(&m->work_lock);
        if (write(m->jobs_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_error_errno(-errno, "jobs eventfd: %m");
        pthread_mutex_lock(&m->work_lock);
        while (!lc.done)
                pthread_cond_wait(&m->work_cond, &m->work_lock);
        pthread_mutex_unlock(&m->work_lock);
        return lc.r;
}

/* On the event loop's thread, work_lock held (dropped while each runs). */
static void loop_calls_run(struct manager *m)
{
        if (!m->loop_calls)
                return;
        while (m->loop_calls) {
                struct loop_call *lc = m->loop_calls;
                int r;

                m->loop_calls = lc->next;
                pthread_mutex_unlock(&m->work_lock);
                r = lc->fn(m, lc->data);
                pthread_mutex_lock(&m->work_lock);
                lc->r = r;
                lc->done = true;
        }
        pthread_cond_broadcast(&m->work_cond);
}

bool workers_wait(struct manager *m, unsigned timeout_ms)
{
        struct timespec until;
        bool done;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&m->work_lock);
        for (;;) {
                loop_calls_run(m); /* a worker may wait for one to finish */
                if (m->n_workers == 0 ||
                    pthread_cond_timedwait(&m->work_cond, &m->work_lock, &until) == ETIMEDOUT)
                        break;
        }
        done = m->n_workers == 0;
        pthread_mutex_unlock(&m->work_lock);
        return done;
}

/* ---- the event loop's side ---- */

int job_defer(struct api_call *call, struct job *j)
{
        /* a shim method's container is its socket's; an admin method sets it */
        struct container *c = j->container ? j->container : call->conn->container;

        j->conn = call->conn;
        j->loop_next = c->jobs;
        c->jobs = j;
        conn_pause(call->conn, j);
        worker_queue(c, j);
        return API_DEFERRED;
}

static void jobs_unlink(struct container *c, struct job *j)
{
        for (struct job **jp = &c->jobs; *jp; jp = &(*jp)->loop_next)
                if (*jp == j) {
                        *jp = j->loop_next;
                        return;
                }
}

/* J's DONE and its reply; J is freed. */
static void job_finish(struct manager *m, struct job *j)
{
        struct api_call call = {.m = m, .conn = j->conn, .close_after = -1};
        struct xmem_error err = {};
        int r;

        jobs_unlink(j->container, j);
        r = j->done(j, &call, &err);
        if (r < 0 && !err.msg[0])
                xmem_error_set(&err, r, "%s", strerror(-r));
        if (r < 0)
                xmem_error_prefix(&err, "%s", j->method);
        if (j->conn)
                conn_reply(j->conn, r, &call, &err);
        else
                json_object_put(call.result);
        safe_close(call.close_after);
        if (j->conn)
                conn_resume(j->conn);
        free(j);
}

static int on_jobs_done(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct manager *m = userdata;
        struct job *list;
        uint64_t n;

        if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
                log_error_errno(-errno, "jobs eventfd: %m");
        pthread_mutex_lock(&m->work_lock);
        loop_calls_run(m);
        pthread_mutex_unlock(&m->work_lock);
        pthread_mutex_lock(&m->jobs_lock);
        list = m->jobs_done;
        m->jobs_done = NULL;
        m->jobs_tail = &m->jobs_done;
        pthread_mutex_unlock(&m->jobs_lock);
        while (list) {
                struct job *j = list;
                list = j->next;
                job_finish(m, j);
        }
        return 0;
}

int jobs_start(struct manager *m, struct xmem_error *err)
{
        int r;

        m->jobs_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->jobs_efd < 0)
                return xmem_error_set(err, negative_errno(), "eventfd: %m");
        r = sd_event_add_io(m->event, &m->jobs_src, m->jobs_efd, EPOLLIN, on_jobs_done, m);
        return r < 0 ? xmem_error_set(err, r, "sd-event: %s", strerror(-r)) : 0;
}

void jobs_stop(struct manager *m)
{
        m->jobs_src = sd_event_source_disable_unref(m->jobs_src);
        safe_close(m->jobs_efd);
        m->jobs_efd = -1;
}

void jobs_cancel(struct manager *m, struct container *c)
{
        struct job *ready = NULL, **rt = &ready;
        struct worker *w = c->worker;

        if (!c->jobs)
                return;
        /* with W's lock held no job of C moves to the completion queue: each
         * is either there (finished here, its reply sent) or cancelled */
        if (w)
                pthread_mutex_lock(&w->lock);
        pthread_mutex_lock(&m->jobs_lock);
        for (struct job **jp = &m->jobs_done; *jp;)
                if ((*jp)->container == c) {
                        struct job *j = *jp;
                        *jp = j->next;
                        *rt = j;
                        rt = &j->next;
                } else
                        jp = &(*jp)->next;
        *rt = NULL;
        m->jobs_tail = &m->jobs_done;
        while (*m->jobs_tail)
                m->jobs_tail = &(*m->jobs_tail)->next;
        pthread_mutex_unlock(&m->jobs_lock);
        for (struct job **jp = &c->jobs; *jp;) {
                struct job *j = *jp;
                if (j->finished) {
                        jp = &j->loop_next;
                        continue;
                }
                j->cancelled = true; /* the worker's now: abandoned there */
                if (j->conn)
                        j->conn->job = NULL;
                *jp = j->loop_next;
        }
        if (w)
                pthread_mutex_unlock(&w->lock);
        while (ready) {
                struct job *j = ready;
                ready = j->next;
                job_finish(m, j);
        }
}

void jobs_forget_process(struct container *c, struct process *p)
{
        for (struct job *j = c->jobs; j; j = j->loop_next)
                if (j->process == p)
                        j->process = NULL;
}

void jobs_forget_conn(struct conn *cn)
{
        if (cn->job)
                cn->job->conn = NULL;
        cn->job = NULL;
}
