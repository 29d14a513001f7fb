/* fuzz_json.c: strict JSON parsing and field dispatch against arbitrary text. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sample {
        const char *id;
        uint64_t limit;
        uint64_t n;
        bool flag;
        json_object *obj;
};

static const struct json_field fields[] = {
        { "id", JSON_FIELD_STRING, true, offsetof(struct sample, id) },
        { "limit", JSON_FIELD_SIZE, false, offsetof(struct sample, limit) },
        { "n", JSON_FIELD_U64, false, offsetof(struct sample, n) },
        { "flag", JSON_FIELD_BOOL, false, offsetof(struct sample, flag) },
        { "obj", JSON_FIELD_OBJECT, false, offsetof(struct sample, obj) },
        {},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct xmem_error err = { 0 };
        json_object *o = NULL;
        struct sample s = { 0 };

        if (json_parse((const char *)data, size, &o, &err) < 0) {
                assert(o == NULL && err.msg[0]);
                return 0;
        }
        if (json_dispatch(o, fields, &s, sizeof(s), (size & 1), &err) == 0)
                assert(s.id != NULL);
        json_object_put(o);
        return 0;
}
