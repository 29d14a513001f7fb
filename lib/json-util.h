/* json-util.h: json-c with strict parsing and a typed field dispatch table
 * (systemd's JsonDispatch idea), so every JSON input is checked field by field
 * and refused with one line naming the field. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "error.h"

static inline void json_object_putp(json_object **o)
{
        if (*o)
                json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

/* Parse exactly one JSON value from S (LEN bytes, no trailing garbage, at most
 * MAX_DEPTH nesting). */
int json_parse(const char *s, size_t len, json_object **ret, struct xmem_error *err);

enum json_field_type {
        JSON_FIELD_STRING,  /* const char * pointing into the object (valid while it lives) */
        JSON_FIELD_U64,     /* uint64_t from a non-negative integer */
        JSON_FIELD_SIZE,    /* uint64_t from an integer or a size string ("64M") */
        JSON_FIELD_BOOL,    /* bool */
        JSON_FIELD_OBJECT,  /* json_object * (borrowed) */
        JSON_FIELD_ARRAY,   /* json_object * of an array (borrowed) */
};

struct json_field {
        const char *name;
        enum json_field_type type;
        bool required;
        size_t offset; /* where in the output struct, offsetof() */
};

/* Fill OUT from OBJ by FIELDS (terminated by a NULL name). Unknown members are
 * refused unless ALLOW_UNKNOWN. Nothing in OUT is touched on failure. */
int json_dispatch(json_object *obj, const struct json_field *fields, void *out,
                  size_t out_size, bool allow_unknown, struct xmem_error *err);
/* The same, naming fields as WHERE.FIELD in messages ("params.local_limit: must be
 * a size like 64M, 8G"); WHERE may be NULL. */
int json_dispatch_at(json_object *obj, const struct json_field *fields, void *out,
                     size_t out_size, bool allow_unknown, const char *where,
                     struct xmem_error *err);
