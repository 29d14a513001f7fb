/* hook.c: xmem-hook, the OCI hook. `createRuntime` validates the io.xmem.*
 * annotations, attaches the container in memd (id, memory cgroup, limits) and
 * exposes the shim and memd's socket in it (unless xmem-runtime already put
 * them in config.json), detaching again if that fails; `poststop` detaches.
 * The state JSON comes on stdin, the rest from the bundle's config.json. */
#include <errno.h>
#include <unistd.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annotations.h"
#include "cgroup.h"
#include "expose.h"
#include "fdio.h"
#include "image.h"
#include "json-util.h"
#include "memd-client.h"
#include "oci.h"
#include "paths.h"
#include "privilege.h"

#define PROG "xmem-hook"
/* the runtime waits on the hook: a stuck memd must not hang container creation */
#define HOOK_MEMD_TIMEOUT_S 10

/* What exposing the shim takes; the hook holds these permitted, effective
 * only around that step (docs/security.md). Everything else is dropped at
 * start, and the memd steps run with no effective capability. */
static const cap_value_t expose_caps[] = {
        CAP_SYS_ADMIN,    /* setns(CLONE_NEWNS) and the mounts */
        CAP_SYS_CHROOT,   /* setns(CLONE_NEWNS) */
        CAP_SYS_PTRACE,   /* open /proc/PID/ns/mnt of the runtime's init, which
                           * still holds capabilities the hook does not */
        CAP_DAC_OVERRIDE, /* directories and files in a rootfs owned by another uid */
};

struct hook_opts {
        const char *socket;
        const char *shim;
        const char *stage;
        /* --annotation io.xmem.KEY=VALUE: what a container that does not set
         * KEY itself gets (a CDI device's settings: xmemctl cdi generate) */
        json_object *defaults;
};

/* Add --annotation's KV to O->defaults: an io.xmem.* key and a value. */
static int add_default(struct hook_opts *o, const char *kv)
{
        const char *eq = strchr(kv, '=');
        _cleanup_free_ char *key = NULL;

        if (!eq || strncmp(kv, XMEM_ANNOTATION_PREFIX, strlen(XMEM_ANNOTATION_PREFIX)) != 0 ||
            eq == kv + strlen(XMEM_ANNOTATION_PREFIX)) {
                fprintf(stderr, PROG ": --annotation %s: must be io.xmem.KEY=VALUE\n", kv);
                return -EINVAL;
        }
        if (!o->defaults && !(o->defaults = json_object_new_object()))
                return -ENOMEM;
        key = strndup(kv, (size_t)(eq - kv));
        if (!key)
                return -ENOMEM;
        json_object_object_add(o->defaults, key, json_object_new_string(eq + 1));
        return 0;
}

/* The container's annotations over O->defaults (a new reference), or ANN
 * itself (a new reference; may be NULL) when there are no defaults. */
static json_object *with_defaults(const struct hook_opts *o, json_object *ann)
{
        json_object *merged;

        if (!o->defaults)
                return json_object_get(ann);
        merged = json_object_new_object();
        if (!merged)
                return NULL;
        json_object_object_foreach(o->defaults, k, v) json_object_object_add(merged, k,
                                                                            json_object_get(v));
        if (json_object_is_type(ann, json_type_object)) {
                json_object_object_foreach(ann, k2, v2) json_object_object_add(
                    merged, k2, json_object_get(v2));
        }
        return merged;
}

static int parse_argv(int argc, char **argv, struct hook_opts *o)
{
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },
                { "shim", required_argument, NULL, 'S' },
                { "annotation", required_argument, NULL, 'a' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 's':
                        o->socket = optarg;
                        break;
                case 'S':
                        o->shim = optarg;
                        break;
                case 'a':
                        if (add_default(o, optarg) < 0)
                                return -EINVAL;
                        break;
                case 'h':
                        printf(PROG " [--socket PATH] [--shim PATH] [--annotation io.xmem.KEY=VALUE]...\n"
                                    "          [createRuntime|poststop]\n"
                                    "OCI hook: reads the container state on stdin. --annotation: a\n"
                                    "default for a container that does not set KEY (CDI devices).\n");
                        return 1;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                o->stage = argv[optind++];
        if (optind < argc || (o->stage && strcmp(o->stage, "createRuntime") != 0 &&
                              strcmp(o->stage, "poststop") != 0)) {
                fprintf(stderr, PROG ": the stage must be createRuntime or poststop\n");
                return -EINVAL;
        }
        return 0;
}

