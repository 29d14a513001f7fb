/* errno-name.h: errno codes to their names ("ENOENT") and back, the form
 * memd's API replies carry (docs/api.md). One table for memd and its
 * clients: glibc's own (strerrorname_np). */
#pragma once

/* "EINVAL" for EINVAL or -EINVAL; "EIO" for 0 or a code without a name. */
const char *errno_name(int code);
/* "EINVAL" -> EINVAL (positive); 0 for NULL or an unknown name. */
int errno_from_name(const char *name);
