/* journal.c: the metadata journal of a persistent pool. Record: le32 magic,
 * le32 type, le32 payload length, le32 CRC-32C (type, length, payload), payload. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdio.h"
#include "journal.h"
#include "log.h"
#include "wire.h"

#define JOURNAL_MAGIC 0x4c4a4d58u /* "XMJL" */
#define JOURNAL_VERSION 1
#define JOURNAL_REC_HDR 16
#define JOURNAL_SET_MAX 65536 /* entries per SET record */

enum journal_type {
        J_HEADER = 1, /* le32 version, le64 chunk_size, le64 pool_size, le64 next_id */
        J_CREATE = 2, /* le64 id, key[16], le64 size, le64 parent, le32 snapshot */
        J_SET = 3,    /* le64 id, le32 n, n x (le64 idx, le32 chunk) */
        J_SHARE = 4,  /* le64 dst, le64 src */
        J_RESIZE = 5, /* le64 id, le64 size */
        J_FREE = 6,   /* le64 id */
};

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
                crc_table[i] = c;
        }
}

static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
        pthread_once(&crc_once, crc_init);
        crc = ~crc;
        while (n--)
                crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
        return ~crc;
}

/* Frame PAYLOAD (LEN bytes, with JOURNAL_REC_HDR bytes of room before it at BUF). */
static int journal_write(int fd, uint32_t type, uint8_t *buf, uint32_t len)
{
        uint32_t crc;

        wire_put_u32(buf, JOURNAL_MAGIC);
        wire_put_u32(buf + 4, type);
        wire_put_u32(buf + 8, len);
        crc = crc32c(0, buf + 4, 8);
        crc = crc32c(crc, buf + JOURNAL_REC_HDR, len);
        wire_put_u32(buf + 12, crc);
        return write_full(fd, buf, JOURNAL_REC_HDR + (size_t)len);
}

static int append_small(struct journal *j, uint32_t type, const uint8_t *payload, uint32_t len)
{
        uint8_t buf[JOURNAL_REC_HDR + 64];
        int r;

        if (!j)
                return 0;
        memcpy(buf + JOURNAL_REC_HDR, payload, len);
        r = journal_write(j->fd, type, buf, len);
        if (r < 0)
                return log_error_errno(r, "journal %s: append failed", j->path);
        j->records++;
        return 0;
}

static int write_create(int fd, const struct region *r)
{
        uint8_t buf[JOURNAL_REC_HDR + 44], *p = buf + JOURNAL_REC_HDR;

        wire_put_u64(p, r->id);
        memcpy(p + 8, r->key, XMEM_KEY_SIZE);
        wire_put_u64(p + 24, r->size);
        wire_put_u64(p + 32, r->parent);
        wire_put_u32(p + 40, r->snapshot);
        return journal_write(fd, J_CREATE, buf, 44);
}

int journal_create(struct journal *j, const struct region *r)
{
        int rc;

        if (!j)
                return 0;
        rc = write_create(j->fd, r);
        if (rc < 0)
                return log_error_errno(rc, "journal %s: append failed", j->path);
        j->records++;
        return 0;
}

static int write_set(int fd, uint64_t id, const struct journal_entry *e, size_t n)
{
        _cleanup_free_ uint8_t *buf = NULL;
        uint8_t *p;

        buf = malloc(JOURNAL_REC_HDR + 12 + n * 12);
        if (!buf)
                return -ENOMEM;
        p = buf + JOURNAL_REC_HDR;
        wire_put_u64(p, id);
        wire_put_u32(p + 8, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
                wire_put_u64(p + 12 + i * 12, e[i].idx);
                wire_put_u32(p + 20 + i * 12, e[i].chunk);
        }
        return journal_write(fd, J_SET, buf, (uint32_t)(12 + n * 12));
}

int journal_set(struct journal *j, uint64_t id, const struct journal_entry *e, size_t n)
{
        if (!j || n == 0)
                return 0;
        for (size_t done = 0; done < n;) {
                size_t k = MIN(n - done, (size_t)JOURNAL_SET_MAX);
                int r = write_set(j->fd, id, e + done, k);
                if (r < 0)
                        return log_error_errno(r, "journal %s: append failed", j->path);
                done += k;
                j->records++;
        }
        return 0;
}

int journal_share(struct journal *j, uint64_t dst, uint64_t src)
{
        uint8_t p[16];

        wire_put_u64(p, dst);
        wire_put_u64(p + 8, src);
        return append_small(j, J_SHARE, p, sizeof(p));
}

int journal_resize(struct journal *j, uint64_t id, uint64_t size)
{
        uint8_t p[16];

        wire_put_u64(p, id);
        wire_put_u64(p + 8, size);
        return append_small(j, J_RESIZE, p, sizeof(p));
}

