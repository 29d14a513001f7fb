/* main.c: xmem-appliance, the memory server. Parse arguments, build the
 * manager, start listening, tell systemd we are ready, serve until SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "conffile.h"
#include "log.h"
#include "manager.h"
#include "parse.h"
#include "privilege.h"
#include "xmem-config.h"

#define DEFAULT_POOL_SIZE (1ULL << 30)
#define DEFAULT_CHUNK_SIZE (64ULL << 10)
#define DEFAULT_LIMITS                                                                             \
        ((struct manager_limits){ .max_connections = 1024,                                         \
                                  .max_client_connections = 64,                                    \
                                  .max_client_regions = 65536,                                     \
                                  .max_io = XMEM_WIRE_MAX_IO,                                      \
                                  .max_buffers = 1ULL << 30 })

/* How the appliance gives up privileges once it serves (docs/security.md). */
struct hardening {
        bool seccomp;                       /* --no-seccomp clears it */
        enum privilege_violation violation; /* XMEM_SECCOMP=kill|log|errno */
        bool switch_user;                   /* --user */
        uid_t uid;
        gid_t gid;
};

#define APPLIANCE_CONFIG_FILE XMEM_CONFDIR "/appliance.conf"

static void help(void)
{
        printf("xmem-appliance: serve external memory regions over tcp:// and unix:// sockets\n\n"
               "  --listen URI        tcp://HOST:PORT or unix:///PATH (repeatable, at least one)\n"
               "  --pool-size SIZE    pool size (default 1G), a multiple of the chunk size\n"
               "  --pool-file PATH    keep the pool in PATH (metadata in PATH.meta): persistent\n"
               "  --chunk-size SIZE   power of two, 4K..16M (default 64K)\n"
               "  --log-level LEVEL   err, warning, notice, info (default), debug\n"
               "  --user USER         switch to USER (name or uid) once listening\n"
               "  --no-seccomp        do not install the syscall allow-list (debugging)\n"
               "  --config FILE       read options from FILE (KEY = VALUE lines named like the\n"
               "                      long options; default " APPLIANCE_CONFIG_FILE "\n"
               "                      when it exists); the command line overrides it\n"
               "  --no-config         read no configuration file\n"
               "Access (docs/appliance.md, Authentication):\n"
               "  --allow-uid UID     unix clients with this uid (name or number; repeatable;\n"
               "                      default: the appliance's own effective uid)\n"
               "  --secret-file PATH  tcp clients must prove this secret (mode 0600 or 0400)\n"
               "  --peer URI          an appliance COPY may write to (repeatable; none: local only)\n"
               "  --max-connections N          open connections in all (default 1024)\n"
               "  --max-client-connections N   per uid / peer address (default 64)\n"
               "  --max-client-regions N       live regions a client made (default 65536)\n"
               "  --max-io SIZE       data bytes of one request, 64K..16M (default 16M)\n"
               "  --max-buffers SIZE  request buffers of all connections (default 1G)\n"
               "Environment: XMEM_SECCOMP=kill (default; log in sanitizer builds) | log | errno: what a syscall\n"
               "outside the allow-list does (docs/security.md).\n");
}

