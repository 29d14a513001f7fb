/* uri.c: endpoint parsing. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "parse.h"
#include "uri.h"

static const char *const scheme_names[] = {
        [XMEM_URI_TCP] = "tcp",
        [XMEM_URI_UNIX] = "unix",
        [XMEM_URI_SHM] = "shm",
        [XMEM_URI_RDMA] = "rdma",
};

const char *xmem_uri_scheme_name(enum xmem_uri_scheme s)
{
        return (unsigned)s < ELEMENTSOF(scheme_names) ? scheme_names[s] : "?";
}

static int parse_host_port(const char *s, const char *rest, struct xmem_uri *u,
                           struct xmem_error *err)
{
        const char *colon;
        uint64_t port;
        size_t hlen;

        if (rest[0] == '[') {
                const char *close = strchr(rest, ']');
                if (!close)
                        return xmem_error_set(err, -EINVAL, "%s: unterminated '[' in host", s);
                hlen = (size_t)(close - rest - 1);
                if (hlen == 0 || hlen >= sizeof(u->host))
                        return xmem_error_set(err, -EINVAL, "%s: bad host", s);
                memcpy(u->host, rest + 1, hlen);
                u->host[hlen] = 0;
                colon = close + 1;
                if (*colon != ':')
                        return xmem_error_set(err, -EINVAL, "%s: missing port", s);
        } else {
                colon = strrchr(rest, ':');
                if (!colon)
                        return xmem_error_set(err, -EINVAL, "%s: missing port", s);
                hlen = (size_t)(colon - rest);
                if (hlen == 0 || hlen >= sizeof(u->host))
                        return xmem_error_set(err, -EINVAL, "%s: bad host", s);
                if (memchr(rest, ':', hlen))
                        return xmem_error_set(err, -EINVAL,
                                              "%s: IPv6 addresses need brackets", s);
                memcpy(u->host, rest, hlen);
                u->host[hlen] = 0;
        }
        /* host names, IPv4, and (bracketed) IPv6 with an optional %zone */
        for (const char *p = u->host; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr(".-_:%", *p))
                        return xmem_error_set(err, -EINVAL, "%s: bad host", s);
        if (parse_u64(colon + 1, &port) < 0 || port == 0 || port > 65535)
                return xmem_error_set(err, -EINVAL, "%s: port must be 1..65535", s);
        u->port = (uint16_t)port;
        return 0;
}

int xmem_uri_parse(const char *s, struct xmem_uri *ret, struct xmem_error *err)
{
        struct xmem_uri u = { 0 };
        const char *sep;
        size_t slen;
        int r;

        if (!s || !*s)
                return xmem_error_set(err, -EINVAL, "empty endpoint");
        sep = strstr(s, "://");
        if (!sep)
                return xmem_error_set(err, -EINVAL,
                                      "%s: expected tcp://HOST:PORT, unix:///PATH, shm:///PATH "
                                      "or rdma://HOST:PORT", s);
        slen = (size_t)(sep - s);
        r = -1;
        for (size_t i = 0; i < ELEMENTSOF(scheme_names); i++)
                if (strlen(scheme_names[i]) == slen && strncmp(s, scheme_names[i], slen) == 0)
                        r = (int)i;
        if (r < 0)
                return xmem_error_set(err, -EINVAL, "%s: unknown scheme '%.*s'", s,
                                      (int)MIN(slen, 16), s);
        u.scheme = (enum xmem_uri_scheme)r;
        if (u.scheme == XMEM_URI_UNIX || u.scheme == XMEM_URI_SHM) {
                const char *path = sep + 3;
                if (path[0] != '/')
                        return xmem_error_set(err, -EINVAL, "%s: path must be absolute", s);
                if (strlen(path) >= sizeof(u.path))
                        return xmem_error_set(err, -ENAMETOOLONG, "%s: path too long", s);
                strcpy(u.path, path);
        } else {
                r = parse_host_port(s, sep + 3, &u, err);
                if (r < 0)
                        return r;
        }
        *ret = u;
        return 0;
}

const char *xmem_uri_format(const struct xmem_uri *u, char *buf, size_t len)
{
        if (u->scheme == XMEM_URI_UNIX || u->scheme == XMEM_URI_SHM)
                snprintf(buf, len, "%s://%s", xmem_uri_scheme_name(u->scheme), u->path);
        else if (strchr(u->host, ':'))
                snprintf(buf, len, "%s://[%s]:%u", xmem_uri_scheme_name(u->scheme), u->host,
                         u->port);
        else
                snprintf(buf, len, "%s://%s:%u", xmem_uri_scheme_name(u->scheme), u->host,
                         u->port);
        return buf;
}
