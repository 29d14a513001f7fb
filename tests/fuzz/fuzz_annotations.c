/* fuzz_annotations.c: io.xmem.* validation against arbitrary annotation
 * objects: every refusal one line, every acceptance within the documented
 * bounds (oci/ compiled in directly: the fuzz build links lib/ only). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../oci/annotations.c"
#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct xmem_error err = { 0 };
        struct xmem_annotations x;
        json_object *o = NULL;

        if (json_parse((const char *)data, size, &o, NULL) < 0)
                return 0;
        if (xmem_annotations_parse(o, size << 20, &x, &err) < 0)
                assert(err.msg[0] && !strchr(err.msg, '\n') &&
                       (strncmp(err.msg, "io.xmem.", 8) == 0 ||
                        strncmp(err.msg, "annotations:", 12) == 0));
        else if (x.enable)
                assert(x.local_limit >= XMEM_MIN_LOCAL_LIMIT && x.external > x.local_limit &&
                       x.external <= XMEM_MAX_SIZE && x.policy[0]);
        json_object_put(o);
        return 0;
}