static const struct option appliance_options[] = {
        { "listen", required_argument, NULL, 'l' },
        { "pool-size", required_argument, NULL, 's' },
        { "pool-file", required_argument, NULL, 'f' },
        { "chunk-size", required_argument, NULL, 'c' },
        { "log-level", required_argument, NULL, 'L' },
        { "user", required_argument, NULL, 'u' },
        { "no-seccomp", no_argument, NULL, 'S' },
        { "allow-uid", required_argument, NULL, 'A' },
        { "secret-file", required_argument, NULL, 'K' },
        { "peer", required_argument, NULL, 'P' },
        { "max-connections", required_argument, NULL, 'C' },
        { "max-client-connections", required_argument, NULL, 'N' },
        { "max-client-regions", required_argument, NULL, 'R' },
        { "max-io", required_argument, NULL, 'I' },
        { "max-buffers", required_argument, NULL, 'B' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        CONFFILE_OPTIONS,
        {},
};

/* appliance.conf's lines are arguments too: their errors name FILE:LINE */
static const struct conffile_argv *appliance_args;

static int bad_arg(const char *fmt, const char *a, const char *b)
{
        const char *where = NULL;

        if (appliance_args && optind > 0 && optind <= appliance_args->argc)
                where = conffile_argv_where(appliance_args, appliance_args->argv[optind - 1]);
        fprintf(stderr, "xmem-appliance: ");
        if (where)
                fprintf(stderr, "%s: ", where);
        fprintf(stderr, fmt, a, b);
        fprintf(stderr, "\n");
        return 2;
}

static int parse_count(const char *opt, const char *arg, unsigned max, uint64_t *ret)
{
        if (parse_u64(arg, ret) < 0 || *ret == 0 || *ret > max)
                return bad_arg("%s: '%s' is not a number from 1 up", opt, arg);
        return -1;
}

/* The options of access.c. Returns -1 to go on, else the exit status. */
static int parse_access(int c, const char *arg, struct manager_config *cfg,
                        struct xmem_secret *secret)
{
        struct manager_limits *l = &cfg->limits;
        struct xmem_error err = {};
        uint64_t v = 0;
        gid_t gid;
        int r = -1;

        switch (c) {
        case 'A':
                if (cfg->nallow_uid == MANAGER_MAX_UIDS)
                        return bad_arg("--allow-uid: at most %s%s", "32", " uids");
                if (privilege_lookup_user(arg, &cfg->allow_uid[cfg->nallow_uid], &gid, &err) < 0)
                        return bad_arg("--allow-uid: %s%s", xmem_error_str(&err), "");
                cfg->nallow_uid++;
                return -1;
        case 'K':
                if (xmem_secret_load(arg, secret, &err) < 0)
                        return bad_arg("--secret-file %s%s", xmem_error_str(&err), "");
                cfg->secret = secret;
                return -1;
        case 'P':
                if (cfg->npeers == MANAGER_MAX_PEERS)
                        return bad_arg("--peer: at most %s%s", "16", " peers");
                if (xmem_uri_parse(arg, &cfg->peers[cfg->npeers], &err) < 0)
                        return bad_arg("--peer %s: %s", arg, xmem_error_str(&err));
                if (cfg->peers[cfg->npeers].scheme == XMEM_URI_RDMA)
                        return bad_arg("--peer %s: %s", arg, "rdma:// is not served yet");
                cfg->npeers++;
                return -1;
        case 'C':
                r = parse_count("--max-connections", arg, 1u << 20, &v);
                l->max_connections = (unsigned)v;
                return r;
        case 'N':
                r = parse_count("--max-client-connections", arg, 1u << 20, &v);
                l->max_client_connections = (unsigned)v;
                return r;
        case 'R':
                r = parse_count("--max-client-regions", arg, UINT32_MAX, &v);
                l->max_client_regions = v;
                return r;
        case 'I':
                if (parse_size(arg, &l->max_io) < 0 || l->max_io < (64u << 10) ||
                    l->max_io > XMEM_WIRE_MAX_IO)
                        return bad_arg("--max-io: '%s' is not a size from 64K to 16M%s", arg, "");
                return -1;
        case 'B':
                if (parse_size(arg, &l->max_buffers) < 0 || l->max_buffers < (1u << 20))
                        return bad_arg("--max-buffers: '%s' is not a size of 1M or more%s", arg,
                                       "");
                return -1;
        }
        return r;
}

/* Returns -1 to go on, else the exit status. */
static int parse_argv(int argc, char **argv, struct manager_config *cfg, int *ret_level,
                      struct hardening *h, struct xmem_secret *secret)
{
        struct xmem_error err = {};
        int c, level, r;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "", appliance_options, NULL)) >= 0) {
                switch (c) {
                case 'l':
                        if (cfg->nlisten == MANAGER_MAX_LISTEN)
                                return bad_arg("--listen: at most %s%s", "16", " listeners");
                        if (xmem_uri_parse(optarg, &cfg->listen[cfg->nlisten], &err) < 0)
                                return bad_arg("--listen %s: %s", optarg, xmem_error_str(&err));
                        if (cfg->listen[cfg->nlisten].scheme != XMEM_URI_TCP &&
                            cfg->listen[cfg->nlisten].scheme != XMEM_URI_UNIX)
                                return bad_arg("--listen %s: %s", optarg,
                                               "only tcp:// and unix:// can be served");
                        cfg->nlisten++;
                        break;
                case 's':
                case 'c':
                        if (parse_size(optarg, c == 's' ? &cfg->pool_size : &cfg->chunk_size) < 0)
                                return bad_arg("%s: invalid size '%s'",
                                               c == 's' ? "--pool-size" : "--chunk-size", optarg);
                        break;
                case 'f':
                        cfg->pool_file = optarg;
                        break;
                case 'L':
                        level = log_level_from_string(optarg);
                        if (level < 0)
                                return bad_arg("--log-level: unknown level '%s'%s", optarg, "");
                        *ret_level = level;
                        break;
                case 'u':
                        if (privilege_lookup_user(optarg, &h->uid, &h->gid, &err) < 0)
                                return bad_arg("--user: %s%s", xmem_error_str(&err), "");
                        h->switch_user = true;
                        break;
                case 'S':
                        h->seccomp = false;
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("xmem-appliance %s\n", XMEM_VERSION);
                        return 0;
                case CONFFILE_OPT_CONFIG:
                case CONFFILE_OPT_NO_CONFIG: /* conffile_argv_build's */
                        break;
                case 'A':
                case 'K':
                case 'P':
                case 'C':
                case 'N':
                case 'R':
                case 'I':
                case 'B':
                        r = parse_access(c, optarg, cfg, secret);
                        if (r >= 0)
                                return r;
                        break;
                default:
                        return bad_arg("unknown or incomplete option '%s'%s", argv[optind - 1], "");
                }
        }
        appliance_args = NULL; /* what follows is about no single line */
        if (optind < argc)
                return bad_arg("unexpected argument '%s'%s", argv[optind], "");
        if (getenv("XMEM_SECCOMP") &&
            privilege_violation_from_string(getenv("XMEM_SECCOMP"), &h->violation) < 0)
                return bad_arg("XMEM_SECCOMP=%s: must be kill, log or errno%s",
                               getenv("XMEM_SECCOMP"), "");
        if (cfg->nlisten == 0)
                return bad_arg("at least one --listen URI is needed%s%s", "", "");
        if (cfg->chunk_size < 4096 || cfg->chunk_size > (16u << 20) ||
            (cfg->chunk_size & (cfg->chunk_size - 1)))
                return bad_arg("--chunk-size must be a power of two from 4K to 16M%s%s", "", "");
        if (cfg->pool_size < cfg->chunk_size || cfg->pool_size % cfg->chunk_size)
                return bad_arg("--pool-size must be a positive multiple of the chunk size%s%s", "",
                               "");
        if (cfg->pool_size / cfg->chunk_size > CHUNK_MAX_COUNT)
                return bad_arg("--pool-size: too many chunks, raise --chunk-size%s%s", "", "");
        if (cfg->limits.max_buffers < 2 * cfg->limits.max_io)
                return bad_arg("--max-buffers must hold two requests of --max-io%s%s", "", "");
        if (cfg->nallow_uid == 0) /* memd as root talking to a root appliance, as before */
                cfg->allow_uid[cfg->nallow_uid++] = geteuid();
        return -1;
}

