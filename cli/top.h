/* top.h: xmemctl top, a live per-container view of memd (cli/top.c). */
#pragma once

#include <stdbool.h>

/* xmemctl top [--interval SECONDS] [--count N] (ARGV[0] is "top"): every
 * interval one table (refreshed in place on a terminal) or, with JSON, one
 * JSON object per line. Returns the exit status. */
int ctl_top(const char *socket, bool json, int argc, char **argv);
