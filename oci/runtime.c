/* runtime.c: xmem-runtime, a drop-in OCI runtime. For `create`/`run` of a
 * bundle annotated io.xmem.enable=true it adds the xmem hooks, LD_PRELOAD,
 * XMEM_SOCKET and the shim's bind mount to config.json, then execs the real runtime
 * (runc or crun) with the original arguments; everything else passes through. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "annotations.h"
#include "criu.h"
#include "image.h"
#include "oci.h"
#include "paths.h"
#include "runtime-args.h"

#define PROG "xmem-runtime"

static bool same_file(const char *a, const char *b)
{
        struct stat sa, sb;

        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
               sa.st_ino == sb.st_ino;
}

/* NAME on PATH (not ourselves), malloc'd; NULL when absent. */
static char *find_on_path(const char *name)
{
        _cleanup_free_ char *path = strdup(getenv("PATH") ?: "/usr/local/sbin:/usr/local/bin:"
                                                             "/usr/sbin:/usr/bin:/sbin:/bin");
        char *save = NULL;

        for (char *d = path ? strtok_r(path, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
                char *p;
                if (asprintf(&p, "%s/%s", d, name) < 0)
                        return NULL;
                if (access(p, X_OK) == 0 && !same_file(p, "/proc/self/exe"))
                        return p;
                free(p);
        }
        return NULL;
}

static char *real_runtime(const struct runtime_args *a)
{
        const char *env = getenv("XMEM_RUNTIME");
        char *p;

        if (a->runtime_path)
                return strdup(a->runtime_path);
        if (env && *env)
                return strchr(env, '/') ? strdup(env) : find_on_path(env);
        p = find_on_path("runc");
        return p ?: find_on_path("crun");
}

/* xmem-hook: $XMEM_HOOK, else beside this binary (build tree), else installed. */
static char *hook_path(void)
{
        char self[PATH_MAX], *p;
        ssize_t n;

        if (getenv("XMEM_HOOK") && *getenv("XMEM_HOOK"))
                return strdup(getenv("XMEM_HOOK"));
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = 0;
                if (asprintf(&p, "%s/xmem-hook", dirname(self)) >= 0) {
                        if (access(p, X_OK) == 0)
                                return p;
                        free(p);
                }
        }
        return strdup(XMEM_HOOK_PATH);
}

static int add_hooks(struct oci_config *c, const char *hook, const char *socket, const char *shim)
{
        const char *create[] = { hook, "--socket", socket, "--shim", shim, "createRuntime", NULL };
        const char *stop[] = { hook, "--socket", socket, "poststop", NULL };
        int r = oci_config_add_hook(c, "createRuntime", hook, create);

        return r < 0 ? r : oci_config_add_hook(c, "poststop", hook, stop);
}

/* The edits of an annotated container (idempotent: a second run adds nothing). */
static int prepare(struct oci_config *c, struct xmem_error *err)
{
        _cleanup_free_ char *hook = hook_path(), *sockdir = NULL, *preload = NULL;
        const char *socket = xmem_host_socket(), *shim = xmem_host_shim(), *old;
        struct stat st;
        int r;

        if (!hook || !(sockdir = strdup(socket)))
                return xmem_error_set(err, -ENOMEM, "out of memory");
        if (stat(shim, &st) < 0 || !S_ISREG(st.st_mode))
                return xmem_error_set(err, -ENOENT, "shim %s: not found (set XMEM_SHIM)", shim);
        dirname(sockdir);
        if (stat(sockdir, &st) < 0 || !S_ISDIR(st.st_mode))
                return xmem_error_set(err, -ENOENT,
                                      "memd socket directory %s: missing (is memd running? "
                                      "XMEM_SOCKET=%s)", sockdir, socket);
        r = add_hooks(c, hook, socket, shim);
        old = oci_config_getenv(c, "LD_PRELOAD");
        if (r == 0 && (!old || !strstr(old, XMEM_CONTAINER_SHIM))) {
                if (old && *old ? asprintf(&preload, "%s:%s", XMEM_CONTAINER_SHIM, old) < 0
                                : !(preload = strdup(XMEM_CONTAINER_SHIM)))
                        r = -ENOMEM;
                else
                        r = oci_config_setenv(c, "LD_PRELOAD", preload);
        }
        if (r == 0)
                r = oci_config_setenv(c, "XMEM_SOCKET",
                                      XMEM_CONTAINER_SOCKET_DIR "/" XMEM_SOCKET_NAME);
        if (r == 0 && !oci_config_has_mount(c, XMEM_CONTAINER_SHIM))
                r = oci_config_add_bind(c, shim, XMEM_CONTAINER_SHIM, true);
        /* /run/xmem: the hook binds the container's own socket directory
         * there once memd has made it at attach (never memd's own directory) */
        if (r < 0)
                return xmem_error_set(err, r, "config.json: %s", strerror(-r));
        return 0;
}

