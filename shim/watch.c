/* watch.c: noticing memd's death and handing the arena over again. A small
 * thread (all signals blocked) waits in poll() for memd's end of the
 * connection to close; then it reconnects to the container socket with
 * backoff and says shim.resume with the arena memfd and the userfaultfd this
 * process kept (docs/api.md "shim.resume"). Meanwhile faults in the arena
 * wait (the userfaultfd is ours too) and fork waits in its prepare handler. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define WATCH_BACKOFF_MIN_MS 10
#define WATCH_BACKOFF_MAX_MS 1000
/* How often the accounting page is looked at for a conversion request. */
#define WATCH_CONVERT_MS 100

static pthread_t watcher;
static bool watching;
static uint64_t convert_seen; /* the last conversion request acted on */

/* memd asked for a conversion (docs/shim.md "Conversion"): do it here, one
 * request at a time, on this thread. */
static void convert_check(void)
{
        uint64_t w = __atomic_load_n(&shim_state.acct->h.convert, __ATOMIC_ACQUIRE);
        struct xmem_acct_slot *s = shim_state.slot;
        struct shim_convert_stats st = {0};
        int r = -EINVAL;

        if (w >> 8 == convert_seen >> 8)
                return;
        convert_seen = w;
        if ((w & 0xff) == XMEM_CONVERT_FILE)
                r = shim_convert(SHIM_FILE, &st);
        else if ((w & 0xff) == XMEM_CONVERT_APPLIANCE)
                r = shim_convert(SHIM_EXTERNAL, &st);
        else if ((w & 0xff) == XMEM_CONVERT_LOCAL)
                r = shim_convert(SHIM_LOCAL, &st);
        /* the outcome for memd's stats (docs/api.md "The accounting page") */
        __atomic_store_n(&s->convert_failed, r < 0 ? 1 : st.failed, __ATOMIC_RELAXED);
        __atomic_store_n(&s->convert_errno, r < 0 ? (uint64_t)-r : st.error, __ATOMIC_RELAXED);
        __atomic_store_n(&s->convert_done, w, __ATOMIC_RELEASE);
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* One try: connect and shim.resume. The new connection on success. */
static int try_resume(int *ret_sock)
{
        int sock, r;

        r = shim_proto_connect(shim_socket_path(), &sock);
        if (r < 0)
                return r;
        r = shim_proto_resume(sock, shim_state.arena.base, shim_state.arena.size,
                              shim_state.arena.fd, shim_state.uffd, shim_state.acctfd);
        if (r < 0) {
                close(sock);
                return r;
        }
        *ret_sock = sock;
        return 0;
}

static void *watch_main(void *arg)
{
        sigset_t all;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (;;) {
                struct pollfd p = {.fd = shim_state.sock, .events = POLLRDHUP};
                unsigned backoff = WATCH_BACKOFF_MIN_MS;
                int sock = -1;

                int n = poll(&p, 1, WATCH_CONVERT_MS);
                if (n == 0)
                        convert_check();
                if (n <= 0)
                        continue;
                if (p.revents & POLLNVAL) { /* never ours to lose; do not spin */
                        sleep_ms(WATCH_BACKOFF_MAX_MS);
                        continue;
                }
                if (!(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
                        continue;
                /* memd is gone: faults wait; fork waits for us */
                shim_sock_lock();
                shim_state.memd_away = true;
                shim_sock_unlock();
                for (;;) {
                        shim_sock_lock();
                        if (try_resume(&sock) == 0) {
                                close(shim_state.sock);
                                shim_state.sock = sock;
                                shim_state.memd_away = false;
                                shim_state.resumed++;
                                shim_sock_back();
                                shim_sock_unlock();
                                /* the new memd knows no aliases yet; faults
                                 * on them wait for this (memd wakes them) */
                                (void)shim_arena_realias(false);
                                break;
                        }
                        shim_sock_unlock();
                        sleep_ms(backoff);
                        backoff =
                            backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : backoff * 2;
                }
        }
        return NULL;
}

void shim_watch_start(void)
{
        pthread_attr_t attr;

        watching = false;
        /* requests made before this process came are not its */
        convert_seen = __atomic_load_n(&shim_state.acct->h.convert, __ATOMIC_ACQUIRE);
        if (pthread_attr_init(&attr) != 0)
                return;
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        (void)pthread_attr_setstacksize(&attr, 64 * 1024);
        watching = pthread_create(&watcher, &attr, watch_main, NULL) == 0;
        pthread_attr_destroy(&attr);
}
