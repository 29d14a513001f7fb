/* memd-client.h: one JSON request/reply with memd over its SOCK_SEQPACKET
 * socket (docs/api.md), for xmem-hook. */
#pragma once

#include <json-c/json.h>

#include "error.h"

/* Connect to memd at PATH. */
int memd_connect(const char *path, int *ret_fd, struct xmem_error *err);
/* Send {"xmem":1,"method":METHOD,"params":PARAMS} (PARAMS consumed) and wait
 * for the reply. ok:true -> 0 and *RET_RESULT (may be NULL); ok:false -> the
 * negative errno memd named, with its message in ERR. */
int memd_call(int fd, const char *method, json_object *params, json_object **ret_result,
              struct xmem_error *err);
