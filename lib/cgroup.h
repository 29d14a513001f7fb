/* cgroup.h: the memory controller of cgroup v1 and v2 behind one interface:
 * detection, a pid's memory cgroup, child creation/removal, usage and limits.
 * Every function takes the cgroupfs (and procfs) root as a parameter so unit
 * tests run on fake trees. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

#define CGROUP_FS_ROOT "/sys/fs/cgroup"
#define CGROUP_NO_LIMIT UINT64_MAX

enum cgroup_version {
        CGROUP_V1 = 1,
        CGROUP_V2 = 2,
};

/* Where the memory controller lives under FS_ROOT: v2 when a unified
 * hierarchy (FS_ROOT or FS_ROOT/unified) lists "memory" in cgroup.controllers,
 * else v1 at FS_ROOT/memory. *RET_MOUNT (malloc'd) is that hierarchy's root.
 * -ENOENT when neither exists. */
int cgroup_detect(const char *fs_root, enum cgroup_version *ret_version, char **ret_mount);

/* From the text of /proc/PID/cgroup, the path (starting with '/') of the
 * memory cgroup for VERSION. -ENOENT when absent, -EINVAL on garbage. */
int cgroup_parse_proc(const char *text, enum cgroup_version version, char **ret_path);
/* The same for the v1 hierarchy of CONTROLLER ("freezer"), or with NULL the
 * v2 unified one ("0::PATH"). */
int cgroup_parse_proc_controller(const char *text, const char *controller, char **ret_path);
/* The same from PROC_ROOT/PID/cgroup (PROC_ROOT normally "/proc"). */
int cgroup_pid_path(const char *proc_root, pid_t pid, enum cgroup_version version,
                    char **ret_path);

struct cgroup {
        enum cgroup_version version;
        char *dir; /* absolute directory: mount + path */
};

/* A handle on MOUNT/PATH (it need not exist yet). */
int cgroup_new(enum cgroup_version version, const char *mount, const char *path,
               struct cgroup **ret);
void cgroup_free(struct cgroup *cg);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct cgroup *, cgroup_free)
/* mkdir PARENT/NAME; on v2 first enables "+memory" in PARENT's
 * cgroup.subtree_control. -EEXIST if it exists. */
int cgroup_create_child(const struct cgroup *parent, const char *name, struct cgroup **ret);
/* rmdir (fails with -EBUSY while processes remain). */
int cgroup_remove(const struct cgroup *cg);
bool cgroup_exists(const struct cgroup *cg);
/* Write PID into cgroup.procs. */
int cgroup_move_pid(const struct cgroup *cg, pid_t pid);

struct cgroup_mem {
        uint64_t usage;    /* v1 memory.usage_in_bytes, v2 memory.current */
        uint64_t limit;    /* v1 memory.limit_in_bytes, v2 memory.max; CGROUP_NO_LIMIT */
        uint64_t high;     /* v2 memory.high; CGROUP_NO_LIMIT on v1 */
        uint64_t anon;     /* memory.stat: v1 total_rss (+ total_rss_huge), v2 anon */
        uint64_t file;     /* v1 total_cache, v2 file */
        uint64_t shmem;    /* v1 total_shmem, v2 shmem (arena pages count here) */
        uint64_t oom_kill; /* v1 memory.oom_control oom_kill, v2 memory.events oom_kill */
        uint64_t high_events; /* v2 memory.events high; 0 on v1 */
};

int cgroup_read_mem(const struct cgroup *cg, struct cgroup_mem *ret);

/* The local limit: v1 memory.limit_in_bytes; v2 memory.max = LIMIT and
 * memory.high = cgroup_high_for(LIMIT). CGROUP_NO_LIMIT removes it. */
int cgroup_set_limit(const struct cgroup *cg, uint64_t limit);
/* v1 only (memory.oom_control oom_kill_disable): with PAUSE, a task that
 * hits the limit sleeps until memory is freed instead of being OOM-killed,
 * and a charge elsewhere fails with ENOMEM. -EOPNOTSUPP on v2 (memory.high
 * throttles there instead). */
int cgroup_set_oom_pause(const struct cgroup *cg, bool pause);
/* v1: is a task of CG waiting at the limit (memory.oom_control under_oom)? */
bool cgroup_under_oom(const struct cgroup *cg);

/* Freezing a container (checkpoint, rollback): v2 cgroup.freeze in the
 * container's own cgroup (CG, the memory one is the unified one); v1 the
 * freezer hierarchy's cgroup of the container's process PID, found from
 * PROC_ROOT/PID/cgroup (runc puts every controller at the same path, but a
 * process's own line is what counts). The root cgroup is never frozen
 * (-EPERM). */
struct cgroup_freezer {
        enum cgroup_version version;
        char *dir; /* the cgroup whose freeze file is written */
};
int cgroup_freezer_find(const char *fs_root, const char *proc_root, const struct cgroup *cg,
                        pid_t pid, struct cgroup_freezer *ret);
void cgroup_freezer_done(struct cgroup_freezer *f);
/* Freeze and wait until every task is frozen (v1 freezer.state FROZEN, v2
 * cgroup.events frozen 1), at most TIMEOUT_MS: -ETIMEDOUT (then thaw). */
int cgroup_freeze(const struct cgroup_freezer *f, unsigned timeout_ms);
int cgroup_thaw(const struct cgroup_freezer *f);

/* memory.high for a v2 limit: 1/16 (at least 1 MiB, at most 64 MiB) below it. */
uint64_t cgroup_high_for(uint64_t limit);

/* Read "max" or a decimal number from DIR/FILE. */
int cgroup_read_u64(const struct cgroup *cg, const char *file, uint64_t *ret);
/* Find KEY's value in a "key value" per line file (memory.stat, memory.events). */
int cgroup_read_keyed(const struct cgroup *cg, const char *file, const char *key,
                      uint64_t *ret);
