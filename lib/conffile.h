/* conffile.h: the daemons' configuration files (/etc/xmem/memd.conf,
 * /etc/xmem/appliance.conf). Each "KEY = VALUE" line is the long option
 * --KEY=VALUE: the file becomes arguments placed before the command line's
 * and goes through the daemon's own getopt_long table, so an option is
 * declared and validated once, and a new option is settable in the file
 * without more code. */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* getopt_long values of --config FILE and --no-config; every table given to
 * this module holds CONFFILE_OPTIONS and its loop ignores these two values. */
#define CONFFILE_OPT_CONFIG 0x100
#define CONFFILE_OPT_NO_CONFIG 0x101
// clang-format off
#define CONFFILE_OPTIONS                                                                           \
        {"config", required_argument, NULL, CONFFILE_OPT_CONFIG},                                  \
        {"no-config", no_argument, NULL, CONFFILE_OPT_NO_CONFIG}
// clang-format on

#define CONFFILE_MAX_SIZE (1u << 20)

/* The settings of one file, in order. */
struct conffile {
        char **args;  /* "--KEY=VALUE", or "--KEY" for a flag */
        char **where; /* "NAME:LINE" of each */
        size_t n;
};

/* Parses TEXT (LEN bytes, the contents of the file NAME) against the long
 * options OPTS (terminated by a zeroed entry). Keys are option names
 * exactly; a flag (no_argument) is "KEY" alone or "KEY = yes|true|1"
 * ("no|false|0" leaves it out); "#" starts a comment line. The keys help,
 * version, config and no-config, and those in NOT_IN_FILE (NULL-terminated,
 * may be NULL), are refused. On error ERR says "NAME:LINE: what is wrong". */
int conffile_parse(const char *text, size_t len, const char *name, const struct option *opts,
                   const char *const *not_in_file, struct conffile *ret, struct xmem_error *err);

void conffile_done(struct conffile *c);

/* The arguments a daemon parses: argv[0], the file's settings of options
 * the command line does not give, then the command line. */
struct conffile_argv {
        struct conffile file;
        int argc;
        char **argv;      /* NULL-terminated; its strings belong to FILE or to main's argv */
        const char *path; /* the file read, NULL when none */
};

/* Reads --config FILE (which must exist), else DEFAULT_PATH when it exists;
 * none with --no-config. An option given on the command line replaces all of
 * the file's lines of that option (a repeatable one included). */
int conffile_argv_build(int argc, char **argv, const char *default_path, const struct option *opts,
                        const char *const *not_in_file, struct conffile_argv *ret,
                        struct xmem_error *err);

/* "NAME:LINE" when ARG (an element of A->argv) came from the file, else NULL. */
const char *conffile_argv_where(const struct conffile_argv *a, const char *arg);

void conffile_argv_done(struct conffile_argv *a);
