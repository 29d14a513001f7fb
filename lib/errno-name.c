/* errno-name.c: errno <-> "ENAME" through glibc's strerrorname_np, so that
 * every errno the kernel or libc returns has its usual name. */
#include <string.h>

#include "errno-name.h"

/* Above every errno Linux defines (EHWPOISON is 133). */
#define ERRNO_NAME_MAX_CODE 256

const char *errno_name(int code)
{
        const char *n = code == 0 ? NULL : strerrorname_np(code < 0 ? -code : code);

        return n ? n : "EIO";
}

int errno_from_name(const char *name)
{
        for (int e = 1; name && e < ERRNO_NAME_MAX_CODE; e++) {
                const char *n = strerrorname_np(e);
                if (n && strcmp(n, name) == 0)
                        return e;
        }
        return 0;
}
