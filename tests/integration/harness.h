/* harness.h: start and stop real xmem processes (the appliance, later memd)
 * for integration tests. Binaries come from the environment meson test sets
 * (XMEM_APPLIANCE, ...). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct harness_proc {
        pid_t pid;
        char dir[64];        /* private temp dir (sockets, pool files) */
        uint16_t port;       /* tcp port (0 if none) */
        char tcp_uri[128];   /* tcp://127.0.0.1:PORT */
        char unix_uri[160];  /* unix://DIR/appliance.sock */
        char shm_uri[160];   /* shm://DIR/appliance.sock */
        char log_path[128];  /* the process's stderr */
};

/* In a child after fork, before exec: die with the test (a test killed by
 * its timeout runs no .fini, nor atexit). PARENT: the test's pid, taken
 * before the fork. */
void harness_die_with(pid_t parent);

/* harness-track.c: PID (its temp dir DIR) was started by the harness; it is
 * killed (and DIR removed) when the test's process exits while it still
 * runs, e.g. after a skip or a failure before the teardown. Untrack once
 * reaped. */
void harness_track(pid_t pid, const char *dir);
void harness_untrack(pid_t pid);

/* A fresh temp dir for P (mkdtemp under /tmp). */
void harness_init(struct harness_proc *p);

/* Pick P's free loopback port (unless set) and fill its URIs, without
 * starting anything: a test can name P (--peer) before it runs. */
void harness_plan(struct harness_proc *p);

/* A free tcp port (bound and released on 0.0.0.0). */
uint16_t harness_free_port(void);

/* Start xmem-appliance listening on a free loopback port and a unix socket in
 * P->dir, with EXTRA_ARGS (NULL-terminated, may be NULL) appended; waits until
 * both accept connections. Reuses P->port if already set (restart). Aborts
 * the test (cr_assert) on failure. */
void harness_appliance_start(struct harness_proc *p, const char *const *extra_args);
/* harness_init + harness_appliance_start with --pool-size POOL_SIZE. */
void harness_appliance_setup(struct harness_proc *p, const char *pool_size);
/* SIGTERM and wait; returns the exit status as waitpid reports it. */
int harness_stop(struct harness_proc *p);
/* SIGKILL and wait. */
void harness_kill(struct harness_proc *p);
/* SIGSTOP and wait until every thread of P has stopped (kill() returns
 * before they have: until then P serves on). Aborts the test after 10 s. */
void harness_sigstop(struct harness_proc *p);
/* Stop if running and remove the temp dir. */
void harness_cleanup(struct harness_proc *p);

/* A free loopback port (never one handed out lately in this process). */
uint16_t harness_free_port(void);
/* The regions the appliance at URI holds (its stats), -1 when it does not
 * answer. */
int64_t harness_appliance_regions(const char *uri);

/* Connect a raw TCP socket to P (for malformed-frame tests). */
int harness_connect_tcp(const struct harness_proc *p);
/* Connect a SOCK_SEQPACKET unix socket to PATH (memd's sockets): the fd, or
 * -errno. */
int harness_connect_unix(const char *path);

struct xmem_transport_opts;
/* A good client of the appliance at URI: alloc, write, read back, free,
 * each asserted (a refused client would fail here). */
void harness_good_client(const char *uri, const struct xmem_transport_opts *opts);

/* Criterion runs no .fini after a skip: run TEARDOWN, then skip. */
#define harness_skip(teardown, ...)                                                                \
        do {                                                                                       \
                teardown();                                                                        \
                cr_skip_test(__VA_ARGS__);                                                         \
        } while (0)

/* The value of FIELD in a /proc status file PATH, trimmed ("" if absent). */
void harness_status_field(const char *path, const char *field, char *out, size_t len);
/* Seccomp audit records (type 1326) of PID in the kernel log. */
int harness_audit_records(pid_t pid);
/* Does a syscall refused under a seccomp filter in MODE (an enum
 * privilege_violation: errno or log) reach dmesg here? Not with auditd
 * running. A probe child finds out. */
bool harness_violation_reaches_dmesg(int mode);

/* True if running as root (tests that need it skip otherwise). */
bool harness_is_root(void);
/* Skip the test unless running as root with /dev/userfaultfd present. */
void harness_require_uffd(void);

/* A real memd (XMEM_MEMD) in a fresh /tmp dir (mode 0755: a non-root caller
 * must reach the socket). */
struct harness_memd {
        pid_t pid;
        char dir[64];
        char sock[128]; /* DIR/memd.sock */
        char log[128];  /* DIR/memd.log: its stderr */
};
/* Start memd --socket SOCK --log-level debug --state-dir DIR/state ARGS (NULL-terminated, may be
 * NULL) and wait up to 10 s for READY=1 on our NOTIFY_SOCKET. DIR_TEMPLATE:
 * mkdtemp's template for M->dir, or NULL to start again in M->dir (a
 * restart). --state-dir DIR/state unless ARGS name one. Aborts the test on
 * failure. */