/* One fd per connection, plus the pool, journal, listeners and a remote copy's:
 * take the hard limit, and say so when it cannot hold --max-connections. */
static void raise_fd_limit(unsigned max_connections)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)max_connections + 64)
                log_warning("open file limit %llu is below --max-connections %u + 64: accept "
                            "fails first (and is retried) when it is reached",
                            (unsigned long long)rl.rlim_cur, max_connections);
}

/* Listeners are bound and the pool and journal open: from here on the
 * appliance needs no capability, and only the syscalls of serving. */
static int harden(const struct hardening *h, struct xmem_error *err)
{
        int r;

        if (h->switch_user) {
                r = privilege_switch_user(h->uid, h->gid, err);
                if (r < 0)
                        return r;
        }
        r = privilege_drop_caps(NULL, 0, err);
        if (r < 0 || !h->seccomp)
                return r;
        return privilege_seccomp_install(privilege_server_syscalls, privilege_server_syscalls_n,
                                         h->violation, err);
}

/* Compute one mac now: libcrypto initialises itself on first use (config
 * file, providers) with syscalls the seccomp allow-list does not hold. */
static int auth_self_test(const struct xmem_secret *secret, struct xmem_error *err)
{
        struct xmem_secret probe = { .len = XMEM_SECRET_MIN };
        uint8_t nonce[XMEM_AUTH_NONCE_SIZE] = { 0 }, mac[XMEM_AUTH_MAC_SIZE];

        if (auth_mac(secret->len ? secret : &probe, false, nonce, nonce, mac) < 0)
                return xmem_error_set(err, -EIO, "HMAC-SHA256 (libcrypto) does not work");
        return 0;
}

