/* arena.c: creating and freeing external arenas (memfd + chunk state). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"
#include "macro.h"

int arena_new(uint64_t size, uint32_t chunk_size, struct store *store, bool fresh,
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
        /* sealed at its size: the process it is handed to can neither grow
         * it past the external quota nor shrink it under memd's pages */
        a->memfd = memfd_create("xmem-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (a->memfd < 0 || ftruncate(a->memfd, (off_t)size) < 0 ||
            fcntl(a->memfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
                int r = -errno;
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
                if (a->charge[c] == PAGE_CHARGED || a->charge[c] == PAGE_CHARGING)
                        atomic_fetch_sub(&a->quota->used, 1);
        safe_close(a->uffd);
        safe_close(a->memfd);
        pthread_mutex_destroy(&a->lock);
        free(a->state);
        free(a->referenced);
        free(a->evicted_at);
        free(a->stored);
        free(a->charge);
        free(a);
}
