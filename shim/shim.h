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

struct shim_state {
        /* Set once the arena is mapped, registered and memd serves it. Read
         * without a lock on every extent/mmap decision. */
        _Atomic bool attached;
        int sock; /* connection to memd (-1: none) */
        int uffd; /* our own reference: faults wait if memd dies */
        int memfd;
        uint64_t base, size;
        struct shim_policy policy;

        pthread_mutex_t lock; /* range, the root page */
        struct range range;
        /* Pages of RANGE held for nothing yet: the root page until the first
         * xmem_root_set writes it (a fork child with no more in use needs no
         * arena of its own). */
        uint64_t reserved_pages;
        /* What this process has charged to the accounting page (atomics, so
         * the same as its slot there). external_credit: a forked child's
         * inherited external bytes, never charged (the clone shares the
         * parent's chunks): freeing them takes from here first. */
        uint64_t local_bytes, external_bytes, external_credit;
        /* The container's accounting page (docs/shim.md "Container-wide
         * accounting"), or a private one when memd sent none or before attach. */
        struct xmem_acct *acct;
        struct xmem_acct_slot *slot;

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

static inline bool shim_in_arena(const void *p, size_t len)
{
        uint64_t a = (uint64_t)p;
        return atomic_load_explicit(&shim_state.attached, memory_order_acquire) &&
               a >= shim_state.base && a - shim_state.base < shim_state.size &&
               len <= shim_state.size - (a - shim_state.base);
}
/* [P, P+LEN) overlaps the arena at all. */
static inline bool shim_overlaps_arena(const void *p, size_t len)
{
        uint64_t a = (uint64_t)p;
        return atomic_load_explicit(&shim_state.attached, memory_order_acquire) &&
               a < shim_state.base + shim_state.size && a + len > shim_state.base;
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
/* shim.resume after a memd restart: the arena (BASE, SIZE) with MEMFD and
 * UFFD sent again (both stay ours). */
int shim_proto_resume(int sock, uint64_t base, uint64_t size, int memfd, int uffd);

/* watch.c: a thread that notices memd's death and resumes with the next one. */
void shim_watch_start(void);
/* arena.c: the lock over shim_state.sock (requests on it, its replacement);
 * shim_sock_back (under it) wakes a fork waiting for memd to come back. */
void shim_sock_lock(void);
void shim_sock_unlock(void);
void shim_sock_back(void);
const char *shim_socket_path(void);

/* arena.c: mapping, userfaultfd, registration, fork. */
int shim_arena_attach(int sock, const char *token);
void shim_arena_atfork_prepare(void);
void shim_arena_atfork_parent(void);
void shim_arena_atfork_child(void);
/* Allocate LEN bytes (page multiple) of arena aligned to ALIGN (power of two,
 * >= page); *RET_ZERO: known to read as zeros. NULL when full. */
void *shim_arena_alloc(size_t len, size_t align, bool *ret_zero);
/* Take exactly [ADDR, ADDR+LEN) if free. */
int shim_arena_claim(void *addr, size_t len, bool *ret_zero);
/* Drop the contents of [ADDR, ADDR+LEN) (punch a hole), keep the range. */
int shim_arena_discard(void *addr, size_t len);
/* Discard and give the range back. */
void shim_arena_release(void *addr, size_t len);

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

/* hooks.c: jemalloc extent hooks on every arena. */
int shim_hooks_install(void);

/* jemalloc's mallctl, renamed in the archive (meson objcopy step) so that the
 * exported mallctl can watch "arenas.create". */
int xmem_je_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
int shim_hooks_install_one(unsigned ind);