/* Sanitized builds log violations instead of dying; release builds kill. */
#define DEFAULT_VIOLATION                                                                          \
        (PRIVILEGE_SANITIZED ? PRIVILEGE_VIOLATION_LOG : PRIVILEGE_VIOLATION_KILL)

int main(int argc, char **argv)
{
        struct manager_config cfg = { .pool_size = DEFAULT_POOL_SIZE,
                                      .chunk_size = DEFAULT_CHUNK_SIZE,
                                      .limits = DEFAULT_LIMITS };
        static struct xmem_secret secret;
        /* its strings are cfg's for the appliance's life */
        static struct conffile_argv args;
        struct xmem_error err = {};
        struct hardening h = { .seccomp = true, .violation = DEFAULT_VIOLATION };
        struct manager *m = NULL;
        int level = LOG_INFO, r;
        sigset_t mask;

        if (conffile_argv_build(argc, argv, APPLIANCE_CONFIG_FILE, appliance_options, NULL, &args,
                                &err) < 0) {
                fprintf(stderr, "xmem-appliance: %s\n", xmem_error_str(&err));
                return 2;
        }
        appliance_args = &args;
        r = parse_argv(args.argc, args.argv, &cfg, &level, &h, &secret);
        if (r >= 0)
                return r;
        raise_fd_limit(cfg.limits.max_connections);
        log_setup("xmem-appliance", LOG_TARGET_AUTO, level);

        /* before any thread exists: signals arrive through the manager's signalfd */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = manager_new(&cfg, &m, &err);
        if (r >= 0)
                r = manager_start(m, &err);
        if (r >= 0)
                r = auth_self_test(&secret, &err); /* libcrypto loads before seccomp */
        if (r >= 0) {
                r = harden(&h, &err);
                if (r < 0)
                        xmem_error_prefix(&err, "dropping privileges");
        }
        if (r < 0) {
                log_error("start-up failed: %s", xmem_error_str(&err));
                manager_free(m);
                return 1;
        }
        log_info("access: %s tcp clients, %zu unix uid(s), %zu copy peer(s); at most %u "
                 "connections (%u per client), %llu regions per client, %llu-byte requests",
                 secret.len ? "authenticated" : "unauthenticated", cfg.nallow_uid, cfg.npeers,
                 cfg.limits.max_connections, cfg.limits.max_client_connections,
                 (unsigned long long)cfg.limits.max_client_regions,
                 (unsigned long long)cfg.limits.max_io);
        log_info("ready: pool %llu bytes in %llu-byte chunks%s%s; uid %u, no capabilities, "
                 "seccomp %s",
                 (unsigned long long)cfg.pool_size, (unsigned long long)cfg.chunk_size,
                 cfg.pool_file ? ", file " : " (anonymous)", cfg.pool_file ? cfg.pool_file : "",
                 (unsigned)getuid(), h.seccomp ? privilege_violation_to_string(h.violation) : "off");
        (void)sd_notify(0, "READY=1");
        r = manager_run(m);
        (void)sd_notify(0, "STOPPING=1");
        manager_free(m);
        return r < 0 ? 1 : 0;
}
