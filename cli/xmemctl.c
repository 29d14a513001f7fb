/* xmemctl.c: the operator's command line for memd: list, stats, attach,
 * detach, convert, resize, move, checkpoint, snapshots, delete-snapshot,
 * restore, top (cli/top.c); cdi generate (cdi.c) writes a CDI spec. Human
 * output by default, the raw reply with --json; errors in one line on
 * stderr; a progress line on a terminal while memd works. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cdi.h"
#include "json-util.h"
#include "macro.h"
#include "memd-client.h"
#include "parse.h"
#include "progress.h"
#include "top.h"

static const char *arg_socket = "/run/xmem/memd.sock";
static bool arg_json, arg_socket_set;

static int fail(const char *fmt, const char *a, const char *b)
{
        fprintf(stderr, "xmemctl: ");
        fprintf(stderr, fmt, a, b);
        fputc('\n', stderr);
        return EXIT_FAILURE;
}

/* Send METHOD with PARAMS (consumed) and return memd's whole reply (or print
 * what went wrong). */
static int call(const char *method, json_object *params, json_object **ret_reply)
{
        _cleanup_close_ int fd = -1;
        struct xmem_error err = {};
        int r;

        r = memd_connect(arg_socket, 0, &fd, &err);
        if (r < 0) {
                json_object_put(params);
                return fail("memd at %s: %s", arg_socket, strerror(-r));
        }
        if (memd_request(fd, method, params, ret_reply, &err) < 0)
                return fail("memd at %s: %s", arg_socket, xmem_error_str(&err));
        return 0;
}

static const char *get_str(json_object *o, const char *k)
{
        json_object *v;

        return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : "";
}

static uint64_t get_u64(json_object *o, const char *k)
{
        json_object *v;

        return json_object_object_get_ex(o, k, &v) && v ? (uint64_t)json_object_get_int64(v) : 0;
}

static const char *sz(char *buf, uint64_t v)
{
        return format_size(buf, 32, v);
}

static void print_container(json_object *c)
{
        char a[32], b[32], d[32];

        printf("%-20s %-8s %-8s %-8s %-16s %4" PRIu64 "  %s\n", get_str(c, "id"),
               sz(a, get_u64(c, "local_limit")), sz(b, get_u64(c, "external")),
               sz(d, get_u64(c, "local_alloc_limit")), get_str(c, "policy"),
               get_u64(c, "processes"), get_str(c, "cgroup"));
}

static void print_snapshot(json_object *o)
{
        char a[32], when[32];
        time_t t = (time_t)(get_u64(o, "created_ms") / 1000);

        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
        printf("%-32s %-20s %-19s %6" PRIu64 " %8s\n", get_str(o, "name"), get_str(o, "container"),
               when, get_u64(o, "arenas"), sz(a, get_u64(o, "data_bytes")));
}

static void print_snapshot_result(const char *verb, json_object *res)
{
        json_object *arr;
        char a[32], b[32], c[32];

        if (strcmp(verb, "checkpoint") == 0)
                printf("checkpoint %s of %s: %" PRIu64 " arena(s), %s of data, %s written back, "
                       "paused %.1f ms\n",
                       get_str(res, "name"), get_str(res, "container"), get_u64(res, "arenas"),
                       sz(a, get_u64(res, "data_bytes")), sz(b, get_u64(res, "written_back_bytes")),
                       get_u64(res, "pause_us") / 1000.0);
        else if (strcmp(verb, "snapshots") == 0 &&
                 json_object_object_get_ex(res, "snapshots", &arr)) {
                printf("%-32s %-20s %-19s %6s %8s\n", "NAME", "CONTAINER", "CREATED", "ARENAS",
                       "DATA");
                for (size_t i = 0; i < json_object_array_length(arr); i++)
                        print_snapshot(json_object_array_get_idx(arr, i));
        } else if (strcmp(verb, "resize") == 0) {
                printf("container %s: local limit %s%s, external %s (at most %s", get_str(res, "id"),
                       sz(a, get_u64(res, "local_limit")),
                       json_object_get_boolean(json_object_object_get(res, "pending"))
                           ? " (pending)"
                           : "",
                       sz(b, get_u64(res, "external")), sz(c, get_u64(res, "external_max")));
                if (json_object_object_get_ex(res, "external_in_use", NULL))
                        printf(", %s in use", sz(a, get_u64(res, "external_in_use")));
                printf(")\n");
        } else if (strcmp(verb, "convert") == 0)
                printf("container %s: conversion to %s requested (%" PRIu64 ")\n",
                       get_str(res, "id"), get_str(res, "to"), get_u64(res, "request"));
        else if (strcmp(verb, "move") == 0)
                printf("moved %s to %s (%" PRIu64 " arena(s), %s copied by the appliances)\n",
                       get_str(res, "id"), get_str(res, "appliance"), get_u64(res, "arenas"),
                       sz(a, get_u64(res, "copied_bytes")));
        else if (strcmp(verb, "delete-snapshot") == 0)
                printf("deleted snapshot %s\n", get_str(res, "name"));
        else if (strcmp(verb, "restore") == 0 && json_object_object_get_ex(res, "new", NULL))
                printf("container %s: its next %" PRIu64 " process(es) start from snapshot %s\n",
                       get_str(res, "new"), get_u64(res, "arenas"), get_str(res, "name"));
        else if (strcmp(verb, "restore") == 0)
                printf("rolled %s back to snapshot %s (paused %.1f ms)\n",
                       get_str(res, "rolled_back"), get_str(res, "name"),
                       get_u64(res, "pause_us") / 1000.0);
}

