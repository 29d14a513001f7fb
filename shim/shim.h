/* shim.h: the state of libxmem-shim.so inside one process, shared by its
 * files: the memd connection, the external arena, the policy and usage
 * counters. Everything here is hidden (-fvisibility=hidden). */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <xmem/acct.h>

#include "policy.h"
#include "range.h"

#define SHIM_PAGE 4096ULL
#define SHIM_DEFAULT_SOCKET "/run/xmem/memd.sock"
#define SHIM_TOKEN_MAX 128
/* Anonymous mmap requests of the application at least this large follow the
 * policy; smaller ones (and every special one) stay local. */
#define SHIM_MMAP_THRESHOLD (1ULL << 20)

struct shim_arena_info {
        uint64_t arena_size;
        uint64_t file_size; /* the file memory's span per process (0: the container has none) */
        uint64_t chunk_size;
        struct shim_policy policy; /* external_quota included */
        int memfd;
        int devfd;
        int acctfd;        /* the container's accounting page (-1: memd sent none) */
        uint32_t acct_slot; /* this process's slot in it */
        /* A snapshot's arena (restore): map it at RESTORE_BASE, and keep its
         * first RESTORE_USED bytes (the snapshot's data) from the allocator. */
        uint64_t restore_base, restore_used;
};

/* A span of address space the shim hands out page ranges of: the external
 * arena (the memfd memd serves) or the file memory (a file in the container's
 * file directory the kernel pages itself). Offset X of FD is at BASE + X. */
struct shim_zone {
        enum shim_placement kind; /* SHIM_EXTERNAL or SHIM_FILE */
        int fd;                   /* -1: the zone does not exist */
        uint64_t base, size;
        struct range range; /* under shim_state.lock */
};

struct shim_state {
        /* Set once the arena is mapped, registered and memd serves it. Read
         * without a lock on every extent/mmap decision. */
        _Atomic bool attached;
        int sock; /* connection to memd (-1: none) */
        int uffd; /* our own reference: faults wait if memd dies */
        int devfd; /* /dev/userfaultfd from memd: conversions make their own */
        struct shim_zone arena, file;
        struct shim_policy policy;

        pthread_mutex_t lock; /* the zones' ranges, the root page */
        /* Pages of the arena's range held for nothing yet: the root page until
         * the first xmem_root_set writes it (a fork child with no more in use
         * needs no arena of its own). */
        uint64_t reserved_pages;
        /* What this process has charged to the accounting page (atomics, so
         * the same as its slot there). external_credit: a forked child's
         * inherited external bytes, never charged (the clone shares the
         * parent's chunks): freeing them takes from here first. */
        uint64_t local_bytes, external_bytes, external_credit, file_bytes;
        /* The container's accounting page (docs/shim.md "Container-wide
         * accounting"), or a private one when memd sent none or before attach. */
        struct xmem_acct *acct;
        struct xmem_acct_slot *slot;
        int acctfd; /* the page's memfd, kept for shim.resume (-1: a private page) */

        char fork_token[SHIM_TOKEN_MAX];
        bool fork_prepared;
        /* memd died and the watcher has not handed the arena over again yet
         * (watch.c); RESUMED counts the hand-overs. Under the socket lock. */
        bool memd_away;
        unsigned resumed;
};

extern struct shim_state shim_state;

/* Raw system calls: the real mmap family, never our wrappers. */
void *shim_sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int shim_sys_munmap(void *addr, size_t len);
void *shim_sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
int shim_sys_madvise(void *addr, size_t len, int advice);
int shim_sys_mprotect(void *addr, size_t len, int prot);
/* noprof.c: jemalloc's profiler's libm and unwinder calls, renamed at link */
double shim_noprof_log(double x);
double shim_noprof_exp(double x);
double shim_noprof_round(double x);
int shim_noprof_unwind_backtrace(void *trace, void *arg);
unsigned long shim_noprof_unwind_getip(void *context);

static inline bool shim_zone_has(const struct shim_zone *z, const void *p, size_t len)
{
        uint64_t a = (uint64_t)p;
        return atomic_load_explicit(&shim_state.attached, memory_order_acquire) && z->size &&
               a >= z->base && a - z->base < z->size && len <= z->size - (a - z->base);
}
static inline bool shim_zone_overlaps(const struct shim_zone *z, const void *p, size_t len)
{
        uint64_t a = (uint64_t)p;
        return atomic_load_explicit(&shim_state.attached, memory_order_acquire) && z->size &&
               a < z->base + z->size && a + len > z->base;
}
static inline bool shim_in_arena(const void *p, size_t len)
{
        return shim_zone_has(&shim_state.arena, p, len);
}
/* The zone [P, P+LEN) lies in, NULL when it is local memory (or straddles). */
static inline struct shim_zone *shim_zone_of(const void *p, size_t len)
{
        if (shim_zone_has(&shim_state.arena, p, len))
                return &shim_state.arena;
        if (shim_zone_has(&shim_state.file, p, len))
                return &shim_state.file;
        return NULL;
}
/* [P, P+LEN) overlaps a zone at all. */
static inline bool shim_overlaps_zone(const void *p, size_t len)
{
        return shim_zone_overlaps(&shim_state.arena, p, len) ||
               shim_zone_overlaps(&shim_state.file, p, len);
}

