/* runtime-args.c: read a runc/crun command line well enough to find the
 * command and the bundle, removing only xmem-runtime's own --runtime-path. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime-args.h"

/* Global options of runc and crun that take a value (both accept
 * "--opt value" and "--opt=value"; runc also "-opt"). */
static const char *const global_with_value[] = {
        "log", "log-format", "log-level", "root", "criu", "rootless", "cgroup-manager",
};
/* Options of create/run that take a value. */
static const char *const create_with_value[] = {
        "bundle", "b", "console-socket", "pid-file", "preserve-fds", "config", "f",
};
/* Options of checkpoint/restore that take a value (runc's). */
static const char *const criu_with_value[] = {
        "image-path", "work-path", "parent-path", "page-server", "manage-cgroups-mode",
        "empty-ns", "bundle", "b", "console-socket", "pid-file", "lsm-profile",
        "lsm-mount-context",
};

/* If ARG is -NAME or --NAME (optionally =VALUE), the option name without
 * dashes and value; NULL when ARG is not an option. */
static const char *opt_name(const char *arg, size_t *ret_len, const char **ret_value)
{
        const char *n, *eq;

        if (arg[0] != '-' || arg[1] == 0 || strcmp(arg, "--") == 0)
                return NULL;
        n = arg + (arg[1] == '-' ? 2 : 1);
        eq = strchr(n, '=');
        *ret_len = eq ? (size_t)(eq - n) : strlen(n);
        *ret_value = eq ? eq + 1 : NULL;
        return n;
}

static bool in_list(const char *n, size_t len, const char *const *list, size_t count)
{
        for (size_t i = 0; i < count; i++)
                if (strlen(list[i]) == len && strncmp(n, list[i], len) == 0)
                        return true;
        return false;
}

static bool is(const char *n, size_t len, const char *name)
{
        return strlen(name) == len && strncmp(n, name, len) == 0;
}

/* The command's own options (create/run): note the bundle and config. */
static void parse_create(int argc, char **argv, int i, struct runtime_args *a)
{
        for (; i < argc; i++) {
                const char *value, *n;
                size_t len;

                if (strcmp(argv[i], "--") == 0)
                        break;
                n = opt_name(argv[i], &len, &value);
                if (!n || !in_list(n, len, create_with_value, ELEMENTSOF(create_with_value)))
                        continue;
                if (!value && i + 1 < argc)
                        value = argv[++i];
                if (is(n, len, "bundle") || is(n, len, "b"))
                        a->bundle = value;
                else if (is(n, len, "config") || is(n, len, "f"))
                        a->config = value;
        }
}

/* checkpoint/restore: the image path, the bundle and the container id (the
 * first operand). */
static void parse_criu(int argc, char **argv, int i, struct runtime_args *a)
{
        for (; i < argc; i++) {
                const char *value, *n;
                size_t len;

                n = opt_name(argv[i], &len, &value);
                if (!n || strcmp(argv[i], "--") == 0) {
                        if (!a->id && strcmp(argv[i], "--") != 0)
                                a->id = argv[i];
                        continue;
                }
                if (!in_list(n, len, criu_with_value, ELEMENTSOF(criu_with_value)))
                        continue;
                if (!value && i + 1 < argc)
                        value = argv[++i];
                if (is(n, len, "image-path"))
                        a->image_path = value;
                else if (is(n, len, "bundle") || is(n, len, "b"))
                        a->bundle = value;
        }
}

int runtime_args_parse(int argc, char **argv, struct runtime_args *ret, struct xmem_error *err)
{
        struct runtime_args a = {};
        int i;

        a.argv = calloc((size_t)argc + 1, sizeof(char *));
        if (!a.argv)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        a.argv[a.argc++] = argv[0];
        for (i = 1; i < argc; i++) {
                const char *value, *n = opt_name(argv[i], &(size_t){ 0 }, &value);
                size_t len;

                if (!n)
                        break; /* the command */
                opt_name(argv[i], &len, &value);
                if (is(n, len, "runtime-path")) {
                        if (!value && i + 1 >= argc) {
                                free(a.argv);
                                return xmem_error_set(err, -EINVAL,
                                                      "--runtime-path: missing value");
                        }
                        a.runtime_path = value ?: argv[++i];
                        continue;
                }
                a.argv[a.argc++] = argv[i];
                if (!value && in_list(n, len, global_with_value, ELEMENTSOF(global_with_value)) &&
                    i + 1 < argc)
                        a.argv[a.argc++] = argv[++i];
        }
        if (i < argc) {
                a.command = argv[i];
                a.creates = strcmp(a.command, "create") == 0 || strcmp(a.command, "run") == 0;
                if (a.creates)
                        parse_create(argc, argv, i + 1, &a);
                else if (strcmp(a.command, "checkpoint") == 0 || strcmp(a.command, "restore") == 0)
                        parse_criu(argc, argv, i + 1, &a);
        }
        for (; i < argc; i++)
                a.argv[a.argc++] = argv[i];
        a.argv[a.argc] = NULL;
        *ret = a;
        return 0;
}

void runtime_args_done(struct runtime_args *a)
{
        free(a->argv);
        a->argv = NULL;
}
