/* auth.c: secret files, HMAC-SHA256 proofs and the client side of the
 * XMEM_OP_AUTH handshake. The appliance's side is appliance/access.c. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "fdio.h"
#include "wire.h"

static const char label_client[] = "xmem-auth-v1 client";
static const char label_server[] = "xmem-auth-v1 server";

int xmem_secret_load(const char *path, struct xmem_secret *ret, struct xmem_error *err)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        ssize_t n;
        size_t len = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "%s: %s", path, strerror(errno));
        if (fstat(fd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "%s: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return xmem_error_set(err, -EINVAL, "%s: not a regular file", path);
        if (st.st_mode & 077)
                return xmem_error_set(err, -EPERM,
                                      "%s: mode %04o lets group or others in, must be 0600 or 0400",
                                      path, (unsigned)(st.st_mode & 07777));
        /* one byte more than allowed (plus a newline) tells "too long" apart */
        while (len < sizeof(ret->bytes) &&
               (n = read(fd, ret->bytes + len, sizeof(ret->bytes) - len)) != 0) {
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = negative_errno();
                        xmem_secret_wipe(ret);
                        return xmem_error_set(err, r, "%s: %s", path, strerror(-r));
                }
                len += (size_t)n;
        }
        if (len == sizeof(ret->bytes) && ret->bytes[len - 1] != '\n') {
                xmem_secret_wipe(ret);
                return xmem_error_set(err, -EFBIG, "%s: longer than %d bytes", path,
                                      XMEM_SECRET_MAX - 1);
        }
        if (len > 0 && ret->bytes[len - 1] == '\n')
                len--;
        if (len == 0)
                return xmem_error_set(err, -ENODATA, "%s: empty", path);
        if (len < XMEM_SECRET_MIN) {
                xmem_secret_wipe(ret);
                return xmem_error_set(err, -EINVAL, "%s: %zu bytes, a secret needs at least %d",
                                      path, len, XMEM_SECRET_MIN);
        }
        ret->len = len;
        return 0;
}

void xmem_secret_wipe(struct xmem_secret *s)
{
        OPENSSL_cleanse(s, sizeof(*s));
}

void auth_random(uint8_t *buf, size_t n)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = getrandom(buf + done, n - done, 0);
                if (k > 0)
                        done += (size_t)k;
                else
                        assert(errno == EINTR);
        }
}

int auth_mac(const struct xmem_secret *s, bool server, const uint8_t sn[XMEM_AUTH_NONCE_SIZE],
             const uint8_t cn[XMEM_AUTH_NONCE_SIZE], uint8_t out[XMEM_AUTH_MAC_SIZE])
{
        const char *label = server ? label_server : label_client;
        uint8_t msg[sizeof(label_client) + 2 * XMEM_AUTH_NONCE_SIZE];
        unsigned len = 0;

        static_assert(sizeof(label_client) == sizeof(label_server), "labels of one length");
        if (s->len == 0)
                return -ENOKEY;
        memcpy(msg, label, sizeof(label_client));
        memcpy(msg + sizeof(label_client), sn, XMEM_AUTH_NONCE_SIZE);
        memcpy(msg + sizeof(label_client) + XMEM_AUTH_NONCE_SIZE, cn, XMEM_AUTH_NONCE_SIZE);
        if (!HMAC(EVP_sha256(), s->bytes, (int)s->len, msg, sizeof(msg), out, &len) ||
            len != XMEM_AUTH_MAC_SIZE)
                return -EIO;
        return 0;
}

bool auth_mac_equal(const uint8_t a[XMEM_AUTH_MAC_SIZE], const uint8_t b[XMEM_AUTH_MAC_SIZE])
{
        return CRYPTO_memcmp(a, b, XMEM_AUTH_MAC_SIZE) == 0;
}

/* One AUTH step: send STEP with PAYLOAD, read the reply's OUT_LEN bytes. */
static int auth_step(int fd, uint64_t step, const uint8_t *payload, uint32_t len, uint8_t *out,
                     uint32_t out_len, struct xmem_error *err)
{
        struct xmem_wire_hdr h = {.magic = XMEM_WIRE_MAGIC,
                                  .version = XMEM_WIRE_VERSION,
                                  .op = XMEM_OP_AUTH,
                                  .tag = (uint32_t)step,
                                  .arg = step,
                                  .payload_len = len};
        uint8_t raw[XMEM_WIRE_HDR_SIZE];
        struct iovec iov[2] = {{raw, sizeof(raw)}, {(void *)payload, len}};
        int r;

        wire_hdr_encode(&h, raw);
        r = writev_full(fd, iov, len ? 2 : 1);
        if (r == 0)
                r = read_full(fd, raw, sizeof(raw));
        if (r < 0)
                return xmem_error_set(err, r == -EAGAIN ? -ETIMEDOUT : r, "authentication: %s",
                                      strerror(r == -EAGAIN ? ETIMEDOUT : -r));
        if (wire_hdr_decode(raw, true, &h, NULL) < 0)
                return xmem_error_set(err, -EPROTO, "authentication: malformed reply");
        if (h.op != (XMEM_OP_AUTH | XMEM_OP_REPLY) || h.tag != step)
                return xmem_error_set(err, -EPROTO, "authentication: unexpected %s reply",
                                      wire_op_name(h.op));
        if (h.status == -EOPNOTSUPP)
                return xmem_error_set(
                    err, -EPROTO, "authentication: the appliance has no secret (no --secret-file)");
        if (h.status == -EACCES)
                return xmem_error_set(err, -EACCES,
                                      "authentication: the appliance refused our "
                                      "proof (wrong secret)");
        if (h.status < 0)
                return xmem_error_set(err, h.status, "authentication refused: %s",
                                      strerror(-h.status));
        if (h.payload_len != out_len)
                return xmem_error_set(err, -EPROTO, "authentication: reply of %u bytes",
                                      h.payload_len);
        r = read_full(fd, out, out_len);
        if (r < 0)
                return xmem_error_set(err, r, "authentication: %s", strerror(-r));
        return 0;
}

int auth_client_handshake(int fd, const struct xmem_secret *s, struct xmem_error *err)
{
        uint8_t sn[XMEM_AUTH_NONCE_SIZE], prove[XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE];
        uint8_t theirs[XMEM_AUTH_MAC_SIZE], want[XMEM_AUTH_MAC_SIZE];
        int r;

        r = auth_step(fd, XMEM_AUTH_CHALLENGE, NULL, 0, sn, sizeof(sn), err);
        if (r < 0)
                return r;
        auth_random(prove, XMEM_AUTH_NONCE_SIZE);
        if (auth_mac(s, false, sn, prove, prove + XMEM_AUTH_NONCE_SIZE) < 0 ||
            auth_mac(s, true, sn, prove, want) < 0)
                return xmem_error_set(err, -EIO, "authentication: HMAC-SHA256 failed");
        r = auth_step(fd, XMEM_AUTH_PROVE, prove, sizeof(prove), theirs, sizeof(theirs), err);
        if (r < 0)
                return r;
        if (!auth_mac_equal(theirs, want))
                return xmem_error_set(err, -EACCES,
                                      "authentication: the appliance does not know "
                                      "our secret");
        return 0;
}
