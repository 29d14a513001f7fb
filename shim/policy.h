/* policy.h: the shim's placement rule (seed 000 claims 5-8, 10, 16): given
 * the policy memd sent and the container's current usage (all its processes,
 * from the accounting page), is a new extent or mapping of SIZE bytes placed
 * in local memory, in the external arena, or refused (ENOMEM)? Pure. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum shim_policy_kind {
        SHIM_POLICY_LOCAL_FIRST,
        SHIM_POLICY_EXTERNAL_FIRST,
        SHIM_POLICY_RATIO,
};

struct shim_policy {
        enum shim_policy_kind kind;
        uint64_t local_alloc_limit; /* bytes of local allocations the container may hold */
        uint64_t external_quota;    /* bytes of external allocations the container may hold */
        uint32_t ratio;             /* N of ratio:N (1..1024) */
        uint64_t large_threshold;   /* external-first: requests this large go external */
        uint64_t local_floor;       /* ratio:N: local always allowed up to this */
};

struct shim_usage {
        uint64_t local_bytes;    /* local extents and mappings the container's shims hold */
        uint64_t external_bytes; /* external ones */
        uint64_t resident_cache; /* the arena's resident cache (estimate) */
        uint64_t file_room;      /* bytes file memory can take now (0: none) */
};

enum shim_placement {
        SHIM_LOCAL,
        SHIM_EXTERNAL,
        SHIM_FILE, /* the memory-mapped file (docs/shim.md "File memory") */
        SHIM_NONE, /* neither fits: the allocation fails with ENOMEM */
};

#define SHIM_POLICY_DEFAULT_LARGE (64ULL << 10)
#define SHIM_POLICY_DEFAULT_FLOOR (8ULL << 20)
#define SHIM_POLICY_MAX_RATIO 1024U

/* Parse memd's "policy" string ("local-first", "external-first", "ratio:N")
 * with its "ratio" and "local_alloc_limit" fields into *RET (defaults for the
 * thresholds; external_quota unlimited until the caller sets it). -EINVAL on
 * anything else; *RET untouched then. */
int shim_policy_parse(const char *name, uint64_t ratio, uint64_t local_alloc_limit,
                      struct shim_policy *ret);

/* Where a request of SIZE bytes goes. The policy picks a preferred side;
 * when that side's limit (local_alloc_limit, external_quota) has no room for
 * SIZE the other side is used if it has, else file memory if it has room
 * (file_room), else SHIM_NONE. Never SHIM_EXTERNAL when !EXTERNAL_AVAILABLE
 * (no room in this process's arena, or memd is away). */
enum shim_placement shim_policy_place(const struct shim_policy *p, const struct shim_usage *u,
                                      uint64_t size, bool external_available);
