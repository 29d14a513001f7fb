/* test_errno_name.c: errno <-> "ENAME" (lib/errno-name.c), memd's and its
 * clients' one table. */
#include <criterion/criterion.h>
#include <errno.h>

#include "errno-name.h"

Test(errno_name, names_both_signs_and_round_trips)
{
        cr_expect_str_eq(errno_name(ENOENT), "ENOENT");
        cr_expect_str_eq(errno_name(-EBUSY), "EBUSY");
        cr_expect_str_eq(errno_name(-EPROTONOSUPPORT), "EPROTONOSUPPORT");
        for (int e = 1; e < 134; e++) {
                const char *n = errno_name(e);
                int back = errno_from_name(n);
                /* aliases (EWOULDBLOCK = EAGAIN) share one name */
                cr_expect(back == e || (e == 11 && back == EAGAIN) || back > 0,
                          "errno %d: %s -> %d", e, n, back);
                cr_expect_str_eq(errno_name(back), n, "errno %d: %s does not round-trip", e, n);
        }
}

Test(errno_name, unknown_codes_and_names)
{
        cr_expect_str_eq(errno_name(0), "EIO", "0 is no error to name");
        cr_expect_str_eq(errno_name(100000), "EIO");
        cr_expect_eq(errno_from_name("ENOTANERRNO"), 0);
        cr_expect_eq(errno_from_name(""), 0);
        cr_expect_eq(errno_from_name(NULL), 0);
        cr_expect_eq(errno_from_name("enoent"), 0, "names are case-sensitive");
        cr_expect_eq(errno_from_name("EOPNOTSUPP"), EOPNOTSUPP);
}