static void print_result(const char *verb, json_object *res)
{
        json_object *arr, *lat;
        char a[32], b[32], d[32];

        if (strcmp(verb, "list") == 0 && json_object_object_get_ex(res, "containers", &arr)) {
                printf("%-20s %-8s %-8s %-8s %-16s %4s  %s\n", "ID", "LOCAL", "EXTERNAL",
                       "ALLOC", "POLICY", "PROC", "CGROUP");
                for (size_t i = 0; i < json_object_array_length(arr); i++)
                        print_container(json_object_array_get_idx(arr, i));
        } else if (strcmp(verb, "stats") == 0) {
                printf("container      %s\n", get_str(res, "id"));
                printf("resident       %s of budget %s (local limit %s)\n",
                       sz(a, get_u64(res, "resident_bytes")), sz(b, get_u64(res, "budget_bytes")),
                       sz(d, get_u64(res, "local_limit")));
                printf("faults         %" PRIu64 " (%" PRIu64 " missing, %" PRIu64 " write)\n",
                       get_u64(res, "faults"), get_u64(res, "missing_faults"),
                       get_u64(res, "wp_faults"));
                printf("fetched        %s\nwritten back   %s\nevictions      %" PRIu64 "\n",
                       sz(a, get_u64(res, "fetched_bytes")),
                       sz(b, get_u64(res, "written_back_bytes")), get_u64(res, "evictions"));
                if (json_object_object_get_ex(res, "fault_latency_us", &lat))
                        printf("fault latency  p50 %" PRIu64 " us, p99 %" PRIu64
                               " us, p999 %" PRIu64 " us\n",
                               get_u64(lat, "p50"), get_u64(lat, "p99"), get_u64(lat, "p999"));
                if (json_object_object_get_ex(res, "processes", &arr))
                        printf("processes      %zu\n", json_object_array_length(arr));
        } else if (strcmp(verb, "attach") == 0) {
                printf("attached %s, its processes' socket %s\n", get_str(res, "id"),
                       get_str(res, "socket"));
        } else if (strcmp(verb, "detach") == 0) {
                printf("detached %s\n", get_str(res, "id"));
        } else
                print_snapshot_result(verb, res);
}

/* Build attach params from "ID --cgroup DIR --local-limit S --external S ...". */
static int attach_params(int argc, char **argv, json_object *params)
{
        static const struct option opts[] = {
                { "cgroup", required_argument, NULL, 'g' },
                { "local-limit", required_argument, NULL, 'l' },
                { "external", required_argument, NULL, 'e' },
                { "policy", required_argument, NULL, 'p' },
                { "local-alloc-limit", required_argument, NULL, 'a' },
                { "appliance", required_argument, NULL, 'A' },
                { "file-dir", required_argument, NULL, 'f' },
                { "external-max", required_argument, NULL, 'M' },
                { "restore", required_argument, NULL, 'R' },
                {},
        };
        static const char *const keys[128] = {
                ['g'] = "cgroup", ['l'] = "local_limit", ['e'] = "external",
                ['p'] = "policy", ['a'] = "local_alloc_limit", ['A'] = "appliance",
                ['f'] = "file_dir", ['M'] = "external_max", ['R'] = "restore",
        };
        int c;

        optind = 1;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                if (c == '?' || c >= 128 || !keys[c])
                        return -EINVAL;
                json_object_object_add(params, keys[c], json_object_new_string(optarg));
        }
        if (optind != argc - 1)
                return -EINVAL;
        json_object_object_add(params, "id", json_object_new_string(argv[optind]));
        return 0;
}

