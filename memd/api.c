/* api.c: memd's request envelope, the methods' typed fields and checks,
 * replies, datagram I/O and the listening sockets (docs/api.md). No memd
 * state here: the method table and its handlers are memd/methods.c. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "api.h"
#include <xmem/acct.h>
#include "errno-name.h"
#include "fdio.h"
#include "json-util.h"
#include "macro.h"
#include "parse.h"

const struct api_method *api_method_find(const char *name)
{
        for (size_t i = 0; i < api_methods_n; i++)
                if (strcmp(api_methods[i].name, name) == 0)
                        return &api_methods[i];
        return NULL;
}

bool api_id_valid(const char *id)
{
        size_t n = strlen(id);

        if (n == 0 || n > API_ID_MAX || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
                return false;
        return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

int api_policy_parse(const char *s, struct api_policy *ret)
{
        uint64_t n;

        if (strcmp(s, "local-first") == 0) {
                *ret = (struct api_policy){ .kind = API_POLICY_LOCAL_FIRST };
                return 0;
        }
        if (strcmp(s, "external-first") == 0) {
                *ret = (struct api_policy){ .kind = API_POLICY_EXTERNAL_FIRST };
                return 0;
        }
        if (strncmp(s, "ratio:", 6) != 0 || parse_u64(s + 6, &n) < 0 || n == 0 ||
            n > API_MAX_RATIO)
                return -EINVAL;
        *ret = (struct api_policy){ .kind = API_POLICY_RATIO, .ratio = (uint32_t)n };
        return 0;
}

const char *api_policy_format(const struct api_policy *p, char *buf, size_t len)
{
        switch (p->kind) {
        case API_POLICY_LOCAL_FIRST:
                snprintf(buf, len, "local-first");
                break;
        case API_POLICY_EXTERNAL_FIRST:
                snprintf(buf, len, "external-first");
                break;
        case API_POLICY_RATIO:
                snprintf(buf, len, "ratio:%u", p->ratio);
                break;
        }
        return buf;
}

static bool cgroup_path_ok(const char *p)
{
        size_t n = strlen(p);

        if (p[0] != '/' || n >= 4096 || strstr(p, "/../") || strstr(p, "/./") ||
            (n >= 3 && strcmp(p + n - 3, "/..") == 0) || (n >= 2 && strcmp(p + n - 2, "/.") == 0))
                return false;
        for (const char *c = p; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                        return false;
        return true;
}

int api_attach_validate(struct api_attach *a, struct xmem_error *err)
{
        struct api_policy pol = { .kind = API_POLICY_LOCAL_FIRST };
        uint64_t alloc;

        if (!api_id_valid(a->id))
                return xmem_error_set(err, -EINVAL,
                                      "params.id: must match [A-Za-z0-9_.-]{1,128}, got '%.40s'",
                                      a->id);
        if (!cgroup_path_ok(a->cgroup))
                return xmem_error_set(err, -EINVAL,
                                      "params.cgroup: must be an absolute, normalised path");
        if (a->local_limit < API_MIN_LOCAL_LIMIT || a->local_limit > API_MAX_SIZE)
                return xmem_error_set(err, -EINVAL, "params.local_limit: must be from 4M to 1P");
        if (a->external == 0 || a->external > API_MAX_SIZE)
                return xmem_error_set(err, -EINVAL, "params.external: must be from 1 byte to 1P");
        if (a->external_max && (a->external_max < a->external || a->external_max > API_MAX_SIZE))
                return xmem_error_set(err, -EINVAL,
                                      "params.external_max: must be from external to 1P");
        if (a->policy_text && api_policy_parse(a->policy_text, &pol) < 0)
                return xmem_error_set(err, -EINVAL,
                                      "params.policy: must be local-first, external-first or "
                                      "ratio:N (N 1..%d)", API_MAX_RATIO);
        alloc = a->local_alloc_limit ? a->local_alloc_limit : a->local_limit / 2;
        if (alloc > a->local_limit)
                return xmem_error_set(err, -EINVAL,
                                      "params.local_alloc_limit: must not exceed local_limit");
        if (a->appliance && (a->appliance[0] == 0 || strlen(a->appliance) >= 256))
                return xmem_error_set(err, -EINVAL, "params.appliance: must be an endpoint URI");
        if (a->file_dir && (!cgroup_path_ok(a->file_dir) || strlen(a->file_dir) >= 4096))
                return xmem_error_set(err, -EINVAL,
                                      "params.file_dir: must be an absolute, normalised path");
        if (a->restore && !api_id_valid(a->restore))
                return xmem_error_set(err, -EINVAL,
                                      "params.restore: must be a snapshot name "
                                      "[A-Za-z0-9_.-]{1,128}");
        a->policy = pol;
        a->local_alloc_limit = alloc;
        return 0;
}

#define F(name, type, req, st, member)                                                             \
        { name, JSON_FIELD_##type, req, offsetof(st, member) }

const struct json_field api_attach_fields[] = {
        F("id", STRING, true, struct api_attach, id),
        F("cgroup", STRING, true, struct api_attach, cgroup),
        F("local_limit", SIZE, true, struct api_attach, local_limit),
        F("external", SIZE, true, struct api_attach, external),
        F("external_max", SIZE, false, struct api_attach, external_max),
        F("policy", STRING, false, struct api_attach, policy_text),
        F("local_alloc_limit", SIZE, false, struct api_attach, local_alloc_limit),
        F("appliance", STRING, false, struct api_attach, appliance),
        F("file_dir", STRING, false, struct api_attach, file_dir),
        F("restore", STRING, false, struct api_attach, restore),
        {},
};
const struct json_field api_detach_fields[] = {
        F("id", STRING, true, struct api_id, id),
        F("force", BOOL, false, struct api_id, force),
        {},
};
const struct json_field api_stats_fields[] = {
        F("id", STRING, false, struct api_id, id),
        {},
};
const struct json_field api_convert_fields[] = {
        F("id", STRING, true, struct api_convert, id),
        F("to", STRING, true, struct api_convert, to),
        {},
};
const struct json_field api_resize_fields[] = {
        F("id", STRING, true, struct api_resize, id),
        F("local_limit", SIZE, false, struct api_resize, local_limit),
        F("external", SIZE, false, struct api_resize, external),
        {},
};
const struct json_field api_no_fields[] = {
        {},
};
const struct json_field api_hello_fields[] = {
        F("version", U64, true, struct api_hello, version),
        F("fork_token", STRING, false, struct api_hello, fork_token),
        {},
};
const struct json_field api_register_fields[] = {
        F("base", U64, true, struct api_register, base),
        F("size", U64, true, struct api_register, size),
        {},
};

const struct json_field api_discard_fields[] = {
        F("offset", U64, true, struct api_discard, offset),
        F("length", U64, true, struct api_discard, length),
        {},
};

const struct json_field api_alias_fields[] = {
        F("op", STRING, true, struct api_alias, op),
        F("addr", U64, true, struct api_alias, addr),
        F("offset", U64, true, struct api_alias, offset),
        F("length", U64, true, struct api_alias, length),
        {},
};

const struct json_field api_checkpoint_fields[] = {
        F("id", STRING, true, struct api_snapshot, id),
        F("name", STRING, false, struct api_snapshot, name),
        {},
};
const struct json_field api_snapshots_fields[] = {
        F("id", STRING, false, struct api_snapshot, id),
        {},
};
const struct json_field api_delete_snapshot_fields[] = {
        F("name", STRING, true, struct api_snapshot, name),
        {},
};
const struct json_field api_restore_fields[] = {
        F("name", STRING, true, struct api_snapshot, name),
        F("rollback", STRING, false, struct api_snapshot, rollback),
        F("new", STRING, false, struct api_snapshot, new_id),
        {},
};

const struct json_field api_move_fields[] = {
        F("id", STRING, true, struct api_move, id),
        F("to", STRING, true, struct api_move, to),
        {},
};

int api_check_move(union api_params *p, struct xmem_error *err)
{
        if (!api_id_valid(p->move.id))
                return xmem_error_set(err, -EINVAL, "params.id: must match [A-Za-z0-9_.-]{1,128}");
        if (!p->move.to[0] || strlen(p->move.to) >= 256)
                return xmem_error_set(err, -EINVAL, "params.to: must be an appliance URI");
        return 0;
}

int api_check_snapshot(union api_params *p, struct xmem_error *err)
{
        const struct api_snapshot *s = &p->snapshot;
        const char *bad = NULL;

        if (s->id && !api_id_valid(s->id))
                bad = "id";
        else if (s->name && !api_id_valid(s->name))
                bad = "name";
        else if (s->rollback && !api_id_valid(s->rollback))
                bad = "rollback";
        else if (s->new_id && !api_id_valid(s->new_id))
                bad = "new";
        if (bad)
                return xmem_error_set(err, -EINVAL,
                                      "params.%s: must match [A-Za-z0-9_.-]{1,128} (no slashes)",
                                      bad);
        if (s->rollback && s->new_id)
                return xmem_error_set(err, -EINVAL, "params.new: not with params.rollback");
        return 0;
}

int api_check_attach(union api_params *p, struct xmem_error *err)
{
        return api_attach_validate(&p->attach, err);
}

int api_check_convert(union api_params *p, struct xmem_error *err)
{
        struct api_convert *c = &p->convert;

        if (!api_id_valid(c->id))
                return xmem_error_set(err, -EINVAL, "params.id: must match [A-Za-z0-9_.-]{1,128}");
        if (strcmp(c->to, "local") == 0)
                c->target = XMEM_CONVERT_LOCAL;
        else if (strcmp(c->to, "file") == 0)
                c->target = XMEM_CONVERT_FILE;
        else if (strcmp(c->to, "appliance") == 0)
                c->target = XMEM_CONVERT_APPLIANCE;
        else
                return xmem_error_set(err, -EINVAL, "params.to: must be local, file or appliance");
        return 0;
}

int api_check_resize(union api_params *p, struct xmem_error *err)
{
        struct api_resize *rs = &p->resize;

        if (!api_id_valid(rs->id))
                return xmem_error_set(err, -EINVAL, "params.id: must match [A-Za-z0-9_.-]{1,128}");
        if (rs->local_limit == 0 && rs->external == 0)
                return xmem_error_set(err, -EINVAL,
                                      "params: nothing to resize (local_limit, external)");
        if (rs->local_limit &&
            (rs->local_limit < API_MIN_LOCAL_LIMIT || rs->local_limit > API_MAX_SIZE))
                return xmem_error_set(err, -EINVAL, "params.local_limit: must be from 4M to 1P");
        if (rs->external > API_MAX_SIZE)
                return xmem_error_set(err, -EINVAL, "params.external: must be from 1 byte to 1P");
        return 0;
}

int api_check_id(union api_params *p, struct xmem_error *err)
{
        if (p->id.id && !api_id_valid(p->id.id))
                return xmem_error_set(err, -EINVAL, "params.id: must match [A-Za-z0-9_.-]{1,128}");
        return 0;
}

int api_check_hello(union api_params *p, struct xmem_error *err)
{
        const char *t = p->hello.fork_token;

        if (p->hello.version < 1 || p->hello.version > API_SHIM_VERSION)
                return xmem_error_set(err, -EPROTONOSUPPORT,
                                      "params.version: unsupported shim version %llu (memd "
                                      "speaks 1 to %d)",
                                      (unsigned long long)p->hello.version, API_SHIM_VERSION);
        if (t && (strlen(t) != API_TOKEN_LEN || strspn(t, "0123456789abcdef") != API_TOKEN_LEN))
                return xmem_error_set(err, -EINVAL, "params.fork_token: must be %d hex digits",
                                      API_TOKEN_LEN);
        return 0;
}

/* A page-aligned START and a non-zero page-multiple LEN. */
static int check_pages(uint64_t start, const char *start_name, uint64_t len, const char *len_name,
                       struct xmem_error *err)
{
        if (start % 4096 || len == 0 || len % 4096)
                return xmem_error_set(err, -EINVAL,
                                      "params.%s: must be a non-zero multiple of the page size",
                                      start % 4096 ? start_name : len_name);
        return 0;
}

