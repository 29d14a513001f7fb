/* metrics.c: memd's metrics endpoint, a minimal HTTP/1.x server on the event
 * loop: non-blocking sockets, at most METRICS_MAX_CLIENTS scrapes at once,
 * each closed after METRICS_CLIENT_TIMEOUT_USEC whatever it did, so a slow or
 * stuck scraper costs a socket for a few seconds and never blocks memd. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "memd.h"
#include "metrics.h"
#include "uri.h"

struct metrics_client {
        struct metrics *x;
        int fd;
        sd_event_source *io, *timer;
        char in[METRICS_REQUEST_MAX];
        size_t in_len;
        char *out; /* the response once the request is read */
        size_t out_len, out_done;
        struct metrics_client *next;
};

struct metrics {
        struct manager *m;
        int fd;
        sd_event_source *src;
        struct metrics_client *clients;
        size_t n_clients;
};

int metrics_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len,
                          struct xmem_error *err)
{
        struct sockaddr_in *in4 = (struct sockaddr_in *)ret;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
        struct xmem_uri u;
        int r;

        r = xmem_uri_parse(s, &u, err);
        if (r < 0)
                return r;
        if (u.scheme != XMEM_URI_TCP)
                return xmem_error_set(err, -EINVAL, "%s: must be tcp://ADDRESS:PORT", s);
        memset(ret, 0, sizeof(*ret));
        if (inet_pton(AF_INET, u.host, &in4->sin_addr) == 1) {
                if (in4->sin_addr.s_addr == htonl(INADDR_ANY))
                        return xmem_error_set(err, -EINVAL,
                                              "%s: name one address, not every interface", s);
                in4->sin_family = AF_INET;
                in4->sin_port = htons(u.port);
                *ret_len = sizeof(*in4);
                return 0;
        }
        if (inet_pton(AF_INET6, u.host, &in6->sin6_addr) == 1) {
                if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
                        return xmem_error_set(err, -EINVAL,
                                              "%s: name one address, not every interface", s);
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(u.port);
                *ret_len = sizeof(*in6);
                return 0;
        }
        return xmem_error_set(err, -EINVAL, "%s: the host must be a numeric IP address", s);
}

/* The end of the head: "\r\n\r\n" (or bare "\n\n"). */
static const char *head_end(const char *buf, size_t len)
{
        for (size_t i = 0; i + 1 < len; i++) {
                if (buf[i] == '\n' && buf[i + 1] == '\n')
                        return buf + i + 2;
                if (i + 3 < len && memcmp(buf + i, "\r\n\r\n", 4) == 0)
                        return buf + i + 4;
        }
        return NULL;
}

