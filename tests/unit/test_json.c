/* test_json.c: strict JSON parsing and the typed field dispatch. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <string.h>

#include "json-util.h"

struct attach_args {
        const char *id;
        uint64_t local_limit;
        uint64_t pid;
        bool verbose;
        json_object *extra;
};

static const struct json_field attach_fields[] = {
        { "id", JSON_FIELD_STRING, true, offsetof(struct attach_args, id) },
        { "local_limit", JSON_FIELD_SIZE, true, offsetof(struct attach_args, local_limit) },
        { "pid", JSON_FIELD_U64, false, offsetof(struct attach_args, pid) },
        { "verbose", JSON_FIELD_BOOL, false, offsetof(struct attach_args, verbose) },
        { "extra", JSON_FIELD_OBJECT, false, offsetof(struct attach_args, extra) },
        {},
};

static int dispatch(const char *text, struct attach_args *a, struct xmem_error *err)
{
        _cleanup_json_ json_object *o = NULL;
        int r = json_parse(text, strlen(text), &o, err);
        if (r < 0)
                return r;
        r = json_dispatch(o, attach_fields, a, sizeof(*a), false, err);
        a->id = NULL; /* points into O, which goes away here */
        a->extra = NULL;
        return r;
}

Test(json, dispatch_ok)
{
        struct attach_args a = { 0 };
        struct xmem_error err = { 0 };

        cr_assert_eq(dispatch("{\"id\":\"web\",\"local_limit\":\"64M\",\"pid\":7,\"verbose\":true}",
                              &a, &err), 0, "%s", err.msg);
        cr_assert_eq(a.local_limit, 64ULL << 20);
        cr_assert_eq(a.pid, 7);
        cr_assert(a.verbose);
        cr_assert_eq(dispatch("{\"id\":\"web\",\"local_limit\":4096}", &a, &err), 0);
        cr_assert_eq(a.local_limit, 4096);
}

Test(json, dispatch_refusals_name_the_field)
{
        static const struct {
                const char *text;
                const char *why;
        } bad[] = {
                { "{\"local_limit\":1}", "id: missing" },
                { "{\"id\":5,\"local_limit\":1}", "id: must be a string" },
                { "{\"id\":\"a\",\"local_limit\":\"64Q\"}", "local_limit: must be a size" },
                { "{\"id\":\"a\",\"local_limit\":-1}", "local_limit: out of range" },
                { "{\"id\":\"a\",\"local_limit\":1,\"pid\":1.5}", "pid: must be an integer" },
                { "{\"id\":\"a\",\"local_limit\":1,\"verbose\":1}", "verbose: must be true" },
                { "{\"id\":\"a\",\"local_limit\":1,\"bogus\":1}", "bogus: unknown field" },
                { "{\"id\":\"a\",\"local_limit\":1,\"extra\":[]}", "extra: must be an object" },
                { "[1,2]", "expected a JSON object" },
                { "{\"id\":", "invalid JSON" },
                { "{} {}", "invalid JSON" },
                { "{}x", "invalid JSON" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct attach_args a = { .pid = 99 };
                struct xmem_error err = { 0 };
                cr_assert_lt(dispatch(bad[i].text, &a, &err), 0, "accepted: %s", bad[i].text);
                cr_assert_not_null(strstr(err.msg, bad[i].why), "%s: '%s' lacks '%s'",
                                   bad[i].text, err.msg, bad[i].why);
                cr_assert_eq(a.pid, 99, "output changed on failure");
        }
}

Test(json, depth_limited)
{
        char deep[200];
        json_object *o = NULL;
        struct xmem_error err = { 0 };

        memset(deep, '[', 100);
        memset(deep + 100, ']', 100);
        cr_assert_lt(json_parse(deep, sizeof(deep), &o, &err), 0);
        cr_assert_null(o);
}

Test(json, dispatch_at_names_the_path)
{
        _cleanup_json_ json_object *o = NULL;
        struct attach_args a = { 0 };
        struct xmem_error err = { 0 };
        const char *text = "{\"id\":\"a\",\"local_limit\":\"64Q\"}";

        cr_assert_eq(json_parse(text, strlen(text), &o, &err), 0);
        cr_assert_lt(json_dispatch_at(o, attach_fields, &a, sizeof(a), false, "params", &err), 0);
        cr_assert_str_eq(err.msg, "params.local_limit: must be a size like 64M, 8G");
}
