/* unit-files.c: fixture files for unit tests (unit-files.h). */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "unit-files.h"

void unit_put_file(const char *dir, const char *rel, const char *text, mode_t mode)
{
        char path[PATH_MAX], cmd[PATH_MAX + 32];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, rel);
        snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        f = fopen(path, "w");
        cr_assert_not_null(f, "%s", path);
        fputs(text, f);
        fclose(f);
        cr_assert_eq(chmod(path, mode), 0, "%s", path);
}
