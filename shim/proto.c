/* proto.c: the shim's side of memd's socket API (docs/api.md: shim.hello,
 * shim.register, shim.fork, shim.discard). Requests are written with snprintf and replies
 * read with jscan: no json-c, no malloc (this runs inside atfork handlers). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdio.h"
#include "jscan.h"
#include "shim.h"

#define PROTO_REPLY_MAX 4096
#define PROTO_TIMEOUT_S 10

int shim_proto_connect(const char *path, int *ret_sock)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = PROTO_TIMEOUT_S };
        int s, r;

        if (!path || strlen(path) >= sizeof(sa.sun_path))
                return -EINVAL;
        strcpy(sa.sun_path, path);
        s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (s < 0)
                return -errno;
        /* a hung memd must not hang every process start */
        (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        do
                r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
        while (r < 0 && errno == EINTR);
        if (r < 0) {
                r = -errno;
                close(s);
                return r;
        }
        *ret_sock = s;
        return 0;
}

static void close_fds(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                close(fds[i]);
}

/* Send REQ (with the N_SEND descriptors SEND), receive the reply into BUF and
 * up to *N_FDS descriptors. Returns the reply length or -errno; an
 * "ok":false reply is -EREMOTEIO (its descriptors closed). */
static ssize_t proto_call(int sock, const char *req, const int *send, size_t n_send, char *buf,
                          int *fds, size_t *n_fds)
{
        ssize_t n;
        bool ok;
        int r;

        r = send_with_fds(sock, req, strlen(req), send, n_send);
        if (r < 0)
                return r;
        n = recv_with_fds(sock, buf, PROTO_REPLY_MAX, fds, n_fds);
        if (n < 0)
                return n;
        if (n == 0 || n >= PROTO_REPLY_MAX) {
                close_fds(fds, *n_fds);
                *n_fds = 0;
                return n == 0 ? -ECONNRESET : -EMSGSIZE;
        }
        r = jscan_get_bool(buf, (size_t)n, NULL, "ok", &ok);
        if (r == 0 && !ok)
                r = -EREMOTEIO;
        if (r < 0) {
                close_fds(fds, *n_fds);
                *n_fds = 0;
                return r == -ENOENT || r == -EINVAL ? -EBADMSG : r;
        }
        return n;
}

static bool token_valid(const char *t)
{
        size_t n = strlen(t);

        if (n == 0 || n >= SHIM_TOKEN_MAX)
                return false;
        for (; *t; t++)
                if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
                      (*t >= '0' && *t <= '9') || strchr("_.:-", *t)))
                        return false;
        return true;
}

static int hello_parse(const char *buf, size_t n, struct shim_arena_info *ret)
{
        char policy[32];
        uint64_t ratio = 0, limit, quota;
        struct shim_arena_info info = { .memfd = -1, .devfd = -1, .acctfd = -1 };
        int r;

        if ((r = jscan_get_u64(buf, n, "result", "arena_size", &info.arena_size)) < 0 ||
            (r = jscan_get_u64(buf, n, "result", "local_alloc_limit", &limit)) < 0 ||
            (r = jscan_get_string(buf, n, "result", "policy", policy, sizeof(policy))) < 0)
                return -EBADMSG;
        r = jscan_get_u64(buf, n, "result", "ratio", &ratio);
        if (r < 0 && r != -ENOENT)
                return -EBADMSG;
        r = jscan_get_u64(buf, n, "result", "chunk_size", &info.chunk_size);
        if (r == -ENOENT)
                info.chunk_size = 65536;
        else if (r < 0)
                return -EBADMSG;
        /* version 1 memd: the quota is the arena */
        r = jscan_get_u64(buf, n, "result", "external_quota", &quota);
        if (r == -ENOENT)
                quota = info.arena_size;
        else if (r < 0)
                return -EBADMSG;
        if (info.arena_size == 0 || info.arena_size % SHIM_PAGE || info.arena_size > (1ULL << 46))
                return -EBADMSG;
        if (shim_policy_parse(policy, ratio, limit, &info.policy) < 0)
                return -EBADMSG;
        /* a snapshot's arena: where it was mapped, how much of it is data */
        r = jscan_get_u64(buf, n, "result", "restore_base", &info.restore_base);
        if (r == 0)
                r = jscan_get_u64(buf, n, "result", "restore_used", &info.restore_used);
        if ((r < 0 && r != -ENOENT) || info.restore_base % SHIM_PAGE ||
            info.restore_used % SHIM_PAGE || info.restore_used > info.arena_size)
                return -EBADMSG;
        info.policy.external_quota = quota;
        /* a container with a file directory (docs/api.md "shim.file") */
        r = jscan_get_u64(buf, n, "result", "file_size", &info.file_size);
        if (r == -ENOENT)
                info.file_size = 0;
        else if (r < 0 || info.file_size % SHIM_PAGE || info.file_size > (1ULL << 46))
                return -EBADMSG;
        *ret = info;
        return 0;
}

static ssize_t hello_call(int sock, const char *token, unsigned version, char *buf, int *fds,
                          size_t *n_fds)
{
        char req[256];

        if (token)
                snprintf(req, sizeof(req),
                         "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":%u,"
                         "\"fork_token\":\"%s\"}}",
                         version, token);
        else
                snprintf(req, sizeof(req),
                         "{\"xmem\":1,\"method\":\"shim.hello\",\"params\":{\"version\":%u}}",
                         version);
        return proto_call(sock, req, NULL, 0, buf, fds, n_fds);
}