int api_check_register(union api_params *p, struct xmem_error *err)
{
        return check_pages(p->reg.base, "base", p->reg.size, "size", err);
}

int api_check_discard(union api_params *p, struct xmem_error *err)
{
        return check_pages(p->discard.offset, "offset", p->discard.length, "length", err);
}

int api_check_alias(union api_params *p, struct xmem_error *err)
{
        struct api_alias *a = &p->alias;
        const char *const ops[] = {"pin", "remap", "live", "hold", "drop"};
        bool known = false;

        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                known |= strcmp(a->op, ops[i]) == 0;
        if (!known)
                return xmem_error_set(err, -EINVAL, "params.op: must be pin, remap, live, hold or drop");
        if (a->addr % 4096)
                return xmem_error_set(err, -EINVAL, "params.addr: must be a multiple of the page "
                                                    "size");
        return check_pages(p->alias.offset, "offset", p->alias.length, "length", err);
}

struct envelope {
        uint64_t version;
        const char *method;
        json_object *params;
};

static const struct json_field envelope_fields[] = {
        F("xmem", U64, true, struct envelope, version),
        F("method", STRING, true, struct envelope, method),
        F("params", OBJECT, false, struct envelope, params),
        {},
};

static int parse_params(const struct api_method *m, json_object *params, struct api_request *req,
                        struct xmem_error *err)
{
        _cleanup_json_ json_object *empty = NULL;
        int r;

