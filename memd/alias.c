/* alias.c: the arena's aliases (alias.h): the table, the translations, and
 * the userfaultfd operations on runs of chunks cut at alias boundaries. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alias.h"
#include "arena.h"
#include "macro.h"
#include "uffd.h"

/* The alias holding chunk C (table locked), or NULL. */
static const struct arena_alias *alias_of_chunk(const struct arena *a, uint64_t c)
{
        size_t lo = 0, hi = atomic_load(&a->n_aliases);

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                const struct arena_alias *x = &a->aliases[mid];
                if (c < x->first)
                        hi = mid;
                else if (c >= x->first + x->n)
                        lo = mid + 1;
                else
                        return x;
        }
        return NULL;
}

/* Served at its own address, not the arena's: LIVE or HELD. */
static bool alias_mapped(const struct arena_alias *x)
{
        return x && x->state != ALIAS_PINNED;
}

uint64_t arena_alias_addr(const struct arena *a, uint64_t chunk)
{
        uint64_t addr = a->base + chunk * a->chunk_size;

        pthread_rwlock_rdlock((pthread_rwlock_t *)&a->alias_lock);
        const struct arena_alias *x = alias_of_chunk(a, chunk);
        if (alias_mapped(x))
                addr = x->addr + (chunk - x->first) * a->chunk_size;
        pthread_rwlock_unlock((pthread_rwlock_t *)&a->alias_lock);
        return addr;
}

bool arena_alias_chunk(const struct arena *a, uint64_t addr, uint64_t *chunk)
{
        bool found = false;

        pthread_rwlock_rdlock((pthread_rwlock_t *)&a->alias_lock);
        for (size_t i = 0; i < atomic_load(&a->n_aliases) && !found; i++) {
                const struct arena_alias *x = &a->aliases[i];
                if (alias_mapped(x) && addr >= x->addr &&
                    addr - x->addr < x->n * a->chunk_size) {
                        *chunk = x->first + (addr - x->addr) / a->chunk_size;
                        found = true;
                }
        }
        pthread_rwlock_unlock((pthread_rwlock_t *)&a->alias_lock);
        return found;
}

void arena_segment(const struct arena *a, uint64_t c, uint64_t *lo, uint64_t *hi)
{
        *lo = 0;
        *hi = a->n_chunks;
        if (!atomic_load(&a->n_aliases))
                return;
        pthread_rwlock_rdlock((pthread_rwlock_t *)&a->alias_lock);
        const struct arena_alias *x = alias_of_chunk(a, c);
        if (alias_mapped(x)) {
                *lo = x->first;
                *hi = x->first + x->n;
        } else {
                /* the arena's own addresses between the mapped aliases
                 * around C (a pinned one is still at the arena's address) */
                for (size_t i = 0; i < atomic_load(&a->n_aliases); i++) {
                        const struct arena_alias *y = &a->aliases[i];
                        if (!alias_mapped(y))
                                continue;
                        if (y->first + y->n <= c)
                                *lo = MAX(*lo, y->first + y->n);
                        else if (y->first > c)
                                *hi = MIN(*hi, y->first);
                }
        }
        pthread_rwlock_unlock((pthread_rwlock_t *)&a->alias_lock);
}

bool arena_alias_held(const struct arena *a, uint64_t c)
{
        bool held = false;

        if (!atomic_load(&a->n_aliases))
                return false;
        pthread_rwlock_rdlock((pthread_rwlock_t *)&a->alias_lock);
        const struct arena_alias *x = alias_of_chunk(a, c);
        held = x && x->state == ALIAS_HELD;
        pthread_rwlock_unlock((pthread_rwlock_t *)&a->alias_lock);
        return held;
}

int arena_uffd_wp(const struct arena *a, uint64_t c, uint64_t k, bool wp, bool dontwake)
{
        int r = 0;

        for (uint64_t end = c + k; c < end && r >= 0;) {
                uint64_t lo, hi;
                arena_segment(a, c, &lo, &hi);
                uint64_t n = MIN(end, hi) - c;
                r = uffd_writeprotect(a->uffd, arena_chunk_addr(a, c), n * a->chunk_size, wp,
                                      dontwake);
                c += n;
        }
        return r;
}