/* 1: prepared, 0: not an xmem container (pass through), <0: refuse (ERR set). */
static int handle_bundle(const struct runtime_args *a, struct xmem_error *err)
{
        _cleanup_(oci_config_freep) struct oci_config *c = NULL;
        _cleanup_free_ char *rootfs = NULL;
        struct xmem_annotations x;
        char notice[640];
        const char *bundle = a->bundle ?: ".";
        int r;

        r = oci_config_load(bundle, &c, err);
        if (r < 0)
                /* a config runc itself may accept (or reject in its own words):
                 * refuse only if it asks for xmem */
                return (r == -EINVAL || r == -EBADMSG) && strstr(err->msg, "io.xmem.") ? r : 0;
        r = xmem_annotations_parse(c->annotations, c->memory_limit, &x, err);
        if (r < 0)
                return r;
        if (!x.enable)
                return 0;
        r = oci_config_rootfs(c, bundle, &rootfs);
        if (r < 0)
                return xmem_error_set(err, r, "out of memory");
        r = image_gate(rootfs, c, &x, notice, sizeof(notice), err);
        if (r == 0)
                fprintf(stderr, PROG ": %s\n", notice);
        if (r <= 0)
                return r;
        r = prepare(c, err);
        if (r < 0)
                return r;
        r = oci_config_save(c, bundle, err);
        return r < 0 ? r : 1;
}

int main(int argc, char **argv)
{
        struct runtime_args a;
        struct xmem_error err = {};
        _cleanup_free_ char *runtime = NULL;
        int r;

        r = runtime_args_parse(argc, argv, &a, &err);
        if (r < 0) {
                fprintf(stderr, PROG ": %s\n", xmem_error_str(&err));
                return EXIT_FAILURE;
        }
        runtime = real_runtime(&a);
        if (!runtime) {
                fprintf(stderr, PROG ": no runtime found (install runc or crun, or set "
                                "XMEM_RUNTIME or --runtime-path)\n");
                runtime_args_done(&a);
                return EXIT_FAILURE;
        }
        /* CRIU: the external memory goes with the process image (criu.c) */
        if (a.command && strcmp(a.command, "checkpoint") == 0)
                r = criu_checkpoint_external(&a, &err);
        else if (a.command && strcmp(a.command, "restore") == 0)
                r = criu_restore_check(&a, &err);
        else
                r = 0;
        if (r < 0) {
                fprintf(stderr, PROG ": %s\n", xmem_error_str(&err));
                runtime_args_done(&a);
                return EXIT_FAILURE;
        }
        if (a.creates && !a.config) {
                r = handle_bundle(&a, &err);
                if (r < 0) {
                        fprintf(stderr, PROG ": %s\n", xmem_error_str(&err));
                        runtime_args_done(&a);
                        return EXIT_FAILURE;
                }
        }
        a.argv[0] = runtime;
        execv(runtime, a.argv);
        fprintf(stderr, PROG ": exec %s: %m\n", runtime);
        runtime_args_done(&a);
        return 127;
}
