/* journal.h: persistence of the region table for --pool-file: an append-only
 * metadata journal (PATH.meta) of CRC-checked records, replayed on start and
 * compacted on start and on clean shutdown. Data lives in the pool file. */
#pragma once

#include <stdint.h>

#include "error.h"
#include "region.h"

struct journal {
        int fd;            /* O_APPEND */
        char *path;        /* PATH.meta */
        uint64_t pool_size;
        uint64_t chunk_size;
        uint64_t records;  /* appended since the last compaction */
};

struct journal_entry {
        uint64_t idx; /* chunk map index */
        chunk_id chunk;
};

/* Replay PATH.meta (if it exists) into the empty table T, whose pool must be
 * fresh: references are rebuilt and unreferenced chunks left pending for the
 * caller's reclaim. Stops quietly at the first torn or corrupt record. Then
 * compacts and opens the journal for appending. */
int journal_open(const char *pool_path, struct region_table *t, uint64_t pool_size,
                 struct journal **ret, struct xmem_error *err);
/* The replay of journal_open on the image BUF (LEN bytes, no file): into the
 * empty table T, references rebuilt and unreferenced chunks left pending.
 * Returns the records applied, or -errno with ERR naming NAME and the record. */
int journal_replay(struct region_table *t, uint64_t pool_size, const uint8_t *buf, size_t len,
                   const char *name, struct xmem_error *err);
/* Rewrite the journal as the current state of T (fsync'd), then keep appending. */
int journal_compact(struct journal *j, const struct region_table *t);
void journal_close(struct journal *j);

/* Appends; J may be NULL (no persistence): then they do nothing. Each record
 * reaches the page cache with write() before it returns. */
int journal_create(struct journal *j, const struct region *r);
int journal_set(struct journal *j, uint64_t id, const struct journal_entry *e, size_t n);
int journal_share(struct journal *j, uint64_t dst, uint64_t src); /* dst takes src's map+size */
int journal_resize(struct journal *j, uint64_t id, uint64_t size);
int journal_free(struct journal *j, uint64_t id);
