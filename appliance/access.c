/* access.c: who may talk to the appliance and how much: the uid check of unix
 * clients (SO_PEERCRED), the secret of tcp clients (mutual HMAC challenge-
 * response, lib/auth.c), the --peer list of COPY, and the bounds on
 * connections, regions and buffers. docs/appliance.md "Authentication". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "fdio.h"
#include "log.h"
#include "manager.h"
#include "wire.h"

#define REFUSING_MAX 16       /* refused connections answered at once; more are just closed */
#define REFUSE_WAIT_S 2       /* for the first request of a refused connection */
#define AUTH_WAIT_S 10        /* for a tcp client to authenticate */
#define CONN_KEEP (64u << 10) /* buffer bytes a connection keeps under pressure */

/* The client named ID, counted with one more connection; NULL if out of memory. */
static struct client *client_get(struct manager *m, const char *id)
{
        struct client *cl;

        for (cl = m->clients; cl; cl = cl->next)
                if (strcmp(cl->id, id) == 0)
                        return cl;
        cl = calloc(1, sizeof(*cl));
        if (!cl)
                return NULL;
        snprintf(cl->id, sizeof(cl->id), "%s", id);
        cl->next = m->clients;
        m->clients = cl;
        return cl;
}

/* Forget CL once nothing counts on it. Under clients_lock. */
static void client_put(struct manager *m, struct client *cl)
{
        struct client **pp = &m->clients;

        if (cl->conns || cl->regions)
                return;
        while (*pp && *pp != cl)
                pp = &(*pp)->next;
        if (*pp)
                *pp = cl->next;
        free(cl);
}

static bool uid_allowed(const struct manager *m, uid_t uid)
{
        for (size_t i = 0; i < m->nallow_uid; i++)
                if (m->allow_uid[i] == uid)
                        return true;
        return false;
}

static void refuse(struct conn *c, int code, const char *why)
{
        c->refuse = code;
        snprintf(c->refuse_why, sizeof(c->refuse_why), "%s", why);
}

