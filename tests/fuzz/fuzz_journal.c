/* fuzz_journal.c: the appliance's journal replay (appliance/journal.c)
 * against arbitrary bytes as a journal file, into a fresh 64-chunk pool.
 * Whatever it accepts must be consistent: every map entry a real chunk, each
 * chunk's reference count the number of map entries pointing at it, no region
 * larger than the pool; and tearing it down must leave no reference. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "log.h"

#define NCHUNKS 64
#define CHUNK 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_consistent(const struct region_table *t, const struct chunk_pool *p)
{
        uint32_t refs[NCHUNKS] = {0}, used = 0;

        for (struct region *r = region_next(t, NULL); r; r = region_next(t, r)) {
                assert(r->size <= (uint64_t)NCHUNKS * CHUNK);
                assert(r->size == r->map.n * CHUNK);
                for (uint64_t i = 0; i < r->map.n; i++) {
                        assert(r->map.c[i] == CHUNK_NONE || r->map.c[i] < NCHUNKS);
                        if (r->map.c[i] != CHUNK_NONE)
                                refs[r->map.c[i]]++;
                }
        }
        for (uint32_t c = 0; c < NCHUNKS; c++) {
                assert(p->refs[c] == refs[c]);
                used += refs[c] > 0;
        }
        assert(p->used == used);
        assert(!p->rebuilding);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static int once;
        struct chunk_pool pool;
        struct region_table t;
        struct xmem_error err = {0};
        int n;

        if (!once++)
                log_setup("fuzz_journal", LOG_TARGET_STDERR, LOG_ERR);
        if (chunk_pool_init(&pool, NCHUNKS) < 0 || region_table_init(&t, &pool, CHUNK) < 0)
                abort();
        n = journal_replay(&t, (uint64_t)NCHUNKS * CHUNK, data, size, "fuzz", &err);
        if (n < 0) {
                assert(err.code < 0 && err.msg[0]); /* refused with a reason */
                pool.rebuilding = false;
        } else {
                check_consistent(&t, &pool);
                assert(t.next_id > 0);
        }
        region_table_done(&t);
        for (uint32_t c = 0; c < NCHUNKS; c++)
                assert(pool.refs[c] == 0);
        chunk_pool_done(&pool);
        return 0;
}
