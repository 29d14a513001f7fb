/* error.c: formatting of struct xmem_error. */
#include <stdarg.h>
#include <string.h>

#include "error.h"

int xmem_error_set(struct xmem_error *err, int code, const char *fmt, ...)
{
        va_list ap;

        if (!err)
                return code;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        return code;
}

int xmem_error_prefix(struct xmem_error *err, const char *fmt, ...)
{
        char prefix[XMEM_ERROR_MAX], old[XMEM_ERROR_MAX];
        int n;
        va_list ap;

        if (!err)
                return -EINVAL;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        snprintf(old, sizeof(old), "%s", xmem_error_str(err));
        n = snprintf(err->msg, sizeof(err->msg), "%s", prefix);
        if (n >= 0 && (size_t)n + 2 < sizeof(err->msg))
                snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", old);
        return err->code;
}

const char *xmem_error_str(const struct xmem_error *err)
{
        if (!err)
                return "unknown error";
        if (err->msg[0])
                return err->msg;
        return strerror(err->code < 0 ? -err->code : err->code);
}
