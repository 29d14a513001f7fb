/* pool.h: the appliance's memory pool: an anonymous memfd or a file, mapped
 * MAP_SHARED, cut into chunks; freed chunks are punched so memory returns. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "chunk.h"
#include "error.h"

struct pool {
        int fd;
        uint8_t *base;
        uint64_t size;
        uint64_t chunk_size;
        bool persistent; /* backed by --pool-file */
};

/* PATH NULL: anonymous memfd. Else the file is created or grown to SIZE. */
int pool_open(struct pool *p, const char *path, uint64_t size, uint64_t chunk_size,
              struct xmem_error *err);
void pool_close(struct pool *p);
static inline uint8_t *pool_chunk(const struct pool *p, chunk_id c)
{
        return p->base + (uint64_t)c * p->chunk_size;
}
/* Punch N chunks from FIRST (chunk_punch_fn for chunk_pool_reclaim). */
void pool_punch(void *pool, chunk_id first, uint32_t n);
/* Write dirty pages of a file-backed pool to disk. */
int pool_sync(struct pool *p);