int shim_proto_hello(int sock, const char *token, struct shim_arena_info *ret)
{
        char buf[PROTO_REPLY_MAX];
        int fds[3];
        size_t n_fds = 3;
        uint64_t slot = 0;
        bool attached;
        ssize_t n;
        int r;

        if (token && !token_valid(token))
                return -EINVAL;
        /* version 2 gets the accounting page; a version 1 memd refuses it
         * (EPROTONOSUPPORT), then we speak version 1 (docs/api.md) */
        n = hello_call(sock, token, 2, buf, fds, &n_fds);
        if (n == -EREMOTEIO) {
                n_fds = 3;
                n = hello_call(sock, token, 1, buf, fds, &n_fds);
        }
        if (n < 0)
                return (int)n;
        r = jscan_get_bool(buf, (size_t)n, "result", "attached", &attached);
        if (r < 0)
                r = -EBADMSG;
        else if (!attached)
                r = -ENOTCONN;
        else if (n_fds != 2 && n_fds != 3)
                r = -EBADMSG;
        else if (n_fds == 3 && (jscan_get_u64(buf, (size_t)n, "result", "acct_slot", &slot) < 0 ||
                                slot >= XMEM_ACCT_SLOTS))
                r = -EBADMSG;
        else
                r = hello_parse(buf, (size_t)n, ret);
        if (r < 0) {
                close_fds(fds, n_fds);
                return r;
        }
        ret->memfd = fds[0];
        ret->devfd = fds[1];
        ret->acctfd = n_fds == 3 ? fds[2] : -1;
        ret->acct_slot = (uint32_t)slot;
        return 0;
}

/* METHOD with two page-range parameters (and the N_SEND descriptors SEND); a
 * reply with no descriptors. */
static int range_call(int sock, const char *method, const char *k1, uint64_t v1, const char *k2,
                      uint64_t v2, const int *send, size_t n_send)
{
        char req[192], buf[PROTO_REPLY_MAX];
        int fds[1];
        size_t n_fds = 1;
        ssize_t n;

        snprintf(req, sizeof(req),
                 "{\"xmem\":1,\"method\":\"%s\",\"params\":{\"%s\":%llu,\"%s\":%llu}}",
                 method, k1, (unsigned long long)v1, k2, (unsigned long long)v2);
        n = proto_call(sock, req, send, n_send, buf, fds, &n_fds);
        if (n < 0)
                return (int)n;
        close_fds(fds, n_fds);
        return n_fds ? -EBADMSG : 0;
}

int shim_proto_register(int sock, uint64_t base, uint64_t size, int uffd)
{
        return range_call(sock, "shim.register", "base", base, "size", size, &uffd, 1);
}

/* METHOD without parameters: the reply into BUF, up to *N_FDS descriptors. */
static ssize_t bare_call(int sock, const char *method, char *buf, int *fds, size_t *n_fds)
{
        char req[96];

        snprintf(req, sizeof(req), "{\"xmem\":1,\"method\":\"%s\",\"params\":{}}", method);
        return proto_call(sock, req, NULL, 0, buf, fds, n_fds);
}

int shim_proto_fork(int sock, char *ret_token, size_t token_len)
{
        char buf[PROTO_REPLY_MAX], token[SHIM_TOKEN_MAX];
        int fds[1];
        size_t n_fds = 1;
        ssize_t n = bare_call(sock, "shim.fork", buf, fds, &n_fds);
        int r;

        if (n < 0)
                return (int)n;
        close_fds(fds, n_fds);
        r = jscan_get_string(buf, (size_t)n, "result", "token", token, sizeof(token));
        if (r < 0 || !token_valid(token) || strlen(token) >= token_len)
                return -EBADMSG;
        strcpy(ret_token, token);
        return 0;
}

int shim_proto_discard(int sock, uint64_t offset, uint64_t len)
{
        return range_call(sock, "shim.discard", "offset", offset, "length", len, NULL, 0);
}

int shim_proto_alias(int sock, const char *op, uint64_t addr, uint64_t offset, uint64_t len)
{
        char req[256], buf[PROTO_REPLY_MAX];
        int fds[1];
        size_t n_fds = 1;
        ssize_t n;

        snprintf(req, sizeof(req),
                 "{\"xmem\":1,\"method\":\"shim.alias\",\"params\":{\"op\":\"%s\",\"addr\":%llu,"
                 "\"offset\":%llu,\"length\":%llu}}",
                 op, (unsigned long long)addr, (unsigned long long)offset, (unsigned long long)len);
        n = proto_call(sock, req, NULL, 0, buf, fds, &n_fds);
        if (n < 0)
                return (int)n;
        close_fds(fds, n_fds);
        return n_fds ? -EBADMSG : 0;
}

int shim_proto_resume(int sock, uint64_t base, uint64_t size, int memfd, int uffd, int acctfd)
{
        int send[3] = { memfd, uffd, acctfd };

        return range_call(sock, "shim.resume", "base", base, "size", size, send,
                          acctfd >= 0 ? 3 : 2);
}

int shim_proto_file(int sock, int *ret_fd, uint64_t *ret_size)
{
        char buf[PROTO_REPLY_MAX];
        int fds[1];
        size_t n_fds = 1;
        uint64_t size;
        ssize_t n = bare_call(sock, "shim.file", buf, fds, &n_fds);

        if (n < 0)
                return (int)n;
        if (n_fds != 1 || jscan_get_u64(buf, (size_t)n, "result", "file_size", &size) < 0 ||
            size == 0 || size % SHIM_PAGE || size > (1ULL << 46)) {
                close_fds(fds, n_fds);
                return -EBADMSG;
        }
        *ret_fd = fds[0];
        *ret_size = size;
        return 0;
}