        if (!params)
                params = empty = json_object_new_object();
        r = json_dispatch_at(params, m->fields, &req->p, sizeof(req->p), false, "params", err);
        if (r >= 0 && m->check)
                r = m->check(&req->p, err);
        return r < 0 ? xmem_error_prefix(err, "%s", m->name) : 0;
}

int api_request_parse(const char *buf, size_t len, struct api_request *ret,
                      struct xmem_error *err)
{
        _cleanup_json_ json_object *root = NULL;
        struct envelope env = {};
        struct api_request req = {};
        int r;

        if (len > API_MAX_MESSAGE)
                return xmem_error_set(err, -EMSGSIZE, "request: message larger than %d bytes",
                                      API_MAX_MESSAGE);
        r = json_parse(buf, len, &root, err);
        if (r < 0)
                return xmem_error_prefix(err, "request");
        r = json_dispatch(root, envelope_fields, &env, sizeof(env), false, err);
        if (r < 0)
                return xmem_error_prefix(err, "request");
        if (env.version != API_VERSION)
                return xmem_error_set(err, -EPROTONOSUPPORT,
                                      "request: xmem: unsupported API version %llu (memd speaks %d)",
                                      (unsigned long long)env.version, API_VERSION);
        req.method = api_method_find(env.method);
        if (!req.method)
                return xmem_error_set(err, -EOPNOTSUPP, "request: method: unknown method '%.64s'",
                                      env.method);
        r = parse_params(req.method, env.params, &req, err);
        if (r < 0)
                return r;
        req.root = TAKE_PTR(root);
        *ret = req;
        return 0;
}