/* proto.c: memd's socket API (docs/api.md) without malloc or json-c. */
int shim_proto_connect(const char *path, int *ret_sock);
/* shim.hello (TOKEN NULL: not a forked child), version 2, or 1 when memd
 * refuses 2. 0 and *RET filled when attached (memfd and /dev/userfaultfd,
 * plus the accounting page from a version 2 memd: acctfd, else -1),
 * -ENOTCONN when memd says not attached. */
int shim_proto_hello(int sock, const char *token, struct shim_arena_info *ret);
int shim_proto_register(int sock, uint64_t base, uint64_t size, int uffd);
int shim_proto_fork(int sock, char *ret_token, size_t token_len);
/* shim.discard: [OFFSET, OFFSET+LEN) of the arena holds nothing any more. */
int shim_proto_discard(int sock, uint64_t offset, uint64_t len);
/* shim.alias OP for arena [OFFSET, OFFSET+LEN) mapped at ADDR (docs/api.md). */
int shim_proto_alias(int sock, const char *op, uint64_t addr, uint64_t offset, uint64_t len);
/* shim.resume after a memd restart: the arena (BASE, SIZE) with MEMFD and
 * UFFD sent again (both stay ours). */
/* ACCTFD (-1: none) goes along: the page this process charges. */
int shim_proto_resume(int sock, uint64_t base, uint64_t size, int memfd, int uffd, int acctfd);

/* shim.file: a new file of memd's in the container's file directory. */
int shim_proto_file(int sock, int *ret_fd, uint64_t *ret_size);

/* filemem.c: the file zone. Attach (FILE_SIZE 0: the container has none;
 * FORKED: a forked child maps the copy its parent made); failing to get file
 * memory is no error unless a forked child's heap is there. */
int shim_file_attach(int sock, uint64_t file_size, bool forked);
/* In the prepare handler (the socket lock held): a copy of the file for the
 * child; the parent handler closes it. */
int shim_file_fork_prepare(void);
void shim_file_fork_parent(void);

/* watch.c: a thread that notices memd's death and resumes with the next one. */
void shim_watch_start(void);
/* arena.c: the lock over shim_state.sock (requests on it, its replacement);
 * shim_sock_back (under it) wakes a fork waiting for memd to come back. */
void shim_sock_lock(void);
void shim_sock_unlock(void);
void shim_sock_back(void);
const char *shim_socket_path(void);

/* arena.c: mapping, userfaultfd, registration, fork. shim_arena_attach sets
 * *RET_STEP to what failed (a forked child names it when it dies). */
/* shim.alias OP on memd's connection (its lock held for the call). */
int shim_alias(const char *op, uint64_t addr, uint64_t off, uint64_t len);
/* memd told again of the appliance memory mapped at local ranges' addresses
 * (shim.alias remap): after a resume, or (CHILD) in a forked child,
 * which maps its own copy there first. 0 or -EIO. */
int shim_arena_realias(bool child);
int shim_arena_attach(int sock, const char *token, const char **ret_step);
void shim_arena_atfork_prepare(void);
void shim_arena_atfork_parent(void);
void shim_arena_atfork_child(void);

/* zone.c: page ranges of a zone. Map FD (SIZE bytes) MAP_SHARED,
 * MADV_DONTFORK, at FIXED_BASE (a forked child: the parent's address) or at a
 * 2 MiB aligned address of the kernel's choice. */
int shim_zone_map(int fd, uint64_t size, uint64_t fixed_base, uint64_t *ret_base);
/* The range bitmap of a zone of SIZE bytes. */
int shim_zone_range_setup(struct shim_zone *z, uint64_t size);
/* Allocate LEN bytes (page multiple) of Z aligned to ALIGN (power of two,
 * >= page); *RET_ZERO: known to read as zeros. NULL when full (file memory:
 * also when its file system has no room for them). The caller charged LEN. */
