/* api.h: memd's socket protocol (docs/api.md): the request envelope, one
 * json_dispatch table per method, validation of parameters, reply building
 * and the datagram I/O. Pure of memd's state, so tests/unit/test_api.c runs it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "error.h"

#define API_VERSION 1
/* shim.hello params.version: 1 (two fds) or 2 (adds the accounting page) */
#define API_SHIM_VERSION 2
#define API_MAX_MESSAGE (64 * 1024)
#define API_MAX_FDS 4
#define API_ID_MAX 128
#define API_MIN_LOCAL_LIMIT (4ULL << 20)
#define API_MAX_SIZE (1ULL << 50) /* 1 PiB: a sanity bound for every size */
#define API_MAX_RATIO 1024

enum api_method {
        API_ATTACH,
        API_DETACH,
        API_LIST,
        API_STATS,
        API_SHIM_HELLO,
        API_SHIM_REGISTER,
        API_SHIM_FORK,
        _API_METHOD_MAX,
};

enum api_policy_kind {
        API_POLICY_LOCAL_FIRST,
        API_POLICY_EXTERNAL_FIRST,
        API_POLICY_RATIO,
};

struct api_policy {
        enum api_policy_kind kind;
        uint32_t ratio; /* API_POLICY_RATIO: N of "ratio:N" (1..API_MAX_RATIO) */
};

struct api_attach {
        const char *id;
        const char *cgroup;
        uint64_t local_limit;
        uint64_t external;
        const char *policy_text; /* NULL: local-first */
        uint64_t local_alloc_limit; /* 0: half the local limit */
        const char *appliance;      /* NULL: all of memd's appliances */
        struct api_policy policy;   /* parsed from policy_text */
};

struct api_id {
        const char *id;
        bool force; /* detach only */
};

struct api_hello {
        uint64_t version;
        const char *fork_token; /* NULL unless a forked child */
};

struct api_register {
        uint64_t base;
        uint64_t size;
};

/* One parsed request. Strings point into ROOT (owned). */
struct api_request {
        enum api_method method;
        json_object *root;
        union {
                struct api_attach attach;
                struct api_id id;
                struct api_hello hello;
                struct api_register reg;
        } p;
};

const char *api_method_name(enum api_method m);
/* Methods a non-root caller may use (shim.* and stats). */
bool api_method_unprivileged(enum api_method m);
/* File descriptors a method's request carries (shim.register: 1, others 0). */
size_t api_method_fds(enum api_method m);

/* [A-Za-z0-9_.-]{1,128}, not "." or "..". */
bool api_id_valid(const char *id);
/* "local-first", "external-first", "ratio:N" with N in 1..1024. */
int api_policy_parse(const char *s, struct api_policy *ret);
const char *api_policy_format(const struct api_policy *p, char *buf, size_t len);
/* Check attach parameters beyond their JSON types and fill defaults (policy,
 * local_alloc_limit). ERR: "params.FIELD: why". */
int api_attach_validate(struct api_attach *a, struct xmem_error *err);

/* Parse and validate one datagram. On failure ERR holds the complete reply
 * message ("attach: params.id: ...", "request: invalid JSON: ...") and *RET is
 * untouched. */
int api_request_parse(const char *buf, size_t len, struct api_request *ret,
                      struct xmem_error *err);
void api_request_done(struct api_request *r);

/* {"xmem":1,"ok":true,"result":RESULT} (RESULT taken over; NULL: {}). */
json_object *api_reply_ok(json_object *result);
/* {"xmem":1,"ok":false,"error":{"errno":"EINVAL","message":MSG}}; CODE is -errno. */
json_object *api_reply_error(int code, const char *msg);

/* Receive one datagram: up to API_MAX_MESSAGE bytes into BUF (which must hold
 * API_MAX_MESSAGE + 1), descriptors into FDS (up to API_MAX_FDS, O_CLOEXEC).
 * Returns its length, 0 on EOF, -EMSGSIZE when it was larger (its descriptors
 * closed), -errno. */
ssize_t api_recv(int sock, char *buf, int *fds, size_t *ret_n_fds);
/* Send OBJ as one datagram with N_FDS descriptors. */
int api_send(int sock, json_object *obj, const int *fds, size_t n_fds);

/* The listening socket: the one systemd passed (LISTEN_FDS, must be a
 * SOCK_SEQPACKET unix socket), else a new one bound at PATH (mode 0666: the
 * API checks callers by SO_PEERCRED; a stale socket file is replaced, a live
 * one is -EADDRINUSE). *RET_ACTIVATED tells which. */
int api_listen(const char *path, int *ret_fd, bool *ret_activated, struct xmem_error *err);
