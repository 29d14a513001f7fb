/* main.c: xmem-appliance, the memory server. Parse arguments, build the
 * manager, start listening, tell systemd we are ready, serve until SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"
#include "parse.h"
#include "xmem-config.h"

#define DEFAULT_POOL_SIZE (1ULL << 30)
#define DEFAULT_CHUNK_SIZE (64ULL << 10)

static void help(void)
{
        printf("xmem-appliance: serve external memory regions over tcp:// and unix:// sockets\n\n"
               "  --listen URI        tcp://HOST:PORT or unix:///PATH (repeatable, at least one)\n"
               "  --pool-size SIZE    pool size (default 1G), a multiple of the chunk size\n"
               "  --pool-file PATH    keep the pool in PATH (metadata in PATH.meta): persistent\n"
               "  --chunk-size SIZE   power of two, 4K..16M (default 64K)\n"
               "  --log-level LEVEL   err, warning, notice, info (default), debug\n");
}

static int bad_arg(const char *fmt, const char *a, const char *b)
{
        fprintf(stderr, "xmem-appliance: ");
        fprintf(stderr, fmt, a, b);
        fprintf(stderr, "\n");
        return 2;
}

/* Returns -1 to go on, else the exit status. */
static int parse_argv(int argc, char **argv, struct manager_config *cfg, int *ret_level)
{
        static const struct option opts[] = {
                { "listen", required_argument, NULL, 'l' },
                { "pool-size", required_argument, NULL, 's' },
                { "pool-file", required_argument, NULL, 'f' },
                { "chunk-size", required_argument, NULL, 'c' },
                { "log-level", required_argument, NULL, 'L' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        struct xmem_error err = {};
        int c, level;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
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
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("xmem-appliance %s\n", XMEM_VERSION);
                        return 0;
                default:
                        return bad_arg("unknown or incomplete option '%s'%s", argv[optind - 1], "");
                }
        }
        if (optind < argc)
                return bad_arg("unexpected argument '%s'%s", argv[optind], "");
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
        return -1;
}

int main(int argc, char **argv)
{
        struct manager_config cfg = { .pool_size = DEFAULT_POOL_SIZE,
                                      .chunk_size = DEFAULT_CHUNK_SIZE };
        struct xmem_error err = {};
        struct manager *m = NULL;
        int level = LOG_INFO, r;
        sigset_t mask;

        r = parse_argv(argc, argv, &cfg, &level);
        if (r >= 0)
                return r;
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
        if (r < 0) {
                log_error("start-up failed: %s", xmem_error_str(&err));
                manager_free(m);
                return 1;
        }
        log_info("ready: pool %llu bytes in %llu-byte chunks%s%s",
                 (unsigned long long)cfg.pool_size, (unsigned long long)cfg.chunk_size,
                 cfg.pool_file ? ", file " : " (anonymous)", cfg.pool_file ? cfg.pool_file : "");
        (void)sd_notify(0, "READY=1");
        r = manager_run(m);
        (void)sd_notify(0, "STOPPING=1");
        manager_free(m);
        return r < 0 ? 1 : 0;
}
