/* cdi.c: `xmemctl cdi generate`: a Container Device Interface spec (version
 * 0.5.0, what podman 4.3 reads from /etc/cdi and /var/run/cdi) of kind
 * xmem.io/memory whose devices add xmem-hook at createRuntime and poststop,
 * so `podman run --device xmem.io/memory=default` attaches a container. The
 * device's settings travel as the hook's --annotation defaults. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdi.h"
#include "json-util.h"
#include "macro.h"
#include "parse.h"

#define CDI_VERSION "0.5.0"
#define CDI_KIND "xmem.io/memory"
#define CDI_MAX_VARIANTS 16
#define MIN_LOCAL (4ULL << 20)

struct cdi_variant {
        char name[64];
        char local[32], external[32]; /* sizes as given, checked */
};

struct cdi_opts {
        const char *output, *hook, *shim, *socket;
        struct cdi_variant variants[CDI_MAX_VARIANTS];
        size_t n_variants;
};

static int cdi_fail(const char *what, const char *value, const char *why)
{
        fprintf(stderr, "xmemctl: cdi generate: %s %s: %s\n", what, value, why);
        return -EINVAL;
}

/* CDI device names: letters, digits, '_', '.', ':', '-', starting and ending
 * with a letter or digit. */
static bool cdi_name_ok(const char *s, size_t len)
{
        if (len == 0 || len >= sizeof(((struct cdi_variant *)0)->name))
                return false;
        for (size_t i = 0; i < len; i++) {
                bool alnum = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                             (s[i] >= '0' && s[i] <= '9');
                if (!alnum && ((i == 0 || i == len - 1) || !strchr("_.:-", s[i])))
                        return false;
        }
        return true;
}

/* NAME=LOCAL:EXTERNAL, e.g. small=64M:1G. */
static int parse_variant(const char *s, struct cdi_opts *o)
{
        const char *eq = strchr(s, '='), *colon = eq ? strchr(eq, ':') : NULL;
        struct cdi_variant *v = &o->variants[o->n_variants];
        uint64_t local, external;

        if (o->n_variants >= CDI_MAX_VARIANTS)
                return cdi_fail("--variant", s, "too many variants");
        if (!eq || !colon)
                return cdi_fail("--variant", s, "must be NAME=LOCAL:EXTERNAL (e.g. small=64M:1G)");
        if (!cdi_name_ok(s, (size_t)(eq - s)) || strncmp(s, "default=", 8) == 0)
                return cdi_fail("--variant", s,
                                "NAME must be letters, digits, _.:- (not \"default\")");
        snprintf(v->name, sizeof(v->name), "%.*s", (int)(eq - s), s);
        snprintf(v->local, sizeof(v->local), "%.*s", (int)(colon - eq - 1), eq + 1);
        snprintf(v->external, sizeof(v->external), "%s", colon + 1);
        if (parse_size(v->local, &local) < 0 || local < MIN_LOCAL)
                return cdi_fail("--variant", s, "LOCAL must be a size of at least 4M");
        if (parse_size(v->external, &external) < 0 || external == 0)
                return cdi_fail("--variant", s, "EXTERNAL must be a size above 0");
        for (size_t i = 0; i < o->n_variants; i++)
                if (strcmp(o->variants[i].name, v->name) == 0)
                        return cdi_fail("--variant", s, "named twice");
        o->n_variants++;
        return 0;
}

static void add_str(json_object *arr, const char *s)
{
        json_object_array_add(arr, json_object_new_string(s));
}

static void add_annotation(json_object *args, const char *key, const char *value)
{
        char kv[128];

        snprintf(kv, sizeof(kv), "io.xmem.%s=%s", key, value);
        add_str(args, "--annotation");
        add_str(args, kv);
}

