/* json-util.c: strict JSON parsing and field dispatch over json-c. */
#include <errno.h>
#include <string.h>

#include "json-util.h"
#include "parse.h"

#define JSON_MAX_DEPTH 16

int json_parse(const char *s, size_t len, json_object **ret, struct xmem_error *err)
{
        json_tokener *tok;
        json_object *o;
        enum json_tokener_error jerr;
        size_t used;

        if (len > INT32_MAX)
                return xmem_error_set(err, -EMSGSIZE, "JSON message too large");
        tok = json_tokener_new_ex(JSON_MAX_DEPTH);
        if (!tok)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        o = json_tokener_parse_ex(tok, s, (int)len);
        jerr = json_tokener_get_error(tok);
        used = tok->char_offset;
        json_tokener_free(tok);
        if (!o || jerr != json_tokener_success) {
                json_object_put(o);
                return xmem_error_set(err, -EBADMSG, "invalid JSON: %s",
                                      jerr == json_tokener_continue
                                          ? "unexpected end"
                                          : json_tokener_error_desc(jerr));
        }
        while (used < len &&
               (s[used] == ' ' || s[used] == '\n' || s[used] == '\t' || s[used] == '\r'))
                used++;
        if (used < len && !(s[used] == 0 && used + 1 == len)) {
                json_object_put(o);
                return xmem_error_set(err, -EBADMSG, "invalid JSON: trailing data at byte %zu",
                                      used);
        }
        *ret = o;
        return 0;
}

static int dispatch_one(json_object *v, const struct json_field *f, const char *where, char *out,
                        struct xmem_error *err)
{
        const char *dot = where ? "." : "";

        where = where ?: "";
        switch (f->type) {
        case JSON_FIELD_STRING:
                if (!json_object_is_type(v, json_type_string))
                        return xmem_error_set(err, -EINVAL, "%s%s%s: must be a string", where, dot,
                                              f->name);
                *(const char **)(out + f->offset) = json_object_get_string(v);
                return 0;
        case JSON_FIELD_BOOL:
                if (!json_object_is_type(v, json_type_boolean))
                        return xmem_error_set(err, -EINVAL, "%s%s%s: must be true or false", where,
                                              dot, f->name);
                *(bool *)(out + f->offset) = json_object_get_boolean(v);
                return 0;
        case JSON_FIELD_OBJECT:
                if (!json_object_is_type(v, json_type_object))
                        return xmem_error_set(err, -EINVAL, "%s%s%s: must be an object", where, dot,
                                              f->name);
                *(json_object **)(out + f->offset) = v;
                return 0;
        case JSON_FIELD_ARRAY:
                if (!json_object_is_type(v, json_type_array))
                        return xmem_error_set(err, -EINVAL, "%s%s%s: must be an array", where, dot,
                                              f->name);
                *(json_object **)(out + f->offset) = v;
                return 0;
        case JSON_FIELD_SIZE:
                if (json_object_is_type(v, json_type_string)) {
                        uint64_t sz;
                        if (parse_size(json_object_get_string(v), &sz) < 0)
                                return xmem_error_set(err, -EINVAL,
                                                      "%s%s%s: must be a size like 64M, 8G", where,
                                                      dot, f->name);
                        *(uint64_t *)(out + f->offset) = sz;
                        return 0;
                }
                __attribute__((fallthrough)); /* integers are bytes */
        case JSON_FIELD_U64: {
                int64_t i;
                if (!json_object_is_type(v, json_type_int))
                        return xmem_error_set(err, -EINVAL, "%s%s%s: must be an integer", where,
                                              dot, f->name);
                errno = 0;
                i = json_object_get_int64(v);
                if (i < 0 || errno == ERANGE)
                        return xmem_error_set(err, -ERANGE, "%s%s%s: out of range", where, dot,
                                              f->name);
                *(uint64_t *)(out + f->offset) = (uint64_t)i;
                return 0;
        }
        }
        return xmem_error_set(err, -EINVAL, "field '%s': unknown type", f->name);
}

int json_dispatch(json_object *obj, const struct json_field *fields, void *out, size_t out_size,
                  bool allow_unknown, struct xmem_error *err)
{
        return json_dispatch_at(obj, fields, out, out_size, allow_unknown, NULL, err);
}

int json_dispatch_at(json_object *obj, const struct json_field *fields, void *out, size_t out_size,
                     bool allow_unknown, const char *where, struct xmem_error *err)
{
        const char *dot = where ? "." : "";
        _cleanup_free_ char *tmp = NULL;
        int r;

        if (!json_object_is_type(obj, json_type_object))
                return xmem_error_set(err, -EINVAL, "%s%sexpected a JSON object", where ?: "",
                                      where ? ": " : "");
        if (!allow_unknown) {
                json_object_object_foreach(obj, key, val)
                {
                        bool known = false;
                        (void)val;
                        for (const struct json_field *f = fields; f->name; f++)
                                if (strcmp(f->name, key) == 0)
                                        known = true;
                        if (!known)
                                return xmem_error_set(err, -EINVAL, "%s%s%s: unknown field",
                                                      where ?: "", dot, key);
                }
        }
        /* work on a copy so OUT is untouched on failure */
        tmp = malloc(out_size);
        if (!tmp)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        memcpy(tmp, out, out_size);
        for (const struct json_field *f = fields; f->name; f++) {
                json_object *v;
                if (!json_object_object_get_ex(obj, f->name, &v) || !v) {
                        if (f->required)
                                return xmem_error_set(err, -EINVAL, "%s%s%s: missing", where ?: "",
                                                      dot, f->name);
                        continue;
                }
                r = dispatch_one(v, f, where, tmp, err);
                if (r < 0)
                        return r;
        }
        memcpy(out, tmp, out_size);
        return 0;
}
