/* reap.c: tearing processes down off the event loop (docs/memd.md "Off the
 * event loop"). Removing an arena waits for its fetches in flight and
 * freeing its regions goes over the wire: with an appliance that does not
 * answer, up to the transport's timeout per request. So the event loop only
 * unlinks a process and queues its teardown to the container's worker
 * (memd/worker.c). */
#include <stddef.h>
#include <stdlib.h>

#include "arena.h"
#include "memd.h"
#include "pager.h"
#include "residency.h"
#include "store.h"

void process_teardown(struct container *c, struct process *p)
{
        if (p->served) {
                pager_remove(c->pager, p->arena);
                residency_remove_arena(c->residency, p->arena);
        }
        arena_free(p->arena);
        store_free(p->store);
        safe_close(p->pidfd);
        free(p);
}

static void teardown_run(struct job *j)
{
        struct process *p = (struct process *)((char *)j - offsetof(struct process, teardown));

        process_teardown(j->container, p);
}

void reaper_queue(struct container *c, struct process *p)
{
        p->teardown = (struct job){.run = teardown_run};
        worker_queue(c, &p->teardown);
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
