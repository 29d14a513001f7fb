/* xmem/acct.h: the container accounting page (docs/api.md "The accounting
 * page"): a small shmem memfd memd creates per container and hands to every
 * shim of it, holding the container-wide local and external allocation
 * counters, their limits, and one slot per process. Shared ABI of memd and
 * libxmem-shim.so; every counter is a naturally aligned u64 used atomically. */
#pragma once

#include <stdint.h>

#define XMEM_ACCT_MAGIC 0x544343414d454d58ULL /* "XMEMACCT" little endian */
#define XMEM_ACCT_VERSION 2
#define XMEM_ACCT_SIZE 16384ULL /* the memfd's size (sealed) */

/* What one process has charged to the totals. Slot 0 is the overflow slot
 * shared by every process that found no free slot of its own. */
struct xmem_acct_slot {
        uint64_t pid;            /* memd: the owner (0: free); informational */
        uint64_t local_bytes;    /* the shim: charged local bytes */
        uint64_t external_bytes; /* the shim: charged external bytes */
        uint64_t file_bytes;     /* the shim: its file memory in use (no limit: the
                                  * file system's free space is) */
        uint64_t convert_done;   /* the shim: the last request (h.convert) it finished */
        uint64_t convert_failed; /* the shim: ranges that request left where they were */
        uint64_t convert_errno;  /* the shim: why the last of them failed (errno) */
        uint64_t reserved;
};

struct xmem_acct_header {
        uint64_t magic;             /* XMEM_ACCT_MAGIC, written last by memd */
        uint32_t version;           /* XMEM_ACCT_VERSION */
        uint32_t n_slots;           /* slots after the header, slot 0 included */
        uint64_t local_alloc_limit; /* bytes: the container's local allocations */
        uint64_t external_quota;    /* bytes: the container's external allocations */
        uint64_t local_bytes;       /* container-wide charged local bytes */
        uint64_t external_bytes;    /* container-wide charged external bytes */
        uint64_t refused;           /* requests refused with ENOMEM (both full) */
        uint64_t convert;           /* memd: a conversion request, (sequence << 8) |
                                     * XMEM_CONVERT_*; every shim acts on each new one */
};

#define XMEM_CONVERT_LOCAL 1 /* converted ranges back to local memory */
#define XMEM_CONVERT_FILE 2  /* local ranges to file memory */
#define XMEM_CONVERT_APPLIANCE 3 /* local ranges to appliance memory (the arena) */

struct xmem_acct {
        struct xmem_acct_header h;
        struct xmem_acct_slot slots[];
};

#define XMEM_ACCT_SLOTS                                                                        \
        ((XMEM_ACCT_SIZE - sizeof(struct xmem_acct_header)) / sizeof(struct xmem_acct_slot))

_Static_assert(sizeof(struct xmem_acct_header) == 64, "accounting header layout");
_Static_assert(sizeof(struct xmem_acct_slot) == 64, "accounting slot layout");
