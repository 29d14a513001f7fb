/* test_manifest.c: memd/manifest.c, a checkpoint's manifest: a good one
 * parses and comes back the same through manifest_to_json; each bad field
 * is refused with a message naming it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "manifest.h"

#define KEY "00112233445566778899aabbccddeeff"
#define HEAD                                                                                       \
        "{\"xmem_snapshot\":1,\"name\":\"web-1-snap\",\"container\":\"web-1\",\"created_ms\":5,"   \
        "\"cgroup\":\"/sys/fs/cgroup/memory/web-1\",\"local_limit\":67108864,"                     \
        "\"external\":1073741824,\"local_alloc_limit\":1048576,\"policy\":\"external-first\","     \
        "\"chunk_size\":65536,\"arenas\":["
#define REGION "{\"appliance\":\"tcp://127.0.0.1:7070\",\"id\":7,\"key\":\"" KEY "\",\"source\":3}"
#define ARENA(extents)                                                                             \
        "{\"pid\":42,\"base\":139637976727552,\"size\":1073741824,\"regions\":[" REGION            \
        "],\"extents\":" extents "}"

static int parse(const char *text, struct manifest *m, struct xmem_error *err)
{
        return manifest_parse(text, strlen(text), m, err);
}

Test(manifest, good_round_trip)
{
        struct manifest m = {}, again = {};
        struct xmem_error err = {};
        const char *text;
        json_object *o;

        cr_assert_eq(parse(HEAD ARENA("[[0,65536],[131072,4096]]") "]}", &m, &err), 0, "%s",
                     err.msg);
        cr_expect_str_eq(m.name, "web-1-snap");
        cr_expect_str_eq(m.attach.id, "web-1");
        cr_expect_eq(m.attach.policy.kind, API_POLICY_EXTERNAL_FIRST);
        cr_assert_eq(m.n_arenas, 1);
        cr_expect_eq(m.arenas[0].base, 139637976727552ULL);
        cr_expect_eq(m.arenas[0].regions[0].source, 3);
        cr_expect_eq(m.arenas[0].regions[0].snap.key[15], 0xff);
        cr_assert_eq(m.arenas[0].n_extents, 2);
        cr_expect_eq(m.arenas[0].extents[1].offset, 131072);
        o = manifest_to_json(&m);
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        cr_assert_eq(parse(text, &again, &err), 0, "%s: %s", text, err.msg);
        cr_expect_eq(again.arenas[0].extents[1].len, 4096);
        cr_expect_eq(again.created_ms, 5);
        json_object_put(o);
        manifest_done(&again);
        manifest_done(&m);
}

static void refused(const char *text, const char *want)
{
        struct manifest m = {};
        struct xmem_error err = {};

        cr_expect_lt(parse(text, &m, &err), 0, "accepted: %s", text);
        cr_expect(strstr(err.msg, want), "'%s' does not name %s", err.msg, want);
}

Test(manifest, bad_fields_named)
{
        refused(HEAD ARENA("[[4096,4096],[0,4096]]") "]}", "arenas[0].extents[1]");
        refused(HEAD ARENA("[[0,4095]]") "]}", "arenas[0].extents[0]");
        refused(HEAD ARENA("[[0,2147483648]]") "]}", "arenas[0].extents[0]");
        refused(HEAD ARENA("[[0]]") "]}", "arenas[0].extents[0]");
        refused(HEAD "]}", "arenas");
        refused(HEAD ARENA("[]") "," ARENA("[]") "]}", "arenas[1].pid");
        {
                char v2[2048];
                snprintf(v2, sizeof(v2), "%s", HEAD ARENA("[]") "]}");
                v2[17] = '2'; /* {"xmem_snapshot":2 */
                refused(v2, "xmem_snapshot: version 2");
        }
        refused("{\"xmem_snapshot\":1,\"name\":\"a/b\",\"container\":\"x\",\"created_ms\":1,"
                "\"cgroup\":\"/c\",\"local_limit\":67108864,\"external\":1,"
                "\"local_alloc_limit\":0,\"policy\":\"local-first\",\"chunk_size\":65536,"
                "\"arenas\":[]}",
                "name");
        refused(HEAD "{\"pid\":42,\"base\":1,\"size\":4096,\"regions\":[" REGION
                     "],\"extents\":[]}]}",
                "arenas[0].base");
        refused(HEAD "{\"pid\":42,\"base\":4096,\"size\":4096,\"regions\":[],\"extents\":[]}]}",
                "arenas[0].regions");
        refused(HEAD "{\"pid\":42,\"base\":4096,\"size\":4096,\"regions\":[{\"appliance\":\"x\","
                     "\"id\":7,\"key\":\"zz\",\"source\":3}],\"extents\":[]}]}",
                "arenas[0].regions[0]");
        refused(HEAD ARENA("[]") "]", "JSON");
}

Test(manifest, names)
{
        char longname[200];

        memset(longname, 'a', 129);
        longname[129] = 0;
        cr_expect(manifest_name_valid("web-1.snap_2"));
        cr_expect(!manifest_name_valid("a/b"));
        cr_expect(!manifest_name_valid(".."));
        cr_expect(!manifest_name_valid(""));
        cr_expect(!manifest_name_valid(longname));
}
