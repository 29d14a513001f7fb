/* test_error.c: one-line error messages beside -errno. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "error.h"

Test(error, set_and_prefix)
{
        struct xmem_error err = { 0 };

        cr_assert_eq(xmem_error_set(&err, -ECONNREFUSED, "appliance %s", "tcp://h:1"),
                     -ECONNREFUSED);
        cr_assert_eq(xmem_error_prefix(&err, "attach container %s", "web-1"), -ECONNREFUSED);
        cr_assert_str_eq(xmem_error_str(&err), "attach container web-1: appliance tcp://h:1");
        cr_assert_eq(xmem_error_set(NULL, -EINVAL, "ignored"), -EINVAL);
}

Test(error, falls_back_to_strerror)
{
        struct xmem_error err = { .code = -ENOENT };

        cr_assert_str_eq(xmem_error_str(&err), strerror(ENOENT));
}

Test(error, long_messages_are_cut_not_overflowed)
{
        struct xmem_error err = { 0 };
        char big[1000];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        xmem_error_set(&err, -EIO, "%s", big);
        xmem_error_prefix(&err, "%s", big);
        cr_assert_eq(strlen(err.msg), XMEM_ERROR_MAX - 1);
}
