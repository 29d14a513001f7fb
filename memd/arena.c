/* arena.c: creating and freeing external arenas (memfd + chunk state). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"
#include "macro.h"
#include "pages.h"

/* The arena's state, all pages FREE, no memfd yet. */
static int arena_alloc(uint64_t size, uint32_t chunk_size, struct store *store, bool fresh,
                       struct arena **ret)
{
        struct arena *a;

        if (chunk_size < ARENA_PAGE_SIZE || (chunk_size & (chunk_size - 1)) || size == 0)
                return -EINVAL;
        size = ALIGN_UP(size, (uint64_t)chunk_size);
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->uffd = -1;
        a->memfd = -1;
        a->pidfd = -1;
        a->size = size;
        a->chunk_size = chunk_size;
        a->n_chunks = size / chunk_size;
        a->store = store;
        stream_table_init(&a->streams);
        pthread_mutex_init(&a->lock, NULL);
        pthread_rwlock_init(&a->alias_lock, NULL);
        a->state = calloc(a->n_chunks, 1);
        a->referenced = calloc(a->n_chunks, 1);
        a->evicted_at = calloc(a->n_chunks, sizeof(*a->evicted_at));
        a->stored = malloc(a->n_chunks);
        a->charge = calloc(a->n_chunks, 1);
        if (!a->state || !a->referenced || !a->evicted_at || !a->stored || !a->charge) {
                arena_free(a);
                return -ENOMEM;
        }
        for (uint64_t i = 0; i < a->n_chunks; i++)
                a->stored[i] = !fresh;
        *ret = a;
        return 0;
}

int arena_new(uint64_t size, uint32_t chunk_size, struct store *store, bool fresh,
              struct arena **ret)
{
        struct arena *a;
        int r = arena_alloc(size, chunk_size, store, fresh, &a);

        if (r < 0)
                return r;
        size = a->size;
        /* sealed at its size: the process it is handed to can neither grow
         * it past the external quota nor shrink it under memd's pages */
        a->memfd = memfd_create("xmem-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (a->memfd < 0 || ftruncate(a->memfd, (off_t)size) < 0 ||
            fcntl(a->memfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
                r = -errno;
                arena_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

int arena_adopt(int memfd, uint64_t size, uint32_t chunk_size, struct store *store,
                struct arena **ret)
{
        struct arena *a;
        off_t at = 0, end;
        int r = arena_alloc(size, chunk_size, store, false, &a);

        if (r < 0)
                return r;
        a->memfd = memfd;
        /* The pages in the memfd are whatever the process wrote since the
         * last write-back: dirty, to be written back before they go. */
        while ((at = lseek(memfd, at, SEEK_DATA)) >= 0 && (uint64_t)at < a->size) {
                end = lseek(memfd, at, SEEK_HOLE);
                if (end < 0 || (uint64_t)end > a->size)
                        end = (off_t)a->size;
                for (uint64_t c = (uint64_t)at / chunk_size;
                     c < a->n_chunks && c * chunk_size < (uint64_t)end; c++) {
                        a->state[c] = CHUNK_DIRTY;
                        a->referenced[c] = 1;
                        a->resident_chunks++;
                }
                at = end;
        }
        if (at < 0 && errno != ENXIO) { /* ENXIO: no data beyond */
                r = -errno;
                a->memfd = -1;
                arena_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

void arena_attach(struct arena *a, int uffd, uint64_t base)
{
        safe_close(a->uffd);
        a->uffd = uffd;
        a->base = base;
}

void arena_free(struct arena *a)
{
        if (!a)
                return;
        for (uint64_t c = 0; a->quota && a->charge && c < a->n_chunks; c++)
                pages_uncharge(a, c);
        safe_close(a->uffd);
        safe_close(a->memfd);
        pthread_mutex_destroy(&a->lock);
        arena_aliases_free(a);
        pthread_rwlock_destroy(&a->alias_lock);
        free(a->state);
        free(a->referenced);
        free(a->evicted_at);
        free(a->stored);
        free(a->charge);
        free(a);
}
