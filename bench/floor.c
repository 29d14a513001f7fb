/* floor.c: xmem-bench-floor, the userfaultfd floor: a bare cross-process
 * pager with no transport and no cgroup. The child maps a memfd MAP_SHARED,
 * registers it with a userfaultfd (MISSING) and sends both to the parent over
 * a socketpair (SCM_RIGHTS), then runs the workload (work.c) on the mapping.
 * The parent holds the data in a local buffer, serves each fault with one
 * UFFDIO_COPY of a UNIT and keeps the resident units under LIMIT by evicting
 * FIFO: pread the unit back into the local copy, then punch a hole. The child
 * is single-threaded, so it waits on its fault while a unit is evicted.
 *   xmem-bench-floor UNIT_KIB LIMIT_MIB KIND MIB [OPS] [SECONDS]
 * Prints the workload's JSON lines, then one with the fault latency measured
 * here (read of the fault to the return of UFFDIO_COPY) over the measured
 * phase. Exit status: the child's (2: a wrong read), 1 on a setup error. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "work.h"

#define HIST_US 100000 /* 1 µs buckets up to 100 ms, then one overflow bucket */

struct floor {
        int uffd, memfd, sock;
        char *base, *data;
        size_t size, unit;
        uint64_t n_units, limit_units, n_resident, fifo_head, fifo_tail, evictions, faults;
        uint8_t *resident;
        uint64_t *fifo; /* ring of resident unit indices, oldest at head */
        uint32_t *hist;
};

static int send_fds(int sock, int *fds, int n, uint64_t base)
{
        char cbuf[CMSG_SPACE(2 * sizeof(int))] = {0};
        struct iovec iov = {.iov_base = &base, .iov_len = sizeof(base)};
        struct msghdr m = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = cbuf,
                           .msg_controllen = CMSG_SPACE(n * sizeof(int))};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);

        c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
        return sendmsg(sock, &m, 0) == sizeof(base) ? 0 : -errno;
}

static int recv_fds(int sock, int *fds, int n, uint64_t *ret_base)
{
        char cbuf[CMSG_SPACE(2 * sizeof(int))] = {0};
        uint64_t base;
        struct iovec iov = {.iov_base = &base, .iov_len = sizeof(base)};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        struct cmsghdr *c;

        if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != sizeof(base))
                return -EPROTO;
        c = CMSG_FIRSTHDR(&m);
        if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(n * sizeof(int)))
                return -EPROTO;
        memcpy(fds, CMSG_DATA(c), n * sizeof(int));
        *ret_base = base;
        return 0;
}

static void child_on_measure(void *ctx)
{
        int sock = *(int *)ctx;
        char b = 'M';

        /* the parent resets its histogram, then answers */
        if (write(sock, &b, 1) != 1 || read(sock, &b, 1) != 1)
                _exit(1);
}

static int child_main(int sock, size_t size, const struct work_opts *o)
{
        struct uffdio_api api = {.api = UFFD_API};
        struct uffdio_register reg = {.mode = UFFDIO_REGISTER_MODE_MISSING};
        struct work_opts opts = *o;
        int memfd, uffd, fds[2], r;
        char *res, *base, b;

        memfd = memfd_create("xmem-bench-floor", MFD_CLOEXEC);
        if (memfd < 0 || ftruncate(memfd, (off_t)size) < 0)
                return 1;
        /* 2 MiB aligned, so 2 MiB units install whole */
        res = mmap(NULL, size + (2UL << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (res == MAP_FAILED)
                return 1;
        base = (char *)(((uintptr_t)res + (2UL << 20) - 1) & ~((uintptr_t)(2UL << 20) - 1));
        if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, 0) ==
            MAP_FAILED)
                return 1;
        uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
        if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0)
                return 1;
        reg.range.start = (uintptr_t)base, reg.range.len = size;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
                return 1;
        fds[0] = uffd, fds[1] = memfd;
        if (send_fds(sock, fds, 2, (uintptr_t)base) < 0 || read(sock, &b, 1) != 1)
                return 1;
        close(uffd);
        close(memfd);
        opts.on_measure = child_on_measure, opts.ctx = &sock;
        r = work_run(base, size, &opts);
        return r == -EIO ? 2 : r < 0 ? 3 : 0;
}

