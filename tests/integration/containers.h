/* containers.h: helpers of test_containers.c: run commands with captured
 * output, build a busybox rootfs and runc bundles, run memd on a harness
 * appliance and ask it things. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "harness.h"

struct ctr_env {
        struct harness_proc app;
        pid_t memd_pid;
        char dir[64];       /* private temp dir: rootfs, bundles, runc root, logs */
        char rootfs[128];
        char sock[160];     /* memd's socket (DIR/memd/memd.sock) */
        char memd_log[160];
        char runc_root[128];
        char cgroup_parent[64]; /* "/xmem-test-PID" */
        char pool_size[16];     /* the appliance's --pool-size ("": its default) */
        /* A second appliance (second.pid > 0 when started): set
         * WANT_SECOND before ctr_memd_start; APP then copies to it (--peer)
         * and memd has both (--appliance APP --appliance SECOND). */
        bool want_second;
        struct harness_proc second;
        /* Set before ctr_memd_start: the appliance also listens on this tcp
         * URI, and memd reaches it by it (another host's address). */
        char appliance_uri[128];
};

struct cmd_result {
        int status;     /* waitpid status; -1 on timeout (killed) */
        char out[8192];
        char err[8192];
};

/* Run ARGV (NULL-terminated) with extra ENV entries ("K=V", NULL-terminated,
 * may be NULL), stdin from /dev/null, for at most TIMEOUT_S seconds. */
void ctr_run(const char *const *argv, const char *const *env, int timeout_s,
             struct cmd_result *ret);
bool ctr_exited(const struct cmd_result *r, int code);

/* DIR, rootfs with the payload (XMEM_FILL) and the shim's libraries. */
void ctr_env_init(struct ctr_env *e);
/* Start the appliance (harness) and memd on it. */
void ctr_memd_start(struct ctr_env *e);
/* Stop memd with SIG and start a new one on the same state directory and
 * socket (its containers are adopted again). */
void ctr_memd_restart(struct ctr_env *e, int sig);
/* After ctr_env_init: the programs PROGS (NULL-terminated paths) added to
 * the rootfs, then ctr_memd_start. */
void ctr_env_setup_with(struct ctr_env *e, const char *const *progs);
void ctr_env_cleanup(struct ctr_env *e);
/* As root: ctr_env_init and ctr_memd_start (a test's .init); else nothing. */
void ctr_env_start(struct ctr_env *e);

/* A runc bundle DIR/NAME: `runc spec`, rootfs, ARGS, ANNOTATIONS (JSON
 * object text or NULL), cgroupsPath PARENT/NAME, no terminal; when HOOK_SOCKET
 * is set, xmem-hook createRuntime/poststop hooks with that socket. Returns the
 * bundle path (static buffer per call site: copy it). */
void ctr_bundle(const struct ctr_env *e, const char *name, const char *const *args,
                const char *annotations, const char *hook_socket, char *ret_bundle, size_t len);
/* `runc --root R run --bundle B NAME`, or VIA (e.g. crun) instead of runc
 * when set; then `runc (or VIA) delete --force NAME`. */
void ctr_runc_run(const struct ctr_env *e, const char *via, const char *bundle, const char *name,
                  int timeout_s, struct cmd_result *ret);

/* Skip the test unless root with runc. */
void ctr_need_root_runc(void);
/* The xmem-runtime of the build (`run`, then `runc delete --force`), with
 * XMEM_SOCKET naming E's memd. */
void ctr_runtime_run(const struct ctr_env *e, const char *bundle, const char *name, int timeout_s,
                     struct cmd_result *r);
/* The same with XMEM_RUNTIME=RUNTIME (the runtime xmem-runtime runs, e.g.
 * "crun"; NULL: its own choice, runc first), deleted with RUNTIME. */
void ctr_runtime_run_with(const struct ctr_env *e, const char *runtime, const char *bundle,
                          const char *name, int timeout_s, struct cmd_result *r);

/* ctr_runc_run in a child (which makes no Criterion call): its stdout and
 * stderr in E->dir/NAME.out; the child exits 0 when the container exited 0
 * and said EXPECT. Returns the child's pid. */
pid_t ctr_run_async(const struct ctr_env *e, const char *bundle, const char *name,
                    const char *expect);
/* memd's list: the number of containers attached (-1 when memd is down). */
int ctr_memd_count(const struct ctr_env *e);
/* memd's stats of container ID: FIELD (a number) or -1 (unknown, memd down). */
int64_t ctr_memd_stat(const struct ctr_env *e, const char *id, const char *field);
/* The harness appliance's own stats: FIELD (e.g. "regions", "chunks_used") or -1. */
int64_t ctr_appliance_stat(const struct ctr_env *e, const char *field);
/* The same of the appliance APP. */
int64_t ctr_proc_stat(const struct harness_proc *app, const char *field);
/* Container NAME's memory cgroup as runc's cgroupfs driver makes it from
 * ctr_bundle's cgroupsPath PARENT/NAME: v1 /sys/fs/cgroup/memory/PARENT/NAME,
 * v2 /sys/fs/cgroup/PARENT/NAME. False when the host has no memory cgroup. */
bool ctr_cgroup(const struct ctr_env *e, const char *name, struct harness_cg *ret);
/* Is NAME's memory cgroup (PARENT/NAME under the v1 memory or v2 tree) there? */
bool ctr_cgroup_exists(const struct ctr_env *e, const char *name);

/* Shell, inside a container: $M/$L is the container's own memory limit, $M/$P
 * its peak usage, $M/$O the file with its "oom_kill N" line. On cgroup v2 the
 * container's cgroup namespace (runc spec adds one there) shows its own cgroup at
 * /sys/fs/cgroup: memory.max, memory.peak (Linux 5.19+), memory.events; on
 * v1 its memory controller's at /sys/fs/cgroup/memory: memory.limit_in_bytes,
 * memory.max_usage_in_bytes, memory.oom_control. */
#define CTR_SH_MEMCG                                                                               \
        "if [ -e /sys/fs/cgroup/memory.max ]; then M=/sys/fs/cgroup L=memory.max P=memory.peak "   \
        "O=memory.events; else M=/sys/fs/cgroup/memory L=memory.limit_in_bytes "                   \
        "P=memory.max_usage_in_bytes O=memory.oom_control; fi; "
/* One line "limit N max N|none oom_kill N" (none: no peak kept, v2 before
 * Linux 5.19); ctr_report_parse reads it. */
#define CTR_SH_REPORT                                                                              \
        "{ " CTR_SH_MEMCG "echo limit $(cat $M/$L) max $(cat $M/$P 2>/dev/null || echo none) "     \
        "$(grep '^oom_kill ' $M/$O); } 2>&1"
/* The CTR_SH_REPORT line in OUT: false when there is none. *RET_HAS_PEAK
 * false (and *RET_PEAK 0) where the kernel keeps no peak. */
bool ctr_report_parse(const char *out, unsigned long long *ret_limit, unsigned long long *ret_peak,
                      bool *ret_has_peak, unsigned long long *ret_oom);
/* Read a whole file into BUF (NUL-terminated); false if unreadable. */
bool ctr_read_file(const char *path, char *buf, size_t len);