/* One hook entry: xmem-hook [--socket S] [--shim S] [--annotation ...] STAGE. */
static json_object *hook(const struct cdi_opts *o, const struct cdi_variant *v, const char *stage)
{
        json_object *h = json_object_new_object(), *args = json_object_new_array();

        json_object_object_add(h, "hookName", json_object_new_string(stage));
        json_object_object_add(h, "path", json_object_new_string(o->hook));
        add_str(args, "xmem-hook");
        if (o->socket) {
                add_str(args, "--socket");
                add_str(args, o->socket);
        }
        if (o->shim) {
                add_str(args, "--shim");
                add_str(args, o->shim);
        }
        add_annotation(args, "enable", "true");
        if (v) {
                add_annotation(args, "local-limit", v->local);
                add_annotation(args, "external", v->external);
        }
        add_str(args, stage);
        json_object_object_add(h, "args", args);
        return h;
}

static json_object *device(const struct cdi_opts *o, const struct cdi_variant *v)
{
        json_object *d = json_object_new_object(), *edits = json_object_new_object(),
                    *hooks = json_object_new_array();

        json_object_object_add(d, "name", json_object_new_string(v ? v->name : "default"));
        json_object_array_add(hooks, hook(o, v, "createRuntime"));
        json_object_array_add(hooks, hook(o, v, "poststop"));
        json_object_object_add(edits, "hooks", hooks);
        json_object_object_add(d, "containerEdits", edits);
        return d;
}

static json_object *spec(const struct cdi_opts *o)
{
        json_object *s = json_object_new_object(), *devs = json_object_new_array();

        json_object_object_add(s, "cdiVersion", json_object_new_string(CDI_VERSION));
        json_object_object_add(s, "kind", json_object_new_string(CDI_KIND));
        json_object_array_add(devs, device(o, NULL));
        for (size_t i = 0; i < o->n_variants; i++)
                json_object_array_add(devs, device(o, &o->variants[i]));
        json_object_object_add(s, "devices", devs);
        return s;
}

/* Write TEXT to PATH whole or not at all (a temporary file renamed). */
static int write_atomic(const char *path, const char *text)
{
        _cleanup_free_ char *tmp = NULL;
        FILE *f;

        if (asprintf(&tmp, "%s.tmp-%d", path, (int)getpid()) < 0)
                return -ENOMEM;
        f = fopen(tmp, "we");
        if (!f)
                return cdi_fail("--output", path, strerror(errno));
        fprintf(f, "%s\n", text);
        if (ferror(f) | fclose(f) || rename(tmp, path) < 0) {
                int r = -errno;
                (void)unlink(tmp);
                return cdi_fail("--output", path, strerror(-r ?: EIO));
        }
        return 0;
}

static int cdi_generate(int argc, char **argv, struct cdi_opts *o)
{
        static const struct option opts[] = {
            {"output", required_argument, NULL, 'o'},
            {"hook", required_argument, NULL, 'H'},
            {"shim", required_argument, NULL, 'S'},
            {"variant", required_argument, NULL, 'v'},
            {},
        };
        _cleanup_json_ json_object *s = NULL;
        const char *text;
        int c;

        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 'o':
                        o->output = optarg;
                        break;
                case 'H':
                case 'S':
                        if (optarg[0] != '/')
                                return cdi_fail(c == 'H' ? "--hook" : "--shim", optarg,
                                                "must be an absolute path");
                        *(c == 'H' ? &o->hook : &o->shim) = optarg;
                        break;
                case 'v':
                        if (parse_variant(optarg, o) < 0)
                                return -EINVAL;
                        break;
                default:
                        return cdi_fail("option", argv[optind - 1], "unknown (see --help)");
                }
        }
        if (optind != argc)
                return cdi_fail("argument", argv[optind], "unexpected (see --help)");
        s = spec(o);
        text = json_object_to_json_string_ext(s, JSON_C_TO_STRING_PRETTY |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!o->output) {
                printf("%s\n", text);
                return 0;
        }
        return write_atomic(o->output, text);
}

int cdi_main(int argc, char **argv, const char *socket)
{
        struct cdi_opts o = {.hook = XMEM_HOOK_PATH, .socket = socket};

        if (argc < 2 || strcmp(argv[1], "generate") != 0) {
                fprintf(stderr, "xmemctl: cdi: the command is `cdi generate` (see --help)\n");
                return EXIT_FAILURE;
        }
        return cdi_generate(argc - 1, argv + 1, &o) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
