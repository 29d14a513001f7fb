/* tcp-connect.c: one connection of the tcp:// (and unix://) transport: connect
 * with timeouts and, for tcp:// with a secret, the authentication handshake
 * (lib/auth.c) before any other frame. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fdio.h"
#include "transport-internal.h"

static int sock_connect(const struct xmem_uri *u, unsigned timeout_ms, int *ret_fd)
{
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        _cleanup_close_ int fd = -1;
        int one = 1, r;

        if (u->scheme == XMEM_URI_UNIX) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                        return -errno;
        } else {
                struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
                char port[8];
                snprintf(port, sizeof(port), "%u", u->port);
                r = getaddrinfo(u->host, port, &hints, &ai);
                if (r != 0)
                        return -EHOSTUNREACH;
                r = -ECONNREFUSED;
                for (struct addrinfo *a = ai; a; a = a->ai_next) {
                        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                        if (fd < 0)
                                continue;
                        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
                                r = 0;
                                break;
                        }
                        r = errno == EINPROGRESS || errno == EAGAIN ? -ETIMEDOUT : -errno;
                        fd = safe_close(fd);
                }
                freeaddrinfo(ai);
                if (r < 0)
                        return r;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        /* a stalled peer mid-frame surfaces as EAGAIN, turned into -ETIMEDOUT */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int tcp_sock_connect(const struct xmem_uri *u, unsigned timeout_ms, const struct xmem_secret *s,
                     int *ret_fd, struct xmem_error *err)
{
        _cleanup_close_ int fd = -1;
        int r;

        r = sock_connect(u, timeout_ms, &fd);
        if (r < 0)
                return xmem_error_set(err, r, "connect: %s", strerror(-r));
        if (s && s->len && u->scheme == XMEM_URI_TCP) {
                r = auth_client_handshake(fd, s, err);
                if (r < 0)
                        return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}
