/* locals.c: the local memory this shim owns and may convert (docs/shim.md
 * "Conversion"): jemalloc's local extents and the application's large local
 * anonymous mappings, each charged against local_alloc_limit. A range
 * converted to file memory stays here with its file offset: it is then a
 * MAP_SHARED mapping of the file at its old address, charged as file memory.
 * Under locals_mu; the busy lock keeps a range from being unmapped, moved or
 * purged while a conversion works on it. */
#include <errno.h>
#include <sys/mman.h>

#include "macro.h"
#include "shim.h"

#define LOCALS_MAX 4096

static struct shim_local locals[LOCALS_MAX];
static unsigned n_locals;
static pthread_mutex_t locals_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t busy_mu = PTHREAD_MUTEX_INITIALIZER;

void shim_locals_busy(bool lock)
{
        if (lock)
                pthread_mutex_lock(&busy_mu);
        else
                pthread_mutex_unlock(&busy_mu);
}

void shim_locals_atfork_child(void)
{
        pthread_mutex_init(&locals_mu, NULL);
        pthread_mutex_init(&busy_mu, NULL);
}

void shim_locals_track(uint64_t start, uint64_t len)
{
        pthread_mutex_lock(&locals_mu);
        if (n_locals < LOCALS_MAX)
                locals[n_locals++] = (struct shim_local){start, len, 0, SHIM_LOCAL};
        pthread_mutex_unlock(&locals_mu);
}

/* The zone a converted piece's pages are in. */
static struct shim_zone *piece_zone(const struct shim_local *l)
{
        return l->where == SHIM_EXTERNAL ? &shim_state.arena : &shim_state.file;
}

/* Give back the part [S, E) of entry L: a local piece's charge, or a
 * converted piece's pages and their charge (appliance memory: memd forgets
 * the alias first, its pages are the arena's again). Returns the local
 * bytes. */
static uint64_t piece_free(const struct shim_local *l, uint64_t s, uint64_t e)
{
        struct shim_zone *z = piece_zone(l);
        uint64_t off = l->off + (s - l->start);

        if (l->where == SHIM_LOCAL)
                return e - s;
        if (l->where == SHIM_EXTERNAL)
                (void)shim_alias("drop", s, off, e - s);
        shim_zone_release(z, (void *)(z->base + off), e - s);
        return 0;
}

void shim_locals_untrack(uint64_t start, uint64_t len, bool all_charged)
{
        uint64_t end = start + len, freed = 0, seen = 0;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals; i++) {
                struct shim_local *l = &locals[i];
                uint64_t s = l->start, e = s + l->len;
                if (e <= start || s >= end)
                        continue;
                uint64_t os = MAX(s, start), oe = MIN(e, end);
                seen += oe - os;
                freed += piece_free(l, os, oe);
                if (os == s && oe == e) {
                        locals[i--] = locals[--n_locals];
                } else if (os == s) {
                        l->off += oe - s;
                        l->start = oe;
                        l->len = e - oe;
                } else if (oe == e) {
                        l->len = os - s;
                } else {
                        struct shim_local tail = {oe, e - oe, l->off + (oe - s), l->where};
                        l->len = os - s;
                        if (n_locals < LOCALS_MAX)
                                locals[n_locals++] = tail;
                        else if (tail.where == SHIM_LOCAL)
                                freed -= tail.len; /* stays charged */
                }
        }
        pthread_mutex_unlock(&locals_mu);
        /* jemalloc's extents are all charged, tracked or not */
        if (all_charged && len > seen)
                freed += len - seen;
        shim_uncharge(SHIM_LOCAL, freed);
}

bool shim_locals_tracked(uint64_t start)
{
        bool found = false;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals && !found; i++)
                found = locals[i].start == start;
        pthread_mutex_unlock(&locals_mu);
        return found;
}

bool shim_locals_converted(uint64_t start, uint64_t len)
{
        bool found = false;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals && !found; i++)
                found = locals[i].where != SHIM_LOCAL && locals[i].start < start + len &&
                        locals[i].start + locals[i].len > start;
        pthread_mutex_unlock(&locals_mu);
        return found;
}

int shim_locals_purge(void *addr, size_t len)
{
        uint64_t start = (uint64_t)addr, end = start + len;
        int r = 0;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals; i++) {
                const struct shim_local *l = &locals[i];
                if (l->where == SHIM_LOCAL || l->start >= end || l->start + l->len <= start)
                        continue;
                uint64_t os = MAX(l->start, start), oe = MIN(l->start + l->len, end);
                struct shim_zone *z = piece_zone(l);
                /* punched pages read zeros (a discarded arena page too):
                 * what a purge promises */
                if (shim_zone_discard(z, (void *)(z->base + l->off + (os - l->start)), oe - os) < 0)
                        r = -errno;
        }
        pthread_mutex_unlock(&locals_mu);
        return r;
}

bool shim_locals_pick(enum shim_placement where, uint64_t after, struct shim_local *ret)
{
        bool found = false;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals; i++)
                if (locals[i].where == where && locals[i].start >= after &&
                    (!found || locals[i].start < ret->start)) {
                        *ret = locals[i];
                        found = true;
                }
        pthread_mutex_unlock(&locals_mu);
        return found;
}

int shim_locals_set(uint64_t start, uint64_t len, enum shim_placement where, uint64_t off)
{
        int r = -ENOENT;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals; i++)
                if (locals[i].start == start && locals[i].len == len) {
                        locals[i].where = where;
                        locals[i].off = off;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&locals_mu);
        return r;
}

bool shim_locals_has(const struct shim_local *l)
{
        bool found = false;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals && !found; i++)
                found = locals[i].start == l->start && locals[i].len == l->len &&
                        locals[i].where == l->where && locals[i].off == l->off;
        pthread_mutex_unlock(&locals_mu);
        return found;
}

bool shim_locals_split(uint64_t start, uint64_t first)
{
        bool done = false;

        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals && !done; i++) {
                struct shim_local *l = &locals[i];
                if (l->start != start || l->len <= first || n_locals >= LOCALS_MAX)
                        continue;
                locals[n_locals++] = (struct shim_local){start + first, l->len - first,
                                                         l->off + first, l->where};
                l->len = first;
                done = true;
        }
        pthread_mutex_unlock(&locals_mu);
        return done;
}

void shim_locals_each(enum shim_placement where, void (*fn)(const struct shim_local *l))
{
        pthread_mutex_lock(&locals_mu);
        for (unsigned i = 0; i < n_locals; i++)
                if (locals[i].where == where)
                        fn(&locals[i]);
        pthread_mutex_unlock(&locals_mu);
}
