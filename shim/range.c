/* range.c: first-fit page bitmap (see range.h). Allocations here are rare and
 * large (jemalloc grows its extents geometrically), so a word-skipping linear
 * scan is enough. */
#include <errno.h>

#include "range.h"

void range_init(struct range *r, uint64_t *bits, uint64_t n_pages)
{
        *r = (struct range){ .bits = bits, .n_pages = n_pages };
}

bool range_test(const struct range *r, uint64_t i)
{
        return r->bits[i / 64] >> (i % 64) & 1;
}

static void mark(struct range *r, uint64_t first, uint64_t n, bool used)
{
        for (uint64_t i = first; i < first + n; i++) {
                uint64_t m = 1ULL << (i % 64);
                bool was = r->bits[i / 64] & m;
                if (was == used)
                        continue;
                if (used) {
                        r->bits[i / 64] |= m;
                        r->used++;
                } else {
                        r->bits[i / 64] &= ~m;
                        r->used--;
                }
        }
}

/* Next free page at or after I (n_pages if none). */
static uint64_t next_free(const struct range *r, uint64_t i)
{
        while (i < r->n_pages) {
                if (i % 64 == 0 && r->bits[i / 64] == UINT64_MAX) {
                        i += 64;
                        continue;
                }
                if (!range_test(r, i))
                        return i;
                i++;
        }
        return r->n_pages;
}

/* First used page in [I, END) (END if none). */
static uint64_t next_used(const struct range *r, uint64_t i, uint64_t end)
{
        while (i < end) {
                if (i % 64 == 0 && r->bits[i / 64] == 0) {
                        i += 64;
                        continue;
                }
                if (range_test(r, i))
                        return i;
                i++;
        }
        return end;
}

static void taken(struct range *r, uint64_t first, uint64_t n, bool *ret_pristine)
{
        if (ret_pristine)
                *ret_pristine = first >= r->hwm;
        mark(r, first, n, true);
        if (first + n > r->hwm)
                r->hwm = first + n;
        if (first == r->low_free)
                r->low_free = next_free(r, first + n);
}

int range_alloc(struct range *r, uint64_t n, uint64_t align, uint64_t *ret_first,
                bool *ret_pristine)
{
        uint64_t i;

        if (n == 0 || align == 0 || (align & (align - 1)))
                return -EINVAL;
        if (n > r->n_pages)
                return -ENOMEM;
        i = r->low_free;
        while (i < r->n_pages) {
                i = next_free(r, i);
                i = (i + align - 1) & ~(align - 1);
                if (i >= r->n_pages || r->n_pages - i < n)
                        break;
                uint64_t u = next_used(r, i, i + n);
                if (u == i + n) {
                        taken(r, i, n, ret_pristine);
                        *ret_first = i;
                        return 0;
                }
                i = u + 1;
        }
        return -ENOMEM;
}

int range_claim(struct range *r, uint64_t first, uint64_t n, bool *ret_pristine)
{
        if (n == 0 || first >= r->n_pages || r->n_pages - first < n)
                return -ERANGE;
        if (next_used(r, first, first + n) != first + n)
                return -EBUSY;
        taken(r, first, n, ret_pristine);
        return 0;
}

void range_free(struct range *r, uint64_t first, uint64_t n)
{
        if (first >= r->n_pages)
                return;
        if (n > r->n_pages - first)
                n = r->n_pages - first;
        mark(r, first, n, false);
        if (first < r->low_free)
                r->low_free = first;
}
