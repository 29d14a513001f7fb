/* state.c: the OCI state JSON a runtime writes to a hook's stdin
 * (runtime-spec "State": ociVersion, id, status, pid, bundle, annotations). */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "oci.h"

struct state_fields {
        const char *oci_version;
        const char *id;
        const char *status;
        uint64_t pid;
        const char *bundle;
        json_object *annotations;
};

#define F(name, type, req, member) { name, JSON_FIELD_##type, req, offsetof(struct state_fields, member) }
static const struct json_field state_fields[] = {
        F("ociVersion", STRING, true, oci_version),
        F("id", STRING, true, id),
        F("status", STRING, true, status),
        F("pid", U64, false, pid),
        F("bundle", STRING, true, bundle),
        F("annotations", OBJECT, false, annotations),
        {},
};
#undef F

static bool printable(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

int oci_check_annotations(json_object *an, const char *where, struct xmem_error *err)
{
        if (!an)
                return 0;
        if (!json_object_is_type(an, json_type_object))
                return xmem_error_set(err, -EINVAL, "%s: must be an object", where);
        json_object_object_foreach(an, key, val)
        {
                (void)key;
                if (!json_object_is_type(val, json_type_string))
                        return xmem_error_set(err, -EINVAL, "%s: every value must be a string",
                                              where);
        }
        return 0;
}

int oci_state_parse(const char *text, size_t len, struct oci_state **ret, struct xmem_error *err)
{
        _cleanup_json_ json_object *doc = NULL;
        struct state_fields f = {};
        struct oci_state *s;
        int r;

        if (len > OCI_STATE_MAX)
                return xmem_error_set(err, -EMSGSIZE, "state: larger than %u bytes", OCI_STATE_MAX);
        r = json_parse(text, len, &doc, err);
        if (r < 0)
                return xmem_error_prefix(err, "state");
        r = json_dispatch_at(doc, state_fields, &f, sizeof(f), true, "state", err);
        if (r < 0)
                return r;
        if (f.id[0] == 0 || strlen(f.id) > 1024 || strchr(f.id, '/') || !printable(f.id))
                return xmem_error_set(err, -EINVAL, "state.id: must be a non-empty name");
        if (f.pid > INT_MAX)
                return xmem_error_set(err, -ERANGE, "state.pid: out of range");
        if (f.bundle[0] != '/' || strlen(f.bundle) >= PATH_MAX || !printable(f.bundle))
                return xmem_error_set(err, -EINVAL, "state.bundle: must be an absolute path");
        r = oci_check_annotations(f.annotations, "state.annotations", err);
        if (r < 0)
                return r;
        s = calloc(1, sizeof(*s));
        if (!s)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        *s = (struct oci_state){
                .oci_version = f.oci_version,
                .id = f.id,
                .status = f.status,
                .pid = (pid_t)f.pid,
                .bundle = f.bundle,
                .annotations = f.annotations,
                .doc = TAKE_PTR(doc),
        };
        *ret = s;
        return 0;
}

void oci_state_free(struct oci_state *s)
{
        if (!s)
                return;
        json_object_put(s->doc);
        free(s);
}