void harness_memd_start(struct harness_memd *m, const char *dir_template,
                        const char *const *args);

/* Start memd again in M->dir (same sockets and state directory, DIR/state)
 * after harness_memd_signal. */
void harness_memd_restart(struct harness_memd *m, const char *const *args);
/* Send SIG to memd and reap it (SIGKILL after 30 s); its directory stays.
 * Returns the wait status (-1 if it was not running). */
int harness_memd_signal(struct harness_memd *m, int sig);

/* The socket memd made for container ID (DIR/containers/ID/memd.sock): the
 * only one a shim may use. Returns BUF. */
const char *harness_memd_ctr_socket(const struct harness_memd *m, const char *id, char *buf,
                                    size_t len);
/* ARGV with LD_PRELOAD=$XMEM_SHIM and XMEM_SOCKET on memd M's container ID's
 * socket, in CG (NULL: ours): a program attached through the shim
 * (harness_child_spawn's STDERR_TOO). */
struct harness_child;
struct harness_cg;
void harness_memd_spawn(const struct harness_memd *m, const char *id, struct harness_child *c,
                        const char *const *argv, const struct harness_cg *cg, bool stderr_too);
/* SIGTERM memd and wait; stop its embedded appliance (it outlives memd);
 * remove M->dir unless XMEM_KEEP_TMP is set. Returns the wait status (-1 if
 * it was not running). */
int harness_memd_stop(struct harness_memd *m);
/* The pid in M's embedded appliance's pid file (DIR/appliance/embedded.pid),
 * -1 when there is none. */
pid_t harness_memd_embedded_pid(const struct harness_memd *m);
/* memd --socket M->sock --stop-embedded (its output into M->log). */
void harness_memd_stop_embedded(const struct harness_memd *m);

/* Run ARGV (execvp) with XMEM_SOCKET=SOCKET and LD_PRELOAD=PRELOAD (NULL:
 * unset), its stdout into OUT (NUL-terminated). Returns the wait status. */
int harness_run_output(char *const argv[], const char *socket, const char *preload, char *out,
                       size_t out_len);

/* The number in CGROUP/FILE: the whole file (KEY NULL) or the line "KEY N"
 * (memory.stat, memory.oom_control); 0 if KEY is absent. Aborts the test if
 * the file cannot be opened. */
uint64_t harness_cg_u64(const char *cgroup, const char *file, const char *key);

/* Fill BUF with a reproducible pattern derived from SEED and the absolute OFFSET. */
void harness_pattern(void *buf, size_t len, uint64_t seed, uint64_t offset);

/* harness-cgroup.c: the memory cgroups of tests, v1 or v2 alike (the
 * kernel's files: docs/containers.md "cgroup v2 and crun").
 *
 * The host's memory cgroup version as the tests use it: 1 with the v1 memory
 * hierarchy at /sys/fs/cgroup/memory (hybrid or legacy layout), 2 when
 * /sys/fs/cgroup is cgroup2 with "memory" in its cgroup.subtree_control (so
 * cgroups made under the root get the controller), 0 when neither:
 * HARNESS_CG_NONE is the skip message then. */
int harness_cg_version(void);
/* Is PATH a cgroup2 mount (statfs: CGROUP2_SUPER_MAGIC)? */
bool harness_is_cgroup2(const char *path);
#define HARNESS_CG_NONE                                                                            \
        "no usable memory cgroup: no v1 memory hierarchy at /sys/fs/cgroup/memory, and "           \
        "/sys/fs/cgroup is not cgroup2 with memory in its cgroup.subtree_control"

/* A memory cgroup of the test's own, in the v1 memory hierarchy when there is
 * one (as memd prefers on a hybrid host), else under the v2 root. */
struct harness_cg {
        int version;    /* 1 or 2; 0: not created */
        char path[160]; /* its directory */
};
/* Create NAME (e.g. "xmem-test-stall-123-a") in the memory hierarchy.
 * Returns false, creating nothing, when there is no memory controller; aborts
 * the test when mkdir fails. */
bool harness_cg_create(struct harness_cg *cg, const char *name);
/* Create REL ("/PARENT/NAME") and its missing parents in the memory
 * hierarchy (one that exists is fine); on v2 each parent first gets "+memory"
 * in its cgroup.subtree_control, as runc's cgroupfs driver does (else REL has
 * no memory controller). False with no memory controller; aborts the test
 * when mkdir fails. */
bool harness_cg_create_path(struct harness_cg *cg, const char *rel);
/* CG names the cgroup REL ("/PARENT/NAME", a runc cgroupsPath with the
 * cgroupfs driver) of the memory hierarchy: v1 /sys/fs/cgroup/memory/REL, v2
 * /sys/fs/cgroup/REL. Creates nothing; false when there is no memory
 * controller (harness_cg_version 0). */
