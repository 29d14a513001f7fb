/* manifest.h: a checkpoint's manifest (docs/memd.md "Checkpoints"): the
 * container it was taken of (its limits and appliances), and for each of its
 * processes' arenas the virtual base and size, the extents that hold data,
 * and the appliance snapshot of each region with the region it was taken of.
 * One file STATE_DIR/snapshots/NAME.json, written crash-consistently like the
 * state files (state_write_json). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "api.h"
#include "container.h"
#include "error.h"
#include "manager.h"
#include "transport/transport.h"

#define MANIFEST_VERSION 1
#define MANIFEST_MAX_ARENAS 1024
#define MANIFEST_MAX_EXTENTS (1U << 16) /* per arena */
#define MANIFEST_MAX_ADDR (1ULL << 57)  /* above any user address (5-level paging) */

struct manifest_region {
        const char *appliance;       /* the URI memd reached it by */
        struct xmem_region_ref snap; /* the read-only snapshot */
        uint64_t source;             /* the id of the region it was taken of */
};

struct manifest_extent {
        uint64_t offset, len; /* bytes into the arena, page multiples */
};

struct manifest_arena {
        pid_t pid;
        uint64_t base, size;
        size_t n_regions;
        struct manifest_region regions[MANAGER_MAX_APPLIANCES];
        size_t n_extents;
        struct manifest_extent *extents; /* sorted, disjoint */
};

struct manifest {
        const char *name;
        struct api_attach attach; /* the container: id, cgroup, limits, policy, appliance */
        uint64_t created_ms;      /* CLOCK_REALTIME */
        uint32_t chunk_size;      /* the stripe over the appliances */
        size_t n_arenas;
        struct manifest_arena *arenas;
        void *json_; /* the parsed document (strings point into it) */
};

/* Snapshot names are container ids: [A-Za-z0-9_.-]{1,128}, no "." or "..". */
bool manifest_name_valid(const char *name);

/* Parse LEN bytes of BUF: every field checked, ERR names the first one wrong.
 * Fuzzed (tests/fuzz/fuzz_manifest.c). */
int manifest_parse(const char *buf, size_t len, struct manifest *ret, struct xmem_error *err);
void manifest_done(struct manifest *m);

struct manager;
struct arena;
/* MA's extents: the pages of A that hold data (written, inherited, or in
 * the store), at most MANIFEST_MAX_EXTENTS runs (past that the last widens).
 * -ENOMEM. */
int manifest_extents_of(struct arena *a, struct manifest_arena *ma);

/* The manifest as JSON (what manifest_parse reads back). */
json_object *manifest_to_json(const struct manifest *m);
/* The summary `snapshots` lists: name, container, created_ms, arenas,
 * external (bytes with data), appliances. */
json_object *manifest_summary_json(const struct manifest *m);

/* STATE_DIR/snapshots/NAME.json: load (-ENOENT: no such snapshot), save
 * (crash-consistent), remove. */
int manifest_load(struct manager *mgr, const char *name, struct manifest *ret,
                  struct xmem_error *err);
int manifest_save(struct manager *mgr, const struct manifest *m, struct xmem_error *err);
int manifest_remove(struct manager *mgr, const char *name);
bool manifest_exists(struct manager *mgr, const char *name);
/* Call FN for each valid manifest (a bad file is logged and skipped). */
int manifest_each(struct manager *mgr, int (*fn)(const struct manifest *m, void *data), void *data);

/* checkpoint.c: a checkpoint's or a rollback's job on the container's worker
 * (docs/memd.md "Checkpoints"): its manifest, the processes it works on
 * (collected on the event loop), its result. */
struct lifecycle_job {
        struct job job;
        struct manager *m;
        struct manifest mf;
        struct process **procs;
        size_t n;
        int r;
        struct xmem_error err;
        uint64_t pause_us;
};
/* A job of SIZE bytes (a struct lifecycle_job first) for N processes of C;
 * NULL when out of memory. */
struct lifecycle_job *lifecycle_job_new(struct manager *m, struct container *c, size_t size,
                                        size_t n, void (*run)(struct job *),
                                        int (*done)(struct job *, struct api_call *,
                                                    struct xmem_error *),
                                        const char *method);
/* Frees what J holds (its abandon, and the end of its done). */
void lifecycle_job_abandon(struct job *j);
/* The start of its done, on the event loop: the container free for the next
 * change; J's result (ERR set from it on failure). */
int lifecycle_job_end(struct job *j, struct xmem_error *err);
/* Queue J on its container's worker; the caller's connection waits. */
int lifecycle_job_defer(struct api_call *call, struct lifecycle_job *lj);
