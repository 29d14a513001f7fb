/* test_auth.c: secret files (lib/auth.c) and the HMAC proofs of the AUTH
 * handshake: which files are refused and why, and that a proof binds the
 * secret, the side and both nonces. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

static char dir[64], path[128];

static void setup(void)
{
        snprintf(dir, sizeof(dir), "/tmp/xmem-auth.XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/secret", dir);
}

static void teardown(void)
{
        unlink(path);
        rmdir(dir);
}

TestSuite(auth, .init = setup, .fini = teardown);

static void put(const char *text, size_t len, mode_t mode)
{
        int fd;

        unlink(path);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, text, len), (ssize_t)len);
        cr_assert_eq(fchmod(fd, mode), 0);
        close(fd);
}

static int load(struct xmem_secret *s, struct xmem_error *err)
{
        memset(err, 0, sizeof(*err));
        return xmem_secret_load(path, s, err);
}

Test(auth, secret_file_accepted)
{
        struct xmem_secret s;
        struct xmem_error err;

        put("0123456789abcdef\n", 17, 0600);
        cr_assert_eq(load(&s, &err), 0, "%s", err.msg);
        cr_assert_eq(s.len, 16, "one trailing newline is not part of it");
        cr_assert_arr_eq(s.bytes, "0123456789abcdef", 16);
        put("0123456789abcdef\n\n", 18, 0400);
        cr_assert_eq(load(&s, &err), 0, "%s", err.msg);
        cr_assert_eq(s.len, 17, "only one newline is dropped");
}

Test(auth, secret_file_refused)
{
        static char big[XMEM_SECRET_MAX + 1];
        struct xmem_secret s;
        struct xmem_error err;

        cr_assert_eq(load(&s, &err), -ENOENT);
        cr_assert(strstr(err.msg, path), "%s", err.msg);
        put("", 0, 0600);
        cr_assert_eq(load(&s, &err), -ENODATA);
        cr_assert(strstr(err.msg, "empty"), "%s", err.msg);
        put("0123456789abcdef", 16, 0644);
        cr_assert_eq(load(&s, &err), -EPERM);
        cr_assert(strstr(err.msg, "mode 0644"), "%s", err.msg);
        put("0123456789abcdef", 16, 0604);
        cr_assert_eq(load(&s, &err), -EPERM);
        put("0123456789abcdef", 16, 0620);
        cr_assert_eq(load(&s, &err), -EPERM, "group-writable");
        put("short\n", 6, 0600);
        cr_assert_eq(load(&s, &err), -EINVAL);
        cr_assert(strstr(err.msg, "at least 16"), "%s", err.msg);
        memset(big, 'x', sizeof(big));
        put(big, sizeof(big), 0600);
        cr_assert_eq(load(&s, &err), -EFBIG);
        put(big, XMEM_SECRET_MAX, 0600);
        cr_assert_eq(load(&s, &err), -EFBIG);
        put(big, XMEM_SECRET_MAX - 1, 0600);
        cr_assert_eq(load(&s, &err), 0, "%s", err.msg);
        cr_assert_eq(s.len, XMEM_SECRET_MAX - 1);
        unlink(path);
        cr_assert_eq(mkdir(path, 0700), 0);
        cr_assert_eq(load(&s, &err), -EINVAL);
        cr_assert(strstr(err.msg, "not a regular file"), "%s", err.msg);
        rmdir(path);
}

static struct xmem_secret secret(const char *text)
{
        struct xmem_secret s = {.len = strlen(text)};
        memcpy(s.bytes, text, s.len);
        return s;
}

Test(auth, proofs_bind_secret_side_and_nonces)
{
        struct xmem_secret a = secret("the first secret"), b = secret("the other secret");
        struct xmem_secret none = {0};
        uint8_t sn[XMEM_AUTH_NONCE_SIZE], cn[XMEM_AUTH_NONCE_SIZE], m[6][XMEM_AUTH_MAC_SIZE];

        auth_random(sn, sizeof(sn));
        auth_random(cn, sizeof(cn));
        cr_assert(memcmp(sn, cn, sizeof(sn)) != 0, "getrandom repeats itself");
        cr_assert_eq(auth_mac(&a, false, sn, cn, m[0]), 0);
        cr_assert_eq(auth_mac(&a, false, sn, cn, m[1]), 0);
        cr_assert(auth_mac_equal(m[0], m[1]), "the same inputs give the same mac");
        cr_assert_eq(auth_mac(&a, true, sn, cn, m[2]), 0);
        cr_assert_eq(auth_mac(&b, false, sn, cn, m[3]), 0);
        cr_assert_eq(auth_mac(&a, false, cn, sn, m[4]), 0);
        sn[0] ^= 1;
        cr_assert_eq(auth_mac(&a, false, sn, cn, m[5]), 0);
        for (int i = 2; i < 6; i++)
                cr_assert_not(auth_mac_equal(m[0], m[i]), "mac %d matches the client's", i);
        m[1][31] ^= 0x80;
        cr_assert_not(auth_mac_equal(m[0], m[1]), "the last bit counts");
        cr_assert_eq(auth_mac(&none, false, sn, cn, m[0]), -ENOKEY);
}

/* The mac is HMAC-SHA256 over exactly "xmem-auth-v1 client\0" (or server),
 * the server nonce and the client nonce, as docs/appliance.md says: an
 * independent implementation in another language can interoperate. */
Test(auth, mac_is_hmac_sha256_of_label_and_nonces)
{
        struct xmem_secret s = secret("0123456789abcdef");
        uint8_t sn[XMEM_AUTH_NONCE_SIZE], cn[XMEM_AUTH_NONCE_SIZE], mac[XMEM_AUTH_MAC_SIZE];
        uint8_t msg[20 + 2 * XMEM_AUTH_NONCE_SIZE], want[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        auth_random(sn, sizeof(sn));
        auth_random(cn, sizeof(cn));
        for (int server = 0; server < 2; server++) {
                memcpy(msg, server ? "xmem-auth-v1 server" : "xmem-auth-v1 client", 20);
                memcpy(msg + 20, sn, sizeof(sn));
                memcpy(msg + 20 + sizeof(sn), cn, sizeof(cn));
                cr_assert_not_null(
                    HMAC(EVP_sha256(), s.bytes, (int)s.len, msg, sizeof(msg), want, &len));
                cr_assert_eq(len, XMEM_AUTH_MAC_SIZE);
                cr_assert_eq(auth_mac(&s, server, sn, cn, mac), 0);
                cr_assert_arr_eq(mac, want, XMEM_AUTH_MAC_SIZE, "side %d", server);
        }
}
