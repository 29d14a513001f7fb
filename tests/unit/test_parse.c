/* test_parse.c: sizes, durations, integers. */
#include <criterion/criterion.h>
#include <errno.h>

#include "parse.h"

Test(parse, sizes_accepted)
{
        static const struct {
                const char *s;
                uint64_t v;
        } ok[] = {
                { "0", 0 },           { "4096", 4096 },       { "64K", 65536 },
                { "64k", 65536 },     { "64KiB", 65536 },     { "64KB", 65536 },
                { "512M", 512ULL << 20 }, { "8G", 8ULL << 30 }, { "1T", 1ULL << 40 },
                { "1.5G", 3ULL << 29 }, { "2P", 2ULL << 50 }, { "10b", 10 },
                { "16383P", 16383ULL << 50 },
        };
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                uint64_t v = 1234;
                cr_assert_eq(parse_size(ok[i].s, &v), 0, "%s refused", ok[i].s);
                cr_assert_eq(v, ok[i].v, "%s -> %llu", ok[i].s, (unsigned long long)v);
        }
}

Test(parse, sizes_refused)
{
        static const char *const bad[] = {
                "", "Q", "64Q", "-1", "+5", " 64M", "64M ", "64 M", "1.5", "1.", ".5G",
                "0x10", "12MM", "18446744073709551616", "16384P", "99999999999999999999K",
                "1.0000000001G", "K",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                uint64_t v = 777;
                cr_assert_lt(parse_size(bad[i], &v), 0, "'%s' accepted", bad[i]);
                cr_assert_eq(v, 777, "'%s' changed the output on failure", bad[i]);
        }
        cr_assert_eq(parse_size(NULL, NULL), -EINVAL);
        cr_assert_eq(parse_size("16384P", &(uint64_t){ 0 }), -ERANGE);
}

Test(parse, durations)
{
        uint64_t ns = 0;

        cr_assert_eq(parse_duration("250ms", &ns), 0);
        cr_assert_eq(ns, 250000000ULL);
        cr_assert_eq(parse_duration("2", &ns), 0);
        cr_assert_eq(ns, 2000000000ULL);
        cr_assert_eq(parse_duration("1.5s", &ns), 0);
        cr_assert_eq(ns, 1500000000ULL);
        cr_assert_eq(parse_duration("3m", &ns), 0);
        cr_assert_eq(ns, 180000000000ULL);
        cr_assert_eq(parse_duration("1h", &ns), 0);
        cr_assert_eq(ns, 3600000000000ULL);
        cr_assert_eq(parse_duration("100us", &ns), 0);
        cr_assert_eq(ns, 100000ULL);
        cr_assert_eq(parse_duration("7ns", &ns), 0);
        cr_assert_eq(ns, 7ULL);
        ns = 42;
        cr_assert_lt(parse_duration("5x", &ns), 0);
        cr_assert_lt(parse_duration("-1s", &ns), 0);
        cr_assert_lt(parse_duration("", &ns), 0);
        cr_assert_lt(parse_duration("99999999999h", &ns), 0);
        cr_assert_eq(ns, 42);
}

Test(parse, u64)
{
        uint64_t v = 0;

        cr_assert_eq(parse_u64("18446744073709551615", &v), 0);
        cr_assert_eq(v, UINT64_MAX);
        cr_assert_eq(parse_u64("18446744073709551616", &v), -ERANGE);
        cr_assert_eq(parse_u64("12a", &v), -EINVAL);
        cr_assert_eq(parse_u64("", &v), -EINVAL);
}

Test(parse, format_size)
{
        char buf[32];

        cr_assert_str_eq(format_size(buf, sizeof(buf), 512), "512");
        cr_assert_str_eq(format_size(buf, sizeof(buf), 64 << 10), "64K");
        cr_assert_str_eq(format_size(buf, sizeof(buf), 3ULL << 29), "1.5G");
}