void api_request_done(struct api_request *r)
{
        json_object_put(r->root);
        r->root = NULL;
}

json_object *api_reply_ok(json_object *result)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "xmem", json_object_new_int(API_VERSION));
        json_object_object_add(o, "ok", json_object_new_boolean(true));
        json_object_object_add(o, "result", result ? result : json_object_new_object());
        return o;
}

json_object *api_reply_error(int code, const char *msg)
{
        json_object *o = json_object_new_object(), *e = json_object_new_object();

        json_object_object_add(e, "errno", json_object_new_string(errno_name(code)));
        json_object_object_add(e, "message", json_object_new_string(msg));
        json_object_object_add(o, "xmem", json_object_new_int(API_VERSION));
        json_object_object_add(o, "ok", json_object_new_boolean(false));
        json_object_object_add(o, "error", e);
        return o;
}

ssize_t api_recv(int sock, char *buf, int *fds, size_t *ret_n_fds)
{
        size_t n_fds = API_MAX_FDS;
        /* MSG_TRUNC: the datagram's real length, to refuse an oversized one */
        ssize_t n = recv_with_fds_flags(sock, buf, API_MAX_MESSAGE + 1, fds, &n_fds, MSG_TRUNC);

        if (n == -EBADMSG)
                *ret_n_fds = 0;
        if (n < 0)
                return n;
        if (n > API_MAX_MESSAGE) {
                for (size_t i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
                *ret_n_fds = 0;
                return -EMSGSIZE;
        }
        *ret_n_fds = n_fds;
        return n;
}

int api_send(int sock, json_object *obj, const int *fds, size_t n_fds)
{
        size_t len;
        const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);

        if (!s)
                return -ENOMEM;
        return send_with_fds(sock, s, len, fds, n_fds);
}

