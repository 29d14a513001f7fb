/* unit-files.h: fixture files for unit tests. */
#pragma once

#include <sys/types.h>

/* DIR/REL with TEXT and MODE, its parent directories made: asserted. */
void unit_put_file(const char *dir, const char *rel, const char *text, mode_t mode);
