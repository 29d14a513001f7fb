/* progress.h: xmemctl's progress line on a terminal while memd works on a
 * long operation (checkpoint, restore, move, resize, convert): what runs
 * and for how long, redrawn in place, cleared when the reply comes. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct progress {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool running, done;
        uint64_t t0_ms;
        char what[160];
};

/* Draw "xmemctl: WHAT ... N.N s" on stderr every 200 ms until
 * progress_stop (nothing if the thread cannot start). */
void progress_start(struct progress *p, const char *what);
/* Stop and erase the line. */
void progress_stop(struct progress *p);