static int read_state(struct oci_state **ret, struct xmem_error *err)
{
        _cleanup_free_ char *buf = malloc(OCI_STATE_MAX + 1);
        size_t len = 0;
        ssize_t n;

        if (!buf)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        while (len <= OCI_STATE_MAX && (n = read(STDIN_FILENO, buf + len, OCI_STATE_MAX + 1 - len)) != 0) {
                if (n < 0 && errno != EINTR)
                        return xmem_error_set(err, negative_errno(), "read state from stdin: %m");
                len += n > 0 ? (size_t)n : 0;
        }
        return oci_state_parse(buf, len, ret, err);
}

/* The directory of PID's memory cgroup (v1 memory controller or v2 unified). */
static int container_cgroup(pid_t pid, char **ret, struct xmem_error *err)
{
        _cleanup_free_ char *mount = NULL, *path = NULL;
        enum cgroup_version v;
        int r;

        r = cgroup_detect(CGROUP_FS_ROOT, &v, &mount);
        if (r < 0)
                return xmem_error_set(err, r, "no memory cgroup controller under %s",
                                      CGROUP_FS_ROOT);
        r = cgroup_pid_path("/proc", pid, v, &path);
        if (r < 0)
                return xmem_error_set(err, r, "memory cgroup of pid %d: %s", (int)pid,
                                      strerror(-r));
        if (asprintf(ret, "%s%s", mount, strcmp(path, "/") == 0 ? "" : path) < 0)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        return 0;
}

/* Attach; *RET_SOCKET_DIR: the container's own socket directory memd made. */
static int attach(int fd, const struct oci_state *s, const char *cgroup,
                  const struct xmem_annotations *x, char **ret_socket_dir,
                  struct xmem_error *err)
{
        _cleanup_json_ json_object *result = NULL;
        json_object *sock = NULL;
        const char *path;
        int r;

        json_object *p = json_object_new_object();

        if (!p)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        json_object_object_add(p, "id", json_object_new_string(s->id));
        json_object_object_add(p, "cgroup", json_object_new_string(cgroup));
        json_object_object_add(p, "local_limit", json_object_new_int64((int64_t)x->local_limit));
        json_object_object_add(p, "external", json_object_new_int64((int64_t)x->external));
        json_object_object_add(p, "policy", json_object_new_string(x->policy));
        if (x->appliance[0])
                json_object_object_add(p, "appliance", json_object_new_string(x->appliance));
        if (x->file_dir[0])
                json_object_object_add(p, "file_dir", json_object_new_string(x->file_dir));
        if (x->restore[0]) /* its first processes start from the snapshot */
                json_object_object_add(p, "restore", json_object_new_string(x->restore));
        r = memd_call(fd, "attach", p, &result, err);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(result, "socket", &sock) ||
            !json_object_is_type(sock, json_type_string) ||
            (path = json_object_get_string(sock))[0] != '/' || !strrchr(path, '/') ||
            !(*ret_socket_dir = strndup(path, (size_t)(strrchr(path, '/') - path))))
                return xmem_error_set(err, -EBADMSG, "memd: attach: no socket in the reply");
        return 0;
}

static int detach(int fd, const char *id, struct xmem_error *err)
{
        json_object *p = json_object_new_object();
        int r;

        if (!p)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        json_object_object_add(p, "id", json_object_new_string(id));
        r = memd_call(fd, "detach", p, NULL, err);
        return r == -ENOENT ? 0 : r; /* already detached: idempotent */
}

/* Expose the container's own socket directory, and the shim unless
 * xmem-runtime put it in config.json. */
static int expose(const struct hook_opts *o, const struct oci_state *s,
                  const struct oci_config *c, const char *socket_dir, struct xmem_error *err)
{
        _cleanup_free_ char *rootfs = NULL;
        int r;

        if (oci_config_rootfs(c, s->bundle, &rootfs) < 0)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        r = privilege_caps_effective(expose_caps, ELEMENTSOF(expose_caps), true, err);
        if (r < 0)
                return r;
        r = container_expose(s->pid, rootfs,
                             oci_config_has_mount(c, XMEM_CONTAINER_SHIM) ? NULL : o->shim,
                             socket_dir, err);
        (void)privilege_caps_effective(expose_caps, ELEMENTSOF(expose_caps), false, NULL);
        return r;
}

