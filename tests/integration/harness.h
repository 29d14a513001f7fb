/* harness.h: start and stop real xmem processes (the appliance, later memd)
 * for integration tests. Binaries come from the environment meson test sets
 * (XMEM_APPLIANCE, ...). */
#pragma once

#include <stdbool.h>
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

/* A fresh temp dir for P (mkdtemp under /tmp). */
void harness_init(struct harness_proc *p);

/* Start xmem-appliance listening on a free loopback port and a unix socket in
 * P->dir, with EXTRA_ARGS (NULL-terminated, may be NULL) appended; waits until
 * both accept connections. Reuses P->port if already set (restart). Aborts
 * the test (cr_assert) on failure. */
void harness_appliance_start(struct harness_proc *p, const char *const *extra_args);
/* SIGTERM and wait; returns the exit status as waitpid reports it. */
int harness_stop(struct harness_proc *p);
/* SIGKILL and wait. */
void harness_kill(struct harness_proc *p);
/* Stop if running and remove the temp dir. */
void harness_cleanup(struct harness_proc *p);

/* Connect a raw TCP socket to P (for malformed-frame tests). */
int harness_connect_tcp(const struct harness_proc *p);

/* True if running as root (tests that need it skip otherwise). */
bool harness_is_root(void);
/* Fill BUF with a reproducible pattern derived from SEED and the absolute OFFSET. */
void harness_pattern(void *buf, size_t len, uint64_t seed, uint64_t offset);
