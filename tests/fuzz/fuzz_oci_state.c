/* fuzz_oci_state.c: the OCI state JSON (a hook's stdin) against arbitrary
 * bytes. oci/ is compiled in directly: the fuzz build links lib/ only. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../oci/state.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct xmem_error err = { 0 };
        struct oci_state *s = NULL;

        if (oci_state_parse((const char *)data, size, &s, &err) < 0) {
                assert(s == NULL && err.msg[0] && !strchr(err.msg, '\n'));
                return 0;
        }
        assert(s->id[0] && s->bundle[0] == '/' && s->pid >= 0);
        oci_state_free(s);
        return 0;
}
