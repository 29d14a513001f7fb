/* reap.c: tearing processes and containers down off the event loop
 * (docs/memd.md "Teardown"). Removing an arena waits for its fetches in
 * flight and freeing its regions goes over the wire: with an appliance that
 * does not answer, up to the transport's timeout per request. So the event
 * loop only unlinks a process (or a detached container) and queues it; one
 * thread per container, started when first needed, does the waiting, and at
 * detach frees the container itself once its queue is empty. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "log.h"
#include "memd.h"
#include "pager.h"
#include "residency.h"
#include "store.h"

struct reaper {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct process *head, **tail; /* FIFO through process.next */
        bool running;                 /* the thread is there */
        bool detached;                /* free the container when the queue is empty */
        bool stopping;                /* reaper_stop: leave when the queue is empty */
        struct manager *m;
};

void process_teardown(struct container *c, struct process *p)
{
        if (p->registered) {
                pager_remove(c->pager, p->arena);
                residency_remove_arena(c->residency, p->arena);
        }
        arena_free(p->arena);
        store_free(p->store);
        safe_close(p->pidfd);
        free(p);
}

static void reapers_done(struct manager *m)
{
        pthread_mutex_lock(&m->reap_lock);
        m->n_reapers--;
        pthread_cond_broadcast(&m->reap_cond);
        pthread_mutex_unlock(&m->reap_lock);
}

static void *reaper_main(void *arg)
{
        struct container *c = arg;
        struct reaper *r = c->reaper;
        struct manager *m = r->m;
        struct process *p;
        sigset_t all;
        bool detached;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        pthread_mutex_lock(&r->lock);
        for (;;) {
                while (!r->head && !r->detached && !r->stopping)
                        pthread_cond_wait(&r->cond, &r->lock);
                if (!r->head)
                        break;
                p = r->head;
                r->head = p->next;
                if (!r->head)
                        r->tail = &r->head;
                pthread_mutex_unlock(&r->lock);
                process_teardown(c, p);
                pthread_mutex_lock(&r->lock);
        }
        detached = r->detached;
        if (!detached) { /* reaper_stop waits for this, then frees R */
                r->running = false;
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
                reapers_done(m);
                return NULL;
        }
        r->running = false;
        pthread_mutex_unlock(&r->lock);
        log_debug("container %s: torn down", c->id);
        container_free(c); /* reaper_stop finds the thread gone */
        reapers_done(m);
        return NULL;
}

/* C's reaper, its thread started: false when there can be none (then the
 * caller tears down inline). */
static bool reaper_get(struct container *c)
{
        struct reaper *r = c->reaper;
        pthread_attr_t attr;
        pthread_t t;
        int e;

        if (r && r->running)
                return true;
        if (!c->manager)
                return false;
        if (!r) {
                r = calloc(1, sizeof(*r));
                if (!r)
                        return false;
                pthread_mutex_init(&r->lock, NULL);
                pthread_cond_init(&r->cond, NULL);
                r->tail = &r->head;
                r->m = c->manager;
                c->reaper = r;
        }
        if (pthread_attr_init(&attr) != 0)
                return false;
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&r->m->reap_lock);
        r->running = true;
        e = pthread_create(&t, &attr, reaper_main, c);
        if (e) {
                r->running = false;
                log_error("container %s: teardown thread: %s (tearing down inline)", c->id,
                          strerror(e));
        } else
                r->m->n_reapers++;
        pthread_mutex_unlock(&r->m->reap_lock);
        pthread_attr_destroy(&attr);
        return e == 0;
}

void reaper_queue(struct container *c, struct process *p)
{
        struct reaper *r;

        if (!reaper_get(c)) {
                process_teardown(c, p);
                return;
        }
        r = c->reaper;
        p->next = NULL;
        pthread_mutex_lock(&r->lock);
        *r->tail = p;
        r->tail = &p->next;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

void reaper_queue_store(struct container *c, struct store *s)
{
        struct process *p = calloc(1, sizeof(*p));

        if (!p) {
                store_free(s);
                return;
        }
        p->pidfd = -1;
        p->store = s;
        p->container = c;
        reaper_queue(c, p);
}

void reaper_detach(struct container *c)
{
        struct reaper *r;

        if (!reaper_get(c)) {
                container_free(c);
                return;
        }
        r = c->reaper;
        pthread_mutex_lock(&r->lock);
        r->detached = true;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

void reaper_stop(struct container *c)
{
        struct reaper *r = c->reaper;

        if (!r)
                return;
        pthread_mutex_lock(&r->lock);
        r->stopping = true;
        pthread_cond_signal(&r->cond);
        while (r->running)
                pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
        /* a queue left by a thread that never ran */
        while (r->head) {
                struct process *p = r->head;
                r->head = p->next;
                process_teardown(c, p);
        }
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
        c->reaper = NULL;
}

bool reapers_wait(struct manager *m, unsigned timeout_ms)
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
        pthread_mutex_lock(&m->reap_lock);
        while (m->n_reapers > 0 &&
               pthread_cond_timedwait(&m->reap_cond, &m->reap_lock, &until) != ETIMEDOUT)
                ;
        done = m->n_reapers == 0;
        pthread_mutex_unlock(&m->reap_lock);
        return done;
}
