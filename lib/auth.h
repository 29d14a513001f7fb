/* auth.h (lib): the shared secret of a deployment and the mutual
 * challenge-response over XMEM_OP_AUTH (docs/appliance.md "Authentication"):
 * HMAC-SHA256 from OpenSSL's libcrypto, nonces from getrandom(2). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xmem/wire.h>

#include "error.h"

#define XMEM_SECRET_MIN 16 /* bytes: shorter secrets are refused */
#define XMEM_SECRET_MAX 4096

struct xmem_secret {
        size_t len; /* 0: none */
        uint8_t bytes[XMEM_SECRET_MAX];
};

/* Read the secret in PATH: a regular file, not readable or writable by group
 * or others (mode 0600 or 0400), XMEM_SECRET_MIN..XMEM_SECRET_MAX bytes once
 * one trailing newline is dropped. ERR names what is wrong. */
int xmem_secret_load(const char *path, struct xmem_secret *ret, struct xmem_error *err);
/* Zero S (OPENSSL_cleanse: not optimised away). */
void xmem_secret_wipe(struct xmem_secret *s);

/* N random bytes from getrandom(2). */
void auth_random(uint8_t *buf, size_t n);
/* The mac of one side: HMAC-SHA256(secret, label | server nonce | client nonce). */
int auth_mac(const struct xmem_secret *s, bool server, const uint8_t sn[XMEM_AUTH_NONCE_SIZE],
             const uint8_t cn[XMEM_AUTH_NONCE_SIZE], uint8_t out[XMEM_AUTH_MAC_SIZE]);
/* Constant-time comparison of two macs. */
bool auth_mac_equal(const uint8_t a[XMEM_AUTH_MAC_SIZE], const uint8_t b[XMEM_AUTH_MAC_SIZE]);

/* The client's half on a connected socket FD (blocking, its SO_RCVTIMEO
 * bounds the wait): challenge, prove, check the appliance's proof. */
int auth_client_handshake(int fd, const struct xmem_secret *s, struct xmem_error *err);
