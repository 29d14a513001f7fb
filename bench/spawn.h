/* spawn.h: start a private xmem-appliance for a benchmark or demo run (a free
 * loopback port and a unix socket in a temp dir) and stop it again. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* BIN: path of xmem-appliance, NULL = $XMEM_APPLIANCE, else next to this
 * program's build tree, else PATH. Fills the tcp:// and shm:// uris. */
int spawn_appliance(const char *bin, uint64_t pool_size, char *tcp_uri, size_t tcp_len,
                    char *shm_uri, size_t shm_len, pid_t *ret_pid, char *dir, size_t dir_len);
void spawn_stop(pid_t pid, const char *dir);
