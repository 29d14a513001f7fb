/* test_api.c: memd's request validation as pure functions (memd/api.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "api.h"
#include <xmem/acct.h>
#include "errno-name.h"

Test(api, id_charset)
{
        cr_expect(api_id_valid("web-1"));
        cr_expect(api_id_valid("a.b_C-9"));
        cr_expect(!api_id_valid(""));
        cr_expect(!api_id_valid("a b"));
        cr_expect(!api_id_valid("a/b"));
        cr_expect(!api_id_valid(".."));
        char long_id[130];
        memset(long_id, 'x', 129);
        long_id[129] = 0;
        cr_expect(!api_id_valid(long_id));
        long_id[128] = 0;
        cr_expect(api_id_valid(long_id));
}

Test(api, policy_parse)
{
        struct api_policy p = {};
        char buf[32];

        cr_assert_eq(api_policy_parse("local-first", &p), 0);
        cr_expect_eq(p.kind, API_POLICY_LOCAL_FIRST);
        cr_assert_eq(api_policy_parse("external-first", &p), 0);
        cr_expect_eq(p.kind, API_POLICY_EXTERNAL_FIRST);
        cr_assert_eq(api_policy_parse("ratio:4", &p), 0);
        cr_expect_eq(p.kind, API_POLICY_RATIO);
        cr_expect_eq(p.ratio, 4);
        cr_expect_str_eq(api_policy_format(&p, buf, sizeof(buf)), "ratio:4");
        p.ratio = 77;
        cr_expect_lt(api_policy_parse("ratio:0", &p), 0);
        cr_expect_lt(api_policy_parse("ratio:1025", &p), 0);
        cr_expect_lt(api_policy_parse("ratio:", &p), 0);
        cr_expect_lt(api_policy_parse("ratio:-3", &p), 0);
        cr_expect_lt(api_policy_parse("ratio:3x", &p), 0);
        cr_expect_lt(api_policy_parse("Local-First", &p), 0);
        cr_expect_eq(p.ratio, 77, "untouched on failure");
}

static struct api_attach good(void)
{
        return (struct api_attach){ .id = "web-1", .cgroup = "/sys/fs/cgroup/memory/x",
                                    .local_limit = 64 << 20, .external = 1ULL << 30 };
}

Test(api, attach_validate_defaults)
{
        struct api_attach a = good();
        struct xmem_error err = {};

        cr_assert_eq(api_attach_validate(&a, &err), 0, "%s", err.msg);
        cr_expect_eq(a.local_alloc_limit, 32 << 20, "default: half the local limit");
        cr_expect_eq(a.policy.kind, API_POLICY_LOCAL_FIRST);
}

static void expect_refused(struct api_attach a, const char *field)
{
        struct xmem_error err = {};
        struct api_attach before = a;

        cr_expect_eq(api_attach_validate(&a, &err), -EINVAL, "%s accepted", field);
        cr_expect(strstr(err.msg, field) == err.msg, "'%s' does not start with %s", err.msg, field);
        cr_expect_eq(memcmp(&a, &before, sizeof(a)), 0, "untouched on failure");
}

Test(api, attach_validate_refusals)
{
        struct api_attach a;

        a = good(); a.id = "web 1"; expect_refused(a, "params.id:");
        a = good(); a.cgroup = "relative/x"; expect_refused(a, "params.cgroup:");
        a = good(); a.cgroup = "/sys/fs/cgroup/memory/../x"; expect_refused(a, "params.cgroup:");
        a = good(); a.local_limit = 1 << 20; expect_refused(a, "params.local_limit:");
        a = good(); a.external = 0; expect_refused(a, "params.external:");
        a = good(); a.external = 1ULL << 51; expect_refused(a, "params.external:");
        a = good(); a.policy_text = "ratio:0"; expect_refused(a, "params.policy:");
        a = good(); a.local_alloc_limit = 65 << 20; expect_refused(a, "params.local_alloc_limit:");
        a = good(); a.appliance = ""; expect_refused(a, "params.appliance:");
}

Test(api, request_envelope)
{
        struct api_request req;
        struct xmem_error err = {};
        const char *ok = "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"w\",\"cgroup\":\"/c/w\","
                         "\"local_limit\":\"64M\",\"external\":1073741824,\"policy\":\"ratio:2\"}}";

        cr_assert_eq(api_request_parse(ok, strlen(ok), &req, &err), 0, "%s", err.msg);
        cr_expect_str_eq(req.method->name, "attach");
        cr_expect_eq(req.p.attach.local_limit, 64 << 20);
        cr_expect_eq(req.p.attach.policy.ratio, 2);
        api_request_done(&req);

        const char *bad = "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"w\",\"cgroup\":\"/c/w\","
                          "\"local_limit\":\"lots\",\"external\":\"1G\"}}";
        cr_expect_eq(api_request_parse(bad, strlen(bad), &req, &err), -EINVAL);
        cr_expect_str_eq(err.msg, "attach: params.local_limit: must be a size like 64M, 8G");

        const char *list = "{\"xmem\":1,\"method\":\"list\"}";
        cr_expect_eq(api_request_parse(list, strlen(list), &req, &err), 0, "params may be left out");
        api_request_done(&req);
        cr_expect_eq(api_request_parse("{}", 2, &req, &err), -EINVAL);
        cr_expect_str_eq(err.msg, "request: xmem: missing");
        /* the table says who may call: the shim only on a container's socket,
         * attach only on the admin socket */
        cr_expect_eq(api_method_find("shim.hello")->callers, API_CALLER_CONTAINER);
        cr_expect_eq(api_method_find("attach")->callers, API_CALLER_ADMIN);
        cr_expect_eq(api_method_find("shim.register")->n_fds, 1);
        cr_expect_null(api_method_find("Attach"));
        cr_expect_str_eq(errno_name(-ENOENT), "ENOENT", "replies name errnos through lib/errno-name");
}

