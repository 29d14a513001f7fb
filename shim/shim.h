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
        struct shim_policy policy;
        int memfd;
        int devfd;
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

        pthread_mutex_t lock; /* range and counters */
        struct range range;
        uint64_t local_bytes, external_bytes;

        char fork_token[SHIM_TOKEN_MAX];
        bool fork_prepared;
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
/* shim.hello (TOKEN NULL: not a forked child). 0 and *RET filled when
 * attached (two fds received), -ENOTCONN when memd says not attached. */
int shim_proto_hello(int sock, const char *token, struct shim_arena_info *ret);
int shim_proto_register(int sock, uint64_t base, uint64_t size, int uffd);
int shim_proto_fork(int sock, char *ret_token, size_t token_len);

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
/* Placement decision for SIZE bytes, counting a local choice as used. */
enum shim_placement shim_place(uint64_t size);
void shim_account(enum shim_placement where, int64_t delta);

/* hooks.c: jemalloc extent hooks on every arena. */
int shim_hooks_install(void);

/* jemalloc's mallctl, renamed in the archive (meson objcopy step) so that the
 * exported mallctl can watch "arenas.create". */
int xmem_je_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
int shim_hooks_install_one(unsigned ind);