void arena_uffd_wake(const struct arena *a, uint64_t c, uint64_t k)
{
        for (uint64_t end = c + k; c < end;) {
                uint64_t lo, hi;
                arena_segment(a, c, &lo, &hi);
                uint64_t n = MIN(end, hi) - c;
                (void)uffd_wake(a->uffd, arena_chunk_addr(a, c), n * a->chunk_size);
                c += n;
        }
}

void arena_uffd_wake_all(const struct arena *a)
{
        (void)uffd_wake(a->uffd, a->base, a->size);
        pthread_rwlock_rdlock((pthread_rwlock_t *)&a->alias_lock);
        for (size_t i = 0; i < atomic_load(&a->n_aliases); i++)
                if (alias_mapped(&a->aliases[i]))
                        (void)uffd_wake(a->uffd, a->aliases[i].addr,
                                        a->aliases[i].n * a->chunk_size);
        pthread_rwlock_unlock((pthread_rwlock_t *)&a->alias_lock);
}

/* Mark X's chunks pinned (the evictor leaves them) or not. */
static void mark(struct arena *a, const struct arena_alias *x, bool pinned)
{
        for (uint64_t c = x->first; c < x->first + x->n; c++)
                a->pinned[c] = pinned;
}

/* A new alias WANT in STATE (PINNED, or LIVE: one mapped already). */
static int add(struct arena *a, struct arena_alias want, uint8_t state, struct xmem_error *err)
{
        size_t n = atomic_load(&a->n_aliases), at = 0;
        uint64_t len = want.n * a->chunk_size;

        if (want.addr < a->base + a->size && a->base < want.addr + len)
                return xmem_error_set(err, -EINVAL, "params.addr: inside the arena");
        if (n >= ARENA_ALIASES_MAX)
                return xmem_error_set(err, -ENOSPC, "params.addr: %u aliases already",
                                      ARENA_ALIASES_MAX);
        for (size_t i = 0; i < n; i++) {
                const struct arena_alias *x = &a->aliases[i];
                if (want.first < x->first + x->n && x->first < want.first + want.n)
                        return xmem_error_set(err, -EEXIST,
                                              "params.offset: pages aliased already");
                if (want.addr < x->addr + x->n * a->chunk_size && x->addr < want.addr + len)
                        return xmem_error_set(err, -EEXIST,
                                              "params.addr: overlaps another alias");
                if (x->first < want.first)
                        at = i + 1;
        }
        if (!a->pinned && !(a->pinned = calloc(a->n_chunks, 1)))
                return xmem_error_set(err, -ENOMEM, "out of memory");
        struct arena_alias *v = realloc(a->aliases, (n + 1) * sizeof(*v));
        if (!v)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        a->aliases = v;
        memmove(&v[at + 1], &v[at], (n - at) * sizeof(*v));
        v[at] = want;
        v[at].state = state;
        mark(a, &v[at], state != ALIAS_LIVE);
        atomic_store(&a->n_aliases, n + 1);
        return 0;
}

/* Make [WANT] an alias entry of its own: it must lie inside one alias, at
 * the same place in it (pages and addresses), which is split around it.
 * Its index, or -errno. Both locks held. */
