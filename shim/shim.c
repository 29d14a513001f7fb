/* shim.c: libxmem-shim.so's entry: the constructor (find memd, handshake,
 * hooks, fork handlers), the raw system calls, and the parts of the malloc
 * family jemalloc lacks. With no memd, or not attached, nothing else happens:
 * jemalloc serves the process with its defaults. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jemalloc/jemalloc.h>

#include "shim.h"

#define _export_ __attribute__((visibility("default")))

struct shim_state shim_state = {
        .sock = -1,
        .uffd = -1,
        .acctfd = -1,
        .devfd = -1,
        .arena = { .kind = SHIM_EXTERNAL, .fd = -1 },
        .file = { .kind = SHIM_FILE, .fd = -1 },
        .lock = PTHREAD_MUTEX_INITIALIZER,
};

static char socket_path[108];

/* jemalloc reads this at its initialisation (MALLOC_CONF overrides it): no
 * separate huge arena, whose default hooks the shim could not replace. */
const char *malloc_conf = "oversize_threshold:0";

const char *shim_socket_path(void)
{
        return socket_path;
}

void *shim_sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
        long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
        return r == -1 ? MAP_FAILED : (void *)r;
}

int shim_sys_munmap(void *addr, size_t len)
{
        return (int)syscall(SYS_munmap, addr, len);
}

void *shim_sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr)
{
        long r = syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
        return r == -1 ? MAP_FAILED : (void *)r;
}

int shim_sys_madvise(void *addr, size_t len, int advice)
{
        return (int)syscall(SYS_madvise, addr, len, advice);
}

int shim_sys_mprotect(void *addr, size_t len, int prot)
{
        return (int)syscall(SYS_mprotect, addr, len, prot);
}

/* ---- what jemalloc 5.3 does not define ---- */

_export_ void *reallocarray(void *p, size_t n, size_t size)
{
        size_t bytes;

        if (__builtin_mul_overflow(n, size, &bytes)) {
                errno = ENOMEM;
                return NULL;
        }
        return realloc(p, bytes);
}

void *pvalloc(size_t size);
_export_ void *pvalloc(size_t size)
{
        size_t page = (size_t)sysconf(_SC_PAGESIZE);

        if (size > SIZE_MAX - page) {
                errno = ENOMEM;
                return NULL;
        }
        return memalign(page, size ? (size + page - 1) & ~(page - 1) : page);
}

static int xmem_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
                        size_t newlen)
{
        struct shim_convert_stats st;

        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                return ENOENT;
        if (strcmp(name, "convert") == 0 && newp && newlen == sizeof(const char *) && !oldp) {
                const char *to = *(const char *const *)newp;
                if (!to)
                        return EINVAL;
                if (strcmp(to, "file") == 0)
                        return -shim_convert(SHIM_FILE, NULL);
                if (strcmp(to, "appliance") == 0)
                        return -shim_convert(SHIM_EXTERNAL, NULL);
                return strcmp(to, "local") == 0 ? -shim_convert(SHIM_LOCAL, NULL) : EINVAL;
        }
        if (strcmp(name, "convert_stats") == 0 && oldp && oldlenp && *oldlenp == sizeof(st) &&
            !newp) {
                shim_convert_last(&st);
                memcpy(oldp, &st, sizeof(st));
                return 0;
        }
        return ENOENT;
}

/* jemalloc's mallctl, watching arenas the application creates: an arena made
 * without hooks of its own gets the shim's. */
_export_ int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
{
        int r;

        /* "xmem.convert" (write "file", "appliance" or "local": convert now, in this
         * thread) and "xmem.convert_stats" (read struct shim_convert_stats):
         * for benchmarks and tests of conversion (docs/shim.md) */
        if (name && strncmp(name, "xmem.", 5) == 0)
                return xmem_mallctl(name + 5, oldp, oldlenp, newp, newlen);
        r = xmem_je_mallctl(name, oldp, oldlenp, newp, newlen);

        if (r == 0 && name && strcmp(name, "arenas.create") == 0 && !newp && oldp &&
            oldlenp && *oldlenp == sizeof(unsigned) &&
            atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                (void)shim_hooks_install_one(*(unsigned *)oldp);
        return r;
}

/* ---- start-up ---- */

static void shim_attach(void)
{
        const char *path = secure_getenv("XMEM_SOCKET");
        const char *step;
        int sock, r;

        if (!path || !*path)
                path = SHIM_DEFAULT_SOCKET;
        if (strlen(path) >= sizeof(socket_path))
                return;
        strcpy(socket_path, path);
        if (shim_proto_connect(socket_path, &sock) < 0)
                return; /* no memd: pass-through */
        r = shim_arena_attach(sock, NULL, &step);
        if (r < 0) {
                close(sock); /* not attached, or a failed handshake: pass-through */
                return;
        }
        /* from here on extents may be external: the hooks on every arena */
        (void)shim_hooks_install();
        pthread_atfork(shim_arena_atfork_prepare, shim_arena_atfork_parent,
                       shim_arena_atfork_child);
        /* a memd restart: the arena is handed to the next one (watch.c) */
        shim_watch_start();
}

__attribute__((constructor)) static void shim_init(void)
{
        int saved = errno;

        /* make sure jemalloc is initialised (and its fork handlers registered
         * before ours, so its child handler runs first) */
        free(malloc(1));
        shim_acct_use_private();
        shim_attach();
        errno = saved;
}