void *shim_zone_alloc(struct shim_zone *z, size_t len, size_t align, bool *ret_zero);
/* Take exactly [ADDR, ADDR+LEN) of Z if free, charged within the limit. */
int shim_zone_claim(struct shim_zone *z, void *addr, size_t len, bool *ret_zero);
/* Drop the contents of [ADDR, ADDR+LEN) (punch a hole), keep the range. */
int shim_zone_discard(struct shim_zone *z, void *addr, size_t len);
/* Discard, give the range back and uncharge it. */
void shim_zone_release(struct shim_zone *z, void *addr, size_t len);
/* Place SIZE bytes (shim_place) and allocate them when they go to a zone.
 * *RET_WHERE: where they went; SHIM_LOCAL: charged, the caller maps them;
 * SHIM_NONE: nothing charged, the request fails with ENOMEM. */
void *shim_zone_place(uint64_t size, size_t align, bool *ret_zero, enum shim_placement *ret_where);
/* Room for SIZE more bytes in Z (its range; file memory: its file system). */
bool shim_zone_room(struct shim_zone *z, uint64_t size);

/* acct.c: the container-wide counters. shim_place decides where SIZE bytes go
 * (TRY_EXTERNAL false: not the arena) and charges them there; SHIM_NONE:
 * nothing charged, the request fails with ENOMEM. */
enum shim_placement shim_place(uint64_t size, bool try_external);
/* Charge SIZE to WHERE; LIMITED: only if the container stays within the
 * policy's limit for it (and the process is attached). */
bool shim_charge(enum shim_placement where, uint64_t size, bool limited);
void shim_uncharge(enum shim_placement where, uint64_t size);
/* Use the private page (no memd page, a fresh child): counters of this
 * process carried over. */
void shim_acct_use_private(void);
/* Map memd's page FD (taken over), use slot SLOT and carry this process's
 * counters over (a forked child adds its inherited local bytes). */
int shim_acct_use_page(int fd, uint32_t slot);

/* locals.c: the local ranges this shim owns (jemalloc's local extents, the
 * application's tracked local mappings) and those converted to file memory. */
struct shim_local {
        uint64_t start, len;
        uint64_t off;                /* converted: START's offset in the file or the arena */
        enum shim_placement where;   /* SHIM_LOCAL, or SHIM_FILE / SHIM_EXTERNAL once converted */
};
void shim_locals_track(uint64_t start, uint64_t len);
/* [START, START+LEN) is gone: uncharge its local parts (ALL_CHARGED: also the
 * untracked remainder), give converted parts' file pages back. */
void shim_locals_untrack(uint64_t start, uint64_t len, bool all_charged);
bool shim_locals_tracked(uint64_t start);
/* Does [START, START+LEN) overlap a range converted to file memory? */
bool shim_locals_converted(uint64_t start, uint64_t len);
/* Punch the converted parts of [ADDR, ADDR+LEN) out of the file. */
int shim_locals_purge(void *addr, size_t len);
/* The tracked range in WHERE with the lowest start >= AFTER (a copy). */
bool shim_locals_pick(enum shim_placement where, uint64_t after, struct shim_local *ret);
/* Mark the range exactly [START, START+LEN) as in WHERE at file offset OFF. */
/* Split the entry at START in two, its first FIRST bytes and the rest
 * (false: no such entry, or no room for another). */
bool shim_locals_split(uint64_t start, uint64_t first);
/* L is still exactly an entry of the table (a pick may be stale). */
bool shim_locals_has(const struct shim_local *l);
int shim_locals_set(uint64_t start, uint64_t len, enum shim_placement where, uint64_t off);
/* FN on every range in WHERE (under the table's lock: FN must not call in). */
void shim_locals_each(enum shim_placement where, void (*fn)(const struct shim_local *l));
/* The lock a conversion holds over its range; munmap, destroy, purge and
 * mremap of local ranges take it too. */
void shim_locals_busy(bool lock);
void shim_locals_atfork_child(void);

/* convert.c: convert every local range this shim owns to TO (SHIM_FILE: file
 * memory, SHIM_EXTERNAL: appliance memory), or every converted one back
 * (SHIM_LOCAL), while the program runs. */
struct shim_convert_stats {
        uint64_t ranges, bytes, failed, rounds, held_faults;
        uint64_t last_window_ns, max_window_ns; /* writers held (to file); the swap (back) */
        uint64_t total_ns;
        uint64_t error; /* errno of the last range that failed */
};
int shim_convert(enum shim_placement to, struct shim_convert_stats *ret);
void shim_convert_atfork_child(void);
/* The last conversion's figures. */
void shim_convert_last(struct shim_convert_stats *ret);

/* hooks.c: jemalloc extent hooks on every arena. */
int shim_hooks_install(void);

/* jemalloc's mallctl, renamed in the archive (meson objcopy step) so that the
 * exported mallctl can watch "arenas.create". */
int xmem_je_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
int shim_hooks_install_one(unsigned ind);
