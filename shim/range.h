/* range.h: the page ranges of the external arena handed out as jemalloc
 * extents and as the application's large anonymous mappings: a first-fit
 * bitmap allocator (one bit per page) with a high-water mark, so that pages
 * never handed out are known to read as zeros. Pure; the caller locks. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct range {
        uint64_t *bits;    /* 1 = in use */
        uint64_t n_pages;
        uint64_t low_free; /* no free page below this one */
        uint64_t hwm;      /* no page at or above this one was ever handed out */
        uint64_t used;     /* pages in use */
};

/* Bytes of bitmap for N_PAGES pages. */
static inline uint64_t range_bitmap_bytes(uint64_t n_pages)
{
        return (n_pages + 63) / 64 * 8;
}

/* BITS: zeroed memory of range_bitmap_bytes(N_PAGES). */
void range_init(struct range *r, uint64_t *bits, uint64_t n_pages);

/* Find N free pages starting at a multiple of ALIGN pages (a power of two),
 * mark them used. *RET_PRISTINE: all of them were never used before.
 * -ENOMEM when no such run exists. */
int range_alloc(struct range *r, uint64_t n, uint64_t align, uint64_t *ret_first,
                bool *ret_pristine);

/* Mark [FIRST, FIRST+N) used if all of it is free: 0, else -EBUSY/-ERANGE. */
int range_claim(struct range *r, uint64_t first, uint64_t n, bool *ret_pristine);

/* Mark [FIRST, FIRST+N) free (pages already free stay free). */
void range_free(struct range *r, uint64_t first, uint64_t n);

/* Whether page I is in use. */
bool range_test(const struct range *r, uint64_t i);
