/* work.h: bench/run's workloads over one memory range, shared by xmem-bench-work
 * (working set from malloc) and xmem-bench-floor (working set in the floor's
 * userfaultfd mapping), so every system runs the same code path. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum work_kind {
        WORK_SEQ_WRITE,  /* first touch, then a rewrite: two figures, MB/s */
        WORK_SEQ_READ,   /* MB/s */
        WORK_RAND_READ,  /* uniform 64 B reads, kops/s */
        WORK_RAND_WRITE, /* uniform 4 KiB writes, kops/s */
        WORK_ZIPF_READ,  /* zipfian (theta 0.99, hot keys scattered) 64 B reads, kops/s */
        WORK_N_KINDS,
};

struct work_opts {
        enum work_kind kind;
        uint64_t ops;      /* random workloads: operations (a cap) */
        double seconds;    /* every measured phase stops after this long (a cap) */
        double zipf_theta; /* 0.99 */
        uint64_t seed;
        /* called once setup (the unmeasured first touch) is done and the
         * measured phase starts; the floor resets its latency histogram */
        void (*on_measure)(void *ctx);
        void *ctx;
};

/* Parse "seq_write" etc.; -EINVAL when unknown. */
int work_kind_parse(const char *name, enum work_kind *ret_kind);
const char *work_kind_name(enum work_kind kind);

/* Run OPTS->kind over [BASE, BASE + SIZE) (SIZE a multiple of 4 KiB, memory
 * never touched before) and print one JSON line per figure on stdout:
 *   {"figure":"seq_read","value":1234.5,"unit":"MB/s","bytes":N,"ops":N,"secs":S}
 * Every read is verified against the page's tag. Returns 0, or -EIO on a
 * wrong word (after printing {"error":...}). */
int work_run(void *base, size_t size, const struct work_opts *opts);
