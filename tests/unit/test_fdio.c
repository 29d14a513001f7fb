/* test_fdio.c: full reads/writes and descriptor passing over a socketpair. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdio.h"

Test(fdio, full_read_write_and_eof)
{
        int sv[2];
        char buf[8];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        cr_assert_eq(write_full(sv[0], "abcdef", 6), 0);
        close(sv[0]);
        cr_assert_eq(read_full(sv[1], buf, 6), 0);
        cr_assert_eq(memcmp(buf, "abcdef", 6), 0);
        cr_assert_eq(read_full(sv[1], buf, 1), -EPIPE);
        close(sv[1]);
}

Test(fdio, passes_descriptors)
{
        int sv[2], fds[2], got[2];
        size_t n = 2;
        char buf[4];
        struct stat a, b;

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        fds[1] = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        cr_assert_eq(send_with_fds(sv[0], "hi!", 3, fds, 2), 0);
        cr_assert_eq(recv_with_fds(sv[1], buf, sizeof(buf), got, &n), 3);
        cr_assert_eq(n, 2);
        cr_assert_eq(fstat(fds[1], &a), 0);
        cr_assert_eq(fstat(got[1], &b), 0);
        cr_assert_eq(a.st_ino, b.st_ino);
        cr_assert(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
        for (int i = 0; i < 2; i++) {
                close(fds[i]);
                close(got[i]);
        }
        close(sv[0]);
        close(sv[1]);
}

Test(fdio, too_many_descriptors_refused_and_closed)
{
        int sv[2], fds[3], got[1];
        size_t n = 1;
        char buf[4];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        for (int i = 0; i < 3; i++)
                fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        cr_assert_eq(send_with_fds(sv[0], "x", 1, fds, 3), 0);
        cr_assert_eq(recv_with_fds(sv[1], buf, sizeof(buf), got, &n), -EBADMSG);
        cr_assert_eq(n, 0);
        for (int i = 0; i < 3; i++)
                close(fds[i]);
        close(sv[0]);
        close(sv[1]);
}

Test(fdio, pread_pwrite_full_at_offsets)
{
        int fd = memfd_create("fdio", MFD_CLOEXEC);
        char buf[16];

        cr_assert_geq(fd, 0);
        cr_assert_eq(pwrite_full(fd, "0123456789", 10, 100), 0);
        cr_assert_eq(pread_full(fd, buf, 4, 103), 4);
        cr_assert_eq(memcmp(buf, "3456", 4), 0);
        /* the hole before the data reads as zeros */
        cr_assert_eq(pread_full(fd, buf, 2, 50), 2);
        cr_assert(buf[0] == 0 && buf[1] == 0);
        /* short at the end of the file, 0 past it */
        cr_assert_eq(pread_full(fd, buf, sizeof(buf), 105), 5);
        cr_assert_eq(memcmp(buf, "56789", 5), 0);
        cr_assert_eq(pread_full(fd, buf, sizeof(buf), 200), 0);
        close(fd);
        cr_assert_eq(pwrite_full(fd, "x", 1, 0), -EBADF);
        cr_assert_eq(pread_full(fd, buf, 1, 0), -EBADF);
}

Test(fdio, recv_with_trunc_reports_the_real_length)
{
        int sv[2], fds[1], got[1];
        size_t n = 1;
        char buf[4];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        cr_assert_eq(send_with_fds(sv[0], "0123456789", 10, fds, 1), 0);
        cr_assert_eq(recv_with_fds_flags(sv[1], buf, sizeof(buf), got, &n, MSG_TRUNC), 10);
        cr_assert_eq(n, 1);
        cr_assert_eq(memcmp(buf, "0123", 4), 0);
        close(got[0]);
        cr_assert_eq(send_with_fds(sv[0], "ab", 2, NULL, 0), 0);
        n = 1;
        cr_assert_eq(recv_with_fds_flags(sv[1], buf, sizeof(buf), got, &n, MSG_TRUNC), 2);
        cr_assert_eq(n, 0);
        close(fds[0]);
        close(sv[0]);
        close(sv[1]);
}

Test(fdio, read_upto_stops_at_eof)
{
        int p[2];
        char buf[8];

        cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
        cr_assert_eq(write_full(p[1], "abc", 3), 0);
        close(p[1]);
        cr_assert_eq(read_upto(p[0], buf, sizeof(buf)), 3);
        cr_assert_eq(memcmp(buf, "abc", 3), 0);
        cr_assert_eq(read_upto(p[0], buf, sizeof(buf)), 0);
        close(p[0]);
        cr_assert_eq(read_upto(p[0], buf, 1), -EBADF);
}
