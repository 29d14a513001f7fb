/* main.c: memd, the per-host xmem daemon: parse argv -> manager_new ->
 * manager_start -> sd_notify(READY=1) -> event loop -> detach everything. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "conffile.h"
#include "embedded.h"
#include "error.h"
#include "harden.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "parse.h"
#include "uri.h"
#include "xmem-config.h"

#define MEMD_CONFIG_FILE XMEM_CONFDIR "/memd.conf"

static void help(void)
{
        printf(
            "memd [OPTIONS]\n\n"
            "The per-host xmem daemon: external memory for containers.\n\n"
            "  --socket PATH               the admin API socket, mode 0600 (default %s)\n"
            "  --container-dir DIR         where each container's own socket directory is\n"
            "                              made (default: the socket's directory/containers)\n"
            "  --appliance URI             an appliance (tcp://HOST:PORT, unix://, shm://);\n"
            "                              repeat to stripe over several\n"
            "  --appliance-secret-file PATH  the secret of the tcp appliances (their\n"
            "                              --secret-file; mode 0600 or 0400)\n"
            "  --embedded-appliance SIZE   also run an appliance with a SIZE pool, which\n"
            "                              outlives memd (its pool file is in --state-dir)\n"
            "                              (1G is the default when no --appliance is given)\n"
            "  --state-dir DIR             memd's state, re-adopted after a restart, and the\n"
            "                              embedded appliance's pool file (default %s;\n"
            "                              one memd per directory)\n"
            "  --file-dir DIR              file memory (memory-mapped files) of containers\n"
            "                              that name no io.xmem.file-dir (default: none)\n"
            "  --appliance-timeout TIME    a fault whose appliance stays unreachable this\n"
            "                              long gets SIGBUS (default 30s)\n"
            "  --stop-embedded             stop the embedded appliance of --socket's memd\n"
            "                              (it outlives memd) and exit\n"
            "  --chunk-size SIZE           stripe of external memory over appliances, a power\n"
            "                              of two 4K..2M (default 64K); pages move in units\n"
            "                              that follow the access (4K random, up to 2M streams)\n"
            "  --fill-workers N            fill threads per container (default 2)\n"
            "  --poll-us N                 fault readers busy-poll N µs after a fault\n"
            "                              (default 50 with 2 or more CPUs, else 0)\n"
            "  --metrics tcp://ADDR:PORT   serve Prometheus metrics on that address (a\n"
            "                              numeric IP, e.g. tcp://127.0.0.1:9464; off by\n"
            "                              default; docs/operations.md)\n"
            "  --log-level LEVEL           err, warning, notice, info, debug\n"
            "  --no-seccomp                no syscall allow-list (debugging)\n"
            "  --config FILE               read options from FILE (KEY = VALUE lines named\n"
            "                              like the long options; default %s\n"
            "                              when it exists); the command line overrides it\n"
            "  --no-config                 read no configuration file\n"
            "  --help, --version\n"
            "Environment: XMEM_SECCOMP=errno (default; log in sanitizer builds) | kill | log:\n"
            "what a syscall outside the allow-list does (docs/security.md).\n",
            MANAGER_DEFAULT_SOCKET, MANAGER_DEFAULT_STATE_DIR, MEMD_CONFIG_FILE);
}

static const struct option memd_options[] = {
    {"socket", required_argument, NULL, 's'},
    {"container-dir", required_argument, NULL, 'D'},
    {"appliance-secret-file", required_argument, NULL, 'K'},
    {"appliance", required_argument, NULL, 'a'},
    {"embedded-appliance", required_argument, NULL, 'e'},
    {"chunk-size", required_argument, NULL, 'c'},
    {"state-dir", required_argument, NULL, 'T'},
    {"file-dir", required_argument, NULL, 'F'},
    {"appliance-timeout", required_argument, NULL, 'A'},
    {"stop-embedded", no_argument, NULL, 'X'},
    {"fill-workers", required_argument, NULL, 'w'},
    {"poll-us", required_argument, NULL, 'p'},
    {"log-level", required_argument, NULL, 'L'},
    {"metrics", required_argument, NULL, 'M'},
    {"no-seccomp", no_argument, NULL, 'S'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    CONFFILE_OPTIONS,
    {},
};

/* memd.conf's lines are arguments too: their errors name FILE:LINE */
static const struct conffile_argv *memd_args;

