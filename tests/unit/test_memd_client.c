/* test_memd_client.c: lib/memd-client.c against a scripted peer on a real
 * SOCK_SEQPACKET socket pair: the request it sends, ok and error replies,
 * descriptors attached to a reply, oversized, malformed and missing replies. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdio.h"
#include "json-util.h"
#include "memd-client.h"

struct peer {
        int sock;
        const char *reply; /* NULL: close without answering */
        size_t reply_len;  /* 0: strlen(reply) */
        int fd_to_send;    /* -1: none */
        char request[4096];
        pthread_t thread;
};

static void *peer_main(void *arg)
{
        struct peer *p = arg;
        ssize_t n = recv(p->sock, p->request, sizeof(p->request) - 1, 0);

        if (n > 0)
                p->request[n] = 0;
        if (p->reply) {
                size_t len = p->reply_len ?: strlen(p->reply);
                union {
                        struct cmsghdr h;
                        char buf[CMSG_SPACE(sizeof(int))];
                } control = {};
                struct iovec iov = {.iov_base = (void *)p->reply, .iov_len = len};
                struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
                if (p->fd_to_send >= 0) {
                        mh.msg_control = &control;
                        mh.msg_controllen = sizeof(control);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(c), &p->fd_to_send, sizeof(int));
                }
                (void)sendmsg(p->sock, &mh, MSG_NOSIGNAL);
        }
        close(p->sock);
        return NULL;
}

/* A client socket whose peer answers REPLY to the first request. */
static int start_peer(struct peer *p, const char *reply)
{
        int sv[2];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0, "socketpair: %s",
                     strerror(errno));
        p->sock = sv[1];
        p->reply = reply;
        cr_assert_eq(pthread_create(&p->thread, NULL, peer_main, p), 0, "pthread_create");
        return sv[0];
}

static int open_fd_count(void)
{
        int n = 0;
        for (int fd = 0; fd < 1024; fd++)
                n += fcntl(fd, F_GETFD) >= 0;
        return n;
}

Test(memd_client, ok_reply_returns_result_and_sends_envelope)
{
        struct peer p = {.fd_to_send = -1};
        struct xmem_error err = {};
        json_object *params = json_object_new_object(), *result = NULL, *v;
        int fd = start_peer(&p, "{\"xmem\":1,\"ok\":true,\"result\":{\"id\":\"web-1\"}}");

        json_object_object_add(params, "id", json_object_new_string("web-1"));
        cr_assert_eq(memd_call(fd, "detach", params, &result, &err), 0, "%s", xmem_error_str(&err));
        pthread_join(p.thread, NULL);
        cr_expect_str_eq(p.request,
                         "{\"xmem\":1,\"method\":\"detach\",\"params\":{\"id\":\"web-1\"}}");
        cr_assert(json_object_object_get_ex(result, "id", &v), "result without id");
        cr_expect_str_eq(json_object_get_string(v), "web-1");
        json_object_put(result);
        close(fd);
}

Test(memd_client, error_reply_becomes_errno_and_message)
{
        struct peer p = {.fd_to_send = -1};
        struct xmem_error err = {};
        int fd = start_peer(&p, "{\"xmem\":1,\"ok\":false,\"error\":{\"errno\":\"EBUSY\","
                                "\"message\":\"detach: container web-1 has live processes\"}}");

        cr_expect_eq(memd_call(fd, "detach", NULL, NULL, &err), -EBUSY);
        cr_expect_str_eq(err.msg, "detach: container web-1 has live processes");
        cr_expect_str_eq(p.request, "{\"xmem\":1,\"method\":\"detach\",\"params\":{}}");
        pthread_join(p.thread, NULL);
        close(fd);
}

Test(memd_client, unknown_errno_name_is_eio)
{
        struct peer p = {.fd_to_send = -1};
        struct xmem_error err = {};
        int fd = start_peer(&p, "{\"xmem\":1,\"ok\":false,\"error\":{\"errno\":\"EFUTURE\","
                                "\"message\":\"m\"}}");

        cr_expect_eq(memd_call(fd, "list", NULL, NULL, &err), -EIO);
        pthread_join(p.thread, NULL);
        close(fd);
}

Test(memd_client, request_returns_error_replies_whole)
{
        struct peer p = {.fd_to_send = -1};
        struct xmem_error err = {};
        json_object *reply = NULL, *ok;
        int fd = start_peer(&p, "{\"xmem\":1,\"ok\":false,\"error\":{\"errno\":\"ENOENT\","
                                "\"message\":\"m\"}}");

        cr_assert_eq(memd_request(fd, "stats", NULL, &reply, &err), 0, "%s", xmem_error_str(&err));
        cr_assert(json_object_object_get_ex(reply, "ok", &ok) && !json_object_get_boolean(ok),
                  "the ok:false reply is handed back as it came");
        json_object_put(reply);
        pthread_join(p.thread, NULL);
        close(fd);
}

Test(memd_client, descriptors_with_a_reply_are_closed)
{
        struct peer p = {.fd_to_send = open("/dev/null", O_RDONLY | O_CLOEXEC)};
        struct xmem_error err = {};
        int fd, before;

        cr_assert_geq(p.fd_to_send, 0, "open /dev/null: %s", strerror(errno));
        fd = start_peer(&p, "{\"xmem\":1,\"ok\":true}");
        before = open_fd_count();
        cr_assert_eq(memd_call(fd, "list", NULL, NULL, &err), 0, "%s", xmem_error_str(&err));
        pthread_join(p.thread, NULL);
        close(p.fd_to_send);
        /* the peer's end and its copy of /dev/null are gone; nothing arrived to stay open */
        cr_expect_eq(open_fd_count(), before - 2, "a descriptor from the reply was left open");
        close(fd);
}

Test(memd_client, bad_and_missing_replies)
{
        static char big[MEMD_MESSAGE_MAX + 10];
        struct peer p = {.fd_to_send = -1};
        struct xmem_error err = {};
        int fd;

        fd = start_peer(&p, "not json");
        cr_expect_eq(memd_call(fd, "list", NULL, NULL, &err), -EBADMSG);
        cr_expect(strncmp(err.msg, "memd: bad reply", 15) == 0, "message: %s", err.msg);
        pthread_join(p.thread, NULL);
        close(fd);

        fd = start_peer(&p, "{\"xmem\":1}");
        cr_expect_eq(memd_call(fd, "list", NULL, NULL, &err), -EBADMSG);
        cr_expect_str_eq(err.msg, "memd: malformed reply to list");
        pthread_join(p.thread, NULL);
        close(fd);

        fd = start_peer(&p, NULL);
        cr_expect_eq(memd_call(fd, "list", NULL, NULL, &err), -ECONNRESET);
        cr_expect_str_eq(err.msg, "memd: closed the connection");
        pthread_join(p.thread, NULL);
        close(fd);

        memset(big, ' ', sizeof(big));
        p.reply_len = sizeof(big);
        fd = start_peer(&p, big);
        cr_expect_eq(memd_call(fd, "list", NULL, NULL, &err), -EMSGSIZE);
        pthread_join(p.thread, NULL);
        close(fd);
}

Test(memd_client, connect_names_the_socket)
{
        struct xmem_error err = {};
        int fd = -1;

        cr_expect_eq(memd_connect("/nonexistent/memd.sock", 1, &fd, &err), -ENOENT);
        cr_expect_str_eq(err.msg, "memd at /nonexistent/memd.sock: No such file or directory "
                                  "(is memd running?)");
        cr_expect_eq(fd, -1, "ret_fd untouched on failure");
}
