/* fdio.c: full reads/writes and SCM_RIGHTS. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdio.h"
#include "macro.h"

#define FDIO_MAX_FDS 16

/* Read until LEN bytes or EOF, at OFFSET (pread) or, when OFFSET < 0, from the
 * current position (read). Returns the bytes read or -errno. */
static ssize_t read_loop(int fd, void *buf, size_t len, off_t offset)
{
        size_t done = 0;

        while (done < len) {
                ssize_t n = offset < 0 ? read(fd, (char *)buf + done, len - done)
                                       : pread(fd, (char *)buf + done, len - done,
                                               offset + (off_t)done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

int read_full(int fd, void *buf, size_t len)
{
        ssize_t n = read_loop(fd, buf, len, -1);

        if (n < 0)
                return (int)n;
        if ((size_t)n < len)
                return n ? -ECONNRESET : -EPIPE;
        return 0;
}

ssize_t read_upto(int fd, void *buf, size_t len)
{
        return read_loop(fd, buf, len, -1);
}

ssize_t pread_full(int fd, void *buf, size_t len, off_t offset)
{
        return offset < 0 ? -EINVAL : read_loop(fd, buf, len, offset);
}

/* Write all LEN bytes at OFFSET (pwrite) or, when OFFSET < 0, to a socket
 * without SIGPIPE (send), falling back to write for other descriptors. */
static int write_loop(int fd, const void *buf, size_t len, off_t offset)
{
        size_t done = 0;

        while (done < len) {
                const char *p = (const char *)buf + done;
                ssize_t n = offset >= 0 ? pwrite(fd, p, len - done, offset + (off_t)done)
                                        : send(fd, p, len - done, MSG_NOSIGNAL);
                if (n < 0 && offset < 0 && errno == ENOTSOCK)
                        n = write(fd, p, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += (size_t)n;
        }
        return 0;
}

int pwrite_full(int fd, const void *buf, size_t len, off_t offset)
{
        return offset < 0 ? -EINVAL : write_loop(fd, buf, len, offset);
}

int write_full(int fd, const void *buf, size_t len)
{
        return write_loop(fd, buf, len, -1);
}

int writev_full(int fd, struct iovec *iov, int iovcnt)
{
        while (iovcnt > 0) {
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
                ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
                if (n < 0 && errno == ENOTSOCK)
                        n = writev(fd, iov, iovcnt);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
                        n -= (ssize_t)iov->iov_len;
                        iov++;
                        iovcnt--;
                }
                if (iovcnt > 0) {
                        iov->iov_base = (char *)iov->iov_base + n;
                        iov->iov_len -= (size_t)n;
                }
        }
        return 0;
}

int send_with_fds(int sock, const void *buf, size_t len, const int *fds, size_t n_fds)
{
        union {
                char buf[CMSG_SPACE(sizeof(int) * FDIO_MAX_FDS)];
                struct cmsghdr align;
        } control;
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (n_fds > FDIO_MAX_FDS || len == 0)
                return -EINVAL;
        if (n_fds > 0) {
                struct cmsghdr *cmsg;
                memset(&control, 0, sizeof(control));
                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                cmsg = CMSG_FIRSTHDR(&mh);
                cmsg->cmsg_level = SOL_SOCKET;
                cmsg->cmsg_type = SCM_RIGHTS;
                cmsg->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * n_fds);
        }
        do
                n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        /* the descriptors went with the first byte; finish the payload plainly */
        if ((size_t)n < len)
                return write_full(sock, (const char *)buf + n, len - (size_t)n);
        return 0;
}

ssize_t recv_with_fds(int sock, void *buf, size_t len, int *fds, size_t *n_fds)
{
        return recv_with_fds_flags(sock, buf, len, fds, n_fds, 0);
}

ssize_t recv_with_fds_flags(int sock, void *buf, size_t len, int *fds, size_t *n_fds,
                            int flags)
{
        union {
                char buf[CMSG_SPACE(sizeof(int) * FDIO_MAX_FDS)];
                struct cmsghdr align;
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        size_t want = n_fds ? *n_fds : 0, got = 0;
        int extra = 0;
        ssize_t n;

        do
                n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *in = (int *)CMSG_DATA(c);
                for (size_t i = 0; i < cnt; i++) {
                        if (got < want)
                                fds[got++] = in[i];
                        else {
                                close(in[i]);
                                extra = 1;
                        }
                }
        }
        if (mh.msg_flags & MSG_CTRUNC)
                extra = 1;
        if (n_fds)
                *n_fds = got;
        if (extra) {
                for (size_t i = 0; i < got; i++)
                        close(fds[i]);
                if (n_fds)
                        *n_fds = 0;
                return -EBADMSG;
        }
        return n;
}

int open_in_root(int rootfd, const char *rel, int flags, mode_t mode)
{
        struct open_how how = {
                .flags = (uint64_t)(flags | O_CLOEXEC),
                .mode = (flags & O_CREAT) ? mode : 0,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));

        return fd < 0 ? negative_errno() : (int)fd;
}