int metrics_http_request(const char *buf, size_t len)
{
        const char *end = head_end(buf, len), *sp1, *sp2, *eol;
        size_t plen;

        if (!end)
                return len >= METRICS_REQUEST_MAX ? 400 : 0;
        eol = memchr(buf, '\n', (size_t)(end - buf));
        sp1 = memchr(buf, ' ', (size_t)(eol - buf));
        if (!sp1)
                return 400;
        sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
        if (!sp2 || (size_t)(eol - sp2) < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
                return 400;
        for (const char *p = buf; p < sp1; p++)
                if (*p < 'A' || *p > 'Z')
                        return 400;
        if (sp1 - buf != 3 || memcmp(buf, "GET", 3) != 0)
                return 405;
        plen = (size_t)(sp2 - sp1 - 1);
        for (const char *p = sp1 + 1; p < sp2; p++)
                if (*p <= ' ' || *p > '~')
                        return 400;
        if (plen > 0 && memchr(sp1 + 1, '?', plen))
                plen = (size_t)((const char *)memchr(sp1 + 1, '?', plen) - sp1 - 1);
        if ((plen == 1 && sp1[1] == '/') || (plen == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0))
                return 200;
        return 404;
}

static void client_free(struct metrics_client *cl)
{
        struct metrics *x = cl->x;

        for (struct metrics_client **p = &x->clients; *p; p = &(*p)->next)
                if (*p == cl) {
                        *p = cl->next;
                        break;
                }
        x->n_clients--;
        sd_event_source_disable_unref(cl->io);
        sd_event_source_disable_unref(cl->timer);
        safe_close(cl->fd);
        free(cl->out);
        free(cl);
}

static int respond(struct metrics_client *cl, int status)
{
        _cleanup_free_ char *body = NULL;
        const char *reason = status == 200   ? "OK"
                             : status == 404 ? "Not Found"
                             : status == 405 ? "Method Not Allowed"
                             : status == 503 ? "Service Unavailable"
                                             : "Bad Request";
        size_t blen = 0;
        FILE *f;

        if (status == 200 && metrics_render(cl->x->m, &body, &blen) < 0)
                status = 503, reason = "Service Unavailable";
        f = open_memstream(&cl->out, &cl->out_len);
        if (!f)
                return -ENOMEM;
        fprintf(f,
                "HTTP/1.1 %d %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                status, reason, status == 200 ? blen : strlen(reason) + 1);
        if (status == 200)
                fwrite(body, 1, blen, f);
        else
                fprintf(f, "%s\n", reason);
        if (ferror(f) | fclose(f))
                return -ENOMEM;
        return sd_event_source_set_io_events(cl->io, EPOLLOUT);
}

static int on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct metrics_client *cl = userdata;
        ssize_t n;
        int status;

        if (!cl->out) {
                n = read(fd, cl->in + cl->in_len, sizeof(cl->in) - cl->in_len);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                if (n <= 0) {
                        client_free(cl);
                        return 0;
                }
                cl->in_len += (size_t)n;
                status = metrics_http_request(cl->in, cl->in_len);
                if (status != 0 && respond(cl, status) < 0)
                        client_free(cl);
                return 0;
        }
        n = write(fd, cl->out + cl->out_done, cl->out_len - cl->out_done);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n > 0)
                cl->out_done += (size_t)n;
        if (n <= 0 || cl->out_done == cl->out_len)
                client_free(cl); /* all sent (or the scraper left): close */
        return 0;
}

static int on_client_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct metrics_client *cl = userdata;

        log_debug("metrics: a scrape took over %llu s, closed",
                  (unsigned long long)(METRICS_CLIENT_TIMEOUT_USEC / 1000000));
        client_free(cl);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct metrics *x = userdata;
        struct metrics_client *cl;
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (cfd < 0)
                return 0; /* EAGAIN, or a client gone before we took it */
        if (x->n_clients >= METRICS_MAX_CLIENTS || !(cl = calloc(1, sizeof(*cl)))) {
                log_debug("metrics: %zu scrapes in flight, one more refused", x->n_clients);
                close(cfd);
                return 0;
        }
        cl->x = x;
        cl->fd = cfd;
        cl->next = x->clients;
        x->clients = cl;
        x->n_clients++;
        if (sd_event_add_io(x->m->event, &cl->io, cfd, EPOLLIN, on_client, cl) < 0 ||
            sd_event_add_time_relative(x->m->event, &cl->timer, CLOCK_MONOTONIC,
                                       METRICS_CLIENT_TIMEOUT_USEC, 0, on_client_timeout, cl) < 0)
                client_free(cl);
        return 0;
}

int metrics_start(struct manager *m, const char *address, struct metrics **ret,
                  struct xmem_error *err)
{
        struct sockaddr_storage sa;
        struct metrics *x;
        socklen_t len;
        int r, one = 1;

        r = metrics_parse_address(address, &sa, &len, err);
        if (r < 0)
                return r;
        x = calloc(1, sizeof(*x));
        if (!x)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        x->m = m;
        x->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (x->fd < 0 || setsockopt(x->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(x->fd, (struct sockaddr *)&sa, len) < 0 || listen(x->fd, 16) < 0) {
                r = xmem_error_set(err, negative_errno(), "metrics %s: %m", address);
                metrics_free(x);
                return r;
        }
        r = sd_event_add_io(m->event, &x->src, x->fd, EPOLLIN, on_accept, x);
        if (r < 0) {
                metrics_free(x);
                return xmem_error_set(err, r, "metrics: sd-event: %s", strerror(-r));
        }
        log_info("metrics on http://%s/metrics", address + strlen("tcp://"));
        *ret = x;
        return 0;
}

void metrics_free(struct metrics *x)
{
        if (!x)
                return;
        while (x->clients)
                client_free(x->clients);
        sd_event_source_disable_unref(x->src);
        safe_close(x->fd);
        free(x);
}
