/* api.c: memd's request envelope, per-method dispatch tables, validation and
 * replies (docs/api.md). No memd state here: the manager runs the methods. */
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
#include "errno-name.h"
#include "fdio.h"
#include "json-util.h"
#include "macro.h"
#include "parse.h"

static const char *const method_names[_API_METHOD_MAX] = {
        [API_ATTACH] = "attach",
        [API_DETACH] = "detach",
        [API_LIST] = "list",
        [API_STATS] = "stats",
        [API_SHIM_HELLO] = "shim.hello",
        [API_SHIM_REGISTER] = "shim.register",
        [API_SHIM_FORK] = "shim.fork",
};

#define F(name, type, req, st, member)                                                             \
        { name, JSON_FIELD_##type, req, offsetof(st, member) }

static const struct json_field attach_fields[] = {
        F("id", STRING, true, struct api_attach, id),
        F("cgroup", STRING, true, struct api_attach, cgroup),
        F("local_limit", SIZE, true, struct api_attach, local_limit),
        F("external", SIZE, true, struct api_attach, external),
        F("policy", STRING, false, struct api_attach, policy_text),
        F("local_alloc_limit", SIZE, false, struct api_attach, local_alloc_limit),
        F("appliance", STRING, false, struct api_attach, appliance),
        {},
};
static const struct json_field detach_fields[] = {
        F("id", STRING, true, struct api_id, id),
        F("force", BOOL, false, struct api_id, force),
        {},
};
static const struct json_field stats_fields[] = {
        F("id", STRING, true, struct api_id, id),
        {},
};
static const struct json_field empty_fields[] = {
        {},
};
static const struct json_field hello_fields[] = {
        F("version", U64, true, struct api_hello, version),
        F("fork_token", STRING, false, struct api_hello, fork_token),
        {},
};
static const struct json_field register_fields[] = {
        F("base", U64, true, struct api_register, base),
        F("size", U64, true, struct api_register, size),
        {},
};

static const struct json_field *const method_fields[_API_METHOD_MAX] = {
        [API_ATTACH] = attach_fields,   [API_DETACH] = detach_fields,
        [API_LIST] = empty_fields,      [API_STATS] = stats_fields,
        [API_SHIM_HELLO] = hello_fields, [API_SHIM_REGISTER] = register_fields,
        [API_SHIM_FORK] = empty_fields,
};
static const size_t method_params_size[_API_METHOD_MAX] = {
        [API_ATTACH] = sizeof(struct api_attach),   [API_DETACH] = sizeof(struct api_id),
        [API_LIST] = 0,                             [API_STATS] = sizeof(struct api_id),
        [API_SHIM_HELLO] = sizeof(struct api_hello), [API_SHIM_REGISTER] = sizeof(struct api_register),
        [API_SHIM_FORK] = 0,
};

const char *api_method_name(enum api_method m)
{
        return m < _API_METHOD_MAX ? method_names[m] : "request";
}

bool api_method_unprivileged(enum api_method m)
{
        return m == API_STATS || m == API_SHIM_HELLO || m == API_SHIM_REGISTER ||
               m == API_SHIM_FORK;
}

size_t api_method_fds(enum api_method m)
{
        return m == API_SHIM_REGISTER ? 1 : 0;
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
        a->policy = pol;
        a->local_alloc_limit = alloc;
        return 0;
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

static int parse_params(enum api_method m, json_object *params, struct api_request *req,
                        struct xmem_error *err)
{
        _cleanup_json_ json_object *empty = NULL;
        int r;

        if (!params)
                params = empty = json_object_new_object();
        r = json_dispatch_at(params, method_fields[m], &req->p, method_params_size[m], false,
                             "params", err);
        if (r < 0)
                return xmem_error_prefix(err, "%s", method_names[m]);
        if (m == API_ATTACH) {
                r = api_attach_validate(&req->p.attach, err);
                if (r < 0)
                        return xmem_error_prefix(err, "%s", method_names[m]);
        } else if ((m == API_DETACH || m == API_STATS) && !api_id_valid(req->p.id.id)) {
                return xmem_error_set(err, -EINVAL,
                                      "%s: params.id: must match [A-Za-z0-9_.-]{1,128}",
                                      method_names[m]);
        } else if (m == API_SHIM_HELLO &&
                   (req->p.hello.version < 1 || req->p.hello.version > API_SHIM_VERSION)) {
                return xmem_error_set(err, -EPROTONOSUPPORT,
                                      "shim.hello: params.version: unsupported shim version %llu "
                                      "(memd speaks 1 to %d)",
                                      (unsigned long long)req->p.hello.version, API_SHIM_VERSION);
        } else if (m == API_SHIM_REGISTER &&
                   (req->p.reg.base % 4096 || req->p.reg.size == 0 || req->p.reg.size % 4096)) {
                return xmem_error_set(err, -EINVAL,
                                      "shim.register: params.%s: must be a non-zero multiple of "
                                      "the page size",
                                      req->p.reg.base % 4096 ? "base" : "size");
        }
        return 0;
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
        for (req.method = 0; req.method < _API_METHOD_MAX; req.method++)
                if (strcmp(env.method, method_names[req.method]) == 0)
                        break;
        if (req.method == _API_METHOD_MAX)
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

int api_listen(const char *path, int *ret_fd, bool *ret_activated, struct xmem_error *err)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        int n = sd_listen_fds(1);

        if (n > 1)
                return xmem_error_set(err, -EINVAL, "systemd passed %d sockets, expected one", n);
        if (n == 1) {
                if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
                        return xmem_error_set(err, -EINVAL, "the socket systemd passed is not a "
                                              "listening SOCK_SEQPACKET unix socket");
                (void)fcntl(SD_LISTEN_FDS_START, F_SETFD, FD_CLOEXEC);
                *ret_fd = SD_LISTEN_FDS_START;
                *ret_activated = true;
                return 0;
        }
        if (strlen(path) >= sizeof(sa.sun_path))
                return xmem_error_set(err, -ENAMETOOLONG, "socket %s: path too long", path);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (mkdir_parents(path) < 0)
                return xmem_error_set(err, negative_errno(), "socket %s: creating its directory: %m",
                                      path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "socket: %m");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return xmem_error_set(err, -EADDRINUSE, "socket %s: another memd is listening",
                                      path);
        (void)unlink(path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0666) < 0 ||
            listen(fd, 128) < 0)
                return xmem_error_set(err, negative_errno(), "socket %s: %m", path);
        *ret_fd = TAKE_FD(fd);
        *ret_activated = false;
        return 0;
}
