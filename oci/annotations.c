/* annotations.c: strict validation of the io.xmem.* annotations with the
 * defaults of docs/annotations.md; each refusal is one line naming the key. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "annotations.h"
#include "parse.h"
#include "uri.h"

#define A_ENABLE "io.xmem.enable"
#define A_LOCAL "io.xmem.local-limit"
#define A_EXTERNAL "io.xmem.external"
#define A_POLICY "io.xmem.policy"
#define A_APPLIANCE "io.xmem.appliance"
#define A_FILE_DIR "io.xmem.file-dir"
#define A_RESTORE "io.xmem.restore"
#define A_REQUIRED "io.xmem.required"
#define MAX_RATIO 1000

static const char *const known_keys[] = {
        A_ENABLE, A_LOCAL, A_EXTERNAL, A_POLICY, A_APPLIANCE, A_FILE_DIR, A_RESTORE, A_REQUIRED,
};

/* VALUE as a short, printable, one-line quotation for error messages. */
static const char *quote(const char *value, char *buf, size_t len)
{
        size_t n = 0;

        for (const char *c = value; *c && n + 5 < len; c++, n++)
                buf[n] = (*c >= 0x20 && *c < 0x7f && *c != '"') ? *c : '?';
        if (n + 5 >= len && value[n])
                n -= 3, memcpy(buf + n, "...", 3), n += 3;
        buf[n] = 0;
        return buf;
}