static int isolate(struct arena *a, const struct arena_alias *want, struct xmem_error *err)
{
        size_t n = atomic_load(&a->n_aliases), i;
        struct arena_alias *x = NULL;

        for (i = 0; i < n; i++) {
                x = &a->aliases[i];
                if (want->first >= x->first && want->first + want->n <= x->first + x->n)
                        break;
        }
        if (i == n || want->addr != x->addr + (want->first - x->first) * a->chunk_size)
                return xmem_error_set(err, -ENOENT, "params: no such alias");
        size_t add = (want->first > x->first) + (want->first + want->n < x->first + x->n);
        if (add) {
                struct arena_alias *v = realloc(a->aliases, (n + add) * sizeof(*v));
                if (!v)
                        return xmem_error_set(err, -ENOMEM, "out of memory");
                a->aliases = v;
                x = &v[i];
        }
        struct arena_alias whole = *x, parts[3];
        size_t k = 0, mid = 0;
        if (want->first > whole.first)
                parts[k++] = (struct arena_alias){whole.first, want->first - whole.first,
                                                  whole.addr, whole.state};
        mid = k;
        parts[k++] = (struct arena_alias){want->first, want->n, want->addr, whole.state};
        if (want->first + want->n < whole.first + whole.n)
                parts[k++] = (struct arena_alias){
                    want->first + want->n, whole.first + whole.n - want->first - want->n,
                    want->addr + want->n * a->chunk_size, whole.state};
        memmove(&a->aliases[i + k], &a->aliases[i + 1], (n - i - 1) * sizeof(*x));
        memcpy(&a->aliases[i], parts, k * sizeof(*x));
        atomic_store(&a->n_aliases, n + add);
        return (int)(i + mid);
}

/* OP on the alias at index I: live, hold or drop. Both locks held. */
static void change(struct arena *a, const char *op, size_t i)
{
        struct arena_alias *x = &a->aliases[i];
        size_t n = atomic_load(&a->n_aliases);

        if (strcmp(op, "live") == 0) {
                x->state = ALIAS_LIVE;
                mark(a, x, false);
        } else if (strcmp(op, "hold") == 0) {
                x->state = ALIAS_HELD;
                mark(a, x, true);
                /* dirty pages are writable: from now on every write faults */
                (void)uffd_writeprotect(a->uffd, x->addr, x->n * a->chunk_size, true, false);
        } else { /* drop */
                mark(a, x, false);
                memmove(x, x + 1, (n - i - 1) * sizeof(*x));
                atomic_store(&a->n_aliases, n - 1);
        }
}

int arena_alias_op(struct arena *a, const char *op, uint64_t addr, uint64_t off, uint64_t len,
                   struct xmem_error *err)
{
        struct arena_alias want = {off / a->chunk_size, len / a->chunk_size, addr, 0};
        int r;

        if (off % a->chunk_size || len % a->chunk_size || addr % a->chunk_size || len == 0)
                return xmem_error_set(err, -EINVAL,
                                      "params: addr, offset and length must be multiples of %u",
                                      a->chunk_size);
        if (off > a->size || len > a->size - off)
                return xmem_error_set(err, -EINVAL,
                                      "params.length: [offset, offset+length) must lie in the "
                                      "arena of %llu bytes",
                                      (unsigned long long)a->size);
        if (addr + len < addr)
                return xmem_error_set(err, -EINVAL, "params.addr: wraps around");
        /* the arena lock first, as everywhere a translation runs under it */
        pthread_mutex_lock(&a->lock);
        pthread_rwlock_wrlock(&a->alias_lock);
        if (strcmp(op, "pin") == 0 || strcmp(op, "remap") == 0) {
                r = add(a, want, op[0] == 'p' ? ALIAS_PINNED : ALIAS_LIVE, err);
        } else if (atomic_load(&a->n_aliases) >= ARENA_ALIASES_MAX) {
                r = xmem_error_set(err, -ENOSPC, "params.addr: %u aliases already",
                                   ARENA_ALIASES_MAX);
        } else if ((r = isolate(a, &want, err)) >= 0) {
                change(a, op, (size_t)r);
                r = 0;
        }
        pthread_rwlock_unlock(&a->alias_lock);
        pthread_mutex_unlock(&a->lock);
        /* live, remap: faults that came before memd knew the address wait for this;
         * drop: the writes held meanwhile retry on what is mapped there now */
        if (r == 0 && strcmp(op, "pin") != 0 && strcmp(op, "hold") != 0)
                (void)uffd_wake(a->uffd, addr, len);
        return r;
}

void arena_aliases_free(struct arena *a)
{
        free(a->aliases);
        free(a->pinned);
        a->aliases = NULL;
        a->pinned = NULL;
        atomic_store(&a->n_aliases, 0);
}
