/* api.h: memd's socket protocol (docs/api.md): the method table's shape, the
 * request envelope, the methods' typed fields and checks, reply building and
 * the datagram I/O. The table itself, with its handlers, is memd/methods.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "error.h"
#include "json-util.h"

#define API_VERSION 1
/* shim.hello params.version: 1 (two fds) or 2 (adds the accounting page) */
#define API_SHIM_VERSION 2
#define API_MAX_MESSAGE (64 * 1024)
#define API_MAX_FDS 4
#define API_ID_MAX 128
#define API_TOKEN_LEN 32 /* a fork token: hex digits */
#define API_MIN_LOCAL_LIMIT (4ULL << 20)
#define API_MAX_SIZE (1ULL << 50) /* 1 PiB: a sanity bound for every size */
#define API_MAX_RATIO 1024

/* Who may call a method: host root on the admin socket, and/or any process
 * of a container on that container's own socket (acting on it alone). */
enum api_caller {
        API_CALLER_ADMIN = 1 << 0,
        API_CALLER_CONTAINER = 1 << 1,
};

struct api_call; /* memd's: the caller, its descriptors, the reply (conn.h) */
union api_params;

/* One method: everything memd knows about it, in one row of api_methods[]. */
struct api_method {
        const char *name;
        const struct json_field *fields; /* params, by type */
        /* checks beyond JSON types, filling defaults; ERR: "params.FIELD: why" */
        int (*check)(union api_params *p, struct xmem_error *err);
        unsigned callers; /* enum api_caller */
        size_t n_fds;     /* descriptors the request carries */
        int (*run)(struct api_call *call, union api_params *p, struct xmem_error *err);
        size_t n_fds_optional; /* ... and up to this many more */
};

extern const struct api_method api_methods[];
extern const size_t api_methods_n;
/* NULL when there is no such method. */
const struct api_method *api_method_find(const char *name);

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
        uint64_t external_max;   /* each arena's size: resize --external up to it (0: external) */
        const char *policy_text; /* NULL: local-first */
        uint64_t local_alloc_limit; /* 0: half the local limit */
        const char *appliance;      /* NULL: all of memd's appliances */
        const char *file_dir;       /* file memory's directory; NULL: memd's --file-dir */
        const char *restore;        /* a snapshot its first processes start from (NULL: none) */
        struct api_policy policy;   /* parsed from policy_text */
};

struct api_id {
        const char *id; /* stats on a container's socket: NULL (or its own id) */
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

struct api_discard {
        uint64_t offset;
        uint64_t length;
};

/* shim.alias (memd/alias.h) */
struct api_alias {
        const char *op; /* pin, live, hold, drop */
        uint64_t addr;
        uint64_t offset;
        uint64_t length;
};

struct api_convert {
        const char *id;
        const char *to; /* "local", "file" or "appliance" */
        int target;     /* XMEM_CONVERT_*, from TO */
};

/* resize: fields beyond id are each optional; at least one is required
 * (docs/api.md) */
struct api_resize {
        const char *id;
        uint64_t local_limit; /* 0: unchanged */
        uint64_t external;    /* 0: unchanged */
};

/* checkpoint, delete-snapshot, snapshots, restore (memd/checkpoint.c) */
struct api_snapshot {
        const char *id;       /* checkpoint: the container; snapshots: a filter (NULL: all) */
        const char *name;     /* checkpoint: NULL picks one; delete-snapshot, restore: required */
        const char *rollback; /* restore: roll this running container back */
        const char *new_id;   /* restore: start a new container from it (not yet) */
};

struct api_move {
        const char *id;
        const char *to; /* one of memd's appliances */
};
union api_params {
        struct api_convert convert;
        struct api_resize resize;
        struct api_move move;
        struct api_snapshot snapshot;
        struct api_discard discard;
        struct api_alias alias;
        struct api_attach attach;
        struct api_id id;
        struct api_hello hello;
        struct api_register reg;
};

/* One parsed request. Strings point into ROOT (owned). */
struct api_request {
        const struct api_method *method;
        json_object *root;
        union api_params p;
};

/* [A-Za-z0-9_.-]{1,128}, not "." or "..". */
bool api_id_valid(const char *id);
/* "local-first", "external-first", "ratio:N" with N in 1..1024. */
int api_policy_parse(const char *s, struct api_policy *ret);
const char *api_policy_format(const struct api_policy *p, char *buf, size_t len);
/* Check attach parameters beyond their JSON types and fill defaults (policy,
 * local_alloc_limit). ERR: "params.FIELD: why". */
int api_attach_validate(struct api_attach *a, struct xmem_error *err);

/* The methods' typed fields and their checks beyond JSON types (for
 * api_methods[], memd/methods.c). */
extern const struct json_field api_attach_fields[], api_detach_fields[], api_stats_fields[],
    api_no_fields[], api_hello_fields[], api_register_fields[], api_discard_fields[], api_alias_fields[],
    api_checkpoint_fields[], api_snapshots_fields[], api_delete_snapshot_fields[],
    api_restore_fields[], api_resize_fields[], api_move_fields[];
int api_check_attach(union api_params *p, struct xmem_error *err);
int api_check_id(union api_params *p, struct xmem_error *err); /* a valid id, if any */
int api_check_hello(union api_params *p, struct xmem_error *err);
int api_check_register(union api_params *p, struct xmem_error *err);
int api_check_discard(union api_params *p, struct xmem_error *err);
int api_check_alias(union api_params *p, struct xmem_error *err);
extern const struct json_field api_convert_fields[];
int api_check_resize(union api_params *p, struct xmem_error *err);
int api_check_convert(union api_params *p, struct xmem_error *err);
/* ids and snapshot names valid; restore: exactly one of rollback and new */
int api_check_snapshot(union api_params *p, struct xmem_error *err);
int api_check_move(union api_params *p, struct xmem_error *err);

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

/* The admin socket: the one systemd passed (LISTEN_FDS, must be a
 * SOCK_SEQPACKET unix socket), else a new one bound at PATH, mode 0600 (a
 * stale socket file is replaced, a live one is -EADDRINUSE). *RET_ACTIVATED
 * tells which. Non-blocking. */
int api_listen(const char *path, int *ret_fd, bool *ret_activated, struct xmem_error *err);
/* A container's socket: NAME in the directory DIRFD (reached through
 * /proc/self/fd, so no path length limit and no symlink on the way), mode
 * 0666: any uid of the container may connect. SHOWN names it in ERR. */
int api_listen_at(int dirfd, const char *name, const char *shown, int *ret_fd,
                  struct xmem_error *err);
