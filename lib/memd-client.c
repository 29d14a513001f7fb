/* memd-client.c: connect to memd, send one request, receive one reply; memd's
 * ok:false replies turned into -errno plus its one-line message. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "errno-name.h"
#include "json-util.h"
#include "memd-client.h"

/* Room for the descriptors a reply may carry (memd sends at most 4). */
#define MEMD_REPLY_FDS_MAX 8

int memd_connect(const char *path, unsigned timeout_s, int *ret_fd, struct xmem_error *err)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct timeval tv = {.tv_sec = timeout_s};
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return xmem_error_set(err, -ENAMETOOLONG, "memd at %s: path too long", path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "socket: %m");
        if (timeout_s > 0) {
                (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return xmem_error_set(err, negative_errno(), "memd at %s: %m (is memd running?)",
                                      path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* One datagram into BUF (MEMD_MESSAGE_MAX + 1 bytes); any descriptors with it
 * are closed. Its length, 0 at EOF, -EMSGSIZE when it was larger, -errno. */
static ssize_t recv_reply(int fd, char *buf)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * MEMD_REPLY_FDS_MAX)];
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = MEMD_MESSAGE_MAX + 1};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = &control,
                            .msg_controllen = sizeof(control)};
        ssize_t n;

        do
                n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int passed;
                        memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        safe_close(passed);
                }
        }
        if ((size_t)n > MEMD_MESSAGE_MAX || (mh.msg_flags & MSG_TRUNC))
                return -EMSGSIZE;
        return n;
}

int memd_request(int fd, const char *method, json_object *params, json_object **ret_reply,
                 struct xmem_error *err)
{
        _cleanup_json_ json_object *req = json_object_new_object();
        _cleanup_free_ char *buf = malloc(MEMD_MESSAGE_MAX + 1);
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
                return xmem_error_set(err, negative_errno(), "sending: %m");
        n = recv_reply(fd, buf);
        if (n == 0)
                return xmem_error_set(err, -ECONNRESET, "closed the connection");
        if (n < 0)
                return xmem_error_set(err, (int)n, "%s", strerror((int)-n));
        r = json_parse(buf, (size_t)n, ret_reply, err);
        if (r < 0)
                (void)xmem_error_prefix(err, "bad reply");
        return r;
}

static int reply_error(json_object *reply, struct xmem_error *err)
{
        json_object *e = NULL, *no = NULL, *msg = NULL;
        int code;

        (void)json_object_object_get_ex(reply, "error", &e);
        (void)json_object_object_get_ex(e, "errno", &no);
        (void)json_object_object_get_ex(e, "message", &msg);
        code = no ? errno_from_name(json_object_get_string(no)) : 0;
        return xmem_error_set(err, -(code ?: EIO), "%s",
                              msg ? json_object_get_string(msg) : "memd: malformed error reply");
}

int memd_call(int fd, const char *method, json_object *params, json_object **ret_result,
              struct xmem_error *err)
{
        _cleanup_json_ json_object *reply = NULL;
        json_object *ok = NULL, *result = NULL;
        int r;

        r = memd_request(fd, method, params, &reply, err);
        if (r < 0) {
                (void)xmem_error_prefix(err, "memd");
                return r;
        }
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
