/* alias.h: arena pages a process maps at a second address, where its local
 * memory was: local memory converted to appliance memory (docs/memd.md
 * "Conversion to appliance memory", docs/shim.md "Conversion"). memd serves
 * such pages at that address: arena_chunk_addr and arena_chunk_of (arena.h)
 * translate, and every run of pages memd fills, protects or wakes is cut
 * where the addresses stop being adjacent. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct arena;

/* The life of an alias, as the shim tells it (shim.alias). */
enum alias_state {
        ALIAS_PINNED = 1, /* announced: its pages are not evicted, memd still
                           * serves them at the arena's own address (the
                           * shim copies into them there) */
        ALIAS_LIVE,       /* mapped and registered at ADDR: served there */
        ALIAS_HELD,       /* going back to local memory: served at ADDR, its
                           * pages not evicted, every write waits (a write
                           * fault is left unanswered until the drop) */
};

struct arena_alias {
        uint64_t first, n; /* chunks */
        uint64_t addr;     /* where chunk FIRST is mapped in the process */
        uint8_t state;     /* enum alias_state */
};

/* At most this many per arena (each is a piece of at most 16 MiB). */
#define ARENA_ALIASES_MAX 4096

/* shim.alias OP ("pin", "remap", "live", "hold", "drop") for [ADDR,
 * ADDR+LEN) at arena offset OFF. pin adds it (not overlapping the arena's own
 * range or another alias), remap adds one LIVE at once (mapped already: a
 * forked child's, or any after a memd restart); live, hold and drop name a
 * part of one (which is split). 0, or -errno with ERR set (the table
 * unchanged). */
int arena_alias_op(struct arena *a, const char *op, uint64_t addr, uint64_t off, uint64_t len,
                   struct xmem_error *err);

/* Slow paths of arena.h's translations (the arena has aliases). */
uint64_t arena_alias_addr(const struct arena *a, uint64_t chunk);
bool arena_alias_chunk(const struct arena *a, uint64_t addr, uint64_t *chunk);
/* The chunks around C whose addresses are adjacent to C's: [*LO, *HI). */
void arena_segment(const struct arena *a, uint64_t c, uint64_t *lo, uint64_t *hi);
/* C is in an alias whose writes wait (ALIAS_HELD). */
bool arena_alias_held(const struct arena *a, uint64_t c);

/* userfaultfd write-protect (WP) or un-protect, and wake, of chunks
 * [C, C+K), each stretch at its own address. */
int arena_uffd_wp(const struct arena *a, uint64_t c, uint64_t k, bool wp, bool dontwake);
void arena_uffd_wake(const struct arena *a, uint64_t c, uint64_t k);
/* Every address the arena is served at woken (a memd restart, a rollback). */
void arena_uffd_wake_all(const struct arena *a);

void arena_aliases_free(struct arena *a);
