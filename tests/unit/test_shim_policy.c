/* test_shim_policy.c: the shim's pure logic: the local-or-external placement
 * rule, the policy string memd sends, the strict reply scanner and the arena's
 * page-range allocator. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "../../shim/jscan.h"
#include "../../shim/policy.h"
#include "../../shim/range.h"

#define MIB (1ULL << 20)

static struct shim_policy pol(const char *name, uint64_t ratio, uint64_t limit)
{
        struct shim_policy p;
        cr_assert_eq(shim_policy_parse(name, ratio, limit, &p), 0, "%s", name);
        return p;
}

Test(policy, parse)
{
        struct shim_policy p = { .kind = 99 };

        cr_expect_eq(pol("local-first", 0, 64 * MIB).kind, SHIM_POLICY_LOCAL_FIRST);
        cr_expect_eq(pol("external-first", 0, 0).kind, SHIM_POLICY_EXTERNAL_FIRST);
        cr_expect_eq(pol("ratio:4", 4, MIB).ratio, 4);
        cr_expect_eq(pol("ratio:1024", 0, MIB).ratio, 1024);
        const char *bad[] = { "", "local", "ratio:", "ratio:0", "ratio:1025", "ratio:4x",
                              "ratio:-1", "ratio:04", "Local-First", "external-first " };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_expect_eq(shim_policy_parse(bad[i], 0, MIB, &p), -EINVAL, "%s", bad[i]);
        cr_expect_eq(shim_policy_parse(NULL, 0, MIB, &p), -EINVAL);
        cr_expect_eq(shim_policy_parse("ratio:4", 5, MIB, &p), -EINVAL, "ratio fields disagree");
        cr_expect_eq(p.kind, 99, "untouched on failure");
}

Test(policy, local_first)
{
        struct shim_policy p = pol("local-first", 0, 64 * MIB);
        struct shim_usage u = { 0 };

        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_LOCAL);
        u.local_bytes = 62 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_LOCAL, "exactly at the limit");
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB + 4096, true), SHIM_EXTERNAL);
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, false), SHIM_LOCAL, "no arena, fits");
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB + 4096, false), SHIM_NONE,
                     "no arena, over the local limit: ENOMEM");
        u.local_bytes = 100 * MIB; /* over already */
        cr_expect_eq(shim_policy_place(&p, &u, 4096, true), SHIM_EXTERNAL);
        u.local_bytes = 0;
        cr_expect_eq(shim_policy_place(&p, &u, UINT64_MAX, true), SHIM_EXTERNAL, "no overflow");
}

Test(policy, external_first)
{
        struct shim_policy p = pol("external-first", 0, 64 * MIB);
        struct shim_usage u = { 0 };

        cr_expect_eq(shim_policy_place(&p, &u, 64 * 1024, true), SHIM_EXTERNAL);
        cr_expect_eq(shim_policy_place(&p, &u, 64 * 1024 - 4096, true), SHIM_LOCAL);
        u.local_bytes = 64 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 4096, true), SHIM_EXTERNAL, "small, over limit");
        cr_expect_eq(shim_policy_place(&p, &u, 64 * MIB, false), SHIM_NONE, "neither fits");
        u.local_bytes = 0;
        cr_expect_eq(shim_policy_place(&p, &u, 64 * MIB, false), SHIM_LOCAL, "no arena: local");
}

/* seed 000 claims 3 and 8: file memory when local and external are full, as
 * far as the file directory's free space goes */
Test(policy, file_memory_is_the_last_resort)
{
        struct shim_policy p = pol("local-first", 0, 64 * MIB);
        struct shim_usage u = { .local_bytes = 64 * MIB, .file_room = 8 * MIB };

        p.external_quota = 16 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_EXTERNAL, "external first");
        u.external_bytes = 16 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_FILE, "both full: file");
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, false), SHIM_FILE, "no appliance: file");
        cr_expect_eq(shim_policy_place(&p, &u, 8 * MIB + 4096, true), SHIM_NONE,
                     "file space used up: ENOMEM");
        u.local_bytes = 0;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_LOCAL, "local has room");
        p = pol("external-first", 0, 64 * MIB);
        p.external_quota = 16 * MIB;
        u.local_bytes = 64 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_FILE);
        u.file_room = 0;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_NONE, "no file memory");
}