static uint64_t now_ns(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static int evict_one(struct floor *f)
{
        uint64_t u = f->fifo[f->fifo_head];
        off_t off = (off_t)(u * f->unit);
        size_t done = 0;

        while (done < f->unit) {
                ssize_t n =
                    pread(f->memfd, f->data + off + done, f->unit - done, off + (off_t)done);
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                done += (size_t)n;
        }
        if (fallocate(f->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, (off_t)f->unit) <
            0)
                return -errno;
        f->fifo_head = (f->fifo_head + 1) % f->n_units;
        f->resident[u] = 0;
        f->n_resident--;
        f->evictions++;
        return 0;
}

static int serve(struct floor *f, uint64_t addr, uint64_t t_read)
{
        uint64_t u = (addr - (uintptr_t)f->base) / f->unit, us;
        struct uffdio_copy cp = {0};

        if (u >= f->n_units)
                return -EFAULT;
        if (f->resident[u]) {
                struct uffdio_range wr = {.start = (uintptr_t)f->base + u * f->unit,
                                          .len = f->unit};
                return ioctl(f->uffd, UFFDIO_WAKE, &wr) < 0 ? -errno : 0;
        }
        while (f->n_resident >= f->limit_units) {
                int r = evict_one(f);
                if (r < 0)
                        return r;
        }
        cp.dst = (uintptr_t)f->base + u * f->unit;
        cp.src = (uintptr_t)f->data + u * f->unit;
        cp.len = f->unit;
        if (ioctl(f->uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST)
                return -errno;
        f->resident[u] = 1;
        f->n_resident++;
        f->fifo[f->fifo_tail] = u;
        f->fifo_tail = (f->fifo_tail + 1) % f->n_units;
        f->faults++;
        us = (now_ns() - t_read) / 1000;
        f->hist[us < HIST_US ? us : HIST_US]++;
        return 0;
}

static double percentile(const struct floor *f, double q)
{
        uint64_t total = 0, seen = 0;

        for (int i = 0; i <= HIST_US; i++)
                total += f->hist[i];
        if (total == 0)
                return 0;
        for (int i = 0; i <= HIST_US; i++) {
                seen += f->hist[i];
                if ((double)seen >= q * (double)total)
                        return i + 1; /* the bucket's upper bound, as memd reports */
        }
        return HIST_US;
}

/* Serve faults until the child closes its end. */
static int parent_loop(struct floor *f)
{
        struct uffd_msg msgs[64];

        for (;;) {
                struct pollfd p[2] = {{.fd = f->uffd, .events = POLLIN},
                                      {.fd = f->sock, .events = POLLIN}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (p[0].revents & POLLIN) {
                        ssize_t n = read(f->uffd, msgs, sizeof(msgs));
                        uint64_t t = now_ns();
                        if (n < 0 && errno != EAGAIN)
                                return -errno;
                        for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
                                if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                                        continue;
                                int r = serve(f, msgs[i].arg.pagefault.address, t);
                                if (r < 0)
                                        return r;
                        }
                }
                if (p[1].revents & (POLLIN | POLLHUP)) {
                        char b;
                        if (read(f->sock, &b, 1) != 1)
                                return 0; /* the child is done */
                        memset(f->hist, 0, (HIST_US + 1) * sizeof(f->hist[0]));
                        f->faults = f->evictions = 0;
                        if (write(f->sock, &b, 1) != 1)
                                return -EPIPE;
                }
        }
}

static int parent_main(struct floor *f, pid_t child)
{
        int fds[2], st = 0, r;
        uint64_t base;
        char b = 'G';

        r = recv_fds(f->sock, fds, 2, &base);
        if (r < 0)
                goto out;
        f->uffd = fds[0], f->memfd = fds[1], f->base = (char *)(uintptr_t)base;
        fcntl(f->uffd, F_SETFL, fcntl(f->uffd, F_GETFL) | O_NONBLOCK);
        f->data = mmap(NULL, f->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        f->resident = calloc(f->n_units, 1);
        f->fifo = calloc(f->n_units, sizeof(*f->fifo));
        f->hist = calloc(HIST_US + 1, sizeof(*f->hist));
        if (f->data == MAP_FAILED || !f->resident || !f->fifo || !f->hist) {
                r = -ENOMEM;
                goto out;
        }
        if (write(f->sock, &b, 1) != 1) {
                r = -EPIPE;
                goto out;
        }
        r = parent_loop(f);
out:
        if (r < 0) {
                fprintf(stderr, "xmem-bench-floor: serving faults: %s\n", strerror(-r));
                kill(child, SIGKILL);
        }
        waitpid(child, &st, 0);
        if (r == 0)
                printf("{\"figure\":\"floor_latency\",\"count\":%llu,\"evictions\":%llu,"
                       "\"p50\":%.0f,\"p99\":%.0f,\"p999\":%.0f}\n",
                       (unsigned long long)f->faults, (unsigned long long)f->evictions,
                       percentile(f, 0.5), percentile(f, 0.99), percentile(f, 0.999));
        if (r < 0)
                return 1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
        struct work_opts o = {.ops = 1000000, .seconds = 10, .zipf_theta = 0.99};
        struct floor f = {.uffd = -1, .memfd = -1};
        int sv[2];
        pid_t pid;

        if (argc < 5 || work_kind_parse(argv[3], &o.kind) < 0 || atoll(argv[1]) < 4 ||
            atoll(argv[2]) < 1 || atoll(argv[4]) < 1) {
                fprintf(stderr, "usage: xmem-bench-floor UNIT_KIB LIMIT_MIB seq_write|seq_read|"
                                "rand_read|rand_write|zipf_read MIB [OPS] [SECONDS]\n");
                return 1;
        }
        f.unit = (size_t)atoll(argv[1]) << 10;
        f.size = (size_t)atoll(argv[4]) << 20;
        if (argc > 5)
                o.ops = (uint64_t)atoll(argv[5]);
        if (argc > 6)
                o.seconds = atof(argv[6]);
        if (f.unit % 4096 || f.size % f.unit) {
                fprintf(stderr, "xmem-bench-floor: the working set must be a multiple of the "
                                "unit, the unit of 4 KiB\n");
                return 1;
        }
        f.n_units = f.size / f.unit;
        f.limit_units = ((uint64_t)atoll(argv[2]) << 20) / f.unit;
        if (f.limit_units < 1)
                f.limit_units = 1;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return 1;
        fflush(stdout);
        pid = fork();
        if (pid < 0)
                return 1;
        if (pid == 0) {
                close(sv[0]);
                _exit(child_main(sv[1], f.size, &o));
        }
        close(sv[1]);
        f.sock = sv[0];
        return parent_main(&f, pid);
}