void access_admit(struct conn *c, const struct sockaddr_storage *sa)
{
        struct manager *m = c->m;
        char id[64], why[96];
        struct client *cl;

        if (c->is_unix) {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                        return refuse(c, -EACCES, "no peer credentials");
                snprintf(id, sizeof(id), "uid %u", (unsigned)cred.uid);
                snprintf(c->name + strlen(c->name), sizeof(c->name) - strlen(c->name),
                         " uid %u pid %d", (unsigned)cred.uid, (int)cred.pid);
                if (!uid_allowed(m, cred.uid)) {
                        snprintf(why, sizeof(why), "uid %u is not allowed (--allow-uid)",
                                 (unsigned)cred.uid);
                        return refuse(c, -EACCES, why);
                }
        } else {
                const void *addr = sa->ss_family == AF_INET6
                                       ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                                       : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
                if (!inet_ntop(sa->ss_family, addr, id, sizeof(id)))
                        snprintf(id, sizeof(id), "?");
        }
        if (m->stats.connections >= m->limits.max_connections) {
                snprintf(why, sizeof(why), "%u connections open, the limit (--max-connections)",
                         m->limits.max_connections);
                return refuse(c, -EUSERS, why);
        }
        pthread_mutex_lock(&m->clients_lock);
        cl = client_get(m, id);
        if (cl && cl->conns >= m->limits.max_client_connections) {
                snprintf(why, sizeof(why),
                         "client %s has %u connections, the limit "
                         "(--max-client-connections)",
                         id, cl->conns);
                refuse(c, -EUSERS, why);
        } else if (cl) {
                cl->conns++;
                c->client = cl;
        } else {
                refuse(c, -ENOMEM, "out of memory");
        }
        pthread_mutex_unlock(&m->clients_lock);
        /* unix clients passed the uid check; tcp ones prove the secret, if there is one */
        c->authed = c->client && (c->is_unix || m->secret.len == 0);
        if (c->client && !c->authed) {
                struct timeval tv = {.tv_sec = AUTH_WAIT_S};
                (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
}

bool access_refuse_slot(struct manager *m)
{
        if (atomic_fetch_add(&m->refusing, 1) < REFUSING_MAX)
                return true;
        atomic_fetch_sub(&m->refusing, 1);
        return false;
}

void access_trim(struct conn *c)
{
        struct manager *m = c->m;

        /* under pressure, idle connections give back what one big request took */
        if (atomic_load(&m->buffered) <= m->limits.max_buffers / 2)
                return;
        if (c->in_cap > CONN_KEEP) {
                free(c->in);
                c->in = NULL;
                access_buf_release(m, c->in_cap);
                c->in_cap = 0;
        }
        if (c->out_cap > CONN_KEEP) {
                free(c->out);
                c->out = NULL;
                access_buf_release(m, c->out_cap);
                c->out_cap = 0;
        }
}

void access_release(struct conn *c)
{
        if (!c->client)
                return;
        pthread_mutex_lock(&c->m->clients_lock);
        c->client->conns--;
        client_put(c->m, c->client);
        pthread_mutex_unlock(&c->m->clients_lock);
        c->client = NULL;
}

void access_refuse(struct conn *c)
{
        struct timeval tv = {.tv_sec = REFUSE_WAIT_S};
        uint8_t raw[XMEM_WIRE_HDR_SIZE];
        struct xmem_wire_hdr h;

        c->m->stats.refused++;
        log_warning("%s: refused: %s", c->name, c->refuse_why);
        (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        /* the client learns why from the reply to its first request (HELLO) */
        if (read_full(c->fd, raw, sizeof(raw)) < 0 || wire_hdr_decode(raw, false, &h, NULL) < 0)
                return;
        h.op |= XMEM_OP_REPLY;
        h.status = c->refuse;
        memset(h.key, 0, sizeof(h.key));
        (void)conn_reply(c, &h, NULL, 0, -1);
}

static int reply_status(struct conn *c, const struct xmem_wire_hdr *h, int status)
{
        struct xmem_wire_hdr rep = *h;

        rep.op = h->op | XMEM_OP_REPLY;
        rep.status = status;
        memset(rep.key, 0, sizeof(rep.key));
        c->m->stats.refused++;
        return conn_reply(c, &rep, NULL, 0, -1);
}

int access_check_frame(struct conn *c, const struct xmem_wire_hdr *h)
{
        struct manager *m = c->m;
        bool data = h->op == XMEM_OP_READ || h->op == XMEM_OP_WRITE || h->op == XMEM_OP_READV ||
                    h->op == XMEM_OP_WRITEV;

        if (!c->authed && h->op != XMEM_OP_AUTH) {
                log_warning("%s: %s before authentication, refused, closing", c->name,
                            wire_op_name(h->op));
                reply_status(c, h, -EACCES);
                return -EACCES;
        }
        if (data && h->length > m->limits.max_io) {
                log_info("%s: %s of %llu bytes over --max-io %llu, refused", c->name,
                         wire_op_name(h->op), (unsigned long long)h->length,
                         (unsigned long long)m->limits.max_io);
                return reply_status(c, h, -EMSGSIZE) < 0 ? -EPIPE : 1;
        }
        /* both buffers of the request, before anything of it is read */
        if (h->payload_len > c->in_cap) {
                size_t more = h->payload_len - c->in_cap;
                uint8_t *p = NULL;

                if (access_buf_charge(m, more) && !(p = realloc(c->in, h->payload_len)))
                        access_buf_release(m, more);
                if (!p) {
                        log_warning("%s: no buffer for a %u-byte %s (--max-buffers), refused",
                                    c->name, h->payload_len, wire_op_name(h->op));
                        return reply_status(c, h, -ENOBUFS) < 0 ? -EPIPE : 1;
                }
                c->in = p;
                c->in_cap = h->payload_len;
        }
        if ((h->op == XMEM_OP_READ || h->op == XMEM_OP_READV) && !conn_out(c, h->length)) {
                log_warning("%s: no buffer for a %llu-byte %s (--max-buffers), refused", c->name,
                            (unsigned long long)h->length, wire_op_name(h->op));
                return reply_status(c, h, -ENOBUFS) < 0 ? -EPIPE : 1;
        }
        return 0;
}

int access_auth(struct conn *c, const struct xmem_wire_hdr *h, const uint8_t *payload,
                struct xmem_wire_hdr *rep)
{
        const struct xmem_secret *secret = &c->m->secret;
        uint8_t want[XMEM_AUTH_MAC_SIZE], proof[XMEM_AUTH_MAC_SIZE];
        struct timeval none = {0};

        if (c->is_unix || secret->len == 0) { /* nothing to prove here: not an error */
                rep->status = -EOPNOTSUPP;
                return conn_reply(c, rep, NULL, 0, -1);
        }
        if (h->arg == XMEM_AUTH_CHALLENGE && !c->challenged) {
                auth_random(c->nonce, sizeof(c->nonce));
                c->challenged = true;
                return conn_reply(c, rep, c->nonce, sizeof(c->nonce), -1);
        }
        if (h->arg != XMEM_AUTH_PROVE || !c->challenged || c->authed) {
                log_warning("%s: authentication step %llu out of order, closing", c->name,
                            (unsigned long long)h->arg);
                reply_status(c, h, -EPROTO);
                return -EPROTO;
        }
        if (auth_mac(secret, false, c->nonce, payload, want) < 0 ||
            !auth_mac_equal(want, payload + XMEM_AUTH_NONCE_SIZE)) {
                /* one challenge per connection: a replayed proof answers another nonce */
                log_warning("%s: authentication failed (wrong secret or replayed proof), closing",
                            c->name);
                reply_status(c, h, -EACCES);
                return -EACCES;
        }
        if (auth_mac(secret, true, c->nonce, payload, proof) < 0) {
                reply_status(c, h, -EIO);
                return -EIO;
        }
        c->authed = true;
        (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
        log_info("%s: authenticated", c->name);
        return conn_reply(c, rep, proof, sizeof(proof), -1);
}

int access_region_quota(struct conn *c)
{
        int r = 0;

        if (!c->client)
                return 0;
        pthread_mutex_lock(&c->m->clients_lock);
        if (c->client->regions >= c->m->limits.max_client_regions)
                r = -EDQUOT;
        pthread_mutex_unlock(&c->m->clients_lock);
        if (r < 0) {
                c->m->stats.refused++;
                log_info("%s: client %s has %llu regions, the limit (--max-client-regions)",
                         c->name, c->client->id, (unsigned long long)c->client->regions);
        }
        return r;
}

void access_region_made(struct conn *c, struct region *r)
{
        if (!c->client)
                return;
        pthread_mutex_lock(&c->m->clients_lock);
        c->client->regions++;
        r->owner = c->client;
        pthread_mutex_unlock(&c->m->clients_lock);
}

void access_region_gone(struct manager *m, struct region *r)
{
        struct client *cl = r->owner;

        if (!cl)
                return;
        pthread_mutex_lock(&m->clients_lock);
        cl->regions--;
        r->owner = NULL;
        client_put(m, cl);
        pthread_mutex_unlock(&m->clients_lock);
}

/* unix:// and shm:// of one path are the same appliance socket. */
static bool uri_same(const struct xmem_uri *a, const struct xmem_uri *b)
{
        bool a_path = a->scheme == XMEM_URI_UNIX || a->scheme == XMEM_URI_SHM;
        bool b_path = b->scheme == XMEM_URI_UNIX || b->scheme == XMEM_URI_SHM;

        if (a_path || b_path)
                return a_path && b_path && strcmp(a->path, b->path) == 0;
        return a->scheme == b->scheme && a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

int access_peer_check(const struct manager *m, const char *uri, struct xmem_error *err)
{
        struct xmem_uri u;

        if (xmem_uri_parse(uri, &u, err) < 0)
                return xmem_error_prefix(err, "copy destination");
        for (size_t i = 0; i < m->npeers; i++)
                if (uri_same(&u, &m->peers[i]))
                        return 0;
        return xmem_error_set(err, -EPERM, "copy to %s refused: not a --peer of this appliance",
                              uri);
}

bool access_buf_charge(struct manager *m, size_t n)
{
        uint_fast64_t now = atomic_fetch_add(&m->buffered, n) + n;

        if (now <= m->limits.max_buffers)
                return true;
        atomic_fetch_sub(&m->buffered, n);
        return false;
}

void access_buf_release(struct manager *m, size_t n)
{
        atomic_fetch_sub(&m->buffered, n);
}

void access_free(struct manager *m)
{
        while (m->clients) {
                struct client *cl = m->clients;
                m->clients = cl->next;
                free(cl);
        }
        xmem_secret_wipe(&m->secret);
        pthread_mutex_destroy(&m->clients_lock);
}
