/* fuzz_oci_config.c: config.json parsing and xmem-runtime's edits against
 * arbitrary bytes (oci/ compiled in directly: the fuzz build links lib/ only). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../oci/annotations.c"
#include "../../oci/config.c"
#include "../../oci/state.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *args[] = { "/h", "createRuntime", NULL };
        struct xmem_error err = { 0 };
        struct oci_config *c = NULL;
        struct xmem_annotations x;
        char *root = NULL;

        if (oci_config_parse((const char *)data, size, &c, &err) < 0) {
                assert(c == NULL && err.msg[0] && !strchr(err.msg, '\n'));
                return 0;
        }
        (void)xmem_annotations_parse(c->annotations, c->memory_limit, &x, &err);
        assert(oci_config_rootfs(c, "/b", &root) == 0);
        free(root);
        (void)oci_config_getenv(c, "PATH");
        (void)oci_config_setenv(c, "LD_PRELOAD", "/x");
        (void)oci_config_add_bind(c, "/s", "/d", true);
        assert(oci_config_has_mount(c, "/d"));
        (void)oci_config_add_hook(c, "createRuntime", "/h", args);
        (void)oci_config_add_hook(c, "createRuntime", "/h", args);
        oci_config_free(c);
        return 0;
}