int journal_free(struct journal *j, uint64_t id)
{
        uint8_t p[8];

        wire_put_u64(p, id);
        return append_small(j, J_FREE, p, sizeof(p));
}

/* Write the whole state of T to FD: header, then each region and its map. */
static int journal_dump(int fd, const struct region_table *t, uint64_t pool_size)
{
        uint8_t hdr[JOURNAL_REC_HDR + 28], *p = hdr + JOURNAL_REC_HDR;
        _cleanup_free_ struct journal_entry *e = NULL;
        int r;

        wire_put_u32(p, JOURNAL_VERSION);
        wire_put_u64(p + 4, t->chunk_size);
        wire_put_u64(p + 12, pool_size);
        wire_put_u64(p + 20, t->next_id);
        r = journal_write(fd, J_HEADER, hdr, 28);
        if (r < 0)
                return r;
        e = malloc(JOURNAL_SET_MAX * sizeof(*e));
        if (!e)
                return -ENOMEM;
        for (struct region *reg = region_next(t, NULL); reg; reg = region_next(t, reg)) {
                size_t n = 0;
                r = write_create(fd, reg);
                for (uint64_t i = 0; r >= 0 && i < reg->map.n; i++) {
                        if (reg->map.c[i] == CHUNK_NONE)
                                continue;
                        e[n++] = (struct journal_entry){ .idx = i, .chunk = reg->map.c[i] };
                        if (n == JOURNAL_SET_MAX) {
                                r = write_set(fd, reg->id, e, n);
                                n = 0;
                        }
                }
                if (r >= 0 && n > 0)
                        r = write_set(fd, reg->id, e, n);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int fsync_dir_of(const char *path)
{
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int dfd = -1;

        if (!copy)
                return -ENOMEM;
        dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return negative_errno();
        return 0;
}

int journal_compact(struct journal *j, const struct region_table *t)
{
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        if (asprintf(&tmp, "%s.tmp", j->path) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return log_error_errno(negative_errno(), "journal: create %s", tmp);
        r = journal_dump(fd, t, j->pool_size);
        if (r >= 0 && fsync(fd) < 0)
                r = negative_errno();
        if (r >= 0 && rename(tmp, j->path) < 0)
                r = negative_errno();
        if (r < 0) {
                unlink(tmp);
                return log_error_errno(r, "journal: compact %s", j->path);
        }
        (void)fsync_dir_of(j->path);
        safe_close(j->fd);
        j->fd = open(j->path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (j->fd < 0)
                return log_error_errno(negative_errno(), "journal: reopen %s", j->path);
        j->records = 0;
        return 0;
}

void journal_close(struct journal *j)
{
        if (!j)
                return;
        safe_close(j->fd);
        free(j->path);
        free(j);
}

struct replay {
        struct region_table *t;
        uint64_t pool_size;
};

static int replay_set(struct replay *rp, const uint8_t *p, uint32_t len)
{
        struct region *r = region_find(rp->t, len >= 12 ? wire_get_u64(p) : 0);
        uint32_t n = len >= 12 ? wire_get_u32(p + 8) : 0;

        if (!r || (uint64_t)n * 12 + 12 != len)
                return -EBADMSG;
        for (uint32_t i = 0; i < n; i++) {
                uint64_t idx = wire_get_u64(p + 12 + (size_t)i * 12);
                chunk_id c = wire_get_u32(p + 20 + (size_t)i * 12);
                if (idx >= r->map.n || (c != CHUNK_NONE && c >= rp->t->pool->nchunks))
                        return -EBADMSG;
                chunk_map_set(rp->t->pool, &r->map, idx, c);
        }
        return 0;
}

static int replay_record(struct replay *rp, uint32_t type, const uint8_t *p, uint32_t len,
                         struct xmem_error *err)
{
        struct region_table *t = rp->t;
        struct region *r, *src;
        uint64_t size;

        switch (type) {
        case J_HEADER:
                if (len != 28 || wire_get_u32(p) != JOURNAL_VERSION)
                        return xmem_error_set(err, -EBADMSG, "unknown journal version");
                if (wire_get_u64(p + 4) != t->chunk_size)
                        return xmem_error_set(err, -EINVAL,
                                              "pool was made with chunk size %llu, not %llu",
                                              (unsigned long long)wire_get_u64(p + 4),
                                              (unsigned long long)t->chunk_size);
                if (wire_get_u64(p + 12) > rp->pool_size)
                        return xmem_error_set(err, -EINVAL, "pool was %llu bytes, cannot shrink",
                                              (unsigned long long)wire_get_u64(p + 12));
                t->next_id = MAX(t->next_id, wire_get_u64(p + 20));
                return 0;
        case J_CREATE:
                /* no region is larger than the pool (docs/appliance.md "Regions") */
                if (len != 44 || wire_get_u64(p) == 0 || wire_get_u64(p + 24) > rp->pool_size)
                        return -EBADMSG;
                return region_create(t, wire_get_u64(p), wire_get_u64(p + 24), p + 8,
                                     wire_get_u32(p + 40) != 0, wire_get_u64(p + 32), &r);
        case J_SET:
                return replay_set(rp, p, len);
        case J_SHARE:
                r = len == 16 ? region_find(t, wire_get_u64(p)) : NULL;
                src = len == 16 ? region_find(t, wire_get_u64(p + 8)) : NULL;
                if (!r || !src)
                        return -EBADMSG;
                r->size = src->size;
                return chunk_map_share(t->pool, &r->map, &src->map);
        case J_RESIZE:
                r = len == 16 ? region_find(t, wire_get_u64(p)) : NULL;
                if (!r || r->snapshot || wire_get_u64(p + 8) > rp->pool_size)
                        return -EBADMSG;
                return region_resize(t, r, wire_get_u64(p + 8), &size);
        case J_FREE:
                r = len == 8 ? region_find(t, wire_get_u64(p)) : NULL;
                if (!r)
                        return -EBADMSG;
                region_free(t, r);
                return 0;
        default:
                return -EBADMSG;
        }
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        int r;

        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        r = read_full(fd, buf, (size_t)st.st_size);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_len = (size_t)st.st_size;
        return 0;
}

/* Replay BUF; returns records applied. A torn or corrupt tail ends the replay;
 * a record that checks out but makes no sense is an error. */
static int replay_buf(struct replay *rp, const uint8_t *buf, size_t len, const char *path,
                      struct xmem_error *err)
{
        size_t off = 0;
        int n = 0, r;

        while (off + JOURNAL_REC_HDR <= len) {
                const uint8_t *h = buf + off;
                uint32_t type = wire_get_u32(h + 4), plen = wire_get_u32(h + 8);
                if (wire_get_u32(h) != JOURNAL_MAGIC || plen > len - off - JOURNAL_REC_HDR ||
                    crc32c(crc32c(0, h + 4, 8), h + JOURNAL_REC_HDR, plen) != wire_get_u32(h + 12))
                        break;
                if ((n == 0) != (type == J_HEADER))
                        return xmem_error_set(err, -EBADMSG, "journal %s: record %d out of place",
                                              path, n);
                r = replay_record(rp, type, h + JOURNAL_REC_HDR, plen, err);
                if (r < 0)
                        return err->code ? err->code
                                         : xmem_error_set(err, r, "journal %s: bad record %d (type %u)",
                                                          path, n, type);
                off += JOURNAL_REC_HDR + plen;
                n++;
        }
        if (n == 0 && len > 0)
                return xmem_error_set(err, -EBADMSG, "journal %s: no valid header", path);
        if (off < len)
                log_notice("journal %s: ignored %zu bytes of torn tail after record %d", path,
                           len - off, n);
        return n;
}

int journal_replay(struct region_table *t, uint64_t pool_size, const uint8_t *buf, size_t len,
                   const char *name, struct xmem_error *err)
{
        struct replay rp = { .t = t, .pool_size = pool_size };
        int n;

        t->pool->rebuilding = true;
        n = replay_buf(&rp, buf, len, name, err);
        if (n < 0) {
                t->pool->rebuilding = false;
                return n;
        }
        chunk_pool_rebuild_free(t->pool);
        return n;
}

int journal_open(const char *pool_path, struct region_table *t, uint64_t pool_size,
                 struct journal **ret, struct xmem_error *err)
{
        _cleanup_free_ uint8_t *buf = NULL;
        struct journal *j;
        size_t len = 0;
        int r, n = 0;

        j = calloc(1, sizeof(*j));
        if (!j || asprintf(&j->path, "%s.meta", pool_path) < 0) {
                free(j);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        j->fd = -1;
        j->pool_size = pool_size;
        j->chunk_size = t->chunk_size;
        r = read_file(j->path, &buf, &len);
        if (r < 0 && r != -ENOENT) {
                xmem_error_set(err, r, "journal %s: %s", j->path, strerror(-r));
                goto fail;
        }
        n = journal_replay(t, pool_size, r >= 0 ? buf : NULL, r >= 0 ? len : 0, j->path, err);
        if (n < 0) {
                r = n;
                goto fail;
        }
        log_info("journal %s: %d records, %llu regions, next id %llu", j->path, n,
                 (unsigned long long)t->count, (unsigned long long)t->next_id);
        r = journal_compact(j, t);
        if (r < 0) {
                xmem_error_set(err, r, "journal %s: cannot write: %s", j->path, strerror(-r));
                goto fail;
        }
        *ret = j;
        return 0;
fail:
        journal_close(j);
        return r;
}
