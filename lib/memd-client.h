/* memd-client.h: the client side of memd's API (docs/api.md): connect, one
 * JSON request, one reply over its SOCK_SEQPACKET socket. Used by xmem-hook
 * and xmemctl (the shim has its own, malloc-free one). */
#pragma once

#include <json-c/json.h>

#include "error.h"

/* Largest message memd sends or accepts (API_MAX_MESSAGE in memd/api.h). */
#define MEMD_MESSAGE_MAX (64 * 1024)

/* Connect to memd at PATH. TIMEOUT_S > 0 bounds every later send and
 * receive on the socket; 0 waits as long as memd takes. ERR: "memd at PATH:
 * why (is memd running?)". */
int memd_connect(const char *path, unsigned timeout_s, int *ret_fd, struct xmem_error *err);

/* Send {"xmem":1,"method":METHOD,"params":PARAMS} (PARAMS consumed; NULL:
 * {}) and return memd's whole reply in *RET_REPLY, ok:true or ok:false
 * alike. -errno only when no reply came or it was not JSON; ERR then says
 * "sending: ...", "closed the connection", "bad reply: ...". Descriptors
 * attached to the reply are closed. */
int memd_request(int fd, const char *method, json_object *params, json_object **ret_reply,
                 struct xmem_error *err);

/* memd_request, then ok:true -> 0 and the reply's result in *RET_RESULT
 * (NULL when it has none; RET_RESULT may be NULL); ok:false -> the negative
 * errno memd named (EIO for a name it does not know), with memd's message
 * in ERR. Transport errors are prefixed "memd: ". */
int memd_call(int fd, const char *method, json_object *params, json_object **ret_result,
              struct xmem_error *err);
