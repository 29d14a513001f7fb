/* memd-client.c: xmem-hook's side of memd's API: connect, one request, one
 * reply, errors turned into -errno plus memd's one-line message. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "json-util.h"
#include "memd-client.h"

#define MEMD_MSG_MAX (64 * 1024)
#define MEMD_TIMEOUT_S 10

int memd_connect(const char *path, int *ret_fd, struct xmem_error *err)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = MEMD_TIMEOUT_S };
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return xmem_error_set(err, -ENAMETOOLONG, "memd socket %s: path too long", path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "socket: %m");
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return xmem_error_set(err, negative_errno(), "memd at %s: %m (is memd running?)",
                                      path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static const struct {
        const char *name;
        int code;
} errno_names[] = {
        { "EINVAL", EINVAL }, { "EEXIST", EEXIST }, { "ENOENT", ENOENT }, { "EPERM", EPERM },
        { "EACCES", EACCES }, { "ENOMEM", ENOMEM }, { "ENOSPC", ENOSPC }, { "EBUSY", EBUSY },
        { "EOPNOTSUPP", EOPNOTSUPP }, { "EIO", EIO }, { "ERANGE", ERANGE },
};

static int reply_error(json_object *reply, struct xmem_error *err)
{
        json_object *e = NULL, *no = NULL, *msg = NULL;
        int code = EIO;

        (void)json_object_object_get_ex(reply, "error", &e);
        (void)json_object_object_get_ex(e, "errno", &no);
        (void)json_object_object_get_ex(e, "message", &msg);
        for (size_t i = 0; no && i < ELEMENTSOF(errno_names); i++)
                if (strcmp(json_object_get_string(no), errno_names[i].name) == 0)
                        code = errno_names[i].code;
        return xmem_error_set(err, -code, "%s",
                              msg ? json_object_get_string(msg) : "memd: malformed error reply");
}

int memd_call(int fd, const char *method, json_object *params, json_object **ret_result,
              struct xmem_error *err)
{
        _cleanup_json_ json_object *req = json_object_new_object(), *reply = NULL;
        _cleanup_free_ char *buf = malloc(MEMD_MSG_MAX);
        json_object *ok = NULL, *result = NULL;
        const char *text;
        ssize_t n;
        int r;

        if (!req || !buf) {
                json_object_put(params);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        json_object_object_add(req, "xmem", json_object_new_int(1));
        json_object_object_add(req, "method", json_object_new_string(method));
        json_object_object_add(req, "params", params ?: json_object_new_object());
        text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
        if (send(fd, text, strlen(text), MSG_NOSIGNAL) < 0)
                return xmem_error_set(err, negative_errno(), "memd: send: %m");
        n = recv(fd, buf, MEMD_MSG_MAX, 0);
        if (n <= 0)
                return xmem_error_set(err, n < 0 ? negative_errno() : -ECONNRESET,
                                      "memd: no reply to %s", method);
        r = json_parse(buf, (size_t)n, &reply, err);
        if (r < 0)
                return xmem_error_prefix(err, "memd reply");
        if (!json_object_object_get_ex(reply, "ok", &ok) ||
            !json_object_is_type(ok, json_type_boolean))
                return xmem_error_set(err, -EBADMSG, "memd: malformed reply to %s", method);
        if (!json_object_get_boolean(ok))
                return reply_error(reply, err);
        if (ret_result) {
                (void)json_object_object_get_ex(reply, "result", &result);
                *ret_result = result ? json_object_get(result) : NULL;
        }
        return 0;
}