static int mkdir_parents(const char *path)
{
        char buf[4096];

        snprintf(buf, sizeof(buf), "%s", path);
        for (char *s = buf + 1; (s = strchr(s, '/')); s++) {
                *s = 0;
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        return 0;
}

/* Bind and listen at PATH with MODE: a stale socket file is replaced, a live
 * one is -EADDRINUSE. ERR names SHOWN. */
static int listen_path(const char *path, const char *shown, mode_t mode, int *ret_fd,
                       struct xmem_error *err)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return xmem_error_set(err, -ENAMETOOLONG, "socket %s: path too long", shown);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "socket: %m");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return xmem_error_set(err, -EADDRINUSE, "socket %s: another memd is listening",
                                      shown);
        (void)unlink(path);
        /* the socket is created with MODE, never wider for a moment */
        mode_t old = umask(~mode & 0777);
        int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (r < 0 || chmod(path, mode) < 0 || listen(fd, 128) < 0)
                return xmem_error_set(err, negative_errno(), "socket %s: %m", shown);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int api_listen(const char *path, int *ret_fd, bool *ret_activated, struct xmem_error *err)
{
        int n = sd_listen_fds(1), r;

        if (n > 1)
                return xmem_error_set(err, -EINVAL, "systemd passed %d sockets, expected one", n);
        if (n == 1) {
                if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
                        return xmem_error_set(err, -EINVAL, "the socket systemd passed is not a "
                                              "listening SOCK_SEQPACKET unix socket");
                (void)fcntl(SD_LISTEN_FDS_START, F_SETFD, FD_CLOEXEC);
                (void)fcntl(SD_LISTEN_FDS_START, F_SETFL, O_NONBLOCK);
                *ret_fd = SD_LISTEN_FDS_START;
                *ret_activated = true;
                return 0;
        }
        if (mkdir_parents(path) < 0)
                return xmem_error_set(err, negative_errno(), "socket %s: creating its directory: %m",
                                      path);
        r = listen_path(path, path, 0600, ret_fd, err);
        if (r < 0)
                return r;
        *ret_activated = false;
        return 0;
}

int api_listen_at(int dirfd, const char *name, const char *shown, int *ret_fd,
                  struct xmem_error *err)
{
        char path[64];

        snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, name);
        return listen_path(path, shown, 0666, ret_fd, err);
}