static int bad_arg(const char *what, const char *value, const char *why)
{
        const char *where = NULL;

        if (memd_args && optind > 0)
                where = conffile_argv_where(memd_args, memd_args->argv[optind - 1]);

        fprintf(stderr, "memd: %s%s%s %s: %s\n", where ?: "", where ? ": " : "", what, value, why);
        return -EINVAL;
}

/* Sanitized builds log violations; release builds refuse the call with
 * EPERM and log it (docs/decisions.md: why not kill). */
#define DEFAULT_VIOLATION                                                                          \
        (PRIVILEGE_SANITIZED ? PRIVILEGE_VIOLATION_LOG : PRIVILEGE_VIOLATION_ERRNO)

struct hardening {
        bool seccomp;                       /* --no-seccomp clears it */
        bool stop_embedded;                 /* --stop-embedded: do that and exit */
        enum privilege_violation violation; /* XMEM_SECCOMP */
};

/* 1: exit 0 now (--help/--version); 0: run; -EINVAL: bad arguments (reported). */
static int parse_argv(int argc, char **argv, struct manager_config *cfg, struct hardening *h)
{
        struct xmem_error err = {};
        struct sockaddr_storage sa;
        struct xmem_uri uri;
        socklen_t salen;
        uint64_t v;
        int c, lvl;

        while ((c = getopt_long(argc, argv, "", memd_options, NULL)) >= 0) {
                switch (c) {
                case 's':
                        if (optarg[0] != '/' || strlen(optarg) >= 108)
                                return bad_arg("--socket", optarg,
                                               "must be an absolute path under 108 bytes");
                        cfg->socket_path = optarg;
                        break;
                case 'D':
                        if (optarg[0] != '/')
                                return bad_arg("--container-dir", optarg,
                                               "must be an absolute path");
                        cfg->container_dir = optarg;
                        break;
                case 'T':
                        if (optarg[0] != '/')
                                return bad_arg("--state-dir", optarg, "must be an absolute path");
                        cfg->state_dir = optarg;
                        break;
                case 'F':
                        if (optarg[0] != '/')
                                return bad_arg("--file-dir", optarg, "must be an absolute path");
                        cfg->file_dir = optarg;
                        break;
                case 'K':
                        cfg->secret_file = optarg;
                        break;
                case 'a':
                        if (cfg->n_appliances >= MANAGER_MAX_APPLIANCES - 1)
                                return bad_arg("--appliance", optarg, "too many appliances");
                        if (xmem_uri_parse(optarg, &uri, &err) < 0)
                                return bad_arg("--appliance", optarg, xmem_error_str(&err));
                        cfg->appliances[cfg->n_appliances++] = optarg;
                        break;
                case 'e':
                        if (parse_size(optarg, &v) < 0 || v < (16ULL << 20))
                                return bad_arg("--embedded-appliance", optarg,
                                               "must be a size of at least 16M");
                        cfg->embedded_size = v;
                        break;
                case 'c':
                        if (parse_size(optarg, &v) < 0 || v < 4096 || v > (2ULL << 20) ||
                            (v & (v - 1)))
                                return bad_arg("--chunk-size", optarg,
                                               "must be a power of two from 4K to 2M");
                        cfg->chunk_size = (uint32_t)v;
                        break;
                case 'A':
                        if (parse_duration(optarg, &v) < 0 || v < 1000000ULL ||
                            v > 86400ULL * 1000000000ULL)
                                return bad_arg("--appliance-timeout", optarg,
                                               "must be a duration from 1ms to 24h");
                        cfg->appliance_timeout_ms = (unsigned)(v / 1000000ULL);
                        break;
                case 'X':
                        h->stop_embedded = true;
                        break;
                case 'w':
                        if (parse_u64(optarg, &v) < 0 || v < 1 || v > 64)
                                return bad_arg("--fill-workers", optarg,
                                               "must be a number from 1 to 64");
                        cfg->fill_workers = (unsigned)v;
                        break;
                case 'p':
                        if (parse_u64(optarg, &v) < 0 || v > 100000)
                                return bad_arg("--poll-us", optarg,
                                               "must be a number of µs from 0 to 100000");
                        cfg->poll_us = (unsigned)v;
                        break;
                case 'L':
                        lvl = log_level_from_string(optarg);
                        if (lvl < 0)
                                return bad_arg("--log-level", optarg, "unknown level");
                        log_set_max_level(lvl);
                        break;
                case 'M':
                        if (metrics_parse_address(optarg, &sa, &salen, &err) < 0)
                                return bad_arg("--metrics", optarg, xmem_error_str(&err));
                        cfg->metrics = optarg;
                        break;
                case 'S':
                        h->seccomp = false;
                        break;
                case 'h':
                        help();
                        return 1;
                case 'V':
                        printf("memd %s\n", XMEM_VERSION);
                        return 1;
                case CONFFILE_OPT_CONFIG:
                case CONFFILE_OPT_NO_CONFIG: /* conffile_argv_build's */
                        break;
                default:
                        return -EINVAL;
                }
        }
        memd_args = NULL; /* what follows is about no single line */
        if (optind < argc)
                return bad_arg("argument", argv[optind], "unexpected (see --help)");
        if (getenv("XMEM_SECCOMP") &&
            privilege_violation_from_string(getenv("XMEM_SECCOMP"), &h->violation) < 0)
                return bad_arg("XMEM_SECCOMP", getenv("XMEM_SECCOMP"),
                               "must be errno, kill or log");
        return 0;
}

