/* config.c: a bundle's config.json: strict type checks of the fields xmem
 * reads, the edits xmem-runtime makes, and an atomic write back. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fdio.h"
#include "json-util.h"
#include "oci.h"

static json_object *member(json_object *o, const char *key)
{
        json_object *v = NULL;

        if (!o || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return v;
}

static int want(json_object *v, json_type t, const char *where, const char *what,
                struct xmem_error *err)
{
        if (v && !json_object_is_type(v, t))
                return xmem_error_set(err, -EINVAL, "config.json: %s: must be %s", where, what);
        return 0;
}

static int check_string_array(json_object *a, const char *where, struct xmem_error *err)
{
        int r = want(a, json_type_array, where, "an array of strings", err);

        for (size_t i = 0; r == 0 && a && i < json_object_array_length(a); i++)
                r = want(json_object_array_get_idx(a, i), json_type_string, where,
                         "an array of strings", err);
        return r;
}

/* Each element of A an object with string member KEY. */
static int check_object_array(json_object *a, const char *key, const char *where,
                              struct xmem_error *err)
{
        int r = want(a, json_type_array, where, "an array", err);

        for (size_t i = 0; r == 0 && a && i < json_object_array_length(a); i++) {
                json_object *e = json_object_array_get_idx(a, i);
                if (!json_object_is_type(e, json_type_object) ||
                    !json_object_is_type(member(e, key), json_type_string))
                        return xmem_error_set(err, -EINVAL,
                                              "config.json: %s[%zu]: must be an object with a "
                                              "string \"%s\"",
                                              where, i, key);
        }
        return r;
}

