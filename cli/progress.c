/* progress.c: xmemctl's progress line (progress.h). */
#include <stdio.h>
#include <time.h>

#include "progress.h"

#define PROGRESS_TICK_MS 200

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *progress_main(void *arg)
{
        struct progress *p = arg;

        pthread_mutex_lock(&p->lock);
        while (!p->done) {
                struct timespec until;
                uint64_t ms = now_ms() - p->t0_ms;

                fprintf(stderr, "\r\033[Kxmemctl: %s ... %llu.%llu s", p->what,
                        (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000 / 100));
                fflush(stderr);
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += PROGRESS_TICK_MS * 1000000L;
                if (until.tv_nsec >= 1000000000L) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000L;
                }
                while (!p->done && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
                        ;
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

void progress_start(struct progress *p, const char *what)
{
        *p = (struct progress){.t0_ms = now_ms()};
        snprintf(p->what, sizeof(p->what), "%s", what);
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->running = pthread_create(&p->thread, NULL, progress_main, p) == 0;
}

void progress_stop(struct progress *p)
{
        if (!p->running)
                return;
        pthread_mutex_lock(&p->lock);
        p->done = true;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        p->running = false;
}