const char *xmem_annotation_get(json_object *annotations, const char *key)
{
        json_object *v;

        if (!annotations || !json_object_is_type(annotations, json_type_object) ||
            !json_object_object_get_ex(annotations, key, &v) ||
            !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static int check_keys(json_object *annotations, bool *ret_any, struct xmem_error *err)
{
        char q[64];
        bool any = false;

        json_object_object_foreach(annotations, key, val)
        {
                bool known = false;

                if (strncmp(key, XMEM_ANNOTATION_PREFIX, strlen(XMEM_ANNOTATION_PREFIX)) != 0)
                        continue;
                any = true;
                for (size_t i = 0; i < ELEMENTSOF(known_keys); i++)
                        known = known || strcmp(key, known_keys[i]) == 0;
                if (!known)
                        return xmem_error_set(err, -EINVAL,
                                              "%s: unknown annotation (known: enable, "
                                              "local-limit, external, policy, appliance, "
                                              "file-dir, restore, required under io.xmem.)",
                                              quote(key, q, sizeof(q)));
                if (!json_object_is_type(val, json_type_string))
                        return xmem_error_set(err, -EINVAL, "%s: must be a string", key);
        }
        *ret_any = any;
        return 0;
}

static int parse_size_key(const char *key, const char *v, uint64_t min, uint64_t *ret,
                          struct xmem_error *err)
{
        char q[64], a[16], b[16];
        uint64_t sz;

        if (parse_size(v, &sz) < 0)
                return xmem_error_set(err, -EINVAL, "%s: \"%s\" is not a size (use e.g. 64M, 8G)",
                                      key, quote(v, q, sizeof(q)));
        if (sz < min || sz > XMEM_MAX_SIZE)
                return xmem_error_set(err, -ERANGE,
                                      "%s: \"%s\" is out of range (use a size from %s to %s)", key,
                                      quote(v, q, sizeof(q)), format_size(a, sizeof(a), min),
                                      format_size(b, sizeof(b), XMEM_MAX_SIZE));
        *ret = sz;
        return 0;
}

/* When disabled (io.xmem.enable=false) only the form of what is present is checked. */
static int parse_limits(json_object *an, uint64_t fallback, bool enabled,
                        struct xmem_annotations *x, struct xmem_error *err)
{
        const char *local = xmem_annotation_get(an, A_LOCAL);
        const char *external = xmem_annotation_get(an, A_EXTERNAL);
        char a[16], b[16];
        int r;

        if (local) {
                r = parse_size_key(A_LOCAL, local, XMEM_MIN_LOCAL_LIMIT, &x->local_limit, err);
                if (r < 0)
                        return r;
        } else if (fallback >= XMEM_MIN_LOCAL_LIMIT && fallback <= XMEM_MAX_SIZE)
                x->local_limit = fallback;
        else if (enabled)
                return xmem_error_set(err, -EINVAL,
                                      A_LOCAL ": missing (use e.g. 64M, 8G, or give the "
                                              "container a memory limit of at least 4M)");
        if (external) {
                r = parse_size_key(A_EXTERNAL, external, 1, &x->external, err);
                if (r < 0)
                        return r;
        } else if (x->local_limit)
                x->external = MIN(x->local_limit * XMEM_DEFAULT_EXTERNAL_FACTOR, XMEM_MAX_SIZE);
        if (enabled && x->external <= x->local_limit)
                return xmem_error_set(err, -EINVAL,
                                      A_EXTERNAL ": %s must be larger than " A_LOCAL
                                                 " %s (it holds the whole heap; local memory "
                                                 "caches it)",
                                      format_size(a, sizeof(a), x->external),
                                      format_size(b, sizeof(b), x->local_limit));
        return 0;
}

static int parse_policy(const char *v, struct xmem_annotations *x, struct xmem_error *err)
{
        uint64_t n;
        char q[64];

        if (!v)
                v = "local-first";
        if (strcmp(v, "local-first") != 0 && strcmp(v, "external-first") != 0 &&
            (strncmp(v, "ratio:", 6) != 0 || parse_u64(v + 6, &n) < 0 || n == 0 ||
             n > MAX_RATIO))
                return xmem_error_set(err, -EINVAL,
                                      A_POLICY ": \"%s\" is not a policy (use local-first, "
                                               "external-first or ratio:N with N 1..%d)",
                                      quote(v, q, sizeof(q)), MAX_RATIO);
        snprintf(x->policy, sizeof(x->policy), "%s", v);
        return 0;
}

static bool path_normal(const char *p)
{
        size_t n = strlen(p);

        if (p[0] != '/' || n >= 4096 || strstr(p, "//") || strstr(p, "/../") ||
            strstr(p, "/./") || (n >= 3 && strcmp(p + n - 3, "/..") == 0) ||
            (n >= 2 && strcmp(p + n - 2, "/.") == 0))
                return false;
        for (const char *c = p; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                        return false;
        return true;
}

static bool name_ok(const char *s)
{
        size_t n = strlen(s);

        return n >= 1 && n <= 128 && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static int parse_extras(json_object *an, struct xmem_annotations *x, struct xmem_error *err)
{
        const char *appliance = xmem_annotation_get(an, A_APPLIANCE);
        const char *file_dir = xmem_annotation_get(an, A_FILE_DIR);
        const char *restore = xmem_annotation_get(an, A_RESTORE);
        struct xmem_uri uri;
        char q[64];

        if (appliance) {
                if (xmem_uri_parse(appliance, &uri, NULL) < 0)
                        return xmem_error_set(err, -EINVAL,
                                              A_APPLIANCE ": \"%s\" is not an endpoint (use "
                                                          "tcp://HOST:PORT, unix:///PATH, "
                                                          "shm:///PATH or rdma://HOST:PORT)",
                                              quote(appliance, q, sizeof(q)));
                xmem_uri_format(&uri, x->appliance, sizeof(x->appliance));
        }
        if (file_dir) {
                if (!path_normal(file_dir))
                        return xmem_error_set(err, -EINVAL,
                                              A_FILE_DIR ": \"%s\" is not an absolute, normalised "
                                                         "path (use e.g. /var/lib/xmem/files)",
                                              quote(file_dir, q, sizeof(q)));
                snprintf(x->file_dir, sizeof(x->file_dir), "%s", file_dir);
        }
        if (restore) {
                if (!name_ok(restore))
                        return xmem_error_set(err, -EINVAL,
                                              A_RESTORE ": \"%s\" is not a snapshot name (use "
                                                        "[A-Za-z0-9_.-]{1,128})",
                                              quote(restore, q, sizeof(q)));
                snprintf(x->restore, sizeof(x->restore), "%s", restore);
        }
        return 0;
}

/* KEY's value "true" or "false" into *RET; absent: DEFAULT_VALUE. */
static int parse_bool(json_object *an, const char *key, bool default_value, bool *ret,
                      struct xmem_error *err)
{
        const char *v = xmem_annotation_get(an, key);
        char q[64];

        if (!v)
                *ret = default_value;
        else if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
                *ret = v[0] == 't';
        else
                return xmem_error_set(err, -EINVAL, "%s: \"%s\" is not a boolean (use true or false)",
                                      key, quote(v, q, sizeof(q)));
        return 0;
}

int xmem_annotations_parse(json_object *annotations, uint64_t fallback_local_limit,
                           struct xmem_annotations *ret, struct xmem_error *err)
{
        struct xmem_annotations x = { .required = true };
        int r;

        if (!annotations) {
                *ret = x;
                return 0;
        }
        if (!json_object_is_type(annotations, json_type_object))
                return xmem_error_set(err, -EINVAL, "annotations: must be an object of strings");
        r = check_keys(annotations, &x.any, err);
        if (r < 0)
                return r;
        if (!x.any) {
                *ret = x;
                return 0;
        }
        if (!xmem_annotation_get(annotations, A_ENABLE))
                return xmem_error_set(err, -EINVAL,
                                      A_ENABLE ": missing while other io.xmem.* annotations are "
                                               "set (use io.xmem.enable=true or false)");
        r = parse_bool(annotations, A_ENABLE, false, &x.enable, err);
        if (r == 0)
                r = parse_bool(annotations, A_REQUIRED, true, &x.required, err);
        if (r < 0)
                return r;
        r = parse_limits(annotations, fallback_local_limit, x.enable, &x, err);
        if (r < 0)
                return r;
        r = parse_policy(xmem_annotation_get(annotations, A_POLICY), &x, err);
        if (r < 0)
                return r;
        r = parse_extras(annotations, &x, err);
        if (r < 0)
                return r;
        *ret = x;
        return 0;
}