/* The methods of issue 10: attach's file_dir, convert, resize (its params
 * extensible: each optional, at least one). */
Test(api, convert_resize_file_dir)
{
        struct api_request req;
        struct xmem_error err = {};
        static const struct {
                const char *msg, *want;
        } bad[] = {
                { "{\"xmem\":1,\"method\":\"convert\",\"params\":{\"id\":\"w\",\"to\":\"disk\"}}",
                  "convert: params.to: must be local, file or appliance" },
                { "{\"xmem\":1,\"method\":\"convert\",\"params\":{\"id\":\"w\"}}",
                  "convert: params.to: missing" },
                { "{\"xmem\":1,\"method\":\"resize\",\"params\":{\"id\":\"w\"}}",
                  "resize: params: nothing to resize (local_limit, external)" },
                { "{\"xmem\":1,\"method\":\"resize\",\"params\":{\"id\":\"w\",\"external\":\"2P\"}}",
                  "resize: params.external: must be from 1 byte to 1P" },
                { "{\"xmem\":1,\"method\":\"resize\",\"params\":{\"id\":\"w\",\"local_limit\":\"1M\"}}",
                  "resize: params.local_limit: must be from 4M to 1P" },
                { "{\"xmem\":1,\"method\":\"attach\",\"params\":{\"id\":\"w\",\"cgroup\":\"/c/w\","
                  "\"local_limit\":\"64M\",\"external\":\"1G\",\"file_dir\":\"rel\"}}",
                  "attach: params.file_dir: must be an absolute, normalised path" },
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cr_expect_eq(api_request_parse(bad[i].msg, strlen(bad[i].msg), &req, &err), -EINVAL,
                             "%s", bad[i].msg);
                cr_expect_str_eq(err.msg, bad[i].want);
        }
        const char *ok = "{\"xmem\":1,\"method\":\"resize\",\"params\":{\"id\":\"w\","
                         "\"local_limit\":\"64M\"}}";
        cr_assert_eq(api_request_parse(ok, strlen(ok), &req, &err), 0, "%s", err.msg);
        cr_expect_eq(req.p.resize.local_limit, 64 << 20);
        cr_expect_eq(req.p.resize.external, 0);
        api_request_done(&req);
        const char *both = "{\"xmem\":1,\"method\":\"resize\",\"params\":{\"id\":\"w\","
                           "\"local_limit\":\"64M\",\"external\":\"1G\"}}";
        cr_assert_eq(api_request_parse(both, strlen(both), &req, &err), 0, "%s", err.msg);
        cr_expect_eq(req.p.resize.local_limit, 64 << 20);
        cr_expect_eq(req.p.resize.external, 1ULL << 30);
        api_request_done(&req);
        const char *conv = "{\"xmem\":1,\"method\":\"convert\",\"params\":{\"id\":\"w\",\"to\":\"file\"}}";
        cr_assert_eq(api_request_parse(conv, strlen(conv), &req, &err), 0, "%s", err.msg);
        cr_expect_eq(req.p.convert.target, XMEM_CONVERT_FILE);
        api_request_done(&req);
        cr_expect_eq(api_method_find("resize")->callers, API_CALLER_ADMIN);
        cr_expect_eq(api_method_find("shim.file")->callers, API_CALLER_CONTAINER);
}
