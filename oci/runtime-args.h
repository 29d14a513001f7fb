/* runtime-args.h: xmem-runtime's reading of a runc/crun command line: the
 * global options, the command, and for create/run the bundle. Pure. */
#pragma once

#include <stdbool.h>

#include "error.h"

struct runtime_args {
        char **argv;              /* for the real runtime: ours removed; malloc'd, NULL-terminated */
        int argc;
        const char *runtime_path; /* --runtime-path, NULL when absent */
        const char *command;      /* "create", "run", ...; NULL when none */
        const char *bundle;       /* create/run: --bundle, NULL = the current directory */
        const char *config;       /* crun create --config FILE, NULL when absent */
        bool creates;             /* command is create or run */
        /* checkpoint, restore: --image-path (NULL: runc's default,
         * ./checkpoint) and the container id (NULL when absent) */
        const char *image_path;
        const char *id;
};

/* ARGV[0] is ours. Borrowed strings point into ARGV. */
int runtime_args_parse(int argc, char **argv, struct runtime_args *ret, struct xmem_error *err);
void runtime_args_done(struct runtime_args *a);