Test(policy, ratio)
{
        struct shim_policy p = pol("ratio:2", 2, 1024 * MIB);
        struct shim_usage u = { 0 };

        /* the floor lets a small process stay local with an empty cache */
        cr_expect_eq(shim_policy_place(&p, &u, 8 * MIB, true), SHIM_LOCAL);
        cr_expect_eq(shim_policy_place(&p, &u, 8 * MIB + 4096, true), SHIM_EXTERNAL);
        u.resident_cache = 100 * MIB;
        u.local_bytes = 190 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 10 * MIB, true), SHIM_LOCAL, "200 <= 2 x 100");
        cr_expect_eq(shim_policy_place(&p, &u, 10 * MIB + 4096, true), SHIM_EXTERNAL);
        /* the local limit still caps */
        u.resident_cache = 10000 * MIB;
        u.local_bytes = 1020 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 8 * MIB, true), SHIM_EXTERNAL);
        u.resident_cache = UINT64_MAX / 2 + 1;
        u.local_bytes = 0;
        cr_expect_eq(shim_policy_place(&p, &u, MIB, true), SHIM_LOCAL, "cap saturates");
}

/* The container-wide counters (all processes together) against both limits. */
Test(policy, external_quota)
{
        struct shim_policy p = pol("local-first", 0, 32 * MIB);
        struct shim_usage u = { 0 };

        cr_expect_eq(p.external_quota, UINT64_MAX, "unlimited until set");
        p.external_quota = 256 * MIB;
        /* one process took the local share and 200 MiB of the quota */
        u.local_bytes = 32 * MIB;
        u.external_bytes = 200 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 56 * MIB, true), SHIM_EXTERNAL, "exactly the quota");
        cr_expect_eq(shim_policy_place(&p, &u, 56 * MIB + 4096, true), SHIM_NONE,
                     "over both: ENOMEM, never local beyond the limit");
        u.local_bytes = 30 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_LOCAL);
        cr_expect_eq(shim_policy_place(&p, &u, 60 * MIB, true), SHIM_NONE);
        u.external_bytes = 256 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_LOCAL, "quota full, local fits");
        u.external_bytes = UINT64_MAX;
        cr_expect_eq(shim_policy_place(&p, &u, 4096, true), SHIM_LOCAL, "no overflow");
}

Test(policy, external_first_falls_back_to_local)
{
        struct shim_policy p = pol("external-first", 0, 32 * MIB);
        struct shim_usage u = { .external_bytes = 100 * MIB };

        p.external_quota = 100 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_LOCAL, "quota full: local");
        u.local_bytes = 31 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_NONE);
        u.external_bytes = 90 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, 2 * MIB, true), SHIM_EXTERNAL);
}

Test(policy, ratio_respects_quota)
{
        struct shim_policy p = pol("ratio:2", 2, 1024 * MIB);
        struct shim_usage u = { .local_bytes = 8 * MIB, .external_bytes = 64 * MIB,
                                .resident_cache = 0 };

        p.external_quota = 64 * MIB;
        /* over the ratio cap: external preferred, but the quota is full */
        cr_expect_eq(shim_policy_place(&p, &u, MIB, true), SHIM_LOCAL);
        u.local_bytes = 1024 * MIB;
        cr_expect_eq(shim_policy_place(&p, &u, MIB, true), SHIM_NONE);
}

static const char hello[] =
        " {\"xmem\":1,\"ok\":true,\"result\":{\"attached\":true,\"container\":\"web-1\","
        "\"arena_size\":1073741824,\"policy\":\"ratio:4\",\"local_alloc_limit\":33554432,"
        "\"ratio\":4,\"nested\":{\"arena_size\":1},\"list\":[1,{\"a\":[]},\"x\\\"y\"],"
        "\"esc\":\"a\\u0041\\n\"}} ";

Test(jscan, finds_members)
{
        uint64_t v;
        bool b;
        char s[32];
        size_t n = strlen(hello);

        cr_assert_eq(jscan_validate(hello, n), 0);
        cr_expect_eq(jscan_get_bool(hello, n, NULL, "ok", &b), 0);
        cr_expect(b);
        cr_expect_eq(jscan_get_u64(hello, n, NULL, "xmem", &v), 0);
        cr_expect_eq(v, 1);
        cr_expect_eq(jscan_get_u64(hello, n, "result", "arena_size", &v), 0);
        cr_expect_eq(v, 1073741824ULL, "not the nested one");
        cr_expect_eq(jscan_get_string(hello, n, "result", "policy", s, sizeof(s)), 0);
        cr_expect_str_eq(s, "ratio:4");
        cr_expect_eq(jscan_get_string(hello, n, "result", "esc", s, sizeof(s)), 0);
        cr_expect_str_eq(s, "aA\n");
        cr_expect_eq(jscan_get_string(hello, n, "result", "policy", s, 7), -ENAMETOOLONG);
        cr_expect_eq(jscan_get_u64(hello, n, "result", "missing", &v), -ENOENT);
        cr_expect_eq(jscan_get_u64(hello, n, NULL, "arena_size", &v), -ENOENT, "wrong level");
        cr_expect_eq(jscan_get_u64(hello, n, "result", "policy", &v), -EINVAL, "wrong type");
        cr_expect_eq(jscan_get_bool(hello, n, "result", "ratio", &b), -EINVAL);
}