static int check_hooks(json_object *hooks, struct xmem_error *err)
{
        char where[96];
        int r = want(hooks, json_type_object, "hooks", "an object", err);

        if (r < 0 || !hooks)
                return r;
        json_object_object_foreach(hooks, stage, list)
        {
                snprintf(where, sizeof(where), "hooks.%.64s", stage);
                for (char *w = where; *w; w++) /* keep the message one printable line */
                        if ((unsigned char)*w < 0x20 || (unsigned char)*w >= 0x7f)
                                *w = '?';
                r = check_object_array(list, "path", where, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_linux(json_object *doc, struct oci_config *c, struct xmem_error *err)
{
        json_object *lx = member(doc, "linux"), *res, *mem, *lim, *cg;
        int64_t v;
        int r;

        r = want(lx, json_type_object, "linux", "an object", err);
        if (r < 0 || !lx)
                return r;
        cg = member(lx, "cgroupsPath");
        r = want(cg, json_type_string, "linux.cgroupsPath", "a string", err);
        if (r < 0)
                return r;
        c->cgroups_path = cg ? json_object_get_string(cg) : NULL;
        res = member(lx, "resources");
        mem = member(res, "memory");
        lim = member(mem, "limit");
        r = want(res, json_type_object, "linux.resources", "an object", err);
        if (r == 0)
                r = want(mem, json_type_object, "linux.resources.memory", "an object", err);
        if (r == 0)
                r = want(lim, json_type_int, "linux.resources.memory.limit", "an integer", err);
        if (r < 0 || !lim)
                return r;
        v = json_object_get_int64(lim);
        c->memory_limit = v > 0 ? (uint64_t)v : 0;
        return 0;
}

static int parse_fields(json_object *doc, struct oci_config *c, struct xmem_error *err)
{
        json_object *root = member(doc, "root"), *path, *ro, *proc;
        int r;

        if (!json_object_is_type(doc, json_type_object))
                return xmem_error_set(err, -EINVAL, "config.json: must be a JSON object");
        path = member(root, "path");
        if (!json_object_is_type(root, json_type_object) ||
            !json_object_is_type(path, json_type_string) || !json_object_get_string(path)[0])
                return xmem_error_set(err, -EINVAL, "config.json: root.path: must be a string");
        ro = member(root, "readonly");
        r = want(ro, json_type_boolean, "root.readonly", "true or false", err);
        proc = member(doc, "process");
        if (r == 0)
                r = want(proc, json_type_object, "process", "an object", err);
        if (r == 0)
                r = check_string_array(member(proc, "env"), "process.env", err);
        if (r == 0)
                r = check_string_array(member(proc, "args"), "process.args", err);
        if (r == 0)
                r = check_object_array(member(doc, "mounts"), "destination", "mounts", err);
        if (r == 0)
                r = check_hooks(member(doc, "hooks"), err);
        if (r == 0)
                r = oci_check_annotations(member(doc, "annotations"), "config.json: annotations",
                                          err);
        if (r == 0)
                r = parse_linux(doc, c, err);
        if (r < 0)
                return r;
        c->root_path = json_object_get_string(path);
        c->root_readonly = ro && json_object_get_boolean(ro);
        c->env = member(proc, "env");
        c->args = member(proc, "args");
        c->mounts = member(doc, "mounts");
        c->hooks = member(doc, "hooks");
        c->annotations = member(doc, "annotations");
        return 0;
}

int oci_config_parse(const char *text, size_t len, struct oci_config **ret, struct xmem_error *err)
{
        _cleanup_json_ json_object *doc = NULL;
        struct oci_config c = {}, *p;
        int r;

        if (len > OCI_CONFIG_MAX)
                return xmem_error_set(err, -EMSGSIZE, "config.json: larger than %u bytes",
                                      OCI_CONFIG_MAX);
        r = json_parse(text, len, &doc, err);
        if (r < 0)
                return xmem_error_prefix(err, "config.json");
        r = parse_fields(doc, &c, err);
        if (r < 0)
                return r;
        p = malloc(sizeof(*p));
        if (!p)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        c.doc = TAKE_PTR(doc);
        *p = c;
        *ret = p;
        return 0;
}

int oci_config_load(const char *bundle, struct oci_config **ret, struct xmem_error *err)
{
        _cleanup_free_ char *path = NULL, *buf = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        int r;

        if (asprintf(&path, "%s/config.json", bundle) < 0)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "%s: %m", path);
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > OCI_CONFIG_MAX)
                return xmem_error_set(err, -EINVAL, "%s: not a regular file under 16M", path);
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        r = read_full(fd, buf, (size_t)st.st_size);
        if (r < 0)
                return xmem_error_set(err, r, "%s: read: %s", path, strerror(-r));
        return oci_config_parse(buf, (size_t)st.st_size, ret, err);
}

void oci_config_free(struct oci_config *c)
{
        if (!c)
                return;
        json_object_put(c->doc);
        free(c);
}

int oci_config_rootfs(const struct oci_config *c, const char *bundle, char **ret)
{
        char *p;

        if (c->root_path[0] == '/')
                p = strdup(c->root_path);
        else if (asprintf(&p, "%s/%s", bundle, c->root_path) < 0)
                p = NULL;
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

static size_t env_find(json_object *env, const char *name)
{
        size_t n = strlen(name);

        for (size_t i = 0; env && i < json_object_array_length(env); i++) {
                const char *e = json_object_get_string(json_object_array_get_idx(env, i));
                if (strncmp(e, name, n) == 0 && e[n] == '=')
                        return i;
        }
        return SIZE_MAX;
}

const char *oci_config_getenv(const struct oci_config *c, const char *name)
{
        size_t i = env_find(c->env, name);

        if (i == SIZE_MAX)
                return NULL;
        return json_object_get_string(json_object_array_get_idx(c->env, i)) + strlen(name) + 1;
}

int oci_config_setenv(struct oci_config *c, const char *name, const char *value)
{
        _cleanup_free_ char *kv = NULL;
        json_object *proc = member(c->doc, "process"), *s;
        size_t i;

        if (!proc)
                return -EINVAL;
        if (!c->env) {
                c->env = json_object_new_array();
                if (!c->env)
                        return -ENOMEM;
                json_object_object_add(proc, "env", c->env);
        }
        if (asprintf(&kv, "%s=%s", name, value) < 0)
                return -ENOMEM;
        s = json_object_new_string(kv);
        if (!s)
                return -ENOMEM;
        i = env_find(c->env, name);
        if (i == SIZE_MAX)
                return json_object_array_add(c->env, s) < 0 ? -ENOMEM : 0;
        return json_object_array_put_idx(c->env, i, s) < 0 ? -ENOMEM : 0;
}

bool oci_config_has_mount(const struct oci_config *c, const char *destination)
{
        for (size_t i = 0; c->mounts && i < json_object_array_length(c->mounts); i++) {
                json_object *d = member(json_object_array_get_idx(c->mounts, i), "destination");
                if (strcmp(json_object_get_string(d), destination) == 0)
                        return true;
        }
        return false;
}

static json_object *string_array(const char *const *v)
{
        json_object *a = json_object_new_array();

        for (; a && v && *v; v++)
                json_object_array_add(a, json_object_new_string(*v));
        return a;
}

int oci_config_add_bind(struct oci_config *c, const char *source, const char *destination,
                        bool readonly)
{
        const char *opts[] = { "rbind", readonly ? "ro" : "rw", "nosuid", "nodev", NULL };
        json_object *m;

        if (!c->mounts) {
                c->mounts = json_object_new_array();
                if (!c->mounts)
                        return -ENOMEM;
                json_object_object_add(c->doc, "mounts", c->mounts);
        }
        m = json_object_new_object();
        if (!m)
                return -ENOMEM;
        json_object_object_add(m, "destination", json_object_new_string(destination));
        json_object_object_add(m, "type", json_object_new_string("bind"));
        json_object_object_add(m, "source", json_object_new_string(source));
        json_object_object_add(m, "options", string_array(opts));
        return json_object_array_add(c->mounts, m) < 0 ? -ENOMEM : 0;
}

static bool hook_equal(json_object *h, const char *path, json_object *args)
{
        json_object *p = member(h, "path"), *a = member(h, "args");

        return p && strcmp(json_object_get_string(p), path) == 0 && a &&
               json_object_equal(a, args);
}

int oci_config_add_hook(struct oci_config *c, const char *stage, const char *path,
                        const char *const *args)
{
        _cleanup_json_ json_object *a = string_array(args);
        json_object *list, *h;

        if (!a)
                return -ENOMEM;
        if (!c->hooks) {
                c->hooks = json_object_new_object();
                if (!c->hooks)
                        return -ENOMEM;
                json_object_object_add(c->doc, "hooks", c->hooks);
        }
        list = member(c->hooks, stage);
        if (!list) {
                list = json_object_new_array();
                if (!list)
                        return -ENOMEM;
                json_object_object_add(c->hooks, stage, list);
        }
        for (size_t i = 0; i < json_object_array_length(list); i++)
                if (hook_equal(json_object_array_get_idx(list, i), path, a))
                        return 0;
        h = json_object_new_object();
        if (!h)
                return -ENOMEM;
        json_object_object_add(h, "path", json_object_new_string(path));
        json_object_object_add(h, "args", TAKE_PTR(a));
        return json_object_array_add(list, h) < 0 ? -ENOMEM : 0;
}

int oci_config_save(const struct oci_config *c, const char *bundle, struct xmem_error *err)
{
        _cleanup_free_ char *path = NULL, *tmp = NULL;
        _cleanup_close_ int fd = -1;
        const char *text;
        struct stat st;
        int r;

        if (asprintf(&path, "%s/config.json", bundle) < 0 ||
            asprintf(&tmp, "%s/.config.json.XXXXXX", bundle) < 0)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        text = json_object_to_json_string_ext(c->doc, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "%s: %m", tmp);
        if (stat(path, &st) == 0)
                (void)fchmod(fd, st.st_mode & 07777);
        r = write_full(fd, text, strlen(text));
        if (r == 0 && fsync(fd) < 0)
                r = negative_errno();
        if (r == 0 && rename(tmp, path) < 0)
                r = negative_errno();
        if (r < 0) {
                (void)unlink(tmp);
                return xmem_error_set(err, r, "write %s: %s", path, strerror(-r));
        }
        return 0;
}