/* "NAME [--name N]", "restore NAME --rollback ID|--new ID": options into
 * PARAMS by KEYS, then POSITIONAL (the operand's key) from the one operand
 * left (none: OPTIONAL_OPERAND decides). */
static int snapshot_params(int argc, char **argv, json_object *params, const char *positional,
                           bool optional_operand, char *why, size_t why_len)
{
        static const struct option opts[] = {
                { "name", required_argument, NULL, 'n' },
                { "rollback", required_argument, NULL, 'r' },
                { "new", required_argument, NULL, 'N' },
                {},
        };
        static const char *const keys[128] = { ['n'] = "name", ['r'] = "rollback", ['N'] = "new" };
        bool restore = strcmp(argv[0], "restore") == 0;
        int c;

        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                bool ok = c != '?' && c < 128 && keys[c] &&
                          (restore ? c != 'n' : c == 'n' && strcmp(argv[0], "checkpoint") == 0);
                if (!ok) {
                        snprintf(why, why_len, "%s: unknown option %s", argv[0], argv[optind - 1]);
                        return -EINVAL;
                }
                json_object_object_add(params, keys[c], json_object_new_string(optarg));
        }
        if (optind < argc - 1 || (optind == argc && !optional_operand)) {
                snprintf(why, why_len, "%s: %s", argv[0],
                         optind == argc ? "missing operand" : "one operand only");
                return -EINVAL;
        }
        if (optind == argc - 1)
                json_object_object_add(params, positional, json_object_new_string(argv[optind]));
        if (restore && !json_object_object_get_ex(params, "rollback", NULL) &&
            !json_object_object_get_ex(params, "new", NULL)) {
                snprintf(why, why_len, "restore: --rollback ID or --new ID is required");
                return -EINVAL;
        }
        return 0;
}

/* "VERB ID --OPTION VALUE..." (resize, convert, move): OPTIONS are pairs of
 * an option and its params key, NULL-terminated; each given goes into its
 * key (memd's method takes what is there), at least one is required, and
 * the container id. */
static int id_and_options(int argc, char **argv, json_object *params,
                          const char *const *options, char *why, size_t why_len)
{
        struct option opts[4] = {};
        size_t n = 0;
        bool any = false;
        int c;

        for (; options[2 * n] && n < ELEMENTSOF(opts) - 1; n++)
                opts[n] = (struct option){ options[2 * n], required_argument, NULL, 'a' + (int)n };
        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                if (c < 'a' || c >= 'a' + (int)n) {
                        snprintf(why, why_len, "%s: unknown option %s", argv[0], argv[optind - 1]);
                        return -EINVAL;
                }
                json_object_object_add(params, options[2 * (c - 'a') + 1],
                                       json_object_new_string(optarg));
                any = true;
        }
        if (optind != argc - 1) {
                snprintf(why, why_len, "%s: %s", argv[0],
                         optind == argc ? "missing container id" : "one container id only");
                return -EINVAL;
        }
        if (!any) {
                if (n == 1)
                        snprintf(why, why_len, "%s: --%s is required", argv[0], options[0]);
                else
                        snprintf(why, why_len, "%s: --%s or --%s is required", argv[0], options[0],
                                 options[2]);
                return -EINVAL;
        }
        json_object_object_add(params, "id", json_object_new_string(argv[optind]));
        return 0;
}

static int build(int argc, char **argv, json_object *params, char *why, size_t why_len)
{
        const char *verb = argv[0];

        if (strcmp(verb, "resize") == 0)
                return id_and_options(argc, argv, params,
                                      (const char *const[]){ "local-limit", "local_limit",
                                                             "external", "external", NULL },
                                      why, why_len);
        if (strcmp(verb, "convert") == 0)
                return id_and_options(argc, argv, params, (const char *const[]){ "to", "to", NULL },
                                      why, why_len);
        if (strcmp(verb, "move") == 0)
                return id_and_options(argc, argv, params,
                                      (const char *const[]){ "to-appliance", "to", NULL }, why,
                                      why_len);
        if (strcmp(verb, "checkpoint") == 0)
                return snapshot_params(argc, argv, params, "id", false, why, why_len);
        if (strcmp(verb, "snapshots") == 0)
                return snapshot_params(argc, argv, params, "id", true, why, why_len);
        if (strcmp(verb, "delete-snapshot") == 0 || strcmp(verb, "restore") == 0)
                return snapshot_params(argc, argv, params, "name", false, why, why_len);

        if (strcmp(verb, "list") == 0)
                return argc == 1 ? 0 : -EINVAL;
        if (strcmp(verb, "stats") == 0 || strcmp(verb, "detach") == 0) {
                bool force = argc == 3 && strcmp(argv[2], "--force") == 0 &&
                             strcmp(verb, "detach") == 0;
                if (argc != 2 && !force)
                        return -EINVAL;
                json_object_object_add(params, "id", json_object_new_string(argv[1]));
                if (force)
                        json_object_object_add(params, "force", json_object_new_boolean(true));
                return 0;
        }
        if (strcmp(verb, "attach") == 0)
                return attach_params(argc, argv, params);
        snprintf(why, why_len, "unknown command %s", verb);
        return -EOPNOTSUPP;
}

