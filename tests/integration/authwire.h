/* authwire.h: secret files and the AUTH handshake done by hand over raw
 * sockets, for the authentication and bounds tests. Test-local, header-only. */
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include "auth.h"
#include "rawwire.h"

/* Write TEXT to PATH with MODE (umask aside). */
static inline void auth_write_secret(const char *path, const char *text, mode_t mode)
{
        int fd;

        unlink(path);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
        cr_assert_eq(write_full(fd, text, strlen(text)), 0);
        cr_assert_eq(fchmod(fd, mode), 0);
        close(fd);
}

static inline struct xmem_secret auth_secret_of(const char *text)
{
        struct xmem_secret s = {.len = strlen(text)};
        memcpy(s.bytes, text, s.len);
        return s;
}

/* AUTH step 1 on FD: the appliance's nonce. */
static inline void auth_challenge(int fd, uint8_t sn[XMEM_AUTH_NONCE_SIZE])
{
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_AUTH, 1), rep;

        req.arg = XMEM_AUTH_CHALLENGE;
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, sn, XMEM_AUTH_NONCE_SIZE), 0, "challenge");
        cr_assert_eq(rep.payload_len, XMEM_AUTH_NONCE_SIZE);
}

/* AUTH step 2 on FD with PROVE (client nonce | client mac); the reply's
 * status, and the appliance's mac in THEIRS when it accepted. */
static inline int auth_prove(int fd, const uint8_t prove[XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE],
                             uint8_t theirs[XMEM_AUTH_MAC_SIZE])
{
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_AUTH, 2), rep;

        req.arg = XMEM_AUTH_PROVE;
        req.payload_len = XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE;
        return raw_call(fd, &req, prove, &rep, theirs, XMEM_AUTH_MAC_SIZE);
}

/* A full handshake on FD with S, as a client would; PROVE receives what was
 * sent in step 2 (for replays). Returns step 2's status. */
static inline int auth_handshake(int fd, const struct xmem_secret *s,
                                 uint8_t prove[XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE])
{
        uint8_t sn[XMEM_AUTH_NONCE_SIZE], theirs[XMEM_AUTH_MAC_SIZE], want[XMEM_AUTH_MAC_SIZE];
        int r;

        auth_challenge(fd, sn);
        auth_random(prove, XMEM_AUTH_NONCE_SIZE);
        cr_assert_eq(auth_mac(s, false, sn, prove, prove + XMEM_AUTH_NONCE_SIZE), 0);
        r = auth_prove(fd, prove, theirs);
        if (r == 0) { /* the appliance proves the secret too */
                cr_assert_eq(auth_mac(s, true, sn, prove, want), 0);
                cr_assert(auth_mac_equal(theirs, want), "the appliance's proof is wrong");
        }
        return r;
}
