/* claim.c: what the fault reader claims for a fill (see fill.h): the run of
 * FREE pages, and its charge against the container's external quota
 * (pages.h); a write over the quota ends in SIGBUS. Arena lock held where
 * noted. */
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fill.h"
#include "log.h"
#include "pages.h"

/* Claim the FREE chunks of [FROM, TO) that are contiguous with AT (AT itself
 * must be FREE) as one FILLING run. Arena lock held. */
void claim_run(struct arena *a, uint64_t from, uint64_t to, uint64_t at, struct fill_job *j)
{
        uint64_t first = at, end = at + 1, lo, hi;
        bool stored = false;

        /* one run is one stretch of adjacent addresses (alias.h) */
        arena_segment(a, at, &lo, &hi);
        from = MAX(from, lo);
        to = MIN(to, hi);
        while (first > from && a->state[first - 1] == CHUNK_FREE)
                first--;
        while (end < to && a->state[end] == CHUNK_FREE)
                end++;
        for (uint64_t c = first; c < end; c++) {
                pages_claim(a, c);
                stored |= a->stored[c];
        }
        j->first = first;
        j->n = end - first;
        j->stored = stored;
}

/* Charge J's pages for a writable fill (pages.h). Over the quota J shrinks to
 * the faulting page AT alone; false when even that does not fit (J is given
 * back). Arena lock held; nobody waits on J's pages yet. */
bool claim_charge(struct arena *a, struct fill_job *j, uint64_t at)
{
        uint64_t c;

        for (c = j->first; c < j->first + j->n; c++)
                if (!pages_charge(a, c, PAGE_CHARGING))
                        break;
        if (c == j->first + j->n)
                return true;
        for (c = j->first; c < j->first + j->n; c++)
                if (c != at)
                        pages_given_back(a, c);
        j->first = at;
        j->n = 1;
        j->stored = a->stored[at];
        if (pages_charge(a, at, PAGE_CHARGING))
                return true;
        pages_given_back(a, at);
        return false;
}

/* A write over the container's external quota: the process gets SIGBUS
 * (its faulting thread waits meanwhile; the default action ends the
 * process). Logged once per arena. */
void claim_over_quota(struct arena *a, uint64_t addr)
{
        atomic_fetch_add(&a->quota->refused, 1);
        if (a->pidfd >= 0)
                (void)syscall(SYS_pidfd_send_signal, a->pidfd, SIGBUS, NULL, 0);
        if (!a->quota_signalled)
                log_warning("a write at 0x%llx would go over the container's external quota "
                            "(%llu pages): SIGBUS to the process",
                            (unsigned long long)addr, (unsigned long long)a->quota->limit);
        a->quota_signalled = true;
}