static int create_runtime(const struct hook_opts *o, const struct oci_state *s,
                          const struct oci_config *c, const struct xmem_annotations *x,
                          struct xmem_error *err)
{
        _cleanup_free_ char *cgroup = NULL, *socket_dir = NULL, *rootfs = NULL;
        _cleanup_close_ int fd = -1;
        struct xmem_error undo = {};
        char notice[640];
        int r;

        if (s->pid <= 0)
                return xmem_error_set(err, -EINVAL, "state.pid: missing (is this createRuntime?)");
        r = oci_config_rootfs(c, s->bundle, &rootfs);
        if (r < 0)
                return xmem_error_set(err, r, "out of memory");
        r = image_gate(rootfs, c, x, notice, sizeof(notice), err);
        if (r == 0)
                fprintf(stderr, PROG ": container %s %s\n", s->id, notice);
        if (r <= 0)
                return r;
        r = container_cgroup(s->pid, &cgroup, err);
        if (r < 0)
                return r;
        r = memd_connect(o->socket, HOOK_MEMD_TIMEOUT_S, &fd, err);
        if (r < 0)
                return r;
        r = attach(fd, s, cgroup, x, &socket_dir, err);
        if (r < 0)
                return r;
        r = expose(o, s, c, socket_dir, err);
        if (r < 0 && detach(fd, s->id, &undo) < 0) {
                char first[XMEM_ERROR_MAX];
                snprintf(first, sizeof(first), "%s", xmem_error_str(err));
                xmem_error_set(err, r, "%s (and detach failed: %s)", first,
                               xmem_error_str(&undo));
        }
        return r;
}

static int run(const struct hook_opts *opts, struct xmem_error *err)
{
        _cleanup_(oci_state_freep) struct oci_state *s = NULL;
        _cleanup_(oci_config_freep) struct oci_config *c = NULL;
        _cleanup_json_ json_object *ann = NULL;
        _cleanup_close_ int fd = -1;
        struct hook_opts o = *opts;
        struct xmem_annotations x;
        int r;

        r = read_state(&s, err);
        if (r < 0)
                return r;
        o.stage = o.stage ?: strcmp(s->status, "stopped") == 0 ? "poststop" : "createRuntime";
        if (strcmp(o.stage, "poststop") == 0) {
                r = privilege_drop_caps(NULL, 0, err); /* detaching takes none */
                if (r < 0)
                        return xmem_error_prefix(err, "dropping capabilities");
                /* memd restarting: wait for it a little; memd away for good
                 * is no reason to fail the container's end (a memd started
                 * later detaches a container whose cgroup is gone) */
                for (int i = 0; i < 100; i++) {
                        r = memd_connect(o.socket, HOOK_MEMD_TIMEOUT_S, &fd, err);
                        if (r != -ENOENT && r != -ECONNREFUSED)
                                break;
                        usleep(100000);
                }
                if (r == -ENOENT || r == -ECONNREFUSED) {
                        fprintf(stderr, PROG ": detach container %s: %s; memd detaches it when "
                                         "it is back\n",
                                s->id, err->msg);
                        return 0;
                }
                if (r == 0)
                        r = detach(fd, s->id, err);
                return r < 0 ? xmem_error_prefix(err, "detach container %s", s->id) : 0;
        }
        r = oci_config_load(s->bundle, &c, err);
        if (r == 0 && !(ann = with_defaults(&o, s->annotations ?: c->annotations)) && o.defaults)
                r = xmem_error_set(err, -ENOMEM, "out of memory");
        if (r == 0)
                r = xmem_annotations_parse(ann, c->memory_limit, &x, err);
        if (r < 0 || !x.enable)
                return r;
        r = create_runtime(&o, s, c, &x, err);
        return r < 0 ? xmem_error_prefix(err, "attach container %s", s->id) : 0;
}

int main(int argc, char **argv)
{
        _cleanup_json_ json_object *defaults = NULL;
        struct hook_opts o = {};
        struct xmem_error err = {};
        int r;

        r = parse_argv(argc, argv, &o);
        defaults = o.defaults;
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        o.socket = o.socket ?: xmem_host_socket();
        o.shim = o.shim ?: xmem_host_shim();
        /* keep only what exposing needs, none of it effective until then */
        r = privilege_drop_caps(expose_caps, ELEMENTSOF(expose_caps), &err);
        if (r >= 0)
                r = privilege_caps_effective(expose_caps, ELEMENTSOF(expose_caps), false, &err);
        if (r < 0)
                xmem_error_prefix(&err, "dropping capabilities");
        else
                r = run(&o, &err);
        if (r < 0) {
                fprintf(stderr, PROG ": %s\n", xmem_error_str(&err));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}