/* --stop-embedded: the embedded appliance lives in SOCKET's directory/appliance. */
static int stop_embedded(const char *socket_path)
{
        _cleanup_free_ char *dir = strdup(socket_path);
        struct xmem_error err = {};
        char *slash = dir ? strrchr(dir, '/') : NULL;
        int r;

        if (!slash)
                return EXIT_FAILURE;
        *slash = 0;
        if (asprintf(&slash, "%s/appliance", *dir ? dir : "") < 0)
                return EXIT_FAILURE;
        r = embedded_stop_running(slash, &err);
        if (r < 0)
                fprintf(stderr, "memd: --stop-embedded: %s\n", xmem_error_str(&err));
        else
                printf("memd: embedded appliance in %s: %s\n", slash,
                       r == 0 ? "stopped" : "none running");
        free(slash);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
        struct manager_config cfg = {
                .socket_path = MANAGER_DEFAULT_SOCKET,
                .chunk_size = 64 * 1024,
                /* measured (bench/run, 2 vCPUs): the reader's wake-up is most
                 * of a fault's cost; spinning 50 µs after each fault doubles
                 * random-access throughput for the same memd CPU per GiB */
                .poll_us = sysconf(_SC_NPROCESSORS_ONLN) >= 2 ? 50 : 0,
        };
        static const char *const not_in_file[] = {"stop-embedded", NULL};
        /* its strings are cfg's for memd's life */
        static struct conffile_argv args;
        struct hardening h = {.seccomp = true, .violation = DEFAULT_VIOLATION};
        struct xmem_error err = {};
        struct manager *m = NULL;
        unsigned long nofile = 0;
        int r;

        log_setup("memd", LOG_TARGET_AUTO, LOG_INFO);
        if (conffile_argv_build(argc, argv, MEMD_CONFIG_FILE, memd_options, not_in_file, &args,
                                &err) < 0) {
                fprintf(stderr, "memd: %s\n", xmem_error_str(&err));
                return EXIT_FAILURE;
        }
        memd_args = &args;
        r = parse_argv(args.argc, args.argv, &cfg, &h);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        if (args.path)
                log_info("configuration: %s", args.path);
        if (h.stop_embedded)
                return stop_embedded(cfg.socket_path);
        r = manager_new(&cfg, &m, &err);
        /* capabilities before manager_start: it starts the transports'
         * receiver threads, and a thread keeps the capabilities it had */
        if (r >= 0 && (r = memd_harden_caps(&nofile, &err)) < 0)
                xmem_error_prefix(&err, "dropping capabilities");
        if (r >= 0)
                r = manager_start(m, &err);
        if (r >= 0 && h.seccomp && (r = memd_harden_seccomp(h.violation, &err)) < 0)
                xmem_error_prefix(&err, "installing the seccomp filter");
        if (r < 0) {
                log_error_errno(r, "%s", xmem_error_str(&err));
                (void)sd_notifyf(0, "STATUS=failed: %s\nERRNO=%d", xmem_error_str(&err), -r);
                manager_free(m);
                return EXIT_FAILURE;
        }
        log_info("privileges: only CAP_DAC_OVERRIDE and CAP_KILL, no-new-privs, seccomp %s, %lu open files",
                 h.seccomp ? privilege_violation_to_string(h.violation) : "off", nofile);
        (void)sd_notify(0, "READY=1\nSTATUS=serving");
        r = manager_run(m);
        (void)sd_notify(0, "STOPPING=1");
        manager_free(m);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
