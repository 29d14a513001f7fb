/* state.h: memd's state directory (docs/memd.md "State directory"): one
 * JSON file per attached container (its attach parameters, its processes'
 * records and their regions with ids and keys on which appliances), written
 * before memd acts on it (write, fsync, rename, fsync of the directory), so
 * that a restarted memd re-adopts every container (adopt.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "api.h"
#include "error.h"
#include "manager.h"
#include "transport/transport.h"

#define STATE_VERSION 1
#define STATE_SNAPSHOTS "snapshots" /* checkpoints' manifests, beside containers/ */
#define STATE_MAX_FILE (4U << 20) /* 1024 processes x 15 regions fit easily */

struct state_region {
        const char *appliance; /* the URI memd reached it by (points into the parsed JSON) */
        struct xmem_region_ref ref;
};

/* One process of a container as recorded: pid and start time (so a reused
 * pid is never taken for it), its arena and the regions behind it. */
struct state_process {
        pid_t pid;
        uint64_t start_time; /* /proc/PID/stat field 22, clock ticks since boot */
        uint64_t arena_size;
        uint64_t memfd_ino; /* the arena memfd's inode: the one shim.resume must send */
        uint32_t acct_slot;
        size_t n_regions;
        struct state_region regions[MANAGER_MAX_APPLIANCES];
};

struct state_container {
        struct api_attach attach; /* strings point into the parsed JSON */
        uint32_t chunk_size;
        size_t n_processes;
        struct state_process *processes;
        /* fork tokens' clones not claimed (only arena_size and regions) */
        size_t n_clones;
        struct state_process *clones;
        uint64_t acct_ino; /* the accounting page's memfd inode (0: unknown) */
        void *json_; /* the parsed document (owned) */
};

/* Parse one state file (LEN bytes of BUF): every field checked, ERR names the
 * first one wrong. Fuzzed (tests/fuzz/fuzz_state.c). */
int state_parse(const char *buf, size_t len, struct state_container *ret, struct xmem_error *err);
void state_container_done(struct state_container *s);

struct container;
struct manager;

/* Open (creating it, 0700) the state directory and its containers/ folder,
 * and lock it (flock): a second memd on the same directory fails to start. */
int state_open(struct manager *m, struct xmem_error *err);
void state_close(struct manager *m);
/* Write C's file (all of its processes) crash-consistently. */
int state_save(struct manager *m, const struct container *c, struct xmem_error *err);
/* Remove C's file (detach); the directory is fsynced. */
int state_remove(struct manager *m, const struct container *c);
/* Move the file NAME in containers/ aside to NAME.bad (never deleted), with a
 * one-line error naming it and WHY. */
void state_move_aside(struct manager *m, const char *name, const char *why);

/* Write O as the file STEM.json in DIRFD crash-consistently (a tmp file,
 * fsync, rename, fsync of the directory). */
int state_write_json(int dirfd, const char *stem, json_object *o, struct xmem_error *err);
/* Read the regular file NAME in DIRFD (at most STATE_MAX_FILE bytes; -EINVAL
 * otherwise) into *RET (malloc'd, NUL-terminated). */
int state_read_file(int dirfd, const char *name, char **ret, size_t *ret_len,
                    struct xmem_error *err);
/* A region as recorded: {"appliance": the URI memd reached it by, "id", "key"
 * (32 hex digits)}; the key parsed back. */
json_object *state_region_json(const char *appliance, const struct xmem_region_ref *ref);
/* How memd names transport T: its --appliance URI, else the one it reached. */
const char *state_appliance_name(const struct manager *m, const struct xmem_transport *t);
int state_hex_key(const char *s, uint8_t key[XMEM_KEY_SIZE]);
/* A recorded process's PID and its arena's SIZE (field SIZE_NAME) in range;
 * ERR names WHERE.FIELD. */
int state_check_arena(const char *where, uint64_t pid, const char *size_name, uint64_t size,
                      struct xmem_error *err);
/* The transport of memd's appliance URI (as configured or as reached), or NULL. */
struct xmem_transport *state_transport_of(const struct manager *m, const char *uri);

/* The start time of PID (field 22 of /proc/PID/stat), -ESRCH when gone. */
int state_proc_start_time(pid_t pid, uint64_t *ret);