static void usage(void)
{
        printf("xmemctl [--socket PATH] [--json] COMMAND\n\n"
               "  list\n"
               "  stats ID\n"
               "  attach ID --cgroup DIR --local-limit SIZE --external SIZE\n"
               "         [--policy local-first|external-first|ratio:N]\n"
               "         [--local-alloc-limit SIZE] [--appliance URI] [--file-dir DIR]\n"
               "         [--external-max SIZE] [--restore SNAPSHOT]\n"
               "  detach ID [--force]\n"
               "  convert ID --to local|file|appliance\n"
               "  resize ID [--local-limit SIZE] [--external SIZE]\n"
               "  move ID --to-appliance URI\n"
               "  checkpoint ID [--name NAME]\n"
               "  snapshots [ID]\n"
               "  delete-snapshot NAME\n"
               "  restore NAME --rollback ID | --new ID\n"
               "  top [--interval SECONDS] [--count N]\n"
               "  cdi generate [--output FILE] [--variant NAME=LOCAL:EXTERNAL]...\n"
               "         [--hook PATH] [--shim PATH]\n"
               "         a CDI spec: `--device xmem.io/memory=default` (or =NAME) attaches\n"
               "         a podman container through xmem-hook (--socket is passed on)\n");
}

/* A command memd may take seconds over: a progress line on a terminal. */
static bool long_operation(const char *cmd)
{
        static const char *const longs[] = {"checkpoint", "restore", "move", "delete-snapshot",
                                            "resize", "convert"};

        for (size_t k = 0; k < ELEMENTSOF(longs); k++)
                if (strcmp(cmd, longs[k]) == 0)
                        return true;
        return false;
}

int main(int argc, char **argv)
{
        _cleanup_json_ json_object *reply = NULL;
        json_object *params = json_object_new_object(), *v, *e;
        char why[256] = "";
        struct progress pg;
        bool progress;
        int i = 1, r;

        for (; i < argc && argv[i][0] == '-'; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
                        arg_socket = argv[++i], arg_socket_set = true;
                else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage();
                        json_object_put(params);
                        return EXIT_SUCCESS;
                } else {
                        json_object_put(params);
                        return fail("unknown option %s%s (see --help)", argv[i], "");
                }
        }
        if (i < argc && strcmp(argv[i], "cdi") == 0) {
                json_object_put(params);
                return cdi_main(argc - i, argv + i, arg_socket_set ? arg_socket : NULL);
        }
        if (i < argc && strcmp(argv[i], "top") == 0) {
                json_object_put(params);
                return ctl_top(arg_socket, arg_json, argc - i, argv + i);
        }
        if (i >= argc || build(argc - i, argv + i, params, why, sizeof(why)) < 0) {
                json_object_put(params);
                if (why[0])
                        return fail("%s (see --help)%s", why, "");
                return fail("%s%s: bad command line (see --help)", i < argc ? argv[i] : "no command",
                            "");
        }
        /* a terminal sees what memd is doing; a pipe gets only the result */
        progress = !arg_json && isatty(STDERR_FILENO) && long_operation(argv[i]);
        if (progress) {
                char what[160];
                snprintf(what, sizeof(what), "%s %s", argv[i], argc > i + 1 ? argv[i + 1] : "");
                progress_start(&pg, what);
        }
        r = call(argv[i], params, &reply);
        if (progress)
                progress_stop(&pg);
        if (r != 0)
                return EXIT_FAILURE;
        if (arg_json)
                printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
        if (!json_object_object_get_ex(reply, "ok", &v) || !json_object_get_boolean(v)) {
                if (!json_object_object_get_ex(reply, "error", &e))
                        return fail("memd answered without ok or error%s%s", "", "");
                if (!arg_json)
                        fprintf(stderr, "xmemctl: %s (%s)\n", get_str(e, "message"),
                                get_str(e, "errno"));
                return EXIT_FAILURE;
        }
        if (!arg_json && json_object_object_get_ex(reply, "result", &v))
                print_result(argv[i], v);
        return EXIT_SUCCESS;
}