Test(jscan, numbers_strictly)
{
        uint64_t v = 7;
        const char *bad[] = { "{\"n\":-1}", "{\"n\":1.5}", "{\"n\":1e3}",
                              "{\"n\":18446744073709551616}" };
        for (size_t i = 0; i < 4; i++)
                cr_expect_eq(jscan_get_u64(bad[i], strlen(bad[i]), NULL, "n", &v), -EINVAL, "%s",
                             bad[i]);
        cr_expect_eq(jscan_get_u64("{\"n\":18446744073709551615}", 26, NULL, "n", &v), 0);
        cr_expect_eq(v, UINT64_MAX);
}

Test(jscan, rejects_invalid)
{
        const char *bad[] = { "", "[]", "{", "{\"a\":}", "{\"a\":1,}", "{\"a\" 1}", "{a:1}",
                              "{\"a\":01}", "{\"a\":tru}", "{\"a\":\"x}", "{\"a\":\"\\x\"}",
                              "{\"a\":\"\\u12\"}", "{\"a\":1} x", "{\"a\":[1,]}", "{\"a\":1}{}",
                              "{\"a\":1,\"a\":2}", "{\"a\":\"\x01\"}", "{\"a\":-}", "{\"a\":1.}",
                              "{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}" };
        struct jscan_val v;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_expect_eq(jscan_find(bad[i], strlen(bad[i]), NULL, "a", &v), -EBADMSG, "%s",
                             bad[i]);
        /* length-bounded: bytes after LEN are not read */
        cr_expect_eq(jscan_validate("{\"a\":1}garbage", 7), 0);
}

Test(range, alloc_free_align)
{
        uint64_t bits[4] = { 0 }, f;
        struct range r;
        bool pristine;

        range_init(&r, bits, 200);
        cr_assert_eq(range_alloc(&r, 10, 1, &f, &pristine), 0);
        cr_expect_eq(f, 0);
        cr_expect(pristine);
        cr_assert_eq(range_alloc(&r, 10, 16, &f, &pristine), 0);
        cr_expect_eq(f, 16, "aligned");
        cr_assert_eq(range_alloc(&r, 6, 1, &f, &pristine), 0);
        cr_expect_eq(f, 10, "first fit fills the gap");
        range_free(&r, 0, 10);
        cr_assert_eq(range_alloc(&r, 4, 1, &f, &pristine), 0);
        cr_expect_eq(f, 0);
        cr_expect(!pristine, "reused pages are not known zeros");
        cr_expect_eq(range_alloc(&r, 300, 1, &f, &pristine), -ENOMEM);
        cr_expect_eq(range_alloc(&r, 200 - 26 + 1, 1, &f, &pristine), -ENOMEM);
        cr_assert_eq(range_alloc(&r, 200 - 26, 1, &f, &pristine), 0);
        cr_expect_eq(f, 26);
        cr_expect(pristine);
        cr_expect_eq(r.used, 4 + 10 + 6 + 174);
        cr_expect_eq(range_alloc(&r, 1, 1, &f, &pristine), 0, "page 4 is free");
        cr_expect_eq(range_alloc(&r, 3, 3, &f, &pristine), -EINVAL, "align not a power of 2");
}

Test(range, claim)
{
        uint64_t bits[2] = { 0 };
        struct range r;
        bool z;

        range_init(&r, bits, 128);
        cr_expect_eq(range_claim(&r, 100, 28, &z), 0);
        cr_expect(z);
        cr_expect_eq(range_claim(&r, 90, 11, &z), -EBUSY);
        cr_expect_eq(range_claim(&r, 120, 9, &z), -ERANGE);
        cr_expect_eq(range_claim(&r, 90, 10, &z), 0);
        cr_expect(range_test(&r, 99) && !range_test(&r, 89));
        range_free(&r, 95, 1000); /* clipped */
        cr_expect(!range_test(&r, 127) && range_test(&r, 94));
        cr_expect_eq(r.used, 5);
}
