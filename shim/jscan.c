/* jscan.c: strict recursive-descent JSON scanner (RFC 8259 grammar, depth
 * limited) that records where one wanted member lies. No allocation. */
#include <errno.h>
#include <string.h>

#include "jscan.h"

struct scan {
        const char *s, *end;
        const char *parent, *key; /* what to find */
        bool found;
        struct jscan_val val;
};

static int scan_value(struct scan *c, int depth, int level, bool in_parent);

static void skip_ws(struct scan *c)
{
        while (c->s < c->end &&
               (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
                c->s++;
}

static bool is_hex(char ch)
{
        return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* At the opening quote; leaves C after the closing one. *RET: the raw content. */
static int scan_string(struct scan *c, const char **ret_start, size_t *ret_len)
{
        const char *start;

        if (c->s >= c->end || *c->s != '"')
                return -EBADMSG;
        start = ++c->s;
        while (c->s < c->end && *c->s != '"') {
                unsigned char ch = (unsigned char)*c->s;
                if (ch < 0x20)
                        return -EBADMSG;
                if (ch == '\\') {
                        if (++c->s >= c->end)
                                return -EBADMSG;
                        if (*c->s == 'u') {
                                if (c->end - c->s < 5)
                                        return -EBADMSG;
                                for (int i = 1; i <= 4; i++)
                                        if (!is_hex(c->s[i]))
                                                return -EBADMSG;
                                c->s += 4;
                        } else if (!strchr("\"\\/bfnrt", *c->s))
                                return -EBADMSG;
                }
                c->s++;
        }
        if (c->s >= c->end)
                return -EBADMSG;
        *ret_start = start;
        *ret_len = (size_t)(c->s - start);
        c->s++;
        return 0;
}

static int scan_number(struct scan *c)
{
        const char *p = c->s;

        if (p < c->end && *p == '-')
                p++;
        if (p >= c->end)
                return -EBADMSG;
        if (*p == '0')
                p++;
        else if (*p >= '1' && *p <= '9')
                while (p < c->end && *p >= '0' && *p <= '9')
                        p++;
        else
                return -EBADMSG;
        if (p < c->end && *p == '.') {
                const char *d = ++p;
                while (p < c->end && *p >= '0' && *p <= '9')
                        p++;
                if (p == d)
                        return -EBADMSG;
        }
        if (p < c->end && (*p == 'e' || *p == 'E')) {
                p++;
                if (p < c->end && (*p == '+' || *p == '-'))
                        p++;
                const char *d = p;
                while (p < c->end && *p >= '0' && *p <= '9')
                        p++;
                if (p == d)
                        return -EBADMSG;
        }
        c->s = p;
        return 0;
}

static int scan_literal(struct scan *c, const char *word)
{
        size_t n = strlen(word);

        if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n) != 0)
                return -EBADMSG;
        c->s += n;
        return 0;
}

static bool key_is(const char *k, size_t klen, const char *want)
{
        return want && strlen(want) == klen && memcmp(k, want, klen) == 0;
}

/* LEVEL: 0 top-level object, 1 inside PARENT. IN_PARENT: this object is the
 * one whose members are searched for KEY. */
static int scan_object(struct scan *c, int depth, int level, bool search_here)
{
        c->s++; /* '{' */
        skip_ws(c);
        if (c->s < c->end && *c->s == '}') {
                c->s++;
                return 0;
        }
        for (;;) {
                const char *k;
                size_t klen;
                int r;

                skip_ws(c);
                r = scan_string(c, &k, &klen);
                if (r < 0)
                        return r;
                skip_ws(c);
                if (c->s >= c->end || *c->s != ':')
                        return -EBADMSG;
                c->s++;
                skip_ws(c);

                bool want_value = search_here && key_is(k, klen, c->key);
                bool descend = level == 0 && c->parent && key_is(k, klen, c->parent);
                const char *vstart = c->s;

                r = scan_value(c, depth + 1, level + 1, descend);
                if (r < 0)
                        return r;
                if (want_value) {
                        /* a duplicate key is refused: which one would be meant? */
                        if (c->found)
                                return -EBADMSG;
                        c->found = true;
                        c->val.start = vstart;
                        c->val.len = (size_t)(c->s - vstart);
                }
                skip_ws(c);
                if (c->s >= c->end)
                        return -EBADMSG;
                if (*c->s == '}') {
                        c->s++;
                        return 0;
                }
                if (*c->s != ',')
                        return -EBADMSG;
                c->s++;
        }
}

static int scan_array(struct scan *c, int depth, int level)
{
        c->s++; /* '[' */
        skip_ws(c);
        if (c->s < c->end && *c->s == ']') {
                c->s++;
                return 0;
        }
        for (;;) {
                int r = scan_value(c, depth + 1, level + 1, false);
                if (r < 0)
                        return r;
                skip_ws(c);
                if (c->s >= c->end)
                        return -EBADMSG;
                if (*c->s == ']') {
                        c->s++;
                        return 0;
                }
                if (*c->s != ',')
                        return -EBADMSG;
                c->s++;
                skip_ws(c);
        }
}

static int scan_value(struct scan *c, int depth, int level, bool search_here)
{
        const char *k;
        size_t klen;

        if (depth > JSCAN_MAX_DEPTH)
                return -EBADMSG;
        skip_ws(c);
        if (c->s >= c->end)
                return -EBADMSG;
        switch (*c->s) {
        case '{':
                return scan_object(c, depth, level, search_here);
        case '[':
                return scan_array(c, depth, level);
        case '"':
                return scan_string(c, &k, &klen);
        case 't':
                return scan_literal(c, "true");
        case 'f':
                return scan_literal(c, "false");
        case 'n':
                return scan_literal(c, "null");
        default:
                return scan_number(c);
        }
}

static int scan_document(struct scan *c)
{
        int r;

        skip_ws(c);
        if (c->s >= c->end || *c->s != '{')
                return -EBADMSG;
        r = scan_object(c, 0, 0, c->parent == NULL);
        if (r < 0)
                return r;
        skip_ws(c);
        return c->s == c->end ? 0 : -EBADMSG;
}

int jscan_validate(const char *s, size_t len)
{
        struct scan c = { .s = s, .end = s + len };
        return scan_document(&c);
}

static enum jscan_type type_of(char first)
{
        switch (first) {
        case '{':
                return JSCAN_OBJECT;
        case '[':
                return JSCAN_ARRAY;
        case '"':
                return JSCAN_STRING;
        case 't':
        case 'f':
                return JSCAN_BOOL;
        case 'n':
                return JSCAN_NULL;
        default:
                return JSCAN_NUMBER;
        }
}

int jscan_find(const char *s, size_t len, const char *parent, const char *key,
               struct jscan_val *ret)
{
        struct scan c = { .s = s, .end = s + len, .parent = parent, .key = key };
        int r = scan_document(&c);

        if (r < 0)
                return r;
        if (!c.found)
                return -ENOENT;
        c.val.type = type_of(*c.val.start);
        if (c.val.type == JSCAN_STRING) {
                c.val.start++;
                c.val.len -= 2;
        }
        *ret = c.val;
        return 0;
}

int jscan_get_u64(const char *s, size_t len, const char *parent, const char *key,
                  uint64_t *ret)
{
        struct jscan_val v;
        uint64_t n = 0;
        int r = jscan_find(s, len, parent, key, &v);

        if (r < 0)
                return r;
        if (v.type != JSCAN_NUMBER || v.len == 0)
                return -EINVAL;
        for (size_t i = 0; i < v.len; i++) {
                unsigned d = (unsigned)(v.start[i] - '0');
                if (d > 9 || n > (UINT64_MAX - d) / 10)
                        return -EINVAL; /* negative, fraction, exponent or too big */
                n = n * 10 + d;
        }
        *ret = n;
        return 0;
}

int jscan_get_bool(const char *s, size_t len, const char *parent, const char *key, bool *ret)
{
        struct jscan_val v;
        int r = jscan_find(s, len, parent, key, &v);

        if (r < 0)
                return r;
        if (v.type != JSCAN_BOOL)
                return -EINVAL;
        *ret = v.start[0] == 't';
        return 0;
}

static int hex_value(char ch)
{
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        return ch - 'A' + 10;
}

int jscan_get_string(const char *s, size_t len, const char *parent, const char *key, char *buf,
                     size_t buf_len)
{
        struct jscan_val v;
        size_t o = 0;
        int r = jscan_find(s, len, parent, key, &v);

        if (r < 0)
                return r;
        if (v.type != JSCAN_STRING)
                return -EINVAL;
        for (size_t i = 0; i < v.len; i++) {
                char ch = v.start[i];
                if (ch == '\\') {
                        ch = v.start[++i];
                        if (ch == 'u') {
                                int cp = 0;
                                for (int j = 1; j <= 4; j++)
                                        cp = cp * 16 + hex_value(v.start[i + (size_t)j]);
                                if (cp == 0 || cp >= 0x80)
                                        return -EINVAL;
                                ch = (char)cp;
                                i += 4;
                        } else {
                                const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
                                ch = to[strchr(from, ch) - from];
                        }
                }
                if (o + 1 >= buf_len)
                        return -ENAMETOOLONG;
                buf[o++] = ch;
        }
        if (buf_len == 0)
                return -ENAMETOOLONG;
        buf[o] = '\0';
        return 0;
}
