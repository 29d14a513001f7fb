/* fuzz_elf.c: oci/elfread.c (PT_INTERP and libc.so.6's GLIBC versions, read
 * from a container image's files) against arbitrary bytes. */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../oci/elfread.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char interp[64] = "untouched";
        unsigned major = 0, minor = 0;
        int r = elf_interp(data, size, interp, sizeof(interp));

        if (r == 1)
                assert(memchr(interp, 0, sizeof(interp)));
        else
                assert(strcmp(interp, "untouched") == 0 &&
                       (r == 0 || r == -ENOEXEC || r == -EXDEV || r == -EBADMSG));
        r = elf_glibc_version(data, size, &major, &minor);
        assert(r == 0 || r == -ENOENT || r == -ENOEXEC || r == -EXDEV || r == -EBADMSG);
        assert(r == 0 || (major == 0 && minor == 0));
        return 0;
}