bool harness_cg_at(struct harness_cg *cg, const char *rel);
/* Usage: v1 memory.usage_in_bytes, v2 memory.current. Aborts the test if
 * unreadable. */
uint64_t harness_cg_usage(const struct harness_cg *cg);
/* Limit: v1 memory.limit_in_bytes, v2 memory.max ("max": UINT64_MAX). */
uint64_t harness_cg_limit(const struct harness_cg *cg);
/* Peak usage into *RET: v1 memory.max_usage_in_bytes, v2 memory.peak (Linux
 * 5.19+); false when the kernel keeps none (the caller skips that check). */
bool harness_cg_peak(const struct harness_cg *cg, uint64_t *ret);
/* Set the limit (v1 memory.limit_in_bytes, v2 memory.max); asserted. */
void harness_cg_set_limit(const struct harness_cg *cg, uint64_t limit);
/* The freezer state of cgroup REL in v1's words: v1 freezer.state of the
 * freezer hierarchy's REL; v2 REL's cgroup.events "frozen 1" as "FROZEN",
 * else cgroup.freeze "1" as "FREEZING", else "THAWED". "(none)" when
 * unreadable (no such cgroup). */
void harness_cg_freezer_state(const char *rel, char *buf, size_t len);
/* v2: what a failed test left in cgroup directory PATH and below: thawed,
 * killed (cgroup.kill where the kernel has it, else SIGKILL to each pid of
 * cgroup.procs), then removed leaf-first; PATH itself stays. A no-op when
 * PATH is not there. */
void harness_cg_reap_below(const char *path);
/* rmdir CG, retrying for up to 5 s while its last processes die; no-op when
 * not created. */
void harness_cg_remove(struct harness_cg *cg);
/* Enter CG (write our pid to cgroup.procs): for a child after fork, so only
 * async-signal-safe calls. Returns 0 or -errno. */
int harness_cg_enter(const struct harness_cg *cg);
/* SIGKILL every process left in the cgroup directory PATH (a test that
 * failed half way leaves what it started there) and wait for them to leave
 * it, up to 5 s. */
void harness_cg_kill_all(const char *path);
/* OOM kills in CG: v1 memory.oom_control oom_kill, v2 memory.events oom_kill. */
uint64_t harness_cg_oom_kills(const struct harness_cg *cg);

/* A child process of the test with its stdin and stdout on pipes. */
struct harness_child {
        pid_t pid;  /* -1: none (or reaped) */
        int in;     /* we write to it (-1: closed) */
        int out;    /* we read from it (-1: closed) */
        int status; /* its wait status once reaped */
};
/* Run ARGV (execv) with ENVP entries (putenv, NULL-terminated, may be NULL)
 * added to ours, in CG (NULL: ours); its stderr stays ours unless
 * STDERR_TOO (then it comes with its stdout). Aborts the test on failure. */
void harness_child_spawn(struct harness_child *c, const char *const *argv, const char *const *envp,
                         const struct harness_cg *cg, bool stderr_too);
/* Read one line (without the newline) into BUF within TIMEOUT_MS.
 * Returns 1, 0 at EOF, -ETIME when the time ran out (BUF holds what came). */
int harness_child_line(struct harness_child *c, char *buf, size_t len, int timeout_ms);
/* Read the child's lines until one starts with WANT or TIMEOUT_MS pass; LAST:
 * the last line seen ("" if none). Returns the lines read, -1 if WANT never
 * came. */
int harness_child_follow(struct harness_child *c, const char *want, int timeout_ms, char *last,
                         size_t len);
/* CLOCK_MONOTONIC in milliseconds. */
long harness_now_ms(void);
/* The last LEN-1 bytes of the file at PATH into BUF ("" if it cannot be
 * read): a log's end for a failure message. Returns BUF. */
const char *harness_file_tail(const char *path, char *buf, size_t len);
/* Send LINE and a newline to the child's stdin. */
void harness_child_say(struct harness_child *c, const char *line);
/* Is the child still running (not reaped here)? Reaps it when it exited. */
bool harness_child_alive(struct harness_child *c);
/* Wait up to TIMEOUT_MS for the child to exit; returns its wait status, or
 * -ETIME (still running). */
int harness_child_wait(struct harness_child *c, int timeout_ms);
/* SIGKILL (if running), reap, close the pipes. Safe on a zeroed or finished
 * child (pid <= 0). */
void harness_child_kill(struct harness_child *c);

/* xmemctl --socket M->sock ARGS... (XMEM_CTL): its stdout and stderr into
 * OUT; true when it exited 0 within 20 s (killed otherwise). */
bool harness_ctl(const struct harness_memd *m, char *out, size_t len, const char *const *args);
/* The number after "FIELD": in JSON (the first occurrence); aborts the test
 * when absent. */
uint64_t harness_json_u64(const char *json, const char *field);
