/* jscan.h: a tiny strict JSON scanner for memd's small replies inside the
 * shim, which may not use json-c or malloc: validates a whole document and
 * finds one member (top level or one object down). Pure. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum jscan_type {
        JSCAN_STRING = 1,
        JSCAN_NUMBER,
        JSCAN_BOOL,
        JSCAN_NULL,
        JSCAN_OBJECT,
        JSCAN_ARRAY,
};

struct jscan_val {
        enum jscan_type type;
        const char *start; /* the raw token (a string without its quotes) */
        size_t len;
};

#define JSCAN_MAX_DEPTH 16

/* 0 when S[0..LEN) is one JSON object (surrounding white space allowed),
 * -EBADMSG otherwise. */
int jscan_validate(const char *s, size_t len);

/* Find member KEY of the top-level object (PARENT NULL) or of the object
 * member PARENT of the top-level object. 0 and *RET filled; -ENOENT when
 * absent; -EBADMSG when the document is not valid JSON. */
int jscan_find(const char *s, size_t len, const char *parent, const char *key,
               struct jscan_val *ret);

/* Typed getters on top of jscan_find: -ENOENT absent, -EINVAL wrong type or
 * out of range, -EBADMSG invalid document. Strings are copied decoded into
 * BUF (NUL-terminated; -ENAMETOOLONG if they do not fit; \u escapes only
 * below 0x80). */
int jscan_get_u64(const char *s, size_t len, const char *parent, const char *key,
                  uint64_t *ret);
int jscan_get_bool(const char *s, size_t len, const char *parent, const char *key, bool *ret);
int jscan_get_string(const char *s, size_t len, const char *parent, const char *key, char *buf,
                     size_t buf_len);
