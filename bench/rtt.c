/* bench/rtt.c: xmem-bench-rtt: the loopback tcp round trip of this machine,
 * the floor under every xmem-tcp fault (one request, one reply): a 32-byte
 * request answered with REPLY bytes by a forked echo process, both with
 * TCP_NODELAY, as the transport and the appliance use it. Prints one JSON
 * line for bench/run. Usage: xmem-bench-rtt [REPLY_BYTES [COUNT]]. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQ 32

static double now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static bool io_full(int fd, char *p, size_t n, bool rd)
{
        while (n > 0) {
                ssize_t k = rd ? read(fd, p, n) : write(fd, p, n);
                if (k <= 0)
                        return false;
                p += k;
                n -= (size_t)k;
        }
        return true;
}

static int cmp(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

static int nodelay(int fd)
{
        int one = 1;

        return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int main(int argc, char **argv)
{
        size_t reply = argc > 1 ? strtoul(argv[1], NULL, 10) : 4096;
        size_t count = argc > 2 ? strtoul(argv[2], NULL, 10) : 20000;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), s;
        char *buf = malloc(reply > REQ ? reply : REQ);
        double *lat = malloc(count * sizeof(*lat));
        pid_t echo;

        if (reply == 0 || reply > (64u << 20) || count == 0 || count > 10000000 || !buf || !lat) {
                fprintf(stderr, "xmem-bench-rtt: REPLY_BYTES 1..64M, COUNT 1..10M\n");
                return 2;
        }
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(l, (struct sockaddr *)&a, &alen) < 0 || listen(l, 1) < 0) {
                perror("xmem-bench-rtt: listen");
                return 1;
        }
        echo = fork();
        if (echo == 0) { /* the far end: a request in, REPLY bytes out */
                int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0 || nodelay(c) < 0)
                        _exit(1);
                while (io_full(c, buf, REQ, true) && io_full(c, buf, reply, false))
                        ;
                _exit(0);
        }
        s = accept(l, NULL, NULL);
        if (echo < 0 || s < 0 || nodelay(s) < 0) {
                perror("xmem-bench-rtt: accept");
                return 1;
        }
        for (size_t i = 0; i < count; i++) {
                double t = now_us();
                if (!io_full(s, buf, REQ, false) || !io_full(s, buf, reply, true)) {
                        fprintf(stderr, "xmem-bench-rtt: the echo process went away\n");
                        return 1;
                }
                lat[i] = now_us() - t;
        }
        close(s);
        waitpid(echo, NULL, 0);
        qsort(lat, count, sizeof(*lat), cmp);
        printf("{\"figure\":\"tcp_rtt\",\"reply_bytes\":%zu,\"p50\":%.1f,\"p99\":%.1f,"
               "\"p999\":%.1f,\"count\":%zu}\n",
               reply, lat[count / 2], lat[count * 99 / 100], lat[count * 999 / 1000], count);
        free(lat);
        free(buf);
        return 0;
}
