/* fdio.h: whole-buffer I/O that survives EINTR and short transfers, passing
 * file descriptors over unix sockets (SCM_RIGHTS), and opening a path inside
 * a container's rootfs. */
#pragma once

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Read exactly LEN bytes. 0 on success, -EPIPE on EOF before LEN (-ECONNRESET if
 * EOF came after some bytes), -errno otherwise. */
int read_full(int fd, void *buf, size_t len);
int write_full(int fd, const void *buf, size_t len);
/* Read until LEN bytes or EOF: the bytes read, or -errno. */
ssize_t read_upto(int fd, void *buf, size_t len);
/* Read LEN bytes at OFFSET (>= 0). Returns the bytes read (fewer than LEN only at the
 * end of the file), -errno on error. */
ssize_t pread_full(int fd, void *buf, size_t len, off_t offset);
/* Write all LEN bytes at OFFSET (>= 0): 0 or -errno. */
int pwrite_full(int fd, const void *buf, size_t len, off_t offset);
/* Write all of IOV (modified in place). */
int writev_full(int fd, struct iovec *iov, int iovcnt);

/* Send LEN bytes of BUF with N_FDS descriptors attached (one sendmsg). */
int send_with_fds(int sock, const void *buf, size_t len, const int *fds, size_t n_fds);
/* Receive up to LEN bytes; descriptors (O_CLOEXEC) land in FDS (up to *N_FDS; the
 * count received is stored back). Returns bytes received, 0 on EOF, -errno. Extra
 * descriptors beyond *N_FDS are closed and -EBADMSG returned. */
ssize_t recv_with_fds(int sock, void *buf, size_t len, int *fds, size_t *n_fds);
/* The same with recvmsg FLAGS added to MSG_CMSG_CLOEXEC: with MSG_TRUNC on a
 * datagram socket it returns the datagram's real length, which exceeds LEN
 * when the datagram did not fit. */
ssize_t recv_with_fds_flags(int sock, void *buf, size_t len, int *fds, size_t *n_fds,
                            int flags);

/* openat2 of REL with RESOLVE_IN_ROOT (ROOTFD is "/": an image's symlinks never
 * lead out of it) and RESOLVE_NO_MAGICLINKS; O_CLOEXEC added. An fd or -errno. */
int open_in_root(int rootfd, const char *rel, int flags, mode_t mode);
